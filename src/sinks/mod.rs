//! The sink layer: where events leave chatwatch.
//!
//! The daemon journals every event first; the journal runner ([`crate::delivery`]) then drives
//! each configured sink from the journal through the [`deliver::Deliver`] contract, every sink
//! at its own cursor, so a slow or failing sink never holds up another and loses nothing. This
//! module owns what sits below that runner: the sink configuration ([`SinkConfig`], one
//! `type = "..."` table per sink), the one verb that builds a sink from it
//! ([`SinkConfig::build`], giving an [`AnySink`]), the filter ([`crate::filter`]) the runner applies
//! for each sink, and the sinks themselves: [`log`], [`file`](mod@file), [`webhook`] and
//! [`audit`]. The file-backed sinks share one writer thread (`writer.rs`) and the
//! torn-line-free append (`append.rs`).
//!
//! Configuration follows the Vector shape: a pure `validate` that touches nothing outside the
//! config, then an async `build(name)` that acquires resources (the file sink opens its file
//! there, so a bad path fails at startup with an error naming the sink and the path).
//!
//! # Adding a sink type
//! 1. A module `src/sinks/<type>/` with its configuration struct (`Serialize`, `Deserialize`,
//!    `#[serde(deny_unknown_fields)]`, a public `filter: FilterConfig`, `///` on every field,
//!    secrets as [`crate::secret::Secret`]) offering `pub fn validate(&self) -> Result<(),
//!    SinkError>` (pure) and `pub async fn build(&self, name: &str) -> Result<TheSink,
//!    SinkError>`; `TheSink: Debug` implements [`deliver::Deliver`] (read its contract: `Ok`
//!    only once the batch is safe, dropping the future must be harmless, `Err` makes the runner
//!    rebuild the sink and resume at its cursor). A sink whose peer may be down at startup
//!    connects lazily, on the first delivery, and retries inside `deliver`; its own health
//!    (connected, disabled) is a method of its own type, as [`webhook::WebhookSink::is_disabled`].
//!    Dead letters, if any, go through a file of their own as the webhook's
//!    (`webhook/deadletter.rs`).
//! 2. `pub mod nats;` below, and one line in the list at the bottom of `src/sinks/any.rs`:
//!    `Nats(crate::sinks::nats::NatsSinkConfig) => crate::sinks::nats::NatsSink,` after a `///`
//!    line saying what `type = "nats"` does. That generates the [`SinkConfig`] and [`AnySink`] variants and
//!    every dispatch (validate, filter, build, deliver, reopen, close); nothing else in the
//!    runner or the service changes.
//! 3. Its metrics use the shared names below where they mean the same thing
//!    ([`DELIVERED_EVENTS`] and [`FAILED_WRITES`], through the crate's `delivered_counter` and
//!    `failed_counter`), labelled `sink`.
//!
//! Metrics, all labelled with `sink`:
//! - `chatwatch_sink_delivered_events_total`: events the sink has delivered (the file sink
//!   counts an event once its batch is acknowledged per its fsync policy).
//! - `chatwatch_sink_failed_writes_total{cause}`: failed attempts (`write`, `sync`, `reopen`,
//!   `encode`); a failed write is retried, so this counts attempts, not lost events.

use std::path::PathBuf;

use metrics::Counter;

mod any;
mod append;
pub mod audit;
pub mod deliver;
pub mod file;
pub mod log;
pub mod mode;
pub mod webhook;
// NATS JetStream sink (issue 12).
pub mod nats;
pub mod readiness;
pub mod record;
mod writer;

pub use crate::filter::{channel_matches, FilterConfig};
pub use any::{AnySink, SinkConfig};
pub use file::{FileSink, FileSinkConfig, FsyncPolicy};
pub use log::{LogFormat, LogLevel, LogSinkConfig};
pub use record::{Record, RecordError};

// The sink metric names, defined with their HELP text in the catalogue.
pub use crate::metrics::{
    SINK_DELIVERED_EVENTS as DELIVERED_EVENTS, SINK_FAILED_WRITES as FAILED_WRITES,
};

/// Tracing target of the sink layer's own diagnostics (write errors, repairs, reopens).
const TARGET: &str = "chatwatch::sinks";

/// Deserializers that also accept numbers and booleans written as strings.
///
/// Sink tables are internally tagged (`type = "..."`), so serde buffers them before picking the
/// variant, and a value from an environment override (`CHATWATCH__SINKS__AUDIT__KEEP_FILES=5`)
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
    /// A sink could not open (or create, or repair) its file or directory.
    #[error("sink `{sink}`: cannot open `{}`: {error}", path.display())]
    Open {
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
}

impl SinkError {
    /// An [`SinkError::Invalid`] for `field`.
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A filter's validation error as a sink configuration error.
    pub(crate) fn filter(e: crate::filter::FilterError) -> Self {
        Self::Invalid {
            field: e.field,
            reason: e.reason,
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
    use std::time::Duration;

    use serde::Deserialize;

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
            create_dirs = false
            "#,
        )
        .expect("valid config");
        let SinkConfig::File(file) = &root.sinks["audit"] else {
            panic!("expected a file sink");
        };
        assert_eq!(file.fsync, FsyncPolicy::Always);
        assert_eq!(file.fsync_interval, Duration::from_millis(250));
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

    #[tokio::test]
    async fn validate_reports_field_and_build_names_the_sink() {
        let config = SinkConfig::File(FileSinkConfig {
            fsync_interval: Duration::ZERO,
            ..FileSinkConfig::new("x.jsonl")
        });
        let err = config.validate().expect_err("zero interval").to_string();
        assert!(err.contains("fsync_interval"), "{err}");
        let err = config
            .validate()
            .expect_err("zero interval")
            .in_sink("audit")
            .to_string();
        assert!(
            err.starts_with("sink `audit`: invalid `fsync_interval`"),
            "{err}"
        );
        let err = config
            .build("audit")
            .await
            .expect_err("not built")
            .to_string();
        assert!(
            err.starts_with("sink `audit`: invalid `fsync_interval`"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn build_validates_first_and_names_the_sink_and_field() {
        let bad = SinkConfig::Log(LogSinkConfig {
            filter: FilterConfig {
                channels: vec!["no-slash".into()],
                ..FilterConfig::default()
            },
            ..LogSinkConfig::default()
        });
        let err = bad
            .build("bad")
            .await
            .expect_err("invalid filter")
            .to_string();
        assert!(
            err.contains("sink `bad`") && err.contains("filter.channels[0]"),
            "{err}"
        );
        let ok = SinkConfig::Log(LogSinkConfig::default());
        assert!(matches!(ok.build("ok").await, Ok(AnySink::Log(_))));
    }

    #[test]
    fn string_values_from_environment_overrides_are_accepted() {
        // `config::Environment` yields strings; the sink table is buffered by the tagged enum.
        let root = config::Config::builder()
            .add_source(config::File::from_str(
                "[sinks.a]\ntype = \"file\"\npath = \"x\"\n[sinks.b]\ntype = \"audit\"\ndir = \"d\"\n",
                config::FileFormat::Toml,
            ))
            .set_override("sinks.a.create_dirs", "false")
            .and_then(|b| b.set_override("sinks.a.fsync", "never"))
            .and_then(|b| b.set_override("sinks.b.rotate_bytes", "7"))
            .and_then(|b| b.build())
            .and_then(|c| c.try_deserialize::<Root>())
            .expect("string values are accepted");
        let SinkConfig::File(file) = &root.sinks["a"] else {
            panic!("expected a file sink");
        };
        assert_eq!((file.create_dirs, file.fsync), (false, FsyncPolicy::Never));
        let SinkConfig::Audit(audit) = &root.sinks["b"] else {
            panic!("expected an audit sink");
        };
        assert_eq!(audit.rotate_bytes, 7);
        let err = from_toml("[sinks.a]\ntype = \"audit\"\ndir = \"x\"\nrotate_bytes = \"lots\"\n")
            .expect_err("not a number");
        assert!(
            err.contains("lots") && err.contains("non-negative integer"),
            "{err}"
        );
        let err = from_toml("[sinks.a]\ntype = \"audit\"\ndir = \"x\"\nrotate_bytes = -3\n")
            .expect_err("negative");
        assert!(err.contains("-3"), "{err}");
        let err = from_toml("[sinks.a]\ntype = \"file\"\npath = \"x\"\ncreate_dirs = \"yes\"\n")
            .expect_err("not a bool");
        assert!(err.contains("yes"), "{err}");
    }
}
