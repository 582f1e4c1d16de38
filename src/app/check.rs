//! `chatwatch check`: load a configuration file and take the same resolve step as `run` (every
//! secret read, every sink checked), so a file that checks is a file that runs.
//!
//! With `--outside-unit` ([`ResolveMode::Check`]) a systemd credential that cannot be read here
//! (the check runs outside the unit's credential context, e.g. from `ExecReload=`, which systemd
//! does not give the credentials, or from a shell) is reported as a warning, "not checked here",
//! instead of failing the check. Without it, `check` reads every secret exactly as `run` does.

use std::path::Path;

use crate::secret::{ResolveMode, Resolver};
use crate::service::config::{Config, ConfigError};

/// What a successful check found.
#[derive(Debug)]
pub struct CheckReport {
    /// The effective configuration as loaded (defaults filled in, secrets shown as `***`, each
    /// secret's source as written).
    pub config: Config,
    /// One line per secret that was not checked here (never a value).
    pub warnings: Vec<String>,
}

/// Why a file does not check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file cannot be used: one line naming the file or the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The effective configuration cannot be printed.
    #[error("cannot render the configuration: {0}")]
    Render(#[from] toml::ser::Error),
}

/// Loads `file` and resolves it as `run` would, in `mode` ([`ResolveMode::Run`]: every secret
/// must be readable; [`ResolveMode::Check`]: credentials out of reach are warnings).
pub fn check(file: &Path, mode: ResolveMode) -> Result<CheckReport, CheckError> {
    let config = Config::load(file)?;
    let mut resolver = Resolver::new(mode);
    config.resolve(&mut resolver)?;
    Ok(CheckReport {
        config,
        warnings: resolver.into_warnings(),
    })
}

impl CheckReport {
    /// The effective configuration as TOML, secrets masked.
    pub fn render(&self) -> Result<String, CheckError> {
        Ok(toml::to_string_pretty(&self.config)?)
    }
}
