//! The harness the integration tests share, one module per job. Every peer is real and on
//! 127.0.0.1: [`faye`] the Faye Bayeux server, [`sim`] the GWS simulator, [`daemon`] the real
//! binary; [`ports`] free ports and waits with deadlines; [`events`] the one sample event
//! builder; [`metrics`] cumulative counters read from a local recorder.
//!
//! The items most tests need are re-exported here (`use crate::support::{Daemon, Faye, ...}`).

#![allow(dead_code)]

pub mod daemon;
pub mod events;
pub mod faye;
pub mod metrics;
pub mod ports;
pub mod schema;
pub mod sim;

pub use daemon::{tail, Daemon};
pub use faye::{assert_sequence, Faye};
pub use ports::{free_port, wait_until, DEADLINE};
