//! The GWS simulator: a small, honest model of a Genesys Web Services server, for `chatwatch
//! demo`, the integration tests and the benchmarks. Nothing in the daemon's production path
//! depends on it.
//!
//! # What it serves
//!
//! | endpoint | what |
//! | --- | --- |
//! | `GET /api/v2/me[?subresources=*]` | the user; with `*` or `chats`, also `user.chats` (open chats) |
//! | `POST /api/v2/me` | `StartContactCenterSession` / `EndContactCenterSession` (per user: End logs the agent out for every session of the user, and ends the calling HTTP session) |
//! | `GET /api/v2/me/chats`, `GET /api/v2/me/chats/{id}` | open chats / one chat |
//! | `POST /api/v2/me/chats/{id}` | the chat operations (`reference/gws-api.md` §4) |
//! | `POST /api/v2/notifications[/...]` | CometD long-polling (handshake, connect, subscribe, unsubscribe, disconnect) |
//! | `/sim/...` | the side door: no authentication, loopback peers only (see below) |
//!
//! Authentication is HTTP Basic against [`SimConfig::users`]; success opens an HTTP session
//! (`JSESSIONID=<random>; Path=/; HttpOnly`) unless a valid `JSESSIONID` was presented.
//! Anything else gets 401 `{"statusCode":20,"statusMessage":"user not authenticated"}`. With
//! [`SimConfig::csrf`], every GET answered to an authenticated request carries
//! `X-CSRF-HEADER: X-CSRF-TOKEN` and `X-CSRF-TOKEN: <the session's token>`, and every POST
//! (REST and CometD) must send `X-CSRF-TOKEN` with that token or get 403 `Missing or invalid Csrf
//! token`; a POST with Basic credentials but no session has no token yet and gets 403 too.
//!
//! Every chat operation that reaches a chat gets the next `referenceId` (an increasing integer,
//! returned as `{"statusCode":0,"referenceId":N}`), and every notification it causes carries it.
//! Offers and customer actions carry none. Notifications are `/v2/me/chats` deliveries queued to
//! every CometD session of the chat's agent subscribed to a matching channel (`*`/`**` globs),
//! each delivered exactly once per session.
//!
//! # The side door
//!
//! `POST /sim/offer` `{"agent","customer","userData","conference","message"}` → `{"chatId"}`;
//! `POST /sim/expire-bayeux`, `/sim/expire-http`, `/sim/restart`; `POST /sim/pause`
//! `{"agent","paused"}`; `POST /sim/set-state` `{"chatId","state"}`; `POST /sim/customer-message`
//! `{"chatId","text"}`, `/sim/customer-leave` `{"chatId"}`, `/sim/revoke` `{"chatId"}`;
//! `GET /sim/requests`, `/sim/sessions`, `/sim/agents` (contact-centre state, logouts and HTTP
//! sessions per user), `/sim/chats`, `/sim/chats/{id}`.
//!
//! # Where GWS is unknown, and what the simulator does
//!
//! The reference (`reference/gws-api.md`) is compiled from documentation and client code, never
//! checked against a server. These behaviours are the simulator's guesses (each is also marked
//! `GUESS:` at its place in the code):
//!
//! - **CSRF on CometD POSTs** (§9 q2): enforced, like every other POST. Authentication is checked
//!   before CSRF. With a valid `JSESSIONID`, a Basic header is not re-checked.
//! - **Broken `text`/`messageType`/`treatAs` pairing** (§9 q6): HTTP 400, `statusCode` 1.
//!   A `treatAs` other than `Normal`/`System`, or a parameter of the wrong JSON type: 400, 10.
//! - **Unknown `operationName`**: 400, `statusCode` 1. **Malformed JSON**: 400, `statusCode` 1.
//! - **Wrong-state operations**: 400, `statusCode` 2, *and* an `Error` notification (with
//!   `messageType: ChatStateChangeMessage`, no `chat`, §9 q7). Parameter errors are refused
//!   synchronously: no `referenceId`, no notification.
//! - **`LeftChat`** advertises exactly `[Transfer, Complete, Leave, InFocus]` but also accepts
//!   `SetDisposition` and the user-data operations (§9 q9). `Leave` there repeats the state.
//! - **`Chatting`** advertises the Accept sample's list plus `SetDisposition` and the user-data
//!   operations; `Invite` and `Consult` are accepted without being advertised; the invited agent
//!   joins at once (a `ParticipantsUpdated`) and the chat counts as a conference from then on.
//! - **Offers** arrive `Invited` with `[Accept, Reject]` (§9 q4). The transcript starts with a
//!   `ParticipantJoined` entry (a probable but unseen type) and, if given, the customer's text.
//! - **Reject / Transfer**: this agent's copy ends `Completed`; there is no router, nobody else
//!   is offered the chat.
//! - **Customer leaves** (§9 q5): a `ParticipantLeft` entry and a `ParticipantsUpdated` without
//!   the customer; the state stays `Chatting`. **Revoke**: `StatusChange` to `Revoked`.
//! - **`SetInFocus`/`InFocus`** (§9 q8): accepted, no notification.
//! - **CometD** (§9 q10): timeout 20 s (the Genesys samples), maxInterval 10 s (CometD default),
//!   error strings in CometD 3 style except the unknown-session one, which uses the
//!   `402::Unknown client` wording. A session's held connect, when the server forgets the
//!   session, is answered with that error rather than by dropping the connection. Deliveries ride
//!   on any reply of the session (`metaConnectDeliverOnly=false`, the CometD default) and carry
//!   no `id`. Sessions are bound to the `BAYEUX_BROWSER` cookie set on the handshake.
//! - **Subscriptions**: `/v2/me/...` channels and the globs above them (`/**`, `/v2/**`);
//!   anything else is denied.
//! - `GET /api/v2/me?subresources=*` returns only the `chats` sub-resource.

mod bayeux;
mod chat;
mod http;
mod scenario;
mod state;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use url::Url;

pub use scenario::{run_scenario, Scenario};

use crate::secret::Secret;
use state::Shared;

/// A user the simulator knows (an agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimUser {
    /// The login name (HTTP Basic user, `userName` in `GET /api/v2/me`).
    pub username: String,
    /// The password (HTTP Basic).
    pub password: Secret,
    /// The display name: the default chat nickname, and `firstName lastName` in `/me`.
    pub nickname: String,
}

impl SimUser {
    /// A user with the given credentials and display name.
    pub fn new(
        username: impl Into<String>,
        password: impl Into<String>,
        nickname: impl Into<String>,
    ) -> SimUser {
        SimUser {
            username: username.into(),
            password: Secret::new(password),
            nickname: nickname.into(),
        }
    }
}

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The agents who can log in. Default: `agent1`/`password1` ("Alice Agent") and
    /// `agent2`/`password2` ("Bob Agent").
    pub users: Vec<SimUser>,
    /// How long a `/meta/connect` is held when nothing is queued (the `advice.timeout` sent to
    /// clients). Default 20 s, as in the Genesys samples.
    pub bayeux_timeout: Duration,
    /// How long a CometD session lives after its last connect reply without a new connect
    /// (CometD's `maxInterval`). A held connect keeps the session alive. Default 10 s.
    pub max_interval: Duration,
    /// Enforce the CSRF token on every POST, as GWS with `enableCsrfProtection=true`. Default
    /// true.
    pub csrf: bool,
    /// The base of the `uri` fields (GWS's `externalApiUrlV2` without its `/api/v2`), e.g. a load
    /// balancer. Default: `http://<listen address>`.
    pub external_base: Option<Url>,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            users: vec![
                SimUser::new("agent1", "password1", "Alice Agent"),
                SimUser::new("agent2", "password2", "Bob Agent"),
            ],
            bayeux_timeout: Duration::from_secs(20),
            max_interval: Duration::from_secs(10),
            csrf: true,
            external_base: None,
        }
    }
}

/// A chat to route to an agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatOffer {
    /// The customer's nickname.
    pub customer_nickname: String,
    /// The attached data the chat arrives with (`userData`).
    pub user_data: Map<String, Value>,
    /// Whether the agent joins a conference (another agent is already in the chat): then `Leave`
    /// ends in `Completed` for this agent instead of `LeftChat`.
    pub conference: bool,
    /// The customer's first message, if any (part of the history sent after `Accept`).
    pub first_message: Option<String>,
}

impl ChatOffer {
    /// A plain offer from `customer`, with no data.
    pub fn new(customer: impl Into<String>) -> ChatOffer {
        ChatOffer {
            customer_nickname: customer.into(),
            ..ChatOffer::default()
        }
    }
}

/// One request as the simulator saw it (also served as JSON by `GET /sim/requests`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoggedRequest {
    /// The HTTP method (`SIM` for an [`Simulator::offer_chat`] call worth noting).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string.
    pub query: Option<String>,
    /// The body's `operationName`, for REST POSTs that had one.
    pub operation_name: Option<String>,
    /// The HTTP status of the response.
    pub status: u16,
    /// Whether an `X-CSRF-TOKEN` header was sent (whatever its value).
    pub csrf_header: bool,
    /// Whether a `JSESSIONID` cookie was sent (valid or not).
    pub session_cookie: bool,
    /// Whether an `Authorization: Basic` header was sent (valid or not).
    pub basic_auth: bool,
    /// The authenticated user, if authentication succeeded.
    pub user: Option<String>,
    /// For CometD POSTs: the channels of the messages (`/meta/connect`, ...).
    pub bayeux_channels: Vec<String>,
    /// Something worth knowing, e.g. a chat offered to an agent without a contact-centre session.
    pub note: Option<String>,
}

/// A CometD session, as [`Simulator::bayeux_sessions`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BayeuxSessionInfo {
    /// The `clientId`.
    pub client_id: String,
    /// The user who handshook it.
    pub user: String,
    /// Its subscriptions.
    pub subscriptions: Vec<String>,
    /// Whether a connect was answered already.
    pub connected: bool,
    /// Whether a connect is held right now.
    pub holding: bool,
    /// Deliveries waiting for the next response.
    pub queued: usize,
}

/// A running simulator. Dropping it stops the server (without waiting); [`Simulator::shutdown`]
/// stops it and waits.
pub struct Simulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    base: Url,
    server: Option<JoinHandle<()>>,
    sweeper: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// `http://<addr>/`, with an unspecified address (`0.0.0.0`, `::`) replaced by loopback.
fn url_for(addr: SocketAddr) -> std::io::Result<Url> {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Url::parse(&format!("http://{addr}/")).map_err(std::io::Error::other)
}

impl Simulator {
    /// Binds `listen` (port 0 picks a free port) and serves in a spawned task. Must be called
    /// inside a Tokio runtime.
    pub async fn start(listen: SocketAddr, cfg: SimConfig) -> std::io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let base = url_for(addr)?;
        let external = cfg
            .external_base
            .clone()
            .unwrap_or_else(|| base.clone())
            .to_string();
        let shared = Arc::new(Shared::new(cfg, external));
        let app =
            http::router(Arc::clone(&shared)).into_make_service_with_connect_info::<SocketAddr>();
        let stop = shared.shutdown.clone();
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
            {
                tracing::warn!(error = %e, "sim: HTTP server failed");
            }
        });
        let sweeper = tokio::spawn(sweep(Arc::clone(&shared)));
        tracing::info!(%addr, "sim: GWS simulator listening");
        Ok(Simulator {
            shared,
            addr,
            base,
            server: Some(server),
            sweeper: Some(sweeper),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/` (loopback when listening on an unspecified address): what a
    /// client puts before `/api/v2/...`.
    pub fn base_url(&self) -> Url {
        self.base.clone()
    }

    /// Routes a chat to `agent` (a username): a `StatusChange` to `Invited` is queued to the
    /// agent's subscribed sessions. Works whether or not the agent started a contact-centre
    /// session (that case is noted in [`Simulator::requests`]). Returns the chat id.
    pub fn offer_chat(&self, agent: &str, offer: ChatOffer) -> String {
        let (id, note) = self.shared.offer(agent, offer);
        if note.is_some() {
            self.shared.log(LoggedRequest {
                method: "SIM".into(),
                path: "offer_chat".into(),
                query: None,
                operation_name: None,
                status: 200,
                csrf_header: false,
                session_cookie: false,
                basic_auth: false,
                user: Some(agent.to_owned()),
                bayeux_channels: Vec::new(),
                note,
            });
        }
        id
    }

    /// Forgets every CometD session (held connects are answered `402::Unknown client`); the
    /// next connect of each gets `402::Unknown client` with advice `handshake`. Returns how many.
    pub fn expire_bayeux_sessions(&self) -> usize {
        self.shared.lock().expire_bayeux()
    }

    /// Forgets every HTTP session: a request with an old `JSESSIONID` gets 401 unless it also
    /// carries valid Basic credentials (which open a new session; a POST then still fails CSRF
    /// until the client GETs the new token). Returns how many.
    pub fn expire_http_sessions(&self) -> usize {
        http::expire_http(&self.shared)
    }

    /// Both of the above, as a backend restart; chats survive.
    pub fn restart(&self) {
        self.expire_bayeux_sessions();
        self.expire_http_sessions();
    }

    /// The next `n` chat operations (of any agent) are answered with HTTP 503, the backend
    /// unavailable, and not performed.
    pub fn fail_next_operations(&self, n: u32) {
        self.shared.lock().unavailable_operations = n;
    }

    /// While `paused`, notifications for `agent` are dropped, not queued (as if lost in an
    /// outage); state changes still happen.
    pub fn pause_notifications(&self, agent: &str, paused: bool) {
        self.shared
            .lock()
            .agents
            .entry(agent.to_owned())
            .or_default()
            .paused = paused;
    }

    /// Sets a chat's state without any notification (as if it changed during an outage).
    /// Returns false if there is no such chat.
    pub fn set_chat_state(&self, chat_id: &str, state: &str) -> bool {
        http::set_state(&self.shared, chat_id, state)
    }

    /// Every HTTP request so far (the most recent 100 000), oldest first, logged when answered:
    /// a held connect whose client hung up before the answer is not in the log.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.requests()
    }

    /// The chat resource as `GET /api/v2/me/chats` would list it (also for closed chats).
    pub fn chat(&self, chat_id: &str) -> Option<Value> {
        self.shared.lock().chats.get(chat_id).map(|c| c.resource())
    }

    /// The open chats of `agent`, oldest first, as `GET /api/v2/me/chats` lists them.
    pub fn open_chats(&self, agent: &str) -> Vec<Value> {
        self.shared.open_chats(agent)
    }

    /// The CometD sessions alive now, sorted by `clientId`.
    pub fn bayeux_sessions(&self) -> Vec<BayeuxSessionInfo> {
        self.shared.sessions()
    }

    /// Whether `agent` has started (and not ended) a contact-centre session.
    pub fn contact_center_started(&self, agent: &str) -> bool {
        self.shared
            .lock()
            .agents
            .get(agent)
            .is_some_and(|a| a.contact_center)
    }

    /// The customer writes `text` in a `Chatting` chat (a `MessageLogUpdated` without
    /// `referenceId`). Returns false if there is no such chat or it is not `Chatting`.
    pub fn customer_message(&self, chat_id: &str, text: &str) -> bool {
        let text = text.to_owned();
        self.shared
            .customer_action(chat_id, |c, clock| c.customer_says(text, clock))
    }

    /// The customer leaves a `Chatting` chat (see the module documentation for the notifications
    /// this guesses). Returns false if that is not possible.
    pub fn customer_leave(&self, chat_id: &str) -> bool {
        self.shared
            .customer_action(chat_id, |c, clock| c.customer_leaves(clock))
    }

    /// Withdraws an offer still `Invited` (`StatusChange` to `Revoked`). Returns false otherwise.
    pub fn revoke_offer(&self, chat_id: &str) -> bool {
        self.shared.customer_action(chat_id, |c, _| c.revoke())
    }

    /// Stops the server: held connects are answered, then the listener closes and the serving
    /// task ends (waiting at most 5 s for open requests).
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        if let Some(sweeper) = self.sweeper.take() {
            let _ = sweeper.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// Expires CometD sessions `max_interval` after their last connect reply.
async fn sweep(shared: Arc<Shared>) {
    let period =
        (shared.cfg.max_interval / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            _ = tokio::time::sleep(period) => {
                shared.sweep(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_become_loopback_urls() {
        let u = url_for("0.0.0.0:8080".parse().unwrap()).unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8080/");
        let u = url_for("[::]:81".parse().unwrap()).unwrap();
        assert_eq!(u.as_str(), "http://[::1]:81/");
        let u = url_for("10.1.2.3:9".parse().unwrap()).unwrap();
        assert_eq!(u.as_str(), "http://10.1.2.3:9/");
    }

    #[test]
    fn default_config_matches_the_documentation() {
        let c = SimConfig::default();
        assert_eq!(c.bayeux_timeout, Duration::from_secs(20));
        assert_eq!(c.max_interval, Duration::from_secs(10));
        assert!(c.csrf);
        assert_eq!(c.users[0].username, "agent1");
        assert_eq!(c.users[0].password.expose(), "password1");
        assert!(
            !format!("{c:?}").contains("password1"),
            "passwords never print"
        );
    }
}
