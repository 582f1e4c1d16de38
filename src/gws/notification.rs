//! The typed model of GWS notifications (`reference/gws-api.md` §3, §5 and §7).
//!
//! A Bayeux delivery's `data` object is decoded into a [`Notification`]. Chat state changes and
//! transcript updates are typed; `Error` notifications are recognised with or without a
//! `messageType`; every other message type is kept as raw JSON under its `messageType`. Decoding
//! never rejects an unknown state, capability, notification type or field: the enums below keep an
//! unseen value verbatim in their `Other(String)` variant, so what the server sends is what the
//! sinks see.
//!
//! [`decode`] is the entry point for a parsed `Value`: it dispatches on `data.messageType` (§7),
//! tolerates every missing field, and fails with a [`DecodeError`] only when a field the model
//! reads has a JSON type it cannot be read as (a `chat` that is a string, `capabilities` that is
//! not an array, ...). [`decode_raw`] gives the same result from the JSON text a delivery carries,
//! reading typed fields straight from the text (the per-event path) and handing anything unusual to
//! [`decode`]. The caller keeps the raw payload either way, so nothing the server sent is lost.

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use thiserror::Error;

/// Declares a string enum with known variants and an `Other(String)` fallback that keeps unknown
/// values verbatim. Serialises to and from the plain string.
macro_rules! open_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A value this version does not know, kept exactly as received.
            Other(String),
        }

        impl $name {
            /// The wire spelling of this value.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $text,)*
                    Self::Other(s) => s.as_str(),
                }
            }

            /// Whether this value is one the model does not know.
            pub fn is_other(&self) -> bool {
                matches!(self, Self::Other(_))
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($text => Self::$variant,)*
                    other => Self::Other(other.to_owned()),
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self::from(s))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            /// From a string, without copying it unless the value is unknown.
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$name, E> {
                        Ok($name::from(s))
                    }
                    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<$name, E> {
                        match std::str::from_utf8(b) {
                            Ok(s) => Ok($name::from(s)),
                            Err(_) => Err(E::invalid_value(serde::de::Unexpected::Bytes(b), &self)),
                        }
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

open_enum! {
    /// The state of an agent's chat interaction (`chat.state`, §3.4).
    ChatState {
        /// Offered to the agent, not yet accepted.
        Invited = "Invited",
        /// The agent is in the chat.
        Chatting = "Chatting",
        /// The agent left a chat they were alone in; the interaction stays for disposition work.
        LeftChat = "LeftChat",
        /// Terminal: the interaction is done for this agent.
        Completed = "Completed",
        /// Terminal: the offer was withdrawn.
        Revoked = "Revoked",
        /// The agent could not join; kept until completed.
        JoinFailed = "JoinFailed",
    }
}

impl ChatState {
    /// Whether the chat is over for this agent (the tracker forgets it).
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Completed | Self::Revoked)
    }
}

open_enum! {
    /// What a `ChatStateChangeMessage` (or `MessageLogUpdated`) reports (§3.2, §3.7).
    NotificationType {
        /// The chat's state changed.
        StatusChange = "StatusChange",
        /// The participant list changed (state and capabilities may change too).
        ParticipantsUpdated = "ParticipantsUpdated",
        /// `userData` changed (user data operations, `SetDisposition`).
        PropertiesUpdated = "PropertiesUpdated",
        /// An operation on the chat failed.
        Error = "Error",
        /// New transcript entries (`MessageLogUpdated`).
        NewMessages = "NewMessages",
    }
}

open_enum! {
    /// An operation the chat allows now (`chat.capabilities`, §3.5).
    Capability {
        /// Accept an offered chat.
        Accept = "Accept",
        /// Reject an offered chat.
        Reject = "Reject",
        /// Transfer the chat.
        Transfer = "Transfer",
        /// Complete the interaction.
        Complete = "Complete",
        /// Leave the chat.
        Leave = "Leave",
        /// Invite another agent.
        Invite = "Invite",
        /// Consult another agent.
        Consult = "Consult",
        /// Focus (older spelling).
        InFocus = "InFocus",
        /// Focus (newer spelling).
        SetInFocus = "SetInFocus",
        /// Set the disposition code.
        SetDisposition = "SetDisposition",
        /// Attach user data.
        AttachUserData = "AttachUserData",
        /// Delete user data.
        DeleteUserData = "DeleteUserData",
        /// Update user data.
        UpdateUserData = "UpdateUserData",
        /// Send a message.
        SendMessage = "SendMessage",
        /// Send a typing-started notification.
        SendStartTypingNotification = "SendStartTypingNotification",
        /// Send a typing-stopped notification.
        SendStopTypingNotification = "SendStopTypingNotification",
        /// Push a URL.
        SendUrl = "SendUrl",
        /// Send to the other agents only.
        SendToAgents = "SendToAgents",
        /// Typing started, to agents only.
        SendStartTypingToAgentsNotification = "SendStartTypingToAgentsNotification",
        /// Typing stopped, to agents only.
        SendStopTypingToAgentsNotification = "SendStopTypingToAgentsNotification",
    }
}

open_enum! {
    /// Who a chat participant is (`participants[].type`).
    ParticipantType {
        /// A contact-centre agent.
        Agent = "Agent",
        /// The customer.
        Customer = "Customer",
    }
}

/// A chat participant (`chat.participants[]`, `messages[].from`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Participant {
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    /// Agent, Customer or another value kept verbatim.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub participant_type: Option<ParticipantType>,
    /// The participant's id within the chat.
    #[serde(
        rename = "participantId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub participant_id: Option<String>,
    /// Any other fields the server sent (`uri`, `visibility`, `path`, ...), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The chat resource carried by a `ChatStateChangeMessage` (`data.chat`, §3.3).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chat {
    /// The interaction id (from `chat.id`, else the last segment of `chat.uri`).
    pub id: Option<String>,
    /// The chat state, if the server sent one.
    pub state: Option<ChatState>,
    /// Operations valid now; `None` when the field was absent.
    pub capabilities: Option<Vec<Capability>>,
    /// Participants; `None` when the field was absent.
    pub participants: Option<Vec<Participant>>,
    /// Attached data; values may be strings, numbers or null.
    pub user_data: Option<Map<String, Value>>,
    /// The chat's REST URI as the server wrote it.
    pub uri: Option<String>,
}

/// A `ChatStateChangeMessage` notification (§3.2).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatStateChange {
    /// `StatusChange`, `ParticipantsUpdated`, `PropertiesUpdated`, `Error`, or another value.
    pub notification_type: Option<NotificationType>,
    /// The chat resource; may be absent on `Error`.
    pub chat: Chat,
    /// Links the notification to the request that caused it; absent on unsolicited events.
    /// Accepted as an integer or a string on the wire.
    pub reference_id: Option<ReferenceId>,
    /// The error text on `Error` notifications.
    pub error_message: Option<String>,
}

/// A `MessageLogUpdated` notification: new transcript entries (§3.7).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MessageLogUpdated {
    /// Usually `NewMessages`.
    pub notification_type: Option<NotificationType>,
    /// The chat id, taken from `chatPath` (`/chats/<id>`) or the last segment of `chatUri`.
    pub chat_id: Option<String>,
    /// `chatUri` as sent.
    pub chat_uri: Option<String>,
    /// The transcript entries, kept as JSON (their shape varies by `type`).
    pub messages: Vec<Value>,
    /// The request that caused the update, if any.
    pub reference_id: Option<ReferenceId>,
}

/// An `Error` notification that came without `messageType` (the CancelConsult sample) or as a
/// `ChatStateChangeMessage` with `notificationType: "Error"` and no chat.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ErrorNotification {
    /// The `messageType`, when the server sent one.
    pub message_type: Option<String>,
    /// The error text.
    pub error_message: Option<String>,
    /// The request that failed, if given.
    pub reference_id: Option<ReferenceId>,
    /// The chat id, when the error names one.
    pub chat_id: Option<String>,
}

/// A GWS `referenceId`: an integer in every sample, accepted as a string too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum ReferenceId {
    /// The usual integer form.
    Number(i64),
    /// A string form, kept verbatim.
    Text(String),
}

/// One decoded GWS notification.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    /// `ChatStateChangeMessage` with a chat resource.
    ChatStateChange(ChatStateChange),
    /// `MessageLogUpdated`.
    MessageLogUpdated(MessageLogUpdated),
    /// An `Error` notification (with or without `messageType`).
    Error(ErrorNotification),
    /// Any other message type, kept raw; `message_type` is `None` when `data.messageType` is absent.
    Other {
        /// `data.messageType`, when present.
        message_type: Option<String>,
    },
}

/// The `messageType` of a chat state change (§3.2).
pub const CHAT_STATE_CHANGE_MESSAGE: &str = "ChatStateChangeMessage";

/// The `messageType` of a transcript update (§3.7).
pub const MESSAGE_LOG_UPDATED: &str = "MessageLogUpdated";

/// Why a notification payload could not be read as the type its `messageType` names.
///
/// Unknown fields and unknown enum values never cause one; only a field the model reads that has
/// the wrong JSON type does (or a `data` that is not an object at all). `field` is a path rooted at
/// the delivery's `data` (for example `data.chat.participants[1]`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The delivery's `data` is not a JSON object.
    #[error("notification data is {found}, expected a JSON object")]
    NotAnObject {
        /// The JSON type found instead (`an array`, `a string`, ...).
        found: &'static str,
    },
    /// The data is valid JSON text that holds a value JSON parsers commonly reject: a number out
    /// of the `f64` range (`1e400`) or an escaped lone surrogate (`"\ud800"`). Only
    /// [`decode_raw`] reports it; the text is kept as received.
    #[error("notification data cannot be read: {reason}")]
    InvalidJson {
        /// What the JSON parser said.
        reason: String,
    },
    /// A field the model reads has a JSON type it cannot be read as.
    #[error("`{field}` is {found}, expected {expected}")]
    WrongType {
        /// Where the field is, rooted at `data` (`data.chat.capabilities[2]`).
        field: String,
        /// What the model expected there (`an object`, `an array`, `a string`, ...).
        expected: &'static str,
        /// The JSON type found instead.
        found: &'static str,
    },
}

/// Decodes a Bayeux delivery's `data` into a [`Notification`] (§3, §5, §7).
///
/// Dispatch, on the notification object (the `{"data":{...}}` form of the PropertiesUpdated doc
/// sample is unwrapped one level, see [`notification_root`]):
///
/// - `messageType: "ChatStateChangeMessage"` → [`Notification::ChatStateChange`], except that an
///   `Error` notification without a `chat` becomes [`Notification::Error`];
/// - `messageType: "MessageLogUpdated"` → [`Notification::MessageLogUpdated`];
/// - no `messageType` but `notificationType: "Error"` → [`Notification::Error`] (CancelConsult);
/// - anything else → [`Notification::Other`], with the `messageType` kept verbatim.
///
/// Every field is optional and `null` counts as absent. An `Err` means a field the model reads has
/// a JSON type it cannot be read as; see [`DecodeError`]. Never panics.
pub fn decode(data: &Value) -> Result<Notification, DecodeError> {
    let (root, obj) = root_of(data).ok_or(DecodeError::NotAnObject {
        found: json_type(data),
    })?;
    let message_type = opt_str(obj.get("messageType")).map_err(|m| m.at(root, "messageType"))?;
    match message_type {
        Some(CHAT_STATE_CHANGE_MESSAGE) => decode_chat_state_change(root, obj),
        Some(MESSAGE_LOG_UPDATED) => {
            decode_message_log(root, obj).map(Notification::MessageLogUpdated)
        }
        Some(other) => Ok(Notification::Other {
            message_type: Some(other.to_owned()),
        }),
        None if is_error_type(obj) => decode_error(root, obj, None).map(Notification::Error),
        None => Ok(Notification::Other { message_type: None }),
    }
}

/// [`decode`] for a delivery's `data` given as JSON text ([`crate::json::RawJson`]): the same
/// result as `decode` on the parsed value, for every input.
///
/// The text is read straight into typed fields (strings borrowed from it unless they have
/// escapes; no `Value` tree) when it has the shape the model expects, which is the common case.
/// Anything that reading does not accept (a field of the wrong JSON type, even one the dispatched
/// type does not use; a repeated key; a `data` that is not an object) is decoded again by `decode`
/// on the parsed `Value`, so errors and their field paths are exactly those of `decode`. Text that
/// a `Value` cannot hold, anywhere in it (fields the model skips included), is a
/// [`DecodeError::InvalidJson`]. Never panics.
pub fn decode_raw(data: &RawValue) -> Result<Notification, DecodeError> {
    if let Some(notification) = wire::decode(data) {
        return Ok(notification);
    }
    let value: Value = serde_json::from_str(data.get()).map_err(|e| DecodeError::InvalidJson {
        reason: e.to_string(),
    })?;
    decode(&value)
}

/// The object that carries the notification fields of a delivery's `data`: `data` itself, or, when
/// `data` has neither `messageType` nor `notificationType` but holds an object `data` that has one
/// of them (the PropertiesUpdated doc sample), that inner object. `None` when `data` is not an
/// object.
pub fn notification_root(data: &Value) -> Option<&Map<String, Value>> {
    root_of(data).map(|(_, obj)| obj)
}

/// `messageType` of a delivery's `data` (after [`notification_root`]), when it is a string.
/// Lenient: never fails, for labelling events that could not be decoded.
pub fn message_type(data: &Value) -> Option<&str> {
    notification_root(data)?.get("messageType")?.as_str()
}

/// The last path segment of a URI or path (`http://h/api/v2/chats/<id>`, `/chats/<id>/`,
/// `.../<id>?x=1`), ignoring the query, the fragment and trailing slashes. `None` when the URI has
/// no non-empty path segment.
pub fn last_path_segment(uri: &str) -> Option<&str> {
    let end = uri.find(['?', '#']).unwrap_or(uri.len());
    let mut path = &uri[..end];
    if let Some(scheme_end) = path.find("://") {
        let authority_and_path = &path[scheme_end + 3..];
        path = &authority_and_path[authority_and_path.find('/')?..];
    }
    let segment = path.trim_end_matches('/').rsplit('/').next()?;
    (!segment.is_empty()).then_some(segment)
}

/// The notification object and the path it sits at, for error messages.
fn root_of(data: &Value) -> Option<(&'static str, &Map<String, Value>)> {
    let obj = data.as_object()?;
    if present(obj, "messageType") || present(obj, "notificationType") {
        return Some(("data", obj));
    }
    match obj.get("data") {
        Some(Value::Object(inner))
            if present(inner, "messageType") || present(inner, "notificationType") =>
        {
            Some(("data.data", inner))
        }
        _ => Some(("data", obj)),
    }
}

/// Whether `key` is present with a non-null value.
fn present(obj: &Map<String, Value>, key: &str) -> bool {
    obj.get(key).is_some_and(|v| !v.is_null())
}

/// Whether `notificationType` is the string `Error`.
fn is_error_type(obj: &Map<String, Value>) -> bool {
    obj.get("notificationType").and_then(Value::as_str) == Some("Error")
}

/// Decodes a `ChatStateChangeMessage` (or, for an `Error` without a chat, an error notification).
fn decode_chat_state_change(
    root: &str,
    obj: &Map<String, Value>,
) -> Result<Notification, DecodeError> {
    let notification_type = opt_str(obj.get("notificationType"))
        .map_err(|m| m.at(root, "notificationType"))?
        .map(NotificationType::from);
    let chat = opt_object(obj.get("chat")).map_err(|m| m.at(root, "chat"))?;
    if chat.is_none() && notification_type == Some(NotificationType::Error) {
        return decode_error(root, obj, Some(CHAT_STATE_CHANGE_MESSAGE)).map(Notification::Error);
    }
    let reference_id =
        opt_reference_id(obj.get("referenceId")).map_err(|m| m.at(root, "referenceId"))?;
    let error_message = opt_str(obj.get("errorMessage"))
        .map_err(|m| m.at(root, "errorMessage"))?
        .map(str::to_owned);
    let chat = match chat {
        Some(chat) => decode_chat(root, chat)?,
        None => Chat::default(),
    };
    Ok(Notification::ChatStateChange(ChatStateChange {
        notification_type,
        chat,
        reference_id,
        error_message,
    }))
}

/// Decodes the chat resource `data.chat` (§3.3).
fn decode_chat(root: &str, chat: &Map<String, Value>) -> Result<Chat, DecodeError> {
    let at = |field: &'static str| move |m: Mismatch| m.at_chat(root, field);
    let uri = opt_str(chat.get("uri")).map_err(at("uri"))?;
    let id = opt_str(chat.get("id"))
        .map_err(at("id"))?
        .filter(|id| !id.is_empty())
        .or_else(|| uri.and_then(last_path_segment))
        .map(str::to_owned);
    let state = opt_str(chat.get("state"))
        .map_err(at("state"))?
        .map(ChatState::from);
    let capabilities = match opt_array(chat.get("capabilities")).map_err(at("capabilities"))? {
        Some(items) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) => Ok(Capability::from(s.as_str())),
                    other => Err(Mismatch::new("a string", other).at_item(root, "capabilities", i)),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let participants = match opt_array(chat.get("participants")).map_err(at("participants"))? {
        Some(items) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| decode_participant(root, i, item))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let user_data = opt_object(chat.get("userData"))
        .map_err(at("userData"))?
        .cloned();
    Ok(Chat {
        id,
        state,
        capabilities,
        participants,
        user_data,
        uri: uri.map(str::to_owned),
    })
}

/// Decodes `chat.participants[index]`; fields other than the three typed ones go to `extra`.
fn decode_participant(root: &str, index: usize, item: &Value) -> Result<Participant, DecodeError> {
    let Value::Object(fields) = item else {
        return Err(Mismatch::new("an object", item).at_item(root, "participants", index));
    };
    let mut participant = Participant {
        nickname: None,
        participant_type: None,
        participant_id: None,
        extra: Map::new(),
    };
    for (key, value) in fields {
        let text = || {
            opt_str(Some(value))
                .map_err(|m| m.at_path(format!("{root}.chat.participants[{index}].{key}")))
        };
        match key.as_str() {
            "nickname" => participant.nickname = text()?.map(str::to_owned),
            "type" => participant.participant_type = text()?.map(ParticipantType::from),
            "participantId" => participant.participant_id = text()?.map(str::to_owned),
            _ => {
                participant.extra.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(participant)
}

/// Decodes a `MessageLogUpdated` (§3.7); the chat id comes from `chatPath`, else `chatUri`.
fn decode_message_log(
    root: &str,
    obj: &Map<String, Value>,
) -> Result<MessageLogUpdated, DecodeError> {
    let notification_type = opt_str(obj.get("notificationType"))
        .map_err(|m| m.at(root, "notificationType"))?
        .map(NotificationType::from);
    let reference_id =
        opt_reference_id(obj.get("referenceId")).map_err(|m| m.at(root, "referenceId"))?;
    let chat_uri = opt_str(obj.get("chatUri")).map_err(|m| m.at(root, "chatUri"))?;
    let chat_path = opt_str(obj.get("chatPath")).map_err(|m| m.at(root, "chatPath"))?;
    let messages = match opt_array(obj.get("messages")).map_err(|m| m.at(root, "messages"))? {
        Some(items) => {
            if let Some((i, item)) = items.iter().enumerate().find(|(_, item)| !item.is_object()) {
                return Err(
                    Mismatch::new("an object", item).at_path(format!("{root}.messages[{i}]"))
                );
            }
            items.clone()
        }
        None => Vec::new(),
    };
    let chat_id = chat_path
        .and_then(last_path_segment)
        .or_else(|| chat_uri.and_then(last_path_segment))
        .map(str::to_owned);
    Ok(MessageLogUpdated {
        notification_type,
        chat_id,
        chat_uri: chat_uri.map(str::to_owned),
        messages,
        reference_id,
    })
}

/// Decodes an `Error` notification. The chat id comes from `chat` (`id`, else `uri`) when present,
/// else from `chatPath` / `chatUri`.
fn decode_error(
    root: &str,
    obj: &Map<String, Value>,
    message_type: Option<&str>,
) -> Result<ErrorNotification, DecodeError> {
    let error_message = opt_str(obj.get("errorMessage"))
        .map_err(|m| m.at(root, "errorMessage"))?
        .map(str::to_owned);
    let reference_id =
        opt_reference_id(obj.get("referenceId")).map_err(|m| m.at(root, "referenceId"))?;
    let chat_id = match opt_object(obj.get("chat")).map_err(|m| m.at(root, "chat"))? {
        Some(chat) => {
            let uri = opt_str(chat.get("uri")).map_err(|m| m.at_chat(root, "uri"))?;
            opt_str(chat.get("id"))
                .map_err(|m| m.at_chat(root, "id"))?
                .filter(|id| !id.is_empty())
                .or_else(|| uri.and_then(last_path_segment))
        }
        None => {
            let chat_path = opt_str(obj.get("chatPath")).map_err(|m| m.at(root, "chatPath"))?;
            let chat_uri = opt_str(obj.get("chatUri")).map_err(|m| m.at(root, "chatUri"))?;
            chat_path
                .and_then(last_path_segment)
                .or_else(|| chat_uri.and_then(last_path_segment))
        }
    };
    Ok(ErrorNotification {
        message_type: message_type.map(str::to_owned),
        error_message,
        reference_id,
        chat_id: chat_id.map(str::to_owned),
    })
}

/// A JSON type mismatch, before it is given the path of the field it was found at (so the path is
/// only formatted when decoding actually fails).
#[derive(Debug, Clone, Copy)]
struct Mismatch {
    expected: &'static str,
    found: &'static str,
}

impl Mismatch {
    fn new(expected: &'static str, found: &Value) -> Self {
        Self {
            expected,
            found: json_type(found),
        }
    }

    fn at_path(self, field: String) -> DecodeError {
        DecodeError::WrongType {
            field,
            expected: self.expected,
            found: self.found,
        }
    }

    fn at(self, root: &str, field: &str) -> DecodeError {
        self.at_path(format!("{root}.{field}"))
    }

    fn at_chat(self, root: &str, field: &str) -> DecodeError {
        self.at_path(format!("{root}.chat.{field}"))
    }

    fn at_item(self, root: &str, field: &str, index: usize) -> DecodeError {
        self.at_path(format!("{root}.chat.{field}[{index}]"))
    }
}

/// `a string`, `an array`, ... for error messages.
fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An optional string field (`null` counts as absent).
fn opt_str(value: Option<&Value>) -> Result<Option<&str>, Mismatch> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(Mismatch::new("a string", other)),
    }
}

/// An optional object field (`null` counts as absent).
fn opt_object(value: Option<&Value>) -> Result<Option<&Map<String, Value>>, Mismatch> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(obj)) => Ok(Some(obj)),
        Some(other) => Err(Mismatch::new("an object", other)),
    }
}

/// An optional array field (`null` counts as absent).
fn opt_array(value: Option<&Value>) -> Result<Option<&Vec<Value>>, Mismatch> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(other) => Err(Mismatch::new("an array", other)),
    }
}

/// An optional `referenceId`: an integer (fits in i64) or a string.
fn opt_reference_id(value: Option<&Value>) -> Result<Option<ReferenceId>, Mismatch> {
    const EXPECTED: &str = "an integer or a string";
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(n) => Ok(Some(ReferenceId::Number(n))),
            None => Err(Mismatch {
                expected: EXPECTED,
                found: "a number out of the i64 range or with a fraction",
            }),
        },
        Some(Value::String(s)) => Ok(Some(ReferenceId::Text(s.clone()))),
        Some(other) => Err(Mismatch::new(EXPECTED, other)),
    }
}

mod wire;

#[cfg(test)]
mod tests;
