//! The daemon's configuration: its shape (every field documented, unknown keys refused), loading
//! from a TOML file with `CHATWATCH__SECTION__KEY` environment overrides, pure validation, and
//! the one resolve step ([`Config::resolve`]) that reads every secret.
//!
//! Loading and validation never touch the network, a file other than the configuration or an
//! environment variable other than `CHATWATCH__…`. Errors name the file and the key
//! (`accounts.main.url`), so an operator can fix them without reading code.
//!
//! Secrets (account passwords, webhook secrets and tokens, audit HMAC keys) are written in the
//! crate's one vocabulary ([`SecretSource`]: `{ value }`, `{ env }`, `{ file }`,
//! `{ credential }`); the older account keys `password_env`, `password_file` and
//! `password_credential`, and the audit sink's `hmac_key_file` and `hmac_key_credential`, stay as
//! aliases. [`Config::resolve`] is the only place that reads them: `chatwatch check` and
//! `chatwatch run` (and every SIGHUP reload) call it, so `check` accepts exactly what `run`
//! accepts. They print as `***`, so `chatwatch check` can show the effective configuration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::bayeux::protocol::ProtocolConfig;
use crate::channel;
use crate::http::HttpSettings;
use crate::rules::RuleConfig;
use crate::secret::{Resolver, Secret, SecretError, SecretSource};
use crate::sinks::webhook::WebhookAuth;
use crate::sinks::SinkConfig;

/// The environment variable prefix; `CHATWATCH__BAYEUX__MAX_BACKOFF=10s` sets `bayeux.max_backoff`.
pub const ENV_PREFIX: &str = "CHATWATCH";

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or parsed as TOML.
    #[error("{file}: {message}")]
    Load {
        /// The configuration file.
        file: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A key has a wrong name, type or value.
    #[error("{file}: key `{key}`: {message}")]
    Key {
        /// The configuration file.
        file: PathBuf,
        /// The dotted key path.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// A cross-field rule is broken.
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// The dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A secret could not be read.
    #[error("{key}: {message}")]
    Secret {
        /// The dotted key path of the secret.
        key: String,
        /// Why it could not be read (never the value).
        message: String,
    },
}

impl From<SecretError> for ConfigError {
    fn from(e: SecretError) -> Self {
        ConfigError::Secret {
            key: e.key,
            message: e.message,
        }
    }
}

/// What a command needs from the configuration file; [`Config::load_for`] checks that much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The daemon (`run`, `check`, a reload): everything, including at least one sink.
    Daemon,
    /// A one-shot command (`chat`, `journal`, `deadletter`): the same rules, but a file without
    /// any sink is fine (a chat operation needs only the account).
    Command,
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The GWS accounts to listen for: `[[accounts]]` tables with a `name`, or (equivalently,
    /// and overridable from the environment) `[accounts.<name>]` tables. Each has its own
    /// session, cookie jar and chat tracker; the name is carried in every event and metric.
    #[serde(default)]
    pub accounts: Accounts,
    /// Bayeux protocol timing, shared by every account.
    #[serde(default)]
    pub bayeux: BayeuxConfig,
    /// The chat tracker that supplies `previous_state`.
    #[serde(default)]
    pub tracker: TrackerConfig,
    /// chatwatch's own log output.
    #[serde(default)]
    pub log: LogConfig,
    /// The durable journal every event is written to before any sink sees it.
    #[serde(default)]
    pub journal: crate::journal::JournalConfig,
    /// Where events go, by sink name (`[sinks.<name>]` with a `type`).
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Shutdown behaviour.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// The admin HTTP listener: `/metrics`, `/livez`, `/readyz`.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The operations API for workflow engines (`[api]`, default off). See
    /// [`crate::api::ApiConfig`].
    #[serde(default)]
    pub api: crate::api::ApiConfig,
    /// Rules that act on chats (`[[rules]]`): e.g. a chat still in `LeftChat` 10 minutes after
    /// the agent left gets a disposition code and is completed. See [`RuleConfig`].
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

/// The accounts by name. Deserialises from an array of tables with a `name` key
/// (`[[accounts]]`) or from a table of tables (`[accounts.<name>]`); serialises as the array.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accounts(pub BTreeMap<String, AccountConfig>);

impl std::ops::Deref for Accounts {
    type Target = BTreeMap<String, AccountConfig>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Accounts {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Serialize for Accounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (name, account) in &self.0 {
            let mut named = account.clone();
            named.name = Some(name.clone());
            seq.serialize_element(&named)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Accounts {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Accounts;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of [[accounts]] tables, or [accounts.<name>] tables")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Accounts, A::Error> {
                let mut map = BTreeMap::new();
                while let Some(mut account) = seq.next_element::<AccountConfig>()? {
                    let name = account.name.take().ok_or_else(|| {
                        serde::de::Error::custom("an [[accounts]] entry has no `name`")
                    })?;
                    check_account_name(&name).map_err(serde::de::Error::custom)?;
                    if map.insert(name.clone(), account).is_some() {
                        return Err(serde::de::Error::custom(format!(
                            "two accounts are named `{name}`"
                        )));
                    }
                }
                Ok(Accounts(map))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<Accounts, A::Error> {
                let mut map = BTreeMap::new();
                while let Some((name, mut account)) =
                    access.next_entry::<String, AccountConfig>()?
                {
                    if let Some(inner) = account.name.take() {
                        if inner != name {
                            return Err(serde::de::Error::custom(format!(
                                "[accounts.{name}] has `name = \"{inner}\"`; drop it or make them equal"
                            )));
                        }
                    }
                    check_account_name(&name).map_err(serde::de::Error::custom)?;
                    map.insert(name, account);
                }
                Ok(Accounts(map))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// Account names go into metrics labels, file names and log lines: keep them plain.
fn check_account_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "account name `{name}`: use 1 to 64 of A-Z a-z 0-9 _ - ."
        ))
    }
}

/// The admin HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Serve `/metrics`, `/livez` and `/readyz`. Default: true.
    pub enabled: bool,
    /// Address to listen on. Anything but a loopback address exposes the metrics to the
    /// network: put it behind a firewall. Port 0 picks a free port (logged). Default:
    /// `127.0.0.1:9464`.
    pub listen: std::net::SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// One GWS account: where to connect, as whom, and which channels to follow.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The account name, in `[[accounts]]` form (in `[accounts.<name>]` form the table name is
    /// the account name). Letters, digits, `_`, `-`, `.`; at most 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Set to false to keep the account in the file without running it. Default: true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Base URL of the GWS server, e.g. `https://gws.example.com:8090`.
    pub url: Url,
    /// Path of the CometD endpoint below `url`. Default: `/api/v2/notifications`.
    #[serde(default = "default_notifications_path")]
    pub notifications_path: String,
    /// The agent's user name, sent with HTTP Basic authentication. Default: none.
    #[serde(default)]
    pub username: Option<String>,
    /// The password, in the crate's secret vocabulary: `password = "..."` (inline, same as
    /// `{ value = "..." }`), `{ env = "VAR" }`, `{ file = "/path" }` (the content without a
    /// trailing newline) or `{ credential = "NAME" }` (systemd `LoadCredential=NAME:/path`: the
    /// file `$CREDENTIALS_DIRECTORY/NAME`). Prefer anything but inline. Default: none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_password"
    )]
    pub password: Option<SecretSource>,
    /// Alias of `password = { env = "..." }`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// Alias of `password = { file = "..." }`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Alias of `password = { credential = "..." }`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_credential: Option<String>,
    /// Channels (names or globs `*`, `**`) to stay subscribed to. Default: `["/v2/me/chats"]`.
    #[serde(default = "default_channels")]
    pub channels: Vec<String>,
    /// Extra trusted CA certificates (PEM) for this server. Default: the system roots only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate. Only for a lab; never in production. Default: false.
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
    /// Send requests through this HTTP(S) proxy. Default: none (but see `use_env_proxy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Url>,
    /// Honour `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` from the environment. Default: true.
    #[serde(default = "yes")]
    pub use_env_proxy: bool,
    /// Transports to try, in order: `websocket`, `long-polling`. The first that works is used;
    /// if WebSocket cannot be opened or its first handshake fails, chatwatch falls back to the
    /// next; once WebSocket has worked it stays on it across reconnects. Default:
    /// `["websocket", "long-polling"]`.
    #[serde(default = "default_transports")]
    pub transports: Vec<Transport>,
    /// Ask the server for the `ack` extension (CometD: at-least-once delivery within a session;
    /// the server redelivers what a lost connect reply carried, and chatwatch drops the
    /// duplicates). Servers without it ignore the request. Default: true.
    #[serde(default = "yes")]
    pub ack: bool,
    /// `listener` (default): chatwatch only listens; it never sends `StartContactCenterSession`
    /// or `EndContactCenterSession`, so the agent's own desktop session (Workspace) is never
    /// logged out by a restart of chatwatch. `agent`: chatwatch drives the agent's
    /// contact-centre session itself: it starts one after subscribing (on
    /// `contact_center_channels`) and ends it on shutdown (`end_contact_center_session`). Only
    /// for accounts nobody else uses.
    #[serde(default)]
    pub mode: AccountMode,
    /// The user-data key of the disposition code, as GWS's `dispositionKey` and Workspace's
    /// `interaction.disposition.key-name`. Default: `DispositionCode`.
    #[serde(default = "default_disposition_key")]
    pub disposition_key: String,
    /// Emit one `disposition_overdue` event per chat that stays pending disposition (in
    /// `LeftChat`) longer than this, e.g. `"15m"`. Default: none (off).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub overdue_after: Option<Duration>,
    /// `gws` (default): log in to GWS first (`GET /api/v2/me` for the `JSESSIONID` cookie and
    /// the CSRF token), start the contact-centre session, recover chat state after every
    /// (re)handshake. `bayeux`: a plain Bayeux/CometD server (no login; e.g. Faye).
    #[serde(default)]
    pub server: ServerKind,
    /// In `mode = "agent"`: media channels for `StartContactCenterSession` after the
    /// subscriptions are confirmed; an empty list starts none. Ignored in `listener` mode.
    /// Default: `["chat"]`.
    #[serde(default = "default_media")]
    pub contact_center_channels: Vec<String>,
    /// In `mode = "agent"`: send `EndContactCenterSession` on shutdown (when one was started).
    /// Ignored in `listener` mode. Default: true.
    #[serde(default = "yes")]
    pub end_contact_center_session: bool,
    /// After every (re)handshake read `GET /api/v2/me?subresources=*` and report each chat whose
    /// state changed (or that vanished) while chatwatch was not listening, as events with
    /// `recovered: true`. Default: true.
    #[serde(default = "yes")]
    pub recover_state: bool,
}

/// Whether chatwatch only listens to an account or drives its contact-centre session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountMode {
    /// Never start or end the agent's contact-centre session (the default).
    #[default]
    Listener,
    /// Start the contact-centre session after subscribing and end it on shutdown.
    Agent,
}

fn default_disposition_key() -> String {
    crate::rules::DEFAULT_DISPOSITION_KEY.to_owned()
}

/// A Bayeux transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// One socket; the server pushes deliveries at any time.
    Websocket,
    /// HTTP long-polling: the server holds `/meta/connect` and answers it with deliveries.
    LongPolling,
}

impl Transport {
    /// The Bayeux `connectionType`.
    pub fn connection_type(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::LongPolling => "long-polling",
        }
    }
}

fn default_transports() -> Vec<Transport> {
    vec![Transport::Websocket, Transport::LongPolling]
}

/// What kind of server an account talks to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    /// Genesys Web Services: login, CSRF, contact-centre session, state recovery.
    #[default]
    Gws,
    /// A plain Bayeux server.
    Bayeux,
}

/// Bayeux timing. The server's advice overrides `default_timeout` and `default_max_interval`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BayeuxConfig {
    /// Allowance for the network on every request; a connect may take the server's hold time
    /// plus this. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub max_network_delay: Duration,
    /// Backoff step per consecutive failure. Default: 1s.
    #[serde(with = "humantime_serde")]
    pub backoff_increment: Duration,
    /// Backoff cap. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Assumed connect hold time until the server advises one. Default: 30s.
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// Assumed session lifetime without a connect until the server advises one. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub default_max_interval: Duration,
    /// Wait before starting a new session after the server refused one (`reconnect: none`).
    /// Default: 60s.
    #[serde(with = "humantime_serde")]
    pub reauth_delay: Duration,
    /// Largest response body accepted, in bytes; larger ones are dropped and the connect
    /// retried. Default: 8388608 (8 MiB).
    pub max_response_bytes: usize,
    /// Timeout for opening a TCP/TLS connection. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Idle HTTP connections kept per host (at least 2: the held connect plus one). Default: 2.
    pub connections_per_host: usize,
}

impl Default for BayeuxConfig {
    fn default() -> Self {
        BayeuxConfig {
            max_network_delay: Duration::from_secs(10),
            backoff_increment: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            default_timeout: Duration::from_secs(30),
            default_max_interval: Duration::from_secs(10),
            reauth_delay: Duration::from_secs(60),
            max_response_bytes: 8 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            connections_per_host: 2,
        }
    }
}

/// The chat tracker.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// Most chats remembered per account; beyond it the least recently seen is forgotten (and
    /// counted in `chatwatch_tracker_evictions_total`). Default: 100000.
    pub max_chats: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig { max_chats: 100_000 }
    }
}

/// Format of chatwatch's own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `journald` when standard output is connected to the systemd journal
    /// (`$JOURNAL_STREAM`), `human` on a terminal, `json` otherwise.
    #[default]
    Auto,
    /// Human-readable lines on standard output.
    Human,
    /// One JSON object per line on standard output.
    Json,
    /// Native journald entries with structured fields (`ACCOUNT=`, `SINK=`, ...), falling
    /// back to JSON on standard output when the journal socket is not there.
    Journald,
}

/// chatwatch's own log output (on standard output).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Level filter in `RUST_LOG` syntax (`info`, `chatwatch=debug`); `RUST_LOG` overrides it.
    /// Default: `info`.
    pub level: String,
    /// `auto`, `human`, `json` or `journald`. Default: `auto` (journald under systemd, human
    /// on a terminal, JSON otherwise).
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Auto,
        }
    }
}

/// Shutdown behaviour.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long sinks may take to write what is queued when chatwatch stops. Default: 10s.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: Duration::from_secs(10),
        }
    }
}

fn yes() -> bool {
    true
}

/// An inline password prints as `password = "***"`, the other forms as their table.
fn serialize_password<S: serde::Serializer>(
    password: &Option<SecretSource>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match password {
        Some(SecretSource::Value(_) | SecretSource::Resolved(_)) | None => s.serialize_str("***"),
        Some(source) => source.serialize(s),
    }
}

fn default_notifications_path() -> String {
    "/api/v2/notifications".to_owned()
}

fn default_media() -> Vec<String> {
    vec!["chat".to_owned()]
}

fn default_channels() -> Vec<String> {
    vec!["/v2/me/chats".to_owned()]
}

impl Config {
    /// Reads `file`, applies `CHATWATCH__…` overrides from the process environment, and
    /// validates the result.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        Self::load_for(file, Purpose::Daemon)
    }

    /// Like [`load`](Self::load), checking only what `purpose` needs.
    pub fn load_for(file: &Path, purpose: Purpose) -> Result<Config, ConfigError> {
        Self::load_with_env_for(file, std::env::vars(), purpose)
    }

    /// Like [`load`](Self::load), with the environment given explicitly (for tests).
    pub fn load_with_env(
        file: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Self::load_with_env_for(file, env, Purpose::Daemon)
    }

    /// [`load_for`](Self::load_for) with the environment given explicitly.
    pub fn load_with_env_for(
        file: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        purpose: Purpose,
    ) -> Result<Config, ConfigError> {
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .collect();
        let built = config::Config::builder()
            .add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            )
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .separator("__")
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError::Load {
                file: file.to_owned(),
                message: strip_origin(&e.to_string(), file),
            })?;
        let config: Config = serde_path_to_error::deserialize(built).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Key {
                file: file.to_owned(),
                key: if key == "." {
                    "(top level)".to_owned()
                } else {
                    key
                },
                message: strip_origin(&e.into_inner().to_string(), file),
            }
        })?;
        let mut config = config;
        config.apply_derived_defaults();
        config.validate_for(file, purpose)?;
        Ok(config)
    }

    /// The one resolve step: reads every secret of every enabled account and every sink through
    /// `resolver` and returns the configuration with each replaced by the value read
    /// ([`SecretSource::Resolved`]), so nothing reads a secret twice. `chatwatch check` and
    /// `chatwatch run` (and each reload) both call it. The first error names the key
    /// (`sinks.audit.hmac_key_file: cannot read /k: No such file or directory`); in
    /// [`ResolveMode::Check`](crate::secret::ResolveMode::Check) an unreachable systemd
    /// credential is left as it is and reported in `resolver.warnings()`.
    pub fn resolve(&self, resolver: &mut Resolver) -> Result<Config, ConfigError> {
        let mut out = self.clone();
        for (name, account) in out.accounts.iter_mut() {
            if !account.enabled {
                continue;
            }
            if let Some((key, source)) = account.password_source(name) {
                if let Some(value) = resolver.read_text(&key, &source)? {
                    account.password = Some(SecretSource::Resolved(
                        crate::secret::SecretBytes::new(value.expose().as_bytes()),
                    ));
                    account.password_env = None;
                    account.password_file = None;
                    account.password_credential = None;
                }
            }
        }
        out.api.resolve_tokens(resolver)?;
        for (name, sink) in out.sinks.iter_mut() {
            let key = |field: &str| format!("sinks.{name}.{field}");
            match sink {
                SinkConfig::Webhook(w) => {
                    for (i, source) in w.secrets.iter_mut().enumerate() {
                        let key = source.key_in(&key(&format!("secrets[{i}]")));
                        if let Some(text) = resolver.read_text(&key, source)? {
                            // The signing secret must decode too, as the sink will.
                            crate::sinks::webhook::decode_secret(text.expose()).map_err(|e| {
                                ConfigError::Secret {
                                    key: key.clone(),
                                    message: e.to_string(),
                                }
                            })?;
                            *source = resolved(text);
                        }
                    }
                    let auth = match &mut w.auth {
                        Some(WebhookAuth::Bearer(source)) => Some(("auth.bearer", source)),
                        Some(WebhookAuth::Basic { password, .. }) => {
                            Some(("auth.basic.password", password))
                        }
                        None => None,
                    };
                    if let Some((field, source)) = auth {
                        let key = source.key_in(&key(field));
                        if let Some(text) = resolver.read_text(&key, source)? {
                            *source = resolved(text);
                        }
                    }
                }
                SinkConfig::Audit(a) => {
                    if let Some((field, source)) = a.hmac_key_source() {
                        if let Some(bytes) = resolver.read(&key(&field), &source)? {
                            a.hmac_key = Some(SecretSource::Resolved(bytes));
                            a.hmac_key_file = None;
                            a.hmac_key_credential = None;
                        }
                    }
                }
                SinkConfig::Nats(n) => {
                    if let Some((field, source)) = n.auth_secret_mut() {
                        let key = source.key_in(&key(field));
                        if let Some(text) = resolver.read_text(&key, source)? {
                            *source = resolved(text);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// Defaults that depend on other settings: a webhook sink without `dead_letter_dir` writes
    /// its dead letters to `deadletter/` beside the journal directory.
    pub fn apply_derived_defaults(&mut self) {
        let dead_letters = self.journal.dir.parent().map_or_else(
            || self.journal.dir.join("deadletter"),
            |p| p.join("deadletter"),
        );
        for sink in self.sinks.values_mut() {
            if let SinkConfig::Webhook(w) = sink {
                w.default_dead_letter_dir(dead_letters.clone());
            }
            if let SinkConfig::Nats(n) = sink {
                n.default_dead_letter_dir(dead_letters.clone());
            }
        }
    }

    /// Cross-field rules that types alone cannot express, for the daemon. Pure: reads no file
    /// or variable.
    pub fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        self.validate_for(file, Purpose::Daemon)
    }

    /// [`validate`](Self::validate) for `purpose`.
    pub fn validate_for(&self, file: &Path, purpose: Purpose) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            key,
            message,
        };
        if !self.accounts.values().any(|a| a.enabled) {
            return Err(invalid(
                "accounts".into(),
                "no enabled account: add an [[accounts]] table with at least `name` and `url`"
                    .into(),
            ));
        }
        for (name, account) in self.accounts.iter() {
            let key = |field: &str| format!("accounts.{name}.{field}");
            if !matches!(account.url.scheme(), "http" | "https") {
                return Err(invalid(
                    key("url"),
                    format!(
                        "scheme must be http or https, not `{}`",
                        account.url.scheme()
                    ),
                ));
            }
            if !account.notifications_path.starts_with('/') {
                return Err(invalid(
                    key("notifications_path"),
                    "must start with `/`".into(),
                ));
            }
            if account.transports.is_empty() {
                return Err(invalid(
                    key("transports"),
                    "at least one of \"websocket\" and \"long-polling\" is needed".into(),
                ));
            }
            if account.transports.len() > 2
                || (account.transports.len() == 2 && account.transports[0] == account.transports[1])
            {
                return Err(invalid(
                    key("transports"),
                    "a transport is listed twice".into(),
                ));
            }
            if account.channels.is_empty() {
                return Err(invalid(
                    key("channels"),
                    "at least one channel is needed".into(),
                ));
            }
            for ch in &account.channels {
                channel::validate_pattern(ch)
                    .map_err(|e| invalid(key("channels"), e.to_string()))?;
            }
            let sources = [
                account.password.is_some(),
                account.password_env.is_some(),
                account.password_file.is_some(),
                account.password_credential.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count();
            if sources > 1 {
                return Err(invalid(
                    key("password"),
                    "set only one of `password`, `password_env`, `password_file` and `password_credential`".into(),
                ));
            }
            if sources == 1 && account.username.is_none() {
                return Err(invalid(
                    key("username"),
                    "a password is set but no username".into(),
                ));
            }
            if account.disposition_key.trim().is_empty() {
                return Err(invalid(key("disposition_key"), "must not be empty".into()));
            }
            if account.overdue_after.is_some_and(|d| d.is_zero()) {
                return Err(invalid(
                    key("overdue_after"),
                    "must be greater than 0 (leave it out to turn the timer off)".into(),
                ));
            }
        }
        let names: std::collections::HashSet<&str> =
            self.accounts.keys().map(String::as_str).collect();
        crate::rules::config::validate_all(&self.rules, &names).map_err(|e| {
            ConfigError::Invalid {
                file: file.to_owned(),
                key: e.key,
                message: e.message,
            }
        })?;
        self.api.validate().map_err(|e| ConfigError::Invalid {
            file: file.to_owned(),
            key: e.key,
            message: e.message,
        })?;
        let b = &self.bayeux;
        if b.backoff_increment.is_zero() {
            return Err(invalid(
                "bayeux.backoff_increment".into(),
                "must be greater than 0".into(),
            ));
        }
        if b.max_backoff < b.backoff_increment {
            return Err(invalid(
                "bayeux.max_backoff".into(),
                "must be at least `backoff_increment`".into(),
            ));
        }
        if b.max_network_delay.is_zero() {
            return Err(invalid(
                "bayeux.max_network_delay".into(),
                "must be greater than 0".into(),
            ));
        }
        if b.max_response_bytes < 1024 {
            return Err(invalid(
                "bayeux.max_response_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        if self.tracker.max_chats == 0 {
            return Err(invalid(
                "tracker.max_chats".into(),
                "must be greater than 0".into(),
            ));
        }
        if tracing_subscriber::EnvFilter::builder()
            .parse(&self.log.level)
            .is_err()
        {
            return Err(invalid(
                "log.level".into(),
                format!("`{}` is not a valid level filter", self.log.level),
            ));
        }
        self.journal
            .validate()
            .map_err(|e| invalid("journal".into(), e.to_string()))?;
        if self.sinks.is_empty() && purpose == Purpose::Daemon {
            return Err(invalid(
                "sinks".into(),
                "no sink configured: add e.g. [sinks.console] with type = \"log\"".into(),
            ));
        }
        for (name, sink) in &self.sinks {
            // Sink names become file names (audit files, dead letters) and metric labels.
            if name.is_empty() || name.contains(['/', '\\', '\0']) || name == "." || name == ".." {
                return Err(invalid(
                    format!("sinks.{name}"),
                    format!("the sink name `{name}` cannot be used as a file name"),
                ));
            }
            sink.validate()
                .map_err(|e| invalid(format!("sinks.{name}"), e.to_string()))?;
        }
        Ok(())
    }
}

impl AccountConfig {
    /// The full URL of the CometD endpoint.
    pub fn notifications_url(&self) -> Result<Url, url::ParseError> {
        let mut url = self.url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}{}", self.notifications_path));
        Ok(url)
    }

    /// Where the password comes from, with the dotted key that names it in errors
    /// (`accounts.main.password.env`, or an alias as written: `accounts.main.password_file`).
    pub fn password_source(&self, name: &str) -> Option<(String, SecretSource)> {
        let key = |field: &str| format!("accounts.{name}.{field}");
        if let Some(source) = &self.password {
            let key = match source {
                // `password = "..."` is written without a `.value`.
                SecretSource::Value(_) | SecretSource::Resolved(_) => key("password"),
                other => other.key_in(&key("password")),
            };
            return Some((key, source.clone()));
        }
        if let Some(var) = &self.password_env {
            return Some((key("password_env"), SecretSource::Env(var.clone())));
        }
        if let Some(path) = &self.password_file {
            return Some((key("password_file"), SecretSource::File(path.clone())));
        }
        self.password_credential.as_ref().map(|cred| {
            (
                key("password_credential"),
                SecretSource::Credential(cred.clone()),
            )
        })
    }

    /// Reads the password from wherever it is configured (the value [`Config::resolve`] read,
    /// when it ran). The error names the key, never the value.
    pub fn resolve_password(&self, name: &str) -> Result<Option<Secret>, ConfigError> {
        match self.password_source(name) {
            Some((key, source)) => Ok(Some(source.read_text(&key)?)),
            None => Ok(None),
        }
    }

    /// The protocol settings for this account.
    pub fn protocol_config(&self, bayeux: &BayeuxConfig) -> ProtocolConfig {
        ProtocolConfig {
            channels: self.channels.clone(),
            connection_type: self
                .transports
                .first()
                .map_or(Transport::LongPolling, |t| *t)
                .connection_type()
                .to_owned(),
            supported_connection_types: self
                .transports
                .iter()
                .map(|t| t.connection_type().to_owned())
                .collect(),
            ack: self.ack,
            max_network_delay: bayeux.max_network_delay,
            backoff_increment: bayeux.backoff_increment,
            max_backoff: bayeux.max_backoff,
            default_timeout: bayeux.default_timeout,
            default_max_interval: bayeux.default_max_interval,
            handshake_ext: None,
            requires_login: self.server == ServerKind::Gws,
        }
    }

    /// What the GWS layer does around the session (for `server = "gws"`).
    pub fn gws_behaviour(&self) -> crate::gws::session::GwsBehaviour {
        let agent = self.mode == AccountMode::Agent;
        crate::gws::session::GwsBehaviour {
            start_contact_center_session: (agent && !self.contact_center_channels.is_empty())
                .then(|| self.contact_center_channels.clone()),
            end_contact_center_session: agent && self.end_contact_center_session,
            recover_state: self.recover_state,
        }
    }

    /// The HTTP settings for this account, with its password resolved.
    pub fn http_settings(
        &self,
        name: &str,
        bayeux: &BayeuxConfig,
    ) -> Result<HttpSettings, ConfigError> {
        let password = self.resolve_password(name)?;
        let url = self.notifications_url().map_err(|e| ConfigError::Secret {
            key: format!("accounts.{name}.notifications_path"),
            message: e.to_string(),
        })?;
        let basic_auth = self
            .username
            .as_ref()
            .map(|u| (u.clone(), password.unwrap_or_default()));
        Ok(HttpSettings {
            url,
            basic_auth,
            headers: Vec::new(),
            max_response_bytes: bayeux.max_response_bytes,
            connect_timeout: bayeux.connect_timeout,
            pool_max_idle_per_host: bayeux.connections_per_host,
            ca_file: self.ca_file.clone(),
            danger_accept_invalid_certs: self.danger_accept_invalid_certs,
            proxy: self.proxy.clone(),
            no_env_proxy: !self.use_env_proxy,
            user_agent: format!("chatwatch/{}", env!("CARGO_PKG_VERSION")),
        })
    }
}

/// A text secret as read, for the resolved configuration.
fn resolved(text: Secret) -> SecretSource {
    SecretSource::Resolved(crate::secret::SecretBytes::new(text.expose().as_bytes()))
}

/// The config crate appends "in <file>" to some messages; we name the file ourselves.
fn strip_origin(message: &str, file: &Path) -> String {
    message
        .replace(&format!(" in {}", file.display()), "")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests;
