//! What the daemon knows about its own health: each account's session status and loop
//! heartbeat, the journal writer's last probe, and whether shutdown has begun. Readiness
//! (`/readyz`), the systemd `STATUS=` line and the watchdog all read it, so they never disagree.
//!
//! Ready means: not stopping, the journal writable, and every enabled account connected and
//! subscribed. Live means only that the process answers (`/livez` never checks dependencies,
//! so an outage of GWS cannot turn into a restart storm).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;

use crate::bayeux::client::{Heartbeat, SessionStatus};
use crate::journal::{Journal, WriterProbe};
use crate::metrics::{
    JOURNAL_FIRST_SEQ, JOURNAL_HEAD_SEQ, JOURNAL_SEGMENTS, READY, SESSION_STATE,
    SESSION_SUBSCRIBED, SINK_BACKLOG_EVENTS,
};

/// A session loop that has not beaten for this long is stuck (it beats every 2 s while idle).
pub const STUCK_AFTER: Duration = Duration::from_secs(20);

/// One account as health sees it.
#[derive(Debug, Clone)]
pub struct AccountHealth {
    /// The session status channel.
    pub status: watch::Receiver<SessionStatus>,
    /// The session loop's heartbeat.
    pub heartbeat: Heartbeat,
}

/// The shared health state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    accounts: Mutex<BTreeMap<String, AccountHealth>>,
    /// Accounts whose task stopped on its own, with the reason (until started again).
    failed: Mutex<BTreeMap<String, String>>,
    journal: Journal,
    probe: Mutex<WriterProbe>,
    stopping: AtomicBool,
}

/// The `/readyz` body.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Readiness {
    /// Whether everything below is fine.
    pub ready: bool,
    /// Whether shutdown has begun.
    pub stopping: bool,
    /// The journal writer: `writable`, `full` (waiting for sinks), `stuck`, or the error.
    pub journal: String,
    /// Each enabled account.
    pub accounts: BTreeMap<String, AccountReadiness>,
    /// What is not ready, one phrase each (empty when ready).
    pub not_ready: Vec<String>,
}

/// One account in [`Readiness`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AccountReadiness {
    /// Connected and subscribed to every channel.
    pub subscribed: bool,
    /// The protocol state (`connected`, `handshaking`, `unconnected`, ...).
    pub state: &'static str,
    /// Successful handshakes since the account started.
    pub handshakes: u64,
}

impl Health {
    /// Health for a daemon writing to `journal`; the journal counts as writable until the first
    /// probe says otherwise.
    pub fn new(journal: Journal) -> Health {
        Health {
            inner: Arc::new(Inner {
                accounts: Mutex::new(BTreeMap::new()),
                failed: Mutex::new(BTreeMap::new()),
                journal,
                probe: Mutex::new(WriterProbe::Writable),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// Starts following `name` (replacing an earlier entry of that name).
    pub fn add_account(&self, name: &str, account: AccountHealth) {
        self.failed().remove(name);
        self.accounts().insert(name.to_owned(), account);
    }

    /// Stops following `name` (stopped on purpose: removed from the configuration, or
    /// shutdown).
    pub fn remove_account(&self, name: &str) {
        self.failed().remove(name);
        self.accounts().remove(name);
        set_account_gauges(name, None);
    }

    /// Records that `name` stopped on its own: readiness stays false until it runs again.
    pub fn account_failed(&self, name: &str, reason: String) {
        self.accounts().remove(name);
        set_account_gauges(name, None);
        self.failed().insert(name.to_owned(), reason);
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.inner
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn accounts(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, AccountHealth>> {
        self.inner
            .accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the start of shutdown: readiness turns false for good.
    pub fn set_stopping(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
    }

    /// Probes the journal writer (an empty append answered within `within`) and remembers the
    /// result.
    pub async fn probe_journal(&self, within: Duration) -> WriterProbe {
        let probe = self.inner.journal.probe(within).await;
        *self
            .inner
            .probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = probe.clone();
        probe
    }

    /// The journal this daemon writes.
    pub fn journal(&self) -> &Journal {
        &self.inner.journal
    }

    /// Readiness now (from the last journal probe).
    pub fn readiness(&self) -> Readiness {
        let stopping = self.inner.stopping.load(Ordering::SeqCst);
        let probe = self
            .inner
            .probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut not_ready = Vec::new();
        if stopping {
            not_ready.push("shutting down".to_owned());
        }
        let journal = match &probe {
            WriterProbe::Writable => "writable".to_owned(),
            WriterProbe::Full => "full".to_owned(),
            WriterProbe::Stuck => "stuck".to_owned(),
            WriterProbe::Failed(e) => e.clone(),
        };
        if !probe.is_writable() {
            not_ready.push(format!("journal not writable: {journal}"));
        }
        let mut accounts = BTreeMap::new();
        for (name, account) in self.accounts().iter() {
            // Copy out: never hold a watch::Ref longer than this statement.
            let status = account.status.borrow().clone();
            if !status.subscribed {
                not_ready.push(format!(
                    "account {name}: not subscribed ({})",
                    status.state.as_str()
                ));
            }
            accounts.insert(
                name.clone(),
                AccountReadiness {
                    subscribed: status.subscribed,
                    state: status.state.as_str(),
                    handshakes: status.handshakes,
                },
            );
        }
        for (name, reason) in self.failed().iter() {
            not_ready.push(format!("account {name}: stopped: {reason}"));
            accounts.insert(
                name.clone(),
                AccountReadiness {
                    subscribed: false,
                    state: "stopped",
                    handshakes: 0,
                },
            );
        }
        if accounts.is_empty() {
            not_ready.push("no account is running".to_owned());
        }
        for (sink, reason) in crate::sinks::readiness::not_ready() {
            not_ready.push(format!("sink {sink}: {reason}"));
        }
        Readiness {
            ready: not_ready.is_empty(),
            stopping,
            journal,
            accounts,
            not_ready,
        }
    }

    /// Whether every loop the watchdog guards makes progress: each session loop beat within
    /// [`STUCK_AFTER`] and the journal writer answered its last probe (or is alive, waiting for
    /// space). Returns what is stuck otherwise.
    pub fn progress(&self) -> Result<(), String> {
        let mut stuck = Vec::new();
        for (name, account) in self.accounts().iter() {
            let age = account.heartbeat.age();
            if age > STUCK_AFTER {
                stuck.push(format!("account {name}: session loop silent for {age:?}"));
            }
        }
        let probe = self
            .inner
            .probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if !probe.is_alive() {
            stuck.push(format!("journal writer: {probe:?}"));
        }
        if stuck.is_empty() {
            Ok(())
        } else {
            Err(stuck.join("; "))
        }
    }

    /// One line for systemd's `STATUS=`: accounts subscribed, journal, backlog.
    pub fn status_line(&self) -> String {
        let readiness = self.readiness();
        let subscribed = readiness.accounts.values().filter(|a| a.subscribed).count();
        let status = self.inner.journal.status();
        let backlog = status.sinks.iter().map(|s| s.backlog).max().unwrap_or(0);
        let mut line = format!(
            "{subscribed}/{} accounts subscribed; journal {}; max sink backlog {backlog}",
            readiness.accounts.len(),
            readiness.journal,
        );
        if readiness.accounts.len() <= 4 {
            for (name, account) in &readiness.accounts {
                line.push_str(&format!("; {name} {}", account.state));
            }
        }
        if readiness.stopping {
            line = format!("stopping; {line}");
        }
        line
    }

    /// Sets the gauges that describe state rather than count things: session state and
    /// subscription per account, journal size and positions, per-sink backlog.
    pub fn update_gauges(&self) {
        for (name, account) in self.accounts().iter() {
            let status = account.status.borrow().clone();
            set_account_gauges(name, Some(&status));
        }
        let status = self.inner.journal.status();
        metrics::gauge!(JOURNAL_HEAD_SEQ).set(status.head as f64);
        metrics::gauge!(JOURNAL_FIRST_SEQ).set(status.first_seq as f64);
        metrics::gauge!(JOURNAL_SEGMENTS).set(status.segments as f64);
        metrics::gauge!(crate::journal::BYTES).set(status.bytes as f64);
        for sink in &status.sinks {
            metrics::gauge!(SINK_BACKLOG_EVENTS, "sink" => sink.name.clone())
                .set(sink.backlog as f64);
        }
        let ready = self.readiness();
        metrics::gauge!(READY).set(if ready.ready { 1.0 } else { 0.0 });
    }
}

/// Sets an account's state gauges from `status`, or all to 0 for an account that is not running.
fn set_account_gauges(name: &str, status: Option<&SessionStatus>) {
    use crate::bayeux::protocol::SessionState;
    const STATES: [SessionState; 7] = [
        SessionState::Handshaking,
        SessionState::Connecting,
        SessionState::Connected,
        SessionState::Unconnected,
        SessionState::Disconnecting,
        SessionState::Disconnected,
        SessionState::Terminated,
    ];
    for state in STATES {
        let on = status.is_some_and(|s| s.state == state);
        metrics::gauge!(SESSION_STATE, "account" => name.to_owned(), "state" => state.as_str())
            .set(if on { 1.0 } else { 0.0 });
    }
    let subscribed = status.is_some_and(|s| s.subscribed);
    metrics::gauge!(SESSION_SUBSCRIBED, "account" => name.to_owned()).set(if subscribed {
        1.0
    } else {
        0.0
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bayeux::protocol::SessionState;
    use crate::journal::JournalConfig;

    fn health() -> (Health, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(JournalConfig::new(dir.path().join("j"))).unwrap();
        (Health::new(journal), dir)
    }

    #[tokio::test]
    async fn readiness_needs_every_account_subscribed_and_a_writable_journal() {
        let (health, _dir) = health();
        assert!(!health.readiness().ready, "no account yet");
        let (a_tx, a_rx) = watch::channel(SessionStatus::default());
        let (b_tx, b_rx) = watch::channel(SessionStatus::default());
        for (name, rx) in [("a", a_rx), ("b", b_rx)] {
            health.add_account(
                name,
                AccountHealth {
                    status: rx,
                    heartbeat: Heartbeat::default(),
                },
            );
        }
        let subscribed = |tx: &watch::Sender<SessionStatus>, on: bool| {
            tx.send_modify(|s| {
                s.subscribed = on;
                s.state = if on {
                    SessionState::Connected
                } else {
                    SessionState::Unconnected
                };
            })
        };
        subscribed(&a_tx, true);
        let r = health.readiness();
        assert!(!r.ready);
        assert_eq!(r.not_ready, ["account b: not subscribed (handshaking)"]);
        subscribed(&b_tx, true);
        assert_eq!(
            health.probe_journal(Duration::from_secs(5)).await,
            WriterProbe::Writable
        );
        let r = health.readiness();
        assert!(r.ready, "{r:?}");
        assert_eq!(r.accounts["a"].state, "connected");
        assert!(health
            .status_line()
            .starts_with("2/2 accounts subscribed; journal writable"));

        health.account_failed("b", "the journal cannot store events".into());
        let r = health.readiness();
        assert!(!r.ready);
        assert_eq!(r.accounts["b"].state, "stopped");
        assert!(r.not_ready[0].contains("account b: stopped"), "{r:?}");
        health.remove_account("b");
        assert!(health.readiness().ready);

        health.journal().close().await.unwrap();
        assert!(matches!(
            health.probe_journal(Duration::from_secs(5)).await,
            WriterProbe::Failed(_)
        ));
        let r = health.readiness();
        assert!(!r.ready);
        assert!(r.not_ready[0].starts_with("journal not writable"), "{r:?}");
        assert!(health.progress().is_err());
        health.set_stopping();
        assert!(health.readiness().stopping);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_session_loop_stops_progress() {
        let (health, _dir) = health();
        let (_tx, rx) = watch::channel(SessionStatus::default());
        let beat = Heartbeat::default();
        health.add_account(
            "a",
            AccountHealth {
                status: rx,
                heartbeat: beat.clone(),
            },
        );
        assert!(health.progress().is_ok());
        tokio::time::advance(STUCK_AFTER / 2).await;
        beat.beat();
        tokio::time::advance(STUCK_AFTER / 2).await;
        assert!(health.progress().is_ok());
        tokio::time::advance(STUCK_AFTER).await;
        let stuck = health.progress().unwrap_err();
        assert!(stuck.contains("account a: session loop silent"), "{stuck}");
        beat.beat();
        assert!(health.progress().is_ok());
    }
}
