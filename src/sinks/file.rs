//! The `file` sink: events appended as JSON Lines to one file, with an explicit fsync policy.
//!
//! This module owns [`FileSinkConfig`] and [`FileSink`], the sink the journal runner
//! ([`crate::delivery`]) drives through the [`Deliver`] contract. [`FileSinkConfig::build`]
//! opens the file on a dedicated writer thread (the shared writer of `src/sinks/writer.rs`),
//! which owns a `std::fs::File` opened with `O_APPEND` (created with the sink's `mode`, default `0640`) and is the
//! only writer. It never uses `tokio::fs::File`, whose writes may report success before they
//! happen (tokio#5531, tokio#6005).
//!
//! Each line is the event's journal record as it is (the bytes the pipeline wrote with
//! `serde_json::to_vec`, one JSON object without a line break, then `\n`): the sink decodes
//! nothing and encodes nothing ([`Needs::Bytes`]).
//!
//! The journal holds the events, so a batch is acknowledged per [`FsyncPolicy`]:
//! [`Deliver::deliver`] resolves once its batch is written and flushed and, with `always`,
//! synced; with `interval` the sync follows within `fsync_interval` (a power loss, not a
//! process crash, can lose up to one interval of lines the journal already counts as
//! delivered: use `always` where that matters); with `never` only at shutdown.
//!
//! Failure handling:
//! - **Failed write** (e.g. `ENOSPC`): the file is truncated back to its length before the
//!   batch, so no torn line stays; the error is logged and counted, and the same batch is
//!   retried with backoff (100 ms doubling to 5 s) while the call stays pending. Other sinks are
//!   not held up: each reads the journal at its own cursor.
//! - **Failed `sync_data`**: after a failed fsync, Linux may have dropped the dirty pages and a
//!   retried fsync can falsely succeed ("fsyncgate"). So the instance stops
//!   ([`SinkError::Failed`]); the runner rebuilds the sink and delivers again from its cursor.
//! - **Torn last line at open** (a crash mid-write): if the file does not end with `\n`, one
//!   is appended (and synced) so the next record starts on its own line; the torn fragment stays
//!   as an unparseable line for readers to skip, and the repair is logged. An existing file
//!   that ends with a complete line is appended to unchanged.
//!
//! [`Deliver::reopen`] reopens the path (logrotate's rename + create, with the same torn-line
//! check); [`Deliver::close`] flushes and syncs.
//!
//! Throughput through the journal is measured by `cargo bench --bench delivery` (README).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use serde::{Deserialize, Serialize};

use super::append::{append_retrying, create_dirs, sync_dir, SinkFile};
use super::deliver::{Deliver, Needs};
use super::record::Record;
use super::writer;
use super::{failed_counter, FilterConfig, SinkError, TARGET};

pub use super::writer::FsyncPolicy;

/// `type = "file"`: appends each event as one JSON line (JSON Lines) to a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to append to, e.g. `/var/log/chatwatch/events.jsonl`. Created with `mode` if
    /// missing; an existing file keeps its permissions and content. Required.
    pub path: PathBuf,
    /// The permissions of the file when chatwatch creates it (at start, and after a reopen
    /// finds it moved away), umask notwithstanding: an octal string such as `"0640"` (default:
    /// the service's group may read) or `"0600"`. See [`FileMode`](super::mode::FileMode).
    #[serde(default)]
    pub mode: super::mode::FileMode,
    /// When to sync written lines to disk: `"always"` (after every batch), `"interval"`
    /// (default: at most every `fsync_interval`) or `"never"` (only at shutdown).
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// With `fsync = "interval"`: the longest time written lines may stay unsynced, e.g.
    /// `"1s"` (default), `"250ms"`. Must be greater than zero.
    #[serde(default = "default_fsync_interval", with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// Create the file's missing parent directories (mode `0750`) when the sink is built. Default `true`.
    #[serde(
        default = "default_create_dirs",
        deserialize_with = "super::lenient::bool"
    )]
    pub create_dirs: bool,
    /// Which events this sink receives; default: all.
    #[serde(default)]
    pub filter: FilterConfig,
}

fn default_fsync_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_create_dirs() -> bool {
    true
}

impl FileSinkConfig {
    /// A configuration for `path` with every other option at its default.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            mode: super::mode::FileMode::default(),
            fsync: FsyncPolicy::default(),
            fsync_interval: default_fsync_interval(),
            create_dirs: default_create_dirs(),
            filter: FilterConfig::default(),
        }
    }

    /// Checks the configuration without touching the filesystem.
    pub fn validate(&self) -> Result<(), SinkError> {
        if self.path.as_os_str().is_empty() {
            return Err(SinkError::invalid("path", "must not be empty"));
        }
        if self.path.file_name().is_none() || self.path.to_string_lossy().ends_with('/') {
            return Err(SinkError::invalid(
                "path",
                format!("`{}` does not name a file", self.path.display()),
            ));
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval.is_zero() {
            return Err(SinkError::invalid(
                "fsync_interval",
                "must be greater than zero (use fsync = \"always\" to sync every batch)",
            ));
        }
        self.filter.validate().map_err(SinkError::filter)
    }

    /// Validates, starts the sink's writer thread and waits until it has opened the file
    /// (creating missing directories if `create_dirs`, repairing a torn last line), so a bad
    /// path fails here with an error naming the sink and the path.
    pub async fn build(&self, name: &str) -> Result<FileSink, SinkError> {
        self.validate().map_err(|e| e.in_sink(name))?;
        let opener = StdOpener {
            sink: name.to_owned(),
            path: self.path.clone(),
            create_dirs: self.create_dirs,
            mode: self.mode,
        };
        build_with(
            name,
            &self.path,
            self.fsync,
            self.fsync_interval,
            (writer::RETRY_INITIAL, writer::RETRY_MAX),
            opener,
        )
        .await
    }
}

/// The running `file` sink: see [`Deliver`] and the module documentation.
///
/// [`deliver`](Deliver::deliver) hands the batch to the writer thread and resolves once it is
/// written and flushed, and, per [`FsyncPolicy`]: synced (`always`), covered by the next
/// interval sync (`interval`), or nothing more (`never`). A failed write is retried inside
/// (the call stays pending); a failed fsync returns [`SinkError::Failed`] and stops the
/// instance. [`reopen`](Deliver::reopen) reopens the path (logrotate's rename + create);
/// [`close`](Deliver::close) flushes and syncs.
#[derive(Debug)]
pub struct FileSink {
    writer: writer::Handle,
}

impl Deliver for FileSink {
    fn deliver(
        &mut self,
        records: &[Arc<Record>],
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.writer.deliver(records)
    }

    /// A line is the journal payload itself: nothing is decoded.
    fn needs(&self) -> Needs {
        Needs::Bytes
    }

    fn reopen(&mut self) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.writer.reopen()
    }

    fn close(&mut self) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.writer.close()
    }
}

/// Starts a [`FileSink`] writing through `opener` (tests inject failing files here). Its
/// metric handles are registered before this returns, the file opened when the future resolves.
fn build_with<O: Opener>(
    name: &str,
    path: &Path,
    fsync: FsyncPolicy,
    fsync_interval: Duration,
    (retry_initial, retry_max): (Duration, Duration),
    opener: O,
) -> impl std::future::Future<Output = Result<FileSink, SinkError>> + Send {
    let settings = writer::Settings {
        sink: name.to_owned(),
        what: format!("`{}`", path.display()),
        fsync,
        fsync_interval,
        retry_initial,
        retry_max,
    };
    let sink = name.to_owned();
    let path = path.to_owned();
    let counters = FileCounters::new(name);
    let writer = writer::Handle::spawn(settings, move || {
        PlainOutput::open(sink.clone(), path.clone(), opener, counters)
            .map_err(|error| SinkError::Open { sink, path, error })
    });
    async move {
        Ok(FileSink {
            writer: writer.await?,
        })
    }
}

/// The file sink's output on the writer thread: plain JSON lines.
struct PlainOutput<O: Opener> {
    sink: String,
    path: PathBuf,
    opener: O,
    file: O::File,
    /// The file length after the last good write: where the next batch starts.
    end: u64,
    counters: FileCounters,
}

impl<O: Opener> PlainOutput<O> {
    fn open(
        sink: String,
        path: PathBuf,
        mut opener: O,
        counters: FileCounters,
    ) -> io::Result<Self> {
        let mut file = opener.open()?;
        end_torn_line(&mut file, &sink, &path)?;
        let end = file.size()?;
        Ok(Self {
            sink,
            path,
            opener,
            file,
            end,
            counters,
        })
    }
}

impl<O: Opener> writer::Output for PlainOutput<O> {
    fn append(
        &mut self,
        records: &[Arc<Record>],
        retry: &writer::Retry<'_>,
    ) -> Result<u64, writer::OutputError> {
        let size: usize = records.iter().map(|r| r.json().len() + 1).sum();
        let mut batch = Vec::with_capacity(size);
        for record in records {
            // The journal payload as it is (one JSON object without a line break).
            match record.line() {
                Ok(line) => {
                    batch.extend_from_slice(&line);
                    batch.push(b'\n');
                }
                Err(error) => {
                    // Only a payload with a line break in it that is not an event gets here;
                    // retrying would not help: the record is skipped, loudly.
                    self.counters.failed_encode.increment(1);
                    tracing::error!(
                        target: TARGET,
                        sink = %self.sink,
                        event_id = %record.id_or_empty(),
                        %error,
                        "cannot write the record as one JSON line; skipped"
                    );
                }
            }
        }
        append_retrying(
            &mut self.file,
            &mut self.end,
            &batch,
            (&self.sink, &self.path, "the file"),
            retry,
            &self.counters.failed_write,
        )?;
        Ok(batch.len() as u64)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.sync_data()
    }

    fn reopen(&mut self) -> io::Result<()> {
        let mut file = self.opener.open()?;
        end_torn_line(&mut file, &self.sink, &self.path)?;
        self.end = file.size()?;
        self.file = file;
        Ok(())
    }
}

/// Opens (or reopens) the sink's file.
pub(crate) trait Opener: Send + 'static {
    /// The file type it opens.
    type File: SinkFile + 'static;
    /// Opens the file for appending, creating it if missing.
    fn open(&mut self) -> io::Result<Self::File>;
}

/// Opens the configured path with `std::fs`.
struct StdOpener {
    sink: String,
    path: PathBuf,
    create_dirs: bool,
    mode: super::mode::FileMode,
}

impl Opener for StdOpener {
    type File = std::fs::File;

    fn open(&mut self) -> io::Result<std::fs::File> {
        let parent = self.path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            if self.create_dirs && !parent.exists() {
                create_dirs(parent)?;
            }
        }
        let existed = self.path.symlink_metadata().is_ok();
        let mut options = std::fs::OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&self.path)?;
        if !existed {
            self.mode.apply(&file)?;
            // Make the new directory entry durable too.
            if let Err(error) = sync_dir(parent.unwrap_or(Path::new("."))) {
                tracing::warn!(
                    target: TARGET,
                    sink = %self.sink,
                    path = %self.path.display(),
                    %error,
                    "cannot sync the directory of the new file"
                );
            }
        }
        Ok(file)
    }
}

/// The file sink's own metric handles (the writer thread counts deliveries, syncs, reopens).
#[derive(Debug, Clone)]
struct FileCounters {
    failed_write: Counter,
    failed_encode: Counter,
}

impl FileCounters {
    fn new(sink: &str) -> Self {
        Self {
            failed_write: failed_counter(sink, "write"),
            failed_encode: failed_counter(sink, "encode"),
        }
    }
}

/// If the file does not end with a newline (a torn last line from a crash), appends one (and
/// syncs) so new records start on their own line; the torn fragment stays for readers to skip.
fn end_torn_line<F: SinkFile>(file: &mut F, sink: &str, path: &Path) -> io::Result<()> {
    if let Some(last) = file.last_byte()? {
        if last != b'\n' {
            file.write_all(b"\n")?;
            file.flush()?;
            file.sync_data()?;
            tracing::warn!(
                target: TARGET,
                sink = %sink,
                path = %path.display(),
                "the file did not end with a newline (torn last line from a crash?); \
                 appended one so new records start on their own line"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
