//! One account's event pipeline: it turns what the session hands down — Bayeux deliveries and GWS
//! state snapshots — into event records, with the chat tracker supplying `previous_state`, and
//! appends them to the journal, from which the sinks read.
//!
//! Each delivery goes through three steps, in this order, and [`into_event`] shows them: GWS
//! decoding of the `data` text ([`decode_raw`]), the tracker ([`ChatTracker::observe_notification`]
//! gives the previous state and records the new one), and the pure constructor of the record
//! ([`Event::new`], with a fresh [`new_event_id`]). A payload that cannot be decoded is counted in
//! `chatwatch_decode_errors_total` and logged here, and still becomes a record.
//!
//! A snapshot (`GET /api/v2/me?subresources=*`, read after every (re)handshake) is reconciled
//! with the tracker: every open chat whose state differs from the last one seen produces a
//! `chat_state` event marked `recovered: true` (so a `LeftChat` that happened while chatwatch was
//! not listening still reaches the disposition webhook), and every tracked chat that GWS no longer
//! lists produces a `chat_vanished` event before it is forgotten. Nothing is dropped silently.
//!
//! After the tracker, every event goes to the account's workflow ([`Workflow`], sans I/O): the
//! events it derives (`disposition_set`, `disposition_overdue`, `action`) are appended in the same
//! batch, its timers wake the pipeline ([`Workflow::next_deadline`]), the operations its rules
//! start are handed to the account's actor, whose reports come back as [`PipelineInput::Actor`].
//! After each append the workflow's state is saved (after the journal, so a restart never
//! re-fires what the journal already holds) and the appended events are broadcast to the
//! operations API's waiters.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn};

use crate::bayeux::Delivery;
use crate::event::{new_event_id, Event, EventKind, DECODE_ERRORS_METRIC};
use crate::gws::notification::{self, decode_raw, ChatState, DecodeError, Notification};
use crate::gws::session::ChatSnapshot;
use crate::journal::{Journal, JournalError};
use crate::json::RawJson;
use crate::rules::actor::ActorReport;
use crate::rules::{ActionRequest, Workflow, WorkflowSettings};
use crate::tracker::ChatTracker;

/// The channel recovered chat events are reported on: the one their notifications use.
pub const RECOVERY_CHANNEL: &str = "/v2/me/chats";

/// What a session hands to its pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum PipelineInput {
    /// A notification delivered by the Bayeux server.
    Delivery(Delivery),
    /// The open chats GWS reported after a (re)handshake.
    Snapshot(ChatSnapshot),
    /// What the account's actor did with a rule operation.
    Actor(ActorReport),
}

impl From<ActorReport> for PipelineInput {
    fn from(r: ActorReport) -> Self {
        PipelineInput::Actor(r)
    }
}

impl From<Delivery> for PipelineInput {
    fn from(d: Delivery) -> Self {
        PipelineInput::Delivery(d)
    }
}

impl From<ChatSnapshot> for PipelineInput {
    fn from(s: ChatSnapshot) -> Self {
        PipelineInput::Snapshot(s)
    }
}

/// The record of one delivery of `account`: decode, then the tracker, then the record (see the
/// module documentation). The delivery's channel and `data` move into the record. Never fails
/// and never panics.
pub fn into_event(account: &str, delivery: Delivery, tracker: &mut ChatTracker) -> Event {
    let decoded = decode_raw(delivery.data.as_raw());
    record(
        account,
        delivery.channel,
        delivery.received_at,
        delivery.data,
        decoded,
        tracker,
    )
}

/// [`into_event`] for a delivery the caller keeps: the same record, with the channel and `data`
/// copied into it.
pub fn to_event(account: &str, delivery: &Delivery, tracker: &mut ChatTracker) -> Event {
    let decoded = decode_raw(delivery.data.as_raw());
    record(
        account,
        delivery.channel.clone(),
        delivery.received_at,
        delivery.data.clone(),
        decoded,
        tracker,
    )
}

/// The steps after decoding: the tracker gives the previous state, the record is built, and an
/// undecodable payload is counted and logged.
fn record(
    account: &str,
    channel: String,
    received_at: time::OffsetDateTime,
    data: RawJson,
    decoded: Result<Notification, DecodeError>,
    tracker: &mut ChatTracker,
) -> Event {
    let previous_state = match &decoded {
        Ok(notification) => tracker.observe_notification(notification),
        Err(_) => None,
    };
    let event = Event::new(
        new_event_id(),
        account,
        channel,
        received_at,
        data,
        decoded,
        previous_state,
    );
    if event.kind == EventKind::Undecodable {
        let reason = event.decode_error.as_deref().unwrap_or_default();
        warn!(account, channel = %event.channel, error = %reason, "undecodable notification; kept raw as kind `undecodable`");
        metrics::counter!(
            DECODE_ERRORS_METRIC,
            "account" => account.to_owned(),
            "message_type" => event.message_type.clone().unwrap_or_else(|| "none".to_owned()),
        )
        .increment(1);
    }
    event
}

/// Decoding, tracking and record building for one account (no I/O).
#[derive(Debug)]
pub struct Pipeline {
    account: String,
    tracker: ChatTracker,
    /// When each chat's latest notification was received, for the last minute or so: a chat
    /// heard of after a snapshot was requested is newer than the snapshot, which must neither
    /// report it as changed nor as vanished.
    heard: HashMap<String, time::OffsetDateTime>,
    /// Inserts into `heard` since it was last pruned.
    heard_inserts: usize,
}

/// Inserts into `heard` between two prunings (amortises the pruning pass).
const HEARD_PRUNE_EVERY: usize = 1024;
/// Hard bound on `heard`: beyond it (a storm of distinct chats) it is cleared, which only
/// reopens the snapshot race for those chats.
const HEARD_MAX: usize = 200_000;
/// How long a notification can matter to a snapshot (request to reconcile takes seconds).
const HEARD_FOR: time::Duration = time::Duration::minutes(2);

impl Pipeline {
    /// A pipeline for `account` whose tracker remembers at most `max_chats` chats.
    pub fn new(account: &str, max_chats: usize) -> Pipeline {
        Pipeline {
            account: account.to_owned(),
            tracker: ChatTracker::new(max_chats),
            heard: HashMap::new(),
            heard_inserts: 0,
        }
    }

    /// The events one input produces, in order.
    pub fn process(&mut self, input: PipelineInput) -> Vec<Event> {
        match input {
            PipelineInput::Delivery(d) => {
                let received_at = d.received_at;
                let event = into_event(&self.account, d, &mut self.tracker);
                if let Some(id) = event.chat.as_ref().and_then(|c| c.id.as_ref()) {
                    self.heard_inserts += 1;
                    if self.heard_inserts >= HEARD_PRUNE_EVERY {
                        self.heard_inserts = 0;
                        let horizon = received_at - HEARD_FOR;
                        self.heard.retain(|_, at| *at > horizon);
                        if self.heard.len() > HEARD_MAX {
                            self.heard.clear();
                        }
                    }
                    self.heard.insert(id.clone(), received_at);
                }
                vec![event]
            }
            PipelineInput::Snapshot(s) => self.reconcile(s),
            // The workflow's input; the run loop hands it there.
            PipelineInput::Actor(_) => Vec::new(),
        }
    }

    /// Reconciles a GWS snapshot with the tracker (see the module documentation).
    pub fn reconcile(&mut self, snapshot: ChatSnapshot) -> Vec<Event> {
        let mut events = Vec::new();
        let mut listed = HashSet::new();
        for chat in snapshot.chats {
            let Some(id) = chat_id(&chat) else {
                warn!(account = %self.account, "GWS listed a chat without an id; ignored");
                continue;
            };
            listed.insert(id.clone());
            if self.heard_since(&id, snapshot.requested_at) {
                continue;
            }
            let state = chat
                .get("state")
                .and_then(Value::as_str)
                .map(ChatState::from);
            if state.is_some() && self.tracker.peek(&id) == state.as_ref() {
                continue;
            }
            // The record of a recovered chat carries the notification GWS would have sent; it is
            // decoded from the value already held, not from text.
            let data = json!({
                "messageType": "ChatStateChangeMessage",
                "notificationType": "StatusChange",
                "chat": chat,
            });
            let decoded = notification::decode(&data);
            let mut event = record(
                &self.account,
                RECOVERY_CHANNEL.to_owned(),
                snapshot.taken_at,
                RawJson::from(data),
                decoded,
                &mut self.tracker,
            );
            event.recovered = true;
            info!(
                account = %self.account,
                chat_id = %id,
                state = ?event.chat_state().map(ChatState::as_str),
                previous_state = ?event.previous_state().map(ChatState::as_str),
                "chat changed while not listening; reported as recovered"
            );
            events.push(event);
        }
        for (id, last) in self.tracker.chats_not_in(&listed) {
            if self.heard_since(&id, snapshot.requested_at) {
                // Offered (or changed) after the snapshot was asked for: not vanished.
                continue;
            }
            self.tracker.forget(&id);
            warn!(account = %self.account, chat_id = %id, last_state = last.as_str(), "chat vanished while not listening");
            events.push(Event::vanished(
                new_event_id(),
                &self.account,
                RECOVERY_CHANNEL,
                &id,
                last,
                snapshot.taken_at,
            ));
        }
        if !events.is_empty() {
            metrics::counter!("chatwatch_recovered_events_total", "account" => self.account.clone())
                .increment(events.len() as u64);
        }
        events
    }
}

impl Pipeline {
    /// Whether a notification about `chat` was received at or after `at`.
    fn heard_since(&self, chat: &str, at: time::OffsetDateTime) -> bool {
        self.heard.get(chat).is_some_and(|t| *t >= at)
    }
}

/// The chat id of a chat resource: `id`, else the last segment of `uri`.
fn chat_id(chat: &Value) -> Option<String> {
    if let Some(id) = chat
        .get("id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        return Some(id.to_owned());
    }
    chat.get("uri")
        .and_then(Value::as_str)
        .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Inputs processed per journal append (group commit).
const APPEND_BATCH: usize = 256;

/// Why a pipeline stopped.
#[derive(Debug, thiserror::Error)]
#[error("account {account}: the journal refused events: {source}")]
pub struct PipelineError {
    /// The account.
    pub account: String,
    /// The journal's error.
    #[source]
    pub source: JournalError,
}

/// What ties a pipeline to its account's workflow ([`crate::rules`]): the shared workflow
/// state, where it is persisted, where due operations go, and who listens to the events.
#[derive(Debug, Clone)]
pub struct WorkflowLink {
    /// The account's workflow state (the operations API reads it too).
    pub workflow: Arc<Mutex<Workflow>>,
    /// The state file, rewritten after every batch that changed the durable state; `None`
    /// keeps it in memory only.
    pub state_file: Option<PathBuf>,
    /// The account's actor, which performs the rules' operations; `None` when no rule applies.
    pub actions: Option<mpsc::UnboundedSender<ActionRequest>>,
    /// Every appended event, for the operations API's `wait` (sent only while someone listens).
    pub events: broadcast::Sender<Arc<Event>>,
}

impl WorkflowLink {
    /// A link to a fresh in-memory workflow with no rules (tests, benchmarks).
    pub fn plain(account: &str, max_chats: usize) -> WorkflowLink {
        WorkflowLink {
            workflow: Arc::new(Mutex::new(Workflow::new(WorkflowSettings::plain(
                account, max_chats,
            )))),
            state_file: None,
            actions: None,
            events: broadcast::channel(1).0,
        }
    }
}

/// How often the pending-disposition gauges are refreshed while a chat is pending.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// Runs the pipeline task: until every sender is gone, turns inputs into events, lets the
/// account's workflow derive its events from them and say which rule operations are due, and
/// appends them all to the journal (in batches of what is waiting, so one fsync can cover many
/// events). After each append: the workflow's state file is rewritten if it changed, the due
/// operations go to the actor, and the events to whoever listens. The task also wakes when a
/// workflow timer is due (`overdue_after`, a rule's `after`).
///
/// Returns an error when the journal can no longer store events (a failed fsync): the daemon
/// must stop rather than pretend. With `when_full = "drop_newest"` a full journal drops the
/// batch, counted and logged, and the pipeline goes on.
pub async fn run(
    account: String,
    mut rx: mpsc::Receiver<PipelineInput>,
    journal: Journal,
    max_chats: usize,
    link: WorkflowLink,
) -> Result<(), PipelineError> {
    let mut pipeline = Pipeline::new(&account, max_chats);
    // `chatwatch_events_total` handles by label set (a few dozen at most: the labels are bounded).
    let mut counters: HashMap<(&'static str, &'static str, String), metrics::Counter> =
        HashMap::new();
    let pending_gauge =
        metrics::gauge!(crate::metrics::PENDING_DISPOSITION, "account" => account.clone());
    let oldest_gauge =
        metrics::gauge!(crate::metrics::PENDING_OLDEST_SECONDS, "account" => account.clone());
    let mut inputs = Vec::with_capacity(APPEND_BATCH);
    let mut wake: Option<Duration> = wake_after(&link, &pending_gauge, &oldest_gauge);
    loop {
        let received = match wake {
            None => rx.recv_many(&mut inputs, APPEND_BATCH).await,
            Some(after) => tokio::select! {
                n = rx.recv_many(&mut inputs, APPEND_BATCH) => n,
                _ = tokio::time::sleep(after) => usize::MAX,
            },
        };
        if received == 0 {
            break;
        }
        let now = time::OffsetDateTime::now_utc();
        let mut events = Vec::with_capacity(inputs.len());
        let (requests, saved) = {
            let mut workflow = link.workflow.lock().unwrap_or_else(|e| e.into_inner());
            for input in inputs.drain(..) {
                match input {
                    PipelineInput::Actor(ActorReport::Attempt(report)) => {
                        events.extend(workflow.reported(report));
                    }
                    PipelineInput::Actor(ActorReport::NotPerformed(request)) => {
                        workflow.not_performed(&request, now);
                    }
                    input => {
                        for event in pipeline.process(input) {
                            let derived = workflow.observe(&event);
                            events.push(event);
                            events.extend(derived);
                        }
                    }
                }
            }
            let due = workflow.poll(now);
            events.extend(due.events);
            let saved = workflow.take_dirty().then(|| workflow.saved());
            (due.requests, saved)
        };
        let mut payloads = Vec::with_capacity(events.len());
        for event in &events {
            let (message_type, state) = metric_labels(event);
            let key = (event.kind.as_str(), message_type, state);
            match counters.get(&key) {
                Some(c) => c.increment(1),
                None => {
                    let c = metrics::counter!(
                        "chatwatch_events_total",
                        "account" => account.clone(),
                        "kind" => key.0,
                        "message_type" => key.1,
                        "state" => key.2.clone(),
                    );
                    c.increment(1);
                    counters.insert(key, c);
                }
            }
            match serde_json::to_vec(event) {
                Ok(p) => payloads.push(p),
                Err(e) => {
                    warn!(account = %account, error = %e, "cannot encode an event; dropped")
                }
            }
        }
        if !payloads.is_empty() {
            let n = payloads.len();
            match journal.append(payloads).await {
                Ok(_) => {}
                Err(JournalError::Full { .. }) => {
                    metrics::counter!("chatwatch_dropped_events_total", "account" => account.clone(), "cause" => "journal_full")
                        .increment(n as u64);
                    tracing::error!(account = %account, dropped = n, "journal full (when_full = \"drop_newest\"): events dropped");
                }
                Err(source) => {
                    tracing::error!(account = %account, error = %source, "the journal cannot store events; stopping");
                    return Err(PipelineError { account, source });
                }
            }
        }
        if let (Some(saved), Some(file)) = (saved, &link.state_file) {
            if let Err(e) = crate::rules::state::save(file, &saved) {
                metrics::counter!(crate::metrics::WORKFLOW_STATE_ERRORS, "account" => account.clone(), "step" => "write").increment(1);
                tracing::error!(account = %account, error = %e, "cannot persist the workflow state; derived events may repeat after a restart");
            }
        }
        for request in requests {
            match &link.actions {
                Some(actions) if actions.send(request.clone()).is_ok() => {}
                _ => {
                    let mut workflow = link.workflow.lock().unwrap_or_else(|e| e.into_inner());
                    workflow.not_performed(&request, now);
                }
            }
        }
        if link.events.receiver_count() > 0 {
            for event in events {
                let _ = link.events.send(Arc::new(event));
            }
        }
        wake = wake_after(&link, &pending_gauge, &oldest_gauge);
    }
    Ok(())
}

/// Refreshes the pending-disposition gauges and says how long the pipeline may sleep before a
/// workflow timer is due or the gauges need refreshing (`None`: until the next input).
fn wake_after(
    link: &WorkflowLink,
    pending_gauge: &metrics::Gauge,
    oldest_gauge: &metrics::Gauge,
) -> Option<Duration> {
    let workflow = link.workflow.lock().unwrap_or_else(|e| e.into_inner());
    let now = time::OffsetDateTime::now_utc();
    let (count, oldest) = workflow.pending();
    pending_gauge.set(count as f64);
    oldest_gauge.set(oldest.map_or(0.0, |since| (now - since).as_seconds_f64().max(0.0)));
    let timer = workflow.next_deadline().map(|at| {
        let left = at - now;
        if left.is_negative() {
            Duration::ZERO
        } else {
            // Rounded up to whole milliseconds, so a timer is never polled just before it is due.
            Duration::from_millis(u64::try_from(left.whole_milliseconds()).unwrap_or(u64::MAX) + 1)
        }
    });
    let gauges = (count > 0).then_some(GAUGE_EVERY);
    match (timer, gauges) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `message_type` and `state` labels of `chatwatch_events_total`. Values the model does not
/// know become `other`, so a server sending odd values cannot grow the metric without bound.
fn metric_labels(event: &Event) -> (&'static str, String) {
    const KNOWN_TYPES: [&str; 3] = [
        crate::gws::notification::CHAT_STATE_CHANGE_MESSAGE,
        crate::gws::notification::MESSAGE_LOG_UPDATED,
        "Error",
    ];
    let message_type = match event.message_type.as_deref() {
        None => "none",
        Some(t) => KNOWN_TYPES
            .iter()
            .find(|k| **k == t)
            .copied()
            .unwrap_or("other"),
    };
    let state = match event.chat.as_ref().and_then(|c| c.state.as_ref()) {
        None => "none".to_owned(),
        Some(s) if s.is_other() => "other".to_owned(),
        Some(s) => s.as_str().to_owned(),
    };
    (message_type, state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(chat: &str, state: &str, at: time::OffsetDateTime) -> PipelineInput {
        PipelineInput::Delivery(Delivery {
            channel: "/v2/me/chats".to_owned(),
            data: RawJson::from_value(&json!({
                "messageType": "ChatStateChangeMessage",
                "notificationType": "StatusChange",
                "chat": {"id": chat, "state": state}
            })),
            id: None,
            received_at: at,
        })
    }

    fn snapshot(chats: &[(&str, &str)], requested_at: time::OffsetDateTime) -> PipelineInput {
        PipelineInput::Snapshot(ChatSnapshot {
            chats: chats
                .iter()
                .map(|(id, state)| json!({"id": id, "state": state}))
                .collect(),
            taken_at: requested_at + time::Duration::milliseconds(50),
            requested_at,
        })
    }

    #[test]
    fn a_snapshot_does_not_contradict_notifications_received_after_it_was_asked_for() {
        let t0 = time::OffsetDateTime::now_utc();
        let ms = time::Duration::milliseconds;
        let mut p = Pipeline::new("main", 100);
        // Known before: "old" (Chatting). Then the snapshot is requested at t0; meanwhile the
        // notification of a new chat arrives (t0 + 10 ms), and the snapshot, read before that
        // chat existed, lists only "old".
        p.process(delivery("old", "Chatting", t0 - ms(1000)));
        let fresh = p.process(delivery("new", "Invited", t0 + ms(10)));
        assert_eq!(fresh.len(), 1);
        let events = p.process(snapshot(&[("old", "Chatting")], t0));
        assert!(
            events.is_empty(),
            "nothing vanished, nothing changed: {events:?}"
        );
        // The next notification of the new chat still knows its previous state.
        let next = p.process(delivery("new", "Chatting", t0 + ms(100)));
        assert_eq!(
            next[0].previous_state().map(|s| s.as_str()),
            Some("Invited")
        );

        // A chat the snapshot lists while its notification is already in: no recovered copy.
        let t1 = t0 + ms(1000);
        p.process(delivery("third", "Invited", t1 + ms(5)));
        let events = p.process(snapshot(
            &[
                ("old", "Chatting"),
                ("new", "Chatting"),
                ("third", "Invited"),
            ],
            t1,
        ));
        assert!(events.is_empty(), "{events:?}");

        // Heard of only before the snapshot was asked for, and missing from it: vanished.
        let t2 = t1 + ms(1000);
        let events = p.process(snapshot(&[("new", "Chatting"), ("third", "Invited")], t2));
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].kind, crate::event::EventKind::ChatVanished);
    }

    fn raw_delivery(text: &str) -> Delivery {
        Delivery {
            channel: "/v2/me/chats".to_owned(),
            data: RawJson::from(
                serde_json::value::RawValue::from_string(text.to_owned()).expect("valid JSON"),
            ),
            id: None,
            received_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn received_text_is_kept_and_fingerprinted_as_sent() {
        let text =
            r#"{"messageType":"ChatStateChangeMessage", "chat":{"id":"C1","state":"Chatting"}}"#;
        let event = to_event("a", &raw_delivery(text), &mut ChatTracker::new(4));
        assert_eq!(event.kind, EventKind::ChatState);
        assert_eq!(event.data.get(), text);
        let digest = xxhash_rust::xxh3::xxh3_128(format!("a\0/v2/me/chats\0{text}").as_bytes());
        assert_eq!(event.fingerprint, format!("{digest:032x}"));
        let line = serde_json::to_string(&event).expect("serialise");
        assert!(line.ends_with(&format!(r#""data":{text}}}"#)), "{line}");
        // Other whitespace is other text, hence another fingerprint.
        let compact = text.replace(", ", ",");
        let other = to_event("a", &raw_delivery(&compact), &mut ChatTracker::new(4));
        assert_ne!(other.fingerprint, event.fingerprint);
    }

    #[test]
    fn text_a_value_cannot_hold_becomes_an_undecodable_event() {
        let text = r#"{"messageType":"ChatStateChangeMessage","referenceId":4,"chat":{"userData":{"n":1e400}}}"#;
        let event = into_event("a", raw_delivery(text), &mut ChatTracker::new(4));
        assert_eq!(event.kind, EventKind::Undecodable);
        assert!(
            event
                .decode_error
                .as_deref()
                .is_some_and(|e| e.contains("number out of range")),
            "{:?}",
            event.decode_error
        );
        assert_eq!(
            event.message_type, None,
            "the envelope cannot be read either"
        );
        assert_eq!(event.data.get(), text);
    }

    #[test]
    fn a_recovered_chat_is_the_record_its_notification_would_give() {
        let t0 = time::OffsetDateTime::now_utc();
        let chat = json!({
            "id": "c1",
            "state": "Chatting",
            "capabilities": ["Complete", "Leave"],
            "participants": [{"type": "Agent", "nickname": "A", "participantId": "p1"}],
            "userData": {"Subject": "billing", "n": 1},
            "uri": "http://gws/api/v2/chats/c1",
        });
        let mut p = Pipeline::new("main", 100);
        p.process(delivery("c1", "Invited", t0 - time::Duration::seconds(10)));
        let events = p.reconcile(ChatSnapshot {
            chats: vec![chat.clone()],
            taken_at: t0,
            requested_at: t0,
        });
        assert_eq!(events.len(), 1, "{events:?}");
        let recovered = &events[0];
        assert!(recovered.recovered);
        assert_eq!(recovered.kind, EventKind::ChatState);
        assert_eq!(recovered.channel, RECOVERY_CHANNEL);
        assert_eq!(recovered.previous_state(), Some(&ChatState::Invited));

        // The same notification delivered as text, to a tracker in the same state.
        let text = RawJson::from(json!({
            "messageType": "ChatStateChangeMessage",
            "notificationType": "StatusChange",
            "chat": chat,
        }));
        let mut tracker = ChatTracker::new(100);
        tracker.observe("c1", Some(&ChatState::Invited));
        let mut delivered = into_event(
            "main",
            Delivery {
                channel: RECOVERY_CHANNEL.to_owned(),
                data: text,
                id: None,
                received_at: t0,
            },
            &mut tracker,
        );
        delivered.event_id.clone_from(&recovered.event_id);
        delivered.recovered = true;
        assert_eq!(&delivered, recovered);
    }
}
