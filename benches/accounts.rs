//! Memory and CPU of one daemon for many GWS accounts: the real `chatwatch run` against the
//! real simulator process (`chatwatch sim`), with 1, 100 and 1,000 long-polling accounts, idle
//! and with traffic.
//!
//! `cargo bench --bench accounts` runs the matrix and prints one table row per account count:
//! resident memory once every account is subscribed (and the increase per account over the
//! 1-account run), CPU while idle (each session only holds its `/meta/connect`), and then with
//! chats offered to every agent in turn: events/s and CPU milliseconds per 1,000 events. Under
//! `cargo test` (no `--bench` argument) it runs 1 and 5 accounts briefly, as a smoke test that
//! every account subscribes and every offered chat arrives. `CHATWATCH_BENCH_ACCOUNTS=1,100`
//! limits the account counts.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

#[path = "common/mod.rs"]
mod common;
use common::{cpu_secs, free_port, rss_kib, Proc};

fn agent(i: usize) -> String {
    format!("agent{i:04}")
}

fn start_sim(port: u16, n: usize, dir: &Path) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_chatwatch"));
    cmd.args([
        "sim",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--timeout",
        "20s",
    ]);
    for i in 0..n {
        cmd.arg("--user")
            .arg(format!("{}:password{i:04}", agent(i)));
    }
    let log = std::fs::File::create(dir.join("sim.log")).unwrap();
    Proc(
        cmd.env("RUST_LOG", "warn")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    )
}

fn write_config(dir: &Path, sim: u16, admin: u16, n: usize) -> std::path::PathBuf {
    let path = dir.join("chatwatch.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    for i in 0..n {
        writeln!(
            f,
            "[[accounts]]\nname = \"a{i:04}\"\nurl = \"http://127.0.0.1:{sim}\"\nusername = \"{}\"\n\
             password = \"password{i:04}\"\nuse_env_proxy = false\n",
            agent(i)
        )
        .unwrap();
    }
    writeln!(
        f,
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[journal]\ndir = \"{}\"\n\n[log]\nlevel = \"warn\"\nformat = \"json\"\n\n\
         [sinks.events]\ntype = \"file\"\npath = \"{}\"\nfsync = \"never\"\n",
        dir.join("journal").display(),
        dir.join("events.jsonl").display()
    )
    .unwrap();
    path
}

fn lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|c| **c == b'\n').count())
        .unwrap_or(0)
}

/// One row of the table.
struct Row {
    accounts: usize,
    subscribe_secs: f64,
    rss_idle_kib: u64,
    idle_cpu_pct: f64,
    events: usize,
    events_per_sec: f64,
    cpu_ms_per_1k: f64,
    rss_busy_kib: u64,
}

async fn run(n: usize, idle_window: Duration, offers: usize, rate: f64, base: &Path) -> Row {
    let dir = tempfile::tempdir_in(base).unwrap();
    let sim_port = free_port();
    let _sim = start_sim(sim_port, n, dir.path());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http
        .get(format!("http://127.0.0.1:{sim_port}/api/v2/me"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the simulator did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = free_port();
    let config = write_config(dir.path(), sim_port, admin, n);
    let log = std::fs::File::create(dir.path().join("chatwatch.log")).unwrap();
    let started = Instant::now();
    let daemon = Proc(
        Command::new(env!("CARGO_BIN_EXE_chatwatch"))
            .args(["run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ready = http
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n} accounts never all subscribed; log: {}",
            std::fs::read_to_string(dir.path().join("chatwatch.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subscribe_secs = started.elapsed().as_secs_f64();
    // Let the start-up allocations settle (recovery snapshots, contact-centre sessions).
    tokio::time::sleep(idle_window.min(Duration::from_secs(3))).await;
    let cpu0 = cpu_secs(pid);
    tokio::time::sleep(idle_window).await;
    let idle_cpu_pct = (cpu_secs(pid) - cpu0) / idle_window.as_secs_f64() * 100.0;
    let rss_idle_kib = rss_kib(pid);

    // Traffic: offer chats to the agents in turn; each offer makes one event (Ringing).
    let events_path = dir.path().join("events.jsonl");
    let before = lines(&events_path);
    let cpu0 = cpu_secs(pid);
    let t0 = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    for k in 0..offers {
        let due = t0 + period.mul_f64(k as f64);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep(due - now).await;
        }
        let r = http
            .post(format!("http://127.0.0.1:{sim_port}/sim/offer"))
            .header("content-type", "application/json")
            .body(format!("{{\"agent\":\"{}\"}}", agent(k % n)))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "offer: {}", r.status());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut events;
    loop {
        events = lines(&events_path) - before;
        if events >= offers {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{events} of {offers} offered chats arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let busy = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(pid) - cpu0;
    let rss_busy_kib = rss_kib(pid);
    Row {
        accounts: n,
        subscribe_secs,
        rss_idle_kib,
        idle_cpu_pct,
        events,
        events_per_sec: events as f64 / busy,
        cpu_ms_per_1k: cpu * 1000.0 / events as f64 * 1000.0,
        rss_busy_kib,
    }
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-accounts");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `CHATWATCH_BENCH_ACCOUNTS=1,100` runs only those counts (the first should be 1: the per
    // account figure is relative to it).
    let counts: Vec<usize> = std::env::var("CHATWATCH_BENCH_ACCOUNTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 100, 1_000]);
    let cases: Vec<(usize, Duration, usize, f64)> = if bench {
        counts
            .into_iter()
            .map(|n| (n, Duration::from_secs(20), 2_000, 200.0))
            .collect()
    } else {
        vec![
            (1, Duration::from_millis(200), 5, 100.0),
            (5, Duration::from_millis(200), 10, 100.0),
        ]
    };
    let rows: Vec<Row> = runtime.block_on(async {
        let mut rows = Vec::new();
        for (n, idle, offers, rate) in cases {
            rows.push(run(n, idle, offers, rate, &base).await);
        }
        rows
    });
    let one = rows[0].rss_idle_kib;
    println!(
        "| accounts | all subscribed after | RSS idle | per extra account | idle CPU | events | events/s | CPU per 1k events | RSS with traffic |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        let per = if r.accounts > 1 {
            format!(
                "{:.0} KiB",
                (r.rss_idle_kib as f64 - one as f64) / (r.accounts - 1) as f64
            )
        } else {
            "–".to_owned()
        };
        println!(
            "| {} | {:.1} s | {:.1} MiB | {per} | {:.2} % | {} | {:.0} | {:.0} ms | {:.1} MiB |",
            r.accounts,
            r.subscribe_secs,
            r.rss_idle_kib as f64 / 1024.0,
            r.idle_cpu_pct,
            r.events,
            r.events_per_sec,
            r.cpu_ms_per_1k,
            r.rss_busy_kib as f64 / 1024.0,
        );
        assert!(r.events >= 1, "no event arrived");
    }
    let _ = std::fs::remove_dir_all(&base);
}
