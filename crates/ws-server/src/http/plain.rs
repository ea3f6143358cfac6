//! The plain HTTP routes, served by hyper: the demo pages, the JavaScript
//! client, the health check, the metrics and the server API, on connections kept alive that may
//! pipeline their requests. A connection comes here once routes.rs has
//! read its first request and found it is not a WebSocket upgrade; hyper
//! reads that request again from the bytes read so far.
//!
//! The bounds are the handshake's: a head within `--handshake-timeout` (a
//! kept-alive connection that sends nothing for as long is closed) and the
//! header limits, a body within `--max-message-size` bytes and the same
//! timeout.

use super::replayed::Replayed;
use crate::policy::limits::Permit;
use crate::server::Server;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH, UPGRADE,
};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use tokio::io::{AsyncRead, AsyncWrite};

/// The content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The demo chat page, served at `/`.
const DEMO_PAGE: &str = include_str!("static/index.html");

/// The live dashboard page, fed by the server API, served at `/dashboard`.
const DASHBOARD_PAGE: &str = include_str!("static/dashboard.html");

/// The JavaScript client (clients/js), served at `/client.js`.
const CLIENT_MODULE: &str = include_str!("../../../../clients/js/index.js");

/// The client module's entity tag: a hash of its text, the same for every
/// run of one build, another when the module changes.
static CLIENT_ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    CLIENT_MODULE.hash(&mut hasher);
    // Hex digits and quotes: always a valid header value.
    HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish())).unwrap_or(HeaderValue::from_static("\"0\""))
});

/// A response to a plain route.
pub(super) type Answer = Response<Full<Bytes>>;

/// Serves the connection's requests, from the bytes `read` so far, until
/// the client closes, a timeout or the server's shutdown. `_permit` counts
/// it against its address's connections in progress.
pub(super) async fn serve<S>(stream: S, read: BytesMut, server: Arc<Server>, _permit: Option<Permit>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (config, bounds) = (&server.config, server.config.socket_options().config);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.handshake_timeout)
        .max_headers(bounds.max_headers)
        .max_buf_size(bounds.max_header_bytes.max(8 << 10))
        .pipeline_flush(true);
    let routes = server.clone();
    let service = hyper::service::service_fn(move |request| {
        let server = routes.clone();
        async move { Ok::<_, Infallible>(route(request, &server).await) }
    });
    super::until_shutdown(http.serve_connection(TokioIo::new(Replayed::new(read, stream)), service), &server).await;
}

/// Sends the request where its path says. A WebSocket upgrade that is
/// not served is answered, and the connection closed.
async fn route(request: Request<Incoming>, server: &Server) -> Answer {
    let upgrade = request.headers().contains_key(UPGRADE);
    let answer = dispatch(request, server).await;
    if upgrade { closing(answer) } else { answer }
}

/// Serves a plain request (over HTTP/1.1 or HTTP/2) at its path.
pub(super) async fn dispatch(request: Request<Incoming>, server: &Server) -> Answer {
    let path = request.uri().path().to_owned();
    match path.as_str() {
        "/" => answer(StatusCode::OK, "text/html; charset=utf-8", DEMO_PAGE),
        "/dashboard" => answer(StatusCode::OK, "text/html; charset=utf-8", DASHBOARD_PAGE),
        "/client.js" => client_module(&request),
        "/healthz" => answer(StatusCode::OK, "text/plain; charset=utf-8", "ok\n"),
        "/metrics" => {
            server.metrics.rooms.set(server.hub.room_count() as i64);
            server.metrics.tasks.set(tokio::runtime::Handle::current().metrics().num_alive_tasks() as i64);
            answer(StatusCode::OK, OPENMETRICS, server.metrics.encode())
        }
        "/ws" | "/echo" => {
            let refusal = "a WebSocket opens with the first request of a connection\n";
            answer(StatusCode::BAD_REQUEST, "text/plain; charset=utf-8", refusal)
        }
        api if api.starts_with("/api/") => super::api::call(&api[5..], request, server).await,
        _ => answer(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n"),
    }
}

/// The JavaScript client: revalidated at each use (no-cache) against its
/// ETag, so a page never runs an older module than the server's, and
/// importable from the pages of any origin.
fn client_module(request: &Request<Incoming>) -> Answer {
    let unchanged = request.headers().get(IF_NONE_MATCH) == Some(&*CLIENT_ETAG);
    let (status, body) = if unchanged { (StatusCode::NOT_MODIFIED, "") } else { (StatusCode::OK, CLIENT_MODULE) };
    let mut response = answer(status, "text/javascript; charset=utf-8", body);
    let headers = response.headers_mut();
    headers.insert(ETAG, CLIENT_ETAG.clone());
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

/// A response of `status` with `body`.
pub(super) fn answer(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `response`, and the connection closed after it.
pub(super) fn closing(mut response: Answer) -> Answer {
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Why a body could not be read.
pub(super) enum BodyError {
    /// Longer than the bound.
    TooLong(usize),
    /// Not all there within the timeout.
    Slow,
    /// The connection failed.
    Failed,
}

/// Reads the body of `request`, at most `max` bytes, within `--handshake-timeout`.
pub(super) async fn read_body(request: Request<Incoming>, max: usize, server: &Server) -> Result<Bytes, BodyError> {
    let body = Limited::new(request.into_body(), max).collect();
    match tokio::time::timeout(server.config.handshake_timeout, body).await {
        Err(_) => Err(BodyError::Slow),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLong(max)),
        Ok(Err(_)) => Err(BodyError::Failed),
    }
}
