//! What a sink receives for one journal record: the event's JSON exactly as the pipeline wrote
//! it, and the [`Event`] decoded from it only when someone asks.
//!
//! An event is serialised once, when it enters the journal (`serde_json::to_vec`, one compact
//! JSON object without a line break). The file, audit, webhook and NATS sinks write or post
//! those bytes as they are, so reading the journal costs them no decode and no second encoding;
//! a sink that needs fields (the log sink's human line, NATS headers and subjects) or a
//! non-empty filter decodes them, at most once per record per sink ([`Record::event`]). The
//! webhook needs only the `event_id` (its `webhook-id`), which [`Record::event_id`] reads
//! without decoding the event.
//!
//! What a sink needs is declared by [`Deliver::needs`](super::deliver::Deliver::needs); the
//! runner ([`crate::delivery`]) decodes what is needed before the batch is handed over, and
//! skips (counting `chatwatch_sink_unreadable_records_total`) a record that cannot give it, so
//! a sink may rely on what it declared.

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::Deserialize;

use crate::event::Event;

/// One journal record as a sink receives it: the event's JSON bytes, decoded lazily.
#[derive(Debug)]
pub struct Record {
    /// The journal payload: the event's JSON as the pipeline wrote it (no trailing newline).
    json: Bytes,
    /// The decoded event, once someone asked for it (or the error, so it is not retried); boxed,
    /// so that a record a sink never decodes stays small.
    event: OnceLock<Result<Box<Event>, RecordError>>,
    /// The `event_id`, once asked for without decoding the whole event.
    id: OnceLock<Result<Box<str>, RecordError>>,
}

/// Why a record cannot give what a sink asks of it: its bytes are not an event this version
/// reads (the journal's CRC held, so they are what some version wrote).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(String);

impl Record {
    /// A record of the journal payload `json` (nothing is decoded yet).
    pub fn new(json: impl Into<Bytes>) -> Self {
        Self {
            json: json.into(),
            event: OnceLock::new(),
            id: OnceLock::new(),
        }
    }

    /// The record the journal would hold for `event` (its `serde_json::to_vec`), already
    /// decoded. For tests and benchmarks that hand events to sinks directly.
    pub fn from_event(event: Event) -> Self {
        // An `Event` always serialises (string keys only).
        let json = serde_json::to_vec(&event).unwrap_or_default();
        let record = Self::new(json);
        let _ = record.event.set(Ok(Box::new(event)));
        record
    }

    /// The event's JSON exactly as the journal holds it: one object, no trailing newline.
    pub fn json(&self) -> &Bytes {
        &self.json
    }

    /// The event, decoded from the bytes on the first call (and kept).
    pub fn event(&self) -> Result<&Event, &RecordError> {
        self.event
            .get_or_init(|| {
                serde_json::from_slice(&self.json).map_err(|e| RecordError(e.to_string()))
            })
            .as_deref()
    }

    /// Whether the event has been decoded (see [`Record::event`]).
    pub fn is_decoded(&self) -> bool {
        self.event.get().is_some()
    }

    /// The event's `event_id`: from the decoded event if there is one, else read from the bytes
    /// without decoding the rest (the pipeline writes it second, after `schema`).
    pub fn event_id(&self) -> Result<&str, &RecordError> {
        if let Some(Ok(event)) = self.event.get() {
            return Ok(&event.event_id);
        }
        self.id
            .get_or_init(|| read_id(&self.json).map(Box::from))
            .as_deref()
    }

    /// The `event_id`, or `""` when it cannot be read (for log lines only: the runner does not
    /// hand such a record to a sink that declared it needs the id).
    pub fn id_or_empty(&self) -> &str {
        self.event_id().unwrap_or("")
    }

    /// The bytes to write as one line (without the newline): the payload itself, or, for a
    /// payload with a line break in it (which `serde_json::to_vec` never writes, but a record
    /// from elsewhere might hold), the decoded event encoded again.
    pub fn line(&self) -> Result<Cow<'_, [u8]>, RecordError> {
        if memchr::memchr(b'\n', &self.json).is_none() {
            return Ok(Cow::Borrowed(&self.json));
        }
        let event = self.event().map_err(Clone::clone)?;
        serde_json::to_vec(event)
            .map(Cow::Owned)
            .map_err(|e| RecordError(e.to_string()))
    }
}

/// Reads the top-level `event_id` of an event's JSON: straight from the prefix the pipeline
/// writes (`{"schema":"…","event_id":"…"`, an id with nothing to unescape), else with a serde
/// pass that skips every other field without allocating.
fn read_id(json: &[u8]) -> Result<String, RecordError> {
    if let Some(id) = fast_id(json) {
        return Ok(id.to_owned());
    }
    #[derive(Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        event_id: Cow<'a, str>,
    }
    serde_json::from_slice::<Id<'_>>(json)
        .map(|id| id.event_id.into_owned())
        .map_err(|e| RecordError(e.to_string()))
}

/// The id from the pipeline's prefix, when the record starts with it and the id needs no
/// unescaping.
fn fast_id(json: &[u8]) -> Option<&str> {
    let rest = json.strip_prefix(b"{\"schema\":\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    let rest = rest[end..].strip_prefix(b"\",\"event_id\":\"")?;
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    if rest[end] != b'"' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            schema: crate::event::SCHEMA.to_owned(),
            event_id: "0193a0f4-0000-7000-8000-000000000001".to_owned(),
            fingerprint: "cd".repeat(16),
            received_at: time::OffsetDateTime::UNIX_EPOCH,
            account: "agent1".to_owned(),
            channel: "/v2/me/chats".to_owned(),
            kind: crate::event::EventKind::ChatState,
            message_type: Some("ChatStateChangeMessage".to_owned()),
            notification_type: None,
            reference_id: None,
            chat: None,
            messages: None,
            error_message: None,
            decode_error: None,
            recovered: false,
            disposition: None,
            pending: None,
            action: None,
            data: serde_json::json!({"text": "line\nbreak \"quoted\" é"}).into(),
        }
    }

    #[test]
    fn bytes_are_the_payload_and_nothing_is_decoded_until_asked() {
        let json = serde_json::to_vec(&event()).unwrap();
        let record = Record::new(json.clone());
        assert_eq!(&record.json()[..], &json[..]);
        assert_eq!(&*record.line().unwrap(), &json[..]);
        assert_eq!(record.event_id().unwrap(), event().event_id);
        assert!(
            !record.is_decoded(),
            "reading the id must not decode the event"
        );
        assert_eq!(record.event().unwrap(), &event());
        assert!(record.is_decoded());
    }

    #[test]
    fn the_id_is_read_without_the_prefix_too() {
        let value = serde_json::to_value(event()).unwrap();
        // A `Value` writes its keys sorted: `event_id` is not second any more.
        let json = serde_json::to_vec(&value).unwrap();
        assert!(fast_id(&json).is_none());
        let record = Record::new(json);
        assert_eq!(record.event_id().unwrap(), event().event_id);
        assert!(
            Record::new(&b"{\"schema\":\"x\",\"event_id\":\"a\\u0062\"}"[..])
                .event_id()
                .is_ok_and(|id| id == "ab")
        );
    }

    #[test]
    fn an_unreadable_record_says_so_and_keeps_saying_so() {
        let record = Record::new(&b"{\"schema\":\"chatwatch.event.v1\"}"[..]);
        assert!(record.event().is_err());
        assert!(record.event().is_err());
        assert!(record.event_id().is_err());
        assert_eq!(record.id_or_empty(), "");
    }

    #[test]
    fn a_payload_with_a_line_break_is_written_as_one_line() {
        let mut text = serde_json::to_string(&event()).unwrap();
        text = text.replacen(",\"event_id\"", ",\n\"event_id\"", 1);
        let record = Record::new(text.into_bytes());
        let line = record.line().unwrap();
        assert!(!line.contains(&b'\n'));
        assert_eq!(line.into_owned(), serde_json::to_vec(&event()).unwrap());
    }
}
