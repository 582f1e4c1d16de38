//! The list of sink types, and the one way every sink is built.
//!
//! This module owns [`SinkConfig`] (one `type = "..."` table per sink), [`AnySink`] (a built
//! sink of any type) and their dispatch, all generated from the single list of sink types at
//! the bottom of this file. Every sink type follows the same shape, Vector's `SinkConfig`:
//! - its configuration struct (`deny_unknown_fields`, a public `filter: FilterConfig`) has a
//!   pure `validate(&self) -> Result<(), SinkError>` that touches nothing outside the
//!   configuration (no filesystem, no network, no environment);
//! - and an `async fn build(&self, name: &str) -> Result<TheSink, SinkError>` that acquires the
//!   sink's resources (opens files, reads secrets, builds clients) and fails naming the sink and
//!   the path or key; a sink whose peer may be down connects lazily, on the first delivery,
//!   rather than failing here;
//! - the built sink implements [`Deliver`], which the journal runner ([`crate::delivery`])
//!   drives.
//!
//! [`SinkConfig::validate`] and [`SinkConfig::build`] dispatch to those; `build` validates first,
//! so a sink is never built from a configuration that does not validate.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::deliver::{Deliver, Needs};
use super::record::Record;
use super::{FilterConfig, SinkError};

/// Generates [`SinkConfig`], [`AnySink`] and their dispatch from one list of sink types, so a
/// new type is one line of that list (see the recipe in `src/sinks/mod.rs`).
macro_rules! sink_types {
    ($( $(#[$doc:meta])* $variant:ident($config:ty) => $sink:ty, )+) => {
        /// One sink's configuration: a table whose `type` picks the sink.
        ///
        /// ```toml
        /// [sinks.console]
        /// type = "log"
        /// format = "json"
        ///
        /// [sinks.left_chats]
        /// type = "file"
        /// path = "/var/log/chatwatch/left.jsonl"
        /// filter = { entered_states = ["LeftChat"] }
        /// ```
        // A handful of values read once from the configuration: boxing the larger variants
        // would only complicate the serde shape.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum SinkConfig {
            $( $(#[$doc])* $variant($config), )+
        }

        /// A built sink of any type, as the journal runner drives it ([`Deliver`]).
        // One value per configured sink for the life of the process: boxing the larger
        // variants would save nothing worth an indirection.
        #[allow(clippy::large_enum_variant)]
        #[derive(Debug)]
        pub enum AnySink {
            $( $(#[$doc])* $variant($sink), )+
        }

        impl SinkConfig {
            /// Checks the configuration without touching the environment (no filesystem, no
            /// network). Errors name the field; [`SinkConfig::build`] adds the sink's name.
            pub fn validate(&self) -> Result<(), SinkError> {
                match self {
                    $( Self::$variant(config) => config.validate(), )+
                }
            }

            /// The sink's filter: which events the runner hands to it.
            pub fn filter(&self) -> &FilterConfig {
                match self {
                    $( Self::$variant(config) => &config.filter, )+
                }
            }

            /// Validates, then builds the sink `name`: acquires its resources (files, secrets,
            /// clients). Fails naming the sink, and the field, path or key at fault.
            pub async fn build(&self, name: &str) -> Result<AnySink, SinkError> {
                self.validate().map_err(|e| e.in_sink(name))?;
                Ok(match self {
                    $( Self::$variant(config) => AnySink::$variant(config.build(name).await?), )+
                })
            }
        }

        impl Deliver for AnySink {
            async fn deliver(&mut self, records: &[Arc<Record>]) -> Result<(), SinkError> {
                match self {
                    $( Self::$variant(sink) => sink.deliver(records).await, )+
                }
            }

            fn needs(&self) -> Needs {
                match self {
                    $( Self::$variant(sink) => sink.needs(), )+
                }
            }

            async fn reopen(&mut self) -> Result<(), SinkError> {
                match self {
                    $( Self::$variant(sink) => sink.reopen().await, )+
                }
            }

            async fn close(&mut self) -> Result<(), SinkError> {
                match self {
                    $( Self::$variant(sink) => sink.close().await, )+
                }
            }
        }
    };
}

// The sink types: `Variant(configuration) => running sink`. The variant's snake_case name is
// its `type = "..."`; its doc comment documents both enums.
sink_types! {
    /// `type = "log"`: each event as one tracing line (target `chatwatch::event`).
    Log(crate::sinks::log::LogSinkConfig) => crate::sinks::log::LogSink,
    /// `type = "file"`: each event as one JSON line appended to a file.
    File(crate::sinks::file::FileSinkConfig) => crate::sinks::file::FileSink,
    /// `type = "webhook"`: each event POSTed with Standard Webhooks signatures.
    Webhook(crate::sinks::webhook::WebhookSinkConfig) => crate::sinks::webhook::WebhookSink,
    /// `type = "audit"`: a hash-chained, rotated, tamper-evident JSON Lines file.
    Audit(crate::sinks::audit::AuditSinkConfig) => crate::sinks::audit::AuditSink,
    /// `type = "nats"`: each event published to a NATS JetStream stream.
    Nats(crate::sinks::nats::NatsSinkConfig) => crate::sinks::nats::NatsSink,
}
