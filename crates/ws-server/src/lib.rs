//! ws-server: the WebSocket hub application, as a library and the
//! `ws-server` binary.
//!
//! Clients connect to `/ws` and speak JSON envelopes (docs/protocol.md):
//! they join rooms, publish to them, and receive what every member
//! publishes, with a per-room seq and a history to recover from after a
//! reconnect. `/` serves a demo chat page, `/healthz` a health check, and
//! `/echo` (with `--echo`) sends every message back, for the Autobahn
//! testsuite and the benchmarks. It is not a protocol implementation: the
//! protocol lives in ws-proto and its tokio binding in ws-tokio.
//!
//! ```no_run
//! use clap::Parser;
//! use std::sync::Arc;
//! use ws_server::{config::ServerConfig, http::serve};
//!
//! # async fn run() -> std::io::Result<()> {
//! let config = ServerConfig::parse_from(["ws-server", "--echo", "--listen", "127.0.0.1:0"]);
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! serve(listener, Arc::new(config)).await
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod admin;
pub mod cluster;
pub mod config;
pub mod envelope;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod policy;
pub mod pulse;
pub mod server;
pub mod session;
