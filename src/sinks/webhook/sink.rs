//! The running webhook sink: the retry loop and the dead-letter hand-off ([`Engine`]), and the
//! [`Deliver`] implementation ([`WebhookSink`]) with its `build`.
//!
//! One attempt (sign, send once, classify) lives in `service.rs`, shared with the dead-letter
//! redrive. The engine is generic over how an attempt is made ([`Poster`]) so its unit tests
//! drive the retry loop with scripted responses under tokio's paused clock; production uses
//! [`HttpPoster`].

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt as _;
use metrics::{Counter, Gauge};
use tokio::time::Instant;
use url::Url;

use crate::http::redact_url;
use crate::sinks::deliver::{Deliver, Needs};
use crate::sinks::record::Record;
use crate::sinks::{delivered_counter, SinkError};

use super::config::{validate_sink_name, WebhookSinkConfig};
use super::deadletter::{self, dead_letter_path, DeadLetter};
use super::retry::{decide, expired, Decision, Jitter, RetryPolicy, Verdict};
use super::service::{assess, Failure, HttpPoster, Poster, DISABLED_REASON};
use super::{ATTEMPTS, DEAD_LETTERS, ENDPOINT_DISABLED, RETRIES};

/// Tracing target of the webhook sink.
const TARGET: &str = "chatwatch::sinks::webhook";
/// At most one "attempt failed" warning per sink per this period.
const WARN_PERIOD: Duration = Duration::from_secs(10);
/// While the endpoint is disabled, repeat the error at most this often.
const DISABLED_REPORT_PERIOD: Duration = Duration::from_secs(60);
/// The counters of one sink.
#[derive(Debug, Clone)]
struct Metrics {
    delivered: Counter,
    attempt_ok: Counter,
    attempt_retry: Counter,
    attempt_dead_letter: Counter,
    attempt_disabled: Counter,
    retries: Counter,
    dead_letters: Counter,
    disabled: Gauge,
}

impl Metrics {
    fn new(sink: &str) -> Self {
        let attempts = |result: &'static str| metrics::counter!(ATTEMPTS, "sink" => sink.to_owned(), "result" => result);
        Self {
            delivered: delivered_counter(sink),
            attempt_ok: attempts("ok"),
            attempt_retry: attempts("retry"),
            attempt_dead_letter: attempts("dead_letter"),
            attempt_disabled: attempts("disabled"),
            retries: metrics::counter!(RETRIES, "sink" => sink.to_owned()),
            dead_letters: metrics::counter!(DEAD_LETTERS, "sink" => sink.to_owned()),
            disabled: metrics::gauge!(ENDPOINT_DISABLED, "sink" => sink.to_owned()),
        }
    }
}

/// Where one event stands across `deliver` calls (a cancelled call keeps it).
#[derive(Debug, Clone)]
struct Progress {
    /// When its first attempt started (the `max_age` clock).
    first: Instant,
    /// Attempts made so far.
    attempts: u32,
    /// The last transient failure.
    last: Option<Failure>,
}

/// The endpoint answered `410 Gone`.
#[derive(Debug)]
struct Disabled {
    /// When the last error line was logged.
    last_report: Instant,
    /// Events dead-lettered since then.
    unreported: u64,
}

/// Failed attempts not yet reported in a warning.
#[derive(Debug, Default)]
struct WarnLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The retry loop and dead-letter hand-off of one sink, over any [`Poster`].
pub(crate) struct Engine<P> {
    name: String,
    url: String,
    poster: P,
    policy: RetryPolicy,
    in_flight: usize,
    dead_letter_dir: PathBuf,
    jitter: Jitter,
    metrics: Metrics,
    progress: Mutex<HashMap<String, Progress>>,
    disabled: Mutex<Option<Disabled>>,
    warns: Mutex<WarnLimiter>,
}

impl<P: Poster> Engine<P> {
    /// An engine for sink `name`.
    pub(crate) fn new(
        name: &str,
        url: &Url,
        poster: P,
        policy: RetryPolicy,
        in_flight: usize,
        dead_letter_dir: PathBuf,
        jitter: Jitter,
    ) -> Self {
        Self {
            name: name.to_owned(),
            url: redact_url(url),
            poster,
            policy,
            in_flight: in_flight.max(1),
            dead_letter_dir,
            jitter,
            metrics: Metrics::new(name),
            progress: Mutex::new(HashMap::new()),
            disabled: Mutex::new(None),
            warns: Mutex::new(WarnLimiter::default()),
        }
    }

    /// Whether a `410 Gone` has disabled the endpoint.
    pub(crate) fn is_disabled(&self) -> bool {
        lock(&self.disabled).is_some()
    }

    /// Delivers or dead-letters every event of the batch; see [`Deliver`].
    pub(crate) async fn deliver(&self, events: &[Arc<Record>]) -> Result<(), SinkError> {
        // Forget the progress of events no longer in the batch (bounded memory).
        {
            let ids: HashSet<&str> = events.iter().map(|e| e.id_or_empty()).collect();
            lock(&self.progress).retain(|id, _| ids.contains(id.as_str()));
        }
        if self.in_flight == 1 {
            for (i, event) in events.iter().enumerate() {
                if self.is_disabled() {
                    return self.dead_letter_disabled(&events[i..]).await;
                }
                self.deliver_one(event).await?;
            }
            Ok(())
        } else {
            if self.is_disabled() {
                return self.dead_letter_disabled(events).await;
            }
            let mut waiting = events.iter();
            let mut running = futures_util::stream::FuturesUnordered::new();
            for event in waiting.by_ref().take(self.in_flight) {
                running.push(self.deliver_one(event));
            }
            while let Some(result) = running.next().await {
                result?;
                if let Some(event) = waiting.next() {
                    running.push(self.deliver_one(event));
                }
            }
            Ok(())
        }
    }

    /// Delivers one event, retrying transient failures, or dead-letters it.
    async fn deliver_one(&self, event: &Arc<Record>) -> Result<(), SinkError> {
        let id = event.id_or_empty();
        // The journal payload as it is (a clone of `Bytes` shares it).
        let body: Bytes = event.json().clone();
        loop {
            if self.is_disabled() {
                return self.dead_letter_disabled(std::slice::from_ref(event)).await;
            }
            let now = Instant::now();
            let (first, n, stale) = {
                let mut progress = lock(&self.progress);
                let p = progress.entry(id.to_owned()).or_insert(Progress {
                    first: now,
                    attempts: 0,
                    last: None,
                });
                // Cancelled while waiting, and called again past max_age.
                let stale = (p.attempts > 0 && expired(&self.policy, p.first, now))
                    .then(|| (p.attempts, p.last.clone()));
                if stale.is_none() {
                    p.attempts += 1;
                }
                (p.first, p.attempts.saturating_sub(1), stale)
            };
            if let Some((attempts, last)) = stale {
                let failure = self.gave_up(attempts, now - first, last);
                return self.dead_letter(event, failure, attempts).await;
            }
            if n > 0 {
                self.metrics.retries.increment(1);
            }
            let (verdict, failure, retry_after) = assess(self.poster.post(id, body.clone()).await);
            match verdict {
                Verdict::Delivered => {
                    lock(&self.progress).remove(id);
                    self.metrics.attempt_ok.increment(1);
                    self.metrics.delivered.increment(1);
                    return Ok(());
                }
                Verdict::Permanent => {
                    self.metrics.attempt_dead_letter.increment(1);
                    return self.dead_letter(event, failure, n + 1).await;
                }
                Verdict::Gone => {
                    self.metrics.attempt_dead_letter.increment(1);
                    self.disable(id);
                    return self.dead_letter(event, failure, n + 1).await;
                }
                Verdict::Transient => {
                    let now = Instant::now();
                    let unit = self.jitter.next_unit();
                    match decide(&self.policy, first, now, n, unit, retry_after) {
                        Decision::RetryIn(delay) => {
                            self.metrics.attempt_retry.increment(1);
                            self.warn_attempt(id, &failure, n + 1, delay);
                            if let Some(p) = lock(&self.progress).get_mut(id) {
                                p.last = Some(failure);
                            }
                            tokio::time::sleep(delay).await;
                        }
                        Decision::GiveUp => {
                            self.metrics.attempt_dead_letter.increment(1);
                            let failure = self.gave_up(n + 1, now - first, Some(failure));
                            return self.dead_letter(event, failure, n + 1).await;
                        }
                    }
                }
            }
        }
    }

    /// The failure recorded when `max_age` ends the retries.
    fn gave_up(&self, attempts: u32, age: Duration, last: Option<Failure>) -> Failure {
        let last = last.unwrap_or(Failure {
            status: None,
            reason: "unknown".to_owned(),
            body_start: String::new(),
            gone: false,
        });
        Failure {
            reason: format!(
                "max_age {} reached after {attempts} attempts over {}; last: {}",
                humantime::format_duration(self.policy.max_age),
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                last.reason
            ),
            ..last
        }
    }

    /// Writes one dead letter durably, then forgets the event's progress.
    async fn dead_letter(
        &self,
        event: &Record,
        failure: Failure,
        attempts: u32,
    ) -> Result<(), SinkError> {
        let letter = DeadLetter::new(&self.name, event, &failure, attempts);
        self.append(vec![letter]).await?;
        lock(&self.progress).remove(event.id_or_empty());
        tracing::warn!(
            target: TARGET,
            sink = %self.name,
            event_id = %event.id_or_empty(),
            status = failure.status,
            attempts,
            reason = %failure.reason,
            path = %dead_letter_path(&self.dead_letter_dir, &self.name).display(),
            "webhook event dead-lettered"
        );
        Ok(())
    }

    /// Dead-letters `events` because the endpoint is disabled, in one durable append.
    async fn dead_letter_disabled(&self, events: &[Arc<Record>]) -> Result<(), SinkError> {
        let failure = Failure {
            status: None,
            reason: DISABLED_REASON.to_owned(),
            body_start: String::new(),
            gone: true,
        };
        let letters: Vec<DeadLetter> = {
            let progress = lock(&self.progress);
            events
                .iter()
                .map(|e| {
                    let attempts = progress.get(e.id_or_empty()).map_or(0, |p| p.attempts);
                    DeadLetter::new(&self.name, e, &failure, attempts)
                })
                .collect()
        };
        let count = letters.len() as u64;
        self.append(letters).await?;
        {
            let mut progress = lock(&self.progress);
            for e in events {
                progress.remove(e.id_or_empty());
            }
        }
        self.metrics.attempt_disabled.increment(count);
        let report = {
            let mut disabled = lock(&self.disabled);
            match disabled.as_mut() {
                Some(d) => {
                    d.unreported += count;
                    let now = Instant::now();
                    if now.duration_since(d.last_report) >= DISABLED_REPORT_PERIOD {
                        d.last_report = now;
                        Some(std::mem::take(&mut d.unreported))
                    } else {
                        None
                    }
                }
                None => None,
            }
        };
        if let Some(n) = report {
            tracing::error!(
                target: TARGET,
                sink = %self.name,
                url = %self.url,
                dead_lettered = n,
                path = %dead_letter_path(&self.dead_letter_dir, &self.name).display(),
                "webhook sink `{}` is still DISABLED (the endpoint answered 410 Gone): {n} more events dead-lettered; fix the receiver, restart chatwatch, then run `chatwatch deadletter redrive`",
                self.name
            );
        }
        Ok(())
    }

    /// Appends dead letters durably on a blocking thread.
    async fn append(&self, letters: Vec<DeadLetter>) -> Result<(), SinkError> {
        let count = letters.len() as u64;
        let dir = self.dead_letter_dir.clone();
        let sink = self.name.clone();
        let result = tokio::task::spawn_blocking(move || deadletter::append(&dir, &sink, &letters))
            .await
            .map_err(|e| self.failed(format!("the dead-letter writer failed: {e}")))?;
        result.map_err(|e| {
            self.failed(format!(
                "cannot write dead letters to {}: {e}",
                dead_letter_path(&self.dead_letter_dir, &self.name).display()
            ))
        })?;
        self.metrics.dead_letters.increment(count);
        Ok(())
    }

    /// Marks the endpoint disabled and says so loudly, once.
    fn disable(&self, id: &str) {
        let mut disabled = lock(&self.disabled);
        if disabled.is_some() {
            return;
        }
        *disabled = Some(Disabled {
            last_report: Instant::now(),
            unreported: 0,
        });
        self.metrics.disabled.set(1.0);
        tracing::error!(
            target: TARGET,
            sink = %self.name,
            url = %self.url,
            event_id = %id,
            path = %dead_letter_path(&self.dead_letter_dir, &self.name).display(),
            "webhook endpoint answered 410 Gone: sink `{}` is DISABLED; every event for it now goes to the dead-letter file until chatwatch restarts; fix the receiver, restart, then run `chatwatch deadletter redrive`",
            self.name
        );
    }

    /// Logs a failed attempt, at most once per [`WARN_PERIOD`] (with the count suppressed).
    fn warn_attempt(&self, id: &str, failure: &Failure, attempt: u32, delay: Duration) {
        let now = Instant::now();
        let suppressed = {
            let mut warns = lock(&self.warns);
            if warns
                .last
                .is_some_and(|last| now.duration_since(last) < WARN_PERIOD)
            {
                warns.suppressed += 1;
                return;
            }
            warns.last = Some(now);
            std::mem::take(&mut warns.suppressed)
        };
        tracing::warn!(
            target: TARGET,
            sink = %self.name,
            url = %self.url,
            event_id = %id,
            attempt,
            status = failure.status,
            retry_in = ?delay,
            suppressed,
            "webhook attempt failed, will retry: {}",
            failure.reason
        );
    }

    fn failed(&self, reason: String) -> SinkError {
        SinkError::Failed {
            sink: self.name.clone(),
            reason,
        }
    }
}

/// A running `webhook` sink; see [`crate::sinks::webhook`].
pub struct WebhookSink {
    engine: Engine<HttpPoster>,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSink")
            .field("name", &self.engine.name)
            .field("url", &self.engine.url)
            .field("disabled", &self.engine.is_disabled())
            .finish_non_exhaustive()
    }
}

impl WebhookSink {
    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.engine.name
    }

    /// Whether the endpoint answered `410 Gone` (every event is then dead-lettered).
    pub fn is_disabled(&self) -> bool {
        self.engine.is_disabled()
    }

    /// The sink's dead-letter file, `<dead_letter_dir>/<name>.jsonl`.
    pub fn dead_letter_path(&self) -> PathBuf {
        dead_letter_path(&self.engine.dead_letter_dir, &self.engine.name)
    }
}

impl Deliver for WebhookSink {
    /// Delivers every event (in order, one at a time, when `ordered`; else up to `concurrency`
    /// at once) or dead-letters it durably; `Err` only when a dead letter cannot be written.
    async fn deliver(&mut self, records: &[Arc<Record>]) -> Result<(), SinkError> {
        self.engine.deliver(records).await
    }

    /// The body is the journal payload as it is; only the `event_id` (`webhook-id`) is read.
    fn needs(&self) -> Needs {
        Needs::EventId
    }

    /// Nothing to flush: dead letters are synced when written.
    async fn close(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

impl WebhookSinkConfig {
    /// Validates, reads the secrets, builds the HTTP client and creates the dead-letter
    /// directory (checking it is writable by taking the file's lock once). Errors name the sink
    /// and the key, never a secret.
    pub async fn build(&self, name: &str) -> Result<WebhookSink, SinkError> {
        validate_sink_name(name)?;
        let poster = HttpPoster::new(name, self)?;
        let dir = poster.dead_letter_dir.clone();
        let check = {
            let dir = dir.clone();
            let sink = name.to_owned();
            tokio::task::spawn_blocking(move || deadletter::check_writable(&dir, &sink)).await
        };
        match check {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                return Err(SinkError::Open {
                    sink: name.to_owned(),
                    path: dir,
                    error,
                })
            }
            Err(e) => {
                return Err(SinkError::Failed {
                    sink: name.to_owned(),
                    reason: format!("checking the dead-letter directory: {e}"),
                })
            }
        }
        let policy = RetryPolicy {
            initial: self.retry_initial,
            max_backoff: self.retry_max_backoff,
            max_age: self.max_age,
        };
        Ok(WebhookSink {
            engine: Engine::new(
                name,
                &self.url,
                poster,
                policy,
                self.in_flight(),
                dir,
                Jitter::new(),
            ),
        })
    }
}

#[cfg(test)]
mod tests;
