//! Moving Bayeux JSON arrays over HTTP long-polling (reqwest with rustls, built by
//! [`crate::http`]).
//!
//! One [`LongPolling`] transport serves one session: it owns that session's cookie jar (CometD's
//! `BAYEUX_BROWSER`, GWS's `JSESSIONID`), keeps at least two connections per host so a request
//! never queues behind the held `/meta/connect`, applies the per-request timeout the protocol asks
//! for, and enforces a maximum response size while reading, so a server that streams without end
//! cannot exhaust memory. It decides no policy: every failure is reported as the protocol's
//! [`TransportError`] for the protocol to act on.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use url::Url;

use super::protocol::TransportError;
use crate::http::{BuildError, HttpClient, HttpError, HttpSettings};

impl From<HttpError> for TransportError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::Timeout(t) => TransportError::Timeout(t),
            HttpError::Connect(reason) => TransportError::Connect(reason),
            HttpError::TooLarge { limit } => TransportError::TooLarge { limit },
            HttpError::Io(reason) => TransportError::Io(reason),
        }
    }
}

/// The long-polling transport of one session: POSTs Bayeux arrays to the endpoint with the
/// account's [`HttpClient`]. Cloning shares the connection pool and cookie jar.
#[derive(Clone)]
pub struct LongPolling {
    http: HttpClient,
    url: Url,
}

impl fmt::Debug for LongPolling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LongPolling")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

impl LongPolling {
    /// Builds the transport with a fresh [`HttpClient`] (new cookie jar and pool).
    pub fn new(settings: &HttpSettings) -> Result<LongPolling, BuildError> {
        Ok(Self::with_client(
            HttpClient::new(settings)?,
            settings.url.clone(),
        ))
    }

    /// A transport to `url` that shares `http` (its cookies and headers) with other users.
    pub fn with_client(http: HttpClient, url: Url) -> LongPolling {
        LongPolling { http, url }
    }

    /// The HTTP client (cookie jar, headers) this transport uses.
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// The endpoint.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// POSTs `body` (a JSON array) and returns the response body, within `timeout`.
    pub async fn send(&self, body: Vec<u8>, timeout: Duration) -> Result<Bytes, TransportError> {
        let (status, _, body) = self
            .http
            .exchange(reqwest::Method::POST, self.url.clone(), Some(body), timeout)
            .await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)])
                .trim()
                .to_owned();
            return Err(TransportError::Status {
                status: status.as_u16(),
                body: text,
            });
        }
        Ok(body)
    }
}
