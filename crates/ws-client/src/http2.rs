//! WebSockets over HTTP/2 (RFC 8441): one connection to a server, over TLS
//! with ALPN `h2` for `wss://` or in cleartext with prior knowledge for
//! `ws://` (a ws-server started with `--h2c`), on which each
//! [`Http2::open`] is a WebSocket of its own: an extended CONNECT stream.
//! HTTP/2 is hyper's; the WebSocket on each stream is ws-tokio's, as on a socket.
//!
//! ```no_run
//! # async fn run() -> Result<(), ws_tokio::Error> {
//! use ws_client::{ClientSettings, http2::Http2};
//!
//! let settings = ClientSettings { url: "wss://hub.example.com/ws".into(), ..ClientSettings::default() };
//! let mut connection = Http2::connect(&settings).await?;
//! let (first, _) = connection.open("/ws").await?;
//! let (second, _) = connection.open("/ws").await?; // the same TCP connection
//! # Ok(())
//! # }
//! ```

use crate::tls::{self, Stream};
use crate::{ClientSettings, client_options};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper::ext::Protocol;
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::timeout;
use ws_proto::handshake::client::{ClientRequest, Response};
use ws_proto::handshake::{Header, Headers};
use ws_tokio::client::{Target, from_response};
use ws_tokio::{Error, WebSocket};

/// The most of a refusal's body read, for its reason.
const REASON_BYTES: usize = 1 << 10;

/// An HTTP/2 connection to a server, which opens WebSockets as its streams.
#[derive(Debug)]
pub struct Http2 {
    send: SendRequest<Empty<Bytes>>,
    /// `http` or `https`, and the server's authority (`host[:port]`).
    origin: (&'static str, String),
    settings: ClientSettings,
}

impl Http2 {
    /// Connects to the server of `settings.url` (its path is not used
    /// here) and starts HTTP/2, within `settings.handshake_timeout`.
    pub async fn connect(settings: &ClientSettings) -> Result<Http2, Error> {
        let target = Target::new(&settings.url, &client_options(settings))?;
        let connecting = async {
            let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
            tcp.set_nodelay(true)?;
            match target.secure {
                true => handshake(tls::connect_h2(tcp, &target.host, &settings.trust).await?).await,
                false => handshake(tcp).await,
            }
        };
        let send = timeout(settings.handshake_timeout, connecting).await.map_err(|_| Error::HandshakeTimeout)??;
        let scheme = if target.secure { "https" } else { "http" };
        Ok(Http2 { send, origin: (scheme, target.request.host), settings: settings.clone() })
    }

    /// Opens a WebSocket to `path` (and query) on a new stream, offering
    /// what the settings offer, within `settings.handshake_timeout`: the
    /// WebSocket and the server's answer. A refusal is
    /// [`Error::Refused`] with the server's status and reason.
    pub async fn open(&mut self, path: &str) -> Result<(WebSocket<Stream>, Response), Error> {
        let options = client_options(&self.settings);
        let request = ClientRequest { target: path.to_owned(), ..Target::new(&self.settings.url, &options)?.request };
        let (handshake, headers) = request.connect_headers()?;
        let (scheme, authority) = &self.origin;
        let mut connect = Request::builder().method(Method::CONNECT).uri(format!("{scheme}://{authority}{path}"));
        for (name, value) in headers {
            connect = connect.header(name, value);
        }
        let connect = connect.extension(Protocol::from_static("websocket")).body(Empty::new()).map_err(invalid)?;
        let opening = async {
            self.send.ready().await.map_err(lost)?;
            let answer = self.send.send_request(connect).await.map_err(lost)?;
            let status = answer.status().as_u16();
            let fields = answer
                .headers()
                .iter()
                .map(|(name, value)| Header { name: name.as_str().to_owned(), value: value.as_bytes().to_vec() });
            let response = match handshake.validate_connect(status, Headers(fields.collect())) {
                Err(ws_proto::Error::UnexpectedStatus { status, location }) => {
                    let body = Limited::new(answer.into_body(), REASON_BYTES).collect().await;
                    let body = body.map(|body| body.to_bytes()).unwrap_or_default();
                    let reason = String::from_utf8_lossy(&body).trim().lines().next().unwrap_or_default().to_owned();
                    return Err(Error::Refused { status, reason, location });
                }
                response => response?,
            };
            let stream = hyper::upgrade::on(answer).await.map_err(lost)?;
            let ws = from_response(Stream::Http2(Box::new(TokioIo::new(stream))), &response, options.socket)?;
            Ok((ws, response))
        };
        timeout(self.settings.handshake_timeout, opening).await.map_err(|_| Error::HandshakeTimeout)?
    }
}

/// Starts HTTP/2 on `io`, its connection driven by a task of its own for
/// as long as this end or a stream uses it.
async fn handshake<I>(io: I) -> Result<SendRequest<Empty<Bytes>>, Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.map_err(lost)?;
    tokio::spawn(connection);
    Ok(send)
}

/// The HTTP/2 connection failed, or the stream was refused or reset.
fn lost(e: hyper::Error) -> Error {
    Error::Io(std::io::Error::other(e))
}

/// A request that HTTP/2 cannot carry (a header that is not one).
fn invalid(e: hyper::http::Error) -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}
