//! The typed model of GWS notifications (`reference/gws-api.md` §3, §5 and §7).
//!
//! A Bayeux delivery's `data` object is decoded into a [`Notification`]. Chat state changes and
//! transcript updates are typed; `Error` notifications are recognised with or without a
//! `messageType`; every other message type is kept as raw JSON under its `messageType`. Decoding
//! never rejects an unknown state, capability, notification type or field: the enums below keep an
//! unseen value verbatim in their `Other(String)` variant, so what the server sends is what the
//! sinks see.

use serde_json::{Map, Value};

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
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(Self::from(s.as_ref()))
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
    #[serde(rename = "participantId", default, skip_serializing_if = "Option::is_none")]
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
