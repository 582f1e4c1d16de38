//! The metric catalogue: every `chatwatch_*` metric the daemon exports, by name, with its kind,
//! unit and HELP text, in one place.
//!
//! Code that records a metric imports its name from here (`metrics::counter!(SINK_RESTARTS, …)`);
//! [`describe_all`] registers every HELP text with the installed recorder, once, when the admin
//! listener installs the Prometheus recorder, so every family on `/metrics` carries a `# HELP`
//! line. A test scans `src/` for `"chatwatch_…"` literals and fails on a name that is not listed
//! here, so a new metric cannot ship without its description.
//!
//! Labels are part of each description; the README's metrics table says what each one means.

use ::metrics::Unit;

/// What kind of metric a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Samples in buckets.
    Histogram,
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// The exported name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The unit, where there is one.
    pub unit: Option<Unit>,
    /// The HELP text.
    pub help: &'static str,
}

/// `chatwatch_build_info` (gauge): Always 1; the labels (version, rustc) say which chatwatch this is.
pub const BUILD_INFO: &str = "chatwatch_build_info";
/// `chatwatch_ready` (gauge): 1 when every account is subscribed and the journal is writable (as /readyz).
pub const READY: &str = "chatwatch_ready";
/// `chatwatch_config_reloads_total` (counter): Configuration reloads (SIGHUP) by result (ok, failed).
pub const CONFIG_RELOADS: &str = "chatwatch_config_reloads_total";
/// `chatwatch_session_state` (gauge): 1 for the current Bayeux session state of each account, 0 for the others.
pub const SESSION_STATE: &str = "chatwatch_session_state";
/// `chatwatch_session_subscribed` (gauge): 1 while the account is connected and subscribed to every channel.
pub const SESSION_SUBSCRIBED: &str = "chatwatch_session_subscribed";
/// `chatwatch_bayeux_handshakes_total` (counter): Handshakes by account and result (ok, failed).
pub const BAYEUX_HANDSHAKES: &str = "chatwatch_bayeux_handshakes_total";
/// `chatwatch_bayeux_rehandshakes_total` (counter): Sessions lost and handshaken again, by account and cause.
pub const BAYEUX_REHANDSHAKES: &str = "chatwatch_bayeux_rehandshakes_total";
/// `chatwatch_bayeux_connect_seconds` (histogram): Round trip of /meta/connect requests (held by the server up to its timeout).
pub const BAYEUX_CONNECT_SECONDS: &str = "chatwatch_bayeux_connect_seconds";
/// `chatwatch_bayeux_connect_failures_total` (counter): /meta/connect requests that failed, by account.
pub const BAYEUX_CONNECT_FAILURES: &str = "chatwatch_bayeux_connect_failures_total";
/// `chatwatch_bayeux_subscribe_failures_total` (counter): Subscribe requests the server refused or that failed, by account.
pub const BAYEUX_SUBSCRIBE_FAILURES: &str = "chatwatch_bayeux_subscribe_failures_total";
/// `chatwatch_bayeux_resubscribes_total` (counter): Rounds of subscriptions applied again after a re-handshake, by account.
pub const BAYEUX_RESUBSCRIBES: &str = "chatwatch_bayeux_resubscribes_total";
/// `chatwatch_bayeux_deliveries_total` (counter): Messages received on subscribed channels, by account.
pub const BAYEUX_DELIVERIES: &str = "chatwatch_bayeux_deliveries_total";
/// `chatwatch_bayeux_unroutable_total` (counter): Deliveries dropped because they arrived on a channel with no subscription, by account.
pub const BAYEUX_UNROUTABLE: &str = "chatwatch_bayeux_unroutable_total";
/// `chatwatch_bayeux_invalid_responses_total` (counter): Server responses that were not valid Bayeux, by account.
pub const BAYEUX_INVALID_RESPONSES: &str = "chatwatch_bayeux_invalid_responses_total";
/// `chatwatch_bayeux_terminations_total` (counter): Sessions the server refused for good (reconnect none), by account.
pub const BAYEUX_TERMINATIONS: &str = "chatwatch_bayeux_terminations_total";
/// `chatwatch_bayeux_duplicates_dropped_total` (counter): Redelivered messages dropped (ack extension), by account.
pub const BAYEUX_DUPLICATES_DROPPED: &str = "chatwatch_bayeux_duplicates_dropped_total";
/// `chatwatch_bayeux_transport` (gauge): 1 for the transport each account uses (websocket, long-polling), 0 for the other.
pub const BAYEUX_TRANSPORT: &str = "chatwatch_bayeux_transport";
/// `chatwatch_bayeux_transport_fallbacks_total` (counter): Falls back from WebSocket to long-polling, by account.
pub const BAYEUX_TRANSPORT_FALLBACKS: &str = "chatwatch_bayeux_transport_fallbacks_total";
/// `chatwatch_gws_login_failures_total` (counter): GWS logins that failed (wrong password, GWS down), by account.
pub const GWS_LOGIN_FAILURES: &str = "chatwatch_gws_login_failures_total";
/// `chatwatch_gws_recovery_failures_total` (counter): State recoveries (GET /api/v2/me?subresources=*) that failed, by account.
pub const GWS_RECOVERY_FAILURES: &str = "chatwatch_gws_recovery_failures_total";
/// `chatwatch_events_total` (counter): Events made, by account, kind, message type and chat state.
pub const EVENTS: &str = "chatwatch_events_total";
/// `chatwatch_recovered_events_total` (counter): Events made from a state recovery rather than a notification, by account.
pub const RECOVERED_EVENTS: &str = "chatwatch_recovered_events_total";
/// `chatwatch_decode_errors_total` (counter): Notifications whose payload could not be read as its message type (kept raw).
pub const DECODE_ERRORS: &str = "chatwatch_decode_errors_total";
/// `chatwatch_dropped_events_total` (counter): Events lost before the journal, by account and cause.
pub const DROPPED_EVENTS: &str = "chatwatch_dropped_events_total";
/// `chatwatch_chats_pending_disposition` (gauge): Chats in LeftChat waiting for a disposition and Complete, by account.
pub const PENDING_DISPOSITION: &str = "chatwatch_chats_pending_disposition";
/// `chatwatch_pending_disposition_oldest_seconds` (gauge): Age of the oldest chat pending disposition, by account (0 when none).
pub const PENDING_OLDEST_SECONDS: &str = "chatwatch_pending_disposition_oldest_seconds";
/// `chatwatch_rule_actions_total` (counter): Attempts of rule operations by rule, operation and outcome.
pub const RULE_ACTIONS: &str = "chatwatch_rule_actions_total";
/// `chatwatch_rule_runs_total` (counter): Rule runs by rule and result (scheduled, done, failed, cancelled).
pub const RULE_RUNS: &str = "chatwatch_rule_runs_total";
/// `chatwatch_workflow_state_errors_total` (counter): Workflow state files that could not be read, parsed or written, by account and step.
pub const WORKFLOW_STATE_ERRORS: &str = "chatwatch_workflow_state_errors_total";
/// `chatwatch_tracker_evictions_total` (counter): Chats forgotten by the tracker's size bound (max_chats).
pub const TRACKER_EVICTIONS: &str = "chatwatch_tracker_evictions_total";
/// `chatwatch_journal_appended_total` (counter): Records appended to the journal.
pub const JOURNAL_APPENDED: &str = "chatwatch_journal_appended_total";
/// `chatwatch_journal_bytes` (gauge): Total size of the journal's segment files in bytes.
pub const JOURNAL_BYTES: &str = "chatwatch_journal_bytes";
/// `chatwatch_journal_full_total` (counter): Appends that found the journal full (max_bytes) after garbage collection.
pub const JOURNAL_FULL: &str = "chatwatch_journal_full_total";
/// `chatwatch_journal_dropped_total` (counter): Records lost to the journal's size bound (cause: full, oldest_deleted).
pub const JOURNAL_DROPPED: &str = "chatwatch_journal_dropped_total";
/// `chatwatch_journal_truncated_bytes_total` (counter): Bytes of torn segment tails truncated by journal recovery.
pub const JOURNAL_TRUNCATED_BYTES: &str = "chatwatch_journal_truncated_bytes_total";
/// `chatwatch_journal_corrupt_records_total` (counter): Records lost to corruption in the middle of the journal, found by recovery.
pub const JOURNAL_CORRUPT_RECORDS: &str = "chatwatch_journal_corrupt_records_total";
/// `chatwatch_journal_repairs_total` (counter): Damaged or implausible journal files repaired by recovery, by cause.
pub const JOURNAL_REPAIRS: &str = "chatwatch_journal_repairs_total";
/// `chatwatch_journal_head_seq` (gauge): Sequence number of the last durable journal record.
pub const JOURNAL_HEAD_SEQ: &str = "chatwatch_journal_head_seq";
/// `chatwatch_journal_first_seq` (gauge): Sequence number of the oldest record still in the journal.
pub const JOURNAL_FIRST_SEQ: &str = "chatwatch_journal_first_seq";
/// `chatwatch_journal_segments` (gauge): Segment files of the journal.
pub const JOURNAL_SEGMENTS: &str = "chatwatch_journal_segments";
/// `chatwatch_sink_backlog_events` (gauge): Journal records a sink has yet to deliver.
pub const SINK_BACKLOG_EVENTS: &str = "chatwatch_sink_backlog_events";
/// `chatwatch_sink_delivered_events_total` (counter): Events a sink has delivered.
pub const SINK_DELIVERED_EVENTS: &str = "chatwatch_sink_delivered_events_total";
/// `chatwatch_sink_failed_writes_total` (counter): Failed write, sync, reopen or encode attempts of a sink, by cause (retried; counts attempts).
pub const SINK_FAILED_WRITES: &str = "chatwatch_sink_failed_writes_total";
/// `chatwatch_sink_restarts_total` (counter): Times a sink was rebuilt after it failed.
pub const SINK_RESTARTS: &str = "chatwatch_sink_restarts_total";
/// `chatwatch_sink_lost_events_total` (counter): Events a sink never received because the journal deleted them first, by cause.
pub const SINK_LOST_EVENTS: &str = "chatwatch_sink_lost_events_total";
/// `chatwatch_sink_unreadable_records_total` (counter): Journal records a sink skipped because they could not be decoded.
pub const SINK_UNREADABLE_RECORDS: &str = "chatwatch_sink_unreadable_records_total";
/// `chatwatch_sink_dead_letters_total` (counter): Events written to a sink's dead-letter file.
pub const SINK_DEAD_LETTERS: &str = "chatwatch_sink_dead_letters_total";
/// `chatwatch_webhook_attempts_total` (counter): Webhook attempts by sink and result (ok, retry, dead_letter, disabled).
pub const WEBHOOK_ATTEMPTS: &str = "chatwatch_webhook_attempts_total";
/// `chatwatch_webhook_retries_total` (counter): Webhook attempts that were retries.
pub const WEBHOOK_RETRIES: &str = "chatwatch_webhook_retries_total";
/// `chatwatch_webhook_request_seconds` (histogram): Duration of one webhook attempt.
pub const WEBHOOK_REQUEST_SECONDS: &str = "chatwatch_webhook_request_seconds";
/// `chatwatch_webhook_endpoint_disabled` (gauge): 1 while the webhook endpoint is disabled after a 410 Gone.
pub const WEBHOOK_ENDPOINT_DISABLED: &str = "chatwatch_webhook_endpoint_disabled";

/// `chatwatch_nats_published_total` (counter): Events stored in the JetStream stream (PubAck).
pub const NATS_PUBLISHED: &str = "chatwatch_nats_published_total";
/// `chatwatch_nats_duplicates_total` (counter): PubAcks with duplicate=true (already in the stream; counted as delivered).
pub const NATS_DUPLICATES: &str = "chatwatch_nats_duplicates_total";
/// `chatwatch_nats_retries_total` (counter): Events published again after a failure.
pub const NATS_RETRIES: &str = "chatwatch_nats_retries_total";
/// `chatwatch_nats_failures_total` (counter): Failed NATS publishes or connection attempts, by cause.
pub const NATS_FAILURES: &str = "chatwatch_nats_failures_total";
/// `chatwatch_nats_puback_seconds` (histogram): Latency from publishing an event to its PubAck.
pub const NATS_PUBACK_SECONDS: &str = "chatwatch_nats_puback_seconds";
/// `chatwatch_nats_connected` (gauge): 1 while the NATS sink is connected to a server.
pub const NATS_CONNECTED: &str = "chatwatch_nats_connected";
/// `chatwatch_control_requests_total` (counter): Requests on the control socket (chatwatch reload), by result (ok, failed, refused, bad_request).
pub const CONTROL_REQUESTS: &str = "chatwatch_control_requests_total";
/// `chatwatch_api_requests_total` (counter): Operations API requests, by route and HTTP status.
pub const API_REQUESTS: &str = "chatwatch_api_requests_total";
/// `chatwatch_api_request_failures_total` (counter): Operations API requests that failed, by reason (the problem name: missing-token, wrong-token, validation, gws-conflict, ...).
pub const API_REQUEST_FAILURES: &str = "chatwatch_api_request_failures_total";

/// Every metric chatwatch exports.
pub const CATALOGUE: &[Metric] = &[
    Metric {
        name: BUILD_INFO,
        kind: Kind::Gauge,
        unit: None,
        help: "Always 1; the labels (version, rustc) say which chatwatch this is.",
    },
    Metric {
        name: READY,
        kind: Kind::Gauge,
        unit: None,
        help: "1 when every account is subscribed and the journal is writable (as /readyz).",
    },
    Metric {
        name: CONFIG_RELOADS,
        kind: Kind::Counter,
        unit: None,
        help: "Configuration reloads (SIGHUP) by result (ok, failed).",
    },
    Metric {
        name: SESSION_STATE,
        kind: Kind::Gauge,
        unit: None,
        help: "1 for the current Bayeux session state of each account, 0 for the others.",
    },
    Metric {
        name: SESSION_SUBSCRIBED,
        kind: Kind::Gauge,
        unit: None,
        help: "1 while the account is connected and subscribed to every channel.",
    },
    Metric {
        name: BAYEUX_HANDSHAKES,
        kind: Kind::Counter,
        unit: None,
        help: "Handshakes by account and result (ok, failed).",
    },
    Metric {
        name: BAYEUX_REHANDSHAKES,
        kind: Kind::Counter,
        unit: None,
        help: "Sessions lost and handshaken again, by account and cause.",
    },
    Metric {
        name: BAYEUX_CONNECT_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Round trip of /meta/connect requests (held by the server up to its timeout).",
    },
    Metric {
        name: BAYEUX_CONNECT_FAILURES,
        kind: Kind::Counter,
        unit: None,
        help: "/meta/connect requests that failed, by account.",
    },
    Metric {
        name: BAYEUX_SUBSCRIBE_FAILURES,
        kind: Kind::Counter,
        unit: None,
        help: "Subscribe requests the server refused or that failed, by account.",
    },
    Metric {
        name: BAYEUX_RESUBSCRIBES,
        kind: Kind::Counter,
        unit: None,
        help: "Rounds of subscriptions applied again after a re-handshake, by account.",
    },
    Metric {
        name: BAYEUX_DELIVERIES,
        kind: Kind::Counter,
        unit: None,
        help: "Messages received on subscribed channels, by account.",
    },
    Metric {
        name: BAYEUX_UNROUTABLE,
        kind: Kind::Counter,
        unit: None,
        help: "Deliveries dropped because they arrived on a channel with no subscription, by account.",
    },
    Metric {
        name: BAYEUX_INVALID_RESPONSES,
        kind: Kind::Counter,
        unit: None,
        help: "Server responses that were not valid Bayeux, by account.",
    },
    Metric {
        name: BAYEUX_TERMINATIONS,
        kind: Kind::Counter,
        unit: None,
        help: "Sessions the server refused for good (reconnect none), by account.",
    },
    Metric {
        name: BAYEUX_DUPLICATES_DROPPED,
        kind: Kind::Counter,
        unit: None,
        help: "Redelivered messages dropped (ack extension), by account.",
    },
    Metric {
        name: BAYEUX_TRANSPORT,
        kind: Kind::Gauge,
        unit: None,
        help: "1 for the transport each account uses (websocket, long-polling), 0 for the other.",
    },
    Metric {
        name: BAYEUX_TRANSPORT_FALLBACKS,
        kind: Kind::Counter,
        unit: None,
        help: "Falls back from WebSocket to long-polling, by account.",
    },
    Metric {
        name: GWS_LOGIN_FAILURES,
        kind: Kind::Counter,
        unit: None,
        help: "GWS logins that failed (wrong password, GWS down), by account.",
    },
    Metric {
        name: GWS_RECOVERY_FAILURES,
        kind: Kind::Counter,
        unit: None,
        help: "State recoveries (GET /api/v2/me?subresources=*) that failed, by account.",
    },
    Metric {
        name: EVENTS,
        kind: Kind::Counter,
        unit: None,
        help: "Events made, by account, kind, message type and chat state.",
    },
    Metric {
        name: RECOVERED_EVENTS,
        kind: Kind::Counter,
        unit: None,
        help: "Events made from a state recovery rather than a notification, by account.",
    },
    Metric {
        name: DECODE_ERRORS,
        kind: Kind::Counter,
        unit: None,
        help: "Notifications whose payload could not be read as its message type (kept raw).",
    },
    Metric {
        name: DROPPED_EVENTS,
        kind: Kind::Counter,
        unit: None,
        help: "Events lost before the journal, by account and cause.",
    },
    Metric {
        name: PENDING_DISPOSITION,
        kind: Kind::Gauge,
        unit: None,
        help: "Chats in LeftChat waiting for a disposition and Complete, by account.",
    },
    Metric {
        name: PENDING_OLDEST_SECONDS,
        kind: Kind::Gauge,
        unit: Some(Unit::Seconds),
        help: "Age of the oldest chat pending disposition, by account (0 when none).",
    },
    Metric {
        name: RULE_ACTIONS,
        kind: Kind::Counter,
        unit: None,
        help: "Attempts of rule operations by rule, operation and outcome (accepted, rejected, unavailable, failed, invalid, dry_run).",
    },
    Metric {
        name: RULE_RUNS,
        kind: Kind::Counter,
        unit: None,
        help: "Rule runs by rule and result (scheduled, done, failed, cancelled).",
    },
    Metric {
        name: WORKFLOW_STATE_ERRORS,
        kind: Kind::Counter,
        unit: None,
        help: "Workflow state files that could not be read, parsed or written, by account and step.",
    },
    Metric {
        name: TRACKER_EVICTIONS,
        kind: Kind::Counter,
        unit: None,
        help: "Chats forgotten by the tracker's size bound (max_chats).",
    },
    Metric {
        name: JOURNAL_APPENDED,
        kind: Kind::Counter,
        unit: None,
        help: "Records appended to the journal.",
    },
    Metric {
        name: JOURNAL_BYTES,
        kind: Kind::Gauge,
        unit: Some(Unit::Bytes),
        help: "Total size of the journal's segment files in bytes.",
    },
    Metric {
        name: JOURNAL_FULL,
        kind: Kind::Counter,
        unit: None,
        help: "Appends that found the journal full (max_bytes) after garbage collection.",
    },
    Metric {
        name: JOURNAL_DROPPED,
        kind: Kind::Counter,
        unit: None,
        help: "Records lost to the journal's size bound (cause: full, oldest_deleted).",
    },
    Metric {
        name: JOURNAL_TRUNCATED_BYTES,
        kind: Kind::Counter,
        unit: Some(Unit::Bytes),
        help: "Bytes of torn segment tails truncated by journal recovery.",
    },
    Metric {
        name: JOURNAL_CORRUPT_RECORDS,
        kind: Kind::Counter,
        unit: None,
        help: "Records lost to corruption in the middle of the journal, found by recovery.",
    },
    Metric {
        name: JOURNAL_REPAIRS,
        kind: Kind::Counter,
        unit: None,
        help: "Damaged or implausible journal files repaired by recovery (cause: cursor_ahead, cursor_out_of_range, segment_out_of_range).",
    },
    Metric {
        name: JOURNAL_HEAD_SEQ,
        kind: Kind::Gauge,
        unit: None,
        help: "Sequence number of the last durable journal record.",
    },
    Metric {
        name: JOURNAL_FIRST_SEQ,
        kind: Kind::Gauge,
        unit: None,
        help: "Sequence number of the oldest record still in the journal.",
    },
    Metric {
        name: JOURNAL_SEGMENTS,
        kind: Kind::Gauge,
        unit: None,
        help: "Segment files of the journal.",
    },
    Metric {
        name: SINK_BACKLOG_EVENTS,
        kind: Kind::Gauge,
        unit: None,
        help: "Journal records a sink has yet to deliver.",
    },
    Metric {
        name: SINK_DELIVERED_EVENTS,
        kind: Kind::Counter,
        unit: None,
        help: "Events a sink has delivered.",
    },
    Metric {
        name: SINK_FAILED_WRITES,
        kind: Kind::Counter,
        unit: None,
        help: "Failed write, sync, reopen or encode attempts of a sink, by cause (retried; counts attempts).",
    },
    Metric {
        name: SINK_RESTARTS,
        kind: Kind::Counter,
        unit: None,
        help: "Times a sink was rebuilt after it failed.",
    },
    Metric {
        name: SINK_LOST_EVENTS,
        kind: Kind::Counter,
        unit: None,
        help: "Events a sink never received because the journal deleted them first, by cause.",
    },
    Metric {
        name: SINK_UNREADABLE_RECORDS,
        kind: Kind::Counter,
        unit: None,
        help: "Journal records a sink skipped because they could not be decoded.",
    },
    Metric {
        name: SINK_DEAD_LETTERS,
        kind: Kind::Counter,
        unit: None,
        help: "Events written to a sink's dead-letter file.",
    },
    Metric {
        name: WEBHOOK_ATTEMPTS,
        kind: Kind::Counter,
        unit: None,
        help: "Webhook attempts by sink and result (ok, retry, dead_letter, disabled).",
    },
    Metric {
        name: WEBHOOK_RETRIES,
        kind: Kind::Counter,
        unit: None,
        help: "Webhook attempts that were retries.",
    },
    Metric {
        name: WEBHOOK_REQUEST_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Duration of one webhook attempt.",
    },
    Metric {
        name: WEBHOOK_ENDPOINT_DISABLED,
        kind: Kind::Gauge,
        unit: None,
        help: "1 while the webhook endpoint is disabled after a 410 Gone.",
    },
    Metric {
        name: NATS_PUBLISHED,
        kind: Kind::Counter,
        unit: None,
        help: "Events stored in the JetStream stream (PubAck).",
    },
    Metric {
        name: NATS_DUPLICATES,
        kind: Kind::Counter,
        unit: None,
        help: "PubAcks with duplicate=true (already in the stream; counted as delivered).",
    },
    Metric {
        name: NATS_RETRIES,
        kind: Kind::Counter,
        unit: None,
        help: "Events published again after a failure.",
    },
    Metric {
        name: NATS_FAILURES,
        kind: Kind::Counter,
        unit: None,
        help: "Failed NATS publishes or connection attempts, by cause.",
    },
    Metric {
        name: NATS_PUBACK_SECONDS,
        kind: Kind::Histogram,
        unit: Some(Unit::Seconds),
        help: "Latency from publishing an event to its PubAck.",
    },
    Metric {
        name: NATS_CONNECTED,
        kind: Kind::Gauge,
        unit: None,
        help: "1 while the NATS sink is connected to a server.",
    },
    Metric {
        name: CONTROL_REQUESTS,
        kind: Kind::Counter,
        unit: None,
        help: "Requests on the control socket (chatwatch reload), by result (ok, failed, refused, bad_request).",
    },
    Metric {
        name: API_REQUESTS,
        kind: Kind::Counter,
        unit: None,
        help: "Operations API requests, by route and HTTP status.",
    },
    Metric {
        name: API_REQUEST_FAILURES,
        kind: Kind::Counter,
        unit: None,
        help: "Operations API requests that failed, by reason (the problem name: missing-token, wrong-token, validation, gws-conflict, ...).",
    },
];

/// The catalogue entry of `name`.
pub fn find(name: &str) -> Option<&'static Metric> {
    CATALOGUE.iter().find(|m| m.name == name)
}

/// Registers the HELP text (and unit) of every metric with the current recorder. Called once,
/// when the admin listener installs the Prometheus recorder.
pub fn describe_all() {
    for m in CATALOGUE {
        match (m.kind, m.unit) {
            (Kind::Counter, Some(unit)) => ::metrics::describe_counter!(m.name, unit, m.help),
            (Kind::Counter, None) => ::metrics::describe_counter!(m.name, m.help),
            (Kind::Gauge, Some(unit)) => ::metrics::describe_gauge!(m.name, unit, m.help),
            (Kind::Gauge, None) => ::metrics::describe_gauge!(m.name, m.help),
            (Kind::Histogram, Some(unit)) => ::metrics::describe_histogram!(m.name, unit, m.help),
            (Kind::Histogram, None) => ::metrics::describe_histogram!(m.name, m.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    #[test]
    fn names_are_unique_prefixed_and_described() {
        let mut seen = BTreeSet::new();
        for m in CATALOGUE {
            assert!(seen.insert(m.name), "{} is listed twice", m.name);
            assert!(m.name.starts_with("chatwatch_"), "{}", m.name);
            assert!(!m.help.trim().is_empty(), "{} has no HELP text", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
        }
    }

    /// Every family a Prometheus recorder renders after [`describe_all`] has a `# HELP` line.
    #[test]
    fn every_rendered_family_has_help() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        ::metrics::with_local_recorder(&recorder, || {
            describe_all();
            for m in CATALOGUE {
                match m.kind {
                    Kind::Counter => ::metrics::counter!(m.name, "sink" => "x").increment(1),
                    Kind::Gauge => ::metrics::gauge!(m.name, "sink" => "x").set(1.0),
                    Kind::Histogram => ::metrics::histogram!(m.name, "sink" => "x").record(0.5),
                }
            }
        });
        let text = handle.render();
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .expect("Prometheus text");
        let families: BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(families.len(), CATALOGUE.len(), "{text}");
        for family in families {
            let help = scrape.docs.get(family).map(String::as_str);
            assert_eq!(
                help,
                find(family).map(|m| m.help),
                "{family} has no or the wrong # HELP:\n{text}"
            );
        }
    }

    /// Scans `src/` for metric-name literals: each must be in the catalogue (so it has HELP).
    #[test]
    fn every_metric_name_in_the_source_is_catalogued() {
        fn walk(dir: &Path, found: &mut BTreeSet<(String, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, found);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for (i, _) in text.match_indices("\"chatwatch_") {
                        let rest = &text[i + 1..];
                        let end = rest
                            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                            .unwrap_or(rest.len());
                        if end > "chatwatch_".len() && rest[end..].starts_with('"') {
                            found.insert((rest[..end].to_owned(), path.display().to_string()));
                        }
                    }
                }
            }
        }
        let mut found = BTreeSet::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        assert!(found.len() >= CATALOGUE.len(), "the scan found {found:?}");
        let missing: Vec<_> = found.iter().filter(|(n, _)| find(n).is_none()).collect();
        assert!(
            missing.is_empty(),
            "metric names without a catalogue entry (add them to src/metrics.rs): {missing:?}"
        );
    }
}
