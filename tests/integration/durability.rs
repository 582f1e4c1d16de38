//! Losing nothing: the real binary is killed with SIGKILL in the middle of a burst from a real
//! Faye server, then restarted. Every event the journal accepted before the kill reaches the file
//! sink and a real webhook receiver afterwards; a webhook receiver that is down, then answers
//! 503 with `Retry-After`, then 200, gets every event in order with a valid signature.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Daemon, Faye, DEADLINE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::Value;
use tokio::time::Instant;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// What the receiver saw: (webhook-id, body) in arrival order, and how to answer next.
#[derive(Default)]
struct Receiver {
    seen: Vec<(String, Value)>,
    bad_signatures: usize,
    /// Answer this status (with `Retry-After: 1`) to the next N requests.
    fail_next: usize,
}

async fn receiver(port: u16, state: Arc<Mutex<Receiver>>) {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = state.clone();
            async move {
                let mut st = state.lock().unwrap();
                if st.fail_next > 0 {
                    st.fail_next -= 1;
                    return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")])
                        .into_response();
                }
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let (id, ts, sig) = (
                    h("webhook-id"),
                    h("webhook-timestamp"),
                    h("webhook-signature"),
                );
                let expected = chatwatch::sinks::webhook::sign(
                    &chatwatch::sinks::webhook::decode_secret(SECRET).unwrap(),
                    &id,
                    ts.parse().unwrap_or(0),
                    &body,
                );
                if !sig.split(' ').any(|s| s == expected) {
                    st.bad_signatures += 1;
                }
                let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                st.seen.push((id, value));
                StatusCode::OK.into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

fn config(faye_port: u16, hook_port: u16, dir: &std::path::Path) -> String {
    format!(
        r#"
[accounts.main]
url = "http://127.0.0.1:{faye_port}"
server = "bayeux"
use_env_proxy = false

[bayeux]
max_network_delay = "2s"
backoff_increment = "100ms"
max_backoff = "1s"

[admin]
listen = "127.0.0.1:0"

[journal]
dir = "{dir}/journal"
fsync = "always"

[log]
level = "info"
format = "json"

[sinks.events]
type = "file"
path = "{dir}/events.jsonl"
fsync = "always"

[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"
secrets = [{{ value = "{SECRET}" }}]
dead_letter_dir = "{dir}/deadletter"
retry_initial = "50ms"
retry_max_backoff = "500ms"
timeout = "2s"
"#,
        dir = dir.display()
    )
}

fn journal_ids(dir: &std::path::Path) -> BTreeSet<String> {
    chatwatch::journal::tail_offline(&dir.join("journal"), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, payload)| {
            let v: Value = serde_json::from_slice(&payload).unwrap();
            v["event_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_nothing_the_journal_accepted() {
    let faye = Faye::start(0, 2);
    let hook_port = crate::support::free_port();
    let state = Arc::new(Mutex::new(Receiver::default()));
    receiver(hook_port, state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatwatch.toml");
    std::fs::write(&path, config(faye.port, hook_port, dir.path())).unwrap();

    let daemon = Daemon::start_with_config(tempfile::tempdir().unwrap(), &path);
    daemon.wait_listening(1).await;
    // A burst that is still being published when the daemon dies.
    let burst = {
        let port = faye.port;
        tokio::spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let _ = client
                .post(format!("http://127.0.0.1:{port}/control/publish"))
                .header("content-type", "application/json")
                .body(r#"{"channel":"/v2/me/chats","start":0,"count":3000,"delay_ms":1}"#)
                .send()
                .await;
        })
    };
    let deadline = Instant::now() + DEADLINE;
    while std::fs::read_to_string(dir.path().join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .count()
        < 200
    {
        assert!(
            Instant::now() < deadline,
            "no events; log:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.signal("KILL");
    drop(daemon);
    let accepted = journal_ids(dir.path());
    assert!(
        accepted.len() >= 200,
        "the journal accepted {} events before the kill",
        accepted.len()
    );

    let daemon = Daemon::start_with_config(tempfile::tempdir().unwrap(), &path);
    daemon.wait_listening(1).await;
    burst.await.unwrap();
    // Everything the journal accepted before the kill reaches both sinks.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let in_file: BTreeSet<String> = std::fs::read_to_string(dir.path().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|v| v["event_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        let hooked: BTreeSet<String> = state
            .lock()
            .unwrap()
            .seen
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        let missing_file = accepted.difference(&in_file).count();
        let missing_hook = accepted.difference(&hooked).count();
        if missing_file == 0 && missing_hook == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after restart {missing_file} accepted events are missing from the file and {missing_hook} from the webhook; log:\n{}",
            crate::support::tail(&daemon.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let st = state.lock().unwrap();
    assert_eq!(st.bad_signatures, 0);
    // Duplicates are allowed (at least once) but only as the same event: same id, same body.
    let mut by_id: HashMap<&str, &Value> = HashMap::new();
    for (id, body) in &st.seen {
        if let Some(prev) = by_id.insert(id, body) {
            assert_eq!(prev, body, "a redelivery of {id} must be the same event");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receiver_down_then_503_then_up_gets_everything_in_order() {
    let faye = Faye::start(0, 2);
    let hook_port = crate::support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatwatch.toml");
    std::fs::write(&path, config(faye.port, hook_port, dir.path())).unwrap();
    let daemon = Daemon::start_with_config(tempfile::tempdir().unwrap(), &path);
    daemon.wait_listening(1).await;

    // The receiver is down (nothing listens on its port) while events arrive.
    faye.publish(0, 50).await;
    let deadline = Instant::now() + DEADLINE;
    while std::fs::read_to_string(dir.path().join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .count()
        < 50
    {
        assert!(
            Instant::now() < deadline,
            "the file sink did not get the events while the webhook was down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // It comes up answering 503 + Retry-After a few times, then 200.
    let state = Arc::new(Mutex::new(Receiver {
        fail_next: 3,
        ..Receiver::default()
    }));
    receiver(hook_port, state.clone()).await;
    faye.publish(50, 50).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let seqs: Vec<u64> = {
            let st = state.lock().unwrap();
            let mut seen = BTreeSet::new();
            st.seen
                .iter()
                .filter(|(id, _)| seen.insert(id.clone()))
                .map(|(_, v)| v["data"]["seq"].as_u64().unwrap())
                .collect()
        };
        if seqs.len() >= 100 {
            assert_eq!(
                seqs,
                (0..100).collect::<Vec<u64>>(),
                "in order, none missing"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "webhook got {} of 100; log:\n{}",
            seqs.len(),
            crate::support::tail(&daemon.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(state.lock().unwrap().bad_signatures, 0);
    assert!(
        daemon.log_text().contains("503") || daemon.log_text().contains("retry"),
        "the log says it retried"
    );
}

fn cli(args: &[&str], config: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_chatwatch"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_status_tail_and_dead_letters_from_the_cli() {
    let faye = Faye::start(0, 2);
    let hook_port = crate::support::free_port();
    // The receiver refuses everything with 400: every event becomes a dead letter.
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let (refuse, seen) = (refuse.clone(), seen.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap| {
                let (refuse, seen) = (refuse.clone(), seen.clone());
                async move {
                    if refuse.load(std::sync::atomic::Ordering::SeqCst) {
                        return (StatusCode::BAD_REQUEST, "unknown schema").into_response();
                    }
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    seen.lock().unwrap().push(id.to_owned());
                    StatusCode::NO_CONTENT.into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], hook_port)))
            .await
            .unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatwatch.toml");
    std::fs::write(&path, config(faye.port, hook_port, dir.path())).unwrap();
    let mut daemon = Daemon::start_with_config(tempfile::tempdir().unwrap(), &path);
    daemon.wait_listening(1).await;
    faye.publish(0, 5).await;
    let deadline = Instant::now() + DEADLINE;
    let letters = loop {
        let out = cli(&["deadletter", "list"], &path);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let letters: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if letters.len() >= 5 {
            break letters;
        }
        assert!(
            Instant::now() < deadline,
            "only {} dead letters",
            letters.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        letters
            .iter()
            .all(|l| l["status"] == 400 && l["sink"] == "hook"),
        "{letters:?}"
    );
    assert!(letters[0]["body_start"]
        .as_str()
        .unwrap()
        .contains("unknown schema"));

    // The journal: five events, and every sink has delivered (or dead-lettered) them all.
    let out = cli(&["journal", "status"], &path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["last_seq"], 5, "{status}");
    let out = cli(&["journal", "tail", "-n", "2"], &path);
    let tail: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[1]["data"]["seq"], 4);

    // The receiver is fixed: a redrive delivers every dead letter and empties the file.
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().await, Some(0));
    refuse.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = cli(&["deadletter", "redrive", "--sink", "hook"], &path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("5 delivered"), "{stdout}");
    assert_eq!(seen.lock().unwrap().len(), 5);
    let ids: BTreeSet<String> = letters
        .iter()
        .map(|l| l["event_id"].as_str().unwrap().to_owned())
        .collect();
    let redriven: BTreeSet<String> = seen.lock().unwrap().iter().cloned().collect();
    assert_eq!(ids, redriven, "redrive keeps each event's webhook-id");
    let out = cli(&["deadletter", "list"], &path);
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "the file is empty after the redrive"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_file_written_by_the_daemon_verifies_and_catches_an_edit() {
    let faye = Faye::start(0, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chatwatch.toml");
    let audit_dir = dir.path().join("audit");
    let text = format!(
        r#"
[accounts.main]
url = "http://127.0.0.1:{port}"
server = "bayeux"
use_env_proxy = false

[admin]
listen = "127.0.0.1:0"

[journal]
dir = "{dir}/journal"

[log]
format = "json"

[sinks.audit]
type = "audit"
dir = "{audit}"
rotate_bytes = 4096
"#,
        port = faye.port,
        dir = dir.path().display(),
        audit = audit_dir.display()
    );
    std::fs::write(&path, text).unwrap();
    let mut daemon = Daemon::start_with_config(tempfile::tempdir().unwrap(), &path);
    daemon.wait_listening(1).await;
    faye.publish(0, 40).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let status = chatwatch::journal::status_offline(&dir.path().join("journal")).unwrap();
        let audit = status
            .sinks
            .iter()
            .find(|s| s.name == "audit")
            .and_then(|s| s.cursor);
        if audit == Some(40) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit sink at {audit:?}; log:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().await, Some(0));

    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_chatwatch"))
            .args(["audit", "verify"])
            .arg(&audit_dir)
            .output()
            .unwrap()
    };
    let out = verify();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = std::fs::read_dir(&audit_dir).unwrap().count();
    assert!(rotated > 2, "rotation by size happened ({rotated} files)");

    // Someone edits a chat id in the active file: verify names the file and the line.
    let active = audit_dir.join("audit.jsonl");
    let text = std::fs::read_to_string(&active).unwrap();
    let edited = text.replacen("chat-", "chat-X", 1);
    assert_ne!(text, edited);
    std::fs::write(&active, edited).unwrap();
    let out = verify();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "an edited file must not verify");
    assert!(
        said.contains("audit.jsonl") && said.contains("line 1") && said.contains("changed"),
        "{said}"
    );
}
