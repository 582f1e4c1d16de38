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
//! [`Event::from_delivery`] is the builder: it runs once per delivery, on the hot path, and turns a
//! [`Delivery`] into an [`Event`] by decoding its JSON text ([`decode_raw`]), asking the account's
//! [`ChatTracker`] for the previous state, and filling every field. A payload that cannot be
//! decoded still becomes an event (kind `undecodable`, with the reason and the raw data), so
//! nothing is dropped.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::bayeux::Delivery;
use crate::gws::notification::{
    self, decode_raw, Capability, ChatState, Notification, NotificationType, Participant,
    ReferenceId, CHAT_STATE_CHANGE_MESSAGE, MESSAGE_LOG_UPDATED,
};
use crate::json::RawJson;
use crate::tracker::ChatTracker;

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
    /// The original `data`, as the exact JSON text the server sent (serialised verbatim, not as a
    /// string; see [`RawJson`] for the one normalisation: whitespace between tokens is dropped when
    /// the text has line breaks, so a record is always one line).
    pub data: RawJson,
}

impl Event {
    /// Builds the event for one delivery of `account`: decodes `delivery.data`, asks `tracker` (the
    /// account's) for the chat's previous state and records the new one, and fills every field.
    ///
    /// - `ChatStateChangeMessage` → kind `chat_state`; the tracker observes the new state.
    /// - `MessageLogUpdated` → kind `message_log`, `chat` holds only the id and `previous_state`
    ///   (the last state known); the tracker observes no state.
    /// - `Error` → kind `error`; `chat` is set when the error names a chat (observed with no state).
    /// - Any other message type → kind `other`, data kept raw.
    /// - A payload that cannot be decoded → kind `undecodable` with `decode_error`, and the
    ///   `chatwatch_decode_errors_total` metric is incremented.
    ///
    /// `event_id` is a fresh UUIDv7 ([`new_event_id`]); `fingerprint` is [`fingerprint`] of the
    /// account, the channel and the data's text; `data` is a copy of the delivery's text (see
    /// [`Event::from_owned_delivery`] to move it instead). Decoding reads the text directly
    /// ([`decode_raw`]), with no intermediate `Value`. Never fails and never panics.
    pub fn from_delivery(account: &str, delivery: &Delivery, tracker: &mut ChatTracker) -> Event {
        Self::build(
            account,
            delivery.channel.clone(),
            delivery.received_at,
            delivery.data.clone(),
            tracker,
        )
    }

    /// [`Event::from_delivery`] for a delivery the caller no longer needs: the same event, but
    /// the channel and `data` are moved into it instead of copied.
    pub fn from_owned_delivery(
        account: &str,
        delivery: Delivery,
        tracker: &mut ChatTracker,
    ) -> Event {
        Self::build(
            account,
            delivery.channel,
            delivery.received_at,
            delivery.data,
            tracker,
        )
    }

    /// The builder behind the two public ones.
    fn build(
        account: &str,
        channel: String,
        received_at: time::OffsetDateTime,
        data: RawJson,
        tracker: &mut ChatTracker,
    ) -> Event {
        let mut event = Event {
            schema: SCHEMA.to_owned(),
            event_id: new_event_id(),
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
            data,
        };
        match decode_raw(event.data.as_raw()) {
            Ok(Notification::ChatStateChange(change)) => {
                let chat = change.chat;
                let previous_state = chat
                    .id
                    .as_deref()
                    .and_then(|id| tracker.observe(id, chat.state.as_ref()));
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
                event.chat = log.chat_id.map(|id| id_only_chat(id, tracker));
                event.messages = Some(log.messages);
            }
            Ok(Notification::Error(error)) => {
                event.kind = EventKind::Error;
                event.message_type = error.message_type;
                event.notification_type = Some(NotificationType::Error);
                event.reference_id = error.reference_id;
                event.error_message = error.error_message;
                event.chat = error.chat_id.map(|id| id_only_chat(id, tracker));
            }
            Ok(Notification::Other { .. }) => {
                event.kind = EventKind::Other;
                fill_envelope_leniently(&mut event);
            }
            Err(err) => {
                let reason = err.to_string();
                fill_envelope_leniently(&mut event);
                tracing::warn!(account, channel = %event.channel, error = %reason, "undecodable notification; kept raw as kind `undecodable`");
                metrics::counter!(
                    DECODE_ERRORS_METRIC,
                    "account" => account.to_owned(),
                    "message_type" => event.message_type.clone().unwrap_or_else(|| "none".to_owned()),
                )
                .increment(1);
                event.kind = EventKind::Undecodable;
                event.decode_error = Some(reason);
            }
        }
        event
    }

    /// A `chat_vanished` event: a chat the tracker knew (last seen in `last_state`) that GWS no
    /// longer lists, so it ended while chatwatch was not listening. Marked `recovered`.
    pub fn vanished(
        account: &str,
        channel: &str,
        chat_id: &str,
        last_state: ChatState,
        received_at: time::OffsetDateTime,
    ) -> Event {
        let data = RawJson::from(serde_json::json!({"chat": {"id": chat_id}, "vanished": true}));
        Event {
            schema: SCHEMA.to_owned(),
            event_id: new_event_id(),
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
            data,
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

/// The `chat` of a transcript update or an error: the id and the last state the tracker knows
/// (observed without a new state, which refreshes the chat's recency).
fn id_only_chat(id: String, tracker: &mut ChatTracker) -> ChatRecord {
    let previous_state = tracker.observe(&id, None);
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

/// A new event id: a UUIDv7 string (RFC 9562), time-ordered and strictly increasing within the
/// process.
///
/// Built like `uuid::Uuid::now_v7()` (48-bit Unix milliseconds, a 42-bit counter seeded at random
/// each new millisecond, then random bits) but without its system call per id: `now_v7` asks the
/// OS for fresh random bytes every time (≈ 0.5 µs here, an eighth of building an event), while
/// this draws them from SHA-256 in counter mode keyed once per process from the OS generator
/// (through `now_v7`). If the clock steps back, ids keep increasing from the last millisecond used.
pub fn new_event_id() -> String {
    let millis = u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(0);
    let id = EVENT_IDS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(EventIds::seeded)
        .next(millis);
    // Formatting into a stack buffer skips the `Display` machinery of `to_string`.
    let mut text = uuid::Uuid::encode_buffer();
    id.hyphenated().encode_lower(&mut text).to_owned()
}

/// The process-wide generator behind [`new_event_id`]; created on first use.
static EVENT_IDS: std::sync::Mutex<Option<EventIds>> = std::sync::Mutex::new(None);

/// State of the UUIDv7 generator (see [`new_event_id`]).
struct EventIds {
    /// Key of the SHA-256 counter-mode stream, from the OS random generator.
    key: [u8; 32],
    /// Index of the next stream block.
    block: u64,
    /// Random bytes not yet used.
    pool: [u8; 32],
    /// How many bytes at the front of `pool` are used up.
    used: usize,
    /// The millisecond of the last id.
    last_millis: u64,
    /// The 42-bit counter of the last id.
    counter: u64,
}

impl EventIds {
    /// Bits of the per-millisecond counter (as `uuid`'s `ContextV7`).
    const COUNTER_BITS: u32 = 42;

    fn seeded() -> Self {
        // Each now_v7 carries at least 32 bits fresh from the OS generator (plus its counter,
        // seeded from it too); eight of them, hashed, key the stream.
        let mut seed = Sha256::new();
        for _ in 0..8 {
            seed.update(uuid::Uuid::now_v7().as_bytes());
        }
        Self {
            key: seed.finalize().into(),
            block: 0,
            pool: [0; 32],
            used: 32,
            last_millis: 0,
            counter: 0,
        }
    }

    /// Takes `N` random bytes from the stream.
    fn random<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let mut filled = 0;
        while filled < N {
            if self.used == self.pool.len() {
                let mut block = Sha256::new();
                block.update(self.key);
                block.update(self.block.to_le_bytes());
                self.block = self.block.wrapping_add(1);
                self.pool = block.finalize().into();
                self.used = 0;
            }
            let take = (N - filled).min(self.pool.len() - self.used);
            out[filled..filled + take].copy_from_slice(&self.pool[self.used..self.used + take]);
            self.used += take;
            filled += take;
        }
        out
    }

    /// A counter start for a new millisecond: random, with the top bit clear so that at least
    /// 2^41 ids fit in the millisecond before it overflows.
    fn fresh_counter(&mut self) -> u64 {
        u64::from_le_bytes(self.random::<8>()) >> (64 - Self::COUNTER_BITS + 1)
    }

    /// The next id at `now_millis` (or later, if the clock stepped back or the counter ran out).
    fn next(&mut self, now_millis: u64) -> uuid::Uuid {
        if now_millis > self.last_millis {
            self.last_millis = now_millis;
            self.counter = self.fresh_counter();
        } else {
            self.counter += 1;
            if self.counter >> Self::COUNTER_BITS != 0 {
                self.last_millis = self.last_millis.saturating_add(1);
                self.counter = self.fresh_counter();
            }
        }
        let tail = u32::from_le_bytes(self.random::<4>());
        let millis = u128::from(self.last_millis & 0xFFFF_FFFF_FFFF);
        let counter = u128::from(self.counter);
        let value = (millis << 80)
            | (0x7 << 76)
            | ((counter >> 30) << 64)
            | (0b10 << 62)
            | ((counter & 0x3FFF_FFFF) << 32)
            | u128::from(tail);
        uuid::Uuid::from_u128(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_uuid_v7_and_strictly_increasing() {
        let ids: Vec<uuid::Uuid> = (0..10_000)
            .map(|_| uuid::Uuid::parse_str(&new_event_id()).expect("a UUID"))
            .collect();
        for id in &ids {
            assert_eq!(id.get_version_num(), 7);
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
        let now_millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let (secs, nanos) = ids[0]
            .get_timestamp()
            .expect("v7 has a timestamp")
            .to_unix();
        let id_millis = i128::from(secs) * 1000 + i128::from(nanos / 1_000_000);
        assert!(
            (now_millis - id_millis).abs() < 60_000,
            "the id carries the current time"
        );
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
        let event = Event::from_delivery("a", &raw_delivery(text), &mut ChatTracker::new(4));
        assert_eq!(event.kind, EventKind::ChatState);
        assert_eq!(event.data.get(), text);
        let digest = xxhash_rust::xxh3::xxh3_128(format!("a\0/v2/me/chats\0{text}").as_bytes());
        assert_eq!(event.fingerprint, format!("{digest:032x}"));
        let line = serde_json::to_string(&event).expect("serialise");
        assert!(line.ends_with(&format!(r#""data":{text}}}"#)), "{line}");
        // Other whitespace is other text, hence another fingerprint.
        let compact = text.replace(", ", ",");
        let other = Event::from_delivery("a", &raw_delivery(&compact), &mut ChatTracker::new(4));
        assert_ne!(other.fingerprint, event.fingerprint);
    }

    #[test]
    fn text_a_value_cannot_hold_becomes_an_undecodable_event() {
        let text = r#"{"messageType":"ChatStateChangeMessage","referenceId":4,"chat":{"userData":{"n":1e400}}}"#;
        let event = Event::from_owned_delivery("a", raw_delivery(text), &mut ChatTracker::new(4));
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
    fn event_ids_survive_a_clock_step_back_and_counter_overflow() {
        let mut ids = EventIds::seeded();
        let a = ids.next(1_000_000);
        let b = ids.next(999_000);
        assert!(a < b, "a clock step back does not break the order");
        ids.counter = (1 << EventIds::COUNTER_BITS) - 1;
        let c = ids.next(1_000_000);
        assert!(b < c, "counter overflow moves to the next millisecond");
        assert_eq!(ids.last_millis, 1_000_001);
        let different_streams =
            EventIds::seeded().random::<32>() != EventIds::seeded().random::<32>();
        assert!(different_streams, "each generator is keyed from the OS");
    }
}
