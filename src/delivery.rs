//! Journal-driven delivery: the [`SinkRunner`] builds every configured sink
//! ([`SinkConfig::build`]) and runs one task per sink that reads the journal at that sink's own
//! cursor, applies the sink's filter and hands batches to the sink ([`Deliver`]); the cursor is
//! stored (atomically) only after the sink said the batch is delivered.
//!
//! A sink receives each journal record as a [`Record`]: the event's JSON bytes as the pipeline
//! wrote them, decoded only as far as the sink needs ([`Deliver::needs`]) or its filter (when
//! not empty) asks. A file, audit or JSON log sink without a filter decodes nothing; a record
//! that cannot give what is needed is counted in `chatwatch_sink_unreadable_records_total`,
//! logged and skipped.
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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::journal::Journal;
use crate::sinks::deliver::{Deliver, Needs};
use crate::sinks::{AnySink, FilterConfig, Record, RecordError, SinkConfig, SinkError};

/// Records read from the journal per batch.
const BATCH: usize = 1024;
/// While a sink is catching up, its cursor is stored at most this often (and always once it has
/// caught up, and at shutdown): each store costs two fsyncs, and a cursor that lags only means a
/// few more redeliveries after a crash (delivery is at least once anyway).
const CURSOR_EVERY: Duration = Duration::from_millis(200);
/// How often fully delivered journal segments are deleted.
const GC_EVERY: Duration = Duration::from_secs(5);

/// The running delivery side: one task per sink, reading the journal at that sink's cursor and
/// driving the sink, plus journal garbage collection. (Not to be confused with a Bayeux
/// [`Delivery`](crate::bayeux::Delivery), a message coming in.)
pub struct SinkRunner {
    journal: Journal,
    sinks: BTreeMap<String, SinkTask>,
    reopen: broadcast::Sender<()>,
    drain_for: Duration,
    gc_stop: CancellationToken,
    gc: tokio::task::JoinHandle<()>,
}

/// One sink's task, its configuration and the token that stops it.
struct SinkTask {
    config: SinkConfig,
    stop: CancellationToken,
    kill: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// What [`SinkRunner::apply`] changed, by sink name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SinkChanges {
    /// Sinks started.
    pub added: Vec<String>,
    /// Sinks stopped and their cursors released.
    pub removed: Vec<String>,
    /// Sinks restarted with a new configuration (at their stored cursor).
    pub restarted: Vec<String>,
}

impl SinkChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.restarted.is_empty()
    }
}

impl std::fmt::Debug for SinkRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkRunner")
            .field("sinks", &self.sinks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SinkRunner {
    /// Validates and opens every sink, releases the cursors of sinks no longer configured, and
    /// starts one delivery task per sink. Fails (before starting anything) when a sink cannot be
    /// opened: a bad path or secret is a configuration error the operator must see at once.
    /// On shutdown each sink gets `drain_for` to deliver what the journal holds.
    pub async fn start(
        journal: Journal,
        sinks: Vec<(String, SinkConfig)>,
        drain_for: Duration,
    ) -> Result<SinkRunner, SinkError> {
        check_names(&sinks)?;
        for (name, config) in &sinks {
            config.validate().map_err(|e| e.in_sink(name))?;
        }
        let names: Vec<String> = sinks.iter().map(|(n, _)| n.clone()).collect();
        release_cursors(&journal, &names)?;
        let mut opened = Vec::new();
        for (name, config) in sinks {
            let sink = config.build(&name).await?;
            opened.push((name, config, sink));
        }
        let (reopen, _) = broadcast::channel(4);
        let gc_stop = CancellationToken::new();
        let gc = tokio::spawn(collect_garbage(journal.clone(), gc_stop.clone()));
        let mut runner = SinkRunner {
            journal,
            sinks: BTreeMap::new(),
            reopen,
            drain_for,
            gc_stop,
            gc,
        };
        for (name, config, sink) in opened {
            runner.spawn(name, config, sink);
        }
        Ok(runner)
    }

    fn spawn(&mut self, name: String, config: SinkConfig, sink: AnySink) {
        let stop = CancellationToken::new();
        let kill = CancellationToken::new();
        let cursor = initial_cursor(&self.journal, &name);
        let task = tokio::spawn(run_sink(
            name.clone(),
            config.clone(),
            sink,
            cursor,
            self.journal.clone(),
            Stop {
                stop: stop.clone(),
                kill: kill.clone(),
                drain_for: self.drain_for,
            },
            self.reopen.subscribe(),
        ));
        self.sinks.insert(
            name,
            SinkTask {
                config,
                stop,
                kill,
                task,
            },
        );
    }

    /// The names of the running sinks.
    pub fn sink_names(&self) -> Vec<String> {
        self.sinks.keys().cloned().collect()
    }

    /// Brings the running sinks in line with `sinks` (a configuration reload): new sinks are
    /// opened and started at the journal's head, removed ones stopped (without draining) and
    /// their cursors released, changed ones stopped and started again with the new
    /// configuration at their stored cursor (nothing is skipped). Unchanged sinks are not
    /// touched. Every new or changed configuration is validated first, and new sinks opened,
    /// before anything is stopped: an error leaves everything as it was. A changed sink whose
    /// new configuration cannot be opened keeps running on the old one (the error is returned).
    pub async fn apply(
        &mut self,
        sinks: Vec<(String, SinkConfig)>,
    ) -> Result<SinkChanges, SinkError> {
        let mut changes = SinkChanges::default();
        check_names(&sinks)?;
        let wanted: BTreeMap<String, SinkConfig> = sinks.into_iter().collect();
        for (name, config) in &wanted {
            config.validate().map_err(|e| e.in_sink(name))?;
        }
        let mut fresh = Vec::new();
        for (name, config) in &wanted {
            if !self.sinks.contains_key(name) {
                fresh.push((name.clone(), config.clone(), config.build(name).await?));
            }
        }
        let gone: Vec<String> = self
            .sinks
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(running) = self.sinks.remove(&name) {
                running.stop_now().await;
            }
            changes.removed.push(name);
        }
        release_cursors(&self.journal, &wanted.keys().cloned().collect::<Vec<_>>())?;
        let mut failed = None;
        for (name, config) in &wanted {
            let Some(running) = self.sinks.get(name) else {
                continue;
            };
            if running.config == *config {
                continue;
            }
            let running = self.sinks.remove(name).expect("present");
            let old = running.config.clone();
            running.stop_now().await;
            match config.build(name).await {
                Ok(sink) => {
                    self.spawn(name.clone(), config.clone(), sink);
                    changes.restarted.push(name.clone());
                }
                Err(e) => {
                    error!(sink = %name, error = %e, "the new configuration of the sink cannot be opened; keeping the old one");
                    match old.build(name).await {
                        Ok(sink) => self.spawn(name.clone(), old, sink),
                        Err(e2) => {
                            error!(sink = %name, error = %e2, "the old configuration cannot be opened again either; the sink is stopped (its events stay in the journal)")
                        }
                    }
                    failed.get_or_insert(e);
                }
            }
        }
        for (name, config, sink) in fresh {
            self.spawn(name.clone(), config, sink);
            changes.added.push(name);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(changes),
        }
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
    pub async fn shutdown(self, grace: Duration) {
        let mut tasks = JoinSet::new();
        for (_, running) in self.sinks {
            running.stop.cancel();
            tasks.spawn(async move {
                let _ = running.task.await;
            });
        }
        let hard = Instant::now() + grace;
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { break },
                _ = sleep_until(hard) => {
                    error!("sinks did not stop in time; abandoning them (their events stay in the journal)");
                    tasks.abort_all();
                    break;
                }
            }
        }
        self.gc_stop.cancel();
        self.gc.abort();
    }
}

impl SinkTask {
    /// Stops the sink without draining: what it has not delivered stays in the journal at its
    /// cursor.
    async fn stop_now(self) {
        self.kill.cancel();
        self.stop.cancel();
        // Zero drain time: run_sink stops at the next batch boundary (or abandons the batch in
        // flight, which stays in the journal).
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(30), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

/// Every sink name must be non-empty and unique (a duplicate would start two tasks on one
/// cursor).
fn check_names(sinks: &[(String, SinkConfig)]) -> Result<(), SinkError> {
    for (i, (name, _)) in sinks.iter().enumerate() {
        if name.is_empty() {
            return Err(SinkError::EmptyName);
        }
        if sinks[..i].iter().any(|(other, _)| other == name) {
            return Err(SinkError::DuplicateName(name.clone()));
        }
    }
    Ok(())
}

fn release_cursors(journal: &Journal, names: &[String]) -> Result<(), SinkError> {
    let released = journal.retain_sinks(names).map_err(|e| SinkError::Failed {
        sink: "journal".into(),
        reason: e.to_string(),
    })?;
    for name in released {
        info!(sink = %name, "sink removed from the configuration; its journal cursor is released");
    }
    Ok(())
}

async fn collect_garbage(journal: Journal, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(GC_EVERY) => {}
            _ = stop.cancelled() => return,
        }
        let j = journal.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || j.collect_garbage()).await {
            warn!(error = %e, "journal garbage collection failed");
        }
    }
}

/// How a sink task is stopped: `stop` drains for `drain_for` first, `kill` (cancelled before
/// `stop`) does not drain.
struct Stop {
    stop: CancellationToken,
    kill: CancellationToken,
    drain_for: Duration,
}

/// Where sink `name` starts: its stored cursor, or for a sink new to the journal the head as it
/// is now (stored at once, so what is appended from now on is delivered to it even if its task
/// starts later).
fn initial_cursor(journal: &Journal, name: &str) -> u64 {
    match journal.load_cursor(name) {
        Ok(Some(c)) => c,
        Ok(None) => {
            let head = *journal.head().borrow();
            if let Err(e) = journal.store_cursor(name, head) {
                error!(sink = %name, error = %e, "cannot store the sink's journal cursor");
            }
            head
        }
        Err(e) => {
            error!(sink = %name, error = %e, "cannot read the sink's journal cursor; starting at the head");
            *journal.head().borrow()
        }
    }
}

/// One sink's delivery loop, from `cursor`. See the module documentation.
async fn run_sink(
    name: String,
    config: SinkConfig,
    mut sink: AnySink,
    mut cursor: u64,
    journal: Journal,
    stop: Stop,
    mut reopen: broadcast::Receiver<()>,
) {
    let Stop {
        stop,
        kill,
        drain_for,
    } = stop;
    let drain_for = move || {
        if kill.is_cancelled() {
            Duration::ZERO
        } else {
            drain_for
        }
    };
    let filter: FilterConfig = config.filter().clone();
    let labels = [("sink", name.clone())];
    let mut head_rx = journal.head();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    let mut drain_until: Option<Instant> = None;
    // Set when shutdown abandoned a batch in flight: the sink may be stuck retrying it.
    let mut abandoned = false;
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
                _ = stop.cancelled() => { drain_until = Some(Instant::now() + drain_for()); }
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
        let needs = sink.needs();
        let mut events = Vec::with_capacity(records.len());
        for (seq, payload) in records {
            let record = Record::new(payload);
            match admit(&record, needs, &filter) {
                Ok(true) => events.push(Arc::new(record)),
                Ok(false) => {}
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
                            drain_until = Some(Instant::now() + drain_for());
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
                    match config.build(&name).await {
                        Ok(fresh) => sink = fresh,
                        Err(e) => {
                            error!(sink = %name, error = %e, "cannot reopen the sink; will retry")
                        }
                    }
                    continue;
                }
                None => {
                    warn!(sink = %name, pending = events.len(), "shutdown deadline reached while delivering; the rest stays in the journal");
                    abandoned = true;
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
    if abandoned {
        // `close` would queue behind the abandoned batch (a file sink retrying a full disk
        // never gets to it, and the task would only be aborted at the grace deadline);
        // dropping the sink cancels its retries at once. A file sink's writer that is not stuck
        // still syncs what it wrote when it sees its handle gone. What was not delivered stays
        // in the journal at the cursor.
        drop(sink);
    } else if let Err(e) = sink.close().await {
        error!(sink = %name, error = %e, "closing the sink failed");
    }
}

/// Whether `record` goes to a sink that `needs` this much and has `filter`: decodes the event
/// only when the sink needs it or the filter is not empty, reads just the `event_id` when that
/// is all the sink needs. `Err` when the record cannot give what is needed.
fn admit(record: &Record, needs: Needs, filter: &FilterConfig) -> Result<bool, RecordError> {
    if needs == Needs::Event || !filter.is_empty() {
        let event = record.event().map_err(Clone::clone)?;
        if !filter.matches(event) {
            return Ok(false);
        }
    }
    if needs == Needs::EventId {
        record.event_id().map_err(Clone::clone)?;
    }
    Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(state: &str) -> Vec<u8> {
        let event = crate::event::Event {
            schema: crate::event::SCHEMA.to_owned(),
            event_id: "0190a000-0000-7000-8000-000000000001".to_owned(),
            fingerprint: "00".repeat(16),
            received_at: time::OffsetDateTime::UNIX_EPOCH,
            account: "agent1".to_owned(),
            channel: "/v2/me/chats".to_owned(),
            kind: crate::event::EventKind::ChatState,
            message_type: Some("ChatStateChangeMessage".to_owned()),
            notification_type: None,
            reference_id: None,
            chat: Some(crate::event::ChatRecord {
                id: Some("chat-1".to_owned()),
                state: Some(crate::gws::notification::ChatState::from(state)),
                ..crate::event::ChatRecord::default()
            }),
            messages: None,
            error_message: None,
            decode_error: None,
            recovered: false,
            disposition: None,
            pending: None,
            action: None,
            data: serde_json::json!({"state": state}).into(),
        };
        serde_json::to_vec(&event).unwrap()
    }

    #[test]
    fn a_byte_sink_without_a_filter_decodes_nothing() {
        let record = Record::new(payload("Chatting"));
        assert_eq!(
            admit(&record, Needs::Bytes, &FilterConfig::default()),
            Ok(true)
        );
        assert!(
            !record.is_decoded(),
            "neither the sink nor the filter needs fields"
        );
        assert_eq!(
            admit(&record, Needs::EventId, &FilterConfig::default()),
            Ok(true)
        );
        assert!(
            !record.is_decoded(),
            "the event_id is read without decoding the event"
        );
    }

    #[test]
    fn a_filter_or_a_sink_that_needs_fields_decodes() {
        let left = FilterConfig {
            states: vec!["LeftChat".to_owned()],
            ..FilterConfig::default()
        };
        let record = Record::new(payload("Chatting"));
        assert_eq!(admit(&record, Needs::Bytes, &left), Ok(false));
        assert!(record.is_decoded());
        let record = Record::new(payload("LeftChat"));
        assert_eq!(admit(&record, Needs::Bytes, &left), Ok(true));
        let record = Record::new(payload("Chatting"));
        assert_eq!(
            admit(&record, Needs::Event, &FilterConfig::default()),
            Ok(true)
        );
        assert!(record.is_decoded());
    }

    #[test]
    fn an_unreadable_record_is_refused_only_where_fields_are_needed() {
        let garbage = || Record::new(&b"{\"schema\":\"chatwatch.event.v1\"}"[..]);
        assert!(admit(&garbage(), Needs::Event, &FilterConfig::default()).is_err());
        assert!(admit(&garbage(), Needs::EventId, &FilterConfig::default()).is_err());
        let filter = FilterConfig {
            kinds: vec![crate::event::EventKind::ChatState],
            ..FilterConfig::default()
        };
        assert!(admit(&garbage(), Needs::Bytes, &filter).is_err());
        // A byte sink without a filter writes what the journal holds, as it is.
        assert_eq!(
            admit(&garbage(), Needs::Bytes, &FilterConfig::default()),
            Ok(true)
        );
    }
}
