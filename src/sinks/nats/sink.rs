//! The delivery engine of the `nats` sink: pipelined publishes with bounded in-flight PubAcks,
//! the cursor rule (a batch is delivered when every event has its PubAck), retries from the
//! first unacknowledged event, connection state, readiness and dead letters for events the
//! server can never take. See [`crate::sinks::nats`] for the rules.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use async_nats::connection::State;
use bytes::Bytes;
use metrics::{Counter, Gauge, Histogram};
use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::event::Event;
use crate::sinks::deliver::{Deliver, Needs};
use crate::sinks::readiness::SinkReadiness;
use crate::sinks::record::Record;
use crate::sinks::SinkError;

use super::config::{NatsSinkConfig, SubjectTemplate};
use super::deadletter;
use super::service::{self, Cause};

/// Tracing target of the NATS sink.
pub(crate) const TARGET: &str = "chatwatch::sinks::nats";

/// How often the sink looks at the connection state while waiting for it.
const CONNECTED_POLL: Duration = Duration::from_millis(50);

/// What the connection callback and the engine share.
struct Shared {
    sink: String,
    urls: String,
    readiness: SinkReadiness,
    /// The last connection error, while not connected.
    conn_error: Mutex<Option<String>>,
    /// The current publish problem (stream missing, timeouts...), until a PubAck clears it.
    publish_problem: Mutex<Option<String>>,
    connected_gauge: Gauge,
    failures_auth: Counter,
    failures_connect: Counter,
}

impl Shared {
    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Recomputes readiness from the connection and publish state.
    fn update_readiness(&self, connected: bool) {
        if !connected {
            let why = Self::lock(&self.conn_error)
                .clone()
                .unwrap_or_else(|| "connecting".to_owned());
            self.readiness
                .not_ready(format!("not connected to NATS ({}): {why}", self.urls));
        } else if let Some(problem) = Self::lock(&self.publish_problem).clone() {
            self.readiness.not_ready(problem);
        } else {
            self.readiness.ready();
        }
    }

    /// The client's connection callback.
    fn on_event(&self, event: async_nats::Event) {
        match event {
            async_nats::Event::Connected => {
                self.connected_gauge.set(1.0);
                if Self::lock(&self.conn_error).take().is_some() {
                    info!(target: TARGET, sink = %self.sink, "sink `{}`: connected to NATS", self.sink);
                }
                self.update_readiness(true);
            }
            async_nats::Event::Disconnected => {
                self.connected_gauge.set(0.0);
                warn!(target: TARGET, sink = %self.sink, "sink `{}`: disconnected from NATS; reconnecting", self.sink);
                Self::lock(&self.conn_error).get_or_insert_with(|| "disconnected".to_owned());
                self.update_readiness(false);
            }
            async_nats::Event::ServerError(async_nats::ServerError::AuthorizationViolation) => {
                self.connect_failed("authorization violation".to_owned());
            }
            async_nats::Event::ClientError(async_nats::ClientError::Other(text)) => {
                self.connect_failed(text);
            }
            _ => {}
        }
    }

    /// A connection attempt failed: count it, log it when the reason changes.
    fn connect_failed(&self, text: String) {
        let lower = text.to_ascii_lowercase();
        let auth = lower.contains("authoriz") || lower.contains("authenticat");
        if auth {
            self.failures_auth.increment(1);
        } else {
            self.failures_connect.increment(1);
        }
        let changed = {
            let mut last = Self::lock(&self.conn_error);
            let changed = last.as_deref() != Some(text.as_str());
            *last = Some(text.clone());
            changed
        };
        if changed {
            error!(
                target: TARGET,
                sink = %self.sink,
                cause = if auth { "auth" } else { "connect" },
                "sink `{}`: cannot connect to NATS ({}): {text}; retrying (events wait in the journal)",
                self.sink,
                self.urls
            );
        }
        self.connected_gauge.set(0.0);
        self.update_readiness(false);
    }
}

/// One event prepared for publishing.
struct Prepared {
    subject: String,
    headers: async_nats::HeaderMap,
    body: Bytes,
}

/// Per-sink metric handles.
struct Metrics {
    delivered: Counter,
    published: Counter,
    duplicates: Counter,
    retries: Counter,
    dead_letters: Counter,
    puback: Histogram,
}

/// The running `nats` sink (see the module documentation).
pub struct NatsSink {
    name: String,
    cfg: NatsSinkConfig,
    template: SubjectTemplate,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    shared: Arc<Shared>,
    dead_letter_dir: std::path::PathBuf,
    stream_checked: bool,
    metrics: Metrics,
    backoff: Backoff,
}

impl std::fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSink")
            .field("name", &self.name)
            .field("url", &self.cfg.url)
            .field("stream", &self.cfg.stream)
            .finish_non_exhaustive()
    }
}

impl NatsSinkConfig {
    /// Starts the sink `name`: validates, reads the secrets and TLS files, checks the
    /// dead-letter directory, and starts the client, which connects in the background (a
    /// server that is down is not an error: the sink waits for it, not ready).
    pub async fn build(&self, name: &str) -> Result<NatsSink, SinkError> {
        let resolved = self.resolve(name)?;
        let template = self.subject_template().map_err(|e| e.in_sink(name))?;
        deadletter::check_writable(&resolved.dead_letter_dir, name).map_err(|error| {
            SinkError::Open {
                sink: name.to_owned(),
                path: resolved.dead_letter_dir.clone(),
                error,
            }
        })?;
        let labels = [("sink", name.to_owned())];
        let failure = |cause: &'static str| metrics::counter!(super::FAILURES, "sink" => name.to_owned(), "cause" => cause);
        let shared = Arc::new(Shared {
            sink: name.to_owned(),
            urls: self.url.join(","),
            readiness: SinkReadiness::new(
                name,
                format!("not connected to NATS ({}): connecting", self.url.join(",")),
            ),
            conn_error: Mutex::new(None),
            publish_problem: Mutex::new(None),
            connected_gauge: metrics::gauge!(super::CONNECTED, &labels),
            failures_auth: failure("auth"),
            failures_connect: failure("connect"),
        });
        shared.connected_gauge.set(0.0);
        let callback = Arc::downgrade(&shared);
        let client = service::connect(
            name,
            self,
            &resolved,
            Arc::new(move |event| {
                if let Some(shared) = callback.upgrade() {
                    shared.on_event(event);
                }
            }),
        )
        .await?;
        let js = service::jetstream(client.clone(), self.timeout, self.max_in_flight);
        Ok(NatsSink {
            name: name.to_owned(),
            cfg: self.clone(),
            template,
            client,
            js,
            shared,
            dead_letter_dir: resolved.dead_letter_dir,
            stream_checked: false,
            metrics: Metrics {
                delivered: crate::sinks::delivered_counter(name),
                published: metrics::counter!(super::PUBLISHED, &labels),
                duplicates: metrics::counter!(super::DUPLICATES, &labels),
                retries: metrics::counter!(super::RETRIES, &labels),
                dead_letters: metrics::counter!(crate::sinks::webhook::DEAD_LETTERS, &labels),
                puback: metrics::histogram!(super::PUBACK_SECONDS, &labels),
            },
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
        })
    }
}

impl NatsSink {
    fn connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// Waits until the client is connected (readiness says why not meanwhile).
    async fn wait_connected(&self) {
        while !self.connected() {
            tokio::time::sleep(CONNECTED_POLL).await;
        }
    }

    fn failure_counter(&self, cause: Cause) -> Counter {
        metrics::counter!(super::FAILURES, "sink" => self.name.clone(), "cause" => cause.as_str())
    }

    /// Records a publish problem: readiness false, one ERROR line when it starts or changes.
    fn set_problem(&self, cause: Cause, text: String) {
        let phrase = match cause {
            Cause::StreamNotFound => format!(
                "no JetStream stream captures the subject (expected stream `{}`): {text}",
                self.cfg.stream
            ),
            Cause::WrongStream => format!(
                "the subject is captured by another stream than `{}`: {text}",
                self.cfg.stream
            ),
            Cause::Timeout => format!("no PubAck within {:?}: {text}", self.cfg.timeout),
            _ => format!("publish failed: {text}"),
        };
        let changed = {
            let mut problem = Shared::lock(&self.shared.publish_problem);
            let changed = problem.as_deref() != Some(phrase.as_str());
            *problem = Some(phrase.clone());
            changed
        };
        if changed {
            error!(
                target: TARGET,
                sink = %self.name,
                cause = cause.as_str(),
                "sink `{}`: {phrase}; retrying (events wait in the journal)",
                self.name
            );
        }
        self.shared.update_readiness(self.connected());
    }

    /// Clears the publish problem after a PubAck.
    fn clear_problem(&self) {
        let had = Shared::lock(&self.shared.publish_problem).take();
        if had.is_some() {
            info!(target: TARGET, sink = %self.name, "sink `{}`: publishing again", self.name);
            self.shared.update_readiness(self.connected());
        }
    }

    /// With `create_stream`, creates the stream if missing (once per sink instance).
    async fn ensure_stream(&mut self) {
        if self.stream_checked || !self.cfg.create_stream {
            self.stream_checked = true;
            return;
        }
        loop {
            self.wait_connected().await;
            let config = service::stream_config(&self.cfg, self.template.wildcard());
            match self.js.get_or_create_stream(config).await {
                Ok(_) => {
                    self.stream_checked = true;
                    self.clear_problem();
                    return;
                }
                Err(e) => {
                    self.failure_counter(Cause::Other).increment(1);
                    self.set_problem(
                        Cause::Other,
                        format!("cannot create stream `{}`: {e}", self.cfg.stream),
                    );
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    /// The message for `event`, whose body is the journal payload `record` as it is.
    fn prepare(&self, record: &Record, event: &Event) -> Prepared {
        Prepared {
            subject: self.template.render(event),
            headers: service::headers(event, &self.cfg.stream),
            body: record.json().clone(),
        }
    }

    /// Dead-letters `record` (over `max_payload`), durably, before the cursor may move.
    async fn dead_letter(&self, record: &Record, reason: String) -> Result<(), SinkError> {
        let letter = deadletter::letter(&self.name, record, reason);
        let dir = self.dead_letter_dir.clone();
        let sink = self.name.clone();
        tokio::task::spawn_blocking(move || deadletter::append(&dir, &sink, &[letter]))
            .await
            .map_err(|e| SinkError::Failed {
                sink: self.name.clone(),
                reason: format!("dead-letter task failed: {e}"),
            })?
            .map_err(|e| SinkError::Failed {
                sink: self.name.clone(),
                reason: format!(
                    "cannot write the dead letter in {}: {e}",
                    self.dead_letter_dir.display()
                ),
            })?;
        self.metrics.dead_letters.increment(1);
        Ok(())
    }
}

impl Deliver for NatsSink {
    async fn deliver(&mut self, records: &[Arc<Record>]) -> Result<(), SinkError> {
        self.ensure_stream().await;
        // The runner decoded every record (`needs`); one that could not be is not handed over,
        // so this skips nothing in practice.
        let events: Vec<(&Record, &Event)> = records
            .iter()
            .filter_map(|r| match r.event() {
                Ok(event) => Some((&**r, event)),
                Err(error) => {
                    error!(target: TARGET, sink = %self.name, %error, "a journal record is not an event this version can read; skipped");
                    None
                }
            })
            .collect();
        let prepared: Vec<Prepared> = events.iter().map(|(r, e)| self.prepare(r, e)).collect();
        let n = prepared.len();
        // First event without a PubAck (everything before it is delivered).
        let mut next = 0;
        // One past the highest index ever published: re-publishing below it is a retry.
        let mut high = 0;
        while next < n {
            self.wait_connected().await;
            let mut in_flight = VecDeque::new();
            let mut send = next;
            let mut send_failure = None;
            let mut failure = None;
            loop {
                while send_failure.is_none() && send < n && in_flight.len() < self.cfg.max_in_flight
                {
                    let p = &prepared[send];
                    match service::publish(
                        &self.js,
                        p.subject.clone(),
                        p.headers.clone(),
                        p.body.clone(),
                    )
                    .await
                    {
                        Ok(ack) => {
                            if send < high {
                                self.metrics.retries.increment(1);
                            }
                            in_flight.push_back((
                                send,
                                Instant::now(),
                                std::future::IntoFuture::into_future(ack),
                            ));
                            send += 1;
                            high = high.max(send);
                        }
                        Err(e) => send_failure = Some((send, e)),
                    }
                }
                let Some((index, started, ack)) = in_flight.pop_front() else {
                    break;
                };
                match ack.await {
                    Ok(ack) => {
                        self.metrics.puback.record(started.elapsed().as_secs_f64());
                        if ack.duplicate {
                            self.metrics.duplicates.increment(1);
                        } else {
                            self.metrics.published.increment(1);
                        }
                        self.metrics.delivered.increment(1);
                        next = index + 1;
                        self.backoff.reset();
                        self.clear_problem();
                    }
                    Err(e) => {
                        failure = Some((index, e));
                        break;
                    }
                }
            }
            // In-flight PubAcks after a failure are abandoned: those events are published
            // again, in order, with the same ids (the stream drops what it already has).
            drop(in_flight);
            let Some((index, error)) = failure.or(send_failure) else {
                continue;
            };
            debug_assert_eq!(index, next);
            let mut cause = service::classify(&error);
            if cause == Cause::Timeout && !self.connected() {
                cause = Cause::Disconnected;
            }
            let text = service::describe(&error);
            self.failure_counter(cause).increment(1);
            if cause == Cause::MaxPayload {
                let (record, event) = events[index];
                error!(
                    target: TARGET,
                    sink = %self.name,
                    event_id = %event.event_id,
                    bytes = prepared[index].body.len(),
                    "sink `{}`: event {} is larger than the NATS server accepts ({text}); dead-lettered",
                    self.name,
                    event.event_id
                );
                self.dead_letter(record, format!("max_payload: {text}"))
                    .await?;
                next = index + 1;
                continue;
            }
            self.set_problem(cause, text);
            tokio::time::sleep(self.backoff.next_delay()).await;
        }
        Ok(())
    }

    /// The headers and the subject name fields of the event (account, kind, state...); the
    /// body is the journal payload as it is.
    fn needs(&self) -> Needs {
        Needs::Event
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        if self.connected() {
            let _ = tokio::time::timeout(self.cfg.timeout, self.client.flush()).await;
        }
        Ok(())
    }
}
