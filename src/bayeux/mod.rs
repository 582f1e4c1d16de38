//! The Bayeux (CometD) client: a sans-I/O protocol state machine ([`protocol`]), the transports
//! that move its JSON arrays ([`transport`]), and the task that drives both for one session
//! ([`client`]). The rest of chatwatch only sees [`Delivery`] values coming out of it.

pub mod client;
pub mod message;
pub mod protocol;
pub mod transport;
pub mod websocket;

use crate::json::RawJson;

/// One message published by the server on a subscribed channel, as handed downstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The concrete channel the message was published on (never a glob).
    pub channel: String,
    /// The message's `data`, as the exact JSON text the server sent (see [`RawJson`] for the one
    /// normalisation: whitespace between tokens is dropped when the text has line breaks).
    pub data: RawJson,
    /// The delivery's Bayeux `id`, if the server sent one (the publisher's id; not unique).
    pub id: Option<String>,
    /// Wall-clock time when the response carrying it was read.
    pub received_at: time::OffsetDateTime,
}
