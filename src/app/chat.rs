//! `chatwatch chat <operation>`: perform one GWS chat operation as the configured agent, and
//! optionally wait for the notification it causes.
//!
//! The operation is validated before anything is sent. With a wait, a Bayeux session subscribed
//! to `/v2/me/chats` is opened first (sharing the login's cookie and CSRF token), so the resulting
//! notification cannot be missed; it is matched by chat id and, where GWS returned one, by
//! `referenceId`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bayeux::client::{self, SessionSettings, SessionStatus};
use crate::bayeux::Delivery;
use crate::event::{Event, EventKind};
use crate::gws::operations::{ChatOperation, OperationError, OperationResponse};
use crate::gws::session::{ChatSnapshot, GwsBehaviour, GwsHooks, GwsSession, SessionError};
use crate::service::config::{Config, ConfigError};
use crate::tracker::ChatTracker;

/// Why a chat command failed.
#[derive(Debug, thiserror::Error)]
pub enum ChatCommandError {
    /// No usable account in the configuration.
    #[error("{0}")]
    Account(String),
    /// The configuration or a secret could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The operation was refused before anything was sent.
    #[error(transparent)]
    Invalid(#[from] OperationError),
    /// Login or the operation failed at GWS.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The notification did not come in time.
    #[error("no notification for chat {chat_id} within {timeout:?} (the operation was accepted)")]
    WaitTimeout {
        /// The chat.
        chat_id: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The notification reports that the operation failed.
    #[error("GWS reported an error for chat {chat_id}: {message}")]
    Failed {
        /// The chat.
        chat_id: String,
        /// The error message of the notification.
        message: String,
    },
    /// The Bayeux session could not be opened in time to wait for the result.
    #[error("could not subscribe to notifications within {0:?}")]
    NotSubscribed(Duration),
}

/// The outcome of a successful chat command.
#[derive(Debug, Clone)]
pub struct ChatOutcome {
    /// GWS's synchronous answer (`statusCode` 0).
    pub response: OperationResponse,
    /// The resulting notification, as an event record, when waited for.
    pub event: Option<Event>,
}

impl ChatOutcome {
    /// The line `chatwatch chat` prints: `Accept accepted for chat <id> (statusCode 0)`, with
    /// GWS's `referenceId` when it sent one.
    pub fn summary(&self, chat_id: &str, op: &ChatOperation) -> String {
        let reference = self
            .response
            .reference_id
            .as_ref()
            .map(|r| {
                format!(
                    ", referenceId {}",
                    serde_json::to_string(r).unwrap_or_default()
                )
            })
            .unwrap_or_default();
        format!(
            "{} accepted for chat {chat_id} (statusCode 0{reference})",
            op.name()
        )
    }
}

/// Picks the account: the named one, or the only enabled one.
pub fn pick_account<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> Result<(&'a str, &'a crate::service::config::AccountConfig), ChatCommandError> {
    match name {
        Some(n) => config
            .accounts
            .get_key_value(n)
            .map(|(k, v)| (k.as_str(), v))
            .ok_or_else(|| {
                ChatCommandError::Account(format!("no account `{n}` in the configuration"))
            }),
        None => {
            let mut enabled = config.accounts.iter().filter(|(_, a)| a.enabled);
            match (enabled.next(), enabled.next()) {
                (Some((k, v)), None) => Ok((k.as_str(), v)),
                (None, _) => Err(ChatCommandError::Account(
                    "no enabled account in the configuration".into(),
                )),
                (Some(_), Some(_)) => Err(ChatCommandError::Account(
                    "several accounts are configured: choose one with --account".into(),
                )),
            }
        }
    }
}

/// Performs `op` on `chat_id` as the account's agent; with `wait`, also waits that long for the
/// resulting notification.
pub async fn run(
    config: &Config,
    account: Option<&str>,
    chat_id: &str,
    op: &ChatOperation,
    wait: Option<Duration>,
) -> Result<ChatOutcome, ChatCommandError> {
    op.validate()?;
    crate::gws::operations::chat_path(chat_id)?;
    let (name, acct) = pick_account(config, account)?;
    let http = acct.http_settings(name, &config.bayeux)?;
    let session = Arc::new(GwsSession::new(
        name,
        acct.url.clone(),
        http.clone(),
        config.bayeux.max_network_delay,
    )?);
    let Some(timeout) = wait else {
        session.login().await?;
        let response = session.operate(chat_id, op).await?;
        return Ok(ChatOutcome {
            response,
            event: None,
        });
    };

    // Subscribe first, so the notification cannot slip past.
    let (tx, mut rx) = mpsc::channel::<Input>(1024);
    let (status_tx, mut status_rx) = watch::channel(SessionStatus::default());
    let stop = CancellationToken::new();
    let behaviour = GwsBehaviour {
        start_contact_center_session: None,
        end_contact_center_session: false,
        recover_state: false,
    };
    let hooks = Arc::new(GwsHooks::new(session.clone(), behaviour, tx.clone()));
    let mut protocol = acct.protocol_config(&config.bayeux);
    protocol.channels = vec!["/v2/me/chats".to_owned()];
    let settings = SessionSettings {
        account: name.to_owned(),
        protocol,
        http,
        reauth_delay: config.bayeux.reauth_delay,
        heartbeat: Default::default(),
    };
    let task = tokio::spawn(client::run(settings, hooks, tx, status_tx, stop.clone()));
    let result = async {
        let deadline = Instant::now() + timeout;
        while !status_rx.borrow_and_update().subscribed {
            if tokio::time::timeout_at(deadline, status_rx.changed())
                .await
                .is_err()
            {
                return Err(ChatCommandError::NotSubscribed(timeout));
            }
        }
        let response = session.operate(chat_id, op).await?;
        let mut tracker = ChatTracker::new(16);
        loop {
            let Ok(Some(input)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
                return Err(ChatCommandError::WaitTimeout {
                    chat_id: chat_id.to_owned(),
                    timeout,
                });
            };
            let Input::Delivery(delivery) = input else {
                continue;
            };
            let event = crate::pipeline::into_event(name, delivery, &mut tracker);
            if !event.answers(chat_id, op, response.reference_id.as_ref()) {
                continue;
            }
            if event.kind == EventKind::Error {
                return Err(ChatCommandError::Failed {
                    chat_id: chat_id.to_owned(),
                    message: event
                        .error_message
                        .unwrap_or_else(|| "(no message)".to_owned()),
                });
            }
            return Ok(ChatOutcome {
                response,
                event: Some(event),
            });
        }
    }
    .await;
    stop.cancel();
    let _ = tokio::time::timeout(config.bayeux.max_network_delay, task).await;
    result
}

/// What the wait loop receives.
#[derive(Debug)]
enum Input {
    Delivery(Delivery),
    Snapshot,
}

impl From<Delivery> for Input {
    fn from(d: Delivery) -> Self {
        Input::Delivery(d)
    }
}

impl From<ChatSnapshot> for Input {
    fn from(_: ChatSnapshot) -> Self {
        Input::Snapshot
    }
}
