//! The commands behind the CLI that are more than "load the config and run the daemon": chat
//! operations (`chat`), the simulator (`sim`) and the demo (`demo`). `main.rs` only parses
//! arguments and calls these, so everything here is reachable from tests.

pub mod chat;
pub mod demo;
pub mod sim;
