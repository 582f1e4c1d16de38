//! The post-leave workflow through the real binary and the GWS simulator: a listener never logs
//! the agent out, pending dispositions (gauge, `disposition_overdue` exactly once across a
//! restart), the README rule completing a chat, a chat completed by hand cancelling it, and a dry
//! run sending nothing.

use std::path::Path;
use std::time::Duration;

use crate::support::{free_port, wait_until, Daemon};
use chatwatch::gws::operations::{ChatOperation, ClosingText};
use chatwatch::gws::session::GwsSession;
use chatwatch::http::HttpSettings;
use chatwatch::secret::Secret;
use chatwatch::sim::{ChatOffer, Simulator};
use serde_json::{json, Value};

const PASSWORD: &str = "password1";

async fn simulator() -> Simulator {
    crate::support::sim::start_with(Duration::from_secs(2), Duration::from_secs(2)).await
}

/// Another GWS session of `agent1`: the agent's own desktop (Workspace).
async fn desk(sim: &Simulator) -> GwsSession {
    let base = sim.base_url();
    let mut http = HttpSettings::new(base.join("/api/v2/notifications").unwrap());
    http.basic_auth = Some(("agent1".to_owned(), Secret::new(PASSWORD)));
    let s = GwsSession::new("desk", base, http, Duration::from_secs(5)).unwrap();
    s.login().await.unwrap();
    s
}

/// A daemon configuration for the simulator at `url` (the harness's, in the listener default
/// unless `account` says otherwise): `account` is added to the account table (e.g.
/// `mode = "agent"`), `rest` appended at the end (e.g. `[[rules]]`).
fn config(url: &str, dir: &Path, admin: u16, account: &str, rest: &str) -> String {
    Daemon::gws_config_with(url, PASSWORD, dir, account, admin) + rest
}

/// Starts the daemon on `text` in `dir` (a directory kept across restarts).
fn start(dir: tempfile::TempDir, text: &str) -> Daemon {
    let file = dir.path().join("chatwatch.toml");
    std::fs::write(&file, text).unwrap();
    Daemon::start_with_config(dir, &file)
}

/// Stops the daemon with SIGTERM and returns its directory for a restart.
async fn stop(mut daemon: Daemon) -> tempfile::TempDir {
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().await, Some(0), "{}", daemon.log_text());
    // Take the directory out without deleting it.
    let dir = std::mem::replace(&mut daemon.dir, tempfile::tempdir().unwrap());
    drop(daemon);
    dir
}

/// An offered chat, accepted and left by the agent at `desk`: it is in `LeftChat`.
async fn left_chat(sim: &Simulator, desk: &GwsSession, customer: &str) -> String {
    let id = sim.offer_chat("agent1", ChatOffer::new(customer));
    desk.operate(&id, &ChatOperation::Accept { nickname: None })
        .await
        .unwrap();
    desk.operate(&id, &ChatOperation::Leave(ClosingText::none()))
        .await
        .unwrap();
    id
}

/// The value of one sample of `name` with `label` in the daemon's /metrics.
async fn metric(admin: u16, name: &str, label: &str) -> Option<f64> {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn wait_metric(admin: u16, name: &str, label: &str, want: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + crate::support::DEADLINE;
    loop {
        if let Some(v) = metric(admin, name, label).await {
            if want(v) {
                return v;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never had the expected value"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn of_kind<'a>(events: &'a [Value], kind: &str, chat: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["kind"] == kind && e["chat"]["id"] == chat)
        .collect()
}

fn requests_for(sim: &Simulator, chat: &str, operation: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| {
            r.method == "POST"
                && r.path.ends_with(chat)
                && r.operation_name.as_deref() == Some(operation)
        })
        .count()
}

async fn agents(sim: &Simulator) -> Value {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(sim.base_url().join("/sim/agents").unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_listener_leaves_the_agents_own_session_logged_in() {
    let sim = simulator().await;
    // The agent works in Workspace: its own HTTP session and contact-centre session.
    let workspace = desk(&sim).await;
    workspace
        .start_contact_center_session(&["chat".to_owned()])
        .await
        .unwrap();
    assert!(sim.contact_center_started("agent1"));

    // chatwatch listens with the default mode, then stops.
    let dir = tempfile::tempdir().unwrap();
    let text = config(sim.base_url().as_str(), dir.path(), free_port(), "", "");
    let daemon = start(dir, &text);
    daemon.wait_listening(1).await;
    daemon
        .wait_log_text("listener mode: chatwatch will neither start nor end")
        .await;
    stop(daemon).await;

    let agent = &agents(&sim).await["agent1"];
    assert_eq!(agent["contact_center"], true, "still logged in: {agent}");
    assert_eq!(agent["logouts"], 0);
    let sent: Vec<_> = sim
        .requests()
        .into_iter()
        .filter_map(|r| r.operation_name)
        .filter(|n| n.ends_with("ContactCenterSession"))
        .collect();
    assert_eq!(
        sent,
        vec!["StartContactCenterSession".to_owned()],
        "only Workspace's own Start; chatwatch sent neither Start nor End"
    );
    // Workspace's HTTP session still works.
    workspace
        .get_json("/api/v2/me")
        .await
        .expect("the agent's own session is still valid");

    // The same stop in `mode = "agent"` is what a listener must never do: it logs the agent out.
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        sim.base_url().as_str(),
        dir.path(),
        free_port(),
        "mode = \"agent\"",
        "",
    );
    let daemon = start(dir, &text);
    daemon.wait_listening(1).await;
    wait_until("the agent-mode Start", || {
        sim.requests()
            .iter()
            .filter(|r| r.operation_name.as_deref() == Some("StartContactCenterSession"))
            .count()
            == 2
    })
    .await;
    stop(daemon).await;
    let agent = &agents(&sim).await["agent1"];
    assert_eq!(agent["contact_center"], false, "{agent}");
    assert_eq!(agent["logouts"], 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_dispositions_are_gauged_and_overdue_once_across_a_restart() {
    let sim = simulator().await;
    let desk = desk(&sim).await;
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        sim.base_url().as_str(),
        dir.path(),
        admin,
        "overdue_after = \"2s\"",
        "",
    );
    let daemon = start(dir, &text);
    daemon.wait_listening(1).await;

    let first = left_chat(&sim, &desk, "Pat").await;
    wait_metric(
        admin,
        "chatwatch_chats_pending_disposition",
        "account=\"main\"",
        |v| v == 1.0,
    )
    .await;
    let events = daemon
        .wait_event("the first chat's overdue event", |e| {
            e["kind"] == "disposition_overdue" && e["chat"]["id"] == first.as_str()
        })
        .await;
    let overdue = of_kind(&events, "disposition_overdue", &first)[0].clone();
    assert_eq!(overdue["pending"]["overdue_after_seconds"], 2);
    assert_eq!(overdue["channel"], "/chatwatch/workflow");
    let oldest = wait_metric(
        admin,
        "chatwatch_pending_disposition_oldest_seconds",
        "account=\"main\"",
        |v| v >= 2.0,
    )
    .await;
    assert!(oldest >= 2.0);

    // The agent sets a disposition by hand: a disposition_set event, old and new code.
    desk.operate(
        &first,
        &ChatOperation::SetDisposition {
            disposition: "Sale".into(),
            disposition_key: None,
        },
    )
    .await
    .unwrap();
    let events = daemon
        .wait_event("disposition_set", |e| {
            e["kind"] == "disposition_set" && e["chat"]["id"] == first.as_str()
        })
        .await;
    let set = of_kind(&events, "disposition_set", &first)[0];
    assert_eq!(
        set["disposition"],
        json!({"key": "DispositionCode", "old": null, "new": "Sale"})
    );

    // Restart: the first chat is still pending, its timer already fired and is not fired again.
    let dir = stop(daemon).await;
    let daemon = start(dir, &text);
    daemon.wait_listening(1).await;
    // A second chat's overdue event, 2 s after it is left, comes after any re-fired timer of the
    // first (which would be due at once): once it is there, the first cannot fire any more.
    let second = left_chat(&sim, &desk, "Sam").await;
    let events = daemon
        .wait_event("the second chat's overdue event", |e| {
            e["kind"] == "disposition_overdue" && e["chat"]["id"] == second.as_str()
        })
        .await;
    assert_eq!(
        of_kind(&events, "disposition_overdue", &first).len(),
        1,
        "exactly once across the restart"
    );
    assert_eq!(
        of_kind(&events, "disposition_set", &first).len(),
        1,
        "the known code is not announced again after the restart"
    );
    wait_metric(
        admin,
        "chatwatch_chats_pending_disposition",
        "account=\"main\"",
        |v| v == 2.0,
    )
    .await;

    // Complete both: nothing pending any more.
    for chat in [&first, &second] {
        desk.operate(
            chat,
            &ChatOperation::Complete {
                queue_name: None,
                save_lar: None,
                closing: ClosingText::none(),
            },
        )
        .await
        .unwrap();
    }
    wait_metric(
        admin,
        "chatwatch_chats_pending_disposition",
        "account=\"main\"",
        |v| v == 0.0,
    )
    .await;
    sim.shutdown().await;
}

/// The README rule, with `after` shortened.
fn auto_close(after: &str, extra: &str) -> String {
    format!(
        r#"
[[rules]]
name = "auto-close"
when = {{ entered_states = ["LeftChat"] }}
after = "{after}"
unless = ["Completed", "disposition_set"]
do = [{{ set_disposition = {{ code = "AutoClosed" }} }}, {{ complete = {{}} }}]
{extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_rule_completes_a_chat_left_alone_and_a_chat_completed_by_hand_cancels_it() {
    let sim = simulator().await;
    let desk = desk(&sim).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        sim.base_url().as_str(),
        dir.path(),
        free_port(),
        "",
        &auto_close("2s", ""),
    );
    let daemon = start(dir, &text);
    daemon.wait_listening(1).await;

    // Completed by hand before the rule's time: the rule is cancelled for it.
    let by_hand = left_chat(&sim, &desk, "Pat").await;
    desk.operate(
        &by_hand,
        &ChatOperation::Complete {
            queue_name: None,
            save_lar: None,
            closing: ClosingText::none(),
        },
    )
    .await
    .unwrap();
    // Left alone: the rule sets the disposition and completes it.
    let alone = left_chat(&sim, &desk, "Sam").await;
    let events = daemon
        .wait_event("the rule's Complete of the chat left alone", |e| {
            e["chat"]["id"] == alone.as_str() && e["chat"]["state"] == "Completed"
        })
        .await;
    let chat = sim.chat(&alone).expect("the simulator knows the chat");
    assert_eq!(chat["state"], "Completed");
    assert_eq!(chat["userData"]["DispositionCode"], "AutoClosed", "{chat}");
    let actions: Vec<(String, String)> = of_kind(&events, "action", &alone)
        .iter()
        .map(|e| {
            (
                e["action"]["operation"].as_str().unwrap().to_owned(),
                e["action"]["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("SetDisposition".to_owned(), "accepted".to_owned()),
            ("Complete".to_owned(), "accepted".to_owned())
        ]
    );
    assert!(of_kind(&events, "action", &alone)
        .iter()
        .all(|e| e["action"]["rule"] == "auto-close" && e["reference_id"].is_number()));
    // The chat completed by hand, whose time came before the other's, got nothing.
    assert!(of_kind(&events, "action", &by_hand).is_empty());
    assert_eq!(requests_for(&sim, &by_hand, "SetDisposition"), 0);
    assert_eq!(
        requests_for(&sim, &by_hand, "Complete"),
        1,
        "only the agent's own"
    );

    // Restart: the rule's work is not done again.
    let dir = stop(daemon).await;
    let daemon = start(dir, &text);
    daemon.wait_listening(1).await;
    let marker = left_chat(&sim, &desk, "Kim").await;
    daemon
        .wait_event("the next chat's completion", |e| {
            e["chat"]["id"] == marker.as_str() && e["chat"]["state"] == "Completed"
        })
        .await;
    assert_eq!(requests_for(&sim, &alone, "SetDisposition"), 1);
    assert_eq!(requests_for(&sim, &alone, "Complete"), 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_records_the_actions_and_sends_nothing() {
    let sim = simulator().await;
    let desk = desk(&sim).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        sim.base_url().as_str(),
        dir.path(),
        free_port(),
        "",
        &auto_close("0s", "dry_run = true"),
    );
    let daemon = start(dir, &text);
    daemon.wait_listening(1).await;
    let chat = left_chat(&sim, &desk, "Pat").await;
    let events = daemon
        .wait_event("the dry run's Complete", |e| {
            e["kind"] == "action"
                && e["chat"]["id"] == chat.as_str()
                && e["action"]["operation"] == "Complete"
        })
        .await;
    let actions = of_kind(&events, "action", &chat);
    assert_eq!(actions.len(), 2);
    assert!(actions
        .iter()
        .all(|e| e["action"]["outcome"] == "dry_run" && e["action"]["dry_run"] == true));
    assert_eq!(requests_for(&sim, &chat, "SetDisposition"), 0);
    assert_eq!(requests_for(&sim, &chat, "Complete"), 0);
    assert_eq!(sim.chat(&chat).unwrap()["state"], "LeftChat");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_operation_is_an_action_event_with_the_gws_status_and_stops_the_list() {
    let sim = simulator().await;
    let desk = desk(&sim).await;
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    // SendMessage is not valid in LeftChat: GWS answers statusCode 2.
    let rule = r#"
[[rules]]
name = "nudge"
when = { entered_states = ["LeftChat"] }
do = [{ send_message = { text = "Are you still there?" } }, { complete = {} }]
"#;
    let text = config(sim.base_url().as_str(), dir.path(), admin, "", rule);
    let daemon = start(dir, &text);
    daemon.wait_listening(1).await;
    let chat = left_chat(&sim, &desk, "Pat").await;
    let events = daemon
        .wait_event("the refused SendMessage", |e| {
            e["kind"] == "action" && e["chat"]["id"] == chat.as_str()
        })
        .await;
    let action = &of_kind(&events, "action", &chat)[0]["action"];
    assert_eq!(action["operation"], "SendMessage");
    assert_eq!(action["outcome"], "rejected");
    assert_eq!(action["gws_status"], 2);
    assert_eq!(action["final"], true, "status 2 is not retried");
    assert!(
        action["message"].as_str().unwrap().contains("status 2"),
        "the documented meaning is named: {action}"
    );
    wait_metric(
        admin,
        "chatwatch_rule_actions_total",
        "outcome=\"rejected\"",
        |v| v == 1.0,
    )
    .await;
    // The list stopped: no Complete was sent, the chat still waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(requests_for(&sim, &chat, "SendMessage"), 1);
    assert_eq!(requests_for(&sim, &chat, "Complete"), 0);
    assert_eq!(sim.chat(&chat).unwrap()["state"], "LeftChat");
    assert_eq!(of_kind(&daemon.events(), "action", &chat).len(), 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_backend_is_retried_and_every_attempt_is_an_action_event() {
    let sim = simulator().await;
    let desk = desk(&sim).await;
    let admin = free_port();
    let dir = tempfile::tempdir().unwrap();
    let text = config(
        sim.base_url().as_str(),
        dir.path(),
        admin,
        "",
        &auto_close("1s", ""),
    );
    let daemon = start(dir, &text);
    daemon.wait_listening(1).await;
    let chat = left_chat(&sim, &desk, "Pat").await;
    // Before the rule's time comes: the backend answers its next two operations with 503.
    sim.fail_next_operations(2);
    let events = daemon
        .wait_event("the rule's Complete", |e| {
            e["kind"] == "action"
                && e["chat"]["id"] == chat.as_str()
                && e["action"]["operation"] == "Complete"
        })
        .await;
    let attempts: Vec<(String, u64, String, bool)> = of_kind(&events, "action", &chat)
        .iter()
        .map(|e| {
            let a = &e["action"];
            (
                a["operation"].as_str().unwrap().to_owned(),
                a["attempt"].as_u64().unwrap(),
                a["outcome"].as_str().unwrap().to_owned(),
                a["final"].as_bool().unwrap(),
            )
        })
        .collect();
    let row =
        |op: &str, attempt, outcome: &str, last| (op.to_owned(), attempt, outcome.to_owned(), last);
    assert_eq!(
        attempts,
        vec![
            row("SetDisposition", 1, "unavailable", false),
            row("SetDisposition", 2, "unavailable", false),
            row("SetDisposition", 3, "accepted", true),
            row("Complete", 1, "accepted", true),
        ]
    );
    let unavailable = &of_kind(&events, "action", &chat)[0]["action"];
    assert_eq!(unavailable["http_status"], 503, "{unavailable}");
    assert_eq!(requests_for(&sim, &chat, "SetDisposition"), 3);
    assert_eq!(sim.chat(&chat).unwrap()["state"], "Completed");
    wait_metric(
        admin,
        "chatwatch_rule_actions_total",
        "outcome=\"unavailable\"",
        |v| v == 2.0,
    )
    .await;
    sim.shutdown().await;
}
