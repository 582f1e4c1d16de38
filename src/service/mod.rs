//! Running the daemon: configuration ([`config`]), logging setup, and [`run`], which wires one
//! Bayeux session and one event pipeline per account into the shared sink fan-out, and shuts
//! everything down in order when asked.
//!
//! The path of an event: session task → bounded channel → pipeline task ([`crate::pipeline`]:
//! GWS decode, chat tracker, event record) → the durable [`Journal`] → one delivery task per
//! sink reading the journal at its own cursor ([`crate::delivery`]). The session never waits on a
//! sink: only on the journal's append.

pub mod config;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::bayeux::client::{self, SessionSettings, SessionStatus};
use crate::delivery::Delivery;
use crate::gws::session::{GwsHooks, GwsSession, SessionError};
use crate::journal::{Journal, JournalError};
use crate::pipeline::{self, PipelineInput};
use config::{Config, ConfigError, LogFormat, ServerKind};

/// Deliveries buffered between a session and its pipeline.
const PIPELINE_CAPACITY: usize = 4096;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A sink could not be built.
    #[error("{0}")]
    Sink(#[from] crate::sinks::SinkError),
    /// A session transport could not be built.
    #[error("{0}")]
    Session(#[from] client::ClientError),
    /// A GWS session could not be built.
    #[error("{0}")]
    Gws(#[from] SessionError),
    /// The journal could not be opened or synced.
    #[error("{0}")]
    Journal(#[from] JournalError),
    /// A pipeline could no longer store events.
    #[error("{0}")]
    Pipeline(#[from] pipeline::PipelineError),
}

/// Installs the global tracing subscriber: `RUST_LOG` if set, else the configured level; human
/// or JSON lines on standard output.
pub fn init_logging(log: &config::LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let _ = match log.format {
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Handles on a running daemon, for tests and the CLI.
#[derive(Debug)]
pub struct Running {
    /// Each enabled account's session status, by account name.
    pub status: Vec<(String, watch::Receiver<SessionStatus>)>,
}

/// Runs the daemon described by `config` until `shutdown` is cancelled: sessions disconnect,
/// pipelines drain into the sinks, sinks flush within `shutdown.drain_timeout`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    run_with(config, shutdown, |_| {}).await
}

/// [`run`], calling `started` once every session task is spawned.
pub async fn run_with(
    config: Config,
    shutdown: CancellationToken,
    started: impl FnOnce(Running),
) -> Result<(), ServiceError> {
    // Build everything that can fail on configuration before starting anything.
    let mut sessions = Vec::new();
    for (name, account) in config.accounts.iter().filter(|(_, a)| a.enabled) {
        let http = account.http_settings(name, &config.bayeux)?;
        // Fail fast on a bad CA file or proxy: the same construction the session will do.
        crate::bayeux::transport::LongPolling::new(&http).map_err(|source| {
            client::ClientError::Build {
                account: name.clone(),
                source,
            }
        })?;
        let gws = match account.server {
            ServerKind::Gws => {
                let timeout = config.bayeux.max_network_delay;
                let session = GwsSession::new(name, account.url.clone(), http.clone(), timeout)?;
                Some((Arc::new(session), account.gws_behaviour()))
            }
            ServerKind::Bayeux => None,
        };
        let settings = SessionSettings {
            account: name.clone(),
            protocol: account.protocol_config(&config.bayeux),
            http,
            reauth_delay: config.bayeux.reauth_delay,
        };
        sessions.push((settings, gws));
    }
    let journal = Journal::open(config.journal.clone())?;
    let recovery = journal.recovery();
    if recovery.truncated_bytes > 0 || recovery.corrupt_records > 0 {
        warn!(report = ?recovery, "the journal was repaired at start");
    }
    let sink_names: Vec<String> = config.sinks.keys().cloned().collect();
    let delivery = Delivery::start(
        journal.clone(),
        config.sinks.clone().into_iter().collect(),
        config.shutdown.drain_timeout,
    )
    .await?;
    let reopen = delivery.reopen_handle();
    let hup = tokio::spawn(async move {
        #[cfg(unix)]
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            while hup.recv().await.is_some() {
                info!("SIGHUP: reopening sink files");
                let _ = reopen.send(());
            }
        }
        #[cfg(not(unix))]
        let _ = reopen;
    });
    info!(
        accounts = sessions.len(),
        sinks = ?sink_names,
        journal = %config.journal.dir.display(),
        "chatwatch started"
    );

    let session_stop = shutdown.child_token();
    let mut session_tasks = JoinSet::new();
    let mut pipeline_tasks = JoinSet::new();
    let mut statuses = Vec::new();
    for (settings, gws) in sessions {
        let (tx, rx) = mpsc::channel::<PipelineInput>(PIPELINE_CAPACITY);
        let (status_tx, status_rx) = watch::channel(SessionStatus::default());
        statuses.push((settings.account.clone(), status_rx));
        let account = settings.account.clone();
        let max_chats = config.tracker.max_chats;
        pipeline_tasks.spawn(pipeline::run(account, rx, journal.clone(), max_chats));
        let stop = session_stop.clone();
        match gws {
            Some((session, behaviour)) => {
                let hooks = Arc::new(GwsHooks::new(session, behaviour, tx.clone()));
                session_tasks.spawn(client::run(settings, hooks, tx, status_tx, stop));
            }
            None => {
                let http = settings.http.clone();
                let hooks = Arc::new(client::PlainBayeux { http });
                session_tasks.spawn(client::run(settings, hooks, tx, status_tx, stop));
            }
        }
    }
    started(Running { status: statuses });

    let mut first_error = None;
    while let Some(joined) = session_tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %e, "session stopped");
                first_error.get_or_insert(ServiceError::Session(e));
            }
            Err(e) => error!(error = %e, "session task failed"),
        }
    }
    // Every session has disconnected and dropped its sender: pipelines append what they hold.
    while let Some(joined) = pipeline_tasks.join_next().await {
        if let Ok(Err(e)) = joined {
            error!(error = %e, "pipeline stopped");
            first_error.get_or_insert(ServiceError::Pipeline(e));
        }
    }
    // Then the sinks deliver what the journal holds, within the drain timeout, and close.
    delivery
        .shutdown(config.shutdown.drain_timeout + Duration::from_secs(5))
        .await;
    hup.abort();
    if let Err(e) = journal.close().await {
        error!(error = %e, "final journal sync failed");
        first_error.get_or_insert(ServiceError::Journal(e));
    }
    info!("chatwatch stopped");
    first_error.map_or(Ok(()), Err)
}
