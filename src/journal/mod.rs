//! The journal: chatwatch's durable, append-only local log of events, with one cursor per sink.
//!
//! Bayeux cannot ask the server to resend, so every decoded event is appended here, made
//! durable according to the fsync policy, and only then handed to sinks. Each sink reads at its
//! own cursor, so a dead webhook never stalls the audit file, and a restart resumes where each
//! sink stopped. This module owns the files under [`JournalConfig::dir`]; it knows nothing about
//! sink types or event contents (records are opaque bytes).
//!
//! # On disk
//!
//! ```text
//! <dir>/seg-<first_seq as 20 zero-padded digits>.log   segments, oldest first
//! <dir>/cursors/<sink>.cursor                          one per sink: the seq it has delivered, as text
//! ```
//!
//! A segment is a concatenation of records, each
//!
//! ```text
//! len u32 LE | crc32c u32 LE | seq u64 LE | payload (len bytes)
//! ```
//!
//! where the CRC32C (Castagnoli) covers the eight bytes of `seq` followed by the payload.
//! Within a segment sequence numbers increase by exactly one, starting at the number in the
//! file name. A record never spans two segments: a new segment starts when the next record
//! would take the current one past `segment_bytes` (a single record larger than that gets a
//! segment of its own), or when the sequence numbers jump (after recovery). Sequence numbers
//! start at 1; 0 means "nothing" (an empty journal's head, a cursor before everything).
//!
//! A cursor file holds the decimal seq of the last record the sink has delivered, followed by
//! a newline. It is replaced atomically: written to `<sink>.cursor.tmp`, fsynced, renamed over
//! the old one, and the `cursors` directory fsynced.
//!
//! # Writing
//!
//! One dedicated OS thread (`journal-writer`) owns the active segment's `std::fs::File` (never
//! `tokio::fs::File`, whose writes may report success before they happen: tokio#5531) and
//! performs every append, strictly in the order [`Journal::append`] calls reached it. It drains
//! whatever appends are queued into one group, writes them, then per [`JournalFsync`]:
//! - `always`: one `fdatasync` for the whole group (group commit), then the head moves and the
//!   appends return;
//! - `interval`: the appends return once written and the head moves (with `sinks_see =
//!   "synced"`: only after the sync); the thread syncs within `fsync_interval` of the first
//!   unsynced write (also while idle);
//! - `never`: the head moves and the appends return once written; the kernel decides.
//!
//! Readers see only records up to the head ([`Journal::head`]): records synced under `always`,
//! written under `never` and, under `interval`, written (default) or synced per [`SinksSee`]. A failed write (e.g. `ENOSPC`) is rolled back (the segment truncated to where the
//! append started), so a failed append leaves nothing behind. A failed `fsync` is fatal
//! ("fsyncgate": after a failed fsync the kernel may have dropped the dirty pages and a later
//! fsync can falsely succeed): that append and every later one return
//! [`JournalError::Sync`], and the daemon must restart so recovery can establish what is on disk.
//!
//! # Size bound
//!
//! `max_bytes` bounds the total size of the segment files. When an append would exceed it, the
//! writer first collects garbage; if that is not enough, `when_full` decides ([`WhenFull`]):
//! `block` (the default, loses nothing) waits until sinks advance, `drop_newest` refuses the
//! append with [`JournalError::Full`], `drop_oldest` deletes the oldest segment although some
//! sink has not read it. Every such moment is counted (`chatwatch_journal_full_total`) and every
//! lost record too (`chatwatch_journal_dropped_total{cause}`).
//!
//! # Recovery
//!
//! [`Journal::open`] scans every segment. In the last segment, the first short, corrupt or
//! out-of-sequence record marks a torn tail: the file is truncated there, fsynced, logged at
//! `warn` and counted in `chatwatch_journal_truncated_bytes_total`. In an earlier segment such a
//! record is corruption in the middle: reading stops there for that segment (its bytes stay, as
//! evidence), the lost records are logged as an error and counted in
//! `chatwatch_journal_corrupt_records_total`, and the next segment is read. Sequence numbers
//! continue after the last good record (and after the highest cursor, so a sink that had seen a
//! record lost in the crash does not skip a new one). [`Journal::recovery`] reports it all.
//!
//! Sequence numbers never exceed [`format::MAX_SEQ`] (`i64::MAX`). A record above it is
//! refused like a corrupt one; a segment named above it is renamed to `<name>.out-of-range`; a
//! cursor above it is reset to the last issued seq. Each is logged with the file's path and
//! counted in `chatwatch_journal_repairs_total{cause}`, and the journal opens. Were the range
//! ever used up, appends fail with [`JournalError::SeqExhausted`] (no wrap to 0).
//!
//! # Garbage collection
//!
//! A whole segment is deleted once every record in it is at or below the lowest cursor of the
//! sinks that pin the journal: the ones named in the last [`Journal::retain_sinks`] call (before
//! any such call: every sink with a cursor file). A retained sink without a cursor pins nothing
//! (it will start at the head). The active (last) segment is never deleted.
//!
//! Metrics: `chatwatch_journal_appended_total`, `chatwatch_journal_bytes` (gauge),
//! `chatwatch_journal_full_total`, `chatwatch_journal_dropped_total{cause="full"|"oldest_deleted"}`,
//! `chatwatch_journal_truncated_bytes_total`, `chatwatch_journal_corrupt_records_total`,
//! `chatwatch_journal_repairs_total{cause}`.
//!
//! Only one process may open a journal directory for writing; [`status_offline`] and
//! [`tail_offline`] only read and may run beside the daemon.

mod cursor;
pub(crate) mod format;
mod offline;
mod recovery;
mod state;
mod writer;

use std::collections::BTreeSet;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

pub use offline::{status_offline, tail_offline};

use state::{Shared, State};
use writer::Command;

// The journal's metric names, defined with their HELP text in the catalogue.
pub use crate::metrics::{
    JOURNAL_APPENDED as APPENDED, JOURNAL_BYTES as BYTES,
    JOURNAL_CORRUPT_RECORDS as CORRUPT_RECORDS, JOURNAL_DROPPED as DROPPED, JOURNAL_FULL as FULL,
    JOURNAL_TRUNCATED_BYTES as TRUNCATED_BYTES,
};

/// Metric (counter): damaged or implausible files recovery repaired, labelled `cause`
/// (`cursor_ahead`: a cursor past the last record, new records continue after it;
/// `cursor_out_of_range`: a cursor above the highest valid seq, reset; `segment_out_of_range`:
/// a segment named above it, set aside).
pub use crate::metrics::JOURNAL_REPAIRS as REPAIRS;

/// Tracing target of the journal's diagnostics.
const TARGET: &str = "chatwatch::journal";

/// Smallest accepted `segment_bytes`.
pub const MIN_SEGMENT_BYTES: u64 = 64;

/// When the journal calls `fdatasync` on the segment it appends to: the crate's one
/// [`FsyncPolicy`](crate::fs::FsyncPolicy), under the name the journal's API has always used.
/// `always`: after every group of appends, before they return (concurrent appends share one
/// fsync); `interval` (default): within `fsync_interval` of a write, sinks seeing a record once
/// it is written or once it is synced per [`SinksSee`]; `never`: only at shutdown.
pub use crate::fs::FsyncPolicy as JournalFsync;

/// What an append does when the journal would exceed `max_bytes` even after garbage
/// collection (sinks are that far behind).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait until sinks advance and space frees; nothing is lost here, but the events pile up
    /// in front of the journal instead. Logged as an error every 10 s while it lasts and
    /// counted in `chatwatch_journal_full_total`.
    #[default]
    Block,
    /// Refuse the new events (the append fails with "full"); counted in
    /// `chatwatch_journal_dropped_total{cause="full"}`.
    DropNewest,
    /// Delete the oldest segment although some sinks have not read it; the lost records are
    /// counted in `chatwatch_journal_dropped_total{cause="oldest_deleted"}` and an error names
    /// how many each lagging sink lost.
    DropOldest,
}

/// When sinks may read an appended record under `fsync = "interval"` (with `always` a record
/// is synced before it is visible anyway, with `never` it is visible once written).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinksSee {
    /// Once written to the segment (the page cache), before the sync that follows within
    /// `fsync_interval`: an event reaches the sinks in about a millisecond. A power loss (not a
    /// process crash) can then lose from the journal up to one interval of events that sinks
    /// already delivered; recovery continues the sequence numbers after the highest cursor, so
    /// no sink skips a new event. The default.
    #[default]
    Written,
    /// Only once synced: no sink ever delivers an event the journal could lose in a power
    /// loss, at the price of waiting up to `fsync_interval` (200 ms by default) per event.
    Synced,
}

/// The `[journal]` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// The directory holding the segments and the `cursors` directory, created (mode `0750`)
    /// if missing. Default: `/var/lib/chatwatch/journal`.
    pub dir: PathBuf,
    /// When appended events are synced to disk: `"always"` (before the append returns),
    /// `"interval"` (default: within `fsync_interval`) or `"never"` (only at shutdown).
    pub fsync: JournalFsync,
    /// With `fsync = "interval"`: the longest time an appended event stays unsynced, e.g.
    /// `"200ms"` (default). Must be greater than zero.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: Duration,
    /// With `fsync = "interval"`: whether sinks see an event once it is `"written"` (default)
    /// or only once it is `"synced"`. See [`SinksSee`].
    pub sinks_see: SinksSee,
    /// Size of one segment file in bytes; whole segments are deleted once every sink has read
    /// them. A record never spans segments. Default: 67108864 (64 MiB); at least 64.
    pub segment_bytes: u64,
    /// Upper bound of the total size of the segment files in bytes; at least twice
    /// `segment_bytes`. Default: 1073741824 (1 GiB).
    pub max_bytes: u64,
    /// What happens when the journal reaches `max_bytes` because a sink is behind: `"block"`
    /// (default: wait, lose nothing here), `"drop_newest"` (refuse new events) or
    /// `"drop_oldest"` (delete the oldest unread events). Every loss is counted in
    /// `chatwatch_journal_dropped_total`.
    pub when_full: WhenFull,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            dir: PathBuf::from("/var/lib/chatwatch/journal"),
            fsync: JournalFsync::default(),
            fsync_interval: Duration::from_millis(200),
            sinks_see: SinksSee::default(),
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            when_full: WhenFull::default(),
        }
    }
}

impl JournalConfig {
    /// A configuration for `dir` with every other option at its default.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            ..JournalConfig::default()
        }
    }

    /// Checks the configuration without touching the filesystem.
    pub fn validate(&self) -> Result<(), JournalError> {
        let invalid = |field, reason: String| Err(JournalError::Config { field, reason });
        if self.dir.as_os_str().is_empty() {
            return invalid("dir", "must not be empty".into());
        }
        if self.fsync == JournalFsync::Interval && self.fsync_interval.is_zero() {
            return invalid(
                "fsync_interval",
                "must be greater than zero (use fsync = \"always\" to sync every append)".into(),
            );
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return invalid(
                "segment_bytes",
                format!(
                    "must be at least {MIN_SEGMENT_BYTES}, got {}",
                    self.segment_bytes
                ),
            );
        }
        if self.max_bytes / 2 < self.segment_bytes {
            return invalid(
                "max_bytes",
                format!(
                    "must be at least twice segment_bytes ({}), got {}",
                    self.segment_bytes, self.max_bytes
                ),
            );
        }
        Ok(())
    }
}

/// What went wrong in the journal. Every message names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A configuration value is invalid.
    #[error("invalid journal setting `{field}`: {reason}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// Another process (or another open journal in this one) holds the directory.
    #[error(
        "journal `{}` is in use by another chatwatch (its LOCK file is locked); one daemon per journal directory",
        dir.display()
    )]
    Locked {
        /// The journal directory.
        dir: PathBuf,
    },
    /// A file operation failed; the journal itself is still consistent.
    #[error("cannot {op} `{}`: {source}", path.display())]
    Io {
        /// What was being done ("create", "write to", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A sync (or the truncation undoing a failed write) failed: what is on disk is unknown,
    /// so the journal refuses every further append until the daemon restarts and recovers.
    #[error(
        "journal stopped: {op} of `{}` failed ({source}); restart chatwatch to recover the journal",
        path.display()
    )]
    Sync {
        /// What failed ("fdatasync", "fsync the directory", "truncate").
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error (shared: every later append reports it).
        #[source]
        source: Arc<io::Error>,
    },
    /// A record read back from a segment does not match its checksum.
    #[error("corrupt journal record in `{}` at byte {offset}: {problem}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the record.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
    /// The segment files contradict each other (e.g. overlapping sequence numbers).
    #[error("inconsistent journal segment `{}`: {reason}", path.display())]
    Inconsistent {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `when_full = "drop_newest"` and the journal is full: the append was refused.
    #[error(
        "the journal in `{}` is full ({bytes} of max_bytes {max_bytes} bytes) and sinks are \
         behind; the new events were dropped",
        dir.display()
    )]
    Full {
        /// The journal directory.
        dir: PathBuf,
        /// Current size of the segments.
        bytes: u64,
        /// The configured bound.
        max_bytes: u64,
    },
    /// The records of one append can never fit within `max_bytes`.
    #[error(
        "an append of {bytes} bytes can never fit in the journal in `{}` (max_bytes = {max_bytes}; \
         a single record must also stay below 4 GiB)",
        dir.display()
    )]
    TooLarge {
        /// The journal directory.
        dir: PathBuf,
        /// Size of the append on disk.
        bytes: u64,
        /// The configured bound.
        max_bytes: u64,
    },
    /// The append would need a seq above the highest valid one ([`format::MAX_SEQ`]): only a
    /// damaged or hand-edited cursor file or segment name leads here.
    #[error(
        "the journal in `{}` has run out of sequence numbers (next seq {next_seq}, highest \
         valid {max_seq}); stop chatwatch and move the journal directory aside",
        dir.display()
    )]
    SeqExhausted {
        /// The journal directory.
        dir: PathBuf,
        /// The seq the append would have started at.
        next_seq: u64,
        /// The highest valid seq.
        max_seq: u64,
    },
    /// The journal was closed (or its writer is gone).
    #[error("the journal in `{}` is closed", dir.display())]
    Closed {
        /// The journal directory.
        dir: PathBuf,
    },
    /// A sink name that cannot be a cursor file name.
    #[error(
        "invalid sink name {name:?} for a cursor in `{}`: it must be non-empty and contain \
         neither `/`, `\\`, NUL nor `..`, nor start with `.`",
        dir.display()
    )]
    SinkName {
        /// The journal directory.
        dir: PathBuf,
        /// The refused name.
        name: String,
    },
    /// A cursor file does not hold a sequence number.
    #[error("unreadable cursor file `{}`: {reason}", path.display())]
    BadCursor {
        /// The cursor file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl JournalError {
    fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        JournalError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// One repair made (or one loss found) by recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repair {
    /// The segment (or cursor) file.
    pub path: PathBuf,
    /// Byte offset of the first bad record.
    pub offset: u64,
    /// What was wrong there ("short record (torn write)", "checksum mismatch", ...).
    pub problem: String,
    /// Bytes truncated off the end (last segment only; 0 for a middle segment, whose bytes are
    /// kept).
    pub truncated_bytes: u64,
    /// Records lost in a middle segment (from the gap to the next segment's first seq); 0 for
    /// the last segment, where the number of torn records is unknown.
    pub corrupt_records: u64,
}

/// What [`Journal::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RecoveryReport {
    /// Segment files scanned.
    pub segments_scanned: usize,
    /// Valid records found.
    pub records: u64,
    /// Seq of the first valid record, 0 when there is none.
    pub first_seq: u64,
    /// Seq of the last valid record, 0 when there is none.
    pub last_seq: u64,
    /// Bytes truncated off the last segment's torn tail.
    pub truncated_bytes: u64,
    /// Records lost to corruption in earlier segments.
    pub corrupt_records: u64,
    /// Every repair or loss, in segment order.
    pub repairs: Vec<Repair>,
}

/// One sink's position, in [`JournalStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkStatus {
    /// The sink name.
    pub name: String,
    /// The last seq it has delivered; `None` before its first stored cursor.
    pub cursor: Option<u64>,
    /// Records it has yet to deliver: head minus cursor (0 without a cursor: it starts at the
    /// head).
    pub backlog: u64,
    /// Why the cursor file could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A snapshot of the journal, for `chatwatch journal status` and the admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JournalStatus {
    /// The journal directory.
    pub dir: PathBuf,
    /// Seq of the oldest retained record; `last_seq + 1` when there is none.
    pub first_seq: u64,
    /// Seq of the newest record written, 0 when none.
    pub last_seq: u64,
    /// Highest seq sinks may read (durable per the policy). Offline: the last complete record
    /// on disk.
    pub head: u64,
    /// Total size of the segment files.
    pub bytes: u64,
    /// The configured bound; `None` offline.
    pub max_bytes: Option<u64>,
    /// Number of segment files.
    pub segments: usize,
    /// Every pinning sink (offline: every cursor file), by name.
    pub sinks: Vec<SinkStatus>,
}

/// What [`Journal::probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterProbe {
    /// The writer answered: appends work.
    Writable,
    /// The writer is alive but waits for sinks to free space (`when_full = "block"`).
    Full,
    /// The writer did not answer in time (a hung disk?).
    Stuck,
    /// Appends fail (closed, or an earlier write error poisoned the journal).
    Failed(String),
}

impl WriterProbe {
    /// Whether appends work now.
    pub fn is_writable(&self) -> bool {
        matches!(self, WriterProbe::Writable)
    }

    /// Whether the writer thread is alive (writable or waiting for space).
    pub fn is_alive(&self) -> bool {
        matches!(self, WriterProbe::Writable | WriterProbe::Full)
    }
}

/// The durable journal. Cheap to clone; all clones share one writer thread.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
    recovery: RecoveryReport,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The directory's `LOCK` file, locked until the last handle is dropped (declared last: it
    /// is released after the writer thread has ended).
    _lock: std::fs::File,
}

impl Drop for Inner {
    /// The last handle is gone: stop the writer (a writer waiting for space gives up) and wait
    /// for it, so the directory is free for the next open as soon as this returns.
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.wake.notify();
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.inner.shared.cfg.dir)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Validates `cfg`, creates the directory if needed, recovers the segments (see the module
    /// documentation) and starts the writer thread.
    pub fn open(cfg: JournalConfig) -> Result<Journal, JournalError> {
        cfg.validate()?;
        let metrics = state::Metrics::new();
        let opened = recovery::open(&cfg, &metrics)?;
        let recovery = opened.report.clone();
        let writer::Started {
            shared,
            commands,
            writer,
            lock,
        } = writer::start(cfg, metrics, opened)?;
        Ok(Journal {
            inner: Arc::new(Inner {
                shared,
                commands: Mutex::new(Some(commands)),
                recovery,
                writer: Mutex::new(Some(writer)),
                _lock: lock,
            }),
        })
    }

    /// What [`open`](Self::open) found and repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The configuration this journal runs with.
    pub fn config(&self) -> &JournalConfig {
        &self.inner.shared.cfg
    }

    fn closed(&self) -> JournalError {
        JournalError::Closed {
            dir: self.inner.shared.cfg.dir.clone(),
        }
    }

    fn send(&self, command: Command) -> Result<(), JournalError> {
        let commands = self
            .inner
            .commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match commands.as_ref() {
            Some(tx) => tx.send(command).map_err(|_| self.closed()),
            None => Err(self.closed()),
        }
    }

    /// Appends `payloads` as consecutive records and returns their sequence numbers (an empty
    /// range for no payloads) once they are durable per the fsync policy (see the module
    /// documentation). Concurrent appends are ordered as they reach the writer and may share
    /// one fsync. When the journal is full, `when_full` decides: wait, fail with
    /// [`JournalError::Full`], or delete the oldest segment.
    ///
    /// Dropping the future after the call started does not cancel the append.
    pub async fn append(
        &self,
        payloads: Vec<Vec<u8>>,
    ) -> Result<RangeInclusive<u64>, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append { payloads, reply })?;
        rx.await.map_err(|_| self.closed())?
    }

    /// The highest seq readers may see: records durable per the policy. 0 while empty.
    pub fn head(&self) -> watch::Receiver<u64> {
        self.inner.shared.head.subscribe()
    }

    /// Seq of the oldest retained record (`last_seq + 1` when there is none). A reader whose
    /// cursor is below `first_seq - 1` has lost the records in between (deleted by
    /// `when_full = "drop_oldest"`, or corrupt).
    pub fn first_seq(&self) -> u64 {
        self.inner.shared.lock().first_seq()
    }

    /// Up to `max` records with seq greater than `after` and at most the head, in order,
    /// across segments. When `after` is older than the oldest retained record, reading starts
    /// at the oldest (compare with [`first_seq`](Self::first_seq) to count the gap). Blocking
    /// file I/O (small reads through the page cache).
    pub fn read(&self, after: u64, max: usize) -> Result<Vec<(u64, Vec<u8>)>, JournalError> {
        let head = *self.inner.shared.head.borrow();
        if max == 0 || after >= head {
            return Ok(Vec::new());
        }
        let mut attempt = 0;
        loop {
            let spans = self.inner.shared.lock().read_plan(after, head);
            match read_spans(&spans, after, head, max) {
                Ok(records) => return Ok(records),
                // The first segment was deleted (garbage collected) after the plan was made:
                // plan again.
                Err(ReadError::Gone(error)) => {
                    attempt += 1;
                    if attempt >= 5 {
                        return Err(error);
                    }
                }
                Err(ReadError::Journal(error)) => return Err(error),
            }
        }
    }

    /// The stored cursor of `sink`: the last seq it has delivered, `None` if it has none.
    pub fn load_cursor(&self, sink: &str) -> Result<Option<u64>, JournalError> {
        let shared = &self.inner.shared;
        cursor::validate_name(&shared.cfg.dir, sink)?;
        let state = shared.lock();
        match state.cursors.get(sink) {
            None => Ok(None),
            Some(Ok(seq)) => Ok(Some(*seq)),
            Some(Err(reason)) => Err(JournalError::BadCursor {
                path: cursor::path(&shared.cfg.dir, sink),
                reason: reason.clone(),
            }),
        }
    }

    /// Stores the cursor of `sink` atomically (write a temporary file, fsync, rename, fsync
    /// the directory), then lets garbage collection and a waiting append see it.
    pub fn store_cursor(&self, sink: &str, seq: u64) -> Result<(), JournalError> {
        let shared = &self.inner.shared;
        cursor::validate_name(&shared.cfg.dir, sink)?;
        {
            // One store at a time, so the file and the map agree on the last one.
            let _serial = shared
                .cursor_store
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            cursor::store(&shared.cfg.dir, sink, seq)?;
            shared.lock().cursors.insert(sink.to_owned(), Ok(seq));
        }
        shared.wake.notify();
        Ok(())
    }

    /// Declares the configured sinks: deletes the cursor files of every other sink (returning
    /// their names, sorted) and from then on lets only `sinks` pin segments.
    pub fn retain_sinks(&self, sinks: &[String]) -> Result<Vec<String>, JournalError> {
        let shared = &self.inner.shared;
        for sink in sinks {
            cursor::validate_name(&shared.cfg.dir, sink)?;
        }
        let keep: BTreeSet<String> = sinks.iter().cloned().collect();
        let removed = {
            let _serial = shared
                .cursor_store
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            shared.lock().retained = Some(keep.clone());
            let removed = cursor::remove_others(&shared.cfg.dir, &keep)?;
            let mut state = shared.lock();
            state.cursors.retain(|name, _| keep.contains(name));
            removed
        };
        for name in &removed {
            tracing::info!(
                target: TARGET,
                sink = %name,
                dir = %shared.cfg.dir.display(),
                "removed the cursor of a sink that is no longer configured"
            );
        }
        shared.wake.notify();
        Ok(removed)
    }

    /// Deletes every whole segment (except the active one) whose records are all at or below
    /// the lowest cursor of the pinning sinks and the head, then fsyncs the directory. Returns
    /// how many segments were deleted.
    pub fn collect_garbage(&self) -> Result<usize, JournalError> {
        self.inner.shared.collect_garbage()
    }

    /// Checks that the writer thread answers: an empty append must come back within `within`.
    /// Used by readiness (`/readyz`) and the systemd watchdog.
    pub async fn probe(&self, within: std::time::Duration) -> WriterProbe {
        match tokio::time::timeout(within, self.append(Vec::new())).await {
            Ok(Ok(_)) => WriterProbe::Writable,
            Ok(Err(e)) => WriterProbe::Failed(e.to_string()),
            Err(_) if self.inner.shared.waiting_for_space.load(Ordering::SeqCst) => {
                WriterProbe::Full
            }
            Err(_) => WriterProbe::Stuck,
        }
    }

    /// A snapshot of positions, sizes and per-sink backlogs.
    pub fn status(&self) -> JournalStatus {
        let shared = &self.inner.shared;
        let head = *shared.head.borrow();
        let state = shared.lock();
        let names: Vec<String> = match &state.retained {
            Some(retained) => retained.iter().cloned().collect(),
            None => state.cursors.keys().cloned().collect(),
        };
        let sinks = names
            .into_iter()
            .map(|name| {
                let cursor = state.cursors.get(&name).cloned();
                sink_status(name, cursor, head)
            })
            .collect();
        JournalStatus {
            dir: shared.cfg.dir.clone(),
            first_seq: state.first_seq(),
            last_seq: state.last_seq(),
            head,
            bytes: state.total_bytes,
            max_bytes: Some(shared.cfg.max_bytes),
            segments: state.segments.len(),
            sinks,
        }
    }

    /// Writes what is queued, syncs regardless of the policy, and stops the writer; later
    /// appends fail with [`JournalError::Closed`]. Reading and cursors keep working. Closing
    /// twice is fine.
    pub async fn close(&self) -> Result<(), JournalError> {
        let shared = &self.inner.shared;
        shared.closing.store(true, Ordering::SeqCst);
        shared.wake.notify();
        let (reply, rx) = oneshot::channel();
        let sent = self.send(Command::Close { reply });
        // No more appends from any clone.
        self.inner
            .commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if sent.is_err() {
            return shared.lock().poison_error().map_or(Ok(()), Err);
        }
        match rx.await {
            Ok(result) => result,
            Err(_) => shared.lock().poison_error().map_or(Ok(()), Err),
        }
    }
}

fn sink_status(name: String, cursor: Option<Result<u64, String>>, head: u64) -> SinkStatus {
    match cursor {
        Some(Ok(seq)) => SinkStatus {
            name,
            cursor: Some(seq),
            backlog: head.saturating_sub(seq),
            error: None,
        },
        Some(Err(reason)) => SinkStatus {
            name,
            cursor: None,
            backlog: 0,
            error: Some(reason),
        },
        None => SinkStatus {
            name,
            cursor: None,
            backlog: 0,
            error: None,
        },
    }
}

/// The part of one segment a read covers.
#[derive(Debug)]
struct Span {
    path: PathBuf,
    /// Where to start reading: an indexed record at or before the first wanted one.
    start: u64,
    /// End of the segment's valid records when the plan was made.
    end: u64,
}

enum ReadError {
    /// The first segment disappeared (garbage collected) before it could be opened.
    Gone(JournalError),
    Journal(JournalError),
}

fn read_spans(
    spans: &[Span],
    after: u64,
    head: u64,
    max: usize,
) -> Result<Vec<(u64, Vec<u8>)>, ReadError> {
    let mut out = Vec::new();
    for span in spans {
        let mut file = match std::fs::File::open(&span.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound && out.is_empty() => {
                return Err(ReadError::Gone(JournalError::io("open", &span.path, e)))
            }
            Err(e) => return Err(ReadError::Journal(JournalError::io("open", &span.path, e))),
        };
        file.seek(SeekFrom::Start(span.start))
            .map_err(|e| ReadError::Journal(JournalError::io("seek in", &span.path, e)))?;
        let capacity = usize::try_from(span.end - span.start)
            .unwrap_or(usize::MAX)
            .clamp(64, 32 * 1024);
        let mut reader = BufReader::with_capacity(capacity, file);
        let mut offset = span.start;
        let mut payload = Vec::new();
        while offset < span.end {
            let next = format::read_record(&mut reader, span.end - offset, &mut payload)
                .map_err(|e| ReadError::Journal(JournalError::io("read", &span.path, e)))?;
            match next {
                format::Next::Record(seq) => {
                    offset += format::record_len(payload.len());
                    if seq > head {
                        return Ok(out);
                    }
                    if seq > after {
                        out.push((seq, std::mem::take(&mut payload)));
                        if out.len() >= max {
                            return Ok(out);
                        }
                    }
                }
                // The segment is shorter than planned: an append beyond the head was rolled
                // back meanwhile. Nothing up to the head is ever cut, so this is the end.
                format::Next::End | format::Next::Short => break,
                format::Next::BadCrc => {
                    return Err(ReadError::Journal(JournalError::Corrupt {
                        path: span.path.clone(),
                        offset,
                        problem: format::Problem::BadCrc.to_string(),
                    }))
                }
            }
        }
    }
    Ok(out)
}

impl State {
    /// Which segments to read for records after `after` up to `head`.
    fn read_plan(&self, after: u64, head: u64) -> Vec<Span> {
        let mut spans = Vec::new();
        for segment in &self.segments {
            if segment.records == 0 || segment.last_seq <= after {
                continue;
            }
            if segment.first_seq > head {
                break;
            }
            let start = if spans.is_empty() {
                let wanted = after.saturating_add(1);
                let i = segment.index.partition_point(|&(seq, _)| seq <= wanted);
                if i == 0 {
                    0
                } else {
                    segment.index[i - 1].1
                }
            } else {
                0
            };
            spans.push(Span {
                path: segment.path.clone(),
                start,
                end: segment.len,
            });
        }
        spans
    }
}

#[cfg(test)]
mod tests;
