//! What the process benchmarks share: free loopback ports, a child process killed on drop, the
//! Faye server of the tests started as a peer, a release `chatwatch run` subscribed to it, and a
//! process's resident memory and CPU time read from `/proc`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` times (Linux: 100 on every common platform).
const TICKS_PER_SEC: f64 = 100.0;

/// The integration tests' ports module: one `free_port` for tests and benches.
#[path = "../../tests/integration/support/ports.rs"]
mod ports;

pub use ports::free_port;

/// Kills the child when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// User + system CPU time of the process, in seconds.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = stat.rsplit(')').next().unwrap();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3 of stat, utime 14, stime 15 (1-based) → 11 and 12
    // of `rest` (0-based).
    let utime: f64 = fields[11].parse().unwrap();
    let stime: f64 = fields[12].parse().unwrap();
    (utime + stime) / TICKS_PER_SEC
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Starts the tests' Faye server (`tests/faye/server.js`, connect hold 20 s) on a free port and
/// returns it with its port. Needs `npm ci --prefix tests/faye`.
pub fn faye() -> (Proc, u16) {
    let mut child = Command::new("node")
        .arg(repo().join("tests/faye/server.js"))
        .args(["--host", "127.0.0.1", "--port", "0", "--timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("LISTENING ")
        .unwrap()
        .parse()
        .unwrap();
    (Proc(child), port)
}

/// Starts `bin` (a `chatwatch` binary) as `chatwatch run` in `dir` against the plain Bayeux
/// server on `port`: one account on `transport` only, the journal with `fsync`, a file sink
/// `dir/events.jsonl` (`fsync = "never"`), warnings only; returns once `/readyz` says it is
/// subscribed.
pub async fn chatwatch_on(bin: &Path, port: u16, transport: &str, fsync: &str, dir: &Path) -> Proc {
    let admin = free_port();
    let config = dir.join("chatwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[[accounts]]\nname = \"main\"\nurl = \"http://127.0.0.1:{port}\"\nserver = \"bayeux\"\n\
             use_env_proxy = false\ntransports = [\"{transport}\"]\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
             [journal]\ndir = \"{d}/journal\"\nfsync = \"{fsync}\"\n\n[log]\nlevel = \"warn\"\nformat = \"json\"\n\n\
             [sinks.events]\ntype = \"file\"\npath = \"{d}/events.jsonl\"\nfsync = \"never\"\n",
            d = dir.display(),
        ),
    )
    .unwrap();
    let daemon = Proc(
        Command::new(bin)
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !http
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "chatwatch never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon
}
