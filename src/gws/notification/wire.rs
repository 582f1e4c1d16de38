//! The fast GWS decoder: the typed reading behind [`decode_raw`](super::decode_raw), the per-event
//! path. The fields of the model are read straight from the text with [`Reader`], accepting
//! exactly the JSON types [`decode`](super::decode) accepts for each field and giving up (`None`,
//! which sends the payload to `decode`) on anything else.
//!
//! Its equivalence with [`decode`](super::decode) is what the tests below hold it to: every
//! fixture and a list of odd and malformed payloads give the same result both ways, and the ones
//! the typed reading must handle itself do not fall back.

use std::borrow::Cow;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{
    last_path_segment, Capability, ChatState, ChatStateChange, ErrorNotification,
    MessageLogUpdated, Notification, NotificationType, Participant, ParticipantType, ReferenceId,
    CHAT_STATE_CHANGE_MESSAGE, MESSAGE_LOG_UPDATED,
};
use crate::json::reader::Reader;

/// The notification object (`data`, or the `data` wrapped in it). A repeated key keeps its
/// last value, as in a `Value`.
#[derive(Default)]
struct Root<'a> {
    message_type: Option<Cow<'a, str>>,
    notification_type: Option<NotificationType>,
    reference_id: Option<ReferenceId>,
    error_message: Option<Cow<'a, str>>,
    chat: Option<Chat<'a>>,
    chat_uri: Option<Cow<'a, str>>,
    chat_path: Option<Cow<'a, str>>,
    messages: Option<Vec<Value>>,
    /// The text of `data`, whatever its type.
    data: Option<&'a str>,
}

/// `data.chat`.
#[derive(Default)]
struct Chat<'a> {
    id: Option<Cow<'a, str>>,
    state: Option<ChatState>,
    capabilities: Option<Vec<Capability>>,
    participants: Option<Vec<Participant>>,
    user_data: Option<Map<String, Value>>,
    uri: Option<Cow<'a, str>>,
}

/// A `referenceId`: an integer that fits in an `i64`, a string, or `null`.
fn reference_id(r: &mut Reader<'_>) -> Option<Option<ReferenceId>> {
    if r.null() {
        return Some(None);
    }
    match r.string() {
        Some(text) => Some(Some(ReferenceId::Text(text.into_owned()))),
        None => r.integer().map(|n| Some(ReferenceId::Number(n))),
    }
}

/// An object of any values, or `null`.
fn opt_map(r: &mut Reader<'_>) -> Option<Option<Map<String, Value>>> {
    if r.null() {
        return Some(None);
    }
    let mut map = Map::new();
    r.object(|r, key| {
        map.insert(key.into_owned(), r.value()?);
        Some(())
    })?;
    Some(Some(map))
}

/// Reads a notification object into `root` (in place: the structures are large to move).
fn root<'a>(r: &mut Reader<'a>, root: &mut Root<'a>) -> Option<()> {
    r.object(|r, key| {
        match key.as_ref() {
            "messageType" => root.message_type = r.opt_string()?,
            "notificationType" => {
                root.notification_type = r.opt_string()?.map(|s| NotificationType::from(&*s));
            }
            "referenceId" => root.reference_id = reference_id(r)?,
            "errorMessage" => root.error_message = r.opt_string()?,
            "chat" => {
                if r.null() {
                    root.chat = None;
                } else {
                    chat(r, root.chat.insert(Chat::default()))?;
                }
            }
            "chatUri" => root.chat_uri = r.opt_string()?,
            "chatPath" => root.chat_path = r.opt_string()?,
            "messages" => {
                root.messages = if r.null() {
                    None
                } else {
                    let mut messages = Vec::new();
                    r.array(|r| {
                        let message = r.value()?;
                        message.is_object().then(|| messages.push(message))
                    })?;
                    Some(messages)
                };
            }
            "data" => root.data = Some(r.skip()?).filter(|text| *text != "null"),
            _ => {
                r.skip()?;
            }
        }
        Some(())
    })
}

/// Reads a chat object into `chat`.
fn chat<'a>(r: &mut Reader<'a>, chat: &mut Chat<'a>) -> Option<()> {
    r.object(|r, key| {
        match key.as_ref() {
            "id" => chat.id = r.opt_string()?,
            "state" => chat.state = r.opt_string()?.map(|s| ChatState::from(&*s)),
            "capabilities" => {
                chat.capabilities = if r.null() {
                    None
                } else {
                    let mut capabilities = Vec::with_capacity(8);
                    r.array(|r| {
                        capabilities.push(Capability::from(&*r.string()?));
                        Some(())
                    })?;
                    Some(capabilities)
                };
            }
            "participants" => {
                chat.participants = if r.null() {
                    None
                } else {
                    let mut participants = Vec::with_capacity(2);
                    r.array(|r| {
                        participants.push(participant(r)?);
                        Some(())
                    })?;
                    Some(participants)
                };
            }
            "userData" => chat.user_data = opt_map(r)?,
            "uri" => chat.uri = r.opt_string()?,
            _ => {
                r.skip()?;
            }
        }
        Some(())
    })
}

fn participant(r: &mut Reader<'_>) -> Option<Participant> {
    let mut participant = Participant {
        nickname: None,
        participant_type: None,
        participant_id: None,
        extra: Map::new(),
    };
    r.object(|r, key| {
        match key.as_ref() {
            "nickname" => participant.nickname = r.opt_string()?.map(Cow::into_owned),
            "type" => {
                participant.participant_type = r.opt_string()?.map(|s| ParticipantType::from(&*s));
            }
            "participantId" => {
                participant.participant_id = r.opt_string()?.map(Cow::into_owned);
            }
            _ => {
                participant.extra.insert(key.into_owned(), r.value()?);
            }
        }
        Some(())
    })?;
    Some(participant)
}

impl Chat<'_> {
    /// The chat id: `id` unless empty, else the last segment of `uri`.
    fn chat_id(id: Option<Cow<'_, str>>, uri: Option<&str>) -> Option<String> {
        id.filter(|id| !id.is_empty())
            .map(Cow::into_owned)
            .or_else(|| uri.and_then(last_path_segment).map(str::to_owned))
    }

    fn into_chat(self) -> super::Chat {
        let uri = self.uri.map(Cow::into_owned);
        super::Chat {
            id: Self::chat_id(self.id, uri.as_deref()),
            state: self.state,
            capabilities: self.capabilities,
            participants: self.participants,
            user_data: self.user_data,
            uri,
        }
    }
}

/// The chat id of a transcript update or an error without a chat: from `chatPath`, else
/// `chatUri`.
fn id_from_path_or_uri(path: Option<&str>, uri: Option<&str>) -> Option<String> {
    path.and_then(last_path_segment)
        .or_else(|| uri.and_then(last_path_segment))
        .map(str::to_owned)
}

fn error(root: &mut Root<'_>, message_type: Option<&str>) -> ErrorNotification {
    let chat_id = match root.chat.take() {
        Some(chat) => Chat::chat_id(chat.id, chat.uri.as_deref()),
        None => id_from_path_or_uri(root.chat_path.as_deref(), root.chat_uri.as_deref()),
    };
    ErrorNotification {
        message_type: message_type.map(str::to_owned),
        error_message: root.error_message.take().map(Cow::into_owned),
        reference_id: root.reference_id.take(),
        chat_id,
    }
}

/// Reads `text` as one notification object into `into`; `None` unless it is exactly that.
fn whole<'a>(text: &'a str, into: &mut Root<'a>) -> Option<()> {
    let mut r = Reader::new(text);
    root(&mut r, into)?;
    r.at_end().then_some(())
}

/// The notification, or `None` when the text is not in the expected shape.
pub(super) fn decode(data: &RawValue) -> Option<Notification> {
    let mut outer = Root::default();
    whole(data.get(), &mut outer)?;
    let mut inner = Root::default();
    let root = match outer.data {
        Some(text)
            if outer.message_type.is_none()
                && outer.notification_type.is_none()
                && text.starts_with('{') =>
        {
            whole(text, &mut inner)?;
            if inner.message_type.is_some() || inner.notification_type.is_some() {
                &mut inner
            } else {
                &mut outer
            }
        }
        _ => &mut outer,
    };
    let is_error = root.notification_type == Some(NotificationType::Error);
    Some(match root.message_type.as_deref() {
        Some(CHAT_STATE_CHANGE_MESSAGE) if root.chat.is_none() && is_error => {
            Notification::Error(error(root, Some(CHAT_STATE_CHANGE_MESSAGE)))
        }
        Some(CHAT_STATE_CHANGE_MESSAGE) => Notification::ChatStateChange(ChatStateChange {
            notification_type: root.notification_type.take(),
            chat: root
                .chat
                .take()
                .map_or_else(super::Chat::default, Chat::into_chat),
            reference_id: root.reference_id.take(),
            error_message: root.error_message.take().map(Cow::into_owned),
        }),
        Some(MESSAGE_LOG_UPDATED) => Notification::MessageLogUpdated(MessageLogUpdated {
            notification_type: root.notification_type.take(),
            chat_id: id_from_path_or_uri(root.chat_path.as_deref(), root.chat_uri.as_deref()),
            chat_uri: root.chat_uri.take().map(Cow::into_owned),
            messages: root.messages.take().unwrap_or_default(),
            reference_id: root.reference_id.take(),
        }),
        Some(_) => Notification::Other {
            message_type: root.message_type.take().map(Cow::into_owned),
        },
        None if is_error => Notification::Error(error(root, None)),
        None => Notification::Other { message_type: None },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;
    use serde_json::Value;

    use crate::gws::notification::{decode, decode_raw, DecodeError};

    /// `decode_raw` on `text` must give what `decode` gives on the parsed value; `fast` says
    /// whether the typed reading must have handled it (no fallback to `decode`).
    fn same_as_decode(text: &str, fast: bool) {
        let raw = RawValue::from_string(text.to_owned()).expect("valid JSON");
        let value: Value = serde_json::from_str(text).expect("a value");
        assert_eq!(decode_raw(&raw), decode(&value), "{text}");
        assert_eq!(
            super::decode(&raw).is_some(),
            fast,
            "typed reading of {text}"
        );
    }

    #[test]
    fn raw_decoding_reads_every_fixture_like_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gws");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("fixtures") {
            let path = entry.expect("a fixture").path();
            let text = std::fs::read_to_string(&path).expect("a fixture");
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            // Every well-formed payload takes the typed path; malformed ones go to `decode`.
            same_as_decode(&text, !name.starts_with("malformed"));
            seen += 1;
        }
        assert!(seen >= 24, "{seen} fixtures");
    }

    #[test]
    fn raw_decoding_matches_decode_on_odd_and_malformed_payloads() {
        // (payload, whether the typed reading handles it itself)
        let cases = [
            // Shapes the typed reading handles.
            (r#"{}"#, true),
            (r#"{"messageType":null,"notificationType":null}"#, true),
            (r#"{"messageType":"DeviceStateChangeMessage","devices":"whatever","chat":{}}"#, true),
            (r#"{"notificationType":"StatusChange"}"#, true),
            (r#"{"notificationType":"Error","errorMessage":"x","referenceId":"35","chatUri":"http://h/api/v2/chats/C1"}"#, true),
            (r#"{"notificationType":"Error","chat":{"uri":"http://h/api/v2/chats/C7"},"chatPath":"/chats/P"}"#, true),
            (r#"{"messageType":"ChatStateChangeMessage","notificationType":"Error","errorMessage":"nope","chatPath":"/chats/C9"}"#, true),
            (r#"{"messageType":"ChatStateChangeMessage","notificationType":"Error","errorMessage":"nope","chat":{"id":"C9","state":"Chatting"}}"#, true),
            (r#"{"messageType":"ChatStateChangeMessage","referenceId":-7,"chat":{"id":"","uri":"http://h/api/v2/chats/U/?a=b"}}"#, true),
            (r#"{"messageType":"ChatStateChangeMessage","referenceId":9223372036854775807,"chat":null}"#, true),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"state":"Teleported","capabilities":["Leave","Fly"],"participants":[{"nickname":null,"visibility":"All","type":"Bot","x":[1,{"y":2}]}]}}"#, true),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"userData":{"b":1.5,"a":"x","c":null,"d":[true],"b":2}}}"#, true),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"id":"A"},"chat":{"id":"B"}}"#, true),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"id":"esc\"aped\u00e9\/","uri":"http:\/\/h\/api\/v2\/chats\/X"}}"#, true),
            (r#"{"message\u0054ype":"ChatStateChangeMessage","chat":{"id":"K"}}"#, true),
            (r#"{"messageType":"MessageLogUpdated","chatPath":"/chats/P","messages":[{"index":1},{"type":"Text","text":"hi"}],"referenceId":3}"#, true),
            (r#"{"messageType":"MessageLogUpdated","chatUri":"http://h/api/v2/chats/U","messages":null}"#, true),
            (r#"{"data":{"messageType":"ChatStateChangeMessage","chat":{"id":"W"}}}"#, true),
            (r#"{"data":{"notificationType":"Error","errorMessage":"inner"},"other":1}"#, true),
            (r#"{"data":{"x":1}}"#, true),
            (r#"{"data":null}"#, true),
            (r#"{"messageType":"Outer","data":{"messageType":"ChatStateChangeMessage"}}"#, true),
            (r#"{"data":{"data":{"messageType":"ChatStateChangeMessage"}}}"#, true),
            (" {\n \"messageType\" : \"ChatStateChangeMessage\" ,\r\n\t\"chat\" : { \"id\" : \"S\" } } ", true),
            // Everything else is left to `decode` (errors with paths, odd values).
            (r#"[]"#, false),
            (r#"[1,2]"#, false),
            (r#"null"#, false),
            (r#""s""#, false),
            (r#"{"data":1}"#, true),
            (r#"{"data":[]}"#, true),
            (r#"{"messageType":7}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":"X"}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":[]}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","notificationType":"Error","chat":[]}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","notificationType":1}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"capabilities":"Leave"}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"capabilities":["Leave",3]}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"capabilities":["Leave",null]}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"participants":{}}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"participants":[{},"p"]}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"participants":[["a"]]}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"participants":[{"nickname":5}]}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"participants":[{"nickname":5,"nickname":"ok"}]}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"userData":[]}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"id":12}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chat":{"state":true}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","errorMessage":{}}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","referenceId":1.5}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","referenceId":18.0}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","referenceId":-0}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","referenceId":18446744073709551615}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","referenceId":true}"#, false),
            (r#"{"messageType":"ChatStateChangeMessage","chatPath":5}"#, false),
            (r#"{"messageType":"MessageLogUpdated","messages":{}}"#, false),
            (r#"{"messageType":"MessageLogUpdated","messages":[{},1]}"#, false),
            (r#"{"messageType":"MessageLogUpdated","chatUri":1}"#, false),
            (r#"{"notificationType":"Error","errorMessage":1}"#, false),
            (r#"{"data":{"messageType":"ChatStateChangeMessage","chat":1}}"#, false),
            (r#"{"messageType":"Other","chat":"unread but not an object"}"#, false),
        ];
        for (text, fast) in cases {
            same_as_decode(text, fast);
        }
    }

    #[test]
    fn raw_data_a_value_cannot_hold_is_reported() {
        for text in [
            r#"{"messageType":"ChatStateChangeMessage","chat":{"userData":{"n":1e400}}}"#,
            r#"{"messageType":"ChatStateChangeMessage","chat":{"id":"\ud800"}}"#,
            // G2 (issue 16): in fields the model skips, too.
            r#"{"messageType":"ChatStateChangeMessage","chat":{"id":"c1"},"x":1e400}"#,
            r#"{"messageType":"ChatStateChangeMessage","chat":{"id":"c1","x":"\ud800"}}"#,
            r#"{"messageType":"ChatStateChangeMessage","chat":{"x":[{"y":-1e999}]}}"#,
            r#"{"messageType":"Other","x":{"\udc00":1}}"#,
        ] {
            let raw = RawValue::from_string(text.to_owned()).expect("valid JSON text");
            assert!(
                matches!(decode_raw(&raw), Err(DecodeError::InvalidJson { .. })),
                "{text}"
            );
        }
    }
}
