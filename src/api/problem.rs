//! RFC 9457 problem details (`application/problem+json`): every error the operations API
//! answers, and the one mapping from a GWS outcome ([`SessionError`]) to an HTTP status.
//!
//! A problem's `type` is a URN, `urn:chatwatch:problem:<name>` (nothing to dereference); the
//! names and their statuses are the table in README "Operations API" and in
//! `openapi/chatwatch.v1.json`. A problem about GWS's answer carries `gws_status`, GWS's
//! `statusCode`, where GWS gave one. Each problem also tells the request middleware why the
//! request failed (the `reason` label of `chatwatch_api_request_failures_total`).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use crate::gws::operations::{GwsError, OperationError};
use crate::gws::session::SessionError;

/// The media type of a problem body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why a request failed, as the `reason` label of the failure counter; carried from the
/// handler to the middleware in the response's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureReason(pub &'static str);

/// One problem (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// The short name in `type` (`urn:chatwatch:problem:<name>`), also the failure reason.
    pub name: &'static str,
    /// A short summary of the problem type, the same for every occurrence.
    pub title: &'static str,
    /// What happened this time.
    pub detail: String,
    /// GWS's `statusCode`, when GWS answered with one.
    pub gws_status: Option<i64>,
    /// More members (`allowed`, `response`, `event`).
    pub extra: Map<String, Value>,
}

impl Problem {
    /// A problem without GWS status or extra members.
    pub fn new(
        status: StatusCode,
        name: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            status,
            name,
            title,
            detail: detail.into(),
            gws_status: None,
            extra: Map::new(),
        }
    }

    /// The same problem with one more member.
    pub fn with(mut self, key: &str, value: Value) -> Problem {
        self.extra.insert(key.to_owned(), value);
        self
    }

    /// 400: the request cannot be read (bad JSON, a bad query).
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "The request cannot be read",
            detail,
        )
    }

    /// 422: the body is JSON but not the operation's parameters (unknown or missing field,
    /// wrong type).
    pub fn invalid_body(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-body",
            "The body is not the operation's parameters",
            detail,
        )
    }

    /// 422: the operation breaks a rule of the GWS chat API; nothing was sent.
    pub fn validation(e: &OperationError) -> Problem {
        Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "The operation breaks a rule of the GWS chat API; nothing was sent",
            e.to_string(),
        )
    }

    /// 404: no running account of that name.
    pub fn unknown_account(name: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-account",
            "No running account of that name",
            format!("no running account `{name}`"),
        )
    }

    /// 404: the account does not track that chat.
    pub fn unknown_chat(account: &str, chat_id: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "unknown-chat",
            "The account does not track that chat",
            format!("account `{account}` tracks no chat `{chat_id}`"),
        )
    }

    /// 404: nothing is served at this path.
    pub fn not_found(path: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Nothing is served at this path",
            format!("no route for {path}; see /v1/openapi.json"),
        )
    }

    /// 401: no bearer token, or not one of the configured ones.
    pub fn unauthorized(detail: &str, reason: &'static str) -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            reason,
            "A valid bearer token is required",
            detail,
        )
    }

    /// The problem for any other status an inner layer answered without a body (405, 413, ...).
    pub fn for_status(status: StatusCode) -> Problem {
        let (name, title) = match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                ("method-not-allowed", "The method is not allowed here")
            }
            StatusCode::PAYLOAD_TOO_LARGE => ("too-large", "The body is too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported-media-type",
                "The body must be application/json",
            ),
            s if s.is_server_error() => ("internal", "chatwatch failed to answer"),
            _ => ("bad-request", "The request cannot be read"),
        };
        Problem::new(
            status,
            name,
            title,
            status.canonical_reason().unwrap_or("error").to_owned(),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            format!("urn:chatwatch:problem:{}", self.name).into(),
        );
        body.insert("title".into(), self.title.into());
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.clone().into());
        if let Some(code) = self.gws_status {
            body.insert("gws_status".into(), code.into());
        }
        for (k, v) in &self.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.name == "wrong-token" {
                r#"Bearer realm="chatwatch", error="invalid_token""#
            } else {
                r#"Bearer realm="chatwatch""#
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response.extensions_mut().insert(FailureReason(self.name));
        response
    }
}

/// The HTTP status and problem for GWS's refusal of an operation, or for not reaching GWS.
///
/// | GWS | HTTP | name |
/// | --- | --- | --- |
/// | `statusCode` 2 (not valid in the current state), 18, 19 | 409 | `gws-conflict` |
/// | `statusCode` 6, or HTTP 404 (no such chat) | 404 | `gws-not-found` |
/// | `statusCode` 1 or 10 (parameters) | 422 | `gws-invalid` |
/// | `statusCode` 3 or 5 (forbidden, no permission) | 403 | `gws-forbidden` |
/// | 401, 403, CSRF, `statusCode` 20 (chatwatch's login failed) | 502 | `gws-auth` |
/// | HTTP 503 (backend unavailable) | 503 | `gws-unavailable` |
/// | not reachable, another status, an unreadable answer, other codes | 502 | `gws-error` |
pub fn gws_problem(e: &SessionError) -> Problem {
    match e {
        SessionError::Operation(op) => Problem::validation(op),
        SessionError::Transport { source, .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            "gws-error",
            "GWS could not be reached or gave no usable answer",
            source.to_string(),
        ),
        SessionError::Build { source, .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            "gws-error",
            "GWS could not be reached or gave no usable answer",
            source.to_string(),
        ),
        SessionError::Gws { source, .. } => gws_error_problem(source),
    }
}

fn gws_error_problem(e: &GwsError) -> Problem {
    let detail = e.to_string();
    match e {
        GwsError::Rejected { status_code, .. } => {
            let (status, name, title) = match status_code {
                2 | 18 | 19 => (
                    StatusCode::CONFLICT,
                    "gws-conflict",
                    "GWS refused the operation in the chat's current state",
                ),
                6 => (
                    StatusCode::NOT_FOUND,
                    "gws-not-found",
                    "GWS knows no such chat",
                ),
                1 | 10 => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "gws-invalid",
                    "GWS refused the operation's parameters",
                ),
                3 | 5 => (
                    StatusCode::FORBIDDEN,
                    "gws-forbidden",
                    "GWS does not allow the agent this operation",
                ),
                20 => (
                    StatusCode::BAD_GATEWAY,
                    "gws-auth",
                    "chatwatch could not authenticate at GWS",
                ),
                _ => (
                    StatusCode::BAD_GATEWAY,
                    "gws-error",
                    "GWS could not be reached or gave no usable answer",
                ),
            };
            let mut p = Problem::new(status, name, title, detail);
            p.gws_status = Some(*status_code);
            p
        }
        GwsError::Csrf | GwsError::Forbidden { .. } | GwsError::Unauthorized => Problem::new(
            StatusCode::BAD_GATEWAY,
            "gws-auth",
            "chatwatch could not authenticate at GWS",
            detail,
        ),
        GwsError::Unavailable { .. } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "gws-unavailable",
            "The GWS backend is unavailable; try again later",
            detail,
        ),
        GwsError::NotFound => Problem::new(
            StatusCode::NOT_FOUND,
            "gws-not-found",
            "GWS knows no such chat",
            detail,
        ),
        GwsError::Http { .. } | GwsError::Malformed { .. } => Problem::new(
            StatusCode::BAD_GATEWAY,
            "gws-error",
            "GWS could not be reached or gave no usable answer",
            detail,
        ),
    }
}

/// The failure body of a request that was refused for a bad JSON body: 400 for text that is
/// not JSON, 422 for JSON that is not the parameters.
pub fn body_problem(e: &serde_json::Error) -> Problem {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            Problem::bad_request(format!("the body is not JSON: {e}"))
        }
        Category::Data => Problem::invalid_body(e.to_string()),
    }
}

/// `{"statusCode": 0, "referenceId": ..., "statusMessage": ...}`: GWS's synchronous answer.
pub fn response_json(r: &crate::gws::operations::OperationResponse) -> Value {
    let mut v = json!({ "statusCode": r.status_code });
    if let Some(reference) = &r.reference_id {
        v["referenceId"] = serde_json::to_value(reference).unwrap_or(Value::Null);
    }
    if let Some(message) = &r.status_message {
        v["statusMessage"] = message.clone().into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gws(e: GwsError) -> Problem {
        gws_problem(&SessionError::Gws {
            account: "main".into(),
            source: e,
        })
    }

    fn rejected(code: i64) -> GwsError {
        GwsError::Rejected {
            status_code: code,
            meaning: crate::gws::operations::StatusCode(code).meaning(),
            message: None,
            http_status: 400,
        }
    }

    #[test]
    fn gws_outcomes_map_to_documented_statuses() {
        let cases = [
            (rejected(2), 409, Some(2)),
            (rejected(6), 404, Some(6)),
            (rejected(1), 422, Some(1)),
            (rejected(5), 403, Some(5)),
            (rejected(20), 502, Some(20)),
            (rejected(4), 502, Some(4)),
            (GwsError::Unavailable { message: None }, 503, None),
            (GwsError::Unauthorized, 502, None),
            (GwsError::Csrf, 502, None),
            (GwsError::NotFound, 404, None),
        ];
        for (e, status, code) in cases {
            let p = gws(e.clone());
            assert_eq!(p.status.as_u16(), status, "{e:?}");
            assert_eq!(p.gws_status, code, "{e:?}");
            let body = p.body();
            assert_eq!(body["status"], status, "{body}");
            assert!(body["type"]
                .as_str()
                .unwrap()
                .starts_with("urn:chatwatch:problem:"));
            assert_eq!(body.get("gws_status").and_then(Value::as_i64), code);
        }
    }

    #[test]
    fn a_problem_response_is_problem_json_with_a_challenge_on_401() {
        let r = Problem::unauthorized("no token", "missing-token").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="chatwatch""#
        );
        assert_eq!(
            r.extensions().get::<FailureReason>(),
            Some(&FailureReason("missing-token"))
        );
    }

    #[test]
    fn bad_json_is_400_and_wrong_shape_is_422() {
        let syntax = serde_json::from_str::<Value>("{").unwrap_err();
        assert_eq!(body_problem(&syntax).status, StatusCode::BAD_REQUEST);
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            a: String,
        }
        let data = serde_json::from_str::<T>("{\"a\":1}").unwrap_err();
        assert_eq!(body_problem(&data).status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}
