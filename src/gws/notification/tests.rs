use serde_json::json;

use super::*;

fn chat_change(data: Value) -> ChatStateChange {
    match decode(&data) {
        Ok(Notification::ChatStateChange(change)) => change,
        other => panic!("expected a ChatStateChange, got {other:?}"),
    }
}

fn wrong_type(data: Value) -> (String, &'static str, &'static str) {
    match decode(&data) {
        Err(DecodeError::WrongType {
            field,
            expected,
            found,
        }) => (field, expected, found),
        other => panic!("expected a WrongType error, got {other:?}"),
    }
}

#[test]
fn last_path_segment_handles_uris_and_paths() {
    let cases = [
        (
            "http://localhost:8080/api/v2/chats/0000Na9B26EF002X",
            Some("0000Na9B26EF002X"),
        ),
        (
            "http://localhost:8080/api/v2/chats/0000Na9B26EF002X/",
            Some("0000Na9B26EF002X"),
        ),
        ("http://h/api/v2/chats/ABC?fields=*", Some("ABC")),
        ("http://h/api/v2/chats/ABC//?x=1#frag", Some("ABC")),
        ("/chats/0000Wa9CAM6W00FN", Some("0000Wa9CAM6W00FN")),
        ("/chats/0000Wa9CAM6W00FN/", Some("0000Wa9CAM6W00FN")),
        ("ABC", Some("ABC")),
        ("http://localhost:8080", None),
        ("http://localhost:8080/", None),
        ("", None),
        ("/", None),
        ("?q=1", None),
    ];
    for (uri, expected) in cases {
        assert_eq!(last_path_segment(uri), expected, "{uri:?}");
    }
}

#[test]
fn chat_state_change_is_typed() {
    let change = chat_change(json!({
        "messageType": "ChatStateChangeMessage", "notificationType": "ParticipantsUpdated",
        "referenceId": 17,
        "chat": {"id": "X1", "state": "Chatting", "capabilities": ["Transfer", "Teleport"],
                 "participants": [{"type": "Agent", "nickname": "Marat", "participantId": "P1",
                                   "visibility": "All"}],
                 "userData": {"n": 123456789, "z": null},
                 "uri": "http://h/api/v2/chats/X1", "chatType": "Inbound"}
    }));
    assert_eq!(
        change.notification_type,
        Some(NotificationType::ParticipantsUpdated)
    );
    assert_eq!(change.reference_id, Some(ReferenceId::Number(17)));
    assert_eq!(change.chat.id.as_deref(), Some("X1"));
    assert_eq!(change.chat.state, Some(ChatState::Chatting));
    assert_eq!(
        change.chat.capabilities,
        Some(vec![
            Capability::Transfer,
            Capability::Other("Teleport".into())
        ])
    );
    let participants = change.chat.participants.unwrap_or_default();
    assert_eq!(participants.len(), 1);
    assert_eq!(participants[0].nickname.as_deref(), Some("Marat"));
    assert_eq!(
        participants[0].participant_type,
        Some(ParticipantType::Agent)
    );
    assert_eq!(participants[0].participant_id.as_deref(), Some("P1"));
    assert_eq!(participants[0].extra.get("visibility"), Some(&json!("All")));
    assert_eq!(participants[0].extra.len(), 1);
    let user_data = change.chat.user_data.unwrap_or_default();
    assert_eq!(user_data.get("n"), Some(&json!(123456789)));
    assert_eq!(user_data.get("z"), Some(&Value::Null));
    assert_eq!(change.chat.uri.as_deref(), Some("http://h/api/v2/chats/X1"));
}

#[test]
fn absent_fields_stay_none_and_null_counts_as_absent() {
    let change = chat_change(json!({"messageType": "ChatStateChangeMessage",
        "referenceId": null, "chat": {"state": null, "capabilities": null}}));
    assert_eq!(change, ChatStateChange::default());
    let change = chat_change(json!({"messageType": "ChatStateChangeMessage"}));
    assert_eq!(change, ChatStateChange::default());
}

#[test]
fn chat_id_falls_back_to_the_uri() {
    let change = chat_change(json!({"messageType": "ChatStateChangeMessage",
        "chat": {"uri": "http://h/api/v2/chats/FROMURI/?a=b"}}));
    assert_eq!(change.chat.id.as_deref(), Some("FROMURI"));
    let change = chat_change(json!({"messageType": "ChatStateChangeMessage",
        "chat": {"id": "", "uri": "http://h/api/v2/chats/FROMURI"}}));
    assert_eq!(
        change.chat.id.as_deref(),
        Some("FROMURI"),
        "an empty id is no id"
    );
}

#[test]
fn reference_id_as_string() {
    let change = chat_change(json!({"messageType": "ChatStateChangeMessage", "referenceId": "83"}));
    assert_eq!(change.reference_id, Some(ReferenceId::Text("83".into())));
    let (field, expected, found) =
        wrong_type(json!({"messageType": "ChatStateChangeMessage", "referenceId": 1.5}));
    assert_eq!(field, "data.referenceId");
    assert_eq!(expected, "an integer or a string");
    assert!(found.contains("number"), "{found}");
}

#[test]
fn error_dispatch() {
    let without_type =
        json!({"notificationType": "Error", "errorMessage": "Request failed", "referenceId": 35});
    assert_eq!(
        decode(&without_type),
        Ok(Notification::Error(ErrorNotification {
            message_type: None,
            error_message: Some("Request failed".into()),
            reference_id: Some(ReferenceId::Number(35)),
            chat_id: None,
        }))
    );
    let with_type = json!({"messageType": "ChatStateChangeMessage", "notificationType": "Error",
        "errorMessage": "nope", "chatPath": "/chats/C9"});
    assert_eq!(
        decode(&with_type),
        Ok(Notification::Error(ErrorNotification {
            message_type: Some("ChatStateChangeMessage".into()),
            error_message: Some("nope".into()),
            reference_id: None,
            chat_id: Some("C9".into()),
        }))
    );
    // An Error that carries a chat stays a chat state change, with the error text.
    let change = chat_change(
        json!({"messageType": "ChatStateChangeMessage", "notificationType": "Error",
        "errorMessage": "nope", "chat": {"id": "C9", "state": "Chatting"}}),
    );
    assert_eq!(change.error_message.as_deref(), Some("nope"));
    assert_eq!(change.chat.id.as_deref(), Some("C9"));
    // An Error without messageType naming a chat keeps the chat id.
    let named = json!({"notificationType": "Error", "chat": {"uri": "http://h/api/v2/chats/C7"}});
    match decode(&named) {
        Ok(Notification::Error(error)) => assert_eq!(error.chat_id.as_deref(), Some("C7")),
        other => panic!("expected an Error, got {other:?}"),
    }
}

#[test]
fn message_log_chat_id_from_path_then_uri() {
    let log = |data: Value| match decode(&data) {
        Ok(Notification::MessageLogUpdated(log)) => log,
        other => panic!("expected a MessageLogUpdated, got {other:?}"),
    };
    let both = log(
        json!({"messageType": "MessageLogUpdated", "chatPath": "/chats/FROMPATH",
        "chatUri": "http://h/api/v2/chats/FROMURI", "messages": [{"index": 1}]}),
    );
    assert_eq!(both.chat_id.as_deref(), Some("FROMPATH"));
    assert_eq!(
        both.chat_uri.as_deref(),
        Some("http://h/api/v2/chats/FROMURI")
    );
    assert_eq!(both.messages, vec![json!({"index": 1})]);
    let uri_only = log(json!({"messageType": "MessageLogUpdated",
        "chatUri": "http://h/api/v2/chats/FROMURI/?x=1"}));
    assert_eq!(uri_only.chat_id.as_deref(), Some("FROMURI"));
    assert!(uri_only.messages.is_empty());
    let neither = log(json!({"messageType": "MessageLogUpdated", "referenceId": 3}));
    assert_eq!(neither.chat_id, None);
    assert_eq!(neither.reference_id, Some(ReferenceId::Number(3)));
}

#[test]
fn wrapped_data_is_unwrapped_one_level() {
    let wrapped = json!({"data": {"messageType": "ChatStateChangeMessage", "chat": {"id": "W"}}});
    assert_eq!(chat_change(wrapped.clone()).chat.id.as_deref(), Some("W"));
    assert_eq!(message_type(&wrapped), Some("ChatStateChangeMessage"));
    // Only one level, and only when the outer object has no notification fields.
    let twice = json!({"data": {"data": {"messageType": "ChatStateChangeMessage"}}});
    assert_eq!(
        decode(&twice),
        Ok(Notification::Other { message_type: None })
    );
    let outer_typed =
        json!({"messageType": "Outer", "data": {"messageType": "ChatStateChangeMessage"}});
    assert_eq!(
        decode(&outer_typed),
        Ok(Notification::Other {
            message_type: Some("Outer".into())
        })
    );
    // Errors inside a wrapper name the wrapped path.
    let (field, ..) =
        wrong_type(json!({"data": {"messageType": "ChatStateChangeMessage", "chat": 1}}));
    assert_eq!(field, "data.data.chat");
}

#[test]
fn everything_else_is_other() {
    assert_eq!(
        decode(&json!({"messageType": "DeviceStateChangeMessage", "devices": "whatever"})),
        Ok(Notification::Other {
            message_type: Some("DeviceStateChangeMessage".into())
        })
    );
    assert_eq!(
        decode(&json!({"channels": []})),
        Ok(Notification::Other { message_type: None })
    );
    assert_eq!(
        decode(&json!({"notificationType": "StatusChange"})),
        Ok(Notification::Other { message_type: None })
    );
    assert_eq!(
        decode(&json!({})),
        Ok(Notification::Other { message_type: None })
    );
}

#[test]
fn malformed_payloads_are_errors_with_paths() {
    assert_eq!(
        decode(&json!([1, 2])),
        Err(DecodeError::NotAnObject { found: "an array" })
    );
    assert_eq!(
        decode(&Value::Null).map_err(|e| e.to_string()),
        Err("notification data is null, expected a JSON object".to_owned())
    );
    let cases = [
        (json!({"messageType": 7}), "data.messageType", "a string"),
        (
            json!({"messageType": "ChatStateChangeMessage", "chat": "X"}),
            "data.chat",
            "an object",
        ),
        (
            json!({"messageType": "ChatStateChangeMessage", "notificationType": "Error", "chat": []}),
            "data.chat",
            "an object",
        ),
        (
            json!({"messageType": "ChatStateChangeMessage", "notificationType": 1}),
            "data.notificationType",
            "a string",
        ),
        (
            json!({"messageType": "ChatStateChangeMessage", "chat": {"capabilities": "Leave"}}),
            "data.chat.capabilities",
            "an array",
        ),
        (
            json!({"messageType": "ChatStateChangeMessage", "chat": {"capabilities": ["Leave", 3]}}),
            "data.chat.capabilities[1]",
            "a string",
        ),
        (
            json!({"messageType": "ChatStateChangeMessage", "chat": {"participants": {}}}),
            "data.chat.participants",
            "an array",
        ),
        (
            json!({"messageType": "ChatStateChangeMessage", "chat": {"participants": [{}, "p"]}}),
            "data.chat.participants[1]",
            "an object",
        ),
        (
            json!({"messageType": "ChatStateChangeMessage", "chat": {"participants": [{"nickname": 5}]}}),
            "data.chat.participants[0].nickname",
            "a string",
        ),
        (
            json!({"messageType": "ChatStateChangeMessage", "chat": {"userData": []}}),
            "data.chat.userData",
            "an object",
        ),
        (
            json!({"messageType": "ChatStateChangeMessage", "chat": {"id": 12}}),
            "data.chat.id",
            "a string",
        ),
        (
            json!({"messageType": "ChatStateChangeMessage", "chat": {"state": true}}),
            "data.chat.state",
            "a string",
        ),
        (
            json!({"messageType": "ChatStateChangeMessage", "errorMessage": {}}),
            "data.errorMessage",
            "a string",
        ),
        (
            json!({"messageType": "MessageLogUpdated", "messages": {}}),
            "data.messages",
            "an array",
        ),
        (
            json!({"messageType": "MessageLogUpdated", "messages": [{}, 1]}),
            "data.messages[1]",
            "an object",
        ),
        (
            json!({"messageType": "MessageLogUpdated", "chatUri": 1}),
            "data.chatUri",
            "a string",
        ),
        (
            json!({"notificationType": "Error", "errorMessage": 1}),
            "data.errorMessage",
            "a string",
        ),
    ];
    for (data, path, expected_type) in cases {
        let (field, expected, _) = wrong_type(data.clone());
        assert_eq!((field.as_str(), expected), (path, expected_type), "{data}");
    }
    let err = decode(&json!({"messageType": "ChatStateChangeMessage", "chat": "X"}));
    assert_eq!(
        err.map_err(|e| e.to_string()),
        Err("`data.chat` is a string, expected an object".to_owned())
    );
}

#[test]
fn never_panics_on_odd_shapes() {
    let values = [
        json!(null),
        json!(true),
        json!(1),
        json!("s"),
        json!([]),
        json!({}),
        json!({"data": 1}),
        json!({"data": []}),
        json!({"data": {"data": {}}}),
        json!({"messageType": null, "notificationType": null, "data": {"notificationType": "Error"}}),
        json!({"messageType": "ChatStateChangeMessage", "chat": {"uri": "://"}}),
        json!({"messageType": "ChatStateChangeMessage", "chat": {"uri": "http://"}}),
        json!({"messageType": "ChatStateChangeMessage", "chat": {"uri": "http://h/é/ü"}}),
        json!({"messageType": "MessageLogUpdated", "chatPath": "", "chatUri": "?"}),
        json!({"messageType": "ChatStateChangeMessage", "referenceId": u64::MAX}),
        json!({"messageType": "ChatStateChangeMessage", "referenceId": -1}),
    ];
    for value in values {
        // Any outcome is fine; it must just return.
        let _ = decode(&value);
    }
    // The unwrapped error notification decodes as an Error.
    assert!(matches!(
        decode(&json!({"messageType": null, "data": {"notificationType": "Error"}})),
        Ok(Notification::Error(_))
    ));
    assert_eq!(
        chat_change(
            json!({"messageType": "ChatStateChangeMessage", "chat": {"uri": "http://h/é/ü"}})
        )
        .chat
        .id
        .as_deref(),
        Some("ü")
    );
}
