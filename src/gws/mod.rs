//! Genesys Web Services: the typed notification model and its decoder (and, later, the GWS session
//! and the chat operations). Nothing here knows about sinks or about how notifications travel.

pub mod notification;
pub mod operations;

pub use notification::{decode, decode_raw, DecodeError, Notification};
pub mod session;
