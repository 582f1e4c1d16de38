//! chatwatch's own log output: which format to use (journald under systemd, human on a
//! terminal, JSON otherwise), the level filter (`RUST_LOG` over the configured level), and a
//! handle that changes the level on a configuration reload without restarting anything.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

use super::config::{LogConfig, LogFormat};

/// Changes the level filter of the installed subscriber (SIGHUP reload).
#[derive(Clone)]
pub struct LogHandle {
    filter: Option<reload::Handle<EnvFilter, Registry>>,
    from_env: bool,
}

impl std::fmt::Debug for LogHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHandle")
            .field("from_env", &self.from_env)
            .finish_non_exhaustive()
    }
}

impl LogHandle {
    /// A handle that changes nothing (no subscriber installed by us).
    pub fn detached() -> LogHandle {
        LogHandle {
            filter: None,
            from_env: false,
        }
    }

    /// Applies `level` (RUST_LOG syntax) unless `RUST_LOG` set the filter at start, which wins.
    /// Returns whether the filter changed.
    pub fn set_level(&self, level: &str) -> Result<bool, String> {
        if self.from_env {
            return Ok(false);
        }
        let Some(handle) = &self.filter else {
            return Ok(false);
        };
        let filter = EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())?;
        Ok(true)
    }
}

/// The format `auto` resolves to here: journald when standard output is the journal stream
/// systemd set up (`$JOURNAL_STREAM` = device:inode of our stdout), human on a terminal, JSON
/// otherwise.
pub fn resolve_format(format: LogFormat) -> LogFormat {
    match format {
        LogFormat::Auto if stdout_is_journal() => LogFormat::Journald,
        LogFormat::Auto if std::io::stdout().is_terminal() => LogFormat::Human,
        LogFormat::Auto => LogFormat::Json,
        other => other,
    }
}

/// Whether `$JOURNAL_STREAM` names our standard output (systemd.exec(5)).
fn stdout_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match rustix::fs::fstat(std::io::stdout()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// Installs the global subscriber per `log` and returns the handle for level changes. A second
/// call (tests, the demo) leaves the first subscriber in place and returns a detached handle.
pub fn init(log: &LogConfig) -> LogHandle {
    let from_env = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    let filter = if from_env {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.level))
    } else {
        EnvFilter::new(&log.level)
    };
    let (filter, handle) = reload::Layer::new(filter);
    let output: Box<dyn Layer<_> + Send + Sync> = match resolve_format(log.format) {
        LogFormat::Journald => match tracing_journald::layer() {
            Ok(layer) => Box::new(
                layer
                    .with_syslog_identifier("chatwatch".to_owned())
                    .with_field_prefix(None),
            ),
            Err(_) => json_layer(),
        },
        LogFormat::Human | LogFormat::Auto => Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stdout)
                .with_ansi(std::io::stdout().is_terminal()),
        ),
        LogFormat::Json => json_layer(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .is_ok();
    if installed {
        LogHandle {
            filter: Some(handle),
            from_env,
        }
    } else {
        LogHandle::detached()
    }
}

fn json_layer<S>() -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    Box::new(
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stdout),
    )
}
