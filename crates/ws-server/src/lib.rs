//! ws-server: the WebSocket hub application, as a library and the
//! `ws-server` binary.
//!
//! So far it serves `/echo` (with `--echo`), which sends every message back:
//! the endpoint the Autobahn testsuite and the benchmarks use. Everything
//! else is answered 404. It is not a protocol implementation: the protocol
//! lives in ws-proto and its tokio binding in ws-tokio.
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

pub mod config;
pub mod http;
