//! The writer thread behind the file-backed [`Deliver`](super::deliver::Deliver) sinks (the
//! `file` sink's [`FileSink`](super::file::FileSink) and the [`audit`](super::audit) sink), and
//! the [`FsyncPolicy`] it applies. The file operations it runs (appending without a torn line)
//! live in `src/sinks/append.rs`.
//!
//! One dedicated OS thread owns the output (a `std::fs::File`, never `tokio::fs::File`) and
//! takes commands from the sink's async handle: deliver a batch, reopen, close. A batch is
//! acknowledged according to the fsync policy, so the runner's cursor never runs ahead of what
//! the policy promises:
//! - `always`: after the batch is written, flushed and `sync_data`'d (one fdatasync per batch);
//! - `interval`: after the next sync that covers the batch. The writer syncs once
//!   `fsync_interval` has passed since its previous sync (at once when that was longer ago), or
//!   early once [`MAX_UNSYNCED_BYTES`] are unsynced. With a runner that waits for each batch
//!   before sending the next, a batch therefore waits up to one interval: the policy trades
//!   latency (and, at a fixed batch size, throughput) for fewer fsyncs;
//! - `never`: after the write and flush; synced only on close.
//!
//! Failures:
//! - a failed write (e.g. `ENOSPC`) is retried by the output with capped exponential backoff
//!   ([`Retry`]), after truncating away the partial write; the deliver call stays pending;
//! - a failed sync is fatal for the instance: after a failed fsync the page cache cannot be
//!   trusted ("fsyncgate"), so every pending call gets [`SinkError::Failed`] and the thread stops.
//!   The runner rebuilds the sink and re-delivers from its cursor;
//! - a failed reopen is fatal the same way.
//!
//! Dropping a pending `deliver` future is harmless: a batch whose caller has already gone when
//! the writer takes it is skipped; one already being written is finished and its
//! acknowledgement discarded (the runner delivers it again: at least once). Dropping the handle
//! cancels retries and stops the thread after a best-effort final sync.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::Counter;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::record::Record;

use super::{delivered_counter, failed_counter, SinkError, TARGET};
pub use crate::fs::FsyncPolicy;

/// With `fsync = "interval"`, sync early once this many bytes are unsynced.
pub const MAX_UNSYNCED_BYTES: u64 = 8 << 20;
/// First retry delay after a failed write.
pub(crate) const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(5);

/// The writer thread reads the clock only through this.
// The writer is a dedicated OS thread doing blocking file I/O, not async code: tokio's paused
// test clock is irrelevant to it, so the std clock is the right one.
#[allow(clippy::disallowed_methods)]
pub(crate) fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// Why an output operation did not complete.
#[derive(Debug)]
pub(crate) enum OutputError {
    /// The sink was dropped while a write was being retried: stop quietly.
    Stopped,
    /// The output cannot go on (the instance is dead; the runner rebuilds it).
    Fatal(String),
}

/// What the writer thread writes to. Implemented by the file sink and the audit sink.
pub(crate) trait Output: Send + 'static {
    /// Writes and flushes the lines for `events` (not synced), retrying failed writes through
    /// `retry`. Returns the number of bytes written.
    fn append(&mut self, events: &[Arc<Record>], retry: &Retry<'_>) -> Result<u64, OutputError>;

    /// Flushes and `sync_data`s what was written.
    fn sync(&mut self) -> io::Result<()>;

    /// Closes and reopens the output by path (after an external rename). Everything written
    /// has been synced when this is called.
    fn reopen(&mut self) -> io::Result<()>;

    /// How long until [`Output::housekeeping`] wants to run; `None`: never.
    fn housekeeping_in(&self) -> Option<Duration> {
        None
    }

    /// Periodic work (time-based rotation), run when [`Output::housekeeping_in`] is due.
    fn housekeeping(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    /// Called once after the final sync of a close; may wait for background work.
    fn close(&mut self) {}
}

/// Retries with capped exponential backoff, until success or until the sink is dropped.
pub(crate) struct Retry<'a> {
    runtime: &'a tokio::runtime::Runtime,
    stop: &'a CancellationToken,
    initial: Duration,
    max: Duration,
}

impl Retry<'_> {
    /// Runs `attempt` until it succeeds; after each failure calls `failed(error, attempt
    /// number, delay before the next attempt)` and sleeps. `Err(Stopped)` when the sink was
    /// dropped meanwhile.
    pub(crate) fn run<T>(
        &self,
        mut attempt: impl FnMut() -> io::Result<T>,
        mut failed: impl FnMut(&io::Error, u32, Duration),
    ) -> Result<(T, u32), OutputError> {
        let mut delay = self.initial;
        let mut n: u32 = 1;
        loop {
            match attempt() {
                Ok(value) => return Ok((value, n)),
                Err(error) => {
                    failed(&error, n, delay);
                    if !self.pause(delay) {
                        return Err(OutputError::Stopped);
                    }
                    delay = (delay * 2).min(self.max);
                    n = n.saturating_add(1);
                }
            }
        }
    }

    /// Sleeps `delay` unless the sink is dropped first; false when it was.
    fn pause(&self, delay: Duration) -> bool {
        let stop = self.stop;
        self.runtime.block_on(async {
            tokio::select! {
                biased;
                () = stop.cancelled() => false,
                () = tokio::time::sleep(delay) => true,
            }
        })
    }
}

/// The answer to one command.
type Ack = oneshot::Sender<Result<(), SinkError>>;

/// What the async handle asks of the writer thread.
enum Command {
    Deliver { events: Vec<Arc<Record>>, ack: Ack },
    Reopen { ack: Ack },
    Close { ack: Ack },
}

/// How the writer acknowledges and retries.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The sink's name (thread name, logs, metrics, errors).
    pub(crate) sink: String,
    /// What the file is, for logs (a path).
    pub(crate) what: String,
    pub(crate) fsync: FsyncPolicy,
    pub(crate) fsync_interval: Duration,
    pub(crate) retry_initial: Duration,
    pub(crate) retry_max: Duration,
}

/// The async side of a writer thread.
#[derive(Debug)]
pub(crate) struct Handle {
    sink: String,
    tx: mpsc::Sender<Command>,
    /// Why the writer stopped, once it has.
    fatal: Arc<Mutex<Option<String>>>,
    /// Cancels retries when the handle is dropped.
    _stop: DropGuard,
}

impl Handle {
    /// Starts the writer thread, which calls `open` and reports its outcome before taking
    /// commands; the future resolves with that outcome. The metric handles are registered and
    /// the thread started before this returns (so a test's local recorder sees them).
    pub(crate) fn spawn<O: Output>(
        settings: Settings,
        open: impl FnOnce() -> Result<O, SinkError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<Handle, SinkError>> + Send {
        let (tx, rx) = mpsc::channel(4);
        let (opened_tx, opened_rx) = oneshot::channel();
        let stop = CancellationToken::new();
        let fatal = Arc::new(Mutex::new(None));
        let counters = Counters {
            delivered: delivered_counter(&settings.sink),
            failed_sync: failed_counter(&settings.sink, "sync"),
            failed_reopen: failed_counter(&settings.sink, "reopen"),
        };
        let thread_name: String = format!("sink-{}", settings.sink)
            .chars()
            .filter(|c| *c != '\0')
            .take(15)
            .collect();
        let sink = settings.sink.clone();
        let what = settings.what.clone();
        let thread_stop = stop.clone();
        let thread_fatal = Arc::clone(&fatal);
        let spawned = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = opened_tx.send(Err(SinkError::Failed {
                            sink: settings.sink.clone(),
                            reason: format!("cannot start the writer's timer: {error}"),
                        }));
                        return;
                    }
                };
                let output = match open() {
                    Ok(output) => output,
                    Err(error) => {
                        let _ = opened_tx.send(Err(error));
                        return;
                    }
                };
                let _ = opened_tx.send(Ok(()));
                Writer {
                    s: settings,
                    output,
                    counters,
                    runtime,
                    stop: thread_stop,
                    fatal: thread_fatal,
                    dirty: false,
                    unsynced_bytes: 0,
                    last_sync: now(),
                    pending: Vec::new(),
                }
                .run(rx);
            })
            .map_err(|error| SinkError::Failed {
                sink: sink.clone(),
                reason: format!("cannot start the writer thread for {what}: {error}"),
            });
        async move {
            spawned?;
            match opened_rx.await {
                Ok(Ok(())) => Ok(Handle {
                    sink,
                    tx,
                    fatal,
                    _stop: stop.drop_guard(),
                }),
                Ok(Err(error)) => Err(error),
                Err(_) => Err(SinkError::Failed {
                    sink,
                    reason: format!("the writer for {what} stopped while opening"),
                }),
            }
        }
    }

    /// Sends a command and waits for its answer.
    async fn call(&mut self, command: impl FnOnce(Ack) -> Command) -> Result<(), SinkError> {
        let (ack, answer) = oneshot::channel();
        if self.tx.send(command(ack)).await.is_err() {
            return Err(self.gone());
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(self.gone()),
        }
    }

    /// The error for a writer that has stopped.
    fn gone(&self) -> SinkError {
        let reason = self
            .fatal
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_else(|| "the writer has stopped".to_owned());
        SinkError::Failed {
            sink: self.sink.clone(),
            reason,
        }
    }

    /// Delivers `events`; resolves per the fsync policy (see the module documentation).
    pub(crate) async fn deliver(&mut self, events: &[Arc<Record>]) -> Result<(), SinkError> {
        if events.is_empty() {
            return Ok(());
        }
        let events = events.to_vec();
        self.call(|ack| Command::Deliver { events, ack }).await
    }

    /// Syncs what is written, then closes and reopens the output by path.
    pub(crate) async fn reopen(&mut self) -> Result<(), SinkError> {
        self.call(|ack| Command::Reopen { ack }).await
    }

    /// Syncs everything and stops the writer.
    pub(crate) async fn close(&mut self) -> Result<(), SinkError> {
        self.call(|ack| Command::Close { ack }).await
    }
}

/// The writer's metric handles.
struct Counters {
    delivered: Counter,
    failed_sync: Counter,
    failed_reopen: Counter,
}

/// The writer thread's state.
struct Writer<O: Output> {
    s: Settings,
    output: O,
    counters: Counters,
    runtime: tokio::runtime::Runtime,
    stop: CancellationToken,
    fatal: Arc<Mutex<Option<String>>>,
    /// Whether anything was written since the last sync.
    dirty: bool,
    unsynced_bytes: u64,
    last_sync: std::time::Instant,
    /// `interval`: batches written but not yet covered by a sync, with their event counts.
    pending: Vec<(Ack, u64)>,
}

/// The writer stops.
struct Stop;

impl<O: Output> Writer<O> {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let wait = self.next_wake();
            let next = match wait {
                Some(wait) => self
                    .runtime
                    .block_on(async { tokio::time::timeout(wait, rx.recv()).await }),
                None => Ok(self.runtime.block_on(rx.recv())),
            };
            let step = match next {
                Err(_elapsed) => self.timer(),
                Ok(None) => {
                    self.dropped();
                    return;
                }
                Ok(Some(Command::Deliver { events, ack })) => self.deliver(&events, ack),
                Ok(Some(Command::Reopen { ack })) => self.reopen(ack),
                Ok(Some(Command::Close { ack })) => {
                    self.close(ack);
                    return;
                }
            };
            if step.is_err() {
                return;
            }
        }
    }

    /// How long to wait for the next command before the timer work is due.
    fn next_wake(&self) -> Option<Duration> {
        let sync = (self.s.fsync == FsyncPolicy::Interval && self.dirty).then(|| {
            self.s
                .fsync_interval
                .saturating_sub(self.last_sync.elapsed())
        });
        match (sync, self.output.housekeeping_in()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A wait ran out: sync if the interval has passed, run housekeeping if due.
    fn timer(&mut self) -> Result<(), Stop> {
        if self.s.fsync == FsyncPolicy::Interval
            && self.dirty
            && self.last_sync.elapsed() >= self.s.fsync_interval
        {
            self.sync(None)?;
        }
        if self.output.housekeeping_in() == Some(Duration::ZERO) {
            self.housekeeping()?;
        }
        Ok(())
    }

    fn housekeeping(&mut self) -> Result<(), Stop> {
        match self.output.housekeeping() {
            Ok(()) => Ok(()),
            Err(OutputError::Stopped) => Err(Stop),
            Err(OutputError::Fatal(reason)) => Err(self.fail(None, reason)),
        }
    }

    fn deliver(&mut self, events: &[Arc<Record>], ack: Ack) -> Result<(), Stop> {
        if ack.is_closed() {
            // The caller gave up before we started: it will deliver this batch again.
            return Ok(());
        }
        let retry = Retry {
            runtime: &self.runtime,
            stop: &self.stop,
            initial: self.s.retry_initial,
            max: self.s.retry_max,
        };
        match self.output.append(events, &retry) {
            Ok(bytes) => {
                self.dirty = true;
                self.unsynced_bytes += bytes;
            }
            Err(OutputError::Stopped) => return Err(Stop),
            Err(OutputError::Fatal(reason)) => return Err(self.fail(Some(ack), reason)),
        }
        let count = events.len() as u64;
        match self.s.fsync {
            FsyncPolicy::Always => {
                self.sync(None)?;
                self.acked(ack, count);
            }
            FsyncPolicy::Interval => {
                // Acknowledged once written and flushed: the sync follows within
                // `fsync_interval` (or sooner, past MAX_UNSYNCED_BYTES). Waiting for it would
                // cap a sink at one batch per interval. The price, documented with the policy:
                // a power loss (not a process crash) can lose up to one interval of lines that
                // the journal already counts as delivered; use `always` where that matters.
                self.acked(ack, count);
                if self.last_sync.elapsed() >= self.s.fsync_interval
                    || self.unsynced_bytes >= MAX_UNSYNCED_BYTES
                {
                    self.sync(None)?;
                }
            }
            FsyncPolicy::Never => self.acked(ack, count),
        }
        Ok(())
    }

    /// Acknowledges a batch (the caller may have gone; then nobody hears it).
    fn acked(&self, ack: Ack, count: u64) {
        self.counters.delivered.increment(count);
        let _ = ack.send(Ok(()));
    }

    /// Syncs; on success acknowledges every pending batch. A failure is fatal: `ack` (the
    /// command being served, if any) and every pending batch get the error.
    fn sync(&mut self, ack: Option<Ack>) -> Result<Option<Ack>, Stop> {
        match self.output.sync() {
            Ok(()) => {
                self.dirty = false;
                self.unsynced_bytes = 0;
                self.last_sync = now();
                for (pending, count) in std::mem::take(&mut self.pending) {
                    self.acked(pending, count);
                }
                Ok(ack)
            }
            Err(error) => {
                self.counters.failed_sync.increment(1);
                Err(self.fail(
                    ack,
                    format!(
                        "fsync of {} failed ({error}); written lines may not be on disk, \
                         so this instance stops and must be rebuilt",
                        self.s.what
                    ),
                ))
            }
        }
    }

    /// The instance cannot go on: log, tell every waiting caller, remember why.
    fn fail(&mut self, ack: Option<Ack>, reason: String) -> Stop {
        tracing::error!(target: TARGET, sink = %self.s.sink, "{reason}");
        *self.fatal.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.clone());
        let sink = self.s.sink.clone();
        let error = || SinkError::Failed {
            sink: sink.clone(),
            reason: reason.clone(),
        };
        for (pending, _) in std::mem::take(&mut self.pending) {
            let _ = pending.send(Err(error()));
        }
        if let Some(ack) = ack {
            let _ = ack.send(Err(error()));
        }
        Stop
    }

    fn reopen(&mut self, ack: Ack) -> Result<(), Stop> {
        let ack = if self.dirty {
            match self.sync(Some(ack))? {
                Some(ack) => ack,
                None => return Ok(()),
            }
        } else {
            ack
        };
        match self.output.reopen() {
            Ok(()) => {
                tracing::info!(target: TARGET, sink = %self.s.sink, "reopened {}", self.s.what);
                let _ = ack.send(Ok(()));
                Ok(())
            }
            Err(error) => {
                self.counters.failed_reopen.increment(1);
                Err(self.fail(Some(ack), format!("cannot reopen {}: {error}", self.s.what)))
            }
        }
    }

    fn close(&mut self, ack: Ack) {
        let ack = if self.dirty {
            match self.sync(Some(ack)) {
                Ok(Some(ack)) => ack,
                Ok(None) | Err(Stop) => return,
            }
        } else {
            ack
        };
        self.output.close();
        *self.fatal.lock().unwrap_or_else(PoisonError::into_inner) =
            Some("the sink is closed".to_owned());
        let _ = ack.send(Ok(()));
    }

    /// The handle was dropped without `close`: best-effort final sync.
    fn dropped(&mut self) {
        if self.dirty {
            if let Err(error) = self.output.sync() {
                tracing::error!(
                    target: TARGET,
                    sink = %self.s.sink,
                    %error,
                    "final fsync of {} failed; recent lines may not be on disk",
                    self.s.what
                );
            }
        }
        self.output.close();
    }
}
