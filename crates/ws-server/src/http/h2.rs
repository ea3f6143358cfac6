//! HTTP/2 (RFC 9113), over TLS by ALPN or in cleartext with prior knowledge
//! (`--h2c`), served by hyper. A WebSocket comes as an extended CONNECT
//! stream (RFC 8441) to /ws or /echo: it is admitted as a socket is (its
//! Origin, its token, the connection limits, where each such stream counts
//! as a connection), answered 200 and served on the stream by the same
//! session as a socket. Every other request goes to the plain routes.
//!
//! The bounds: at most `--max-streams-per-connection` streams open at once
//! on a connection, the header limits of a handshake, and HTTP/2's flow
//! control both ways: a stream's peer may send at most `STREAM_WINDOW`
//! bytes more than its session has read, and a peer that does not read
//! what its session sends stops that session's writes, as a socket would.

use super::plain::{self, Answer, answer};
use super::routes::{admit, echo_options, start_hub_session};
use crate::policy::limits::Permit;
use crate::server::Server;
use crate::session::echo::Echo;
use bytes::{Bytes, BytesMut};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::ext::Protocol;
use hyper::header::{HOST, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};
use ws_proto::handshake::server::{Request as Head, Upgrade};
use ws_proto::handshake::{Header, Headers};
use ws_tokio::WebSocket;
use ws_tokio::server::negotiate;

/// The bytes a stream's peer may send beyond what its session has read.
const STREAM_WINDOW: u32 = 256 << 10;

/// The bytes a connection's peer may send beyond what its sessions have
/// read, across its streams.
const CONNECTION_WINDOW: u32 = 4 << 20;

/// What the log and the metrics name a connection over HTTP/2 by.
pub(super) const PROTOCOL: &str = "h2";

/// Serves an HTTP/2 connection from `peer` until it closes or the server
/// shuts down (then after its streams end). `_permit` counts it against
/// its address's connections in progress, as a kept-alive HTTP/1.1
/// connection is counted.
pub(super) async fn serve<S>(stream: S, peer: SocketAddr, server: Arc<Server>, _permit: Option<Permit>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &server.config;
    let header_bytes = config.socket_options().config.max_header_bytes;
    let mut http = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http.timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(config.max_streams_per_connection)
        .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(config.heartbeat_interval)
        .keep_alive_timeout(config.heartbeat_timeout);
    let (routes, opened) = (server.clone(), Arc::new(AtomicU64::new(0)));
    let service = hyper::service::service_fn(move |request| {
        let (server, opened) = (routes.clone(), opened.clone());
        async move { Ok::<_, Infallible>(route(request, Stream { peer, opened }, &server).await) }
    });
    super::until_shutdown(http.serve_connection(TokioIo::new(stream), service), &server).await;
}

/// Where a stream comes from: its connection's peer, and how many
/// WebSockets that connection opened before (which names an anonymous one).
struct Stream {
    peer: SocketAddr,
    opened: Arc<AtomicU64>,
}

/// Sends a stream's request where its method and path say.
async fn route(request: Request<Incoming>, stream: Stream, server: &Arc<Server>) -> Answer {
    let path = request.uri().path();
    let websocket = path == "/ws" || (path == "/echo" && server.config.echo);
    let protocol = request.extensions().get::<Protocol>().is_some();
    match (request.method() == Method::CONNECT, protocol, websocket) {
        (false, _, true) => refusal(StatusCode::BAD_REQUEST, "a WebSocket over HTTP/2 opens with an extended CONNECT"),
        (false, _, false) => plain::dispatch(request, server).await,
        (true, false, _) => {
            refusal(StatusCode::METHOD_NOT_ALLOWED, "this server opens no tunnels: a CONNECT needs :protocol")
        }
        (true, true, false) => refusal(StatusCode::NOT_FOUND, "not found"),
        (true, true, true) => open(request, stream, server).await,
    }
}

/// Validates and admits a WebSocket's CONNECT, answers 200, and serves
/// the session on the stream once hyper hands it over.
async fn open(mut request: Request<Incoming>, Stream { peer, opened }: Stream, server: &Arc<Server>) -> Answer {
    let head = head(&request);
    let protocol = request.extensions().get::<Protocol>().map(Protocol::as_str);
    let upgrade = match Upgrade::validate_connect(&head, protocol) {
        Ok(upgrade) => upgrade,
        Err(e) => return invalid(&e),
    };
    let hub = head.path() == "/ws";
    let admitted = match hub {
        true => match admit(server, &head, peer, Some(opened.fetch_add(1, Ordering::Relaxed) + 1)).await {
            Ok(admitted) => Some(admitted),
            Err(refused) => {
                let status = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::FORBIDDEN);
                return refusal(status, &refused.reason);
            }
        },
        false => None,
    };
    let socket_options = server.config.socket_options();
    let options = if hub { socket_options } else { echo_options(&socket_options) };
    let (conn, extensions) = negotiate(&upgrade, &options);
    let stream = hyper::upgrade::on(&mut request);
    let serving = server.clone();
    server.tasks.spawn(async move {
        // None if the stream was reset before the answer went out.
        let Ok(stream) = stream.await else { return };
        let ws = WebSocket::from_parts(TokioIo::new(stream), conn, options, BytesMut::new());
        match admitted {
            Some((identity, permit)) => start_hub_session(ws, identity, permit, PROTOCOL, &serving),
            None => Echo::new(ws, peer, serving.clone()).await,
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    if let Some(value) = extensions.and_then(|e| HeaderValue::try_from(e).ok()) {
        response.headers_mut().insert(HeaderName::from_static("sec-websocket-extensions"), value);
    }
    response
}

/// The request head as ws-proto reads a handshake: `:authority` as the
/// `Host` that an HTTP/2 request does not carry.
fn head(request: &Request<Incoming>) -> Head {
    let header = |name: &str, value: &[u8]| Header { name: name.to_owned(), value: value.to_vec() };
    let mut headers: Vec<Header> =
        request.headers().iter().map(|(name, value)| header(name.as_str(), value.as_bytes())).collect();
    if let Some(authority) = request.uri().authority().filter(|_| !request.headers().contains_key(HOST)) {
        headers.push(header("host", authority.as_str().as_bytes()));
    }
    let target = request.uri().path_and_query().map_or("/", |target| target.as_str());
    Head { method: request.method().as_str().to_owned(), target: target.to_owned(), headers: Headers(headers) }
}

/// The answer to a CONNECT that is no valid WebSocket handshake: 400, or
/// 426 naming the version this server speaks.
fn invalid(e: &ws_proto::Error) -> Answer {
    let status = e.http_status().and_then(|status| StatusCode::from_u16(status).ok());
    let mut response = refusal(status.unwrap_or(StatusCode::BAD_REQUEST), &e.to_string());
    if response.status() == StatusCode::UPGRADE_REQUIRED {
        response.headers_mut().insert(HeaderName::from_static("sec-websocket-version"), HeaderValue::from_static("13"));
    }
    response
}

/// A refusal of `status` saying why.
fn refusal(status: StatusCode, why: &str) -> Answer {
    answer(status, "text/plain; charset=utf-8", format!("{why}\n"))
}
