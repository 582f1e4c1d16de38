//! chatwatch against the GWS simulator over WebSocket: the default transport order reaches the
//! simulator's WebSocket endpoint (login cookie and Basic credentials on the upgrade) with the
//! `ack` extension granted; a refused upgrade falls back to long-polling; and acknowledgements
//! the server "loses" make it redeliver batches, whose duplicates never reach the sinks.

use std::time::Duration;

use crate::support::Daemon;
use chatwatch::sim::{ChatOffer, Simulator};
use serde_json::{json, Value};

async fn simulator() -> Simulator {
    crate::support::sim::start_with(Duration::from_secs(2), Duration::from_secs(4)).await
}

async fn side(sim: &Simulator, path: &str, body: Value) -> Value {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(sim.base_url().join(path).unwrap())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

/// Chat ids of the `Invited` events (an offer), in file order.
fn ringing(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["kind"] == "chat_state" && e["chat"]["state"] == "Invited")
        .map(|e| e["chat"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_ringing(daemon: &Daemon, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    loop {
        let got = ringing(&daemon.events());
        if got.len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {n} chats; log:\n{}",
            got.len(),
            crate::support::tail(&daemon.log_text(), 40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gws_over_websocket_with_ack() {
    let sim = simulator().await;
    let daemon = Daemon::start_gws(sim.base_url().as_str(), "password1");
    daemon.wait_listening(1).await;
    // Offer only once the first state snapshot is read (a chat offered meanwhile may also be
    // reported as recovered).
    daemon.wait_log("state recovered from GWS", 0).await;
    daemon
        .wait_log("WebSocket works; staying on it across reconnects", 0)
        .await;
    daemon
        .wait_log("the server granted the ack extension", 0)
        .await;
    let mut offered = Vec::new();
    for i in 0..20 {
        offered.push(sim.offer_chat("agent1", ChatOffer::new(format!("Customer {i}"))));
    }
    assert_eq!(wait_ringing(&daemon, 20).await, offered);
    let state = side(&sim, "/sim/websocket", json!({})).await;
    assert!(state["upgrades"].as_u64().unwrap() >= 1, "{state}");
    // The upgrade was logged with the agent it authenticated.
    assert!(sim
        .requests()
        .iter()
        .any(|r| r.note.as_deref() == Some("websocket") && r.user.as_deref() == Some("agent1")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_falls_back_to_long_polling() {
    let sim = simulator().await;
    side(&sim, "/sim/websocket", json!({"refuse": true})).await;
    let daemon = Daemon::start_gws(sim.base_url().as_str(), "password1");
    daemon.wait_listening(1).await;
    // Offer only once the first state snapshot is read (a chat offered meanwhile may also be
    // reported as recovered).
    daemon.wait_log("state recovered from GWS", 0).await;
    assert_eq!(
        daemon.count_log("WebSocket did not work; falling back to long-polling"),
        1,
        "{}",
        daemon.log_text()
    );
    let mut offered = Vec::new();
    for i in 0..10 {
        offered.push(sim.offer_chat("agent1", ChatOffer::new(format!("Customer {i}"))));
    }
    assert_eq!(wait_ringing(&daemon, 10).await, offered);
    let state = side(&sim, "/sim/websocket", json!({})).await;
    assert_eq!(state["upgrades"], 0, "{state}");
    assert!(state["refused"].as_u64().unwrap() >= 1, "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_batches_are_dropped_before_the_journal() {
    let sim = simulator().await;
    let daemon = Daemon::start_gws(sim.base_url().as_str(), "password1");
    daemon.wait_listening(1).await;
    // Offer only once the first state snapshot is read (a chat offered meanwhile may also be
    // reported as recovered).
    daemon.wait_log("state recovered from GWS", 0).await;
    daemon
        .wait_log("the server granted the ack extension", 0)
        .await;
    // The next three connects' acknowledgements are "lost": each time, the server sends the
    // batches it already sent again.
    side(&sim, "/sim/lose-ack", json!({"count": 3})).await;
    let mut offered = Vec::new();
    for i in 0..30 {
        offered.push(sim.offer_chat("agent1", ChatOffer::new(format!("Customer {i}"))));
        if i % 10 == 9 {
            wait_ringing(&daemon, i + 1).await;
        }
    }
    let got = wait_ringing(&daemon, 30).await;
    assert_eq!(got, offered, "each chat exactly once, in order");
    let log = daemon.log();
    let dropped = log
        .iter()
        .filter(|l| l["message"] == "dropped a redelivered message (ack extension)")
        .count();
    assert!(
        dropped >= 1,
        "the server did redeliver: {}",
        daemon.log_text()
    );
    // Nothing more trickles in.
    let again = sim.offer_chat("agent1", ChatOffer::new("Last"));
    let got = wait_ringing(&daemon, 31).await;
    assert_eq!(got.len(), 31);
    assert_eq!(got.last(), Some(&again));
}
