//! The event record: the one versioned JSON shape every sink receives.
//!
//! An [`Event`] is built once per Bayeux delivery, after GWS decoding and after the chat tracker
//! has supplied `previous_state`. Its `event_id` is assigned at that moment and travels with the
//! record (into the journal, webhook `webhook-id`, `Nats-Msg-Id`), so every retry and every replay
//! after a restart carries the same id. `fingerprint` is derived from the content alone (the
//! account, the channel and the text of `data`), so two deliveries of the same notification (a
//! redelivery after a reconnect, byte-identical in practice) share it. The schema is
//! documented, with an example, in README.md; a change that removes or renames a field bumps
//! [`SCHEMA`].
//!
//! [`Event::new`] is the constructor, and it is pure: given the id, what was received (account,
//! channel, time, the `data` text), what GWS decoding made of it and the previous state the
//! tracker knew, it fills every field. The steps before it (decode, then the tracker) are the
//! pipeline's ([`crate::pipeline::into_event`]). A payload that could not be decoded still becomes
//! an event (kind `undecodable`, with the reason and the raw data), so nothing is dropped. The id
//! generator lives in [`id`].

mod id;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use self::id::{derived_event_id, new_event_id};

/// The channel of the events chatwatch derives itself (kinds `disposition_set`,
/// `disposition_overdue`, `action`): no Bayeux channel carried them.
pub const DERIVED_CHANNEL: &str = "/chatwatch/workflow";
use crate::gws::notification::{
    self, Capability, ChatState, DecodeError, Notification, NotificationType, Participant,
    ReferenceId, CHAT_STATE_CHANGE_MESSAGE, MESSAGE_LOG_UPDATED,
};
use crate::gws::operations::ChatOperation;
use crate::json::RawJson;

/// The metric counting deliveries whose `data` could not be decoded (labels `account`,
/// `message_type`).
pub use crate::metrics::DECODE_ERRORS as DECODE_ERRORS_METRIC;

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
    /// A chat the tracker knew that GWS no longer lists (found by state recovery); `chat` holds
    /// its id and last known state as `previous_state`.
    ChatVanished,
    /// Derived by chatwatch: a chat's disposition code (the account's `disposition_key` in its
    /// user data) changed; `disposition` holds the old and the new code.
    DispositionSet,
    /// Derived by chatwatch: a chat stayed pending disposition (in `LeftChat`) longer than the
    /// account's `overdue_after`; `pending` says since when. Once per chat.
    DispositionOverdue,
    /// Derived by chatwatch: one attempt of a rule's chat operation and its outcome (`action`).
    Action,
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
            Self::ChatVanished => "chat_vanished",
            Self::DispositionSet => "disposition_set",
            Self::DispositionOverdue => "disposition_overdue",
            Self::Action => "action",
        }
    }

    /// Whether chatwatch derived this kind itself (workflow and rule events) rather than
    /// receiving it from GWS.
    pub fn is_derived(self) -> bool {
        matches!(
            self,
            Self::DispositionSet | Self::DispositionOverdue | Self::Action
        )
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

/// A change of a chat's disposition code (kind `disposition_set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispositionChange {
    /// The user-data key the code is kept under (the account's `disposition_key`).
    pub key: String,
    /// The code before, `null` when there was none.
    pub old: Option<String>,
    /// The code now, `null` when the key was removed.
    pub new: Option<String>,
}

/// How long a chat has been pending disposition (kind `disposition_overdue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// When the chat entered `LeftChat` (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub since: time::OffsetDateTime,
    /// The account's `overdue_after`, in whole seconds.
    pub overdue_after_seconds: u64,
    /// The disposition code the chat has, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<String>,
}

/// One attempt of a rule's chat operation (kind `action`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The rule's `name`.
    pub rule: String,
    /// The GWS `operationName` (`SetDisposition`, `Complete`, ...).
    pub operation: String,
    /// The position of the operation in the rule's `do` list, from 0.
    pub step: usize,
    /// The attempt, from 1 (attempts after the first follow an HTTP 503).
    pub attempt: u32,
    /// `accepted` (GWS answered `statusCode` 0), `rejected` (a non-zero `statusCode`, see
    /// `gws_status`), `unavailable` (HTTP 503; retried unless `final`), `failed` (no usable
    /// answer), `invalid` (refused before sending; nothing sent) or `dry_run` (nothing sent).
    pub outcome: String,
    /// Whether this is the operation's last attempt.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Whether the rule is a dry run (nothing was sent).
    pub dry_run: bool,
    /// GWS's `statusCode`, when it answered with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gws_status: Option<i64>,
    /// The HTTP status of the answer, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// GWS's `referenceId` of an accepted operation, to match the notification it causes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_id: Option<ReferenceId>,
    /// What went wrong, for any outcome but `accepted` and `dry_run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One event as every sink receives it (schema [`SCHEMA`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Unique id assigned when the delivery was received (UUIDv7, time-ordered); stable across
    /// sink retries and restarts because it is stored with the event.
    pub event_id: String,
    /// Hex XXH3-128 of the account, the channel and the text of `data` as received (see
    /// [`fingerprint`]): equal for redeliveries of the same notification, which carry
    /// byte-identical text; not canonical (other key order or whitespace gives another value), and
    /// not cryptographic.
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
    /// True when the event was not delivered by the server but reconstructed from GWS state
    /// (`GET /api/v2/me?subresources=*`) after chatwatch was not listening for a while.
    #[serde(default)]
    pub recovered: bool,
    /// The disposition change of a `disposition_set` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disposition: Option<DispositionChange>,
    /// The pending state of a `disposition_overdue` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingRecord>,
    /// The attempt of an `action` event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionRecord>,
    /// The original `data`, as the exact JSON text the server sent (serialised verbatim, not as a
    /// string; see [`RawJson`] for the one normalisation: whitespace between tokens is dropped when
    /// the text has line breaks, so a record is always one line).
    pub data: RawJson,
}

impl Event {
    /// The record of one delivery of `account`, from what was received (`channel`,
    /// `received_at`, the `data` text), what GWS decoding made of that text, and the state the
    /// tracker knew for the chat before it (`previous_state`). Pure: no tracker, no clock, no
    /// metric.
    ///
    /// - `ChatStateChangeMessage` → kind `chat_state`.
    /// - `MessageLogUpdated` → kind `message_log`, `chat` holds only the id and `previous_state`
    ///   (the last state known).
    /// - `Error` → kind `error`; `chat` is set when the error names a chat.
    /// - Any other message type → kind `other`, data kept raw.
    /// - A payload that could not be decoded → kind `undecodable` with `decode_error`.
    ///
    /// `fingerprint` is [`fingerprint`] of the account, the channel and the data's text;
    /// `message_type`, `notification_type` and `reference_id` of `other` and `undecodable`
    /// events are read leniently from `data` when they can be. Never panics.
    pub fn new(
        event_id: String,
        account: &str,
        channel: String,
        received_at: time::OffsetDateTime,
        data: RawJson,
        decoded: Result<Notification, DecodeError>,
        previous_state: Option<ChatState>,
    ) -> Event {
        let mut event = Event {
            schema: SCHEMA.to_owned(),
            event_id,
            fingerprint: fingerprint(account, &channel, &data),
            received_at,
            account: account.to_owned(),
            channel,
            kind: EventKind::Other,
            message_type: None,
            notification_type: None,
            reference_id: None,
            chat: None,
            messages: None,
            error_message: None,
            decode_error: None,
            recovered: false,
            disposition: None,
            pending: None,
            action: None,
            data,
        };
        match decoded {
            Ok(Notification::ChatStateChange(change)) => {
                let chat = change.chat;
                event.kind = EventKind::ChatState;
                event.message_type = Some(CHAT_STATE_CHANGE_MESSAGE.to_owned());
                event.notification_type = change.notification_type;
                event.reference_id = change.reference_id;
                event.error_message = change.error_message;
                event.chat = Some(ChatRecord {
                    id: chat.id,
                    state: chat.state,
                    previous_state,
                    capabilities: chat.capabilities,
                    participants: chat.participants,
                    user_data: chat.user_data,
                    uri: chat.uri,
                });
            }
            Ok(Notification::MessageLogUpdated(log)) => {
                event.kind = EventKind::MessageLog;
                event.message_type = Some(MESSAGE_LOG_UPDATED.to_owned());
                event.notification_type = log.notification_type;
                event.reference_id = log.reference_id;
                event.chat = log.chat_id.map(|id| id_only_chat(id, previous_state));
                event.messages = Some(log.messages);
            }
            Ok(Notification::Error(error)) => {
                event.kind = EventKind::Error;
                event.message_type = error.message_type;
                event.notification_type = Some(NotificationType::Error);
                event.reference_id = error.reference_id;
                event.error_message = error.error_message;
                event.chat = error.chat_id.map(|id| id_only_chat(id, previous_state));
            }
            Ok(Notification::Other { .. }) => {
                event.kind = EventKind::Other;
                fill_envelope_leniently(&mut event);
            }
            Err(err) => {
                fill_envelope_leniently(&mut event);
                event.kind = EventKind::Undecodable;
                event.decode_error = Some(err.to_string());
            }
        }
        event
    }

    /// A `chat_vanished` event: a chat the tracker knew (last seen in `last_state`) that GWS no
    /// longer lists, so it ended while chatwatch was not listening. Marked `recovered`. Pure,
    /// like [`Event::new`].
    pub fn vanished(
        event_id: String,
        account: &str,
        channel: &str,
        chat_id: &str,
        last_state: ChatState,
        received_at: time::OffsetDateTime,
    ) -> Event {
        let data = RawJson::from(serde_json::json!({"chat": {"id": chat_id}, "vanished": true}));
        Event {
            schema: SCHEMA.to_owned(),
            event_id,
            fingerprint: fingerprint(account, channel, &data),
            received_at,
            account: account.to_owned(),
            channel: channel.to_owned(),
            kind: EventKind::ChatVanished,
            message_type: None,
            notification_type: None,
            reference_id: None,
            chat: Some(ChatRecord {
                id: Some(chat_id.to_owned()),
                previous_state: Some(last_state),
                ..ChatRecord::default()
            }),
            messages: None,
            error_message: None,
            decode_error: None,
            recovered: true,
            disposition: None,
            pending: None,
            action: None,
            data,
        }
    }

    /// An event chatwatch derived itself (kinds `disposition_set`, `disposition_overdue`,
    /// `action`) about chat `chat_id` of `account`, whose state chatwatch knows to be `state`.
    /// `data` is the derived payload as chatwatch wrote it (`{"derived": kind, "chat": {"id"},
    /// ...}`) and `event_id` is given by the caller (derived ids are deterministic, see
    /// [`derived_event_id`]). The typed part (`disposition`, `pending` or `action`) is set by
    /// the caller. Pure.
    pub fn derived(
        event_id: String,
        account: &str,
        kind: EventKind,
        chat_id: &str,
        state: Option<ChatState>,
        received_at: time::OffsetDateTime,
        data: Value,
    ) -> Event {
        let data = RawJson::from(data);
        Event {
            schema: SCHEMA.to_owned(),
            event_id,
            fingerprint: fingerprint(account, DERIVED_CHANNEL, &data),
            received_at,
            account: account.to_owned(),
            channel: DERIVED_CHANNEL.to_owned(),
            kind,
            message_type: None,
            notification_type: None,
            reference_id: None,
            chat: Some(ChatRecord {
                id: Some(chat_id.to_owned()),
                state: state.clone(),
                previous_state: state,
                ..ChatRecord::default()
            }),
            messages: None,
            error_message: None,
            decode_error: None,
            recovered: false,
            disposition: None,
            pending: None,
            action: None,
            data,
        }
    }

    /// The chat id this event is about, if any.
    pub fn chat_id(&self) -> Option<&str> {
        self.chat.as_ref()?.id.as_deref()
    }

    /// Whether this event reports the outcome of `op` on `chat_id`, sent in the request that
    /// GWS answered with `reference_id`: an `Error`, or the kind of notification the operation
    /// produces (a transcript update for messages and typing, a chat state change for everything
    /// else, so the goodbye text of a `Leave` is not mistaken for its `LeftChat`). Matched by
    /// `referenceId` when GWS returned one (an `Error` notification may name no chat),
    /// otherwise by chat id. Used by `chatwatch chat --wait` and the operations API's `wait`.
    pub fn answers(
        &self,
        chat_id: &str,
        op: &ChatOperation,
        reference_id: Option<&ReferenceId>,
    ) -> bool {
        let expected = match op {
            ChatOperation::SendMessage { .. }
            | ChatOperation::SendStartTypingNotification
            | ChatOperation::SendStopTypingNotification => EventKind::MessageLog,
            _ => EventKind::ChatState,
        };
        if self.kind != expected && self.kind != EventKind::Error {
            return false;
        }
        let same_chat = self.chat_id() == Some(chat_id);
        match reference_id {
            Some(reference) => {
                self.reference_id.as_ref() == Some(reference)
                    && (same_chat || self.kind == EventKind::Error)
            }
            None => same_chat,
        }
    }

    /// The chat state this event reports, if any.
    pub fn chat_state(&self) -> Option<&ChatState> {
        self.chat.as_ref()?.state.as_ref()
    }

    /// The state the tracker last knew for this event's chat, if any.
    pub fn previous_state(&self) -> Option<&ChatState> {
        self.chat.as_ref()?.previous_state.as_ref()
    }
}

/// The content fingerprint of a delivery: lowercase hex of the 128-bit XXH3 hash (XXH3-128,
/// seed 0, canonical big-endian bytes, as `xxhsum -H2` prints it) of `account`, a 0 byte,
/// `channel`, a 0 byte, and the text of `data` as received.
///
/// The text is hashed as it is, not re-serialised: a redelivery of a notification (the same
/// server sending the same payload again after a reconnect) carries byte-identical text and gets
/// the same fingerprint, but the same content written with other whitespace, key order or escapes
/// does not. Data built from a `Value` (recovered and vanished chats, tests) is compact JSON with
/// sorted keys, so equal values give equal fingerprints there.
///
/// XXH3 is not a cryptographic hash: the fingerprint tells redeliveries apart from new
/// notifications (accidental collisions are negligible at 128 bits), but it authenticates nothing,
/// and someone who controls part of a payload could craft a collision on purpose. It replaced
/// SHA-256 because SHA-256 was about a sixth of the per-event cost (`benches/decode.rs`); XXH3 is
/// about a seventh of SHA-256's.
pub fn fingerprint(account: &str, channel: &str, data: &RawJson) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(account.as_bytes());
    hasher.update(&[0u8]);
    hasher.update(channel.as_bytes());
    hasher.update(&[0u8]);
    hasher.update(data.get().as_bytes());
    let digest = hasher.digest128().to_be_bytes();
    // Hand-rolled lowercase hex: `hex::encode` goes through a char iterator, measurably slower.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(32);
    for byte in &digest {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    text
}

/// The `chat` of a transcript update or an error: the id and the last state the tracker knows.
fn id_only_chat(id: String, previous_state: Option<ChatState>) -> ChatRecord {
    ChatRecord {
        id: Some(id),
        previous_state,
        ..ChatRecord::default()
    }
}

/// For `other` and `undecodable` events: `messageType`, `notificationType` and `referenceId` when
/// they can be read, ignored otherwise (the raw data is kept anyway). Parses `data` into a `Value`:
/// these kinds are off the typed fast path.
fn fill_envelope_leniently(event: &mut Event) {
    let Ok(data) = event.data.to_value() else {
        return;
    };
    let Some(root) = notification::notification_root(&data) else {
        return;
    };
    event.message_type = root
        .get("messageType")
        .and_then(Value::as_str)
        .map(str::to_owned);
    event.notification_type = root
        .get("notificationType")
        .and_then(Value::as_str)
        .map(NotificationType::from);
    event.reference_id = match root.get("referenceId") {
        Some(Value::Number(n)) => n.as_i64().map(ReferenceId::Number),
        Some(Value::String(s)) => Some(ReferenceId::Text(s.clone())),
        _ => None,
    };
}
