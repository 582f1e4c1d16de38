//! The GWS session of one account: login (HTTP Basic → `JSESSIONID` cookie + CSRF pair), the
//! REST calls chatwatch makes (`GET /api/v2/me`, `StartContactCenterSession`,
//! `EndContactCenterSession`, the chat operations), and the [`SessionHooks`] that tie them to the
//! Bayeux session in the documented order: login → handshake → subscribe →
//! `StartContactCenterSession` → state recovery (`GET /api/v2/me?subresources=*`) after every
//! (re)handshake.
//!
//! The session and the Bayeux transport share one [`HttpClient`]: one cookie jar, and the CSRF
//! header (whose name GWS gives in `X-CSRF-HEADER`) set on every request after each login. A
//! 403 "Missing or invalid Csrf token" on a REST call means the HTTP session expired: the call
//! logs in again once and retries. Nothing here knows about sinks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::{info, warn};
use url::Url;

use crate::bayeux::client::SessionHooks;
use crate::bayeux::transport::LongPolling;
use crate::gws::operations::{self, ChatOperation, GwsError, OperationError, OperationResponse};
use crate::http::{BuildError, HttpClient, HttpError, HttpSettings};

/// Why a GWS call failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The request never got a usable response.
    #[error("account {account}: {source}")]
    Transport {
        /// The account.
        account: String,
        /// The cause.
        #[source]
        source: HttpError,
    },
    /// GWS answered with an error.
    #[error("account {account}: {source}")]
    Gws {
        /// The account.
        account: String,
        /// What GWS said.
        #[source]
        source: GwsError,
    },
    /// The operation was refused before anything was sent.
    #[error("{0}")]
    Operation(#[from] OperationError),
    /// The HTTP client could not be built.
    #[error("account {account}: {source}")]
    Build {
        /// The account.
        account: String,
        /// The cause.
        #[source]
        source: BuildError,
    },
}

/// The open chats GWS reported at one moment (`GET /api/v2/me?subresources=*` → `user.chats`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatSnapshot {
    /// Each chat resource as GWS returned it.
    pub chats: Vec<Value>,
    /// When the snapshot was read.
    pub taken_at: time::OffsetDateTime,
    /// When it was asked for: notifications received after this may be newer than it.
    pub requested_at: time::OffsetDateTime,
}

/// One account's GWS session. See the module documentation.
pub struct GwsSession {
    account: String,
    base: Url,
    notifications: Url,
    settings: HttpSettings,
    http: RwLock<HttpClient>,
    request_timeout: Duration,
}

impl std::fmt::Debug for GwsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GwsSession")
            .field("account", &self.account)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl GwsSession {
    /// A session for `account` on the server at `base` (e.g. `https://gws:8090`); `settings.url`
    /// is the CometD endpoint. Nothing is sent until [`login`](Self::login).
    pub fn new(
        account: &str,
        base: Url,
        settings: HttpSettings,
        request_timeout: Duration,
    ) -> Result<GwsSession, SessionError> {
        let http = HttpClient::new(&settings).map_err(|source| SessionError::Build {
            account: account.to_owned(),
            source,
        })?;
        Ok(GwsSession {
            account: account.to_owned(),
            notifications: settings.url.clone(),
            base,
            settings,
            http: RwLock::new(http),
            request_timeout,
        })
    }

    /// The account name.
    pub fn account(&self) -> &str {
        &self.account
    }

    fn client(&self) -> HttpClient {
        match self.http.read() {
            Ok(h) => h.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The Bayeux transport over this session's HTTP client (same cookies, same CSRF header).
    pub fn transport(&self) -> LongPolling {
        LongPolling::with_client(self.client(), self.notifications.clone())
    }

    /// Replaces the HTTP client with a fresh one (new cookie jar, no CSRF token) and returns the
    /// Bayeux transport over it.
    pub fn reset(&self) -> Result<LongPolling, BuildError> {
        let fresh = HttpClient::new(&self.settings)?;
        match self.http.write() {
            Ok(mut h) => *h = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(self.transport())
    }

    fn url(&self, path_and_query: &str) -> Url {
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_owned();
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        url.set_path(&format!("{base_path}{path}"));
        url.set_query((!query.is_empty()).then_some(query));
        url
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, reqwest::header::HeaderMap, bytes::Bytes), SessionError> {
        let body = body.map(|b| b.to_string().into_bytes());
        self.client()
            .exchange(method, self.url(path), body, self.request_timeout)
            .await
            .map_err(|source| SessionError::Transport {
                account: self.account.clone(),
                source,
            })
    }

    fn gws_error(&self, source: GwsError) -> SessionError {
        SessionError::Gws {
            account: self.account.clone(),
            source,
        }
    }

    /// Logs in: `GET /api/v2/me` with Basic authentication. Stores the session cookie (in the
    /// jar) and the CSRF pair (as a header on every later request). Returns the `user` object.
    pub async fn login(&self) -> Result<Value, SessionError> {
        let (status, headers, body) = self.exchange(Method::GET, "/api/v2/me", None).await?;
        operations::parse_response(status.as_u16(), &body).map_err(|e| self.gws_error(e))?;
        let client = self.client();
        let csrf_name = headers
            .get("X-CSRF-HEADER")
            .and_then(|v| v.to_str().ok())
            .and_then(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok());
        let csrf_value = csrf_name
            .as_ref()
            .and_then(|_| headers.get("X-CSRF-TOKEN"))
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
        client.dynamic_headers().clear();
        match (csrf_name, csrf_value) {
            (Some(name), Some(value)) => client.dynamic_headers().set(name, value),
            _ => {
                warn!(account = %self.account, "GWS sent no CSRF token (enableCsrfProtection off?); continuing without")
            }
        }
        let user = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("user").cloned())
            .unwrap_or(Value::Null);
        Ok(user)
    }

    /// `GET` a JSON resource below the base URL (e.g. `/api/v2/me?subresources=*`).
    pub async fn get_json(&self, path: &str) -> Result<Value, SessionError> {
        let (status, _, body) = self.exchange(Method::GET, path, None).await?;
        operations::parse_response(status.as_u16(), &body).map_err(|e| self.gws_error(e))?;
        serde_json::from_slice(&body).map_err(|e| {
            self.gws_error(GwsError::Malformed {
                reason: e.to_string(),
            })
        })
    }

    /// `POST` a JSON body; on a CSRF refusal logs in again once and retries.
    pub async fn post(&self, path: &str, body: Value) -> Result<OperationResponse, SessionError> {
        let mut relogged = false;
        loop {
            let (status, _, bytes) = self
                .exchange(Method::POST, path, Some(body.clone()))
                .await?;
            match operations::parse_response(status.as_u16(), &bytes) {
                Ok(r) => return Ok(r),
                Err(GwsError::Csrf) if !relogged => {
                    info!(account = %self.account, "CSRF token refused (session expired?); logging in again");
                    relogged = true;
                    self.login().await?;
                }
                Err(e) => return Err(self.gws_error(e)),
            }
        }
    }

    /// The agent's open chats (`GET /api/v2/me?subresources=*` → `user.chats`).
    pub async fn chats(&self) -> Result<ChatSnapshot, SessionError> {
        let requested_at = time::OffsetDateTime::now_utc();
        let me = self.get_json("/api/v2/me?subresources=*").await?;
        let chats = me
            .pointer("/user/chats")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(ChatSnapshot {
            chats,
            taken_at: time::OffsetDateTime::now_utc(),
            requested_at,
        })
    }

    /// `StartContactCenterSession` on the given media channels (e.g. `["chat"]`).
    pub async fn start_contact_center_session(
        &self,
        channels: &[String],
    ) -> Result<OperationResponse, SessionError> {
        self.post(
            "/api/v2/me",
            json!({"operationName": "StartContactCenterSession", "channels": channels}),
        )
        .await
    }

    /// `EndContactCenterSession`.
    pub async fn end_contact_center_session(&self) -> Result<OperationResponse, SessionError> {
        self.post(
            "/api/v2/me",
            json!({"operationName": "EndContactCenterSession"}),
        )
        .await
    }

    /// Performs a chat operation (`POST /api/v2/me/chats/{id}`). The operation is validated
    /// first; a refused one sends nothing.
    pub async fn operate(
        &self,
        chat_id: &str,
        op: &ChatOperation,
    ) -> Result<OperationResponse, SessionError> {
        let body = op.body()?;
        let path = operations::chat_path(chat_id)?;
        self.post(&path, body).await
    }
}

/// What the GWS layer does around the Bayeux session of one account.
#[derive(Debug, Clone)]
pub struct GwsBehaviour {
    /// Media channels for `StartContactCenterSession`; `None` to not start one.
    pub start_contact_center_session: Option<Vec<String>>,
    /// Send `EndContactCenterSession` on shutdown.
    pub end_contact_center_session: bool,
    /// After every (re)handshake, read the open chats and hand them downstream for
    /// reconciliation.
    pub recover_state: bool,
}

/// [`SessionHooks`] that speak GWS: login before the handshake, contact-centre session and state
/// recovery after the subscriptions, end of the contact-centre session on shutdown. Snapshots go
/// to `snapshots` (the account's pipeline), as `M`.
pub struct GwsHooks<M> {
    session: Arc<GwsSession>,
    behaviour: GwsBehaviour,
    snapshots: mpsc::Sender<M>,
    logged_in_since_start: AtomicBool,
}

impl<M> std::fmt::Debug for GwsHooks<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GwsHooks")
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl<M> GwsHooks<M> {
    /// Hooks for `session`.
    pub fn new(
        session: Arc<GwsSession>,
        behaviour: GwsBehaviour,
        snapshots: mpsc::Sender<M>,
    ) -> GwsHooks<M> {
        GwsHooks {
            session,
            behaviour,
            snapshots,
            logged_in_since_start: AtomicBool::new(false),
        }
    }
}

impl<M: From<ChatSnapshot> + Send + 'static> SessionHooks for GwsHooks<M> {
    fn transport(&self) -> Result<LongPolling, BuildError> {
        self.session.reset()
    }

    async fn login(&self) -> Result<(), String> {
        match self.session.login().await {
            Ok(user) => {
                let name = user.get("userName").and_then(Value::as_str).unwrap_or("?");
                info!(account = %self.session.account, user = name, "GWS login succeeded");
                self.logged_in_since_start.store(true, Ordering::SeqCst);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    async fn subscribed(&self, rehandshake: bool) {
        let account = &self.session.account;
        if let Some(channels) = &self.behaviour.start_contact_center_session {
            if self.logged_in_since_start.swap(false, Ordering::SeqCst) {
                match self.session.start_contact_center_session(channels).await {
                    Ok(_) => {
                        info!(account = %account, channels = ?channels, "contact-centre session started")
                    }
                    Err(e) => {
                        warn!(account = %account, error = %e, "StartContactCenterSession failed")
                    }
                }
            }
        }
        if self.behaviour.recover_state {
            match self.session.chats().await {
                Ok(snapshot) => {
                    info!(account = %account, chats = snapshot.chats.len(), rehandshake, "state recovered from GWS");
                    let _ = self.snapshots.send(M::from(snapshot)).await;
                }
                Err(e) => {
                    metrics::counter!("chatwatch_gws_recovery_failures_total", "account" => account.clone()).increment(1);
                    warn!(account = %account, error = %e, "state recovery (GET /api/v2/me?subresources=*) failed")
                }
            }
        }
    }

    async fn stopping(&self) {
        if self.behaviour.end_contact_center_session
            && self.behaviour.start_contact_center_session.is_some()
        {
            match self.session.end_contact_center_session().await {
                Ok(_) => info!(account = %self.session.account, "contact-centre session ended"),
                Err(e) => {
                    warn!(account = %self.session.account, error = %e, "EndContactCenterSession failed")
                }
            }
        }
    }
}
