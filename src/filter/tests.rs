use super::*;
use crate::event::ChatRecord;
use crate::gws::notification::{ChatState, NotificationType};

fn event(channel: &str, state: Option<&str>, previous: Option<&str>) -> Event {
    Event {
        schema: crate::event::SCHEMA.to_owned(),
        event_id: "0190a000-0000-7000-8000-000000000001".to_owned(),
        fingerprint: "00".repeat(16),
        received_at: time::OffsetDateTime::UNIX_EPOCH,
        account: "agent1".to_owned(),
        channel: channel.to_owned(),
        kind: EventKind::ChatState,
        message_type: Some("ChatStateChangeMessage".to_owned()),
        notification_type: Some(NotificationType::StatusChange),
        reference_id: None,
        chat: Some(ChatRecord {
            id: Some("chat-1".to_owned()),
            state: state.map(ChatState::from),
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
        data: serde_json::json!({}).into(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn channel_exact_match_is_case_sensitive() {
    assert!(channel_matches("/v2/me/chats", "/v2/me/chats"));
    assert!(!channel_matches("/v2/me/chats", "/v2/me/Chats"));
    assert!(!channel_matches("/v2/me/chats", "/v2/me/chats/1"));
    assert!(!channel_matches("/v2/me/chats", "/v2/me"));
}

#[test]
fn channel_single_glob_matches_exactly_one_segment() {
    assert!(channel_matches("/v2/me/*", "/v2/me/chats"));
    assert!(channel_matches("/v2/me/*", "/v2/me/calls"));
    assert!(!channel_matches("/v2/me/*", "/v2/me"));
    assert!(!channel_matches("/v2/me/*", "/v2/me/"));
    assert!(!channel_matches("/v2/me/*", "/v2/me/chats/1"));
    assert!(!channel_matches("/v2/me/*", "/v2/meow/chats"));
    assert!(!channel_matches("/v2/me/*", "/v2/you/chats"));
}

#[test]
fn channel_double_glob_matches_one_or_more_segments() {
    assert!(channel_matches("/v2/me/**", "/v2/me/chats"));
    assert!(channel_matches("/v2/me/**", "/v2/me/chats/1/messages"));
    assert!(!channel_matches("/v2/me/**", "/v2/me"));
    assert!(!channel_matches("/v2/me/**", "/v2/me/"));
    assert!(!channel_matches("/v2/me/**", "/v2/me/chats//x"));
    assert!(!channel_matches("/v2/me/**", "/v2/meow/chats"));
}

#[test]
fn channel_root_globs() {
    assert!(channel_matches("/*", "/v2"));
    assert!(!channel_matches("/*", "/v2/me"));
    assert!(channel_matches("/**", "/v2/me/chats"));
    assert!(!channel_matches("/**", "/"));
}

#[test]
fn channel_malformed_patterns_compare_literally_without_panicking() {
    assert!(!channel_matches("", "/v2"));
    assert!(channel_matches("", ""));
    assert!(!channel_matches("v2/*", "/v2/me"));
    assert!(!channel_matches("/v2/*/me", "/v2/x/me"));
    assert!(!channel_matches("/v2/me*", "/v2/meow"));
    assert!(channel_matches("/v2/me*", "/v2/me*"));
}

#[test]
fn empty_filter_matches_everything() {
    let filter = FilterConfig::default();
    assert!(filter.is_empty());
    assert!(filter.matches(&event("/v2/me/chats", Some("Chatting"), None)));
    let mut bare = event("/x", None, None);
    bare.chat = None;
    bare.message_type = None;
    bare.notification_type = None;
    bare.kind = EventKind::Other;
    assert!(filter.matches(&bare));
}

#[test]
fn kinds_filter() {
    let filter = FilterConfig {
        kinds: vec![EventKind::Error, EventKind::ChatState],
        ..FilterConfig::default()
    };
    assert!(filter.matches(&event("/v2/me/chats", Some("Chatting"), None)));
    let mut other = event("/v2/me/chats", None, None);
    other.kind = EventKind::MessageLog;
    assert!(!filter.matches(&other));
}

#[test]
fn message_types_filter_requires_a_message_type() {
    let filter = FilterConfig {
        message_types: strings(&["MessageLogUpdated", "ChatStateChangeMessage"]),
        ..FilterConfig::default()
    };
    let mut ev = event("/v2/me/chats", Some("Chatting"), None);
    assert!(filter.matches(&ev));
    ev.message_type = Some("chatstatechangemessage".to_owned());
    assert!(!filter.matches(&ev), "matching is case-sensitive");
    ev.message_type = None;
    assert!(!filter.matches(&ev));
}

#[test]
fn notification_types_filter() {
    let filter = FilterConfig {
        notification_types: strings(&["ParticipantsUpdated"]),
        ..FilterConfig::default()
    };
    let mut ev = event("/v2/me/chats", Some("Chatting"), None);
    assert!(!filter.matches(&ev));
    ev.notification_type = Some(NotificationType::ParticipantsUpdated);
    assert!(filter.matches(&ev));
    ev.notification_type = Some(NotificationType::from("SomethingNew"));
    assert!(!filter.matches(&ev));
    ev.notification_type = None;
    assert!(!filter.matches(&ev));
    let unknown = FilterConfig {
        notification_types: strings(&["SomethingNew"]),
        ..FilterConfig::default()
    };
    ev.notification_type = Some(NotificationType::from("SomethingNew"));
    assert!(
        unknown.matches(&ev),
        "unknown values are matched by their spelling"
    );
}

#[test]
fn states_filter_matches_current_state_regardless_of_transition() {
    let filter = FilterConfig {
        states: strings(&["LeftChat", "Completed"]),
        ..FilterConfig::default()
    };
    assert!(filter.matches(&event("/c", Some("LeftChat"), Some("Chatting"))));
    assert!(filter.matches(&event("/c", Some("LeftChat"), Some("LeftChat"))));
    assert!(filter.matches(&event("/c", Some("Completed"), None)));
    assert!(!filter.matches(&event("/c", Some("Chatting"), Some("LeftChat"))));
    assert!(!filter.matches(&event("/c", None, Some("LeftChat"))));
    let mut no_chat = event("/c", None, None);
    no_chat.chat = None;
    assert!(!filter.matches(&no_chat));
}

#[test]
fn entered_states_filter_requires_a_transition() {
    let filter = FilterConfig {
        entered_states: strings(&["LeftChat"]),
        ..FilterConfig::default()
    };
    assert!(filter.matches(&event("/c", Some("LeftChat"), Some("Chatting"))));
    assert!(
        filter.matches(&event("/c", Some("LeftChat"), None)),
        "an unknown previous state counts as a transition"
    );
    assert!(!filter.matches(&event("/c", Some("LeftChat"), Some("LeftChat"))));
    assert!(!filter.matches(&event("/c", Some("Completed"), Some("LeftChat"))));
    assert!(!filter.matches(&event("/c", None, Some("Chatting"))));
    assert!(!filter.matches(&event("/c", Some("leftchat"), Some("Chatting"))));
    let mut no_chat = event("/c", None, None);
    no_chat.chat = None;
    assert!(!filter.matches(&no_chat));
}

#[test]
fn channels_filter_is_or_within_the_list() {
    let filter = FilterConfig {
        channels: strings(&["/v2/me/chats", "/v2/other/**"]),
        ..FilterConfig::default()
    };
    assert!(filter.matches(&event("/v2/me/chats", None, None)));
    assert!(filter.matches(&event("/v2/other/a/b", None, None)));
    assert!(!filter.matches(&event("/v2/me/calls", None, None)));
}

#[test]
fn lists_are_anded() {
    let filter = FilterConfig {
        kinds: vec![EventKind::ChatState],
        channels: strings(&["/v2/me/*"]),
        entered_states: strings(&["LeftChat"]),
        ..FilterConfig::default()
    };
    assert!(filter.matches(&event("/v2/me/chats", Some("LeftChat"), Some("Chatting"))));
    assert!(!filter.matches(&event("/v2/you/chats", Some("LeftChat"), Some("Chatting"))));
    assert!(!filter.matches(&event("/v2/me/chats", Some("Chatting"), Some("Invited"))));
    let mut wrong_kind = event("/v2/me/chats", Some("LeftChat"), Some("Chatting"));
    wrong_kind.kind = EventKind::Undecodable;
    assert!(!filter.matches(&wrong_kind));
}

#[test]
fn validate_accepts_good_filters() {
    let filter = FilterConfig {
        kinds: vec![EventKind::ChatState],
        message_types: strings(&["ChatStateChangeMessage"]),
        notification_types: strings(&["StatusChange"]),
        states: strings(&["Chatting"]),
        entered_states: strings(&["LeftChat"]),
        channels: strings(&["/v2/me/chats", "/v2/me/*", "/v2/**", "/*"]),
    };
    assert!(filter.validate().is_ok());
    assert!(FilterConfig::default().validate().is_ok());
}

#[test]
fn validate_rejects_empty_names_naming_the_field() {
    for (field, filter) in [
        (
            "filter.message_types[0]",
            FilterConfig {
                message_types: strings(&[""]),
                ..FilterConfig::default()
            },
        ),
        (
            "filter.notification_types[1]",
            FilterConfig {
                notification_types: strings(&["StatusChange", ""]),
                ..FilterConfig::default()
            },
        ),
        (
            "filter.states[0]",
            FilterConfig {
                states: strings(&[""]),
                ..FilterConfig::default()
            },
        ),
        (
            "filter.entered_states[0]",
            FilterConfig {
                entered_states: strings(&[""]),
                ..FilterConfig::default()
            },
        ),
        (
            "filter.channels[0]",
            FilterConfig {
                channels: strings(&[""]),
                ..FilterConfig::default()
            },
        ),
    ] {
        let err = filter.validate().expect_err(field).to_string();
        assert!(err.contains(field), "{err:?} should name {field}");
        assert!(err.contains("empty"), "{err:?}");
    }
}

#[test]
fn validate_rejects_malformed_channel_patterns() {
    for pattern in [
        "v2/me",
        "/",
        "/v2//me",
        "/v2/me/",
        "/v2/*/chats",
        "/v2/me*",
        "/v2/***",
        "/**/x",
    ] {
        let filter = FilterConfig {
            channels: strings(&["/ok", pattern]),
            ..FilterConfig::default()
        };
        let err = filter.validate().expect_err(pattern).to_string();
        assert!(err.contains("filter.channels[1]"), "{err:?}");
        assert!(err.contains(pattern), "{err:?} should quote {pattern}");
    }
}

#[test]
fn deserializes_from_json_and_rejects_unknown_keys() {
    let filter: FilterConfig =
        serde_json::from_str(r#"{"entered_states": ["LeftChat"], "kinds": ["chat_state"]}"#)
            .expect("valid filter");
    assert_eq!(filter.entered_states, strings(&["LeftChat"]));
    assert_eq!(filter.kinds, vec![EventKind::ChatState]);
    assert!(filter.channels.is_empty());
    let err = serde_json::from_str::<FilterConfig>(r#"{"state": ["LeftChat"]}"#)
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("state"), "{err}");
    let err = serde_json::from_str::<FilterConfig>(r#"{"kinds": ["ChatState"]}"#)
        .expect_err("unknown kind")
        .to_string();
    assert!(err.contains("ChatState"), "{err}");
}
