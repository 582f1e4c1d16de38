//! Unit tests of the `nats` sink: subject rendering and configuration validation.

use super::*;
use crate::event::{ChatRecord, Event, EventKind};

fn event(account: &str, kind: EventKind, state: Option<&str>, chat_id: Option<&str>) -> Event {
    let mut e: Event = serde_json::from_value(serde_json::json!({
        "schema": crate::event::SCHEMA,
        "event_id": "0190f1e2-0000-7000-8000-000000000001",
        "fingerprint": "00",
        "received_at": "2026-01-01T00:00:00Z",
        "account": account,
        "channel": "/v2/me/chats",
        "kind": kind.as_str(),
        "recovered": false,
        "data": {}
    }))
    .expect("event");
    if state.is_some() || chat_id.is_some() {
        e.chat = Some(ChatRecord {
            id: chat_id.map(str::to_owned),
            state: state.map(|s| serde_json::from_value(serde_json::json!(s)).unwrap()),
            ..ChatRecord::default()
        });
    }
    e
}

fn config(text: &str) -> Result<NatsSinkConfig, String> {
    #[derive(serde::Deserialize)]
    struct Root {
        sinks: std::collections::BTreeMap<String, crate::sinks::SinkConfig>,
    }
    let root: Root = ::config::Config::builder()
        .add_source(::config::File::from_str(text, ::config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| e.to_string())?;
    match root.sinks.into_values().next() {
        Some(crate::sinks::SinkConfig::Nats(n)) => Ok(n),
        other => Err(format!("not a nats sink: {other:?}")),
    }
}

#[test]
fn default_subject_renders_account_and_kind_as_safe_tokens() {
    let t = SubjectTemplate::parse(DEFAULT_SUBJECT).unwrap();
    let e = event(
        "agent.one *>",
        EventKind::ChatState,
        Some("Chatting"),
        Some("0001"),
    );
    assert_eq!(t.render(&e), "chatwatch.events.agent_one___.chat_state");
    assert_eq!(t.wildcard(), "chatwatch.events.*.*");
}

#[test]
fn every_placeholder_renders_and_missing_values_are_underscores() {
    let t = SubjectTemplate::parse("cw.{account}.{kind}.{state}.{chat_id}.x-{account}").unwrap();
    let e = event("a", EventKind::ChatState, Some("LeftChat"), Some("00A1 B"));
    assert_eq!(t.render(&e), "cw.a.chat_state.LeftChat.00A1_B.x-a");
    let e = event("a", EventKind::Error, None, None);
    assert_eq!(t.render(&e), "cw.a.error._._.x-a");
    assert_eq!(t.wildcard(), "cw.*.*.*.*.*");
    assert_eq!(safe_token("ü.b"), "__b");
}

#[test]
fn bad_templates_are_rejected_naming_the_problem() {
    for (template, needle) in [
        ("", "empty"),
        ("a..b", "empty token"),
        ("a.", "empty token"),
        ("a.{nope}", "unknown placeholder"),
        ("a.{account", "unclosed"),
        ("a.*", "`*`"),
        ("a.>", "`>`"),
        ("a b", "` `"),
    ] {
        let err = SubjectTemplate::parse(template)
            .expect_err(template)
            .to_string();
        assert!(
            err.contains("subject") && err.contains(needle),
            "{template}: {err}"
        );
    }
}

#[test]
fn toml_defaults_and_one_or_many_urls() {
    let n =
        config("[sinks.s]\ntype = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nstream = \"CW\"\n")
            .unwrap();
    assert_eq!(n.url, vec!["nats://127.0.0.1:4222".to_owned()]);
    assert_eq!(n.subject, DEFAULT_SUBJECT);
    assert!(!n.create_stream);
    assert_eq!(n.duplicate_window, DEFAULT_DUPLICATE_WINDOW);
    assert_eq!(n.timeout, DEFAULT_TIMEOUT);
    assert_eq!(n.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(n.replicas, 1);
    assert!(n.validate().is_ok());
    let n = config(
        r#"
        [sinks.s]
        type = "nats"
        url = ["nats://a:4222", "tls://b:4222"]
        stream = "CW"
        create_stream = true
        duplicate_window = "2m"
        max_age = "7d"
        replicas = 3
        storage = "memory"
        max_in_flight = 1
        auth = { user_password = { user = "cw", password = { env = "NATS_PW" } } }
        "#,
    )
    .unwrap();
    assert_eq!(n.url.len(), 2);
    assert!(n.tls_required());
    assert_eq!(n.storage, NatsStorage::Memory);
    assert!(matches!(n.auth, Some(NatsAuth::UserPassword { .. })));
    assert!(n.validate().is_ok());
}

#[test]
fn unknown_keys_are_rejected() {
    let err =
        config("[sinks.s]\ntype = \"nats\"\nurl = \"nats://a\"\nstream = \"CW\"\nsubjet = \"x\"\n")
            .expect_err("unknown key");
    assert!(err.contains("subjet"), "{err}");
    let err = config("[sinks.s]\ntype = \"nats\"\nurl = \"nats://a\"\n").expect_err("no stream");
    assert!(err.contains("stream"), "{err}");
}

#[test]
fn validate_names_the_field() {
    let base = NatsSinkConfig::new("nats://127.0.0.1:4222", "CW", "/tmp/dl");
    let cases: Vec<(NatsSinkConfig, &str)> = vec![
        (
            NatsSinkConfig {
                url: vec![],
                ..base.clone()
            },
            "url",
        ),
        (
            NatsSinkConfig {
                url: vec!["http://x".into()],
                ..base.clone()
            },
            "url[0]",
        ),
        (
            NatsSinkConfig {
                url: vec!["nats://a b".into()],
                ..base.clone()
            },
            "url[0]",
        ),
        (
            NatsSinkConfig {
                stream: "a.b".into(),
                ..base.clone()
            },
            "stream",
        ),
        (
            NatsSinkConfig {
                stream: String::new(),
                ..base.clone()
            },
            "stream",
        ),
        (
            NatsSinkConfig {
                subject: "a.{x}".into(),
                ..base.clone()
            },
            "subject",
        ),
        (
            NatsSinkConfig {
                timeout: std::time::Duration::ZERO,
                ..base.clone()
            },
            "timeout",
        ),
        (
            NatsSinkConfig {
                max_in_flight: 0,
                ..base.clone()
            },
            "max_in_flight",
        ),
        (
            NatsSinkConfig {
                replicas: 6,
                ..base.clone()
            },
            "replicas",
        ),
        (
            NatsSinkConfig {
                max_age: Some(std::time::Duration::from_secs(60)),
                ..base.clone()
            },
            "max_age",
        ),
        (
            NatsSinkConfig {
                cert_file: Some("c.pem".into()),
                ..base.clone()
            },
            "key_file",
        ),
        (
            NatsSinkConfig {
                auth: Some(NatsAuth::Token(NatsSecret::Env(String::new()))),
                ..base.clone()
            },
            "auth.token.env",
        ),
        (
            NatsSinkConfig {
                auth: Some(NatsAuth::UserPassword {
                    user: String::new(),
                    password: NatsSecret::Env("X".into()),
                }),
                ..base.clone()
            },
            "auth.user_password.user",
        ),
    ];
    for (cfg, field) in cases {
        let err = cfg.validate().expect_err(field).to_string();
        assert!(err.contains(&format!("`{field}`")), "{field}: {err}");
    }
}

#[test]
fn secrets_never_show_in_debug() {
    let cfg = NatsSinkConfig {
        auth: Some(NatsAuth::Token(NatsSecret::Value(
            crate::secret::Secret::new("s3cret-token"),
        ))),
        ..NatsSinkConfig::new("nats://127.0.0.1:4222", "CW", "/tmp/dl")
    };
    assert!(!format!("{cfg:?}").contains("s3cret-token"));
}

#[test]
fn headers_carry_the_id_schema_account_kind_and_state() {
    let e = event("acct", EventKind::ChatState, Some("Invited"), Some("c1"));
    let h = service::headers(&e, "CW");
    let get = |k: &str| h.get(k).map(|v| v.as_str().to_owned());
    assert_eq!(get("Nats-Msg-Id").as_deref(), Some(e.event_id.as_str()));
    assert_eq!(get("Nats-Expected-Stream").as_deref(), Some("CW"));
    assert_eq!(
        get(service::HEADER_SCHEMA).as_deref(),
        Some(crate::event::SCHEMA)
    );
    assert_eq!(get(service::HEADER_ACCOUNT).as_deref(), Some("acct"));
    assert_eq!(get(service::HEADER_KIND).as_deref(), Some("chat_state"));
    assert_eq!(get(service::HEADER_STATE).as_deref(), Some("Invited"));
    assert_eq!(service::body(&e), serde_json::to_vec(&e).unwrap());
}
