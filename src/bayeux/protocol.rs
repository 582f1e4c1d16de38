//! The Bayeux client state machine, without I/O.
//!
//! [`Protocol`] decides what to send and when; it never opens a socket, sleeps, spawns or reads
//! the clock. The driver ([`super::client`]) asks it for the next [`Request`] with
//! [`Protocol::poll_transmit`], performs it, and hands the outcome back with
//! [`Protocol::handle_response`]; it sleeps until [`Protocol::poll_timeout`]; and it drains
//! [`ProtocolEvent`]s (deliveries and session changes) with [`Protocol::poll_event`]. Because
//! every input carries `now`, each rule of `reference/bayeux.md` §1.7 is a deterministic unit
//! test below.
//!
//! The rules it keeps:
//! - the handshake travels alone; at most one `/meta/connect` of the current session is ever
//!   outstanding, tracked by request and message id, and it is never cancelled: a connect of a
//!   previous session that is still held by the server is only waited for, and its deliveries are
//!   still accepted;
//! - the first connect after every handshake and after every failure carries
//!   `advice: {timeout: 0}`, so the server answers at once;
//! - advice (`reconnect`, `interval`, `timeout`, `maxInterval`, `multiple-clients`) replaces the
//!   previous advice on every reply that carries it;
//! - a forgotten session is recognised by `advice.reconnect = "handshake"`, or without advice by a
//!   401/402/403 error naming an unknown client or session; the client then handshakes again at
//!   once (with backoff only if the previous handshake never reached a successful connect, which
//!   breaks handshake storms) and re-applies the whole desired subscription set;
//! - failures back off linearly up to a cap, reset on the next successful connect; once the time
//!   spent unconnected plus the next delay exceeds `timeout + interval + maxInterval`, the server
//!   has surely expired the session and the client handshakes instead of retrying the connect;
//! - a reply is a message with `successful`; everything else with `data` is a delivery, accepted
//!   from any response, even one whose message ids collide with our own;
//! - subscribe failures are retried with their own backoff; a subscription counts only once its
//!   reply arrived.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::message::{parse_response, Advice, BayeuxError, Message, Reconnect};
use crate::backoff::Backoff;
use crate::channel;
use crate::json::RawJson;

/// Why a request produced no usable response body: the failures the protocol acts on (see the
/// failure table in `reference/bayeux.md`). The protocol owns this vocabulary; each transport
/// (long-polling, WebSocket) converts its own failures into it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No complete response within the request's timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made (refused, DNS, TLS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The server answered with a non-success HTTP status.
    #[error("HTTP {status}: {body}")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The start of the response body, for the log.
        body: String,
    },
    /// The response body exceeded the configured maximum.
    #[error("response larger than the {limit}-byte limit")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The response body was not a readable Bayeux response.
    #[error("invalid response: {0}")]
    Invalid(String),
    /// Any other I/O failure while sending or reading.
    #[error("I/O error: {0}")]
    Io(String),
}
/// The longest `timeout`, `interval` or `maxInterval` taken from a server's advice; longer
/// advice counts as this (a day: far beyond any real CometD server's values).
pub const MAX_ADVISED: Duration = Duration::from_secs(24 * 60 * 60);

/// Identifies one request handed to the driver, so its outcome can be matched.
pub type RequestId = u64;

/// Tunables of the state machine. Durations are client-side defaults; the server's advice
/// overrides `timeout`, `interval` and `max_interval` as it arrives.
#[derive(Debug, Clone)]
pub struct ProtocolConfig {
    /// The channels (names or globs) the session must stay subscribed to.
    pub channels: Vec<String>,
    /// The Bayeux connection type used on `/meta/connect` (`long-polling` or `websocket`); the
    /// driver changes it with [`Protocol::set_connection_type`] when it changes transport.
    pub connection_type: String,
    /// Every connection type the client has, in preference order, sent in the handshake's
    /// `supportedConnectionTypes`. Empty: `connection_type` alone.
    pub supported_connection_types: Vec<String>,
    /// Ask for the `ack` extension at handshake (at-least-once delivery from the server,
    /// `reference/bayeux.md` §2.5); duplicates it redelivers are dropped by message id.
    pub ack: bool,
    /// Added to the hold time for a connect's request timeout; the whole timeout of others.
    pub max_network_delay: Duration,
    /// Backoff step per consecutive failure.
    pub backoff_increment: Duration,
    /// Backoff cap.
    pub max_backoff: Duration,
    /// Assumed connect hold time until the server advises one.
    pub default_timeout: Duration,
    /// Assumed session lifetime without a connect until the server advises one.
    pub default_max_interval: Duration,
    /// `ext` object sent on the handshake, if any.
    pub handshake_ext: Option<Value>,
    /// Whether the driver must log in (e.g. GWS `GET /api/v2/me`) before the first handshake,
    /// after the server refused our credentials (HTTP 401/403) and after a termination.
    pub requires_login: bool,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            channels: vec!["/v2/me/chats".to_owned()],
            connection_type: "long-polling".to_owned(),
            supported_connection_types: Vec::new(),
            ack: false,
            max_network_delay: Duration::from_secs(10),
            backoff_increment: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            default_timeout: Duration::from_secs(30),
            default_max_interval: Duration::from_secs(10),
            handshake_ext: None,
            requires_login: false,
        }
    }
}

/// What a request is for; the driver may use it for logging and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// `/meta/handshake`, alone in its request.
    Handshake,
    /// `/meta/connect`.
    Connect,
    /// Subscribes, unsubscribes or the disconnect.
    Control,
}

/// One HTTP request (or WebSocket frame) to send: a JSON array of messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Hand this back with the outcome.
    pub id: RequestId,
    /// What the request carries.
    pub kind: RequestKind,
    /// The messages, sent as one JSON array.
    pub messages: Vec<Value>,
    /// Abort the request if no complete response arrived within this time.
    pub timeout: Duration,
}

impl Request {
    /// The request body: the messages as a JSON array.
    pub fn body(&self) -> Vec<u8> {
        // Serialising a Vec<Value> cannot fail.
        serde_json::to_vec(&self.messages).unwrap_or_default()
    }
}

/// Why the session had to handshake again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RehandshakeCause {
    /// The server advised `reconnect: handshake`.
    Advice,
    /// The server answered with an unknown-session error and no advice.
    UnknownSession,
    /// Unconnected for longer than the server keeps a session.
    SessionExpired,
    /// The server refused a request with HTTP 401 or 403.
    HttpAuth(u16),
}

impl RehandshakeCause {
    /// A short label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Advice => "advice",
            Self::UnknownSession => "unknown_session",
            Self::SessionExpired => "session_expired",
            Self::HttpAuth(_) => "http_auth",
        }
    }
}

/// A delivery as the protocol sees it (the driver adds the receive time).
#[derive(Debug, Clone, PartialEq)]
pub struct RawDelivery {
    /// The concrete channel.
    pub channel: String,
    /// `data`, as the text the server sent.
    pub data: RawJson,
    /// The delivery's `id`, if any.
    pub id: Option<String>,
}

/// Something the driver should act on or report.
#[derive(Debug, Clone, PartialEq)]
pub enum ProtocolEvent {
    /// A message published on a subscribed channel.
    Delivery(RawDelivery),
    /// A handshake succeeded.
    HandshakeSucceeded {
        /// The new session id.
        client_id: String,
        /// Whether an earlier handshake of this client had succeeded.
        rehandshake: bool,
    },
    /// A handshake failed; another is scheduled.
    HandshakeFailed {
        /// What went wrong.
        error: String,
        /// When the next attempt goes.
        retry_in: Duration,
    },
    /// The first successful connect after a handshake or a failure.
    Connected,
    /// A connect failed; another is scheduled.
    ConnectFailed {
        /// What went wrong.
        error: String,
        /// When the next attempt goes.
        retry_in: Duration,
    },
    /// The session is gone; a handshake is scheduled.
    SessionLost {
        /// Why.
        cause: RehandshakeCause,
        /// When the handshake goes.
        retry_in: Duration,
    },
    /// A subscription was confirmed.
    Subscribed {
        /// The channel or glob.
        channel: String,
    },
    /// A subscription was refused or got no reply; it is retried.
    SubscribeFailed {
        /// The channel or glob.
        channel: String,
        /// What the server said.
        error: String,
        /// When it is retried.
        retry_in: Duration,
    },
    /// An unsubscribe was sent and answered.
    Unsubscribed {
        /// The channel or glob.
        channel: String,
    },
    /// Every desired channel is subscribed on the current session.
    SubscriptionsComplete {
        /// Whether this re-applied subscriptions after a re-handshake.
        resubscribed: bool,
        /// How many channels are subscribed.
        channels: usize,
    },
    /// The server reports several sessions sharing our browser cookie, and slows us down.
    MultipleClients,
    /// A delivery on a channel nobody subscribed to; dropped.
    Unroutable {
        /// The channel it came on.
        channel: String,
    },
    /// A response (or a message in it) could not be read.
    InvalidResponse {
        /// What was wrong.
        error: String,
    },
    /// A reply that matches no request of the response it came in; ignored.
    MismatchedReply {
        /// Its channel.
        channel: String,
        /// Its id.
        id: Option<String>,
    },
    /// The server refused the session for good (`reconnect: none`); nothing more is sent until
    /// [`Protocol::restart`].
    Terminated {
        /// What the server said.
        error: String,
    },
    /// The session was disconnected on request.
    Disconnected,
    /// A delivery the server sent again (part of a batch already received, `ack` extension):
    /// dropped.
    DuplicateDropped {
        /// Its channel.
        channel: String,
        /// Its message id (empty when it has none).
        id: String,
    },
    /// The server granted the `ack` extension at handshake.
    AckEnabled,
    /// The driver must log in now, then call [`Protocol::logged_in`] or
    /// [`Protocol::login_failed`]. No handshake is sent until then.
    LoginRequired,
    /// A login failed; another is scheduled.
    LoginFailed {
        /// What went wrong.
        error: String,
        /// When the next attempt goes.
        retry_in: Duration,
    },
}

/// The session's state, for logs, metrics and readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// No session: a handshake is due or in flight.
    Handshaking,
    /// Handshaken; no connect has succeeded yet.
    Connecting,
    /// The last connect succeeded.
    Connected,
    /// The last connect failed; retrying.
    Unconnected,
    /// A disconnect is in progress.
    Disconnecting,
    /// Disconnected on request.
    Disconnected,
    /// Refused by the server; waiting for a restart.
    Terminated,
}

impl SessionState {
    /// A short label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Handshaking => "handshaking",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Unconnected => "unconnected",
            Self::Disconnecting => "disconnecting",
            Self::Disconnected => "disconnected",
            Self::Terminated => "terminated",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// No login needed (or done).
    Ready,
    /// A login is due at this time.
    Due(Instant),
    /// The driver is logging in.
    InProgress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Handshake,
    Session,
    Disconnecting,
    Disconnected,
    Terminated,
}

#[derive(Debug, Clone)]
enum ControlOp {
    Subscribe { msg_id: String, channel: String },
    Unsubscribe { msg_id: String, channel: String },
    Disconnect { msg_id: String },
}

#[derive(Debug, Clone)]
enum InflightKind {
    Handshake { msg_id: String },
    Connect { msg_id: String },
    Control { ops: Vec<ControlOp> },
}

#[derive(Debug, Clone)]
struct Inflight {
    kind: InflightKind,
    generation: u64,
}

/// Advice in force: the server's latest, with client defaults where it said nothing.
#[derive(Debug, Clone, Copy)]
struct Effective {
    timeout: Duration,
    interval: Duration,
    max_interval: Duration,
}

/// The Bayeux client state machine for one session. See the module documentation.
#[derive(Debug)]
pub struct Protocol {
    cfg: ProtocolConfig,
    phase: Phase,
    client_id: Option<String>,
    /// Bumped whenever a session is abandoned; requests of older generations are stale.
    generation: u64,
    next_msg_id: u64,
    next_request_id: RequestId,
    inflight: HashMap<RequestId, Inflight>,
    /// When the next handshake (phase Handshake) or connect (phase Session) may go.
    connect_at: Option<Instant>,
    first_connect: bool,
    connected: bool,
    ever_handshaken: bool,
    advice: Effective,
    backoff: Backoff,
    unconnected_since: Option<Instant>,
    /// Handshakes since the last successful connect.
    handshakes_without_connect: u32,
    desired: BTreeSet<String>,
    subscribed: BTreeSet<String>,
    subscribe_retry_at: BTreeMap<String, Instant>,
    subscribe_backoff: Backoff,
    subscriptions_reported: bool,
    resubscribing: bool,
    disconnect_sent: bool,
    multiple_clients: bool,
    auth: Auth,
    events: VecDeque<ProtocolEvent>,
    /// `ack` extension state of the current session.
    ack: AckState,
    /// Log in again before re-handshaking a lost session (see
    /// [`Protocol::set_relogin_on_rehandshake`]).
    relogin_on_rehandshake: bool,
}

/// Batches remembered per session to recognise redeliveries (`ack`).
const RECENT_BATCHES: usize = 32;

/// The `ack` extension of the current session: granted or not, the last batch received, and the
/// identities (channel and data) of the latest batches' deliveries. The server redelivers whole
/// unacknowledged batches, in order, ahead of newer messages; a response whose deliveries begin
/// with exactly the sequence of a batch already received carries that batch again, and those
/// deliveries are dropped. (GWS notifications carry no message id, so identity is content; a
/// whole batch repeated in order is what a redelivery looks like, and what fresh traffic is
/// not.)
#[derive(Debug, Default)]
struct AckState {
    enabled: bool,
    batch: u64,
    recent: VecDeque<Vec<u128>>,
}

impl AckState {
    /// Splits `deliveries` (one response's, in order) into redelivered ones (dropped) and new
    /// ones, and remembers the new ones as a batch.
    fn dedupe(&mut self, deliveries: Vec<Message>) -> (Vec<Message>, Vec<Message>) {
        let keys: Vec<u128> = deliveries.iter().map(identity).collect();
        let mut pos = 0;
        'scan: loop {
            for batch in &self.recent {
                if !batch.is_empty() && keys[pos..].starts_with(batch) {
                    pos += batch.len();
                    continue 'scan;
                }
            }
            break;
        }
        let mut deliveries = deliveries;
        let fresh = deliveries.split_off(pos);
        if !fresh.is_empty() {
            if self.recent.len() >= RECENT_BATCHES {
                self.recent.pop_front();
            }
            self.recent.push_back(keys[pos..].to_vec());
        }
        (deliveries, fresh)
    }
}

/// A delivery's identity for redelivery detection: its channel and exact data.
fn identity(message: &Message) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(message.channel.as_bytes());
    h.update(&[0]);
    h.update(message.data.as_ref().map_or("", |d| d.get()).as_bytes());
    h.digest128()
}

impl Protocol {
    /// A new state machine whose first action, at `now`, is a handshake.
    pub fn new(cfg: ProtocolConfig, now: Instant) -> Protocol {
        let desired = cfg.channels.iter().cloned().collect();
        let cfg_requires_login = cfg.requires_login;
        Protocol {
            advice: Effective {
                timeout: cfg.default_timeout,
                interval: Duration::ZERO,
                max_interval: cfg.default_max_interval,
            },
            backoff: Backoff::new(cfg.backoff_increment, cfg.max_backoff),
            subscribe_backoff: Backoff::new(cfg.backoff_increment, cfg.max_backoff),
            cfg,
            phase: Phase::Handshake,
            client_id: None,
            generation: 1,
            next_msg_id: 0,
            next_request_id: 0,
            inflight: HashMap::new(),
            connect_at: Some(now),
            first_connect: true,
            connected: false,
            ever_handshaken: false,
            unconnected_since: None,
            handshakes_without_connect: 0,
            desired,
            subscribed: BTreeSet::new(),
            subscribe_retry_at: BTreeMap::new(),
            subscriptions_reported: false,
            resubscribing: false,
            disconnect_sent: false,
            multiple_clients: false,
            auth: if cfg_requires_login {
                Auth::Due(now)
            } else {
                Auth::Ready
            },
            events: VecDeque::new(),
            ack: AckState::default(),
            relogin_on_rehandshake: false,
        }
    }

    /// With `true` (and `requires_login`), a lost session is re-handshaken only after a new
    /// login. Over WebSocket, Bayeux frames never meet the server's HTTP session checks (no 401
    /// or CSRF 403 comes back on them), so a lost Bayeux session is the sign that the HTTP
    /// session may be gone too.
    pub fn set_relogin_on_rehandshake(&mut self, on: bool) {
        self.relogin_on_rehandshake = on;
    }

    /// The connection type in use.
    pub fn connection_type(&self) -> &str {
        &self.cfg.connection_type
    }

    /// Switches the connection type (the driver changed transport): later handshakes and
    /// connects name it.
    pub fn set_connection_type(&mut self, connection_type: &str) {
        self.cfg.connection_type = connection_type.to_owned();
    }

    /// Whether the server granted the `ack` extension to the current session.
    pub fn ack_enabled(&self) -> bool {
        self.ack.enabled
    }

    /// Feeds messages the server sent on its own (WebSocket frames outside any reply):
    /// deliveries are routed as usual; replies that match no request are reported and ignored.
    pub fn handle_push(&mut self, body: &[u8]) {
        let parsed = match parse_response(body, &self.cfg.connection_type) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.events.push_back(ProtocolEvent::InvalidResponse {
                    error: error.to_string(),
                });
                return;
            }
        };
        for error in &parsed.invalid {
            self.events.push_back(ProtocolEvent::InvalidResponse {
                error: error.to_string(),
            });
        }
        let mut deliveries = Vec::new();
        for message in parsed.messages {
            if message.is_reply() {
                self.events.push_back(ProtocolEvent::MismatchedReply {
                    channel: message.channel,
                    id: message.id,
                });
            } else {
                deliveries.push(message);
            }
        }
        self.route_deliveries(deliveries);
    }

    /// Routes one response's (or frame's) deliveries, dropping a redelivered batch first when
    /// the `ack` extension is on.
    fn route_deliveries(&mut self, deliveries: Vec<Message>) {
        let deliveries = if self.ack.enabled && !deliveries.is_empty() {
            let (again, fresh) = self.ack.dedupe(deliveries);
            for message in again {
                self.events.push_back(ProtocolEvent::DuplicateDropped {
                    channel: message.channel,
                    id: message.id.unwrap_or_default(),
                });
            }
            fresh
        } else {
            deliveries
        };
        for message in deliveries {
            self.route_delivery(message);
        }
    }

    /// The session's current state.
    pub fn state(&self) -> SessionState {
        match self.phase {
            Phase::Handshake => SessionState::Handshaking,
            Phase::Session if self.connected => SessionState::Connected,
            Phase::Session if self.unconnected_since.is_some() => SessionState::Unconnected,
            Phase::Session => SessionState::Connecting,
            Phase::Disconnecting => SessionState::Disconnecting,
            Phase::Disconnected => SessionState::Disconnected,
            Phase::Terminated => SessionState::Terminated,
        }
    }

    /// The server-issued session id, while there is one.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// Whether every desired channel is subscribed on a connected session.
    pub fn is_subscribed(&self) -> bool {
        self.phase == Phase::Session && self.connected && self.desired.is_subset(&self.subscribed)
    }

    /// The delay the next failure would wait (for metrics).
    pub fn current_backoff(&self) -> Duration {
        self.backoff.current()
    }

    /// Number of requests handed out and not yet answered.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Whether the session is disconnected and every request has come back.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Disconnected && self.inflight.is_empty()
    }

    /// Adds a channel to the desired set; it is subscribed as soon as a session exists.
    pub fn subscribe(&mut self, channel: &str) {
        self.desired.insert(channel.to_owned());
        self.subscriptions_reported = false;
    }

    /// Removes a channel from the desired set; it is unsubscribed on the current session.
    pub fn unsubscribe(&mut self, channel: &str) {
        self.desired.remove(channel);
        self.subscribe_retry_at.remove(channel);
    }

    /// Starts a clean shutdown: a `/meta/disconnect` is sent if a session exists.
    pub fn disconnect(&mut self) {
        match self.phase {
            Phase::Session | Phase::Handshake => {
                self.phase = Phase::Disconnecting;
                self.connect_at = None;
                self.settle_disconnect();
            }
            Phase::Terminated => {
                self.phase = Phase::Disconnected;
                self.events.push_back(ProtocolEvent::Disconnected);
            }
            Phase::Disconnecting | Phase::Disconnected => {}
        }
    }

    /// After [`ProtocolEvent::Terminated`]: start over with a handshake at `now + delay`
    /// (the driver has typically rebuilt its transport and credentials).
    pub fn restart(&mut self, now: Instant, delay: Duration) {
        if self.phase != Phase::Terminated {
            return;
        }
        self.abandon_session();
        self.backoff.reset();
        self.handshakes_without_connect = 0;
        self.connect_at = Some(now + delay);
        if self.cfg.requires_login {
            self.auth = Auth::Due(now + delay);
        }
    }

    /// The login asked for by [`ProtocolEvent::LoginRequired`] succeeded: handshake now.
    pub fn logged_in(&mut self, now: Instant) {
        if self.auth == Auth::InProgress {
            self.auth = Auth::Ready;
            self.connect_at = Some(self.connect_at.map_or(now, |t| t.max(now)));
        }
    }

    /// The login failed: try again after the backoff.
    pub fn login_failed(&mut self, now: Instant, error: String) {
        if self.auth == Auth::InProgress {
            let retry_in = self.backoff.next_delay();
            self.auth = Auth::Due(now + retry_in);
            self.events
                .push_back(ProtocolEvent::LoginFailed { error, retry_in });
        }
    }

    /// The next protocol event, if any.
    pub fn poll_event(&mut self) -> Option<ProtocolEvent> {
        self.events.pop_front()
    }

    /// When the driver should call [`poll_transmit`](Self::poll_transmit) again, if nothing
    /// else happens first. `None`: only a response can move things on.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));
        match (self.phase, self.auth) {
            (Phase::Handshake, Auth::Due(t)) => consider(t),
            (Phase::Handshake, Auth::InProgress) => {}
            (Phase::Handshake | Phase::Session, _) if !self.connect_lane_busy() => {
                if let Some(t) = self.connect_at {
                    consider(t);
                }
            }
            _ => {}
        }
        if self.phase == Phase::Session && !self.control_busy() {
            for t in self.subscribe_retry_at.values() {
                consider(*t);
            }
        }
        next
    }

    /// The next request to send at `now`, if one is due. Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Request> {
        match self.phase {
            Phase::Terminated | Phase::Disconnected => None,
            Phase::Disconnecting => {
                if self.disconnect_sent || self.control_busy() {
                    return None;
                }
                let client_id = self.client_id.clone()?;
                self.disconnect_sent = true;
                let msg_id = self.msg_id();
                let message =
                    json!({"id": msg_id, "channel": "/meta/disconnect", "clientId": client_id});
                Some(self.request(
                    RequestKind::Control,
                    InflightKind::Control {
                        ops: vec![ControlOp::Disconnect { msg_id }],
                    },
                    vec![message],
                    self.cfg.max_network_delay,
                ))
            }
            Phase::Handshake => {
                match self.auth {
                    Auth::Ready => {}
                    Auth::Due(t) if t <= now && !self.connect_lane_busy() => {
                        self.auth = Auth::InProgress;
                        self.events.push_back(ProtocolEvent::LoginRequired);
                        return None;
                    }
                    Auth::Due(_) | Auth::InProgress => return None,
                }
                if self.connect_lane_busy() || self.connect_at.is_none_or(|t| t > now) {
                    return None;
                }
                self.connect_at = None;
                let msg_id = self.msg_id();
                let mut message = json!({
                    "id": msg_id,
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "minimumVersion": "1.0",
                    "supportedConnectionTypes": self.supported_types(),
                });
                if let Some(ext) = &self.cfg.handshake_ext {
                    message["ext"] = ext.clone();
                }
                if self.cfg.ack {
                    if !message["ext"].is_object() {
                        message["ext"] = json!({});
                    }
                    message["ext"]["ack"] = json!(true);
                }
                Some(self.request(
                    RequestKind::Handshake,
                    InflightKind::Handshake { msg_id },
                    vec![message],
                    self.cfg.max_network_delay,
                ))
            }
            Phase::Session => {
                if let Some(req) = self.control_request(now) {
                    return Some(req);
                }
                if self.connect_lane_busy() || self.connect_at.is_none_or(|t| t > now) {
                    return None;
                }
                self.connect_at = None;
                let client_id = self.client_id.clone()?;
                let msg_id = self.msg_id();
                let mut message = json!({
                    "id": msg_id,
                    "channel": "/meta/connect",
                    "clientId": client_id,
                    "connectionType": self.cfg.connection_type,
                });
                if self.ack.enabled {
                    message["ext"] = json!({"ack": self.ack.batch});
                }
                let hold = if self.first_connect {
                    message["advice"] = json!({"timeout": 0});
                    Duration::ZERO
                } else {
                    self.advice.timeout
                };
                Some(self.request(
                    RequestKind::Connect,
                    InflightKind::Connect { msg_id },
                    vec![message],
                    hold + self.cfg.max_network_delay,
                ))
            }
        }
    }

    /// Feeds the outcome of request `id`: the response body, or why there is none.
    pub fn handle_response(
        &mut self,
        now: Instant,
        id: RequestId,
        outcome: Result<&[u8], TransportError>,
    ) {
        let Some(inflight) = self.inflight.remove(&id) else {
            return;
        };
        let current = inflight.generation == self.generation;
        let body = match outcome {
            Ok(body) => body,
            Err(error) => {
                self.on_request_failed(now, &inflight, current, &error);
                return;
            }
        };
        let parsed = match parse_response(body, &self.cfg.connection_type) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.events.push_back(ProtocolEvent::InvalidResponse {
                    error: error.to_string(),
                });
                self.on_request_failed(
                    now,
                    &inflight,
                    current,
                    &TransportError::Invalid(error.to_string()),
                );
                return;
            }
        };
        for error in &parsed.invalid {
            self.events.push_back(ProtocolEvent::InvalidResponse {
                error: error.to_string(),
            });
        }
        let mut replies = Vec::new();
        let mut deliveries = Vec::new();
        for message in parsed.messages {
            if message.is_reply() {
                replies.push(message);
            } else {
                deliveries.push(message);
            }
        }
        self.route_deliveries(deliveries);
        self.on_replies(now, inflight, current, replies);
    }

    // ---- internals -------------------------------------------------------------------------

    fn supported_types(&self) -> Vec<String> {
        if self.cfg.supported_connection_types.is_empty() {
            vec![self.cfg.connection_type.clone()]
        } else {
            self.cfg.supported_connection_types.clone()
        }
    }

    fn msg_id(&mut self) -> String {
        self.next_msg_id += 1;
        self.next_msg_id.to_string()
    }

    fn request(
        &mut self,
        kind: RequestKind,
        inflight: InflightKind,
        messages: Vec<Value>,
        timeout: Duration,
    ) -> Request {
        self.next_request_id += 1;
        let id = self.next_request_id;
        self.inflight.insert(
            id,
            Inflight {
                kind: inflight,
                generation: self.generation,
            },
        );
        Request {
            id,
            kind,
            messages,
            timeout,
        }
    }

    /// A handshake, or a connect of the current session, is in flight.
    fn connect_lane_busy(&self) -> bool {
        self.inflight.values().any(|f| match f.kind {
            InflightKind::Handshake { .. } => true,
            InflightKind::Connect { .. } => f.generation == self.generation,
            InflightKind::Control { .. } => false,
        })
    }

    /// A control request of the current session is in flight.
    fn control_busy(&self) -> bool {
        self.inflight.values().any(|f| {
            matches!(f.kind, InflightKind::Control { .. }) && f.generation == self.generation
        })
    }

    fn control_request(&mut self, now: Instant) -> Option<Request> {
        if self.control_busy() {
            return None;
        }
        let client_id = self.client_id.clone()?;
        let mut ops = Vec::new();
        let mut messages = Vec::new();
        let to_unsubscribe: Vec<String> =
            self.subscribed.difference(&self.desired).cloned().collect();
        for channel in to_unsubscribe {
            let msg_id = self.msg_id();
            messages.push(json!({"id": msg_id, "channel": "/meta/unsubscribe", "clientId": client_id, "subscription": channel}));
            ops.push(ControlOp::Unsubscribe { msg_id, channel });
        }
        let to_subscribe: Vec<String> = self
            .desired
            .difference(&self.subscribed)
            .filter(|c| self.subscribe_retry_at.get(*c).is_none_or(|t| *t <= now))
            .cloned()
            .collect();
        for channel in to_subscribe {
            let msg_id = self.msg_id();
            messages.push(json!({"id": msg_id, "channel": "/meta/subscribe", "clientId": client_id, "subscription": channel}));
            ops.push(ControlOp::Subscribe { msg_id, channel });
        }
        if ops.is_empty() {
            return None;
        }
        Some(self.request(
            RequestKind::Control,
            InflightKind::Control { ops },
            messages,
            self.cfg.max_network_delay,
        ))
    }

    fn route_delivery(&mut self, message: Message) {
        if channel::is_meta(&message.channel) {
            // Server-initiated meta messages without `successful` (e.g. a pushed disconnect)
            // carry nothing for us.
            return;
        }
        let Some(data) = message.data else {
            self.events.push_back(ProtocolEvent::InvalidResponse {
                error: format!(
                    "message on {} has neither `successful` nor `data`",
                    message.channel
                ),
            });
            return;
        };
        if self
            .desired
            .iter()
            .any(|p| channel::matches(p, &message.channel))
        {
            self.events.push_back(ProtocolEvent::Delivery(RawDelivery {
                channel: message.channel,
                data,
                id: message.id,
            }));
        } else {
            self.events.push_back(ProtocolEvent::Unroutable {
                channel: message.channel,
            });
        }
    }

    fn apply_advice(&mut self, advice: Option<&Advice>) {
        let Some(advice) = advice else { return };
        // New advice replaces the old; what it leaves out falls back to the client defaults.
        // Advised times are capped at MAX_ADVISED: a server's number (up to i64::MAX ms) must
        // not push a deadline past what an Instant can hold.
        let advised = |ms: u64| Duration::from_millis(ms).min(MAX_ADVISED);
        self.advice = Effective {
            timeout: advice.timeout.map_or(self.cfg.default_timeout, advised),
            interval: advised(advice.interval.unwrap_or(0).max(0).unsigned_abs()),
            max_interval: advice
                .max_interval
                .map_or(self.cfg.default_max_interval, advised),
        };
        if advice.multiple_clients != self.multiple_clients {
            self.multiple_clients = advice.multiple_clients;
            if advice.multiple_clients {
                self.events.push_back(ProtocolEvent::MultipleClients);
            }
        }
    }

    fn on_replies(
        &mut self,
        now: Instant,
        inflight: Inflight,
        current: bool,
        mut replies: Vec<Message>,
    ) {
        let mut take = |channel: &str, msg_id: &str| -> Option<Message> {
            let pos = replies
                .iter()
                .position(|m| m.channel == channel && m.id.as_deref() == Some(msg_id))?;
            Some(replies.remove(pos))
        };
        match inflight.kind {
            InflightKind::Handshake { ref msg_id } => {
                let reply = take("/meta/handshake", msg_id);
                self.on_handshake_reply(now, reply);
            }
            InflightKind::Connect { ref msg_id } => {
                let reply = take("/meta/connect", msg_id);
                if current {
                    self.on_connect_reply(now, reply);
                }
            }
            InflightKind::Control { ref ops } => {
                let answered: Vec<(ControlOp, Option<Message>)> = ops
                    .iter()
                    .map(|op| {
                        let reply = match op {
                            ControlOp::Subscribe { msg_id, .. } => take("/meta/subscribe", msg_id),
                            ControlOp::Unsubscribe { msg_id, .. } => {
                                take("/meta/unsubscribe", msg_id)
                            }
                            ControlOp::Disconnect { msg_id } => take("/meta/disconnect", msg_id),
                        };
                        (op.clone(), reply)
                    })
                    .collect();
                if current {
                    self.on_control_replies(now, answered);
                }
            }
        }
        for stray in replies {
            self.events.push_back(ProtocolEvent::MismatchedReply {
                channel: stray.channel,
                id: stray.id,
            });
        }
    }

    fn on_handshake_reply(&mut self, now: Instant, reply: Option<Message>) {
        let Some(reply) = reply else {
            self.on_handshake_failed(now, "response carried no handshake reply".to_owned(), None);
            return;
        };
        let ok_types = reply
            .supported_connection_types
            .as_ref()
            .is_none_or(|types| types.iter().any(|t| t == &self.cfg.connection_type));
        match (&reply.client_id, reply.is_success(), ok_types) {
            (Some(client_id), true, true) => {
                self.apply_advice(reply.advice.as_ref());
                let rehandshake = self.ever_handshaken;
                self.ever_handshaken = true;
                self.client_id = Some(client_id.clone());
                self.handshakes_without_connect += 1;
                self.subscribed.clear();
                self.subscribe_retry_at.clear();
                self.subscribe_backoff.reset();
                self.subscriptions_reported = false;
                self.resubscribing = rehandshake;
                self.first_connect = true;
                self.ack = AckState::default();
                if self.cfg.ack {
                    if let Some(batch) = granted_ack(reply.ext.as_ref()) {
                        self.ack.enabled = true;
                        self.ack.batch = batch;
                        self.events.push_back(ProtocolEvent::AckEnabled);
                    }
                }
                self.events.push_back(ProtocolEvent::HandshakeSucceeded {
                    client_id: client_id.clone(),
                    rehandshake,
                });
                if self.phase == Phase::Disconnecting {
                    self.settle_disconnect();
                } else {
                    self.phase = Phase::Session;
                    self.connect_at = Some(now + self.advice.interval);
                }
            }
            (_, true, false) => self.on_handshake_failed(
                now,
                format!(
                    "server supports none of our connection types (it offers {:?})",
                    reply.supported_connection_types.unwrap_or_default()
                ),
                None,
            ),
            _ => {
                let error = reply.error.as_ref().map_or_else(
                    || "handshake refused without error".to_owned(),
                    BayeuxError::to_string,
                );
                self.on_handshake_failed(now, error, reply.advice.as_ref());
            }
        }
    }

    fn on_handshake_failed(&mut self, now: Instant, error: String, advice: Option<&Advice>) {
        if self.phase == Phase::Disconnecting {
            self.settle_disconnect();
            return;
        }
        self.apply_advice(advice);
        if advice.is_some_and(|a| {
            a.reconnect == Some(Reconnect::None) || a.interval.is_some_and(|i| i < 0)
        }) {
            self.terminate(error);
            return;
        }
        let retry_in = self.backoff.next_delay().max(self.advice.interval);
        self.connect_at = Some(now + retry_in);
        self.events
            .push_back(ProtocolEvent::HandshakeFailed { error, retry_in });
    }

    fn on_connect_reply(&mut self, now: Instant, reply: Option<Message>) {
        if self.phase != Phase::Session {
            return;
        }
        let Some(reply) = reply else {
            self.on_connect_failed(now, "response carried no connect reply".to_owned(), None);
            return;
        };
        self.apply_advice(reply.advice.as_ref());
        if self.ack.enabled {
            if let Some(batch) = ack_batch(reply.ext.as_ref()) {
                self.ack.batch = batch;
            }
        }
        let reconnect = reply.advice.as_ref().and_then(|a| a.reconnect.clone());
        let negative_interval = reply
            .advice
            .as_ref()
            .and_then(|a| a.interval)
            .is_some_and(|i| i < 0);
        if reply.is_success() {
            self.backoff.reset();
            self.unconnected_since = None;
            self.handshakes_without_connect = 0;
            self.first_connect = false;
            if !self.connected {
                self.connected = true;
                self.events.push_back(ProtocolEvent::Connected);
                self.report_subscriptions();
            }
            match reconnect {
                Some(Reconnect::Handshake) => self.rehandshake(now, RehandshakeCause::Advice),
                Some(Reconnect::None) => self.terminate("server advised reconnect none".to_owned()),
                _ if negative_interval => {
                    self.terminate("server advised a negative interval".to_owned())
                }
                _ => self.connect_at = Some(now + self.advice.interval),
            }
            return;
        }
        let error = reply.error.as_ref().map_or_else(
            || "connect refused without error".to_owned(),
            BayeuxError::to_string,
        );
        match reconnect {
            Some(Reconnect::Handshake) => self.rehandshake(now, RehandshakeCause::Advice),
            Some(Reconnect::None) => self.terminate(error),
            _ if negative_interval => self.terminate(error),
            None if reply
                .error
                .as_ref()
                .is_some_and(BayeuxError::is_unknown_session) =>
            {
                self.rehandshake(now, RehandshakeCause::UnknownSession)
            }
            _ => self.on_connect_failed(now, error, None),
        }
    }

    fn on_connect_failed(&mut self, now: Instant, error: String, http_auth: Option<u16>) {
        self.connected = false;
        self.first_connect = true;
        let since = *self.unconnected_since.get_or_insert(now);
        let retry_in = self.backoff.next_delay().max(self.advice.interval);
        if let Some(status) = http_auth {
            self.abandon_session();
            self.connect_at = Some(now + retry_in);
            if self.cfg.requires_login {
                self.auth = Auth::Due(now + retry_in);
            }
            self.events.push_back(ProtocolEvent::SessionLost {
                cause: RehandshakeCause::HttpAuth(status),
                retry_in,
            });
            return;
        }
        let budget = self.advice.timeout + self.advice.interval + self.advice.max_interval;
        if now.saturating_duration_since(since) + retry_in > budget {
            // The server has surely expired the session by the time we would retry: handshake.
            self.abandon_session();
            self.connect_at = Some(now + retry_in);
            self.events.push_back(ProtocolEvent::SessionLost {
                cause: RehandshakeCause::SessionExpired,
                retry_in,
            });
            return;
        }
        self.connect_at = Some(now + retry_in);
        self.events
            .push_back(ProtocolEvent::ConnectFailed { error, retry_in });
    }

    fn on_control_replies(&mut self, now: Instant, answered: Vec<(ControlOp, Option<Message>)>) {
        let mut lost_session = None;
        for (op, reply) in answered {
            match op {
                ControlOp::Subscribe { channel, .. } => match reply {
                    Some(r) if r.is_success() => {
                        self.subscribe_retry_at.remove(&channel);
                        if self.desired.contains(&channel) {
                            self.subscribed.insert(channel.clone());
                        }
                        self.events.push_back(ProtocolEvent::Subscribed { channel });
                    }
                    Some(r) if Self::says_unknown_session(&r) => {
                        lost_session.get_or_insert(if r.advice.is_some() {
                            RehandshakeCause::Advice
                        } else {
                            RehandshakeCause::UnknownSession
                        });
                    }
                    other => {
                        let error = other
                            .and_then(|r| r.error.map(|e| e.raw))
                            .unwrap_or_else(|| "no subscribe reply".to_owned());
                        self.subscribe_failed(now, channel, error);
                    }
                },
                ControlOp::Unsubscribe { channel, .. } => {
                    self.subscribed.remove(&channel);
                    if reply.is_some_and(|r| r.is_success()) {
                        self.events
                            .push_back(ProtocolEvent::Unsubscribed { channel });
                    }
                }
                ControlOp::Disconnect { .. } => self.finish_disconnect(),
            }
        }
        if let Some(cause) = lost_session {
            if self.phase == Phase::Session {
                self.rehandshake(now, cause);
            }
        } else {
            self.report_subscriptions();
        }
    }

    fn says_unknown_session(reply: &Message) -> bool {
        match reply.advice.as_ref().and_then(|a| a.reconnect.as_ref()) {
            Some(Reconnect::Handshake) => true,
            Some(_) => false,
            None => reply
                .error
                .as_ref()
                .is_some_and(BayeuxError::is_unknown_session),
        }
    }

    fn subscribe_failed(&mut self, now: Instant, channel: String, error: String) {
        let retry_in = self.subscribe_backoff.next_delay();
        self.subscribe_retry_at
            .insert(channel.clone(), now + retry_in);
        self.events.push_back(ProtocolEvent::SubscribeFailed {
            channel,
            error,
            retry_in,
        });
    }

    fn report_subscriptions(&mut self) {
        if !self.subscriptions_reported
            && self.connected
            && self.desired.is_subset(&self.subscribed)
        {
            self.subscriptions_reported = true;
            self.subscribe_backoff.reset();
            self.events.push_back(ProtocolEvent::SubscriptionsComplete {
                resubscribed: self.resubscribing,
                channels: self.subscribed.len(),
            });
        }
    }

    fn on_request_failed(
        &mut self,
        now: Instant,
        inflight: &Inflight,
        current: bool,
        error: &TransportError,
    ) {
        match &inflight.kind {
            InflightKind::Handshake { .. } => {
                self.on_handshake_failed(now, error.to_string(), None);
                let refused = matches!(
                    error,
                    TransportError::Status {
                        status: 401 | 403,
                        ..
                    }
                );
                if refused && self.cfg.requires_login && self.phase == Phase::Handshake {
                    // Our credentials or session cookie were refused: log in again first.
                    self.auth = Auth::Due(self.connect_at.unwrap_or(now));
                }
            }
            InflightKind::Connect { .. } if current && self.phase == Phase::Session => {
                let auth = match error {
                    TransportError::Status { status, .. } if *status == 401 || *status == 403 => {
                        Some(*status)
                    }
                    _ => None,
                };
                self.on_connect_failed(now, error.to_string(), auth);
            }
            InflightKind::Connect { .. } => {}
            InflightKind::Control { ops } if current => {
                for op in ops.clone() {
                    match op {
                        ControlOp::Subscribe { channel, .. } => {
                            self.subscribe_failed(now, channel, error.to_string())
                        }
                        ControlOp::Unsubscribe { channel, .. } => {
                            self.subscribed.remove(&channel);
                        }
                        ControlOp::Disconnect { .. } => self.finish_disconnect(),
                    }
                }
            }
            InflightKind::Control { .. } => {}
        }
    }

    /// Drops the current session: everything in flight for it becomes stale, and the next
    /// action is a handshake (scheduled by the caller).
    fn abandon_session(&mut self) {
        self.generation += 1;
        self.phase = Phase::Handshake;
        self.client_id = None;
        self.connected = false;
        self.first_connect = true;
        self.subscribed.clear();
        self.subscribe_retry_at.clear();
        self.subscriptions_reported = false;
        self.unconnected_since = None;
    }

    fn rehandshake(&mut self, now: Instant, cause: RehandshakeCause) {
        self.abandon_session();
        // At once, unless the last handshake never reached a successful connect: then the
        // server keeps forgetting us, and handshaking at full speed would only hammer it.
        let retry_in = if self.handshakes_without_connect > 0 {
            self.backoff.next_delay()
        } else {
            self.backoff.reset();
            self.advice.interval
        };
        self.connect_at = Some(now + retry_in);
        if self.relogin_on_rehandshake && self.cfg.requires_login && self.auth == Auth::Ready {
            self.auth = Auth::Due(now + retry_in);
        }
        self.events
            .push_back(ProtocolEvent::SessionLost { cause, retry_in });
    }

    fn terminate(&mut self, error: String) {
        self.abandon_session();
        self.phase = Phase::Terminated;
        self.connect_at = None;
        self.events.push_back(ProtocolEvent::Terminated { error });
    }

    /// In `Disconnecting`: finish at once when there is no session to disconnect.
    fn settle_disconnect(&mut self) {
        let handshaking = self
            .inflight
            .values()
            .any(|f| matches!(f.kind, InflightKind::Handshake { .. }));
        if self.client_id.is_none() && !handshaking {
            self.finish_disconnect();
        }
    }

    fn finish_disconnect(&mut self) {
        if self.phase == Phase::Disconnected {
            return;
        }
        self.phase = Phase::Disconnected;
        self.client_id = None;
        self.connected = false;
        self.connect_at = None;
        self.events.push_back(ProtocolEvent::Disconnected);
    }
}

#[cfg(test)]
mod tests;

/// The `ack` grant of a handshake reply: `ext.ack` is `true` (old format, batch 0) or
/// `{"enabled": true, "batch": N}`. `None`: not granted.
fn granted_ack(ext: Option<&RawJson>) -> Option<u64> {
    let ext: Value = serde_json::from_str(ext?.get()).ok()?;
    match ext.get("ack")? {
        Value::Bool(true) => Some(0),
        Value::Object(o) if o.get("enabled") == Some(&Value::Bool(true)) => {
            Some(o.get("batch").and_then(Value::as_u64).unwrap_or(0))
        }
        _ => None,
    }
}

/// The batch number of a connect reply's `ext.ack`.
fn ack_batch(ext: Option<&RawJson>) -> Option<u64> {
    let ext: Value = serde_json::from_str(ext?.get()).ok()?;
    ext.get("ack")?.as_u64()
}
