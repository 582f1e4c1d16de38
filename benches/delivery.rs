//! Throughput of the delivery path: events appended to the journal (as the pipeline does, in
//! batches of what is waiting) until a sink's cursor has moved past the last one — journal +
//! file sink for each fsync policy (journal and file use the same policy), and journal + webhook
//! to a receiver on loopback.
//!
//! `cargo bench --bench delivery` prints events/s per case. Under `cargo test` (no `--bench`
//! argument) it runs each case on a few events only, as a smoke test. The files go to a directory
//! under the build's target directory, not `/tmp` (which may be a RAM disk).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use chatwatch::delivery::SinkRunner;
use chatwatch::journal::{Journal, JournalConfig, JournalFsync};
use chatwatch::sinks::file::FileSinkConfig;
use chatwatch::sinks::webhook::{SecretSource, WebhookSinkConfig};
use chatwatch::sinks::{FsyncPolicy, SinkConfig};
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

/// Appends `n` events in batches of `batch` and waits until `sink` has delivered all of them.
async fn run_case(
    dir: &Path,
    fsync: JournalFsync,
    sink: (String, SinkConfig),
    n: u64,
    batch: usize,
) -> f64 {
    let mut cfg = JournalConfig::new(dir.join("journal"));
    cfg.fsync = fsync;
    let journal = Journal::open(cfg).unwrap();
    let name = sink.0.clone();
    let delivery = SinkRunner::start(journal.clone(), vec![sink], Duration::from_secs(30))
        .await
        .unwrap();
    let started = Instant::now();
    let mut seq = 0;
    while seq < n {
        let take = (n - seq).min(batch as u64);
        let payloads = (seq..seq + take).map(payload).collect();
        journal.append(payloads).await.unwrap();
        seq += take;
    }
    let last = *journal.head().borrow();
    let mut head = journal.head();
    while *head.borrow() < n {
        head.changed().await.unwrap();
    }
    loop {
        if journal.load_cursor(&name).unwrap().unwrap_or(0) >= last.max(n) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    delivery.shutdown(Duration::from_secs(10)).await;
    journal.close().await.unwrap();
    n as f64 / elapsed.as_secs_f64()
}

async fn receiver() -> SocketAddr {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async { axum::http::StatusCode::NO_CONTENT }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let scale = if bench { 1 } else { 100 };
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-delivery");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (fsync, file_fsync, n) in [
            (JournalFsync::Always, FsyncPolicy::Always, 5_000 / scale),
            (JournalFsync::Interval, FsyncPolicy::Interval, 200_000 / scale),
            (JournalFsync::Never, FsyncPolicy::Never, 200_000 / scale),
        ] {
            for batch in [1usize, 64] {
                let dir = tempfile::tempdir_in(&base).unwrap();
                let mut file = FileSinkConfig::new(dir.path().join("events.jsonl"));
                file.fsync = file_fsync;
                let rate = run_case(dir.path(), fsync, ("file".into(), SinkConfig::File(file)), n, batch).await;
                println!("journal+file  fsync={fsync:<8?} appends of {batch:>2}: {rate:>10.0} events/s ({n} events)");
            }
        }
        let addr = receiver().await;
        for ordered in [true, false] {
            let dir = tempfile::tempdir_in(&base).unwrap();
            let url = format!("http://{addr}/hook").parse().unwrap();
            let secret = SecretSource::Value(chatwatch::secret::Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"));
            let mut hook = WebhookSinkConfig::new(url, vec![secret], dir.path().join("deadletter"));
            hook.ordered = ordered;
            hook.use_env_proxy = false;
            let n = 5_000 / scale;
            let rate = run_case(dir.path(), JournalFsync::Interval, ("hook".into(), SinkConfig::Webhook(hook)), n, 64).await;
            println!("journal+webhook ordered={ordered:<5}           : {rate:>10.0} events/s ({n} events)");
        }
    });
    let _ = std::fs::remove_dir_all(&base);
}
