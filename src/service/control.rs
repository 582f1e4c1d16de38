//! The local control socket: how `chatwatch reload` (systemd's `ExecReload=`) asks the running
//! daemon to reload its configuration and gets the verdict back.
//!
//! Why not SIGHUP from `ExecReload=`: systemd 252 does not give `ExecReload=` processes the
//! service's credentials, so a reload command cannot validate a file that names
//! `password_credential`; and a signal has no answer, so a broken file "reloads" with exit 0.
//! Here the daemon loads and resolves the new file itself (where `$CREDENTIALS_DIRECTORY` is
//! readable), applies it or keeps the old one, and answers on the same connection.
//!
//! Why a unix socket and not the admin listener: operators bind the admin listener to other
//! addresses for scraping, and whoever reaches `/metrics` must not be able to reload. The
//! socket lives in `$RUNTIME_DIRECTORY` (`RuntimeDirectory=chatwatch`, mode 0700), is created
//! with mode 0600, and a connection from another user id than the daemon's is refused
//! (`SO_PEERCRED`): only the service's own user (which `ExecReload=` runs as) and root reach it.
//!
//! Wire format, one line each way: the client sends `reload\n`; the daemon answers one JSON
//! object, `{"ok":true,"summary":"…"}` or `{"ok":false,"error":"…"}`, and closes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Overrides where the daemon binds and the client connects (tests, non-systemd installs).
pub const SOCKET_ENV: &str = "CHATWATCH_CONTROL_SOCKET";
/// The socket's file name inside `$RUNTIME_DIRECTORY`.
pub const SOCKET_NAME: &str = "control.sock";
/// Where the client looks when neither variable is set (`RuntimeDirectory=chatwatch`).
pub const DEFAULT_SOCKET: &str = "/run/chatwatch/control.sock";
/// Counter of control requests, by `result` (`ok`, `failed`, `refused`, `bad_request`).
pub use crate::metrics::CONTROL_REQUESTS as REQUESTS_METRIC;
/// The longest request line read.
const MAX_LINE: u64 = 256;

/// What a successful reload changed (the daemon's summary of it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Accounts started, stopped and restarted.
    pub accounts: super::accounts::AccountChanges,
    /// Sinks started, stopped and restarted.
    pub sinks: crate::delivery::SinkChanges,
    /// Sections that changed in the file but need a restart (their running values are kept).
    pub needs_restart: Vec<String>,
}

impl std::fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(",")
            }
        };
        write!(
            f,
            "accounts added {} removed {} restarted {}; sinks added {} removed {} restarted {}",
            list(&self.accounts.added),
            list(&self.accounts.removed),
            list(&self.accounts.restarted),
            list(&self.sinks.added),
            list(&self.sinks.removed),
            list(&self.sinks.restarted),
        )?;
        if !self.needs_restart.is_empty() {
            write!(
                f,
                "; changed but kept until a restart: {}",
                self.needs_restart.join(",")
            )?;
        }
        Ok(())
    }
}

/// Why the control socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The daemon's socket could not be bound.
    #[error("control socket: cannot listen on {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The client could not reach the daemon.
    #[error("cannot reach the daemon at {path} (is chatwatch running?): {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The conversation broke off.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("the daemon did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer was not one the client understands.
    #[error("unexpected answer from the daemon: {0}")]
    BadReply(String),
    /// The daemon refused the new configuration and runs on the previous one.
    #[error("reload failed, still running on the previous configuration: {0}")]
    Refused(String),
}

/// One reload request, answered through `reply` by the daemon's main loop.
#[derive(Debug)]
pub struct ReloadRequest {
    reply: oneshot::Sender<Result<ReloadSummary, String>>,
}

impl ReloadRequest {
    /// Sends the verdict back to the waiting client.
    pub fn answer(self, verdict: Result<ReloadSummary, String>) {
        let _ = self.reply.send(verdict);
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The socket path the daemon binds: `$CHATWATCH_CONTROL_SOCKET`, else
/// `$RUNTIME_DIRECTORY/control.sock` (the first directory when systemd lists several), else
/// none (no control socket: SIGHUP still reloads).
pub fn daemon_socket_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let dirs = std::env::var("RUNTIME_DIRECTORY").ok()?;
    let first = dirs.split(':').next().filter(|d| !d.is_empty())?;
    Some(Path::new(first).join(SOCKET_NAME))
}

/// The socket path the client connects to: as [`daemon_socket_path`], else
/// [`DEFAULT_SOCKET`].
pub fn client_socket_path() -> PathBuf {
    daemon_socket_path().unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// The daemon's side: a bound socket and the requests it receives.
#[derive(Debug)]
pub struct ControlListener {
    requests: mpsc::Receiver<ReloadRequest>,
    path: PathBuf,
}

impl ControlListener {
    /// Binds `path` (a stale socket from a previous run is replaced), mode 0600, and serves it
    /// until `stop` is cancelled.
    pub fn bind(path: &Path, stop: CancellationToken) -> Result<ControlListener, ControlError> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let bind_err = |source| ControlError::Bind {
            path: path.to_owned(),
            source,
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if meta.file_type().is_socket() {
                std::fs::remove_file(path).map_err(bind_err)?;
            }
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        let (tx, rx) = mpsc::channel(4);
        let own_uid = rustix::process::geteuid().as_raw();
        let shown = path.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            tokio::spawn(serve_one(stream, tx.clone(), own_uid));
                        }
                        Err(e) => {
                            warn!(error = %e, "control socket: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    },
                }
            }
            let _ = std::fs::remove_file(&shown);
        });
        info!(path = %path.display(), "control socket: `chatwatch reload` answers here");
        Ok(ControlListener {
            requests: rx,
            path: path.to_owned(),
        })
    }

    /// The bound path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next reload request.
    pub async fn next(&mut self) -> Option<ReloadRequest> {
        self.requests.recv().await
    }
}

/// The next request of an optional listener (pending forever without one).
pub async fn next_request(listener: &mut Option<ControlListener>) -> Option<ReloadRequest> {
    match listener {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

fn count(result: &'static str) {
    metrics::counter!(REQUESTS_METRIC, "result" => result).increment(1);
}

async fn serve_one(stream: UnixStream, requests: mpsc::Sender<ReloadRequest>, own_uid: u32) {
    let peer = stream.peer_cred().ok().map(|c| c.uid());
    let (read, mut write) = stream.into_split();
    let reply = match peer {
        Some(uid) if uid == own_uid || uid == 0 => {
            let mut line = String::new();
            let mut reader = BufReader::new(read).take(MAX_LINE);
            match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await {
                Ok(Ok(_)) if line.trim() == "reload" => ask(requests).await,
                _ => {
                    count("bad_request");
                    Reply {
                        ok: false,
                        summary: None,
                        error: Some("unknown request (only `reload` is understood)".into()),
                    }
                }
            }
        }
        other => {
            count("refused");
            warn!(peer_uid = ?other, "control socket: a connection from another user was refused");
            Reply {
                ok: false,
                summary: None,
                error: Some("permission denied: not the daemon's user".into()),
            }
        }
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_else(|_| "{\"ok\":false}".into());
    text.push('\n');
    let _ = write.write_all(text.as_bytes()).await;
    let _ = write.shutdown().await;
}

async fn ask(requests: mpsc::Sender<ReloadRequest>) -> Reply {
    let (tx, rx) = oneshot::channel();
    let verdict = match requests.send(ReloadRequest { reply: tx }).await {
        Ok(()) => rx
            .await
            .unwrap_or_else(|_| Err("the daemon is stopping".into())),
        Err(_) => Err("the daemon is stopping".into()),
    };
    match verdict {
        Ok(summary) => {
            count("ok");
            Reply {
                ok: true,
                summary: Some(summary.to_string()),
                error: None,
            }
        }
        Err(why) => {
            count("failed");
            Reply {
                ok: false,
                summary: None,
                error: Some(why),
            }
        }
    }
}

/// The client's side (`chatwatch reload`): asks the daemon at `path` to reload and waits up to
/// `timeout` for the verdict. `Ok` carries the daemon's summary of what changed;
/// [`ControlError::Refused`] its reason for keeping the previous configuration.
pub async fn request_reload(path: &Path, timeout: Duration) -> Result<String, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let talk = async {
        let mut stream =
            UnixStream::connect(path)
                .await
                .map_err(|source| ControlError::Connect {
                    path: path.to_owned(),
                    source,
                })?;
        stream.write_all(b"reload\n").await.map_err(io)?;
        let mut line = String::new();
        BufReader::new(stream)
            .take(64 * 1024)
            .read_line(&mut line)
            .await
            .map_err(io)?;
        Ok::<_, ControlError>(line)
    };
    let line = tokio::time::timeout(timeout, talk)
        .await
        .map_err(|_| ControlError::Timeout(timeout))??;
    let reply: Reply = serde_json::from_str(line.trim())
        .map_err(|_| ControlError::BadReply(line.trim().chars().take(200).collect()))?;
    if reply.ok {
        Ok(reply.summary.unwrap_or_default())
    } else {
        Err(ControlError::Refused(
            reply.error.unwrap_or_else(|| "no reason given".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_gets_the_verdict_of_the_main_loop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let stop = CancellationToken::new();
        let mut listener = ControlListener::bind(&path, stop.clone()).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let answers = tokio::spawn(async move {
            let first = listener.next().await.unwrap();
            first.answer(Ok(ReloadSummary {
                needs_restart: vec!["journal".into()],
                ..Default::default()
            }));
            let second = listener.next().await.unwrap();
            second.answer(Err("sinks.x: bad".into()));
        });
        let ok = request_reload(&path, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(ok.contains("kept until a restart: journal"), "{ok}");
        let err = request_reload(&path, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ControlError::Refused(why) if why == "sinks.x: bad"),
            "{err}"
        );
        answers.await.unwrap();
        stop.cancel();
    }

    #[tokio::test]
    async fn an_unknown_request_is_answered_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let stop = CancellationToken::new();
        let _listener = ControlListener::bind(&path, stop.clone()).unwrap();
        let mut stream = UnixStream::connect(&path).await.unwrap();
        stream.write_all(b"shutdown\n").await.unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.unwrap();
        let reply: Reply = serde_json::from_str(&line).unwrap();
        assert!(!reply.ok);
        assert!(reply.error.unwrap().contains("unknown request"));
        stop.cancel();
    }

    #[tokio::test]
    async fn no_daemon_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = request_reload(&dir.path().join("none.sock"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ControlError::Connect { .. }), "{err}");
    }
}
