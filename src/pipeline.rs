//! One account's event pipeline: it turns what the session hands down — Bayeux deliveries and GWS
//! state snapshots — into event records, with the chat tracker supplying `previous_state`, and
//! passes them to the sinks.
//!
//! A snapshot (`GET /api/v2/me?subresources=*`, read after every (re)handshake) is reconciled
//! with the tracker: every open chat whose state differs from the last one seen produces a
//! `chat_state` event marked `recovered: true` (so a `LeftChat` that happened while chatwatch was
//! not listening still reaches the disposition webhook), and every tracked chat that GWS no longer
//! lists produces a `chat_vanished` event before it is forgotten. Nothing is dropped silently.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::bayeux::Delivery;
use crate::event::Event;
use crate::gws::notification::ChatState;
use crate::gws::session::ChatSnapshot;
use crate::sinks::Fanout;
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
}

impl Pipeline {
    /// A pipeline for `account` whose tracker remembers at most `max_chats` chats.
    pub fn new(account: &str, max_chats: usize) -> Pipeline {
        Pipeline {
            account: account.to_owned(),
            tracker: ChatTracker::new(max_chats),
        }
    }

    /// The events one input produces, in order.
    pub fn process(&mut self, input: PipelineInput) -> Vec<Event> {
        match input {
            PipelineInput::Delivery(d) => vec![Event::from_owned_delivery(
                &self.account,
                d,
                &mut self.tracker,
            )],
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

/// Runs the pipeline task: until every sender is gone, turns inputs into events and hands them
/// to `fanout`.
pub async fn run(
    account: String,
    mut rx: mpsc::Receiver<PipelineInput>,
    fanout: Arc<Fanout>,
    max_chats: usize,
) {
    let mut pipeline = Pipeline::new(&account, max_chats);
    while let Some(input) = rx.recv().await {
        for event in pipeline.process(input) {
            metrics::counter!(
                "chatwatch_events_total",
                "account" => account.clone(),
                "kind" => event.kind.as_str()
            )
            .increment(1);
            fanout.send(Arc::new(event));
        }
    }
}
