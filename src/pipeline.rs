//! One account's event pipeline: it turns what the session hands down — Bayeux deliveries and GWS
//! state snapshots — into event records, with the chat tracker supplying `previous_state`, and
//! passes them to the sinks.
//!
//! A snapshot (`GET /api/v2/me?subresources=*`, read after every (re)handshake) is reconciled
//! with the tracker: every open chat whose state differs from the last one seen produces a
//! `chat_state` event marked `recovered: true` (so a `LeftChat` that happened while chatwatch was
//! not listening still reaches the disposition webhook), and every tracked chat that GWS no longer
//! lists produces a `chat_vanished` event before it is forgotten. Nothing is dropped silently.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::bayeux::Delivery;
use crate::event::Event;
use crate::gws::notification::ChatState;
use crate::gws::session::ChatSnapshot;
use crate::journal::{Journal, JournalError};
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
                let event = Event::from_owned_delivery(&self.account, d, &mut self.tracker);
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
            let delivery = Delivery {
                channel: RECOVERY_CHANNEL.to_owned(),
                data: json!({
                    "messageType": "ChatStateChangeMessage",
                    "notificationType": "StatusChange",
                    "chat": chat,
                })
                .into(),
                id: None,
                received_at: snapshot.taken_at,
            };
            let mut event = Event::from_owned_delivery(&self.account, delivery, &mut self.tracker);
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

/// Runs the pipeline task: until every sender is gone, turns inputs into events and appends
/// them to the journal (in batches of what is waiting, so one fsync can cover many events).
/// Returns an error when the journal can no longer store events (a failed fsync): the daemon
/// must stop rather than pretend. With `when_full = "drop_newest"` a full journal drops the
/// batch, counted and logged, and the pipeline goes on.
pub async fn run(
    account: String,
    mut rx: mpsc::Receiver<PipelineInput>,
    journal: Journal,
    max_chats: usize,
) -> Result<(), PipelineError> {
    let mut pipeline = Pipeline::new(&account, max_chats);
    // `chatwatch_events_total` handles by label set (a few dozen at most: the labels are bounded).
    let mut counters: HashMap<(&'static str, &'static str, String), metrics::Counter> =
        HashMap::new();
    let mut inputs = Vec::with_capacity(APPEND_BATCH);
    while rx.recv_many(&mut inputs, APPEND_BATCH).await > 0 {
        let mut payloads = Vec::with_capacity(inputs.len());
        for input in inputs.drain(..) {
            for event in pipeline.process(input) {
                let (message_type, state) = metric_labels(&event);
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
                match serde_json::to_vec(&event) {
                    Ok(p) => payloads.push(p),
                    Err(e) => {
                        warn!(account = %account, error = %e, "cannot encode an event; dropped")
                    }
                }
            }
        }
        if payloads.is_empty() {
            continue;
        }
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
    Ok(())
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
    use crate::json::RawJson;

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
}
