//! chatwatch as a service, through the real binary against a real Faye server: systemd
//! notifications on a test-made `NOTIFY_SOCKET`, SIGTERM in mid-stream, SIGHUP reloads (broken
//! file, added sink and account, removed account), `/metrics` parsed as Prometheus text and
//! checked against what the test sent, and `/readyz` following the server going down and up.
//! Also the shipped systemd unit, checked with `systemd-analyze`.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{free_port, Daemon, Faye, DEADLINE};
use serde_json::Value;
use tokio::time::Instant;

/// A configuration with one account (`main`) on Faye at `faye`, the admin listener on `admin`,
/// a file sink `events`; `extra` is appended verbatim (more sinks or accounts).
fn config(faye: u16, admin: u16, dir: &Path, extra: &str) -> String {
    format!(
        r#"
[[accounts]]
name = "main"
url = "http://127.0.0.1:{faye}"
server = "bayeux"
use_env_proxy = false

[bayeux]
max_network_delay = "2s"
backoff_increment = "100ms"
max_backoff = "500ms"
default_max_interval = "2s"
reauth_delay = "1s"

[admin]
listen = "127.0.0.1:{admin}"

[journal]
dir = "{dir}/journal"
fsync = "interval"

[log]
level = "info"
format = "json"

[shutdown]
drain_timeout = "10s"

[sinks.events]
type = "file"
path = "{dir}/events.jsonl"
fsync = "never"
{extra}
"#,
        dir = dir.display()
    )
}

struct Setup {
    faye: Faye,
    daemon: Daemon,
    admin: u16,
    config: PathBuf,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Setup {
    fn start(env: &[(&str, &str)]) -> Setup {
        let faye = Faye::start(0, 2);
        let admin = free_port();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let path = dir.join("chatwatch.toml");
        std::fs::write(&path, config(faye.port, admin, &dir, "")).unwrap();
        let daemon = Daemon::start_with_env(tmp, &path, env);
        Setup {
            faye,
            daemon,
            admin,
            config: path,
            dir,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let code = r.status().as_u16();
        Some((code, r.text().await.ok()?))
    }

    /// Waits until `/readyz` answers `code`; returns its JSON body.
    async fn wait_ready(&self, code: u16) -> Value {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some((c, body)) = self.get("/readyz").await {
                if c == code {
                    return serde_json::from_str(&body).unwrap();
                }
            }
            assert!(
                self.daemon.running(),
                "chatwatch exited:\n{}",
                self.daemon.log_text()
            );
            assert!(
                Instant::now() < deadline,
                "/readyz never answered {code}; log:\n{}",
                crate::support::tail(&self.daemon.log_text(), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metrics(&self) -> prometheus_parse::Scrape {
        let (code, body) = self.get("/metrics").await.expect("/metrics answers");
        assert_eq!(code, 200, "{body}");
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned())))
            .expect("/metrics is Prometheus text")
    }

    fn lines(&self, file: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap_or_default();
        // Complete lines only: the daemon may be in the middle of writing the last one.
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    async fn wait_lines(&self, file: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lines = self.lines(file);
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{file}: {} of {n} lines; log:\n{}",
                lines.len(),
                crate::support::tail(&self.daemon.log_text(), 30)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn rewrite_config(&self, extra: &str) {
        std::fs::write(
            &self.config,
            config(self.faye.port, self.admin, &self.dir, extra),
        )
        .unwrap();
    }
}

/// The sum of a counter or gauge's samples whose labels include every pair of `labels`.
fn sum(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

/// The `seq` of every event of a file sink, in file order.
fn seqs(events: &[Value]) -> Vec<u64> {
    events
        .iter()
        .map(|e| {
            e["data"]["seq"]
                .as_u64()
                .expect("published events carry seq")
        })
        .collect()
}

/// A Unix datagram socket standing in for systemd's notification socket; collects every
/// datagram.
struct NotifySocket {
    path: PathBuf,
    received: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        NotifySocket {
            path,
            received,
            _dir: dir,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|d| d.lines().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    }

    fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }

    async fn wait(&self, line: &str, n: usize) {
        let deadline = Instant::now() + DEADLINE;
        while self.count(line) < n {
            assert!(
                Instant::now() < deadline,
                "{line} x{n} never arrived; got {:?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn systemd_notifications_ready_status_watchdog_stopping() {
    let notify = NotifySocket::bind();
    let socket = notify.path.display().to_string();
    let mut s = Setup::start(&[
        ("NOTIFY_SOCKET", socket.as_str()),
        ("WATCHDOG_USEC", "1000000"),
    ]);
    notify.wait("READY=1", 1).await;
    // READY does not wait for the server; the STATUS line follows the session.
    assert!(
        notify.lines().iter().any(|l| l.starts_with("STATUS=")),
        "{:?}",
        notify.lines()
    );
    s.wait_ready(200).await;
    notify.wait("WATCHDOG=1", 3).await;
    let deadline = Instant::now() + DEADLINE;
    while !notify
        .lines()
        .iter()
        .any(|l| l.starts_with("STATUS=1/1 accounts subscribed"))
    {
        assert!(Instant::now() < deadline, "{:?}", notify.lines());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(notify.count("STOPPING=1"), 0);
    s.daemon.signal("TERM");
    assert_eq!(s.daemon.wait_exit().await, Some(0));
    notify.wait("STOPPING=1", 1).await;
    let lines = notify.lines();
    let ready = lines.iter().position(|l| l == "READY=1").unwrap();
    let stopping = lines.iter().position(|l| l == "STOPPING=1").unwrap();
    assert!(ready < stopping, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("EXTEND_TIMEOUT_USEC=")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn sigterm_in_mid_stream_loses_nothing_the_journal_accepted() {
    let mut s = Setup::start(&[]);
    s.wait_ready(200).await;
    let total = 20_000;
    let port = s.faye.port;
    let publisher = tokio::spawn(async move {
        // A second handle on the same server: publish from another task.
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let _ = http
            .post(format!("http://127.0.0.1:{port}/control/publish"))
            .header("content-type", "application/json")
            .body(
                serde_json::json!({"channel": "/v2/me/chats", "start": 0, "count": total})
                    .to_string(),
            )
            .send()
            .await;
    });
    s.wait_lines("events.jsonl", 500).await;
    s.daemon.signal("TERM");
    assert_eq!(
        s.daemon.wait_exit().await,
        Some(0),
        "{}",
        s.daemon.log_text()
    );
    let _ = publisher.await;

    let status = Command::new(env!("CARGO_BIN_EXE_chatwatch"))
        .args(["journal", "status", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let last = status["last_seq"].as_u64().unwrap();
    let events = s.lines("events.jsonl");
    // Every event the journal accepted reached the sink, once, in order.
    assert_eq!(events.len() as u64, last, "journal {status}");
    let got = seqs(&events);
    let expected: Vec<u64> = (0..last).collect();
    assert_eq!(got, expected);
    let cursor = status["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "events")
        .unwrap()["cursor"]
        .as_u64();
    assert_eq!(cursor, Some(last), "{status}");
    assert!(
        s.daemon
            .log_text()
            .contains("stopping: disconnecting sessions, then draining sinks"),
        "{}",
        s.daemon.log_text()
    );
}

#[tokio::test]
async fn sighup_with_a_broken_config_keeps_the_old_one_running() {
    let s = Setup::start(&[]);
    s.wait_ready(200).await;
    std::fs::write(&s.config, "[[accounts]\nthis is not toml").unwrap();
    s.daemon.signal("HUP");
    let message = "SIGHUP: the new configuration cannot be used; still running on the previous one";
    s.daemon.wait_log(message, 0).await;
    // An invalid but well-formed file (unknown key) is refused the same way.
    s.rewrite_config("[sinks.bad]\ntype = \"file\"\npaht = \"x\"\n");
    s.daemon.signal("HUP");
    s.daemon.wait_log(message, 1).await;
    s.faye.publish(0, 10).await;
    let events = s.wait_lines("events.jsonl", 10).await;
    assert_eq!(seqs(&events), (0..10).collect::<Vec<_>>());
    let scrape = s.metrics().await;
    assert_eq!(
        sum(
            &scrape,
            "chatwatch_config_reloads_total",
            &[("result", "failed")]
        ),
        2.0
    );
    assert_eq!(
        sum(
            &scrape,
            "chatwatch_config_reloads_total",
            &[("result", "ok")]
        ),
        0.0
    );
    let ready = s.wait_ready(200).await;
    assert_eq!(ready["accounts"]["main"]["handshakes"], 1, "{ready}");
}

#[tokio::test]
async fn sighup_adds_a_sink_and_an_account_without_touching_the_others() {
    let s = Setup::start(&[]);
    s.wait_ready(200).await;
    s.faye.publish(0, 5).await;
    s.wait_lines("events.jsonl", 5).await;

    let more = s.dir.join("more.jsonl");
    let second = format!(
        r#"
[sinks.more]
type = "file"
path = "{}"
fsync = "never"

[[accounts]]
name = "second"
url = "http://127.0.0.1:{}"
server = "bayeux"
use_env_proxy = false
"#,
        more.display(),
        s.faye.port
    );
    s.rewrite_config(&second);
    s.daemon.signal("HUP");
    s.daemon.wait_log("SIGHUP: configuration reloaded", 0).await;
    let ready = s.wait_ready(200).await;
    assert_eq!(ready["accounts"]["second"]["subscribed"], true, "{ready}");
    // The first account was not restarted.
    assert_eq!(ready["accounts"]["main"]["handshakes"], 1, "{ready}");
    let deadline = Instant::now() + DEADLINE;
    while s.faye.subscribed_clients().await < 2 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Both accounts receive the next events; the new sink gets them from both.
    s.faye.publish(5, 10).await;
    let events = s.wait_lines("events.jsonl", 5 + 20).await;
    let added = s.wait_lines("more.jsonl", 20).await;
    assert_eq!(added.len(), 20);
    for account in ["main", "second"] {
        let of = |lines: &[Value]| {
            seqs(
                &lines
                    .iter()
                    .filter(|e| e["account"] == account)
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        };
        assert_eq!(of(&added), (5..15).collect::<Vec<_>>(), "{account}");
        let expected: Vec<u64> = if account == "main" {
            (0..15).collect()
        } else {
            (5..15).collect()
        };
        assert_eq!(of(&events), expected, "{account}");
    }

    // Removing the account again stops only it.
    s.rewrite_config("");
    s.daemon.signal("HUP");
    s.daemon.wait_log("SIGHUP: configuration reloaded", 1).await;
    let ready = s.wait_ready(200).await;
    assert!(ready["accounts"].get("second").is_none(), "{ready}");
    assert_eq!(ready["accounts"]["main"]["handshakes"], 1, "{ready}");

    // Changing the account restarts it (a new session), and events keep arriving after.
    let text = std::fs::read_to_string(&s.config).unwrap().replace(
        "use_env_proxy = false",
        "use_env_proxy = false\nchannels = [\"/v2/me/**\"]",
    );
    std::fs::write(&s.config, text).unwrap();
    s.daemon.signal("HUP");
    s.daemon.wait_log("SIGHUP: configuration reloaded", 2).await;
    assert_eq!(
        s.daemon
            .count_log("account configuration changed; restarting it"),
        1
    );
    s.wait_ready(200).await;
    s.faye.publish(15, 5).await;
    let events = s.wait_lines("events.jsonl", 25 + 5).await;
    let main = seqs(
        &events
            .iter()
            .filter(|e| e["account"] == "main")
            .cloned()
            .collect::<Vec<_>>(),
    );
    assert_eq!(main, (0..20).collect::<Vec<_>>());
    let scrape = s.metrics().await;
    assert_eq!(
        sum(
            &scrape,
            "chatwatch_config_reloads_total",
            &[("result", "ok")]
        ),
        3.0
    );
}

#[tokio::test]
async fn metrics_parse_and_count_what_was_sent() {
    let s = Setup::start(&[]);
    s.wait_ready(200).await;
    let n = 137;
    s.faye.publish(0, n).await;
    s.wait_lines("events.jsonl", n as usize).await;
    // The sink counts after the write; give the scrape a moment to see the last batch.
    let deadline = Instant::now() + DEADLINE;
    let scrape = loop {
        let scrape = s.metrics().await;
        let delivered = sum(
            &scrape,
            "chatwatch_sink_delivered_events_total",
            &[("sink", "events")],
        );
        // The cursor (and so the backlog gauge) moves just after the delivery is counted.
        let backlog = sum(
            &scrape,
            "chatwatch_sink_backlog_events",
            &[("sink", "events")],
        );
        if (delivered >= n as f64 && backlog == 0.0) || Instant::now() > deadline {
            break scrape;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (code, body) = s.get("/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE chatwatch_bayeux_connect_seconds histogram"),
        "{body}"
    );

    assert_eq!(
        sum(&scrape, "chatwatch_events_total", &[("account", "main")]),
        n as f64
    );
    assert_eq!(
        sum(
            &scrape,
            "chatwatch_bayeux_deliveries_total",
            &[("account", "main")]
        ),
        n as f64
    );
    assert_eq!(
        sum(
            &scrape,
            "chatwatch_sink_delivered_events_total",
            &[("sink", "events")]
        ),
        n as f64
    );
    assert_eq!(
        sum(&scrape, "chatwatch_journal_appended_total", &[]),
        n as f64
    );
    assert_eq!(
        sum(
            &scrape,
            "chatwatch_bayeux_handshakes_total",
            &[("account", "main"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &scrape,
            "chatwatch_session_state",
            &[("account", "main"), ("state", "connected")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &scrape,
            "chatwatch_session_subscribed",
            &[("account", "main")]
        ),
        1.0
    );
    assert_eq!(sum(&scrape, "chatwatch_ready", &[]), 1.0);
    assert_eq!(
        sum(
            &scrape,
            "chatwatch_sink_backlog_events",
            &[("sink", "events")]
        ),
        0.0
    );
    assert!(sum(&scrape, "chatwatch_journal_bytes", &[]) > 0.0);
    let build: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "chatwatch_build_info")
        .collect();
    assert_eq!(build.len(), 1);
    assert_eq!(
        build[0].labels.get("version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    let connect = scrape
        .samples
        .iter()
        .find(|s| s.metric == "chatwatch_bayeux_connect_seconds")
        .expect("connect histogram");
    match &connect.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.len() > 5, "{buckets:?}");
            assert!(buckets.iter().any(|b| b.count >= 1.0), "{buckets:?}");
        }
        other => panic!("not a histogram: {other:?}"),
    }
    let (code, live) = s.get("/livez").await.unwrap();
    assert_eq!((code, live.as_str()), (200, r#"{"live":true}"#));
}

#[tokio::test]
async fn readyz_follows_the_server_going_down_and_up() {
    let mut s = Setup::start(&[]);
    let ready = s.wait_ready(200).await;
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["journal"], "writable");
    let port = s.faye.port;
    s.faye.kill();
    let down = s.wait_ready(503).await;
    assert_eq!(down["ready"], false);
    assert_eq!(down["accounts"]["main"]["subscribed"], false, "{down}");
    let why: Vec<String> = down["not_ready"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(
        why.iter()
            .any(|w| w.starts_with("account main: not subscribed")),
        "{why:?}"
    );
    // /livez does not depend on the server.
    assert_eq!(s.get("/livez").await.unwrap().0, 200);
    s.faye = Faye::start(port, 2);
    let up = s.wait_ready(200).await;
    assert_eq!(up["accounts"]["main"]["subscribed"], true);
    s.faye.publish(0, 3).await;
    s.wait_lines("events.jsonl", 3).await;
    let scrape = s.metrics().await;
    assert!(
        sum(
            &scrape,
            "chatwatch_bayeux_handshakes_total",
            &[("account", "main"), ("result", "ok")]
        ) >= 2.0
    );
}

/// The unit as shipped, with the binary paths pointed at the test build (`verify` checks that
/// `ExecStart=` exists).
fn unit_for_test(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/chatwatch.service");
    let text = std::fs::read_to_string(shipped).unwrap();
    assert!(text.contains("ExecStart=/usr/bin/chatwatch run"));
    let text = text.replace("/usr/bin/chatwatch", env!("CARGO_BIN_EXE_chatwatch"));
    let path = dir.join("chatwatch.service");
    std::fs::write(&path, text).unwrap();
    path
}

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .expect("systemd-analyze is needed for this test (Debian package `systemd`)")
}

#[test]
fn the_unit_scores_1_5_or_lower_in_systemd_analyze_security() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let unit = unit.to_str().unwrap();
    let out = systemd_analyze(&["security", "--offline=yes", "--threshold=15", unit]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let overall = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    let score: f64 = overall
        .split(": ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{overall}"));
    assert!(score <= 1.5, "{overall}");
    // The JSON form names each setting: the ones that matter most are on.
    let out = systemd_analyze(&["security", "--offline=yes", "--json=short", unit]);
    let checks: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let failing: HashMap<String, Value> = checks
        .into_iter()
        .filter(|c| c["set"] == false && c["exposure"].as_f64().unwrap_or(0.0) > 0.0)
        .map(|c| (c["name"].as_str().unwrap_or("").to_owned(), c))
        .collect();
    for must in [
        "NoNewPrivileges=",
        "ProtectSystem=",
        "PrivateDevices=",
        "MemoryDenyWriteExecute=",
        "RestrictSUIDSGID=",
    ] {
        assert!(
            !failing.contains_key(must),
            "{must} not set: {:?}",
            failing.keys()
        );
    }
}

#[test]
fn the_unit_passes_systemd_analyze_verify_without_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    let out = systemd_analyze(&["verify", unit.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.trim().is_empty() && stdout.trim().is_empty(),
        "{stdout}{stderr}"
    );
}

#[test]
fn the_unit_reload_validates_with_check_quiet() {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/chatwatch.service"),
    )
    .unwrap();
    assert!(shipped.contains("Type=notify"));
    assert!(shipped.contains("WatchdogSec="));
    assert!(shipped.contains("LoadCredential=gws-password:"));
    // ExecReload validates first: a broken file makes `check --quiet` fail, a good one passes
    // silently.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config(1, 0, dir.path(), "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chatwatch"))
        .args(["check", "--quiet", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[accounts]]\nname = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_chatwatch"))
        .args(["check", "--quiet", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("url"), "{stderr}");
}

#[test]
fn a_password_from_a_systemd_credential() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("gws-password"), "from-credential\n").unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        config(1, 0, dir.path(), "").replace(
            "server = \"bayeux\"",
            "server = \"bayeux\"\nusername = \"agent1\"\npassword_credential = \"gws-password\"",
        ),
    )
    .unwrap();
    let check = |env: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatwatch"));
        cmd.args(["check", "--config"]).arg(&path);
        cmd.env_remove("CREDENTIALS_DIRECTORY");
        if let Some(d) = env {
            cmd.env("CREDENTIALS_DIRECTORY", d);
        }
        cmd.output().unwrap()
    };
    let ok = check(Some(&creds));
    assert!(ok.status.success(), "{ok:?}");
    let shown = String::from_utf8_lossy(&ok.stdout);
    assert!(!shown.contains("from-credential"), "{shown}");
    let missing = check(None);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("accounts.main.password_credential")
            && stderr.contains("CREDENTIALS_DIRECTORY"),
        "{stderr}"
    );
}
