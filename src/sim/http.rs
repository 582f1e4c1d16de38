//! The simulator's HTTP surface: authentication (HTTP Basic → `JSESSIONID`), CSRF, the REST
//! resources (`/api/v2/me`, `/api/v2/me/chats[/{id}]`), the CometD endpoint
//! (`/api/v2/notifications[/...]`) and the unauthenticated side door (`/sim/...`, loopback
//! peers only).
//!
//! One fallback handler dispatches every request by hand, so that every request, whatever its
//! outcome, is written to the request log with its final status.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::bayeux::{self, Caller, BROWSER_COOKIE};
use super::chat;
use super::state::{ChatOpError, HttpSession, Shared};
use super::{ChatOffer, LoggedRequest};

/// The session cookie GWS (a Java servlet container) uses.
pub(super) const SESSION_COOKIE: &str = "JSESSIONID";
/// The header that names the CSRF header, and the CSRF header itself (§1.3).
pub(super) const CSRF_HEADER_NAME: &str = "X-CSRF-HEADER";
/// The CSRF token header.
pub(super) const CSRF_TOKEN: &str = "X-CSRF-TOKEN";

/// The router: one fallback handler for everything, and the WebSocket upgrade of the CometD
/// endpoint.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/api/v2/notifications",
            axum::routing::get(websocket_entry).post(entry),
        )
        .fallback(entry)
        .with_state(shared)
}

/// `GET /api/v2/notifications` with `Upgrade: websocket`: the same CometD server over one
/// socket (each text frame a request; each answer a frame), authenticated by the upgrade
/// request's cookie or Basic credentials. Refused with 403 while the side door says so.
async fn websocket_entry(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let mut rec = LoggedRequest {
        method: "GET".to_owned(),
        path: "/api/v2/notifications".to_owned(),
        query: None,
        operation_name: None,
        status: 0,
        csrf_header: headers.contains_key(CSRF_TOKEN),
        session_cookie: !cookies(&headers, SESSION_COOKIE).is_empty(),
        basic_auth: basic_credentials(&headers).is_some(),
        user: None,
        bayeux_channels: Vec::new(),
        note: Some("websocket".to_owned()),
    };
    let refuse = {
        let mut st = shared.lock();
        if st.ws_refuse {
            st.ws_refused += 1;
        }
        st.ws_refuse
    };
    let response = if refuse {
        gws_error(
            StatusCode::FORBIDDEN,
            3,
            "WebSocket refused (simulated proxy)",
        )
    } else {
        match authenticate(&shared, &headers, false) {
            Err(e) => e.into_response(),
            Ok(auth) => {
                rec.user = Some(auth.user.clone());
                shared.lock().ws_upgrades += 1;
                let browser = cookies(&headers, BROWSER_COOKIE).into_iter().next();
                let user = auth.user.clone();
                let shared = Arc::clone(&shared);
                upgrade
                    .max_message_size(MAX_WS_MESSAGE)
                    .on_upgrade(move |socket| serve_websocket(shared, socket, user, browser))
            }
        }
    };
    rec.status = response.status().as_u16();
    shared.log(rec);
    response
}

/// Largest frame the simulator reads.
const MAX_WS_MESSAGE: usize = 1 << 20;

/// One socket: frames are handled concurrently (a connect may be held while subscribes pass),
/// and each answer goes back as one frame.
async fn serve_websocket(
    shared: Arc<Shared>,
    socket: axum::extract::ws::WebSocket,
    user: String,
    mut browser: Option<String>,
) {
    use axum::extract::ws::Message;
    use futures_util::{SinkExt, StreamExt};
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = out_rx.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    });
    let mut handlers = tokio::task::JoinSet::new();
    let mut epoch = shared.ws_epoch.subscribe();
    loop {
        let frame = tokio::select! {
            frame = stream.next() => frame,
            _ = epoch.changed() => break,
            _ = shared.shutdown.cancelled() => break,
        };
        let Some(Ok(frame)) = frame else { break };
        let Message::Text(text) = frame else {
            if matches!(frame, Message::Close(_)) {
                break;
            }
            continue;
        };
        // The browser cookie a handshake would set is kept for this socket instead.
        let body = text.as_bytes().to_vec();
        let shared = Arc::clone(&shared);
        let user = user.clone();
        let sent_browser = browser.clone();
        let out = out.clone();
        let (browser_tx, browser_rx) = tokio::sync::oneshot::channel();
        handlers.spawn(async move {
            let caller = Caller {
                user: &user,
                browser: sent_browser.as_deref(),
            };
            match bayeux::handle(&shared, caller, &body).await {
                Ok(answer) => {
                    let _ = browser_tx.send(answer.set_browser.clone());
                    let _ = out.send(Value::Array(answer.body).to_string());
                }
                Err(e) => {
                    let _ = browser_tx.send(None);
                    tracing::debug!(error = %e, "sim: unreadable WebSocket frame");
                }
            }
        });
        // A handshake answers at once; wait for it so the next frame carries its browser id.
        if text.contains("/meta/handshake") {
            if let Ok(Some(b)) = browser_rx.await {
                browser = Some(b);
            }
        }
    }
    handlers.abort_all();
    drop(out);
    let _ = writer.await;
}

async fn entry(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut rec = LoggedRequest {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        operation_name: None,
        status: 0,
        csrf_header: headers.contains_key(CSRF_TOKEN),
        session_cookie: !cookies(&headers, SESSION_COOKIE).is_empty(),
        basic_auth: basic_credentials(&headers).is_some(),
        user: None,
        bayeux_channels: Vec::new(),
        note: None,
    };
    let response = dispatch(&shared, peer, &method, &uri, &headers, &body, &mut rec).await;
    rec.status = response.status().as_u16();
    shared.log(rec);
    response
}

/// A refused request, as the simulator answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum HttpError {
    /// Neither a valid session nor valid Basic credentials: 401, `statusCode` 20.
    #[error("user not authenticated")]
    Unauthenticated,
    /// A modifying request without the session's CSRF token: 403 with a text body.
    #[error("Missing or invalid Csrf token")]
    Csrf,
    /// Any other GWS error: `{"statusCode":N,"statusMessage":"..."}`.
    #[error("{message}")]
    Gws {
        /// The HTTP status.
        status: StatusCode,
        /// The GWS `statusCode`.
        code: u8,
        /// The `statusMessage`.
        message: String,
    },
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        match self {
            HttpError::Unauthenticated => {
                let mut r = gws_error(StatusCode::UNAUTHORIZED, 20, "user not authenticated");
                r.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"GWS\""),
                );
                r
            }
            HttpError::Csrf => (
                StatusCode::FORBIDDEN,
                [(CONTENT_TYPE, "text/plain;charset=UTF-8")],
                "Missing or invalid Csrf token",
            )
                .into_response(),
            HttpError::Gws {
                status,
                code,
                message,
            } => gws_error(status, code, message),
        }
    }
}

/// A GWS error body: `{"statusCode":N,"statusMessage":"..."}`.
fn gws_error(status: StatusCode, code: u8, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"statusCode": code, "statusMessage": message.into()})),
    )
        .into_response()
}

/// An [`HttpError::Gws`].
fn gws(status: StatusCode, code: u8, message: impl Into<String>) -> HttpError {
    HttpError::Gws {
        status,
        code,
        message: message.into(),
    }
}

fn not_found() -> Response {
    gws_error(StatusCode::NOT_FOUND, 6, "Resource not found")
}

fn method_not_allowed() -> Response {
    gws_error(StatusCode::METHOD_NOT_ALLOWED, 3, "Method not allowed")
}

/// Every value of cookie `name` in the request's `Cookie` headers.
fn cookies(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// `Authorization: Basic <b64(user:password)>`, decoded; `None` if absent or malformed.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// An authenticated request.
struct Auth {
    user: String,
    nickname: String,
    csrf: String,
    /// The HTTP session the request belongs to (existing or just opened).
    session: String,
    /// A session created by this request: its id goes out in `Set-Cookie`.
    new_session: Option<String>,
}

/// Authenticates a request: a valid `JSESSIONID` wins; else valid Basic credentials open a new
/// HTTP session; else 401. On a data-modifying request with CSRF on, the token must match the
/// session's, and a request with no session yet is refused (there is no token to match).
///
/// GUESS: with a valid `JSESSIONID`, a Basic header is not checked again (Spring Security skips
/// re-authentication for the same principal). Authentication is checked before CSRF.
fn authenticate(shared: &Shared, headers: &HeaderMap, modifying: bool) -> Result<Auth, HttpError> {
    let csrf_on = shared.cfg.csrf;
    let sent_token = headers.get(CSRF_TOKEN).and_then(|v| v.to_str().ok());
    let mut st = shared.lock();
    for sid in cookies(headers, SESSION_COOKIE) {
        if let Some(s) = st.http.get(&sid) {
            if modifying && csrf_on && sent_token != Some(s.csrf.as_str()) {
                return Err(HttpError::Csrf);
            }
            let user = s.user.clone();
            let csrf = s.csrf.clone();
            return Ok(Auth {
                nickname: nickname(shared, &user),
                user,
                csrf,
                session: sid,
                new_session: None,
            });
        }
    }
    let Some((name, password)) = basic_credentials(headers) else {
        return Err(HttpError::Unauthenticated);
    };
    let Some(user) = shared
        .cfg
        .users
        .iter()
        .find(|u| u.username == name && u.password.expose() == password)
    else {
        return Err(HttpError::Unauthenticated);
    };
    if modifying && csrf_on {
        return Err(HttpError::Csrf);
    }
    let sid = shared.token(&mut st, 32);
    let csrf = shared.token(&mut st, 32).to_ascii_lowercase();
    st.http.insert(
        sid.clone(),
        HttpSession {
            user: user.username.clone(),
            csrf: csrf.clone(),
        },
    );
    Ok(Auth {
        user: user.username.clone(),
        nickname: user.nickname.clone(),
        csrf,
        session: sid.clone(),
        new_session: Some(sid),
    })
}

fn nickname(shared: &Shared, user: &str) -> String {
    shared
        .cfg
        .users
        .iter()
        .find(|u| u.username == user)
        .map(|u| u.nickname.clone())
        .unwrap_or_else(|| user.to_owned())
}

/// A JSON object body; `Err` is the 400 to send.
fn object_body(body: &[u8]) -> Result<Map<String, Value>, HttpError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        // GUESS: GWS's answer to a malformed body is not documented; 400 with `statusCode` 1.
        Ok(_) => Err(gws(
            StatusCode::BAD_REQUEST,
            1,
            "Request body must be a JSON object",
        )),
        Err(e) => Err(gws(
            StatusCode::BAD_REQUEST,
            1,
            format!("Malformed JSON body: {e}"),
        )),
    }
}

async fn dispatch(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    rec: &mut LoggedRequest,
) -> Response {
    let path = uri.path();
    if let Some(rest) = path.strip_prefix("/sim/") {
        if !peer.ip().is_loopback() {
            return gws_error(
                StatusCode::FORBIDDEN,
                3,
                "The side door is for loopback only",
            );
        }
        return side_door(shared, method, rest, body, rec);
    }
    let Some(api) = path.strip_prefix("/api/v2/") else {
        return not_found();
    };
    let modifying = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    let auth = match authenticate(shared, headers, modifying) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    rec.user = Some(auth.user.clone());
    let segments: Vec<&str> = api.trim_end_matches('/').split('/').collect();
    let mut response = match (method.clone(), segments.as_slice()) {
        (Method::POST, ["notifications", ..]) => {
            let browser = cookies(headers, BROWSER_COOKIE).into_iter().next();
            let caller = Caller {
                user: &auth.user,
                browser: browser.as_deref(),
            };
            match bayeux::handle(shared, caller, body).await {
                Ok(out) => {
                    rec.bayeux_channels = out.channels;
                    let mut r = Json(Value::Array(out.body)).into_response();
                    if let Some(b) = out.set_browser {
                        if let Ok(v) = HeaderValue::from_str(&format!(
                            "{BROWSER_COOKIE}={b}; Path=/; HttpOnly"
                        )) {
                            r.headers_mut().append(SET_COOKIE, v);
                        }
                    }
                    r
                }
                Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
            }
        }
        (_, ["notifications", ..]) => method_not_allowed(),
        (Method::GET, ["me"]) => get_me(shared, &auth, uri),
        (Method::POST, ["me"]) => post_me(shared, &auth, body, rec),
        (_, ["me"]) => method_not_allowed(),
        (Method::GET, ["me", "chats"]) => {
            let chats = shared.open_chats(&auth.user);
            Json(json!({"statusCode": 0, "chats": chats})).into_response()
        }
        (_, ["me", "chats"]) => method_not_allowed(),
        (Method::GET, ["me", "chats", id]) => {
            let st = shared.lock();
            match st.chats.get(*id).filter(|c| c.agent == auth.user) {
                Some(c) => Json(json!({"statusCode": 0, "chat": c.resource()})).into_response(),
                None => gws_error(StatusCode::NOT_FOUND, 6, "Chat not found"),
            }
        }
        (Method::POST, ["me", "chats", id]) => chat_op(shared, &auth, id, body, rec),
        (_, ["me", "chats", _]) => method_not_allowed(),
        _ => not_found(),
    };
    if let Some(sid) = &auth.new_session {
        if let Ok(v) = HeaderValue::from_str(&format!("{SESSION_COOKIE}={sid}; Path=/; HttpOnly")) {
            response.headers_mut().append(SET_COOKIE, v);
        }
    }
    if shared.cfg.csrf && *method == Method::GET {
        if let Ok(v) = HeaderValue::from_str(&auth.csrf) {
            let h = response.headers_mut();
            h.insert(CSRF_HEADER_NAME, HeaderValue::from_static(CSRF_TOKEN));
            h.insert(CSRF_TOKEN, v);
        }
    }
    response
}

/// A stable user id derived from the username (GWS ids are opaque hex strings).
fn user_id(username: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hex = hex::encode(Sha256::digest(username.as_bytes()));
    hex.truncate(32);
    hex
}

fn get_me(shared: &Shared, auth: &Auth, uri: &Uri) -> Response {
    let wanted: Vec<String> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == "subresources")
                .flat_map(|(_, v)| {
                    v.split(',')
                        .map(|s| s.trim().to_owned())
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .unwrap_or_default();
    let (first, last) = match auth.nickname.split_once(' ') {
        Some((f, l)) => (f.to_owned(), l.to_owned()),
        None => (auth.nickname.clone(), String::new()),
    };
    let id = user_id(&auth.user);
    let mut user = json!({
        "id": id,
        "userName": auth.user,
        "firstName": first,
        "lastName": last,
        "roles": ["ROLE_AGENT"],
        "enabledFeatures": ["api-multimedia", "api-multimedia-chat"],
        "path": format!("/users/{id}"),
        "uri": format!("{}/api/v2/users/{id}", shared.external_base),
    });
    // GUESS: `subresources=*` returns many more sub-resources in GWS (channels, devices,
    // settings, ...); the simulator models only `chats`.
    if wanted.iter().any(|w| w == "*" || w == "chats") {
        if let Some(u) = user.as_object_mut() {
            u.insert("chats".into(), shared.open_chats(&auth.user).into());
        }
    }
    Json(json!({"statusCode": 0, "user": user})).into_response()
}

fn post_me(shared: &Shared, auth: &Auth, body: &[u8], rec: &mut LoggedRequest) -> Response {
    let body = match object_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let op = body.get("operationName").and_then(Value::as_str);
    rec.operation_name = op.map(str::to_owned);
    let mut st = shared.lock();
    let agent = st.agents.entry(auth.user.clone()).or_default();
    match op {
        Some("StartContactCenterSession") => {
            agent.contact_center = true;
            agent.channels = body
                .get("channels")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Json(json!({"statusCode": 0})).into_response()
        }
        // GWS: "logs out the agent and restores the agent's default device assignment ... also
        // invalidates the client HTTP session". The agent is logged out for every session of
        // the user (a Workspace desktop beside chatwatch included); the calling HTTP session
        // ends, with its CometD sessions.
        Some("EndContactCenterSession") => {
            agent.contact_center = false;
            agent.channels.clear();
            agent.logouts += 1;
            st.http.remove(&auth.session);
            Json(json!({"statusCode": 0})).into_response()
        }
        Some(other) => gws_error(
            StatusCode::BAD_REQUEST,
            1,
            format!("Unknown operationName '{other}'"),
        ),
        None => gws_error(
            StatusCode::BAD_REQUEST,
            1,
            "Parameter 'operationName' is missing",
        ),
    }
}

fn chat_op(
    shared: &Shared,
    auth: &Auth,
    chat_id: &str,
    body: &[u8],
    rec: &mut LoggedRequest,
) -> Response {
    let body = match object_body(body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let Some(op) = body.get("operationName").and_then(Value::as_str) else {
        return gws_error(
            StatusCode::BAD_REQUEST,
            1,
            "Parameter 'operationName' is missing",
        );
    };
    rec.operation_name = Some(op.to_owned());
    {
        let mut state = shared.lock();
        if state.unavailable_operations > 0 {
            state.unavailable_operations -= 1;
            return gws_error(
                StatusCode::SERVICE_UNAVAILABLE,
                4,
                "Service Unavailable (simulated)",
            );
        }
    }
    match shared.chat_operation(&auth.user, &auth.nickname, chat_id, op, &body) {
        Ok(reference) => Json(json!({"statusCode": 0, "referenceId": reference})).into_response(),
        Err(ChatOpError::NotFound) => gws_error(StatusCode::NOT_FOUND, 6, "Chat not found"),
        Err(ChatOpError::Refused(e)) => {
            gws_error(StatusCode::BAD_REQUEST, e.status_code(), e.to_string())
        }
    }
}

/// An optional side-door body: empty or `null` is `{}`.
fn side_body(body: &[u8]) -> Result<Map<String, Value>, HttpError> {
    let trimmed = body.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(Map::new());
    }
    object_body(body)
}

fn side_str<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, HttpError> {
    body.get(key).and_then(Value::as_str).ok_or_else(|| {
        gws(
            StatusCode::BAD_REQUEST,
            1,
            format!("Parameter '{key}' (a string) is missing"),
        )
    })
}

/// The side door: test and CLI controls, no authentication.
fn side_door(
    shared: &Shared,
    method: &Method,
    rest: &str,
    body: &[u8],
    rec: &mut LoggedRequest,
) -> Response {
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let is_post = *method == Method::POST;
    let body = if is_post {
        match side_body(body) {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        }
    } else {
        Map::new()
    };
    let result: Result<Value, HttpError> = (|| match (is_post, segments.as_slice()) {
        (true, ["offer"]) => {
            let agent = side_str(&body, "agent")?;
            let offer = ChatOffer {
                customer_nickname: body
                    .get("customer")
                    .and_then(Value::as_str)
                    .unwrap_or("Customer")
                    .to_owned(),
                user_data: body
                    .get("userData")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
                conference: body
                    .get("conference")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                first_message: body
                    .get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            };
            let (id, note) = shared.offer(agent, offer);
            rec.note = note;
            Ok(json!({"chatId": id}))
        }
        (true, ["websocket"]) => {
            let mut st = shared.lock();
            if let Some(refuse) = body.get("refuse").and_then(Value::as_bool) {
                st.ws_refuse = refuse;
            }
            Ok(
                json!({"refuse": st.ws_refuse, "upgrades": st.ws_upgrades, "refused": st.ws_refused}),
            )
        }
        (true, ["lose-ack"]) => {
            let count = body.get("count").and_then(Value::as_u64).unwrap_or(1);
            let mut st = shared.lock();
            st.ack_lost = u32::try_from(count).unwrap_or(u32::MAX);
            Ok(json!({"ackLost": st.ack_lost}))
        }
        (true, ["expire-bayeux"]) => Ok(json!({"expired": shared.lock().expire_bayeux()})),
        (true, ["expire-http"]) => Ok(json!({"expired": expire_http(shared)})),
        (true, ["restart"]) => {
            let bayeux = shared.lock().expire_bayeux();
            let http = expire_http(shared);
            Ok(json!({"bayeuxSessions": bayeux, "httpSessions": http}))
        }
        (true, ["pause"]) => {
            let agent = side_str(&body, "agent")?;
            let paused = body.get("paused").and_then(Value::as_bool).unwrap_or(true);
            shared
                .lock()
                .agents
                .entry(agent.to_owned())
                .or_default()
                .paused = paused;
            Ok(json!({"agent": agent, "paused": paused}))
        }
        (true, ["set-state"]) => {
            let id = side_str(&body, "chatId")?;
            let state = side_str(&body, "state")?;
            if set_state(shared, id, state) {
                Ok(json!({"chatId": id, "state": state}))
            } else {
                Err(gws(StatusCode::NOT_FOUND, 6, "Chat not found"))
            }
        }
        (true, ["customer-message"]) => {
            let id = side_str(&body, "chatId")?;
            let text = side_str(&body, "text")?.to_owned();
            customer(shared.customer_action(id, |c, clock| c.customer_says(text, clock)))
        }
        (true, ["customer-leave"]) => {
            let id = side_str(&body, "chatId")?;
            customer(shared.customer_action(id, |c, clock| c.customer_leaves(clock)))
        }
        (true, ["revoke"]) => {
            let id = side_str(&body, "chatId")?;
            customer(shared.customer_action(id, |c, _| c.revoke()))
        }
        (false, ["requests"]) => serde_json::to_value(shared.requests())
            .map_err(|e| gws(StatusCode::INTERNAL_SERVER_ERROR, 4, e.to_string())),
        (false, ["sessions"]) => serde_json::to_value(shared.sessions())
            .map_err(|e| gws(StatusCode::INTERNAL_SERVER_ERROR, 4, e.to_string())),
        (false, ["agents"]) => Ok(shared.agents()),
        (false, ["chats", id]) => {
            let st = shared.lock();
            st.chats
                .get(*id)
                .map(|c| c.resource())
                .ok_or_else(|| gws(StatusCode::NOT_FOUND, 6, "Chat not found"))
        }
        (false, ["chats"]) => {
            let st = shared.lock();
            let mut all: Vec<&chat::ChatRec> = st.chats.values().collect();
            all.sort_by_key(|c| c.seq);
            Ok(Value::Array(all.iter().map(|c| c.resource()).collect()))
        }
        _ => Err(gws(StatusCode::NOT_FOUND, 6, "Resource not found")),
    })();
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn customer(done: bool) -> Result<Value, HttpError> {
    if done {
        Ok(json!({"ok": true}))
    } else {
        Err(gws(
            StatusCode::CONFLICT,
            2,
            "No such chat, or the action is not valid in its state",
        ))
    }
}

/// Forgets every HTTP session; returns how many there were.
pub(super) fn expire_http(shared: &Shared) -> usize {
    let n = {
        let mut st = shared.lock();
        let n = st.http.len();
        st.http.clear();
        n
    };
    // The sockets authenticated by those sessions go with them.
    shared.ws_epoch.send_modify(|e| *e += 1);
    n
}

/// Sets a chat's state without a notification.
pub(super) fn set_state(shared: &Shared, chat_id: &str, state: &str) -> bool {
    let mut st = shared.lock();
    match st.chats.get_mut(chat_id) {
        Some(c) => {
            c.state = state.to_owned();
            if !chat::is_open(state) {
                c.participants.clear();
            }
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_from_every_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; JSESSIONID=abc"));
        h.append(COOKIE, HeaderValue::from_static("JSESSIONID=def;b=2"));
        assert_eq!(cookies(&h, "JSESSIONID"), vec!["abc", "def"]);
        assert_eq!(cookies(&h, "b"), vec!["2"]);
        assert!(cookies(&h, "zzz").is_empty());
    }

    #[test]
    fn basic_credentials_are_decoded_leniently() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_credentials(&h), None);
        let b64 = base64::engine::general_purpose::STANDARD.encode("agent1:pa:ss");
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("basic {b64}")).unwrap(),
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("agent1".into(), "pa:ss".into()))
        );
        for bad in ["Basic !!!", "Bearer abc", "Basic", "Basic Zm9v"] {
            h.insert(AUTHORIZATION, HeaderValue::from_static(bad));
            assert_eq!(basic_credentials(&h), None, "{bad}");
        }
    }

    #[test]
    fn user_ids_are_stable_hex() {
        assert_eq!(user_id("agent1"), user_id("agent1"));
        assert_ne!(user_id("agent1"), user_id("agent2"));
        assert_eq!(user_id("agent1").len(), 32);
    }
}
