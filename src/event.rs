//! The event record: the one versioned JSON shape every sink receives.
//!
//! An [`Event`] is built once per Bayeux delivery, after GWS decoding and after the chat tracker
//! has supplied `previous_state`. Its `event_id` is assigned at that moment and travels with the
//! record (into the journal, webhook `webhook-id`, `Nats-Msg-Id`), so every retry and every replay
//! after a restart carries the same id. `fingerprint` is derived from the content alone, so two
//! deliveries of the same notification (a redelivery after a reconnect) share it. The schema is
//! documented, with an example, in README.md; a change that removes or renames a field bumps
//! [`SCHEMA`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::gws::notification::{Capability, ChatState, NotificationType, Participant, ReferenceId};

/// The schema name and version carried in every record's `schema` field.
pub const SCHEMA: &str = "chatwatch.event.v1";

/// What kind of notification an event carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A `ChatStateChangeMessage` with a chat resource.
    ChatState,
    /// A `MessageLogUpdated` transcript update.
    MessageLog,
    /// An `Error` notification.
    Error,
    /// Any other message type, kept raw in `data`.
    Other,
    /// A known message type whose payload could not be decoded; `decode_error` says why and
    /// `data` keeps the payload.
    Undecodable,
}

impl EventKind {
    /// The wire spelling (`chat_state`, `message_log`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ChatState => "chat_state",
            Self::MessageLog => "message_log",
            Self::Error => "error",
            Self::Other => "other",
            Self::Undecodable => "undecodable",
        }
    }
}

/// The typed chat fields of an event.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatRecord {
    /// The interaction id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The state this notification reports (absent on transcript updates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ChatState>,
    /// The state the chat tracker last saw for this chat, `null` when the chat is new to it.
    pub previous_state: Option<ChatState>,
    /// Operations valid now, when the notification carried them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<Capability>>,
    /// Participants, when the notification carried them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<Participant>>,
    /// Attached data, when the notification carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<Map<String, Value>>,
    /// The chat's REST URI as the server wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// One event as every sink receives it (schema [`SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Unique id assigned when the delivery was received (UUIDv7, time-ordered); stable across
    /// sink retries and restarts because it is stored with the event.
    pub event_id: String,
    /// Hex SHA-256 (first 16 bytes) of the account, channel and canonical `data`: equal for
    /// redeliveries of the same notification.
    pub fingerprint: String,
    /// When chatwatch received the delivery (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: time::OffsetDateTime,
    /// The configured account name the event came from.
    pub account: String,
    /// The Bayeux channel the server published on.
    pub channel: String,
    /// What kind of notification this is.
    pub kind: EventKind,
    /// `data.messageType`, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_type: Option<String>,
    /// `data.notificationType`, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_type: Option<NotificationType>,
    /// `data.referenceId`, when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<ReferenceId>,
    /// The typed chat fields (chat state changes, transcript updates, errors naming a chat).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatRecord>,
    /// Transcript entries of a `MessageLogUpdated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Value>>,
    /// The error text of an `Error` notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Why a known message type could not be decoded (kind `undecodable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
    /// The original `data` object, exactly as delivered.
    pub data: Value,
}
