//! The simulator's shared state: HTTP sessions, CometD sessions with their queues and held
//! connects, chats, per-agent flags, and the request log.
//!
//! One `std::sync::Mutex` guards it all, and it is never held across an `.await`: every change
//! and the notifications it causes are applied in one critical section, so a notification is
//! queued to exactly the sessions subscribed at that instant and drained by exactly one response.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::chat::{self, ChatRec, Clock, OpContext, OpError, Party};
use super::{BayeuxSessionInfo, ChatOffer, LoggedRequest, SimConfig};
use crate::channel;

/// The request log keeps at most this many entries (the oldest are dropped), so a long benchmark
/// does not grow without bound.
pub(super) const MAX_LOG: usize = 100_000;

/// Why a held `/meta/connect` is released before its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// A message was queued for the session.
    Message,
    /// A newer connect of the same session arrived (only one may be held).
    Superseded,
    /// The client sent `/meta/disconnect`.
    Disconnected,
    /// The server forgot the session (`expire_bayeux_sessions`, `restart`).
    Expired,
}

/// A held `/meta/connect`.
pub(super) struct Hold {
    /// Identifies this hold (a newer connect replaces it).
    pub id: u64,
    /// Wakes the waiting request; taken when used.
    pub wake: Option<oneshot::Sender<Wake>>,
}

impl Hold {
    /// Releases the waiting request (at most once).
    pub fn release(&mut self, why: Wake) {
        if let Some(tx) = self.wake.take() {
            // The request may be gone already (client hung up): nothing to do then.
            let _ = tx.send(why);
        }
    }
}

/// One CometD session.
pub(super) struct BayeuxSession {
    /// The authenticated user who handshook it.
    pub user: String,
    /// The `BAYEUX_BROWSER` cookie value it is bound to.
    pub browser: String,
    /// Subscribed channel names and globs.
    pub subscriptions: BTreeSet<String>,
    /// Deliveries waiting for the next response.
    pub queue: Vec<Value>,
    /// Whether a `/meta/connect` was ever answered (the first one is never held).
    pub connected: bool,
    /// The connect being held, if any. A session with a held connect never expires.
    pub hold: Option<Hold>,
    /// When the last connect reply (or the handshake reply) was sent; expiry counts from here.
    pub last_seen: Instant,
    /// The session negotiated the `ack` extension: deliveries ride only on connect replies, in
    /// numbered batches kept until the client acknowledges them.
    pub ack: bool,
    /// The last batch number handed out.
    pub batch: u64,
    /// Batches sent but not acknowledged yet, oldest first.
    pub unacked: Vec<(u64, Vec<Value>)>,
}

/// One HTTP session (`JSESSIONID`).
pub(super) struct HttpSession {
    /// The user it authenticated.
    pub user: String,
    /// Its CSRF token.
    pub csrf: String,
}

/// Per-agent flags.
#[derive(Default)]
pub(super) struct AgentState {
    /// `StartContactCenterSession` was called (and not ended).
    pub contact_center: bool,
    /// The channels it was started with.
    pub channels: Vec<String>,
    /// Notifications for this agent are dropped (an outage).
    pub paused: bool,
    /// `EndContactCenterSession` calls so far (each logs the agent out everywhere).
    pub logouts: u64,
}

/// Everything behind the lock.
#[derive(Default)]
pub(super) struct State {
    pub http: HashMap<String, HttpSession>,
    pub bayeux: HashMap<String, BayeuxSession>,
    pub chats: HashMap<String, ChatRec>,
    pub agents: HashMap<String, AgentState>,
    /// Source of chat sequence numbers, participant ids and hold ids.
    pub counter: u64,
    /// The last `referenceId` handed out.
    pub last_reference: u64,
    /// Answer WebSocket upgrades with 403 (as a proxy that breaks WebSocket would).
    pub ws_refuse: bool,
    /// WebSocket upgrades accepted, and refused, so far.
    pub ws_upgrades: u64,
    /// WebSocket upgrades refused so far.
    pub ws_refused: u64,
    /// Ignore the `ack` of this many coming connects (as if it had been lost): the server
    /// redelivers what it already sent.
    pub ack_lost: u32,
    /// Answer this many coming chat operations with HTTP 503 (the backend unavailable), without
    /// performing them.
    pub unavailable_operations: u32,
}

impl State {
    /// The next value of the shared counter.
    pub fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Queues a `/v2/me/chats` delivery to every session of `agent` subscribed to a matching
    /// channel and wakes their held connects. Dropped when the agent is paused.
    pub fn publish(&mut self, agent: &str, data: Value) {
        if self.agents.get(agent).is_some_and(|a| a.paused) {
            tracing::debug!(agent, "sim: notification dropped (agent paused)");
            return;
        }
        for session in self.bayeux.values_mut() {
            if session.user != agent
                || !session
                    .subscriptions
                    .iter()
                    .any(|p| channel::matches(p, chat::CHANNEL))
            {
                continue;
            }
            session
                .queue
                .push(json!({"channel": chat::CHANNEL, "data": data.clone()}));
            if let Some(hold) = session.hold.as_mut() {
                hold.release(Wake::Message);
            }
        }
    }

    /// Forgets one CometD session, releasing its held connect.
    pub fn remove_bayeux(&mut self, client_id: &str, why: Wake) -> bool {
        match self.bayeux.remove(client_id) {
            Some(mut s) => {
                if let Some(hold) = s.hold.as_mut() {
                    hold.release(why);
                }
                true
            }
            None => false,
        }
    }

    /// Forgets every CometD session; returns how many there were.
    pub fn expire_bayeux(&mut self) -> usize {
        let ids: Vec<String> = self.bayeux.keys().cloned().collect();
        for id in &ids {
            self.remove_bayeux(id, Wake::Expired);
        }
        ids.len()
    }
}

/// State shared by the server task, the sweeper and the [`super::Simulator`] handle.
pub(super) struct Shared {
    /// The configuration it was started with.
    pub cfg: SimConfig,
    /// `uri` fields start with this (no trailing slash).
    pub external_base: String,
    /// Cancelled by `shutdown`: held connects are answered and the server stops.
    pub shutdown: CancellationToken,
    /// A random prefix for chat ids, so two simulators do not hand out the same ids.
    id_prefix: String,
    state: Mutex<State>,
    log: Mutex<VecDeque<LoggedRequest>>,
    /// Bumped when HTTP sessions are expired (a backend restart): open WebSockets close.
    pub ws_epoch: tokio::sync::watch::Sender<u64>,
}

/// A 64-bit value from the standard library's randomly keyed hasher.
fn random_u64(salt: u64) -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish()
}

impl Shared {
    pub fn new(cfg: SimConfig, external_base: String) -> Shared {
        let prefix = random_u64(0);
        // Four characters from [0-9A-Z], as GWS interaction ids are alphanumeric.
        let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let id_prefix = (0..4)
            .map(|i| char::from(alphabet[((prefix >> (i * 8)) % 36) as usize]))
            .collect();
        Shared {
            cfg,
            external_base: external_base.trim_end_matches('/').to_owned(),
            shutdown: CancellationToken::new(),
            id_prefix,
            state: Mutex::new(State::default()),
            log: Mutex::new(VecDeque::new()),
            ws_epoch: tokio::sync::watch::Sender::new(0),
        }
    }

    /// The state, even if a thread panicked while holding the lock (the simulator must keep
    /// answering).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends to the request log.
    pub fn log(&self, entry: LoggedRequest) {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= MAX_LOG {
            log.pop_front();
        }
        log.push_back(entry);
    }

    /// A copy of the request log.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }

    /// A fresh unguessable-enough token of `len` hex characters (at most 64). Not a security
    /// boundary: this is a test server.
    pub fn token(&self, st: &mut State, len: usize) -> String {
        let n = st.next();
        let mut hasher = Sha256::new();
        hasher.update(uuid::Uuid::now_v7().as_bytes());
        hasher.update(random_u64(n).to_le_bytes());
        hasher.update(n.to_le_bytes());
        let mut hex = hex::encode_upper(hasher.finalize());
        hex.truncate(len.min(64));
        hex
    }

    /// Offers a chat to `agent`. Returns its id and, when the agent has no contact-centre session,
    /// a note for the request log (the offer is made anyway).
    pub fn offer(&self, agent: &str, offer: ChatOffer) -> (String, Option<String>) {
        let clock = Clock::now();
        let mut st = self.lock();
        let seq = st.next();
        let id = format!("0000{}{:08X}", self.id_prefix, seq & 0xFFFF_FFFF);
        let customer = Party {
            nickname: offer.customer_nickname,
            kind: "Customer",
            participant_id: participant_id(&mut st),
            visibility: None,
        };
        let colleague = offer.conference.then(|| Party {
            nickname: "Conference Host".into(),
            kind: "Agent",
            participant_id: participant_id(&mut st),
            visibility: None,
        });
        let chat = ChatRec::offer(
            id.clone(),
            agent.to_owned(),
            seq,
            format!("{}/api/v2/chats/{id}", self.external_base),
            customer,
            offer.user_data,
            colleague,
            offer.first_message,
            &clock,
        );
        let note = match st.agents.get(agent) {
            Some(a) if a.contact_center => None,
            _ => Some(format!(
                "chat {id} offered to {agent}, who has no contact-centre session (offered anyway)"
            )),
        };
        let data = chat.offer_notification();
        st.chats.insert(id.clone(), chat);
        st.publish(agent, data);
        (id, note)
    }

    /// Runs a chat operation for `user`: `Ok(referenceId)` or the refusal with the HTTP status.
    pub fn chat_operation(
        &self,
        user: &str,
        nickname: &str,
        chat_id: &str,
        operation: &str,
        body: &Map<String, Value>,
    ) -> Result<u64, ChatOpError> {
        let clock = Clock::now();
        let mut st = self.lock();
        // Another agent's chat is as invisible as a missing one.
        if st.chats.get(chat_id).is_none_or(|c| c.agent != user) {
            return Err(ChatOpError::NotFound);
        }
        st.last_reference += 1;
        let reference_id = st.last_reference;
        let mut pids: Vec<String> = (0..2).map(|_| participant_id(&mut st)).collect();
        let ctx = OpContext {
            reference_id,
            agent_nickname: nickname,
            clock: &clock,
        };
        let Some(chat) = st.chats.get_mut(chat_id) else {
            return Err(ChatOpError::NotFound);
        };
        let result = chat::apply(chat, operation, body, &ctx, &mut || {
            pids.pop().unwrap_or_else(|| "0000000000000000".into())
        });
        match result {
            Ok(notifications) => {
                for n in notifications {
                    st.publish(user, n);
                }
                Ok(reference_id)
            }
            Err(e) => {
                if e.notifies() {
                    st.publish(user, chat::error_notification(reference_id));
                }
                Err(ChatOpError::Refused(e))
            }
        }
    }

    /// Runs a customer-side action on a chat and publishes what it produced.
    pub fn customer_action(
        &self,
        chat_id: &str,
        action: impl FnOnce(&mut ChatRec, &Clock) -> Option<Vec<Value>>,
    ) -> bool {
        let clock = Clock::now();
        let mut st = self.lock();
        let Some(chat) = st.chats.get_mut(chat_id) else {
            return false;
        };
        let agent = chat.agent.clone();
        match action(chat, &clock) {
            Some(notifications) => {
                for n in notifications {
                    st.publish(&agent, n);
                }
                true
            }
            None => false,
        }
    }

    /// A snapshot of the CometD sessions.
    pub fn sessions(&self) -> Vec<BayeuxSessionInfo> {
        let st = self.lock();
        let mut out: Vec<BayeuxSessionInfo> = st
            .bayeux
            .iter()
            .map(|(id, s)| BayeuxSessionInfo {
                client_id: id.clone(),
                user: s.user.clone(),
                subscriptions: s.subscriptions.iter().cloned().collect(),
                connected: s.connected,
                holding: s.hold.is_some(),
                queued: s.queue.len(),
            })
            .collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// Each agent's contact-centre state and open HTTP sessions, as `GET /sim/agents` shows
    /// them: `{"<user>": {"contact_center": bool, "channels": [...], "logouts": n,
    /// "http_sessions": n}}`.
    pub fn agents(&self) -> Value {
        let st = self.lock();
        let mut out = serde_json::Map::new();
        for user in &self.cfg.users {
            let name = &user.username;
            let agent = st.agents.get(name);
            let sessions = st.http.values().filter(|s| &s.user == name).count();
            out.insert(
                name.clone(),
                json!({
                    "contact_center": agent.is_some_and(|a| a.contact_center),
                    "channels": agent.map(|a| a.channels.clone()).unwrap_or_default(),
                    "logouts": agent.map_or(0, |a| a.logouts),
                    "http_sessions": sessions,
                }),
            );
        }
        Value::Object(out)
    }

    /// Open chats of `user`, oldest first, as resources.
    pub fn open_chats(&self, user: &str) -> Vec<Value> {
        let st = self.lock();
        let mut chats: Vec<&ChatRec> = st
            .chats
            .values()
            .filter(|c| c.agent == user && chat::is_open(&c.state))
            .collect();
        chats.sort_by_key(|c| c.seq);
        chats.iter().map(|c| c.resource()).collect()
    }

    /// Removes CometD sessions that have no held connect and were last answered more than
    /// `max_interval` ago. Returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let max = self.cfg.max_interval;
        let mut st = self.lock();
        let stale: Vec<String> = st
            .bayeux
            .iter()
            .filter(|(_, s)| s.hold.is_none() && now.saturating_duration_since(s.last_seen) >= max)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &stale {
            tracing::debug!(client_id = %id, "sim: CometD session expired (maxInterval)");
            st.remove_bayeux(id, Wake::Expired);
        }
        stale.len()
    }
}

/// A participant id: 16 hex digits like GWS's (`009052C5E743004C`).
fn participant_id(st: &mut State) -> String {
    let n = st.next();
    format!(
        "{:016X}",
        (random_u64(n) & 0xFFFF_FFFF_0000_0000) | (n & 0xFFFF_FFFF)
    )
}

/// Why a chat operation was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ChatOpError {
    /// No such chat (or not this agent's): HTTP 404, `statusCode` 6.
    #[error("Chat not found")]
    NotFound,
    /// Refused by the state machine.
    #[error(transparent)]
    Refused(OpError),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn shared() -> Shared {
        Shared::new(SimConfig::default(), "http://gws:8080/".into())
    }

    fn session(st: &mut State, id: &str, user: &str, subs: &[&str]) {
        st.bayeux.insert(
            id.into(),
            BayeuxSession {
                user: user.into(),
                browser: "b".into(),
                subscriptions: subs.iter().map(|s| s.to_string()).collect(),
                queue: Vec::new(),
                connected: true,
                hold: None,
                last_seen: Instant::now(),
                ack: false,
                batch: 0,
                unacked: Vec::new(),
            },
        );
    }

    fn queued(sh: &Shared, id: &str) -> usize {
        sh.lock().bayeux.get(id).map_or(0, |s| s.queue.len())
    }

    #[test]
    fn offers_reach_every_matching_session_of_the_agent_only() {
        let sh = shared();
        {
            let mut st = sh.lock();
            session(&mut st, "a", "agent1", &["/v2/me/*"]);
            session(&mut st, "b", "agent1", &["/v2/me/**"]);
            session(&mut st, "c", "agent1", &["/v2/me/calls"]);
            session(&mut st, "d", "agent2", &["/v2/me/chats"]);
            session(&mut st, "e", "agent1", &[]);
        }
        let (id, note) = sh.offer("agent1", ChatOffer::new("Pat"));
        assert_eq!(id.len(), 16, "{id}");
        assert!(id.starts_with("0000"));
        assert!(note.is_some(), "agent1 has no contact-centre session");
        assert_eq!(
            ["a", "b", "c", "d", "e"].map(|s| queued(&sh, s)),
            [1, 1, 0, 0, 0]
        );
        let st = sh.lock();
        let d = &st.bayeux["a"].queue[0];
        assert_eq!(d["channel"], "/v2/me/chats");
        assert_eq!(
            d["data"]["chat"]["uri"],
            format!("http://gws:8080/api/v2/chats/{id}")
        );
    }

    #[test]
    fn a_paused_agent_loses_its_notifications() {
        let sh = shared();
        session(&mut sh.lock(), "a", "agent1", &["/v2/me/chats"]);
        sh.lock().agents.entry("agent1".into()).or_default().paused = true;
        let id = sh.offer("agent1", ChatOffer::new("Pat")).0;
        assert_eq!(queued(&sh, "a"), 0);
        sh.lock().agents.entry("agent1".into()).or_default().paused = false;
        let r = sh
            .chat_operation("agent1", "Alice", &id, "Accept", &Map::new())
            .unwrap();
        assert_eq!(r, 1);
        assert_eq!(queued(&sh, "a"), 3);
    }

    #[test]
    fn references_increase_and_failures_notify_with_theirs() {
        let sh = shared();
        session(&mut sh.lock(), "a", "agent1", &["/v2/me/chats"]);
        let id = sh.offer("agent1", ChatOffer::new("Pat")).0;
        let ops = |op: &str| {
            let mut m = Map::new();
            m.insert("operationName".into(), op.into());
            sh.chat_operation("agent1", "Alice", &id, op, &m)
        };
        assert_eq!(ops("Accept"), Ok(1));
        let e = ops("Accept").unwrap_err();
        assert!(matches!(
            e,
            ChatOpError::Refused(OpError::WrongState { .. })
        ));
        {
            let st = sh.lock();
            let last = st.bayeux["a"].queue.last().unwrap();
            assert_eq!(last["data"]["notificationType"], "Error");
            assert_eq!(last["data"]["referenceId"], 2);
        }
        assert_eq!(ops("Complete"), Ok(3));
        assert_eq!(
            sh.chat_operation("agent2", "Bob", &id, "Complete", &Map::new()),
            Err(ChatOpError::NotFound),
            "another agent's chat is not found"
        );
        assert_eq!(
            sh.chat_operation("agent1", "Alice", "nope", "Complete", &Map::new()),
            Err(ChatOpError::NotFound)
        );
    }

    #[test]
    fn the_sweeper_expires_idle_sessions_but_not_held_ones() {
        let sh = Shared::new(
            SimConfig {
                max_interval: Duration::from_millis(100),
                ..SimConfig::default()
            },
            "http://gws".into(),
        );
        {
            let mut st = sh.lock();
            session(&mut st, "idle", "agent1", &[]);
            session(&mut st, "held", "agent1", &[]);
            let (tx, _rx) = oneshot::channel();
            if let Some(s) = st.bayeux.get_mut("held") {
                s.hold = Some(Hold {
                    id: 1,
                    wake: Some(tx),
                });
            }
        }
        let now = Instant::now();
        assert_eq!(sh.sweep(now), 0, "not idle long enough yet");
        assert_eq!(sh.sweep(now + Duration::from_millis(150)), 1);
        let left: Vec<String> = sh.sessions().into_iter().map(|s| s.client_id).collect();
        assert_eq!(left, vec!["held"]);
    }

    #[test]
    fn expiring_releases_held_connects() {
        let sh = shared();
        let (tx, mut rx) = oneshot::channel();
        {
            let mut st = sh.lock();
            session(&mut st, "held", "agent1", &[]);
            if let Some(s) = st.bayeux.get_mut("held") {
                s.hold = Some(Hold {
                    id: 1,
                    wake: Some(tx),
                });
            }
        }
        assert_eq!(sh.lock().expire_bayeux(), 1);
        assert_eq!(rx.try_recv(), Ok(Wake::Expired));
        assert!(sh.sessions().is_empty());
    }

    #[test]
    fn tokens_are_distinct_hex() {
        let sh = shared();
        let mut st = sh.lock();
        let a = sh.token(&mut st, 32);
        let b = sh.token(&mut st, 32);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(sh.token(&mut st, 500).len(), 64);
    }
}
