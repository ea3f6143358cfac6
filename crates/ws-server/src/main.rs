//! The `ws-server` binary: parses the configuration, binds, and serves until
//! SIGINT or SIGTERM, then closes every connection and exits 0. With
//! `--check-config FILE` it checks the file, prints the effective settings
//! of every namespace and exits.

use std::io::IsTerminal;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use ws_server::{config::ServerConfig, http::serve_until};

/// jemalloc rather than glibc's malloc: its size classes carry no header per
/// block and keep tokio's 128-byte aligned blocks without padding, which
/// makes an idle connection some 170 bytes smaller (docs/benchmarks.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let config = ServerConfig::load(std::env::args_os()).unwrap_or_else(|e| e.exit());
    if let Some(path) = &config.check_config {
        print!(
            "# {} is valid; the effective settings of every namespace:\n\n{}",
            path.display(),
            config.namespaces().describe()
        );
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    info!("listening on {addr}{}", if config.echo { " (echo at /echo)" } else { "" });
    info!("hub at ws://{addr}/ws, demo chat at http://{addr}/");
    serve_until(listener, Arc::new(config), stop_signal()).await?;
    info!("stopped");
    Ok(())
}

/// Completes at the first SIGINT or SIGTERM.
async fn stop_signal() {
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => terminate.recv().await,
            Err(e) => {
                warn!("cannot listen for SIGTERM: {e}");
                std::future::pending().await
            }
        }
    };
    tokio::select! {
        Ok(()) = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        _ = terminate => info!("SIGTERM: shutting down"),
    }
}
