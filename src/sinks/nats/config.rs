//! The `nats` sink's configuration ([`NatsSinkConfig`]) and its subject template
//! ([`SubjectTemplate`]).
//!
//! ```toml
//! [sinks.stream]
//! type = "nats"
//! url = ["nats://nats-1.internal:4222", "nats://nats-2.internal:4222"]
//! stream = "CHATWATCH"
//! subject = "chatwatch.events.{account}.{kind}"
//! auth = { user_password = { user = "chatwatch", password = { env = "NATS_PASSWORD" } } }
//! ca_file = "/etc/chatwatch/nats-ca.pem"
//! ```
//!
//! `validate` is pure (it reads no file, variable or socket); `resolve` reads the secrets and
//! the TLS files once, when the sink is built, and its errors name the sink and the key, never a
//! secret's value.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::secret::Secret;
use crate::sinks::{FilterConfig, SinkError};

/// Where a NATS secret (password, token, NKey seed, `.creds` content) comes from: one of
/// `{ value = "..." }`, `{ env = "VAR" }`, `{ file = "/path" }` or `{ credential = "NAME" }`.
///
/// One alias so that the crate's single secret vocabulary can replace it in one place.
pub type NatsSecret = crate::secret::SecretSource;

/// Default `subject`.
pub const DEFAULT_SUBJECT: &str = "chatwatch.events.{account}.{kind}";
/// Default `timeout`: how long one publish waits for its PubAck.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `max_in_flight`.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
/// Largest accepted `max_in_flight`.
pub const MAX_IN_FLIGHT: usize = 65_536;
/// Default `duplicate_window` of a stream the sink creates.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// How the sink authenticates to NATS.
///
/// ```toml
/// auth = { user_password = { user = "chatwatch", password = { env = "NATS_PASSWORD" } } }
/// auth = { token = { file = "/run/credentials/chatwatch.service/nats-token" } }
/// auth = { nkey = { credential = "nats-nkey-seed" } }
/// auth = { credentials = { file = "/etc/chatwatch/chatwatch.creds" } }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NatsAuth {
    /// A user name and password.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: NatsSecret,
    },
    /// A token (`authorization { token: ... }` on the server).
    Token(NatsSecret),
    /// An NKey seed (`SU...`); the server knows the public key.
    Nkey(NatsSecret),
    /// The content of a `.creds` file (a user JWT and NKey seed), e.g. `{ file = "x.creds" }`.
    Credentials(NatsSecret),
}

/// Where a stream the sink creates keeps its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NatsStorage {
    /// On disk (default).
    #[default]
    File,
    /// In memory (lost when the server stops).
    Memory,
}

/// `type = "nats"`: publishes every event to a NATS JetStream stream, with `Nats-Msg-Id` =
/// `event_id`, and advances the journal cursor only after the PubAck. See
/// [`crate::sinks::nats`] for the delivery rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// The NATS server(s): one URL or a list, e.g. `"nats://127.0.0.1:4222"` or
    /// `["nats://a:4222", "tls://b:4222"]`. The client connects to one and fails over to the
    /// others. Required.
    #[serde(deserialize_with = "one_or_many")]
    pub url: Vec<String>,
    /// The subject of each event: dot-separated tokens, where `{account}`, `{kind}`, `{state}`
    /// and `{chat_id}` are replaced by the event's values, each made a safe subject token
    /// (characters other than `A-Z a-z 0-9 - _` become `_`; a missing value is `_`). Default
    /// `"chatwatch.events.{account}.{kind}"`. Events on one subject are in journal order.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// The JetStream stream that must capture the subjects. Every publish names it
    /// (`Nats-Expected-Stream`), so an event captured by another stream is refused, not
    /// stored in the wrong place. Required.
    pub stream: String,
    /// Create the stream at startup if it does not exist (subjects: the template with each
    /// placeholder token as `*`). Default false: the stream is provisioned by the operator.
    #[serde(default, deserialize_with = "crate::sinks::lenient::bool")]
    pub create_stream: bool,
    /// With `create_stream`: the stream's duplicate window, within which a re-published
    /// `Nats-Msg-Id` is dropped, e.g. `"10m"` (default). Must exceed the longest outage after
    /// which chatwatch re-publishes (a restart, a failover).
    #[serde(default = "default_duplicate_window", with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// With `create_stream`: how long the stream keeps messages, e.g. `"7d"`. Default: no
    /// limit. Must not be shorter than `duplicate_window`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
    /// With `create_stream`: the stream's replicas (1 to 5). Default 1; use 3 for durability.
    #[serde(
        default = "default_replicas",
        deserialize_with = "crate::sinks::lenient::usize"
    )]
    pub replicas: usize,
    /// With `create_stream`: `"file"` (default) or `"memory"`.
    #[serde(default)]
    pub storage: NatsStorage,
    /// Authentication: `user_password`, `token`, `nkey` or `credentials`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<NatsAuth>,
    /// A PEM bundle of CA certificates to trust for the server (a private CA). Setting it, or
    /// `cert_file`, requires TLS. Default: the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate (chain) for mutual TLS; needs `key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Which events this sink receives; default: all.
    #[serde(default)]
    pub filter: FilterConfig,
    /// How long one publish waits for its PubAck, e.g. `"5s"` (default). A publish that times
    /// out is ambiguous (it may be stored): it is sent again with the same `Nats-Msg-Id`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How many publishes may await their PubAck at once (pipelining), 1 to 65536. Default
    /// 256. Order per subject is kept either way: after a failure the sink re-publishes from
    /// the first unacknowledged event.
    #[serde(
        default = "default_max_in_flight",
        deserialize_with = "crate::sinks::lenient::usize"
    )]
    pub max_in_flight: usize,
    /// The directory of the dead-letter files (events over the server's `max_payload`):
    /// `<dead_letter_dir>/<sink name>.jsonl`, for `chatwatch deadletter list` and `redrive`.
    /// Default: set by the daemon (`deadletter/` beside the journal directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_dir: Option<PathBuf>,
}

fn default_subject() -> String {
    DEFAULT_SUBJECT.to_owned()
}
fn default_duplicate_window() -> Duration {
    DEFAULT_DUPLICATE_WINDOW
}
fn default_replicas() -> usize {
    1
}
fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_max_in_flight() -> usize {
    DEFAULT_MAX_IN_FLIGHT
}

/// Accepts one string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(url) => vec![url],
        OneOrMany::Many(urls) => urls,
    })
}

/// The resolved secrets and TLS material (what `build` and redrive connect with).
pub(crate) struct Resolved {
    /// The authentication, secrets read.
    pub(crate) auth: Option<ResolvedAuth>,
    /// The TLS client configuration, when TLS options are set.
    pub(crate) tls: Option<rustls::ClientConfig>,
    /// The dead-letter directory.
    pub(crate) dead_letter_dir: PathBuf,
}

/// [`NatsAuth`] with its secret read.
pub(crate) enum ResolvedAuth {
    /// User and password.
    UserPassword(String, Secret),
    /// Token.
    Token(Secret),
    /// NKey seed.
    Nkey(Secret),
    /// `.creds` content.
    Credentials(Secret),
}

impl NatsSinkConfig {
    /// A configuration publishing to `url` into `stream`, dead-lettering into
    /// `dead_letter_dir`, with every other option at its default.
    pub fn new(
        url: impl Into<String>,
        stream: impl Into<String>,
        dead_letter_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            url: vec![url.into()],
            subject: default_subject(),
            stream: stream.into(),
            create_stream: false,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            max_age: None,
            replicas: 1,
            storage: NatsStorage::File,
            auth: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            filter: FilterConfig::default(),
            timeout: DEFAULT_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            dead_letter_dir: Some(dead_letter_dir.into()),
        }
    }

    /// Sets `dead_letter_dir` to `dir` if the configuration left it unset.
    pub fn default_dead_letter_dir(&mut self, dir: impl Into<PathBuf>) {
        if self.dead_letter_dir.is_none() {
            self.dead_letter_dir = Some(dir.into());
        }
    }

    /// Whether the connection must use TLS (a `tls://` URL or any TLS file set).
    pub fn tls_required(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.url.iter().any(|u| u.starts_with("tls://"))
    }

    /// The parsed subject template (call after [`validate`](Self::validate)).
    pub fn subject_template(&self) -> Result<SubjectTemplate, SinkError> {
        SubjectTemplate::parse(&self.subject)
    }

    /// Checks the configuration without touching the environment. Errors name the field.
    pub fn validate(&self) -> Result<(), SinkError> {
        if self.url.is_empty() {
            return Err(SinkError::invalid(
                "url",
                "at least one server URL is required",
            ));
        }
        for (i, url) in self.url.iter().enumerate() {
            validate_url(url).map_err(|reason| SinkError::invalid(format!("url[{i}]"), reason))?;
        }
        self.subject_template()?;
        if !is_valid_name(&self.stream) {
            return Err(SinkError::invalid(
                "stream",
                "must be a non-empty stream name without spaces, `.`, `*`, `>`, `/` or `\\`",
            ));
        }
        if self.timeout.is_zero() {
            return Err(SinkError::invalid("timeout", "must be greater than zero"));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            return Err(SinkError::invalid(
                "max_in_flight",
                format!(
                    "must be between 1 and {MAX_IN_FLIGHT}, got {}",
                    self.max_in_flight
                ),
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(SinkError::invalid(
                "replicas",
                format!("must be between 1 and 5, got {}", self.replicas),
            ));
        }
        if self.duplicate_window.is_zero() {
            return Err(SinkError::invalid(
                "duplicate_window",
                "must be greater than zero (it is what makes re-publishes exactly once)",
            ));
        }
        if let Some(max_age) = self.max_age {
            if max_age < self.duplicate_window {
                return Err(SinkError::invalid(
                    "max_age",
                    "must not be shorter than duplicate_window (the server would shrink the window)",
                ));
            }
        }
        match &self.auth {
            None => {}
            Some(NatsAuth::UserPassword { user, password }) => {
                if user.is_empty() {
                    return Err(SinkError::invalid(
                        "auth.user_password.user",
                        "must not be empty",
                    ));
                }
                validate_secret(password, "auth.user_password.password")?;
            }
            Some(NatsAuth::Token(s)) => validate_secret(s, "auth.token")?,
            Some(NatsAuth::Nkey(s)) => validate_secret(s, "auth.nkey")?,
            Some(NatsAuth::Credentials(s)) => validate_secret(s, "auth.credentials")?,
        }
        for (field, path) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
            ("dead_letter_dir", &self.dead_letter_dir),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(SinkError::invalid(field, "must not be empty"));
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(SinkError::invalid(
                if self.cert_file.is_some() {
                    "key_file"
                } else {
                    "cert_file"
                },
                "cert_file and key_file go together (mutual TLS needs both)",
            ));
        }
        self.filter.validate().map_err(SinkError::filter)
    }

    /// The one secret of `auth`, if any, with its field below the sink (`auth.token`, ...),
    /// for the configuration's resolve step to read and replace.
    pub fn auth_secret_mut(&mut self) -> Option<(&'static str, &mut NatsSecret)> {
        match self.auth.as_mut()? {
            NatsAuth::UserPassword { password, .. } => {
                Some(("auth.user_password.password", password))
            }
            NatsAuth::Token(s) => Some(("auth.token", s)),
            NatsAuth::Nkey(s) => Some(("auth.nkey", s)),
            NatsAuth::Credentials(s) => Some(("auth.credentials", s)),
        }
    }

    /// Validates, then reads the secrets and TLS files. Errors name the sink and the key.
    pub(crate) fn resolve(&self, sink: &str) -> Result<Resolved, SinkError> {
        self.validate().map_err(|e| e.in_sink(sink))?;
        let in_sink = |e: SinkError| e.in_sink(sink);
        let auth = match &self.auth {
            None => None,
            Some(NatsAuth::UserPassword { user, password }) => Some(ResolvedAuth::UserPassword(
                user.clone(),
                read_secret(password, "auth.user_password.password").map_err(in_sink)?,
            )),
            Some(NatsAuth::Token(s)) => Some(ResolvedAuth::Token(
                read_secret(s, "auth.token").map_err(in_sink)?,
            )),
            Some(NatsAuth::Nkey(s)) => Some(ResolvedAuth::Nkey(
                read_secret(s, "auth.nkey").map_err(in_sink)?,
            )),
            Some(NatsAuth::Credentials(s)) => Some(ResolvedAuth::Credentials(
                read_secret(s, "auth.credentials").map_err(in_sink)?,
            )),
        };
        let tls = if self.tls_required() {
            Some(self.tls_config().map_err(in_sink)?)
        } else {
            None
        };
        let dead_letter_dir = self
            .dead_letter_dir
            .clone()
            .ok_or_else(|| SinkError::invalid("dead_letter_dir", "is not set").in_sink(sink))?;
        Ok(Resolved {
            auth,
            tls,
            dead_letter_dir,
        })
    }

    /// The rustls client configuration: the system roots plus `ca_file`, and the client
    /// certificate when set.
    fn tls_config(&self) -> Result<rustls::ClientConfig, SinkError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| pem_error("ca_file", path, e))?;
                if certs.is_empty() {
                    return Err(SinkError::invalid(
                        "ca_file",
                        format!("{}: no PEM certificate found", path.display()),
                    ));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| {
                        SinkError::invalid("ca_file", format!("{}: {e}", path.display()))
                    })?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| SinkError::invalid("ca_file", format!("TLS: {e}")))?
            .with_root_certificates(roots);
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| pem_error("cert_file", cert, e))?;
                let key_der =
                    PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error("key_file", key, e))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| SinkError::invalid("cert_file", format!("{e}")))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }
}

fn pem_error(field: &str, path: &Path, e: rustls::pki_types::pem::Error) -> SinkError {
    SinkError::invalid(field, format!("cannot read {}: {e}", path.display()))
}

/// Checks a secret source without reading it; the error names `field` and the form.
fn validate_secret(source: &NatsSecret, field: &str) -> Result<(), SinkError> {
    source
        .validate(&source.key_in(field))
        .map_err(|e| SinkError::invalid(e.key, e.message))
}

/// Reads a text secret; the error names `field` and the form, never the value.
fn read_secret(source: &NatsSecret, field: &str) -> Result<Secret, SinkError> {
    source
        .read_text(&source.key_in(field))
        .map_err(|e| SinkError::invalid(e.key, e.message))
}

/// A server URL: `nats://`, `tls://`, `ws://`, `wss://` or a bare `host:port`, no spaces.
fn validate_url(url: &str) -> Result<(), String> {
    if url.is_empty() || url.contains(char::is_whitespace) || url.contains(',') {
        return Err("must be one server URL without spaces or commas".to_owned());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
            return Err(format!(
                "scheme must be nats://, tls://, ws:// or wss://, got `{scheme}://`"
            ));
        }
        if rest.is_empty() || rest.starts_with(':') {
            return Err("must name a host".to_owned());
        }
    }
    Ok(())
}

/// A JetStream stream name: non-empty, no whitespace, `.`, `*`, `>`, `/`, `\`.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.contains(|c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
}

/// One piece of a subject token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Account,
    Kind,
    State,
    ChatId,
}

/// A parsed `subject` template: dot-separated tokens, each literal text and placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectTemplate {
    tokens: Vec<Vec<Piece>>,
}

impl SubjectTemplate {
    /// Parses `template`. Literal text may use `A-Z a-z 0-9 - _` and other printable
    /// characters except `*`, `>`, `{`, `}` and whitespace; tokens must not be empty.
    pub fn parse(template: &str) -> Result<Self, SinkError> {
        let err = |reason: String| SinkError::invalid("subject", reason);
        if template.is_empty() {
            return Err(err("must not be empty".to_owned()));
        }
        let mut tokens = Vec::new();
        for token in template.split('.') {
            if token.is_empty() {
                return Err(err(format!(
                    "`{template}` has an empty token (`..` or a dot at an end)"
                )));
            }
            let mut pieces = Vec::new();
            let mut rest = token;
            while !rest.is_empty() {
                if let Some(after) = rest.strip_prefix('{') {
                    let Some((name, tail)) = after.split_once('}') else {
                        return Err(err(format!("`{token}`: unclosed `{{`")));
                    };
                    pieces.push(match name {
                        "account" => Piece::Account,
                        "kind" => Piece::Kind,
                        "state" => Piece::State,
                        "chat_id" => Piece::ChatId,
                        other => {
                            return Err(err(format!(
                                "unknown placeholder `{{{other}}}` (known: {{account}}, {{kind}}, {{state}}, {{chat_id}})"
                            )))
                        }
                    });
                    rest = tail;
                } else {
                    let end = rest.find('{').unwrap_or(rest.len());
                    let text = &rest[..end];
                    if let Some(c) = text.chars().find(|c| {
                        c.is_whitespace() || c.is_control() || matches!(c, '*' | '>' | '}')
                    }) {
                        return Err(err(format!(
                            "`{token}` contains `{c}`, which a subject cannot hold here"
                        )));
                    }
                    pieces.push(Piece::Text(text.to_owned()));
                    rest = &rest[end..];
                }
            }
            tokens.push(pieces);
        }
        Ok(Self { tokens })
    }

    /// The subject of `event`: each placeholder replaced by [`safe_token`] of its value.
    pub fn render(&self, event: &Event) -> String {
        let mut out = String::with_capacity(64);
        for (i, token) in self.tokens.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            for piece in token {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Account => push_safe(&mut out, Some(&event.account)),
                    Piece::Kind => push_safe(&mut out, Some(event.kind.as_str())),
                    Piece::State => push_safe(
                        &mut out,
                        event
                            .chat
                            .as_ref()
                            .and_then(|c| c.state.as_ref())
                            .map(|s| s.as_str()),
                    ),
                    Piece::ChatId => {
                        push_safe(&mut out, event.chat.as_ref().and_then(|c| c.id.as_deref()))
                    }
                }
            }
        }
        out
    }

    /// The stream subject that captures every rendered subject: each token with a
    /// placeholder becomes `*`.
    pub fn wildcard(&self) -> String {
        self.tokens
            .iter()
            .map(|token| {
                if token.iter().all(|p| matches!(p, Piece::Text(_))) {
                    token
                        .iter()
                        .map(|p| match p {
                            Piece::Text(t) => t.as_str(),
                            _ => "",
                        })
                        .collect::<String>()
                } else {
                    "*".to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Appends `value` as a safe subject token piece: `A-Z a-z 0-9 - _` kept, every other
/// character `_`; a missing or empty value is `_`.
fn push_safe(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) if !v.is_empty() => out.extend(v.chars().map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })),
        _ => out.push('_'),
    }
}

/// `value` as a safe subject token (see [`SubjectTemplate::render`]).
pub fn safe_token(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    push_safe(&mut out, Some(value));
    out
}
