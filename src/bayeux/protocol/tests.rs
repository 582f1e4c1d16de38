//! Row-by-row tests of the state machine against `reference/bayeux.md` §1.7 and the §4
//! checklist. Time is a plain `Instant` moved by hand; nothing sleeps.

use super::*;
use serde_json::json;

const CHATS: &str = "/v2/me/chats";

fn cfg() -> ProtocolConfig {
    ProtocolConfig {
        channels: vec![CHATS.to_owned()],
        ..ProtocolConfig::default()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn msg_id(req: &Request, index: usize) -> String {
    req.messages[index]["id"].as_str().unwrap().to_owned()
}

fn channels(req: &Request) -> Vec<String> {
    req.messages
        .iter()
        .map(|m| m["channel"].as_str().unwrap().to_owned())
        .collect()
}

fn respond(p: &mut Protocol, now: Instant, req: &Request, body: Value) {
    p.handle_response(now, req.id, Ok(body.to_string().as_bytes()));
}

fn events(p: &mut Protocol) -> Vec<ProtocolEvent> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

fn handshake_ok(req: &Request, client_id: &str) -> Value {
    json!([{"id": msg_id(req, 0), "channel": "/meta/handshake", "successful": true, "version": "1.0",
            "clientId": client_id, "supportedConnectionTypes": ["long-polling", "websocket"],
            "advice": {"reconnect": "retry", "interval": 0, "timeout": 20000}}])
}

fn connect_ok(req: &Request) -> Value {
    json!([{"id": msg_id(req, 0), "channel": "/meta/connect", "successful": true,
            "advice": {"reconnect": "retry", "interval": 0, "timeout": 20000}}])
}

fn subscribe_ok(req: &Request) -> Value {
    Value::Array(
        req.messages
            .iter()
            .map(|m| {
                json!({"id": m["id"], "channel": "/meta/subscribe", "successful": true,
                            "subscription": m["subscription"]})
            })
            .collect(),
    )
}

/// Handshake, subscribe and first connect, all successful. Returns the outstanding (held)
/// connect request.
fn establish(p: &mut Protocol, now: Instant, client_id: &str) -> Request {
    let hs = p.poll_transmit(now).expect("handshake due");
    assert_eq!(channels(&hs), vec!["/meta/handshake"]);
    respond(p, now, &hs, handshake_ok(&hs, client_id));
    let sub = p.poll_transmit(now).expect("subscribe due");
    assert_eq!(sub.kind, RequestKind::Control);
    let connect = p.poll_transmit(now).expect("connect due");
    assert_eq!(connect.kind, RequestKind::Connect);
    respond(p, now, &sub, subscribe_ok(&sub));
    respond(p, now, &connect, connect_ok(&connect));
    let held = p.poll_transmit(now).expect("next connect");
    assert_eq!(held.kind, RequestKind::Connect);
    assert!(p.is_subscribed());
    events(p);
    held
}

fn start() -> (Protocol, Instant) {
    let now = Instant::now();
    (Protocol::new(cfg(), now), now)
}

// ---- basic rules ---------------------------------------------------------------------------

#[test]
fn handshake_travels_alone_and_offers_long_polling() {
    let (mut p, now) = start();
    let hs = p.poll_transmit(now).unwrap();
    assert_eq!(hs.kind, RequestKind::Handshake);
    assert_eq!(hs.messages.len(), 1);
    assert_eq!(hs.messages[0]["version"], "1.0");
    assert_eq!(
        hs.messages[0]["supportedConnectionTypes"],
        json!(["long-polling"])
    );
    assert!(hs.messages[0].get("clientId").is_none());
    assert_eq!(hs.timeout, secs(10));
    assert!(
        p.poll_transmit(now + secs(100)).is_none(),
        "nothing else while handshaking"
    );
}

#[test]
fn first_connect_after_handshake_asks_for_an_immediate_answer() {
    let (mut p, now) = start();
    let hs = p.poll_transmit(now).unwrap();
    respond(&mut p, now, &hs, handshake_ok(&hs, "c1"));
    let sub = p.poll_transmit(now).unwrap();
    assert_eq!(channels(&sub), vec!["/meta/subscribe"]);
    assert_eq!(sub.messages[0]["subscription"], CHATS);
    assert_eq!(sub.messages[0]["clientId"], "c1");
    let c1 = p.poll_transmit(now).unwrap();
    assert_eq!(c1.messages[0]["advice"], json!({"timeout": 0}));
    assert_eq!(c1.messages[0]["connectionType"], "long-polling");
    assert_eq!(c1.timeout, secs(10), "timeout 0 + maxNetworkDelay");
    respond(&mut p, now, &c1, connect_ok(&c1));
    let c2 = p.poll_transmit(now).unwrap();
    assert!(
        c2.messages[0].get("advice").is_none(),
        "later connects are held"
    );
    assert_eq!(
        c2.timeout,
        secs(30),
        "advice.timeout 20 s + maxNetworkDelay 10 s"
    );
}

#[test]
fn exactly_one_connect_is_outstanding_and_subscribes_travel_beside_it() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    for later in [0, 1, 25, 1000] {
        assert!(
            p.poll_transmit(now + secs(later)).is_none(),
            "no second connect while one is held"
        );
    }
    p.subscribe("/v2/me/calls");
    let sub = p
        .poll_transmit(now)
        .expect("subscribe goes while the connect is held");
    assert_eq!(sub.kind, RequestKind::Control);
    assert_eq!(sub.messages[0]["subscription"], "/v2/me/calls");
    assert!(p.poll_transmit(now).is_none());
    respond(&mut p, now, &held, connect_ok(&held));
    assert_eq!(p.poll_transmit(now).unwrap().kind, RequestKind::Connect);
}

#[test]
fn a_reply_is_told_from_a_delivery_by_successful_even_when_ids_collide() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    let id = msg_id(&held, 0);
    // Faye stamps deliveries with the publisher's ids, which can equal ours.
    respond(
        &mut p,
        now,
        &held,
        json!([
            {"channel": CHATS, "id": id, "data": {"n": 1}},
            {"channel": "/meta/connect", "id": id, "successful": true},
            {"channel": CHATS, "id": id, "data": {"n": 2}},
        ]),
    );
    let ev = events(&mut p);
    let data: Vec<Value> = ev
        .iter()
        .filter_map(|e| match e {
            ProtocolEvent::Delivery(d) => Some(d.data.to_value().expect("valid JSON")),
            _ => None,
        })
        .collect();
    assert_eq!(data, vec![json!({"n": 1}), json!({"n": 2})]);
    assert_eq!(p.state(), SessionState::Connected);
    assert_eq!(
        p.poll_transmit(now).unwrap().kind,
        RequestKind::Connect,
        "reply was processed"
    );
}

#[test]
fn deliveries_are_accepted_on_any_reply_and_in_a_single_object_response() {
    let (mut p, now) = start();
    let hs = p.poll_transmit(now).unwrap();
    respond(&mut p, now, &hs, handshake_ok(&hs, "c1"));
    let sub = p.poll_transmit(now).unwrap();
    let mut body = subscribe_ok(&sub);
    body.as_array_mut()
        .unwrap()
        .insert(0, json!({"channel": CHATS, "data": {"on": "subscribe"}}));
    respond(&mut p, now, &sub, body);
    let c = p.poll_transmit(now).unwrap();
    respond(
        &mut p,
        now,
        &c,
        json!({"channel": "/meta/connect", "id": msg_id(&c, 0), "successful": true}),
    );
    let ev = events(&mut p);
    assert!(ev.contains(&ProtocolEvent::Delivery(RawDelivery {
        channel: CHATS.to_owned(),
        data: json!({"on": "subscribe"}).into(),
        id: None
    })));
    assert!(ev.contains(&ProtocolEvent::Connected));
}

#[test]
fn globs_dispatch_by_the_concrete_channel() {
    let now = Instant::now();
    let mut p = Protocol::new(
        ProtocolConfig {
            channels: vec!["/v2/me/*".to_owned()],
            ..cfg()
        },
        now,
    );
    let held = establish(&mut p, now, "c1");
    respond(
        &mut p,
        now,
        &held,
        json!([
            {"channel": "/meta/connect", "id": msg_id(&held, 0), "successful": true},
            {"channel": "/v2/me/chats", "data": 1},
            {"channel": "/v2/me/chats/deep", "data": 2},
            {"channel": "/v2/other", "data": 3},
        ]),
    );
    let ev = events(&mut p);
    let delivered: Vec<&str> = ev
        .iter()
        .filter_map(|e| match e {
            ProtocolEvent::Delivery(d) => Some(d.channel.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec!["/v2/me/chats"]);
    let dropped = ev
        .iter()
        .filter(|e| matches!(e, ProtocolEvent::Unroutable { .. }))
        .count();
    assert_eq!(dropped, 2);
}

// ---- the failure table (reference/bayeux.md §1.7), one test per row -----------------------

#[test]
fn row_handshake_refused_with_handshake_advice_or_none_is_retried_after_backoff() {
    for advice in [
        json!({"reconnect": "handshake", "interval": 0}),
        Value::Null,
    ] {
        let (mut p, now) = start();
        let hs = p.poll_transmit(now).unwrap();
        let mut reply = json!({"id": msg_id(&hs, 0), "channel": "/meta/handshake", "successful": false,
                               "error": "500::busy"});
        if !advice.is_null() {
            reply["advice"] = advice.clone();
        }
        respond(&mut p, now, &hs, json!([reply]));
        let ev = events(&mut p);
        assert!(
            matches!(&ev[..], [ProtocolEvent::HandshakeFailed { retry_in, .. }] if *retry_in == secs(1)),
            "{ev:?}"
        );
        assert!(p.poll_transmit(now + Duration::from_millis(999)).is_none());
        assert_eq!(p.poll_timeout(), Some(now + secs(1)));
        assert_eq!(
            p.poll_transmit(now + secs(1)).unwrap().kind,
            RequestKind::Handshake
        );
    }
}

#[test]
fn row_handshake_denied_with_advice_none_stops_until_restarted() {
    let (mut p, now) = start();
    let hs = p.poll_transmit(now).unwrap();
    respond(
        &mut p,
        now,
        &hs,
        json!([{"id": msg_id(&hs, 0), "channel": "/meta/handshake", "successful": false,
                "error": "403::Handshake denied", "advice": {"reconnect": "none"}}]),
    );
    assert!(
        matches!(&events(&mut p)[..], [ProtocolEvent::Terminated { error }] if error.contains("Handshake denied"))
    );
    assert_eq!(p.state(), SessionState::Terminated);
    assert!(p.poll_transmit(now + secs(3600)).is_none());
    assert_eq!(p.poll_timeout(), None);
    p.restart(now, secs(60));
    assert!(p.poll_transmit(now + secs(59)).is_none());
    assert_eq!(
        p.poll_transmit(now + secs(60)).unwrap().kind,
        RequestKind::Handshake
    );
}

#[test]
fn row_handshake_transport_error_is_retried_with_growing_capped_backoff() {
    let (mut p, mut now) = start();
    let mut delays = Vec::new();
    for _ in 0..35 {
        let hs = p.poll_transmit(now).expect("handshake");
        assert_eq!(hs.kind, RequestKind::Handshake);
        p.handle_response(
            now,
            hs.id,
            Err(TransportError::Connect("connection refused".into())),
        );
        let Some(ProtocolEvent::HandshakeFailed { retry_in, .. }) = p.poll_event() else {
            panic!("expected HandshakeFailed")
        };
        delays.push(retry_in.as_secs());
        now += retry_in;
    }
    assert_eq!(&delays[..4], &[1, 2, 3, 4]);
    assert_eq!(*delays.last().unwrap(), 30, "capped at max_backoff");
}

#[test]
fn row_connect_success_resets_backoff_and_honours_interval() {
    let (mut p, mut now) = start();
    let held = establish(&mut p, now, "c1");
    p.handle_response(now, held.id, Err(TransportError::Timeout(secs(30))));
    now += secs(1);
    let c = p.poll_transmit(now).unwrap();
    p.handle_response(now, c.id, Err(TransportError::Connect("refused".into())));
    assert_eq!(p.current_backoff(), secs(2));
    now += secs(2);
    let c = p.poll_transmit(now).unwrap();
    respond(
        &mut p,
        now,
        &c,
        json!([{"id": msg_id(&c, 0), "channel": "/meta/connect", "successful": true,
                "advice": {"reconnect": "retry", "interval": 500, "timeout": 15000}}]),
    );
    assert_eq!(p.current_backoff(), Duration::ZERO, "backoff reset");
    assert!(events(&mut p).contains(&ProtocolEvent::Connected));
    assert!(
        p.poll_transmit(now + Duration::from_millis(499)).is_none(),
        "interval honoured"
    );
    let next = p.poll_transmit(now + Duration::from_millis(500)).unwrap();
    assert_eq!(
        next.timeout,
        secs(25),
        "new advice.timeout 15 s + maxNetworkDelay"
    );
    p.handle_response(now, next.id, Err(TransportError::Io("reset".into())));
    assert!(
        matches!(p.poll_event(), Some(ProtocolEvent::ConnectFailed { retry_in, .. }) if retry_in == secs(1)),
        "backoff starts again from one step"
    );
}

#[test]
fn row_connect_refused_with_retry_advice_backs_off_and_keeps_the_session() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    respond(
        &mut p,
        now,
        &held,
        json!([{"id": msg_id(&held, 0), "channel": "/meta/connect", "successful": false,
                "error": "500::overloaded", "advice": {"reconnect": "retry", "interval": 0}}]),
    );
    assert!(
        matches!(p.poll_event(), Some(ProtocolEvent::ConnectFailed { retry_in, .. }) if retry_in == secs(1))
    );
    assert!(p.poll_transmit(now).is_none());
    let retry = p.poll_transmit(now + secs(1)).unwrap();
    assert_eq!(retry.kind, RequestKind::Connect);
    assert_eq!(retry.messages[0]["clientId"], "c1");
    assert_eq!(
        retry.messages[0]["advice"],
        json!({"timeout": 0}),
        "first connect after a failure"
    );
}

#[test]
fn row_unknown_client_from_every_server_family_rehandshakes_at_once_and_resubscribes() {
    for error in [
        "401:c1:Unknown client",
        "402::session_unknown",
        "402::Unknown client",
        "403::Unknown client",
    ] {
        let (mut p, now) = start();
        p.subscribe("/v2/me/calls");
        let held = establish(&mut p, now, "c1");
        respond(
            &mut p,
            now,
            &held,
            json!([{"id": msg_id(&held, 0), "channel": "/meta/connect", "successful": false,
                    "error": error, "advice": {"reconnect": "handshake", "interval": 0}}]),
        );
        assert!(
            matches!(p.poll_event(), Some(ProtocolEvent::SessionLost { cause: RehandshakeCause::Advice, retry_in }) if retry_in.is_zero()),
            "{error}"
        );
        let hs = p.poll_transmit(now).expect("handshake at once");
        assert_eq!(
            channels(&hs),
            vec!["/meta/handshake"],
            "the old connect is not sent again"
        );
        respond(&mut p, now, &hs, handshake_ok(&hs, "c2"));
        let sub = p.poll_transmit(now).unwrap();
        let mut subs: Vec<&str> = sub
            .messages
            .iter()
            .map(|m| m["subscription"].as_str().unwrap())
            .collect();
        subs.sort();
        assert_eq!(
            subs,
            vec!["/v2/me/calls", CHATS],
            "the whole desired set, batched"
        );
        assert!(sub.messages.iter().all(|m| m["clientId"] == "c2"));
        let c = p.poll_transmit(now).unwrap();
        assert_eq!(c.messages[0]["clientId"], "c2");
        assert_eq!(c.messages[0]["advice"], json!({"timeout": 0}));
        respond(&mut p, now, &sub, subscribe_ok(&sub));
        respond(&mut p, now, &c, connect_ok(&c));
        let ev = events(&mut p);
        assert!(ev.contains(&ProtocolEvent::SubscriptionsComplete {
            resubscribed: true,
            channels: 2
        }));
    }
}

#[test]
fn row_unknown_client_without_advice_is_recognised_by_its_error() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    respond(
        &mut p,
        now,
        &held,
        json!([{"id": msg_id(&held, 0), "channel": "/meta/connect", "successful": false, "error": "402::Unknown client"}]),
    );
    assert!(matches!(
        p.poll_event(),
        Some(ProtocolEvent::SessionLost {
            cause: RehandshakeCause::UnknownSession,
            ..
        })
    ));
    assert_eq!(p.poll_transmit(now).unwrap().kind, RequestKind::Handshake);
}

#[test]
fn row_connect_with_advice_none_stops_the_session() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    respond(
        &mut p,
        now,
        &held,
        json!([{"id": msg_id(&held, 0), "channel": "/meta/connect", "successful": false,
                "error": "401::Authentication invalid", "advice": {"reconnect": "none"}}]),
    );
    assert!(matches!(
        p.poll_event(),
        Some(ProtocolEvent::Terminated { .. })
    ));
    assert!(p.poll_transmit(now + secs(3600)).is_none());
    assert!(p.client_id().is_none());
}

#[test]
fn row_http_error_or_unparseable_body_is_a_transport_failure() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    p.handle_response(
        now,
        held.id,
        Err(TransportError::Status {
            status: 500,
            body: "boom".into(),
        }),
    );
    assert!(matches!(
        p.poll_event(),
        Some(ProtocolEvent::ConnectFailed { .. })
    ));
    let c = p.poll_transmit(now + secs(1)).unwrap();
    p.handle_response(now + secs(1), c.id, Ok(b"this is not json{{"));
    let ev = events(&mut p);
    assert!(
        matches!(ev[0], ProtocolEvent::InvalidResponse { .. }),
        "{ev:?}"
    );
    assert!(matches!(ev[1], ProtocolEvent::ConnectFailed { retry_in, .. } if retry_in == secs(2)));
    let c = p.poll_transmit(now + secs(3)).unwrap();
    assert_eq!(
        c.messages[0]["clientId"], "c1",
        "same session, connect retried"
    );
    // 401/403 at HTTP level: the credentials or the session are refused: new handshake.
    p.handle_response(
        now + secs(3),
        c.id,
        Err(TransportError::Status {
            status: 403,
            body: "Forbidden".into(),
        }),
    );
    assert!(matches!(
        p.poll_event(),
        Some(ProtocolEvent::SessionLost {
            cause: RehandshakeCause::HttpAuth(403),
            ..
        })
    ));
}

#[test]
fn row_request_timeout_marks_unconnected_and_retries_with_an_immediate_connect() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    assert_eq!(
        held.timeout,
        secs(30),
        "the driver aborts the connect after timeout + maxNetworkDelay"
    );
    p.handle_response(
        now + secs(30),
        held.id,
        Err(TransportError::Timeout(held.timeout)),
    );
    assert_eq!(p.state(), SessionState::Unconnected);
    let retry = p.poll_transmit(now + secs(31)).unwrap();
    assert_eq!(retry.messages[0]["advice"], json!({"timeout": 0}));
    assert_eq!(retry.timeout, secs(10));
}

#[test]
fn row_unconnected_past_the_session_lifetime_switches_to_handshake() {
    let (mut p, mut now) = start();
    let held = establish(&mut p, now, "c1");
    // advice: timeout 20 s, interval 0, maxInterval default 10 s → the server keeps the session
    // about 30 s after the last connect.
    p.handle_response(now, held.id, Err(TransportError::Connect("refused".into())));
    let mut elapsed = Duration::ZERO;
    loop {
        match p.poll_event() {
            Some(ProtocolEvent::ConnectFailed { retry_in, .. }) => {
                elapsed += retry_in;
                now += retry_in;
                let c = p.poll_transmit(now).expect("connect retry");
                assert_eq!(c.kind, RequestKind::Connect);
                p.handle_response(now, c.id, Err(TransportError::Connect("refused".into())));
            }
            Some(ProtocolEvent::SessionLost {
                cause: RehandshakeCause::SessionExpired,
                retry_in,
            }) => {
                assert!(
                    elapsed + retry_in > secs(30),
                    "switched only once the budget was spent"
                );
                assert!(elapsed <= secs(30));
                now += retry_in;
                assert_eq!(p.poll_transmit(now).unwrap().kind, RequestKind::Handshake);
                return;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn row_server_restart_fails_at_transport_level_then_reports_unknown_client() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    p.handle_response(
        now,
        held.id,
        Err(TransportError::Connect("connection refused".into())),
    );
    let c = p.poll_transmit(now + secs(1)).unwrap();
    respond(
        &mut p,
        now + secs(1),
        &c,
        json!([{"id": msg_id(&c, 0), "channel": "/meta/connect", "successful": false,
                "error": "402::Unknown client", "advice": {"reconnect": "handshake", "interval": 0}}]),
    );
    let ev = events(&mut p);
    assert!(
        matches!(ev.last(), Some(ProtocolEvent::SessionLost { cause: RehandshakeCause::Advice, retry_in }) if retry_in.is_zero())
    );
    let hs = p.poll_transmit(now + secs(1)).unwrap();
    respond(&mut p, now + secs(1), &hs, handshake_ok(&hs, "c2"));
    let sub = p.poll_transmit(now + secs(1)).unwrap();
    assert_eq!(sub.messages[0]["channel"], "/meta/subscribe");
}

#[test]
fn row_subscribe_refused_is_reported_per_channel_and_retried() {
    let (mut p, now) = start();
    let hs = p.poll_transmit(now).unwrap();
    respond(&mut p, now, &hs, handshake_ok(&hs, "c1"));
    let sub = p.poll_transmit(now).unwrap();
    let c = p.poll_transmit(now).unwrap();
    respond(
        &mut p,
        now,
        &sub,
        json!([{"id": msg_id(&sub, 0), "channel": "/meta/subscribe", "successful": false,
                "subscription": CHATS, "error": "403:c1,/v2/me/chats:Subscription denied"}]),
    );
    respond(&mut p, now, &c, connect_ok(&c));
    let ev = events(&mut p);
    assert!(ev.iter().any(|e| matches!(e, ProtocolEvent::SubscribeFailed { channel, retry_in, .. } if channel == CHATS && *retry_in == secs(1))));
    assert!(!ev
        .iter()
        .any(|e| matches!(e, ProtocolEvent::SubscriptionsComplete { .. })));
    assert!(!p.is_subscribed());
    let _held = p.poll_transmit(now).unwrap();
    assert!(p.poll_transmit(now + Duration::from_millis(999)).is_none());
    let again = p.poll_transmit(now + secs(1)).expect("subscribe retried");
    assert_eq!(again.messages[0]["subscription"], CHATS);
    respond(&mut p, now + secs(1), &again, subscribe_ok(&again));
    assert!(p.is_subscribed());
}

#[test]
fn row_delivery_on_a_channel_without_subscriber_is_dropped_and_reported() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    respond(
        &mut p,
        now,
        &held,
        json!([{"channel": "/v2/me/calls", "data": {}}, {"id": msg_id(&held, 0), "channel": "/meta/connect", "successful": true}]),
    );
    let ev = events(&mut p);
    assert!(ev.contains(&ProtocolEvent::Unroutable {
        channel: "/v2/me/calls".into()
    }));
    assert!(!ev.iter().any(|e| matches!(e, ProtocolEvent::Delivery(_))));
}

// ---- beyond the table ----------------------------------------------------------------------

#[test]
fn a_held_connect_of_a_lost_session_is_waited_for_not_cancelled_and_its_events_kept() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    // A subscribe reply reveals the session is gone while the connect is still held.
    p.subscribe("/v2/me/calls");
    let sub = p.poll_transmit(now).unwrap();
    respond(
        &mut p,
        now,
        &sub,
        json!([{"id": msg_id(&sub, 0), "channel": "/meta/subscribe", "successful": false,
                "error": "402::Unknown client", "advice": {"reconnect": "handshake"}}]),
    );
    assert!(matches!(
        p.poll_event(),
        Some(ProtocolEvent::SessionLost { .. })
    ));
    let hs = p
        .poll_transmit(now)
        .expect("handshake does not wait for the stale connect");
    respond(&mut p, now, &hs, handshake_ok(&hs, "c2"));
    let _sub = p.poll_transmit(now).unwrap();
    let c = p.poll_transmit(now).expect("the new session connects");
    assert_eq!(c.messages[0]["clientId"], "c2");
    // The old connect finally returns with an event: the event is kept, its reply ignored.
    respond(
        &mut p,
        now,
        &held,
        json!([{"channel": CHATS, "data": {"late": true}}, {"id": msg_id(&held, 0), "channel": "/meta/connect", "successful": true}]),
    );
    let ev = events(&mut p);
    assert!(ev
        .iter()
        .any(|e| matches!(e, ProtocolEvent::Delivery(d) if d.data.to_value().ok() == Some(json!({"late": true})))));
    assert!(
        p.poll_transmit(now).is_none(),
        "still exactly one connect for c2"
    );
}

#[test]
fn a_response_without_the_connect_reply_counts_as_a_failed_connect() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    respond(
        &mut p,
        now,
        &held,
        json!([{"id": "999", "channel": "/meta/connect", "successful": true}, {"channel": CHATS, "data": 1}]),
    );
    let ev = events(&mut p);
    assert!(ev.iter().any(|e| matches!(e, ProtocolEvent::Delivery(_))));
    assert!(ev
        .iter()
        .any(|e| matches!(e, ProtocolEvent::MismatchedReply { .. })));
    assert!(ev
        .iter()
        .any(|e| matches!(e, ProtocolEvent::ConnectFailed { .. })));
}

#[test]
fn repeated_unknown_client_right_after_handshake_backs_off_instead_of_storming() {
    let (mut p, now) = start();
    let hs = p.poll_transmit(now).unwrap();
    respond(&mut p, now, &hs, handshake_ok(&hs, "c1"));
    let _sub = p.poll_transmit(now).unwrap();
    let c = p.poll_transmit(now).unwrap();
    respond(
        &mut p,
        now,
        &c,
        json!([{"id": msg_id(&c, 0), "channel": "/meta/connect", "successful": false,
                "error": "403::Unknown client", "advice": {"reconnect": "handshake"}}]),
    );
    let ev = events(&mut p);
    assert!(
        matches!(ev.last(), Some(ProtocolEvent::SessionLost { retry_in, .. }) if *retry_in == secs(1)),
        "{ev:?}"
    );
    assert!(p.poll_transmit(now).is_none());
    assert_eq!(
        p.poll_transmit(now + secs(1)).unwrap().kind,
        RequestKind::Handshake
    );
}

#[test]
fn multiple_clients_advice_is_reported_and_its_interval_honoured() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    respond(
        &mut p,
        now,
        &held,
        json!([{"id": msg_id(&held, 0), "channel": "/meta/connect", "successful": true,
                "advice": {"reconnect": "retry", "interval": 2000, "multiple-clients": true, "timeout": 20000}}]),
    );
    assert!(events(&mut p).contains(&ProtocolEvent::MultipleClients));
    assert!(p.poll_transmit(now + Duration::from_millis(1999)).is_none());
    assert!(p.poll_transmit(now + secs(2)).is_some());
}

#[test]
fn a_handshake_offering_no_common_transport_fails() {
    let (mut p, now) = start();
    let hs = p.poll_transmit(now).unwrap();
    respond(
        &mut p,
        now,
        &hs,
        json!([{"id": msg_id(&hs, 0), "channel": "/meta/handshake", "successful": true, "clientId": "c1",
                "supportedConnectionTypes": ["websocket"]}]),
    );
    assert!(
        matches!(p.poll_event(), Some(ProtocolEvent::HandshakeFailed { error, .. }) if error.contains("websocket"))
    );
}

#[test]
fn disconnect_sends_meta_disconnect_and_finishes_after_the_held_connect_returns() {
    let (mut p, now) = start();
    let held = establish(&mut p, now, "c1");
    p.disconnect();
    let d = p.poll_transmit(now).unwrap();
    assert_eq!(channels(&d), vec!["/meta/disconnect"]);
    assert_eq!(d.messages[0]["clientId"], "c1");
    assert!(
        p.poll_transmit(now + secs(100)).is_none(),
        "no connect after disconnect"
    );
    respond(
        &mut p,
        now,
        &d,
        json!([{"id": msg_id(&d, 0), "channel": "/meta/disconnect", "successful": true}]),
    );
    assert!(events(&mut p).contains(&ProtocolEvent::Disconnected));
    assert!(!p.is_finished(), "the held connect is still out");
    respond(
        &mut p,
        now,
        &held,
        json!([{"channel": CHATS, "data": "last"}, {"id": msg_id(&held, 0), "channel": "/meta/connect", "successful": true}]),
    );
    assert!(events(&mut p)
        .iter()
        .any(|e| matches!(e, ProtocolEvent::Delivery(_))));
    assert!(p.is_finished());
}

#[test]
fn disconnect_before_any_session_finishes_at_once() {
    let (mut p, now) = start();
    p.disconnect();
    assert!(p.is_finished());
    assert!(p.poll_transmit(now).is_none());
}

#[test]
fn unsubscribe_is_sent_for_channels_no_longer_desired() {
    let (mut p, now) = start();
    let _held = establish(&mut p, now, "c1");
    p.unsubscribe(CHATS);
    let u = p.poll_transmit(now).unwrap();
    assert_eq!(channels(&u), vec!["/meta/unsubscribe"]);
    respond(
        &mut p,
        now,
        &u,
        json!([{"id": msg_id(&u, 0), "channel": "/meta/unsubscribe", "successful": true, "subscription": CHATS}]),
    );
    assert!(events(&mut p).contains(&ProtocolEvent::Unsubscribed {
        channel: CHATS.into()
    }));
}

// ---- login hook (GWS: GET /api/v2/me before the handshake) -----------------------------------

fn login_cfg() -> ProtocolConfig {
    ProtocolConfig {
        requires_login: true,
        ..cfg()
    }
}

#[test]
fn login_comes_before_the_first_handshake_and_failures_back_off() {
    let now = Instant::now();
    let mut p = Protocol::new(login_cfg(), now);
    assert!(p.poll_transmit(now).is_none());
    assert_eq!(p.poll_event(), Some(ProtocolEvent::LoginRequired));
    assert!(
        p.poll_transmit(now + secs(100)).is_none(),
        "no handshake while logging in"
    );
    p.login_failed(now, "HTTP 401".into());
    assert!(
        matches!(p.poll_event(), Some(ProtocolEvent::LoginFailed { retry_in, .. }) if retry_in == secs(1))
    );
    assert!(p.poll_transmit(now).is_none());
    assert!(p.poll_event().is_none(), "not before the backoff");
    assert_eq!(p.poll_timeout(), Some(now + secs(1)));
    assert!(p.poll_transmit(now + secs(1)).is_none());
    assert_eq!(p.poll_event(), Some(ProtocolEvent::LoginRequired));
    p.login_failed(now + secs(1), "HTTP 401".into());
    assert!(
        matches!(p.poll_event(), Some(ProtocolEvent::LoginFailed { retry_in, .. }) if retry_in == secs(2)),
        "growing"
    );
    assert!(p.poll_transmit(now + secs(3)).is_none());
    assert_eq!(p.poll_event(), Some(ProtocolEvent::LoginRequired));
    p.logged_in(now + secs(3));
    assert_eq!(
        p.poll_transmit(now + secs(3)).unwrap().kind,
        RequestKind::Handshake
    );
}

#[test]
fn http_401_or_403_on_bayeux_requires_a_new_login_before_the_handshake() {
    let now = Instant::now();
    let mut p = Protocol::new(login_cfg(), now);
    p.poll_transmit(now);
    p.logged_in(now);
    let held = establish(&mut p, now, "c1");
    p.handle_response(
        now,
        held.id,
        Err(TransportError::Status {
            status: 403,
            body: "Missing or invalid Csrf token".into(),
        }),
    );
    assert!(matches!(
        p.poll_event(),
        Some(ProtocolEvent::SessionLost {
            cause: RehandshakeCause::HttpAuth(403),
            ..
        })
    ));
    assert!(p.poll_transmit(now + secs(1)).is_none());
    assert_eq!(p.poll_event(), Some(ProtocolEvent::LoginRequired));
    p.logged_in(now + secs(1));
    assert_eq!(
        p.poll_transmit(now + secs(1)).unwrap().kind,
        RequestKind::Handshake
    );

    // A handshake refused at HTTP level also sends us back to log in.
    let hs_now = now + secs(1);
    let hs = {
        // the handshake above is in flight; fail it
        let id = p.inflight.keys().copied().next().unwrap();
        id
    };
    p.handle_response(
        hs_now,
        hs,
        Err(TransportError::Status {
            status: 401,
            body: "".into(),
        }),
    );
    events(&mut p);
    assert!(p.poll_transmit(hs_now + secs(30)).is_none());
    assert_eq!(p.poll_event(), Some(ProtocolEvent::LoginRequired));
}

// ---- ack extension (reference/bayeux.md §2.5) and pushed messages (WebSocket) -------------

fn ack_cfg() -> ProtocolConfig {
    ProtocolConfig {
        ack: true,
        connection_type: "websocket".to_owned(),
        supported_connection_types: vec!["websocket".to_owned(), "long-polling".to_owned()],
        ..cfg()
    }
}

#[test]
fn the_handshake_asks_for_ack_and_lists_every_transport() {
    let now = Instant::now();
    let mut p = Protocol::new(ack_cfg(), now);
    let hs = p.poll_transmit(now).unwrap();
    assert_eq!(hs.messages[0]["ext"]["ack"], true);
    assert_eq!(
        hs.messages[0]["supportedConnectionTypes"],
        json!(["websocket", "long-polling"])
    );
    // Without the option nothing is asked.
    let mut plain = Protocol::new(cfg(), now);
    let hs = plain.poll_transmit(now).unwrap();
    assert!(hs.messages[0].get("ext").is_none());
    assert_eq!(
        hs.messages[0]["supportedConnectionTypes"],
        json!(["long-polling"])
    );
}

/// A handshake reply granting ack (old format `true` or the object format).
fn granting(req: &Request, client_id: &str, ack: Value) -> Value {
    let mut reply = handshake_ok(req, client_id);
    reply[0]["ext"] = json!({"ack": ack});
    reply
}

#[test]
fn ack_batches_travel_on_every_connect_and_reset_on_handshake() {
    let now = Instant::now();
    let mut p = Protocol::new(ack_cfg(), now);
    let hs = p.poll_transmit(now).unwrap();
    respond(&mut p, now, &hs, granting(&hs, "c1", json!(true)));
    assert!(p.ack_enabled());
    assert!(events(&mut p).contains(&ProtocolEvent::AckEnabled));
    let sub = p.poll_transmit(now).unwrap();
    let connect = p.poll_transmit(now).unwrap();
    assert_eq!(connect.messages[0]["connectionType"], "websocket");
    assert_eq!(connect.messages[0]["ext"]["ack"], 0);
    respond(&mut p, now, &sub, subscribe_ok(&sub));
    // The connect reply carries batch 7 and two deliveries.
    let mut reply = connect_ok(&connect);
    reply[0]["ext"] = json!({"ack": 7});
    reply
        .as_array_mut()
        .unwrap()
        .push(json!({"channel": CHATS, "id": "m1", "data": {"n": 1}}));
    respond(&mut p, now, &connect, reply);
    let next = p.poll_transmit(now).unwrap();
    assert_eq!(
        next.messages[0]["ext"]["ack"], 7,
        "the last batch received is acknowledged"
    );
    // A new handshake resets the batch (the object format names the starting batch).
    respond(
        &mut p,
        now,
        &next,
        json!([{"id": msg_id(&next, 0), "channel": "/meta/connect", "successful": false,
                "error": "402::Unknown client", "advice": {"reconnect": "handshake"}}]),
    );
    let hs = p.poll_transmit(now).unwrap();
    respond(
        &mut p,
        now,
        &hs,
        granting(&hs, "c2", json!({"enabled": true, "batch": 3})),
    );
    let _sub = p.poll_transmit(now).unwrap();
    let connect = p.poll_transmit(now).unwrap();
    assert_eq!(connect.messages[0]["ext"]["ack"], 3);
}

#[test]
fn without_the_grant_no_ack_is_sent() {
    let now = Instant::now();
    let mut p = Protocol::new(ack_cfg(), now);
    let hs = p.poll_transmit(now).unwrap();
    respond(&mut p, now, &hs, handshake_ok(&hs, "c1"));
    assert!(!p.ack_enabled());
    let _sub = p.poll_transmit(now).unwrap();
    let connect = p.poll_transmit(now).unwrap();
    assert!(connect.messages[0].get("ext").is_none());
}

#[test]
fn redelivered_messages_are_dropped_once_ack_is_on() {
    let now = Instant::now();
    let mut p = Protocol::new(ack_cfg(), now);
    let hs = p.poll_transmit(now).unwrap();
    respond(&mut p, now, &hs, granting(&hs, "c1", json!(true)));
    let sub = p.poll_transmit(now).unwrap();
    let connect = p.poll_transmit(now).unwrap();
    respond(&mut p, now, &sub, subscribe_ok(&sub));
    respond(&mut p, now, &connect, connect_ok(&connect));
    events(&mut p);
    let batch = json!([
        {"channel": CHATS, "id": "m1", "data": {"n": 1}},
        {"channel": CHATS, "id": "m2", "data": {"n": 2}},
    ]);
    p.handle_push(batch.to_string().as_bytes());
    // The server redelivers the same batch (its ack was lost), then a message that reuses an id
    // with other data (another publisher's id): only that one is new.
    let again = json!([
        {"channel": CHATS, "id": "m1", "data": {"n": 1}},
        {"channel": CHATS, "id": "m2", "data": {"n": 2}},
        {"channel": CHATS, "id": "m1", "data": {"n": 3}},
    ]);
    p.handle_push(again.to_string().as_bytes());
    let ev = events(&mut p);
    let delivered: Vec<String> = ev
        .iter()
        .filter_map(|e| match e {
            ProtocolEvent::Delivery(d) => Some(d.data.get().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    let dropped = ev
        .iter()
        .filter(|e| matches!(e, ProtocolEvent::DuplicateDropped { .. }))
        .count();
    assert_eq!(dropped, 2);
}

#[test]
fn pushed_frames_route_deliveries_and_report_stray_replies() {
    let now = Instant::now();
    let mut p = Protocol::new(cfg(), now);
    let _held = establish(&mut p, now, "c1");
    p.handle_push(
        json!([{"channel": CHATS, "data": {"n": 1}},
               {"id": "99", "channel": "/meta/connect", "successful": true},
               {"channel": "/meta/disconnect"}])
        .to_string()
        .as_bytes(),
    );
    let ev = events(&mut p);
    assert!(ev
        .iter()
        .any(|e| matches!(e, ProtocolEvent::Delivery(d) if d.channel == CHATS)));
    assert!(ev.contains(&ProtocolEvent::MismatchedReply {
        channel: "/meta/connect".into(),
        id: Some("99".into())
    }));
    assert_eq!(ev.len(), 2, "a pushed meta message carries nothing: {ev:?}");
    // Garbage is reported, not fatal.
    p.handle_push(b"binary frame");
    assert!(matches!(
        events(&mut p).as_slice(),
        [ProtocolEvent::InvalidResponse { .. }]
    ));
    // Without ack, the same id twice is delivered twice (ids are the publisher's).
    let twice =
        json!([{"channel": CHATS, "id": "m", "data": 1}, {"channel": CHATS, "id": "m", "data": 1}]);
    p.handle_push(twice.to_string().as_bytes());
    let n = events(&mut p)
        .iter()
        .filter(|e| matches!(e, ProtocolEvent::Delivery(_)))
        .count();
    assert_eq!(n, 2);
}

#[test]
fn switching_the_connection_type_changes_later_connects() {
    let now = Instant::now();
    let mut p = Protocol::new(ack_cfg(), now);
    assert_eq!(p.connection_type(), "websocket");
    p.set_connection_type("long-polling");
    let hs = p.poll_transmit(now).unwrap();
    respond(&mut p, now, &hs, handshake_ok(&hs, "c1"));
    let _sub = p.poll_transmit(now).unwrap();
    let connect = p.poll_transmit(now).unwrap();
    assert_eq!(connect.messages[0]["connectionType"], "long-polling");
}
