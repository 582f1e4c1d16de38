//! The running webhook sink: one attempt ([`HttpPoster`]), the retry loop and the dead-letter
//! hand-off ([`Engine`]), and the [`Deliver`] implementation ([`WebhookSink`]).
//!
//! The engine is generic over how an attempt is made ([`Poster`]) so its unit tests drive the
//! retry loop with scripted responses under tokio's paused clock; production uses
//! [`HttpPoster`] (reqwest with rustls, no redirects, no cookies).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt as _;
use metrics::{Counter, Gauge, Histogram};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use tokio::time::Instant;
use url::Url;

use crate::event::Event;
use crate::http::{client_builder, redact_url, BuildError};
use crate::sinks::deliver::Deliver;
use crate::sinks::{delivered_counter, SinkError};

use super::config::{validate_sink_name, WebhookSinkConfig};
use super::deadletter::{self, dead_letter_path, DeadLetter, BODY_START_BYTES};
use super::retry::{
    classify_status, decide, expired, parse_retry_after, Decision, Jitter, RetryPolicy, Verdict,
};
use super::sign::{signature_header, SigningKey};
use super::{ATTEMPTS, DEAD_LETTERS, ENDPOINT_DISABLED, REQUEST_SECONDS, RETRIES};

/// Tracing target of the webhook sink.
const TARGET: &str = "chatwatch::sinks::webhook";
/// At most one "attempt failed" warning per sink per this period.
const WARN_PERIOD: Duration = Duration::from_secs(10);
/// While the endpoint is disabled, repeat the error at most this often.
const DISABLED_REPORT_PERIOD: Duration = Duration::from_secs(60);
/// Read at most this much of a response body (the rest is dropped with the connection).
const MAX_BODY_READ: usize = 64 * 1024;
/// The reason recorded for every event dead-lettered because of a `410 Gone`.
pub const DISABLED_REASON: &str = "endpoint disabled (410 Gone)";

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    /// The receiver answered.
    Status {
        /// The HTTP status code.
        status: u16,
        /// `Retry-After`, parsed.
        retry_after: Option<Duration>,
        /// The first [`BODY_START_BYTES`] of the body (lossy UTF-8).
        body_start: String,
    },
    /// No answer: connection refused, DNS, TLS, timeout, reset (transient).
    NoAnswer {
        /// What happened.
        reason: String,
    },
    /// The request could not even be built (e.g. an event id that is not a valid header
    /// value): permanent.
    Unsendable {
        /// Why.
        reason: String,
    },
}

/// Why an attempt did not deliver, as recorded in a dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// The HTTP status, if any.
    pub(crate) status: Option<u16>,
    /// In words.
    pub(crate) reason: String,
    /// The start of the response body.
    pub(crate) body_start: String,
    /// Whether the receiver answered `410 Gone`.
    pub(crate) gone: bool,
}

/// Classifies a response: its verdict, the failure to record if it is not a delivery, and the
/// `Retry-After` it asked for.
pub(crate) fn assess(response: Response) -> (Verdict, Failure, Option<Duration>) {
    match response {
        Response::Status {
            status,
            retry_after,
            body_start,
        } => {
            let verdict = classify_status(status);
            let name = reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            let reason = match verdict {
                Verdict::Gone => DISABLED_REASON.to_owned(),
                _ if (300..400).contains(&status) => {
                    format!("HTTP {status} {name} (redirects are not followed)")
                }
                _ => format!("HTTP {status} {name}").trim_end().to_owned(),
            };
            let failure = Failure {
                status: Some(status),
                reason,
                body_start,
                gone: verdict == Verdict::Gone,
            };
            (verdict, failure, retry_after)
        }
        Response::NoAnswer { reason } => (
            Verdict::Transient,
            Failure {
                status: None,
                reason,
                body_start: String::new(),
                gone: false,
            },
            None,
        ),
        Response::Unsendable { reason } => (
            Verdict::Permanent,
            Failure {
                status: None,
                reason,
                body_start: String::new(),
                gone: false,
            },
            None,
        ),
    }
}

/// Makes one attempt to deliver a body under a `webhook-id`.
pub(crate) trait Poster: Send + Sync + 'static {
    /// POSTs `body` with `webhook-id = id`, a fresh timestamp and signatures.
    fn post(&self, id: &str, body: Bytes) -> impl Future<Output = Response> + Send;
}

/// One attempt with no retry: `Ok` on 2xx, else the failure (redrive uses this).
pub(crate) async fn post_once<P: Poster>(poster: &P, id: &str, body: Bytes) -> Result<(), Failure> {
    let (verdict, failure, _) = assess(poster.post(id, body).await);
    match verdict {
        Verdict::Delivered => Ok(()),
        _ => Err(failure),
    }
}

/// The production [`Poster`]: reqwest with rustls, the configured TLS roots and proxy, no
/// redirects, no cookies.
pub(crate) struct HttpPoster {
    client: reqwest::Client,
    url: Url,
    keys: Vec<SigningKey>,
    headers: HeaderMap,
    timeout: Duration,
    request_seconds: Histogram,
    /// The resolved dead-letter directory.
    pub(crate) dead_letter_dir: PathBuf,
}

impl std::fmt::Debug for HttpPoster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpPoster")
            .field("url", &redact_url(&self.url))
            .field("keys", &self.keys.len())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpPoster {
    /// Validates `cfg`, reads its secrets and builds the HTTP client, for sink `sink`.
    pub(crate) fn new(sink: &str, cfg: &WebhookSinkConfig) -> Result<Self, SinkError> {
        let resolved = cfg.resolve(sink)?;
        let builder = client_builder(&cfg.http_settings()).map_err(|e| {
            let (field, reason) = match &e {
                BuildError::Ca { .. } => ("ca_file", e.to_string()),
                BuildError::Proxy { .. } => ("proxy", e.to_string()),
                _ => ("url", e.to_string()),
            };
            SinkError::invalid(field, reason).in_sink(sink)
        })?;
        let client = builder.build().map_err(|e| SinkError::Failed {
            sink: sink.to_owned(),
            reason: format!("cannot build the HTTP client: {}", e.without_url()),
        })?;
        let mut headers = resolved.headers;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(Self {
            client,
            url: cfg.url.clone(),
            keys: resolved.keys,
            headers,
            timeout: cfg.timeout,
            request_seconds: metrics::histogram!(REQUEST_SECONDS, "sink" => sink.to_owned()),
            dead_letter_dir: resolved.dead_letter_dir,
        })
    }

    async fn exchange(&self, id: &str, body: Bytes) -> Response {
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let Ok(id_value) = HeaderValue::from_str(id) else {
            return Response::Unsendable {
                reason: "the event id is not a valid header value".to_owned(),
            };
        };
        let signature = signature_header(&self.keys, id, timestamp, &body);
        let mut headers = self.headers.clone();
        headers.insert(HeaderName::from_static("webhook-id"), id_value);
        headers.insert(
            HeaderName::from_static("webhook-timestamp"),
            HeaderValue::from(timestamp),
        );
        match HeaderValue::from_str(&signature) {
            Ok(value) => {
                headers.insert(HeaderName::from_static("webhook-signature"), value);
            }
            Err(_) => {
                return Response::Unsendable {
                    reason: "cannot encode the signature header".to_owned(),
                }
            }
        }
        let request = self
            .client
            .post(self.url.clone())
            .headers(headers)
            .timeout(self.timeout)
            .body(body);
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                return Response::NoAnswer {
                    reason: describe(e, self.timeout),
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let body_start = read_body_start(response).await;
        Response::Status {
            status,
            retry_after,
            body_start,
        }
    }
}

impl Poster for HttpPoster {
    async fn post(&self, id: &str, body: Bytes) -> Response {
        let started = Instant::now();
        // reqwest's timeout covers the whole exchange; this one is a backstop.
        let response = match tokio::time::timeout(
            self.timeout + Duration::from_secs(1),
            self.exchange(id, body),
        )
        .await
        {
            Ok(response) => response,
            Err(_) => Response::NoAnswer {
                reason: format!("no response within {:?}", self.timeout),
            },
        };
        self.request_seconds.record(started.elapsed().as_secs_f64());
        response
    }
}

/// Reads up to [`MAX_BODY_READ`] bytes of the body and keeps the first [`BODY_START_BYTES`]; a
/// failure while reading keeps what was read.
async fn read_body_start(mut response: reqwest::Response) -> String {
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = BODY_START_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
        total += chunk.len();
        if total >= MAX_BODY_READ {
            break;
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

/// A reqwest error in words, without the URL (it may carry credentials).
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no response within {timeout:?}");
    }
    let kind = if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

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

    #[test]
    fn assess_maps_responses() {
        let (v, f, ra) = assess(status_after(429, 7));
        assert_eq!(
            (v, f.status, ra),
            (Verdict::Transient, Some(429), Some(Duration::from_secs(7)))
        );
        assert_eq!(f.reason, "HTTP 429 Too Many Requests");
        let (v, f, _) = assess(refused());
        assert_eq!((v, f.status), (Verdict::Transient, None));
        let (v, f, _) = assess(status(410));
        assert!(v == Verdict::Gone && f.gone && f.reason == DISABLED_REASON);
        let (v, _, _) = assess(Response::Unsendable { reason: "x".into() });
        assert_eq!(v, Verdict::Permanent);
        let (_, f, _) = assess(status(599));
        assert_eq!(f.reason, "HTTP 599");
    }
}
