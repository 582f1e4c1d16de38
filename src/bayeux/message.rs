//! Bayeux messages as a client reads them: lenient parsing of response bodies (an array or a
//! single object), the fields a client acts on, advice, and the `code:args:message` error string.
//!
//! Parsing is deliberately forgiving about what it does not need (unknown fields, ids that are
//! numbers, advice nested per transport) and strict only where a wrong guess would lose events:
//! a message without a `channel` is reported, never guessed at.

use serde_json::{Map, Value};

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
    /// `data` (deliveries).
    pub data: Option<Value>,
    /// `ext`.
    pub ext: Option<Value>,
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

    fn from_object(
        index: usize,
        mut obj: Map<String, Value>,
        transport: &str,
    ) -> Result<Message, ParseError> {
        let channel = match obj.remove("channel") {
            Some(Value::String(c)) => c,
            _ => return Err(ParseError::NoChannel { index }),
        };
        let id = match obj.remove("id") {
            Some(Value::String(s)) => Some(s),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let successful = match obj.get("successful") {
            Some(Value::Bool(b)) => Some(*b),
            Some(Value::String(s)) => Some(s.eq_ignore_ascii_case("true")),
            Some(_) => Some(false),
            None => None,
        };
        let error = obj
            .get("error")
            .and_then(Value::as_str)
            .map(BayeuxError::parse);
        let advice = obj
            .get("advice")
            .and_then(|a| Advice::from_value(a, transport));
        let client_id = match obj.remove("clientId") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let subscription = match obj.remove("subscription") {
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        let supported_connection_types = match obj.remove("supportedConnectionTypes") {
            Some(Value::Array(items)) => Some(
                items
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::String(s) => Some(s),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        };
        Ok(Message {
            channel,
            id,
            successful,
            error,
            advice,
            client_id,
            subscription,
            supported_connection_types,
            data: obj.remove("data"),
            ext: obj.remove("ext"),
        })
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
pub fn parse_response(body: &[u8], transport: &str) -> Result<Parsed, ParseError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Object(obj) => vec![Value::Object(obj)],
        _ => return Err(ParseError::NotMessages),
    };
    let mut parsed = Parsed::default();
    for (index, item) in items.into_iter().enumerate() {
        match item {
            Value::Object(obj) => match Message::from_object(index, obj, transport) {
                Ok(m) => parsed.messages.push(m),
                Err(e) => parsed.invalid.push(e),
            },
            _ => parsed.invalid.push(ParseError::NotAnObject { index }),
        }
    }
    Ok(parsed)
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
}
