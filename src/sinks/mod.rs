//! The sink layer: where events leave chatwatch.
//!
//! This module owns the sink configuration ([`SinkConfig`], one `type = "..."` table per sink)
//! and the sinks themselves: [`log`], [`file`](mod@file), [`webhook`] and [`audit`]. The daemon
//! drives every sink through the [`deliver::Deliver`] contract from the journal
//! ([`crate::delivery`]): each sink reads at its own cursor, so a slow or failing sink never
//! holds up another and loses nothing. The older in-process [`Fanout`] (a bounded queue per sink,
//! dropping for a full one) remains for library users who want sinks without a journal; only the
//! log and file sinks support it.
//!
//! Configuration follows the Vector shape: a pure `validate` that touches nothing outside the
//! config, then an async `build(name)` that acquires resources (the file sink opens its file
//! there, so a bad path fails at startup with an error naming the sink and the path).
//!
//! Metrics, all labelled with `sink`:
//! - `chatwatch_sink_delivered_events_total`: events the sink has written (the file sink counts
//!   an event once its batch is written and flushed; with `fsync = "always"` once it is synced).
//! - `chatwatch_sink_failed_writes_total{cause}`: failed attempts (`write`, `sync`, `reopen`,
//!   `encode`); a failed attempt is retried, so this counts attempts, not lost events.
//! - `chatwatch_sink_dropped_events_total{cause}`: events lost for that sink: `queue_full`,
//!   `closed` (the sink's worker has stopped) or `shutdown` (still unwritten when shutdown gave
//!   up on a failing file).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use metrics::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::DropGuard;

use crate::event::Event;

pub mod audit;
pub mod deliver;
pub mod file;
pub mod filter;
pub mod log;
pub mod mode;
pub mod webhook;
mod writer;

pub use file::{FileSink, FileSinkConfig, FsyncPolicy};
pub use filter::{channel_matches, FilterConfig};
pub use log::{LogFormat, LogLevel, LogSinkConfig};

/// Metric: events a sink has delivered, labelled `sink`.
pub const DELIVERED_EVENTS: &str = "chatwatch_sink_delivered_events_total";
/// Metric: failed write, sync, reopen or encode attempts, labelled `sink` and `cause`.
pub const FAILED_WRITES: &str = "chatwatch_sink_failed_writes_total";
/// Metric: events dropped for a sink, labelled `sink` and `cause`.
pub const DROPPED_EVENTS: &str = "chatwatch_sink_dropped_events_total";

/// Default capacity of each sink's queue, in events.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Largest accepted `queue_capacity`.
pub const MAX_QUEUE_CAPACITY: usize = 10_000_000;

/// Tracing target of the sink layer's own diagnostics (drops, write errors, shutdown).
const TARGET: &str = "chatwatch::sinks";

/// At most one "queue full" warning per sink per this period.
const DROP_LOG_PERIOD: Duration = Duration::from_secs(10);

/// Registers the descriptions of the sink metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(DELIVERED_EVENTS, "Events a sink has delivered.");
    metrics::describe_counter!(
        FAILED_WRITES,
        "Failed write, sync, reopen or encode attempts of a sink (retried; counts attempts)."
    );
    metrics::describe_counter!(
        DROPPED_EVENTS,
        "Events dropped for one sink (queue_full, closed, shutdown)."
    );
}

/// The serde default of every sink's `queue_capacity`.
pub(crate) fn default_queue_capacity() -> usize {
    DEFAULT_QUEUE_CAPACITY
}

/// Deserializers that also accept numbers and booleans written as strings.
///
/// Sink tables are internally tagged (`type = "..."`), so serde buffers them before picking the
/// variant, and a value from an environment override (`CHATWATCH__SINKS__AUDIT__QUEUE_CAPACITY=5`)
/// reaches the field as the string `"5"`, which the plain `usize`/`bool` impls reject.
pub(crate) mod lenient {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};

    /// A `usize` given as an integer or a decimal string.
    pub(crate) fn usize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = usize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
                usize::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
                usize::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<usize, E> {
                v.trim()
                    .parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        deserializer.deserialize_any(V)
    }

    /// A `bool` given as a boolean or as the string `"true"` / `"false"`.
    pub(crate) fn bool<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = bool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true or false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
                Ok(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
                match v.trim() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `chatwatch_sink_delivered_events_total{sink}`.
pub(crate) fn delivered_counter(sink: &str) -> Counter {
    metrics::counter!(DELIVERED_EVENTS, "sink" => sink.to_owned())
}

/// `chatwatch_sink_failed_writes_total{sink, cause}`.
pub(crate) fn failed_counter(sink: &str, cause: &'static str) -> Counter {
    metrics::counter!(FAILED_WRITES, "sink" => sink.to_owned(), "cause" => cause)
}

/// `chatwatch_sink_dropped_events_total{sink, cause}`.
pub(crate) fn dropped_counter(sink: &str, cause: &'static str) -> Counter {
    metrics::counter!(DROPPED_EVENTS, "sink" => sink.to_owned(), "cause" => cause)
}

/// Checks a `queue_capacity` value (a zero capacity would make the queue unusable).
pub(crate) fn validate_queue_capacity(capacity: usize) -> Result<(), SinkError> {
    if capacity == 0 || capacity > MAX_QUEUE_CAPACITY {
        return Err(SinkError::invalid(
            "queue_capacity",
            format!("must be between 1 and {MAX_QUEUE_CAPACITY}, got {capacity}"),
        ));
    }
    Ok(())
}

/// Everything that can go wrong configuring or starting a sink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// A configuration value is invalid; `field` is its path inside the sink's table.
    #[error("invalid `{field}`: {reason}")]
    Invalid {
        /// The offending field, e.g. `filter.channels[0]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A sink's configuration is invalid.
    #[error("sink `{sink}`: {error}")]
    Config {
        /// The sink's name.
        sink: String,
        /// What is wrong (an [`SinkError::Invalid`]).
        error: Box<SinkError>,
    },
    /// A sink name is empty.
    #[error("a sink name must not be empty")]
    EmptyName,
    /// Two sinks share a name.
    #[error("sink `{0}` is configured more than once")]
    DuplicateName(String),
    /// The file sink could not open (or create, or repair) its file.
    #[error("sink `{sink}`: cannot open `{}`: {error}", path.display())]
    Open {
        /// The sink's name.
        sink: String,
        /// The configured path.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// The file sink could not start its writer thread.
    #[error("sink `{sink}`: cannot start the writer for `{}`: {error}", path.display())]
    Spawn {
        /// The sink's name.
        sink: String,
        /// The configured path.
        path: PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },
    /// A sink instance cannot go on (a failed fsync, an unusable endpoint configuration): the
    /// runner rebuilds it and resumes from its cursor.
    #[error("sink `{sink}`: {reason}")]
    Failed {
        /// The sink's name.
        sink: String,
        /// What went wrong.
        reason: String,
    },
    /// The file sink's writer stopped before reporting whether the file opened.
    #[error("sink `{sink}`: the writer for `{}` stopped unexpectedly", path.display())]
    WriterGone {
        /// The sink's name.
        sink: String,
        /// The configured path.
        path: PathBuf,
    },
}

impl SinkError {
    /// An [`SinkError::Invalid`] for `field`.
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Attaches the sink's name to a validation error.
    pub(crate) fn in_sink(self, sink: &str) -> Self {
        match self {
            Self::Invalid { .. } => Self::Config {
                sink: sink.to_owned(),
                error: Box::new(self),
            },
            other => other,
        }
    }
}

/// One sink's configuration: a table whose `type` picks the sink.
///
/// ```toml
/// [sinks.console]
/// type = "log"
/// format = "json"
///
/// [sinks.left_chats]
/// type = "file"
/// path = "/var/log/chatwatch/left.jsonl"
/// filter = { entered_states = ["LeftChat"] }
/// ```
// A handful of values read once from the configuration: boxing the larger variants would only
// complicate the serde shape.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    /// `type = "log"`: each event as one tracing line (target `chatwatch::event`).
    Log(LogSinkConfig),
    /// `type = "file"`: each event as one JSON line appended to a file.
    File(FileSinkConfig),
    /// `type = "webhook"`: each event POSTed with Standard Webhooks signatures.
    Webhook(webhook::WebhookSinkConfig),
    /// `type = "audit"`: a hash-chained, rotated, tamper-evident JSON Lines file.
    Audit(audit::AuditSinkConfig),
}

impl SinkConfig {
    /// Checks the configuration without touching the environment (no filesystem, no network).
    pub fn validate(&self) -> Result<(), SinkError> {
        match self {
            Self::Log(config) => config.validate(),
            Self::File(config) => config.validate(),
            Self::Webhook(config) => config.validate(),
            Self::Audit(config) => config.validate(),
        }
    }

    /// Starts the sink under `name`: validates, acquires its resources and spawns its worker.
    pub async fn build(&self, name: &str) -> Result<RunningSink, SinkError> {
        match self {
            Self::Log(config) => config.build(name).await,
            Self::File(config) => config.build(name).await,
            Self::Webhook(_) | Self::Audit(_) => Err(SinkError::Failed {
                sink: name.to_owned(),
                reason: "this sink type is driven by the journal, not by a queue".to_owned(),
            }),
        }
    }

    /// The sink's filter.
    pub fn filter(&self) -> &FilterConfig {
        match self {
            Self::Log(config) => &config.filter,
            Self::File(config) => &config.filter,
            Self::Webhook(config) => &config.filter,
            Self::Audit(config) => &config.filter,
        }
    }

    /// The sink's queue capacity, in events.
    pub fn queue_capacity(&self) -> usize {
        match self {
            Self::Log(config) => config.queue_capacity,
            Self::File(config) => config.queue_capacity,
            Self::Webhook(_) | Self::Audit(_) => DEFAULT_QUEUE_CAPACITY,
        }
    }
}

/// A started sink: its filter, the sending side of its queue, and a way to learn when its
/// worker has drained and flushed. Dropping it closes the queue; the worker then drains what is
/// queued and stops, giving up on a failing file instead of retrying forever.
#[derive(Debug)]
pub struct RunningSink {
    name: String,
    filter: FilterConfig,
    queue: mpsc::Sender<Arc<Event>>,
    done: oneshot::Receiver<()>,
    /// Cancels the worker's retries when dropped (after the shutdown deadline, or on drop).
    stop: DropGuard,
}

impl RunningSink {
    /// Assembles a running sink from its parts; `done` fires once the worker has drained its
    /// queue and flushed, and `stop` makes a retrying worker give up.
    pub(crate) fn new(
        name: &str,
        filter: FilterConfig,
        queue: mpsc::Sender<Arc<Event>>,
        done: oneshot::Receiver<()>,
        stop: DropGuard,
    ) -> Self {
        Self {
            name: name.to_owned(),
            filter,
            queue,
            done,
            stop,
        }
    }

    /// The sink's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sink's filter.
    pub fn filter(&self) -> &FilterConfig {
        &self.filter
    }

    /// Queues `event` without waiting; fails when the queue is full or the worker has stopped.
    /// Does not apply the filter (the [`Fanout`] does).
    pub fn try_send(&self, event: Arc<Event>) -> Result<(), mpsc::error::TrySendError<Arc<Event>>> {
        self.queue.try_send(event)
    }
}

/// Drops not yet reported in a warning, for one sink.
#[derive(Debug, Default)]
struct DropLog {
    /// Dropped because the queue was full, since the last warning.
    queue_full: u64,
    /// Dropped because the worker had stopped, since the last warning.
    closed: u64,
    /// When the last warning was logged.
    last_warned: Option<tokio::time::Instant>,
}

/// One sink as the fan-out holds it.
#[derive(Debug)]
struct FanoutSink {
    sink: RunningSink,
    dropped_queue_full: Counter,
    dropped_closed: Counter,
    drops: Mutex<DropLog>,
}

impl FanoutSink {
    fn new(sink: RunningSink) -> Self {
        Self {
            dropped_queue_full: dropped_counter(&sink.name, "queue_full"),
            dropped_closed: dropped_counter(&sink.name, "closed"),
            drops: Mutex::new(DropLog::default()),
            sink,
        }
    }

    /// Counts one dropped event and warns at most once per [`DROP_LOG_PERIOD`].
    fn dropped(&self, queue_full: bool) {
        if queue_full {
            self.dropped_queue_full.increment(1);
        } else {
            self.dropped_closed.increment(1);
        }
        let mut drops = self.drops.lock().unwrap_or_else(PoisonError::into_inner);
        if queue_full {
            drops.queue_full += 1;
        } else {
            drops.closed += 1;
        }
        let now = tokio::time::Instant::now();
        if drops
            .last_warned
            .is_none_or(|last| now.duration_since(last) >= DROP_LOG_PERIOD)
        {
            self.warn_drops(&mut drops);
            drops.last_warned = Some(now);
        }
    }

    /// Logs and resets the unreported drop counts, if any.
    fn warn_drops(&self, drops: &mut DropLog) {
        if drops.queue_full == 0 && drops.closed == 0 {
            return;
        }
        tracing::warn!(
            target: TARGET,
            sink = %self.sink.name,
            queue_full = drops.queue_full,
            closed = drops.closed,
            capacity = self.sink.queue.max_capacity(),
            "sink `{}` dropped {} events since the last report",
            self.sink.name,
            drops.queue_full + drops.closed,
        );
        drops.queue_full = 0;
        drops.closed = 0;
    }
}

/// What [`Fanout::shutdown`] observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Sinks that drained, flushed and stopped before the deadline.
    pub finished: Vec<String>,
    /// Sinks that were still working at the deadline, or whose worker died.
    pub unfinished: Vec<String>,
}

impl ShutdownReport {
    /// Whether every sink finished in time.
    pub fn is_clean(&self) -> bool {
        self.unfinished.is_empty()
    }
}

/// Feeds every event to every sink whose filter accepts it, each through its own bounded queue.
#[derive(Debug)]
pub struct Fanout {
    sinks: Vec<FanoutSink>,
}

impl Fanout {
    /// Validates every configuration (names non-empty and unique, each sink valid), then builds
    /// the sinks in order. Nothing is started when any configuration is invalid; when a build
    /// fails, the sinks already built are dropped (they drain and stop on their own).
    pub async fn new(sinks: Vec<(String, SinkConfig)>) -> Result<Self, SinkError> {
        for (i, (name, config)) in sinks.iter().enumerate() {
            if name.is_empty() {
                return Err(SinkError::EmptyName);
            }
            if sinks[..i].iter().any(|(other, _)| other == name) {
                return Err(SinkError::DuplicateName(name.clone()));
            }
            config.validate().map_err(|e| e.in_sink(name))?;
        }
        let mut running = Vec::with_capacity(sinks.len());
        for (name, config) in &sinks {
            running.push(config.build(name).await?);
        }
        Ok(Self::from_running(running))
    }

    /// A fan-out over sinks that are already running.
    pub fn from_running(sinks: Vec<RunningSink>) -> Self {
        Self {
            sinks: sinks.into_iter().map(FanoutSink::new).collect(),
        }
    }

    /// The names of the sinks, in configuration order.
    pub fn sink_names(&self) -> impl Iterator<Item = &str> {
        self.sinks.iter().map(|s| s.sink.name.as_str())
    }

    /// Queues `event` for every sink whose filter accepts it. Never blocks and never waits: a
    /// sink whose queue is full (or whose worker has stopped) loses this event, which is counted
    /// and reported in a warning at most once per sink every 10 s.
    pub fn send(&self, event: Arc<Event>) {
        for sink in &self.sinks {
            if !sink.sink.filter.matches(&event) {
                continue;
            }
            match sink.sink.queue.try_send(Arc::clone(&event)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => sink.dropped(true),
                Err(mpsc::error::TrySendError::Closed(_)) => sink.dropped(false),
            }
        }
    }

    /// Closes every queue and waits, up to `deadline`, for each sink to write what is queued and
    /// flush (the file sink also syncs, whatever its policy). Sinks still busy at the deadline
    /// are logged and listed as unfinished; a file sink retrying a failing write then gives up
    /// and logs how many events it abandoned.
    pub async fn shutdown(self, deadline: Duration) -> ShutdownReport {
        // A deadline too far to represent means "no deadline".
        let until = tokio::time::Instant::now().checked_add(deadline);
        let mut waits = Vec::with_capacity(self.sinks.len());
        for sink in self.sinks {
            {
                let mut drops = sink.drops.lock().unwrap_or_else(PoisonError::into_inner);
                sink.warn_drops(&mut drops);
            }
            let RunningSink {
                name,
                queue,
                done,
                stop,
                ..
            } = sink.sink;
            drop(queue);
            waits.push(async move {
                let outcome = match until {
                    Some(until) => tokio::time::timeout_at(until, done).await,
                    None => Ok(done.await),
                };
                // Dropping `stop` here (after the deadline at the latest) cancels any retries.
                drop(stop);
                (name, outcome)
            });
        }
        let mut report = ShutdownReport::default();
        for (name, outcome) in futures_util::future::join_all(waits).await {
            match outcome {
                Ok(Ok(())) => {
                    tracing::debug!(target: TARGET, sink = %name, "sink drained and stopped");
                    report.finished.push(name);
                }
                Ok(Err(_)) => {
                    tracing::error!(
                        target: TARGET,
                        sink = %name,
                        "sink `{name}` stopped abnormally; queued events may be lost"
                    );
                    report.unfinished.push(name);
                }
                Err(_) => {
                    tracing::warn!(
                        target: TARGET,
                        sink = %name,
                        deadline = ?deadline,
                        "sink `{name}` did not finish by the shutdown deadline; queued events may be lost"
                    );
                    report.unfinished.push(name);
                }
            }
        }
        report
    }
}

/// Test helpers shared by the sink modules' unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

    /// A metric name and its sorted label pairs.
    type Series = (String, Vec<(String, String)>);

    /// Cumulative counter values from a [`DebuggingRecorder`], whose snapshots reset counters.
    pub(crate) struct Counters {
        snapshotter: Snapshotter,
        totals: Mutex<HashMap<Series, u64>>,
    }

    impl Counters {
        /// Reads the counters of `recorder`.
        pub(crate) fn new(recorder: &DebuggingRecorder) -> Self {
            Self {
                snapshotter: recorder.snapshotter(),
                totals: Mutex::new(HashMap::new()),
            }
        }

        /// The total of counter `name` over all series whose labels include every `labels`
        /// pair.
        pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            let mut totals = self.totals.lock().unwrap();
            for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
                let DebugValue::Counter(n) = value else {
                    continue;
                };
                let key = key.key();
                let mut pairs: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                pairs.sort();
                *totals.entry((key.name().to_owned(), pairs)).or_default() += n;
            }
            totals
                .iter()
                .filter(|((n, pairs), _)| {
                    n == name
                        && labels
                            .iter()
                            .all(|(k, v)| pairs.iter().any(|(pk, pv)| pk == k && pv == v))
                })
                .map(|(_, total)| *total)
                .sum()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config loader's view: a table of named sinks.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Root {
        sinks: std::collections::BTreeMap<String, SinkConfig>,
    }

    fn from_toml(text: &str) -> Result<Root, String> {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<Root>())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn toml_file_sink_with_one_line_filter() {
        let root = from_toml(
            r#"
            [sinks.left]
            type = "file"
            path = "/var/log/chatwatch/left.jsonl"
            filter = { entered_states = ["LeftChat"] }
            "#,
        )
        .expect("valid config");
        let SinkConfig::File(file) = &root.sinks["left"] else {
            panic!("expected a file sink, got {:?}", root.sinks["left"]);
        };
        assert_eq!(file.path, PathBuf::from("/var/log/chatwatch/left.jsonl"));
        assert_eq!(file.filter.entered_states, vec!["LeftChat".to_owned()]);
        assert_eq!(file.fsync, FsyncPolicy::Interval);
        assert_eq!(file.fsync_interval, Duration::from_secs(1));
        assert_eq!(file.queue_capacity, DEFAULT_QUEUE_CAPACITY);
        assert!(file.create_dirs);
        assert!(root.sinks["left"].validate().is_ok());
    }

    #[test]
    fn toml_all_file_options() {
        let root = from_toml(
            r#"
            [sinks.audit]
            type = "file"
            path = "audit.jsonl"
            fsync = "always"
            fsync_interval = "250ms"
            queue_capacity = 5
            create_dirs = false
            "#,
        )
        .expect("valid config");
        let SinkConfig::File(file) = &root.sinks["audit"] else {
            panic!("expected a file sink");
        };
        assert_eq!(file.fsync, FsyncPolicy::Always);
        assert_eq!(file.fsync_interval, Duration::from_millis(250));
        assert_eq!(file.queue_capacity, 5);
        assert!(!file.create_dirs);
        assert!(file.filter.is_empty());
    }

    #[test]
    fn toml_log_sink_defaults() {
        let root = from_toml("[sinks.console]\ntype = \"log\"\n").expect("valid config");
        assert_eq!(
            root.sinks["console"],
            SinkConfig::Log(LogSinkConfig::default())
        );
        let SinkConfig::Log(log) = &root.sinks["console"] else {
            panic!("expected a log sink");
        };
        assert_eq!(log.format, LogFormat::Human);
        assert_eq!(log.level, LogLevel::Info);
        assert_eq!(log.queue_capacity, DEFAULT_QUEUE_CAPACITY);
    }

    #[test]
    fn unknown_key_in_file_table_is_rejected_naming_the_key() {
        let err = from_toml(
            r#"
            [sinks.audit]
            type = "file"
            path = "audit.jsonl"
            fsync_intervall = "2s"
            "#,
        )
        .expect_err("unknown key must be rejected");
        assert!(err.contains("fsync_intervall"), "{err}");
        // And through serde_json, the other common path.
        let err = serde_json::from_str::<SinkConfig>(
            r#"{"type": "file", "path": "a.jsonl", "pathh": "b.jsonl"}"#,
        )
        .expect_err("unknown key must be rejected")
        .to_string();
        assert!(err.contains("pathh"), "{err}");
    }

    #[test]
    fn unknown_key_in_log_table_and_in_filter_is_rejected() {
        let err =
            from_toml("[sinks.c]\ntype = \"log\"\nformatt = \"json\"\n").expect_err("unknown");
        assert!(err.contains("formatt"), "{err}");
        let err =
            from_toml("[sinks.c]\ntype = \"log\"\nfilter = { entered_state = [\"LeftChat\"] }\n")
                .expect_err("unknown filter key");
        assert!(err.contains("entered_state"), "{err}");
    }

    #[test]
    fn unknown_or_missing_type_is_rejected() {
        let err = from_toml("[sinks.c]\ntype = \"kafka\"\n").expect_err("unknown type");
        assert!(err.contains("kafka"), "{err}");
        let err = from_toml("[sinks.c]\npath = \"x\"\n").expect_err("missing type");
        assert!(err.contains("type"), "{err}");
        let err = from_toml("[sinks.c]\ntype = \"file\"\n").expect_err("missing path");
        assert!(err.contains("path"), "{err}");
    }

    #[test]
    fn validate_reports_field_and_build_names_the_sink() {
        let config = SinkConfig::File(FileSinkConfig {
            queue_capacity: 0,
            ..FileSinkConfig::new("x.jsonl")
        });
        let err = config.validate().expect_err("zero capacity").to_string();
        assert!(err.contains("queue_capacity"), "{err}");
        let err = config
            .validate()
            .expect_err("zero capacity")
            .in_sink("audit")
            .to_string();
        assert!(
            err.starts_with("sink `audit`: invalid `queue_capacity`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn fanout_rejects_bad_names_and_invalid_configs_before_building() {
        let log = SinkConfig::Log(LogSinkConfig::default());
        let err = Fanout::new(vec![(String::new(), log.clone())])
            .await
            .expect_err("empty name");
        assert!(matches!(err, SinkError::EmptyName), "{err}");
        let err = Fanout::new(vec![("a".into(), log.clone()), ("a".into(), log.clone())])
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
        let err = Fanout::new(vec![("ok".into(), log), ("bad".into(), bad)])
            .await
            .expect_err("invalid filter")
            .to_string();
        assert!(
            err.contains("sink `bad`") && err.contains("filter.channels[0]"),
            "{err}"
        );
    }

    #[test]
    fn string_values_from_environment_overrides_are_accepted() {
        // `config::Environment` yields strings; the sink table is buffered by the tagged enum.
        let root = config::Config::builder()
            .add_source(config::File::from_str(
                "[sinks.a]\ntype = \"file\"\npath = \"x\"\n[sinks.b]\ntype = \"log\"\n",
                config::FileFormat::Toml,
            ))
            .set_override("sinks.a.queue_capacity", "5")
            .and_then(|b| b.set_override("sinks.a.create_dirs", "false"))
            .and_then(|b| b.set_override("sinks.a.fsync", "never"))
            .and_then(|b| b.set_override("sinks.b.queue_capacity", "7"))
            .and_then(|b| b.build())
            .and_then(|c| c.try_deserialize::<Root>())
            .expect("string values are accepted");
        let SinkConfig::File(file) = &root.sinks["a"] else {
            panic!("expected a file sink");
        };
        assert_eq!(
            (file.queue_capacity, file.create_dirs, file.fsync),
            (5, false, FsyncPolicy::Never)
        );
        assert_eq!(root.sinks["b"].queue_capacity(), 7);
        let err =
            from_toml("[sinks.a]\ntype = \"file\"\npath = \"x\"\nqueue_capacity = \"lots\"\n")
                .expect_err("not a number");
        assert!(
            err.contains("lots") && err.contains("non-negative integer"),
            "{err}"
        );
        let err =
            from_toml("[sinks.a]\ntype = \"log\"\nqueue_capacity = -3\n").expect_err("negative");
        assert!(err.contains("-3"), "{err}");
        let err = from_toml("[sinks.a]\ntype = \"file\"\npath = \"x\"\ncreate_dirs = \"yes\"\n")
            .expect_err("not a bool");
        assert!(err.contains("yes"), "{err}");
    }

    #[tokio::test]
    async fn shutdown_accepts_an_unrepresentably_long_deadline() {
        let fanout = Fanout::new(vec![(
            "console".to_owned(),
            SinkConfig::Log(LogSinkConfig::default()),
        )])
        .await
        .expect("build");
        let report = fanout.shutdown(Duration::MAX).await;
        assert_eq!(report.finished, vec!["console".to_owned()]);
        assert!(report.is_clean());
    }
}
