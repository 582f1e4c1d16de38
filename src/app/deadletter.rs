//! `chatwatch deadletter list|redrive`: the dead letters of the webhook and NATS sinks (one
//! file format for both), found through the configuration file that names the sinks.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::service::config::{Config, ConfigError, Purpose};
use crate::sinks::nats::{self, NatsRedriveReport};
use crate::sinks::webhook::{self, RedriveReport};
use crate::sinks::{SinkConfig, SinkError};

/// Why a dead-letter command failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadletterError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No webhook or nats sink of that name.
    #[error("no webhook or nats sink `{sink}` in {}", file.display())]
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

/// The sinks of `cfg` that keep dead letters (webhook and nats), with their dead-letter
/// directory.
pub fn dead_letter_sinks(cfg: &Config) -> Vec<(&String, &SinkConfig, Option<&Path>)> {
    cfg.sinks
        .iter()
        .filter_map(|(name, sink)| match sink {
            SinkConfig::Webhook(w) => Some((name, sink, w.dead_letter_dir.as_deref())),
            SinkConfig::Nats(n) => Some((name, sink, n.dead_letter_dir.as_deref())),
            _ => None,
        })
        .collect()
}

/// What a redrive did, per sink type.
#[derive(Debug)]
pub enum Redrive {
    /// A webhook sink's redrive.
    Webhook(RedriveReport),
    /// A NATS sink's redrive.
    Nats(NatsRedriveReport),
}

impl Redrive {
    /// Whether every dead letter was delivered (none failed again or was skipped).
    pub fn is_complete(&self) -> bool {
        match self {
            Redrive::Webhook(r) => r.failed.is_empty() && r.skipped == 0,
            Redrive::Nats(r) => r.failed.is_empty(),
        }
    }
}

/// Writes the dead letters (one JSON line each) of every webhook and nats sink, or of `sink`
/// only.
pub fn list(config: &Path, sink: Option<&str>, out: &mut dyn Write) -> Result<(), DeadletterError> {
    let cfg = Config::load_for(config, Purpose::Command)?;
    let sinks = dead_letter_sinks(&cfg);
    if let Some(name) = sink {
        if !sinks.iter().any(|(n, _, _)| *n == name) {
            return Err(DeadletterError::NoSuchSink {
                sink: name.to_owned(),
                file: config.to_owned(),
            });
        }
    }
    let mut dirs: Vec<&Path> = sinks.iter().filter_map(|(_, _, dir)| *dir).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        for letter in webhook::deadletter_list(dir, sink)? {
            writeln!(out, "{}", serde_json::to_string(&letter)?)?;
        }
    }
    Ok(())
}

/// Sends the dead letters of webhook or nats sink `sink` again (same `webhook-id` /
/// `Nats-Msg-Id`); delivered ones leave the file.
pub async fn redrive(config: &Path, sink: &str) -> Result<Redrive, DeadletterError> {
    let cfg = Config::load_for(config, Purpose::Command)?;
    let (_, sink_config, dir) = dead_letter_sinks(&cfg)
        .into_iter()
        .find(|(n, _, _)| *n == sink)
        .ok_or_else(|| DeadletterError::NoSuchSink {
            sink: sink.to_owned(),
            file: config.to_owned(),
        })?;
    let dir = dir
        .map(Path::to_owned)
        .ok_or_else(|| DeadletterError::NoDirectory(sink.to_owned()))?;
    Ok(match sink_config {
        SinkConfig::Nats(n) => Redrive::Nats(nats::deadletter_redrive(&dir, sink, n).await?),
        SinkConfig::Webhook(w) => {
            Redrive::Webhook(webhook::deadletter_redrive(&dir, sink, w).await?)
        }
        _ => unreachable!("dead_letter_sinks lists only webhook and nats sinks"),
    })
}

/// What `chatwatch deadletter redrive` prints: a summary line, then one line per dead letter
/// that failed again.
pub fn summary(sink: &str, report: &Redrive) -> String {
    match report {
        Redrive::Webhook(report) => format!(
            "redrive of {sink}: {} attempted, {} delivered, {} failed again, {} skipped (410), {} remaining",
            report.attempted,
            report.delivered,
            report.failed.len(),
            report.skipped,
            report.remaining
        ),
        Redrive::Nats(report) => {
            let mut text = format!(
                "redrive of {sink}: {} attempted, {} delivered ({} already in the stream), {} failed again, {} remaining",
                report.attempted,
                report.delivered,
                report.duplicates,
                report.failed.len(),
                report.remaining
            );
            for (id, reason) in &report.failed {
                text.push_str(&format!("\n{id}: {reason}"));
            }
            text
        }
    }
}
