//! The `ws-server` binary: parses the configuration, binds, and serves until
//! interrupted.

use clap::Parser;
use std::sync::Arc;
use tracing::{info, warn};
use ws_server::{config::ServerConfig, http::serve};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let config = ServerConfig::parse();
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    info!("listening on {}{}", listener.local_addr()?, if config.echo { " (echo at /echo)" } else { "" });
    if !config.echo {
        warn!("the hub and its demo page are not built yet: every path answers 404; --echo serves /echo");
    }
    tokio::select! {
        served = serve(listener, Arc::new(config)) => served,
        _ = tokio::signal::ctrl_c() => {
            info!("interrupted, stopping");
            Ok(())
        }
    }
}
