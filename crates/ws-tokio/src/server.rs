//! The server's side: read the opening request within a timeout and the
//! header bounds, let the application look at it, then accept or refuse.

use crate::{Error, Options, WebSocket};
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};
use ws_proto::handshake::server::{Request, Upgrade, error_response};
use ws_proto::{Connection, Role};

/// How long a refused or answered client may go on sending before the socket closes.
const LINGER: Duration = Duration::from_secs(2);

/// A received request head, waiting for the application's decision.
#[derive(Debug)]
pub struct Handshake<S> {
    io: S,
    request: Request,
    /// The head as it was read, for [`Handshake::into_http`].
    head: BytesMut,
    leftover: BytesMut,
    options: Options,
    deadline: Instant,
}

/// Reads a request head from `io` within `timeout`. A head that breaks the
/// bounds of `options.config` or is not HTTP/1.1 is answered with its status
/// (431 or 400) before the error is returned.
pub async fn read_request<S>(io: S, options: Options, timeout: Duration) -> Result<Handshake<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    read_request_after(io, BytesMut::new(), options, timeout).await
}

/// [`read_request`] of a stream whose first bytes, `read`, were read from
/// it already (to tell HTTP/2's preface from a request, say).
pub async fn read_request_after<S>(
    mut io: S,
    read: BytesMut,
    options: Options,
    timeout: Duration,
) -> Result<Handshake<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + timeout;
    let mut buf = read;
    // Room for a request of 1 KiB in all, as for one not begun.
    buf.reserve(1024usize.saturating_sub(buf.len()));
    let read = async {
        loop {
            if let Some(parsed) = Request::parse(&buf, &options.config)? {
                return Ok(parsed);
            }
            if io.read_buf(&mut buf).await? == 0 {
                return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    };
    match timeout_at(deadline, read).await {
        Ok(Ok((request, len))) => {
            let head = buf.split_to(len);
            Ok(Handshake { io, request, head, leftover: buf, options, deadline })
        }
        Ok(Err(Error::Protocol(e))) => {
            let status = e.http_status().unwrap_or(400);
            let _ = respond_and_shut(&mut io, &error_response(status, &e.to_string()), deadline).await;
            Err(e.into())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::HandshakeTimeout),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Handshake<S> {
    /// The request: path, query, Origin and every header.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The settings the WebSocket will have.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The settings of the WebSocket `accept` makes, when they depend on the request.
    pub fn with_options(self, options: Options) -> Self {
        Handshake { options, ..self }
    }

    /// The stream, for what the request does not say, such as the peer's address.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The stream and every byte read from it, the head first, for another
    /// HTTP server to serve the connection from its first request on.
    pub fn into_http(self) -> (S, BytesMut) {
        let Handshake { io, mut head, leftover, .. } = self;
        head.unsplit(leftover);
        (io, head)
    }

    /// Validates the request as an opening handshake and, if it is one,
    /// answers 101 with the subprotocol `choose` picks from the client's offer.
    /// An invalid request is answered with its status (400 or 426) and returned as an error.
    pub async fn accept(mut self, choose: impl FnOnce(&Upgrade) -> Option<String>) -> Result<WebSocket<S>, Error> {
        let upgrade = match Upgrade::validate(&self.request) {
            Ok(upgrade) => upgrade,
            Err(e) => {
                let status = e.http_status().unwrap_or(400);
                self.respond(&error_response(status, &e.to_string())).await?;
                return Err(e.into());
            }
        };
        let protocol = choose(&upgrade);
        let (conn, extensions) = negotiate(&upgrade, &self.options);
        let response = upgrade.accept_response(protocol.as_deref(), extensions.as_deref());
        timeout_at(self.deadline, self.io.write_all(&response)).await.map_err(|_| Error::HandshakeTimeout)??;
        Ok(WebSocket::from_parts(self.io, conn, self.options, self.leftover))
    }

    /// Refuses the upgrade with `status` and a short plain-text body.
    pub async fn reject(self, status: u16, body: &str) -> Result<(), Error> {
        self.respond(&error_response(status, body)).await
    }

    /// Answers with a complete HTTP response (for plain HTTP routes) and closes.
    pub async fn respond(mut self, response: &[u8]) -> Result<(), Error> {
        respond_and_shut(&mut self.io, response, self.deadline).await
    }
}

/// The server's connection that a validated `upgrade` opens under
/// `options` (over HTTP/1.1 or HTTP/2 alike): with permessage-deflate if
/// the client offers terms that `options.deflate` accepts, and then the
/// `Sec-WebSocket-Extensions` value of the answer.
pub fn negotiate(upgrade: &Upgrade, options: &Options) -> (Connection, Option<String>) {
    let conn = Connection::new(Role::Server, options.config);
    let deflate = options.deflate.and_then(|config| Some((config, config.accept_offer(&upgrade.extensions)?)));
    match deflate {
        Some((config, (params, response))) => (conn.with_deflate(&params, &config), Some(response)),
        None => (conn, None),
    }
}

/// Writes `response` and closes, by `deadline`. Then, a lingering close:
/// what the client still sends (the rest of an oversized head, say) is read
/// and dropped until it closes, for at most [`LINGER`]. Closing a socket
/// with unread input resets the connection, and a reset can destroy the
/// answer before the client has read it.
async fn respond_and_shut<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    response: &[u8],
    deadline: Instant,
) -> Result<(), Error> {
    let answer = async {
        io.write_all(response).await?;
        io.shutdown().await
    };
    timeout_at(deadline, answer).await.map_err(|_| Error::HandshakeTimeout)??;
    let mut sink = [0; 4096];
    let drain = async { while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {} };
    // Ends either way: the client closed, or it had its time.
    let _ = timeout_at(deadline.min(Instant::now() + LINGER), drain).await;
    Ok(())
}

/// Reads the request and accepts it as a WebSocket with no subprotocol.
pub async fn accept<S>(io: S, options: Options, timeout: Duration) -> Result<WebSocket<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    read_request(io, options, timeout).await?.accept(|_| None).await
}
