//! A string that must never be shown: passwords, tokens, webhook secrets.
//!
//! [`Secret`] prints as `***` in `Debug`, `Display` and when serialised (so `chatwatch check`
//! can print the effective configuration safely); the only way to the value is the explicit
//! [`Secret::expose`].

use std::fmt;

/// A secret string. See the module documentation.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself; use only where it is sent or compared.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// The environment variable systemd sets to the directory of the unit's credentials
/// (`LoadCredential=`).
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// The path of the systemd credential `name`: `$CREDENTIALS_DIRECTORY/name`. The error says why
/// it cannot be formed (no credentials directory, or a name that is not a plain file name).
pub fn credential_path(name: &str) -> Result<std::path::PathBuf, String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "credential name `{name}` must be a plain file name (as in LoadCredential=NAME:PATH)"
        ));
    }
    match std::env::var_os(CREDENTIALS_DIRECTORY) {
        Some(dir) if !dir.is_empty() => Ok(std::path::Path::new(&dir).join(name)),
        _ => Err(format!(
            "credential `{name}`: ${CREDENTIALS_DIRECTORY} is not set (is chatwatch running under systemd with LoadCredential={name}:...?)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
        let back: Secret = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(back.expose(), "x");
    }
}
