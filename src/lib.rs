//! chatwatch: a daemon that listens to Genesys Web Services (GWS) CometD notifications and
//! delivers every chat state change, typed, to pluggable sinks.
//!
//! (architecture essay: filled in below once the pieces land)

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod backoff;
pub mod bayeux;
pub mod channel;
pub mod delivery;
pub mod event;
pub mod fs;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gws;
pub mod http;
pub mod journal;
pub mod json;
pub mod metrics;
pub mod pipeline;
pub mod secret;
pub mod service;
pub mod signal;
pub mod sim;
pub mod sinks;
pub mod tracker;
