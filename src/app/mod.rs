//! The commands behind the CLI: checking a configuration (`check`), chat operations (`chat`), the
//! journal and dead-letter views (`journal`, `deadletter`), the audit chain check (`audit`), the
//! simulator (`sim`) and the demo (`demo`), plus the command line's clap definitions ([`cli`]).
//! `main.rs` only parses arguments, installs logging and signals, and calls these, so everything
//! here is reachable from tests. Errors are `thiserror` types; `anyhow` stays in `main.rs`.

pub mod audit;
pub mod chat;
pub mod check;
pub mod cli;
pub mod deadletter;
pub mod demo;
pub mod journal;
pub mod sim;
