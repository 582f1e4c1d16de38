use std::io::Write;
use std::sync::Mutex;

use metrics_util::debugging::DebuggingRecorder;

use super::*;
use crate::event::{Event, EventKind};

/// Failures to inject, shared between the test and the writer.
#[derive(Debug, Default)]
struct Faults {
    /// Fail this many writes (after writing `partial` bytes of the buffer for real).
    fail_writes: usize,
    /// Bytes a failing write really writes first, to leave a torn line behind.
    partial: usize,
    /// Fail this many syncs.
    fail_syncs: usize,
    /// On a failed sync, simulate the kernel dropping the dirty pages by truncating the file
    /// to its length at the last successful sync.
    lose_on_failed_sync: bool,
    /// Fail this many opens (after the first).
    fail_reopens: usize,
    // Observations.
    opens: usize,
    syncs_ok: usize,
    writes_ok: usize,
    /// File length after the last successful sync, as the fault layer saw it.
    synced_len: u64,
    /// Set when a write happened while a previous write was still unsynced.
    write_after_unsynced_write: bool,
    unsynced_write: bool,
    /// While set, a sync waits (the test holds the writer inside `sync_data`).
    hold_syncs: bool,
    /// Set while a sync is held.
    sync_held: bool,
}

struct FaultyOpener {
    path: PathBuf,
    faults: Arc<Mutex<Faults>>,
}

struct FaultyFile {
    file: std::fs::File,
    faults: Arc<Mutex<Faults>>,
}

impl Opener for FaultyOpener {
    type File = FaultyFile;
    fn open(&mut self) -> io::Result<FaultyFile> {
        let mut faults = self.faults.lock().unwrap();
        faults.opens += 1;
        if faults.opens > 1 && faults.fail_reopens > 0 {
            faults.fail_reopens -= 1;
            return Err(io::Error::other("injected open failure"));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)?;
        Ok(FaultyFile {
            file,
            faults: Arc::clone(&self.faults),
        })
    }
}

impl SinkFile for FaultyFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut faults = self.faults.lock().unwrap();
        if faults.fail_writes > 0 {
            faults.fail_writes -= 1;
            let partial = faults.partial.min(buf.len());
            Write::write_all(&mut self.file, &buf[..partial])?;
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        if faults.unsynced_write {
            faults.write_after_unsynced_write = true;
        }
        Write::write_all(&mut self.file, buf)?;
        faults.writes_ok += 1;
        faults.unsynced_write = true;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut faults = self.faults.lock().unwrap();
        while faults.hold_syncs {
            faults.sync_held = true;
            drop(faults);
            // The writer's own thread, not async code.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(1));
            faults = self.faults.lock().unwrap();
        }
        faults.sync_held = false;
        if faults.fail_syncs > 0 {
            faults.fail_syncs -= 1;
            if faults.lose_on_failed_sync {
                self.file.set_len(faults.synced_len)?;
            }
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        self.file.sync_data()?;
        faults.syncs_ok += 1;
        faults.unsynced_write = false;
        faults.synced_len = self.file.metadata()?.len();
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        SinkFile::size(&self.file)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn last_byte(&mut self) -> io::Result<Option<u8>> {
        SinkFile::last_byte(&mut self.file)
    }
}

fn event(i: usize) -> Event {
    Event {
        schema: crate::event::SCHEMA.to_owned(),
        event_id: format!("event-{i:05}"),
        fingerprint: "cd".repeat(16),
        received_at: time::OffsetDateTime::UNIX_EPOCH,
        account: "agent1".to_owned(),
        channel: "/v2/me/chats".to_owned(),
        kind: EventKind::ChatState,
        message_type: Some("ChatStateChangeMessage".to_owned()),
        notification_type: None,
        reference_id: None,
        chat: None,
        messages: None,
        error_message: None,
        decode_error: None,
        recovered: false,
        disposition: None,
        pending: None,
        action: None,
        data: serde_json::json!({"i": i, "text": "line\nbreak"}).into(),
    }
}

/// Every line parses into an event, ids are exactly `range` in order.
fn assert_lines(content: &str, skip: usize, range: std::ops::Range<usize>) {
    assert!(
        content.is_empty() || content.ends_with('\n'),
        "torn last line: {content:?}"
    );
    let lines: Vec<&str> = content.lines().skip(skip).collect();
    let ids: Vec<String> = lines
        .iter()
        .map(|line| {
            serde_json::from_str::<Event>(line)
                .unwrap_or_else(|e| panic!("line {line:?} does not parse: {e}"))
                .event_id
        })
        .collect();
    let expected: Vec<String> = range.map(|i| event(i).event_id).collect();
    assert_eq!(ids, expected);
}

#[test]
fn config_validation() {
    assert!(FileSinkConfig::new("/var/log/chatwatch/events.jsonl")
        .validate()
        .is_ok());
    for (config, field) in [
        (FileSinkConfig::new(""), "path"),
        (FileSinkConfig::new("/var/log/"), "path"),
        (FileSinkConfig::new("/var/log/.."), "path"),
        (
            FileSinkConfig {
                fsync_interval: Duration::ZERO,
                ..FileSinkConfig::new("a.jsonl")
            },
            "fsync_interval",
        ),
    ] {
        let err = config.validate().expect_err(field).to_string();
        assert!(err.contains(field), "{err}");
    }
    let never = FileSinkConfig {
        fsync: FsyncPolicy::Never,
        fsync_interval: Duration::ZERO,
        ..FileSinkConfig::new("a.jsonl")
    };
    assert!(
        never.validate().is_ok(),
        "the interval only matters with fsync = interval"
    );
}

/// A [`FileSink`] over a faulty file in a temp dir, with its counters.
struct DeliverHarness {
    _dir: tempfile::TempDir,
    path: PathBuf,
    faults: Arc<Mutex<Faults>>,
    sink: FileSink,
    counters: crate::sinks::test_support::Counters,
}

async fn deliver_harness(fsync: FsyncPolicy, interval: Duration, faults: Faults) -> DeliverHarness {
    deliver_harness_over(fsync, interval, faults, b"").await
}

/// A harness whose file already holds `existing` when the sink opens it.
async fn deliver_harness_over(
    fsync: FsyncPolicy,
    interval: Duration,
    faults: Faults,
    existing: &[u8],
) -> DeliverHarness {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    if !existing.is_empty() {
        std::fs::write(&path, existing).unwrap();
    }
    let faults = Arc::new(Mutex::new(faults));
    let opener = FaultyOpener {
        path: path.clone(),
        faults: Arc::clone(&faults),
    };
    let recorder = DebuggingRecorder::new();
    let counters = crate::sinks::test_support::Counters::new(&recorder);
    let building = metrics::with_local_recorder(&recorder, || {
        build_with(
            "test",
            &path,
            fsync,
            interval,
            (Duration::from_millis(2), Duration::from_millis(20)),
            opener,
        )
    });
    let sink = building.await.expect("open");
    DeliverHarness {
        _dir: dir,
        path,
        faults,
        sink,
        counters,
    }
}

/// The journal records of `range`'s events, as the runner hands them to the sink.
fn events(range: std::ops::Range<usize>) -> Vec<Arc<Record>> {
    range
        .map(|i| Arc::new(Record::from_event(event(i))))
        .collect()
}

impl DeliverHarness {
    fn content(&self) -> String {
        String::from_utf8(std::fs::read(&self.path).unwrap()).unwrap()
    }

    async fn deliver(&mut self, range: std::ops::Range<usize>) -> Result<(), SinkError> {
        tokio::time::timeout(Duration::from_secs(10), self.sink.deliver(&events(range)))
            .await
            .expect("deliver resolved in time")
    }

    fn counter(&self, name: &str, cause: Option<&str>) -> u64 {
        match cause {
            Some(cause) => self.counters.get(name, &[("cause", cause)]),
            None => self.counters.get(name, &[]),
        }
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&Faults) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check(&self.faults.lock().unwrap()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_always_resolves_only_after_the_sync() {
    let mut h = deliver_harness(
        FsyncPolicy::Always,
        Duration::from_secs(1),
        Faults {
            hold_syncs: true,
            ..Faults::default()
        },
    )
    .await;
    let batch = events(0..10);
    let mut pending = Box::pin(h.sink.deliver(&batch));
    // Drive the call until the writer is inside `sync_data`, held there.
    let faults = Arc::clone(&h.faults);
    let polled = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::select! {
            result = &mut pending => panic!("resolved before the sync: {result:?}"),
            () = async {
                while !faults.lock().unwrap().sync_held {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            } => {}
        }
    })
    .await;
    polled.expect("the writer reached the sync");
    assert_eq!(
        h.faults.lock().unwrap().writes_ok,
        1,
        "the batch is written"
    );
    // Still held: the call must not resolve.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut pending)
            .await
            .is_err(),
        "deliver resolved while the sync was still running"
    );
    h.faults.lock().unwrap().hold_syncs = false;
    tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("resolved after the sync")
        .expect("delivered");
    let faults = h.faults.lock().unwrap();
    assert_eq!(faults.syncs_ok, 1);
    assert!(!faults.unsynced_write);
    drop(faults);
    assert_lines(&h.content(), 0, 0..10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_interval_resolves_after_the_write_and_the_sync_follows() {
    // A long interval: if deliver waited for the interval sync, it would take 10 s.
    let interval = Duration::from_secs(10);
    let mut h = deliver_harness(FsyncPolicy::Interval, interval, Faults::default()).await;
    let started = tokio::time::Instant::now();
    h.deliver(0..5).await.expect("delivered");
    h.deliver(5..9).await.expect("delivered");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "acked at the write"
    );
    {
        let faults = h.faults.lock().unwrap();
        assert_eq!(
            (faults.writes_ok, faults.syncs_ok),
            (2, 0),
            "not synced yet"
        );
    }
    assert_lines(&h.content(), 0, 0..9);
    h.sink.close().await.expect("close");
    assert_eq!(
        h.faults.lock().unwrap().syncs_ok,
        1,
        "close syncs what is pending"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_never_resolves_after_the_write_and_close_syncs() {
    let mut h = deliver_harness(
        FsyncPolicy::Never,
        Duration::from_secs(1),
        Faults::default(),
    )
    .await;
    h.deliver(0..5).await.expect("delivered");
    h.deliver(5..9).await.expect("delivered");
    {
        let faults = h.faults.lock().unwrap();
        assert_eq!((faults.writes_ok, faults.syncs_ok), (2, 0));
    }
    assert_lines(&h.content(), 0, 0..9);
    h.sink.close().await.expect("close");
    assert_eq!(h.faults.lock().unwrap().syncs_ok, 1, "close syncs");
    let err = h.deliver(9..10).await.expect_err("closed");
    assert!(err.to_string().contains("closed"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_failed_sync_is_fatal_for_the_instance() {
    let mut h = deliver_harness(
        FsyncPolicy::Always,
        Duration::from_secs(1),
        Faults {
            fail_syncs: 1,
            ..Faults::default()
        },
    )
    .await;
    let err = h.deliver(0..3).await.expect_err("the sync failed");
    assert!(
        matches!(&err, SinkError::Failed { reason, .. } if reason.contains("fsync")),
        "{err}"
    );
    // The writer has stopped: no retried fsync that could falsely succeed.
    let err = h.deliver(3..4).await.expect_err("stopped");
    assert!(matches!(&err, SinkError::Failed { reason, .. } if reason.contains("fsync")));
    assert_eq!(h.faults.lock().unwrap().syncs_ok, 0);
    assert_eq!(
        h.faults.lock().unwrap().writes_ok,
        1,
        "nothing written after the failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_after_a_failed_interval_sync_fails_the_instance() {
    let mut h = deliver_harness(
        FsyncPolicy::Interval,
        Duration::from_millis(20),
        Faults {
            fail_syncs: 1,
            ..Faults::default()
        },
    )
    .await;
    h.deliver(0..3).await.expect("acknowledged at the write");
    // The interval sync fails in the background; from then on the instance refuses work, so
    // the runner rebuilds it and re-delivers from its cursor.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let err = loop {
        match h.deliver(3..4).await {
            Err(err) => break err,
            Ok(()) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the failed sync was never noticed"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert!(matches!(err, SinkError::Failed { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_retries_failed_writes_while_pending() {
    let mut h = deliver_harness(
        FsyncPolicy::Always,
        Duration::from_secs(1),
        Faults {
            fail_writes: 4,
            partial: 17,
            ..Faults::default()
        },
    )
    .await;
    h.deliver(0..10).await.expect("delivered after the retries");
    h.deliver(10..12).await.expect("delivered");
    assert_lines(&h.content(), 0, 0..12);
    let faults = h.faults.lock().unwrap();
    assert_eq!(faults.fail_writes, 0, "all four failures were hit");
    assert_eq!(faults.writes_ok, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_are_written_in_order_parse_back_and_are_counted() {
    let mut h = deliver_harness(
        FsyncPolicy::Interval,
        Duration::from_secs(1),
        Faults::default(),
    )
    .await;
    for start in (0..500).step_by(100) {
        h.deliver(start..start + 100).await.expect("delivered");
    }
    h.sink.close().await.expect("close");
    let content = h.content();
    assert_lines(&content, 0, 0..500);
    let first: Event = serde_json::from_str(content.lines().next().unwrap()).unwrap();
    assert_eq!(first, event(0), "the record round-trips");
    assert_eq!(h.counter(crate::sinks::DELIVERED_EVENTS, None), 500);
    assert_eq!(h.counter(crate::sinks::FAILED_WRITES, None), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_counted_and_leave_no_torn_line_or_duplicate() {
    let mut h = deliver_harness(
        FsyncPolicy::Interval,
        Duration::from_millis(50),
        Faults {
            fail_writes: 4,
            partial: 17,
            ..Faults::default()
        },
    )
    .await;
    h.deliver(0..10).await.expect("delivered after the retries");
    h.deliver(10..300).await.expect("delivered");
    h.sink.close().await.expect("close");
    assert_lines(&h.content(), 0, 0..300);
    assert_eq!(h.counter(crate::sinks::FAILED_WRITES, Some("write")), 4);
    assert_eq!(h.counter(crate::sinks::DELIVERED_EVENTS, None), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_last_line_is_repaired_at_open() {
    let existing = format!(
        "{}\n{{\"schema\":\"chatwatch.ev",
        serde_json::to_string(&event(0)).unwrap()
    );
    let mut h = deliver_harness_over(
        FsyncPolicy::Interval,
        Duration::from_secs(1),
        Faults::default(),
        existing.as_bytes(),
    )
    .await;
    assert!(
        h.faults.lock().unwrap().syncs_ok >= 1,
        "the repair is synced before the sink is used"
    );
    h.deliver(1..4).await.expect("delivered");
    h.sink.close().await.expect("close");
    let content = h.content();
    let lines: Vec<&str> = content.lines().collect();
    assert_eq!(
        lines[1], "{\"schema\":\"chatwatch.ev",
        "the torn fragment stays on its own line"
    );
    assert_lines(&content, 2, 1..4);
    assert_lines(&format!("{}\n", lines[0]), 0, 0..1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_existing_file_is_appended_to_unchanged() {
    let existing = format!("{}\n", serde_json::to_string(&event(0)).unwrap());
    let mut h = deliver_harness_over(
        FsyncPolicy::Never,
        Duration::from_secs(1),
        Faults::default(),
        existing.as_bytes(),
    )
    .await;
    h.deliver(1..3).await.expect("delivered");
    h.sink.close().await.expect("close");
    let content = h.content();
    assert!(
        content.starts_with(&existing),
        "the old bytes are kept as they were"
    );
    assert_lines(&content, 0, 0..3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_repairs_a_torn_line_in_the_new_file() {
    let mut h = deliver_harness(
        FsyncPolicy::Always,
        Duration::from_secs(1),
        Faults::default(),
    )
    .await;
    h.deliver(0..2).await.expect("delivered");
    // Another writer left a torn line behind in the file the sink reopens.
    let rotated = h.path.with_extension("jsonl.1");
    std::fs::rename(&h.path, &rotated).unwrap();
    std::fs::write(&h.path, b"torn").unwrap();
    h.sink.reopen().await.expect("reopen");
    h.deliver(2..4).await.expect("delivered");
    h.sink.close().await.expect("close");
    assert_lines(&std::fs::read_to_string(&rotated).unwrap(), 0, 0..2);
    let content = h.content();
    assert_eq!(content.lines().next(), Some("torn"));
    assert_lines(&content, 1, 2..4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_pending_deliver_is_harmless() {
    let mut h = deliver_harness(
        FsyncPolicy::Always,
        Duration::from_secs(1),
        Faults {
            hold_syncs: true,
            ..Faults::default()
        },
    )
    .await;
    let batch = events(0..10);
    let dropped = tokio::time::timeout(Duration::from_millis(50), h.sink.deliver(&batch)).await;
    assert!(dropped.is_err(), "held in the sync, so still pending");
    h.wait_for("the held sync", |f| f.sync_held).await;
    h.faults.lock().unwrap().hold_syncs = false;
    // The runner delivers the batch again (its cursor did not move), then goes on.
    h.deliver(0..10).await.expect("redelivered");
    h.deliver(10..20).await.expect("delivered");
    let content = h.content();
    let (first, rest) = content.split_at(content.match_indices('\n').nth(9).unwrap().0 + 1);
    assert_lines(first, 0, 0..10);
    assert_lines(rest, 0, 0..20);
    h.sink.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_line_is_the_journal_payload_byte_for_byte_and_nothing_is_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut sink = FileSinkConfig::new(&path)
        .build("test")
        .await
        .expect("open");
    let mut payloads: Vec<Vec<u8>> = (0..3)
        .map(|i| serde_json::to_vec(&event(i)).unwrap())
        .collect();
    // Keys in another order than `Event` writes them (a `Value` sorts them): decoding and
    // encoding again would change these bytes, writing them as they are does not.
    let sorted = serde_json::to_vec(&serde_json::to_value(event(3)).unwrap()).unwrap();
    assert_ne!(
        serde_json::to_vec(&serde_json::from_slice::<Event>(&sorted).unwrap()).unwrap(),
        sorted
    );
    payloads.push(sorted);
    let records: Vec<Arc<Record>> = payloads
        .iter()
        .map(|p| Arc::new(Record::new(p.clone())))
        .collect();
    sink.deliver(&records).await.expect("delivered");
    sink.close().await.expect("close");
    let mut expected = Vec::new();
    for p in &payloads {
        expected.extend_from_slice(p);
        expected.push(b'\n');
    }
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    assert!(
        records.iter().all(|r| !r.is_decoded()),
        "the file sink writes bytes: it decodes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_reopen_after_rename_writes_to_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let config = FileSinkConfig {
        fsync: FsyncPolicy::Always,
        ..FileSinkConfig::new(&path)
    };
    let mut sink = config.build("test").await.expect("open");
    sink.deliver(&events(0..3)).await.expect("delivered");
    // logrotate's default: rename, then signal.
    let rotated = dir.path().join("events.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    sink.deliver(&events(3..4)).await.expect("delivered");
    sink.reopen().await.expect("reopen");
    sink.deliver(&events(4..6)).await.expect("delivered");
    sink.close().await.expect("close");
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&path).unwrap();
    assert_lines(&old, 0, 0..4);
    assert_lines(&new, 0, 4..6);
}

#[tokio::test]
async fn open_fails_naming_sink_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let path = blocker.join("events.jsonl");
    let err = FileSinkConfig::new(&path)
        .build("audit")
        .await
        .expect_err("ENOTDIR")
        .to_string();
    assert!(err.contains("sink `audit`"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
}

/// Events per second through `FileSink::deliver` on a real file, per fsync policy, with a
/// runner that waits for each batch (as the journal runner does). Run with
/// `cargo test --release -- --ignored --nocapture deliver_throughput`.
#[ignore = "measurement, not a test"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_throughput() {
    for (fsync, interval, batch) in [
        (FsyncPolicy::Always, Duration::from_secs(1), 1),
        (FsyncPolicy::Always, Duration::from_secs(1), 100),
        (FsyncPolicy::Always, Duration::from_secs(1), 1000),
        (FsyncPolicy::Interval, Duration::from_millis(10), 100),
        (FsyncPolicy::Interval, Duration::from_millis(10), 1000),
        (FsyncPolicy::Interval, Duration::from_secs(1), 1000),
        (FsyncPolicy::Never, Duration::from_secs(1), 1000),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = FileSinkConfig {
            fsync,
            fsync_interval: interval,
            ..FileSinkConfig::new(dir.path().join("events.jsonl"))
        };
        let mut sink = config.build("bench").await.expect("open");
        let all = events(0..20_000);
        let started = tokio::time::Instant::now();
        let mut sent = 0;
        while started.elapsed() < Duration::from_secs(3) && sent + batch <= all.len() {
            sink.deliver(&all[sent..sent + batch])
                .await
                .expect("delivered");
            sent += batch;
        }
        let took = started.elapsed();
        sink.close().await.expect("close");
        println!(
            "fsync={fsync:?} interval={interval:?} batch={batch}: {sent} events in {took:?} = {:.0} events/s",
            sent as f64 / took.as_secs_f64()
        );
    }
}

#[tokio::test]
async fn build_fails_naming_sink_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let path = blocker.join("events.jsonl");
    let err = FileSinkConfig::new(&path)
        .build("audit")
        .await
        .expect_err("ENOTDIR")
        .to_string();
    assert!(err.contains("sink `audit`"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    let missing = dir.path().join("missing/events.jsonl");
    let err = FileSinkConfig {
        create_dirs: false,
        ..FileSinkConfig::new(&missing)
    }
    .build("audit")
    .await
    .expect_err("missing dir")
    .to_string();
    assert!(
        err.contains("missing/events.jsonl") && err.contains("No such file"),
        "{err}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn build_creates_dirs_and_a_private_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/events.jsonl");
    let sink = FileSinkConfig::new(&path)
        .build("audit")
        .await
        .expect("build");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "the default `mode`");
    let dir_mode = std::fs::metadata(dir.path().join("a/b"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode & !0o750, 0, "dirs at most 0750, got {dir_mode:o}");
    drop(sink);
}
