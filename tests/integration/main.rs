//! Every integration test, compiled into one test binary (linkerd's `app/integration` way): one
//! module per area, and the harness they share in [`support`]. One binary links once instead of
//! once per file, and its tests run side by side in one process, so nothing here may rely on a
//! process of its own: metrics go to local recorders (`metrics::with_local_recorder`), tracing
//! captures to thread-local subscribers, and environment variables to child processes only.
//!
//! A new area is a file beside this one and a `mod` line below; it reaches the harness through
//! `crate::support`.

mod support;

mod api;
mod cli;
mod demo;
mod durability;
mod faye_interop;
mod fuzz_corpus;
mod gws_model;
mod gws_sim;
mod journal;
mod nats;
mod service;
mod ship;
mod sim;
mod sim_websocket;
mod sinks;
mod tls;
mod webhook;
mod websocket;
mod workflow;
