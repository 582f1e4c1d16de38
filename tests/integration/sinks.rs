//! Integration tests of the sink layer through its public API: configuration parsed the way the
//! daemon parses it, a real [`Fanout`] over real files, and a real full device.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatwatch::event::{Event, EventKind};
use chatwatch::sinks::{
    Fanout, FileSinkConfig, FilterConfig, FsyncPolicy, LogSinkConfig, SinkConfig, DELIVERED_EVENTS,
    DROPPED_EVENTS, FAILED_WRITES,
};
use metrics_util::debugging::DebuggingRecorder;

use crate::support::events::event;
use crate::support::metrics::Counters;

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

/// A tracing writer into a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Installs `subscriber` for this thread so that captures are reliable under parallel tests.
///
/// tracing caches each callsite's interest process-wide, computed on the thread that first hits
/// it; a sibling test without a subscriber would cache `never` and blind this capture. A
/// process-wide inert registry keeps every callsite at least `sometimes` interested, and the
/// rebuild re-evaluates callsites registered before this install.
fn capture_with(
    subscriber: impl tracing::Subscriber + Send + Sync,
) -> tracing::subscriber::DefaultGuard {
    static ANCHOR: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    ANCHOR.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    guard
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Root {
    sinks: std::collections::BTreeMap<String, SinkConfig>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_configured_fanout_routes_by_filter_and_preserves_order() {
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
    let fanout = Fanout::new(root.sinks.into_iter().collect())
        .await
        .expect("sinks start");
    assert_eq!(fanout.sink_names().collect::<Vec<_>>(), ["all", "left"]);
    let states = [
        ("Invited", None),
        ("Chatting", Some("Invited")),
        ("LeftChat", Some("Chatting")),
        ("LeftChat", Some("LeftChat")),
        ("Completed", Some("LeftChat")),
    ];
    let mut expected_left = Vec::new();
    for i in 0..200 {
        let (state, previous) = states[i % states.len()];
        if i % states.len() == 2 {
            expected_left.push(format!("event-{i:06}"));
        }
        fanout.send(Arc::new(event(i, state, previous)));
    }
    let report = fanout.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean(), "{report:?}");
    let expected_all: Vec<String> = (0..200).map(|i| format!("event-{i:06}")).collect();
    assert_eq!(ids_in(&all), expected_all);
    assert_eq!(ids_in(&left), expected_left);
}

#[test]
fn shutdown_flushes_everything_queued_in_every_fsync_mode() {
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
    let fanout = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(Fanout::new(configs)).expect("sinks start")
    });
    for i in 0..5000 {
        fanout.send(Arc::new(event(i, "Chatting", None)));
    }
    let report = runtime.block_on(fanout.shutdown(Duration::from_secs(20)));
    assert_eq!(report.finished, ["always", "interval", "never"]);
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
        assert_eq!(counters.get(DROPPED_EVENTS, &[("sink", name)]), 0, "{name}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_sink_drops_its_own_events_and_never_blocks_another() {
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
            SinkConfig::File(FileSinkConfig {
                queue_capacity: 4,
                ..FileSinkConfig::new("/dev/full")
            }),
        ),
        (
            "good".to_owned(),
            SinkConfig::File(FileSinkConfig {
                queue_capacity: 20_000,
                ..FileSinkConfig::new(&good)
            }),
        ),
    ];
    let fanout = metrics::with_local_recorder(&recorder, || {
        runtime.block_on(Fanout::new(configs)).expect("sinks start")
    });
    let sent = 10_000;
    for i in 0..sent {
        fanout.send(Arc::new(event(i, "Chatting", None)));
    }
    // The full sink fails and retries while the good one writes everything.
    let deadline = std::time::Duration::from_secs(10);
    runtime.block_on(async {
        let until = tokio::time::Instant::now() + deadline;
        while counters.get(FAILED_WRITES, &[("sink", "full"), ("cause", "write")]) < 2
            || counters.get(DELIVERED_EVENTS, &[("sink", "good")]) < sent as u64
        {
            assert!(
                tokio::time::Instant::now() < until,
                "the good sink did not write everything while /dev/full kept failing"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let started = tokio::time::Instant::now();
    let report = runtime.block_on(fanout.shutdown(Duration::from_secs(1)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown is bounded by its deadline"
    );
    assert_eq!(report.finished, ["good"]);
    assert_eq!(report.unfinished, ["full"]);
    let expected: Vec<String> = (0..sent).map(|i| format!("event-{i:06}")).collect();
    assert_eq!(ids_in(&good), expected);
    let dropped = counters.get(DROPPED_EVENTS, &[("sink", "full"), ("cause", "queue_full")]);
    // At most the queue (4) and one batch (<= 1024) can have been taken by the full sink.
    assert!(
        dropped >= (sent - 4 - 1024) as u64,
        "dropped {dropped} of {sent}"
    );
    assert_eq!(counters.get(DROPPED_EVENTS, &[("sink", "good")]), 0);
    assert_eq!(counters.get(DELIVERED_EVENTS, &[("sink", "full")]), 0);
}

#[test]
fn queue_full_warnings_are_rate_limited_per_sink() {
    let capture = Capture::default();
    let subscriber = {
        let capture = capture.clone();
        tracing_subscriber::fmt()
            .with_writer(move || capture.clone())
            .with_ansi(false)
            .finish()
    };
    let _guard = capture_with(subscriber);
    let recorder = DebuggingRecorder::new();
    let counters = Counters::new(&recorder);
    // One thread and paused time: the log sink's task cannot drain its queue until we yield,
    // and the 10 s rate-limit window can be crossed without waiting.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let config = SinkConfig::Log(LogSinkConfig {
        queue_capacity: 2,
        filter: FilterConfig {
            kinds: vec![EventKind::ChatState],
            ..FilterConfig::default()
        },
        ..LogSinkConfig::default()
    });
    let fanout = metrics::with_local_recorder(&recorder, || {
        runtime
            .block_on(Fanout::new(vec![("console".to_owned(), config)]))
            .expect("sink starts")
    });
    // Sends happen inside the runtime, as in the daemon, so they read its (paused) clock.
    let send = |range: std::ops::Range<usize>| {
        runtime.block_on(async {
            for i in range {
                fanout.send(Arc::new(event(i, "Chatting", None)));
            }
        })
    };
    send(0..50);
    let warnings = |text: &str| {
        text.lines()
            .filter(|l| l.contains("WARN") && l.contains("sink `console` dropped"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let first = warnings(&capture.text());
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].contains("dropped 1 events"), "{first:?}");
    assert_eq!(
        counters.get(
            DROPPED_EVENTS,
            &[("sink", "console"), ("cause", "queue_full")]
        ),
        48
    );
    // Nine seconds later: still inside the window, the log sink drains, one more drop is silent.
    runtime.block_on(async { tokio::time::sleep(Duration::from_secs(9)).await });
    send(50..53);
    assert_eq!(warnings(&capture.text()).len(), 1);
    // Past the window: the next drop reports everything since the last warning.
    runtime.block_on(async { tokio::time::sleep(Duration::from_secs(2)).await });
    send(53..56);
    let second = warnings(&capture.text());
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(second[1].contains("dropped 49 events"), "{second:?}");
    // Events the filter rejects never reach the queue, so they are never dropped.
    let mut other = event(99, "Chatting", None);
    other.kind = EventKind::Other;
    for _ in 0..10 {
        fanout.send(Arc::new(other.clone()));
    }
    assert_eq!(
        counters.get(
            DROPPED_EVENTS,
            &[("sink", "console"), ("cause", "queue_full")]
        ),
        50
    );
    let report = runtime.block_on(fanout.shutdown(Duration::from_secs(5)));
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(counters.get(DELIVERED_EVENTS, &[("sink", "console")]), 6);
}

#[tokio::test]
async fn build_errors_name_the_sink_and_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let bad = file.join("events.jsonl");
    let err = Fanout::new(vec![(
        "audit".to_owned(),
        SinkConfig::File(FileSinkConfig::new(&bad)),
    )])
    .await
    .expect_err("a path under a regular file cannot be opened")
    .to_string();
    assert!(err.contains("sink `audit`"), "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
}
