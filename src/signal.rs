//! The process signals chatwatch answers, in one place: SIGINT (Ctrl-C) and SIGTERM stop it,
//! SIGHUP reloads the configuration and reopens sink files.
//!
//! [`stop_on_signal`] cancels a token on the first SIGINT or SIGTERM (the CLI spawns it beside
//! every long-running command, whose functions take the token, so tests can stop them without
//! signals). [`Hangup`] is the SIGHUP stream the daemon's main loop selects on; where it cannot be
//! installed it never fires, and that is logged once.

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Waits for the first SIGINT or SIGTERM.
pub async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops chatwatch");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Cancels `token` on the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn stop_on_signal(token: CancellationToken) {
    stop_requested().await;
    info!("stop requested; shutting down");
    token.cancel();
}

/// The SIGHUP stream: reload the configuration, reopen files.
#[derive(Debug)]
pub struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    /// Starts listening for SIGHUP (from now on a SIGHUP no longer kills the process). When that
    /// fails the stream never fires, and a warning says that reload and reopen are off.
    pub fn new() -> Hangup {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = match signal(SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGHUP; reload and reopen are off");
                    None
                }
            };
            Hangup { signal }
        }
        #[cfg(not(unix))]
        {
            Hangup {}
        }
    }

    /// The next SIGHUP; `None` when the stream has ended (pending forever without a stream).
    pub async fn recv(&mut self) -> Option<()> {
        #[cfg(unix)]
        if let Some(s) = &mut self.signal {
            return s.recv().await;
        }
        std::future::pending().await
    }
}

impl Default for Hangup {
    fn default() -> Self {
        Hangup::new()
    }
}
