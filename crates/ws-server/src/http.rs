//! The listener and the routes: each connection's request is read once and
//! sent where its path says.

use crate::config::ServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};
use ws_proto::Event;
use ws_proto::handshake::server::error_response;
use ws_tokio::WebSocket;
use ws_tokio::server::{Handshake, read_request};

/// Accepts connections until the task is dropped, serving each on its own task.
pub async fn serve(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<()> {
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
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, peer, &config).await {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

async fn connection(tcp: TcpStream, peer: SocketAddr, config: &ServerConfig) -> Result<(), ws_tokio::Error> {
    tcp.set_nodelay(true)?;
    let handshake = read_request(tcp, config.socket_options(), config.handshake_timeout()).await?;
    match handshake.request().path() {
        "/echo" if config.echo => echo(handshake, peer).await,
        _ => not_found(handshake).await,
    }
}

async fn not_found(handshake: Handshake<TcpStream>) -> Result<(), ws_tokio::Error> {
    handshake.respond(&error_response(404, "not found")).await
}

/// Sends every message back as it came; writes are batched by `recv`.
async fn echo(handshake: Handshake<TcpStream>, peer: SocketAddr) -> Result<(), ws_tokio::Error> {
    let mut ws: WebSocket<TcpStream> = handshake.accept(|_| None).await?;
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
