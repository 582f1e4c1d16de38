//! Journal-driven delivery: one task per sink reads the journal at that sink's own cursor and
//! hands batches to the sink ([`Deliver`]); the cursor is stored (atomically) only after the sink
//! said the batch is delivered.
//!
//! This is what makes a slow or dead sink harmless to the others and a crash harmless to all:
//! a webhook that is down for an hour only holds back its own cursor, while the audit file keeps
//! up; after a SIGKILL every sink resumes at its stored cursor, and receives again at most the
//! batch it was working on (at least once; the stable `event_id` lets receivers deduplicate).
//!
//! A sink added to the configuration starts at the journal's head (it does not replay history);
//! a sink removed from it releases its cursor, so it no longer pins journal segments. If the
//! journal had to drop records a sink had not read yet (`when_full = "drop_oldest"`), the sink
//! counts them in `chatwatch_sink_lost_events_total` and says so at error level.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::bayeux::backoff::Backoff;
use crate::event::Event;
use crate::journal::Journal;
use crate::sinks::deliver::Deliver;
use crate::sinks::{FilterConfig, SinkConfig, SinkError};

/// Records read from the journal per batch.
const BATCH: usize = 1024;
/// While a sink is catching up, its cursor is stored at most this often (and always once it has
/// caught up, and at shutdown): each store costs two fsyncs, and a cursor that lags only means a
/// few more redeliveries after a crash (delivery is at least once anyway).
const CURSOR_EVERY: Duration = Duration::from_millis(200);
/// How often fully delivered journal segments are deleted.
const GC_EVERY: Duration = Duration::from_secs(5);

/// A running sink of any type.
// One value per configured sink for the life of the process: boxing the larger variants would
// save nothing worth an indirection.
#[allow(clippy::large_enum_variant)]
pub enum AnySink {
    /// `type = "log"`.
    Log(crate::sinks::log::LogSink),
    /// `type = "file"`.
    File(crate::sinks::file::FileSink),
    /// `type = "webhook"`.
    Webhook(crate::sinks::webhook::WebhookSink),
    /// `type = "audit"`.
    Audit(crate::sinks::audit::AuditSink),
}

impl AnySink {
    /// Opens the sink `name` described by `config`.
    pub async fn open(name: &str, config: &SinkConfig) -> Result<AnySink, SinkError> {
        Ok(match config {
            SinkConfig::Log(c) => AnySink::Log(c.open(name)?),
            SinkConfig::File(c) => AnySink::File(c.open(name).await?),
            SinkConfig::Webhook(c) => AnySink::Webhook(c.build(name).await?),
            SinkConfig::Audit(c) => AnySink::Audit(c.open(name).await?),
        })
    }

    async fn deliver(&mut self, events: &[Arc<Event>]) -> Result<(), SinkError> {
        match self {
            AnySink::Log(s) => s.deliver(events).await,
            AnySink::File(s) => s.deliver(events).await,
            AnySink::Webhook(s) => s.deliver(events).await,
            AnySink::Audit(s) => s.deliver(events).await,
        }
    }

    async fn reopen(&mut self) -> Result<(), SinkError> {
        match self {
            AnySink::Log(s) => s.reopen().await,
            AnySink::File(s) => s.reopen().await,
            AnySink::Webhook(s) => s.reopen().await,
            AnySink::Audit(s) => s.reopen().await,
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        match self {
            AnySink::Log(s) => s.close().await,
            AnySink::File(s) => s.close().await,
            AnySink::Webhook(s) => s.close().await,
            AnySink::Audit(s) => s.close().await,
        }
    }
}

/// The running delivery side: one task per sink, plus journal garbage collection.
pub struct Delivery {
    tasks: JoinSet<()>,
    stop: CancellationToken,
    reopen: broadcast::Sender<()>,
    gc: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("sinks", &self.tasks.len())
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Validates and opens every sink, releases the cursors of sinks no longer configured, and
    /// starts one delivery task per sink. Fails (before starting anything) when a sink cannot be
    /// opened: a bad path or secret is a configuration error the operator must see at once.
    /// On shutdown each sink gets `drain_for` to deliver what the journal holds.
    pub async fn start(
        journal: Journal,
        sinks: Vec<(String, SinkConfig)>,
        drain_for: Duration,
    ) -> Result<Delivery, SinkError> {
        let names: Vec<String> = sinks.iter().map(|(n, _)| n.clone()).collect();
        let released = journal
            .retain_sinks(&names)
            .map_err(|e| SinkError::Failed {
                sink: "journal".into(),
                reason: e.to_string(),
            })?;
        for name in released {
            info!(sink = %name, "sink removed from the configuration; its journal cursor is released");
        }
        let mut opened = Vec::new();
        for (name, config) in sinks {
            config.validate().map_err(|e| e.in_sink(&name))?;
            let sink = AnySink::open(&name, &config).await?;
            opened.push((name, config, sink));
        }
        let stop = CancellationToken::new();
        let (reopen, _) = broadcast::channel(4);
        let mut tasks = JoinSet::new();
        for (name, config, sink) in opened {
            tasks.spawn(run_sink(
                name,
                config,
                sink,
                journal.clone(),
                stop.clone(),
                reopen.subscribe(),
                drain_for,
            ));
        }
        let gc_journal = journal.clone();
        let gc_stop = stop.clone();
        let gc = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(GC_EVERY) => {}
                    _ = gc_stop.cancelled() => return,
                }
                let j = gc_journal.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || j.collect_garbage()).await {
                    warn!(error = %e, "journal garbage collection failed");
                }
            }
        });
        Ok(Delivery {
            tasks,
            stop,
            reopen,
            gc,
        })
    }

    /// Asks every sink to reopen its files (SIGHUP).
    pub fn reopen(&self) {
        let _ = self.reopen.send(());
    }

    /// A handle that asks every sink to reopen its files when sent to.
    pub fn reopen_handle(&self) -> broadcast::Sender<()> {
        self.reopen.clone()
    }

    /// Stops delivery: each sink first delivers what the journal holds (for at most the
    /// `drain_for` given at start), then closes (flush, sync). What is not delivered by then stays
    /// in the journal for the next start. `grace` bounds the whole stop, closing included.
    pub async fn shutdown(mut self, grace: Duration) {
        self.stop.cancel();
        let hard = Instant::now() + grace;
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { break },
                _ = sleep_until(hard) => {
                    error!("sinks did not stop in time; abandoning them (their events stay in the journal)");
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        self.gc.abort();
    }
}

/// One sink's delivery loop. See the module documentation.
async fn run_sink(
    name: String,
    config: SinkConfig,
    mut sink: AnySink,
    journal: Journal,
    stop: CancellationToken,
    mut reopen: broadcast::Receiver<()>,
    drain_for: Duration,
) {
    let filter: FilterConfig = config.filter().clone();
    let labels = [("sink", name.clone())];
    let mut head_rx = journal.head();
    let mut cursor = match journal.load_cursor(&name) {
        Ok(Some(c)) => c,
        Ok(None) => {
            let head = *head_rx.borrow();
            if let Err(e) = journal.store_cursor(&name, head) {
                error!(sink = %name, error = %e, "cannot store the sink's journal cursor");
            }
            head
        }
        Err(e) => {
            error!(sink = %name, error = %e, "cannot read the sink's journal cursor; starting at the head");
            *head_rx.borrow()
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut drain_until: Option<Instant> = None;
    let mut stored = cursor;
    let mut last_store = Instant::now();
    loop {
        let head = *head_rx.borrow_and_update();
        metrics::gauge!("chatwatch_sink_backlog_events", &labels)
            .set(head.saturating_sub(cursor) as f64);
        if head <= cursor {
            if drain_until.is_some() {
                break;
            }
            tokio::select! {
                changed = head_rx.changed() => if changed.is_err() { break },
                _ = stop.cancelled() => { drain_until = Some(Instant::now() + drain_for); }
                r = reopen.recv() => if r.is_ok() { reopen_sink(&name, &mut sink).await },
            }
            continue;
        }
        let j = journal.clone();
        let after = cursor;
        let read = tokio::task::spawn_blocking(move || j.read(after, BATCH)).await;
        let records = match read {
            Ok(Ok(records)) => records,
            Ok(Err(e)) => {
                error!(sink = %name, error = %e, "cannot read the journal; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(e) => {
                error!(sink = %name, error = %e, "journal read task failed; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        if records.is_empty() {
            // The head moved past the cursor but nothing after it is readable: the records were
            // dropped (journal full); continue at the first one kept.
            let first = journal.first_seq();
            if first > cursor + 1 {
                count_lost(&name, first - cursor - 1);
                cursor = first - 1;
            } else {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            continue;
        }
        if let Some((first, _)) = records.first() {
            if *first > cursor + 1 {
                count_lost(&name, first - cursor - 1);
            }
        }
        let last = records.last().map_or(cursor, |(seq, _)| *seq);
        let mut events = Vec::with_capacity(records.len());
        for (seq, payload) in records {
            match serde_json::from_slice::<Event>(&payload) {
                Ok(event) if filter.matches(&event) => events.push(Arc::new(event)),
                Ok(_) => {}
                Err(e) => {
                    metrics::counter!("chatwatch_sink_unreadable_records_total", &labels)
                        .increment(1);
                    error!(sink = %name, seq, error = %e, "a journal record is not an event this version can read; skipped");
                }
            }
        }
        if !events.is_empty() {
            let outcome = {
                let deliver = sink.deliver(&events);
                tokio::pin!(deliver);
                loop {
                    tokio::select! {
                        r = &mut deliver => break Some(r),
                        _ = stop.cancelled(), if drain_until.is_none() => {
                            drain_until = Some(Instant::now() + drain_for);
                        }
                        _ = sleep_until(drain_until.unwrap_or_else(Instant::now)), if drain_until.is_some() => break None,
                    }
                }
            };
            match outcome {
                Some(Ok(())) => backoff.reset(),
                Some(Err(e)) => {
                    let delay = backoff.next_delay();
                    error!(sink = %name, error = %e, retry_in = ?delay, "sink failed; reopening it and delivering again from its cursor");
                    metrics::counter!("chatwatch_sink_restarts_total", &labels).increment(1);
                    let _ = sink.close().await;
                    tokio::time::sleep(delay).await;
                    match AnySink::open(&name, &config).await {
                        Ok(fresh) => sink = fresh,
                        Err(e) => {
                            error!(sink = %name, error = %e, "cannot reopen the sink; will retry")
                        }
                    }
                    continue;
                }
                None => {
                    warn!(sink = %name, pending = events.len(), "shutdown deadline reached while delivering; the rest stays in the journal");
                    break;
                }
            }
        }
        cursor = last;
        let caught_up = cursor >= *head_rx.borrow();
        if caught_up || last_store.elapsed() >= CURSOR_EVERY {
            store_cursor(&journal, &name, cursor).await;
            stored = cursor;
            last_store = Instant::now();
        }
        if drain_until.is_some_and(|t| Instant::now() >= t) {
            warn!(sink = %name, "shutdown deadline reached; the rest stays in the journal");
            break;
        }
    }
    if cursor != stored {
        store_cursor(&journal, &name, cursor).await;
    }
    if let Err(e) = sink.close().await {
        error!(sink = %name, error = %e, "closing the sink failed");
    }
}

/// Stores `seq` as `name`'s cursor (atomically, off the async threads); a failure is logged: the
/// previous cursor stays valid, so at worst a batch is delivered again.
async fn store_cursor(journal: &Journal, name: &str, seq: u64) {
    let j = journal.clone();
    let sink_name = name.to_owned();
    match tokio::task::spawn_blocking(move || j.store_cursor(&sink_name, seq)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => error!(sink = %name, error = %e, "cannot store the sink's journal cursor"),
        Err(e) => error!(sink = %name, error = %e, "cursor store task failed"),
    }
}

async fn reopen_sink(name: &str, sink: &mut AnySink) {
    match sink.reopen().await {
        Ok(()) => info!(sink = %name, "reopened"),
        Err(e) => error!(sink = %name, error = %e, "reopen failed"),
    }
}

fn count_lost(name: &str, n: u64) {
    metrics::counter!("chatwatch_sink_lost_events_total", "sink" => name.to_owned(), "cause" => "journal_full")
        .increment(n);
    error!(sink = %name, lost = n, "the journal dropped records this sink had not delivered yet (journal full)");
}
