//! The `webhook` sink: every event POSTed as JSON to one URL, signed per Standard Webhooks,
//! retried with backoff, and dead-lettered when it cannot be delivered.
//!
//! This module owns the sink's configuration ([`WebhookSinkConfig`], `config.rs`), one signed
//! attempt (`service.rs`: build the request, sign, send once, classify), the running sink
//! ([`WebhookSink`], `sink.rs`: the retry engine, a [`Deliver`](crate::sinks::deliver::Deliver)
//! driven by the journal runner), the signatures ([`sign`]), the retry policy ([`retry`], pure)
//! and the dead-letter files (`deadletter.rs`: [`deadletter_list`], [`deadletter_redrive`],
//! which sends through the same attempt as the sink). Imports go one way: `sink` and
//! `deadletter` use `service`; `sink` hands dead letters to `deadletter`.
//!
//! ## One request per event (Standard Webhooks v1)
//! The body is the event record exactly as the journal holds it (the bytes the pipeline wrote
//! with `serde_json::to_vec(&event)`, posted as they are, not decoded and encoded again), with
//! `content-type: application/json`, and three headers:
//! - `webhook-id`: the event's `event_id`, the same on every retry, after restarts and on a
//!   redrive, so the receiver deduplicates on it (delivery is at least once);
//! - `webhook-timestamp`: Unix seconds of *this* attempt;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per
//!   configured secret, space-separated (key rotation).
//!
//! plus the configured `headers` and `auth`. Redirects are never followed.
//!
//! ## What a response means
//! | outcome | what the sink does |
//! | --- | --- |
//! | 2xx | delivered |
//! | connect error, timeout, 408, 429, 5xx except 501 | retry after a full-jitter backoff, `random(0, min(retry_max_backoff, retry_initial · 2^n))`, never sooner than `Retry-After` (seconds or HTTP date) |
//! | `410 Gone` | the endpoint is **disabled**: logged at ERROR (then every 60 s while events keep coming), gauge `chatwatch_webhook_endpoint_disabled` = 1, the event and every later one dead-lettered with reason `endpoint disabled (410 Gone)`, so nothing is lost and the journal is not pinned. A restart re-enables it |
//! | 3xx, 501, any other 4xx | dead letter with the status and the first 512 bytes of the body (a redirect is a failure in Standard Webhooks, and following it would send signed events to a host nobody configured) |
//! | still failing `max_age` after the first attempt | dead letter with the last failure |
//!
//! ## Order and concurrency
//! `ordered = true` (default): one request in flight, in journal order; a failing event holds
//! the ones after it (head-of-line blocking). `ordered = false`: up to `concurrency` requests
//! in flight. Either way `deliver` returns once every event of the batch is delivered or
//! dead-lettered; a dead letter is on disk (write + fdatasync) before that. Dropping `deliver`
//! (shutdown, reload) loses nothing: the cursor has not moved and the batch comes again; the
//! sink remembers each pending event's first attempt and attempt count so `max_age` and the
//! backoff continue where they were.
//!
//! ## Metrics (label `sink`)
//! - `chatwatch_sink_delivered_events_total`: events delivered (2xx).
//! - `chatwatch_webhook_attempts_total{result}`: `ok` (2xx), `retry` (transient failure, retry
//!   scheduled), `dead_letter` (the attempt ended in a dead letter), `disabled` (events
//!   dead-lettered without an attempt because the endpoint is disabled).
//! - `chatwatch_webhook_retries_total`: attempts that were retries.
//! - `chatwatch_sink_dead_letters_total`: dead letters written.
//! - `chatwatch_webhook_request_seconds`: histogram of attempt durations.
//! - `chatwatch_webhook_endpoint_disabled`: 1 once a `410 Gone` has disabled the endpoint.

mod config;
mod deadletter;
pub mod retry;
mod service;
mod sign;
mod sink;

pub use config::{
    SecretSource, WebhookAuth, WebhookSinkConfig, DEFAULT_CONCURRENCY, DEFAULT_MAX_AGE,
    DEFAULT_RETRY_INITIAL, DEFAULT_RETRY_MAX_BACKOFF, DEFAULT_TIMEOUT, MAX_CONCURRENCY,
};
pub use deadletter::{
    dead_letter_path, deadletter_list, deadletter_redrive, DeadLetter, RedriveFailure,
    RedriveReport,
};
// The dead-letter file's primitives, shared with the NATS sink (one file format, one
// implementation).
pub(crate) use deadletter::{append, check_writable, ensure_dir, lock, record_value};
pub use service::{BODY_START_BYTES, DISABLED_REASON};
pub use sign::{decode_secret, sign, verify, SecretError, SECRET_PREFIX};
pub use sink::WebhookSink;

// The webhook metric names, defined with their HELP text in the catalogue.
pub use crate::metrics::{
    SINK_DEAD_LETTERS as DEAD_LETTERS, WEBHOOK_ATTEMPTS as ATTEMPTS,
    WEBHOOK_ENDPOINT_DISABLED as ENDPOINT_DISABLED, WEBHOOK_REQUEST_SECONDS as REQUEST_SECONDS,
    WEBHOOK_RETRIES as RETRIES,
};
