//! Genesys Web Services: the typed notification model and its decoders ([`notification`], with the
//! fast text decoder in its own file), the session of one agent account (login, CSRF, state
//! recovery, re-login: [`session`]) and the chat operations with their validation ([`operations`]).
//! Nothing here knows about sinks; the session hands its snapshots up through a `From` bound.

pub mod notification;
pub mod operations;

pub use notification::{decode, decode_raw, DecodeError, Notification};
pub mod session;
