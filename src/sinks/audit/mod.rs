//! The `audit` sink: a tamper-evident JSON Lines file, hash-chained across lines and across
//! rotated files, rotated and compressed in-process, checked by [`verify()`].
//!
//! # Files
//!
//! In the configured `dir`, the sink named `<name>` appends to the active file
//! `<name>.jsonl` (created with `mode`, default `0640`; `dir` is created `0750` if missing). Rotation renames it to
//! `<name>-<UTC YYYYMMDDTHHMMSSZ>-<seq>.jsonl` (the rotation time, and the seq of the file's first
//! record, zero-padded to 12 digits), fsyncs the directory and starts a new active file. It
//! happens before a write that would make the active file exceed `rotate_bytes`, and when the
//! UTC clock crosses a multiple of `rotate_interval` (`"24h"`: at midnight UTC; `"1h"`: every
//! hour) since the active file was started. A background thread then gzips each closed file to
//! `<…>.jsonl.gz` (written as `.gz.tmp`, synced, renamed, the directory synced) and only then
//! deletes the plain one; it also applies retention (`keep_files`, `keep_age`) to rotated files.
//! Every pass of that thread redoes whatever a crash interrupted.
//!
//! # Line format
//!
//! One JSON object per line, UTF-8, `\n`-terminated, keys in this order and no spaces:
//!
//! ```text
//! {"seq":N,"prev":"<64 hex>","event":{…the event's journal record, byte for byte…},"hash":"<64 hex>"}
//! ```
//!
//! - `seq` counts records from 1 and increases by exactly 1 along the whole chain, across
//!   rotated files;
//! - `prev` is the `hash` of the record before (the last record of the previous file for a
//!   file's first record), 64 zeros for the very first record;
//! - `hash` is the lowercase hex SHA-256 — or HMAC-SHA256 keyed with the contents of
//!   `hmac_key_file` — of the line's exact bytes up to and excluding `,"hash":"`, that is of
//!   `{"seq":N,"prev":"…","event":{…}`. Since those bytes include `prev`, each hash commits to the
//!   whole chain before it.
//!
//! The writer builds those bytes, hashes them, then appends `,"hash":"<hex>"}\n` and writes the
//! line. [`verify()`] recomputes every hash from the raw bytes it reads (it never re-serialises),
//! checks that each `prev` is its predecessor's `hash` and that `seq` never skips or repeats.
//! With plain SHA-256 anyone who can write the files can recompute a consistent chain; with an
//! HMAC key kept from them they cannot. Shipping the latest `(seq, hash)` off the host now and
//! then guards the tail as well. Removal of the *oldest* records cannot be told from retention;
//! [`VerifyReport::first_seq`] says where the surviving chain starts.
//!
//! # Durability and recovery
//!
//! The sink implements [`Deliver`]: a batch is acknowledged per [`FsyncPolicy`] (default
//! `always`; `never` is refused for an audit file), through the shared writer thread of
//! `src/sinks/writer.rs` (the one behind [`FileSink`](super::file::FileSink)). A failed write
//! (`ENOSPC`) is truncated away and retried while the call stays pending; a failed fsync, rename or directory sync stops the
//! instance with [`SinkError::Failed`], and the runner rebuilds it. On open the sink repairs a
//! torn last line of the active file by truncating it (logged), then resumes the chain from the
//! last record of the active file — or, when that is empty, of the newest rotated file.
//! [`Deliver::reopen`] (SIGHUP, for logrotate's rename + create) reopens `<name>.jsonl` and
//! continues the chain in it; note that [`verify()`] only recognises the sink's own file names.
//!
//! Throughput with a runner that waits for each batch (release build, shared 2-core VM, test
//! `audit_throughput`, `--ignored`): ≈ 90,000 events/s with batches of 1,000 (SHA-256 or HMAC
//! alike), ≈ 30,000 with 100, ≈ 1,100 with single events (one fdatasync each).
//!
//! # Metrics
//!
//! Besides the writer's `chatwatch_sink_delivered_events_total{sink}` and
//! `chatwatch_sink_failed_writes_total{sink, cause}` with `cause` = `write`, `sync`, `reopen`,
//! `encode`, the audit sink counts failed housekeeping passes as `cause="compress"` and
//! `cause="retention"` (retried at the next rotation or start).

mod files;
mod format;
mod verify;

#[cfg(test)]
mod tests;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use metrics::Counter;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::secret::SecretSource;

use self::files::{Housekeeper, HousekeepingSettings};
use self::format::{Hash, Hasher, ZERO_HASH};
use super::append::{append_retrying, create_dirs, sync_dir, SinkFile};
use super::deliver::{Deliver, Needs};
use super::record::Record;
use super::writer::{self, FsyncPolicy, Output, OutputError, Retry};
use super::{failed_counter, FilterConfig, SinkError, TARGET};

pub use self::verify::{verify, Problem, ProblemKind, VerifyError, VerifyReport};

/// Default `rotate_bytes`: 256 MiB.
pub const DEFAULT_ROTATE_BYTES: u64 = 256 << 20;

/// `type = "audit"`: a hash-chained, rotated, compressed JSON Lines audit trail. See the module
/// documentation for the files and the line format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSinkConfig {
    /// The directory of the audit files, e.g. `/var/log/chatwatch/audit`. The active file is
    /// `<dir>/<sink name>.jsonl`; rotated files sit beside it. Created (mode `0750`) if missing.
    /// Required.
    pub dir: PathBuf,
    /// The permissions of the audit files chatwatch creates (the active file after a start,
    /// rotation or reopen, and the compressed rotated files), umask notwithstanding: an octal
    /// string such as `"0640"` (default: the service's group may read) or `"0600"`.
    #[serde(default)]
    pub mode: crate::sinks::mode::FileMode,
    /// When to sync: `"always"` (default: a batch is acknowledged once it is on disk, one
    /// fdatasync per batch) or `"interval"` (a batch is acknowledged after the next sync, at most
    /// one every `fsync_interval`: fewer fsyncs, more latency per batch). `"never"` is refused:
    /// an audit trail must not acknowledge what a power loss would take back.
    #[serde(default = "default_fsync")]
    pub fsync: FsyncPolicy,
    /// With `fsync = "interval"`: the longest time a written batch waits for its sync, e.g.
    /// `"1s"` (default), `"100ms"`. Must be greater than zero.
    #[serde(default = "default_fsync_interval", with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// Rotate before a write would make the active file larger than this many bytes. Default
    /// 268435456 (256 MiB); `0` turns size rotation off. A single record larger than this still
    /// goes into a file of its own.
    #[serde(default = "default_rotate_bytes", deserialize_with = "lenient_u64")]
    pub rotate_bytes: u64,
    /// Also rotate when the UTC clock crosses a multiple of this period, e.g. `"24h"` (at
    /// midnight UTC) or `"1h"`; at least one second. An empty active file is never rotated.
    /// Default: none (size only).
    #[serde(default, with = "humantime_serde")]
    pub rotate_interval: Option<Duration>,
    /// Gzip rotated files in a background thread (to `<file>.gz`; the plain file is deleted
    /// only once the compressed one is complete and synced). Default `true`.
    #[serde(
        default = "default_compress",
        deserialize_with = "super::lenient::bool"
    )]
    pub compress: bool,
    /// Keep at most this many rotated files, deleting the oldest. Default: keep all.
    #[serde(default, deserialize_with = "lenient_opt_usize")]
    pub keep_files: Option<usize>,
    /// Delete rotated files rotated longer ago than this, e.g. `"90d"`. Default: keep all.
    /// Checked at startup and after every rotation.
    #[serde(default, with = "humantime_serde")]
    pub keep_age: Option<Duration>,
    /// The HMAC key, in the crate's secret vocabulary (`{ file = "/etc/chatwatch/audit.key" }`,
    /// `{ credential = "audit-key" }`, `{ env = "VAR" }`, `{ value = "..." }`; a file's raw
    /// bytes count, less one trailing newline). When set, line hashes are HMAC-SHA256 with that
    /// key, so someone who can edit the files but not read the key cannot forge a consistent
    /// chain; `chatwatch audit verify` then needs the same key. Default: none (plain SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_key: Option<SecretSource>,
    /// Alias of `hmac_key = { file = "..." }`. Default: none.
    #[serde(default)]
    pub hmac_key_file: Option<PathBuf>,
    /// Alias of `hmac_key = { credential = "..." }` (`$CREDENTIALS_DIRECTORY/NAME`,
    /// `LoadCredential=NAME:/path` in the unit). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_key_credential: Option<String>,
    /// Which events this sink receives; default: all.
    #[serde(default)]
    pub filter: FilterConfig,
}

fn default_fsync() -> FsyncPolicy {
    FsyncPolicy::Always
}

fn default_fsync_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_rotate_bytes() -> u64 {
    DEFAULT_ROTATE_BYTES
}

fn default_compress() -> bool {
    true
}

/// A `u64` given as an integer or a decimal string (environment overrides).
fn lenient_u64<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    super::lenient::usize(deserializer).map(|n| n as u64)
}

/// An optional `usize` given as an integer or a decimal string.
fn lenient_opt_usize<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<usize>, D::Error> {
    #[derive(Deserialize)]
    struct Lenient(#[serde(deserialize_with = "super::lenient::usize")] usize);
    Ok(Option::<Lenient>::deserialize(deserializer)?.map(|n| n.0))
}

impl AuditSinkConfig {
    /// A configuration for `dir` with every other option at its default.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            mode: crate::sinks::mode::FileMode::default(),
            fsync: default_fsync(),
            fsync_interval: default_fsync_interval(),
            rotate_bytes: default_rotate_bytes(),
            rotate_interval: None,
            compress: default_compress(),
            keep_files: None,
            keep_age: None,
            hmac_key: None,
            hmac_key_file: None,
            hmac_key_credential: None,
            filter: FilterConfig::default(),
        }
    }

    /// Checks the configuration without touching the filesystem.
    pub fn validate(&self) -> Result<(), SinkError> {
        if self.dir.as_os_str().is_empty() {
            return Err(SinkError::invalid("dir", "must not be empty"));
        }
        match self.fsync {
            FsyncPolicy::Never => {
                return Err(SinkError::invalid(
                    "fsync",
                    "\"never\" is not allowed for an audit file (use \"always\" or \"interval\")",
                ))
            }
            FsyncPolicy::Interval if self.fsync_interval.is_zero() => {
                return Err(SinkError::invalid(
                    "fsync_interval",
                    "must be greater than zero (use fsync = \"always\" to sync every batch)",
                ))
            }
            _ => {}
        }
        if let Some(interval) = self.rotate_interval {
            if interval < Duration::from_secs(1) {
                return Err(SinkError::invalid(
                    "rotate_interval",
                    "must be at least one second",
                ));
            }
        }
        if self.keep_files == Some(0) {
            return Err(SinkError::invalid(
                "keep_files",
                "must be at least 1 (leave it out to keep every rotated file)",
            ));
        }
        if self.keep_age.is_some_and(|age| age.is_zero()) {
            return Err(SinkError::invalid(
                "keep_age",
                "must be greater than zero (leave it out to keep every rotated file)",
            ));
        }
        if self
            .hmac_key_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(SinkError::invalid("hmac_key_file", "must not be empty"));
        }
        let keys = [
            self.hmac_key.is_some(),
            self.hmac_key_file.is_some(),
            self.hmac_key_credential.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() > 1 {
            return Err(SinkError::invalid(
                "hmac_key",
                "set only one of `hmac_key`, `hmac_key_file` and `hmac_key_credential`",
            ));
        }
        if let Some((key, source)) = self.hmac_key_source() {
            source
                .validate(&key)
                .map_err(|e| SinkError::invalid(e.key, e.message))?;
        }
        self.filter.validate().map_err(SinkError::filter)
    }

    /// Where the HMAC key comes from, with the key that names it in errors (`hmac_key.file`,
    /// or the alias as written: `hmac_key_file`, `hmac_key_credential`); `None` without a key.
    pub fn hmac_key_source(&self) -> Option<(String, SecretSource)> {
        match (
            &self.hmac_key,
            &self.hmac_key_file,
            &self.hmac_key_credential,
        ) {
            (Some(source), _, _) => Some((source.key_in("hmac_key"), source.clone())),
            (None, Some(path), _) => {
                Some(("hmac_key_file".to_owned(), SecretSource::File(path.clone())))
            }
            (None, None, Some(name)) => Some((
                "hmac_key_credential".to_owned(),
                SecretSource::Credential(name.clone()),
            )),
            (None, None, None) => None,
        }
    }

    /// Validates, then on the sink's writer thread: creates `dir` if missing, reads the HMAC
    /// key, opens the active file (repairing a torn last line), resumes the chain and starts the
    /// housekeeping thread (which finishes any interrupted compression). Fails naming the sink
    /// and the path.
    pub async fn build(&self, name: &str) -> Result<AuditSink, SinkError> {
        check_name(name)?;
        self.validate().map_err(|e| e.in_sink(name))?;
        let config = self.clone();
        let sink = name.to_owned();
        let settings = writer::Settings {
            sink: name.to_owned(),
            what: format!("`{}`", files::active_path(&self.dir, name).display()),
            fsync: self.fsync,
            fsync_interval: self.fsync_interval,
            retry_initial: writer::RETRY_INITIAL,
            retry_max: writer::RETRY_MAX,
        };
        let writer =
            writer::Handle::spawn(settings, move || AuditOutput::open(&config, &sink)).await?;
        Ok(AuditSink { writer })
    }
}

/// A sink name becomes a file name: no path separators, no NUL, not `.` or `..`.
fn check_name(name: &str) -> Result<(), SinkError> {
    if name.is_empty() {
        return Err(SinkError::EmptyName);
    }
    if name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
        return Err(
            SinkError::invalid("name", format!("`{name}` cannot be used as a file name"))
                .in_sink(name),
        );
    }
    Ok(())
}

/// Reads an HMAC key file: its raw bytes, less one trailing `\n` (or `\r\n`). Fails when the
/// file is unreadable or the key is empty.
pub fn read_hmac_key(path: &Path) -> io::Result<Vec<u8>> {
    crate::fs::read_secret_bytes(path).map_err(|e| match e {
        crate::fs::SecretFileError::Read(e) => e,
        crate::fs::SecretFileError::Empty => {
            io::Error::new(io::ErrorKind::InvalidData, "the HMAC key file is empty")
        }
    })
}

/// The running audit sink. See the module documentation.
#[derive(Debug)]
pub struct AuditSink {
    writer: writer::Handle,
}

impl Deliver for AuditSink {
    fn deliver(
        &mut self,
        records: &[Arc<Record>],
    ) -> impl std::future::Future<Output = Result<(), SinkError>> + Send {
        self.writer.deliver(records)
    }

    /// A line holds the journal payload as it is: nothing is decoded.
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

/// The active file, as opened.
struct Active {
    file: std::fs::File,
    /// Its length after the last good write.
    end: u64,
    /// The seq of its first record; `None` while it is empty.
    first_seq: Option<u64>,
    /// When it was started (for time rotation); `None` while it is empty.
    since: Option<SystemTime>,
}

/// The audit sink's output, on the writer thread.
struct AuditOutput {
    sink: String,
    dir: PathBuf,
    name: String,
    path: PathBuf,
    active: Active,
    hasher: Hasher,
    /// The seq of the next record.
    next_seq: u64,
    /// The hash of the last record.
    prev: Hash,
    rotate_bytes: u64,
    rotate_interval: Option<Duration>,
    mode: crate::sinks::mode::FileMode,
    housekeeper: Housekeeper,
    failed_write: Counter,
    failed_encode: Counter,
}

/// An I/O error for a path, as a fatal output error.
fn fatal(what: &str, path: &Path, error: &io::Error) -> OutputError {
    OutputError::Fatal(format!("{what} `{}` failed: {error}", path.display()))
}

impl AuditOutput {
    fn open(config: &AuditSinkConfig, sink: &str) -> Result<Self, SinkError> {
        let path = files::active_path(&config.dir, sink);
        let open_error = |path: &Path, error: io::Error| SinkError::Open {
            sink: sink.to_owned(),
            path: path.to_owned(),
            error,
        };
        // Read here only when the configuration was not resolved first (the daemon resolves
        // it: then this is the value it read).
        let key = match config.hmac_key_source() {
            Some((key, source)) => Some(
                source
                    .read(&key)
                    .map_err(|e| SinkError::invalid(e.key, e.message).in_sink(sink))?,
            ),
            None => None,
        };
        let hasher = Hasher::new(key.as_ref().map(|k| k.expose()));
        if !config.dir.exists() {
            create_dirs(&config.dir).map_err(|e| open_error(&config.dir, e))?;
        }
        let active =
            open_active(sink, &config.dir, &path, config.mode).map_err(|e| open_error(&path, e))?;
        let mut output = Self {
            sink: sink.to_owned(),
            dir: config.dir.clone(),
            name: sink.to_owned(),
            path,
            active,
            hasher,
            next_seq: 1,
            prev: ZERO_HASH,
            rotate_bytes: config.rotate_bytes,
            rotate_interval: config.rotate_interval,
            mode: config.mode,
            // Replaced below, once the chain is resumed.
            housekeeper: Housekeeper::idle(),
            failed_write: failed_counter(sink, "write"),
            failed_encode: failed_counter(sink, "encode"),
        };
        output.resume().map_err(|(path, e)| open_error(&path, e))?;
        output.housekeeper = Housekeeper::start(HousekeepingSettings {
            sink: sink.to_owned(),
            dir: config.dir.clone(),
            name: sink.to_owned(),
            compress: config.compress,
            keep_files: config.keep_files,
            keep_age: config.keep_age,
            failed_compress: failed_counter(sink, "compress"),
            failed_retention: failed_counter(sink, "retention"),
        })
        .map_err(|e| open_error(&config.dir, e))?;
        Ok(output)
    }

    /// Finds where the chain left off: the last record of the active file, else of the newest
    /// rotated file, else a new chain.
    fn resume(&mut self) -> Result<(), (PathBuf, io::Error)> {
        let (line, from) = if self.active.end > 0 {
            let line = files::last_line(&mut self.active.file, self.active.end)
                .map_err(|e| (self.path.clone(), e))?;
            (line, self.path.clone())
        } else {
            let rotated =
                files::list_rotated(&self.dir, &self.name).map_err(|e| (self.dir.clone(), e))?;
            match rotated.last() {
                Some(newest) => {
                    let from = newest.readable().0;
                    (
                        files::last_line_of(newest).map_err(|e| (from.clone(), e))?,
                        from,
                    )
                }
                None => (None, self.path.clone()),
            }
        };
        let Some(line) = line else {
            tracing::info!(
                target: TARGET,
                sink = %self.sink,
                path = %self.path.display(),
                "starting a new audit chain"
            );
            return Ok(());
        };
        let (record, valid) = format::parse(&line, &self.hasher).map_err(|why| {
            (
                from.clone(),
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "cannot resume the audit chain: the last line {why}; move the file \
                         aside to start a new chain"
                    ),
                ),
            )
        })?;
        if !valid {
            tracing::error!(
                target: TARGET,
                sink = %self.sink,
                path = %from.display(),
                seq = record.seq,
                "the last audit record does not match its hash (edited, or a different key?); \
                 continuing the chain from it: `audit verify` will report it"
            );
        }
        self.next_seq = record.seq.checked_add(1).ok_or_else(|| {
            let why = "cannot resume the audit chain: the last line has the highest possible seq \
                       (a forged line?); move the file aside to start a new chain";
            (
                from.clone(),
                io::Error::new(io::ErrorKind::InvalidData, why),
            )
        })?;
        self.prev = record.hash;
        if self.active.end > 0 && self.active.first_seq.is_none() {
            // The first line is unreadable: name the file by its last record instead.
            self.active.first_seq = Some(record.seq);
        }
        tracing::info!(
            target: TARGET,
            sink = %self.sink,
            path = %from.display(),
            next_seq = self.next_seq,
            prev = %format::short(&self.prev),
            "resuming the audit chain"
        );
        Ok(())
    }

    /// Writes `chunk` at the end of the active file, retrying failed writes.
    fn write_chunk(&mut self, chunk: &[u8], retry: &Retry<'_>) -> Result<(), OutputError> {
        if chunk.is_empty() {
            return Ok(());
        }
        append_retrying(
            &mut self.active.file,
            &mut self.active.end,
            chunk,
            (&self.sink, &self.path, "the audit file"),
            retry,
            &self.failed_write,
        )?;
        Ok(())
    }

    /// Whether the time rotation is due now; otherwise how long until it is.
    fn time_rotation_in(&self) -> Option<Duration> {
        let interval = self.rotate_interval?.as_nanos().max(1);
        let since = self.active.since?;
        let nanos = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        };
        let now = nanos(SystemTime::now());
        let started = nanos(since);
        if now / interval > started / interval {
            return Some(Duration::ZERO);
        }
        let next = (now / interval + 1) * interval;
        Some(Duration::from_nanos(
            u64::try_from(next - now).unwrap_or(u64::MAX),
        ))
    }

    /// Closes the active file and starts a new one: sync, rename to the rotated name, create
    /// the new active file, sync the directory, then let the housekeeper compress and prune.
    fn rotate(&mut self) -> Result<(), OutputError> {
        let Some(first_seq) = self.active.first_seq else {
            return Ok(());
        };
        let file = &mut self.active.file;
        Write::flush(file)
            .and_then(|()| file.sync_data())
            .map_err(|e| fatal("fsync before rotating", &self.path, &e))?;
        let rotated = self.dir.join(files::rotated_name(
            &self.name,
            OffsetDateTime::from(SystemTime::now()),
            first_seq,
        ));
        let mut gz = rotated.clone().into_os_string();
        gz.push(".gz");
        if rotated.exists() || Path::new(&gz).exists() {
            return Err(OutputError::Fatal(format!(
                "cannot rotate: `{}` already exists",
                rotated.display()
            )));
        }
        std::fs::rename(&self.path, &rotated).map_err(|e| fatal("renaming", &self.path, &e))?;
        let active = open_active(&self.sink, &self.dir, &self.path, self.mode)
            .map_err(|e| fatal("creating", &self.path, &e))?;
        sync_dir(&self.dir).map_err(|e| fatal("fsync of the directory", &self.dir, &e))?;
        self.active = active;
        tracing::info!(
            target: TARGET,
            sink = %self.sink,
            rotated = %rotated.display(),
            next_seq = self.next_seq,
            "rotated the audit file"
        );
        self.housekeeper.kick();
        Ok(())
    }
}

/// Opens (creating, with `mode`) the active file, truncates a torn last line, and reads its
/// first record's seq.
fn open_active(
    sink: &str,
    dir: &Path,
    path: &Path,
    mode: crate::sinks::mode::FileMode,
) -> io::Result<Active> {
    let existed = path.symlink_metadata().is_ok();
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    if !existed {
        mode.apply(&file)?;
        sync_dir(dir)?;
    }
    let metadata = file.metadata()?;
    let mut end = metadata.len();
    if end > 0 && SinkFile::last_byte(&mut file)? != Some(b'\n') {
        let keep = files::last_newline(&mut file, end)?.map_or(0, |i| i + 1);
        tracing::warn!(
            target: TARGET,
            sink = %sink,
            path = %path.display(),
            torn_bytes = end - keep,
            "the audit file ends with a torn line (a crash mid-write?); truncated it away"
        );
        file.set_len(keep)?;
        file.sync_data()?;
        end = keep;
    }
    let (first_seq, since) = if end > 0 {
        let first = files::first_line(&mut file)?;
        let seq = first.and_then(|line| format::parse_fields(&line).ok().map(|r| r.seq));
        let since = metadata
            .created()
            .or_else(|_| metadata.modified())
            .unwrap_or_else(|_| SystemTime::now());
        (seq, Some(since))
    } else {
        (None, None)
    };
    Ok(Active {
        file,
        end,
        first_seq,
        since,
    })
}

impl Output for AuditOutput {
    fn append(&mut self, events: &[Arc<Record>], retry: &Retry<'_>) -> Result<u64, OutputError> {
        if self.time_rotation_in() == Some(Duration::ZERO) {
            self.rotate()?;
        }
        let mut chunk = Vec::with_capacity(640 * events.len());
        let mut line = Vec::with_capacity(1024);
        let mut written = 0u64;
        for event in events {
            line.clear();
            let hash =
                match format::encode(self.next_seq, &self.prev, event, &self.hasher, &mut line) {
                    Ok(hash) => hash,
                    Err(error) => {
                        self.failed_encode.increment(1);
                        tracing::error!(
                            target: TARGET,
                            sink = %self.sink,
                            event_id = %event.id_or_empty(),
                            %error,
                            "cannot write the record as one JSON line; skipped (it gets no seq)"
                        );
                        continue;
                    }
                };
            let used = self.active.end + chunk.len() as u64;
            if self.rotate_bytes > 0 && used > 0 && used + line.len() as u64 > self.rotate_bytes {
                self.write_chunk(&chunk, retry)?;
                written += chunk.len() as u64;
                chunk.clear();
                self.rotate()?;
            }
            if self.active.first_seq.is_none() {
                self.active.first_seq = Some(self.next_seq);
                self.active.since = Some(SystemTime::now());
            }
            chunk.extend_from_slice(&line);
            self.next_seq += 1;
            self.prev = hash;
        }
        self.write_chunk(&chunk, retry)?;
        Ok(written + chunk.len() as u64)
    }

    fn sync(&mut self) -> io::Result<()> {
        Write::flush(&mut self.active.file)?;
        self.active.file.sync_data()
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.active = open_active(&self.sink, &self.dir, &self.path, self.mode)?;
        // The chain goes on from memory: the first record of a fresh file chains to the last
        // one written to the file that was renamed away.
        Ok(())
    }

    fn housekeeping_in(&self) -> Option<Duration> {
        self.time_rotation_in()
    }

    fn housekeeping(&mut self) -> Result<(), OutputError> {
        if self.time_rotation_in() == Some(Duration::ZERO) {
            self.rotate()?;
        }
        Ok(())
    }

    fn close(&mut self) {
        self.housekeeper.finish();
    }
}
