//! The agent side of one GWS chat: its state machine, the chat operations with their parameter
//! rules, and the exact shapes of the notifications they produce (`reference/gws-api.md` §3.6,
//! §3.7, §4 and §6).
//!
//! Everything here is pure: no locks, no I/O; the clock and the participant-id source are passed
//! in, so every transition is unit-tested without a server. The caller ([`super::state`]) decides
//! who receives the notifications and assigns the `referenceId`.
//!
//! What the documentation does not settle, and what this model chose, is marked `GUESS:` in the
//! comments below; the simulator's module documentation lists the same guesses.

use serde_json::{json, Map, Value};

/// The channel every chat notification is published on (§2).
pub(super) const CHANNEL: &str = "/v2/me/chats";

/// Capabilities of a chat the agent is in (`Chatting`): the Accept sample's list plus the
/// disposition and user-data operations the Leave page says are allowed.
const CHATTING_CAPS: &[&str] = &[
    "Transfer",
    "Complete",
    "Leave",
    "InFocus",
    "SendMessage",
    "SendStartTypingNotification",
    "SendStopTypingNotification",
    "SetDisposition",
    "AttachUserData",
    "UpdateUserData",
    "DeleteUserData",
];

/// Capabilities in `LeftChat`: exactly the Leave page sample (§6), even though the page's text
/// allows disposition and user-data work in this state (and [`allowed`] accepts it).
const LEFT_CHAT_CAPS: &[&str] = &["Transfer", "Complete", "Leave", "InFocus"];

/// Capabilities in `JoinFailed`, as in the captured `GET /api/v2/me` response (§3.4).
const JOIN_FAILED_CAPS: &[&str] = &[
    "SetInFocus",
    "Complete",
    "SetDisposition",
    "AttachUserData",
    "DeleteUserData",
    "UpdateUserData",
];

/// The capability list GWS advertises for a chat in `state` (empty for terminal or unknown
/// states).
pub(super) fn capabilities(state: &str) -> &'static [&'static str] {
    match state {
        "Invited" => &["Accept", "Reject"],
        "Chatting" => CHATTING_CAPS,
        "LeftChat" => LEFT_CHAT_CAPS,
        "JoinFailed" => JOIN_FAILED_CAPS,
        _ => &[],
    }
}

/// Whether a chat in `state` is still open for the agent (listed by `GET /api/v2/me/chats`).
pub(super) fn is_open(state: &str) -> bool {
    !matches!(state, "Completed" | "Revoked")
}

/// "Now", as the transcript writes it: GWS's local-time string and epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Clock {
    /// `2014-01-09 11:58:12.035+0000` (the simulator writes UTC).
    pub timestamp: String,
    /// Epoch milliseconds (GWS names this `timestampSeconds`).
    pub millis: i64,
}

impl Clock {
    /// The wall clock now.
    pub fn now() -> Clock {
        let now = time::OffsetDateTime::now_utc();
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory][offset_minute]"
        );
        Clock {
            timestamp: now
                .format(&fmt)
                .unwrap_or_else(|_| "1970-01-01 00:00:00.000+0000".to_owned()),
            millis: i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
        }
    }
}

/// A participant of the chat, as GWS lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Party {
    /// Display name.
    pub nickname: String,
    /// `Agent` or `Customer`.
    pub kind: &'static str,
    /// The id within the chat.
    pub participant_id: String,
    /// `Agents` for a consulting agent the customer cannot see.
    pub visibility: Option<&'static str>,
}

impl Party {
    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("nickname".into(), self.nickname.clone().into());
        m.insert("type".into(), self.kind.into());
        m.insert("participantId".into(), self.participant_id.clone().into());
        if let Some(v) = self.visibility {
            m.insert("visibility".into(), v.into());
        }
        Value::Object(m)
    }
}

/// One chat as the simulator's backend holds it.
#[derive(Debug, Clone)]
pub(super) struct ChatRec {
    /// The interaction id.
    pub id: String,
    /// The username of the agent it was offered to.
    pub agent: String,
    /// Creation order (listings are sorted by it).
    pub seq: u64,
    /// `<external base>/api/v2/chats/<id>`.
    pub uri: String,
    /// `Invited`, `Chatting`, `LeftChat`, `Completed`, ... (any string after `set_chat_state`).
    pub state: String,
    /// When the chat was offered, in GWS's date format.
    pub received_date: String,
    /// The customer.
    pub customer: Party,
    /// The agent, once they accepted.
    pub agent_party: Option<Party>,
    /// Who is in the chat now, as `participants` lists it.
    pub participants: Vec<Party>,
    /// Attached data.
    pub user_data: Map<String, Value>,
    /// Whether another agent is (or was) in the chat: then `Leave` completes only this agent.
    pub conference: bool,
    /// The transcript.
    pub messages: Vec<Value>,
    /// The next transcript index.
    pub next_index: u64,
}

/// Which fields a view of the chat resource carries. The documented samples differ per
/// notification, and the simulator reproduces each one's field set.
#[derive(Clone, Copy)]
struct View {
    meta: bool,
    caps: bool,
    parts: Parts,
    user_data: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Parts {
    Omit,
    Empty,
    Current,
}

impl ChatRec {
    /// A new offer (`Invited`). The transcript starts with the customer joining and, if given,
    /// their first words.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        id: String,
        agent: String,
        seq: u64,
        uri: String,
        customer: Party,
        user_data: Map<String, Value>,
        conference: Option<Party>,
        first_message: Option<String>,
        clock: &Clock,
    ) -> ChatRec {
        let mut chat = ChatRec {
            id,
            agent,
            seq,
            uri,
            state: "Invited".into(),
            received_date: clock.timestamp.clone(),
            customer,
            agent_party: None,
            participants: Vec::new(),
            user_data,
            conference: conference.is_some(),
            messages: Vec::new(),
            next_index: 1,
        };
        if let Some(colleague) = conference {
            // The agent is being brought into a chat another agent already handles.
            chat.participants.push(colleague);
        }
        // GUESS: `ParticipantJoined` is not in any captured sample (§3.7 lists it as probable).
        let customer = chat.customer.clone();
        chat.push_message("ParticipantJoined", &customer, None, clock);
        if let Some(text) = first_message {
            chat.push_message("Text", &customer, Some(text), clock);
        }
        chat
    }

    /// The chat resource as `GET /api/v2/me/chats` and the offer notification show it.
    pub fn resource(&self) -> Value {
        self.view(View {
            meta: true,
            caps: true,
            parts: self.visible_parts(),
            user_data: true,
        })
    }

    /// Participants are listed only once the agent is in the chat ("customer only visible after
    /// accept"); a colleague already in a conference is not shown before that either.
    fn visible_parts(&self) -> Parts {
        if self.state == "Invited" {
            Parts::Empty
        } else {
            Parts::Current
        }
    }

    fn view(&self, v: View) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.clone().into());
        m.insert("state".into(), self.state.clone().into());
        if v.meta {
            m.insert("chatType".into(), "Inbound".into());
            m.insert("receivedDate".into(), self.received_date.clone().into());
        }
        if v.caps {
            let caps: Vec<Value> = capabilities(&self.state)
                .iter()
                .map(|c| Value::from(*c))
                .collect();
            m.insert("capabilities".into(), caps.into());
        }
        match v.parts {
            Parts::Omit => {}
            Parts::Empty => {
                m.insert("participants".into(), Value::Array(Vec::new()));
            }
            Parts::Current => {
                let parts: Vec<Value> = self.participants.iter().map(Party::to_json).collect();
                m.insert("participants".into(), parts.into());
            }
        }
        if v.user_data {
            m.insert("userData".into(), Value::Object(self.user_data.clone()));
        }
        m.insert("uri".into(), self.uri.clone().into());
        Value::Object(m)
    }

    /// `StatusChange` as the Accept sample shows it: participants `[]`, capabilities, no
    /// userData.
    fn view_after_accept(&self) -> Value {
        self.view(View {
            meta: false,
            caps: true,
            parts: Parts::Empty,
            user_data: false,
        })
    }

    /// `ParticipantsUpdated` (Accept sample): capabilities and the participant list.
    fn view_participants(&self) -> Value {
        self.view(View {
            meta: false,
            caps: true,
            parts: Parts::Current,
            user_data: false,
        })
    }

    /// `PropertiesUpdated` (ChatMessageType sample): userData, capabilities, participants.
    fn view_properties(&self) -> Value {
        self.view(View {
            meta: false,
            caps: true,
            parts: Parts::Current,
            user_data: true,
        })
    }

    /// `StatusChange` to `LeftChat` (Leave sample): capabilities only, no participants.
    fn view_left(&self) -> Value {
        self.view(View {
            meta: false,
            caps: true,
            parts: Parts::Omit,
            user_data: false,
        })
    }

    /// `StatusChange` to `Completed` or `Revoked` (Complete/Reject samples): participants `[]`,
    /// no capabilities.
    fn view_terminal(&self) -> Value {
        self.view(View {
            meta: false,
            caps: false,
            parts: Parts::Empty,
            user_data: false,
        })
    }

    /// Appends a transcript entry and returns it.
    fn push_message(
        &mut self,
        kind: &str,
        from: &Party,
        text: Option<String>,
        clock: &Clock,
    ) -> Value {
        let mut m = Map::new();
        m.insert("index".into(), self.next_index.into());
        m.insert("type".into(), kind.into());
        if let Some(text) = text {
            m.insert("text".into(), text.into());
        }
        m.insert("visibility".into(), "All".into());
        m.insert(
            "from".into(),
            json!({"nickname": from.nickname, "type": from.kind, "participantId": from.participant_id}),
        );
        m.insert("timestamp".into(), clock.timestamp.clone().into());
        m.insert("timestampSeconds".into(), clock.millis.into());
        self.next_index += 1;
        let msg = Value::Object(m);
        self.messages.push(msg.clone());
        msg
    }

    /// A `MessageLogUpdated` notification carrying `messages`.
    fn message_log(&self, messages: Vec<Value>, reference: Option<u64>) -> Value {
        let mut m = Map::new();
        m.insert("messageType".into(), "MessageLogUpdated".into());
        m.insert("notificationType".into(), "NewMessages".into());
        if let Some(r) = reference {
            m.insert("referenceId".into(), r.into());
        }
        m.insert("chatUri".into(), self.uri.clone().into());
        m.insert("chatPath".into(), format!("/chats/{}", self.id).into());
        m.insert("messages".into(), messages.into());
        Value::Object(m)
    }

    /// The offer notification: `StatusChange` to `Invited`, without a `referenceId`.
    pub fn offer_notification(&self) -> Value {
        state_change("StatusChange", self.resource(), None)
    }

    /// The customer writes `text` (no `referenceId`: nobody on the agent side asked for it).
    pub fn customer_says(&mut self, text: String, clock: &Clock) -> Option<Vec<Value>> {
        if self.state != "Chatting" {
            return None;
        }
        let customer = self.customer.clone();
        let msg = self.push_message("Text", &customer, Some(text), clock);
        Some(vec![self.message_log(vec![msg], None)])
    }

    /// The customer closes the chat window.
    ///
    /// GUESS (§9 question 5): GWS's notification for this is not documented. The simulator sends
    /// a `ParticipantLeft` transcript entry and a `ParticipantsUpdated` without the customer;
    /// the agent's chat stays `Chatting` (with its capabilities) until the agent leaves or
    /// completes it.
    pub fn customer_leaves(&mut self, clock: &Clock) -> Option<Vec<Value>> {
        if self.state != "Chatting" || !self.participants.iter().any(|p| p.kind == "Customer") {
            return None;
        }
        let customer = self.customer.clone();
        let msg = self.push_message("ParticipantLeft", &customer, None, clock);
        self.participants.retain(|p| p.kind != "Customer");
        Some(vec![
            self.message_log(vec![msg], None),
            state_change("ParticipantsUpdated", self.view_participants(), None),
        ])
    }

    /// The routing withdraws an offer that was not accepted yet.
    ///
    /// GUESS: `Revoked` is only seen in client code (§3.4); the simulator reports it like
    /// `Completed`: a `StatusChange` with participants `[]` and no capabilities.
    pub fn revoke(&mut self) -> Option<Vec<Value>> {
        if self.state != "Invited" {
            return None;
        }
        self.state = "Revoked".into();
        self.participants.clear();
        Some(vec![state_change(
            "StatusChange",
            self.view_terminal(),
            None,
        )])
    }
}

/// A `ChatStateChangeMessage` notification.
fn state_change(kind: &str, chat: Value, reference: Option<u64>) -> Value {
    let mut m = Map::new();
    m.insert("messageType".into(), "ChatStateChangeMessage".into());
    m.insert("notificationType".into(), kind.into());
    if let Some(r) = reference {
        m.insert("referenceId".into(), r.into());
    }
    m.insert("chat".into(), chat);
    Value::Object(m)
}

/// The `Error` notification of a failed operation, exactly as the brief and the CancelConsult
/// sample show it: no `chat`.
///
/// GUESS (§9 question 7): the sample has no `messageType`; ChatMessageType lists `Error` as a
/// `ChatStateChangeMessage` type, so the simulator includes `messageType`.
pub(super) fn error_notification(reference: u64) -> Value {
    json!({
        "messageType": "ChatStateChangeMessage",
        "notificationType": "Error",
        "errorMessage": "Request failed",
        "referenceId": reference,
    })
}

/// Why an operation was refused. Each maps to an HTTP status and a GWS `statusCode` (§4.4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum OpError {
    /// A required parameter is missing (`statusCode` 1).
    #[error("{0}")]
    Missing(String),
    /// A parameter has a value GWS would not accept (`statusCode` 10).
    #[error("{0}")]
    Invalid(String),
    /// The `operationName` is not one this model knows.
    ///
    /// GUESS: GWS's answer to an unknown operation is not documented; the simulator uses
    /// `statusCode` 1, read as "a known operationName is required".
    #[error("Unknown operationName '{0}'")]
    Unknown(String),
    /// The operation is not valid in the chat's current state (`statusCode` 2, plus an `Error`
    /// notification, as if the backend refused it).
    #[error("Operation {op} is not valid for chat state {state}")]
    WrongState {
        /// The operation name as sent.
        op: String,
        /// The chat's state.
        state: String,
    },
}

impl OpError {
    /// The GWS `statusCode`.
    pub fn status_code(&self) -> u8 {
        match self {
            OpError::Missing(_) | OpError::Unknown(_) => 1,
            OpError::WrongState { .. } => 2,
            OpError::Invalid(_) => 10,
        }
    }

    /// Whether the failure also produces an `Error` notification (only failures that, in GWS,
    /// would come back from the backend; parameter errors are refused synchronously).
    pub fn notifies(&self) -> bool {
        matches!(self, OpError::WrongState { .. })
    }
}

/// The chat operations this model implements (§4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Accept,
    Reject,
    SendMessage,
    StartTyping,
    StopTyping,
    Leave,
    Complete,
    Transfer,
    Invite,
    Consult,
    SetDisposition,
    AttachUserData,
    UpdateUserData,
    DeleteUserData,
    SetInFocus,
}

impl Op {
    fn parse(name: &str) -> Option<Op> {
        Some(match name {
            "Accept" => Op::Accept,
            "Reject" => Op::Reject,
            "SendMessage" => Op::SendMessage,
            "SendStartTypingNotification" => Op::StartTyping,
            "SendStopTypingNotification" => Op::StopTyping,
            "Leave" => Op::Leave,
            "Complete" => Op::Complete,
            "Transfer" => Op::Transfer,
            "Invite" => Op::Invite,
            "Consult" => Op::Consult,
            "SetDisposition" => Op::SetDisposition,
            "AttachUserData" => Op::AttachUserData,
            "UpdateUserData" => Op::UpdateUserData,
            "DeleteUserData" => Op::DeleteUserData,
            // GUESS (§9 question 8): the request format of SetInFocus is undocumented; both
            // capability spellings are accepted as the operation name.
            "SetInFocus" | "InFocus" => Op::SetInFocus,
            _ => return None,
        })
    }
}

/// Whether `op` is valid for a chat in `state`.
///
/// This is wider than [`capabilities`] in two documented places: `LeftChat` accepts
/// `SetDisposition` and the user-data operations (the Leave page's text), and `Chatting` accepts
/// `Invite` and `Consult` (documented operations whose capabilities the Accept sample omits).
fn allowed(state: &str, op: Op) -> bool {
    use Op::*;
    match state {
        "Invited" => matches!(op, Accept | Reject),
        "Chatting" => !matches!(op, Accept | Reject),
        "LeftChat" => matches!(
            op,
            Transfer
                | Complete
                | Leave
                | SetInFocus
                | SetDisposition
                | AttachUserData
                | UpdateUserData
                | DeleteUserData
        ),
        "JoinFailed" => matches!(
            op,
            Complete
                | SetInFocus
                | SetDisposition
                | AttachUserData
                | UpdateUserData
                | DeleteUserData
        ),
        _ => false,
    }
}

/// The parameters of one request, validated.
#[derive(Debug, Default)]
struct Params {
    text: Option<String>,
    nickname: Option<String>,
    target: Option<String>,
    disposition: Option<(String, String)>,
    user_data: Option<Map<String, Value>>,
    keys: Vec<String>,
}

/// An optional string parameter: absent or `null` is `None`; any other non-string is refused.
fn opt_str(body: &Map<String, Value>, key: &str) -> Result<Option<String>, OpError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(OpError::Invalid(format!(
            "Parameter '{key}' must be a string"
        ))),
    }
}

fn req_str(body: &Map<String, Value>, key: &str) -> Result<String, OpError> {
    opt_str(body, key)?.ok_or_else(|| OpError::Missing(format!("Parameter '{key}' is missing")))
}

/// The `text` / `messageType` / `treatAs` trio (§4.3): `messageType` and `treatAs` only together
/// with `text`; `treatAs` is `Normal` or `System`.
///
/// GUESS (§9 question 6): the error GWS returns for a broken pairing is undocumented; the
/// simulator answers HTTP 400 with `statusCode` 1 (the text is "required" by the other
/// parameter). A `treatAs` outside its two values gets `statusCode` 10.
fn text_trio(body: &Map<String, Value>, text_required: bool) -> Result<Option<String>, OpError> {
    let text = opt_str(body, "text")?;
    let message_type = opt_str(body, "messageType")?;
    let treat_as = opt_str(body, "treatAs")?;
    if text.is_none() {
        if text_required {
            return Err(OpError::Missing("Parameter 'text' is missing".into()));
        }
        let mut orphans = Vec::new();
        if message_type.is_some() {
            orphans.push("messageType");
        }
        if treat_as.is_some() {
            orphans.push("treatAs");
        }
        if !orphans.is_empty() {
            return Err(OpError::Missing(format!(
                "Parameter 'text' is required when {} is given",
                orphans.join(" and ")
            )));
        }
    }
    if let Some(t) = treat_as.as_deref() {
        if t != "Normal" && t != "System" {
            return Err(OpError::Invalid(format!(
                "Parameter 'treatAs' must be Normal or System, not '{t}'"
            )));
        }
    }
    Ok(text)
}

fn validate(op: Op, body: &Map<String, Value>) -> Result<Params, OpError> {
    let mut p = Params::default();
    match op {
        Op::Accept => p.nickname = opt_str(body, "nickname")?,
        Op::Reject | Op::StartTyping | Op::StopTyping | Op::SetInFocus => {}
        Op::SendMessage => p.text = text_trio(body, true)?,
        Op::Leave => p.text = text_trio(body, false)?,
        Op::Complete => {
            p.text = text_trio(body, false)?;
            // `queueName` places the interaction in a queue; the simulator only checks its type.
            opt_str(body, "queueName")?;
        }
        Op::Transfer => {
            p.text = text_trio(body, false)?;
            let target = opt_str(body, "targetUri")?;
            let queue = opt_str(body, "queueName")?;
            if target.is_none() && queue.is_none() {
                return Err(OpError::Missing(
                    "Parameter 'targetUri' or 'queueName' is missing".into(),
                ));
            }
            p.target = target.or(queue);
        }
        Op::Invite | Op::Consult => p.target = Some(req_str(body, "targetUri")?),
        Op::SetDisposition => {
            let value = req_str(body, "disposition")?;
            let key = opt_str(body, "dispositionKey")?.unwrap_or_else(|| "DispositionCode".into());
            p.disposition = Some((key, value));
        }
        Op::AttachUserData | Op::UpdateUserData => match body.get("userData") {
            None | Some(Value::Null) => {
                return Err(OpError::Missing("Parameter 'userData' is missing".into()))
            }
            Some(Value::Object(m)) => p.user_data = Some(m.clone()),
            Some(_) => {
                return Err(OpError::Invalid(
                    "Parameter 'userData' must be an object".into(),
                ))
            }
        },
        Op::DeleteUserData => match body.get("keys") {
            None | Some(Value::Null) => {
                return Err(OpError::Missing("Parameter 'keys' is missing".into()))
            }
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => p.keys.push(s.clone()),
                        _ => {
                            return Err(OpError::Invalid(
                                "Parameter 'keys' must be an array of strings".into(),
                            ))
                        }
                    }
                }
            }
            Some(_) => {
                return Err(OpError::Invalid(
                    "Parameter 'keys' must be an array of strings".into(),
                ))
            }
        },
    }
    Ok(p)
}

/// What the caller provides besides the request body.
pub(super) struct OpContext<'a> {
    /// The request's `referenceId`, carried by every notification it causes.
    pub reference_id: u64,
    /// The agent's configured nickname (used when `Accept` has no `nickname`).
    pub agent_nickname: &'a str,
    /// Now.
    pub clock: &'a Clock,
}

/// Applies `operationName` with its request `body` to `chat`, returning the notifications (the
/// `data` objects, in order) or why it was refused. A refused operation changes nothing.
pub(super) fn apply(
    chat: &mut ChatRec,
    operation: &str,
    body: &Map<String, Value>,
    ctx: &OpContext<'_>,
    new_participant_id: &mut dyn FnMut() -> String,
) -> Result<Vec<Value>, OpError> {
    let op = Op::parse(operation).ok_or_else(|| OpError::Unknown(operation.to_owned()))?;
    let params = validate(op, body)?;
    if !allowed(&chat.state, op) {
        return Err(OpError::WrongState {
            op: operation.to_owned(),
            state: chat.state.clone(),
        });
    }
    let r = Some(ctx.reference_id);
    let mut out = Vec::new();
    match op {
        Op::Accept => {
            let me = Party {
                nickname: params
                    .nickname
                    .unwrap_or_else(|| ctx.agent_nickname.to_owned()),
                kind: "Agent",
                participant_id: new_participant_id(),
                visibility: None,
            };
            chat.state = "Chatting".into();
            chat.participants.push(me.clone());
            chat.participants.push(chat.customer.clone());
            chat.agent_party = Some(me.clone());
            // GUESS: the agent's own join is in the history GWS sends after Accept.
            chat.push_message("ParticipantJoined", &me, None, ctx.clock);
            out.push(state_change("StatusChange", chat.view_after_accept(), r));
            out.push(state_change(
                "ParticipantsUpdated",
                chat.view_participants(),
                r,
            ));
            out.push(chat.message_log(chat.messages.clone(), r));
        }
        Op::Reject => {
            // GUESS: GWS then routes the chat to another agent; the simulator has no router, so
            // the chat simply ends.
            out.push(finish(chat, r));
        }
        Op::SendMessage | Op::StartTyping | Op::StopTyping => {
            let (kind, text) = match op {
                Op::SendMessage => ("Text", params.text),
                Op::StartTyping => ("TypingStarted", None),
                _ => ("TypingStopped", None),
            };
            let me = agent_party(chat, ctx);
            let msg = chat.push_message(kind, &me, text, ctx.clock);
            out.push(chat.message_log(vec![msg], r));
        }
        Op::Leave => {
            if chat.state == "Chatting" {
                say_goodbye(chat, params.text, ctx, &mut out);
                if chat.conference {
                    // In a conference or consultation only this agent leaves (§6).
                    out.push(finish(chat, r));
                } else {
                    chat.state = "LeftChat".into();
                    chat.participants.clear();
                    out.push(state_change("StatusChange", chat.view_left(), r));
                }
            } else {
                // GUESS: Leave is advertised in LeftChat (and allowed there); with nobody left to
                // talk to it only repeats the state. A goodbye text is dropped.
                out.push(state_change("StatusChange", chat.view_left(), r));
            }
        }
        Op::Complete | Op::Transfer => {
            // Complete ends the customer's session if still open (§6). GUESS: Transfer's
            // notifications are undocumented; the transferring agent's copy ends `Completed`
            // and, with no router, nobody else receives the chat.
            if chat.state == "Chatting" {
                say_goodbye(chat, params.text, ctx, &mut out);
            }
            out.push(finish(chat, r));
        }
        Op::Invite | Op::Consult => {
            let target = params.target.unwrap_or_default();
            let nickname = target
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            chat.conference = true;
            chat.participants.push(Party {
                nickname,
                kind: "Agent",
                participant_id: new_participant_id(),
                // A consultant is invisible to the customer.
                visibility: (op == Op::Consult).then_some("Agents"),
            });
            // GUESS: the invited agent is assumed to join at once (no offer to them, no
            // acceptance step), and capabilities do not change.
            out.push(state_change(
                "ParticipantsUpdated",
                chat.view_participants(),
                r,
            ));
        }
        Op::SetDisposition => {
            if let Some((key, value)) = params.disposition {
                chat.user_data.insert(key, value.into());
            }
            out.push(state_change("PropertiesUpdated", chat.view_properties(), r));
        }
        Op::AttachUserData | Op::UpdateUserData => {
            // GUESS: Attach and Update both merge the given keys (Update overwrites, §4.2; what
            // Attach does with an existing key is not documented: it overwrites here too).
            for (k, v) in params.user_data.unwrap_or_default() {
                chat.user_data.insert(k, v);
            }
            out.push(state_change("PropertiesUpdated", chat.view_properties(), r));
        }
        Op::DeleteUserData => {
            for k in &params.keys {
                chat.user_data.remove(k);
            }
            out.push(state_change("PropertiesUpdated", chat.view_properties(), r));
        }
        Op::SetInFocus => {
            // GUESS: focus is a desktop concern; no notification is documented, none is sent.
        }
    }
    Ok(out)
}

/// The agent's participant entry (made up if the chat was put in `Chatting` by `set_chat_state`).
fn agent_party(chat: &ChatRec, ctx: &OpContext<'_>) -> Party {
    chat.agent_party.clone().unwrap_or_else(|| Party {
        nickname: ctx.agent_nickname.to_owned(),
        kind: "Agent",
        participant_id: "0000000000000000".into(),
        visibility: None,
    })
}

/// A goodbye text on Leave/Complete/Transfer becomes a transcript entry from the agent.
fn say_goodbye(
    chat: &mut ChatRec,
    text: Option<String>,
    ctx: &OpContext<'_>,
    out: &mut Vec<Value>,
) {
    if let Some(text) = text {
        let me = agent_party(chat, ctx);
        let msg = chat.push_message("Text", &me, Some(text), ctx.clock);
        out.push(chat.message_log(vec![msg], Some(ctx.reference_id)));
    }
}

/// Moves the chat to `Completed` and returns the notification.
fn finish(chat: &mut ChatRec, reference: Option<u64>) -> Value {
    chat.state = "Completed".into();
    chat.participants.clear();
    state_change("StatusChange", chat.view_terminal(), reference)
}

#[cfg(test)]
mod tests;
