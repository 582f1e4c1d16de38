//! `chatwatch demo`, the README's first command, as a newcomer runs it: the real binary starts
//! the simulator and the daemon, plays the scripted life cycle (with the auto-close rule), prints
//! the API's curl lines, which the test follows, keeps live traffic going, and stops cleanly on
//! Ctrl-C.

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
    // Standard output, read as it comes: the demo prints the API's curl lines mid-run.
    let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let stdout = stdout.clone();
        let pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut out = stdout.lock().unwrap();
                out.push_str(&line);
                out.push('\n');
            }
        })
    };
    let events_path = dir.path().join("events.jsonl");
    let deadline = Instant::now() + DEADLINE;
    // The script is done once the demo prints how to leave the waiting chat through the API.
    let leave_line = loop {
        let text = stdout.lock().unwrap().clone();
        if let Some(i) = text.find("curl -sS -X POST") {
            let rest = &text[i..];
            if let Some(end) = rest.find("leave?wait=10s'") {
                break rest[..end + "leave?wait=10s'".len()].to_owned();
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "demo exited early");
        assert!(Instant::now() < deadline, "no API lines in: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Do what the line says, with the token and URL it prints.
    let token = leave_line
        .split("Authorization: Bearer ")
        .nth(1)
        .and_then(|t| t.split('\'').next())
        .unwrap()
        .to_owned();
    let url = leave_line
        .rsplit(" '")
        .next()
        .unwrap()
        .trim_end_matches('\'');
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let body = leave_line
        .split("-d '")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    assert_eq!(body, r#"{"text": "Goodbye", "treatAs": "System"}"#);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let refused = client.post(url).body(body.to_owned()).send().await.unwrap();
    assert_eq!(refused.status(), 401, "no token, no operation");
    let answer = client
        .post(url)
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(answer["event"]["chat"]["state"], "LeftChat", "{answer}");
    let api_chat = answer["event"]["chat"]["id"].as_str().unwrap().to_owned();

    // Wait until the rule completed both chats left alone (the script's and the one left
    // through the API) and live traffic has produced a completed chat too.
    let events = loop {
        let events = lines(&events_path);
        let completed = events
            .iter()
            .filter(|e| e["chat"]["state"] == "Completed")
            .count();
        let rule_completed = |chat: Option<&str>| {
            events.iter().any(|e| {
                e["kind"] == "action"
                    && e["action"]["operation"] == "Complete"
                    && e["action"]["outcome"] == "accepted"
                    && chat.is_none_or(|c| e["chat"]["id"] == c)
            })
        };
        if completed >= 5 && rule_completed(None) && rule_completed(Some(&api_chat)) {
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
    reader.join().unwrap();
    let stdout = stdout.lock().unwrap().clone();
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
    // Chats dispositioned by hand never met the rule; the one left through the API did.
    assert!(events
        .iter()
        .filter(|e| e["kind"] == "action")
        .all(|e| e["chat"]["id"] == rule_chat.as_str() || e["chat"]["id"] == api_chat.as_str()));
}
