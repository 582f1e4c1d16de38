//! The running accounts: for each, one Bayeux session task feeding one pipeline task, started
//! and stopped independently, so a reload can add, remove or restart one account without
//! touching the others, and one account's failure (wrong password, server down) never disturbs
//! another.
//!
//! An [`AccountPlan`] is everything an account needs, built (and checked: password readable,
//! transport buildable) before anything starts; its [`AccountKey`] decides whether a reload
//! changed the account.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::config::{AccountConfig, BayeuxConfig, Config, ServerKind, TrackerConfig};
use super::health::{AccountHealth, Health};
use super::ServiceError;
use crate::bayeux::client::{self, Heartbeat, SessionSettings, SessionStatus};
use crate::gws::session::{GwsBehaviour, GwsHooks, GwsSession};
use crate::journal::Journal;
use crate::pipeline::{self, PipelineInput, WorkflowLink};
use crate::rules::{AccountHandle, Directory, Rule, WorkflowSettings};
use crate::secret::Secret;

/// Deliveries buffered between a session and its pipeline.
const PIPELINE_CAPACITY: usize = 4096;
/// How long stopping one account may take before its tasks are abandoned.
const STOP_WITHIN: Duration = Duration::from_secs(30);

/// What makes two configurations of an account the same: the account's table, the shared
/// protocol and tracker settings, and the password as read now (a rotated password file
/// restarts the account on reload).
#[derive(Debug, Clone, PartialEq)]
pub struct AccountKey {
    account: AccountConfig,
    bayeux: BayeuxConfig,
    tracker: TrackerConfig,
    password: Option<Secret>,
    /// The rules that apply to the account (a changed rule restarts the accounts it applies to).
    rules: Vec<crate::rules::RuleConfig>,
}

/// One account, ready to start.
pub struct AccountPlan {
    name: String,
    key: AccountKey,
    settings: SessionSettings,
    gws: Option<(Arc<GwsSession>, GwsBehaviour)>,
    max_chats: usize,
    workflow: WorkflowSettings,
}

impl AccountPlan {
    /// Builds the plan of account `name`: resolves its password and builds (then drops) its
    /// transport, so a bad CA file, proxy or password source fails here, before anything runs.
    pub fn build(
        name: &str,
        account: &AccountConfig,
        config: &Config,
    ) -> Result<AccountPlan, ServiceError> {
        let http = account.http_settings(name, &config.bayeux)?;
        crate::bayeux::transport::LongPolling::new(&http).map_err(|source| {
            client::ClientError::Build {
                account: name.to_owned(),
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
        let rules: Vec<_> = config
            .rules
            .iter()
            .filter(|r| r.applies_to(name))
            .cloned()
            .collect();
        let key = AccountKey {
            account: account.clone(),
            bayeux: config.bayeux.clone(),
            tracker: config.tracker.clone(),
            password: http.basic_auth.as_ref().map(|(_, p)| p.clone()),
            rules: rules.clone(),
        };
        let workflow = WorkflowSettings {
            account: name.to_owned(),
            disposition_key: account.disposition_key.clone(),
            overdue_after: account.overdue_after,
            rules: Rule::build_all(&rules),
            max_chats: config.tracker.max_chats,
        };
        let settings = SessionSettings {
            account: name.to_owned(),
            protocol: account.protocol_config(&config.bayeux),
            http,
            reauth_delay: config.bayeux.reauth_delay,
            heartbeat: Heartbeat::default(),
        };
        Ok(AccountPlan {
            name: name.to_owned(),
            key,
            settings,
            gws,
            max_chats: config.tracker.max_chats,
            workflow,
        })
    }

    /// Plans for every enabled account of `config`, by name.
    pub fn build_all(config: &Config) -> Result<BTreeMap<String, AccountPlan>, ServiceError> {
        let mut plans = BTreeMap::new();
        for (name, account) in config.accounts.iter().filter(|(_, a)| a.enabled) {
            plans.insert(name.clone(), AccountPlan::build(name, account, config)?);
        }
        Ok(plans)
    }
}

/// How an account task ended, reported on the exit channel.
#[derive(Debug)]
pub struct AccountExit {
    /// The account.
    pub name: String,
    /// Which start of the account this was.
    pub generation: u64,
    /// The error, if it stopped on its own.
    pub result: Result<(), ServiceError>,
}

struct Running {
    key: AccountKey,
    generation: u64,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// What a reload changed, by account name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AccountChanges {
    /// Accounts started.
    pub added: Vec<String>,
    /// Accounts stopped.
    pub removed: Vec<String>,
    /// Accounts restarted with a new configuration.
    pub restarted: Vec<String>,
}

/// The running accounts.
pub struct AccountSet {
    running: BTreeMap<String, Running>,
    journal: Journal,
    health: Health,
    directory: Directory,
    exits: mpsc::UnboundedSender<AccountExit>,
    next_generation: u64,
}

impl AccountSet {
    /// An empty set; each account task reports its end on `exits`, and each running account is
    /// listed in `directory` (for the operations API).
    pub fn new(
        journal: Journal,
        health: Health,
        directory: Directory,
        exits: mpsc::UnboundedSender<AccountExit>,
    ) -> AccountSet {
        AccountSet {
            running: BTreeMap::new(),
            journal,
            health,
            directory,
            exits,
            next_generation: 0,
        }
    }

    /// The running accounts' names.
    pub fn names(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Whether `exit` is about an account start that is still the current one (and forgets it).
    pub fn take_exit(&mut self, exit: &AccountExit) -> bool {
        let current = self
            .running
            .get(&exit.name)
            .is_some_and(|r| r.generation == exit.generation);
        if current {
            self.running.remove(&exit.name);
            self.directory.remove(&exit.name);
            let reason = match &exit.result {
                Ok(()) => "the session ended".to_owned(),
                Err(e) => e.to_string(),
            };
            self.health.account_failed(&exit.name, reason);
        }
        current
    }

    /// Starts `plan`; returns its status channel.
    pub fn start(&mut self, plan: AccountPlan) -> watch::Receiver<SessionStatus> {
        let AccountPlan {
            name,
            key,
            settings,
            gws,
            max_chats,
            workflow,
        } = plan;
        self.next_generation += 1;
        let generation = self.next_generation;
        let stop = CancellationToken::new();
        let (status_tx, status_rx) = watch::channel(SessionStatus::default());
        self.health.add_account(
            &name,
            AccountHealth {
                status: status_rx.clone(),
                heartbeat: settings.heartbeat.clone(),
            },
        );
        let state_file = crate::rules::state::path(&self.journal.config().dir, &name);
        let has_rules = !workflow.rules.is_empty();
        let workflow = Arc::new(Mutex::new(crate::rules::state::load(&state_file, workflow)));
        let handle = AccountHandle::new(
            &name,
            gws.as_ref().map(|(session, _)| session.clone()),
            workflow.clone(),
        );
        let link = WorkflowLink {
            workflow,
            state_file: Some(state_file),
            actions: None,
            events: handle.events.clone(),
        };
        self.directory.insert(handle);
        let journal = self.journal.clone();
        let exits = self.exits.clone();
        let task_stop = stop.clone();
        let task_name = name.clone();
        let task = tokio::spawn(async move {
            let result = run_account(
                &task_name, settings, gws, journal, max_chats, link, has_rules, status_tx,
                task_stop,
            )
            .await;
            let _ = exits.send(AccountExit {
                name: task_name,
                generation,
                result,
            });
        });
        self.running.insert(
            name,
            Running {
                key,
                generation,
                stop,
                task,
            },
        );
        status_rx
    }

    /// Stops `name` (disconnects its session, lets its pipeline append what it holds).
    pub async fn stop(&mut self, name: &str) {
        if let Some(running) = self.running.remove(name) {
            self.health.remove_account(name);
            self.directory.remove(name);
            running.stop.cancel();
            let mut task = running.task;
            if tokio::time::timeout(STOP_WITHIN, &mut task).await.is_err() {
                error!(account = %name, "the account did not stop in time; abandoning it");
                task.abort();
            }
        }
    }

    /// Stops every account, all at once.
    pub async fn stop_all(&mut self) {
        let names = self.names();
        let mut stops = Vec::new();
        for name in &names {
            if let Some(running) = self.running.remove(name) {
                self.health.remove_account(name);
                self.directory.remove(name);
                running.stop.cancel();
                stops.push((name.clone(), running.task));
            }
        }
        for (name, mut task) in stops {
            if tokio::time::timeout(STOP_WITHIN, &mut task).await.is_err() {
                error!(account = %name, "the account did not stop in time; abandoning it");
                task.abort();
            }
        }
    }

    /// Brings the running accounts in line with `plans`: stops those no longer planned,
    /// restarts those whose [`AccountKey`] changed (stop first, so two sessions of one agent
    /// never overlap), starts new ones, and leaves the rest alone.
    pub async fn apply(&mut self, mut plans: BTreeMap<String, AccountPlan>) -> AccountChanges {
        let mut changes = AccountChanges::default();
        for name in self.names() {
            match plans.get(&name) {
                None => {
                    info!(account = %name, "account removed from the configuration; stopping it");
                    self.stop(&name).await;
                    changes.removed.push(name);
                }
                Some(plan) if self.running.get(&name).is_some_and(|r| r.key != plan.key) => {
                    info!(account = %name, "account configuration changed; restarting it");
                    self.stop(&name).await;
                    if let Some(plan) = plans.remove(&name) {
                        self.start(plan);
                    }
                    changes.restarted.push(name);
                }
                Some(_) => {
                    plans.remove(&name);
                }
            }
        }
        for (name, plan) in plans {
            info!(account = %name, "account added to the configuration; starting it");
            self.start(plan);
            changes.added.push(name);
        }
        changes
    }
}

/// One account: the session task, its pipeline and (when a rule applies) its actor, until `stop`
/// (then the session disconnects, the actor finishes the operation in flight, and the pipeline
/// appends what it holds) or an error.
#[allow(clippy::too_many_arguments)]
async fn run_account(
    name: &str,
    settings: SessionSettings,
    gws: Option<(Arc<GwsSession>, GwsBehaviour)>,
    journal: Journal,
    max_chats: usize,
    mut link: WorkflowLink,
    has_rules: bool,
    status: watch::Sender<SessionStatus>,
    stop: CancellationToken,
) -> Result<(), ServiceError> {
    let (tx, rx) = mpsc::channel::<PipelineInput>(PIPELINE_CAPACITY);
    let actor_stop = CancellationToken::new();
    let actor = if has_rules {
        let (requests_tx, requests_rx) = mpsc::unbounded_channel();
        link.actions = Some(requests_tx);
        Some(tokio::spawn(crate::rules::actor::run(
            name.to_owned(),
            gws.as_ref().map(|(session, _)| session.clone()),
            requests_rx,
            tx.clone(),
            actor_stop.clone(),
        )))
    } else {
        None
    };
    if let Some((_, behaviour)) = &gws {
        if behaviour.start_contact_center_session.is_none() && !behaviour.end_contact_center_session
        {
            info!(account = %name, "listener mode: chatwatch will neither start nor end the agent's contact-centre session");
        }
    }
    let pipeline = tokio::spawn(pipeline::run(name.to_owned(), rx, journal, max_chats, link));
    let session = match gws {
        Some((session, behaviour)) => {
            let hooks = Arc::new(GwsHooks::new(session, behaviour, tx.clone()));
            client::run(settings, hooks, tx, status, stop).await
        }
        None => {
            let hooks = Arc::new(client::PlainBayeux {
                http: settings.http.clone(),
            });
            client::run(settings, hooks, tx, status, stop).await
        }
    };
    // The session has dropped its sender; the actor finishes the operation in flight and drops
    // its own: the pipeline appends what it holds and ends.
    actor_stop.cancel();
    if let Some(actor) = actor {
        let _ = actor.await;
    }
    let pipelined = pipeline.await;
    if let Err(e) = &session {
        error!(account = %name, error = %e, "session stopped");
    }
    match pipelined {
        Ok(Err(e)) => {
            error!(account = %name, error = %e, "pipeline stopped");
            return Err(ServiceError::Pipeline(e));
        }
        Err(e) => error!(account = %name, error = %e, "pipeline task failed"),
        Ok(Ok(())) => {}
    }
    session.map_err(ServiceError::Session)
}
