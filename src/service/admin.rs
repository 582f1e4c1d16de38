//! The admin HTTP listener (default `127.0.0.1:9464`): `/metrics` in the Prometheus text
//! format, `/livez` (the process answers) and `/readyz` (every account subscribed and the
//! journal writable; 503 with a JSON body naming what is not ready) and
//! `/schema/event.v1.json` (the JSON Schema of the event record, [`EVENT_SCHEMA`]).
//!
//! Metrics are recorded anywhere in the code through the `metrics` facade, under the names of
//! the catalogue ([`crate::metrics`]); this module installs the process-wide Prometheus recorder
//! once ([`install_recorder`]), registers every HELP text ([`crate::metrics::describe_all`]) and
//! renders it on each scrape, after refreshing the state gauges (session state, journal size, sink backlog).

use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::health::Health;
use crate::metrics::{BAYEUX_CONNECT_SECONDS, BUILD_INFO, WEBHOOK_REQUEST_SECONDS};

/// Why the admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address could not be bound.
    #[error("admin listener: cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// The JSON Schema of the event record (`schema/chatwatch.event.v1.json`), served at
/// `GET /schema/event.v1.json`.
pub const EVENT_SCHEMA: &str = include_str!("../../schema/chatwatch.event.v1.json");

/// Buckets of `chatwatch_bayeux_connect_seconds`: a held connect returns after up to the hold
/// time (30 s by default), a connect with pending deliveries in milliseconds.
const CONNECT_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];
/// Buckets of the webhook request histogram.
const REQUEST_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0];

/// Installs the Prometheus recorder as the global `metrics` recorder, once per process, and
/// records `chatwatch_build_info`. Returns `None` when another recorder was installed first
/// (then `/metrics` says so).
pub fn install_recorder() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(BAYEUX_CONNECT_SECONDS.to_owned()),
                    &CONNECT_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(WEBHOOK_REQUEST_SECONDS.to_owned()),
                        &REQUEST_BUCKETS,
                    )
                });
            let handle = match builder.map(|b| b.install_recorder()) {
                Ok(Ok(handle)) => Some(handle),
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot install the Prometheus recorder; /metrics will be empty");
                    None
                }
                Err(e) => {
                    warn!(error = %e, "bad histogram buckets; /metrics will be empty");
                    None
                }
            };
            if handle.is_some() {
                crate::metrics::describe_all();
                metrics::gauge!(
                    BUILD_INFO,
                    "version" => env!("CARGO_PKG_VERSION"),
                    "rustc" => option_env!("CARGO_PKG_RUST_VERSION").unwrap_or("unknown"),
                )
                .set(1.0);
            }
            handle
        })
        .clone()
}

/// What the admin routes need.
#[derive(Clone)]
struct AdminState {
    health: Health,
    prometheus: Option<PrometheusHandle>,
}

/// A bound admin listener, not yet serving.
#[derive(Debug)]
pub struct AdminListener {
    listener: TcpListener,
}

impl AdminListener {
    /// Binds `addr`. Binding happens before `READY=1`, so a port in use fails the start.
    pub async fn bind(addr: SocketAddr) -> Result<AdminListener, AdminError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        Ok(AdminListener { listener })
    }

    /// The address actually bound (with the port chosen for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `stop` is cancelled.
    pub fn serve(
        self,
        health: Health,
        prometheus: Option<PrometheusHandle>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let app = Router::new()
            .route("/metrics", get(metrics_route))
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .route("/schema/event.v1.json", get(event_schema))
            .with_state(AdminState { health, prometheus });
        if let Some(addr) = self.local_addr() {
            info!(%addr, "admin listener: /metrics /livez /readyz");
        }
        tokio::spawn(async move {
            let served = axum::serve(self.listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                warn!(error = %e, "admin listener stopped");
            }
        })
    }
}

async fn metrics_route(State(state): State<AdminState>) -> Response {
    let Some(prometheus) = &state.prometheus else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics unavailable: another metrics recorder is installed in this process\n",
        )
            .into_response();
    };
    state.health.update_gauges();
    let body = prometheus.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn event_schema() -> Response {
    (
        [(header::CONTENT_TYPE, "application/schema+json")],
        EVENT_SCHEMA,
    )
        .into_response()
}

async fn livez() -> Response {
    (StatusCode::OK, Json(serde_json::json!({"live": true}))).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    let readiness = state.health.readiness();
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(readiness)).into_response()
}
