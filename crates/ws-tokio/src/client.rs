//! The client's side: connect to a `ws://` URL, or run the handshake over any
//! stream, and validate the server's answer.

use crate::{Error, Options, WebSocket};
use bytes::{Buf, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use ws_proto::handshake::client::{ClientRequest, Response};
use ws_proto::{Connection, Role};

/// What a client offers and how long it waits.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// Extra header fields, such as `Authorization` or `Origin`.
    pub headers: Vec<(String, String)>,
    /// Settings of the established WebSocket.
    pub socket: Options,
    /// How long connecting and the opening handshake may take together.
    pub handshake_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            protocols: Vec::new(),
            headers: Vec::new(),
            socket: Options::default(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// Connects to a `ws://host[:port]/path?query` URL with default options.
pub async fn connect(url: &str) -> Result<(WebSocket<TcpStream>, Response), Error> {
    connect_with(url, &ClientOptions::default()).await
}

/// Where a `ws://` or `wss://` URL leads, and the request to send there.
#[derive(Debug, Clone)]
pub struct Target {
    /// The host to connect to, without brackets around an IPv6 address.
    pub host: String,
    /// The port, 80 or 443 unless the URL gives one.
    pub port: u16,
    /// `wss://`: the connection must be TLS.
    pub secure: bool,
    /// The opening request, with what `options` offer.
    pub request: ClientRequest,
}

impl Target {
    /// Reads `url` and makes the request that `options` describe.
    pub fn new(url: &str, options: &ClientOptions) -> Result<Target, Error> {
        let url = url::Url::parse(url).map_err(|e| Error::Url(e.to_string()))?;
        let secure = match url.scheme() {
            "ws" => false,
            "wss" => true,
            other => return Err(Error::Url(format!("scheme {other}: a WebSocket URL is ws:// or wss://"))),
        };
        let host = url.host_str().ok_or_else(|| Error::Url("no host".into()))?;
        let mut request = ClientRequest::new(
            url.port().map_or_else(|| host.to_owned(), |p| format!("{host}:{p}")),
            match url.query() {
                Some(query) => format!("{}?{query}", url.path()),
                None => url.path().to_owned(),
            },
        );
        request.protocols.clone_from(&options.protocols);
        request.headers.clone_from(&options.headers);
        request.extensions.extend(options.socket.deflate.map(|d| d.offer()));
        let port = url.port_or_known_default().unwrap_or(if secure { 443 } else { 80 });
        Ok(Target { host: host.trim_matches(['[', ']']).to_owned(), port, secure, request })
    }
}

/// Connects to a `ws://` URL, resolving the host with tokio. (`wss://`
/// needs TLS, which ws-client's `connect` brings.)
pub async fn connect_with(url: &str, options: &ClientOptions) -> Result<(WebSocket<TcpStream>, Response), Error> {
    let target = Target::new(url, options)?;
    if target.secure {
        return Err(Error::Url("wss:// needs TLS: connect with ws-client".into()));
    }
    let connecting = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        tcp.set_nodelay(true)?;
        handshake(tcp, &target.request, options.socket).await
    };
    timeout(options.handshake_timeout, connecting).await.map_err(|_| Error::HandshakeTimeout)?
}

/// Runs the client's opening handshake over an established stream (TCP, TLS, ...).
pub async fn handshake<S>(
    mut io: S,
    request: &ClientRequest,
    options: Options,
) -> Result<(WebSocket<S>, Response), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (state, bytes) = request.encode()?;
    io.write_all(&bytes).await?;
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if io.read_buf(&mut buf).await? == 0 {
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match state.parse_response(&buf, &options.config) {
            Ok(Some((response, len))) => {
                buf.advance(len);
                let conn = client_connection(&response, &options)?;
                return Ok((WebSocket::from_parts(io, conn, options, buf), response));
            }
            Ok(None) => {}
            Err(ws_proto::Error::UnexpectedStatus { status, location }) => {
                let reason = refusal_reason(&mut io, buf).await;
                return Err(Error::Refused { status, reason, location });
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The body of a refusal, which says why: read until the server closes, up
/// to 1 KiB, or for at most a second (a server that keeps the connection
/// open), and trimmed to its first line.
async fn refusal_reason<S: AsyncRead + Unpin>(io: &mut S, mut buf: BytesMut) -> String {
    const MAX: usize = 1 << 10;
    let read = async { while buf.len() < MAX && matches!(io.read_buf(&mut buf).await, Ok(n) if n > 0) {} };
    let _ = timeout(Duration::from_secs(1), read).await;
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { return String::new() };
    let body = &buf[head_end + 4..buf.len().min(head_end + 4 + MAX)];
    String::from_utf8_lossy(body).trim().lines().next().unwrap_or_default().to_owned()
}

/// The client's WebSocket over `io`, a stream whose opening handshake
/// `response` answered elsewhere (an HTTP/2 stream, RFC 8441): with
/// permessage-deflate if the server agreed to the offer.
pub fn from_response<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    response: &Response,
    options: Options,
) -> Result<WebSocket<S>, Error> {
    let conn = client_connection(response, &options)?;
    Ok(WebSocket::from_parts(io, conn, options, BytesMut::new()))
}

/// The client's protocol state, with permessage-deflate if the server agreed
/// to the offer (at most once, with parameters the offer allows).
fn client_connection(response: &Response, options: &Options) -> Result<Connection, Error> {
    let conn = Connection::new(Role::Client, options.config);
    let mut agreed = response.extensions.iter().filter(|e| e.name == ws_proto::deflate::NAME);
    let (Some(config), Some(answer)) = (options.deflate, agreed.next()) else { return Ok(conn) };
    if agreed.next().is_some() {
        return Err(ws_proto::Error::BadResponse("permessage-deflate agreed twice").into());
    }
    Ok(conn.with_deflate(&config.accept_response(answer)?, &config))
}
