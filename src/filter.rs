//! Which events a sink receives, and which events start a rule: the one filter vocabulary.
//!
//! This module owns [`FilterConfig`], the `filter = { ... }` table every sink accepts and the
//! `when = { ... }` table of a rule (`crate::rules`), and re-exports the Bayeux channel glob
//! matcher [`channel_matches`]. A filter is a conjunction of lists: every
//! non-empty list must match the event (AND across lists) and a list matches when any of its
//! entries does (OR within a list). A filter with every list empty accepts every event. Names
//! are compared exactly (case-sensitive), as the server spells them, so `"LeftChat"` and
//! `"leftchat"` are different states. The journal runner ([`crate::delivery`]) applies a sink's
//! filter to each event it reads at that sink's cursor, before handing the batch to the sink:
//! a sink never sees the events it does not want, and their records still move its cursor on.

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};

/// A filter entry is malformed; `field` is its path inside the filter's table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {reason}")]
pub struct FilterError {
    /// The offending field, e.g. `filter.channels[0]`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FilterError {
    fn new(field: String, reason: impl Into<String>) -> Self {
        FilterError {
            field,
            reason: reason.into(),
        }
    }
}

/// Which events a sink receives; `filter = { entered_states = ["LeftChat"] }` delivers only the
/// moments a chat enters `LeftChat`.
///
/// Every non-empty list must match (AND across lists); within a list any entry may match (OR).
/// All lists empty (the default) means every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterConfig {
    /// Event kinds to accept: `chat_state`, `message_log`, `error`, `other`, `undecodable`.
    /// Empty: any kind.
    pub kinds: Vec<EventKind>,
    /// GWS `messageType` values to accept, e.g. `"ChatStateChangeMessage"`,
    /// `"MessageLogUpdated"`. An event without a message type never matches a non-empty list.
    /// Empty: any message type, including none.
    pub message_types: Vec<String>,
    /// GWS `notificationType` values to accept, e.g. `"StatusChange"`, `"ParticipantsUpdated"`.
    /// An event without a notification type never matches a non-empty list. Empty: any.
    pub notification_types: Vec<String>,
    /// Chat states to accept: the event's `chat.state` must be one of them (`"Invited"`,
    /// `"Chatting"`, `"LeftChat"`, `"Completed"`, `"Revoked"`, `"JoinFailed"`, or any other
    /// value the server sends). This matches every notification about a chat in that state,
    /// including participant and property updates; use `entered_states` for transitions.
    /// Empty: any state, including none.
    pub states: Vec<String>,
    /// Chat states whose *entry* to accept: `chat.state` is one of them and differs from
    /// `chat.previous_state` (a chat the tracker has not seen before, with no previous state,
    /// counts as entering its state). Repeated notifications in the same state do not match.
    /// Empty: no transition required.
    pub entered_states: Vec<String>,
    /// Bayeux channels to accept, exactly or by glob: `/v2/me/*` matches exactly one more
    /// segment (`/v2/me/chats`), `/v2/me/**` one or more (`/v2/me/chats/x`). A glob is only
    /// allowed as the whole last segment. Empty: any channel.
    pub channels: Vec<String>,
}

impl FilterConfig {
    /// Whether every list is empty, i.e. the filter accepts every event.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
            && self.message_types.is_empty()
            && self.notification_types.is_empty()
            && self.states.is_empty()
            && self.entered_states.is_empty()
            && self.channels.is_empty()
    }

    /// Checks the filter without touching anything outside it: rejects empty names and
    /// malformed channel patterns. The error names the offending field, e.g.
    /// `filter.channels[1]`.
    pub fn validate(&self) -> Result<(), FilterError> {
        let names = [
            ("message_types", &self.message_types),
            ("notification_types", &self.notification_types),
            ("states", &self.states),
            ("entered_states", &self.entered_states),
            ("channels", &self.channels),
        ];
        for (field, list) in names {
            for (i, value) in list.iter().enumerate() {
                if value.is_empty() {
                    return Err(FilterError::new(
                        format!("filter.{field}[{i}]"),
                        "must not be empty",
                    ));
                }
            }
        }
        for (i, pattern) in self.channels.iter().enumerate() {
            if let Err(reason) = crate::channel::validate_pattern(pattern) {
                return Err(FilterError::new(
                    format!("filter.channels[{i}]"),
                    reason.to_string(),
                ));
            }
        }
        Ok(())
    }

    /// Whether `event` passes this filter.
    pub fn matches(&self, event: &Event) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&event.kind) {
            return false;
        }
        if !self.message_types.is_empty()
            && !contains(&self.message_types, event.message_type.as_deref())
        {
            return false;
        }
        if !self.notification_types.is_empty()
            && !contains(
                &self.notification_types,
                event.notification_type.as_ref().map(|t| t.as_str()),
            )
        {
            return false;
        }
        let chat = event.chat.as_ref();
        let state = chat.and_then(|c| c.state.as_ref()).map(|s| s.as_str());
        if !self.states.is_empty() && !contains(&self.states, state) {
            return false;
        }
        if !self.entered_states.is_empty() {
            let previous = chat
                .and_then(|c| c.previous_state.as_ref())
                .map(|s| s.as_str());
            let entered = match state {
                Some(s) => previous != Some(s) && contains(&self.entered_states, Some(s)),
                None => false,
            };
            if !entered {
                return false;
            }
        }
        if !self.channels.is_empty()
            && !self
                .channels
                .iter()
                .any(|pattern| channel_matches(pattern, &event.channel))
        {
            return false;
        }
        true
    }
}

/// Whether `value` is present and one of `list` (exact comparison).
fn contains(list: &[String], value: Option<&str>) -> bool {
    value.is_some_and(|v| list.iter().any(|entry| entry == v))
}

/// Whether the Bayeux channel `channel` matches `pattern` (the same glob rules the Bayeux client
/// dispatches with: `*` is exactly one more segment, `**` one or more).
pub use crate::channel::matches as channel_matches;

#[cfg(test)]
mod tests;
