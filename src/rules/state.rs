//! The workflow's state file: `<journal dir>/workflow/<account>.json`, the durable part of one
//! account's [`Workflow`] (pending chats, overdue timers fired, disposition codes, rule runs),
//! rewritten atomically (temporary file, fsync, rename, directory fsync) after every batch that
//! changed it, and read back at start. A file that cannot be read or parsed is set aside as
//! `<account>.json.bad-<unix time>` and the account starts with an empty state, logged and
//! counted: GWS's state recovery then reports every open chat again.

use std::path::{Path, PathBuf};

use tracing::{error, warn};

use super::workflow::{SavedWorkflow, Workflow, WorkflowSettings, STATE_VERSION};

/// Why the state file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the workflow state {}: {message}", path.display())]
pub struct StateError {
    /// The file.
    pub path: PathBuf,
    /// What failed.
    pub message: String,
}

/// The state file of `account` below the journal directory.
pub fn path(journal_dir: &Path, account: &str) -> PathBuf {
    journal_dir.join("workflow").join(format!("{account}.json"))
}

/// The workflow of `settings.account`, restored from `file` when it exists.
pub fn load(file: &Path, settings: WorkflowSettings) -> Workflow {
    let text = match std::fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Workflow::new(settings),
        Err(e) => {
            error!(file = %file.display(), error = %e, "cannot read the workflow state; starting empty");
            metrics::counter!(crate::metrics::WORKFLOW_STATE_ERRORS, "account" => settings.account.clone(), "step" => "read").increment(1);
            return Workflow::new(settings);
        }
    };
    match serde_json::from_slice::<SavedWorkflow>(&text) {
        Ok(saved) if saved.version == STATE_VERSION => Workflow::restore(settings, saved),
        Ok(saved) => {
            set_aside(
                file,
                &format!("version {} is not {STATE_VERSION}", saved.version),
            );
            metrics::counter!(crate::metrics::WORKFLOW_STATE_ERRORS, "account" => settings.account.clone(), "step" => "parse").increment(1);
            Workflow::new(settings)
        }
        Err(e) => {
            set_aside(file, &e.to_string());
            metrics::counter!(crate::metrics::WORKFLOW_STATE_ERRORS, "account" => settings.account.clone(), "step" => "parse").increment(1);
            Workflow::new(settings)
        }
    }
}

fn set_aside(file: &Path, why: &str) {
    let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut bad = file.as_os_str().to_owned();
    bad.push(format!(".bad-{stamp}"));
    let bad = PathBuf::from(bad);
    match std::fs::rename(file, &bad) {
        Ok(()) => {
            warn!(file = %file.display(), set_aside = %bad.display(), error = why, "the workflow state is unreadable; set aside, starting empty")
        }
        Err(e) => {
            warn!(file = %file.display(), error = why, rename_error = %e, "the workflow state is unreadable; starting empty")
        }
    }
}

/// Writes `saved` to `file` atomically (see the module documentation).
pub fn save(file: &Path, saved: &SavedWorkflow) -> Result<(), StateError> {
    let failed = |message: String| StateError {
        path: file.to_owned(),
        message,
    };
    let bytes = serde_json::to_vec(saved).map_err(|e| failed(e.to_string()))?;
    if let Some(dir) = file.parent() {
        crate::fs::create_dirs(dir).map_err(|e| failed(e.to_string()))?;
    }
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".tmp");
    crate::fs::replace_file(file, Path::new(&tmp), &bytes).map_err(|e| failed(e.to_string()))
}
