//! The `[api]` section: whether the operations API listens, where, with which bearer tokens
//! (the crate's one secret vocabulary, [`SecretSource`]), optional TLS, and the longest `wait`
//! a request may ask for.
//!
//! ```toml
//! [api]
//! enabled = true
//! listen = "127.0.0.1:9465"
//! wait_max = "30s"
//! tls = { cert_file = "/etc/chatwatch/api.crt", key_file = "/etc/chatwatch/api.key" }
//! [api.tokens]
//! workflow-engine = { credential = "api-token-engine" }
//! ops = { env = "CHATWATCH_API_TOKEN_OPS" }
//! ```
//!
//! Validation ([`ApiConfig::validate`]) is pure; the tokens are read by the configuration's one
//! resolve step ([`crate::service::config::Config::resolve`]) through
//! [`ApiConfig::resolve_tokens`]. Errors name the key (`api.tokens.ops.env`), never a value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::{Resolver, SecretBytes, SecretError, SecretSource};

/// The shortest token accepted: a bearer token is a password, and a short one can be guessed.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The longest `wait_max` accepted.
pub const WAIT_MAX_LIMIT: Duration = Duration::from_secs(600);

/// A rule of the `[api]` section is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ApiConfigError {
    /// The dotted key (`api.tokens`, `api.tls.cert_file`).
    pub key: String,
    /// What is wrong (never a secret's value).
    pub message: String,
}

fn error(key: impl Into<String>, message: impl Into<String>) -> ApiConfigError {
    ApiConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// The operations API listener (see the module documentation).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Serve the operations API. Default: false: an API that performs chat operations as the
    /// agent is opened only on purpose.
    pub enabled: bool,
    /// Address to listen on. Default `127.0.0.1:9465` (loopback): anything else exposes the
    /// API to the network, where it should have `tls`. Port 0 picks a free port (logged).
    pub listen: SocketAddr,
    /// The bearer tokens, by name: `name = <secret>`. The name is logged with every request
    /// (the value never is); several let each client have its own, and one be replaced at a
    /// time. At least one is required when `enabled`.
    pub tokens: BTreeMap<String, SecretSource>,
    /// Serve HTTPS with this certificate chain and key (PEM files). Default: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTls>,
    /// The longest `wait` a request may ask for; a longer one is cut to this. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub wait_max: Duration,
}

/// The API's TLS certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTls {
    /// The certificate chain, PEM, the server's certificate first.
    pub cert_file: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 9465)),
            tokens: BTreeMap::new(),
            tls: None,
            wait_max: Duration::from_secs(30),
        }
    }
}

/// Token names are logged and become metric-free log fields: keep them plain.
fn check_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl ApiConfig {
    /// Checks the section without reading any secret or file.
    pub fn validate(&self) -> Result<(), ApiConfigError> {
        for (name, source) in &self.tokens {
            if !check_token_name(name) {
                return Err(error(
                    format!("api.tokens.{name}"),
                    "a token name is 1 to 64 of A-Z a-z 0-9 _ - .",
                ));
            }
            source
                .validate(&source.key_in(&format!("api.tokens.{name}")))
                .map_err(|e| error(e.key, e.message))?;
        }
        if !self.enabled {
            return Ok(());
        }
        if self.tokens.is_empty() {
            return Err(error(
                "api.tokens",
                "the API is enabled but has no token: add e.g. `[api.tokens]` `engine = { env = \"CHATWATCH_API_TOKEN\" }`",
            ));
        }
        if self.wait_max.is_zero() || self.wait_max > WAIT_MAX_LIMIT {
            return Err(error(
                "api.wait_max",
                format!("must be greater than 0 and at most {WAIT_MAX_LIMIT:?}"),
            ));
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.as_os_str().is_empty() {
                return Err(error("api.tls.cert_file", "must name a file"));
            }
            if tls.key_file.as_os_str().is_empty() {
                return Err(error("api.tls.key_file", "must name a file"));
            }
        }
        Ok(())
    }

    /// Reads every token through `resolver` (when the API is enabled) and replaces each source
    /// with the value read. Refuses a token shorter than [`MIN_TOKEN_CHARS`] and two names with
    /// the same token (the name in the log would not say who called).
    pub fn resolve_tokens(&mut self, resolver: &mut Resolver) -> Result<(), SecretError> {
        if !self.enabled {
            return Ok(());
        }
        let mut seen: Vec<(String, String)> = Vec::new();
        for (name, source) in self.tokens.iter_mut() {
            let key = source.key_in(&format!("api.tokens.{name}"));
            let Some(text) = resolver.read_text(&key, source)? else {
                continue;
            };
            if text.expose().chars().count() < MIN_TOKEN_CHARS {
                return Err(SecretError {
                    key,
                    message: format!("a token must have at least {MIN_TOKEN_CHARS} characters"),
                });
            }
            if text
                .expose()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(SecretError {
                    key,
                    message: "a token must not contain spaces or control characters".into(),
                });
            }
            if let Some((other, _)) = seen.iter().find(|(_, v)| v == text.expose()) {
                return Err(SecretError {
                    key,
                    message: format!("the same token as api.tokens.{other}; give each its own"),
                });
            }
            seen.push((name.clone(), text.expose().to_owned()));
            *source = SecretSource::Resolved(SecretBytes::new(text.expose().as_bytes()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{ResolveMode, Secret};

    fn enabled(tokens: &[(&str, &str)]) -> ApiConfig {
        ApiConfig {
            enabled: true,
            tokens: tokens
                .iter()
                .map(|(n, v)| (n.to_string(), SecretSource::Value(Secret::new(*v))))
                .collect(),
            ..ApiConfig::default()
        }
    }

    #[test]
    fn defaults_are_off_and_on_loopback() {
        let c = ApiConfig::default();
        assert!(!c.enabled);
        assert_eq!(c.listen.to_string(), "127.0.0.1:9465");
        assert_eq!(c.wait_max, Duration::from_secs(30));
        assert!(c.validate().is_ok(), "off needs no token");
    }

    #[test]
    fn enabled_needs_a_token_and_sane_values() {
        assert_eq!(enabled(&[]).validate().unwrap_err().key, "api.tokens");
        let bad_name = enabled(&[("a b", "0123456789abcdef")]);
        assert_eq!(bad_name.validate().unwrap_err().key, "api.tokens.a b");
        let mut c = enabled(&[("engine", "0123456789abcdef")]);
        assert!(c.validate().is_ok());
        c.wait_max = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().key, "api.wait_max");
        c.wait_max = Duration::from_secs(5);
        c.tls = Some(ApiTls {
            cert_file: PathBuf::new(),
            key_file: "k.pem".into(),
        });
        assert_eq!(c.validate().unwrap_err().key, "api.tls.cert_file");
        let env = ApiConfig {
            tokens: [("e".to_owned(), SecretSource::Env(String::new()))].into(),
            ..ApiConfig::default()
        };
        assert_eq!(env.validate().unwrap_err().key, "api.tokens.e.env");
    }

    #[test]
    fn resolving_refuses_short_and_shared_tokens_naming_the_key_only() {
        let mut r = Resolver::new(ResolveMode::Run);
        let mut short = enabled(&[("engine", "short-secret")]);
        let e = short.resolve_tokens(&mut r).unwrap_err();
        assert_eq!(e.key, "api.tokens.engine.value");
        assert!(!e.to_string().contains("short-secret"), "{e}");
        let mut shared = enabled(&[("a", "0123456789abcdef"), ("b", "0123456789abcdef")]);
        let e = shared.resolve_tokens(&mut r).unwrap_err();
        assert_eq!(e.key, "api.tokens.b.value");
        assert!(!e.to_string().contains("0123456789abcdef"), "{e}");
        let mut ok = enabled(&[("a", "0123456789abcdef"), ("b", "fedcba9876543210")]);
        ok.resolve_tokens(&mut r).unwrap();
        assert!(ok
            .tokens
            .values()
            .all(|s| matches!(s, SecretSource::Resolved(_))));
    }

    #[test]
    fn parses_from_toml() {
        let c: ApiConfig = toml::from_str(
            r#"
enabled = true
listen = "127.0.0.1:0"
wait_max = "10s"
tls = { cert_file = "c.pem", key_file = "k.pem" }
[tokens]
engine = { env = "TOKEN" }
ops = "0123456789abcdef"
"#,
        )
        .unwrap();
        assert_eq!(c.tokens.len(), 2);
        assert_eq!(c.wait_max, Duration::from_secs(10));
        assert!(toml::from_str::<ApiConfig>("enable = true").is_err());
    }
}
