//! The `webhook` sink's configuration: [`WebhookSinkConfig`] and where its secrets come from.
//!
//! ```toml
//! [sinks.disposition]
//! type = "webhook"
//! url = "https://crm.example.com/hooks/chatwatch"
//! secrets = [{ file = "/run/credentials/chatwatch.service/webhook-secret" }]
//! filter = { entered_states = ["LeftChat"] }
//! ```
//!
//! Secrets, the bearer token and the basic-auth password are [`SecretSource`]s, the crate's one
//! secret vocabulary: `{ value = "..." }` (inline; shown as `***`), `{ env = "VAR" }`,
//! `{ file = "/path" }` or `{ credential = "NAME" }`. The configuration's resolve step
//! (`Config::resolve`, shared by `check` and `run`) reads them once; `build` uses what it read.
//! An error names the sink and the key (`sinks.hook.secrets[1].env`), never the value.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::secret::Secret;
use crate::sinks::{FilterConfig, SinkError};

use super::sign::{decode_secret, SigningKey};

/// Default `timeout`: 15 s, as Standard Webhooks suggests (15–30 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default `concurrency` when `ordered = false`.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Largest accepted `concurrency`.
pub const MAX_CONCURRENCY: usize = 256;
/// Default `retry_initial`.
pub const DEFAULT_RETRY_INITIAL: Duration = Duration::from_secs(1);
/// Default `retry_max_backoff`.
pub const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Default `max_age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Headers the sink sets itself, which `headers` may not override.
const RESERVED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
];

/// Where a secret comes from: the crate's one secret vocabulary (`{ value }`, `{ env }`,
/// `{ file }`, `{ credential }`); see [`crate::secret`].
pub use crate::secret::SecretSource;

/// A secret-source error as a sink validation error naming the same key.
fn secret_error(e: crate::secret::SecretError) -> SinkError {
    SinkError::invalid(e.key, e.message)
}

/// How the sink authenticates to the receiver, besides the signature.
///
/// ```toml
/// auth = { bearer = { env = "CRM_TOKEN" } }
/// auth = { basic = { username = "chatwatch", password = { file = "/run/credentials/crm" } } }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(SecretSource),
    /// `Authorization: Basic <base64(username:password)>`.
    Basic {
        /// The user name (no `:`).
        username: String,
        /// The password.
        password: SecretSource,
    },
}

/// `type = "webhook"`: POSTs each event as JSON to a URL, signed per Standard Webhooks, retried
/// with backoff, and dead-lettered when it cannot be delivered. See the module documentation of
/// [`crate::sinks::webhook`] for the delivery rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// The receiver's URL (`https://` in production; `http://` is accepted). Redirects are
    /// never followed. Required.
    pub url: Url,
    /// The signing secrets, at least one: `whsec_<base64>` as Standard Webhooks shows them (the
    /// base64-decoded bytes are the HMAC key) or any other text (its bytes are the key). Each
    /// secret adds one `v1,<signature>` to `webhook-signature`, so during a key rotation list
    /// the new and the old secret and the receiver accepts either. Each entry is
    /// `{ value = "..." }`, `{ env = "VAR" }` or `{ file = "/path" }`. Required.
    pub secrets: Vec<SecretSource>,
    /// How long one attempt may take, from connecting to reading the response, e.g. `"15s"`
    /// (default) or `"500ms"`. An attempt that takes longer counts as a transient failure.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra headers sent with every request, e.g. `{ "x-tenant" = "acme" }`. The values are
    /// treated as secrets (shown as `***`). The `webhook-*` headers, `content-type`,
    /// `content-length`, `host`, `connection` and `transfer-encoding` cannot be set, nor
    /// `authorization` together with `auth`. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Authentication besides the signature: `{ bearer = <source> }` or
    /// `{ basic = { username = "...", password = <source> } }`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<WebhookAuth>,
    /// `true` (default): one request in flight, events strictly in journal order; a failing
    /// event holds back the ones after it until it is delivered or dead-lettered (head-of-line
    /// blocking). `false`: up to `concurrency` events in flight, so order is not kept, and a
    /// failing event does not hold back the others of its batch.
    #[serde(
        default = "default_true",
        deserialize_with = "crate::sinks::lenient::bool"
    )]
    pub ordered: bool,
    /// With `ordered = false`: how many requests may be in flight at once. Default 4, at most
    /// 256. Ignored when `ordered = true`.
    #[serde(
        default = "default_concurrency",
        deserialize_with = "crate::sinks::lenient::usize"
    )]
    pub concurrency: usize,
    /// The ceiling of the first retry's delay, e.g. `"1s"` (default). Retry `n` waits a random
    /// time up to `min(retry_max_backoff, retry_initial * 2^n)` (full jitter), and never less
    /// than the receiver's `Retry-After`.
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// The largest ceiling of a retry delay, e.g. `"5m"` (default).
    #[serde(default = "default_retry_max_backoff", with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Stop retrying an event this long after its first attempt and dead-letter it, e.g.
    /// `"24h"` (default). Measured from the first attempt by this running sink (a restart starts
    /// the clock again for the event at the head of the queue).
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// The directory of the dead-letter files: events that could not be delivered go to
    /// `<dead_letter_dir>/<sink name>.jsonl`, one JSON object per line, for
    /// `chatwatch deadletter list` and `redrive`. Default: set by the daemon (a `deadletter`
    /// directory under the state directory); `build` fails if it is still unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_dir: Option<PathBuf>,
    /// Which events this sink receives; default: all.
    #[serde(default)]
    pub filter: FilterConfig,
    /// Extra trusted CA certificates (PEM bundle) for the receiver. Default: the system roots
    /// only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Send requests through this HTTP(S) proxy, e.g. `http://proxy.internal:3128`. Default:
    /// none (but see `use_env_proxy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Url>,
    /// Honour `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` from the environment. Default: true.
    #[serde(
        default = "default_true",
        deserialize_with = "crate::sinks::lenient::bool"
    )]
    pub use_env_proxy: bool,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_true() -> bool {
    true
}
fn default_concurrency() -> usize {
    DEFAULT_CONCURRENCY
}
fn default_retry_initial() -> Duration {
    DEFAULT_RETRY_INITIAL
}
fn default_retry_max_backoff() -> Duration {
    DEFAULT_RETRY_MAX_BACKOFF
}
fn default_max_age() -> Duration {
    DEFAULT_MAX_AGE
}

/// The resolved, ready-to-send form of a configuration (what `build` and redrive use).
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The signing keys, in configuration order.
    pub(crate) keys: Vec<SigningKey>,
    /// The configured headers plus `authorization`, all marked sensitive.
    pub(crate) headers: reqwest::header::HeaderMap,
    /// The dead-letter directory.
    pub(crate) dead_letter_dir: PathBuf,
}

impl WebhookSinkConfig {
    /// A configuration for `url` signed with `secrets`, dead-lettering into `dead_letter_dir`,
    /// with every other option at its default.
    pub fn new(url: Url, secrets: Vec<SecretSource>, dead_letter_dir: impl Into<PathBuf>) -> Self {
        Self {
            url,
            secrets,
            timeout: DEFAULT_TIMEOUT,
            headers: BTreeMap::new(),
            auth: None,
            ordered: true,
            concurrency: DEFAULT_CONCURRENCY,
            retry_initial: DEFAULT_RETRY_INITIAL,
            retry_max_backoff: DEFAULT_RETRY_MAX_BACKOFF,
            max_age: DEFAULT_MAX_AGE,
            dead_letter_dir: Some(dead_letter_dir.into()),
            filter: FilterConfig::default(),
            ca_file: None,
            proxy: None,
            use_env_proxy: true,
        }
    }

    /// Sets `dead_letter_dir` to `dir` if the configuration left it unset (the daemon passes
    /// `<state dir>/deadletter`).
    pub fn default_dead_letter_dir(&mut self, dir: impl Into<PathBuf>) {
        if self.dead_letter_dir.is_none() {
            self.dead_letter_dir = Some(dir.into());
        }
    }

    /// How many requests may be in flight: 1 when ordered, else `concurrency`.
    pub fn in_flight(&self) -> usize {
        if self.ordered {
            1
        } else {
            self.concurrency
        }
    }

    /// Checks the configuration without touching the environment (no file, variable or
    /// network). Errors name the field, e.g. `headers.webhook-id` or `secrets[1].env`.
    pub fn validate(&self) -> Result<(), SinkError> {
        if !matches!(self.url.scheme(), "http" | "https") || self.url.host().is_none() {
            return Err(SinkError::invalid(
                "url",
                format!(
                    "must be an http:// or https:// URL with a host, got scheme `{}`",
                    self.url.scheme()
                ),
            ));
        }
        if self.secrets.is_empty() {
            return Err(SinkError::invalid(
                "secrets",
                "at least one signing secret is required (Standard Webhooks signs every message)",
            ));
        }
        for (i, source) in self.secrets.iter().enumerate() {
            let field = format!("secrets[{i}]");
            source
                .validate(&source.key_in(&field))
                .map_err(secret_error)?;
            if let SecretSource::Value(v) = source {
                decode_secret(v.expose())
                    .map_err(|e| SinkError::invalid(format!("{field}.value"), e.to_string()))?;
            }
        }
        if self.timeout.is_zero() {
            return Err(SinkError::invalid("timeout", "must be greater than zero"));
        }
        if !self.ordered && !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(SinkError::invalid(
                "concurrency",
                format!(
                    "must be between 1 and {MAX_CONCURRENCY}, got {}",
                    self.concurrency
                ),
            ));
        }
        if self.retry_initial.is_zero() {
            return Err(SinkError::invalid(
                "retry_initial",
                "must be greater than zero",
            ));
        }
        if self.retry_max_backoff < self.retry_initial {
            return Err(SinkError::invalid(
                "retry_max_backoff",
                "must not be less than retry_initial",
            ));
        }
        if self.max_age.is_zero() {
            return Err(SinkError::invalid("max_age", "must be greater than zero"));
        }
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            let parsed = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SinkError::invalid(&field, "is not a valid HTTP header name"))?;
            if RESERVED_HEADERS.contains(&parsed.as_str()) {
                return Err(SinkError::invalid(
                    &field,
                    "is set by the webhook sink itself",
                ));
            }
            if parsed == reqwest::header::AUTHORIZATION && self.auth.is_some() {
                return Err(SinkError::invalid(
                    &field,
                    "conflicts with `auth`; set one of them",
                ));
            }
            HeaderValue::from_str(value.expose())
                .map_err(|_| SinkError::invalid(&field, "is not a valid HTTP header value"))?;
        }
        match &self.auth {
            None => {}
            Some(WebhookAuth::Bearer(source)) => source
                .validate(&source.key_in("auth.bearer"))
                .map_err(secret_error)?,
            Some(WebhookAuth::Basic { username, password }) => {
                if username.is_empty() || username.contains(':') {
                    return Err(SinkError::invalid(
                        "auth.basic.username",
                        "must be non-empty and contain no `:`",
                    ));
                }
                password
                    .validate(&password.key_in("auth.basic.password"))
                    .map_err(secret_error)?;
            }
        }
        if let Some(dir) = &self.dead_letter_dir {
            if dir.as_os_str().is_empty() {
                return Err(SinkError::invalid("dead_letter_dir", "must not be empty"));
            }
        }
        if let Some(path) = &self.ca_file {
            if path.as_os_str().is_empty() {
                return Err(SinkError::invalid("ca_file", "must not be empty"));
            }
        }
        if let Some(proxy) = &self.proxy {
            if !matches!(proxy.scheme(), "http" | "https") {
                return Err(SinkError::invalid(
                    "proxy",
                    format!(
                        "must be an http:// or https:// URL, got scheme `{}`",
                        proxy.scheme()
                    ),
                ));
            }
        }
        self.filter.validate().map_err(SinkError::filter)
    }

    /// Validates, then reads every secret and assembles the headers. Errors name the sink and
    /// the key, never a value.
    pub(crate) fn resolve(&self, sink: &str) -> Result<Resolved, SinkError> {
        self.validate().map_err(|e| e.in_sink(sink))?;
        let in_sink = |e: SinkError| e.in_sink(sink);
        let dead_letter_dir = self
            .dead_letter_dir
            .clone()
            .ok_or_else(|| in_sink(SinkError::invalid("dead_letter_dir", "is not set")))?;
        let mut keys = Vec::with_capacity(self.secrets.len());
        for (i, source) in self.secrets.iter().enumerate() {
            let field = format!("secrets[{i}]");
            let secret = source
                .read_text(&source.key_in(&field))
                .map_err(|e| in_sink(secret_error(e)))?;
            let key = decode_secret(secret.expose())
                .map_err(|e| in_sink(SinkError::invalid(&field, e.to_string())))?;
            keys.push(SigningKey::new(key));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &self.headers {
            // Validated above; map errors anyway rather than panic.
            let field = format!("headers.{name}");
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| in_sink(SinkError::invalid(&field, "invalid name")))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| in_sink(SinkError::invalid(&field, "invalid value")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        if let Some(auth) = &self.auth {
            let (field, text) = match auth {
                WebhookAuth::Bearer(source) => {
                    let token = source
                        .read_text(&source.key_in("auth.bearer"))
                        .map_err(|e| in_sink(secret_error(e)))?;
                    ("auth.bearer", format!("Bearer {}", token.expose()))
                }
                WebhookAuth::Basic { username, password } => {
                    use base64::Engine as _;
                    let password = password
                        .read_text(&password.key_in("auth.basic.password"))
                        .map_err(|e| in_sink(secret_error(e)))?;
                    let token = base64::engine::general_purpose::STANDARD
                        .encode(format!("{username}:{}", password.expose()));
                    ("auth.basic.password", format!("Basic {token}"))
                }
            };
            let mut value = HeaderValue::from_str(&text).map_err(|_| {
                in_sink(SinkError::invalid(field, "is not usable in an HTTP header"))
            })?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(Resolved {
            keys,
            headers,
            dead_letter_dir,
        })
    }

    /// The HTTP settings (TLS roots, proxy, no redirects) of this sink's client.
    pub(crate) fn http_settings(&self) -> crate::http::HttpSettings {
        let mut settings = crate::http::HttpSettings::new(self.url.clone());
        settings.ca_file = self.ca_file.clone();
        settings.proxy = self.proxy.clone();
        settings.no_env_proxy = !self.use_env_proxy;
        settings.connect_timeout = settings.connect_timeout.min(self.timeout);
        settings
    }
}

/// Checks that a sink name can name a file in the dead-letter directory.
pub(crate) fn validate_sink_name(sink: &str) -> Result<(), SinkError> {
    let bad = sink.is_empty()
        || sink == "."
        || sink == ".."
        || sink.contains(['/', '\\', '\0'])
        || Path::new(sink).components().count() != 1;
    if bad {
        return Err(SinkError::Failed {
            sink: sink.to_owned(),
            reason: "the sink name cannot name a dead-letter file (no `/`, `.` or `..`)".to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How the daemon reads a sink table (through the `config` crate, from TOML).
    fn from_toml(text: &str) -> Result<WebhookSinkConfig, String> {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize::<WebhookSinkConfig>())
            .map_err(|e| e.to_string())
    }

    fn minimal() -> WebhookSinkConfig {
        WebhookSinkConfig::new(
            Url::parse("https://crm.example.com/hook").unwrap(),
            vec![SecretSource::Value(Secret::new(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ))],
            "/var/lib/chatwatch/deadletter",
        )
    }

    #[test]
    fn minimal_toml_gets_every_default() {
        let cfg = from_toml(
            r#"
            url = "https://crm.example.com/hook"
            secrets = [{ env = "HOOK_SECRET" }]
            "#,
        )
        .expect("valid");
        assert_eq!(cfg.secrets, [SecretSource::Env("HOOK_SECRET".into())]);
        assert_eq!(cfg.timeout, Duration::from_secs(15));
        assert!(cfg.headers.is_empty());
        assert_eq!(cfg.auth, None);
        assert!(cfg.ordered);
        assert_eq!(cfg.concurrency, 4);
        assert_eq!(cfg.in_flight(), 1);
        assert_eq!(cfg.retry_initial, Duration::from_secs(1));
        assert_eq!(cfg.retry_max_backoff, Duration::from_secs(300));
        assert_eq!(cfg.max_age, Duration::from_secs(86_400));
        assert_eq!(cfg.dead_letter_dir, None);
        assert!(cfg.filter.is_empty());
        assert_eq!((cfg.ca_file.as_ref(), cfg.proxy.as_ref()), (None, None));
        assert!(cfg.use_env_proxy);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn every_option_from_toml() {
        let cfg = from_toml(
            r#"
            url = "http://127.0.0.1:8080/hook"
            secrets = [{ value = "whsec_aGVsbG8=" }, { file = "/run/credentials/old" }]
            timeout = "500ms"
            headers = { "x-tenant" = "acme" }
            auth = { basic = { username = "cw", password = { env = "PW" } } }
            ordered = false
            concurrency = 8
            retry_initial = "50ms"
            retry_max_backoff = "2s"
            max_age = "1h"
            dead_letter_dir = "/tmp/dl"
            filter = { entered_states = ["LeftChat"] }
            ca_file = "/etc/ssl/crm.pem"
            proxy = "http://proxy:3128"
            use_env_proxy = false
            "#,
        )
        .expect("valid");
        assert_eq!(
            cfg.secrets[1],
            SecretSource::File("/run/credentials/old".into())
        );
        assert_eq!(cfg.headers["x-tenant"].expose(), "acme");
        assert_eq!(
            cfg.auth,
            Some(WebhookAuth::Basic {
                username: "cw".into(),
                password: SecretSource::Env("PW".into())
            })
        );
        assert_eq!((cfg.ordered, cfg.in_flight()), (false, 8));
        assert_eq!(cfg.timeout, Duration::from_millis(500));
        assert_eq!(cfg.max_age, Duration::from_secs(3600));
        assert_eq!(cfg.dead_letter_dir, Some(PathBuf::from("/tmp/dl")));
        assert_eq!(cfg.filter.entered_states, ["LeftChat"]);
        assert!(!cfg.use_env_proxy);
        assert!(cfg.validate().is_ok());
        let bearer = from_toml(
            "url = \"https://x/\"\nsecrets = [{ value = \"k\" }]\nauth = { bearer = { file = \"/t\" } }\n",
        )
        .expect("valid");
        assert_eq!(
            bearer.auth,
            Some(WebhookAuth::Bearer(SecretSource::File("/t".into())))
        );
    }

    #[test]
    fn unknown_keys_and_bad_sources_are_rejected() {
        let err = from_toml("url = \"https://x/\"\nsecrets = []\nretries = 3\n").unwrap_err();
        assert!(err.contains("retries"), "{err}");
        let err = from_toml("url = \"https://x/\"\nsecrets = [{ path = \"/x\" }]\n").unwrap_err();
        assert!(err.contains("path"), "{err}");
        let err = from_toml("url = \"https://x/\"\nsecrets = [{ env = \"A\", file = \"/b\" }]\n")
            .unwrap_err();
        assert!(!err.is_empty());
    }

    #[test]
    fn debug_and_serialize_never_show_secrets() {
        let mut cfg = minimal();
        cfg.headers
            .insert("x-api-key".into(), Secret::new("top-secret-key"));
        cfg.auth = Some(WebhookAuth::Bearer(SecretSource::Value(Secret::new(
            "tok-en",
        ))));
        let debug = format!("{cfg:?}");
        let json = serde_json::to_string(&cfg).unwrap();
        for text in [debug, json] {
            assert!(!text.contains("MfKQ9r8GKYqr"), "{text}");
            assert!(!text.contains("top-secret-key"), "{text}");
            assert!(!text.contains("tok-en"), "{text}");
        }
    }

    #[test]
    fn validate_names_the_field() {
        type Change = Box<dyn Fn(&mut WebhookSinkConfig)>;
        let cases: Vec<(&str, Change)> = vec![
            ("url", Box::new(|c| c.url = Url::parse("ftp://x/").unwrap())),
            ("secrets", Box::new(|c| c.secrets.clear())),
            (
                "secrets[0].value",
                Box::new(|c| c.secrets[0] = SecretSource::Value(Secret::new("whsec_%%"))),
            ),
            (
                "secrets[1].env",
                Box::new(|c| c.secrets.push(SecretSource::Env(String::new()))),
            ),
            ("timeout", Box::new(|c| c.timeout = Duration::ZERO)),
            (
                "concurrency",
                Box::new(|c| {
                    c.ordered = false;
                    c.concurrency = 0;
                }),
            ),
            (
                "retry_initial",
                Box::new(|c| c.retry_initial = Duration::ZERO),
            ),
            (
                "retry_max_backoff",
                Box::new(|c| c.retry_max_backoff = Duration::from_millis(1)),
            ),
            ("max_age", Box::new(|c| c.max_age = Duration::ZERO)),
            (
                "headers.Webhook-Id",
                Box::new(|c| {
                    c.headers.insert("Webhook-Id".into(), Secret::new("x"));
                }),
            ),
            (
                "headers.bad name",
                Box::new(|c| {
                    c.headers.insert("bad name".into(), Secret::new("x"));
                }),
            ),
            (
                "headers.x-a",
                Box::new(|c| {
                    c.headers.insert("x-a".into(), Secret::new("a\nb"));
                }),
            ),
            (
                "headers.authorization",
                Box::new(|c| {
                    c.headers.insert("authorization".into(), Secret::new("x"));
                    c.auth = Some(WebhookAuth::Bearer(SecretSource::Env("T".into())));
                }),
            ),
            (
                "auth.basic.username",
                Box::new(|c| {
                    c.auth = Some(WebhookAuth::Basic {
                        username: "a:b".into(),
                        password: SecretSource::Env("P".into()),
                    })
                }),
            ),
            (
                "dead_letter_dir",
                Box::new(|c| c.dead_letter_dir = Some(PathBuf::new())),
            ),
            (
                "proxy",
                Box::new(|c| c.proxy = Some(Url::parse("socks5://p:1").unwrap())),
            ),
            (
                "filter.channels[0]",
                Box::new(|c| c.filter.channels = vec!["nope".into()]),
            ),
        ];
        for (field, change) in cases {
            let mut cfg = minimal();
            change(&mut cfg);
            let err = cfg.validate().expect_err(field).to_string();
            assert!(
                err.starts_with(&format!("invalid `{field}`")),
                "{field}: {err}"
            );
            assert!(!err.contains("MfKQ9r8GKYqr"), "{err}");
        }
        // Ordered ignores `concurrency`.
        let mut cfg = minimal();
        cfg.concurrency = 0;
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn resolve_reads_env_and_file_and_names_sink_and_key_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, "whsec_aGVsbG8=\n").unwrap();
        let mut cfg = minimal();
        cfg.secrets = vec![
            SecretSource::File(secret_file.clone()),
            SecretSource::Value(Secret::new("raw-key")),
        ];
        cfg.auth = Some(WebhookAuth::Basic {
            username: "cw".into(),
            password: SecretSource::File(secret_file.clone()),
        });
        let resolved = cfg.resolve("crm").expect("resolves");
        assert_eq!(resolved.keys[0].bytes(), b"hello");
        assert_eq!(resolved.keys[1].bytes(), b"raw-key");
        let auth = &resolved.headers[reqwest::header::AUTHORIZATION];
        assert!(auth.is_sensitive());
        assert_eq!(format!("{auth:?}"), "Sensitive");

        cfg.secrets
            .push(SecretSource::Env("CHATWATCH_TEST_SURELY_UNSET_VAR".into()));
        let err = cfg.resolve("crm").unwrap_err().to_string();
        assert_eq!(
            err,
            "sink `crm`: invalid `secrets[2].env`: environment variable \
             `CHATWATCH_TEST_SURELY_UNSET_VAR` is not set or empty"
        );
        cfg.secrets.pop();
        std::fs::write(&secret_file, "whsec_not*base64\n").unwrap();
        let err = cfg.resolve("crm").unwrap_err().to_string();
        assert!(err.starts_with("sink `crm`: invalid `secrets[0]`"), "{err}");
        assert!(!err.contains("not*base64"), "{err}");
        std::fs::write(&secret_file, "\n").unwrap();
        let err = cfg.resolve("crm").unwrap_err().to_string();
        assert!(
            err.contains("secrets[0].file") && err.contains("is empty"),
            "{err}"
        );

        let mut unset = minimal();
        unset.dead_letter_dir = None;
        let err = unset.resolve("crm").unwrap_err().to_string();
        assert_eq!(err, "sink `crm`: invalid `dead_letter_dir`: is not set");
        unset.default_dead_letter_dir("/state/deadletter");
        assert_eq!(
            unset.dead_letter_dir,
            Some(PathBuf::from("/state/deadletter"))
        );
        unset.default_dead_letter_dir("/elsewhere");
        assert_eq!(
            unset.dead_letter_dir,
            Some(PathBuf::from("/state/deadletter"))
        );
    }

    #[test]
    fn sink_names_must_name_a_file() {
        for bad in ["", ".", "..", "a/b", "../x", "a\\b"] {
            assert!(validate_sink_name(bad).is_err(), "{bad:?}");
        }
        for good in ["crm", "left-chats", "a.b", "x_1"] {
            assert!(validate_sink_name(good).is_ok(), "{good:?}");
        }
    }
}
