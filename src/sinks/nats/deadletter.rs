//! Dead letters of the `nats` sink: events the server can never take (larger than its
//! `max_payload`), kept in `<dir>/<sink>.jsonl` in the webhook sink's format
//! ([`DeadLetter`]), so `chatwatch deadletter list` shows both alike, and
//! [`deadletter_redrive`] publishes them again with the same `Nats-Msg-Id`.
//!
//! An append is `write` + `fdatasync` (and a directory fsync when the file is new) under an
//! exclusive `flock` on `<sink>.jsonl.lock`, before the sink reports the batch delivered. A
//! redrive holds the same lock from reading the file to replacing it (temporary file, fsync,
//! rename, directory fsync), so the running sink's appends wait for it and none is lost; dead
//! letters are rare (oversize events), so that wait is short and seldom.

use std::io;
use std::path::Path;
use std::time::Duration;

use async_nats::connection::State;
use time::OffsetDateTime;

use crate::event::Event;
use crate::sinks::record::Record;
use crate::sinks::webhook::{dead_letter_path, DeadLetter};
use crate::sinks::SinkError;

use super::config::NatsSinkConfig;
use super::service;

/// A dead letter for `record`, given up by `sink` now for `reason`.
pub(crate) fn letter(sink: &str, record: &Record, reason: String) -> DeadLetter {
    DeadLetter {
        sink: sink.to_owned(),
        event_id: record.id_or_empty().to_owned(),
        failed_at: OffsetDateTime::now_utc(),
        status: None,
        reason,
        body_start: String::new(),
        attempts: 1,
        event: crate::sinks::webhook::record_value(record),
    }
}

// The dead-letter file is the webhook sink's format and code: lock, append, check.
pub(crate) use crate::sinks::webhook::{append, check_writable};
use crate::sinks::webhook::{ensure_dir, lock};

/// What a NATS redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsRedriveReport {
    /// Dead letters published again.
    pub attempted: usize,
    /// Of those, acknowledged (stored, or already in the stream) and removed from the file.
    pub delivered: usize,
    /// Of the delivered, PubAcks with `duplicate: true`.
    pub duplicates: usize,
    /// Those that failed again (event id, reason), kept in the file.
    pub failed: Vec<(String, String)>,
    /// Lines that do not parse, left untouched.
    pub unparseable: usize,
    /// Dead letters left in the file.
    pub remaining: usize,
}

fn failed(sink: &str, reason: String) -> SinkError {
    SinkError::Failed {
        sink: sink.to_owned(),
        reason,
    }
}

/// Publishes every dead letter of the NATS sink `sink` (in `dir`) again, in file order, to the
/// server and stream `cfg` names, with the same `Nats-Msg-Id`, headers and body as the sink
/// would send. Acknowledged ones are removed from the file; failed ones stay with the new
/// reason. Fails when no server answers within twice `cfg.timeout`.
pub async fn deadletter_redrive(
    dir: &Path,
    sink: &str,
    cfg: &NatsSinkConfig,
) -> Result<NatsRedriveReport, SinkError> {
    if sink.is_empty() || sink.contains(['/', '\\', '\0']) || sink == "." || sink == ".." {
        return Err(failed(sink, "not a valid sink name".to_owned()));
    }
    let mut cfg = cfg.clone();
    cfg.dead_letter_dir = Some(dir.to_owned());
    let resolved = cfg.resolve(sink)?;
    let client = service::connect(sink, &cfg, &resolved, std::sync::Arc::new(|_| {})).await?;
    let deadline = tokio::time::Instant::now() + cfg.timeout * 2;
    while client.connection_state() != State::Connected {
        if tokio::time::Instant::now() >= deadline {
            return Err(failed(
                sink,
                format!("cannot connect to NATS ({})", cfg.url.join(",")),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let js = service::jetstream(client.clone(), cfg.timeout, 1);
    let template = cfg.subject_template().map_err(|e| e.in_sink(sink))?;
    let io_err = |e: io::Error| failed(sink, format!("dead letters in {}: {e}", dir.display()));
    ensure_dir(dir).map_err(io_err)?;
    let _lock = lock(dir, sink).map_err(io_err)?;
    let path = dead_letter_path(dir, sink);
    let content = match std::fs::read(&path) {
        Ok(c) => String::from_utf8_lossy(&c).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(e)),
    };
    let mut report = NatsRedriveReport::default();
    let mut keep = Vec::new();
    for line in content.split('\n').filter(|l| !l.trim().is_empty()) {
        let Ok(mut letter) = serde_json::from_str::<DeadLetter>(line) else {
            report.unparseable += 1;
            keep.push(line.to_owned());
            continue;
        };
        report.attempted += 1;
        let outcome = match serde_json::from_value::<Event>(letter.event.clone()) {
            Ok(event) => {
                let published = service::publish(
                    &js,
                    template.render(&event),
                    service::headers(&event, &cfg.stream),
                    service::body(&event),
                )
                .await;
                match published {
                    Ok(ack) => ack.await.map_err(|e| service::describe(&e)),
                    Err(e) => Err(service::describe(&e)),
                }
            }
            Err(e) => Err(format!("the stored event is not a valid event: {e}")),
        };
        match outcome {
            Ok(ack) => {
                report.delivered += 1;
                if ack.duplicate {
                    report.duplicates += 1;
                }
            }
            Err(reason) => {
                report
                    .failed
                    .push((letter.event_id.clone(), reason.clone()));
                letter.failed_at = OffsetDateTime::now_utc();
                letter.reason = reason;
                letter.attempts = letter.attempts.saturating_add(1);
                keep.push(
                    serde_json::to_string(&letter)
                        .map_err(|e| failed(sink, format!("encoding a dead letter: {e}")))?,
                );
            }
        }
    }
    if report.attempted > 0 {
        let mut text = String::new();
        for line in &keep {
            text.push_str(line);
            text.push('\n');
        }
        let tmp = dir.join(format!("{sink}.jsonl.tmp"));
        crate::fs::replace_file(&path, &tmp, text.as_bytes()).map_err(|e| io_err(e.source))?;
    }
    report.remaining = keep.len();
    tracing::info!(
        target: super::sink::TARGET,
        sink,
        attempted = report.attempted,
        delivered = report.delivered,
        failed = report.failed.len(),
        remaining = report.remaining,
        "dead-letter redrive finished"
    );
    Ok(report)
}
