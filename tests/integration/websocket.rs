//! The WebSocket transport, through the real binary against a real Faye server on loopback: the
//! long-polling matrix on WebSocket (10,000 events in order, sessions forgotten mid-stream, the
//! server killed and restarted), the upgrade refused (fallback to long-polling, nothing lost),
//! and a socket that goes silent without closing (detected after the connect's hold time plus
//! `max_network_delay`, replaced, nothing published afterwards lost).

use std::time::Duration;

use crate::support::{assert_sequence, Daemon, Faye};
use serde_json::json;
use tokio::time::Instant;

/// Faye holds each connect this long (seconds).
const HOLD: u32 = 2;
/// WebSocket only: a failure cannot hide behind a fallback.
const WS_ONLY: &str = r#"["websocket"]"#;

async fn on_websocket(faye: &Faye, daemon: &Daemon) {
    daemon
        .wait_log("WebSocket works; staying on it across reconnects", 0)
        .await;
    let state = faye.state().await;
    assert!(
        state["websocket"]["upgrades"].as_u64().unwrap() >= 1,
        "{state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_over_websocket_in_order_without_loss_or_duplicates() {
    let faye = Faye::start(0, HOLD);
    let daemon = Daemon::start_on(faye.port, WS_ONLY, "");
    daemon.wait_listening(1).await;
    on_websocket(&faye, &daemon).await;
    faye.publish(0, 10_000).await;
    let events = daemon.wait_events(10_000).await;
    assert_sequence(&events, 10_000);
    let ids: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 10_000);
    faye.publish(10_000, 1).await;
    assert_sequence(&daemon.wait_events(10_001).await, 10_001);
    // Every long poll went over the socket: no HTTP Bayeux request at all.
    assert_eq!(faye.state().await["requests"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_sessions_are_rehandshaken_over_websocket() {
    let faye = Faye::start(0, HOLD);
    let daemon = Daemon::start_on(faye.port, WS_ONLY, "");
    daemon.wait_listening(1).await;
    faye.publish(0, 300).await;
    daemon.wait_events(300).await;
    for round in 1..=3u64 {
        assert!(faye.drop_sessions().await >= 1);
        daemon.wait_listening(1 + round as usize).await;
        faye.publish(300 * round, 300).await;
        assert_sequence(
            &daemon.wait_events(300 * (round as usize + 1)).await,
            300 * (round + 1),
        );
    }
    assert_eq!(faye.subscribed_clients().await, 1, "no leaked sessions");
    assert_eq!(faye.state().await["requests"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_server_is_rejoined_over_websocket() {
    let mut faye = Faye::start(0, HOLD);
    let port = faye.port;
    let daemon = Daemon::start_on(port, WS_ONLY, "");
    daemon.wait_listening(1).await;
    faye.publish(0, 200).await;
    daemon.wait_events(200).await;

    faye.kill();
    daemon.wait_log("connect failed; retrying", 0).await;
    let faye = Faye::start(port, HOLD);
    daemon.wait_listening(2).await;
    faye.publish(200, 200).await;
    assert_sequence(&daemon.wait_events(400).await, 400);
    // Sticky: it came back on WebSocket, not long-polling.
    assert!(
        faye.state().await["websocket"]["upgrades"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(faye.state().await["requests"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_falls_back_to_long_polling_and_loses_nothing() {
    let faye = Faye::start(0, HOLD);
    faye.websocket(json!({"refuse": true})).await;
    // The default order: websocket, then long-polling.
    let daemon = Daemon::start_on(faye.port, r#"["websocket", "long-polling"]"#, "");
    daemon.wait_listening(1).await;
    let log = daemon.log();
    assert!(
        log.iter()
            .any(|l| l["message"] == "WebSocket did not work; falling back to long-polling"),
        "{}",
        daemon.log_text()
    );
    faye.publish(0, 500).await;
    assert_sequence(&daemon.wait_events(500).await, 500);
    let state = faye.state().await;
    assert!(
        state["websocket"]["refused"].as_u64().unwrap() >= 1,
        "{state}"
    );
    assert_eq!(state["websocket"]["upgrades"], 0, "{state}");
    assert!(state["requests"].as_u64().unwrap() > 0, "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_socket_is_detected_and_replaced() {
    let faye = Faye::start(0, HOLD);
    // max_network_delay is 2 s in the test configuration: a connect held for HOLD seconds must
    // be answered within 4 s.
    let daemon = Daemon::start_on(faye.port, WS_ONLY, "");
    daemon.wait_listening(1).await;
    faye.publish(0, 50).await;
    daemon.wait_events(50).await;
    let connected = daemon.count_log("connected");

    let silenced = faye.websocket(json!({"silence": true})).await;
    assert_eq!(silenced["silenced"], 1, "{silenced}");
    let started = Instant::now();
    daemon
        .wait_log("no reply on the WebSocket in time: closing it as dead", 0)
        .await;
    let detected = started.elapsed();
    println!(
        "silent socket detected after {detected:?} (budget: hold 2 s + max_network_delay 2 s)"
    );
    // A sanity bound, not a timing goal: far below what a stuck client would show.
    assert!(detected < Duration::from_secs(12), "{detected:?}");
    daemon.wait_log("connected", connected).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while faye.subscribed_clients().await < 1 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    faye.publish(50, 50).await;
    assert_sequence(&daemon.wait_events(100).await, 100);
    assert!(
        faye.state().await["websocket"]["upgrades"]
            .as_u64()
            .unwrap()
            >= 2
    );
}
