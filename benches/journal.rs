//! Journal appends per second, ~700-byte payloads (the size of one event record), for each
//! fsync policy, in batches of 1 and 64 records per append, plus 8 concurrent appenders of one
//! record each (group commit: they share fsyncs).
//!
//! Run with `cargo bench --bench journal`. Throughput is in records, so criterion reports
//! records per second. The journal lives in a temporary directory under `CHATWATCH_BENCH_DIR`
//! (default: the crate directory), not under `/tmp`, which may be a tmpfs where fsync is free.
//! The issue's goals: `always` ≥ 2,000 events/s, `interval` ≥ 50,000 events/s.

use std::path::PathBuf;
use std::time::Duration;

use chatwatch::journal::{Journal, JournalConfig, JournalFsync};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const PAYLOAD_BYTES: usize = 700;
const TASKS: u64 = 8;

fn payload() -> Vec<u8> {
    let mut p =
        br#"{"schema":"chatwatch.event.v1","event_id":"0192f5a4-0000-7000-8000-000000000000","#
            .to_vec();
    p.resize(PAYLOAD_BYTES - 1, b'x');
    p.push(b'}');
    p
}

fn base_dir() -> PathBuf {
    std::env::var_os("CHATWATCH_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let payload = payload();
    let mut group = c.benchmark_group("journal_append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, fsync) in [
        ("always", JournalFsync::Always),
        ("interval", JournalFsync::Interval),
        ("never", JournalFsync::Never),
    ] {
        let dir = tempfile::Builder::new()
            .prefix("chatwatch-bench-journal-")
            .tempdir_in(base_dir())
            .expect("temporary directory");
        let journal = Journal::open(JournalConfig {
            fsync,
            ..JournalConfig::new(dir.path())
        })
        .expect("open the journal");
        for batch in [1usize, 64] {
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(BenchmarkId::new(name, format!("batch{batch}")), |b| {
                let records = vec![payload.clone(); batch];
                b.iter(|| {
                    runtime
                        .block_on(journal.append(records.clone()))
                        .expect("append")
                });
            });
        }
        // Concurrent appenders of one record each: what the pipeline does with several
        // accounts. Each iteration is one record.
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new(name, format!("{TASKS}tasks")), |b| {
            b.iter_custom(|iters| {
                let per_task = iters.div_ceil(TASKS);
                runtime.block_on(async {
                    let start = tokio::time::Instant::now();
                    let tasks: Vec<_> = (0..TASKS)
                        .map(|_| {
                            let journal = journal.clone();
                            let payload = payload.clone();
                            tokio::spawn(async move {
                                for _ in 0..per_task {
                                    journal.append(vec![payload.clone()]).await.expect("append");
                                }
                            })
                        })
                        .collect();
                    for task in tasks {
                        task.await.expect("task");
                    }
                    // Scale to the requested iteration count.
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per_task * TASKS) as f64)
                })
            });
        });
        runtime.block_on(journal.close()).expect("close");
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
