//! Integration tests of the journal through its public API, on real files in temporary
//! directories: round trips across segments, recovery from torn and corrupt segments (including
//! a crash at every byte of the last segment), cursors, garbage collection, the fsync policies'
//! heads, the `when_full` policies, and the offline views.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chatwatch::journal::{
    status_offline, tail_offline, Journal, JournalConfig, JournalError, JournalFsync, SinksSee,
    WhenFull, CORRUPT_RECORDS, DROPPED, FULL, TRUNCATED_BYTES,
};
use metrics_util::debugging::DebuggingRecorder;

use crate::support::metrics::Counters;
use crate::support::wait_until;

/// Every payload of these tests is 11 bytes, so every record is 27 bytes and a 100-byte
/// segment holds three.
const RECORD: u64 = 27;

fn payload(i: u64) -> Vec<u8> {
    format!("event-{i:05}").into_bytes()
}

fn config(dir: &Path, fsync: JournalFsync) -> JournalConfig {
    JournalConfig {
        fsync,
        fsync_interval: Duration::from_millis(20),
        ..JournalConfig::new(dir)
    }
}

/// Three records per segment.
fn small(dir: &Path, fsync: JournalFsync) -> JournalConfig {
    JournalConfig {
        segment_bytes: 100,
        ..config(dir, fsync)
    }
}

/// Appends `range` one record per append and checks the seqs they got.
async fn append_each(journal: &Journal, range: std::ops::RangeInclusive<u64>) {
    for i in range {
        let got = journal.append(vec![payload(i)]).await.expect("append");
        assert_eq!(got, i..=i);
    }
}

/// The segment files of `dir`, sorted.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

fn segment(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("seg-{first:020}.log"))
}

fn seqs(records: &[(u64, Vec<u8>)]) -> Vec<u64> {
    records.iter().map(|(seq, _)| *seq).collect()
}

/// Reads everything and checks each payload is `payload(seq)`.
fn read_all(journal: &Journal) -> Vec<u64> {
    let records = journal.read(0, usize::MAX).expect("read");
    for (seq, body) in &records {
        assert_eq!(body, &payload(*seq), "payload of {seq}");
    }
    seqs(&records)
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x04;
    std::fs::write(path, bytes).unwrap();
}

/// Opens a journal whose metric handles report to a fresh recorder.
fn open_counted(cfg: JournalConfig) -> (Journal, Counters) {
    let recorder = DebuggingRecorder::new();
    let counters = Counters::new(&recorder);
    let journal = metrics::with_local_recorder(&recorder, || Journal::open(cfg)).expect("open");
    (journal, counters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_and_read_round_trip_across_small_segments() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    assert_eq!(*journal.head().borrow(), 0, "empty journal");
    assert_eq!(journal.read(0, 10).unwrap(), vec![]);
    assert_eq!(journal.append(vec![payload(1)]).await.unwrap(), 1..=1);
    assert_eq!(
        journal
            .append((2..=6).map(payload).collect())
            .await
            .unwrap(),
        2..=6
    );
    assert_eq!(
        journal
            .append((7..=20).map(payload).collect())
            .await
            .unwrap(),
        7..=20
    );
    assert_eq!(*journal.head().borrow(), 20);
    assert_eq!(read_all(&journal), (1..=20).collect::<Vec<_>>());
    for after in 0..=20 {
        for max in [1, 4, 100] {
            let got = seqs(&journal.read(after, max).unwrap());
            let want: Vec<u64> = (after + 1..=20).take(max).collect();
            assert_eq!(got, want, "read({after}, {max})");
        }
    }
    assert_eq!(journal.read(5, 0).unwrap(), vec![]);
    assert_eq!(journal.read(99, 10).unwrap(), vec![]);

    // Three records per 100-byte segment, named after their first record, none split.
    let files = segments(dir.path());
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let expected: Vec<String> = (0..7)
        .map(|k| format!("seg-{:020}.log", 1 + 3 * k))
        .collect();
    assert_eq!(names, expected);
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len();
        assert!(
            len <= 100 && len % RECORD == 0,
            "{} is {len} bytes",
            file.display()
        );
    }
    // The record format, byte by byte.
    let bytes = std::fs::read(&files[0]).unwrap();
    assert_eq!(&bytes[0..4], &11u32.to_le_bytes());
    let mut crc_input = 1u64.to_le_bytes().to_vec();
    crc_input.extend_from_slice(&payload(1));
    assert_eq!(&bytes[4..8], &crc32c::crc32c(&crc_input).to_le_bytes());
    assert_eq!(&bytes[8..16], &1u64.to_le_bytes());
    assert_eq!(&bytes[16..27], &payload(1)[..]);

    let empty = journal.append(vec![]).await.unwrap();
    assert!(
        empty.is_empty() && *empty.start() == 21,
        "empty append: {empty:?}"
    );
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_record_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig {
        max_bytes: 1000,
        ..small(dir.path(), JournalFsync::Always)
    })
    .unwrap();
    append_each(&journal, 1..=1).await;
    let big = vec![7u8; 300];
    assert_eq!(journal.append(vec![big.clone()]).await.unwrap(), 2..=2);
    append_each(&journal, 3..=3).await;
    let files = segments(dir.path());
    assert_eq!(files.len(), 3);
    assert_eq!(std::fs::metadata(&files[1]).unwrap().len(), 316);
    let records = journal.read(0, 10).unwrap();
    assert_eq!(seqs(&records), vec![1, 2, 3]);
    assert_eq!(records[1].1, big);

    // Larger than the whole journal may ever be: refused, and the journal goes on.
    let err = journal
        .append(vec![vec![0u8; 600], vec![0u8; 600]])
        .await
        .expect_err("too large");
    assert!(matches!(err, JournalError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    append_each(&journal, 4..=4).await;
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_continue_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Interval)).unwrap();
    append_each(&journal, 1..=5).await;
    journal.close().await.unwrap();
    assert_eq!(
        *journal.head().borrow(),
        5,
        "close syncs and moves the head"
    );
    drop(journal);

    let journal = Journal::open(small(dir.path(), JournalFsync::Interval)).unwrap();
    let report = journal.recovery();
    assert_eq!(report.segments_scanned, 2);
    assert_eq!(report.records, 5);
    assert_eq!((report.first_seq, report.last_seq), (1, 5));
    assert_eq!(report.truncated_bytes + report.corrupt_records, 0);
    assert!(report.repairs.is_empty());
    assert_eq!(*journal.head().borrow(), 5);
    append_each(&journal, 6..=7).await;
    journal.close().await.unwrap();
    assert_eq!(read_all(&journal), (1..=7).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_truncates_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(dir.path(), JournalFsync::Always)).unwrap();
    append_each(&journal, 1..=10).await;
    journal.close().await.unwrap();
    drop(journal);
    let path = segment(dir.path(), 1);
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(10 * RECORD - 5).unwrap();
    drop(file);

    let (journal, counters) = open_counted(config(dir.path(), JournalFsync::Always));
    let report = journal.recovery().clone();
    assert_eq!(report.last_seq, 9);
    assert_eq!(report.records, 9);
    assert_eq!(report.truncated_bytes, RECORD - 5);
    assert_eq!(report.corrupt_records, 0);
    assert_eq!(report.repairs.len(), 1);
    assert_eq!(report.repairs[0].path, path);
    assert_eq!(report.repairs[0].offset, 9 * RECORD);
    assert!(report.repairs[0].problem.contains("short"), "{report:?}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 9 * RECORD);
    assert_eq!(counters.get(TRUNCATED_BYTES, &[]), RECORD - 5);
    assert_eq!(*journal.head().borrow(), 9);
    append_each(&journal, 10..=11).await;
    assert_eq!(read_all(&journal), (1..=11).collect::<Vec<_>>());
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_truncates_the_last_segment_at_a_flipped_bit() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    append_each(&journal, 1..=9).await;
    journal.close().await.unwrap();
    drop(journal);
    // Record 8 is the second of the last segment (7..=9); flip a payload bit.
    let last = segment(dir.path(), 7);
    flip_byte(&last, RECORD + 16 + 3);

    let (journal, counters) = open_counted(small(dir.path(), JournalFsync::Always));
    let report = journal.recovery().clone();
    assert_eq!(report.segments_scanned, 3);
    assert_eq!(report.last_seq, 7);
    assert_eq!(report.truncated_bytes, 2 * RECORD, "records 8 and 9 cut");
    assert_eq!(report.corrupt_records, 0);
    assert_eq!(report.repairs[0].offset, RECORD);
    assert!(report.repairs[0].problem.contains("checksum"), "{report:?}");
    assert_eq!(std::fs::metadata(&last).unwrap().len(), RECORD);
    assert_eq!(counters.get(TRUNCATED_BYTES, &[]), 2 * RECORD);
    append_each(&journal, 8..=9).await;
    assert_eq!(read_all(&journal), (1..=9).collect::<Vec<_>>());
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_skips_a_corrupt_record_in_a_middle_segment_and_reports_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    append_each(&journal, 1..=9).await;
    journal.close().await.unwrap();
    drop(journal);
    // Record 5 is the second of the middle segment (4..=6).
    let middle = segment(dir.path(), 4);
    flip_byte(&middle, RECORD + 16 + 3);

    let (journal, counters) = open_counted(small(dir.path(), JournalFsync::Always));
    let report = journal.recovery().clone();
    assert_eq!(report.records, 7);
    assert_eq!((report.first_seq, report.last_seq), (1, 9));
    assert_eq!(report.corrupt_records, 2, "records 5 and 6 are lost");
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(report.repairs.len(), 1);
    assert_eq!(report.repairs[0].path, middle);
    assert_eq!(report.repairs[0].offset, RECORD);
    assert_eq!(report.repairs[0].corrupt_records, 2);
    assert_eq!(
        std::fs::metadata(&middle).unwrap().len(),
        3 * RECORD,
        "the evidence stays"
    );
    assert_eq!(counters.get(CORRUPT_RECORDS, &[]), 2);
    assert_eq!(counters.get(TRUNCATED_BYTES, &[]), 0);
    append_each(&journal, 10..=10).await;
    assert_eq!(read_all(&journal), vec![1, 2, 3, 4, 7, 8, 9, 10]);
    assert_eq!(seqs(&journal.read(4, 1).unwrap()), vec![7]);
    journal.close().await.unwrap();
}

/// A crash can leave the last segment cut at any byte. Whatever the cut, recovery must keep
/// exactly the complete records, and the next append must get the next seq.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_a_crash_at_every_byte_of_the_last_segment() {
    let source = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig {
        segment_bytes: 300,
        ..config(source.path(), JournalFsync::Always)
    })
    .unwrap();
    // Payloads of different sizes; the second segment starts at record 7.
    let payloads: Vec<Vec<u8>> = (1..=9u64)
        .map(|i| vec![b'a' + i as u8; (i * 7) as usize])
        .collect();
    for (i, p) in payloads.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(journal.append(vec![p.clone()]).await.unwrap(), seq..=seq);
    }
    journal.close().await.unwrap();
    drop(journal);
    let files = segments(source.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let first_bytes = std::fs::read(&files[0]).unwrap();
    let last_bytes = std::fs::read(&files[1]).unwrap();
    let last_first = 7u64;
    // Record boundaries in the last segment.
    let mut ends = vec![];
    let mut end = 0u64;
    for p in &payloads[6..] {
        end += 16 + p.len() as u64;
        ends.push(end);
    }
    assert_eq!(end, last_bytes.len() as u64);

    for cut in 0..=last_bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(files[0].file_name().unwrap()), &first_bytes).unwrap();
        std::fs::write(
            dir.path().join(files[1].file_name().unwrap()),
            &last_bytes[..cut],
        )
        .unwrap();
        let complete = ends.iter().filter(|e| **e <= cut as u64).count() as u64;
        let valid = if complete == 0 {
            0
        } else {
            ends[complete as usize - 1]
        };
        let journal = Journal::open(JournalConfig {
            segment_bytes: 300,
            ..config(dir.path(), JournalFsync::Always)
        })
        .unwrap();
        let report = journal.recovery();
        let last = last_first - 1 + complete;
        assert_eq!(report.last_seq, last, "cut at {cut}");
        assert_eq!(report.truncated_bytes, cut as u64 - valid, "cut at {cut}");
        let records = journal.read(0, 100).unwrap();
        assert_eq!(
            seqs(&records),
            (1..=last).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        for (seq, body) in &records {
            assert_eq!(body, &payloads[*seq as usize - 1], "cut at {cut}");
        }
        let next = journal.append(vec![b"after".to_vec()]).await.unwrap();
        assert_eq!(next, last + 1..=last + 1, "cut at {cut}");
        journal.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_distinct_ordered_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..40u64 {
                let body = |k: u64| format!("t{task}-{i}-{k}").into_bytes();
                let range = journal.append(vec![body(0), body(1)]).await.unwrap();
                assert_eq!(range.end() - range.start(), 1);
                got.push((*range.start(), body(0)));
                got.push((*range.end(), body(1)));
            }
            got
        }));
    }
    let mut expected = HashMap::new();
    for task in tasks {
        let got = task.await.unwrap();
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "one task's order");
        expected.extend(got);
    }
    assert_eq!(expected.len(), 640);
    let records = journal.read(0, usize::MAX).unwrap();
    assert_eq!(seqs(&records), (1..=640).collect::<Vec<_>>());
    for (seq, body) in records {
        assert_eq!(expected[&seq], body, "seq {seq}");
    }
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_are_stored_atomically_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(dir.path(), JournalFsync::Always)).unwrap();
    assert_eq!(journal.load_cursor("audit").unwrap(), None);
    journal.store_cursor("audit", 5).unwrap();
    journal.store_cursor("audit", 7).unwrap();
    journal.store_cursor("webhook", 0).unwrap();
    let cursors = dir.path().join("cursors");
    assert_eq!(
        std::fs::read_to_string(cursors.join("audit.cursor")).unwrap(),
        "7\n"
    );
    let mut names: Vec<String> = std::fs::read_dir(&cursors)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["audit.cursor", "webhook.cursor"],
        "no temp files"
    );
    for bad in ["", "../audit", "a/b", "..", ".hidden"] {
        let err = journal.store_cursor(bad, 1).expect_err(bad);
        assert!(matches!(err, JournalError::SinkName { .. }), "{err}");
        assert!(journal.load_cursor(bad).is_err());
    }
    journal.close().await.unwrap();
    drop(journal);

    // A crash between writing the temporary file and the rename leaves the old cursor and a
    // temporary file; a damaged cursor file is reported for its sink only.
    std::fs::write(cursors.join("audit.cursor.tmp"), "9").unwrap();
    std::fs::write(cursors.join("broken.cursor"), "garbage").unwrap();
    let journal = Journal::open(config(dir.path(), JournalFsync::Always)).unwrap();
    assert_eq!(journal.load_cursor("audit").unwrap(), Some(7));
    assert_eq!(journal.load_cursor("webhook").unwrap(), Some(0));
    assert!(!cursors.join("audit.cursor.tmp").exists());
    let err = journal.load_cursor("broken").expect_err("broken");
    assert!(
        err.to_string().contains("broken.cursor") && err.to_string().contains("garbage"),
        "{err}"
    );
    journal.store_cursor("broken", 3).unwrap();
    assert_eq!(journal.load_cursor("broken").unwrap(), Some(3));
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_sinks_removes_the_cursors_of_unconfigured_sinks() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(dir.path(), JournalFsync::Always)).unwrap();
    for sink in ["audit", "old", "webhook", "older"] {
        journal.store_cursor(sink, 1).unwrap();
    }
    let keep = ["audit".to_owned(), "webhook".to_owned(), "new".to_owned()];
    assert_eq!(journal.retain_sinks(&keep).unwrap(), vec!["old", "older"]);
    assert!(!dir.path().join("cursors/old.cursor").exists());
    assert!(dir.path().join("cursors/audit.cursor").exists());
    assert_eq!(journal.load_cursor("old").unwrap(), None);
    let status = journal.status();
    let sinks: Vec<(&str, Option<u64>)> = status
        .sinks
        .iter()
        .map(|s| (s.name.as_str(), s.cursor))
        .collect();
    assert_eq!(
        sinks,
        vec![("audit", Some(1)), ("new", None), ("webhook", Some(1))]
    );
    assert_eq!(journal.retain_sinks(&keep).unwrap(), Vec::<String>::new());
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_deletes_only_segments_every_cursor_has_passed() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    append_each(&journal, 1..=12).await; // segments 1, 4, 7, 10
    assert_eq!(segments(dir.path()).len(), 4);
    journal.store_cursor("a", 5).unwrap();
    journal.store_cursor("b", 8).unwrap();
    journal.store_cursor("stale", 0).unwrap();
    assert_eq!(
        journal.collect_garbage().unwrap(),
        0,
        "`stale` pins everything"
    );

    let keep = ["a".to_owned(), "b".to_owned(), "not-started".to_owned()];
    journal.retain_sinks(&keep).unwrap();
    assert_eq!(
        journal.collect_garbage().unwrap(),
        1,
        "segment 1 (1..=3 ≤ 5)"
    );
    assert!(!segment(dir.path(), 1).exists());
    assert!(segment(dir.path(), 4).exists(), "6 > 5: kept");
    assert_eq!(journal.first_seq(), 4);

    journal.store_cursor("a", 9).unwrap();
    assert_eq!(journal.collect_garbage().unwrap(), 1, "segment 4 (≤ 8)");
    assert!(segment(dir.path(), 7).exists(), "9 > 8: kept");
    assert_eq!(journal.collect_garbage().unwrap(), 0);

    journal.store_cursor("b", 12).unwrap();
    journal.store_cursor("a", 12).unwrap();
    assert_eq!(journal.collect_garbage().unwrap(), 1, "segment 7");
    assert_eq!(
        segments(dir.path()),
        vec![segment(dir.path(), 10)],
        "the active segment stays"
    );
    assert_eq!(journal.first_seq(), 10);
    assert_eq!(read_all(&journal), vec![10, 11, 12]);
    assert_eq!(seqs(&journal.read(2, 2).unwrap()), vec![10, 11], "gap");
    assert_eq!(journal.status().bytes, 3 * RECORD);
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_moves_with_each_append_under_always() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    let head = journal.head();
    for i in 1..=5 {
        append_each(&journal, i..=i).await;
        assert_eq!(*head.borrow(), i, "durable when append returns");
        assert_eq!(seqs(&journal.read(i - 1, 10).unwrap()), vec![i]);
    }
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_moves_after_the_flusher_under_interval() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig {
        fsync_interval: Duration::from_secs(2),
        sinks_see: SinksSee::Synced,
        ..small(dir.path(), JournalFsync::Interval)
    })
    .unwrap();
    let mut head = journal.head();
    let started = tokio::time::Instant::now();
    append_each(&journal, 1..=4).await;
    if started.elapsed() < Duration::from_secs(1) {
        assert_eq!(*head.borrow(), 0, "written but not yet synced");
        assert_eq!(
            journal.read(0, 10).unwrap(),
            vec![],
            "invisible until synced"
        );
    }
    tokio::time::timeout(Duration::from_secs(10), head.wait_for(|h| *h == 4))
        .await
        .expect("the flusher synced within the deadline")
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not before the interval"
    );
    assert_eq!(read_all(&journal), vec![1, 2, 3, 4]);
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_moves_on_write_under_interval_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(JournalConfig {
        // Far longer than the test: visibility cannot come from the sync. (That the flusher
        // still syncs is `journal::tests::a_failed_interval_sync_with_records_already_visible…`.)
        fsync_interval: Duration::from_secs(60),
        ..small(dir.path(), JournalFsync::Interval)
    })
    .unwrap();
    let head = journal.head();
    append_each(&journal, 1..=4).await;
    assert_eq!(*head.borrow(), 4, "visible once written");
    assert_eq!(read_all(&journal), vec![1, 2, 3, 4]);
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_moves_on_write_under_never_and_close_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Never)).unwrap();
    let head = journal.head();
    append_each(&journal, 1..=3).await;
    assert_eq!(*head.borrow(), 3);
    journal.close().await.unwrap();
    journal.close().await.unwrap();
    let err = journal.append(vec![payload(4)]).await.expect_err("closed");
    assert!(matches!(err, JournalError::Closed { .. }), "{err}");
    assert_eq!(read_all(&journal), vec![1, 2, 3], "reading still works");
}

/// 100-byte segments (three records), 200 bytes in all: seven records fit (3 + 3 + 1), the
/// eighth does not.
fn bounded(dir: &Path, when_full: WhenFull) -> JournalConfig {
    JournalConfig {
        max_bytes: 200,
        when_full,
        ..small(dir, JournalFsync::Always)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_full_block_waits_until_a_cursor_frees_space() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, counters) = open_counted(bounded(dir.path(), WhenFull::Block));
    journal.store_cursor("slow", 0).unwrap();
    append_each(&journal, 1..=7).await;
    let blocked = tokio::spawn({
        let journal = journal.clone();
        async move { journal.append(vec![payload(8)]).await }
    });
    wait_until("the append to find the journal full", || {
        counters.get(FULL, &[]) == 1
    })
    .await;
    assert!(!blocked.is_finished(), "blocked while full");
    assert!(segment(dir.path(), 1).exists());

    // Another task advances the cursor: garbage collection frees the first segment.
    tokio::spawn({
        let journal = journal.clone();
        async move { journal.store_cursor("slow", 3).unwrap() }
    });
    let range = tokio::time::timeout(Duration::from_secs(10), blocked)
        .await
        .expect("unblocked")
        .unwrap()
        .unwrap();
    assert_eq!(range, 8..=8);
    assert!(!segment(dir.path(), 1).exists());
    assert_eq!(read_all(&journal), (4..=8).collect::<Vec<_>>());
    assert_eq!(counters.get(DROPPED, &[]), 0, "nothing lost");
    assert!(journal.status().bytes <= 200);
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_releases_an_append_blocked_on_a_full_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, counters) = open_counted(bounded(dir.path(), WhenFull::Block));
    journal.store_cursor("slow", 0).unwrap();
    append_each(&journal, 1..=7).await;
    let blocked = tokio::spawn({
        let journal = journal.clone();
        async move { journal.append(vec![payload(8)]).await }
    });
    wait_until("the append to block", || counters.get(FULL, &[]) == 1).await;
    tokio::time::timeout(Duration::from_secs(10), journal.close())
        .await
        .expect("close returns")
        .unwrap();
    let err = blocked.await.unwrap().expect_err("closed while blocked");
    assert!(matches!(err, JournalError::Closed { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_full_drop_newest_refuses_the_append() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, counters) = open_counted(bounded(dir.path(), WhenFull::DropNewest));
    journal.store_cursor("slow", 0).unwrap();
    append_each(&journal, 1..=7).await;
    let err = journal
        .append(vec![payload(8), payload(9)])
        .await
        .expect_err("full");
    assert!(matches!(err, JournalError::Full { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    assert_eq!(counters.get(DROPPED, &[("cause", "full")]), 2);
    assert_eq!(counters.get(FULL, &[]), 1);
    assert_eq!(read_all(&journal), (1..=7).collect::<Vec<_>>());

    journal.store_cursor("slow", 3).unwrap();
    assert_eq!(journal.append(vec![payload(8)]).await.unwrap(), 8..=8);
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_full_drop_oldest_deletes_the_oldest_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, counters) = open_counted(bounded(dir.path(), WhenFull::DropOldest));
    journal.store_cursor("slow", 1).unwrap();
    append_each(&journal, 1..=7).await;
    assert_eq!(journal.first_seq(), 1);
    assert_eq!(journal.append(vec![payload(8)]).await.unwrap(), 8..=8);
    assert!(!segment(dir.path(), 1).exists());
    assert_eq!(journal.first_seq(), 4);
    assert_eq!(counters.get(DROPPED, &[("cause", "oldest_deleted")]), 3);
    assert_eq!(counters.get(FULL, &[]), 1);
    // The slow sink resumes at the oldest record left; the runner sees the gap.
    let records = journal.read(1, 100).unwrap();
    assert_eq!(seqs(&records), (4..=8).collect::<Vec<_>>());
    assert_eq!(
        journal.first_seq() - 1 - 1,
        2,
        "records 2 and 3 lost for `slow`"
    );
    assert!(journal.status().bytes <= 200);
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_the_offline_views() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(small(dir.path(), JournalFsync::Always)).unwrap();
    append_each(&journal, 1..=10).await;
    journal.store_cursor("audit", 4).unwrap();
    journal
        .retain_sinks(&["audit".to_owned(), "webhook".to_owned()])
        .unwrap();
    let status = journal.status();
    assert_eq!(status.dir, dir.path());
    assert_eq!(
        (status.first_seq, status.last_seq, status.head),
        (1, 10, 10)
    );
    assert_eq!(status.segments, 4);
    assert_eq!(status.bytes, 10 * RECORD);
    assert_eq!(status.max_bytes, Some(1 << 30));
    assert_eq!(status.sinks.len(), 2);
    assert_eq!(
        (
            status.sinks[0].name.as_str(),
            status.sinks[0].cursor,
            status.sinks[0].backlog
        ),
        ("audit", Some(4), 6)
    );
    assert_eq!(
        (
            status.sinks[1].name.as_str(),
            status.sinks[1].cursor,
            status.sinks[1].backlog
        ),
        ("webhook", None, 0)
    );
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["sinks"][0]["backlog"], 6);

    // While the journal is open, with a record half-written at the end.
    let last = segment(dir.path(), 10);
    let mut bytes = std::fs::read(&last).unwrap();
    let len = bytes.len();
    bytes.extend_from_slice(&[11, 0, 0, 0, 1, 2]);
    std::fs::write(&last, &bytes).unwrap();
    let offline = status_offline(dir.path()).unwrap();
    assert_eq!(
        (offline.first_seq, offline.last_seq, offline.head),
        (1, 10, 10)
    );
    assert_eq!(offline.segments, 4);
    assert_eq!(offline.bytes, 10 * RECORD + 6);
    assert_eq!(offline.max_bytes, None);
    assert_eq!(offline.sinks.len(), 1, "offline sees the cursor files");
    assert_eq!(offline.sinks[0].backlog, 6);

    let tail = tail_offline(dir.path(), 4).unwrap();
    assert_eq!(seqs(&tail), vec![7, 8, 9, 10]);
    assert_eq!(tail[0].1, payload(7));
    assert_eq!(
        seqs(&tail_offline(dir.path(), 100).unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(tail_offline(dir.path(), 0).unwrap(), vec![]);
    assert_eq!(
        std::fs::metadata(&last).unwrap().len(),
        len as u64 + 6,
        "read-only: no repair"
    );

    let missing = dir.path().join("missing");
    let err = status_offline(&missing).expect_err("missing").to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(tail_offline(&missing, 1).is_err());
    assert!(!missing.exists(), "offline views create nothing");
    journal.close().await.unwrap();
}

/// With `fsync = "never"` a sink may deliver records that a machine crash then loses. New
/// records must not reuse those seqs, or the sink would skip them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_records_continue_after_a_cursor_past_the_recovered_end() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(config(dir.path(), JournalFsync::Never)).unwrap();
    append_each(&journal, 1..=5).await;
    journal.store_cursor("audit", 5).unwrap();
    journal.close().await.unwrap();
    drop(journal);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment(dir.path(), 1))
        .unwrap();
    file.set_len(3 * RECORD).unwrap();
    drop(file);

    let journal = Journal::open(config(dir.path(), JournalFsync::Never)).unwrap();
    assert_eq!(journal.recovery().last_seq, 3);
    assert_eq!(journal.append(vec![payload(6)]).await.unwrap(), 6..=6);
    assert!(
        segment(dir.path(), 6).exists(),
        "a jump in seqs starts a segment"
    );
    assert_eq!(seqs(&journal.read(5, 10).unwrap()), vec![6]);
    assert_eq!(read_all(&journal), vec![1, 2, 3, 6]);
    journal.close().await.unwrap();
    drop(journal);

    // And that layout recovers cleanly.
    let journal = Journal::open(config(dir.path(), JournalFsync::Never)).unwrap();
    assert!(
        journal.recovery().repairs.is_empty(),
        "{:?}",
        journal.recovery()
    );
    assert_eq!(journal.append(vec![payload(7)]).await.unwrap(), 7..=7);
    assert_eq!(read_all(&journal), vec![1, 2, 3, 6, 7]);
    journal.close().await.unwrap();
}

#[tokio::test]
async fn one_journal_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig::new(dir.path().join("j"));
    let journal = Journal::open(cfg.clone()).unwrap();
    journal.append(vec![b"one".to_vec()]).await.unwrap();
    let second = Journal::open(cfg.clone()).unwrap_err();
    assert!(matches!(second, JournalError::Locked { .. }), "{second}");
    assert!(
        second.to_string().contains("in use by another chatwatch"),
        "{second}"
    );
    // Reading offline (journal status / tail) does not need the lock.
    assert_eq!(
        chatwatch::journal::status_offline(&cfg.dir)
            .unwrap()
            .last_seq,
        1
    );
    drop(journal);
    // The last handle released it: the next open succeeds at once.
    let again = Journal::open(cfg).unwrap();
    assert_eq!(again.status().last_seq, 1);
}
