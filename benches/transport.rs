//! chatwatch's two transports against the official CometD JavaScript client (npm `cometd` 9 with
//! `cometd-nodejs-client` 2), on the same Faye server in the same run: delivery rate and client
//! CPU time for 10,000 events published in one burst, on WebSocket and on long-polling.
//!
//! `cargo bench --bench transport` prints the table (needs `npm ci --prefix tests/faye`, which
//! the README test command runs). chatwatch is the real release binary doing its whole job
//! (decode, event record, journal, a file sink); the peer only counts the messages. CPU is read
//! from `/proc/<pid>/stat` of each process between "subscribed" and "all events in". Under
//! `cargo test` (no `--bench` argument) it runs 200 events per case as a smoke test.
//! `CHATWATCH_BENCH_FSYNC=never` sets the journal's fsync policy (default `interval`).
//! `CHATWATCH_BENCH_BASELINE=/path/to/chatwatch` adds a third client, another chatwatch binary
//! (e.g. a release build of an earlier commit), run in the same rounds, so a change is measured
//! against what it changed side by side.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

#[path = "common/mod.rs"]
mod common;
use common::{chatwatch_on, cpu_secs, faye, repo, Proc};

async fn publish(http: &reqwest::Client, port: u16, start: u64, count: u64) {
    let r = http
        .post(format!("http://127.0.0.1:{port}/control/publish"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"channel":"/v2/me/chats","start":{start},"count":{count}}}"#
        ))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

fn lines(path: &Path) -> u64 {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count() as u64)
        .unwrap_or(0)
}

/// (events/s, CPU ms per 10,000 events)
struct Outcome(f64, f64);

async fn chatwatch(
    bin: &Path,
    port: u16,
    transport: &str,
    fsync: &str,
    n: u64,
    start: u64,
    base: &Path,
) -> Outcome {
    let dir = tempfile::tempdir_in(base).unwrap();
    let daemon = chatwatch_on(bin, port, transport, fsync, dir.path()).await;
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let pid = daemon.0.id();
    let events = dir.path().join("events.jsonl");
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    publish(&http, port, start, n).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines(&events) < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} events",
            lines(&events)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    Outcome(n as f64 / elapsed, cpu * 1000.0 * 10_000.0 / n as f64)
}

async fn cometd_js(port: u16, transport: &str, n: u64, start: u64) -> Outcome {
    let mut child = Command::new("node")
        .arg(repo().join("tests/faye/cometd-client.mjs"))
        .arg(format!("http://127.0.0.1:{port}/api/v2/notifications"))
        .arg(transport)
        .arg(n.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let pid = child.id();
    let _guard = Proc(child);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("the CometD client never subscribed")
        .unwrap();
    assert_eq!(
        ready,
        format!("READY {transport}"),
        "the peer is on {ready}"
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    publish(&http, port, start, n).await;
    let done = tokio::time::timeout(Duration::from_secs(120), rx.recv())
        .await
        .expect("the CometD client did not get every message")
        .unwrap();
    assert_eq!(done, "DONE");
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    Outcome(n as f64 / elapsed, cpu * 1000.0 * 10_000.0 / n as f64)
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let n: u64 = if bench { 10_000 } else { 200 };
    let rounds = if bench { 3 } else { 1 };
    let base = repo().join("target/bench-transport");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_faye, port) = faye();
    // The journal's fsync policy: "interval" is the default; "never" leaves out the syncs the
    // peer (which persists nothing) does not do either.
    let fsync = std::env::var("CHATWATCH_BENCH_FSYNC").unwrap_or_else(|_| "interval".to_owned());
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_chatwatch"));
    let baseline = std::env::var_os("CHATWATCH_BENCH_BASELINE").map(PathBuf::from);
    println!("journal fsync = \"{fsync}\"");
    println!("| transport | client | events/s | CPU per 10 000 events |");
    println!("| --- | --- | --- | --- |");
    runtime.block_on(async {
        let mut start = 0;
        for transport in ["websocket", "long-polling"] {
            // The median of `rounds` runs of each.
            let mut ours = Vec::new();
            let mut peer = Vec::new();
            let mut before = Vec::new();
            for _ in 0..rounds {
                ours.push(chatwatch(&bin, port, transport, &fsync, n, start, &base).await);
                start += n;
                if let Some(baseline) = &baseline {
                    before
                        .push(chatwatch(baseline, port, transport, &fsync, n, start, &base).await);
                    start += n;
                }
                peer.push(cometd_js(port, transport, n, start).await);
                start += n;
            }
            let median = |v: &mut Vec<Outcome>| {
                v.sort_by(|a, b| a.1.total_cmp(&b.1));
                let m = &v[v.len() / 2];
                (m.0, m.1)
            };
            let (our_rate, our_cpu) = median(&mut ours);
            let (peer_rate, peer_cpu) = median(&mut peer);
            println!("| {transport} | chatwatch | {our_rate:.0} | {our_cpu:.0} ms |");
            if !before.is_empty() {
                let (rate, cpu) = median(&mut before);
                println!("| {transport} | chatwatch (baseline) | {rate:.0} | {cpu:.0} ms |");
            }
            println!("| {transport} | CometD JS (Node) | {peer_rate:.0} | {peer_cpu:.0} ms |");
            println!(
                "| {transport} | ratio | | chatwatch uses {:.2}× the peer's CPU |",
                our_cpu / peer_cpu.max(f64::MIN_POSITIVE)
            );
        }
    });
    let _ = std::fs::remove_dir_all(&base);
}
