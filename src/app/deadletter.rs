//! `chatwatch deadletter list|redrive`: the webhook sinks' dead letters, found through the
//! configuration file that names the sinks.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::service::config::{Config, ConfigError, Purpose};
use crate::sinks::webhook::{self, RedriveReport, WebhookSinkConfig};
use crate::sinks::{SinkConfig, SinkError};

/// Why a dead-letter command failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadletterError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No webhook sink of that name.
    #[error("no webhook sink `{sink}` in {}", file.display())]
    NoSuchSink {
        /// The name asked for.
        sink: String,
        /// The configuration file.
        file: PathBuf,
    },
    /// The sink has no dead-letter directory.
    #[error("the sink `{0}` has no dead_letter_dir")]
    NoDirectory(String),
    /// Reading or sending the dead letters failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The output cannot be written.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// A dead letter cannot be encoded.
    #[error("cannot encode a dead letter: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The webhook sinks of `cfg`, by name.
pub fn webhook_sinks(cfg: &Config) -> Vec<(&String, &WebhookSinkConfig)> {
    cfg.sinks
        .iter()
        .filter_map(|(name, sink)| match sink {
            SinkConfig::Webhook(w) => Some((name, w)),
            _ => None,
        })
        .collect()
}

/// Writes the dead letters (one JSON line each) of every webhook sink, or of `sink` only.
pub fn list(config: &Path, sink: Option<&str>, out: &mut dyn Write) -> Result<(), DeadletterError> {
    let cfg = Config::load_for(config, Purpose::Command)?;
    let sinks = webhook_sinks(&cfg);
    if let Some(name) = sink {
        if !sinks.iter().any(|(n, _)| *n == name) {
            return Err(DeadletterError::NoSuchSink {
                sink: name.to_owned(),
                file: config.to_owned(),
            });
        }
    }
    let mut dirs: Vec<&Path> = sinks
        .iter()
        .filter_map(|(_, w)| w.dead_letter_dir.as_deref())
        .collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        for letter in webhook::deadletter_list(dir, sink)? {
            writeln!(out, "{}", serde_json::to_string(&letter)?)?;
        }
    }
    Ok(())
}

/// Sends the dead letters of webhook sink `sink` again; delivered ones leave the file.
pub async fn redrive(config: &Path, sink: &str) -> Result<RedriveReport, DeadletterError> {
    let cfg = Config::load_for(config, Purpose::Command)?;
    let (_, w) = webhook_sinks(&cfg)
        .into_iter()
        .find(|(n, _)| *n == sink)
        .ok_or_else(|| DeadletterError::NoSuchSink {
            sink: sink.to_owned(),
            file: config.to_owned(),
        })?;
    let dir = w
        .dead_letter_dir
        .clone()
        .ok_or_else(|| DeadletterError::NoDirectory(sink.to_owned()))?;
    Ok(webhook::deadletter_redrive(&dir, sink, w).await?)
}

/// The one line `chatwatch deadletter redrive` prints.
pub fn summary(sink: &str, report: &RedriveReport) -> String {
    format!(
        "redrive of {sink}: {} attempted, {} delivered, {} failed again, {} skipped (410), {} remaining",
        report.attempted,
        report.delivered,
        report.failed.len(),
        report.skipped,
        report.remaining
    )
}
