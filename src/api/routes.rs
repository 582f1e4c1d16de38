//! The handlers of the operations API's routes (see the module above for the list).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tracing::{info, warn};

use super::ops::{self, BodyError, OPERATIONS};
use super::problem::{body_problem, gws_problem, response_json, Problem};
use super::{stopping, ApiState, OPENAPI};
use crate::event::EventKind;
use crate::gws::operations::chat_path;
use crate::rules::{AccountHandle, ChatView};

type Shared = State<Arc<ApiState>>;

/// `GET /v1/openapi.json`.
pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// Anything else: 404 problem.
pub(super) async fn fallback(uri: Uri) -> Response {
    Problem::not_found(uri.path()).into_response()
}

/// The query parameters a route accepts; anything else is refused (400).
fn query(raw: Option<&str>, allowed: &[&str]) -> Result<Vec<(String, String)>, Problem> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (key, _) in &pairs {
        if !allowed.contains(&key.as_str()) {
            return Err(Problem::bad_request(format!(
                "unknown query parameter `{key}`{}",
                if allowed.is_empty() {
                    String::new()
                } else {
                    format!(" (allowed: {})", allowed.join(", "))
                }
            )));
        }
    }
    Ok(pairs)
}

fn account(state: &ApiState, name: &str) -> Result<AccountHandle, Problem> {
    state
        .directory
        .get(name)
        .ok_or_else(|| Problem::unknown_account(name))
}

/// One chat as the API shows it: the tracked view plus `participant_count` and
/// `pending_seconds` (whole seconds since `pending_since`, at `now`).
fn chat_json(view: &ChatView, now: OffsetDateTime) -> Value {
    let mut v = serde_json::to_value(view).unwrap_or(Value::Null);
    v["participant_count"] = view.participants.len().into();
    v["pending_seconds"] = match view.pending_since {
        Some(since) => ((now - since).whole_seconds().max(0)).into(),
        None => Value::Null,
    };
    v
}

/// `GET /v1/accounts/{account}/chats`.
pub(super) async fn list_chats(
    State(state): Shared,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let run = || -> Result<Response, Problem> {
        query(raw.as_deref(), &[])?;
        let handle = account(&state, &name)?;
        let now = OffsetDateTime::now_utc();
        let chats: Vec<Value> = handle.chats().iter().map(|c| chat_json(c, now)).collect();
        Ok(Json(json!({ "account": name, "chats": chats })).into_response())
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

/// `GET /v1/accounts/{account}/chats/{chat_id}`.
pub(super) async fn get_chat(
    State(state): Shared,
    Path((name, chat_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    let run = || -> Result<Response, Problem> {
        query(raw.as_deref(), &[])?;
        let handle = account(&state, &name)?;
        let view = handle
            .chat(&chat_id)
            .ok_or_else(|| Problem::unknown_chat(&name, &chat_id))?;
        Ok(Json(chat_json(&view, OffsetDateTime::now_utc())).into_response())
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

/// Reads `?wait=`: `None` for no wait (absent or 0), else the duration cut to `wait_max`.
fn wait(raw: Option<&str>, wait_max: Duration) -> Result<Option<Duration>, Problem> {
    let pairs = query(raw, &["wait"])?;
    let Some((_, text)) = pairs.last() else {
        return Ok(None);
    };
    let d = parse_wait(text).ok_or_else(|| {
        Problem::bad_request(format!(
            "`wait={text}` is not a duration such as 10s, 500ms or 1m (digits and a unit)"
        ))
    })?;
    Ok((!d.is_zero()).then(|| d.min(wait_max)))
}

/// A `wait` value in the document's form, `^(0|[1-9][0-9]{0,5})(ms|s|m)$`.
fn parse_wait(text: &str) -> Option<Duration> {
    let (digits, unit) = if let Some(d) = text.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = text.strip_suffix('s') {
        (d, 1_000)
    } else if let Some(d) = text.strip_suffix('m') {
        (d, 60_000)
    } else {
        return None;
    };
    let well_formed = !digits.is_empty()
        && digits.len() <= 6
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    let n: u64 = digits.parse().ok().filter(|_| well_formed)?;
    Some(Duration::from_millis(n * unit))
}

/// Whether a `Content-Type` (if any) is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let mime = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// `POST /v1/accounts/{account}/chats/{chat_id}/{operation}`.
pub(super) async fn operate(
    State(state): Shared,
    Path((name, chat_id, operation)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match perform(
        &state,
        &name,
        &chat_id,
        &operation,
        raw.as_deref(),
        &headers,
        &body,
    )
    .await
    {
        Ok(response) => response,
        Err(problem) => problem.into_response(),
    }
}

async fn perform(
    state: &ApiState,
    name: &str,
    chat_id: &str,
    operation: &str,
    raw: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, Problem> {
    let handle = account(state, name)?;
    if !ops::is_operation(operation) {
        let known: Vec<&str> = OPERATIONS.iter().map(|(n, _)| *n).collect();
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-operation",
            "No such chat operation",
            format!(
                "no operation `{operation}`; the operations are {}",
                known.join(", ")
            ),
        )
        .with("operations", json!(known)));
    }
    let wait = wait(raw, state.wait_max)?;
    if !is_json(headers) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "The body must be application/json",
            "send the parameters as `Content-Type: application/json`",
        ));
    }
    let op = match ops::operation(operation, body) {
        Some(Ok(op)) => op,
        Some(Err(BodyError::Json(e))) => return Err(body_problem(&e)),
        Some(Err(e @ BodyError::NotObject)) => return Err(Problem::invalid_body(e.to_string())),
        Some(Err(BodyError::Rule(e))) => return Err(Problem::validation(&e)),
        None => unreachable!("checked by is_operation"),
    };
    // The same rules as the CLI, before anything is sent.
    op.validate().map_err(|e| Problem::validation(&e))?;
    chat_path(chat_id).map_err(|e| Problem::validation(&e))?;
    let Some(session) = handle.session.clone() else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "no-gws-session",
            "The account has no GWS session",
            format!("account `{name}` is a plain Bayeux account (server = \"bayeux\"): it has no chat operations"),
        ));
    };
    // Subscribe before sending, so the answer cannot slip past; hold no sender of the stream
    // (so an account that stops closes it).
    let mut events = wait.map(|_| handle.subscribe());
    drop(handle);
    let response = session
        .operate(chat_id, &op)
        .await
        .map_err(|e| gws_problem(&e).with("operation", op.name().into()))?;
    info!(account = %name, chat_id = %chat_id, operation = op.name(), reference_id = ?response.reference_id, "api: GWS accepted the operation");
    let accepted = response_json(&response);
    let (Some(timeout), Some(rx)) = (wait, events.as_mut()) else {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "operation": op.name(), "response": accepted })),
        )
            .into_response());
    };
    let deadline = Instant::now() + timeout;
    loop {
        let next = tokio::select! {
            _ = state.stop.cancelled() => return Ok(stopping()),
            next = tokio::time::timeout_at(deadline, rx.recv()) => next,
        };
        let event = match next {
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "wait-timeout",
                    "No event answered the operation in time; GWS accepted it",
                    format!("no event for chat {chat_id} within {timeout:?} (the operation was accepted)"),
                )
                .with("operation", op.name().into())
                .with("response", accepted));
            }
            Ok(Err(RecvError::Lagged(missed))) => {
                warn!(account = %name, missed, "api: the wait fell behind the account's events");
                continue;
            }
            Ok(Err(RecvError::Closed)) => {
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "account-stopped",
                    "The account stopped while waiting",
                    format!("account `{name}` stopped before an event answered the operation (GWS accepted it)"),
                )
                .with("response", accepted));
            }
            Ok(Ok(event)) => event,
        };
        if !event.answers(chat_id, &op, response.reference_id.as_ref()) {
            continue;
        }
        let event_json = serde_json::to_value(&*event).unwrap_or(Value::Null);
        if event.kind == EventKind::Error {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "operation-failed",
                "GWS reported that the operation failed",
                event
                    .error_message
                    .clone()
                    .unwrap_or_else(|| "(no message)".to_owned()),
            )
            .with("operation", op.name().into())
            .with("response", accepted)
            .with("event", event_json));
        }
        return Ok(Json(json!({
            "operation": op.name(),
            "response": accepted,
            "event": event_json,
        }))
        .into_response());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_has_the_documented_form() {
        assert_eq!(parse_wait("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_wait("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_wait("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_wait("0s"), Some(Duration::ZERO));
        for bad in [
            "0", "10", "010s", "1.5s", "-1s", "s", "1h", "1234567s", " 1s",
        ] {
            assert_eq!(parse_wait(bad), None, "{bad}");
        }
        let max = Duration::from_secs(5);
        assert_eq!(wait(Some("wait=1m"), max).unwrap(), Some(max));
        assert_eq!(wait(Some("wait=0ms"), max).unwrap(), None);
        assert_eq!(wait(None, max).unwrap(), None);
        assert!(wait(Some("other=1"), max).is_err());
    }
}
