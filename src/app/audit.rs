//! `chatwatch audit verify`: check the hash chain of an audit sink's files, with the HMAC key
//! given in the same secret vocabulary as the sink's own `hmac_key`.

use std::path::Path;

use crate::secret::{SecretError, SecretSource};
use crate::sinks::audit::{self, VerifyError, VerifyReport};

/// Why the chain could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum AuditCommandError {
    /// The HMAC key cannot be read.
    #[error(transparent)]
    Key(#[from] SecretError),
    /// The files cannot be read.
    #[error(transparent)]
    Verify(#[from] VerifyError),
}

/// Verifies the chain of sink `name` in `dir`, keyed with `hmac_key_file` when given. The
/// report says whether the chain is intact ([`VerifyReport::is_ok`]).
pub fn verify(
    dir: &Path,
    name: &str,
    hmac_key_file: Option<&Path>,
) -> Result<VerifyReport, AuditCommandError> {
    let key = match hmac_key_file {
        Some(path) => Some(SecretSource::File(path.to_owned()).read("--hmac-key-file")?),
        None => None,
    };
    Ok(audit::verify(dir, name, key.as_ref().map(|k| k.expose()))?)
}
