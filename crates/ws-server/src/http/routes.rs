//! The routes: a connection's first request is sent where its path says:
//! `/ws` the hub, `/echo` (with `--echo`) the echo endpoint, anything else
//! to the plain HTTP routes (plain.rs): the server API, the demo page, the
//! health check and the metrics, which serve the connection from then on.

use crate::hooks::Refusal;
use crate::policy::auth::{Identity, carries_token};
use crate::policy::limits::{Permit, client_address};
use crate::policy::origin::origin_allowed;
use crate::server::Server;
use crate::session::Session;
use crate::session::echo::Echo;
use bytes::BytesMut;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tracing::{info, warn};
use ws_proto::handshake::server::Request;
use ws_tokio::server::{Handshake, read_request_after};
use ws_tokio::{Options, WebSocket};

/// Reads the request, after its first bytes `read` already, by `deadline`
/// and serves its route.
pub(super) async fn route<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    (stream, read): (S, BytesMut),
    peer: SocketAddr,
    permit: Option<Permit>,
    deadline: Instant,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    let config = &server.config;
    let handshake = read_request_after(stream, read, config.socket_options(), deadline - Instant::now()).await?;
    match handshake.request().path() {
        "/ws" => {
            drop(permit);
            hub_session(handshake, peer, server).await
        }
        "/echo" if config.echo => {
            drop(permit);
            echo_session(handshake, peer, server).await
        }
        _ => {
            let (stream, read) = handshake.into_http();
            super::plain::serve(stream, read, server.clone(), permit).await;
            Ok(())
        }
    }
}

/// Admits a hub connection (`admit`) and runs its session.
async fn hub_session<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    handshake: Handshake<S>,
    peer: SocketAddr,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    let (identity, permit) = match admit(server, handshake.request(), peer, None).await {
        Ok(admitted) => admitted,
        Err(refusal) => return handshake.reject(refusal.status, &refusal.reason).await,
    };
    let ws = handshake.accept(|_| None).await?;
    start_hub_session(ws, identity, permit, "http/1.1", server);
    Ok(())
}

/// Admits a hub connection's `request` from `peer`, over HTTP/1.1 or as
/// the `stream`-th WebSocket of an HTTP/2 connection: its Origin, its token
/// or the connect hook, then the connection limits. A refusal is logged and
/// counted.
pub(super) async fn admit(
    server: &Server,
    request: &Request,
    peer: SocketAddr,
    stream: Option<u64>,
) -> Result<(Identity, Permit), Refusal> {
    let config = &server.config;
    let address = client_address(peer.ip(), request.headers.get("x-forwarded-for"), &config.trusted_proxies);
    let metrics = &server.metrics;
    if !origin_allowed(request.origin(), request.headers.get("host"), &config.allowed_origins) {
        warn!(%address, origin = request.origin(), "refused: origin not allowed");
        metrics.refuse("origin");
        return Err(Refusal { status: 403, reason: "origin not allowed".into() });
    }
    let identity = match identify(server, request, address).await {
        Ok(identity) => identity,
        Err((refusal, label)) => {
            warn!(%address, "refused: {}", refusal.reason);
            metrics.refuse(label);
            return Err(refusal);
        }
    };
    let permit = match server.limits.admit(address) {
        Ok(permit) => permit,
        Err(refusal) => {
            warn!(%address, "refused: {}", refusal.reason());
            metrics.refuse(refusal.label());
            return Err(Refusal { status: refusal.status(), reason: refusal.reason().into() });
        }
    };
    // The peer's own port tells its connections apart, and the stream's
    // number those of one HTTP/2 connection; a forwarded address has neither.
    let identity = identity.unwrap_or_else(|| {
        Identity::anonymous(match stream {
            _ if address != peer.ip() => address.to_string(),
            Some(stream) => format!("{peer}/{stream}"),
            None => peer.to_string(),
        })
    });
    Ok((identity, permit))
}

/// Runs an admitted hub connection's session, which came over `protocol`.
pub(super) fn start_hub_session<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    ws: WebSocket<S>,
    identity: Identity,
    permit: Permit,
    protocol: &'static str,
    server: &Arc<Server>,
) {
    info!(sender = %identity.name, protocol, "hub connection open");
    server.metrics.accepted.inc();
    if protocol == super::h2::PROTOCOL {
        server.metrics.accepted_h2.inc();
    }
    // The session runs as a task of its own: its future is a fraction of
    // this one, which holds the state of every route, and it lives as long as
    // the connection.
    server.tasks.spawn(Session::start(ws, identity, server.clone(), permit));
}

/// Who a hub handshake's `request` from `address` speaks for: with a JWT
/// key, its token's user; with the connect hook, the backend's answer
/// (with both, for a request that carries no token); `None`: no one known,
/// an anonymous client. A refusal comes with its metric's label.
async fn identify(
    server: &Server,
    request: &Request,
    address: IpAddr,
) -> Result<Option<Identity>, (Refusal, &'static str)> {
    let connects = server.hooks.as_ref().is_some_and(|hooks| hooks.connects());
    if let Some(auth) = &server.auth {
        if !connects || carries_token(request) {
            let refused = |reason| (Refusal { status: 401, reason }, "unauthorized");
            return auth.authenticate(request).map(Some).map_err(refused);
        }
    }
    match &server.hooks {
        Some(hooks) => hooks.connect(request, address).await.map_err(|refusal| (refusal, "connect_hook")),
        None => Ok(None),
    }
}

/// Accepts an echo connection and runs it as a task of its own, as a hub
/// session runs.
async fn echo_session<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    handshake: Handshake<S>,
    peer: SocketAddr,
    server: &Arc<Server>,
) -> Result<(), ws_tokio::Error> {
    let options = echo_options(handshake.options());
    let ws: WebSocket<S> = handshake.with_options(options).accept(|_| None).await?;
    server.tasks.spawn(Echo::new(ws, peer, server.clone()));
    Ok(())
}

/// The options of an echo connection: it takes messages up to ws-proto's
/// default limits (64 MiB), as the Autobahn testsuite and benchmarks need.
pub(super) fn echo_options(options: &Options) -> Options {
    Options { config: ws_proto::Config::default(), ..*options }
}
