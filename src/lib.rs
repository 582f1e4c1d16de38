//! chatwatch: a daemon that listens to Genesys Web Services (GWS) CometD notifications and
//! delivers every chat state change, typed and versioned, to sinks, losing nothing on the way.
//!
//! # The path of one event
//!
//! Each step is one module and one hand-over, in one direction; nothing downstream calls back
//! upstream (a sink never talks to a Bayeux session, a session never waits for a sink):
//!
//! ```text
//! GWS ─HTTP/WS─▶
//!   bayeux transport  bayeux::{transport, websocket}: JSON arrays over long-polling or WebSocket
//!   → protocol        bayeux::protocol: the sans-I/O Bayeux state machine (handshake, one held
//!                     connect, re-subscribe, advice, back off); yields `bayeux::Delivery`
//!   → gws decode      gws::notification (its fast reader in gws::notification::wire): typed
//!                     notifications, unknown values kept verbatim
//!   → tracker         tracker: the last state per chat, so each event carries `previous_state`
//!   → event           event: the versioned event record and its stable `event_id` (event::id)
//!   → journal         journal: the durable append-only log, one cursor per sink
//!   → delivery        delivery::SinkRunner: one runner per sink reading at the sink's cursor
//!   → sinks           sinks::{log, file, webhook, audit, nats}, built from one list (sinks::any)
//! ```
//!
//! [`pipeline`] is one account's glue between its session and the journal: decode, then the
//! tracker, then the pure event constructor, then the append; it also feeds each event to the
//! account's post-leave workflow ([`rules`]: pending dispositions, overdue timers, the
//! `[[rules]]` that act), appends the events the workflow derives (`disposition_set`,
//! `disposition_overdue`, `action`) like any other, and hands the operations a rule performs to
//! the account's actor (`rules::actor`), which sends them through the account's GWS session.
//! The sink filter vocabulary that sinks and rules share lives in [`filter`]. Around the data path:
//! [`gws::session`] (login, CSRF, recovery snapshots) and [`gws::operations`] (the chat
//! operations such as `Leave`, with their validation); [`service`] (configuration, the admin
//! listener, systemd notify and watchdog, the reload control socket, health); [`api`] (the
//! authenticated operations API for workflow engines: the CLI's chat operations through an
//! account's own GWS session, the tracked chats, its OpenAPI document); [`app`] (what each
//! subcommand does; `main.rs` only parses and dispatches); [`sim`] (the GWS simulator behind
//! `demo`, the tests and the benchmarks). The shared primitives know nothing of their users:
//! [`http`] (the HTTP client factory: TLS roots parsed once, CA file, proxy, redaction),
//! [`backoff`], [`fs`] (durable-file helpers and the one [`fs::FsyncPolicy`]), [`channel`]
//! (channel globs), [`secret`] (the one secret vocabulary: `value`, `env`, `file`,
//! `credential`), [`signal`] (SIGINT, SIGTERM, SIGHUP) and [`metrics`] (every metric name with
//! its HELP text).
//!
//! # What runs
//!
//! - per account: one session task (Bayeux protocol and transport, GWS login and recovery)
//!   feeding a bounded channel, and one pipeline task draining it into the journal;
//!   with rules, one actor task performing their operations (retries on 503) and reporting each
//!   attempt back to the pipeline;
//! - the journal: one OS thread, `journal-writer`, that owns the active segment and performs
//!   every append in order, syncing groups of appends together (group commit);
//! - per sink: one delivery task reading the journal at the sink's cursor and handing the sink
//!   batches; the file-backed sinks (file, audit) add one writer OS thread each that owns the
//!   file; the webhook and NATS sinks keep their requests in flight on the runtime;
//! - the service: the admin HTTP listener, the control socket, the systemd notifier and
//!   watchdog, the signal handling, and the journal's garbage collector.
//!
//! # Guarantees
//!
//! - **The journal before any sink.** Bayeux cannot ask a server to resend, so an event is
//!   appended to the journal (durable per its fsync policy) before any sink can see it.
//! - **At least once.** A sink's cursor moves only after the sink said the batch is delivered
//!   (written and synced, acknowledged by the receiver, acked by JetStream, or dead-lettered);
//!   after a crash every sink resumes at its stored cursor and may receive again the batch it
//!   was working on.
//! - **`event_id` is the idempotency key** everywhere: the `webhook-id` header, `Nats-Msg-Id`,
//!   the audit line. Receivers deduplicate on it.
//! - A slow or dead sink holds back only its own cursor. Bad input is logged and counted, never
//!   a panic; secrets never reach logs, errors or `Debug` output.
//!
//! # Where to start reading
//!
//! `service::run` wires everything together. Follow one event from `bayeux::client::run`
//! through `pipeline::run` to `journal::Journal::append`, then `delivery::SinkRunner` to a
//! sink's `sinks::deliver::Deliver::deliver`. The Bayeux rules are in `bayeux::protocol`'s
//! module documentation, the on-disk format in `journal`'s, and how to add a sink type in
//! `sinks`'.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod backoff;
pub mod bayeux;
pub mod channel;
pub mod delivery;
pub mod event;
pub mod filter;
pub mod fs;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gws;
pub mod http;
pub mod journal;
pub mod json;
pub mod metrics;
pub mod pipeline;
pub mod rules;
pub mod secret;
pub mod service;
pub mod signal;
pub mod sim;
pub mod sinks;
pub mod tracker;
