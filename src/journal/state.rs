//! The journal state shared by the writer thread, readers and cursor updates: the list of
//! segments, the cursors, the fatal-error latch, and garbage collection.
//!
//! Only the writer appends to the last segment or adds segments; garbage collection (from any
//! thread) removes segments from the front, never the last one. Both hold the state lock only
//! for bookkeeping; file deletion and directory fsyncs happen outside it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge};
use tokio::sync::watch;

use super::{JournalConfig, JournalError, DROPPED, TARGET};

/// One segment file as the journal tracks it.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// The seq in the file name: its first record's.
    pub first_seq: u64,
    pub path: PathBuf,
    /// Valid records.
    pub records: u64,
    /// Seq of the last valid record (meaningless when `records == 0`).
    pub last_seq: u64,
    /// End of the valid records: where the next append goes (for the last segment).
    pub len: u64,
    /// Size of the file (larger than `len` for a middle segment with a corrupt part).
    pub disk_bytes: u64,
    /// Sparse `(seq, offset)` index, see [`super::format::maybe_index`].
    pub index: Vec<(u64, u64)>,
}

/// What the state lock protects.
#[derive(Debug)]
pub(crate) struct State {
    /// Oldest first; never empty while the journal is open (the last is the active one).
    pub segments: VecDeque<Segment>,
    /// The seq the next appended record gets.
    pub next_seq: u64,
    /// Sum of `disk_bytes`.
    pub total_bytes: u64,
    /// Every known cursor: its seq, or why its file is unreadable.
    pub cursors: BTreeMap<String, Result<u64, String>>,
    /// The sinks named by the last `retain_sinks`; `None` before: every cursor pins.
    pub retained: Option<BTreeSet<String>>,
    /// Set by the first failed sync: (what failed, where, the error).
    pub poisoned: Option<(&'static str, PathBuf, Arc<io::Error>)>,
    /// While an append is being written: the first seq of the segment it started in, which
    /// garbage collection must keep so that a failed append can be undone.
    pub writing_from: Option<u64>,
}

impl State {
    /// Seq of the oldest retained record, `last_seq + 1` when there is none.
    pub fn first_seq(&self) -> u64 {
        self.segments
            .iter()
            .find(|s| s.records > 0)
            .map_or(self.next_seq, |s| s.first_seq)
    }

    /// Seq of the newest record, 0 when none.
    pub fn last_seq(&self) -> u64 {
        self.segments
            .iter()
            .rev()
            .find(|s| s.records > 0)
            .map_or(0, |s| s.last_seq)
    }

    /// The fatal error, if a sync has failed.
    pub fn poison_error(&self) -> Option<JournalError> {
        self.poisoned
            .as_ref()
            .map(|(op, path, source)| JournalError::Sync {
                op,
                path: path.clone(),
                source: Arc::clone(source),
            })
    }

    /// The cursors that pin segments: `(sink, seq)`; an unreadable cursor pins everything.
    pub fn pins(&self) -> Vec<(String, u64)> {
        let cursor = |name: &String| {
            self.cursors
                .get(name)
                .map(|c| (name.clone(), c.as_ref().map_or(0, |seq| *seq)))
        };
        match &self.retained {
            Some(retained) => retained.iter().filter_map(cursor).collect(),
            None => self.cursors.keys().filter_map(cursor).collect(),
        }
    }

    /// Records at or below this seq may be deleted: the head and every pinning cursor are past
    /// them.
    pub fn collectable_up_to(&self, head: u64) -> u64 {
        self.pins()
            .into_iter()
            .map(|(_, seq)| seq)
            .fold(head, u64::min)
    }
}

/// "Space may have freed, or the journal is closing": wakes a writer blocked on a full
/// journal.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    generation: Mutex<u64>,
    condvar: Condvar,
}

impl Wake {
    pub fn notify(&self) {
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        self.condvar.notify_all();
    }

    pub fn generation(&self) -> u64 {
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until a notification after `seen`, or `timeout`.
    pub fn wait(&self, seen: u64, timeout: Duration) {
        let guard = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let _unused = self
            .condvar
            .wait_timeout_while(guard, timeout, |generation| *generation == seen)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// The journal's metric handles, registered when it opens.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub appended: Counter,
    pub bytes: Gauge,
    pub full: Counter,
    pub dropped_full: Counter,
    pub dropped_oldest: Counter,
    pub truncated_bytes: Counter,
    pub corrupt_records: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            appended: metrics::counter!(super::APPENDED),
            bytes: metrics::gauge!(super::BYTES),
            full: metrics::counter!(super::FULL),
            dropped_full: metrics::counter!(DROPPED, "cause" => "full"),
            dropped_oldest: metrics::counter!(DROPPED, "cause" => "oldest_deleted"),
            truncated_bytes: metrics::counter!(super::TRUNCATED_BYTES),
            corrupt_records: metrics::counter!(super::CORRUPT_RECORDS),
        }
    }
}

/// Everything the journal handles and its writer thread share.
pub(crate) struct Shared {
    pub cfg: JournalConfig,
    pub state: Mutex<State>,
    pub head: watch::Sender<u64>,
    pub wake: Wake,
    /// Set by `close`: a writer blocked on a full journal gives up.
    pub closing: AtomicBool,
    /// Set while the writer waits for sinks to free space (`when_full = "block"`).
    pub waiting_for_space: AtomicBool,
    /// Serialises cursor stores and `retain_sinks`.
    pub cursor_store: Mutex<()>,
    pub metrics: Metrics,
    /// Injected failures, for unit tests of the failure paths.
    #[cfg(test)]
    pub faults: Faults,
}

/// Failures a unit test can inject into the writer.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// Fail this many of the next fdatasyncs.
    pub syncs: std::sync::atomic::AtomicUsize,
    /// Fail the n-th next chunk write (1 = the next), after writing half of it.
    pub write_at: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl Faults {
    /// Whether this fdatasync should fail.
    pub fn sync_fails(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Whether this chunk write should fail.
    pub fn write_fails(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.write_at
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            == Ok(1)
    }
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Latches a fatal error and returns it.
    pub fn poison(&self, op: &'static str, path: PathBuf, error: io::Error) -> JournalError {
        let mut state = self.lock();
        if state.poisoned.is_none() {
            tracing::error!(
                target: TARGET,
                path = %path.display(),
                %error,
                op,
                "journal sync failed; refusing further appends until chatwatch restarts and \
                 recovers the journal"
            );
            state.poisoned = Some((op, path, Arc::new(error)));
        }
        state.poison_error().unwrap_or(JournalError::Closed {
            dir: self.cfg.dir.clone(),
        })
    }

    /// fsyncs the journal directory (after creating or deleting a segment); a failure is fatal.
    pub fn sync_dir(&self) -> Result<(), JournalError> {
        sync_dir(&self.cfg.dir)
            .map_err(|e| self.poison("fsync the directory", self.cfg.dir.clone(), e))
    }

    /// Deletes every segment but the last whose records are all collectable (see
    /// [`State::collectable_up_to`]); returns how many.
    pub fn collect_garbage(&self) -> Result<usize, JournalError> {
        let head = *self.head.borrow();
        let removed: Vec<Segment> = {
            let mut state = self.lock();
            let limit = state.collectable_up_to(head);
            let mut removed = Vec::new();
            while state.segments.len() > 1 {
                let front = &state.segments[0];
                if front.records > 0 && front.last_seq > limit
                    || state.writing_from.is_some_and(|w| front.first_seq >= w)
                {
                    break;
                }
                if let Some(segment) = state.segments.pop_front() {
                    state.total_bytes -= segment.disk_bytes;
                    removed.push(segment);
                }
            }
            self.metrics.bytes.set(state.total_bytes as f64);
            removed
        };
        if removed.is_empty() {
            return Ok(0);
        }
        let mut first_error = None;
        for segment in &removed {
            tracing::debug!(
                target: TARGET,
                path = %segment.path.display(),
                records = segment.records,
                "deleting a segment every sink has read"
            );
            if let Err(e) = remove_file(&segment.path) {
                first_error.get_or_insert(JournalError::io("delete", &segment.path, e));
            }
        }
        self.sync_dir()?;
        self.wake.notify();
        match first_error {
            Some(error) => Err(error),
            None => Ok(removed.len()),
        }
    }
}

/// Removes a file; one that is already gone is fine.
pub(crate) fn remove_file(path: &std::path::Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub(crate) use crate::fs::{create_dirs, private_file_options, sync_dir};
