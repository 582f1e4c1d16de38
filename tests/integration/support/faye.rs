//! The Faye peer: a real Faye 1.4.3 server (from `tests/faye`, installed with `npm ci --prefix
//! tests/faye`) on 127.0.0.1, driven through its side door (publish, drop sessions, faults,
//! WebSocket refusal and silence), and the check that what it published arrived exactly once.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Faye server process.
pub struct Faye {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    http: reqwest::Client,
}

impl Faye {
    /// Starts Faye on `port` (0: any free port) with the given connect hold time in seconds.
    pub fn start(port: u16, timeout_secs: u32) -> Faye {
        let script = repo().join("tests/faye/server.js");
        assert!(
            repo().join("tests/faye/node_modules/faye").exists(),
            "Faye is not installed: run `npm ci --prefix tests/faye` (the README test command does)"
        );
        let mut child = Command::new("node")
            .arg(&script)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--timeout",
                &timeout_secs.to_string(),
            ])
            .arg("--die-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed to run the Faye peer");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("Faye did not start: {line:?}"))
            .parse()
            .unwrap();
        Faye {
            child: Some(child),
            port,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "side door {path}: {}", r.status());
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    /// Publishes `count` chat events with `seq` = `start..start+count`, in order.
    pub async fn publish(&self, start: u64, count: u64) {
        let r = self
            .post(
                "/control/publish",
                json!({"channel": "/v2/me/chats", "start": start, "count": count}),
            )
            .await;
        assert_eq!(r["published"], count);
    }

    /// Publishes one message with the given `data` on `channel`.
    pub async fn publish_data(&self, channel: &str, data: Value) {
        self.post(
            "/control/publish",
            json!({"channel": channel, "count": 1, "start": 0, "data": data}),
        )
        .await;
    }

    /// Makes the server forget every session.
    pub async fn drop_sessions(&self) -> u64 {
        self.post("/control/drop-sessions", json!({})).await["dropped"]
            .as_u64()
            .unwrap()
    }

    /// Arms a fault for the next `count` Bayeux requests.
    pub async fn fault(&self, mode: &str, count: u32, size_bytes: u64) {
        self.post(
            "/control/fault",
            json!({"mode": mode, "count": count, "size_bytes": size_bytes}),
        )
        .await;
    }

    /// Controls WebSocket upgrades: `{"refuse": true}` answers them 403; `{"silence": true}`
    /// makes every open socket stop reading and writing without closing.
    pub async fn websocket(&self, body: Value) -> Value {
        self.post("/control/websocket", body).await
    }

    /// The side door's view of sessions and counters.
    pub async fn state(&self) -> Value {
        let r = self
            .http
            .get(self.url("/control/state"))
            .send()
            .await
            .unwrap();
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    }

    /// Number of sessions currently subscribed to `/v2/me/chats`.
    pub async fn subscribed_clients(&self) -> usize {
        let s = self.state().await;
        s["subscriptions"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter(|v| {
                        v.as_array()
                            .is_some_and(|a| a.iter().any(|c| c == "/v2/me/chats"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Faye {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Asserts that `events` carry `seq` exactly `0..n` in order (no loss, no duplicate, no
/// reordering) and returns nothing.
pub fn assert_sequence(events: &[Value], n: u64) {
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e["data"]["seq"].as_u64().expect("seq"))
        .collect();
    let expected: Vec<u64> = (0..n).collect();
    if seqs != expected {
        let first_bad = seqs.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "got {} events, expected {n}; first difference at index {first_bad:?}: {:?}",
            seqs.len(),
            first_bad.map(|i| &seqs[i.saturating_sub(2)..(i + 3).min(seqs.len())])
        );
    }
}
