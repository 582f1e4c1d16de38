//! The `nats` sink: every event published to a NATS JetStream stream, exactly once inside the
//! stream's duplicate window, in journal order per subject.
//!
//! This module owns the sink's configuration ([`NatsSinkConfig`], with the subject template),
//! the single publish ([`service`]: subject, headers, body), the delivery engine ([`NatsSink`],
//! a [`Deliver`](crate::sinks::deliver::Deliver) driven by the journal runner: pipelining,
//! PubAck accounting, retries, connection state and readiness) and the sink's dead letters
//! ([`deadletter_redrive`]; `chatwatch deadletter list` reads them like the webhook's).
//!
//! ## One message per event
//! Subject: the `subject` template rendered for the event. Headers: `Nats-Msg-Id` = the
//! event's `event_id` (the same on every retry, after a restart and on a redrive, so the
//! stream's duplicate window drops re-publishes), `Nats-Expected-Stream` = `stream` (an event
//! captured by another stream is refused), and `Chatwatch-Schema`, `Chatwatch-Account`,
//! `Chatwatch-Kind`, `Chatwatch-State` (when the event has a chat state). Body: the event
//! record as the journal holds it (the pipeline's `serde_json::to_vec(&event)`), byte for byte
//! what the file and webhook sinks write; the headers and the subject are the only reason this
//! sink decodes the event.
//!
//! ## Delivery
//! - The journal cursor advances only when every event of the batch has its PubAck (or is
//!   dead-lettered). A PubAck with `duplicate: true` (already in the stream) counts as
//!   delivered and is counted in `chatwatch_nats_duplicates_total`.
//! - Up to `max_in_flight` publishes await their PubAck at once. Any failure (a timed-out
//!   PubAck, which is ambiguous; a lost connection; no stream for the subject) stops the
//!   pipeline; after a backoff the sink re-publishes from the first unacknowledged event, in
//!   order, with the same ids: the server drops what it already has, and order per subject is
//!   the journal's.
//! - NATS unreachable (at start too): the process runs on, the client reconnects for ever
//!   (backoff up to 2 s), events wait in the journal, and `/readyz` says `sink NAME: ...`.
//! - No stream captures the subject, wrong credentials, TLS refused: one ERROR line when the
//!   cause starts (and when it ends), `chatwatch_nats_failures_total{cause}`, readiness false;
//!   the sink keeps retrying, nothing is lost.
//! - An event over the server's `max_payload`: dead-lettered to
//!   `<dead_letter_dir>/<sink>.jsonl` (on disk before the cursor moves); `chatwatch deadletter
//!   redrive` publishes it again with the same `Nats-Msg-Id` once the server allows it.
//!
//! ## Durability
//! A PubAck from a single-replica server with default settings means "in the server's memory":
//! nats-server syncs its files every two minutes (Jepsen's NATS 2.12.1 analysis, 2025;
//! nats-server#7564). Run R3 streams, or `jetstream { sync_interval: always }`, when
//! acknowledged events must survive a power loss. chatwatch keeps every event in its journal
//! until the PubAck.
//!
//! ## Metrics (label `sink`)
//! - `chatwatch_nats_published_total`: events stored (PubAck, not duplicate).
//! - `chatwatch_nats_duplicates_total`: PubAcks with `duplicate: true`.
//! - `chatwatch_nats_retries_total`: events published again after a failure.
//! - `chatwatch_nats_failures_total{cause}`: `timeout`, `disconnected`, `stream_not_found`,
//!   `wrong_stream`, `max_payload`, `auth`, `connect`, `other`.
//! - `chatwatch_nats_puback_seconds`: histogram, publish to PubAck.
//! - `chatwatch_nats_connected`: 1 while connected.
//! - `chatwatch_sink_delivered_events_total` and `chatwatch_sink_dead_letters_total`, as for
//!   every sink.

mod config;
mod deadletter;
pub mod service;
mod sink;
#[cfg(test)]
mod tests;

pub use config::{
    safe_token, NatsAuth, NatsSecret, NatsSinkConfig, NatsStorage, SubjectTemplate,
    DEFAULT_DUPLICATE_WINDOW, DEFAULT_MAX_IN_FLIGHT, DEFAULT_SUBJECT, DEFAULT_TIMEOUT,
    MAX_IN_FLIGHT,
};
pub use deadletter::{deadletter_redrive, NatsRedriveReport};
pub use sink::NatsSink;

// The metric names, defined with their HELP text in the catalogue.
pub use crate::metrics::{
    NATS_CONNECTED as CONNECTED, NATS_DUPLICATES as DUPLICATES, NATS_FAILURES as FAILURES,
    NATS_PUBACK_SECONDS as PUBACK_SECONDS, NATS_PUBLISHED as PUBLISHED, NATS_RETRIES as RETRIES,
};
