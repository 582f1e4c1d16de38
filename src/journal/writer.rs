//! The journal's single writer: one dedicated OS thread that owns the active segment's
//! `std::fs::File`, appends records in the order appends arrive, rolls segments, syncs per the
//! policy (group commit), enforces `max_bytes` per `when_full`, and moves the head.
//!
//! Appends arrive on a channel; the thread takes the first, drains whatever else is queued (up
//! to [`MAX_GROUP`]) into one group, writes each append, then commits the group: with
//! `fsync = "always"` one `fdatasync` for all, then the head moves and every append is answered.
//! A failed write is rolled back (segments created for it deleted, the segment truncated to
//! where it started) and only that append fails. A failed fsync latches the journal as
//! poisoned (see [`super::JournalError::Sync`]).

use std::fs::File;
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::format::{encode, maybe_index, record_len, segment_name, MAX_SEQ};
use super::recovery::Opened;
use super::state::{private_file_options, remove_file, Metrics, Segment, Shared, Wake};
use super::{JournalConfig, JournalError, JournalFsync, SinksSee, WhenFull, TARGET};

/// Most appends committed together.
const MAX_GROUP: usize = 1024;
/// At most one "journal full" error log per this period.
const FULL_LOG_PERIOD: Duration = Duration::from_secs(10);

/// The answer to one append.
type AppendReply = oneshot::Sender<Result<RangeInclusive<u64>, JournalError>>;

/// What the journal handles ask of the writer.
pub(crate) enum Command {
    /// Append these records.
    Append {
        payloads: Vec<Vec<u8>>,
        reply: AppendReply,
    },
    /// Write what is queued before this, sync, and stop.
    Close {
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
}

/// The writer thread reads the clock only here.
// This is a dedicated OS thread doing blocking file I/O, not async code: tokio's paused test
// clock is irrelevant to it, so the std clock is the right one.
#[allow(clippy::disallowed_methods)]
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// A started writer: the shared state, its command channel, its thread and the directory lock.
pub(crate) struct Started {
    pub shared: Arc<Shared>,
    pub commands: mpsc::Sender<Command>,
    pub writer: std::thread::JoinHandle<()>,
    pub lock: std::fs::File,
}

/// Builds the shared state from a recovered journal and starts the writer thread.
pub(crate) fn start(
    cfg: JournalConfig,
    metrics: Metrics,
    opened: Opened,
) -> Result<Started, JournalError> {
    let Opened {
        state,
        active,
        head,
        lock,
        ..
    } = opened;
    let path = state
        .segments
        .back()
        .map(|s| s.path.clone())
        .unwrap_or_else(|| cfg.dir.clone());
    let shared = Arc::new(Shared {
        head: watch::Sender::new(head),
        state: Mutex::new(state),
        wake: Wake::default(),
        closing: AtomicBool::new(false),
        waiting_for_space: AtomicBool::new(false),
        cursor_store: Mutex::new(()),
        metrics,
        cfg,
        #[cfg(test)]
        faults: Default::default(),
    });
    let (tx, rx) = mpsc::channel();
    let writer = Writer {
        shared: Arc::clone(&shared),
        file: active,
        path,
        written: head,
        dirty_since: None,
        pending: Vec::new(),
        last_full_log: None,
    };
    let handle = std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || writer.run(rx))
        .map_err(|e| JournalError::io("start the writer thread for", &shared.cfg.dir, e))?;
    Ok(Started {
        shared,
        commands: tx,
        writer: handle,
        lock,
    })
}

/// The active segment as one append sees it while building chunks.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    first_seq: u64,
    records: u64,
    last_seq: u64,
    len: u64,
}

/// What to restore when an append fails half-way.
struct Undo {
    active_first: u64,
    len: u64,
    records: u64,
    last_seq: u64,
    index_len: usize,
    disk_bytes: u64,
    next_seq: u64,
}

struct Writer {
    shared: Arc<Shared>,
    /// The active (last) segment, opened for appending.
    file: File,
    path: PathBuf,
    /// Seq of the last record written to a file: what the head becomes once it is durable.
    written: u64,
    /// When the first write since the last sync happened.
    dirty_since: Option<std::time::Instant>,
    /// Appends written but not yet answered.
    pending: Vec<(AppendReply, Result<RangeInclusive<u64>, JournalError>)>,
    last_full_log: Option<std::time::Instant>,
}

impl Writer {
    fn policy(&self) -> JournalFsync {
        self.shared.cfg.fsync
    }

    fn run(mut self, rx: mpsc::Receiver<Command>) {
        loop {
            let Some(first) = self.next_command(&rx) else {
                // Every handle is gone without close(): sync what was written, quietly.
                let _ = self.final_sync();
                return;
            };
            let mut close = None;
            self.handle(first, &mut close);
            while close.is_none() && self.pending.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(command) => self.handle(command, &mut close),
                    Err(_) => break,
                }
            }
            self.commit();
            if let Some(reply) = close {
                let _ = reply.send(self.final_sync());
                return;
            }
            self.sync_if_due();
        }
    }

    /// The next command; with `fsync = "interval"` and unsynced writes, syncs when the interval
    /// is up even if nothing arrives. `None` once every handle is gone.
    fn next_command(&mut self, rx: &mpsc::Receiver<Command>) -> Option<Command> {
        loop {
            if self.policy() == JournalFsync::Interval {
                if let Some(since) = self.dirty_since {
                    let elapsed = now().saturating_duration_since(since);
                    let interval = self.shared.cfg.fsync_interval;
                    if elapsed >= interval {
                        let _ = self.sync();
                        continue;
                    }
                    match rx.recv_timeout(interval - elapsed) {
                        Ok(command) => return Some(command),
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                    }
                }
            }
            return rx.recv().ok();
        }
    }

    fn handle(
        &mut self,
        command: Command,
        close: &mut Option<oneshot::Sender<Result<(), JournalError>>>,
    ) {
        match command {
            Command::Append { payloads, reply } => {
                let result = self.append(payloads);
                self.pending.push((reply, result));
            }
            Command::Close { reply } => *close = Some(reply),
        }
    }

    fn sync_if_due(&mut self) {
        if self.policy() == JournalFsync::Interval {
            if let Some(since) = self.dirty_since {
                if now().saturating_duration_since(since) >= self.shared.cfg.fsync_interval {
                    let _ = self.sync();
                }
            }
        }
    }

    /// Moves the head up to `seq`.
    fn publish(&self, seq: u64) {
        self.shared.head.send_if_modified(|head| {
            if seq > *head {
                *head = seq;
                true
            } else {
                false
            }
        });
    }

    /// fdatasync of the active segment, then the head moves to everything written. A failure
    /// poisons the journal. Once poisoned, nothing counts as synced any more: a later fsync
    /// may succeed although the kernel dropped the pages whose writeback failed.
    fn sync(&mut self) -> Result<(), JournalError> {
        self.dirty_since = None;
        if let Some(error) = self.shared.lock().poison_error() {
            return Err(error);
        }
        match self.sync_data() {
            Ok(()) => {
                self.publish(self.written);
                Ok(())
            }
            Err(e) => Err(self.shared.poison("fdatasync", self.path.clone(), e)),
        }
    }

    /// fdatasync of the active segment (with injected failures in unit tests).
    fn sync_data(&mut self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.shared.faults.sync_fails() {
            return Err(std::io::Error::other("injected fdatasync failure"));
        }
        self.file.sync_data()
    }

    /// Appends `buf` to the active segment (with injected failures in unit tests).
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if self.shared.faults.write_fails() {
            self.file.write_all(&buf[..buf.len() / 2])?;
            return Err(std::io::Error::other("injected write failure"));
        }
        self.file.write_all(buf)?;
        self.file.flush()
    }

    /// The sync at close (or when every handle is gone), whatever the policy.
    fn final_sync(&mut self) -> Result<(), JournalError> {
        self.sync()
    }

    /// Makes the pending appends durable per the policy and answers them.
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let synced = match self.policy() {
            JournalFsync::Always if self.dirty_since.is_some() => self.sync().is_ok(),
            _ => self.shared.lock().poisoned.is_none(),
        };
        let visible_when_written = match self.policy() {
            JournalFsync::Never => true,
            JournalFsync::Interval => self.shared.cfg.sinks_see == SinksSee::Written,
            JournalFsync::Always => false,
        };
        if synced && visible_when_written {
            self.publish(self.written);
        }
        for (reply, result) in std::mem::take(&mut self.pending) {
            let result =
                match result {
                    Ok(_) if !synced => {
                        Err(self.shared.lock().poison_error().unwrap_or_else(|| {
                            JournalError::Closed {
                                dir: self.shared.cfg.dir.clone(),
                            }
                        }))
                    }
                    result => result,
                };
            let _ = reply.send(result);
        }
    }

    fn append(&mut self, payloads: Vec<Vec<u8>>) -> Result<RangeInclusive<u64>, JournalError> {
        let (poison, next_seq) = {
            let state = self.shared.lock();
            (state.poison_error(), state.next_seq)
        };
        if let Some(error) = poison {
            return Err(error);
        }
        if payloads.is_empty() {
            return Ok(next_seq..=next_seq.saturating_sub(1));
        }
        let cfg = &self.shared.cfg;
        // The last seq of this append must stay in range (recovery keeps next_seq at most
        // MAX_SEQ + 1, so only a cursor or segment at the top of the range gets here).
        let last = (payloads.len() as u64 - 1)
            .checked_add(next_seq)
            .filter(|last| *last <= MAX_SEQ);
        if last.is_none() {
            return Err(JournalError::SeqExhausted {
                dir: cfg.dir.clone(),
                next_seq,
                max_seq: MAX_SEQ,
            });
        }
        let mut need = 0u64;
        let mut too_large = false;
        for payload in &payloads {
            too_large |= u32::try_from(payload.len()).is_err();
            need = need.saturating_add(record_len(payload.len()));
        }
        if too_large || need > cfg.max_bytes {
            return Err(JournalError::TooLarge {
                dir: cfg.dir.clone(),
                bytes: need,
                max_bytes: cfg.max_bytes,
            });
        }
        self.make_room(need, payloads.len() as u64)?;
        self.write(&payloads)
    }

    fn fits(&self, need: u64) -> bool {
        self.shared.lock().total_bytes.saturating_add(need) <= self.shared.cfg.max_bytes
    }

    /// Frees space for `need` bytes per `when_full`.
    fn make_room(&mut self, need: u64, records: u64) -> Result<(), JournalError> {
        let mut counted = false;
        loop {
            let seen = self.shared.wake.generation();
            if self.fits(need) {
                return Ok(());
            }
            self.collect()?;
            if self.fits(need) {
                return Ok(());
            }
            if !counted {
                self.shared.metrics.full.increment(1);
                counted = true;
            }
            match self.shared.cfg.when_full {
                WhenFull::DropNewest => {
                    self.shared.metrics.dropped_full.increment(records);
                    self.log_full("dropping the newest events (when_full = \"drop_newest\")");
                    return Err(self.full_error());
                }
                WhenFull::DropOldest => {
                    if !self.drop_oldest()? {
                        return Err(self.full_error());
                    }
                }
                WhenFull::Block => {
                    // Answer what was already written, and let the head reach it, before
                    // waiting.
                    self.commit();
                    if self.policy() == JournalFsync::Interval && self.dirty_since.is_some() {
                        self.sync()?;
                        continue;
                    }
                    if self.shared.closing.load(Ordering::SeqCst) {
                        return Err(JournalError::Closed {
                            dir: self.shared.cfg.dir.clone(),
                        });
                    }
                    self.log_full("waiting for sinks to catch up (when_full = \"block\")");
                    self.shared.waiting_for_space.store(true, Ordering::SeqCst);
                    self.shared.wake.wait(seen, FULL_LOG_PERIOD);
                    self.shared.waiting_for_space.store(false, Ordering::SeqCst);
                }
            }
        }
    }

    fn full_error(&self) -> JournalError {
        JournalError::Full {
            dir: self.shared.cfg.dir.clone(),
            bytes: self.shared.lock().total_bytes,
            max_bytes: self.shared.cfg.max_bytes,
        }
    }

    /// Garbage collection, plus: if the active segment is entirely collectable, start a new
    /// one so that it can go too.
    fn collect(&mut self) -> Result<(), JournalError> {
        self.shared.collect_garbage()?;
        let head = *self.shared.head.borrow();
        let (roll, next_seq) = {
            let state = self.shared.lock();
            let limit = state.collectable_up_to(head);
            let roll = state
                .segments
                .back()
                .is_some_and(|a| a.records > 0 && a.last_seq <= limit);
            (roll, state.next_seq)
        };
        if roll {
            self.roll(next_seq)?;
            self.shared.collect_garbage()?;
        }
        Ok(())
    }

    /// Deletes the oldest segment although sinks have not read it all. False when there is
    /// nothing to delete.
    fn drop_oldest(&mut self) -> Result<bool, JournalError> {
        let (single, empty, next_seq) = {
            let state = self.shared.lock();
            let empty = state.segments.back().is_none_or(|a| a.records == 0);
            (state.segments.len() == 1, empty, state.next_seq)
        };
        if single {
            if empty {
                return Ok(false);
            }
            self.roll(next_seq)?;
        }
        let (segment, lost) = {
            let mut state = self.shared.lock();
            let Some(segment) = state.segments.pop_front() else {
                return Ok(false);
            };
            state.total_bytes -= segment.disk_bytes;
            self.shared.metrics.bytes.set(state.total_bytes as f64);
            let lost: Vec<String> = state
                .pins()
                .into_iter()
                .filter(|(_, cursor)| segment.records > 0 && *cursor < segment.last_seq)
                .map(|(sink, cursor)| {
                    let unread = segment.last_seq - cursor.max(segment.first_seq - 1);
                    format!("{sink}: {}", unread.min(segment.records))
                })
                .collect();
            (segment, lost)
        };
        self.shared
            .metrics
            .dropped_oldest
            .increment(segment.records);
        tracing::error!(
            target: TARGET,
            path = %segment.path.display(),
            records = segment.records,
            first_seq = segment.first_seq,
            last_seq = segment.last_seq,
            lost_per_sink = %lost.join(", "),
            "the journal is full: deleted the oldest segment before every sink read it \
             (when_full = \"drop_oldest\"); these events are lost for the lagging sinks"
        );
        remove_file(&segment.path).map_err(|e| JournalError::io("delete", &segment.path, e))?;
        self.shared.sync_dir()?;
        Ok(true)
    }

    /// Logs that the journal is full, at most every [`FULL_LOG_PERIOD`].
    fn log_full(&mut self, action: &str) {
        let now = now();
        if self
            .last_full_log
            .is_some_and(|at| now.saturating_duration_since(at) < FULL_LOG_PERIOD)
        {
            return;
        }
        self.last_full_log = Some(now);
        let head = *self.shared.head.borrow();
        let state = self.shared.lock();
        let lagging: Vec<String> = state
            .pins()
            .into_iter()
            .map(|(sink, cursor)| {
                format!(
                    "{sink} at {cursor} ({} behind)",
                    head.saturating_sub(cursor)
                )
            })
            .collect();
        tracing::error!(
            target: TARGET,
            dir = %self.shared.cfg.dir.display(),
            bytes = state.total_bytes,
            max_bytes = self.shared.cfg.max_bytes,
            head,
            sinks = %lagging.join(", "),
            "the journal is full: {action}"
        );
    }

    /// Starts segment `seq`: syncs the current one (unless `fsync = "never"`), creates the new
    /// file, fsyncs the directory.
    fn roll(&mut self, seq: u64) -> Result<(), JournalError> {
        if self.policy() != JournalFsync::Never {
            self.sync_data()
                .map_err(|e| self.shared.poison("fdatasync", self.path.clone(), e))?;
        }
        let path = self.shared.cfg.dir.join(segment_name(seq));
        let file = private_file_options()
            .read(true)
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| JournalError::io("create", &path, e))?;
        self.shared.sync_dir()?;
        self.shared.lock().segments.push_back(Segment {
            first_seq: seq,
            path: path.clone(),
            records: 0,
            last_seq: seq - 1,
            len: 0,
            disk_bytes: 0,
            index: Vec::new(),
        });
        self.file = file;
        self.path = path;
        Ok(())
    }

    /// Writes the records of one append, rolling segments as needed; undoes everything if a
    /// step fails.
    fn write(&mut self, payloads: &[Vec<u8>]) -> Result<RangeInclusive<u64>, JournalError> {
        let (mut cur, undo) = {
            let mut state = self.shared.lock();
            let next_seq = state.next_seq;
            let Some(active) = state.segments.back() else {
                return Err(JournalError::Closed {
                    dir: self.shared.cfg.dir.clone(),
                });
            };
            let cur = Cursor {
                first_seq: active.first_seq,
                records: active.records,
                last_seq: active.last_seq,
                len: active.len,
            };
            let undo = Undo {
                active_first: active.first_seq,
                len: active.len,
                records: active.records,
                last_seq: active.last_seq,
                index_len: active.index.len(),
                disk_bytes: active.disk_bytes,
                next_seq,
            };
            // Garbage collection must leave the segment this append starts in alone, so that
            // a failure can be undone.
            state.writing_from = Some(active.first_seq);
            (cur, undo)
        };
        let result = self.write_records(payloads, &mut cur, undo.next_seq);
        let result = match result {
            Ok(range) => Ok(range),
            Err(error) => Err(self.rollback(&undo, error)),
        };
        self.shared.lock().writing_from = None;
        let range = result?;
        self.written = *range.end();
        self.dirty_since.get_or_insert_with(now);
        self.shared
            .metrics
            .appended
            .increment(payloads.len() as u64);
        Ok(range)
    }

    fn write_records(
        &mut self,
        payloads: &[Vec<u8>],
        cur: &mut Cursor,
        first: u64,
    ) -> Result<RangeInclusive<u64>, JournalError> {
        let segment_bytes = self.shared.cfg.segment_bytes;
        let mut buf = Vec::with_capacity(
            payloads
                .iter()
                .map(|p| record_len(p.len()) as usize)
                .sum::<usize>()
                .min(4 << 20),
        );
        let mut positions = Vec::new();
        let mut seq = first;
        for payload in payloads {
            let rec = record_len(payload.len());
            let roll = if cur.records == 0 {
                cur.first_seq != seq
            } else {
                cur.last_seq + 1 != seq || cur.len + rec > segment_bytes
            };
            if roll {
                self.write_chunk(&mut buf, &mut positions)?;
                self.roll(seq)?;
                *cur = Cursor {
                    first_seq: seq,
                    records: 0,
                    last_seq: seq - 1,
                    len: 0,
                };
            }
            positions.push((seq, cur.len));
            encode(seq, payload, &mut buf);
            cur.records += 1;
            cur.last_seq = seq;
            cur.len += rec;
            seq += 1;
        }
        self.write_chunk(&mut buf, &mut positions)?;
        Ok(first..=seq - 1)
    }

    /// Writes `buf` (the records at `positions`) to the active segment and records them.
    fn write_chunk(
        &mut self,
        buf: &mut Vec<u8>,
        positions: &mut Vec<(u64, u64)>,
    ) -> Result<(), JournalError> {
        let Some(&(last_seq, _)) = positions.last() else {
            return Ok(());
        };
        self.write_all(buf)
            .map_err(|e| JournalError::io("write to", &self.path, e))?;
        let bytes = buf.len() as u64;
        let mut state = self.shared.lock();
        if let Some(segment) = state.segments.back_mut() {
            for &(seq, offset) in positions.iter() {
                maybe_index(&mut segment.index, seq, offset);
            }
            segment.records += positions.len() as u64;
            segment.last_seq = last_seq;
            segment.len += bytes;
            segment.disk_bytes += bytes;
        }
        state.total_bytes += bytes;
        state.next_seq = last_seq + 1;
        self.shared.metrics.bytes.set(state.total_bytes as f64);
        buf.clear();
        positions.clear();
        Ok(())
    }

    /// Undoes a failed append: deletes the segments it created, truncates the one it started
    /// in. Returns `error` (or the fatal error if the undo itself failed).
    fn rollback(&mut self, undo: &Undo, error: JournalError) -> JournalError {
        let (removed, path) = {
            let mut state = self.shared.lock();
            let mut removed = Vec::new();
            let mut freed = 0;
            while state.segments.len() > 1
                && state
                    .segments
                    .back()
                    .is_some_and(|s| s.first_seq > undo.active_first)
            {
                if let Some(segment) = state.segments.pop_back() {
                    freed += segment.disk_bytes;
                    removed.push(segment.path);
                }
            }
            let mut path = self.shared.cfg.dir.clone();
            if let Some(active) = state.segments.back_mut() {
                freed += active.disk_bytes.saturating_sub(undo.disk_bytes);
                active.len = undo.len;
                active.records = undo.records;
                active.last_seq = undo.last_seq;
                active.index.truncate(undo.index_len);
                active.disk_bytes = undo.disk_bytes;
                path = active.path.clone();
            }
            state.total_bytes = state.total_bytes.saturating_sub(freed);
            state.next_seq = undo.next_seq;
            self.shared.metrics.bytes.set(state.total_bytes as f64);
            (removed, path)
        };
        tracing::error!(
            target: TARGET,
            path = %path.display(),
            %error,
            "cannot append to the journal; the partial append was undone"
        );
        let reopened = private_file_options()
            .read(true)
            .append(true)
            .open(&path)
            .and_then(|file| file.set_len(undo.len).map(|()| file));
        match reopened {
            Ok(file) => {
                self.file = file;
                self.path = path;
            }
            Err(e) => return self.shared.poison("truncate", path, e),
        }
        for path in &removed {
            if let Err(e) = remove_file(path) {
                tracing::error!(
                    target: TARGET,
                    path = %path.display(),
                    error = %e,
                    "cannot delete the segment of a failed append"
                );
            }
        }
        if !removed.is_empty() {
            if let Err(fatal) = self.shared.sync_dir() {
                return fatal;
            }
        }
        error
    }
}
