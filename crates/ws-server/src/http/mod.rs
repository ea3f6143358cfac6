//! The listener: accepts connections, runs TLS when configured, reads
//! each request within `--handshake-timeout` and hands it to its route
//! (routes.rs), or the connection to HTTP/2 (h2.rs) when TLS's ALPN chose
//! it or, with `--h2c`, it opens with HTTP/2's preface; at shutdown it
//! stops accepting and waits for every connection to close.

pub mod api;
mod h2;
mod plain;
mod replayed;
mod routes;
mod tls;

use crate::config::ServerConfig;
use crate::policy::limits::Permit;
use crate::server::Server;
use bytes::BytesMut;
use hyper_util::server::graceful::GracefulConnection;
use replayed::Replayed;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};
use ws_proto::handshake::server::http_response;

/// Accepts connections until the task is dropped, serving each on its own
/// task, with one hub for all of them.
pub async fn serve(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<()> {
    serve_until(listener, config, std::future::pending()).await
}

/// A server running on a task of its own, from [`spawn`].
#[derive(Debug)]
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Shuts down as on SIGTERM: stops accepting, closes every connection
    /// with 1001 and waits for them, and for the events hook to have their
    /// events (at most `--shutdown-timeout`).
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.done.await.map_err(std::io::Error::other)?
    }
}

/// Binds `config.listen` (port 0: one the system chooses) and serves on a
/// task of its own until [`Running::stop`], or, if the handle is dropped,
/// until the runtime ends.
pub async fn spawn(config: ServerConfig) -> std::io::Result<Running> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async {
        if stopped.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let done = tokio::spawn(serve_until(listener, Arc::new(config), shutdown));
    Ok(Running { addr, stop, done })
}

/// Serves until `shutdown` completes, then stops accepting, closes every
/// hub connection with 1001 and waits for them to end, and for the events
/// hook to have their events, at most `--shutdown-timeout` in all.
pub async fn serve_until(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(TlsAcceptor::from(tls::server_config(cert, key)?)),
        _ => None,
    };
    let server = Arc::new(Server::new(config)?);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut beats = heartbeat(server.config.heartbeat_interval);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            _ = beats.tick() => {
                server.pulse.beat();
                continue;
            }
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Running out of file descriptors must not end the server.
                warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = admit_handshake(&server, &tcp, peer.ip()) else { continue };
        let (connection_of, tls) = (server.clone(), tls.clone());
        server.tasks.spawn(async move {
            if let Err(e) = connection(tcp, peer, permit, tls, &connection_of).await {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    info!(connections = server.limits.count(), "shutting down: closing every connection with 1001");
    server.pulse.shut_down();
    server.tasks.close();
    let deadline = tokio::time::Instant::now() + server.config.shutdown_timeout;
    if tokio::time::timeout_at(deadline, server.tasks.wait()).await.is_err() {
        warn!(connections = server.tasks.len(), "shutdown deadline reached with connections still open");
    }
    if tokio::time::timeout_at(deadline, server.events_flushed()).await.is_err() {
        warn!("shutdown deadline reached with events the backend does not have yet");
    }
    Ok(())
}

/// When the server's pulse beats: every `--heartbeat-interval`, when each
/// hub session pings its client, or closes it if it has been silent too long.
fn heartbeat(every: std::time::Duration) -> tokio::time::Interval {
    let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beats
}

/// Counts a handshake in progress against the peer's address: one address
/// cannot hold more than `--max-connections-per-ip` requests half-sent (a
/// slowloris). The excess is answered 429 and closed, unread. A trusted
/// proxy speaks for many clients and is not counted. `None`: refused.
fn admit_handshake(server: &Server, tcp: &TcpStream, peer: IpAddr) -> Option<Option<Permit>> {
    if server.config.trusted_proxies.iter().any(|net| net.contains(&peer)) {
        return Some(None);
    }
    match server.handshakes.admit(peer) {
        Ok(permit) => Some(Some(permit)),
        Err(_) => {
            debug!(%peer, "refused: too many handshakes in progress from this address");
            server.metrics.refuse("handshakes_per_ip");
            // Best effort, without waiting: the socket is closed either way.
            let _ = tcp.try_write(&http_response(429, "", "text/plain; charset=utf-8", b"too many handshakes\n"));
            None
        }
    }
}

/// Serves an HTTP connection until it ends, or, once the server shuts
/// down, until it has ended gracefully: the requests and streams under
/// way served, no new ones taken.
async fn until_shutdown<C: GracefulConnection>(connection: C, server: &Server) {
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = server.pulse.shutdown() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Runs TLS, when configured, then reads the request (counted by `permit`
/// until then) and serves its route, all of the handshake within
/// `--handshake-timeout`.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Option<Permit>,
    tls: Option<TlsAcceptor>,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    tcp.set_nodelay(true)?;
    match tls {
        None if server.config.h2c => Box::pin(h2c_route(tcp, peer, permit, server)).await,
        None => serve_stream(tcp, peer, permit, server).await,
        // Boxed: the TLS handshake's state would otherwise swell the future of
        // every plain connection too, and the heap with it (docs/benchmarks.md).
        Some(tls) => {
            let deadline = Instant::now() + server.config.handshake_timeout;
            Box::pin(tls_route(tls, tcp, peer, permit, deadline, server)).await
        }
    }
}

/// Serves a plain connection from `peer` over any byte stream: reads its
/// request (counted by `permit` until then) within `--handshake-timeout`
/// and serves its route (the fuzz target `http_request` drives it in memory).
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    permit: Option<Permit>,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    let deadline = Instant::now() + server.config.handshake_timeout;
    routes::route((stream, BytesMut::new()), peer, permit, deadline, server).await
}

/// Runs the TLS handshake by `deadline`, then serves the route.
async fn tls_route(
    tls: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Option<Permit>,
    deadline: Instant,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    let stream = timeout_at(deadline, tls.accept(tcp)).await.map_err(|_| ws_tokio::Error::HandshakeTimeout)??;
    if stream.get_ref().1.alpn_protocol() == Some(tls::H2) {
        h2::serve(stream, peer, server.clone(), permit).await;
        return Ok(());
    }
    routes::route((stream, BytesMut::new()), peer, permit, deadline, server).await
}

/// The first bytes of an HTTP/2 connection with prior knowledge (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// With `--h2c`: reads the connection's first bytes until they are HTTP/2's
/// preface or cannot be, within `--handshake-timeout`, and serves it as
/// HTTP/2 or HTTP/1.1, which take those bytes as read.
async fn h2c_route(
    mut tcp: TcpStream,
    peer: SocketAddr,
    permit: Option<Permit>,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    let deadline = Instant::now() + server.config.handshake_timeout;
    // Read as a request is: what comes past the preface's length stays read.
    let mut read = BytesMut::with_capacity(1024);
    while read.len() < PREFACE.len() && PREFACE.starts_with(&read) {
        let more =
            timeout_at(deadline, tcp.read_buf(&mut read)).await.map_err(|_| ws_tokio::Error::HandshakeTimeout)??;
        if more == 0 {
            return Ok(());
        }
    }
    if read.starts_with(PREFACE) {
        h2::serve(Replayed::new(read, tcp), peer, server.clone(), permit).await;
        return Ok(());
    }
    routes::route((tcp, read), peer, permit, deadline, server).await
}
