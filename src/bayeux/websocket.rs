//! The WebSocket transport (`reference/bayeux.md` §2.4): one socket per session, opened on the
//! first request with the account's Basic authentication, CSRF header and cookies (and the same
//! TLS settings as long-polling); each request is one text frame (a JSON array), and its replies
//! are matched by message id as they arrive on the shared socket. Everything else the server
//! sends (deliveries, pushed meta messages, late replies) goes to [`WebSocket::pushes`], for
//! the protocol's `handle_push`.
//!
//! A request whose replies do not all arrive within its timeout (for the held `/meta/connect`:
//! the hold time plus `max_network_delay`) means a dead socket: the socket is closed, every
//! request still waiting fails, and the next request opens a new one. A ping every
//! [`PING_EVERY`] keeps proxies with idle limits from cutting the socket between connects.
//! Frames larger than `max_response_bytes`, binary frames and unreadable JSON are counted,
//! logged and dropped; the socket stays open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use url::Url;

use super::protocol::TransportError;
use crate::http::{shared_tls_config, HttpClient, HttpSettings};

/// How often a ping goes out on an open socket.
pub const PING_EVERY: Duration = Duration::from_secs(15);
/// Initial read buffer of a socket.
const READ_BUFFER: usize = 8 * 1024;
/// Unsolicited frames buffered for the driver before the reader waits.
const PUSH_CAPACITY: usize = 1024;

/// Replies expected by one request.
struct Pending {
    remaining: usize,
    /// The replies received so far, each the exact JSON text of one message.
    replies: Vec<Box<RawValue>>,
    done: Option<oneshot::Sender<Result<Bytes, TransportError>>>,
}

type PendingMap = Arc<Mutex<HashMap<String, Arc<Mutex<Pending>>>>>;

/// One open socket.
struct Conn {
    out: mpsc::UnboundedSender<Frame>,
    pending: PendingMap,
    closed: CancellationToken,
}

impl Conn {
    fn is_open(&self) -> bool {
        !self.closed.is_cancelled()
    }
}

/// The WebSocket transport of one session. Cheap to clone; clones share the socket.
#[derive(Clone)]
pub struct WebSocket {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    /// The endpoint as `ws://` or `wss://`.
    url: Url,
    /// The same endpoint as `http(s)://`, for the cookie jar.
    http_url: Url,
    settings: HttpSettings,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    push_tx: mpsc::Sender<Bytes>,
    push_rx: Mutex<Option<mpsc::Receiver<Bytes>>>,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("url", &self.inner.url.as_str())
            .finish_non_exhaustive()
    }
}

/// The `ws(s)://` form of an `http(s)://` endpoint.
pub fn ws_url(http_url: &Url) -> Option<Url> {
    let mut url = http_url.clone();
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        _ => return None,
    };
    url.set_scheme(scheme).ok()?;
    Some(url)
}

impl WebSocket {
    /// A transport to the `http(s)` endpoint `url` (as `ws(s)`), sharing `http`'s cookies and
    /// headers. Nothing is opened until the first request.
    pub fn new(http: HttpClient, url: &Url, settings: &HttpSettings) -> Option<WebSocket> {
        let ws = ws_url(url)?;
        let (push_tx, push_rx) = mpsc::channel(PUSH_CAPACITY);
        Some(WebSocket {
            inner: Arc::new(Inner {
                http,
                url: ws,
                http_url: url.clone(),
                settings: settings.clone(),
                conn: tokio::sync::Mutex::new(None),
                push_tx,
                push_rx: Mutex::new(Some(push_rx)),
            }),
        })
    }

    /// The frames the server sent on its own, each a JSON array of messages. Can be taken once.
    pub fn pushes(&self) -> Option<mpsc::Receiver<Bytes>> {
        self.inner
            .push_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Closes the socket (if open); pending requests fail.
    pub async fn close(&self) {
        if let Some(conn) = self.inner.conn.lock().await.take() {
            conn.closed.cancel();
        }
    }

    /// Sends `body` (a JSON array of messages) as one frame and returns the replies to its
    /// messages (as a JSON array) once all have arrived, within `timeout`. Opens the socket if
    /// needed; a timeout closes it (a dead socket).
    pub async fn send(&self, body: Vec<u8>, timeout: Duration) -> Result<Bytes, TransportError> {
        let ids = message_ids(&body)?;
        let conn = self.connection().await?;
        let (tx, rx) = oneshot::channel();
        let entry = Arc::new(Mutex::new(Pending {
            remaining: ids.len(),
            replies: Vec::new(),
            done: Some(tx),
        }));
        {
            let mut pending = conn.pending.lock().unwrap_or_else(PoisonError::into_inner);
            for id in &ids {
                pending.insert(id.clone(), entry.clone());
            }
        }
        let text = String::from_utf8(body).map_err(|e| TransportError::Invalid(e.to_string()))?;
        if conn.out.send(Frame::text(text)).is_err() || !conn.is_open() {
            forget(&conn.pending, &ids);
            return Err(TransportError::Io("the WebSocket is closed".to_owned()));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(TransportError::Io("the WebSocket closed".to_owned())),
            Err(_) => {
                forget(&conn.pending, &ids);
                warn!(url = %self.inner.url, ?timeout, "no reply on the WebSocket in time: closing it as dead");
                conn.closed.cancel();
                Err(TransportError::Timeout(timeout))
            }
        }
    }

    async fn connection(&self) -> Result<Arc<Conn>, TransportError> {
        let mut slot = self.inner.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| c.is_open()) {
            return Ok(conn.clone());
        }
        let conn = Arc::new(self.open().await?);
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn open(&self) -> Result<Conn, TransportError> {
        let inner = &self.inner;
        let mut request = inner
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| TransportError::Connect(e.to_string()))?;
        for (name, value) in inner.http.upgrade_headers(&inner.http_url).iter() {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        request.headers_mut().insert(
            reqwest::header::USER_AGENT,
            reqwest::header::HeaderValue::from_str(&inner.settings.user_agent)
                .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("chatwatch")),
        );
        let mut config = WebSocketConfig::default();
        // tungstenite's defaults (128 KiB read and write buffers) would be most of an idle
        // account's memory; Bayeux frames are small, and the read buffer grows when needed.
        config.read_buffer_size = READ_BUFFER;
        config.write_buffer_size = 0;
        config.max_message_size = Some(inner.settings.max_response_bytes);
        config.max_frame_size = Some(inner.settings.max_response_bytes);
        let connector = if inner.url.scheme() == "wss" {
            if inner.settings.danger_accept_invalid_certs {
                return Err(TransportError::Connect(
                    "danger_accept_invalid_certs is not supported on WebSocket".to_owned(),
                ));
            }
            let tls = shared_tls_config(inner.settings.ca_file.as_deref())
                .map_err(|e| TransportError::Connect(e.to_string()))?;
            Some(tokio_tungstenite::Connector::Rustls(Arc::new(tls)))
        } else {
            Some(tokio_tungstenite::Connector::Plain)
        };
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(config),
            true,
            connector,
        );
        let (stream, response) =
            match tokio::time::timeout(inner.settings.connect_timeout, connect).await {
                Ok(Ok(opened)) => opened,
                Ok(Err(e)) => return Err(classify(e)),
                Err(_) => {
                    return Err(TransportError::Connect(format!(
                        "WebSocket upgrade not done within {:?}",
                        inner.settings.connect_timeout
                    )))
                }
            };
        inner
            .http
            .store_cookies(&inner.http_url, response.headers());
        debug!(url = %inner.url, "WebSocket open");
        let (mut sink, mut source) = stream.split();
        let (out, mut out_rx) = mpsc::unbounded_channel::<Frame>();
        let pending: PendingMap = Arc::default();
        let closed = CancellationToken::new();

        // Writer: frames out, pings, and the close when the socket is abandoned.
        let writer_closed = closed.clone();
        tokio::spawn(async move {
            let mut ping = tokio::time::interval(PING_EVERY);
            ping.tick().await;
            loop {
                tokio::select! {
                    frame = out_rx.recv() => match frame {
                        Some(frame) => if sink.send(frame).await.is_err() { break },
                        None => break,
                    },
                    _ = ping.tick() => if sink.send(Frame::Ping(Bytes::new())).await.is_err() { break },
                    _ = writer_closed.cancelled() => break,
                }
            }
            writer_closed.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        });

        // Reader: replies to their requests, the rest to the driver.
        let reader_pending = pending.clone();
        let reader_closed = closed.clone();
        let push = inner.push_tx.clone();
        let url = inner.url.clone();
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    frame = source.next() => frame,
                    _ = reader_closed.cancelled() => break,
                };
                match frame {
                    Some(Ok(Frame::Text(text))) => {
                        if let Some(rest) = dispatch(text.as_bytes(), &reader_pending) {
                            if push.send(rest).await.is_err() {
                                break;
                            }
                        }
                    }
                    Some(Ok(Frame::Binary(_))) => {
                        // Bayeux frames are text; hand the protocol something it reports.
                        if push
                            .send(Bytes::from_static(b"binary frame"))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Some(Ok(Frame::Close(_))) | None => {
                        debug!(url = %url, "WebSocket closed by the server");
                        break;
                    }
                    Some(Ok(_)) => {} // ping, pong: tungstenite answers pings itself
                    Some(Err(e)) => {
                        warn!(url = %url, error = %e, "WebSocket read failed");
                        break;
                    }
                }
            }
            reader_closed.cancel();
            fail_all(&reader_pending);
        });
        Ok(Conn {
            out,
            pending,
            closed,
        })
    }
}

/// The `id`s of the messages of a request body (every message we send has one).
fn message_ids(body: &[u8]) -> Result<Vec<String>, TransportError> {
    let messages: Vec<Value> =
        serde_json::from_slice(body).map_err(|e| TransportError::Invalid(e.to_string()))?;
    Ok(messages
        .iter()
        .filter_map(|m| m.get("id").and_then(id_text))
        .collect())
}

fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn forget(pending: &PendingMap, ids: &[String]) {
    let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
    for id in ids {
        pending.remove(id);
    }
}

fn fail_all(pending: &PendingMap) {
    let drained: Vec<_> = pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .drain()
        .map(|(_, p)| p)
        .collect();
    for entry in drained {
        if let Some(done) = entry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .done
            .take()
        {
            let _ = done.send(Err(TransportError::Io("the WebSocket closed".to_owned())));
        }
    }
}

/// What [`dispatch`] reads of one message: whether it is a reply (has `successful`, whatever
/// its value) and its `id`. Everything else is skipped unparsed.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(default, deserialize_with = "present")]
    successful: bool,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
}

/// `true` for a field that is there, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

/// A message id as the pending map keys it: a string's text, or a number's digits.
fn raw_id_text(raw: &RawValue) -> Option<String> {
    serde_json::from_str::<Value>(raw.get())
        .ok()
        .as_ref()
        .and_then(id_text)
}

/// `[m1,m2,...]` of exact message texts.
fn join_messages<'a>(messages: impl IntoIterator<Item = &'a RawValue>) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    body.push(b'[');
    for (i, m) in messages.into_iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(m.get().as_bytes());
    }
    body.push(b']');
    body
}

/// Hands the replies of a frame to the requests waiting for them; returns the rest for the
/// driver, or `None` when nothing is left. A frame that is not JSON is passed on whole, so the
/// protocol reports it.
///
/// No JSON tree is built: each message is kept as its exact text ([`RawValue`]) and only its
/// `successful` and `id` are read. A frame of deliveries alone (the common case: Faye and
/// CometD push each delivery as its own frame) is passed on as the very bytes received.
fn dispatch(frame: &[u8], pending: &PendingMap) -> Option<Bytes> {
    let whole = || Some(Bytes::copy_from_slice(frame));
    let messages: Vec<&RawValue> = match serde_json::from_slice::<Vec<&RawValue>>(frame) {
        Ok(messages) => messages,
        Err(_) => match serde_json::from_slice::<&RawValue>(frame) {
            Ok(single) if single.get().starts_with('{') => vec![single],
            _ => return whole(),
        },
    };
    let mut rest: Vec<&RawValue> = Vec::new();
    let mut completed = Vec::new();
    let mut any_reply = false;
    for message in messages {
        let Ok(peek) = serde_json::from_str::<Peek<'_>>(message.get()) else {
            // Not an object (or a malformed one): the protocol judges it.
            rest.push(message);
            continue;
        };
        let entry = match (peek.successful, peek.id.and_then(raw_id_text)) {
            (true, Some(id)) => pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id),
            _ => None,
        };
        match entry {
            Some(entry) => {
                any_reply = true;
                let done = {
                    let mut p = entry.lock().unwrap_or_else(PoisonError::into_inner);
                    p.replies.push(message.to_owned());
                    p.remaining = p.remaining.saturating_sub(1);
                    p.remaining == 0
                };
                if done {
                    completed.push(entry);
                }
            }
            None => rest.push(message),
        }
    }
    if !any_reply {
        // Nothing for a waiting request: the frame goes on exactly as it came.
        return if rest.is_empty() { None } else { whole() };
    }
    // Deliveries that share a frame with a reply travel with that reply (as on long-polling):
    // a connect reply and the batch it carries stay together.
    if let Some(first) = completed.first() {
        let mut p = first.lock().unwrap_or_else(PoisonError::into_inner);
        p.replies.extend(rest.drain(..).map(RawValue::to_owned));
    }
    for entry in completed {
        let mut p = entry.lock().unwrap_or_else(PoisonError::into_inner);
        let body = join_messages(p.replies.iter().map(|r| &**r));
        if let Some(done) = p.done.take() {
            let _ = done.send(Ok(Bytes::from(body)));
        }
    }
    if rest.is_empty() {
        None
    } else {
        Some(Bytes::from(join_messages(rest)))
    }
}

/// [`dispatch`] of `frame` with replies pending for message ids `1` and `2` (one request
/// each): what it hands on, and the reply bodies of the requests it completed. For the fuzz
/// harness only.
#[cfg(feature = "fuzzing")]
pub(crate) fn dispatch_for_fuzzing(frame: &[u8]) -> (Option<Bytes>, Vec<Bytes>) {
    let pending: PendingMap = Arc::default();
    let mut waiting = Vec::new();
    for id in ["1", "2"] {
        let (done, rx) = oneshot::channel();
        let entry = Pending {
            remaining: 1,
            replies: Vec::new(),
            done: Some(done),
        };
        pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned(), Arc::new(Mutex::new(entry)));
        waiting.push(rx);
    }
    let rest = dispatch(frame, &pending);
    let replies = waiting
        .into_iter()
        .filter_map(|mut rx| rx.try_recv().ok()?.ok())
        .collect();
    (rest, replies)
}

fn classify(e: tokio_tungstenite::tungstenite::Error) -> TransportError {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Http(response) => TransportError::Status {
            status: response.status().as_u16(),
            body: "WebSocket upgrade refused".to_owned(),
        },
        Error::Io(e) => TransportError::Connect(e.to_string()),
        Error::Tls(e) => TransportError::Connect(format!("TLS: {e}")),
        other => TransportError::Connect(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ws_urls_follow_the_http_scheme() {
        let u = |s: &str| ws_url(&s.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(
            u("http://h:8/api/v2/notifications").as_deref(),
            Some("ws://h:8/api/v2/notifications")
        );
        assert_eq!(u("https://h/x").as_deref(), Some("wss://h/x"));
        assert_eq!(u("ftp://h/x"), None);
    }

    #[test]
    fn replies_go_to_their_request_and_the_rest_is_pushed() {
        let pending: PendingMap = Arc::default();
        let (tx, mut rx) = oneshot::channel();
        let entry = Arc::new(Mutex::new(Pending {
            remaining: 2,
            replies: Vec::new(),
            done: Some(tx),
        }));
        pending.lock().unwrap().insert("1".into(), entry.clone());
        pending.lock().unwrap().insert("2".into(), entry);
        let frame = br#"[{"id":"1","channel":"/meta/subscribe","successful":true},
                        {"channel":"/v2/me/chats","data":{"n":1},"id":"1"}]"#;
        let rest = dispatch(frame, &pending).unwrap();
        let rest: Value = serde_json::from_slice(&rest).unwrap();
        assert_eq!(
            rest[0]["data"]["n"], 1,
            "a delivery with a colliding id is not a reply"
        );
        assert!(rx.try_recv().is_err(), "one of two replies is not enough");
        assert!(dispatch(
            br#"{"id":2,"channel":"/meta/subscribe","successful":true}"#,
            &pending
        )
        .is_none());
        let body = rx.try_recv().unwrap().unwrap();
        let replies: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(replies.as_array().unwrap().len(), 2);
        // Not JSON: passed on for the protocol to report.
        assert_eq!(dispatch(b"nope", &pending).unwrap().as_ref(), b"nope");
        fail_all(&pending);
    }

    #[test]
    fn frames_keep_the_exact_text_the_server_sent() {
        let pending: PendingMap = Arc::default();
        // Deliveries only: the very bytes go on (key order and spacing kept, nothing re-encoded).
        let frame = br#"[ {"data":{"z":1,"a":"\u00e9"},"channel":"/v2/me/chats"} ]"#;
        assert_eq!(dispatch(frame, &pending).unwrap().as_ref(), frame);
        let single = br#"{"data":{"z":1},"channel":"/v2/me/chats"}"#;
        assert_eq!(dispatch(single, &pending).unwrap().as_ref(), single);
        assert!(dispatch(b"[]", &pending).is_none());
        // A reply and a delivery in one frame: both travel to the request, as their own texts.
        let (tx, mut rx) = oneshot::channel();
        let entry = Arc::new(Mutex::new(Pending {
            remaining: 1,
            replies: Vec::new(),
            done: Some(tx),
        }));
        pending.lock().unwrap().insert("7".into(), entry);
        let frame = br#"[{"id":"7","successful":true,"channel":"/meta/connect"},{"data":{"z":1,"a":2},"channel":"/x"}]"#;
        assert!(dispatch(frame, &pending).is_none());
        let body = rx.try_recv().unwrap().unwrap();
        assert_eq!(body.as_ref(), frame.as_slice());
        // `successful: null` still marks a reply.
        let (tx, mut rx) = oneshot::channel();
        let entry = Arc::new(Mutex::new(Pending {
            remaining: 1,
            replies: Vec::new(),
            done: Some(tx),
        }));
        pending.lock().unwrap().insert("8".into(), entry);
        assert!(dispatch(br#"[{"id":8,"successful":null}]"#, &pending).is_none());
        assert!(rx.try_recv().unwrap().is_ok());
    }
}
