//! [`RawJson`]: a JSON value kept as the text it arrived as.
//!
//! A delivery's `data` travels from the Bayeux response to the event record without ever being
//! turned into a [`serde_json::Value`]: parsing a 600-byte notification into a `Value` tree,
//! cloning it and serialising it again cost more than everything else on the per-event path, and
//! an auditor is better served by the exact bytes the server sent than by a re-serialised copy
//! (keys re-ordered, numbers and escapes rewritten). GWS decoding reads typed fields straight from
//! the text (see [`crate::gws::notification::decode_raw`]).

use std::fmt;

pub(crate) mod reader;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// One JSON value (object, array, string, ...) kept as its original text.
///
/// The text is exactly what was received, with one exception: when it contains line breaks (which
/// in JSON can only be whitespace between tokens), all whitespace between tokens is removed, so a
/// record that embeds it always fits on one line (JSON Lines sinks rely on that). Text without a
/// line break is kept byte for byte, spaces included.
///
/// Equality and hashing compare the text: the same JSON written with other whitespace, key order,
/// escapes or number spellings is *not* equal. [`RawJson::to_value`] parses it when a tree is
/// needed.
///
/// It serialises as the JSON it holds (verbatim, not as a string). It deserialises only with
/// `serde_json` (from text or from a `Value`), the one format chatwatch reads records in.
#[derive(Clone)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Copies `raw` (for instance a value borrowed from a response body), removing whitespace
    /// between tokens if the text has line breaks (see the type documentation).
    pub fn from_raw(raw: &RawValue) -> RawJson {
        match single_line(raw.get()) {
            Some(compact) => RawJson(compact),
            None => RawJson(raw.to_owned()),
        }
    }

    /// The compact JSON of `value` (object keys in the `Value`'s order, which is sorted).
    pub fn from_value(value: &Value) -> RawJson {
        // Serialising a `Value` cannot fail (its keys are strings); the fallback is unreachable
        // and only avoids a panic path.
        RawJson(serde_json::value::to_raw_value(value).unwrap_or_else(|_| null()))
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// The text as a [`RawValue`], to deserialise typed structures from.
    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    /// The boxed [`RawValue`].
    pub fn into_raw(self) -> Box<RawValue> {
        self.0
    }

    /// Parses the text into a [`Value`]. Fails only when the text is valid JSON that a `Value`
    /// cannot hold: a number out of the `f64` range (`1e400`) or an escaped lone surrogate
    /// (`"\ud800"`), both of which a raw value accepts.
    pub fn to_value(&self) -> serde_json::Result<Value> {
        serde_json::from_str(self.0.get())
    }
}

/// The JSON `null`, as a raw value.
fn null() -> Box<RawValue> {
    RawValue::NULL.to_owned()
}

/// `text` without whitespace between tokens, when it contains a line break; `None` otherwise
/// (the common case, found without copying).
fn single_line(text: &str) -> Option<Box<RawValue>> {
    memchr::memchr2(b'\n', b'\r', text.as_bytes())?;
    let mut compact = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if matches!(c, ' ' | '\t' | '\n' | '\r') {
            continue;
        } else if c == '"' {
            in_string = true;
        }
        compact.push(c);
    }
    // Removing whitespace between the tokens of valid JSON leaves valid JSON; should that ever
    // not hold, the original text is kept rather than anything lost.
    RawValue::from_string(compact).ok()
}

impl From<Value> for RawJson {
    fn from(value: Value) -> Self {
        RawJson::from_value(&value)
    }
}

impl From<&Value> for RawJson {
    fn from(value: &Value) -> Self {
        RawJson::from_value(value)
    }
}

impl From<Box<RawValue>> for RawJson {
    fn from(raw: Box<RawValue>) -> Self {
        match single_line(raw.get()) {
            Some(compact) => RawJson(compact),
            None => RawJson(raw),
        }
    }
}

impl From<&RawValue> for RawJson {
    fn from(raw: &RawValue) -> Self {
        RawJson::from_raw(raw)
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

impl std::hash::Hash for RawJson {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.get().hash(state);
    }
}

impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RawJson").field(&self.get()).finish()
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.get())
    }
}

impl Serialize for RawJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for RawJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(RawJson::from)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("valid JSON")
    }

    #[test]
    fn text_is_kept_verbatim_without_line_breaks() {
        let text = r#"{ "b": 1.50, "a": "x\u0041\/y",  "c" : [1, 2] }"#;
        let data = RawJson::from(raw(text));
        assert_eq!(data.get(), text);
        assert_eq!(
            data.to_value().expect("a value"),
            json!({"a": "xA/y", "b": 1.5, "c": [1, 2]})
        );
        assert_eq!(serde_json::to_string(&data).expect("serialise"), text);
    }

    #[test]
    fn line_breaks_are_removed_with_all_whitespace_between_tokens() {
        let text = "{\r\n  \"a\" : \"two  words \\\" \\\\\",\n\t\"b\": [ 1 ,\n 2 ]\n}";
        let data = RawJson::from_raw(&raw(text));
        assert_eq!(data.get(), r#"{"a":"two  words \" \\","b":[1,2]}"#);
        assert_eq!(
            data.to_value().expect("a value"),
            serde_json::from_str::<Value>(text).expect("a value")
        );
    }

    #[test]
    fn values_serialise_compactly_and_equality_is_textual() {
        let data = RawJson::from(json!({"b": [1, null], "a": "x"}));
        assert_eq!(data.get(), r#"{"a":"x","b":[1,null]}"#);
        assert_eq!(data, RawJson::from(raw(r#"{"a":"x","b":[1,null]}"#)));
        assert_ne!(data, RawJson::from(raw(r#"{"b":[1,null],"a":"x"}"#)));
        assert_eq!(data.to_string(), data.get());
    }

    #[test]
    fn round_trips_through_serde_json_text_and_values() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Record {
            data: RawJson,
        }
        let record = Record {
            data: RawJson::from(raw(r#"{"z": 1, "a": [true]}"#)),
        };
        let line = serde_json::to_string(&record).expect("serialise");
        assert_eq!(line, r#"{"data":{"z": 1, "a": [true]}}"#);
        let back: Record = serde_json::from_str(&line).expect("deserialise");
        assert_eq!(back, record);
        let from_value: Record =
            serde_json::from_value(json!({"data": {"z": 1}})).expect("deserialise");
        assert_eq!(from_value.data.get(), r#"{"z":1}"#);
    }

    #[test]
    fn values_a_tree_cannot_hold_are_kept_and_reported_on_parse() {
        for text in [r#"{"n":1e400}"#, r#"{"s":"\ud800"}"#] {
            let data = RawJson::from(raw(text));
            assert_eq!(data.get(), text);
            assert!(data.to_value().is_err(), "{text}");
        }
    }
}
