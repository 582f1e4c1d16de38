//! The GWS notification model against the fixtures in `tests/fixtures/gws/`: every sample of
//! `reference/gws-api.md` §3.6, §3.7 and §5, re-typed as valid JSON, plus unknown values and
//! malformed payloads, each turned into an [`Event`] by [`pipeline::to_event`].

use std::path::PathBuf;

use chatwatch::bayeux::Delivery;
use chatwatch::event::{Event, EventKind, DECODE_ERRORS_METRIC, SCHEMA};
use chatwatch::gws::notification::{
    Capability, ChatState, NotificationType, ParticipantType, ReferenceId,
};
use chatwatch::pipeline;
use chatwatch::tracker::ChatTracker;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::{json, Value};
use time::macros::datetime;

const CHATS: &str = "/v2/me/chats";
const ACCOUNT: &str = "agent-1";

/// Every fixture this test expects to find (and every file it finds must be listed here).
const FIXTURES: &[&str] = &[
    "accept_chatting",
    "call_state",
    "channel_state_v2",
    "completed",
    "device_state",
    "error_cancel_consult",
    "error_chat_state_change",
    "error_user_data",
    "invited",
    "leave_conference_completed",
    "left_chat",
    "malformed_capabilities_object",
    "malformed_chat_string",
    "malformed_data_array",
    "malformed_messages_object",
    "malformed_participant_string",
    "malformed_user_data_string",
    "message_log_updated",
    "message_log_updated_chat_uri_only",
    "participants_updated",
    "properties_updated_wrapped",
    "unknown_capability",
    "unknown_notification_type",
    "unknown_state",
];

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gws")
}

fn fixture(name: &str) -> Value {
    let path = fixture_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn delivery(channel: &str, data: Value) -> Delivery {
    Delivery {
        channel: channel.to_owned(),
        data: data.into(),
        id: Some("42".to_owned()),
        received_at: datetime!(2024-05-01 12:00:00.123456789 UTC),
    }
}

fn event_on(channel: &str, data: Value, tracker: &mut ChatTracker) -> Event {
    pipeline::to_event(ACCOUNT, &delivery(channel, data), tracker)
}

/// The event of a fixture on `/v2/me/chats`, with a fresh tracker.
fn event(name: &str) -> Event {
    event_on(CHATS, fixture(name), &mut ChatTracker::new(100))
}

fn caps(names: &[&str]) -> Vec<Capability> {
    names.iter().map(|n| Capability::from(*n)).collect()
}

/// Rewrites the chat id and uri of a chat state fixture (wrapped or not) to `id`.
fn with_chat_id(mut data: Value, id: &str) -> Value {
    let root = if data.get("messageType").is_some() {
        &mut data
    } else {
        &mut data["data"]
    };
    if root.get("chat").is_some() {
        root["chat"]["id"] = json!(id);
        root["chat"]["uri"] = json!(format!("http://localhost:8080/api/v2/chats/{id}"));
    }
    if root.get("chatPath").is_some() {
        root["chatPath"] = json!(format!("/chats/{id}"));
        root["chatUri"] = json!(format!("http://localhost:8080/api/v2/chats/{id}"));
    }
    data
}

fn common_checks(event: &Event, data: &Value) {
    assert_eq!(event.schema, SCHEMA);
    assert_eq!(event.account, ACCOUNT);
    assert_eq!(
        event.data.to_value().expect("valid JSON"),
        *data,
        "data is kept verbatim"
    );
    assert_eq!(event.fingerprint.len(), 32);
    assert!(event
        .fingerprint
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let id = uuid::Uuid::parse_str(&event.event_id).expect("event_id is a UUID");
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(
        event.received_at,
        datetime!(2024-05-01 12:00:00.123456789 UTC)
    );
}

#[test]
fn every_fixture_is_listed_valid_json_and_builds_an_event() {
    let mut found: Vec<String> = std::fs::read_dir(fixture_dir())
        .expect("fixture dir")
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    found.sort();
    let expected: Vec<String> = FIXTURES.iter().map(|n| format!("{n}.json")).collect();
    assert_eq!(found, expected);
    for name in FIXTURES {
        let data = fixture(name);
        let event = event_on(CHATS, data.clone(), &mut ChatTracker::new(10));
        common_checks(&event, &data);
        assert_eq!(event.channel, CHATS);
        assert_eq!(
            event.kind == EventKind::Undecodable,
            name.starts_with("malformed_"),
            "{name}: {:?}",
            event.decode_error
        );
    }
}

#[test]
fn invited() {
    let event = event("invited");
    assert_eq!(event.kind, EventKind::ChatState);
    assert_eq!(
        event.message_type.as_deref(),
        Some("ChatStateChangeMessage")
    );
    assert_eq!(
        event.notification_type,
        Some(NotificationType::StatusChange)
    );
    assert_eq!(event.reference_id, None);
    assert_eq!(event.error_message, None);
    assert_eq!(event.messages, None);
    assert_eq!(event.decode_error, None);
    let chat = event.chat.as_ref().expect("chat");
    assert_eq!(chat.id.as_deref(), Some("000G1aBT734P0015"));
    assert_eq!(event.chat_state(), Some(&ChatState::Invited));
    assert_eq!(event.previous_state(), None);
    assert_eq!(chat.capabilities, Some(caps(&["Accept", "Reject"])));
    assert_eq!(
        chat.capabilities.as_ref().map(|c| c[0].clone()),
        Some(Capability::Accept)
    );
    assert_eq!(chat.participants, Some(vec![]));
    assert_eq!(
        chat.user_data.as_ref().and_then(|u| u.get("Subject")),
        Some(&json!("Test"))
    );
    assert_eq!(chat.user_data.as_ref().map(|u| u.len()), Some(1));
    assert_eq!(
        chat.uri.as_deref(),
        Some("http://gws:8080/api/v2/chats/000G1aBT734P0015")
    );
}

#[test]
fn accept_chatting() {
    let event = event("accept_chatting");
    assert_eq!(event.kind, EventKind::ChatState);
    assert_eq!(event.reference_id, Some(ReferenceId::Number(17)));
    assert_eq!(
        event.notification_type,
        Some(NotificationType::StatusChange)
    );
    let chat = event.chat.as_ref().expect("chat");
    assert_eq!(chat.id.as_deref(), Some("0000Na9B26EF002X"));
    assert_eq!(chat.state, Some(ChatState::Chatting));
    assert_eq!(
        chat.capabilities,
        Some(vec![
            Capability::Transfer,
            Capability::Complete,
            Capability::Leave,
            Capability::InFocus,
            Capability::SendMessage,
            Capability::SendStartTypingNotification,
            Capability::SendStopTypingNotification,
        ])
    );
    assert_eq!(chat.participants, Some(vec![]));
    assert_eq!(chat.user_data, None);
}

#[test]
fn participants_updated() {
    let event = event("participants_updated");
    assert_eq!(
        event.notification_type,
        Some(NotificationType::ParticipantsUpdated)
    );
    assert_eq!(event.reference_id, None);
    let participants = event
        .chat
        .as_ref()
        .and_then(|c| c.participants.clone())
        .expect("participants");
    let summary: Vec<_> = participants
        .iter()
        .map(|p| {
            (
                p.participant_type.clone(),
                p.nickname.as_deref(),
                p.participant_id.as_deref(),
                p.extra.len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                Some(ParticipantType::Agent),
                Some("Marat"),
                Some("009052C5E743004C"),
                0
            ),
            (
                Some(ParticipantType::Customer),
                Some("PersonP"),
                Some("009052C5E6D6004A"),
                0
            ),
        ]
    );
    assert_eq!(event.chat_state(), Some(&ChatState::Chatting));
}

#[test]
fn properties_updated_wrapped_is_unwrapped() {
    let data = fixture("properties_updated_wrapped");
    let event = event("properties_updated_wrapped");
    assert_eq!(event.kind, EventKind::ChatState);
    assert_eq!(
        event.message_type.as_deref(),
        Some("ChatStateChangeMessage")
    );
    assert_eq!(
        event.notification_type,
        Some(NotificationType::PropertiesUpdated)
    );
    assert_eq!(event.reference_id, Some(ReferenceId::Number(83)));
    let chat = event.chat.as_ref().expect("chat");
    assert_eq!(chat.id.as_deref(), Some("0000Wa9CAM6W00J"));
    assert_eq!(chat.state, Some(ChatState::Chatting));
    assert_eq!(
        chat.user_data.clone().map(Value::Object),
        Some(json!({"key1": "value1", "key2": "value2"}))
    );
    assert_eq!(
        chat.capabilities,
        Some(caps(&[
            "Transfer",
            "Leave",
            "Invite",
            "Consult",
            "SetInFocus",
            "SetDisposition",
            "AttachUserData",
            "DeleteUserData",
            "UpdateUserData",
            "Complete",
            "SendMessage",
            "SendStartTypingNotification",
            "SendStopTypingNotification",
        ]))
    );
    assert!(chat.capabilities.iter().flatten().all(|c| !c.is_other()));
    assert_eq!(chat.participants.as_ref().map(Vec::len), Some(2));
    // The record keeps the payload as delivered, wrapper included.
    let kept = event.data.to_value().expect("valid JSON");
    assert_eq!(kept, data);
    assert!(kept.get("data").is_some());
}

#[test]
fn left_chat_has_exactly_the_documented_capabilities() {
    let event = event("left_chat");
    let chat = event.chat.as_ref().expect("chat");
    assert_eq!(chat.state, Some(ChatState::LeftChat));
    assert_eq!(
        chat.capabilities,
        Some(vec![
            Capability::Transfer,
            Capability::Complete,
            Capability::Leave,
            Capability::InFocus
        ])
    );
    assert_eq!(chat.participants, None, "absent participants stay None");
    assert_eq!(event.reference_id, Some(ReferenceId::Number(17)));
}

#[test]
fn completed_and_leave_in_conference_have_no_capabilities() {
    let completed = event("completed");
    let chat = completed.chat.as_ref().expect("chat");
    assert_eq!(chat.id.as_deref(), Some("0000Wa9CAM6W00FF"));
    assert_eq!(chat.state, Some(ChatState::Completed));
    assert_eq!(chat.capabilities, None);
    assert_eq!(chat.participants, Some(vec![]));
    assert_eq!(completed.reference_id, Some(ReferenceId::Number(5)));

    let conference = event("leave_conference_completed");
    let chat = conference.chat.as_ref().expect("chat");
    assert_eq!(chat.id.as_deref(), Some("0000Na9B26EF002X"));
    assert_eq!(chat.state, Some(ChatState::Completed));
    assert_eq!(chat.capabilities, None);
    assert_eq!(chat.participants, None);
    assert_eq!(conference.reference_id, None, "unsolicited");
}

#[test]
fn previous_state_through_the_documented_ids() {
    // accept_chatting, participants_updated and the two Leave outcomes share 0000Na9B26EF002X.
    let mut tracker = ChatTracker::new(100);
    let steps = [
        ("accept_chatting", Some(ChatState::Chatting), None),
        (
            "participants_updated",
            Some(ChatState::Chatting),
            Some(ChatState::Chatting),
        ),
        (
            "left_chat",
            Some(ChatState::LeftChat),
            Some(ChatState::Chatting),
        ),
        (
            "message_log_updated_chat_uri_only",
            None,
            Some(ChatState::LeftChat),
        ),
        (
            "leave_conference_completed",
            Some(ChatState::Completed),
            Some(ChatState::LeftChat),
        ),
    ];
    for (name, state, previous) in steps {
        let event = event_on(CHATS, fixture(name), &mut tracker);
        assert_eq!(
            event.chat.as_ref().and_then(|c| c.id.as_deref()),
            Some("0000Na9B26EF002X"),
            "{name}"
        );
        assert_eq!(event.chat_state(), state.as_ref(), "{name}");
        assert_eq!(event.previous_state(), previous.as_ref(), "{name}");
    }
    assert!(tracker.is_empty(), "Completed forgets the chat");
}

#[test]
fn previous_state_through_the_whole_lifecycle() {
    const ID: &str = "0000SEQ0000000001";
    let mut tracker = ChatTracker::new(100);
    let steps = [
        (
            "invited",
            EventKind::ChatState,
            Some(ChatState::Invited),
            None,
        ),
        (
            "accept_chatting",
            EventKind::ChatState,
            Some(ChatState::Chatting),
            Some(ChatState::Invited),
        ),
        (
            "participants_updated",
            EventKind::ChatState,
            Some(ChatState::Chatting),
            Some(ChatState::Chatting),
        ),
        (
            "message_log_updated",
            EventKind::MessageLog,
            None,
            Some(ChatState::Chatting),
        ),
        (
            "properties_updated_wrapped",
            EventKind::ChatState,
            Some(ChatState::Chatting),
            Some(ChatState::Chatting),
        ),
        (
            "left_chat",
            EventKind::ChatState,
            Some(ChatState::LeftChat),
            Some(ChatState::Chatting),
        ),
        (
            "completed",
            EventKind::ChatState,
            Some(ChatState::Completed),
            Some(ChatState::LeftChat),
        ),
        // After Completed the chat is forgotten: a late transcript update knows nothing.
        ("message_log_updated", EventKind::MessageLog, None, None),
    ];
    for (name, kind, state, previous) in steps {
        let event = event_on(CHATS, with_chat_id(fixture(name), ID), &mut tracker);
        assert_eq!(event.kind, kind, "{name}");
        assert_eq!(
            event.chat.as_ref().and_then(|c| c.id.as_deref()),
            Some(ID),
            "{name}"
        );
        assert_eq!(event.chat_state(), state.as_ref(), "{name}");
        assert_eq!(event.previous_state(), previous.as_ref(), "{name}");
    }
    assert!(tracker.is_empty());
}

#[test]
fn message_log_updated_chat_id_from_chat_path() {
    let data = fixture("message_log_updated");
    let event = event("message_log_updated");
    assert_eq!(event.kind, EventKind::MessageLog);
    assert_eq!(event.message_type.as_deref(), Some("MessageLogUpdated"));
    assert_eq!(event.notification_type, Some(NotificationType::NewMessages));
    let chat = event.chat.as_ref().expect("chat");
    assert_eq!(chat.id.as_deref(), Some("0000Wa9CAM6W00FN"));
    assert_eq!(chat.state, None);
    assert_eq!(chat.previous_state, None);
    assert_eq!(
        (
            &chat.capabilities,
            &chat.participants,
            &chat.user_data,
            &chat.uri
        ),
        (&None, &None, &None, &None)
    );
    let messages = event.messages.as_ref().expect("messages");
    assert_eq!(Some(messages), data["messages"].as_array());
    assert_eq!(messages[0]["timestampSeconds"], json!(1389261492035_i64));
}

#[test]
fn message_log_updated_chat_id_from_chat_uri() {
    let mut tracker = ChatTracker::new(10);
    event_on(CHATS, fixture("accept_chatting"), &mut tracker);
    let event = event_on(
        CHATS,
        fixture("message_log_updated_chat_uri_only"),
        &mut tracker,
    );
    assert_eq!(event.kind, EventKind::MessageLog);
    assert_eq!(
        event.chat.as_ref().and_then(|c| c.id.as_deref()),
        Some("0000Na9B26EF002X")
    );
    assert_eq!(event.previous_state(), Some(&ChatState::Chatting));
    assert_eq!(event.chat_state(), None);
    let types: Vec<_> = event
        .messages
        .iter()
        .flatten()
        .map(|m| m["type"].clone())
        .collect();
    assert_eq!(types, vec![json!("TypingStarted"), json!("PushUrl")]);

    // Trailing slash and query string are tolerated.
    let mut data = fixture("message_log_updated_chat_uri_only");
    data["chatUri"] = json!("http://localhost:8080/api/v2/chats/0000Na9B26EF002X/?fields=*");
    let event = event_on(CHATS, data, &mut tracker);
    assert_eq!(
        event.chat.as_ref().and_then(|c| c.id.as_deref()),
        Some("0000Na9B26EF002X")
    );
    assert_eq!(event.previous_state(), Some(&ChatState::Chatting));
}

#[test]
fn errors_with_and_without_message_type() {
    for (name, text) in [
        ("error_cancel_consult", "Request failed"),
        (
            "error_user_data",
            "Unable to manage user data for interaction id",
        ),
    ] {
        let event = event(name);
        assert_eq!(event.kind, EventKind::Error, "{name}");
        assert_eq!(event.message_type, None, "{name}");
        assert_eq!(
            event.notification_type,
            Some(NotificationType::Error),
            "{name}"
        );
        assert_eq!(event.error_message.as_deref(), Some(text), "{name}");
        assert_eq!(event.reference_id, Some(ReferenceId::Number(35)), "{name}");
        assert_eq!(event.chat, None, "{name}");
        assert_eq!(event.decode_error, None, "{name}");
    }
    let event = event("error_chat_state_change");
    assert_eq!(event.kind, EventKind::Error);
    assert_eq!(
        event.message_type.as_deref(),
        Some("ChatStateChangeMessage")
    );
    assert_eq!(event.error_message.as_deref(), Some("Request failed"));
    assert_eq!(event.reference_id, Some(ReferenceId::Text("36".to_owned())));
    assert_eq!(event.chat, None);
    let line = serde_json::to_value(&event).expect("serialise");
    assert_eq!(
        line["reference_id"],
        json!("36"),
        "a string referenceId stays a string"
    );
    assert_eq!(line["kind"], json!("error"));
}

#[test]
fn error_naming_a_chat_reports_its_previous_state() {
    let mut tracker = ChatTracker::new(10);
    event_on(CHATS, fixture("left_chat"), &mut tracker);
    let mut data = fixture("error_user_data");
    data["chatPath"] = json!("/chats/0000Na9B26EF002X");
    let event = event_on(CHATS, data, &mut tracker);
    assert_eq!(event.kind, EventKind::Error);
    assert_eq!(
        event.chat.as_ref().and_then(|c| c.id.as_deref()),
        Some("0000Na9B26EF002X")
    );
    assert_eq!(event.previous_state(), Some(&ChatState::LeftChat));
    assert_eq!(event.chat_state(), None);
    assert_eq!(
        tracker.peek("0000Na9B26EF002X"),
        Some(&ChatState::LeftChat),
        "not changed"
    );
}

#[test]
fn unknown_values_are_kept_and_serialised_verbatim() {
    let state = event("unknown_state");
    assert_eq!(state.kind, EventKind::ChatState);
    assert_eq!(
        state.chat_state(),
        Some(&ChatState::Other("Monitoring".to_owned()))
    );
    assert_eq!(
        serde_json::to_value(&state).expect("serialise")["chat"]["state"],
        json!("Monitoring")
    );

    let capability = event("unknown_capability");
    let chat = capability.chat.as_ref().expect("chat");
    assert_eq!(
        chat.capabilities,
        Some(vec![
            Capability::Transfer,
            Capability::Complete,
            Capability::Other("RemoveParticipantFromConference".to_owned()),
            Capability::Other("SendCustomNotice".to_owned()),
        ])
    );
    assert_eq!(
        serde_json::to_value(&capability).expect("serialise")["chat"]["capabilities"],
        json!([
            "Transfer",
            "Complete",
            "RemoveParticipantFromConference",
            "SendCustomNotice"
        ])
    );

    let notification = event("unknown_notification_type");
    assert_eq!(notification.kind, EventKind::ChatState);
    assert_eq!(
        notification.notification_type,
        Some(NotificationType::Other("SupervisorAttached".to_owned()))
    );
    assert_eq!(
        notification.chat.as_ref().and_then(|c| c.id.as_deref()),
        Some("0000Na9B26EF00SV"),
        "id from the uri when chat.id is absent"
    );
    let line = serde_json::to_value(&notification).expect("serialise");
    assert_eq!(line["notification_type"], json!("SupervisorAttached"));
    let back: Event = serde_json::from_value(line).expect("deserialise");
    assert_eq!(back, notification);
}

#[test]
fn pass_through_messages_are_other() {
    for (name, channel, message_type, notification_type) in [
        (
            "device_state",
            "/v2/me/devices",
            "DeviceStateChangeMessage",
            None,
        ),
        (
            "call_state",
            "/v2/me/calls",
            "CallStateChangeMessage",
            Some(NotificationType::Other("AttachedDataChanged".to_owned())),
        ),
        (
            "channel_state_v2",
            "/v2/me/channels",
            "ChannelStateChangeMessageV2",
            None,
        ),
    ] {
        let data = fixture(name);
        let event = event_on(channel, data.clone(), &mut ChatTracker::new(10));
        common_checks(&event, &data);
        assert_eq!(event.kind, EventKind::Other, "{name}");
        assert_eq!(event.channel, channel, "{name}");
        assert_eq!(event.message_type.as_deref(), Some(message_type), "{name}");
        assert_eq!(event.notification_type, notification_type, "{name}");
        assert_eq!(
            (&event.chat, &event.messages, &event.decode_error),
            (&None, &None, &None),
            "{name}"
        );
        let line = serde_json::to_value(&event).expect("serialise");
        assert_eq!(line["kind"], json!("other"), "{name}");
        assert_eq!(line["message_type"], json!(message_type), "{name}");
        assert_eq!(line["data"], data, "{name}");
    }
}

#[test]
fn malformed_payloads_are_undecodable_and_counted() {
    let cases = [
        (
            "malformed_chat_string",
            Some("ChatStateChangeMessage"),
            "`data.chat` is a string, expected an object",
        ),
        (
            "malformed_data_array",
            None,
            "notification data is an array, expected a JSON object",
        ),
        (
            "malformed_capabilities_object",
            Some("ChatStateChangeMessage"),
            "`data.chat.capabilities` is an object, expected an array",
        ),
        (
            "malformed_participant_string",
            Some("ChatStateChangeMessage"),
            "`data.chat.participants[1]` is a string, expected an object",
        ),
        (
            "malformed_user_data_string",
            Some("ChatStateChangeMessage"),
            "`data.chat.userData` is a string, expected an object",
        ),
        (
            "malformed_messages_object",
            Some("MessageLogUpdated"),
            "`data.messages` is an object, expected an array",
        ),
    ];
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    for (name, message_type, reason) in cases {
        let data = fixture(name);
        let mut tracker = ChatTracker::new(10);
        let event =
            metrics::with_local_recorder(&recorder, || event_on(CHATS, data.clone(), &mut tracker));
        common_checks(&event, &data);
        assert_eq!(event.kind, EventKind::Undecodable, "{name}");
        assert_eq!(event.decode_error.as_deref(), Some(reason), "{name}");
        assert_eq!(event.message_type.as_deref(), message_type, "{name}");
        assert_eq!((&event.chat, &event.messages), (&None, &None), "{name}");
        assert!(
            tracker.is_empty(),
            "{name}: an undecodable event does not touch the tracker"
        );
        let line = serde_json::to_value(&event).expect("serialise");
        assert_eq!(line["kind"], json!("undecodable"), "{name}");
        assert_eq!(line["decode_error"], json!(reason), "{name}");
    }
    // The lenient envelope fields are still filled when readable.
    let event = event("malformed_chat_string");
    assert_eq!(
        event.notification_type,
        Some(NotificationType::StatusChange)
    );
    assert_eq!(event.reference_id, Some(ReferenceId::Number(17)));

    let mut counted: Vec<(String, String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == DECODE_ERRORS_METRIC)
        .map(|(key, _, _, value)| {
            let label = |name: &str| {
                key.key()
                    .labels()
                    .find(|l| l.key() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            let DebugValue::Counter(n) = value else {
                panic!("{DECODE_ERRORS_METRIC} is not a counter")
            };
            (label("account"), label("message_type"), n)
        })
        .collect();
    counted.sort();
    assert_eq!(
        counted,
        vec![
            (ACCOUNT.to_owned(), "ChatStateChangeMessage".to_owned(), 4),
            (ACCOUNT.to_owned(), "MessageLogUpdated".to_owned(), 1),
            (ACCOUNT.to_owned(), "none".to_owned(), 1),
        ]
    );
}

#[test]
fn full_event_serialises_and_round_trips() {
    let mut tracker = ChatTracker::new(10);
    event_on(CHATS, fixture("accept_chatting"), &mut tracker);
    let event = event_on(CHATS, fixture("participants_updated"), &mut tracker);
    let line = serde_json::to_string(&event).expect("serialise");
    assert!(!line.contains('\n'), "one JSON line");
    let value: Value = serde_json::from_str(&line).expect("valid JSON");
    assert_eq!(value["schema"], json!("chatwatch.event.v1"));
    assert_eq!(value["event_id"], json!(event.event_id));
    assert_eq!(value["fingerprint"], json!(event.fingerprint));
    assert_eq!(
        value["received_at"],
        json!("2024-05-01T12:00:00.123456789Z")
    );
    assert_eq!(value["account"], json!(ACCOUNT));
    assert_eq!(value["channel"], json!(CHATS));
    assert_eq!(value["kind"], json!("chat_state"));
    assert_eq!(value["message_type"], json!("ChatStateChangeMessage"));
    assert_eq!(value["notification_type"], json!("ParticipantsUpdated"));
    assert_eq!(value.get("reference_id"), None, "absent fields are omitted");
    assert_eq!(value.get("error_message"), None);
    assert_eq!(value.get("decode_error"), None);
    assert_eq!(value.get("messages"), None);
    assert_eq!(value["chat"]["id"], json!("0000Na9B26EF002X"));
    assert_eq!(value["chat"]["state"], json!("Chatting"));
    assert_eq!(value["chat"]["previous_state"], json!("Chatting"));
    assert_eq!(
        value["chat"]["participants"][1],
        json!({"nickname": "PersonP", "type": "Customer", "participantId": "009052C5E6D6004A"})
    );
    assert_eq!(value["data"], fixture("participants_updated"));
    let back: Event = serde_json::from_str(&line).expect("deserialise");
    assert_eq!(back, event);

    // A new chat serialises previous_state as an explicit null, and round-trips too.
    let first = event_on(CHATS, fixture("invited"), &mut tracker);
    let value = serde_json::to_value(&first).expect("serialise");
    assert_eq!(value["chat"]["previous_state"], Value::Null);
    assert!(value["chat"]
        .as_object()
        .is_some_and(|c| c.contains_key("previous_state")));
    let back: Event = serde_json::from_value(value).expect("deserialise");
    assert_eq!(back, first);

    // Transcript and undecodable events round-trip as well.
    for name in [
        "message_log_updated",
        "malformed_chat_string",
        "error_cancel_consult",
    ] {
        let event = event_on(CHATS, fixture(name), &mut tracker);
        let back: Event =
            serde_json::from_str(&serde_json::to_string(&event).expect("serialise")).expect(name);
        assert_eq!(back, event, "{name}");
    }
}

#[test]
fn fingerprint_is_content_derived_and_event_id_is_unique() {
    let mut tracker = ChatTracker::new(10);
    let first = event_on(CHATS, fixture("accept_chatting"), &mut tracker);
    let second = event_on(CHATS, fixture("accept_chatting"), &mut tracker);
    assert_eq!(first.fingerprint, second.fingerprint);
    assert_ne!(first.event_id, second.event_id);
    assert!(
        first.event_id < second.event_id,
        "UUIDv7 ids are time-ordered"
    );

    // The same content with its keys in another order is the same notification when the data is
    // built from a `Value` (compact, keys sorted), as here. Data received from a server is hashed
    // as the exact text sent, which a redelivery repeats byte for byte.
    let reordered: Value = serde_json::from_str(
        r#"{"chat":{"uri":"http://localhost:8080/api/v2/chats/0000Na9B26EF002X",
            "capabilities":["Transfer","Complete","Leave","InFocus","SendMessage",
                            "SendStartTypingNotification","SendStopTypingNotification"],
            "participants":[],"state":"Chatting","id":"0000Na9B26EF002X"},
           "notificationType":"StatusChange","referenceId":17,"messageType":"ChatStateChangeMessage"}"#,
    )
    .expect("valid JSON");
    assert_eq!(
        event_on(CHATS, reordered, &mut tracker).fingerprint,
        first.fingerprint
    );

    // The documented construction: XXH3-128 (seed 0, canonical big-endian hex) over account, 0,
    // channel, 0, the data's text (here compact sorted JSON, since the delivery was built from a
    // `Value`).
    let mut bytes = format!("{ACCOUNT}\0{CHATS}\0").into_bytes();
    bytes.extend(serde_json::to_vec(&fixture("accept_chatting")).expect("serialise"));
    let digest = xxhash_rust::xxh3::xxh3_128(&bytes);
    assert_eq!(first.fingerprint, hex::encode(digest.to_be_bytes()));

    // Account, channel and content each change it.
    let other_account = pipeline::to_event(
        "agent-2",
        &delivery(CHATS, fixture("accept_chatting")),
        &mut tracker,
    );
    assert_ne!(other_account.fingerprint, first.fingerprint);
    let other_channel = event_on("/v2/me/chats2", fixture("accept_chatting"), &mut tracker);
    assert_ne!(other_channel.fingerprint, first.fingerprint);
    let other_content = event_on(CHATS, fixture("left_chat"), &mut tracker);
    assert_ne!(other_content.fingerprint, first.fingerprint);
}

#[test]
fn owned_builder_gives_the_same_event() {
    for name in FIXTURES {
        let mut borrowed_tracker = ChatTracker::new(10);
        let mut owned_tracker = ChatTracker::new(10);
        let borrowed = event_on(CHATS, fixture(name), &mut borrowed_tracker);
        let mut owned =
            pipeline::into_event(ACCOUNT, delivery(CHATS, fixture(name)), &mut owned_tracker);
        assert_ne!(owned.event_id, borrowed.event_id, "{name}");
        owned.event_id.clone_from(&borrowed.event_id);
        assert_eq!(owned, borrowed, "{name}");
        assert_eq!(owned_tracker.len(), borrowed_tracker.len(), "{name}");
    }
}

#[test]
fn chat_state_change_without_an_id_does_not_touch_the_tracker() {
    let mut tracker = ChatTracker::new(10);
    let event = event_on(
        CHATS,
        json!({"messageType": "ChatStateChangeMessage", "notificationType": "StatusChange",
               "chat": {"state": "Chatting"}}),
        &mut tracker,
    );
    assert_eq!(event.kind, EventKind::ChatState);
    assert_eq!(event.chat_state(), Some(&ChatState::Chatting));
    assert_eq!(event.previous_state(), None);
    assert!(tracker.is_empty());
}
