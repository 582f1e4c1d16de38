//! Bayeux messages as a client reads them: lenient parsing of response bodies (an array or a
//! single object), the fields a client acts on, advice, and the `code:args:message` error string.
//!
//! Parsing is deliberately forgiving about what it does not need (unknown fields, ids that are
//! numbers, advice nested per transport) and strict only where a wrong guess would lose events:
//! a message without a `channel` is reported, never guessed at.

use serde_json::{Map, Value};

use crate::json::RawJson;

/// Why a response body, or one message in it, could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body is not JSON.
    #[error("response body is not JSON: {0}")]
    NotJson(String),
    /// The body is JSON but neither an array nor an object.
    #[error("response body is JSON but neither an array nor an object")]
    NotMessages,
    /// An element of the array is not an object.
    #[error("message #{index} is not a JSON object")]
    NotAnObject {
        /// Position in the response array.
        index: usize,
    },
    /// A message has no string `channel`.
    #[error("message #{index} has no channel")]
    NoChannel {
        /// Position in the response array.
        index: usize,
    },
}

/// What the server asks the client to do next (`advice.reconnect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconnect {
    /// Send `/meta/connect` again after `interval`.
    Retry,
    /// The session is gone: handshake again, never retry the connect.
    Handshake,
    /// Hard failure: do not retry or handshake automatically.
    None,
    /// A value this client does not know (treated like `retry`).
    Other(String),
}

/// Advice as received in one reply; absent fields are `None`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Advice {
    /// `reconnect`.
    pub reconnect: Option<Reconnect>,
    /// `interval` in ms; negative means "do not retry".
    pub interval: Option<i64>,
    /// `timeout` in ms: how long the server holds a connect.
    pub timeout: Option<u64>,
    /// `maxInterval` in ms: how long the server keeps a session without a connect.
    pub max_interval: Option<u64>,
    /// `multiple-clients`: the server saw several sessions share one browser cookie.
    pub multiple_clients: bool,
}

impl Advice {
    fn from_value(value: &Value, transport: &str) -> Option<Advice> {
        let obj = value.as_object()?;
        let mut advice = Advice::default();
        advice.merge(obj);
        // Per-transport sections (`"long-polling": {...}`) override the general fields.
        if let Some(section) = obj.get(transport).and_then(Value::as_object) {
            advice.merge(section);
        }
        Some(advice)
    }

    fn merge(&mut self, obj: &Map<String, Value>) {
        if let Some(r) = obj.get("reconnect").and_then(Value::as_str) {
            self.reconnect = Some(match r {
                "retry" => Reconnect::Retry,
                "handshake" => Reconnect::Handshake,
                "none" => Reconnect::None,
                other => Reconnect::Other(other.to_owned()),
            });
        }
        if let Some(i) = obj.get("interval").and_then(as_i64) {
            self.interval = Some(i);
        }
        if let Some(t) = obj.get("timeout").and_then(as_i64) {
            self.timeout = Some(t.max(0) as u64);
        }
        if let Some(m) = obj.get("maxInterval").and_then(as_i64) {
            self.max_interval = Some(m.max(0) as u64);
        }
        if let Some(b) = obj.get("multiple-clients").and_then(Value::as_bool) {
            self.multiple_clients = b;
        }
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().map(|f| f as i64))
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A Bayeux `error` string, `code:args:message` (e.g. `402::Unknown client`), read best-effort.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BayeuxError {
    /// The full string as received.
    pub raw: String,
    /// The three-digit code, when the string starts with one.
    pub code: Option<u16>,
}

impl BayeuxError {
    /// Parses an error string; never fails.
    pub fn parse(raw: &str) -> BayeuxError {
        let code = raw
            .split(':')
            .next()
            .map(str::trim)
            .filter(|c| c.len() == 3)
            .and_then(|c| c.parse().ok());
        BayeuxError {
            raw: raw.to_owned(),
            code,
        }
    }

    /// Whether this error says the server does not know the session: 401/402/403 together with
    /// "unknown client", "session_unknown" or "unknown session" (Faye, CometD 2 and 3, GWS,
    /// Salesforce). Used only when the reply carries no advice.
    pub fn is_unknown_session(&self) -> bool {
        let lower = self.raw.to_ascii_lowercase();
        matches!(self.code, Some(401..=403))
            && (lower.contains("unknown client")
                || lower.contains("session_unknown")
                || lower.contains("unknown session"))
    }
}

impl std::fmt::Display for BayeuxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

/// One message of a response, with the fields a client acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `channel`.
    pub channel: String,
    /// `id`, as a string (numbers are converted).
    pub id: Option<String>,
    /// `successful`: its presence makes the message a reply.
    pub successful: Option<bool>,
    /// `error`, when present.
    pub error: Option<BayeuxError>,
    /// `advice`, when present.
    pub advice: Option<Advice>,
    /// `clientId`.
    pub client_id: Option<String>,
    /// `subscription`, as a list (a single string becomes one element).
    pub subscription: Vec<String>,
    /// `supportedConnectionTypes` (handshake replies).
    pub supported_connection_types: Option<Vec<String>>,
    /// `data` (deliveries), as the text the server sent (any JSON value, `null` included).
    pub data: Option<RawJson>,
    /// `ext`, as the text the server sent.
    pub ext: Option<RawJson>,
}

impl Message {
    /// Whether this message is a reply to a request (it carries `successful`).
    pub fn is_reply(&self) -> bool {
        self.successful.is_some()
    }

    /// Whether this reply reports success.
    pub fn is_success(&self) -> bool {
        self.successful == Some(true)
    }
}

/// The messages of one response body, plus the elements that could not be read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// Messages in the order the server sent them.
    pub messages: Vec<Message>,
    /// Elements skipped because they were not messages.
    pub invalid: Vec<ParseError>,
}

/// Parses a response body: a JSON array of messages, or a single message object.
///
/// `transport` selects the per-transport advice section (`"long-polling"`, `"websocket"`).
/// Fails only when the body as a whole is unusable; a bad element is skipped and reported in
/// [`Parsed::invalid`].
///
/// The body is read in one pass straight into [`Message`]s (no intermediate `Value` tree); `data`
/// and `ext` are kept as their original text ([`RawJson`]), and `advice` is read only when present.
/// Every field is read leniently, so an odd field never makes the other messages unreadable.
pub fn parse_response(body: &[u8], transport: &str) -> Result<Parsed, ParseError> {
    let mut parsed = Parsed::default();
    let seed = wire::Body {
        parsed: &mut parsed,
        transport,
    };
    // Checking UTF-8 once up front lets serde_json borrow strings and `data` without checking
    // each of them again.
    let text = std::str::from_utf8(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let mut de = serde_json::Deserializer::from_str(text);
    let messages = serde::de::DeserializeSeed::deserialize(seed, &mut de)
        .and_then(|messages| de.end().map(|()| messages))
        .map_err(|e| ParseError::NotJson(e.to_string()))?;
    if !messages {
        return Err(ParseError::NotMessages);
    }
    Ok(parsed)
}

/// The response body as serde reads it, borrowing from the body, with the lenient rules of
/// [`parse_response`]: every field accepts any JSON value and is interpreted afterwards.
mod wire {
    use std::borrow::Cow;
    use std::fmt;

    use serde::de::{
        self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
    };
    use serde_json::value::RawValue;
    use serde_json::{Number, Value};

    use super::{Advice, BayeuxError, Message, ParseError, Parsed};
    use crate::json::RawJson;

    /// A message object's fields, as found. The last occurrence of a repeated key wins.
    #[derive(Default)]
    pub(super) struct WireMessage<'a> {
        channel: Scalar<'a>,
        id: Scalar<'a>,
        successful: Option<Scalar<'a>>,
        error: Scalar<'a>,
        advice: Option<Value>,
        client_id: Scalar<'a>,
        subscription: Strings,
        supported_connection_types: Strings,
        data: Option<&'a RawValue>,
        ext: Option<&'a RawValue>,
    }

    impl WireMessage<'_> {
        pub(super) fn into_message(
            self,
            index: usize,
            transport: &str,
        ) -> Result<Message, ParseError> {
            let Scalar::Str(channel) = self.channel else {
                return Err(ParseError::NoChannel { index });
            };
            let id = match self.id {
                Scalar::Str(s) => Some(s.into_owned()),
                Scalar::Number(n) => Some(n.to_string()),
                _ => None,
            };
            let successful = self.successful.map(|s| match s {
                Scalar::Bool(b) => b,
                Scalar::Str(s) => s.eq_ignore_ascii_case("true"),
                _ => false,
            });
            let error = match self.error {
                Scalar::Str(s) => Some(BayeuxError::parse(&s)),
                _ => None,
            };
            let client_id = match self.client_id {
                Scalar::Str(s) => Some(s.into_owned()),
                _ => None,
            };
            let subscription = match self.subscription {
                Strings::One(s) => vec![s],
                Strings::Many(items) => items,
                Strings::Neither => Vec::new(),
            };
            let supported_connection_types = match self.supported_connection_types {
                Strings::Many(items) => Some(items),
                Strings::One(_) | Strings::Neither => None,
            };
            Ok(Message {
                channel: channel.into_owned(),
                id,
                successful,
                error,
                advice: self.advice.and_then(|a| Advice::from_value(&a, transport)),
                client_id,
                subscription,
                supported_connection_types,
                data: self.data.map(RawJson::from_raw),
                ext: self.ext.map(RawJson::from_raw),
            })
        }
    }

    impl<'a> WireMessage<'a> {
        fn from_map<A: MapAccess<'a>>(mut map: A) -> Result<Self, A::Error> {
            let mut m = WireMessage::default();
            while let Some(key) = map.next_key::<Key<'a>>()? {
                match key.0.as_ref() {
                    "channel" => m.channel = map.next_value()?,
                    "id" => m.id = map.next_value()?,
                    "successful" => m.successful = Some(map.next_value()?),
                    "error" => m.error = map.next_value()?,
                    "advice" => m.advice = Some(map.next_value()?),
                    "clientId" => m.client_id = map.next_value()?,
                    "subscription" => m.subscription = map.next_value()?,
                    "supportedConnectionTypes" => {
                        m.supported_connection_types = map.next_value()?;
                    }
                    "data" => m.data = Some(map.next_value()?),
                    "ext" => m.ext = Some(map.next_value()?),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(m)
        }
    }

    /// An object key, borrowed unless it had escapes.
    struct Key<'a>(Cow<'a, str>);

    impl<'de> Deserialize<'de> for Key<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Key<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object key")
                }
                fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Borrowed(s)))
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                    Ok(Key(Cow::Owned(s.to_owned())))
                }
            }
            d.deserialize_str(V)
        }
    }

    /// A field value as far as a client cares: a string, a boolean, a number, or something else
    /// (`null`, an array, an object: skipped).
    #[derive(Default)]
    pub(super) enum Scalar<'a> {
        Str(Cow<'a, str>),
        Bool(bool),
        Number(Number),
        #[default]
        Other,
    }

    struct ScalarVisitor;

    impl<'de> Visitor<'de> for ScalarVisitor {
        type Value = Scalar<'de>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Scalar<'de>, E> {
            Ok(Scalar::Str(Cow::Borrowed(s)))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar<'de>, E> {
            Ok(Scalar::Str(Cow::Owned(s.to_owned())))
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scalar<'de>, E> {
            Ok(Scalar::Bool(b))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar<'de>, E> {
            Ok(Scalar::Number(n.into()))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar<'de>, E> {
            Ok(Scalar::Number(n.into()))
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar<'de>, E> {
            Ok(Number::from_f64(n).map_or(Scalar::Other, Scalar::Number))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
            Ok(Scalar::Other)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(Scalar::Other)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(Scalar::Other)
        }
    }

    impl<'de> Deserialize<'de> for Scalar<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(ScalarVisitor)
        }
    }

    /// A field that may be one string or an array (of which only the strings are kept).
    #[derive(Default)]
    pub(super) enum Strings {
        One(String),
        Many(Vec<String>),
        #[default]
        Neither,
    }

    impl<'de> Deserialize<'de> for Strings {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Strings;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any JSON value")
                }
                fn visit_str<E: de::Error>(self, s: &str) -> Result<Strings, E> {
                    Ok(Strings::One(s.to_owned()))
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<Strings, E> {
                    Ok(Strings::Neither)
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<Strings, E> {
                    Ok(Strings::Neither)
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<Strings, E> {
                    Ok(Strings::Neither)
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<Strings, E> {
                    Ok(Strings::Neither)
                }
                fn visit_unit<E: de::Error>(self) -> Result<Strings, E> {
                    Ok(Strings::Neither)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                    let mut items = Vec::new();
                    while let Some(item) = seq.next_element::<Scalar<'de>>()? {
                        if let Scalar::Str(s) = item {
                            items.push(s.into_owned());
                        }
                    }
                    Ok(Strings::Many(items))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strings, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Strings::Neither)
                }
            }
            d.deserialize_any(V)
        }
    }

    /// Reads a whole body into `parsed`, each message as it comes; yields whether the body was an
    /// array or an object (anything else holds no messages).
    pub(super) struct Body<'p> {
        pub(super) parsed: &'p mut Parsed,
        pub(super) transport: &'p str,
    }

    /// Reads one element (an object becomes a message) into `parsed`.
    struct Element<'p> {
        parsed: &'p mut Parsed,
        transport: &'p str,
        index: usize,
    }

    impl Element<'_> {
        fn push(self, message: WireMessage<'_>) {
            match message.into_message(self.index, self.transport) {
                Ok(m) => self.parsed.messages.push(m),
                Err(e) => self.parsed.invalid.push(e),
            }
        }

        fn not_an_object<E>(self) -> Result<bool, E> {
            self.parsed
                .invalid
                .push(ParseError::NotAnObject { index: self.index });
            Ok(false)
        }
    }

    impl<'de> DeserializeSeed<'de> for Body<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Body<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Bayeux messages")
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Ok(false)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            let mut index = 0;
            while seq
                .next_element_seed(Element {
                    parsed: &mut *self.parsed,
                    transport: self.transport,
                    index,
                })?
                .is_some()
            {
                index += 1;
            }
            Ok(true)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
            let message = WireMessage::from_map(map)?;
            Element {
                parsed: self.parsed,
                transport: self.transport,
                index: 0,
            }
            .push(message);
            Ok(true)
        }
    }

    impl<'de> DeserializeSeed<'de> for Element<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Element<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a Bayeux message")
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
            self.not_an_object()
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
            self.not_an_object()
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
            self.not_an_object()
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
            self.not_an_object()
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
            self.not_an_object()
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            self.not_an_object()
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            self.not_an_object()
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
            let message = WireMessage::from_map(map)?;
            self.push(message);
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_and_single_object_are_both_accepted() {
        let a = parse_response(
            br#"[{"channel":"/a","data":1},{"channel":"/b","data":2}]"#,
            "long-polling",
        )
        .unwrap();
        assert_eq!(a.messages.len(), 2);
        let o = parse_response(
            br#"{"channel":"/meta/connect","successful":true,"id":7}"#,
            "long-polling",
        )
        .unwrap();
        assert_eq!(o.messages.len(), 1);
        assert_eq!(o.messages[0].id.as_deref(), Some("7"));
        assert!(o.messages[0].is_reply());
    }

    #[test]
    fn garbage_bodies_are_errors_and_bad_elements_are_skipped() {
        assert!(matches!(
            parse_response(b"this is not json{{", "long-polling"),
            Err(ParseError::NotJson(_))
        ));
        assert_eq!(
            parse_response(b"42", "long-polling"),
            Err(ParseError::NotMessages)
        );
        let p = parse_response(
            br#"[1,{"data":{}},{"channel":"/x","data":{}}]"#,
            "long-polling",
        )
        .unwrap();
        assert_eq!(p.messages.len(), 1);
        assert_eq!(
            p.invalid,
            vec![
                ParseError::NotAnObject { index: 0 },
                ParseError::NoChannel { index: 1 }
            ]
        );
    }

    #[test]
    fn advice_is_read_with_transport_sections_and_string_numbers() {
        let p = parse_response(
            br#"[{"channel":"/meta/connect","successful":false,
                 "advice":{"reconnect":"retry","interval":"0","timeout":20000,"maxInterval":10000,
                           "multiple-clients":true,"long-polling":{"interval":2000},
                           "websocket":{"interval":99}}}]"#,
            "long-polling",
        )
        .unwrap();
        let advice = p.messages[0].advice.clone().unwrap();
        assert_eq!(advice.reconnect, Some(Reconnect::Retry));
        assert_eq!(advice.interval, Some(2000));
        assert_eq!(advice.timeout, Some(20000));
        assert_eq!(advice.max_interval, Some(10000));
        assert!(advice.multiple_clients);
    }

    #[test]
    fn unknown_session_errors_of_every_server_family_are_recognised() {
        for raw in [
            "401:abc123:Unknown client",
            "402::session_unknown",
            "402::Unknown client",
            "403::Unknown client",
        ] {
            assert!(BayeuxError::parse(raw).is_unknown_session(), "{raw}");
        }
        for raw in [
            "403::Handshake denied",
            "500::Unknown client",
            "Unknown client",
            "401::Authentication invalid",
        ] {
            assert!(!BayeuxError::parse(raw).is_unknown_session(), "{raw}");
        }
        assert_eq!(BayeuxError::parse("402::x").code, Some(402));
        assert_eq!(BayeuxError::parse("oops").code, None);
    }

    #[test]
    fn subscription_may_be_a_string_or_an_array() {
        let p = parse_response(
            br#"[{"channel":"/meta/subscribe","successful":true,"subscription":"/a"},
                 {"channel":"/meta/subscribe","successful":true,"subscription":["/b","/c/*"]}]"#,
            "long-polling",
        )
        .unwrap();
        assert_eq!(p.messages[0].subscription, vec!["/a"]);
        assert_eq!(p.messages[1].subscription, vec!["/b", "/c/*"]);
    }

    #[test]
    fn data_is_kept_as_text_and_null_data_is_still_data() {
        let p = parse_response(
            br#"[{"channel":"/a","data":{ "z" : [1, 2.50], "a" : "\u00e9" },"ext":{"k":1}},
                 {"channel":"/b","data":null}]"#,
            "long-polling",
        )
        .unwrap();
        let data = p.messages[0].data.as_ref().unwrap();
        assert_eq!(data.get(), r#"{ "z" : [1, 2.50], "a" : "\u00e9" }"#);
        assert_eq!(p.messages[0].ext.as_ref().unwrap().get(), r#"{"k":1}"#);
        assert_eq!(p.messages[1].data.as_ref().unwrap().get(), "null");
        assert!(!p.messages[1].is_reply());
    }

    #[test]
    fn fields_are_read_leniently_and_the_last_repeated_key_wins() {
        let p = parse_response(
            br#"[{"channel":"/meta/connect","id":7.5,"successful":null,"error":5,"clientId":[1]},
                 {"channel":"/meta/connect","id":-3,"successful":"TRUE","error":"402::x"},
                 {"channel":"/meta/handshake","successful":true,"clientId":"c1","id":{"n":1},
                  "supportedConnectionTypes":["long-polling",7,"websocket"],"subscription":{"x":1}},
                 {"channel":"/meta/handshake","successful":false,"supportedConnectionTypes":"long-polling",
                  "subscription":["/a",null,"/b"],"advice":[1]},
                 {"channel":5,"data":{}},
                 {"channel":"/x","channel":"/y","id":"1","id":"2","successful":false,"successful":true},
                 [1,[2]],
                 "s"]"#,
            "long-polling",
        )
        .unwrap();
        let m = &p.messages;
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].id.as_deref(), Some("7.5"));
        assert_eq!(
            m[0].successful,
            Some(false),
            "null counts as present and false"
        );
        assert_eq!((m[0].error.clone(), m[0].client_id.clone()), (None, None));
        assert_eq!(m[1].id.as_deref(), Some("-3"));
        assert!(m[1].is_success());
        assert_eq!(m[1].error.as_ref().and_then(|e| e.code), Some(402));
        assert_eq!(m[2].id, None);
        assert_eq!(m[2].client_id.as_deref(), Some("c1"));
        assert_eq!(
            m[2].supported_connection_types,
            Some(vec!["long-polling".to_owned(), "websocket".to_owned()])
        );
        assert!(m[2].subscription.is_empty());
        assert_eq!(m[3].supported_connection_types, None);
        assert_eq!(m[3].subscription, vec!["/a", "/b"]);
        assert_eq!(m[3].advice, None, "advice that is not an object is ignored");
        assert_eq!(m[4].channel, "/y");
        assert_eq!(m[4].id.as_deref(), Some("2"));
        assert!(m[4].is_success());
        assert_eq!(
            p.invalid,
            vec![
                ParseError::NoChannel { index: 4 },
                ParseError::NotAnObject { index: 6 },
                ParseError::NotAnObject { index: 7 },
            ]
        );
    }

    #[test]
    fn odd_bodies() {
        assert_eq!(
            parse_response(b" [ ] ", "long-polling"),
            Ok(Parsed::default())
        );
        for body in [&b"null"[..], b"\"s\"", b"true", b"-1.5"] {
            assert_eq!(
                parse_response(body, "long-polling"),
                Err(ParseError::NotMessages),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &b""[..],
            b"[{\"channel\":\"/a\"}] x",
            b"[{\"channel\":\"/a\"}",
            b"[{\"channel\":\"/a\",\"advice\":{\"timeout\":1e400}}]",
            b"[{\"channel\":\"/a\",\"data\":\"\xff\"}]",
        ] {
            assert!(
                matches!(
                    parse_response(body, "long-polling"),
                    Err(ParseError::NotJson(_))
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // `data` is valid JSON text even when a `Value` could not hold it: it is kept as it is
        // (the event builder reports it as undecodable).
        let p =
            parse_response(br#"[{"channel":"/a","data":{"n":1e400}}]"#, "long-polling").unwrap();
        assert_eq!(p.messages[0].data.as_ref().unwrap().get(), r#"{"n":1e400}"#);
    }
}
