//! The real `chatwatch` binary against a real Faye server on loopback: every notification
//! published on the subscribed channel reaches the file sink, in order, exactly once, whatever the
//! server does (forgets sessions, is killed and restarted, is down at start, answers 500, garbage,
//! oversize bodies, or never answers).

use crate::support::{assert_sequence, free_port, Daemon, Faye};

/// Faye holds each connect this long (seconds); short, so faults show quickly.
const HOLD: u32 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_arrive_in_order_without_loss_or_duplicates() {
    let faye = Faye::start(0, HOLD);
    let daemon = Daemon::start(faye.port, "");
    daemon.wait_listening(1).await;
    faye.publish(0, 10_000).await;
    let events = daemon.wait_events(10_000).await;
    assert_sequence(&events, 10_000);
    // Every record is typed and carries the schema fields.
    let first = &events[0];
    assert_eq!(first["schema"], "chatwatch.event.v1");
    assert_eq!(first["account"], "main");
    assert_eq!(first["channel"], "/v2/me/chats");
    assert_eq!(first["kind"], "chat_state");
    assert_eq!(first["chat"]["id"], "chat-0");
    assert_eq!(first["chat"]["state"], "Chatting");
    let ids: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 10_000, "event ids are unique");
    // No duplicates trickle in afterwards: one more event lands right after the 10,000.
    faye.publish(10_000, 1).await;
    assert_sequence(&daemon.wait_events(10_001).await, 10_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_sessions_are_rehandshaken_and_resubscribed() {
    let faye = Faye::start(0, HOLD);
    let daemon = Daemon::start(faye.port, "");
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
    let log = daemon.log();
    assert!(
        log.iter()
            .any(|l| l["message"] == "session lost; handshaking again" && l["cause"] == "advice"),
        "the log says why it handshook again"
    );
    assert!(log
        .iter()
        .any(|l| l["message"] == "subscriptions active" && l["resubscribed"] == true));
    assert_eq!(
        faye.subscribed_clients().await,
        1,
        "exactly one live subscription, no leaked sessions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_server_is_rejoined() {
    let mut faye = Faye::start(0, HOLD);
    let port = faye.port;
    let daemon = Daemon::start(port, "");
    daemon.wait_listening(1).await;
    faye.publish(0, 200).await;
    daemon.wait_events(200).await;

    faye.kill();
    daemon.wait_log("connect failed; retrying", 0).await;
    let faye = Faye::start(port, HOLD);
    daemon.wait_listening(2).await;
    faye.publish(200, 200).await;
    assert_sequence(&daemon.wait_events(400).await, 400);
    assert!(daemon.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_is_joined_when_it_comes_up() {
    let port = free_port();
    let daemon = Daemon::start(port, "");
    daemon.wait_log("handshake failed", 1).await;
    assert!(
        daemon.log_text().contains("cannot connect"),
        "the log says the server is unreachable"
    );
    let faye = Faye::start(port, HOLD);
    daemon.wait_listening(1).await;
    faye.publish(0, 100).await;
    assert_sequence(&daemon.wait_events(100).await, 100);
}

/// Arms `mode` on the next Bayeux request, checks that the daemon logs `evidence`, recovers, and
/// loses nothing published before or after.
async fn survives_fault(mode: &str, size: u64, bayeux_extra: &str, evidence: &str) {
    let faye = Faye::start(0, HOLD);
    let daemon = Daemon::start(faye.port, bayeux_extra);
    daemon.wait_listening(1).await;
    faye.publish(0, 100).await;
    daemon.wait_events(100).await;

    let listening = daemon.count_log("listening: connected and subscribed");
    faye.fault(mode, 1, size).await;
    daemon.wait_log_text(evidence).await;
    daemon
        .wait_log("listening: connected and subscribed", listening)
        .await;
    faye.publish(100, 100).await;
    assert_sequence(&daemon.wait_events(200).await, 200);
    assert!(daemon.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_answer_is_survived() {
    survives_fault("500", 0, "", "HTTP 500").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_json_body_is_survived() {
    survives_fault("garbage", 0, "", "response body is not JSON").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_body_is_cut_off_and_survived() {
    survives_fault(
        "oversize",
        4 * 1024 * 1024,
        "max_response_bytes = 65536",
        "larger than the 65536-byte limit",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_never_answers_times_out_and_is_survived() {
    survives_fault("hang", 0, "", "no response within").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_disconnects_cleanly_and_exits_zero() {
    let faye = Faye::start(0, HOLD);
    let mut daemon = Daemon::start(faye.port, "");
    daemon.wait_listening(1).await;
    faye.publish(0, 50).await;
    daemon.wait_events(50).await;
    assert_eq!(faye.subscribed_clients().await, 1);
    daemon.signal("INT");
    assert_eq!(daemon.wait_exit().await, Some(0));
    assert_sequence(&daemon.events(), 50);
    assert_eq!(
        faye.subscribed_clients().await,
        0,
        "/meta/disconnect released the session"
    );
    let text = daemon.log_text();
    assert!(text.contains("chatwatch stopped"), "{text}");
    assert!(
        !text.contains("test-password-not-for-logs"),
        "the password never reaches the log"
    );
}
