//! Talking to systemd (`Type=notify`): `READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=` lines,
//! `EXTEND_TIMEOUT_USEC=` while draining, and the watchdog.
//!
//! Every call is a no-op without `$NOTIFY_SOCKET`, so the daemon behaves the same outside
//! systemd. The watchdog task ([`supervise`]) pings `WATCHDOG=1` at half of `WatchdogSec=` only
//! while [`Health::progress`] says every session loop beats and the journal writer answers its
//! probe: a wedged loop stops the pings and systemd restarts the service. The same task probes
//! the journal for readiness and keeps `STATUS=` current.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::health::Health;

/// How often the journal is probed and the status refreshed when there is no watchdog.
const TICK: Duration = Duration::from_secs(2);
/// How long a journal probe may take.
const PROBE_WITHIN: Duration = Duration::from_secs(5);

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "cannot notify systemd");
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1`: a configuration reload begins (answered by [`ready`]).
pub fn reloading() {
    send(&[
        NotifyState::Reloading,
        NotifyState::Status("reloading the configuration"),
    ]);
}

/// `STOPPING=1`: shutdown begins.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining sinks"),
    ]);
}

/// A `STATUS=` line.
pub fn status(line: &str) {
    send(&[NotifyState::Status(line)]);
}

/// `EXTEND_TIMEOUT_USEC=`: asks for `by` more time to stop (while sinks drain).
pub fn extend_timeout(by: Duration) {
    let usec = u32::try_from(by.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Probes the journal, refreshes `STATUS=` when it changes, and pings the watchdog while
/// everything makes progress, until `stop` is cancelled.
pub async fn supervise(health: Health, stop: CancellationToken) {
    let watchdog = watchdog_interval();
    let every = watchdog.map_or(TICK, |w| (w / 2).clamp(Duration::from_millis(100), TICK));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = String::new();
    let mut was_stuck = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        health.probe_journal(PROBE_WITHIN.min(every * 4)).await;
        let line = health.status_line();
        if line != last_status {
            status(&line);
            last_status = line;
        }
        if watchdog.is_none() {
            continue;
        }
        match health.progress() {
            Ok(()) => {
                if was_stuck {
                    warn!("progress resumed; watchdog pings resume");
                    was_stuck = false;
                }
                send(&[NotifyState::Watchdog]);
            }
            Err(stuck) => {
                if !was_stuck {
                    error!(stuck = %stuck, "no progress: withholding watchdog pings (systemd will restart chatwatch if this lasts)");
                    was_stuck = true;
                }
            }
        }
    }
}
