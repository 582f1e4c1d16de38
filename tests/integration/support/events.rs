//! The one sample event builder: a chat-state [`Event`] numbered `i`, for tests that feed sinks
//! directly.

use chatwatch::event::{ChatRecord, Event, EventKind, SCHEMA};
use chatwatch::gws::notification::{ChatState, NotificationType};

/// A `ChatStateChangeMessage` event for chat `chat-{i}` entering `state` from `previous`; its
/// `event_id` is `event-{i:06}` and its `data` carries `i`.
pub fn event(i: usize, state: &str, previous: Option<&str>) -> Event {
    Event {
        schema: SCHEMA.to_owned(),
        event_id: format!("event-{i:06}"),
        fingerprint: "ab".repeat(16),
        received_at: time::OffsetDateTime::UNIX_EPOCH,
        account: "agent1".to_owned(),
        channel: "/v2/me/chats".to_owned(),
        kind: EventKind::ChatState,
        message_type: Some("ChatStateChangeMessage".to_owned()),
        notification_type: Some(NotificationType::StatusChange),
        reference_id: None,
        chat: Some(ChatRecord {
            id: Some(format!("chat-{i}")),
            state: Some(ChatState::from(state)),
            previous_state: previous.map(ChatState::from),
            ..ChatRecord::default()
        }),
        messages: None,
        error_message: None,
        decode_error: None,
        recovered: false,
        disposition: None,
        pending: None,
        action: None,
        data: serde_json::json!({"messageType": "ChatStateChangeMessage", "i": i}).into(),
    }
}
