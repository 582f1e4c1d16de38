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

use crate::event::Event;
use crate::http::redact_url;
use crate::sinks::deliver::Deliver;
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
    pub(crate) async fn deliver(&self, events: &[Arc<Event>]) -> Result<(), SinkError> {
        // Forget the progress of events no longer in the batch (bounded memory).
        {
            let ids: HashSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
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
    async fn deliver_one(&self, event: &Arc<Event>) -> Result<(), SinkError> {
        let id = event.event_id.as_str();
        let body: Bytes = serde_json::to_vec(&**event)
            .map_err(|e| self.failed(format!("cannot encode event {id}: {e}")))?
            .into();
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
        event: &Event,
        failure: Failure,
        attempts: u32,
    ) -> Result<(), SinkError> {
        let letter = DeadLetter::new(&self.name, event, &failure, attempts);
        self.append(vec![letter]).await?;
        lock(&self.progress).remove(&event.event_id);
        tracing::warn!(
            target: TARGET,
            sink = %self.name,
            event_id = %event.event_id,
            status = failure.status,
            attempts,
            reason = %failure.reason,
            path = %dead_letter_path(&self.dead_letter_dir, &self.name).display(),
            "webhook event dead-lettered"
        );
        Ok(())
    }

    /// Dead-letters `events` because the endpoint is disabled, in one durable append.
    async fn dead_letter_disabled(&self, events: &[Arc<Event>]) -> Result<(), SinkError> {
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
                    let attempts = progress.get(&e.event_id).map_or(0, |p| p.attempts);
                    DeadLetter::new(&self.name, e, &failure, attempts)
                })
                .collect()
        };
        let count = letters.len() as u64;
        self.append(letters).await?;
        {
            let mut progress = lock(&self.progress);
            for e in events {
                progress.remove(&e.event_id);
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
    async fn deliver(&mut self, events: &[Arc<Event>]) -> Result<(), SinkError> {
        self.engine.deliver(events).await
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
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use metrics_util::debugging::DebuggingRecorder;

    use super::*;
    use crate::event::{EventKind, SCHEMA};
    use crate::sinks::test_support::Counters;
    use crate::sinks::webhook::deadletter_list;
    use crate::sinks::webhook::service::Response;

    /// Decides the response to the `n`th attempt (1-based) for an event id.
    type Rule = Box<dyn Fn(&str, u32) -> Response + Send + Sync>;

    /// A scripted receiver: records every attempt, how many overlap, and answers per `rule`
    /// after `latency` (on tokio's clock).
    struct Script {
        rule: Rule,
        latency: Duration,
        calls: Mutex<Vec<(String, Instant)>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
    }

    impl Script {
        fn new(
            latency: Duration,
            rule: impl Fn(&str, u32) -> Response + Send + Sync + 'static,
        ) -> Arc<Self> {
            Arc::new(Self {
                rule: Box::new(rule),
                latency,
                calls: Mutex::new(Vec::new()),
                in_flight: AtomicUsize::new(0),
                max_in_flight: AtomicUsize::new(0),
            })
        }

        fn calls(&self) -> Vec<(String, Instant)> {
            lock(&self.calls).clone()
        }

        fn ids(&self) -> Vec<String> {
            self.calls().into_iter().map(|(id, _)| id).collect()
        }
    }

    impl Poster for Arc<Script> {
        async fn post(&self, id: &str, _body: Bytes) -> Response {
            let n = {
                let mut calls = lock(&self.calls);
                calls.push((id.to_owned(), Instant::now()));
                calls.iter().filter(|(i, _)| i == id).count() as u32
            };
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.latency).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            (self.rule)(id, n)
        }
    }

    fn status(status: u16) -> Response {
        Response::Status {
            status,
            retry_after: None,
            body_start: String::new(),
        }
    }

    fn status_after(code: u16, after: u64) -> Response {
        Response::Status {
            status: code,
            retry_after: Some(Duration::from_secs(after)),
            body_start: String::new(),
        }
    }

    fn refused() -> Response {
        Response::NoAnswer {
            reason: "cannot connect: connection refused".to_owned(),
        }
    }

    fn event(i: usize) -> Arc<Event> {
        Arc::new(Event {
            schema: SCHEMA.to_owned(),
            event_id: format!("ev-{i:03}"),
            fingerprint: "00".repeat(16),
            received_at: time::OffsetDateTime::UNIX_EPOCH,
            account: "a".to_owned(),
            channel: "/v2/me/chats".to_owned(),
            kind: EventKind::Other,
            message_type: None,
            notification_type: None,
            reference_id: None,
            chat: None,
            messages: None,
            error_message: None,
            decode_error: None,
            recovered: false,
            data: serde_json::json!({ "i": i }).into(),
        })
    }

    fn events(n: usize) -> Vec<Arc<Event>> {
        (0..n).map(event).collect()
    }

    const POLICY: RetryPolicy = RetryPolicy {
        initial: Duration::from_secs(1),
        max_backoff: Duration::from_secs(300),
        max_age: Duration::from_secs(24 * 3600),
    };

    fn engine(
        script: &Arc<Script>,
        policy: RetryPolicy,
        in_flight: usize,
        dir: &std::path::Path,
    ) -> Engine<Arc<Script>> {
        Engine::new(
            "hook",
            &Url::parse("http://user:pw@127.0.0.1:9/x").unwrap(),
            Arc::clone(script),
            policy,
            in_flight,
            dir.to_owned(),
            Jitter::with_seed(3),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn backs_off_with_jitter_honours_retry_after_then_delivers() {
        let dir = tempfile::tempdir().unwrap();
        let script = Script::new(Duration::ZERO, |_, n| match n {
            1 => refused(),
            2 => status_after(503, 30),
            3 => status(429),
            _ => status(200),
        });
        let recorder = DebuggingRecorder::new();
        let counters = Counters::new(&recorder);
        let engine =
            metrics::with_local_recorder(&recorder, || engine(&script, POLICY, 1, dir.path()));
        engine.deliver(&events(1)).await.unwrap();
        let times: Vec<Instant> = script.calls().into_iter().map(|(_, t)| t).collect();
        assert_eq!(times.len(), 4);
        // Retry 0: jitter under the 1 s ceiling; retry 1: Retry-After 30 s beats the 2 s
        // ceiling; retry 2: under the 4 s ceiling.
        assert!(times[1] - times[0] <= Duration::from_secs(1));
        assert_eq!(times[2] - times[1], Duration::from_secs(30));
        assert!(times[3] - times[2] <= Duration::from_secs(4));
        let labels = [("sink", "hook")];
        assert_eq!(counters.get(ATTEMPTS, &[("result", "retry")]), 3);
        assert_eq!(counters.get(ATTEMPTS, &[("result", "ok")]), 1);
        assert_eq!(counters.get(RETRIES, &labels), 3);
        assert_eq!(counters.get(crate::sinks::DELIVERED_EVENTS, &labels), 1);
        assert_eq!(counters.get(DEAD_LETTERS, &labels), 0);
        assert!(deadletter_list(dir.path(), Some("hook"))
            .unwrap()
            .is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn max_age_dead_letters_with_the_last_failure() {
        let dir = tempfile::tempdir().unwrap();
        let script = Script::new(Duration::ZERO, |_, _| Response::Status {
            status: 503,
            retry_after: None,
            body_start: "busy".to_owned(),
        });
        let policy = RetryPolicy {
            initial: Duration::from_secs(1),
            max_backoff: Duration::from_secs(4),
            max_age: Duration::from_secs(60),
        };
        let engine = engine(&script, policy, 1, dir.path());
        let start = Instant::now();
        engine.deliver(&events(2)).await.unwrap();
        let elapsed = Instant::now() - start;
        // Two events, each given up before its next wait would pass 60 s.
        assert!(elapsed <= Duration::from_secs(120), "{elapsed:?}");
        assert!(elapsed >= Duration::from_secs(2 * (60 - 4)), "{elapsed:?}");
        let letters = deadletter_list(dir.path(), Some("hook")).unwrap();
        assert_eq!(letters.len(), 2);
        for (letter, id) in letters.iter().zip(["ev-000", "ev-001"]) {
            assert_eq!(letter.event_id, id);
            assert_eq!(letter.status, Some(503));
            assert_eq!(letter.body_start, "busy");
            assert!(
                letter.reason.starts_with("max_age 1m reached after"),
                "{}",
                letter.reason
            );
            assert!(
                letter
                    .reason
                    .ends_with("last: HTTP 503 Service Unavailable"),
                "{}",
                letter.reason
            );
            let attempts = script.ids().iter().filter(|i| *i == id).count() as u32;
            assert_eq!(letter.attempts, attempts);
            assert!(attempts > 10, "{attempts}");
            assert_eq!(letter.event["event_id"], id);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gone_disables_and_dead_letters_everything_after_without_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let script = Script::new(Duration::ZERO, |id, _| {
            if id == "ev-000" {
                status(200)
            } else {
                Response::Status {
                    status: 410,
                    retry_after: None,
                    body_start: "bye".to_owned(),
                }
            }
        });
        let recorder = DebuggingRecorder::new();
        let counters = Counters::new(&recorder);
        let engine =
            metrics::with_local_recorder(&recorder, || engine(&script, POLICY, 1, dir.path()));
        engine.deliver(&events(4)).await.unwrap();
        assert!(engine.is_disabled());
        assert_eq!(script.ids(), ["ev-000", "ev-001"]);
        engine.deliver(&[event(7)]).await.unwrap();
        assert_eq!(script.calls().len(), 2, "no attempt while disabled");
        let letters = deadletter_list(dir.path(), Some("hook")).unwrap();
        let summary: Vec<(&str, Option<u16>, u32, &str)> = letters
            .iter()
            .map(|l| (l.event_id.as_str(), l.status, l.attempts, l.reason.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("ev-001", Some(410), 1, DISABLED_REASON),
                ("ev-002", None, 0, DISABLED_REASON),
                ("ev-003", None, 0, DISABLED_REASON),
                ("ev-007", None, 0, DISABLED_REASON),
            ]
        );
        assert_eq!(letters[0].body_start, "bye");
        assert_eq!(counters.get(ATTEMPTS, &[("result", "dead_letter")]), 1);
        assert_eq!(counters.get(ATTEMPTS, &[("result", "disabled")]), 3);
        assert_eq!(counters.get(DEAD_LETTERS, &[("sink", "hook")]), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_failures_dead_letter_at_once_with_status_and_body() {
        let dir = tempfile::tempdir().unwrap();
        let script = Script::new(Duration::ZERO, |id, _| {
            let code = match id {
                "ev-000" => 400,
                "ev-001" => 302,
                "ev-002" => 501,
                "ev-003" => 404,
                _ => 204,
            };
            Response::Status {
                status: code,
                retry_after: None,
                body_start: format!("body of {id}"),
            }
        });
        let engine = engine(&script, POLICY, 1, dir.path());
        engine.deliver(&events(5)).await.unwrap();
        assert_eq!(script.calls().len(), 5, "one attempt each, no retry");
        let letters = deadletter_list(dir.path(), Some("hook")).unwrap();
        let summary: Vec<(Option<u16>, &str, &str)> = letters
            .iter()
            .map(|l| (l.status, l.reason.as_str(), l.body_start.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                (Some(400), "HTTP 400 Bad Request", "body of ev-000"),
                (
                    Some(302),
                    "HTTP 302 Found (redirects are not followed)",
                    "body of ev-001"
                ),
                (Some(501), "HTTP 501 Not Implemented", "body of ev-002"),
                (Some(404), "HTTP 404 Not Found", "body of ev-003"),
            ]
        );
        assert!(!engine.is_disabled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_delivery_keeps_the_max_age_clock_and_attempt_count() {
        let dir = tempfile::tempdir().unwrap();
        let script = Script::new(Duration::ZERO, |_, _| refused());
        let policy = RetryPolicy {
            initial: Duration::from_secs(1),
            max_backoff: Duration::from_secs(2),
            max_age: Duration::from_secs(60),
        };
        let engine = engine(&script, policy, 1, dir.path());
        let batch = events(1);
        let cancelled = tokio::time::timeout(Duration::from_secs(20), engine.deliver(&batch)).await;
        assert!(cancelled.is_err(), "still retrying at 20 s");
        let attempts_before = script.calls().len();
        assert!(attempts_before >= 10, "{attempts_before}");
        assert!(
            deadletter_list(dir.path(), None).unwrap().is_empty(),
            "nothing lost or given up yet"
        );
        // The runner comes back with the same batch after the event's max_age has passed.
        tokio::time::advance(Duration::from_secs(45)).await;
        engine.deliver(&batch).await.unwrap();
        assert_eq!(
            script.calls().len(),
            attempts_before,
            "given up without another attempt"
        );
        let letters = deadletter_list(dir.path(), Some("hook")).unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].attempts as usize, attempts_before);
        assert!(
            letters[0].reason.contains("connection refused"),
            "{}",
            letters[0].reason
        );
        assert_eq!(letters[0].status, None);
    }

    #[tokio::test(start_paused = true)]
    async fn ordered_is_one_at_a_time_in_order_with_head_of_line_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let script = Script::new(Duration::from_millis(10), |id, n| {
            if id == "ev-002" && n < 3 {
                status(503)
            } else {
                status(200)
            }
        });
        let engine = engine(&script, POLICY, 1, dir.path());
        engine.deliver(&events(5)).await.unwrap();
        assert_eq!(
            script.ids(),
            ["ev-000", "ev-001", "ev-002", "ev-002", "ev-002", "ev-003", "ev-004"]
        );
        assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unordered_keeps_concurrency_bounded_and_finishes_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let script = Script::new(Duration::from_millis(100), |id, n| {
            // Every third event fails twice first.
            let i: usize = id[3..].parse().unwrap();
            if i.is_multiple_of(3) && n < 3 {
                status(503)
            } else {
                status(200)
            }
        });
        let engine = engine(&script, POLICY, 4, dir.path());
        engine.deliver(&events(30)).await.unwrap();
        assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 4);
        let ids = script.ids();
        for i in 0..30 {
            let id = format!("ev-{i:03}");
            let expected = if i % 3 == 0 { 3 } else { 1 };
            assert_eq!(ids.iter().filter(|x| **x == id).count(), expected, "{id}");
        }
        assert!(deadletter_list(dir.path(), None).unwrap().is_empty());
        // A failing event did not hold back the others: ev-001 went before ev-000's retry.
        let first_retry = ids
            .iter()
            .enumerate()
            .filter(|(_, x)| *x == "ev-000")
            .nth(1)
            .unwrap()
            .0;
        assert!(ids[..first_retry].contains(&"ev-001".to_owned()));
    }

    #[tokio::test]
    async fn an_unwritable_dead_letter_file_fails_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let script = Script::new(Duration::ZERO, |_, _| status(400));
        let engine = engine(&script, POLICY, 1, &not_a_dir);
        let err = engine
            .deliver(&events(1))
            .await
            .expect_err("cannot dead-letter");
        let text = err.to_string();
        assert!(
            text.starts_with("sink `hook`: cannot write dead letters to"),
            "{text}"
        );
    }
}
