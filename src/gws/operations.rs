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
        /// Save last-agent-routing information in the Contact Profile (`saveLAR`); GWS's
        /// default when absent.
        save_lar: Option<bool>,
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
                ..
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
                save_lar,
                closing,
            } => {
                if let Some(queue) = queue_name {
                    body.insert("queueName".into(), queue.as_str().into());
                }
                if let Some(save) = save_lar {
                    body.insert("saveLAR".into(), (*save).into());
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
mod tests;
