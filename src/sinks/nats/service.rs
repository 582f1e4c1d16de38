//! One publish of one event, and the connection it goes over.
//!
//! This module owns what a single event looks like on the wire (subject, headers, body; see
//! [`crate::sinks::nats`]), how a publish error is classified ([`Cause`]), and how a client is
//! connected from a resolved configuration ([`connect`]). The delivery engine (`sink.rs`) and
//! the dead-letter redrive both publish through [`publish`], so a redriven event is the same
//! message with the same `Nats-Msg-Id`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::header::{NATS_EXPECTED_STREAM, NATS_MESSAGE_ID};
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::ErrorCode;
use async_nats::HeaderMap;
use bytes::Bytes;

use crate::event::Event;
use crate::sinks::SinkError;

use super::config::{NatsSinkConfig, Resolved, ResolvedAuth};

/// Header naming the event schema (`chatwatch.event.v1`).
pub const HEADER_SCHEMA: &str = "Chatwatch-Schema";
/// Header naming the event's account.
pub const HEADER_ACCOUNT: &str = "Chatwatch-Account";
/// Header naming the event's kind (`chat_state`, ...).
pub const HEADER_KIND: &str = "Chatwatch-Kind";
/// Header naming the chat's state, when the event has one.
pub const HEADER_STATE: &str = "Chatwatch-State";

/// The longest wait between two reconnect attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Why a publish did not end in a PubAck; the label of `chatwatch_nats_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// No PubAck in time (ambiguous: the message may be stored).
    Timeout,
    /// The connection is down (or dropped while waiting).
    Disconnected,
    /// No stream captures the subject (no responders).
    StreamNotFound,
    /// Another stream than `stream` captures the subject.
    WrongStream,
    /// The message is larger than the server allows.
    MaxPayload,
    /// Anything else.
    Other,
}

impl Cause {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Disconnected => "disconnected",
            Self::StreamNotFound => "stream_not_found",
            Self::WrongStream => "wrong_stream",
            Self::MaxPayload => "max_payload",
            Self::Other => "other",
        }
    }

    /// Whether re-publishing the same message can succeed without anyone changing anything
    /// (timeouts and lost connections); the others need an operator (or a dead letter).
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Timeout | Self::Disconnected | Self::Other)
    }
}

/// Classifies a publish or PubAck error.
pub fn classify(error: &PublishError) -> Cause {
    match error.kind() {
        PublishErrorKind::TimedOut => Cause::Timeout,
        PublishErrorKind::BrokenPipe => Cause::Disconnected,
        PublishErrorKind::StreamNotFound => Cause::StreamNotFound,
        PublishErrorKind::MaxPayloadExceeded => Cause::MaxPayload,
        _ => {
            let code = std::error::Error::source(error)
                .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
                .map(|e| e.error_code());
            match code {
                Some(ErrorCode::STREAM_NOT_MATCH) => Cause::WrongStream,
                Some(ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM) => Cause::MaxPayload,
                _ => Cause::Other,
            }
        }
    }
}

/// The error text of a publish failure: the kind and its source, never a secret (the client's
/// errors carry none).
pub fn describe(error: &PublishError) -> String {
    match std::error::Error::source(error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// The body of `event`: the event record exactly as the other sinks write it.
pub fn body(event: &Event) -> Bytes {
    // An `Event` always serialises (string keys only).
    Bytes::from(serde_json::to_vec(event).unwrap_or_default())
}

/// The headers of `event`'s message for `stream`.
pub fn headers(event: &Event, stream: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(NATS_MESSAGE_ID, event.event_id.as_str());
    headers.insert(NATS_EXPECTED_STREAM, stream);
    headers.insert(HEADER_SCHEMA, event.schema.as_str());
    headers.insert(HEADER_ACCOUNT, header_value(&event.account).as_str());
    headers.insert(HEADER_KIND, event.kind.as_str());
    if let Some(state) = event.chat.as_ref().and_then(|c| c.state.as_ref()) {
        headers.insert(HEADER_STATE, header_value(state.as_str()).as_str());
    }
    headers
}

/// A header value cannot hold line breaks; they become spaces.
fn header_value(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

/// Publishes one message and returns the future of its PubAck. `body` is [`body`] of the
/// event, passed in so that a retry does not encode it again.
pub async fn publish(
    js: &async_nats::jetstream::Context,
    subject: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<PublishAckFuture, PublishError> {
    js.send_publish(
        subject,
        PublishMessage::build().payload(body).headers(headers),
    )
    .await
}

/// A connection event the sink reacts to (state, errors), from the client's callback.
pub type EventHandler = Arc<dyn Fn(async_nats::Event) + Send + Sync>;

/// Connects a client for `cfg` with the resolved secrets and TLS: returns at once (the client
/// connects in the background and reconnects for ever, backing off up to 2 s), reporting
/// connection events to `on_event`.
pub(crate) async fn connect(
    sink: &str,
    cfg: &NatsSinkConfig,
    resolved: &Resolved,
    on_event: EventHandler,
) -> Result<async_nats::Client, SinkError> {
    let mut options = match &resolved.auth {
        None => async_nats::ConnectOptions::new(),
        Some(ResolvedAuth::UserPassword(user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(
                user.clone(),
                password.expose().to_owned(),
            )
        }
        Some(ResolvedAuth::Token(token)) => {
            async_nats::ConnectOptions::with_token(token.expose().to_owned())
        }
        Some(ResolvedAuth::Nkey(seed)) => {
            async_nats::ConnectOptions::with_nkey(seed.expose().trim().to_owned())
        }
        Some(ResolvedAuth::Credentials(creds)) => {
            async_nats::ConnectOptions::with_credentials(creds.expose()).map_err(|e| {
                SinkError::invalid("auth.credentials", format!("not a valid .creds file: {e}"))
                    .in_sink(sink)
            })?
        }
    };
    options = options
        .name(format!("chatwatch sink {sink}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(cfg.timeout.min(Duration::from_secs(10)))
        .request_timeout(Some(cfg.timeout))
        .reconnect_delay_callback(|attempt| {
            let ms = 100u64.saturating_mul(1u64 << attempt.min(10));
            Duration::from_millis(ms).min(RECONNECT_MAX)
        })
        .event_callback(move |event| {
            let on_event = on_event.clone();
            async move { on_event(event) }
        });
    if let Some(tls) = &resolved.tls {
        options = options.require_tls(true).tls_client_config(tls.clone());
    }
    let urls: Vec<async_nats::ServerAddr> = cfg
        .url
        .iter()
        .enumerate()
        .map(|(i, u)| {
            u.parse()
                .map_err(|e| SinkError::invalid(format!("url[{i}]"), format!("{e}")).in_sink(sink))
        })
        .collect::<Result<_, _>>()?;
    options.connect(urls).await.map_err(|e| SinkError::Failed {
        sink: sink.to_owned(),
        reason: format!("cannot start the NATS client: {e}"),
    })
}

/// A JetStream context on `client` whose PubAck wait is `timeout`. The engine bounds its own
/// in-flight publishes to `max_in_flight`; the context's limit is set well above that, because
/// PubAck futures abandoned after a failure keep their permit until their ack or `timeout`,
/// and the re-publish must not wait for them.
pub fn jetstream(
    client: async_nats::Client,
    timeout: Duration,
    max_in_flight: usize,
) -> async_nats::jetstream::Context {
    async_nats::jetstream::ContextBuilder::new()
        .timeout(timeout)
        .ack_timeout(timeout)
        .max_ack_inflight(max_in_flight.saturating_mul(4).max(1024))
        .backpressure_on_inflight(true)
        .build(client)
}

/// The stream configuration `create_stream` asks for.
pub fn stream_config(
    cfg: &NatsSinkConfig,
    subjects: String,
) -> async_nats::jetstream::stream::Config {
    async_nats::jetstream::stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![subjects],
        duplicate_window: cfg.duplicate_window,
        max_age: cfg.max_age.unwrap_or_default(),
        num_replicas: cfg.replicas,
        storage: match cfg.storage {
            super::NatsStorage::File => async_nats::jetstream::stream::StorageType::File,
            super::NatsStorage::Memory => async_nats::jetstream::stream::StorageType::Memory,
        },
        ..Default::default()
    }
}
