//! The agent chat operations (`reference/gws-api.md` §4 and §6) as pure, validated data, and the
//! model of what GWS answers to them.
//!
//! Every chat operation is a `POST /api/v2/me/chats/{id}` whose JSON body names the operation
//! (`{"operationName":"Leave", ...}`). A [`ChatOperation`] holds one operation with its parameters;
//! [`ChatOperation::validate`] enforces every rule GWS documents (and a few it leaves to the client,
//! such as "`messageType` only together with `text`", §4.3) so that a request that breaks one is
//! refused here, before anything is sent, with an [`OperationError`] that names the parameter at
//! fault. [`ChatOperation::body`] validates and builds the exact JSON body with GWS's camelCase
//! field names, and [`chat_path`] builds the request path, so the HTTP session that sends an
//! operation is a thin `POST` of `op.body()?` to `chat_path(id)?` (with the cookie and the CSRF
//! header of §1.3).
//!
//! The other half is the answer. A synchronous `{"statusCode":0}` only means "accepted and passed
//! to the backend"; the outcome arrives later as a notification, matched by chat id and, where
//! present, by the reply's `referenceId` (§4.1). [`parse_response`] turns the HTTP status and body
//! into either an [`OperationResponse`] (accepted) or a [`GwsError`] that tells apart a refusal
//! with a documented `statusCode` ([`StatusCode::meaning`], §4.4), a CSRF failure, an expired
//! session, an unavailable backend and plain HTTP failures, because each asks the caller for a
//! different reaction (report, log in again, retry later).
//!
//! Nothing here does I/O, reads a clock or knows about sinks.

use std::fmt;
use std::str::FromStr;

use serde_json::{json, Map, Value};
use thiserror::Error;

use crate::gws::notification::{Capability, ReferenceId};

/// The path below the account's base URL that chat operations are posted to (§4.1); the chat id
/// follows as one more segment.
pub const CHATS_PATH: &str = "/api/v2/me/chats";

/// How many characters of an unexpected HTTP body an error keeps, so that an HTML error page
/// does not flood a log line.
pub const BODY_EXCERPT_CHARS: usize = 200;

/// How the chat server shows a message (`treatAs`, §4.3): as a normal message from the agent, or
/// as a system message. GWS's default is `Normal`.
///
/// Parses case-insensitively from a string (`"normal"`, `"SYSTEM"`), serialises as the exact wire
/// spelling, and derives [`clap::ValueEnum`] with the wire spellings as its possible values (add
/// `ignore_case = true` to the argument to accept any case on the command line).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[value(rename_all = "PascalCase")]
pub enum TreatAs {
    /// An ordinary message from the agent.
    Normal,
    /// A system message.
    System,
}

impl TreatAs {
    /// The wire spelling (`"Normal"` or `"System"`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Normal => "Normal",
            Self::System => "System",
        }
    }
}

impl fmt::Display for TreatAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is neither `Normal` nor `System` (in any case) was given as a `treatAs` value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("`treatAs` must be Normal or System, not {0:?}")]
pub struct ParseTreatAsError(pub String);

impl FromStr for TreatAs {
    type Err = ParseTreatAsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("normal") {
            Ok(Self::Normal)
        } else if s.eq_ignore_ascii_case("system") {
            Ok(Self::System)
        } else {
            Err(ParseTreatAsError(s.to_owned()))
        }
    }
}

/// A chat operation was refused before anything was sent, because it breaks a rule of the GWS
/// chat API.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OperationError {
    /// A parameter is missing, empty, or not allowed in this combination.
    #[error("cannot send {operation}: {message}")]
    Invalid {
        /// The `operationName` of the refused operation (or `"closing text"` when a
        /// [`ClosingText`] is validated on its own).
        operation: &'static str,
        /// Which parameter is at fault and why, naming parameters by their GWS spelling.
        message: String,
    },
    /// The chat id to post to is empty, so there is no chat to address.
    #[error("cannot address a chat operation: the chat id is empty")]
    EmptyChatId,
}

impl OperationError {
    fn invalid(operation: &'static str, message: impl Into<String>) -> Self {
        Self::Invalid {
            operation,
            message: message.into(),
        }
    }
}

/// Whether a string carries nothing: empty or only whitespace. Such a value is refused rather
/// than sent, because GWS would either reject it or show an empty message.
fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// Refuses a required string parameter that is blank.
fn require(operation: &'static str, name: &str, value: &str) -> Result<(), OperationError> {
    if is_blank(value) {
        Err(OperationError::invalid(
            operation,
            format!("`{name}` must not be empty"),
        ))
    } else {
        Ok(())
    }
}

/// Refuses an optional string parameter that is given but blank (leave it out instead).
fn optional(
    operation: &'static str,
    name: &str,
    value: Option<&String>,
) -> Result<(), OperationError> {
    match value {
        Some(v) if is_blank(v) => Err(OperationError::invalid(
            operation,
            format!("`{name}` must not be empty (leave it out instead)"),
        )),
        _ => Ok(()),
    }
}

/// The optional closing message of `Leave`, `Complete` and `Transfer` ("the text trio", §4.3):
/// `text`, with `messageType` (GWS default `Text`) and `treatAs` (GWS default `Normal`).
///
/// The rule GWS documents and leaves to the client: `messageType` and `treatAs` may each be sent
/// only together with `text`. An empty (or whitespace-only) `text` is refused rather than taken as
/// absent, because a caller who typed `--text ""` most likely meant something else; leave it out
/// to send no message. Absent fields are omitted from the body, so GWS applies its own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClosingText {
    /// The message shown to the customer; absent means no message.
    pub text: Option<String>,
    /// A custom label for the message (`messageType`); only with `text`.
    pub message_type: Option<String>,
    /// How the message is shown (`treatAs`); only with `text`.
    pub treat_as: Option<TreatAs>,
}

impl ClosingText {
    /// The trio from its three optional parts, as a CLI collects them. Not validated yet.
    pub fn new(
        text: Option<String>,
        message_type: Option<String>,
        treat_as: Option<TreatAs>,
    ) -> Self {
        Self {
            text,
            message_type,
            treat_as,
        }
    }

    /// No closing message at all (always valid).
    pub fn none() -> Self {
        Self::default()
    }

    /// Just a closing `text`, with GWS's defaults for the other two.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::default()
        }
    }

    /// Checks the trio rule on its own; errors name the operation as `"closing text"`.
    /// [`ChatOperation::validate`] checks the same rule and names the real operation.
    pub fn validate(&self) -> Result<(), OperationError> {
        self.validate_for("closing text")
    }

    /// Checks the trio rule, naming `operation` in any error.
    pub fn validate_for(&self, operation: &'static str) -> Result<(), OperationError> {
        match &self.text {
            None => match (&self.message_type, &self.treat_as) {
                (None, None) => Ok(()),
                (Some(_), None) => Err(OperationError::invalid(
                    operation,
                    "`messageType` can only be sent together with `text`",
                )),
                (None, Some(_)) => Err(OperationError::invalid(
                    operation,
                    "`treatAs` can only be sent together with `text`",
                )),
                (Some(_), Some(_)) => Err(OperationError::invalid(
                    operation,
                    "`messageType` and `treatAs` can only be sent together with `text`",
                )),
            },
            Some(text) => {
                if is_blank(text) {
                    return Err(OperationError::invalid(
                        operation,
                        "`text` must not be empty (leave it out to send no message)",
                    ));
                }
                optional(operation, "messageType", self.message_type.as_ref())
            }
        }
    }

    /// Adds the fields that are present to a request body (no validation).
    fn write_to(&self, body: &mut Map<String, Value>) {
        put_message(
            body,
            self.text.as_deref(),
            self.message_type.as_deref(),
            self.treat_as,
        );
    }
}

/// Adds `text`, `messageType` and `treatAs` to a body, each only when present.
fn put_message(
    body: &mut Map<String, Value>,
    text: Option<&str>,
    message_type: Option<&str>,
    treat_as: Option<TreatAs>,
) {
    if let Some(text) = text {
        body.insert("text".into(), text.into());
    }
    if let Some(message_type) = message_type {
        body.insert("messageType".into(), message_type.into());
    }
    if let Some(treat_as) = treat_as {
        body.insert("treatAs".into(), treat_as.as_str().into());
    }
}

/// Where a `Transfer` sends the chat: GWS takes `targetUri` (a user) **or** `queueName`, never
/// both (§4.2). The enum makes "exactly one" hold by construction; [`TransferTarget::from_options`]
/// builds it from two optional CLI arguments and refuses both or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// A user, by URI (sent as `targetUri`).
    User(String),
    /// A queue, by name (sent as `queueName`).
    Queue(String),
}

impl TransferTarget {
    /// The target from `targetUri` and `queueName` as a CLI collects them: exactly one must be
    /// given.
    pub fn from_options(
        target_uri: Option<String>,
        queue_name: Option<String>,
    ) -> Result<Self, OperationError> {
        match (target_uri, queue_name) {
            (Some(uri), None) => Ok(Self::User(uri)),
            (None, Some(queue)) => Ok(Self::Queue(queue)),
            (Some(_), Some(_)) => Err(OperationError::invalid(
                "Transfer",
                "give either `targetUri` or `queueName`, not both",
            )),
            (None, None) => Err(OperationError::invalid(
                "Transfer",
                "a target is required: give `targetUri` (a user) or `queueName`",
            )),
        }
    }
}

/// One agent chat operation with its parameters (§4.2), ready to be validated and turned into a
/// request body. Field names are the Rust spellings of the GWS parameters (`message_type` is sent
/// as `messageType`, and so on); absent optionals are left out of the body so GWS applies its
/// defaults.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatOperation {
    /// Accept an offered chat; the chat goes to `Chatting`.
    Accept {
        /// The agent name shown to the customer.
        nickname: Option<String>,
    },
    /// Reject an offered chat; it is offered to another agent.
    Reject,
    /// Send a message to the chat.
    SendMessage {
        /// The message (required, not empty).
        text: String,
        /// A custom label for the message.
        message_type: Option<String>,
        /// How the message is shown.
        treat_as: Option<TreatAs>,
    },
    /// Tell the customer the agent started typing.
    SendStartTypingNotification,
    /// Tell the customer the agent stopped typing.
    SendStopTypingNotification,
    /// Leave the chat, optionally with a goodbye message (§6: `LeftChat` when alone, `Completed`
    /// in a conference or consultation).
    Leave(ClosingText),
    /// Mark the interaction done (ends the chat for the customer if still open).
    Complete {
        /// A queue to place the interaction in (for example a post-processing queue).
        queue_name: Option<String>,
        /// The optional closing message.
        closing: ClosingText,
    },
    /// Transfer the chat to a user or a queue.
    Transfer {
        /// Where to.
        target: TransferTarget,
        /// The optional closing message.
        closing: ClosingText,
    },
    /// Set the disposition code (written to `userData[dispositionKey]`).
    SetDisposition {
        /// The disposition value (required, not empty).
        disposition: String,
        /// The `userData` key; GWS uses its configured key (normally `DispositionCode`) when
        /// absent.
        disposition_key: Option<String>,
    },
    /// Add keys to the interaction's `userData` (at least one).
    AttachUserData(Map<String, Value>),
    /// Overwrite the given `userData` keys (at least one).
    UpdateUserData(Map<String, Value>),
    /// Remove `userData` keys (at least one).
    DeleteUserData(Vec<String>),
}

impl ChatOperation {
    /// The `operationName` GWS expects.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accept { .. } => "Accept",
            Self::Reject => "Reject",
            Self::SendMessage { .. } => "SendMessage",
            Self::SendStartTypingNotification => "SendStartTypingNotification",
            Self::SendStopTypingNotification => "SendStopTypingNotification",
            Self::Leave(_) => "Leave",
            Self::Complete { .. } => "Complete",
            Self::Transfer { .. } => "Transfer",
            Self::SetDisposition { .. } => "SetDisposition",
            Self::AttachUserData(_) => "AttachUserData",
            Self::UpdateUserData(_) => "UpdateUserData",
            Self::DeleteUserData(_) => "DeleteUserData",
        }
    }

    /// The capability (`chat.capabilities`, §3.5) that permits this operation.
    pub fn capability(&self) -> Capability {
        match self {
            Self::Accept { .. } => Capability::Accept,
            Self::Reject => Capability::Reject,
            Self::SendMessage { .. } => Capability::SendMessage,
            Self::SendStartTypingNotification => Capability::SendStartTypingNotification,
            Self::SendStopTypingNotification => Capability::SendStopTypingNotification,
            Self::Leave(_) => Capability::Leave,
            Self::Complete { .. } => Capability::Complete,
            Self::Transfer { .. } => Capability::Transfer,
            Self::SetDisposition { .. } => Capability::SetDisposition,
            Self::AttachUserData(_) => Capability::AttachUserData,
            Self::UpdateUserData(_) => Capability::UpdateUserData,
            Self::DeleteUserData(_) => Capability::DeleteUserData,
        }
    }

    /// Whether a chat's `capabilities` list this operation.
    ///
    /// Treat a `false` as a warning rather than a refusal: the documented `LeftChat` sample omits
    /// `SetDisposition` and the user data operations although the text says they are allowed
    /// there (§6), so only GWS's answer is authoritative.
    pub fn permitted_by(&self, capabilities: &[Capability]) -> bool {
        capabilities.contains(&self.capability())
    }

    /// Checks every rule that can be checked before sending: required parameters present and not
    /// empty, optional string parameters not empty when given, the text trio (`messageType` and
    /// `treatAs` only with `text`), a non-empty `userData` map or `keys` list, and a non-empty
    /// transfer target.
    pub fn validate(&self) -> Result<(), OperationError> {
        let op = self.name();
        match self {
            Self::Accept { nickname } => optional(op, "nickname", nickname.as_ref()),
            Self::Reject | Self::SendStartTypingNotification | Self::SendStopTypingNotification => {
                Ok(())
            }
            Self::SendMessage {
                text, message_type, ..
            } => {
                require(op, "text", text)?;
                optional(op, "messageType", message_type.as_ref())
            }
            Self::Leave(closing) => closing.validate_for(op),
            Self::Complete {
                queue_name,
                closing,
            } => {
                optional(op, "queueName", queue_name.as_ref())?;
                closing.validate_for(op)
            }
            Self::Transfer { target, closing } => {
                match target {
                    TransferTarget::User(uri) => require(op, "targetUri", uri)?,
                    TransferTarget::Queue(queue) => require(op, "queueName", queue)?,
                }
                closing.validate_for(op)
            }
            Self::SetDisposition {
                disposition,
                disposition_key,
            } => {
                require(op, "disposition", disposition)?;
                optional(op, "dispositionKey", disposition_key.as_ref())
            }
            Self::AttachUserData(data) | Self::UpdateUserData(data) => {
                if data.is_empty() {
                    return Err(OperationError::invalid(
                        op,
                        "`userData` must contain at least one key",
                    ));
                }
                if data.keys().any(|k| is_blank(k)) {
                    return Err(OperationError::invalid(
                        op,
                        "`userData` keys must not be empty",
                    ));
                }
                Ok(())
            }
            Self::DeleteUserData(keys) => {
                if keys.is_empty() {
                    return Err(OperationError::invalid(
                        op,
                        "`keys` must name at least one userData key",
                    ));
                }
                if keys.iter().any(|k| is_blank(k)) {
                    return Err(OperationError::invalid(
                        op,
                        "`keys` must not contain an empty key",
                    ));
                }
                Ok(())
            }
        }
    }

    /// The JSON request body, `{"operationName": ..., ...}`, after [`validate`](Self::validate).
    /// Optional parameters that are absent are omitted.
    pub fn body(&self) -> Result<Value, OperationError> {
        self.validate()?;
        let mut body = Map::new();
        body.insert("operationName".into(), self.name().into());
        match self {
            Self::Accept { nickname } => {
                if let Some(nickname) = nickname {
                    body.insert("nickname".into(), nickname.as_str().into());
                }
            }
            Self::Reject | Self::SendStartTypingNotification | Self::SendStopTypingNotification => {
            }
            Self::SendMessage {
                text,
                message_type,
                treat_as,
            } => put_message(&mut body, Some(text), message_type.as_deref(), *treat_as),
            Self::Leave(closing) => closing.write_to(&mut body),
            Self::Complete {
                queue_name,
                closing,
            } => {
                if let Some(queue) = queue_name {
                    body.insert("queueName".into(), queue.as_str().into());
                }
                closing.write_to(&mut body);
            }
            Self::Transfer { target, closing } => {
                match target {
                    TransferTarget::User(uri) => {
                        body.insert("targetUri".into(), uri.as_str().into())
                    }
                    TransferTarget::Queue(queue) => {
                        body.insert("queueName".into(), queue.as_str().into())
                    }
                };
                closing.write_to(&mut body);
            }
            Self::SetDisposition {
                disposition,
                disposition_key,
            } => {
                body.insert("disposition".into(), disposition.as_str().into());
                if let Some(key) = disposition_key {
                    body.insert("dispositionKey".into(), key.as_str().into());
                }
            }
            Self::AttachUserData(data) | Self::UpdateUserData(data) => {
                body.insert("userData".into(), Value::Object(data.clone()));
            }
            Self::DeleteUserData(keys) => {
                body.insert("keys".into(), json!(keys));
            }
        }
        Ok(Value::Object(body))
    }
}

impl fmt::Display for ChatOperation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The path to post an operation on chat `chat_id` to, below the account's base URL:
/// `/api/v2/me/chats/{id}`. Chat ids are opaque (`0000Na9B26EF002X`); any character outside the
/// URL-unreserved set is percent-encoded so an odd id cannot change the path.
pub fn chat_path(chat_id: &str) -> Result<String, OperationError> {
    if is_blank(chat_id) {
        return Err(OperationError::EmptyChatId);
    }
    let mut path = String::with_capacity(CHATS_PATH.len() + 1 + chat_id.len());
    path.push_str(CHATS_PATH);
    path.push('/');
    for byte in chat_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    Ok(path)
}

/// A GWS `statusCode` (§4.4): 0 is success, anything else a documented failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode(pub i64);

impl StatusCode {
    /// Success.
    pub const SUCCESS: Self = Self(0);

    /// Whether the code is 0 (accepted).
    pub fn is_success(&self) -> bool {
        self.0 == 0
    }

    /// The documented meaning of the code (Return Values page, 8.5.2), or `"unknown status code"`.
    pub fn meaning(&self) -> &'static str {
        match self.0 {
            0 => "success",
            1 => "required parameter missing",
            2 => "parameter not valid for the current state",
            3 => "operation forbidden",
            4 => "internal error (GWS, Cassandra, or a Genesys Framework component)",
            5 => "user lacks permission",
            6 => "resource not found",
            7 => "partial success (bulk operations)",
            8 => "password change demanded",
            9 => "processing incomplete",
            10 => "input validation error (value out of range)",
            11 => "attempt to change a read-only property",
            12 => "unable to retrieve resource",
            13 => "unable to create resource",
            14 => "unable to delete resource",
            15 => "unable to update resource",
            16 => "unable to assign resource",
            17 => "unable to unassign resource",
            18 => "resource already exists",
            19 => "resource already in use",
            20 => "user not authenticated; send credentials on later requests",
            _ => "unknown status code",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.meaning())
    }
}

/// GWS accepted an operation (`statusCode` 0). The outcome comes later as a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationResponse {
    /// The `statusCode` of the reply (always 0 here; `status` is read as an alias).
    pub status_code: i64,
    /// A `statusMessage`, if the server added one to a success.
    pub status_message: Option<String>,
    /// The `referenceId` to match against the resulting notification's `referenceId`, when the
    /// reply has one (Consult, Invite and CancelConsult samples do; others may not).
    pub reference_id: Option<ReferenceId>,
}

/// An operation GWS did not accept, or an answer that cannot be read. Each variant asks for a
/// different reaction: report ([`Rejected`](Self::Rejected)), log in again
/// ([`needs_login`](Self::needs_login)), retry later ([`Unavailable`](Self::Unavailable)).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GwsError {
    /// GWS answered with a non-zero `statusCode`; nothing was changed (§4.4).
    #[error(
        "GWS refused the request: status {status_code} ({meaning}){}",
        .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    Rejected {
        /// The `statusCode`.
        status_code: i64,
        /// Its documented meaning ([`StatusCode::meaning`]).
        meaning: &'static str,
        /// The `statusMessage`, when present.
        message: Option<String>,
        /// The HTTP status the refusal came with (usually 400 or 200).
        http_status: u16,
    },
    /// HTTP 403 whose body mentions CSRF: the CSRF header is missing or stale (§1.3).
    #[error("missing or invalid CSRF token (log in again)")]
    Csrf,
    /// Another HTTP 403.
    #[error("forbidden (HTTP 403): {body}")]
    Forbidden {
        /// The start of the response body.
        body: String,
    },
    /// HTTP 401.
    #[error("authentication failed: wrong user name or password, or the session expired")]
    Unauthorized,
    /// HTTP 503: the backend (Chat Server, Interaction Server) is not available.
    #[error(
        "GWS backend unavailable (HTTP 503){}",
        .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    Unavailable {
        /// The `statusMessage`, when the body has one.
        message: Option<String>,
    },
    /// HTTP 404 without a `statusCode`: the path is wrong or the chat does not exist.
    #[error("not found (HTTP 404): no such chat, or the GWS API path is wrong")]
    NotFound,
    /// Any other non-2xx answer without a JSON `statusCode`.
    #[error("GWS answered HTTP {status}: {body}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The start of the response body (at most [`BODY_EXCERPT_CHARS`] characters).
        body: String,
    },
    /// A 2xx answer whose body is not a JSON object with an integer `statusCode`.
    #[error("GWS answered with an unreadable body: {reason}")]
    Malformed {
        /// What was wrong with it.
        reason: String,
    },
}

impl GwsError {
    /// Whether the session must log in again (new cookie, new CSRF pair) before retrying: a CSRF
    /// failure, HTTP 401 or 403, or `statusCode` 20 ("user not authenticated").
    pub fn needs_login(&self) -> bool {
        match self {
            Self::Csrf | Self::Unauthorized | Self::Forbidden { .. } => true,
            Self::Rejected { status_code, .. } => *status_code == 20,
            _ => false,
        }
    }
}

/// The fields of a GWS JSON reply that matter here.
struct Reply {
    status_code: Option<i64>,
    status_message: Option<String>,
    reference_id: Option<ReferenceId>,
}

/// Reads a body as a GWS reply; `Err` says why it is not a JSON object.
fn read_reply(body: &[u8]) -> Result<Reply, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON ({e}): {}", excerpt(body)))?;
    let Value::Object(obj) = value else {
        return Err(format!("not a JSON object: {}", excerpt(body)));
    };
    // `status` is read as an alias: the Reject doc sample shows `{"status":0}` (§4.1).
    let code = obj.get("statusCode").or_else(|| obj.get("status"));
    Ok(Reply {
        status_code: code.and_then(Value::as_i64),
        status_message: obj
            .get("statusMessage")
            .and_then(Value::as_str)
            .map(str::to_owned),
        // Tolerant: a `referenceId` that is neither an integer nor a string is ignored, since the
        // operation itself was accepted; matching then falls back to the chat id.
        reference_id: obj
            .get("referenceId")
            .and_then(|v| serde_json::from_value::<ReferenceId>(v.clone()).ok()),
    })
}

/// The start of a body as text, at most [`BODY_EXCERPT_CHARS`] characters, with `…` when cut.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(BODY_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Classifies GWS's answer to an operation: `Ok` when it was accepted (`statusCode` 0 with a 2xx
/// status), otherwise the [`GwsError`] that says why not.
///
/// Precedence: 401 is always [`GwsError::Unauthorized`] and a 403 whose body mentions CSRF is
/// always [`GwsError::Csrf`]; a 503 is [`GwsError::Unavailable`] (with the body's `statusMessage`,
/// as in the documented `{"statusCode":4,...}` sample); otherwise a JSON body with a non-zero
/// `statusCode` (or `status`) is [`GwsError::Rejected`], whatever the HTTP status; what remains is
/// classified by HTTP status alone.
pub fn parse_response(http_status: u16, body: &[u8]) -> Result<OperationResponse, GwsError> {
    if http_status == 401 {
        return Err(GwsError::Unauthorized);
    }
    if http_status == 403
        && String::from_utf8_lossy(body)
            .to_ascii_lowercase()
            .contains("csrf")
    {
        return Err(GwsError::Csrf);
    }
    let reply = read_reply(body);
    if http_status == 503 {
        return Err(GwsError::Unavailable {
            message: reply.ok().and_then(|r| r.status_message),
        });
    }
    if let Ok(Reply {
        status_code: Some(code),
        status_message,
        ..
    }) = &reply
    {
        if *code != 0 {
            return Err(GwsError::Rejected {
                status_code: *code,
                meaning: StatusCode(*code).meaning(),
                message: status_message.clone(),
                http_status,
            });
        }
    }
    match http_status {
        200..=299 => match reply {
            Ok(Reply {
                status_code: Some(code),
                status_message,
                reference_id,
            }) => Ok(OperationResponse {
                status_code: code,
                status_message,
                reference_id,
            }),
            Ok(Reply {
                status_code: None, ..
            }) => Err(GwsError::Malformed {
                reason: format!("no integer `statusCode` in {}", excerpt(body)),
            }),
            Err(reason) => Err(GwsError::Malformed { reason }),
        },
        403 => Err(GwsError::Forbidden {
            body: excerpt(body),
        }),
        404 => Err(GwsError::NotFound),
        status => Err(GwsError::Http {
            status,
            body: excerpt(body),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn invalid_message(result: Result<(), OperationError>) -> (&'static str, String) {
        match result {
            Err(OperationError::Invalid { operation, message }) => (operation, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn user_data() -> Map<String, Value> {
        let Value::Object(map) = json!({"key1": "value1", "n": 3, "none": null}) else {
            unreachable!()
        };
        map
    }

    // ---- TreatAs -------------------------------------------------------------------------

    #[test]
    fn treat_as_parses_any_case_and_displays_wire_spelling() {
        assert_eq!("Normal".parse::<TreatAs>(), Ok(TreatAs::Normal));
        assert_eq!("normal".parse::<TreatAs>(), Ok(TreatAs::Normal));
        assert_eq!("SYSTEM".parse::<TreatAs>(), Ok(TreatAs::System));
        assert_eq!("system".parse::<TreatAs>(), Ok(TreatAs::System));
        let err = "Loud".parse::<TreatAs>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`treatAs` must be Normal or System, not \"Loud\""
        );
        assert_eq!(TreatAs::Normal.to_string(), "Normal");
        assert_eq!(TreatAs::System.to_string(), "System");
    }

    #[test]
    fn treat_as_serde_uses_wire_spelling() {
        assert_eq!(
            serde_json::to_value(TreatAs::System).unwrap(),
            json!("System")
        );
        assert_eq!(
            serde_json::from_value::<TreatAs>(json!("Normal")).unwrap(),
            TreatAs::Normal
        );
        assert!(serde_json::from_value::<TreatAs>(json!("Loud")).is_err());
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(long, ignore_case = true)]
        treat_as: Option<TreatAs>,
    }

    #[test]
    fn treat_as_works_as_a_clap_value() {
        let cli = Cli::try_parse_from(["x", "--treat-as", "System"]).unwrap();
        assert_eq!(cli.treat_as, Some(TreatAs::System));
        let cli = Cli::try_parse_from(["x", "--treat-as", "normal"]).unwrap();
        assert_eq!(cli.treat_as, Some(TreatAs::Normal));
        let err = Cli::try_parse_from(["x", "--treat-as", "loud"]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("Normal") && text.contains("System"), "{text}");
    }

    // ---- the text trio -------------------------------------------------------------------

    #[test]
    fn trio_accepts_the_allowed_combinations() {
        assert_eq!(ClosingText::none().validate(), Ok(()));
        assert_eq!(ClosingText::text("bye").validate(), Ok(()));
        let full = ClosingText::new(
            Some("bye".into()),
            Some("Farewell".into()),
            Some(TreatAs::System),
        );
        assert_eq!(full.validate(), Ok(()));
        let with_type = ClosingText::new(Some("bye".into()), Some("Farewell".into()), None);
        assert_eq!(with_type.validate(), Ok(()));
        let with_treat = ClosingText::new(Some("bye".into()), None, Some(TreatAs::Normal));
        assert_eq!(with_treat.validate(), Ok(()));
    }

    #[test]
    fn trio_message_type_needs_text() {
        let closing = ClosingText::new(None, Some("Farewell".into()), None);
        let op = ChatOperation::Leave(closing.clone());
        assert_eq!(
            invalid_message(op.validate()),
            (
                "Leave",
                "`messageType` can only be sent together with `text`".to_owned()
            )
        );
        assert_eq!(
            op.validate().unwrap_err().to_string(),
            "cannot send Leave: `messageType` can only be sent together with `text`"
        );
        assert_eq!(invalid_message(closing.validate()).0, "closing text");
    }

    #[test]
    fn trio_treat_as_needs_text() {
        let closing = ClosingText::new(None, None, Some(TreatAs::System));
        let op = ChatOperation::Complete {
            queue_name: None,
            closing,
        };
        assert_eq!(
            invalid_message(op.validate()),
            (
                "Complete",
                "`treatAs` can only be sent together with `text`".to_owned()
            )
        );
    }

    #[test]
    fn trio_both_need_text() {
        let closing = ClosingText::new(None, Some("Farewell".into()), Some(TreatAs::Normal));
        let op = ChatOperation::Transfer {
            target: TransferTarget::Queue("Q".into()),
            closing,
        };
        assert_eq!(
            invalid_message(op.validate()),
            (
                "Transfer",
                "`messageType` and `treatAs` can only be sent together with `text`".to_owned()
            )
        );
    }

    #[test]
    fn trio_refuses_empty_text_and_empty_message_type() {
        for text in ["", "   "] {
            let op = ChatOperation::Leave(ClosingText::text(text));
            assert_eq!(
                invalid_message(op.validate()).1,
                "`text` must not be empty (leave it out to send no message)"
            );
        }
        let op = ChatOperation::Leave(ClosingText::new(
            Some("bye".into()),
            Some(String::new()),
            None,
        ));
        assert_eq!(
            invalid_message(op.validate()).1,
            "`messageType` must not be empty (leave it out instead)"
        );
    }

    #[test]
    fn refused_operations_produce_no_body() {
        let op = ChatOperation::Leave(ClosingText::new(None, None, Some(TreatAs::System)));
        assert!(matches!(op.body(), Err(OperationError::Invalid { .. })));
    }

    // ---- per-operation rules -------------------------------------------------------------

    #[test]
    fn send_message_requires_text() {
        for text in ["", " \n"] {
            let op = ChatOperation::SendMessage {
                text: text.into(),
                message_type: None,
                treat_as: None,
            };
            assert_eq!(
                invalid_message(op.validate()),
                ("SendMessage", "`text` must not be empty".to_owned())
            );
            assert!(op.body().is_err());
        }
    }

    #[test]
    fn transfer_needs_exactly_one_target() {
        let both = TransferTarget::from_options(Some("u".into()), Some("q".into()));
        assert_eq!(
            invalid_message(both.map(drop)),
            (
                "Transfer",
                "give either `targetUri` or `queueName`, not both".to_owned()
            )
        );
        let neither = TransferTarget::from_options(None, None);
        assert_eq!(
            invalid_message(neither.map(drop)),
            (
                "Transfer",
                "a target is required: give `targetUri` (a user) or `queueName`".to_owned()
            )
        );
        assert_eq!(
            TransferTarget::from_options(Some("u".into()), None),
            Ok(TransferTarget::User("u".into()))
        );
        assert_eq!(
            TransferTarget::from_options(None, Some("q".into())),
            Ok(TransferTarget::Queue("q".into()))
        );
    }

    #[test]
    fn transfer_target_must_not_be_empty() {
        let op = ChatOperation::Transfer {
            target: TransferTarget::User(String::new()),
            closing: ClosingText::none(),
        };
        assert_eq!(
            invalid_message(op.validate()).1,
            "`targetUri` must not be empty"
        );
        let op = ChatOperation::Transfer {
            target: TransferTarget::Queue(" ".into()),
            closing: ClosingText::none(),
        };
        assert_eq!(
            invalid_message(op.validate()).1,
            "`queueName` must not be empty"
        );
    }

    #[test]
    fn set_disposition_requires_disposition() {
        let op = ChatOperation::SetDisposition {
            disposition: String::new(),
            disposition_key: None,
        };
        assert_eq!(
            invalid_message(op.validate()),
            (
                "SetDisposition",
                "`disposition` must not be empty".to_owned()
            )
        );
        let op = ChatOperation::SetDisposition {
            disposition: "Resolved".into(),
            disposition_key: Some(String::new()),
        };
        assert_eq!(
            invalid_message(op.validate()).1,
            "`dispositionKey` must not be empty (leave it out instead)"
        );
    }

    #[test]
    fn empty_optional_strings_are_refused() {
        let op = ChatOperation::Accept {
            nickname: Some(String::new()),
        };
        assert_eq!(
            invalid_message(op.validate()),
            (
                "Accept",
                "`nickname` must not be empty (leave it out instead)".to_owned()
            )
        );
        let op = ChatOperation::Complete {
            queue_name: Some(" ".into()),
            closing: ClosingText::none(),
        };
        assert_eq!(
            invalid_message(op.validate()).1,
            "`queueName` must not be empty (leave it out instead)"
        );
        let op = ChatOperation::SendMessage {
            text: "hi".into(),
            message_type: Some(String::new()),
            treat_as: None,
        };
        assert_eq!(
            invalid_message(op.validate()).1,
            "`messageType` must not be empty (leave it out instead)"
        );
    }

    #[test]
    fn user_data_operations_need_something() {
        for op in [
            ChatOperation::AttachUserData(Map::new()),
            ChatOperation::UpdateUserData(Map::new()),
        ] {
            let name = op.name();
            assert_eq!(
                invalid_message(op.validate()),
                (name, "`userData` must contain at least one key".to_owned())
            );
        }
        let mut blank_key = Map::new();
        blank_key.insert(String::new(), json!(1));
        assert_eq!(
            invalid_message(ChatOperation::AttachUserData(blank_key).validate()).1,
            "`userData` keys must not be empty"
        );
        assert_eq!(
            invalid_message(ChatOperation::DeleteUserData(vec![]).validate()),
            (
                "DeleteUserData",
                "`keys` must name at least one userData key".to_owned()
            )
        );
        assert_eq!(
            invalid_message(ChatOperation::DeleteUserData(vec!["a".into(), "".into()]).validate())
                .1,
            "`keys` must not contain an empty key"
        );
    }

    // ---- bodies --------------------------------------------------------------------------

    #[test]
    fn bodies_are_exactly_the_documented_json() {
        let cases: Vec<(ChatOperation, Value)> = vec![
            (
                ChatOperation::Accept { nickname: None },
                json!({"operationName": "Accept"}),
            ),
            (
                ChatOperation::Accept {
                    nickname: Some("Marat".into()),
                },
                json!({"operationName": "Accept", "nickname": "Marat"}),
            ),
            (ChatOperation::Reject, json!({"operationName": "Reject"})),
            (
                ChatOperation::SendMessage {
                    text: "How may I help you?".into(),
                    message_type: None,
                    treat_as: None,
                },
                json!({"operationName": "SendMessage", "text": "How may I help you?"}),
            ),
            (
                ChatOperation::SendMessage {
                    text: "Hello".into(),
                    message_type: Some("Greeting".into()),
                    treat_as: Some(TreatAs::System),
                },
                json!({"operationName": "SendMessage", "text": "Hello",
                       "messageType": "Greeting", "treatAs": "System"}),
            ),
            (
                ChatOperation::SendStartTypingNotification,
                json!({"operationName": "SendStartTypingNotification"}),
            ),
            (
                ChatOperation::SendStopTypingNotification,
                json!({"operationName": "SendStopTypingNotification"}),
            ),
            (
                ChatOperation::Leave(ClosingText::none()),
                json!({"operationName": "Leave"}),
            ),
            (
                ChatOperation::Leave(ClosingText::text("Goodbye")),
                json!({"operationName": "Leave", "text": "Goodbye"}),
            ),
            (
                ChatOperation::Leave(ClosingText::new(
                    Some("Goodbye".into()),
                    Some("Farewell".into()),
                    Some(TreatAs::Normal),
                )),
                json!({"operationName": "Leave", "text": "Goodbye",
                       "messageType": "Farewell", "treatAs": "Normal"}),
            ),
            (
                ChatOperation::Complete {
                    queue_name: None,
                    closing: ClosingText::none(),
                },
                json!({"operationName": "Complete"}),
            ),
            (
                ChatOperation::Complete {
                    queue_name: Some("PostProcessingQueue".into()),
                    closing: ClosingText::new(Some("Thanks".into()), None, Some(TreatAs::System)),
                },
                json!({"operationName": "Complete", "queueName": "PostProcessingQueue",
                       "text": "Thanks", "treatAs": "System"}),
            ),
            (
                ChatOperation::Transfer {
                    target: TransferTarget::User("http://gws/api/v2/users/123".into()),
                    closing: ClosingText::none(),
                },
                json!({"operationName": "Transfer", "targetUri": "http://gws/api/v2/users/123"}),
            ),
            (
                ChatOperation::Transfer {
                    target: TransferTarget::Queue("Sales".into()),
                    closing: ClosingText::new(
                        Some("One moment".into()),
                        Some("Transfer".into()),
                        None,
                    ),
                },
                json!({"operationName": "Transfer", "queueName": "Sales",
                       "text": "One moment", "messageType": "Transfer"}),
            ),
            (
                ChatOperation::SetDisposition {
                    disposition: "IssueResolved".into(),
                    disposition_key: None,
                },
                json!({"operationName": "SetDisposition", "disposition": "IssueResolved"}),
            ),
            (
                ChatOperation::SetDisposition {
                    disposition: "IssueResolved".into(),
                    disposition_key: Some("DispositionCode".into()),
                },
                json!({"operationName": "SetDisposition", "disposition": "IssueResolved",
                       "dispositionKey": "DispositionCode"}),
            ),
            (
                ChatOperation::AttachUserData(user_data()),
                json!({"operationName": "AttachUserData",
                       "userData": {"key1": "value1", "n": 3, "none": null}}),
            ),
            (
                ChatOperation::UpdateUserData(user_data()),
                json!({"operationName": "UpdateUserData",
                       "userData": {"key1": "value1", "n": 3, "none": null}}),
            ),
            (
                ChatOperation::DeleteUserData(vec!["key1".into(), "key2".into()]),
                json!({"operationName": "DeleteUserData", "keys": ["key1", "key2"]}),
            ),
        ];
        for (op, expected) in cases {
            assert_eq!(op.body().unwrap(), expected, "{op:?}");
            assert_eq!(expected["operationName"], json!(op.name()));
        }
    }

    #[test]
    fn names_and_capabilities_match_the_wire_spelling() {
        let ops = [
            ChatOperation::Accept { nickname: None },
            ChatOperation::Reject,
            ChatOperation::SendMessage {
                text: "x".into(),
                message_type: None,
                treat_as: None,
            },
            ChatOperation::SendStartTypingNotification,
            ChatOperation::SendStopTypingNotification,
            ChatOperation::Leave(ClosingText::none()),
            ChatOperation::Complete {
                queue_name: None,
                closing: ClosingText::none(),
            },
            ChatOperation::Transfer {
                target: TransferTarget::Queue("q".into()),
                closing: ClosingText::none(),
            },
            ChatOperation::SetDisposition {
                disposition: "d".into(),
                disposition_key: None,
            },
            ChatOperation::AttachUserData(user_data()),
            ChatOperation::UpdateUserData(user_data()),
            ChatOperation::DeleteUserData(vec!["k".into()]),
        ];
        let names: Vec<&str> = ops.iter().map(ChatOperation::name).collect();
        assert_eq!(
            names,
            [
                "Accept",
                "Reject",
                "SendMessage",
                "SendStartTypingNotification",
                "SendStopTypingNotification",
                "Leave",
                "Complete",
                "Transfer",
                "SetDisposition",
                "AttachUserData",
                "UpdateUserData",
                "DeleteUserData",
            ]
        );
        for op in &ops {
            // Every operation here is permitted by the capability of the same name, and that
            // capability is a known one (not `Other`).
            assert_eq!(op.capability().as_str(), op.name());
            assert!(!op.capability().is_other(), "{op}");
            assert_eq!(op.to_string(), op.name());
        }
    }

    #[test]
    fn permitted_by_reads_the_capability_list() {
        let left_chat = [
            Capability::Transfer,
            Capability::Complete,
            Capability::Leave,
            Capability::InFocus,
        ];
        assert!(ChatOperation::Leave(ClosingText::none()).permitted_by(&left_chat));
        assert!(!ChatOperation::SendStartTypingNotification.permitted_by(&left_chat));
        assert!(!ChatOperation::Reject.permitted_by(&[]));
    }

    #[test]
    fn chat_path_addresses_one_chat() {
        assert_eq!(
            chat_path("0000Na9B26EF002X").unwrap(),
            "/api/v2/me/chats/0000Na9B26EF002X"
        );
        assert_eq!(
            chat_path("a/b?c#d e").unwrap(),
            "/api/v2/me/chats/a%2Fb%3Fc%23d%20e"
        );
        assert_eq!(chat_path(""), Err(OperationError::EmptyChatId));
        assert_eq!(chat_path("  "), Err(OperationError::EmptyChatId));
    }

    // ---- status codes --------------------------------------------------------------------

    #[test]
    fn every_documented_status_code_has_its_meaning() {
        let expected = [
            "success",
            "required parameter missing",
            "parameter not valid for the current state",
            "operation forbidden",
            "internal error (GWS, Cassandra, or a Genesys Framework component)",
            "user lacks permission",
            "resource not found",
            "partial success (bulk operations)",
            "password change demanded",
            "processing incomplete",
            "input validation error (value out of range)",
            "attempt to change a read-only property",
            "unable to retrieve resource",
            "unable to create resource",
            "unable to delete resource",
            "unable to update resource",
            "unable to assign resource",
            "unable to unassign resource",
            "resource already exists",
            "resource already in use",
            "user not authenticated; send credentials on later requests",
        ];
        for (code, meaning) in expected.iter().enumerate() {
            assert_eq!(StatusCode(code as i64).meaning(), *meaning, "code {code}");
        }
        for unknown in [-1, 21, 99, i64::MAX] {
            assert_eq!(StatusCode(unknown).meaning(), "unknown status code");
        }
        assert!(StatusCode::SUCCESS.is_success());
        assert!(!StatusCode(2).is_success());
        assert_eq!(
            StatusCode(2).to_string(),
            "2 (parameter not valid for the current state)"
        );
    }

    // ---- parse_response ------------------------------------------------------------------

    #[test]
    fn accepted_plain() {
        assert_eq!(
            parse_response(200, br#"{"statusCode":0}"#),
            Ok(OperationResponse {
                status_code: 0,
                status_message: None,
                reference_id: None,
            })
        );
    }

    #[test]
    fn accepted_with_reference_id_as_integer_or_string() {
        let r = parse_response(200, br#"{"statusCode":0,"referenceId":35}"#).unwrap();
        assert_eq!(r.reference_id, Some(ReferenceId::Number(35)));
        let r = parse_response(200, br#"{"statusCode":0,"referenceId":"35"}"#).unwrap();
        assert_eq!(r.reference_id, Some(ReferenceId::Text("35".into())));
        // An unreadable referenceId does not turn an accepted operation into a failure.
        let r = parse_response(200, br#"{"statusCode":0,"referenceId":[1]}"#).unwrap();
        assert_eq!(r.reference_id, None);
    }

    #[test]
    fn accepted_with_status_alias() {
        assert_eq!(
            parse_response(200, br#"{"status":0}"#).map(|r| r.status_code),
            Ok(0)
        );
        assert!(matches!(
            parse_response(200, br#"{"status":2}"#),
            Err(GwsError::Rejected { status_code: 2, .. })
        ));
    }

    #[test]
    fn rejected_with_status_code_and_message() {
        let err = parse_response(
            400,
            br#"{"statusCode":2,"statusMessage":"Operation Leave is not valid for chat state Completed"}"#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            GwsError::Rejected {
                status_code: 2,
                meaning: "parameter not valid for the current state",
                message: Some("Operation Leave is not valid for chat state Completed".into()),
                http_status: 400,
            }
        );
        assert_eq!(
            err.to_string(),
            "GWS refused the request: status 2 (parameter not valid for the current state): \
             Operation Leave is not valid for chat state Completed"
        );
        assert!(!err.needs_login());
    }

    #[test]
    fn rejected_without_message_and_on_2xx() {
        let err = parse_response(200, br#"{"statusCode":1}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "GWS refused the request: status 1 (required parameter missing)"
        );
        assert!(matches!(
            err,
            GwsError::Rejected {
                http_status: 200,
                ..
            }
        ));
        // A 403 with a JSON status code (not CSRF) is a refusal, not a bare Forbidden.
        let err = parse_response(403, br#"{"statusCode":5,"statusMessage":"no"}"#).unwrap_err();
        assert!(matches!(
            err,
            GwsError::Rejected {
                status_code: 5,
                http_status: 403,
                ..
            }
        ));
        // Status 20 asks for credentials: log in again.
        assert!(parse_response(400, br#"{"statusCode":20}"#)
            .unwrap_err()
            .needs_login());
    }

    #[test]
    fn csrf_failure_is_told_apart() {
        let err = parse_response(403, b"Missing or invalid Csrf token").unwrap_err();
        assert_eq!(err, GwsError::Csrf);
        assert_eq!(
            err.to_string(),
            "missing or invalid CSRF token (log in again)"
        );
        assert!(err.needs_login());
        // Even with a JSON status code in the body.
        assert_eq!(
            parse_response(
                403,
                br#"{"statusCode":3,"statusMessage":"Missing or invalid Csrf token"}"#
            ),
            Err(GwsError::Csrf)
        );
    }

    #[test]
    fn other_forbidden() {
        let err = parse_response(403, b"Access denied").unwrap_err();
        assert_eq!(
            err,
            GwsError::Forbidden {
                body: "Access denied".into()
            }
        );
        assert_eq!(err.to_string(), "forbidden (HTTP 403): Access denied");
    }

    #[test]
    fn unauthorized_wins_over_body() {
        for body in [&b""[..], br#"{"statusCode":20}"#] {
            let err = parse_response(401, body).unwrap_err();
            assert_eq!(err, GwsError::Unauthorized);
            assert_eq!(
                err.to_string(),
                "authentication failed: wrong user name or password, or the session expired"
            );
            assert!(err.needs_login());
        }
    }

    #[test]
    fn unavailable_backend() {
        let err = parse_response(
            503,
            br#"{"statusCode":4,"statusMessage":"Voice service is not available at this time"}"#,
        )
        .unwrap_err();
        assert_eq!(
            err,
            GwsError::Unavailable {
                message: Some("Voice service is not available at this time".into())
            }
        );
        assert_eq!(
            err.to_string(),
            "GWS backend unavailable (HTTP 503): Voice service is not available at this time"
        );
        assert!(!err.needs_login());
        assert_eq!(
            parse_response(503, b"<html>down</html>"),
            Err(GwsError::Unavailable { message: None })
        );
    }

    #[test]
    fn not_found_without_status_code() {
        assert_eq!(parse_response(404, b"Not Found"), Err(GwsError::NotFound));
        assert!(matches!(
            parse_response(404, br#"{"statusCode":6,"statusMessage":"no chat"}"#),
            Err(GwsError::Rejected {
                status_code: 6,
                http_status: 404,
                ..
            })
        ));
    }

    #[test]
    fn html_error_page_is_http_with_a_short_body() {
        let page = format!("<html><body>{}</body></html>", "x".repeat(500));
        let err = parse_response(500, page.as_bytes()).unwrap_err();
        let GwsError::Http { status, body } = &err else {
            panic!("expected Http, got {err:?}");
        };
        assert_eq!(*status, 500);
        assert_eq!(body.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert!(
            body.starts_with("<html><body>xxx") && body.ends_with('…'),
            "{body}"
        );
        assert!(err.to_string().starts_with("GWS answered HTTP 500: <html>"));
        // A short body is kept whole, and multi-byte text is cut on a character boundary.
        assert_eq!(
            parse_response(502, b"Bad Gateway"),
            Err(GwsError::Http {
                status: 502,
                body: "Bad Gateway".into()
            })
        );
        let err = parse_response(500, "é".repeat(300).as_bytes()).unwrap_err();
        assert!(matches!(err, GwsError::Http { ref body, .. } if body.chars().count() == 201));
    }

    #[test]
    fn malformed_success_bodies() {
        for body in [
            &b"garbage"[..],
            b"",
            b"[0]",
            br#"{"ok":true}"#,
            br#"{"statusCode":"0"}"#,
            br#"{"statusCode":0.5}"#,
        ] {
            let err = parse_response(200, body).unwrap_err();
            assert!(
                matches!(err, GwsError::Malformed { .. }),
                "{:?} gave {err:?}",
                String::from_utf8_lossy(body)
            );
        }
        let err = parse_response(200, b"garbage").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("GWS answered with an unreadable body: not JSON"),
            "{err}"
        );
    }

    #[test]
    fn zero_status_code_on_an_error_status_is_still_an_error() {
        assert!(matches!(
            parse_response(500, br#"{"statusCode":0}"#),
            Err(GwsError::Http { status: 500, .. })
        ));
    }
}
