//! The `log` sink: every event as one `tracing` event with target `chatwatch::event`.
//!
//! This module owns [`LogSinkConfig`] and the rendering of an [`Event`] into a tracing event.
//! The `human` format records the key fields (account, channel, kind, message and notification
//! type, chat id, state, previous state, reference id, event id) as tracing fields with a short
//! message such as `chat LeftChat (was Chatting)`; the `json` format records one field, `event`,
//! holding the complete event as a single JSON line, so a JSON subscriber prints one line per
//! event that a log shipper can parse back into the record. Where the line ends up (stdout,
//! journald) is the subscriber's business, configured by the service.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};
use crate::gws::notification::ReferenceId;

use super::deliver::{Deliver, Needs};
use super::record::Record;
use super::{delivered_counter, failed_counter, FilterConfig, SinkError};

/// The tracing target every log sink emits on.
pub const EVENT_TARGET: &str = "chatwatch::event";

/// How the log sink renders an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Key fields as tracing fields and a short message (`chat LeftChat (was Chatting)`).
    #[default]
    Human,
    /// One field, `event`, holding the full event as one JSON line.
    Json,
}

/// The tracing level the log sink emits at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// `TRACE`.
    Trace,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    #[default]
    Info,
    /// `WARN`.
    Warn,
    /// `ERROR`.
    Error,
}

/// `type = "log"`: writes each event to the process log through `tracing`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSinkConfig {
    /// `"human"` (default): the key fields as structured fields and a one-line summary;
    /// `"json"`: a single field `event` with the whole event as one JSON line.
    #[serde(default)]
    pub format: LogFormat,
    /// The level of the emitted lines: `"trace"`, `"debug"`, `"info"` (default), `"warn"` or
    /// `"error"`. Lines below the subscriber's level are discarded by it, not by this sink.
    #[serde(default)]
    pub level: LogLevel,
    /// Which events this sink receives; default: all.
    #[serde(default)]
    pub filter: FilterConfig,
}

impl LogSinkConfig {
    /// Checks the configuration; pure.
    pub fn validate(&self) -> Result<(), SinkError> {
        self.filter.validate().map_err(SinkError::filter)
    }

    /// Validates, then returns the running sink (nothing to acquire: the process log is the
    /// subscriber's).
    pub async fn build(&self, name: &str) -> Result<LogSink, SinkError> {
        self.validate().map_err(|e| e.in_sink(name))?;
        Ok(LogSink {
            name: name.to_owned(),
            format: self.format,
            level: self.level,
            delivered: delivered_counter(name),
            failed: failed_counter(name, "encode"),
        })
    }
}

/// The running `log` sink: each event becomes one tracing line.
#[derive(Debug)]
pub struct LogSink {
    name: String,
    format: LogFormat,
    level: LogLevel,
    delivered: metrics::Counter,
    failed: metrics::Counter,
}

impl Deliver for LogSink {
    async fn deliver(&mut self, records: &[Arc<Record>]) -> Result<(), SinkError> {
        for record in records {
            let emitted = match self.format {
                LogFormat::Json => emit_json(&self.name, self.level, record),
                LogFormat::Human => match record.event() {
                    Ok(event) => emit(&self.name, self.format, self.level, event),
                    // The runner does not hand over a record it could not decode (`needs`).
                    Err(_) => false,
                },
            };
            if emitted {
                self.delivered.increment(1);
            } else {
                // Not renderable as JSON (cannot happen for a valid event): counted and logged,
                // and not retried, since it would fail the same way again.
                self.failed.increment(1);
            }
        }
        Ok(())
    }

    /// The human line names fields of the event; the JSON line is the journal payload as it is.
    fn needs(&self) -> Needs {
        match self.format {
            LogFormat::Human => Needs::Event,
            LogFormat::Json => Needs::Bytes,
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Emits one tracing event at a level chosen at run time (the tracing macros need a constant).
macro_rules! event_at {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            LogLevel::Trace => tracing::trace!(target: EVENT_TARGET, $($rest)+),
            LogLevel::Debug => tracing::debug!(target: EVENT_TARGET, $($rest)+),
            LogLevel::Info => tracing::info!(target: EVENT_TARGET, $($rest)+),
            LogLevel::Warn => tracing::warn!(target: EVENT_TARGET, $($rest)+),
            LogLevel::Error => tracing::error!(target: EVENT_TARGET, $($rest)+),
        }
    };
}

/// Emits the JSON line of `record` (its journal payload, as [`emit`] renders an event) as one
/// tracing event; false when it is not UTF-8 text on one line (logged).
fn emit_json(sink: &str, level: LogLevel, record: &Record) -> bool {
    let line = record.line();
    match line.as_deref().map(std::str::from_utf8) {
        Ok(Ok(line)) => {
            event_at!(level, event = %line);
            true
        }
        Ok(Err(error)) => {
            json_failed(sink, record, &error);
            false
        }
        Err(error) => {
            json_failed(sink, record, error);
            false
        }
    }
}

fn json_failed(sink: &str, record: &Record, error: &dyn std::fmt::Display) {
    tracing::error!(
        target: super::TARGET,
        sink = %sink,
        event_id = %record.id_or_empty(),
        %error,
        "cannot render the record as one JSON line"
    );
}

/// Emits `event` as one tracing event; false when it could not be rendered (json only; logged).
pub(crate) fn emit(sink: &str, format: LogFormat, level: LogLevel, event: &Event) -> bool {
    match format {
        LogFormat::Json => match serde_json::to_string(event) {
            Ok(line) => {
                event_at!(level, event = %line);
                true
            }
            Err(error) => {
                tracing::error!(
                    target: super::TARGET,
                    sink = %sink,
                    event_id = %event.event_id,
                    %error,
                    "cannot encode the event as JSON"
                );
                false
            }
        },
        LogFormat::Human => {
            let chat = event.chat.as_ref();
            let state = chat.and_then(|c| c.state.as_ref()).map(|s| s.as_str());
            let previous_state = chat
                .and_then(|c| c.previous_state.as_ref())
                .map(|s| s.as_str());
            let reference_id = event.reference_id.as_ref().map(|r| match r {
                ReferenceId::Number(n) => n.to_string(),
                ReferenceId::Text(t) => t.clone(),
            });
            event_at!(
                level,
                sink = %sink,
                account = %event.account,
                channel = %event.channel,
                kind = event.kind.as_str(),
                message_type = event.message_type.as_deref(),
                notification_type = event.notification_type.as_ref().map(|t| t.as_str()),
                chat_id = chat.and_then(|c| c.id.as_deref()),
                state,
                previous_state,
                reference_id = reference_id.as_deref(),
                event_id = %event.event_id,
                "{}",
                summary(event)
            );
            true
        }
    }
}

/// The one-line message of the human format.
pub(crate) fn summary(event: &Event) -> String {
    let chat = event.chat.as_ref();
    let state = chat.and_then(|c| c.state.as_ref());
    let previous = chat.and_then(|c| c.previous_state.as_ref());
    let notification = event.notification_type.as_ref().map(|t| t.as_str());
    match event.kind {
        EventKind::ChatState => match (state, previous) {
            (Some(s), Some(p)) if s == p => match notification {
                Some(n) => format!("chat {s} ({n})"),
                None => format!("chat {s} (unchanged)"),
            },
            (Some(s), Some(p)) => format!("chat {s} (was {p})"),
            (Some(s), None) => format!("chat {s} (new)"),
            (None, _) => format!("chat {}", notification.unwrap_or("notification")),
        },
        EventKind::MessageLog => {
            let n = event.messages.as_ref().map_or(0, Vec::len);
            format!(
                "chat transcript: {n} new message{}",
                if n == 1 { "" } else { "s" }
            )
        }
        EventKind::Error => format!(
            "GWS error: {}",
            event.error_message.as_deref().unwrap_or("(no message)")
        ),
        EventKind::Other => format!(
            "notification {}",
            event.message_type.as_deref().unwrap_or("(no messageType)")
        ),
        EventKind::Undecodable => format!(
            "undecodable {}: {}",
            event.message_type.as_deref().unwrap_or("notification"),
            event.decode_error.as_deref().unwrap_or("unknown error")
        ),
        EventKind::ChatVanished => match previous {
            Some(p) => format!("chat vanished while not listening (was {p})"),
            None => "chat vanished while not listening".to_owned(),
        },
        EventKind::DispositionSet => match &event.disposition {
            Some(d) => format!(
                "disposition {}: {} -> {}",
                d.key,
                d.old.as_deref().unwrap_or("(none)"),
                d.new.as_deref().unwrap_or("(none)")
            ),
            None => "disposition set".to_owned(),
        },
        EventKind::DispositionOverdue => match &event.pending {
            Some(p) => format!(
                "disposition overdue: pending for more than {}s",
                p.overdue_after_seconds
            ),
            None => "disposition overdue".to_owned(),
        },
        EventKind::Action => match &event.action {
            Some(a) => format!(
                "rule {}: {} {}{} (attempt {})",
                a.rule,
                a.operation,
                a.outcome,
                a.gws_status
                    .map(|s| format!(", GWS status {s}"))
                    .unwrap_or_default(),
                a.attempt
            ),
            None => "rule action".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;
    use crate::event::ChatRecord;
    use crate::gws::notification::{ChatState, NotificationType};
    use crate::sinks::SinkConfig;

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
    /// tracing caches each callsite's interest process-wide, computed on the thread that first
    /// hits it; a sibling test without a subscriber would cache `never` and blind this capture.
    /// A process-wide inert registry keeps every callsite at least `sometimes` interested, and
    /// the rebuild re-evaluates callsites registered before this install.
    fn capture_with(
        subscriber: impl tracing::Subscriber + Send + Sync,
    ) -> tracing::subscriber::DefaultGuard {
        static ANCHOR: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
        ANCHOR.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
        let guard = tracing::subscriber::set_default(subscriber);
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    fn event(state: &str, previous: Option<&str>) -> Event {
        Event {
            schema: crate::event::SCHEMA.to_owned(),
            event_id: "0190a000-0000-7000-8000-00000000abcd".to_owned(),
            fingerprint: "ab".repeat(16),
            received_at: time::OffsetDateTime::UNIX_EPOCH,
            account: "agent7".to_owned(),
            channel: "/v2/me/chats".to_owned(),
            kind: EventKind::ChatState,
            message_type: Some("ChatStateChangeMessage".to_owned()),
            notification_type: Some(NotificationType::StatusChange),
            reference_id: Some(ReferenceId::Number(42)),
            chat: Some(ChatRecord {
                id: Some("00048aAPEQJ8001F".to_owned()),
                state: Some(ChatState::from(state)),
                previous_state: previous.map(ChatState::from),
                ..ChatRecord::default()
            }),
            messages: None,
            error_message: None,
            decode_error: None,
            recovered: false,
            disposition: None,
            pending: None,
            action: None,
            data: serde_json::json!({"messageType": "ChatStateChangeMessage"}).into(),
        }
    }

    fn human_subscriber(capture: &Capture) -> impl tracing::Subscriber + Send + Sync {
        let capture = capture.clone();
        tracing_subscriber::fmt()
            .with_writer(move || capture.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish()
    }

    #[test]
    fn human_format_records_key_fields_and_summary() {
        let capture = Capture::default();
        {
            let _guard = capture_with(human_subscriber(&capture));
            assert!(emit(
                "console",
                LogFormat::Human,
                LogLevel::Info,
                &event("LeftChat", Some("Chatting"))
            ));
        }
        let text = capture.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        for needle in [
            " INFO ",
            "chatwatch::event",
            "chat LeftChat (was Chatting)",
            "sink=console",
            "account=agent7",
            "channel=/v2/me/chats",
            "kind=\"chat_state\"",
            "message_type=\"ChatStateChangeMessage\"",
            "notification_type=\"StatusChange\"",
            "chat_id=\"00048aAPEQJ8001F\"",
            "state=\"LeftChat\"",
            "previous_state=\"Chatting\"",
            "reference_id=\"42\"",
            "event_id=0190a000-0000-7000-8000-00000000abcd",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
    }

    #[test]
    fn human_format_omits_absent_fields_and_honours_level() {
        let capture = Capture::default();
        let mut ev = event("Invited", None);
        ev.reference_id = None;
        {
            let _guard = capture_with(human_subscriber(&capture));
            emit("console", LogFormat::Human, LogLevel::Warn, &ev);
        }
        let text = capture.text();
        assert!(text.contains(" WARN "), "{text}");
        assert!(text.contains("chat Invited (new)"), "{text}");
        assert!(!text.contains("previous_state"), "{text}");
        assert!(!text.contains("reference_id"), "{text}");
    }

    #[test]
    fn json_format_is_one_line_that_parses_back_into_the_event() {
        let capture = Capture::default();
        let ev = event("Completed", Some("LeftChat"));
        let subscriber = {
            let capture = capture.clone();
            tracing_subscriber::fmt()
                .json()
                .with_writer(move || capture.clone())
                .with_max_level(tracing::Level::TRACE)
                .finish()
        };
        {
            let _guard = capture_with(subscriber);
            assert!(emit("console", LogFormat::Json, LogLevel::Debug, &ev));
        }
        let text = capture.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).expect("JSON line");
        assert_eq!(line["level"], "DEBUG");
        assert_eq!(line["target"], EVENT_TARGET);
        let fields = line["fields"].as_object().expect("fields");
        assert_eq!(fields.len(), 1, "only the event field: {fields:?}");
        let inner = fields["event"].as_str().expect("event is a string");
        assert!(!inner.contains('\n'));
        let parsed: Event = serde_json::from_str(inner).expect("event JSON");
        assert_eq!(parsed, ev);
    }

    #[test]
    fn summaries_for_every_kind() {
        assert_eq!(
            summary(&event("LeftChat", Some("Chatting"))),
            "chat LeftChat (was Chatting)"
        );
        let mut same = event("Chatting", Some("Chatting"));
        same.notification_type = Some(NotificationType::ParticipantsUpdated);
        assert_eq!(summary(&same), "chat Chatting (ParticipantsUpdated)");
        let mut log = event("Chatting", None);
        log.kind = EventKind::MessageLog;
        log.messages = Some(vec![serde_json::json!({}), serde_json::json!({})]);
        assert_eq!(summary(&log), "chat transcript: 2 new messages");
        let mut err = event("Chatting", None);
        err.kind = EventKind::Error;
        err.error_message = Some("Invalid operation".to_owned());
        assert_eq!(summary(&err), "GWS error: Invalid operation");
        let mut other = event("Chatting", None);
        other.kind = EventKind::Other;
        other.message_type = Some("CallStateChanged".to_owned());
        assert_eq!(summary(&other), "notification CallStateChanged");
        let mut bad = event("Chatting", None);
        bad.kind = EventKind::Undecodable;
        bad.decode_error = Some("chat is not an object".to_owned());
        assert_eq!(
            summary(&bad),
            "undecodable ChatStateChangeMessage: chat is not an object"
        );
    }

    #[test]
    fn config_validation() {
        assert!(LogSinkConfig::default().validate().is_ok());
        let bad = LogSinkConfig {
            filter: FilterConfig {
                channels: vec!["no-slash".into()],
                ..FilterConfig::default()
            },
            ..LogSinkConfig::default()
        };
        let err = bad.validate().expect_err("bad filter").to_string();
        assert!(err.contains("filter.channels[0]"), "{err}");
        let json: LogSinkConfig =
            serde_json::from_str(r#"{"format": "json", "level": "warn"}"#).expect("valid");
        assert_eq!((json.format, json.level), (LogFormat::Json, LogLevel::Warn));
        let err = serde_json::from_str::<LogSinkConfig>(r#"{"level": "loud"}"#)
            .expect_err("bad level")
            .to_string();
        assert!(err.contains("loud"), "{err}");
    }

    #[test]
    fn built_log_sink_delivers_the_events_its_filter_accepts() {
        let capture = Capture::default();
        let _guard = capture_with(human_subscriber(&capture));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let config = SinkConfig::Log(LogSinkConfig {
                filter: FilterConfig {
                    entered_states: vec!["LeftChat".to_owned()],
                    ..FilterConfig::default()
                },
                ..LogSinkConfig::default()
            });
            let mut sink = config.build("left").await.expect("build");
            // The runner applies the sink's filter to what it reads from the journal.
            let events: Vec<Arc<Record>> = [
                event("Chatting", Some("Invited")),
                event("LeftChat", Some("Chatting")),
                event("LeftChat", Some("LeftChat")),
            ]
            .into_iter()
            .filter(|e| config.filter().matches(e))
            .map(|e| Arc::new(Record::from_event(e)))
            .collect();
            sink.deliver(&events).await.expect("delivered");
            sink.close().await.expect("closed");
        });
        let text = capture.text();
        let events: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("chatwatch::event"))
            .collect();
        assert_eq!(events.len(), 1, "{text}");
        assert!(events[0].contains("chat LeftChat (was Chatting)"), "{text}");
        assert!(events[0].contains("sink=left"), "{text}");
    }
}
