//! The listener and the routes: each connection's request is read once and
//! sent where its path says: `/ws` the hub, `/echo` (with `--echo`) the echo
//! endpoint, `/` the demo page, `/healthz` a health check, `/metrics` the
//! metrics.

use crate::auth::{Authenticator, Identity, origin_allowed};
use crate::cluster::Cluster;
use crate::config::ServerConfig;
use crate::echo::Echo;
use crate::hub::Hub;
use crate::limits::{ConnectionLimits, Permit, client_address};
use crate::metrics::Metrics;
use crate::pulse::Pulse;
use crate::session::Session;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout_at};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use ws_proto::handshake::server::http_response;
use ws_tokio::server::{Handshake, read_request};
use ws_tokio::{Options, WebSocket};

/// What every connection task of one server shares.
#[derive(Debug)]
pub struct Server {
    /// The settings.
    pub config: Arc<ServerConfig>,
    /// The token checker, when a key is configured.
    pub auth: Option<Authenticator>,
    /// The rooms.
    pub hub: Arc<Hub>,
    /// The link to the other servers through Redis, with `--redis`.
    pub cluster: Option<Arc<Cluster>>,
    /// The connection counts.
    pub limits: Arc<ConnectionLimits>,
    /// The handshakes in progress, per peer address.
    pub handshakes: Arc<ConnectionLimits>,
    /// Every connection's task, to wait for at shutdown.
    pub tasks: TaskTracker,
    /// The hub sessions' heartbeat, and the word to shut down to every connection.
    pub pulse: Pulse,
    /// What `/metrics` reports.
    pub metrics: Metrics,
    /// TLS, when a certificate is configured.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// When the server started: the clock of the sessions' rate limits.
    pub started: std::time::Instant,
}

impl Server {
    /// The shared state of a server with `config`: its hub, and with
    /// `--redis` its link to the others, which starts on the current runtime.
    pub fn new(config: Arc<ServerConfig>) -> std::io::Result<Server> {
        let auth = config.authenticator()?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        };
        if auth.is_none() {
            warn!("no JWT key configured (--jwt-secret or --jwt-public-key): the hub is open to anyone");
        }
        let hub = Arc::new(Hub::new(config.hub_settings()));
        let metrics = Metrics::default();
        let cluster = match &config.redis {
            Some(url) => Some(
                Cluster::start(url, hub.clone(), config.history_settings(), metrics.cluster.clone())
                    .map_err(std::io::Error::other)?,
            ),
            None => None,
        };
        Ok(Server {
            auth,
            hub,
            cluster,
            limits: Arc::new(ConnectionLimits::new(config.max_connections, config.max_connections_per_ip)),
            handshakes: Arc::new(ConnectionLimits::new(0, config.max_connections_per_ip)),
            tasks: TaskTracker::new(),
            pulse: Pulse::default(),
            metrics,
            tls,
            config,
            started: std::time::Instant::now(),
        })
    }
}

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
    /// with 1001 and waits for them (at most `--shutdown-timeout`).
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
/// hub connection with 1001 and waits for them to end, at most
/// `--shutdown-timeout`.
pub async fn serve_until(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
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
        let connection_of = server.clone();
        server.tasks.spawn(async move {
            if let Err(e) = connection(tcp, peer, permit, &connection_of).await {
                debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    info!(connections = server.limits.count(), "shutting down: closing every connection with 1001");
    server.pulse.shut_down();
    server.tasks.close();
    if tokio::time::timeout(server.config.shutdown_timeout, server.tasks.wait()).await.is_err() {
        warn!(connections = server.tasks.len(), "shutdown deadline reached with connections still open");
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

/// The content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The demo chat page, served at `/`.
const DEMO_PAGE: &str = include_str!("static/index.html");

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

/// Runs TLS, when configured, then reads the request (counted by `permit`
/// until then) and serves its route, all of the handshake within
/// `--handshake-timeout`.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Option<Permit>,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    tcp.set_nodelay(true)?;
    let deadline = Instant::now() + server.config.handshake_timeout;
    match &server.tls {
        None => route(tcp, peer, permit, deadline, server).await,
        // Boxed: the TLS handshake's state would otherwise swell the future of
        // every plain connection too, and the heap with it (docs/benchmarks.md).
        Some(tls) => Box::pin(tls_route(tls.clone(), tcp, peer, permit, deadline, server)).await,
    }
}

/// Runs the TLS handshake by `deadline`, then serves the route.
async fn tls_route(
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    tcp: TcpStream,
    peer: SocketAddr,
    permit: Option<Permit>,
    deadline: Instant,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    let accepting = TlsAcceptor::from(tls).accept(tcp);
    let stream = timeout_at(deadline, accepting).await.map_err(|_| ws_tokio::Error::HandshakeTimeout)??;
    route(stream, peer, permit, deadline, server).await
}

/// Reads the request by `deadline` and serves its route.
async fn route<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    permit: Option<Permit>,
    deadline: Instant,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    let config = &server.config;
    let handshake = read_request(stream, config.socket_options(), deadline - Instant::now()).await?;
    drop(permit);
    match handshake.request().path() {
        "/ws" => hub_session(handshake, peer, server).await,
        "/echo" if config.echo => echo_session(handshake, peer, server).await,
        "/api/publish" => crate::api::publish(handshake, server).await,
        "/" => handshake.respond(&http_response(200, "", "text/html; charset=utf-8", DEMO_PAGE.as_bytes())).await,
        "/healthz" => handshake.respond(&http_response(200, "", "text/plain; charset=utf-8", b"ok\n")).await,
        "/metrics" => {
            server.metrics.rooms.set(server.hub.room_count() as i64);
            let text = server.metrics.encode();
            handshake.respond(&http_response(200, "", OPENMETRICS, text.as_bytes())).await
        }
        _ => handshake.reject(404, "not found").await,
    }
}

/// Admits a hub connection (Origin, token, then the connection limits) and runs its session.
async fn hub_session<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    handshake: Handshake<S>,
    peer: SocketAddr,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    let (config, request) = (&server.config, handshake.request());
    let address = client_address(peer.ip(), request.headers.get("x-forwarded-for"), &config.trusted_proxies);
    let metrics = &server.metrics;
    if !origin_allowed(request.origin(), request.headers.get("host"), &config.allowed_origins) {
        warn!(%address, origin = request.origin(), "refused: origin not allowed");
        metrics.refuse("origin");
        return handshake.reject(403, "origin not allowed").await;
    }
    let identity = match &server.auth {
        None => None,
        Some(auth) => match auth.authenticate(request) {
            Ok(identity) => Some(identity),
            Err(reason) => {
                warn!(%address, "refused: {reason}");
                metrics.refuse("unauthorized");
                return handshake.reject(401, &reason).await;
            }
        },
    };
    let permit = match server.limits.admit(address) {
        Ok(permit) => permit,
        Err(refusal) => {
            warn!(%address, "refused: {}", refusal.reason());
            metrics.refuse(refusal.label());
            return handshake.reject(refusal.status(), refusal.reason()).await;
        }
    };
    let ws = handshake.accept(|_| None).await?;
    // The peer's own port tells its connections apart; a forwarded address has none.
    let identity = identity.unwrap_or_else(|| {
        Identity::anonymous(if address == peer.ip() { peer.to_string() } else { address.to_string() })
    });
    info!(sender = %identity.name, "hub connection open");
    metrics.accepted.inc();
    // The session runs as a task of its own: its future is a fraction of
    // this one, which holds the state of every route, and it lives as long as
    // the connection.
    server.tasks.spawn(Session::start(ws, identity, server.clone(), permit));
    Ok(())
}

/// Accepts an echo connection and runs it as a task of its own, as a hub
/// session runs. It takes messages up to ws-proto's default limits (64 MiB),
/// as the Autobahn testsuite and benchmarks need.
async fn echo_session<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    handshake: Handshake<S>,
    peer: SocketAddr,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    let options = Options { config: ws_proto::Config::default(), ..*handshake.options() };
    let ws: WebSocket<S> = handshake.with_options(options).accept(|_| None).await?;
    server.tasks.spawn(Echo::new(ws, peer, server.clone()));
    Ok(())
}
