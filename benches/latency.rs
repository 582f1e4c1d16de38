//! End-to-end latency: from the moment the Faye server hands a message to its engine to the
//! moment its event line is in chatwatch's file sink, at a steady 1,000 events/s on loopback,
//! on WebSocket and on long-polling, with the journal's `fsync` policy `interval` (the default)
//! and, for comparison, `never`.
//!
//! `cargo bench --bench latency` prints p50, p90, p99 and the maximum per case (needs
//! `npm ci --prefix tests/faye`). The server stamps each message with its wall-clock time
//! (`published_at_ms`, `stamp: true` of `/control/publish`, paced by `rate_per_s`); a reader
//! thread here tails the file sink every 100 µs and subtracts that stamp from the wall-clock
//! time at which it saw the line, so each figure is an upper bound that includes up to 0.1 ms of
//! polling. chatwatch is the real release binary doing its whole job (decode, event record,
//! journal, file sink with `fsync = "never"`). Under `cargo test` (no `--bench`) it runs 100
//! events per case as a smoke test.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "common/mod.rs"]
mod common;
use common::{chatwatch_on, faye, repo};

/// The publishing rate of every case.
const RATE_PER_S: u64 = 1_000;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

/// Tails `path` until `n` event lines were seen (or `deadline`), returning each line's latency in
/// milliseconds: the time it was seen minus its `data.published_at_ms`. Runs on its own thread
/// (it polls every 100 µs), hence the std clock and sleep.
#[allow(clippy::disallowed_methods)]
fn tail(path: PathBuf, n: usize, timeout: Duration) -> Vec<f64> {
    let deadline = std::time::Instant::now() + timeout;
    let mut latencies = Vec::with_capacity(n);
    let mut offset = 0u64;
    let mut pending = Vec::new();
    while latencies.len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {n} events",
            latencies.len()
        );
        let Ok(mut file) = std::fs::File::open(&path) else {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        };
        file.seek(SeekFrom::Start(offset)).unwrap();
        let mut chunk = Vec::new();
        file.read_to_end(&mut chunk).unwrap();
        let seen = now_ms();
        offset += chunk.len() as u64;
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event: serde_json::Value = serde_json::from_slice(&line).unwrap();
            let published = event["data"]["published_at_ms"]
                .as_f64()
                .expect("a stamped message");
            latencies.push(seen - published);
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    latencies
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn case(
    port: u16,
    transport: &str,
    fsync: &str,
    n: u64,
    start: u64,
    base: &Path,
) -> Vec<f64> {
    let dir = tempfile::tempdir_in(base).unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_chatwatch"));
    let _daemon = chatwatch_on(bin, port, transport, fsync, dir.path()).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let events = dir.path().join("events.jsonl");
    let reader = {
        let timeout = Duration::from_secs(60 + n / RATE_PER_S);
        std::thread::spawn(move || tail(events, n as usize, timeout))
    };
    let r = http
        .post(format!("http://127.0.0.1:{port}/control/publish"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"channel":"/v2/me/chats","start":{start},"count":{n},"rate_per_s":{RATE_PER_S},"stamp":true}}"#
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap()
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: u64 = if bench { 5_000 } else { 100 };
    let base = repo().join("target/bench-latency");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_faye, port) = faye();
    println!("{n} events at {RATE_PER_S}/s, publish (Faye engine) → line in the file sink");
    println!("| transport | journal fsync | p50 | p90 | p99 | max |");
    println!("| --- | --- | --- | --- | --- | --- |");
    runtime.block_on(async {
        let mut start = 0;
        for transport in ["websocket", "long-polling"] {
            for fsync in ["interval", "never"] {
                let mut l = case(port, transport, fsync, n, start, &base).await;
                start += n;
                // The first events include the session's warm-up; drop the first 1 %.
                let skip = l.len() / 100;
                let mut l = l.split_off(skip);
                l.sort_by(f64::total_cmp);
                println!(
                    "| {transport} | {fsync} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
                    percentile(&l, 0.5),
                    percentile(&l, 0.9),
                    percentile(&l, 0.99),
                    l[l.len() - 1]
                );
            }
        }
    });
    let _ = std::fs::remove_dir_all(&base);
}
