//! The HTTP client factory every chatwatch HTTP client is built with: the Bayeux long-polling
//! transport and the WebSocket upgrade (its TLS configuration), the GWS session, and the webhook
//! sink.
//!
//! It owns what those clients must agree on: rustls with the platform's roots plus an optional
//! CA file, parsed **once** per distinct bundle and shared ([`shared_tls_config`]); the explicit
//! proxy (and whether `HTTP(S)_PROXY` is honoured); no redirects; and redaction, so that no
//! password in a URL and no secret header value ever reaches a log line, an error or a `Debug`
//! print ([`redact_url`], sensitive header values, reqwest errors stripped of their URL). For one
//! account it builds an [`HttpClient`]: one cookie jar and connection pool, the static headers
//! (Basic authentication) and the dynamic ones (the GWS CSRF token), and a size- and time-bounded
//! [`exchange`](HttpClient::exchange). It knows nothing of who uses it: failures are an
//! [`HttpError`] that each user turns into its own vocabulary.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use url::Url;

use crate::secret::Secret;

/// Why an exchange produced no response (an HTTP error status is a response, not an error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// No complete response within the request's timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made (refused, DNS, TLS).
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The response body exceeded the configured maximum.
    #[error("response larger than the {limit}-byte limit")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Any other I/O failure while sending or reading.
    #[error("I/O error: {0}")]
    Io(String),
}

/// Why an HTTP client (or a transport built on one) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The CA file could not be read or parsed.
    #[error("cannot use CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The proxy URL was refused.
    #[error("invalid proxy {url}: {reason}")]
    Proxy {
        /// The proxy URL (without credentials).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A configured header is not a valid HTTP header.
    #[error("invalid header `{0}`")]
    Header(String),
    /// reqwest refused the client configuration.
    #[error("cannot build HTTP client: {0}")]
    Client(String),
}

/// Settings of one HTTP client (for Bayeux: of one long-polling transport).
#[derive(Clone)]
pub struct HttpSettings {
    /// The endpoint (for Bayeux e.g. `https://gws.example.com/api/v2/notifications`; for the GWS
    /// session its base URL; for a webhook the receiver).
    pub url: Url,
    /// HTTP Basic credentials sent on every request, if any.
    pub basic_auth: Option<(String, Secret)>,
    /// Extra headers sent on every request (e.g. the GWS CSRF header).
    pub headers: Vec<(String, Secret)>,
    /// Largest response body accepted, in bytes.
    pub max_response_bytes: usize,
    /// Timeout for establishing a TCP/TLS connection.
    pub connect_timeout: Duration,
    /// Idle connections kept per host (at least 2).
    pub pool_max_idle_per_host: usize,
    /// Extra trusted CA certificates (PEM bundle).
    pub ca_file: Option<PathBuf>,
    /// Accept any server certificate (testing only).
    pub danger_accept_invalid_certs: bool,
    /// Send every request through this proxy (`http://`, `https://`, `socks5://` not supported).
    pub proxy: Option<Url>,
    /// Ignore `HTTP(S)_PROXY` environment variables.
    pub no_env_proxy: bool,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpSettings")
            .field("url", &self.url.as_str())
            .field("basic_auth_user", &self.basic_auth.as_ref().map(|(u, _)| u))
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("max_response_bytes", &self.max_response_bytes)
            .field("ca_file", &self.ca_file)
            .field("proxy", &self.proxy.as_ref().map(redact_url))
            .finish_non_exhaustive()
    }
}

impl HttpSettings {
    /// Settings for `url` with the documented defaults: no credentials, 8 MiB responses, 10 s to
    /// connect, 2 idle connections, system roots, no proxy (environment proxies ignored).
    pub fn new(url: Url) -> HttpSettings {
        HttpSettings {
            url,
            basic_auth: None,
            headers: Vec::new(),
            max_response_bytes: 8 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            pool_max_idle_per_host: 2,
            ca_file: None,
            danger_accept_invalid_certs: false,
            proxy: None,
            no_env_proxy: true,
            user_agent: format!("chatwatch/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// A URL with any password replaced, for logs.
pub fn redact_url(url: &Url) -> String {
    let mut u = url.clone();
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    u.to_string()
}

/// Headers sent on every request that can change while the session runs (the GWS CSRF token is
/// replaced at every login). Shared between the GWS session and the Bayeux transport.
#[derive(Clone, Default)]
pub struct SharedHeaders(Arc<RwLock<HeaderMap>>);

impl SharedHeaders {
    /// A snapshot of the current headers.
    pub fn get(&self) -> HeaderMap {
        self.0.read().map(|h| h.clone()).unwrap_or_default()
    }

    /// Sets (or replaces) one header; its value is marked sensitive so it never prints.
    pub fn set(&self, name: HeaderName, mut value: HeaderValue) {
        value.set_sensitive(true);
        if let Ok(mut h) = self.0.write() {
            h.insert(name, value);
        }
    }

    /// Removes every header.
    pub fn clear(&self) {
        if let Ok(mut h) = self.0.write() {
            h.clear();
        }
    }
}

impl fmt::Debug for SharedHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.get().keys().map(|k| k.to_string()).collect();
        f.debug_tuple("SharedHeaders").field(&names).finish()
    }
}

/// The TLS client configuration for a CA file (or none: the system roots only), built once per
/// distinct CA bundle and shared by every client that uses it. Building one loads and parses the
/// platform's root certificates (about 100 KiB per configuration); with one per account, a
/// daemon of 1,000 accounts would hold 1,000 copies. The returned value is a cheap clone: its
/// verifier (and the roots in it) is shared.
///
/// Same recipe as reqwest's own: the process-default crypto provider (else aws-lc-rs), the
/// platform verifier with the CA file's certificates as extra roots, ALPN h2 and http/1.1.
pub fn shared_tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, BuildError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock, PoisonError};
    static CONFIGS: OnceLock<Mutex<HashMap<Vec<u8>, Arc<rustls::ClientConfig>>>> = OnceLock::new();
    let pem = match ca_file {
        Some(path) => std::fs::read(path).map_err(|e| BuildError::Ca {
            path: path.to_owned(),
            reason: e.to_string(),
        })?,
        None => Vec::new(),
    };
    let configs = CONFIGS.get_or_init(Default::default);
    if let Some(config) = configs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&pem)
    {
        return Ok(config.as_ref().clone());
    }
    let ca_error = |reason: String| BuildError::Ca {
        path: ca_file.map(|p| p.to_owned()).unwrap_or_default(),
        reason,
    };
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = if ca_file.is_some() {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ca_error(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_error("no PEM certificate found".to_owned()));
        }
        rustls_platform_verifier::Verifier::new_with_extra_roots(certs, provider.clone())
    } else {
        rustls_platform_verifier::Verifier::new(provider.clone())
    }
    .map_err(|e| BuildError::Client(format!("TLS verifier: {e}")))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BuildError::Client(format!("TLS versions: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let config = Arc::new(config);
    configs
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(pem, config.clone());
    Ok(config.as_ref().clone())
}

/// A reqwest client builder with the settings every chatwatch HTTP client shares: rustls with the
/// system roots plus `ca_file`, the explicit `proxy` (and the `HTTP(S)_PROXY` environment unless
/// `no_env_proxy`), the connect timeout, the pool size, the user agent, and **no redirects**.
/// No cookie store and no default headers: callers add what they need.
pub fn client_builder(settings: &HttpSettings) -> Result<reqwest::ClientBuilder, BuildError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .pool_max_idle_per_host(settings.pool_max_idle_per_host.max(2))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(settings.user_agent.clone())
        .tcp_nodelay(true);
    if settings.danger_accept_invalid_certs {
        // Lab only: reqwest builds its own accept-anything verifier.
        builder = builder.tls_danger_accept_invalid_certs(true);
    } else {
        builder =
            builder.tls_backend_preconfigured(shared_tls_config(settings.ca_file.as_deref())?);
    }
    if settings.no_env_proxy {
        builder = builder.no_proxy();
    }
    if let Some(proxy) = &settings.proxy {
        let p = reqwest::Proxy::all(proxy.as_str()).map_err(|e| BuildError::Proxy {
            url: redact_url(proxy),
            reason: e.to_string(),
        })?;
        builder = builder.proxy(p);
    }
    Ok(builder)
}

/// An HTTP client for one account: one cookie jar, one connection pool, the static headers
/// (Basic authentication, content type) and the shared dynamic ones. The GWS session and the
/// Bayeux transport of an account use the same one, so `JSESSIONID` and the CSRF token travel on
/// both.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
    headers: Arc<HeaderMap>,
    dynamic: SharedHeaders,
    max_response_bytes: usize,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("dynamic", &self.dynamic)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// Builds a client with a fresh cookie jar and connection pool.
    pub fn new(settings: &HttpSettings) -> Result<HttpClient, BuildError> {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let builder = client_builder(settings)?.cookie_provider(jar.clone());
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        );
        if let Some((user, password)) = &settings.basic_auth {
            use base64::Engine as _;
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{}", password.expose()));
            let mut value = HeaderValue::from_str(&format!("Basic {token}"))
                .map_err(|_| BuildError::Header("authorization".to_owned()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        for (name, value) in &settings.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| BuildError::Header(name.clone()))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| BuildError::Header(name.to_string()))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = builder
            .build()
            .map_err(|e| BuildError::Client(e.to_string()))?;
        Ok(HttpClient {
            client,
            jar,
            headers: Arc::new(headers),
            dynamic: SharedHeaders::default(),
            max_response_bytes: settings.max_response_bytes,
        })
    }

    /// The headers a request to `url` outside reqwest (the WebSocket upgrade) must carry: the
    /// static ones (Basic authentication), the dynamic ones (the GWS CSRF token) and the
    /// cookies of this client's jar for `url`.
    pub fn upgrade_headers(&self, url: &Url) -> HeaderMap {
        use reqwest::cookie::CookieStore;
        let mut headers = (*self.headers).clone();
        headers.remove(CONTENT_TYPE);
        for (name, value) in self.dynamic.get().iter() {
            headers.insert(name.clone(), value.clone());
        }
        if let Some(cookies) = self.jar.cookies(url) {
            headers.insert(reqwest::header::COOKIE, cookies);
        }
        headers
    }

    /// Stores the `Set-Cookie` headers of a response to `url` obtained outside reqwest.
    pub fn store_cookies(&self, url: &Url, headers: &HeaderMap) {
        use reqwest::cookie::CookieStore;
        let mut values = headers.get_all(reqwest::header::SET_COOKIE).iter();
        self.jar.set_cookies(&mut values, url);
    }

    /// The dynamic headers of this client.
    pub fn dynamic_headers(&self) -> &SharedHeaders {
        &self.dynamic
    }

    /// Sends a request and reads the whole response, within `timeout` and the size limit.
    /// Returns the status, the headers and the body; only transport failures are errors.
    pub async fn exchange(
        &self,
        method: reqwest::Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(reqwest::StatusCode, HeaderMap, Bytes), HttpError> {
        let attempt = async {
            let mut request = self
                .client
                .request(method, url)
                .headers((*self.headers).clone())
                .headers(self.dynamic.get())
                .timeout(timeout);
            if let Some(body) = body {
                request = request.body(body);
            }
            let response = request.send().await.map_err(|e| classify(e, timeout))?;
            let status = response.status();
            let headers = response.headers().clone();
            if response
                .content_length()
                .is_some_and(|len| len > self.max_response_bytes as u64)
            {
                return Err(HttpError::TooLarge {
                    limit: self.max_response_bytes,
                });
            }
            let body = read_limited(response, self.max_response_bytes, timeout).await?;
            Ok((status, headers, body))
        };
        // reqwest's own timeout covers the whole exchange; the outer one is a backstop so that no
        // bug in a lower layer can hold a request for ever.
        match tokio::time::timeout(timeout + Duration::from_secs(1), attempt).await {
            Ok(result) => result,
            Err(_) => Err(HttpError::Timeout(timeout)),
        }
    }
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, HttpError> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify(e, timeout))? {
        if buf.len() + chunk.len() > limit {
            return Err(HttpError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

fn classify(e: reqwest::Error, timeout: Duration) -> HttpError {
    // Never echo the URL: reqwest errors may embed it, with credentials if the user put any there.
    let e = e.without_url();
    if e.is_timeout() {
        HttpError::Timeout(timeout)
    } else if e.is_connect() {
        HttpError::Connect(error_chain(&e))
    } else {
        HttpError::Io(error_chain(&e))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}
