//! Running the daemon: configuration ([`config`]), logging setup, and [`run`], which resolves
//! the configuration's secrets (the step `chatwatch check` takes too), wires one Bayeux session
//! and one event pipeline per account into the journal and one delivery task per sink, and shuts
//! everything down in order when asked.
//!
//! Around that: the admin listener ([`admin`]: `/metrics`, `/livez`, `/readyz`), the shared
//! [`health`] state, systemd notifications and the watchdog ([`notify`]), and reloads: SIGHUP
//! (from [`crate::signal`]) or `chatwatch reload` over the control socket ([`control`], which
//! also returns the verdict), each re-reading the configuration file and adding, removing or
//! restarting only the accounts and sinks that changed (an invalid file changes nothing).
//!
//! The path of an event: session task → bounded channel → pipeline task ([`crate::pipeline`]:
//! GWS decode, chat tracker, event record) → the durable [`Journal`] → one delivery task per
//! sink reading the journal at its own cursor ([`crate::delivery`]). The session never waits on a
//! sink: only on the journal's append.

pub mod accounts;
pub mod admin;
pub mod config;
pub mod control;
pub mod health;
pub mod logging;
pub mod notify;

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::bayeux::client::{self, SessionStatus};
use crate::delivery::SinkRunner;
use crate::gws::session::SessionError;
use crate::journal::{Journal, JournalError};
use crate::metrics::CONFIG_RELOADS;
use crate::pipeline;
use crate::secret::{ResolveMode, Resolver};
use accounts::{AccountExit, AccountPlan, AccountSet};
use config::{Config, ConfigError};
use control::ReloadSummary;
use health::Health;
use logging::LogHandle;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The configuration cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A sink could not be built.
    #[error(transparent)]
    Sink(#[from] crate::sinks::SinkError),
    /// A session transport could not be built.
    #[error(transparent)]
    Session(#[from] client::ClientError),
    /// A GWS session could not be built.
    #[error(transparent)]
    Gws(#[from] SessionError),
    /// The journal could not be opened or synced.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A pipeline could no longer store events.
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
    /// The admin listener could not start.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// The operations API listener could not start.
    #[error(transparent)]
    Api(#[from] crate::api::ApiError),
}

/// Installs the global tracing subscriber (see [`logging`]); returns the handle a reload uses
/// to change the level.
pub fn init_logging(log: &config::LogConfig) -> LogHandle {
    logging::init(log)
}

/// Handles on a running daemon, for tests and the CLI.
#[derive(Debug)]
pub struct Running {
    /// Each enabled account's session status, by account name (as started).
    pub status: Vec<(String, watch::Receiver<SessionStatus>)>,
    /// The admin listener's address, when it is enabled.
    pub admin: Option<std::net::SocketAddr>,
    /// The operations API's address, when it is enabled.
    pub api: Option<std::net::SocketAddr>,
    /// The daemon's health (readiness as `/readyz` reports it).
    pub health: Health,
}

/// Where a SIGHUP reload reads the configuration from, and how it changes the log level.
#[derive(Debug, Clone)]
pub struct Reload {
    /// The configuration file (with `CHATWATCH__…` overrides from the environment).
    pub file: PathBuf,
    /// Changes the log level.
    pub log: LogHandle,
}

/// Runs the daemon described by `config` until `shutdown` is cancelled: sessions disconnect,
/// pipelines drain into the sinks, sinks flush within `shutdown.drain_timeout`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    run_with(config, shutdown, |_| {}).await
}

/// [`run`], calling `started` once every session task is spawned. SIGHUP only reopens files.
pub async fn run_with(
    config: Config,
    shutdown: CancellationToken,
    started: impl FnOnce(Running),
) -> Result<(), ServiceError> {
    serve(config, None, shutdown, started).await
}

/// The daemon as `chatwatch run` runs it: [`run`], plus SIGHUP reloading `reload.file`.
pub async fn run_reloadable(
    config: Config,
    reload: Reload,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    serve(config, Some(reload), shutdown, |_| {}).await
}

async fn serve(
    config: Config,
    reload: Option<Reload>,
    shutdown: CancellationToken,
    started: impl FnOnce(Running),
) -> Result<(), ServiceError> {
    // Build everything that can fail on configuration before starting anything; the secrets
    // are read once, by the resolve step `chatwatch check` runs too.
    let config = config.resolve(&mut Resolver::new(ResolveMode::Run))?;
    let plans = AccountPlan::build_all(&config)?;
    raise_open_file_limit(plans.len());
    let prometheus = admin::install_recorder();
    let journal = Journal::open(config.journal.clone())?;
    let recovery = journal.recovery();
    if recovery.truncated_bytes > 0 || recovery.corrupt_records > 0 {
        warn!(report = ?recovery, "the journal was repaired at start");
    }
    let mut delivery = SinkRunner::start(
        journal.clone(),
        config.sinks.clone().into_iter().collect(),
        config.shutdown.drain_timeout,
    )
    .await?;
    let listener = if config.admin.enabled {
        Some(admin::AdminListener::bind(config.admin.listen).await?)
    } else {
        None
    };
    let admin_addr = listener.as_ref().and_then(|l| l.local_addr());
    let directory = crate::rules::Directory::new();
    let api_listener = if config.api.enabled {
        Some(crate::api::ApiListener::bind(&config.api, directory.clone()).await?)
    } else {
        None
    };
    let api_addr = api_listener.as_ref().and_then(|l| l.local_addr());
    let health = Health::new(journal.clone());
    let background = CancellationToken::new();
    if let Some(handle) = prometheus.clone() {
        // Histograms keep their samples until drained: without scrapes they would grow forever.
        let stop = background.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = tick.tick() => handle.run_upkeep(),
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
    let admin_task = listener.map(|l| l.serve(health.clone(), prometheus, background.clone()));
    let supervisor = tokio::spawn(notify::supervise(health.clone(), background.clone()));
    // The API stops first at shutdown, before the accounts it reaches.
    let api_stop = CancellationToken::new();
    let api_task = api_listener.map(|l| l.serve(api_stop.clone()));

    let (exits_tx, mut exits) = mpsc::unbounded_channel::<AccountExit>();
    let mut accounts =
        AccountSet::new(journal.clone(), health.clone(), directory.clone(), exits_tx);
    let mut statuses = Vec::new();
    for (name, plan) in plans {
        statuses.push((name, accounts.start(plan)));
    }
    info!(
        accounts = ?accounts.names(),
        sinks = ?delivery.sink_names(),
        journal = %config.journal.dir.display(),
        admin = ?admin_addr,
        api = ?api_addr,
        "chatwatch started"
    );
    // Ready means "running and able to accept events", not "GWS is reachable": a remote
    // outage must not turn into a start timeout. /readyz tells the rest.
    notify::ready(&health.status_line());
    started(Running {
        status: statuses,
        admin: admin_addr,
        api: api_addr,
        health: health.clone(),
    });

    let mut hup = crate::signal::Hangup::new();
    // `chatwatch reload` (ExecReload=) asks here and gets the verdict back.
    let mut control = match (&reload, control::daemon_socket_path()) {
        (Some(_), Some(path)) => match control::ControlListener::bind(&path, background.clone()) {
            Ok(l) => Some(l),
            Err(e) => {
                warn!(error = %e, "`chatwatch reload` is off; SIGHUP still reloads");
                None
            }
        },
        _ => None,
    };
    let mut current = config;
    let mut first_error = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(exit) = exits.recv() => {
                if accounts.take_exit(&exit) {
                    if let Err(e) = exit.result {
                        error!(account = %exit.name, error = %e, "account stopped; the other accounts go on");
                        first_error.get_or_insert(e);
                    }
                    if accounts.names().is_empty() {
                        error!("no account is running any more; stopping");
                        break;
                    }
                }
            }
            Some(()) = hup.recv() => {
                delivery.reopen();
                match &reload {
                    Some(reload) => {
                        notify::reloading();
                        current = apply_reload(current, reload, &mut accounts, &mut delivery).await.0;
                        notify::ready(&health.status_line());
                    }
                    None => info!("SIGHUP: reopening sink files"),
                }
            }
            Some(request) = control::next_request(&mut control) => {
                delivery.reopen();
                if let Some(reload) = &reload {
                    notify::reloading();
                    let (next, verdict) = apply_reload(current, reload, &mut accounts, &mut delivery).await;
                    current = next;
                    request.answer(verdict);
                    notify::ready(&health.status_line());
                }
            }
        }
    }

    // Shutdown: readiness false, sessions disconnect, pipelines append, sinks drain, sync.
    info!("stopping: disconnecting sessions, then draining sinks");
    health.set_stopping();
    notify::stopping();
    let drain = current.shutdown.drain_timeout;
    notify::extend_timeout(drain + Duration::from_secs(40));
    api_stop.cancel();
    if let Some(task) = api_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    accounts.stop_all().await;
    while let Ok(exit) = exits.try_recv() {
        if let Err(e) = exit.result {
            first_error.get_or_insert(e);
        }
    }
    // Sync the journal first: that moves its head over everything appended, so the sinks'
    // drain sees the last events too (with `fsync = "interval"` the head lags up to one
    // interval behind the appends). Reading works after close.
    if let Err(e) = journal.close().await {
        error!(error = %e, "final journal sync failed");
        first_error.get_or_insert(ServiceError::Journal(e));
    }
    delivery.shutdown(drain + Duration::from_secs(5)).await;
    background.cancel();
    let _ = supervisor.await;
    if let Some(task) = admin_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    info!("chatwatch stopped");
    first_error.map_or(Ok(()), Err)
}

/// Reloads the configuration from `reload.file` and applies what changed (SIGHUP and
/// `chatwatch reload`). Returns the configuration now in force and the verdict: the new one and
/// what changed, or the old one and why the new one cannot be used (logged and counted in
/// `chatwatch_config_reloads_total{result="failed"}`).
async fn apply_reload(
    current: Config,
    reload: &Reload,
    accounts: &mut AccountSet,
    delivery: &mut SinkRunner,
) -> (Config, Result<ReloadSummary, String>) {
    let failed = |current: Config, why: String| {
        metrics::counter!(CONFIG_RELOADS, "result" => "failed").increment(1);
        error!(file = %reload.file.display(), error = %why, "SIGHUP: the new configuration cannot be used; still running on the previous one");
        (current, Err(why))
    };
    let mut needs_restart = Vec::new();
    info!(file = %reload.file.display(), "SIGHUP: reloading the configuration");
    let mut next = match Config::load(&reload.file)
        .and_then(|next| next.resolve(&mut Resolver::new(ResolveMode::Run)))
    {
        Ok(next) => next,
        Err(e) => return failed(current, e.to_string()),
    };
    let plans = match AccountPlan::build_all(&next) {
        Ok(plans) => plans,
        Err(e) => return failed(current, e.to_string()),
    };
    // Settings that only a restart changes keep their running values.
    if next.journal != current.journal {
        warn!("SIGHUP: [journal] changed; that needs a restart, the running journal is kept");
        next.journal = current.journal.clone();
        needs_restart.push("journal".to_owned());
    }
    if next.admin != current.admin {
        warn!("SIGHUP: [admin] changed; that needs a restart, the running listener is kept");
        next.admin = current.admin.clone();
        needs_restart.push("admin".to_owned());
    }
    if next.api != current.api {
        warn!("SIGHUP: [api] changed; that needs a restart, the running listener and its tokens are kept");
        next.api = current.api.clone();
        needs_restart.push("api".to_owned());
    }
    if next.shutdown != current.shutdown {
        warn!("SIGHUP: [shutdown] changed; that needs a restart, the running value is kept");
        next.shutdown = current.shutdown.clone();
        needs_restart.push("shutdown".to_owned());
    }
    // Sinks first: their validation and opening can still refuse the reload as a whole.
    let sinks = match delivery
        .apply(next.sinks.clone().into_iter().collect())
        .await
    {
        Ok(changes) => changes,
        Err(e) => return failed(current, e.to_string()),
    };
    let changed = accounts.apply(plans).await;
    if next.log != current.log {
        match reload.log.set_level(&next.log.level) {
            Ok(true) => info!(level = %next.log.level, "log level changed"),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cannot change the log level"),
        }
    }
    metrics::counter!(CONFIG_RELOADS, "result" => "ok").increment(1);
    info!(
        accounts_added = ?changed.added,
        accounts_removed = ?changed.removed,
        accounts_restarted = ?changed.restarted,
        sinks_added = ?sinks.added,
        sinks_removed = ?sinks.removed,
        sinks_restarted = ?sinks.restarted,
        "SIGHUP: configuration reloaded"
    );
    let summary = ReloadSummary {
        accounts: changed,
        sinks,
        needs_restart,
    };
    (next, Ok(summary))
}

/// Raises the soft limit on open files to the hard one: each account holds two or three
/// connections, and systemd's default soft limit (1024) would stop a daemon of a few hundred
/// accounts. Warns when even the hard limit looks too small for `accounts`.
fn raise_open_file_limit(accounts: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(max)) = (limit.current, limit.maximum) {
        if current < max {
            limit.current = Some(max);
            match setrlimit(Resource::Nofile, limit) {
                Ok(()) => info!(from = current, to = max, "raised the open-file limit"),
                Err(e) => warn!(error = %e, current, "cannot raise the open-file limit"),
            }
        }
    }
    let now = getrlimit(Resource::Nofile).current;
    let need = (accounts as u64) * 4 + 256;
    if now.is_some_and(|n| n < need) {
        warn!(
            limit = now,
            accounts,
            "the open-file limit may be too small for this many accounts (about 4 per account); raise LimitNOFILE="
        );
    }
}
