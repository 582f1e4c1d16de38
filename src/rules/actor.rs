//! One account's actor: performs the operations its workflow found due, one at a time, through
//! the account's own GWS session (its cookie jar and CSRF token, with the session's re-login on a
//! CSRF refusal), and reports every attempt back to the pipeline, which turns it into an
//! `action` event and moves the rule run on.
//!
//! An operation is validated before it is sent (the same [`ChatOperation::validate`] the CLI and
//! the operations API use; a refused one is reported `invalid` and nothing is sent). An HTTP 503
//! (the GWS backend unavailable) or a request that got no answer is retried with a growing delay,
//! up to [`MAX_ATTEMPTS`] attempts, each reported; a GWS `statusCode` refusal (status 2, "not
//! valid for the current state", say) is final at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::workflow::{ActionReport, ActionRequest};
use crate::gws::operations::GwsError;
use crate::gws::session::{GwsSession, SessionError};

/// Attempts of one operation at most (the first and up to four retries).
pub const MAX_ATTEMPTS: u32 = 5;
/// The first retry's delay; each next one doubles, up to [`MAX_RETRY_DELAY`].
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);
/// The longest delay between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(16);

/// What the actor hands back to the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum ActorReport {
    /// One attempt and its outcome.
    Attempt(ActionReport),
    /// A request the actor did not perform because it was stopped first.
    NotPerformed(ActionRequest),
}

/// Runs the actor until `stop` is cancelled or `requests` closes: each request is performed (with
/// its retries) and every attempt reported on `reports` as `M`. With no session (a plain Bayeux
/// account) every request is reported `failed`. On `stop`, the attempt in flight finishes and is
/// reported; requests not started are reported [`ActorReport::NotPerformed`].
pub async fn run<M: From<ActorReport> + Send + 'static>(
    account: String,
    session: Option<Arc<GwsSession>>,
    mut requests: mpsc::UnboundedReceiver<ActionRequest>,
    reports: mpsc::Sender<M>,
    stop: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            request = requests.recv() => match request {
                Some(r) => r,
                None => return,
            },
        };
        perform(&account, session.as_deref(), request, &reports, &stop).await;
    }
    requests.close();
    while let Ok(request) = requests.try_recv() {
        let _ = reports
            .send(M::from(ActorReport::NotPerformed(request)))
            .await;
    }
}

/// Performs one request with its retries, reporting each attempt.
async fn perform<M: From<ActorReport>>(
    account: &str,
    session: Option<&GwsSession>,
    request: ActionRequest,
    reports: &mpsc::Sender<M>,
    stop: &CancellationToken,
) {
    let mut delay = FIRST_RETRY_DELAY;
    for attempt in 1..=MAX_ATTEMPTS {
        let result = match (session, request.operation.validate()) {
            (_, Err(e)) => Err(SessionError::Operation(e)),
            (None, Ok(())) => Err(SessionError::Gws {
                account: account.to_owned(),
                source: GwsError::Malformed {
                    reason: "a plain Bayeux account has no GWS session to act through".into(),
                },
            }),
            (Some(session), Ok(())) => session.operate(&request.chat_id, &request.operation).await,
        };
        let mut report = ActionReport {
            request: request.clone(),
            attempt,
            outcome: "accepted",
            is_final: true,
            gws_status: None,
            http_status: None,
            reference_id: None,
            message: None,
            at: time::OffsetDateTime::now_utc(),
        };
        let retry = match result {
            Ok(response) => {
                report.gws_status = Some(response.status_code);
                report.http_status = Some(200);
                report.reference_id = response.reference_id;
                false
            }
            Err(SessionError::Operation(e)) => {
                report.outcome = "invalid";
                report.message = Some(e.to_string());
                false
            }
            Err(SessionError::Gws { source, .. }) => {
                report.message = Some(source.to_string());
                match source {
                    GwsError::Rejected {
                        status_code,
                        http_status,
                        ..
                    } => {
                        report.outcome = "rejected";
                        report.gws_status = Some(status_code);
                        report.http_status = Some(http_status);
                        false
                    }
                    GwsError::Unavailable { .. } => {
                        report.outcome = "unavailable";
                        report.http_status = Some(503);
                        true
                    }
                    GwsError::NotFound => {
                        report.outcome = "rejected";
                        report.http_status = Some(404);
                        false
                    }
                    GwsError::Http { status, .. } => {
                        report.outcome = "failed";
                        report.http_status = Some(status);
                        status >= 500
                    }
                    _ => {
                        report.outcome = "failed";
                        false
                    }
                }
            }
            Err(e) => {
                report.outcome = "failed";
                report.message = Some(e.to_string());
                true
            }
        };
        let last = !retry || attempt == MAX_ATTEMPTS;
        report.is_final = last;
        match report.outcome {
            "accepted" => {
                info!(account, chat_id = %request.chat_id, rule = %request.rule, operation = request.operation.name(), attempt, "rule operation accepted")
            }
            outcome => {
                warn!(account, chat_id = %request.chat_id, rule = %request.rule, operation = request.operation.name(), attempt, outcome, error = ?report.message, final_attempt = last, "rule operation not accepted")
            }
        }
        if reports
            .send(M::from(ActorReport::Attempt(report)))
            .await
            .is_err()
            || last
        {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {
                // Stopping: this request's remaining retries are not made; the run is scheduled
                // again at the next start.
                let _ = reports.send(M::from(ActorReport::NotPerformed(request))).await;
                return;
            }
        }
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}
