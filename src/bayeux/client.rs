//! The task that runs one Bayeux session: it drives the sans-I/O [`Protocol`] with the
//! [`LongPolling`] transport, turns protocol events into log lines and metrics, and hands every
//! delivery downstream as a [`Delivery`].
//!
//! Requests run concurrently in a `FuturesUnordered`: the held `/meta/connect` keeps running while
//! subscribes travel beside it, and nothing ever drops an in-flight request (no `select!` arm owns
//! one). Shutdown is an argument: when the token is cancelled the session sends
//! `/meta/disconnect`, waits for the requests still out (whose deliveries are still handed on),
//! and returns. When the server refuses the session for good (`reconnect: none`), the task logs
//! it, waits `reauth_delay`, and starts over with a fresh cookie jar.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::protocol::{
    Protocol, ProtocolConfig, ProtocolEvent, RequestKind, SessionState, TransportError,
};
use super::transport::LongPolling;
use super::websocket::WebSocket;
use crate::http::{BuildError, HttpSettings};
use crate::metrics::{
    BAYEUX_CONNECT_FAILURES, BAYEUX_CONNECT_SECONDS, BAYEUX_DELIVERIES, BAYEUX_DUPLICATES_DROPPED,
    BAYEUX_HANDSHAKES, BAYEUX_INVALID_RESPONSES, BAYEUX_REHANDSHAKES, BAYEUX_RESUBSCRIBES,
    BAYEUX_SUBSCRIBE_FAILURES, BAYEUX_TERMINATIONS, BAYEUX_TRANSPORT, BAYEUX_TRANSPORT_FALLBACKS,
    BAYEUX_UNROUTABLE, GWS_LOGIN_FAILURES,
};

/// The Bayeux `connectionType` of the WebSocket transport.
pub const WEBSOCKET: &str = "websocket";
/// The Bayeux `connectionType` of the long-polling transport.
pub const LONG_POLLING: &str = "long-polling";

/// The transports of one session and which one is in use (`reference/bayeux.md` §1.8): the
/// configured order; a fall back from WebSocket to long-polling when the socket cannot be
/// opened or its first handshake fails; and stickiness once WebSocket has worked.
struct Transports {
    long_polling: LongPolling,
    websocket: Option<WebSocket>,
    pushes: Option<mpsc::Receiver<bytes::Bytes>>,
    /// Whether WebSocket has carried a successful connect in this session's life.
    websocket_worked: bool,
}

impl Transports {
    fn new(long_polling: LongPolling, settings: &SessionSettings) -> Transports {
        let wants_ws = settings
            .protocol
            .supported_connection_types
            .iter()
            .any(|t| t == WEBSOCKET);
        let websocket = if wants_ws && settings.http.proxy.is_none() {
            WebSocket::new(
                long_polling.http().clone(),
                long_polling.url(),
                &settings.http,
            )
        } else {
            None
        };
        let pushes = websocket.as_ref().and_then(WebSocket::pushes);
        Transports {
            long_polling,
            websocket,
            pushes,
            websocket_worked: false,
        }
    }

    async fn send(
        self_ws: Option<WebSocket>,
        lp: LongPolling,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<bytes::Bytes, TransportError> {
        match self_ws {
            Some(ws) => ws.send(body, timeout).await,
            None => lp.send(body, timeout).await,
        }
    }
}

async fn next_push(pushes: &mut Option<mpsc::Receiver<bytes::Bytes>>) -> Option<bytes::Bytes> {
    match pushes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Records the transport in use in the gauge `chatwatch_bayeux_transport{account,transport}`.
fn transport_gauge(account: &str, current: &str) {
    for t in [WEBSOCKET, LONG_POLLING] {
        metrics::gauge!(BAYEUX_TRANSPORT, "account" => account.to_owned(), "transport" => t)
            .set(if t == current { 1.0 } else { 0.0 });
    }
}

/// What the layer above Bayeux (the GWS session) does at the session's turning points. The
/// driver runs these concurrently with the protocol, so a slow login never delays the processing
/// of a held connect's response.
pub trait SessionHooks: Send + Sync + 'static {
    /// A transport with a fresh cookie jar; called at start and after the server refused the
    /// session for good.
    fn transport(&self) -> Result<LongPolling, BuildError>;
    /// Logs in (GWS: `GET /api/v2/me` for the cookie and the CSRF token). Called before the
    /// first handshake and whenever the server refused our credentials, when the protocol was
    /// configured with `requires_login`. The error text is logged.
    fn login(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// Called each time the whole subscription set is confirmed on a new session.
    fn subscribed(&self, rehandshake: bool) -> impl Future<Output = ()> + Send;
    /// Called once on shutdown, before `/meta/disconnect`.
    fn stopping(&self) -> impl Future<Output = ()> + Send;
}

/// Hooks for a plain Bayeux server: no login, nothing to do around subscriptions.
#[derive(Debug, Clone)]
pub struct PlainBayeux {
    /// How to build the transport.
    pub http: HttpSettings,
}

impl SessionHooks for PlainBayeux {
    fn transport(&self) -> Result<LongPolling, BuildError> {
        LongPolling::new(&self.http)
    }
    async fn login(&self) -> Result<(), String> {
        Ok(())
    }
    async fn subscribed(&self, _rehandshake: bool) {}
    async fn stopping(&self) {}
}

enum HookDone {
    Login(Result<(), String>),
    Other,
}

type HookFuture = Pin<Box<dyn Future<Output = HookDone> + Send>>;
use super::Delivery;

/// Everything one session needs.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The account name, carried in logs and metrics.
    pub account: String,
    /// Protocol tunables and the channels to stay subscribed to.
    pub protocol: ProtocolConfig,
    /// HTTP settings of the long-polling transport.
    pub http: HttpSettings,
    /// Wait before starting over after the server refused the session (`reconnect: none`).
    pub reauth_delay: Duration,
    /// Beaten by the session loop at least every [`HEARTBEAT_EVERY`] while it runs (the
    /// systemd watchdog checks it).
    pub heartbeat: Heartbeat,
}

/// How often an idle session loop proves it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// A loop's proof of life: the time of its last beat. Cheap to clone; clones share the beat.
#[derive(Debug, Clone)]
pub struct Heartbeat(Arc<std::sync::atomic::AtomicU64>);

impl Default for Heartbeat {
    fn default() -> Self {
        let beat = Heartbeat(Arc::new(std::sync::atomic::AtomicU64::new(0)));
        beat.beat();
        beat
    }
}

impl Heartbeat {
    fn epoch() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// Records a beat now.
    pub fn beat(&self) {
        let ms = Self::epoch().elapsed().as_millis() as u64;
        self.0.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Time since the last beat.
    pub fn age(&self) -> Duration {
        let last = self.0.load(std::sync::atomic::Ordering::Relaxed);
        let now = Self::epoch().elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(last))
    }
}

/// What a session reports about itself, for readiness checks and tests.
///
/// Read it through a `watch::Receiver` and never hold a `watch::Ref` (from `borrow` or
/// `wait_for`) across an `.await`: the session writes every state change into the channel and
/// would wait for the reader to let go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStatus {
    /// The protocol state.
    pub state: SessionState,
    /// Whether every desired channel is subscribed on a connected session.
    pub subscribed: bool,
    /// Successful handshakes so far.
    pub handshakes: u64,
    /// Times the full subscription set was (re-)applied and confirmed.
    pub subscription_rounds: u64,
    /// The transport in use (`websocket` or `long-polling`).
    pub transport: &'static str,
}

impl Default for SessionStatus {
    fn default() -> Self {
        SessionStatus {
            state: SessionState::Handshaking,
            subscribed: false,
            handshakes: 0,
            subscription_rounds: 0,
            transport: LONG_POLLING,
        }
    }
}

/// Why a session task stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The transport could not be built (bad CA file, proxy, header).
    #[error("account {account}: {source}")]
    Build {
        /// The account.
        account: String,
        /// The cause.
        #[source]
        source: BuildError,
    },
    /// The receiver of deliveries is gone.
    #[error("account {account}: the event pipeline has stopped")]
    PipelineClosed {
        /// The account.
        account: String,
    },
}

/// Runs one session until `shutdown` is cancelled (then disconnects cleanly) or the pipeline
/// closes. Deliveries go to `deliveries` in the order they were read; `status` follows the
/// session state; `hooks` log in and react to new subscriptions.
pub async fn run<H: SessionHooks, M: From<Delivery> + Send + 'static>(
    settings: SessionSettings,
    hooks: Arc<H>,
    deliveries: mpsc::Sender<M>,
    status: watch::Sender<SessionStatus>,
    shutdown: CancellationToken,
) -> Result<(), ClientError> {
    let account = settings.account.clone();
    let build = || {
        hooks.transport().map_err(|source| ClientError::Build {
            account: account.clone(),
            source,
        })
    };
    let mut transports = Transports::new(build()?, &settings);
    let mut hook_tasks: FuturesUnordered<HookFuture> = FuturesUnordered::new();
    let mut protocol_config = settings.protocol.clone();
    if transports.websocket.is_none() && protocol_config.connection_type == WEBSOCKET {
        if settings.http.proxy.is_some() {
            info!(account = %account, "a proxy is configured: using long-polling (WebSocket does not go through HTTP proxies here)");
        }
        protocol_config.connection_type = LONG_POLLING.to_owned();
    }
    let mut proto = Protocol::new(protocol_config, Instant::now());
    let mut current: &'static str = if proto.connection_type() == WEBSOCKET {
        WEBSOCKET
    } else {
        LONG_POLLING
    };
    transport_gauge(&account, current);
    status.send_modify(|s| s.transport = current);
    proto.set_relogin_on_rehandshake(current == WEBSOCKET);
    let mut inflight = FuturesUnordered::new();
    let mut shutdown_deadline: Option<Instant> = None;
    let mut last_state = proto.state();
    let mut listening = false;
    let labels = [("account", account.clone())];
    // Registered once: looking a labelled metric up costs more than the increment.
    let deliveries_counter = metrics::counter!(BAYEUX_DELIVERIES, &labels);
    info!(account = %account, url = %settings.http.url, channels = ?settings.protocol.channels, "session starting");

    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        settings.heartbeat.beat();
        let now = Instant::now();
        while let Some(req) = proto.poll_transmit(now) {
            debug!(account = %account, kind = ?req.kind, id = req.id, "sending {}", summarize(&req.messages));
            let ws = (current == WEBSOCKET)
                .then(|| transports.websocket.clone())
                .flatten();
            let lp = transports.long_polling.clone();
            let body = req.body();
            let (id, kind, timeout) = (req.id, req.kind, req.timeout);
            inflight.push(async move {
                let started = Instant::now();
                let result = Transports::send(ws, lp, body, timeout).await;
                (id, kind, started, result)
            });
        }
        while let Some(event) = proto.poll_event() {
            if let ProtocolEvent::Delivery(raw) = event {
                let delivery = Delivery {
                    channel: raw.channel,
                    data: raw.data,
                    id: raw.id,
                    received_at: time::OffsetDateTime::now_utc(),
                };
                deliveries_counter.increment(1);
                if deliveries.send(M::from(delivery)).await.is_err() {
                    return Err(ClientError::PipelineClosed { account });
                }
                continue;
            }
            report(&account, &settings, &event, &status);
            match event {
                ProtocolEvent::Terminated { .. } => {
                    // The server refused the session for good. Start over later with a fresh
                    // cookie jar and a fresh login, on the preferred transport again.
                    if let Some(ws) = &transports.websocket {
                        ws.close().await;
                    }
                    transports = Transports::new(build()?, &settings);
                    current = if transports.websocket.is_some()
                        && settings.protocol.connection_type == WEBSOCKET
                    {
                        WEBSOCKET
                    } else {
                        LONG_POLLING
                    };
                    proto.set_connection_type(current);
                    proto.set_relogin_on_rehandshake(current == WEBSOCKET);
                    transport_gauge(&account, current);
                    status.send_modify(|s| s.transport = current);
                    proto.restart(Instant::now(), settings.reauth_delay);
                }
                ProtocolEvent::HandshakeFailed { ref error, .. }
                    if current == WEBSOCKET
                        && !transports.websocket_worked
                        && settings
                            .protocol
                            .supported_connection_types
                            .iter()
                            .any(|t| t == LONG_POLLING) =>
                {
                    warn!(account = %account, error = %error, "WebSocket did not work; falling back to long-polling");
                    metrics::counter!(BAYEUX_TRANSPORT_FALLBACKS, "account" => account.clone())
                        .increment(1);
                    if let Some(ws) = &transports.websocket {
                        ws.close().await;
                    }
                    current = LONG_POLLING;
                    proto.set_connection_type(current);
                    proto.set_relogin_on_rehandshake(false);
                    transport_gauge(&account, current);
                    status.send_modify(|s| s.transport = current);
                }
                ProtocolEvent::Connected
                    if current == WEBSOCKET && !transports.websocket_worked =>
                {
                    transports.websocket_worked = true;
                    info!(account = %account, "WebSocket works; staying on it across reconnects");
                }
                ProtocolEvent::LoginRequired => {
                    let h = hooks.clone();
                    hook_tasks.push(Box::pin(async move { HookDone::Login(h.login().await) }));
                }
                ProtocolEvent::SubscriptionsComplete { resubscribed, .. } => {
                    let h = hooks.clone();
                    hook_tasks.push(Box::pin(async move {
                        h.subscribed(resubscribed).await;
                        HookDone::Other
                    }));
                }
                _ => {}
            }
        }
        let state = proto.state();
        if state != last_state {
            info!(account = %account, from = last_state.as_str(), to = state.as_str(), "session state changed");
            last_state = state;
        }
        let subscribed = proto.is_subscribed();
        if subscribed != listening {
            listening = subscribed;
            if listening {
                info!(account = %account, channels = ?settings.protocol.channels, "listening: connected and subscribed");
            } else {
                info!(account = %account, state = state.as_str(), "not listening until the session recovers");
            }
        }
        status.send_if_modified(|s| {
            let changed = s.state != state || s.subscribed != subscribed;
            s.state = state;
            s.subscribed = subscribed;
            changed
        });
        if proto.is_finished() {
            info!(account = %account, "session disconnected");
            if let Some(ws) = &transports.websocket {
                ws.close().await;
            }
            return Ok(());
        }
        let wake = proto.poll_timeout();
        tokio::select! {
            // Pushed frames first: a frame the socket read before a reply's frame is handled
            // before that reply, so deliveries keep the server's order.
            biased;
            Some(frame) = next_push(&mut transports.pushes) => {
                proto.handle_push(&frame);
            }
            Some((id, kind, started, result)) = inflight.next(), if !inflight.is_empty() => {
                if kind == RequestKind::Connect {
                    metrics::histogram!(BAYEUX_CONNECT_SECONDS, &labels)
                        .record(started.elapsed().as_secs_f64());
                }
                if let Err(e) = &result {
                    debug!(account = %account, id, kind = ?kind, error = %e, "request failed");
                }
                proto.handle_response(Instant::now(), id, result.as_deref().map_err(Clone::clone));
            }
            Some(done) = hook_tasks.next(), if !hook_tasks.is_empty() => {
                if let HookDone::Login(result) = done {
                    match result {
                        Ok(()) => {
                            info!(account = %account, "logged in");
                            proto.logged_in(Instant::now());
                        }
                        Err(e) => proto.login_failed(Instant::now(), e),
                    }
                }
            }
            _ = sleep_until(wake.unwrap_or(now)), if wake.is_some() => {}
            _ = beat.tick() => {}
            _ = shutdown.cancelled(), if shutdown_deadline.is_none() => {
                info!(account = %account, "disconnecting");
                let _ = tokio::time::timeout(settings.protocol.max_network_delay, hooks.stopping()).await;
                proto.disconnect();
                shutdown_deadline = Some(Instant::now() + settings.protocol.max_network_delay);
            }
            _ = sleep_until(shutdown_deadline.unwrap_or(now)), if shutdown_deadline.is_some() => {
                warn!(account = %account, pending = proto.inflight(), "disconnect did not complete in time; giving up on pending requests");
                return Ok(());
            }
        }
    }
}

/// Logs a protocol event (one structured line) and counts it.
fn report(
    account: &str,
    settings: &SessionSettings,
    event: &ProtocolEvent,
    status: &watch::Sender<SessionStatus>,
) {
    let acct = ("account", account.to_owned());
    match event {
        ProtocolEvent::Delivery(_) => {}
        ProtocolEvent::HandshakeSucceeded {
            client_id,
            rehandshake,
        } => {
            metrics::counter!(BAYEUX_HANDSHAKES, &[acct, ("result", "ok".to_owned())]).increment(1);
            status.send_modify(|s| s.handshakes += 1);
            info!(account, client_id = %client_id, rehandshake, "handshake succeeded");
        }
        ProtocolEvent::HandshakeFailed { error, retry_in } => {
            metrics::counter!(BAYEUX_HANDSHAKES, &[acct, ("result", "failed".to_owned())])
                .increment(1);
            warn!(account, url = %settings.http.url, error = %error, retry_in = ?retry_in, "handshake failed");
        }
        ProtocolEvent::Connected => info!(account, "connected"),
        ProtocolEvent::ConnectFailed { error, retry_in } => {
            metrics::counter!(BAYEUX_CONNECT_FAILURES, &[acct]).increment(1);
            warn!(account, error = %error, retry_in = ?retry_in, "connect failed; retrying");
        }
        ProtocolEvent::SessionLost { cause, retry_in } => {
            metrics::counter!(
                BAYEUX_REHANDSHAKES,
                &[acct, ("cause", cause.as_str().to_owned())]
            )
            .increment(1);
            warn!(account, cause = cause.as_str(), retry_in = ?retry_in, "session lost; handshaking again");
        }
        ProtocolEvent::Subscribed { channel } => debug!(account, channel = %channel, "subscribed"),
        ProtocolEvent::SubscribeFailed {
            channel,
            error,
            retry_in,
        } => {
            metrics::counter!(BAYEUX_SUBSCRIBE_FAILURES, &[acct]).increment(1);
            warn!(account, channel = %channel, error = %error, retry_in = ?retry_in, "subscribe failed; retrying");
        }
        ProtocolEvent::Unsubscribed { channel } => {
            info!(account, channel = %channel, "unsubscribed")
        }
        ProtocolEvent::SubscriptionsComplete {
            resubscribed,
            channels,
        } => {
            if *resubscribed {
                metrics::counter!(BAYEUX_RESUBSCRIBES, &[acct]).increment(1);
            }
            status.send_modify(|s| s.subscription_rounds += 1);
            info!(account, channels, resubscribed, "subscriptions active");
        }
        ProtocolEvent::MultipleClients => {
            warn!(account, "server reports multiple clients sharing one browser cookie; it will slow polling down")
        }
        ProtocolEvent::Unroutable { channel } => {
            metrics::counter!(BAYEUX_UNROUTABLE, &[acct]).increment(1);
            warn!(account, channel = %channel, "dropped a delivery on a channel with no subscription");
        }
        ProtocolEvent::InvalidResponse { error } => {
            metrics::counter!(BAYEUX_INVALID_RESPONSES, &[acct]).increment(1);
            warn!(account, error = %error, "invalid response from server");
        }
        ProtocolEvent::MismatchedReply { channel, id } => {
            debug!(account, channel = %channel, id = ?id, "ignored a reply that matches no request")
        }
        ProtocolEvent::Terminated { error } => {
            metrics::counter!(BAYEUX_TERMINATIONS, &[acct]).increment(1);
            error!(account, error = %error, restart_in = ?settings.reauth_delay, "server refused the session; starting over later");
        }
        ProtocolEvent::Disconnected => debug!(account, "disconnect acknowledged"),
        ProtocolEvent::LoginRequired => debug!(account, "logging in"),
        ProtocolEvent::DuplicateDropped { channel, id } => {
            metrics::counter!(BAYEUX_DUPLICATES_DROPPED, &[acct]).increment(1);
            debug!(account, channel = %channel, id = %id, "dropped a redelivered message (ack extension)");
        }
        ProtocolEvent::AckEnabled => info!(account, "the server granted the ack extension"),
        ProtocolEvent::LoginFailed { error, retry_in } => {
            metrics::counter!(GWS_LOGIN_FAILURES, &[acct]).increment(1);
            error!(account, error = %error, retry_in = ?retry_in, "login failed; retrying");
        }
    }
}

fn summarize(messages: &[serde_json::Value]) -> String {
    messages
        .iter()
        .filter_map(|m| m.get("channel").and_then(|c| c.as_str()))
        .collect::<Vec<_>>()
        .join(",")
}
