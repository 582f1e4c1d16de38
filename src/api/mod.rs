//! The operations API for workflow engines (`[api]`, default off): chat operations performed
//! through a running account's own GWS session, the chats each account tracks, and the
//! OpenAPI 3.1 document that describes it all (`openapi/chatwatch.v1.json`, served at
//! `GET /v1/openapi.json`).
//!
//! ```text
//! GET  /v1/openapi.json                                        the document (no token needed)
//! GET  /v1/accounts/{account}/chats                            tracked chats
//! GET  /v1/accounts/{account}/chats/{chat_id}                  one tracked chat
//! POST /v1/accounts/{account}/chats/{chat_id}/{operation}      e.g. …/leave {"text":"Bye"}
//! ```
//!
//! The API holds no logic of its own about operations: a request body becomes the same
//! [`ChatOperation`](crate::gws::operations::ChatOperation) the CLI builds ([`ops`]), refused by
//! the same [`validate`](crate::gws::operations::ChatOperation::validate) before anything is
//! sent, and sent by the account's [`GwsSession`](crate::gws::session::GwsSession) found in the
//! [`Directory`]. With `?wait=`, the request subscribes to the account's event stream *before*
//! sending and answers with the event that [`answers`](crate::event::Event::answers) the
//! operation, as `chatwatch chat --wait` does.
//!
//! Every request but the document's needs `Authorization: Bearer <token>`, one of the named
//! tokens of `[api.tokens]`, compared in constant time (SHA-256 digests compared without an
//! early exit, against every configured token). Every request is logged (token name, method,
//! path, status, duration) and counted in `chatwatch_api_requests_total{route,status}`; every
//! failure in `chatwatch_api_request_failures_total{reason}`, the reason being the problem's
//! name. Every error is an RFC 9457 problem ([`problem`]).

pub mod config;
pub mod ops;
pub mod problem;
mod routes;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{ApiConfig, ApiConfigError, ApiTls};
use problem::{FailureReason, Problem};

use crate::metrics::{API_REQUESTS, API_REQUEST_FAILURES};
use crate::rules::Directory;
use crate::secret::SecretSource;

/// The OpenAPI 3.1 document of this API (`openapi/chatwatch.v1.json`).
pub const OPENAPI: &str = include_str!("../../openapi/chatwatch.v1.json");

/// Where the document is served; the one path that needs no token.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// Why the API listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The address could not be bound.
    #[error("api listener: cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error("{key}: {message}")]
    Tls {
        /// The dotted key (`api.tls.cert_file`).
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A token was not resolved before the listener was built (a bug: `Config::resolve` reads
    /// them).
    #[error("api.tokens.{0}: not resolved")]
    Unresolved(String),
}

/// What every request handler shares.
struct ApiState {
    directory: Directory,
    /// (name, SHA-256 of the token).
    tokens: Vec<(String, [u8; 32])>,
    wait_max: Duration,
    stop: CancellationToken,
}

/// A bound API listener, not yet serving.
pub struct ApiListener {
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    state: ApiState,
}

impl std::fmt::Debug for ApiListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiListener")
            .field("addr", &self.local_addr())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl ApiListener {
    /// Loads the TLS files (if any) and binds `config.listen`, before the daemon says it is
    /// ready, so a port in use or a bad certificate fails the start. The tokens must have been
    /// resolved ([`ApiConfig::resolve_tokens`]).
    pub async fn bind(config: &ApiConfig, directory: Directory) -> Result<ApiListener, ApiError> {
        let mut tokens = Vec::new();
        for (name, source) in &config.tokens {
            let SecretSource::Resolved(bytes) = source else {
                return Err(ApiError::Unresolved(name.clone()));
            };
            tokens.push((name.clone(), digest(bytes.expose())));
        }
        let tls = config.tls.as_ref().map(tls::server_config).transpose()?;
        let addr = config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ApiError::Bind { addr, source })?;
        Ok(ApiListener {
            listener,
            tls,
            state: ApiState {
                directory,
                tokens,
                wait_max: config.wait_max,
                stop: CancellationToken::new(),
            },
        })
    }

    /// The address actually bound (with the port chosen for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `stop` is cancelled; requests waiting for an event are answered 503 then.
    pub fn serve(self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let ApiListener {
            listener,
            tls,
            mut state,
        } = self;
        state.stop = stop.clone();
        let addr = listener.local_addr().ok();
        let tokens: Vec<String> = state.tokens.iter().map(|(n, _)| n.clone()).collect();
        let app = router(Arc::new(state));
        info!(addr = ?addr, tls = tls.is_some(), tokens = ?tokens, "api listener: /v1/accounts/{{account}}/chats, /v1/openapi.json");
        tokio::spawn(async move {
            let shutdown = stop.clone();
            let served = match tls {
                None => {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move { shutdown.cancelled().await })
                        .await
                }
                Some(config) => match tls::TlsListener::new(listener, config, stop.clone()) {
                    Ok(l) => {
                        axum::serve(l, app)
                            .with_graceful_shutdown(async move { shutdown.cancelled().await })
                            .await
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = served {
                warn!(error = %e, "api listener stopped");
            }
        })
    }
}

fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(OPENAPI_PATH, get(routes::openapi))
        .route("/v1/accounts/{account}/chats", get(routes::list_chats))
        .route(
            "/v1/accounts/{account}/chats/{chat_id}",
            get(routes::get_chat),
        )
        .route(
            "/v1/accounts/{account}/chats/{chat_id}/{operation}",
            post(routes::operate),
        )
        .fallback(routes::fallback)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Whose token a request carries: `Ok(name)`, or the 401 problem.
fn authenticate(state: &ApiState, headers: &HeaderMap) -> Result<String, Problem> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Problem::unauthorized(
            "send `Authorization: Bearer <token>`",
            "missing-token",
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(presented) = presented else {
        return Err(Problem::unauthorized(
            "the Authorization header is not `Bearer <token>`",
            "missing-token",
        ));
    };
    let presented = digest(presented.as_bytes());
    // Compare with every token, without an early exit: the time taken says nothing about
    // which bytes or which token matched.
    let mut found: Option<&str> = None;
    for (name, token) in &state.tokens {
        let diff = token
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 && found.is_none() {
            found = Some(name);
        }
    }
    found.map(str::to_owned).ok_or_else(|| {
        Problem::unauthorized(
            "the bearer token is not one of the configured tokens",
            "wrong-token",
        )
    })
}

/// Authenticates, runs the request, turns a bare error answer of an inner layer (405, 413, a
/// path that cannot be decoded) into a problem, logs the request and counts it.
async fn observe(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let started = tokio::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let token = authenticate(&state, request.headers());
    let (name, mut response) = match token {
        Ok(name) => (name, next.run(request).await),
        Err(_) if path == OPENAPI_PATH => ("-".to_owned(), next.run(request).await),
        Err(problem) => ("-".to_owned(), problem.into_response()),
    };
    let status = response.status();
    if status.as_u16() >= 400 && response.extensions().get::<FailureReason>().is_none() {
        let mut replaced = Problem::for_status(status).into_response();
        for (key, value) in response.headers() {
            if key != header::CONTENT_TYPE && key != header::CONTENT_LENGTH {
                replaced.headers_mut().insert(key.clone(), value.clone());
            }
        }
        response = replaced;
    }
    let reason = response.extensions().get::<FailureReason>().map(|r| r.0);
    let status_label = status.as_u16().to_string();
    metrics::counter!(API_REQUESTS, "route" => route.clone(), "status" => status_label)
        .increment(1);
    if let Some(reason) = reason {
        metrics::counter!(API_REQUEST_FAILURES, "reason" => reason).increment(1);
    }
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    info!(
        token = %name,
        method = %method,
        path = %path,
        route = %route,
        status = status.as_u16(),
        reason = reason.unwrap_or("-"),
        duration_ms,
        "api request"
    );
    response
}

/// 503 while the daemon stops.
fn stopping() -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "stopping",
        "chatwatch is stopping",
        "the daemon is shutting down; try again when it is back",
    )
    .into_response()
}
