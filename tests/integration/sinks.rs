//! Integration tests of the sink layer through its public API, on the path the daemon uses:
//! configuration parsed the way the daemon parses it, a real journal, the [`SinkRunner`]
//! driving real file sinks from it, real pre-existing files and a real full device; and the
//! real binary, fed by a real Faye server, appending to an event file a crash left torn.

use std::path::Path;
use std::time::Duration;

use crate::support::events::event;
use crate::support::metrics::Counters;
use crate::support::{assert_sequence, Daemon, Faye, DEADLINE};
use chatwatch::delivery::SinkRunner;
use chatwatch::event::Event;
use chatwatch::journal::{Journal, JournalConfig, JournalFsync};
use chatwatch::sinks::{
    FileSinkConfig, FilterConfig, FsyncPolicy, LogSinkConfig, SinkConfig, SinkError,
    DELIVERED_EVENTS, FAILED_WRITES,
};
use metrics_util::debugging::DebuggingRecorder;

/// The event ids of a JSON Lines file, asserting it has no torn line.
fn ids_in(path: &Path) -> Vec<String> {
    let content = std::fs::read_to_string(path).expect("read the sink file");
    assert!(
        content.is_empty() || content.ends_with('\n'),
        "torn last line in {}",
        path.display()
    );
    content
        .lines()
        .map(|line| {
            serde_json::from_str::<Event>(line)
                .unwrap_or_else(|e| panic!("line {line:?} does not parse: {e}"))
                .event_id
        })
        .collect()
}

/// A journal in `dir` that makes appends visible at once (no fsync: these tests are about the
/// sinks).
fn journal(dir: &Path) -> Journal {
    let mut cfg = JournalConfig::new(dir.join("journal"));
    cfg.fsync = JournalFsync::Never;
    Journal::open(cfg).expect("the journal opens")
}

/// Appends `events` to the journal, as the pipeline does; returns the last seq.
async fn append(journal: &Journal, events: impl Iterator<Item = Event>) -> u64 {
    let payloads = events
        .map(|e| serde_json::to_vec(&e).expect("an event encodes"))
        .collect();
    *journal.append(payloads).await.expect("appended").end()
}

/// Waits (up to 20 s) until every sink in `names` has stored a cursor at or past `seq`.
async fn wait_cursors(journal: &Journal, names: &[&str], seq: u64) {
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    for name in names {
        while journal.load_cursor(name).unwrap().unwrap_or(0) < seq {
            assert!(
                tokio::time::Instant::now() < until,
                "sink `{name}` did not deliver up to {seq}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Root {
    sinks: std::collections::BTreeMap<String, SinkConfig>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_configured_sinks_route_by_filter_and_preserve_order() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all.jsonl");
    let left = dir.path().join("nested/dir/left.jsonl");
    let toml = format!(
        r#"
        [sinks.all]
        type = "file"
        path = "{}"
        fsync = "always"

        [sinks.left]
        type = "file"
        path = "{}"
        filter = {{ entered_states = ["LeftChat"] }}
        "#,
        all.display(),
        left.display()
    );
    let root: Root = config::Config::builder()
        .add_source(config::File::from_str(&toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .expect("valid configuration");
    let journal = journal(dir.path());
    let runner = SinkRunner::start(
        journal.clone(),
        root.sinks.into_iter().collect(),
        Duration::from_secs(10),
    )
    .await
    .expect("sinks start");
    assert_eq!(runner.sink_names(), ["all", "left"]);
    let states = [
        ("Invited", None),
        ("Chatting", Some("Invited")),
        ("LeftChat", Some("Chatting")),
        ("LeftChat", Some("LeftChat")),
        ("Completed", Some("LeftChat")),
    ];
    let mut expected_left = Vec::new();
    let mut events = Vec::new();
    for i in 0..200 {
        let (state, previous) = states[i % states.len()];
        if i % states.len() == 2 {
            expected_left.push(format!("event-{i:06}"));
        }
        events.push(event(i, state, previous));
    }
    let last = append(&journal, events.into_iter()).await;
    wait_cursors(&journal, &["all", "left"], last).await;
    runner.shutdown(Duration::from_secs(10)).await;
    journal.close().await.unwrap();
    let expected_all: Vec<String> = (0..200).map(|i| format!("event-{i:06}")).collect();
    assert_eq!(ids_in(&all), expected_all);
    assert_eq!(ids_in(&left), expected_left);
}

#[test]
fn shutdown_delivers_everything_journaled_in_every_fsync_mode() {
    let recorder = DebuggingRecorder::new();
    let counters = Counters::new(&recorder);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let modes = [
        ("always", FsyncPolicy::Always),
        ("interval", FsyncPolicy::Interval),
        ("never", FsyncPolicy::Never),
    ];
    let configs: Vec<(String, SinkConfig)> = modes
        .iter()
        .map(|(name, fsync)| {
            let config = FileSinkConfig {
                fsync: *fsync,
                fsync_interval: Duration::from_secs(3600),
                ..FileSinkConfig::new(dir.path().join(format!("{name}.jsonl")))
            };
            (name.to_string(), SinkConfig::File(config))
        })
        .collect();
    let journal = runtime.block_on(async { journal(dir.path()) });
    // The sinks register their counters while they are built, on this thread.
    let runner = metrics::with_local_recorder(&recorder, || {
        runtime
            .block_on(SinkRunner::start(
                journal.clone(),
                configs,
                Duration::from_secs(20),
            ))
            .expect("sinks start")
    });
    runtime.block_on(async {
        append(&journal, (0..5000).map(|i| event(i, "Chatting", None))).await;
        // At once: the runner drains what the journal holds before the sinks close.
        runner.shutdown(Duration::from_secs(25)).await;
        journal.close().await.unwrap();
    });
    let expected: Vec<String> = (0..5000).map(|i| format!("event-{i:06}")).collect();
    for (name, _) in modes {
        assert_eq!(
            ids_in(&dir.path().join(format!("{name}.jsonl"))),
            expected,
            "{name}"
        );
        assert_eq!(
            counters.get(DELIVERED_EVENTS, &[("sink", name)]),
            5000,
            "{name}"
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_sink_holds_back_only_its_own_cursor() {
    let recorder = DebuggingRecorder::new();
    let counters = Counters::new(&recorder);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.jsonl");
    let configs = vec![
        (
            "full".to_owned(),
            SinkConfig::File(FileSinkConfig::new("/dev/full")),
        ),
        (
            "good".to_owned(),
            SinkConfig::File(FileSinkConfig::new(&good)),
        ),
    ];
    let journal = runtime.block_on(async { journal(dir.path()) });
    let runner = metrics::with_local_recorder(&recorder, || {
        runtime
            .block_on(SinkRunner::start(
                journal.clone(),
                configs,
                Duration::from_secs(1),
            ))
            .expect("sinks start")
    });
    let sent = 10_000;
    let last = runtime.block_on(append(
        &journal,
        (0..sent).map(|i| event(i, "Chatting", None)),
    ));
    // The full sink fails and retries while the good one writes everything.
    runtime.block_on(async {
        wait_cursors(&journal, &["good"], last).await;
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while counters.get(FAILED_WRITES, &[("sink", "full"), ("cause", "write")]) < 2 {
            assert!(
                tokio::time::Instant::now() < until,
                "/dev/full did not fail its writes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let started = tokio::time::Instant::now();
    runtime.block_on(runner.shutdown(Duration::from_secs(2)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown is bounded by its deadline"
    );
    let expected: Vec<String> = (0..sent).map(|i| format!("event-{i:06}")).collect();
    assert_eq!(ids_in(&good), expected);
    assert_eq!(
        counters.get(DELIVERED_EVENTS, &[("sink", "good")]),
        sent as u64
    );
    assert_eq!(counters.get(DELIVERED_EVENTS, &[("sink", "full")]), 0);
    // Nothing is lost for the full sink: its cursor did not move, the events stay journaled.
    assert_eq!(journal.load_cursor("full").unwrap(), Some(0));
    assert_eq!(journal.load_cursor("good").unwrap(), Some(last));
    runtime.block_on(journal.close()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn existing_files_are_appended_to_and_a_torn_last_line_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let old_line = serde_json::to_string(&event(0, "Invited", None)).unwrap();
    let complete = dir.path().join("complete.jsonl");
    std::fs::write(&complete, format!("{old_line}\n")).unwrap();
    let torn = dir.path().join("torn.jsonl");
    let fragment = "{\"schema\":\"chatwatch.ev";
    std::fs::write(&torn, format!("{old_line}\n{fragment}")).unwrap();
    let journal = journal(dir.path());
    let runner = SinkRunner::start(
        journal.clone(),
        vec![
            (
                "complete".to_owned(),
                SinkConfig::File(FileSinkConfig::new(&complete)),
            ),
            (
                "torn".to_owned(),
                SinkConfig::File(FileSinkConfig::new(&torn)),
            ),
        ],
        Duration::from_secs(10),
    )
    .await
    .expect("sinks start");
    let last = append(&journal, (1..4).map(|i| event(i, "Chatting", None))).await;
    wait_cursors(&journal, &["complete", "torn"], last).await;
    runner.shutdown(Duration::from_secs(10)).await;
    journal.close().await.unwrap();
    // The complete file: its old bytes unchanged, the new lines after them.
    let text = std::fs::read_to_string(&complete).unwrap();
    assert!(text.starts_with(&format!("{old_line}\n")), "{text}");
    assert_eq!(
        ids_in(&complete),
        [
            "event-000000",
            "event-000001",
            "event-000002",
            "event-000003"
        ]
    );
    // The torn file: the fragment ended on its own line, the new records each on theirs.
    let text = std::fs::read_to_string(&torn).unwrap();
    assert!(text.ends_with('\n'), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(lines[0], old_line);
    assert_eq!(
        lines[1], fragment,
        "the torn fragment stays on its own line"
    );
    let ids: Vec<String> = lines[2..]
        .iter()
        .map(|l| serde_json::from_str::<Event>(l).unwrap().event_id)
        .collect();
    assert_eq!(ids, ["event-000001", "event-000002", "event-000003"]);
}

#[tokio::test]
async fn bad_names_and_invalid_configs_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let journal = journal(dir.path());
    let log = SinkConfig::Log(LogSinkConfig::default());
    let start = |sinks: Vec<(String, SinkConfig)>| {
        SinkRunner::start(journal.clone(), sinks, Duration::from_secs(1))
    };
    let err = start(vec![(String::new(), log.clone())])
        .await
        .expect_err("empty name");
    assert!(matches!(err, SinkError::EmptyName), "{err}");
    let err = start(vec![("a".into(), log.clone()), ("a".into(), log.clone())])
        .await
        .expect_err("duplicate");
    assert!(err.to_string().contains("`a`"), "{err}");
    let bad = SinkConfig::Log(LogSinkConfig {
        filter: FilterConfig {
            channels: vec!["no-slash".into()],
            ..FilterConfig::default()
        },
        ..LogSinkConfig::default()
    });
    let err = start(vec![("ok".into(), log), ("bad".into(), bad)])
        .await
        .expect_err("invalid filter")
        .to_string();
    assert!(
        err.contains("sink `bad`") && err.contains("filter.channels[0]"),
        "{err}"
    );
    assert_eq!(
        journal.load_cursor("ok").unwrap(),
        None,
        "no sink was started"
    );
    journal.close().await.unwrap();
}

#[tokio::test]
async fn build_errors_name_the_sink_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("events.jsonl");
    let journal = journal(dir.path());
    let err = SinkRunner::start(
        journal.clone(),
        vec![(
            "audit".to_owned(),
            SinkConfig::File(FileSinkConfig::new(&bad)),
        )],
        Duration::from_secs(1),
    )
    .await
    .expect_err("a path under a regular file cannot be opened")
    .to_string();
    assert!(err.contains("sink `audit`"), "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    journal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_keeps_an_existing_event_file_and_repairs_its_torn_last_line() {
    let faye = Faye::start(0, 2);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chatwatch.toml");
    std::fs::write(&config, Daemon::config(faye.port, dir.path(), "")).unwrap();
    // What a previous run left behind: one complete record, then a crash mid-write.
    let old_line = serde_json::to_string(&event(0, "Invited", None)).unwrap();
    let fragment = "{\"schema\":\"chatwatch.ev";
    std::fs::write(
        dir.path().join("events.jsonl"),
        format!("{old_line}\n{fragment}"),
    )
    .unwrap();
    let mut daemon = Daemon::start_with_config(dir, &config);
    daemon.wait_listening(1).await;
    faye.publish(0, 5).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let lines = loop {
        let text = std::fs::read_to_string(daemon.events_path()).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= 7 && text.ends_with('\n') {
            break lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} lines; log:\n{}",
            lines.len(),
            crate::support::tail(&daemon.log_text(), 40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines[0], old_line, "the complete record is kept as it was");
    assert_eq!(
        lines[1], fragment,
        "the torn fragment stays on its own line"
    );
    let new: Vec<serde_json::Value> = lines[2..]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect();
    assert_sequence(&new, 5);
    assert!(
        daemon.log_text().contains("did not end with a newline"),
        "the repair is logged"
    );
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit().await, Some(0));
}

/// The journal's records are what the pipeline always wrote (`serde_json::to_vec` of the event);
/// a journal filled that way before sinks wrote the bytes as they are is delivered by the runner
/// byte for byte to a sink without a filter, and decoded for a filtered one, which skips a
/// record that is not an event it can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_records_reach_byte_sinks_as_they_are_and_filtered_sinks_decoded() {
    let dir = tempfile::tempdir().unwrap();
    let all = dir.path().join("all.jsonl");
    let left = dir.path().join("left.jsonl");
    let journal = journal(dir.path());
    // Written before the sinks start, as a journal left by a previous run.
    let mut payloads: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            let (state, previous) = if i % 2 == 0 {
                ("LeftChat", Some("Chatting"))
            } else {
                ("Chatting", Some("Invited"))
            };
            serde_json::to_vec(&event(i, state, previous)).unwrap()
        })
        .collect();
    payloads.insert(
        10,
        br#"{"schema":"chatwatch.event.v1","event_id":"not-an-event"}"#.to_vec(),
    );
    let last = *journal.append(payloads.clone()).await.unwrap().end();
    for name in ["all", "left"] {
        journal.store_cursor(name, 0).unwrap();
    }
    let sinks = vec![
        (
            "all".to_owned(),
            SinkConfig::File(FileSinkConfig::new(&all)),
        ),
        (
            "left".to_owned(),
            SinkConfig::File(FileSinkConfig {
                filter: FilterConfig {
                    entered_states: vec!["LeftChat".to_owned()],
                    ..FilterConfig::default()
                },
                ..FileSinkConfig::new(&left)
            }),
        ),
    ];
    let runner = SinkRunner::start(journal.clone(), sinks, Duration::from_secs(10))
        .await
        .expect("sinks start");
    wait_cursors(&journal, &["all", "left"], last).await;
    runner.shutdown(Duration::from_secs(10)).await;
    journal.close().await.unwrap();
    let mut expected = Vec::new();
    for p in &payloads {
        expected.extend_from_slice(p);
        expected.push(b'\n');
    }
    assert_eq!(
        std::fs::read(&all).unwrap(),
        expected,
        "the records, byte for byte"
    );
    let expected_left: Vec<String> = (0..20)
        .filter(|i| i % 2 == 0)
        .map(|i| format!("event-{i:06}"))
        .collect();
    assert_eq!(ids_in(&left), expected_left);
}
