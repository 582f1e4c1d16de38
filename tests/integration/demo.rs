//! `chatwatch demo`, the README's first command, as a newcomer runs it: the real binary starts
//! the simulator and the daemon, plays the scripted life cycle, keeps live traffic going, and
//! stops cleanly on Ctrl-C.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::DEADLINE;
use serde_json::Value;
use tokio::time::Instant;

/// The complete lines of a JSON Lines file; each event record is checked against the schema.
fn lines(path: &std::path::Path) -> Vec<Value> {
    let values: Vec<Value> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for value in &values {
        crate::support::schema::check_event("the demo's event files", value);
    }
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_plays_the_life_cycle_keeps_going_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatwatch"))
        .args([
            "demo",
            "--step",
            "20ms",
            "--live-every",
            "100ms",
            "--rule-after",
            "1s",
            "--dir",
        ])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let events_path = dir.path().join("events.jsonl");
    let deadline = Instant::now() + DEADLINE;
    // Wait until the script is done (the rule completed the chat left alone) and live traffic
    // has produced a completed chat too.
    let events = loop {
        let events = lines(&events_path);
        let completed = events
            .iter()
            .filter(|e| e["chat"]["state"] == "Completed")
            .count();
        let rule_done = events.iter().any(|e| {
            e["kind"] == "action"
                && e["action"]["operation"] == "Complete"
                && e["action"]["outcome"] == "accepted"
        });
        if completed >= 4 && rule_done {
            break events;
        }
        assert!(child.try_wait().unwrap().is_none(), "demo exited early");
        assert!(
            Instant::now() < deadline,
            "demo produced only {} events",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ok = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&events_path.display().to_string()),
        "prints where the file sink writes: {stdout}"
    );
    assert!(
        stdout.contains("chat LeftChat (was Chatting)"),
        "typed events with previous_state in the log"
    );

    // The first chat: alone, so Leave → LeftChat, then disposition and Complete.
    let first = events[0]["chat"]["id"].as_str().unwrap().to_owned();
    let chain: Vec<(String, String)> = events
        .iter()
        // A chat offered while the first state snapshot is read may also be reported once as
        // `recovered`; the notifications themselves make the chain.
        .filter(|e| {
            e["chat"]["id"] == first.as_str()
                && e["notification_type"] == "StatusChange"
                && e["recovered"] == false
        })
        .map(|e| {
            let s = |v: &Value| v.as_str().unwrap_or("-").to_owned();
            (s(&e["chat"]["state"]), s(&e["chat"]["previous_state"]))
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("Invited", "-"),
        ("Chatting", "Invited"),
        ("LeftChat", "Chatting"),
        ("Completed", "LeftChat"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(chain, expected);
    // The second: a conference, so Leave → Completed directly.
    let second = events
        .iter()
        .map(|e| e["chat"]["id"].as_str().unwrap_or_default().to_owned())
        .find(|id| !id.is_empty() && *id != first)
        .unwrap();
    let completed = events
        .iter()
        .find(|e| e["chat"]["id"] == second.as_str() && e["chat"]["state"] == "Completed")
        .unwrap();
    assert_eq!(completed["chat"]["previous_state"], "Chatting");
    let triggers = lines(&dir.path().join("left-chat.jsonl"));
    assert!(!triggers.is_empty() && triggers.iter().all(|e| e["chat"]["state"] == "LeftChat"));

    // The third: left alone and forgotten: pending, overdue once, then the auto-close rule sets
    // the disposition and completes it, each operation an `action` event.
    let rule_chat = events
        .iter()
        .find(|e| e["kind"] == "action")
        .map(|e| e["chat"]["id"].as_str().unwrap().to_owned())
        .unwrap();
    assert_ne!(rule_chat, first);
    assert_ne!(rule_chat, second);
    let of = |kind: &str| {
        events
            .iter()
            .filter(|e| e["chat"]["id"] == rule_chat.as_str() && e["kind"] == kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(of("disposition_overdue").len(), 1);
    let actions: Vec<_> = of("action")
        .iter()
        .map(|e| e["action"]["operation"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["SetDisposition", "Complete"]);
    let set = of("disposition_set");
    assert_eq!(set.len(), 1);
    assert_eq!(set[0]["disposition"]["new"], "AutoClosed");
    assert!(events
        .iter()
        .any(|e| e["chat"]["id"] == rule_chat.as_str() && e["chat"]["state"] == "Completed"));
    // Chats dispositioned by hand never met the rule.
    assert!(events
        .iter()
        .filter(|e| e["kind"] == "action")
        .all(|e| e["chat"]["id"] == rule_chat.as_str()));
}
