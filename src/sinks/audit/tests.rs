//! Tests of the audit sink and of `verify`, on real files in temporary directories.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::event::{Event, EventKind};

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
        data: serde_json::json!({"i": i, "text": "line\nbreak \"quoted\""}).into(),
    }
}

/// The journal records of `range`'s events, as the runner hands them to the sink.
fn events(range: std::ops::Range<usize>) -> Vec<Arc<Record>> {
    range
        .map(|i| Arc::new(Record::from_event(event(i))))
        .collect()
}

/// Small files, no compression: a handful of lines per file.
fn small(dir: &Path) -> AuditSinkConfig {
    AuditSinkConfig {
        rotate_bytes: 4096,
        compress: false,
        ..AuditSinkConfig::new(dir)
    }
}

/// Opens the sink, delivers `range` in batches of `batch`, closes it.
async fn write(config: &AuditSinkConfig, range: std::ops::Range<usize>, batch: usize) {
    let mut sink = config.build("audit").await.expect("open");
    let all = events(range);
    for chunk in all.chunks(batch) {
        tokio::time::timeout(Duration::from_secs(10), sink.deliver(chunk))
            .await
            .expect("in time")
            .expect("delivered");
    }
    sink.close().await.expect("close");
}

/// Rotated files (plain or `.gz`), in chain order.
fn rotated(dir: &Path) -> Vec<PathBuf> {
    files::list_rotated(dir, "audit")
        .unwrap()
        .iter()
        .map(|r| r.readable().0)
        .collect()
}

/// The decompressed lines of a file.
fn read_lines(path: &Path) -> Vec<String> {
    let gz = path.extension().is_some_and(|e| e == "gz");
    let mut text = String::new();
    files::open_reader(path, gz)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    text.lines().map(str::to_owned).collect()
}

/// Every record of the chain, in file order, as parsed JSON.
fn all_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut paths = rotated(dir);
    paths.push(files::active_path(dir, "audit"));
    paths
        .iter()
        .flat_map(|p| read_lines(p))
        .map(|l| serde_json::from_str(&l).expect("every line is JSON"))
        .collect()
}

/// Rewrites a plain file's lines.
fn tamper(path: &Path, edit: impl FnOnce(&mut Vec<String>)) {
    let mut lines = read_lines(path);
    edit(&mut lines);
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn check(dir: &Path, key: Option<&[u8]>) -> VerifyReport {
    verify(dir, "audit", key).expect("verify runs")
}

/// Asserts the first problem's kind, file and line.
fn assert_problem(report: &VerifyReport, kind: ProblemKind, file: &Path, line: u64) -> Problem {
    let problem = report
        .first_problem
        .clone()
        .unwrap_or_else(|| panic!("expected {kind:?}, the chain verified: {report}"));
    assert_eq!(
        (problem.kind, problem.file.as_path(), problem.line),
        (kind, file, line),
        "{problem}"
    );
    problem
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_verifies_across_rotations_and_compression() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditSinkConfig {
        rotate_bytes: 4096,
        ..AuditSinkConfig::new(dir.path())
    };
    write(&config, 0..300, 7).await;
    let rotated = rotated(dir.path());
    assert!(rotated.len() >= 20, "{} rotated files", rotated.len());
    for path in &rotated {
        assert!(
            path.to_string_lossy().ends_with(".jsonl.gz"),
            "every closed file is compressed: {}",
            path.display()
        );
        let size: usize = read_lines(path).iter().map(|l| l.len() + 1).sum();
        assert!(size <= 4096, "{} holds {size} bytes", path.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || (n.ends_with(".jsonl") && n != "audit.jsonl"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The records: seq 1..=300 with the events in order, each chained to the one before.
    let records = all_records(dir.path());
    assert_eq!(records.len(), 300);
    let mut prev = "0".repeat(64);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["seq"], i as u64 + 1);
        assert_eq!(record["prev"], prev.as_str());
        assert_eq!(record["event"]["event_id"], event(i).event_id);
        let back: Event = serde_json::from_value(record["event"].clone()).unwrap();
        assert_eq!(back, event(i), "the event round-trips");
        prev = record["hash"].as_str().unwrap().to_owned();
    }
    let report = check(dir.path(), None);
    assert!(report.is_ok(), "{report}");
    assert_eq!(
        (
            report.files,
            report.lines,
            report.first_seq,
            report.last_seq
        ),
        (rotated.len() + 1, 300, Some(1), Some(300))
    );
    // An edit inside a compressed file is found, with its file and line.
    let victim = &rotated[4];
    let mut lines = read_lines(victim);
    lines[1] = lines[1].replace("agent1", "agent2");
    let mut encoder =
        flate2::write::GzEncoder::new(std::fs::File::create(victim).unwrap(), Default::default());
    for line in &lines {
        writeln!(encoder, "{line}").unwrap();
    }
    encoder.finish().unwrap();
    assert_problem(&check(dir.path(), None), ProblemKind::Changed, victim, 2);
}

/// A chain of 60 records over ~10 plain files; returns the directory and a middle file.
async fn tamper_fixture() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    write(&small(dir.path()), 0..60, 5).await;
    assert!(check(dir.path(), None).is_ok());
    let victim = rotated(dir.path())[3].clone();
    assert!(
        read_lines(&victim).len() >= 5,
        "enough lines to tamper with"
    );
    (dir, victim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_an_edited_line() {
    let (dir, victim) = tamper_fixture().await;
    tamper(&victim, |lines| {
        lines[2] = lines[2].replace("agent1", "agent9")
    });
    let report = check(dir.path(), None);
    let problem = assert_problem(&report, ProblemKind::Changed, &victim, 3);
    assert!(problem.detail.contains("edited"), "{problem}");
    assert!(
        report
            .to_string()
            .contains(&format!("{}`, line 3", victim.display())),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_an_edited_line_whose_hash_was_recomputed() {
    let (dir, victim) = tamper_fixture().await;
    // Without an HMAC key anyone can recompute a line's own hash; the next line still points at
    // the old one.
    tamper(&victim, |lines| {
        let line = lines[2].replace("agent1", "agent9");
        let body = &line[..line.len() - 75];
        let hash = format::Hasher::new(None).hash(body.as_bytes());
        lines[2] = format!("{body},\"hash\":\"{}\"}}", hex::encode(hash));
    });
    assert_problem(&check(dir.path(), None), ProblemKind::Changed, &victim, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_a_deleted_line() {
    let (dir, victim) = tamper_fixture().await;
    let mut missing = 0;
    tamper(&victim, |lines| {
        let removed: serde_json::Value = serde_json::from_str(&lines.remove(2)).unwrap();
        missing = removed["seq"].as_u64().unwrap();
    });
    let problem = assert_problem(&check(dir.path(), None), ProblemKind::Removed, &victim, 3);
    assert!(
        problem
            .detail
            .contains(&format!("seq {missing} is missing")),
        "{problem}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_a_swapped_pair() {
    let (dir, victim) = tamper_fixture().await;
    tamper(&victim, |lines| lines.swap(1, 2));
    let problem = assert_problem(&check(dir.path(), None), ProblemKind::Reordered, &victim, 2);
    assert!(problem.detail.contains("on line 3"), "{problem}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_an_inserted_copy_of_a_line() {
    let (dir, victim) = tamper_fixture().await;
    tamper(&victim, |lines| {
        let copy = lines[0].clone();
        lines.insert(3, copy);
    });
    assert_problem(&check(dir.path(), None), ProblemKind::Inserted, &victim, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_a_removed_file_and_a_truncated_one() {
    let (dir, victim) = tamper_fixture().await;
    let files = rotated(dir.path());
    let next = files[4].clone();
    std::fs::remove_file(&victim).unwrap();
    assert_problem(
        &check(dir.path(), None),
        ProblemKind::ChainBreakAcrossFiles,
        &next,
        1,
    );
    // A file cut in the middle of a line.
    let earlier = files[1].clone();
    let bytes = std::fs::read(&earlier).unwrap();
    std::fs::write(&earlier, &bytes[..bytes.len() - 30]).unwrap();
    let lines = read_lines(&earlier).len() as u64;
    assert_problem(
        &check(dir.path(), None),
        ProblemKind::Truncated,
        &earlier,
        lines,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hmac_chain_fails_verification_with_the_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, b"correct horse battery staple\n").unwrap();
    let logs = dir.path().join("logs");
    let config = AuditSinkConfig {
        hmac_key_file: Some(key_file.clone()),
        ..small(&logs)
    };
    write(&config, 0..30, 4).await;
    let key = read_hmac_key(&key_file).unwrap();
    assert_eq!(key, b"correct horse battery staple");
    let report = check(&logs, Some(&key));
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.lines, 30);
    let first = rotated(&logs)[0].clone();
    for wrong in [Some(&b"correct horse battery stapler"[..]), None] {
        let problem = assert_problem(&check(&logs, wrong), ProblemKind::Changed, &first, 1);
        assert!(problem.detail.contains("HMAC key"), "{problem}");
    }
    // A plain SHA-256 chain does not verify as an HMAC one either.
    let plain = tempfile::tempdir().unwrap();
    write(&small(plain.path()), 0..3, 3).await;
    assert!(!check(plain.path(), Some(&key)).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_last_line_is_repaired_on_open_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditSinkConfig::new(dir.path());
    write(&config, 0..5, 5).await;
    let active = files::active_path(dir.path(), "audit");
    let complete = std::fs::read(&active).unwrap();
    // A crash in the middle of writing record 6.
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(&active)
        .unwrap();
    Write::write_all(&mut torn, b"{\"seq\":6,\"prev\":\"ab").unwrap();
    drop(torn);
    assert_problem(&check(dir.path(), None), ProblemKind::Truncated, &active, 6);
    write(&config, 5..10, 2).await;
    let content = std::fs::read(&active).unwrap();
    assert!(
        content.starts_with(&complete),
        "the complete lines are kept"
    );
    let report = check(dir.path(), None);
    assert!(report.is_ok(), "{report}");
    let records = all_records(dir.path());
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(records[5]["event"]["event_id"], event(5).event_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_resumes_from_the_newest_rotated_file_when_the_active_one_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditSinkConfig::new(dir.path());
    write(&config, 0..4, 4).await;
    // As if the sink had rotated and compressed, then stopped before writing again.
    let active = files::active_path(dir.path(), "audit");
    let rotated_path = dir.path().join(files::rotated_name(
        "audit",
        time::OffsetDateTime::now_utc(),
        1,
    ));
    std::fs::rename(&active, &rotated_path).unwrap();
    files::compress(&rotated_path).unwrap();
    std::fs::write(&active, b"").unwrap();
    write(&config, 4..6, 2).await;
    let report = check(dir.path(), None);
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.files, report.lines), (2, 6));
    let first_new = read_lines(&active)[0].clone();
    assert!(first_new.starts_with("{\"seq\":5,"), "{first_new}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_count_keeps_only_n_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditSinkConfig {
        keep_files: Some(3),
        ..AuditSinkConfig {
            compress: true,
            ..small(dir.path())
        }
    };
    write(&config, 0..120, 6).await;
    let kept = rotated(dir.path());
    assert_eq!(kept.len(), 3, "{kept:?}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        4,
        "three rotated files and the active one: {names:?}"
    );
    // What is left still verifies, starting after the pruned records.
    let report = check(dir.path(), None);
    assert!(report.is_ok(), "{report}");
    assert!(report.first_seq.unwrap() > 1);
    assert_eq!(report.last_seq, Some(120));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_line_holds_the_journal_payload_byte_for_byte_and_the_chain_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = AuditSinkConfig::new(dir.path())
        .build("audit")
        .await
        .expect("open");
    let payloads: Vec<Vec<u8>> = (0..4)
        .map(|i| serde_json::to_vec(&event(i)).unwrap())
        .collect();
    let records: Vec<Arc<Record>> = payloads
        .iter()
        .map(|p| Arc::new(Record::new(p.clone())))
        .collect();
    sink.deliver(&records).await.expect("delivered");
    sink.close().await.expect("close");
    let lines = read_lines(&files::active_path(dir.path(), "audit"));
    assert_eq!(lines.len(), 4);
    for (line, payload) in lines.iter().zip(&payloads) {
        let payload = std::str::from_utf8(payload).unwrap();
        let event = format!(",\"event\":{payload},\"hash\":\"");
        assert!(line.contains(&event), "{line}");
    }
    assert!(records.iter().all(|r| !r.is_decoded()));
    let report = check(dir.path(), None);
    assert!(report.is_ok(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_an_external_rename_continues_the_chain_in_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = AuditSinkConfig::new(dir.path())
        .build("audit")
        .await
        .expect("open");
    sink.deliver(&events(0..5)).await.expect("delivered");
    // logrotate: rename + create, then SIGHUP.
    let active = files::active_path(dir.path(), "audit");
    let moved = dir.path().join("audit.jsonl.1");
    std::fs::rename(&active, &moved).unwrap();
    std::fs::write(&active, b"").unwrap();
    sink.reopen().await.expect("reopen");
    sink.deliver(&events(5..8)).await.expect("delivered");
    sink.close().await.expect("close");
    let old = read_lines(&moved);
    let new = read_lines(&active);
    assert_eq!((old.len(), new.len()), (5, 3));
    let last_old: serde_json::Value = serde_json::from_str(&old[4]).unwrap();
    let first_new: serde_json::Value = serde_json::from_str(&new[0]).unwrap();
    assert_eq!(first_new["seq"], 6);
    assert_eq!(first_new["prev"], last_old["hash"]);
    // Under the sink's own naming, the two files form one verified chain.
    std::fs::rename(
        &moved,
        dir.path().join(files::rotated_name(
            "audit",
            time::OffsetDateTime::now_utc(),
            1,
        )),
    )
    .unwrap();
    let report = check(dir.path(), None);
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.lines, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_rotation_happens_on_the_boundary_even_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditSinkConfig {
        rotate_interval: Some(Duration::from_secs(1)),
        compress: false,
        ..AuditSinkConfig::new(dir.path())
    };
    let mut sink = config.build("audit").await.expect("open");
    sink.deliver(&events(0..3)).await.expect("delivered");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while rotated(dir.path()).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no time rotation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sink.deliver(&events(3..5)).await.expect("delivered");
    sink.close().await.expect("close");
    let report = check(dir.path(), None);
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.files, report.lines), (2, 5));
    assert_eq!(read_lines(&rotated(dir.path())[0]).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_policy_acknowledges_at_the_write_and_close_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditSinkConfig {
        fsync: FsyncPolicy::Interval,
        fsync_interval: Duration::from_secs(10),
        ..AuditSinkConfig::new(dir.path())
    };
    let mut sink = config.build("audit").await.expect("open");
    let started = tokio::time::Instant::now();
    sink.deliver(&events(0..3)).await.expect("delivered");
    sink.deliver(&events(3..6)).await.expect("delivered");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not held until the interval sync"
    );
    sink.close().await.expect("close");
    assert_eq!(check(dir.path(), None).lines, 6);
}

#[tokio::test]
async fn open_refuses_a_file_it_cannot_resume_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let active = files::active_path(dir.path(), "audit");
    std::fs::write(&active, b"just some text\n").unwrap();
    let err = AuditSinkConfig::new(dir.path())
        .build("audit")
        .await
        .expect_err("not an audit file")
        .to_string();
    assert!(
        err.contains("sink `audit`") && err.contains(&active.display().to_string()),
        "{err}"
    );
    assert!(err.contains("not an audit record"), "{err}");
    let err = AuditSinkConfig::new(dir.path())
        .build("a/b")
        .await
        .expect_err("bad name")
        .to_string();
    assert!(err.contains("file name"), "{err}");
    let err = AuditSinkConfig {
        hmac_key_file: Some(dir.path().join("missing-key")),
        ..AuditSinkConfig::new(dir.path().join("x"))
    }
    .build("audit")
    .await
    .expect_err("missing key")
    .to_string();
    assert!(err.contains("missing-key"), "{err}");
}

#[tokio::test]
async fn verify_without_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = verify(dir.path(), "audit", None).expect_err("nothing there");
    assert!(matches!(err, VerifyError::NoFiles { .. }), "{err}");
    assert!(err.to_string().contains("audit.jsonl"), "{err}");
}

#[cfg(unix)]
#[tokio::test]
async fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("a/logs");
    write(&small(&logs), 0..20, 20).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The default `mode`: the service's group may read.
    assert_eq!(mode(&files::active_path(&logs, "audit")), 0o640);
    for path in rotated(&logs) {
        assert_eq!(mode(&path), 0o640, "{}", path.display());
    }
    assert_eq!(mode(&logs) & !0o750, 0);
}

/// The config loader's view of one sink table.
fn from_toml(text: &str) -> Result<AuditSinkConfig, String> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<AuditSinkConfig>())
        .map_err(|e| e.to_string())
}

#[test]
fn toml_defaults_and_every_option() {
    let config = from_toml("dir = \"/var/log/chatwatch/audit\"\n").expect("valid");
    assert_eq!(config, AuditSinkConfig::new("/var/log/chatwatch/audit"));
    assert_eq!(config.fsync, FsyncPolicy::Always);
    assert_eq!(config.fsync_interval, Duration::from_secs(1));
    assert_eq!(config.rotate_bytes, 256 << 20);
    assert_eq!(config.rotate_interval, None);
    assert!(config.compress);
    assert_eq!((config.keep_files, config.keep_age), (None, None));
    assert_eq!(config.hmac_key_file, None);
    assert!(config.validate().is_ok());
    let config = from_toml(
        r#"
        dir = "audit"
        fsync = "interval"
        fsync_interval = "200ms"
        rotate_bytes = "1048576"
        rotate_interval = "24h"
        compress = "false"
        keep_files = "30"
        keep_age = "90days"
        hmac_key_file = "/run/credentials/chatwatch.service/audit-key"
        filter = { entered_states = ["LeftChat"] }
        "#,
    )
    .expect("valid");
    assert_eq!(config.fsync, FsyncPolicy::Interval);
    assert_eq!(config.fsync_interval, Duration::from_millis(200));
    assert_eq!(config.rotate_bytes, 1 << 20);
    assert_eq!(config.rotate_interval, Some(Duration::from_secs(86_400)));
    assert!(!config.compress);
    assert_eq!(config.keep_files, Some(30));
    assert_eq!(config.keep_age, Some(Duration::from_secs(90 * 86_400)));
    assert!(config.hmac_key_file.is_some());
    assert!(config.validate().is_ok());
    let err = from_toml("dir = \"a\"\nrotate_byte = 5\n").expect_err("unknown key");
    assert!(err.contains("rotate_byte"), "{err}");
    let err = from_toml("fsync = \"always\"\n").expect_err("missing dir");
    assert!(err.contains("dir"), "{err}");
}

#[test]
fn validation_names_the_field() {
    let base = AuditSinkConfig::new("audit");
    for (config, field) in [
        (AuditSinkConfig::new(""), "dir"),
        (
            AuditSinkConfig {
                fsync: FsyncPolicy::Never,
                ..base.clone()
            },
            "fsync",
        ),
        (
            AuditSinkConfig {
                fsync: FsyncPolicy::Interval,
                fsync_interval: Duration::ZERO,
                ..base.clone()
            },
            "fsync_interval",
        ),
        (
            AuditSinkConfig {
                rotate_interval: Some(Duration::from_millis(500)),
                ..base.clone()
            },
            "rotate_interval",
        ),
        (
            AuditSinkConfig {
                keep_files: Some(0),
                ..base.clone()
            },
            "keep_files",
        ),
        (
            AuditSinkConfig {
                keep_age: Some(Duration::ZERO),
                ..base.clone()
            },
            "keep_age",
        ),
        (
            AuditSinkConfig {
                hmac_key_file: Some(PathBuf::new()),
                ..base.clone()
            },
            "hmac_key_file",
        ),
    ] {
        let err = config.validate().expect_err(field).to_string();
        assert!(err.contains(field), "{err}");
    }
}

#[test]
fn hmac_key_file_must_not_be_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, b"\n").unwrap();
    assert!(read_hmac_key(&path).is_err());
    std::fs::write(&path, b"k\r\n").unwrap();
    assert_eq!(read_hmac_key(&path).unwrap(), b"k");
}

#[test]
fn works_inside_a_tagged_sink_table_with_string_overrides() {
    // How `SinkConfig` will hold it: an internally tagged enum, which buffers the table, with
    // environment overrides arriving as strings.
    #[derive(Debug, serde::Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Sink {
        Audit(AuditSinkConfig),
    }
    #[derive(Debug, serde::Deserialize)]
    struct Root {
        sinks: std::collections::BTreeMap<String, Sink>,
    }
    let root = config::Config::builder()
        .add_source(config::File::from_str(
            "[sinks.trail]\ntype = \"audit\"\ndir = \"/var/log/chatwatch\"\nkeep_files = 7\n",
            config::FileFormat::Toml,
        ))
        .set_override("sinks.trail.rotate_bytes", "1000")
        .and_then(|b| b.set_override("sinks.trail.compress", "false"))
        .and_then(|b| b.set_override("sinks.trail.keep_age", "30d"))
        .and_then(|b| b.set_override("sinks.trail.rotate_interval", "1h"))
        .and_then(|b| b.build())
        .and_then(|c| c.try_deserialize::<Root>())
        .expect("valid");
    let Sink::Audit(audit) = &root.sinks["trail"];
    assert_eq!(audit.rotate_bytes, 1000);
    assert!(!audit.compress);
    assert_eq!(audit.keep_files, Some(7));
    assert_eq!(audit.keep_age, Some(Duration::from_secs(30 * 86_400)));
    assert_eq!(audit.rotate_interval, Some(Duration::from_secs(3600)));
    let err = config::Config::builder()
        .add_source(config::File::from_str(
            "[sinks.trail]\ntype = \"audit\"\ndir = \"x\"\nkeep_file = 7\n",
            config::FileFormat::Toml,
        ))
        .build()
        .and_then(|c| c.try_deserialize::<Root>())
        .expect_err("unknown key")
        .to_string();
    assert!(err.contains("keep_file"), "{err}");
}

/// Events per second through `AuditSink::deliver` with a runner that waits for each batch. Run
/// with `cargo test --release -- --ignored --nocapture audit_throughput`.
#[ignore = "measurement, not a test"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_throughput() {
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("key");
    std::fs::write(&key_file, b"0123456789abcdef0123456789abcdef").unwrap();
    for (batch, hmac) in [(1, false), (100, false), (1000, false), (1000, true)] {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditSinkConfig {
            rotate_bytes: 4 << 20,
            hmac_key_file: hmac.then(|| key_file.clone()),
            ..AuditSinkConfig::new(dir.path())
        };
        let mut sink = config.build("audit").await.expect("open");
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
            "audit fsync=always batch={batch} hmac={hmac}: {sent} events in {took:?} = {:.0} events/s",
            sent as f64 / took.as_secs_f64()
        );
        assert!(verify(dir.path(), "audit", None).is_ok() || hmac);
    }
}
