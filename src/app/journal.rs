//! `chatwatch journal status|tail`: read-only views of the durable journal named by a
//! configuration file (safe while the daemon runs).

use std::io::Write;
use std::path::Path;

use crate::journal::{self, JournalError};
use crate::service::config::{Config, ConfigError, Purpose};

/// Why a journal command failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalCommandError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The journal cannot be read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The output cannot be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// The status cannot be encoded.
    #[error("cannot encode the status: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Writes the journal's sizes, sequence numbers and each sink's backlog as pretty JSON.
pub fn status(config: &Path, out: &mut dyn Write) -> Result<(), JournalCommandError> {
    let cfg = Config::load_for(config, Purpose::Command)?;
    let status = journal::status_offline(&cfg.journal.dir)?;
    writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
    Ok(())
}

/// Writes the `lines` most recent events, one JSON line each, oldest first.
pub fn tail(config: &Path, lines: usize, out: &mut dyn Write) -> Result<(), JournalCommandError> {
    let cfg = Config::load_for(config, Purpose::Command)?;
    for (_, payload) in journal::tail_offline(&cfg.journal.dir, lines)? {
        out.write_all(&payload)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
