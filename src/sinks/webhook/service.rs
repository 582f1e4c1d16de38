//! One webhook attempt: build the request, sign it, send it once, classify the outcome.
//!
//! This module owns [`HttpPoster`] (the production [`Poster`]: reqwest with rustls, the
//! configured TLS roots and proxy, no redirects, no cookies), the [`Response`] of one attempt,
//! and [`assess`], which turns a response into a [`Verdict`] and the [`Failure`] a dead letter
//! records (the table in [`crate::sinks::webhook`]). It is Vector's `service.rs` beside
//! `sink.rs`: the retry engine (`sink.rs`) and the dead-letter redrive (`deadletter.rs`) both
//! make their attempts through it, so a redriven event is signed and judged exactly as the
//! running sink would.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use metrics::Histogram;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use tokio::time::Instant;
use url::Url;

use crate::http::{client_builder, redact_url, BuildError};
use crate::sinks::SinkError;

use super::config::WebhookSinkConfig;
use super::retry::{classify_status, parse_retry_after, Verdict};
use super::sign::{signature_header, SigningKey};
use super::REQUEST_SECONDS;

/// How many bytes of a response body a dead letter keeps.
pub const BODY_START_BYTES: usize = 512;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> Response {
        Response::Status {
            status,
            retry_after: None,
            body_start: String::new(),
        }
    }

    #[test]
    fn assess_maps_responses() {
        let (v, f, ra) = assess(Response::Status {
            status: 429,
            retry_after: Some(Duration::from_secs(7)),
            body_start: String::new(),
        });
        assert_eq!(
            (v, f.status, ra),
            (Verdict::Transient, Some(429), Some(Duration::from_secs(7)))
        );
        assert_eq!(f.reason, "HTTP 429 Too Many Requests");
        let (v, f, _) = assess(Response::NoAnswer {
            reason: "cannot connect: connection refused".to_owned(),
        });
        assert_eq!((v, f.status), (Verdict::Transient, None));
        let (v, f, _) = assess(status(410));
        assert!(v == Verdict::Gone && f.gone && f.reason == DISABLED_REASON);
        let (v, _, _) = assess(Response::Unsendable { reason: "x".into() });
        assert_eq!(v, Verdict::Permanent);
        let (_, f, _) = assess(status(599));
        assert_eq!(f.reason, "HTTP 599");
    }
}
