//! The `ws-server` binary: parses the configuration, binds, and serves until
//! interrupted.

use clap::Parser;
use std::sync::Arc;
use tracing::info;
use ws_server::{config::ServerConfig, http::serve};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = ServerConfig::parse();
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    info!("listening on {addr}{}", if config.echo { " (echo at /echo)" } else { "" });
    info!("hub at ws://{addr}/ws, demo chat at http://{addr}/");
    tokio::select! {
        served = serve(listener, Arc::new(config)) => served,
        _ = tokio::signal::ctrl_c() => {
            info!("interrupted, stopping");
            Ok(())
        }
    }
}
