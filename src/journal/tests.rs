use super::*;

fn small(dir: &std::path::Path, fsync: JournalFsync) -> JournalConfig {
    JournalConfig {
        fsync,
        segment_bytes: 100,
        ..JournalConfig::new(dir)
    }
}

/// 11 bytes: every record is 27 bytes, three to a 100-byte segment.
fn payload(i: u64) -> Vec<u8> {
    format!("event-{i:05}").into_bytes()
}

fn faults(journal: &Journal) -> &state::Faults {
    &journal.inner.shared.faults
}

/// The value of `chatwatch_journal_repairs_total{cause}` recorded while `f` ran.
fn repairs_counted<T>(cause: &str, f: impl FnOnce() -> T) -> (T, u64) {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let out = metrics::with_local_recorder(&recorder, f);
    let count = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key().name() == REPAIRS
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "cause" && l.value() == cause)
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum();
    (out, count)
}

fn write_cursor(dir: &std::path::Path, sink: &str, text: &str) {
    std::fs::create_dir_all(cursor::dir(dir)).unwrap();
    std::fs::write(cursor::path(dir, sink), text).unwrap();
}

/// J1 (issue 16): a cursor file holding `u64::MAX` overflowed `max_cursor + 1`; in a
/// release build the next record became seq 0 and the next start failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_above_the_seq_range_is_reset_and_the_journal_keeps_opening() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    assert_eq!(journal.append(vec![payload(1)]).await.unwrap(), 1..=1);
    journal.close().await.unwrap();
    drop(journal);
    write_cursor(dir.path(), "audit", "18446744073709551615\n");

    let (journal, counted) = repairs_counted("cursor_out_of_range", || {
        Journal::open(small(dir.path(), JournalFsync::Always)).unwrap()
    });
    assert_eq!(counted, 1);
    let repair = &journal.recovery().repairs[0];
    assert_eq!(repair.path, cursor::path(dir.path(), "audit"));
    assert!(
        repair.problem.contains("18446744073709551615"),
        "{repair:?}"
    );
    assert_eq!(journal.load_cursor("audit").unwrap(), Some(1));
    assert_eq!(
        std::fs::read_to_string(cursor::path(dir.path(), "audit")).unwrap(),
        "1\n"
    );
    assert_eq!(journal.append(vec![payload(2)]).await.unwrap(), 2..=2);
    journal.close().await.unwrap();
    drop(journal);

    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).expect("reopens");
    assert!(journal.recovery().repairs.is_empty());
    let seqs: Vec<u64> = journal
        .read(0, 10)
        .unwrap()
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(seqs, vec![1, 2]);
    journal.close().await.unwrap();
}

/// A cursor past the end but in range: new records continue after it, counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_past_the_end_is_counted_and_records_continue_after_it() {
    let dir = tempfile::tempdir().unwrap();
    write_cursor(dir.path(), "audit", "41\n");
    let (journal, counted) = repairs_counted("cursor_ahead", || {
        Journal::open(small(dir.path(), JournalFsync::Always)).unwrap()
    });
    assert_eq!(counted, 1);
    assert_eq!(journal.append(vec![payload(1)]).await.unwrap(), 42..=42);
    journal.close().await.unwrap();
    drop(journal);
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).expect("reopens");
    assert_eq!(journal.recovery().last_seq, 42);
    journal.close().await.unwrap();
}

/// J2 (issue 16): with the next seq at the top of the range, the first append killed the
/// writer thread (`seq += 1`). Now it fails cleanly, and the journal still opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_at_the_top_of_the_seq_range_fail_cleanly() {
    use format::MAX_SEQ;
    let dir = tempfile::tempdir().unwrap();
    write_cursor(dir.path(), "audit", &format!("{}\n", MAX_SEQ - 1));
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    assert_eq!(
        journal.append(vec![payload(1)]).await.unwrap(),
        MAX_SEQ..=MAX_SEQ
    );
    let err = journal
        .append(vec![payload(2)])
        .await
        .expect_err("exhausted");
    assert!(matches!(err, JournalError::SeqExhausted { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    // The writer is alive: an empty append (the readiness probe) still answers.
    assert!(matches!(
        journal.probe(Duration::from_secs(30)).await,
        WriterProbe::Writable
    ));
    journal.close().await.unwrap();
    drop(journal);
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).expect("reopens");
    assert_eq!(journal.recovery().last_seq, MAX_SEQ);
    assert_eq!(journal.read(0, 10).unwrap(), vec![(MAX_SEQ, payload(1))]);
    journal.close().await.unwrap();
    drop(journal);

    let dir = tempfile::tempdir().unwrap();
    write_cursor(dir.path(), "audit", &format!("{MAX_SEQ}\n"));
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    let err = journal
        .append(vec![payload(1)])
        .await
        .expect_err("exhausted");
    assert!(matches!(err, JournalError::SeqExhausted { .. }), "{err}");
    journal.close().await.unwrap();
}

/// J3 (issue 16): a valid record with seq `u64::MAX` crashed the segment scanner, in
/// recovery and in `chatwatch journal status`. Its segment is now set aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_at_the_top_of_the_seq_range_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    format::encode(u64::MAX, b"{}", &mut bytes);
    let top = dir.path().join(format::segment_name(u64::MAX));
    std::fs::write(&top, &bytes).unwrap();
    let status = status_offline(dir.path()).expect("status reads it");
    assert_eq!(status.last_seq, 0);
    assert!(tail_offline(dir.path(), 5).unwrap().is_empty());

    let (journal, counted) = repairs_counted("segment_out_of_range", || {
        Journal::open(small(dir.path(), JournalFsync::Always)).unwrap()
    });
    assert_eq!(counted, 1);
    assert_eq!(journal.recovery().repairs[0].path, top);
    assert!(!top.exists());
    assert!(dir
        .path()
        .join(format!("{}.out-of-range", format::segment_name(u64::MAX)))
        .exists());
    assert_eq!(journal.append(vec![payload(1)]).await.unwrap(), 1..=1);
    journal.close().await.unwrap();
    drop(journal);
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).expect("reopens");
    assert_eq!(journal.read(0, 10).unwrap(), vec![(1, payload(1))]);
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_stops_the_journal_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    assert_eq!(journal.append(vec![payload(1)]).await.unwrap(), 1..=1);
    faults(&journal).syncs.store(1, Ordering::SeqCst);
    let err = journal.append(vec![payload(2)]).await.expect_err("sync");
    assert!(matches!(err, JournalError::Sync { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("fdatasync") && text.contains("seg-00000000000000000001.log"),
        "{text}"
    );
    // The next fsync would succeed, but must not be trusted (fsyncgate).
    let err = journal.append(vec![payload(3)]).await.expect_err("still");
    assert!(matches!(err, JournalError::Sync { .. }), "{err}");
    assert_eq!(
        *journal.head().borrow(),
        1,
        "nothing unsynced becomes visible"
    );
    assert_eq!(journal.read(0, 10).unwrap().len(), 1);
    let err = journal.close().await.expect_err("close reports it too");
    assert!(matches!(err, JournalError::Sync { .. }), "{err}");
    drop(journal);

    // The restart recovers what is on disk and goes on.
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    let last = journal.recovery().last_seq;
    assert_eq!(last, 2, "record 2 was written, only its sync failed");
    assert_eq!(
        journal.append(vec![payload(3)]).await.unwrap(),
        last + 1..=last + 1
    );
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_interval_sync_keeps_the_records_invisible_and_stops_appends() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig {
        fsync_interval: Duration::from_millis(10),
        sinks_see: SinksSee::Synced,
        ..small(dir.path(), JournalFsync::Interval)
    })
    .unwrap();
    faults(&journal).syncs.store(1, Ordering::SeqCst);
    assert_eq!(journal.append(vec![payload(1)]).await.unwrap(), 1..=1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while journal.inner.shared.lock().poisoned.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flusher never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(*journal.head().borrow(), 0);
    let err = journal
        .append(vec![payload(2)])
        .await
        .expect_err("poisoned");
    assert!(matches!(err, JournalError::Sync { .. }), "{err}");
    assert!(journal.close().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_interval_sync_with_records_already_visible_stops_appends() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig {
        fsync_interval: Duration::from_millis(10),
        ..small(dir.path(), JournalFsync::Interval)
    })
    .unwrap();
    faults(&journal).syncs.store(1, Ordering::SeqCst);
    assert_eq!(journal.append(vec![payload(1)]).await.unwrap(), 1..=1);
    assert_eq!(
        *journal.head().borrow(),
        1,
        "visible once written (the default)"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while journal.inner.shared.lock().poisoned.is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flusher never ran"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = journal
        .append(vec![payload(2)])
        .await
        .expect_err("poisoned");
    assert!(matches!(err, JournalError::Sync { .. }), "{err}");
    assert_eq!(*journal.head().borrow(), 1, "nothing after the failed sync");
    assert!(journal.close().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_undone_across_a_segment_roll() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    assert_eq!(
        journal.append(vec![payload(1), payload(2)]).await.unwrap(),
        1..=2
    );
    // Record 3 completes segment 1; records 4 to 6 go to a new segment 4, whose write
    // fails half-way.
    faults(&journal).write_at.store(2, Ordering::SeqCst);
    let err = journal
        .append((3..=6).map(payload).collect())
        .await
        .expect_err("write");
    let text = err.to_string();
    assert!(matches!(err, JournalError::Io { .. }), "{text}");
    assert!(text.contains("seg-00000000000000000004.log"), "{text}");
    let first = dir.path().join("seg-00000000000000000001.log");
    assert_eq!(
        std::fs::metadata(&first).unwrap().len(),
        54,
        "truncated back"
    );
    assert!(!dir.path().join("seg-00000000000000000004.log").exists());
    let status = journal.status();
    assert_eq!((status.last_seq, status.bytes, status.segments), (2, 54, 1));

    assert_eq!(
        journal
            .append((3..=6).map(payload).collect())
            .await
            .unwrap(),
        3..=6,
        "the same seqs again"
    );
    let records = journal.read(0, 100).unwrap();
    let expected: Vec<(u64, Vec<u8>)> = (1..=6).map(|i| (i, payload(i))).collect();
    assert_eq!(records, expected);
    journal.close().await.unwrap();
    drop(journal);
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    assert!(
        journal.recovery().repairs.is_empty(),
        "{:?}",
        journal.recovery()
    );
    assert_eq!(journal.recovery().records, 6);
    journal.close().await.unwrap();
}

#[test]
fn config_defaults_and_serde() {
    let cfg: JournalConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(cfg, JournalConfig::default());
    assert_eq!(cfg.fsync, JournalFsync::Interval);
    assert_eq!(cfg.fsync_interval, Duration::from_millis(200));
    assert_eq!(cfg.segment_bytes, 64 << 20);
    assert_eq!(cfg.max_bytes, 1 << 30);
    assert_eq!(cfg.when_full, WhenFull::Block);
    assert!(cfg.validate().is_ok());

    let cfg: JournalConfig = serde_json::from_str(
        r#"{"dir":"/j","fsync":"always","fsync_interval":"1s","when_full":"drop_oldest"}"#,
    )
    .unwrap();
    assert_eq!(cfg.fsync, JournalFsync::Always);
    assert_eq!(cfg.fsync_interval, Duration::from_secs(1));
    assert_eq!(cfg.when_full, WhenFull::DropOldest);
    let err = serde_json::from_str::<JournalConfig>(r#"{"fsynk":"always"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("fsynk"), "{err}");
    let err = serde_json::from_str::<JournalConfig>(r#"{"when_full":"drop"}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("drop_newest"), "{err}");
}

#[test]
fn config_validation_names_the_field() {
    for (cfg, field) in [
        (JournalConfig::new(""), "dir"),
        (
            JournalConfig {
                fsync_interval: Duration::ZERO,
                ..JournalConfig::new("/j")
            },
            "fsync_interval",
        ),
        (
            JournalConfig {
                segment_bytes: 10,
                ..JournalConfig::new("/j")
            },
            "segment_bytes",
        ),
        (
            JournalConfig {
                segment_bytes: 1000,
                max_bytes: 1999,
                ..JournalConfig::new("/j")
            },
            "max_bytes",
        ),
    ] {
        let err = cfg.validate().expect_err(field).to_string();
        assert!(err.contains(field), "{err}");
    }
    let never = JournalConfig {
        fsync: JournalFsync::Never,
        fsync_interval: Duration::ZERO,
        ..JournalConfig::new("/j")
    };
    assert!(never.validate().is_ok());
}
