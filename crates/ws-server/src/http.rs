//! The listener and the routes: each connection's request is read once and
//! sent where its path says: `/ws` the hub, `/echo` (with `--echo`) the echo
//! endpoint, `/` the demo page, `/healthz` a health check.

use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::session::Session;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};
use ws_proto::Event;
use ws_proto::handshake::server::http_response;
use ws_tokio::server::{Handshake, read_request};
use ws_tokio::{Options, WebSocket};

/// Accepts connections until the task is dropped, serving each on its own
/// task, with one hub for all of them.
pub async fn serve(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<()> {
    let hub = Arc::new(Hub::new(config.hub_settings()));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Running out of file descriptors must not end the server.
                warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (config, hub) = (config.clone(), hub.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, peer, &config, &hub).await {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// The demo chat page, served at `/`.
const DEMO_PAGE: &str = include_str!("static/index.html");

async fn connection(tcp: TcpStream, peer: SocketAddr, config: &ServerConfig, hub: &Hub) -> Result<(), ws_tokio::Error> {
    tcp.set_nodelay(true)?;
    let handshake = read_request(tcp, config.socket_options(), config.handshake_timeout).await?;
    match handshake.request().path() {
        "/ws" => hub_session(handshake, peer, config, hub).await,
        "/echo" if config.echo => echo(handshake, peer).await,
        "/" => handshake.respond(&http_response(200, "", "text/html; charset=utf-8", DEMO_PAGE.as_bytes())).await,
        "/healthz" => handshake.respond(&http_response(200, "", "text/plain; charset=utf-8", b"ok\n")).await,
        _ => handshake.reject(404, "not found").await,
    }
}

async fn hub_session(
    handshake: Handshake<TcpStream>,
    peer: SocketAddr,
    config: &ServerConfig,
    hub: &Hub,
) -> Result<(), ws_tokio::Error> {
    let ws = handshake.accept(|_| None).await?;
    info!(%peer, "hub connection open");
    Session::new(ws, hub, config, peer.to_string()).run().await;
    Ok(())
}

/// Sends every message back as it came; writes are batched by `recv`.
/// It takes messages up to ws-proto's default limits (64 MiB), as the
/// Autobahn testsuite and benchmarks need.
async fn echo(handshake: Handshake<TcpStream>, peer: SocketAddr) -> Result<(), ws_tokio::Error> {
    let options = Options { config: ws_proto::Config::default(), ..*handshake.options() };
    let mut ws: WebSocket<TcpStream> = handshake.with_options(options).accept(|_| None).await?;
    info!(%peer, "echo connection open");
    while let Some(event) = ws.recv().await {
        match event {
            Ok(Event::Message(message)) => {
                // Fails only once the closing handshake began; the message is then dropped.
                let _ = ws.queue(&message);
            }
            Ok(_) => {}
            Err(e) => {
                info!(%peer, code = ?e.close_code().map(|c| c.0), "echo connection failed: {e}");
                return Ok(());
            }
        }
    }
    info!(%peer, "echo connection closed");
    Ok(())
}
