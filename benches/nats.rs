//! Throughput of journal → NATS JetStream on loopback: events appended to the journal until the
//! `nats` sink's cursor has moved past the last one (every event has its PubAck), with
//! `max_in_flight = 1` (one publish at a time) and with pipelining, plus the PubAck latency
//! (p50/p99, from the sink's `chatwatch_nats_puback_seconds` histogram).
//!
//! `cargo bench --bench nats` prints events/s and latencies per case against the nats-server of
//! `tests/nats/install.sh` (or `$NATS_SERVER_BIN`). Under `cargo test` (no `--bench` argument)
//! it runs each case on a few events only, as a smoke test; without the server it says so and
//! stops (and fails under `CI=true`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chatwatch::delivery::SinkRunner;
use chatwatch::journal::{Journal, JournalConfig, JournalFsync};
use chatwatch::sinks::nats::NatsSinkConfig;
use chatwatch::sinks::SinkConfig;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::Instant;

/// A realistic record: the event of a ~600-byte ChatStateChangeMessage.
fn payload(seq: u64) -> Vec<u8> {
    let event = serde_json::json!({
        "schema": "chatwatch.event.v1",
        "event_id": format!("01a20ef2-e8d9-7047-8bbf-{seq:012x}"),
        "fingerprint": "392857e2a66d205383c5f56aa2739c5f",
        "received_at": "2026-11-24T19:05:30.073287438Z",
        "account": "main", "channel": "/v2/me/chats", "kind": "chat_state",
        "message_type": "ChatStateChangeMessage", "notification_type": "ParticipantsUpdated",
        "reference_id": 17,
        "chat": {"id": format!("0000Na9B{seq:08X}"), "state": "Chatting", "previous_state": "Chatting",
                 "capabilities": ["Transfer", "Complete", "Leave", "InFocus", "SendMessage"]},
        "recovered": false,
        "data": {"messageType": "ChatStateChangeMessage", "notificationType": "ParticipantsUpdated",
                 "chat": {"id": format!("0000Na9B{seq:08X}"), "state": "Chatting",
                          "participants": [{"type": "Agent", "nickname": "Marat", "participantId": "009052C5E743004C"},
                                           {"type": "Customer", "nickname": "PersonP", "participantId": "009052C5E6D6004A"}],
                          "userData": {"Subject": "Billing", "CustomerSegment": "Gold"}}}
    });
    serde_json::to_vec(&event).unwrap()
}

/// Appends `n` events (batches of 64) and waits until the sink's cursor passed them all.
async fn run_case(dir: &Path, sink: NatsSinkConfig, n: u64) -> f64 {
    let mut cfg = JournalConfig::new(dir.join("journal"));
    cfg.fsync = JournalFsync::Interval;
    let journal = Journal::open(cfg).unwrap();
    let delivery = SinkRunner::start(
        journal.clone(),
        vec![("nats".into(), SinkConfig::Nats(sink))],
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut seq = 0;
    while seq < n {
        let take = (n - seq).min(64);
        journal
            .append((seq..seq + take).map(payload).collect())
            .await
            .unwrap();
        seq += take;
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while journal.load_cursor("nats").unwrap().unwrap_or(0) < n {
        assert!(
            Instant::now() < deadline,
            "the nats sink did not deliver in time"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    delivery.shutdown(Duration::from_secs(10)).await;
    journal.close().await.unwrap();
    n as f64 / elapsed.as_secs_f64()
}

/// p50 and p99 of the PubAck histogram recorded since the last call, in milliseconds.
fn latencies(snapshotter: &Snapshotter) -> (f64, f64) {
    let mut values: Vec<f64> = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() == chatwatch::sinks::nats::PUBACK_SECONDS {
            if let DebugValue::Histogram(v) = value {
                values.extend(v.into_iter().map(|f| f.into_inner()));
            }
        }
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        values
            .get(((values.len() as f64 * q) as usize).min(values.len().saturating_sub(1)))
            .map_or(f64::NAN, |s| s * 1e3)
    };
    (at(0.50), at(0.99))
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let bin = std::env::var_os("NATS_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/nats-venv/bin/nats-server")
        });
    if !bin.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "nats-server missing at {}: run `bash tests/nats/install.sh`",
            bin.display()
        );
        println!("SKIPPED: nats-server missing at {}", bin.display());
        return;
    }
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::set_global_recorder(recorder).unwrap();
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-nats");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let store = tempfile::tempdir_in(&base).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let url = format!("nats://127.0.0.1:{port}");
        for (i, (in_flight, n)) in [(1usize, 5_000u64), (16, 20_000), (256, 20_000)].into_iter().enumerate() {
            let n = if bench { n } else { 200 };
            let dir = tempfile::tempdir_in(&base).unwrap();
            let mut sink = NatsSinkConfig::new(&url, format!("BENCH{i}"), dir.path().join("deadletter"));
            sink.create_stream = true;
            sink.subject = format!("bench{i}.{{account}}.{{kind}}");
            sink.max_in_flight = in_flight;
            let _ = latencies(&snapshotter);
            let rate = run_case(dir.path(), sink, n).await;
            let (p50, p99) = latencies(&snapshotter);
            println!(
                "journal+nats max_in_flight={in_flight:<4}: {rate:>9.0} events/s, PubAck p50 {p50:.2} ms p99 {p99:.2} ms ({n} events)"
            );
        }
    });
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&base);
}
