//! The CometD server side of the simulator: `/meta/handshake`, `/meta/connect` (held long-polls),
//! `/meta/subscribe`, `/meta/unsubscribe` and `/meta/disconnect` over long-polling, as a CometD 3
//! server behaves (`reference/bayeux.md` §1 and §2).
//!
//! - A request body is a JSON array of messages or one message object. The response is always an
//!   array: the replies in request order, then the deliveries queued for the sessions the request
//!   named (CometD's default `metaConnectDeliverOnly=false`: deliveries may ride on any reply).
//! - The first connect of a session, a connect with `advice.timeout: 0`, or a connect finding
//!   messages already queued is answered at once; any other connect is held up to the server
//!   timeout (or the client's smaller `advice.timeout`) and released as soon as a message is
//!   queued. A second connect of the same session releases the held one (answered normally).
//! - An unknown `clientId`, or one handshaken by another user or another browser (the
//!   `BAYEUX_BROWSER` cookie CometD sets on the handshake), gets `402::Unknown client` with
//!   advice `handshake`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::state::{BayeuxSession, Hold, Shared, State, Wake};
use crate::channel;

/// The cookie CometD servers use to bind sessions to a browser (a client's cookie jar).
pub(super) const BROWSER_COOKIE: &str = "BAYEUX_BROWSER";

/// A body that is not Bayeux at all: HTTP 400, as CometD answers unparsable JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum BayeuxBodyError {
    /// Not JSON.
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but neither an array nor an object.
    #[error("request body is neither a message array nor a message object")]
    NotMessages,
}

/// The result of one Bayeux POST.
pub(super) struct BayeuxResponse {
    /// The response array.
    pub body: Vec<Value>,
    /// A new `BAYEUX_BROWSER` value to set as a cookie.
    pub set_browser: Option<String>,
    /// The channels of the request's messages, for the request log.
    pub channels: Vec<String>,
}

/// Who sent the request.
pub(super) struct Caller<'a> {
    /// The authenticated user.
    pub user: &'a str,
    /// The `BAYEUX_BROWSER` cookie, if sent.
    pub browser: Option<&'a str>,
}

fn parse(body: &[u8]) -> Result<Vec<Value>, BayeuxBodyError> {
    match serde_json::from_slice::<Value>(body) {
        Err(e) => Err(BayeuxBodyError::NotJson(e.to_string())),
        Ok(Value::Array(items)) => Ok(items),
        Ok(obj @ Value::Object(_)) => Ok(vec![obj]),
        Ok(_) => Err(BayeuxBodyError::NotMessages),
    }
}

/// Starts a reply to `msg` on `channel`: echoes `id` (as sent, string or number) and `clientId`.
fn reply(msg: &Map<String, Value>, channel: &str) -> Map<String, Value> {
    let mut r = Map::new();
    if let Some(id) = msg.get("id") {
        r.insert("id".into(), id.clone());
    }
    r.insert("channel".into(), channel.into());
    if let Some(cid) = msg.get("clientId") {
        r.insert("clientId".into(), cid.clone());
    }
    r
}

fn fail(mut r: Map<String, Value>, error: &str) -> Value {
    r.insert("successful".into(), false.into());
    r.insert("error".into(), error.into());
    Value::Object(r)
}

/// The reply to a message naming a session the server does not know (CometD 2 / GMS wording,
/// which `reference/bayeux.md` lists for GWS-era servers).
fn unknown_client(msg: &Map<String, Value>, channel: &str) -> Value {
    let mut r = reply(msg, channel);
    r.insert("successful".into(), false.into());
    r.insert("error".into(), "402::Unknown client".into());
    r.insert(
        "advice".into(),
        json!({"reconnect": "handshake", "interval": 0}),
    );
    Value::Object(r)
}

fn timeout_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn retry_advice(shared: &Shared) -> Value {
    json!({"reconnect": "retry", "interval": 0, "timeout": timeout_ms(shared.cfg.bayeux_timeout)})
}

/// Whether a user may subscribe to `pattern`: a valid, non-meta, non-service channel that can
/// carry this user's notifications, i.e. under `/v2/me/`, or a glob above it (`/**`, `/v2/**`).
///
/// GUESS: GWS's subscription policy is not documented. `/v2/me/...` channels are per user by
/// construction (the server publishes each user's events only to that user's sessions); the C#
/// client's `/**` is accepted because a real client used it.
pub(super) fn may_subscribe(pattern: &str) -> Result<(), &'static str> {
    if channel::validate_pattern(pattern).is_err() {
        return Err("400::subscription_invalid");
    }
    if channel::is_meta(pattern) || pattern.starts_with("/service/") {
        return Err("403::subscribe_denied");
    }
    if pattern.starts_with("/v2/me/") || matches!(pattern, "/**" | "/v2/**") {
        Ok(())
    } else {
        Err("403::subscribe_denied")
    }
}

/// The session `msg` names, if it exists and belongs to this caller.
fn session<'s>(
    st: &'s mut State,
    msg: &Map<String, Value>,
    caller: &Caller<'_>,
) -> Option<(String, &'s mut BayeuxSession)> {
    let cid = msg.get("clientId")?.as_str()?.to_owned();
    let s = st.bayeux.get_mut(&cid)?;
    if s.user != caller.user || Some(s.browser.as_str()) != caller.browser {
        return None;
    }
    Some((cid, s))
}

/// What to do with the (last) connect of a request.
enum ConnectStep {
    /// Answered already.
    Done,
    /// Wait for `rx` or the deadline, then answer at `slot`.
    Hold {
        slot: usize,
        msg: Map<String, Value>,
        client_id: String,
        hold_id: u64,
        rx: oneshot::Receiver<Wake>,
        deadline: Instant,
    },
}

/// Clears a hold when the request goes away without answering (the client hung up), so the
/// session can expire normally.
struct HoldGuard {
    shared: Arc<Shared>,
    client_id: String,
    hold_id: u64,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(s) = st.bayeux.get_mut(&self.client_id) {
            if s.hold.as_ref().is_some_and(|h| h.id == self.hold_id) {
                s.hold = None;
                s.last_seen = Instant::now();
            }
        }
    }
}

/// Handles one Bayeux POST body for an authenticated caller.
pub(super) async fn handle(
    shared: &Arc<Shared>,
    caller: Caller<'_>,
    body: &[u8],
) -> Result<BayeuxResponse, BayeuxBodyError> {
    let items = parse(body)?;
    let mut out = BayeuxResponse {
        body: Vec::with_capacity(items.len()),
        set_browser: None,
        channels: Vec::new(),
    };
    let mut browser = caller.browser.map(str::to_owned);
    let mut touched: BTreeSet<String> = BTreeSet::new();
    // Deliveries of `ack` sessions, appended after the replies.
    let mut acked: Vec<Value> = Vec::new();
    let step = {
        let mut st = shared.lock();
        // Only the last connect of a batch may be held; earlier ones are answered at once.
        let last_connect = items
            .iter()
            .rposition(|m| m.get("channel").and_then(Value::as_str) == Some("/meta/connect"));
        let mut step = ConnectStep::Done;
        for (index, item) in items.into_iter().enumerate() {
            let Value::Object(msg) = item else {
                out.body.push(json!({
                    "channel": "/meta/unknown", "successful": false, "error": "400::message_invalid"
                }));
                continue;
            };
            let Some(ch) = msg
                .get("channel")
                .and_then(Value::as_str)
                .map(str::to_owned)
            else {
                out.body
                    .push(fail(reply(&msg, "/meta/unknown"), "400::channel_missing"));
                continue;
            };
            out.channels.push(ch.clone());
            let caller_now = Caller {
                user: caller.user,
                browser: browser.as_deref(),
            };
            match ch.as_str() {
                "/meta/handshake" => {
                    let b = match browser.clone() {
                        Some(b) => b,
                        None => {
                            let b = shared.token(&mut st, 16).to_ascii_lowercase();
                            out.set_browser = Some(b.clone());
                            browser = Some(b.clone());
                            b
                        }
                    };
                    out.body
                        .push(handshake(shared, &mut st, &msg, caller.user, b));
                }
                "/meta/connect" => {
                    let holdable = Some(index) == last_connect;
                    let slot = out.body.len();
                    match connect(shared, &mut st, &msg, &caller_now, holdable) {
                        Connect::Reply(mut r, cid) => {
                            let mut batch = Vec::new();
                            if let Some(cid) = cid {
                                ack_batch(&mut st, &cid, &mut r, &mut batch);
                                touched.insert(cid);
                            }
                            out.body.push(r);
                            acked.append(&mut batch);
                        }
                        Connect::Hold {
                            client_id,
                            hold_id,
                            rx,
                            deadline,
                        } => {
                            out.body.push(Value::Null);
                            step = ConnectStep::Hold {
                                slot,
                                msg,
                                client_id,
                                hold_id,
                                rx,
                                deadline,
                            };
                        }
                    }
                }
                "/meta/subscribe" | "/meta/unsubscribe" => {
                    let r = subscribe(&mut st, &msg, &ch, &caller_now, &mut touched);
                    out.body.push(r);
                }
                "/meta/disconnect" => match session(&mut st, &msg, &caller_now) {
                    Some((cid, _)) => {
                        st.remove_bayeux(&cid, Wake::Disconnected);
                        let mut r = reply(&msg, &ch);
                        r.insert("successful".into(), true.into());
                        out.body.push(Value::Object(r));
                    }
                    None => out.body.push(unknown_client(&msg, &ch)),
                },
                other if channel::is_meta(other) => {
                    out.body
                        .push(fail(reply(&msg, other), "400::unknown_meta_channel"));
                }
                other => {
                    // Publishing is not part of the GWS API: a client only listens.
                    match session(&mut st, &msg, &caller_now) {
                        Some((cid, _)) => {
                            touched.insert(cid);
                            out.body
                                .push(fail(reply(&msg, other), "403::publish_denied"));
                        }
                        None => out.body.push(unknown_client(&msg, other)),
                    }
                }
            }
        }
        step
    };

    if let ConnectStep::Hold {
        slot,
        msg,
        client_id,
        hold_id,
        rx,
        deadline,
    } = step
    {
        let guard = HoldGuard {
            shared: Arc::clone(shared),
            client_id: client_id.clone(),
            hold_id,
        };
        let why = tokio::select! {
            w = rx => w.ok(),
            _ = tokio::time::sleep_until(deadline) => None,
            _ = shared.shutdown.cancelled() => None,
        };
        let mut st = shared.lock();
        let r = match st.bayeux.get_mut(&client_id) {
            Some(s) => {
                if s.hold.as_ref().is_some_and(|h| h.id == hold_id) {
                    s.hold = None;
                }
                s.last_seen = Instant::now();
                touched.insert(client_id.clone());
                let mut r = reply(&msg, "/meta/connect");
                r.insert("successful".into(), true.into());
                r.insert("advice".into(), retry_advice(shared));
                let mut r = Value::Object(r);
                ack_batch(&mut st, &client_id, &mut r, &mut acked);
                r
            }
            None if why == Some(Wake::Disconnected) => {
                // CometD answers the held connect of a disconnected session successfully, with
                // advice `none`.
                let mut r = reply(&msg, "/meta/connect");
                r.insert("successful".into(), true.into());
                r.insert("advice".into(), json!({"reconnect": "none", "interval": 0}));
                Value::Object(r)
            }
            // GUESS: a CometD server that forgets a session (expiry, restart) while a connect is
            // held may also just drop the connection; the simulator answers `402::Unknown
            // client` so the client re-handshakes at once.
            None => unknown_client(&msg, "/meta/connect"),
        };
        if let Some(place) = out.body.get_mut(slot) {
            *place = r;
        }
        drain(&mut st, &touched, &mut out.body);
        drop(st);
        drop(guard);
    } else if !touched.is_empty() {
        let mut st = shared.lock();
        drain(&mut st, &touched, &mut out.body);
    }
    out.body.append(&mut acked);
    Ok(out)
}

/// Moves the queued deliveries of `sessions` into the response (each exactly once). Sessions
/// with the `ack` extension get theirs only with their connect reply ([`ack_batch`]).
fn drain(st: &mut State, sessions: &BTreeSet<String>, body: &mut Vec<Value>) {
    for cid in sessions {
        if let Some(s) = st.bayeux.get_mut(cid) {
            if !s.ack {
                body.append(&mut s.queue);
            }
        }
    }
}

/// For a session with the `ack` extension answering its connect: what is queued becomes a new
/// batch; every unacknowledged batch (redelivered ones first) goes into the response, and the
/// connect reply carries the last batch number in `ext.ack`.
fn ack_batch(st: &mut State, client_id: &str, reply: &mut Value, body: &mut Vec<Value>) {
    let Some(s) = st.bayeux.get_mut(client_id).filter(|s| s.ack) else {
        return;
    };
    if !s.queue.is_empty() {
        s.batch += 1;
        let batch = s.batch;
        s.unacked.push((batch, std::mem::take(&mut s.queue)));
    }
    for (_, messages) in &s.unacked {
        body.extend(messages.iter().cloned());
    }
    if let Value::Object(r) = reply {
        r.insert("ext".into(), json!({"ack": s.batch}));
    }
}

fn handshake(
    shared: &Shared,
    st: &mut State,
    msg: &Map<String, Value>,
    user: &str,
    browser: String,
) -> Value {
    let mut r = reply(msg, "/meta/handshake");
    r.remove("clientId");
    let offered = msg
        .get("supportedConnectionTypes")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .any(|t| matches!(t.as_str(), Some("long-polling" | "websocket")))
        });
    r.insert("version".into(), "1.0".into());
    r.insert(
        "supportedConnectionTypes".into(),
        json!(["long-polling", "websocket"]),
    );
    if offered == Some(false) {
        r.insert("advice".into(), json!({"reconnect": "none", "interval": 0}));
        return fail(r, "400::unsupported_connection_types");
    }
    let client_id = shared.token(st, 28).to_ascii_lowercase();
    let ack = msg.get("ext").and_then(|e| e.get("ack")) == Some(&Value::Bool(true));
    st.bayeux.insert(
        client_id.clone(),
        BayeuxSession {
            user: user.to_owned(),
            browser,
            subscriptions: BTreeSet::new(),
            queue: Vec::new(),
            connected: false,
            hold: None,
            last_seen: Instant::now(),
            ack,
            batch: 0,
            unacked: Vec::new(),
        },
    );
    tracing::debug!(%client_id, user, ack, "sim: CometD handshake");
    if ack {
        r.insert("ext".into(), json!({"ack": true}));
    }
    r.insert("clientId".into(), client_id.into());
    r.insert("successful".into(), true.into());
    r.insert("advice".into(), retry_advice(shared));
    Value::Object(r)
}

enum Connect {
    /// The reply, and the session to drain (if it exists).
    Reply(Value, Option<String>),
    /// Hold until woken or the deadline.
    Hold {
        client_id: String,
        hold_id: u64,
        rx: oneshot::Receiver<Wake>,
        deadline: Instant,
    },
}

fn connect(
    shared: &Shared,
    st: &mut State,
    msg: &Map<String, Value>,
    caller: &Caller<'_>,
    holdable: bool,
) -> Connect {
    let hold_id = st.next();
    let lost_ack = st.ack_lost > 0
        && st
            .bayeux
            .values()
            .any(|s| s.ack && s.unacked.iter().any(|(_, m)| !m.is_empty()));
    if lost_ack {
        st.ack_lost -= 1;
        tracing::debug!("sim: ignoring the ack of this connect (as if lost)");
    }
    let Some((cid, s)) = session(st, msg, caller) else {
        return Connect::Reply(unknown_client(msg, "/meta/connect"), None);
    };
    // Only one held connect per session: the older one is answered now.
    if let Some(mut old) = s.hold.take() {
        old.release(Wake::Superseded);
    }
    let was_connected = s.connected;
    s.connected = true;
    if s.ack {
        let acked = msg
            .get("ext")
            .and_then(|e| e.get("ack"))
            .and_then(Value::as_u64);
        if let Some(acked) = acked.filter(|_| !lost_ack) {
            s.unacked.retain(|(batch, _)| *batch > acked);
        }
    }
    // CometD honours the client's `advice.timeout`; the simulator caps it at its own timeout.
    let requested = msg
        .get("advice")
        .and_then(|a| a.get("timeout"))
        .and_then(Value::as_f64)
        .map(|t| Duration::from_millis(t.max(0.0).min(u64::MAX as f64) as u64));
    let hold_for = requested
        .map(|t| t.min(shared.cfg.bayeux_timeout))
        .unwrap_or(shared.cfg.bayeux_timeout);
    let immediate = !holdable
        || !was_connected
        || hold_for.is_zero()
        || !s.queue.is_empty()
        || !s.unacked.is_empty()
        || shared.shutdown.is_cancelled();
    if immediate {
        s.last_seen = Instant::now();
        let mut r = reply(msg, "/meta/connect");
        r.insert("successful".into(), true.into());
        r.insert("advice".into(), retry_advice(shared));
        return Connect::Reply(Value::Object(r), Some(cid));
    }
    let (tx, rx) = oneshot::channel();
    s.hold = Some(Hold {
        id: hold_id,
        wake: Some(tx),
    });
    Connect::Hold {
        client_id: cid,
        hold_id,
        rx,
        // A configured timeout too large to add to "now" holds for a year instead.
        deadline: Instant::now()
            .checked_add(hold_for)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(365 * 86_400)),
    }
}

fn subscribe(
    st: &mut State,
    msg: &Map<String, Value>,
    ch: &str,
    caller: &Caller<'_>,
    touched: &mut BTreeSet<String>,
) -> Value {
    let Some((cid, s)) = session(st, msg, caller) else {
        return unknown_client(msg, ch);
    };
    touched.insert(cid);
    let mut r = reply(msg, ch);
    let patterns: Vec<String> = match msg.get("subscription") {
        Some(Value::String(p)) => vec![p.clone()],
        Some(Value::Array(items)) if !items.is_empty() => {
            let strings: Vec<String> = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            if strings.len() != items.len() {
                return fail(r, "400::subscription_invalid");
            }
            strings
        }
        _ => return fail(r, "403::subscription_missing"),
    };
    if let Some(sub) = msg.get("subscription") {
        r.insert("subscription".into(), sub.clone());
    }
    if ch == "/meta/subscribe" {
        for p in &patterns {
            if let Err(e) = may_subscribe(p) {
                return fail(r, e);
            }
        }
        s.subscriptions.extend(patterns);
    } else {
        for p in &patterns {
            s.subscriptions.remove(p);
        }
    }
    r.insert("successful".into(), true.into());
    Value::Object(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_policy() {
        for ok in ["/v2/me/chats", "/v2/me/*", "/v2/me/**", "/**", "/v2/**"] {
            assert_eq!(may_subscribe(ok), Ok(()), "{ok}");
        }
        for (bad, err) in [
            ("/meta/connect", "400::subscription_invalid"),
            ("/meta/*", "400::subscription_invalid"),
            ("/service/x", "403::subscribe_denied"),
            ("/v2/users/x/chats", "403::subscribe_denied"),
            ("/foo", "403::subscribe_denied"),
            ("v2/me/chats", "400::subscription_invalid"),
            ("/v2/me/ch*", "400::subscription_invalid"),
        ] {
            assert_eq!(may_subscribe(bad), Err(err), "{bad}");
        }
    }

    #[test]
    fn bodies_are_arrays_or_objects() {
        assert_eq!(parse(br#"[{"channel":"/a"}]"#).map(|v| v.len()), Ok(1));
        assert_eq!(parse(br#"{"channel":"/a"}"#).map(|v| v.len()), Ok(1));
        assert_eq!(parse(b"42"), Err(BayeuxBodyError::NotMessages));
        assert!(matches!(parse(b"{nope"), Err(BayeuxBodyError::NotJson(_))));
    }

    #[test]
    fn replies_echo_id_as_sent() {
        let msg = json!({"id": 7, "clientId": "abc", "channel": "/meta/connect"});
        let r = unknown_client(msg.as_object().unwrap(), "/meta/connect");
        assert_eq!(r["id"], 7);
        assert_eq!(r["clientId"], "abc");
        assert_eq!(r["error"], "402::Unknown client");
        assert_eq!(r["advice"]["reconnect"], "handshake");
        assert_eq!(r["successful"], false);
    }
}
