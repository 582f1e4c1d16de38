//! The `file` sink: events appended as JSON Lines to one file, with an explicit fsync policy.
//!
//! This module owns [`FileSinkConfig`] and the sink's writer: one dedicated OS thread that owns
//! a `std::fs::File` opened with `O_APPEND` (created with the sink's `mode`, default `0640`) and is fed by the sink's
//! bounded queue. The thread is the only writer. It never uses `tokio::fs::File`, whose writes
//! may report success before they happen (tokio#5531, tokio#6005).
//!
//! The writer drains whatever is queued into one batch (at most [`MAX_BATCH_EVENTS`] events or
//! about [`MAX_BATCH_BYTES`]), writes the batch of complete lines with one `write_all`, flushes,
//! then syncs per [`FsyncPolicy`]. Its failure handling:
//! - **Failed write** (e.g. `ENOSPC`): the file is truncated back to its length before the batch,
//!   so no torn line stays; the error is logged and counted, and the same batch is retried with
//!   backoff (100 ms doubling to 5 s) until it succeeds or shutdown gives up. Meanwhile events
//!   keep queueing, bounded by the queue; the fan-out counts what overflows.
//! - **Failed `sync_data`**: after a failed fsync, Linux may have dropped the dirty pages and a
//!   retried fsync can falsely succeed ("fsyncgate"). So the handle is treated as poisoned: it
//!   is dropped, the file reopened, truncated to the length of the last successful sync, and
//!   everything written since then is rewritten from memory and synced again (with backoff).
//!   The writer keeps those bytes in memory until they are synced; with `fsync = "interval"`
//!   it syncs early once [`MAX_UNSYNCED_BYTES`] accumulate, which bounds that memory. With
//!   `fsync = "never"` nothing is kept and a failed sync (at shutdown) is only reported.
//! - **Torn last line at startup** (a crash mid-write): if the file does not end with `\n`, one
//!   is appended so the next record starts on its own line; the torn fragment stays as an
//!   unparseable line for readers to skip, and the repair is logged.
//!
//! On shutdown the queue is closed; the writer writes everything queued, then flushes and syncs
//! whatever the policy. If a write keeps failing past the shutdown deadline, the writer gives up,
//! truncates any partial batch away and counts the unwritten events as dropped.
//!
//! # The journal-driven form: [`FileSink`]
//!
//! [`FileSinkConfig::open`] starts the same kind of writer thread behind the
//! [`Deliver`] contract instead of a queue (the shared writer is described in
//! `src/sinks/writer.rs`). There the journal holds the events, so the rules change:
//! [`Deliver::deliver`] resolves once its batch is written and flushed and, with `always`,
//! synced; with `interval` the sync follows within `fsync_interval` (a power loss, not a process
//! crash, can lose up to one interval of lines the journal already counts as delivered: use
//! `always` where that matters); with `never` only at shutdown. A failed write is still
//! truncated away and retried with backoff while the call stays pending; a failed fsync is
//! fatal for the instance ([`SinkError::Failed`]; the runner rebuilds the sink and re-delivers
//! from its cursor) instead of the reopen-and-rewrite above. [`Deliver::reopen`] reopens the
//! path (logrotate's rename + create); [`Deliver::close`] flushes and syncs.
//!
//! Throughput through the journal is measured by `cargo bench --bench delivery` (README).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::event::Event;

use super::deliver::Deliver;
use super::writer;
use super::{
    default_queue_capacity, delivered_counter, dropped_counter, failed_counter,
    validate_queue_capacity, FilterConfig, RunningSink, SinkError, TARGET,
};

/// Most events written in one batch.
pub const MAX_BATCH_EVENTS: usize = 1024;
/// A batch stops growing once it holds this many bytes (one event may exceed it).
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// With `fsync = "interval"`, sync early once this many bytes are unsynced.
pub const MAX_UNSYNCED_BYTES: usize = 8 << 20;
/// First retry delay after a failed write, sync or reopen.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// When the file sink calls `sync_data` (fdatasync).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every batch, before taking the next: an event counts as delivered only once it is
    /// on disk. Safest, slowest (one fdatasync per batch).
    Always,
    /// When there are unsynced writes and `fsync_interval` has passed since the last sync, also
    /// while idle (group commit). A batch counts as delivered once written: a power loss can
    /// lose up to about one interval.
    #[default]
    Interval,
    /// Never, except at shutdown: the kernel decides. Not for audit files.
    Never,
}

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
    /// Only for the in-process [`Fanout`](crate::sinks::Fanout) (library use): how many events
    /// may wait for this sink before new ones are dropped for it. The daemon delivers from the
    /// journal and ignores it. Default 10000.
    #[serde(
        default = "default_queue_capacity",
        deserialize_with = "super::lenient::usize"
    )]
    pub queue_capacity: usize,
    /// Create the file's missing parent directories (mode `0750`) at startup. Default `true`.
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
            queue_capacity: default_queue_capacity(),
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
        validate_queue_capacity(self.queue_capacity)?;
        self.filter.validate()
    }

    /// Validates, starts the writer thread and waits until it has opened (and if needed
    /// repaired) the file, so a bad path fails here with an error naming the sink and the path.
    pub async fn build(&self, name: &str) -> Result<RunningSink, SinkError> {
        self.validate().map_err(|e| e.in_sink(name))?;
        let opener = StdOpener {
            sink: name.to_owned(),
            path: self.path.clone(),
            create_dirs: self.create_dirs,
            mode: self.mode,
        };
        let settings = WriterSettings {
            sink: name.to_owned(),
            path: self.path.clone(),
            fsync: self.fsync,
            fsync_interval: self.fsync_interval,
            retry_initial: RETRY_INITIAL,
            retry_max: RETRY_MAX,
            counters: FileCounters::new(name),
        };
        let (queue, rx) = mpsc::channel(self.queue_capacity);
        let stop = CancellationToken::new();
        let (opened_tx, opened_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        spawn_writer(settings, opener, rx, stop.clone(), opened_tx, done_tx).map_err(|error| {
            SinkError::Spawn {
                sink: name.to_owned(),
                path: self.path.clone(),
                error,
            }
        })?;
        match opened_rx.await {
            Ok(Ok(())) => Ok(RunningSink::new(
                name,
                self.filter.clone(),
                queue,
                done,
                stop.drop_guard(),
            )),
            Ok(Err(error)) => Err(SinkError::Open {
                sink: name.to_owned(),
                path: self.path.clone(),
                error,
            }),
            Err(_) => Err(SinkError::WriterGone {
                sink: name.to_owned(),
                path: self.path.clone(),
            }),
        }
    }
}

impl FileSinkConfig {
    /// Validates and opens the file (repairing a torn last line) on a new writer thread, and
    /// returns the sink in its journal-driven form: a [`FileSink`] implementing [`Deliver`].
    /// Fails here, naming the sink and the path, when the file cannot be opened.
    pub async fn open(&self, name: &str) -> Result<FileSink, SinkError> {
        self.validate().map_err(|e| e.in_sink(name))?;
        let opener = StdOpener {
            sink: name.to_owned(),
            path: self.path.clone(),
            create_dirs: self.create_dirs,
            mode: self.mode,
        };
        open_deliver(
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

/// The `file` sink in its journal-driven form: see [`Deliver`] and the module documentation.
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
        events: &[Arc<Event>],
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.writer.deliver(events)
    }

    fn reopen(&mut self) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.writer.reopen()
    }

    fn close(&mut self) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.writer.close()
    }
}

/// Starts a [`FileSink`] writing through `opener` (tests inject failing files here).
async fn open_deliver<O: Opener>(
    name: &str,
    path: &Path,
    fsync: FsyncPolicy,
    fsync_interval: Duration,
    (retry_initial, retry_max): (Duration, Duration),
    opener: O,
) -> Result<FileSink, SinkError> {
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
    })
    .await?;
    Ok(FileSink { writer })
}

/// The file sink's output for the [`Deliver`] path: plain JSON lines.
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
        events: &[Arc<Event>],
        retry: &writer::Retry<'_>,
    ) -> Result<u64, writer::OutputError> {
        let mut batch = Vec::with_capacity(512 * events.len());
        for event in events {
            let start = batch.len();
            match serde_json::to_writer(&mut batch, &**event) {
                Ok(()) => batch.push(b'\n'),
                Err(error) => {
                    // Retrying would not help; the event is skipped, loudly.
                    batch.truncate(start);
                    self.counters.failed_encode.increment(1);
                    tracing::error!(
                        target: TARGET,
                        sink = %self.sink,
                        event_id = %event.event_id,
                        %error,
                        "cannot encode the event as JSON; skipped"
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

/// The writer's view of its file, so tests can inject failures.
pub(crate) trait SinkFile: Send {
    /// Appends all of `buf`.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Flushes user-space buffers (none for `std::fs::File`).
    fn flush(&mut self) -> io::Result<()>;
    /// fdatasync.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Truncates (or extends) to `len` bytes.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// The last byte of a non-empty regular file; `None` when empty or not a regular file.
    fn last_byte(&mut self) -> io::Result<Option<u8>>;
}

/// Opens (or reopens) the sink's file.
pub(crate) trait Opener: Send + 'static {
    /// The file type it opens.
    type File: SinkFile + 'static;
    /// Opens the file for appending, creating it if missing.
    fn open(&mut self) -> io::Result<Self::File>;
}

impl SinkFile for std::fs::File {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        Write::write_all(self, buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Write::flush(self)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        std::fs::File::sync_data(self)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        std::fs::File::set_len(self, len)
    }

    fn last_byte(&mut self) -> io::Result<Option<u8>> {
        let metadata = self.metadata()?;
        if !metadata.is_file() || metadata.len() == 0 {
            return Ok(None);
        }
        // Reading moves the cursor only: with O_APPEND every write still goes to the end.
        self.seek(SeekFrom::End(-1))?;
        let mut byte = [0u8; 1];
        self.read_exact(&mut byte)?;
        Ok(Some(byte[0]))
    }
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

/// Creates `dir` and its missing parents, mode `0750` on unix.
pub(crate) fn create_dirs(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o750);
    }
    builder.create(dir)
}

/// fsyncs a directory so a newly created, renamed or removed entry in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The file sink's metric handles, registered once when the sink is built.
#[derive(Debug, Clone)]
struct FileCounters {
    delivered: Counter,
    failed_write: Counter,
    failed_sync: Counter,
    failed_reopen: Counter,
    failed_encode: Counter,
    dropped_shutdown: Counter,
}

impl FileCounters {
    fn new(sink: &str) -> Self {
        Self {
            delivered: delivered_counter(sink),
            failed_write: failed_counter(sink, "write"),
            failed_sync: failed_counter(sink, "sync"),
            failed_reopen: failed_counter(sink, "reopen"),
            failed_encode: failed_counter(sink, "encode"),
            dropped_shutdown: dropped_counter(sink, "shutdown"),
        }
    }
}

/// What the writer needs besides its file.
struct WriterSettings {
    sink: String,
    path: PathBuf,
    fsync: FsyncPolicy,
    fsync_interval: Duration,
    retry_initial: Duration,
    retry_max: Duration,
    counters: FileCounters,
}

/// The writer thread reads the clock only here.
// This is a dedicated OS thread doing blocking file I/O, not async code: tokio's paused test
// clock is irrelevant to it, so the std clock is the right one.
#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// Starts the writer thread. It reports the outcome of opening the file on `opened`, then runs
/// until the queue is closed and drained (or `stop` makes it give up), then fires `done`.
fn spawn_writer<O: Opener>(
    settings: WriterSettings,
    opener: O,
    rx: mpsc::Receiver<Arc<Event>>,
    stop: CancellationToken,
    opened: oneshot::Sender<io::Result<()>>,
    done: oneshot::Sender<()>,
) -> io::Result<()> {
    let thread_name: String = format!("sink-{}", settings.sink)
        .chars()
        .filter(|c| *c != '\0')
        .take(15)
        .collect();
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = opened.send(Err(error));
                    return;
                }
            };
            match Writer::open(settings, opener, runtime, stop) {
                Ok(writer) => {
                    let _ = opened.send(Ok(()));
                    writer.run(rx);
                    let _ = done.send(());
                }
                Err(error) => {
                    let _ = opened.send(Err(error));
                }
            }
        })?;
    Ok(())
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

/// Appends `batch` at `*end` with [`append_at`], retrying with `retry`'s backoff until it
/// succeeds: each failure is counted in `failed_write` and logged, and a recovery after failures
/// is logged once. `what` names the file in those lines ("the file", "the audit file").
pub(crate) fn append_retrying<F: SinkFile>(
    file: &mut F,
    end: &mut u64,
    batch: &[u8],
    (sink, path, what): (&str, &Path, &str),
    retry: &writer::Retry<'_>,
    failed_write: &metrics::Counter,
) -> Result<(), writer::OutputError> {
    let ((), attempts) = retry.run(
        || append_at(file, end, batch, sink, path),
        |error, attempt, delay| {
            failed_write.increment(1);
            tracing::error!(
                target: TARGET,
                sink = %sink,
                path = %path.display(),
                %error,
                attempt,
                retry_in = ?delay,
                "cannot write to {what}; truncated the partial write, will retry it"
            );
        },
    )?;
    if attempts > 1 {
        tracing::info!(
            target: TARGET,
            sink = %sink,
            path = %path.display(),
            attempts,
            "writing to {what} works again"
        );
    }
    Ok(())
}

/// One attempt at appending `batch` (complete lines) at `*end`, the file length after the last
/// good write. Anything beyond `*end` (a partial earlier attempt) is truncated first; if this
/// write fails, the file is truncated back to `*end` at once (and checked again by the next
/// attempt in case that failed too), so no torn line stays. On success `*end` moves past the
/// batch.
pub(crate) fn append_at<F: SinkFile>(
    file: &mut F,
    end: &mut u64,
    batch: &[u8],
    sink: &str,
    path: &Path,
) -> io::Result<()> {
    let size = file.size()?;
    if size > *end {
        file.set_len(*end)?;
    } else if size < *end {
        tracing::warn!(
            target: TARGET,
            sink = %sink,
            path = %path.display(),
            expected = *end,
            actual = size,
            "the file is shorter than this writer left it (truncated by another process?)"
        );
        *end = size;
    }
    match file.write_all(batch).and_then(|()| file.flush()) {
        Ok(()) => {
            *end += batch.len() as u64;
            Ok(())
        }
        Err(error) => {
            if let Err(truncate_error) = file.set_len(*end) {
                tracing::warn!(
                    target: TARGET,
                    sink = %sink,
                    path = %path.display(),
                    error = %truncate_error,
                    "cannot truncate the partial write yet; will retry before the next write"
                );
            }
            Err(error)
        }
    }
}

/// Shutdown gave up while a write, sync or reopen kept failing.
struct Abandoned;

/// The single writer of one file sink; lives on its own thread.
struct Writer<O: Opener> {
    s: WriterSettings,
    opener: O,
    /// `None` after a failed sync (the handle is poisoned) until a reopen succeeds.
    file: Option<O::File>,
    /// The file length after the last successful write: where the next batch starts.
    end: u64,
    /// The file length at the last successful sync.
    synced_len: u64,
    /// Everything written since the last successful sync (not kept with `fsync = "never"`).
    unsynced: Vec<u8>,
    /// Whether anything was written since the last successful sync.
    dirty: bool,
    last_sync: std::time::Instant,
    /// A small runtime of this thread's own, for receiving with a timeout and for cancellable
    /// backoff sleeps.
    runtime: tokio::runtime::Runtime,
    /// Cancelled when shutdown gives up on this sink: stop retrying.
    stop: CancellationToken,
}

impl<O: Opener> Writer<O> {
    /// Opens the file and repairs a torn last line.
    fn open(
        s: WriterSettings,
        mut opener: O,
        runtime: tokio::runtime::Runtime,
        stop: CancellationToken,
    ) -> io::Result<Self> {
        let mut file = opener.open()?;
        end_torn_line(&mut file, &s.sink, &s.path)?;
        let end = file.size()?;
        Ok(Self {
            s,
            opener,
            file: Some(file),
            end,
            synced_len: end,
            unsynced: Vec::new(),
            dirty: false,
            last_sync: now(),
            runtime,
            stop,
        })
    }

    fn keeps_unsynced(&self) -> bool {
        self.s.fsync != FsyncPolicy::Never
    }

    /// The writer loop: batch, write, sync per policy; on close, flush and sync.
    fn run(mut self, mut rx: mpsc::Receiver<Arc<Event>>) {
        loop {
            let first = match self.next_event(&mut rx) {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(Abandoned) => return self.abandon(&mut rx, 0),
            };
            let (batch, count) = self.collect_batch(&first, &mut rx);
            drop(first);
            if count == 0 {
                continue;
            }
            if self.write_batch(&batch).is_err() {
                return self.abandon(&mut rx, count);
            }
            match self.s.fsync {
                FsyncPolicy::Always => {
                    if self.sync().is_err() {
                        return self.abandon(&mut rx, count);
                    }
                    self.s.counters.delivered.increment(count as u64);
                }
                FsyncPolicy::Interval => {
                    self.s.counters.delivered.increment(count as u64);
                    if self.sync_due() && self.sync().is_err() {
                        return self.abandon(&mut rx, 0);
                    }
                }
                FsyncPolicy::Never => self.s.counters.delivered.increment(count as u64),
            }
        }
        self.finish();
    }

    /// Waits for the next event; with `fsync = "interval"` and unsynced data, wakes up to sync
    /// when the interval passes even if no event arrives. `None` once the queue is closed and
    /// empty.
    fn next_event(
        &mut self,
        rx: &mut mpsc::Receiver<Arc<Event>>,
    ) -> Result<Option<Arc<Event>>, Abandoned> {
        loop {
            if self.s.fsync == FsyncPolicy::Interval && self.dirty {
                let since = self.last_sync.elapsed();
                if since >= self.s.fsync_interval {
                    self.sync()?;
                    continue;
                }
                let wait = self.s.fsync_interval - since;
                // The timer must be created inside the runtime, hence the async block.
                let next = self
                    .runtime
                    .block_on(async { tokio::time::timeout(wait, rx.recv()).await });
                match next {
                    Ok(next) => return Ok(next),
                    Err(_elapsed) => continue,
                }
            }
            return Ok(self.runtime.block_on(rx.recv()));
        }
    }

    /// Serialises `first` and whatever else is queued (bounded) into one buffer of lines.
    fn collect_batch(
        &self,
        first: &Event,
        rx: &mut mpsc::Receiver<Arc<Event>>,
    ) -> (Vec<u8>, usize) {
        let mut batch = Vec::with_capacity(4096);
        let mut count = 0;
        self.encode(first, &mut batch, &mut count);
        while count < MAX_BATCH_EVENTS && batch.len() < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(event) => self.encode(&event, &mut batch, &mut count),
                Err(_) => break,
            }
        }
        (batch, count)
    }

    /// Appends `event` as one JSON line; an event that cannot be encoded is logged, counted and
    /// skipped (retrying would not help).
    fn encode(&self, event: &Event, batch: &mut Vec<u8>, count: &mut usize) {
        let start = batch.len();
        match serde_json::to_writer(&mut *batch, event) {
            Ok(()) => {
                batch.push(b'\n');
                *count += 1;
            }
            Err(error) => {
                batch.truncate(start);
                self.s.counters.failed_encode.increment(1);
                tracing::error!(
                    target: TARGET,
                    sink = %self.s.sink,
                    event_id = %event.event_id,
                    %error,
                    "cannot encode the event as JSON; skipped"
                );
            }
        }
    }

    /// Sleeps `delay` unless shutdown gives up first; false when it did.
    fn pause(&self, delay: Duration) -> bool {
        let stop = &self.stop;
        self.runtime.block_on(async {
            tokio::select! {
                biased;
                () = stop.cancelled() => false,
                () = tokio::time::sleep(delay) => true,
            }
        })
    }

    /// Writes `batch`, retrying with backoff until it succeeds or shutdown gives up.
    fn write_batch(&mut self, batch: &[u8]) -> Result<(), Abandoned> {
        let mut delay = self.s.retry_initial;
        let mut attempt: u32 = 1;
        loop {
            match self.try_write(batch) {
                Ok(()) => break,
                Err(error) => {
                    self.s.counters.failed_write.increment(1);
                    tracing::error!(
                        target: TARGET,
                        sink = %self.s.sink,
                        path = %self.s.path.display(),
                        %error,
                        attempt,
                        retry_in = ?delay,
                        "cannot write to the file; truncated the partial batch, will retry it"
                    );
                    if !self.pause(delay) {
                        return Err(Abandoned);
                    }
                    delay = (delay * 2).min(self.s.retry_max);
                    attempt += 1;
                }
            }
        }
        if attempt > 1 {
            tracing::info!(
                target: TARGET,
                sink = %self.s.sink,
                path = %self.s.path.display(),
                attempts = attempt,
                "writing to the file works again"
            );
        }
        self.end += batch.len() as u64;
        if self.keeps_unsynced() {
            self.unsynced.extend_from_slice(batch);
        }
        self.dirty = true;
        Ok(())
    }

    /// One attempt at writing `batch` at `self.end`. On failure the file is truncated back to
    /// `self.end` (and checked again before the next attempt in case that failed too).
    fn try_write(&mut self, batch: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.reopen()?;
        }
        let end = self.end;
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the file is not open"));
        };
        let size = file.size()?;
        if size > end {
            file.set_len(end)?;
        } else if size < end {
            tracing::warn!(
                target: TARGET,
                sink = %self.s.sink,
                path = %self.s.path.display(),
                expected = end,
                actual = size,
                "the file is shorter than this writer left it (truncated by another process?)"
            );
            self.end = size;
            self.synced_len = self.synced_len.min(size);
            self.unsynced.clear();
        }
        let end = self.end;
        match file.write_all(batch).and_then(|()| file.flush()) {
            Ok(()) => Ok(()),
            Err(error) => {
                if let Err(truncate_error) = file.set_len(end) {
                    tracing::warn!(
                        target: TARGET,
                        sink = %self.s.sink,
                        path = %self.s.path.display(),
                        error = %truncate_error,
                        "cannot truncate the partial batch yet; will retry before the next write"
                    );
                }
                Err(error)
            }
        }
    }

    /// Whether `fsync = "interval"` calls for a sync now.
    fn sync_due(&self) -> bool {
        self.dirty
            && (self.last_sync.elapsed() >= self.s.fsync_interval
                || self.unsynced.len() >= MAX_UNSYNCED_BYTES)
    }

    /// Flushes and syncs. A failed sync poisons the handle: reopen, rewrite what was written
    /// since the last good sync, sync again, with backoff, until it works or shutdown gives up.
    fn sync(&mut self) -> Result<(), Abandoned> {
        let result = match self.file.as_mut() {
            Some(file) => file.flush().and_then(|()| file.sync_data()),
            None => Err(io::Error::other("the file is not open")),
        };
        let error = match result {
            Ok(()) => {
                self.synced();
                return Ok(());
            }
            Err(error) => error,
        };
        self.s.counters.failed_sync.increment(1);
        self.file = None;
        if !self.keeps_unsynced() {
            tracing::error!(
                target: TARGET,
                sink = %self.s.sink,
                path = %self.s.path.display(),
                %error,
                "fsync failed; lines written since the last sync may not be on disk \
                 (fsync = \"never\" keeps no copy to rewrite)"
            );
            return Ok(());
        }
        tracing::error!(
            target: TARGET,
            sink = %self.s.sink,
            path = %self.s.path.display(),
            %error,
            unsynced_bytes = self.unsynced.len(),
            "fsync failed; reopening the file and rewriting everything since the last good sync"
        );
        let mut delay = self.s.retry_initial;
        loop {
            match self.reopen() {
                Ok(()) => {
                    tracing::info!(
                        target: TARGET,
                        sink = %self.s.sink,
                        path = %self.s.path.display(),
                        "reopened the file and rewrote the unsynced lines"
                    );
                    return Ok(());
                }
                Err(error) => {
                    self.s.counters.failed_reopen.increment(1);
                    tracing::error!(
                        target: TARGET,
                        sink = %self.s.sink,
                        path = %self.s.path.display(),
                        %error,
                        retry_in = ?delay,
                        "cannot reopen and rewrite the file; will retry"
                    );
                }
            }
            if !self.pause(delay) {
                return Err(Abandoned);
            }
            delay = (delay * 2).min(self.s.retry_max);
        }
    }

    /// Bookkeeping after a successful sync.
    fn synced(&mut self) {
        self.synced_len = self.end;
        self.unsynced.clear();
        self.dirty = false;
        self.last_sync = now();
    }

    /// Opens a fresh handle. When unsynced lines are kept, truncates to the last synced length,
    /// rewrites them and syncs, so nothing the kernel may have dropped is lost and nothing is
    /// duplicated.
    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        let mut file = self.opener.open()?;
        if self.keeps_unsynced() {
            if file.size()? > self.synced_len {
                file.set_len(self.synced_len)?;
            }
            file.write_all(&self.unsynced)?;
            file.flush()?;
            file.sync_data()?;
            self.end = file.size()?;
            self.file = Some(file);
            self.synced();
        } else {
            self.end = file.size()?;
            self.file = Some(file);
        }
        Ok(())
    }

    /// End of stream: flush and sync whatever the policy.
    fn finish(mut self) {
        if self.file.is_none() && self.unsynced.is_empty() {
            return;
        }
        if self.sync().is_err() {
            tracing::error!(
                target: TARGET,
                sink = %self.s.sink,
                path = %self.s.path.display(),
                unsynced_bytes = self.unsynced.len(),
                "gave up syncing the file at shutdown; recent lines may not be on disk"
            );
        }
    }

    /// Shutdown gave up: count and report everything not written, then stop.
    fn abandon(mut self, rx: &mut mpsc::Receiver<Arc<Event>>, in_flight: usize) {
        rx.close();
        let mut lost = in_flight as u64;
        while rx.try_recv().is_ok() {
            lost += 1;
        }
        self.s.counters.dropped_shutdown.increment(lost);
        tracing::error!(
            target: TARGET,
            sink = %self.s.sink,
            path = %self.s.path.display(),
            lost,
            unsynced_bytes = self.unsynced.len(),
            "shutdown gave up on the failing file: {lost} events were not written"
        );
        if let Some(file) = self.file.as_mut() {
            // Best effort: the batch was already truncated away; keep what is written.
            let _ = file.flush().and_then(|()| file.sync_data());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use metrics_util::debugging::DebuggingRecorder;

    use super::*;
    use crate::event::EventKind;

    /// Failures to inject, shared between the test and the writer.
    #[derive(Debug, Default)]
    struct Faults {
        /// Fail this many writes (after writing `partial` bytes of the buffer for real).
        fail_writes: usize,
        /// Bytes a failing write really writes first, to leave a torn line behind.
        partial: usize,
        /// Fail this many syncs.
        fail_syncs: usize,
        /// On a failed sync, simulate the kernel dropping the dirty pages by truncating the file
        /// to its length at the last successful sync.
        lose_on_failed_sync: bool,
        /// Fail this many opens (after the first).
        fail_reopens: usize,
        // Observations.
        opens: usize,
        syncs_ok: usize,
        writes_ok: usize,
        /// File length after the last successful sync, as the fault layer saw it.
        synced_len: u64,
        /// Set when a write happened while a previous write was still unsynced.
        write_after_unsynced_write: bool,
        unsynced_write: bool,
        /// While set, a sync waits (the test holds the writer inside `sync_data`).
        hold_syncs: bool,
        /// Set while a sync is held.
        sync_held: bool,
    }

    struct FaultyOpener {
        path: PathBuf,
        faults: Arc<Mutex<Faults>>,
    }

    struct FaultyFile {
        file: std::fs::File,
        faults: Arc<Mutex<Faults>>,
    }

    impl Opener for FaultyOpener {
        type File = FaultyFile;
        fn open(&mut self) -> io::Result<FaultyFile> {
            let mut faults = self.faults.lock().unwrap();
            faults.opens += 1;
            if faults.opens > 1 && faults.fail_reopens > 0 {
                faults.fail_reopens -= 1;
                return Err(io::Error::other("injected open failure"));
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&self.path)?;
            Ok(FaultyFile {
                file,
                faults: Arc::clone(&self.faults),
            })
        }
    }

    impl SinkFile for FaultyFile {
        fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
            let mut faults = self.faults.lock().unwrap();
            if faults.fail_writes > 0 {
                faults.fail_writes -= 1;
                let partial = faults.partial.min(buf.len());
                Write::write_all(&mut self.file, &buf[..partial])?;
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            if faults.unsynced_write {
                faults.write_after_unsynced_write = true;
            }
            Write::write_all(&mut self.file, buf)?;
            faults.writes_ok += 1;
            faults.unsynced_write = true;
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
        fn sync_data(&mut self) -> io::Result<()> {
            let mut faults = self.faults.lock().unwrap();
            while faults.hold_syncs {
                faults.sync_held = true;
                drop(faults);
                // The writer's own thread, not async code.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(1));
                faults = self.faults.lock().unwrap();
            }
            faults.sync_held = false;
            if faults.fail_syncs > 0 {
                faults.fail_syncs -= 1;
                if faults.lose_on_failed_sync {
                    self.file.set_len(faults.synced_len)?;
                }
                return Err(io::Error::from_raw_os_error(5)); // EIO
            }
            self.file.sync_data()?;
            faults.syncs_ok += 1;
            faults.unsynced_write = false;
            faults.synced_len = self.file.metadata()?.len();
            Ok(())
        }
        fn size(&self) -> io::Result<u64> {
            SinkFile::size(&self.file)
        }
        fn set_len(&mut self, len: u64) -> io::Result<()> {
            self.file.set_len(len)
        }
        fn last_byte(&mut self) -> io::Result<Option<u8>> {
            SinkFile::last_byte(&mut self.file)
        }
    }

    fn event(i: usize) -> Event {
        Event {
            schema: crate::event::SCHEMA.to_owned(),
            event_id: format!("event-{i:05}"),
            fingerprint: "cd".repeat(16),
            received_at: time::OffsetDateTime::UNIX_EPOCH,
            account: "agent1".to_owned(),
            channel: "/v2/me/chats".to_owned(),
            kind: EventKind::ChatState,
            message_type: Some("ChatStateChangeMessage".to_owned()),
            notification_type: None,
            reference_id: None,
            chat: None,
            messages: None,
            error_message: None,
            decode_error: None,
            recovered: false,
            data: serde_json::json!({"i": i, "text": "line\nbreak"}).into(),
        }
    }

    /// A writer over a faulty file in a temp dir, its queue and its signals.
    struct Harness {
        _dir: tempfile::TempDir,
        path: PathBuf,
        faults: Arc<Mutex<Faults>>,
        tx: Option<mpsc::Sender<Arc<Event>>>,
        stop: CancellationToken,
        done: oneshot::Receiver<()>,
        counters: crate::sinks::test_support::Counters,
    }

    async fn harness(
        fsync: FsyncPolicy,
        interval: Duration,
        faults: Faults,
        existing: &[u8],
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        if !existing.is_empty() {
            std::fs::write(&path, existing).unwrap();
        }
        let faults = Arc::new(Mutex::new(faults));
        let recorder = DebuggingRecorder::new();
        let counters_view = crate::sinks::test_support::Counters::new(&recorder);
        let counters = metrics::with_local_recorder(&recorder, || FileCounters::new("test"));
        let settings = WriterSettings {
            sink: "test".to_owned(),
            path: path.clone(),
            fsync,
            fsync_interval: interval,
            retry_initial: Duration::from_millis(2),
            retry_max: Duration::from_millis(20),
            counters,
        };
        let opener = FaultyOpener {
            path: path.clone(),
            faults: Arc::clone(&faults),
        };
        let (tx, rx) = mpsc::channel(10_000);
        let stop = CancellationToken::new();
        let (opened_tx, opened_rx) = oneshot::channel();
        let (done_tx, done) = oneshot::channel();
        spawn_writer(settings, opener, rx, stop.clone(), opened_tx, done_tx).unwrap();
        tokio::time::timeout(Duration::from_secs(10), opened_rx)
            .await
            .expect("writer reported in time")
            .expect("writer alive")
            .expect("writer opened the file");
        Harness {
            _dir: dir,
            path,
            faults,
            tx: Some(tx),
            stop,
            done,
            counters: counters_view,
        }
    }

    impl Harness {
        async fn send(&self, range: std::ops::Range<usize>) {
            let tx = self.tx.as_ref().unwrap();
            for i in range {
                tx.send(Arc::new(event(i))).await.unwrap();
            }
        }

        /// Closes the queue and waits for the writer to finish.
        async fn close(&mut self) {
            self.tx = None;
            tokio::time::timeout(Duration::from_secs(10), &mut self.done)
                .await
                .expect("writer finished in time")
                .expect("writer finished normally");
        }

        fn counter(&self, name: &str, cause: Option<&str>) -> u64 {
            match cause {
                Some(cause) => self.counters.get(name, &[("cause", cause)]),
                None => self.counters.get(name, &[]),
            }
        }

        fn content(&self) -> String {
            String::from_utf8(std::fs::read(&self.path).unwrap()).unwrap()
        }

        /// Waits until `check` holds, up to 10 s.
        async fn wait_for(&self, what: &str, check: impl Fn(&Self) -> bool) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !check(self) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out waiting for {what}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// Every line parses into an event, ids are exactly `range` in order.
    fn assert_lines(content: &str, skip: usize, range: std::ops::Range<usize>) {
        assert!(
            content.is_empty() || content.ends_with('\n'),
            "torn last line: {content:?}"
        );
        let lines: Vec<&str> = content.lines().skip(skip).collect();
        let ids: Vec<String> = lines
            .iter()
            .map(|line| {
                serde_json::from_str::<Event>(line)
                    .unwrap_or_else(|e| panic!("line {line:?} does not parse: {e}"))
                    .event_id
            })
            .collect();
        let expected: Vec<String> = range.map(|i| event(i).event_id).collect();
        assert_eq!(ids, expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lines_are_written_in_order_and_parse_back() {
        let mut h = harness(
            FsyncPolicy::Interval,
            Duration::from_secs(1),
            Faults::default(),
            b"",
        )
        .await;
        h.send(0..500).await;
        h.close().await;
        let content = h.content();
        assert_lines(&content, 0, 0..500);
        let first: Event = serde_json::from_str(content.lines().next().unwrap()).unwrap();
        assert_eq!(first, event(0), "the record round-trips");
        assert_eq!(h.counter(crate::sinks::DELIVERED_EVENTS, None), 500);
        assert_eq!(h.counter(crate::sinks::FAILED_WRITES, None), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn write_failures_are_retried_without_loss_duplication_or_torn_lines() {
        let faults = Faults {
            fail_writes: 4,
            partial: 17,
            ..Faults::default()
        };
        let mut h = harness(
            FsyncPolicy::Interval,
            Duration::from_millis(50),
            faults,
            b"",
        )
        .await;
        h.send(0..10).await;
        h.wait_for("the first retry", |h| {
            h.counter(crate::sinks::FAILED_WRITES, Some("write")) >= 1
        })
        .await;
        h.send(10..300).await;
        h.close().await;
        assert_lines(&h.content(), 0, 0..300);
        assert_eq!(h.counter(crate::sinks::FAILED_WRITES, Some("write")), 4);
        assert_eq!(h.counter(crate::sinks::DELIVERED_EVENTS, None), 300);
        assert_eq!(h.counter(crate::sinks::DROPPED_EVENTS, None), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_sync_reopens_and_rewrites_lost_lines() {
        for lose in [true, false] {
            let faults = Faults {
                fail_syncs: 2,
                lose_on_failed_sync: lose,
                fail_reopens: 1,
                ..Faults::default()
            };
            let mut h = harness(FsyncPolicy::Always, Duration::from_secs(1), faults, b"").await;
            h.send(0..50).await;
            h.wait_for("a failed sync", |h| {
                h.counter(crate::sinks::FAILED_WRITES, Some("sync")) >= 1
            })
            .await;
            h.send(50..100).await;
            h.close().await;
            assert_lines(&h.content(), 0, 0..100);
            // Two injected sync failures and one injected open failure: the first sync failure
            // is counted as `sync`; a later one may hit the rewrite inside a reopen attempt.
            let sync = h.counter(crate::sinks::FAILED_WRITES, Some("sync"));
            let reopen = h.counter(crate::sinks::FAILED_WRITES, Some("reopen"));
            assert!(sync >= 1 && reopen >= 1, "sync={sync} reopen={reopen}");
            assert_eq!(sync + reopen, 3, "lose={lose}");
            assert_eq!(h.counter(crate::sinks::DELIVERED_EVENTS, None), 100);
            assert!(
                h.faults.lock().unwrap().opens >= 3,
                "the handle was reopened"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn always_syncs_every_batch_before_the_next_write() {
        let mut h = harness(
            FsyncPolicy::Always,
            Duration::from_secs(1),
            Faults::default(),
            b"",
        )
        .await;
        for i in 0..20 {
            h.send(i..i + 1).await;
        }
        h.close().await;
        assert_lines(&h.content(), 0, 0..20);
        let faults = h.faults.lock().unwrap();
        assert!(
            !faults.write_after_unsynced_write,
            "a batch was written before the previous was synced"
        );
        assert!(faults.syncs_ok >= faults.writes_ok, "{faults:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interval_syncs_a_quiet_stream_without_new_events() {
        let h = harness(
            FsyncPolicy::Interval,
            Duration::from_millis(30),
            Faults::default(),
            b"",
        )
        .await;
        h.send(0..3).await;
        h.wait_for("an idle sync", |h| h.faults.lock().unwrap().syncs_ok >= 1)
            .await;
        assert_lines(&h.content(), 0, 0..3);
        // The queue is still open: the sync happened on the idle timeout, not at shutdown.
        assert!(h.tx.is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_syncs_only_at_shutdown() {
        let mut h = harness(
            FsyncPolicy::Never,
            Duration::from_millis(1),
            Faults::default(),
            b"",
        )
        .await;
        h.send(0..5).await;
        h.wait_for("the lines", |h| h.content().lines().count() == 5)
            .await;
        assert_eq!(h.faults.lock().unwrap().syncs_ok, 0);
        h.close().await;
        assert_eq!(h.faults.lock().unwrap().syncs_ok, 1, "one sync at shutdown");
        assert_lines(&h.content(), 0, 0..5);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn interval_shutdown_flushes_and_syncs_everything_queued() {
        let mut h = harness(
            FsyncPolicy::Interval,
            Duration::from_secs(3600),
            Faults::default(),
            b"",
        )
        .await;
        h.send(0..2000).await;
        h.close().await;
        assert_lines(&h.content(), 0, 0..2000);
        let faults = h.faults.lock().unwrap();
        assert_eq!(
            faults.syncs_ok, 1,
            "only the shutdown sync within the hour-long interval"
        );
        assert!(!faults.unsynced_write, "the last write was synced");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn torn_last_line_is_repaired_at_open() {
        let existing = format!(
            "{}\n{{\"schema\":\"chatwatch.ev",
            serde_json::to_string(&event(0)).unwrap()
        );
        let mut h = harness(
            FsyncPolicy::Interval,
            Duration::from_secs(1),
            Faults::default(),
            existing.as_bytes(),
        )
        .await;
        h.send(1..4).await;
        h.close().await;
        let content = h.content();
        let lines: Vec<&str> = content.lines().collect();
        assert_eq!(
            lines[1], "{\"schema\":\"chatwatch.ev",
            "the torn fragment stays on its own line"
        );
        assert_lines(&content, 2, 1..4);
        assert_lines(&format!("{}\n", lines[0]), 0, 0..1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn complete_existing_file_is_appended_to_unchanged() {
        let existing = format!("{}\n", serde_json::to_string(&event(0)).unwrap());
        let mut h = harness(
            FsyncPolicy::Never,
            Duration::from_secs(1),
            Faults::default(),
            existing.as_bytes(),
        )
        .await;
        h.send(1..3).await;
        h.close().await;
        assert_lines(&h.content(), 0, 0..3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_gives_up_on_a_persistently_failing_file_without_torn_lines() {
        let faults = Faults {
            fail_writes: usize::MAX,
            partial: 5,
            ..Faults::default()
        };
        let mut h = harness(FsyncPolicy::Interval, Duration::from_secs(1), faults, b"").await;
        h.send(0..7).await;
        h.wait_for("failing writes", |h| {
            h.counter(crate::sinks::FAILED_WRITES, Some("write")) >= 3
        })
        .await;
        h.tx = None;
        h.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), &mut h.done)
            .await
            .expect("writer gave up in time")
            .expect("writer finished normally");
        assert_eq!(h.content(), "", "the partial batch was truncated away");
        assert_eq!(h.counter(crate::sinks::DROPPED_EVENTS, Some("shutdown")), 7);
        assert_eq!(h.counter(crate::sinks::DELIVERED_EVENTS, None), 0);
    }

    #[test]
    fn config_validation() {
        assert!(FileSinkConfig::new("/var/log/chatwatch/events.jsonl")
            .validate()
            .is_ok());
        for (config, field) in [
            (FileSinkConfig::new(""), "path"),
            (FileSinkConfig::new("/var/log/"), "path"),
            (FileSinkConfig::new("/var/log/.."), "path"),
            (
                FileSinkConfig {
                    fsync_interval: Duration::ZERO,
                    ..FileSinkConfig::new("a.jsonl")
                },
                "fsync_interval",
            ),
            (
                FileSinkConfig {
                    queue_capacity: MAX_QUEUE_CAPACITY_PLUS_ONE,
                    ..FileSinkConfig::new("a.jsonl")
                },
                "queue_capacity",
            ),
        ] {
            let err = config.validate().expect_err(field).to_string();
            assert!(err.contains(field), "{err}");
        }
        let never = FileSinkConfig {
            fsync: FsyncPolicy::Never,
            fsync_interval: Duration::ZERO,
            ..FileSinkConfig::new("a.jsonl")
        };
        assert!(
            never.validate().is_ok(),
            "the interval only matters with fsync = interval"
        );
    }

    const MAX_QUEUE_CAPACITY_PLUS_ONE: usize = crate::sinks::MAX_QUEUE_CAPACITY + 1;

    // ---- The `Deliver` path ----

    /// A [`FileSink`] over a faulty file in a temp dir.
    struct DeliverHarness {
        _dir: tempfile::TempDir,
        path: PathBuf,
        faults: Arc<Mutex<Faults>>,
        sink: FileSink,
    }

    async fn deliver_harness(
        fsync: FsyncPolicy,
        interval: Duration,
        faults: Faults,
    ) -> DeliverHarness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let faults = Arc::new(Mutex::new(faults));
        let opener = FaultyOpener {
            path: path.clone(),
            faults: Arc::clone(&faults),
        };
        let sink = open_deliver(
            "test",
            &path,
            fsync,
            interval,
            (Duration::from_millis(2), Duration::from_millis(20)),
            opener,
        )
        .await
        .expect("open");
        DeliverHarness {
            _dir: dir,
            path,
            faults,
            sink,
        }
    }

    fn events(range: std::ops::Range<usize>) -> Vec<Arc<Event>> {
        range.map(|i| Arc::new(event(i))).collect()
    }

    impl DeliverHarness {
        fn content(&self) -> String {
            String::from_utf8(std::fs::read(&self.path).unwrap()).unwrap()
        }

        async fn deliver(&mut self, range: std::ops::Range<usize>) -> Result<(), SinkError> {
            tokio::time::timeout(Duration::from_secs(10), self.sink.deliver(&events(range)))
                .await
                .expect("deliver resolved in time")
        }

        async fn wait_for(&self, what: &str, check: impl Fn(&Faults) -> bool) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !check(&self.faults.lock().unwrap()) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out waiting for {what}"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliver_always_resolves_only_after_the_sync() {
        let mut h = deliver_harness(
            FsyncPolicy::Always,
            Duration::from_secs(1),
            Faults {
                hold_syncs: true,
                ..Faults::default()
            },
        )
        .await;
        let batch = events(0..10);
        let mut pending = Box::pin(h.sink.deliver(&batch));
        // Drive the call until the writer is inside `sync_data`, held there.
        let faults = Arc::clone(&h.faults);
        let polled = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                result = &mut pending => panic!("resolved before the sync: {result:?}"),
                () = async {
                    while !faults.lock().unwrap().sync_held {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                } => {}
            }
        })
        .await;
        polled.expect("the writer reached the sync");
        assert_eq!(
            h.faults.lock().unwrap().writes_ok,
            1,
            "the batch is written"
        );
        // Still held: the call must not resolve.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut pending)
                .await
                .is_err(),
            "deliver resolved while the sync was still running"
        );
        h.faults.lock().unwrap().hold_syncs = false;
        tokio::time::timeout(Duration::from_secs(10), pending)
            .await
            .expect("resolved after the sync")
            .expect("delivered");
        let faults = h.faults.lock().unwrap();
        assert_eq!(faults.syncs_ok, 1);
        assert!(!faults.unsynced_write);
        drop(faults);
        assert_lines(&h.content(), 0, 0..10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliver_interval_resolves_after_the_write_and_the_sync_follows() {
        // A long interval: if deliver waited for the interval sync, it would take 10 s.
        let interval = Duration::from_secs(10);
        let mut h = deliver_harness(FsyncPolicy::Interval, interval, Faults::default()).await;
        let started = tokio::time::Instant::now();
        h.deliver(0..5).await.expect("delivered");
        h.deliver(5..9).await.expect("delivered");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "acked at the write"
        );
        {
            let faults = h.faults.lock().unwrap();
            assert_eq!(
                (faults.writes_ok, faults.syncs_ok),
                (2, 0),
                "not synced yet"
            );
        }
        assert_lines(&h.content(), 0, 0..9);
        h.sink.close().await.expect("close");
        assert_eq!(
            h.faults.lock().unwrap().syncs_ok,
            1,
            "close syncs what is pending"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliver_never_resolves_after_the_write_and_close_syncs() {
        let mut h = deliver_harness(
            FsyncPolicy::Never,
            Duration::from_secs(1),
            Faults::default(),
        )
        .await;
        h.deliver(0..5).await.expect("delivered");
        h.deliver(5..9).await.expect("delivered");
        {
            let faults = h.faults.lock().unwrap();
            assert_eq!((faults.writes_ok, faults.syncs_ok), (2, 0));
        }
        assert_lines(&h.content(), 0, 0..9);
        h.sink.close().await.expect("close");
        assert_eq!(h.faults.lock().unwrap().syncs_ok, 1, "close syncs");
        let err = h.deliver(9..10).await.expect_err("closed");
        assert!(err.to_string().contains("closed"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliver_failed_sync_is_fatal_for_the_instance() {
        let mut h = deliver_harness(
            FsyncPolicy::Always,
            Duration::from_secs(1),
            Faults {
                fail_syncs: 1,
                ..Faults::default()
            },
        )
        .await;
        let err = h.deliver(0..3).await.expect_err("the sync failed");
        assert!(
            matches!(&err, SinkError::Failed { reason, .. } if reason.contains("fsync")),
            "{err}"
        );
        // The writer has stopped: no retried fsync that could falsely succeed.
        let err = h.deliver(3..4).await.expect_err("stopped");
        assert!(matches!(&err, SinkError::Failed { reason, .. } if reason.contains("fsync")));
        assert_eq!(h.faults.lock().unwrap().syncs_ok, 0);
        assert_eq!(
            h.faults.lock().unwrap().writes_ok,
            1,
            "nothing written after the failure"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliver_after_a_failed_interval_sync_fails_the_instance() {
        let mut h = deliver_harness(
            FsyncPolicy::Interval,
            Duration::from_millis(20),
            Faults {
                fail_syncs: 1,
                ..Faults::default()
            },
        )
        .await;
        h.deliver(0..3).await.expect("acknowledged at the write");
        // The interval sync fails in the background; from then on the instance refuses work, so
        // the runner rebuilds it and re-delivers from its cursor.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let err = loop {
            match h.deliver(3..4).await {
                Err(err) => break err,
                Ok(()) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the failed sync was never noticed"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        assert!(matches!(err, SinkError::Failed { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliver_retries_failed_writes_while_pending() {
        let mut h = deliver_harness(
            FsyncPolicy::Always,
            Duration::from_secs(1),
            Faults {
                fail_writes: 4,
                partial: 17,
                ..Faults::default()
            },
        )
        .await;
        h.deliver(0..10).await.expect("delivered after the retries");
        h.deliver(10..12).await.expect("delivered");
        assert_lines(&h.content(), 0, 0..12);
        let faults = h.faults.lock().unwrap();
        assert_eq!(faults.fail_writes, 0, "all four failures were hit");
        assert_eq!(faults.writes_ok, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_a_pending_deliver_is_harmless() {
        let mut h = deliver_harness(
            FsyncPolicy::Always,
            Duration::from_secs(1),
            Faults {
                hold_syncs: true,
                ..Faults::default()
            },
        )
        .await;
        let batch = events(0..10);
        let dropped = tokio::time::timeout(Duration::from_millis(50), h.sink.deliver(&batch)).await;
        assert!(dropped.is_err(), "held in the sync, so still pending");
        h.wait_for("the held sync", |f| f.sync_held).await;
        h.faults.lock().unwrap().hold_syncs = false;
        // The runner delivers the batch again (its cursor did not move), then goes on.
        h.deliver(0..10).await.expect("redelivered");
        h.deliver(10..20).await.expect("delivered");
        let content = h.content();
        let (first, rest) = content.split_at(content.match_indices('\n').nth(9).unwrap().0 + 1);
        assert_lines(first, 0, 0..10);
        assert_lines(rest, 0, 0..20);
        h.sink.close().await.expect("close");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliver_reopen_after_rename_writes_to_the_new_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let config = FileSinkConfig {
            fsync: FsyncPolicy::Always,
            ..FileSinkConfig::new(&path)
        };
        let mut sink = config.open("test").await.expect("open");
        sink.deliver(&events(0..3)).await.expect("delivered");
        // logrotate's default: rename, then signal.
        let rotated = dir.path().join("events.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        sink.deliver(&events(3..4)).await.expect("delivered");
        sink.reopen().await.expect("reopen");
        sink.deliver(&events(4..6)).await.expect("delivered");
        sink.close().await.expect("close");
        let old = std::fs::read_to_string(&rotated).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_lines(&old, 0, 0..4);
        assert_lines(&new, 0, 4..6);
    }

    #[tokio::test]
    async fn open_fails_naming_sink_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let path = blocker.join("events.jsonl");
        let err = FileSinkConfig::new(&path)
            .open("audit")
            .await
            .expect_err("ENOTDIR")
            .to_string();
        assert!(err.contains("sink `audit`"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }

    /// Events per second through `FileSink::deliver` on a real file, per fsync policy, with a
    /// runner that waits for each batch (as the journal runner does). Run with
    /// `cargo test --release -- --ignored --nocapture deliver_throughput`.
    #[ignore = "measurement, not a test"]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliver_throughput() {
        for (fsync, interval, batch) in [
            (FsyncPolicy::Always, Duration::from_secs(1), 1),
            (FsyncPolicy::Always, Duration::from_secs(1), 100),
            (FsyncPolicy::Always, Duration::from_secs(1), 1000),
            (FsyncPolicy::Interval, Duration::from_millis(10), 100),
            (FsyncPolicy::Interval, Duration::from_millis(10), 1000),
            (FsyncPolicy::Interval, Duration::from_secs(1), 1000),
            (FsyncPolicy::Never, Duration::from_secs(1), 1000),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let config = FileSinkConfig {
                fsync,
                fsync_interval: interval,
                ..FileSinkConfig::new(dir.path().join("events.jsonl"))
            };
            let mut sink = config.open("bench").await.expect("open");
            let all = events(0..20_000);
            let started = tokio::time::Instant::now();
            let mut sent = 0;
            while started.elapsed() < Duration::from_secs(3) && sent + batch <= all.len() {
                sink.deliver(&all[sent..sent + batch])
                    .await
                    .expect("delivered");
                sent += batch;
            }
            let took = started.elapsed();
            sink.close().await.expect("close");
            println!(
                "fsync={fsync:?} interval={interval:?} batch={batch}: {sent} events in {took:?} = {:.0} events/s",
                sent as f64 / took.as_secs_f64()
            );
        }
    }

    #[tokio::test]
    async fn build_fails_naming_sink_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let path = blocker.join("events.jsonl");
        let err = FileSinkConfig::new(&path)
            .build("audit")
            .await
            .expect_err("ENOTDIR")
            .to_string();
        assert!(err.contains("sink `audit`"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        let missing = dir.path().join("missing/events.jsonl");
        let err = FileSinkConfig {
            create_dirs: false,
            ..FileSinkConfig::new(&missing)
        }
        .build("audit")
        .await
        .expect_err("missing dir")
        .to_string();
        assert!(
            err.contains("missing/events.jsonl") && err.contains("No such file"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn build_creates_dirs_and_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/events.jsonl");
        let sink = FileSinkConfig::new(&path)
            .build("audit")
            .await
            .expect("build");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "the default `mode`");
        let dir_mode = std::fs::metadata(dir.path().join("a/b"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode & !0o750, 0, "dirs at most 0750, got {dir_mode:o}");
        drop(sink);
    }
}
