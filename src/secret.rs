//! Secrets in the configuration: the one vocabulary for saying where a secret comes from
//! ([`SecretSource`]), the types that never show a value ([`Secret`], [`SecretBytes`]), and the
//! [`Resolver`] that reads them.
//!
//! Every secret field (an account's `password`, a webhook sink's `secrets`, `auth.bearer` and
//! `auth.basic.password`, an audit sink's `hmac_key`) takes the same forms:
//!
//! ```toml
//! password = { value = "..." }       # inline (a plain string means the same)
//! password = { env = "GWS_PASSWORD" } # an environment variable, set and non-empty
//! password = { file = "/etc/chatwatch/gws-password" }  # a file, less one trailing newline
//! password = { credential = "gws-password" }  # systemd: $CREDENTIALS_DIRECTORY/gws-password
//! ```
//!
//! The configuration module reads every secret once, through one [`Resolver`], in the step that
//! both `chatwatch check` and `chatwatch run` take; errors name the key
//! (`sinks.audit.hmac_key_file: cannot read /k: No such file or directory`), never the value. In
//! [`ResolveMode::Check`] (`chatwatch check --outside-unit`) a systemd credential that cannot be
//! read here is reported as a warning, "not checked here", instead of an error.
//!
//! [`Secret`] and [`SecretBytes`] print as `***` in `Debug`, `Display` and when serialised (so
//! `chatwatch check` can print the effective configuration safely); the only way to the value is
//! the explicit `expose`.

use std::fmt;
use std::path::{Path, PathBuf};

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

/// Secret bytes (an HMAC key need not be text). Shown as `***` like [`Secret`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    /// Wraps a value.
    pub fn new(value: impl Into<Vec<u8>>) -> SecretBytes {
        SecretBytes(value.into())
    }

    /// The bytes themselves; use only where they are used as a key or sent.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, for secrets that must be text (passwords, signing secrets, tokens).
    pub fn into_text(self) -> Result<Secret, std::string::FromUtf8Error> {
        String::from_utf8(self.0).map(Secret)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Where a secret comes from: a plain string (inline), or a table with exactly one of the keys
/// `value`, `env`, `file`, `credential`. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// The secret itself, inline in the configuration. Prefer `env`, `file` or `credential`.
    Value(Secret),
    /// The name of an environment variable holding the secret (must be set and non-empty).
    Env(String),
    /// A file holding the secret (one trailing `\n` or `\r\n` is removed; must be non-empty).
    File(PathBuf),
    /// A systemd credential (`LoadCredential=NAME:/path` in the unit): the file
    /// `$CREDENTIALS_DIRECTORY/NAME`, read like `file`.
    Credential(String),
    /// Not written in a file: the value [`Resolver`] read, carried from the resolve step to the
    /// code that uses it, so nothing reads a secret twice. Serialised as `{ value = "***" }`.
    Resolved(SecretBytes),
}

/// The keys of a [`SecretSource`] table.
const SOURCE_KEYS: &[&str] = &["value", "env", "file", "credential"];

impl SecretSource {
    /// The key of this form: `value`, `env`, `file` or `credential`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Value(_) | Self::Resolved(_) => "value",
            Self::Env(_) => "env",
            Self::File(_) => "file",
            Self::Credential(_) => "credential",
        }
    }

    /// The dotted key of this source below `field`: `secrets[0]` → `secrets[0].env`.
    pub fn key_in(&self, field: &str) -> String {
        format!("{field}.{}", self.kind())
    }

    /// Checks the source without reading it (names and paths must not be empty). The error names
    /// `key`, the full key of the source (e.g. `secrets[0].env` or `password_env`).
    pub fn validate(&self, key: &str) -> Result<(), SecretError> {
        let fail = |message: &str| {
            Err(SecretError {
                key: key.to_owned(),
                message: message.to_owned(),
            })
        };
        match self {
            Self::Value(v) if v.is_empty() => fail("must not be empty"),
            Self::Env(var) if var.is_empty() => fail("must name an environment variable"),
            Self::File(path) if path.as_os_str().is_empty() => fail("must name a file"),
            Self::Credential(name) if check_credential_name(name).is_err() => {
                fail("must be a plain file name (as in LoadCredential=NAME:PATH)")
            }
            _ => Ok(()),
        }
    }

    /// Reads the secret, as [`ResolveMode::Run`] does (a missing credential is an error). The
    /// error names `key`, never the value.
    pub fn read(&self, key: &str) -> Result<SecretBytes, SecretError> {
        let mut resolver = Resolver::new(ResolveMode::Run);
        resolver
            .read(key, self)
            .map(|v| v.expect("run mode never skips"))
    }

    /// Reads a secret that must be text (UTF-8), as [`read`](Self::read).
    pub fn read_text(&self, key: &str) -> Result<Secret, SecretError> {
        text(key, self.read(key)?)
    }
}

/// `bytes` as text, or an error naming `key`.
pub fn text(key: &str, bytes: SecretBytes) -> Result<Secret, SecretError> {
    bytes.into_text().map_err(|_| SecretError {
        key: key.to_owned(),
        message: "is not UTF-8 text".to_owned(),
    })
}

impl serde::Serialize for SecretSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(1))?;
        match self {
            Self::Value(_) | Self::Resolved(_) => map.serialize_entry("value", "***")?,
            Self::Env(var) => map.serialize_entry("env", var)?,
            Self::File(path) => map.serialize_entry("file", path)?,
            Self::Credential(name) => map.serialize_entry("credential", name)?,
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = SecretSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a secret: a string, or a table with one of `value`, `env`, `file`, `credential`",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretSource, E> {
                Ok(SecretSource::Value(Secret::new(v)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SecretSource, A::Error> {
                use serde::de::Error;
                let Some(key) = map.next_key::<String>()? else {
                    return Err(A::Error::custom(
                        "an empty secret table: set one of `value`, `env`, `file`, `credential`",
                    ));
                };
                let source = match key.as_str() {
                    "value" => SecretSource::Value(map.next_value()?),
                    "env" => SecretSource::Env(map.next_value()?),
                    "file" => SecretSource::File(map.next_value()?),
                    "credential" => SecretSource::Credential(map.next_value()?),
                    other => return Err(A::Error::unknown_field(other, SOURCE_KEYS)),
                };
                if let Some(second) = map.next_key::<String>()? {
                    return Err(A::Error::custom(format!(
                        "a secret has exactly one source; `{key}` and `{second}` are both set"
                    )));
                }
                Ok(source)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A secret that cannot be read or is malformed. Names the key, never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SecretError {
    /// The dotted key of the secret (`accounts.main.password.env`, `sinks.audit.hmac_key_file`).
    pub key: String,
    /// What is wrong (never the value).
    pub message: String,
}

impl SecretError {
    /// The same error with `prefix.` before its key (`sinks.audit` + `hmac_key_file`).
    pub fn under(mut self, prefix: &str) -> SecretError {
        self.key = format!("{prefix}.{}", self.key);
        self
    }
}

/// How a [`Resolver`] treats a systemd credential it cannot reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveMode {
    /// The daemon (or a command) is about to use the secrets: everything must be readable.
    Run,
    /// `chatwatch check --outside-unit`: a check that may run outside the unit's credential
    /// context (systemd does not give `ExecReload=` processes the service's credentials, a shell
    /// has none). A `credential` that cannot be read (`$CREDENTIALS_DIRECTORY` unset, the file
    /// missing or not readable) is a warning, "not checked here"; every other source must be
    /// readable.
    Check,
}

/// Reads secrets, collecting the warnings of [`ResolveMode::Check`]. See the module
/// documentation.
#[derive(Debug)]
pub struct Resolver {
    mode: ResolveMode,
    warnings: Vec<String>,
}

impl Resolver {
    /// A resolver in `mode`.
    pub fn new(mode: ResolveMode) -> Resolver {
        Resolver {
            mode,
            warnings: Vec::new(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> ResolveMode {
        self.mode
    }

    /// Reads `source`; `key` is its full dotted key, named in errors. `None` when the source
    /// was not checked here (a credential out of reach in [`ResolveMode::Check`]; a warning is
    /// recorded).
    pub fn read(
        &mut self,
        key: &str,
        source: &SecretSource,
    ) -> Result<Option<SecretBytes>, SecretError> {
        source.validate(key)?;
        let fail = |message: String| SecretError {
            key: key.to_owned(),
            message,
        };
        match source {
            SecretSource::Value(v) => Ok(Some(SecretBytes::new(v.expose().as_bytes()))),
            SecretSource::Resolved(v) => Ok(Some(v.clone())),
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(SecretBytes::new(v))),
                _ => Err(fail(format!(
                    "environment variable `{var}` is not set or empty"
                ))),
            },
            SecretSource::File(path) => read_secret_file(path).map(Some).map_err(fail),
            SecretSource::Credential(name) => {
                let read = credential_path(name).and_then(|path| read_secret_file(&path));
                match read {
                    Ok(value) => Ok(Some(value)),
                    Err(why) if self.mode == ResolveMode::Check => {
                        self.warnings.push(format!(
                            "{key}: credential `{name}` not checked here ({why}); the service reads it at start"
                        ));
                        Ok(None)
                    }
                    Err(why) => Err(fail(why)),
                }
            }
        }
    }

    /// Like [`read`](Self::read), for a secret that must be text.
    pub fn read_text(
        &mut self,
        key: &str,
        source: &SecretSource,
    ) -> Result<Option<Secret>, SecretError> {
        match self.read(key, source)? {
            Some(bytes) => text(key, bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The warnings so far, one line each (never a value).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Takes the warnings.
    pub fn into_warnings(self) -> Vec<String> {
        self.warnings
    }
}

/// Reads a secret file: its bytes less one trailing `\n` (or `\r\n`); must not be empty. The
/// error says why, naming the path and never the content.
pub fn read_secret_file(path: &Path) -> Result<SecretBytes, String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(SecretBytes::new(bytes))
}

/// The environment variable systemd sets to the directory of the unit's credentials
/// (`LoadCredential=`).
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

fn check_credential_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "credential name `{name}` must be a plain file name (as in LoadCredential=NAME:PATH)"
        ));
    }
    Ok(())
}

/// The path of the systemd credential `name`: `$CREDENTIALS_DIRECTORY/name`. The error says why
/// it cannot be formed (no credentials directory, or a name that is not a plain file name).
pub fn credential_path(name: &str) -> Result<std::path::PathBuf, String> {
    check_credential_name(name)?;
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
    use std::io::Write;

    #[test]
    fn never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2");
        let back: Secret = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(back.expose(), "x");
        let b = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(format!("{b:?}"), "\"***\"");
        for source in [
            SecretSource::Value(Secret::new("hunter2")),
            SecretSource::Resolved(b),
        ] {
            let shown = format!("{source:?} {}", serde_json::to_string(&source).unwrap());
            assert!(!shown.contains("hunter2"), "{shown}");
            assert_eq!(
                serde_json::to_string(&source).unwrap(),
                r#"{"value":"***"}"#
            );
        }
    }

    #[test]
    fn every_form_deserialises_and_bad_tables_are_refused() {
        let parse = |text: &str| toml::from_str::<BTreeMapOne>(text).map(|m| m.s);
        #[derive(serde::Deserialize)]
        struct BTreeMapOne {
            s: SecretSource,
        }
        assert_eq!(
            parse("s = \"inline\"").unwrap(),
            SecretSource::Value(Secret::new("inline"))
        );
        assert_eq!(
            parse("s = { value = \"v\" }").unwrap(),
            SecretSource::Value(Secret::new("v"))
        );
        assert_eq!(
            parse("s = { env = \"E\" }").unwrap(),
            SecretSource::Env("E".into())
        );
        assert_eq!(
            parse("s = { file = \"/f\" }").unwrap(),
            SecretSource::File("/f".into())
        );
        assert_eq!(
            parse("s = { credential = \"c\" }").unwrap(),
            SecretSource::Credential("c".into())
        );
        let e = parse("s = { path = \"/x\" }").unwrap_err().to_string();
        assert!(e.contains("path") && e.contains("credential"), "{e}");
        let e = parse("s = { env = \"A\", file = \"/b\" }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one"), "{e}");
        assert!(parse("s = {}").is_err());
    }

    #[test]
    fn files_lose_one_newline_and_errors_name_the_key_only() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"top-secret\r\n").unwrap();
        let got = SecretSource::File(f.path().to_owned())
            .read_text("k.file")
            .unwrap();
        assert_eq!(got.expose(), "top-secret");
        let e = SecretSource::File("/nonexistent/key".into())
            .read("sinks.audit.hmac_key_file")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sinks.audit.hmac_key_file: cannot read /nonexistent/key: "),
            "{e}"
        );
        let e = SecretSource::Env("CHATWATCH_TEST_NO_SUCH_VAR_X".into())
            .read("secrets[0].env")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "secrets[0].env: environment variable `CHATWATCH_TEST_NO_SUCH_VAR_X` is not set or empty"
        );
        let e = SecretSource::Value(Secret::new("hunter2"))
            .validate("x")
            .map(|_| "ok".to_owned())
            .unwrap();
        assert_eq!(e, "ok");
        let empty = tempfile::NamedTempFile::new().unwrap();
        let e = SecretSource::File(empty.path().to_owned())
            .read("k")
            .unwrap_err();
        assert!(e.message.contains("is empty"), "{e}");
    }

    #[test]
    fn check_mode_warns_about_an_unreachable_credential_run_mode_fails() {
        // $CREDENTIALS_DIRECTORY is not set in the test environment (cargo test is no unit).
        if std::env::var_os(CREDENTIALS_DIRECTORY).is_some() {
            return;
        }
        let source = SecretSource::Credential("gws-password".into());
        let mut check = Resolver::new(ResolveMode::Check);
        assert_eq!(
            check.read("accounts.main.password.credential", &source),
            Ok(None)
        );
        assert_eq!(check.warnings().len(), 1);
        assert!(
            check.warnings()[0].contains("accounts.main.password.credential")
                && check.warnings()[0].contains("not checked here"),
            "{:?}",
            check.warnings()
        );
        let mut run = Resolver::new(ResolveMode::Run);
        let e = run
            .read("accounts.main.password.credential", &source)
            .unwrap_err();
        assert!(e.message.contains(CREDENTIALS_DIRECTORY), "{e}");
        // Other sources are checked in check mode too.
        assert!(check
            .read("k", &SecretSource::File("/nonexistent/key".into()))
            .is_err());
    }
}
