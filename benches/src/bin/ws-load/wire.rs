//! The load generator's side of the wire: a client handshake and a lenient
//! frame reader of its own, over a TCP connection each or, with `--http2`,
//! over streams of one HTTP/2 connection (RFC 8441; hyper's client). Only
//! the frames it sends, and permessage-deflate where a target offers it,
//! come from ws-proto. It reads masked frames too, since the raw TCP floor
//! sends back what it got.

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper::ext::Protocol;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use ws_benches::Failure;
use ws_proto::frame::{FrameHeader, OpCode, encode_frame};
use ws_proto::handshake::ExtensionOffer;
use ws_proto::{DeflateConfig, DeflateParams};

/// Where to connect: `ws://host:port/path` taken apart, and what to offer.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// `host:port`.
    pub(crate) authority: String,
    /// The request path, `/` at least.
    pub(crate) path: String,
    /// A `Sec-WebSocket-Extensions` offer of permessage-deflate, sent as it
    /// is; the server's answer is checked against the default [`DeflateConfig`].
    pub(crate) deflate_offer: Option<&'static str>,
    /// The HTTP/2 connection whose streams the WebSockets are, if any.
    pub(crate) http2: Option<SendRequest<Empty<Bytes>>>,
    /// Each TCP connection is reset when dropped (SO_LINGER 0), not closed.
    pub(crate) reset: bool,
}

impl Target {
    /// Parses a `ws://` URL (or, for the HTTP API, an `http://` one).
    pub(crate) fn parse(url: &str) -> Result<Target, Failure> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or("the URL must start with ws:// (or http://)")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        Ok(Target {
            authority: authority.to_owned(),
            path: path.to_owned(),
            deflate_offer: None,
            http2: None,
            reset: false,
        })
    }
}

/// One received frame: its opcode, whether RSV1 marks it compressed, and its
/// payload as sent (a masked payload stays masked, a compressed one compressed).
pub(crate) struct Frame {
    pub(crate) opcode: u8,
    pub(crate) compressed: bool,
    pub(crate) payload: Bytes,
}

/// The opcode of a close frame.
pub(crate) const CLOSE: u8 = 0x8;

impl Frame {
    /// A text, binary or continuation frame: not ping, pong or close.
    pub(crate) fn is_data(&self) -> bool {
        self.opcode < CLOSE
    }
}

/// The writing half of a connection: a TCP socket's, or an HTTP/2 stream's.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Unpin>;

/// A client connection past its handshake, in halves so that one task can
/// write while another reads.
pub(crate) struct Conn {
    pub(crate) reader: Reader,
    pub(crate) writer: WriteHalf,
    /// permessage-deflate as the server agreed to the target's offer; `None`
    /// without an offer or an agreement.
    pub(crate) deflate: Option<DeflateParams>,
}

/// The reading half of a connection, and what it has read but not taken.
pub(crate) struct Reader {
    half: Box<dyn AsyncRead + Unpin>,
    buf: BytesMut,
    /// The writing half, kept open while this half is held alone.
    _writer: Option<WriteHalf>,
}

impl Conn {
    /// Connects and completes the opening handshake; fails on any answer but 101.
    pub(crate) async fn open(target: &Target) -> Result<Conn, Failure> {
        if let Some(http2) = &target.http2 {
            return Conn::open_stream(http2.clone(), target).await;
        }
        let mut stream = TcpStream::connect(&target.authority).await?;
        stream.set_nodelay(true)?;
        if target.reset {
            #[allow(deprecated)] // SO_LINGER of zero does not block: the reset is sent at once.
            stream.set_linger(Some(Duration::ZERO))?;
        }
        let offer = target.deflate_offer.map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n")).unwrap_or_default();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
            target.path, target.authority
        );
        stream.write_all(request.as_bytes()).await?;
        let (half, writer) = stream.into_split();
        let mut reader = Reader { half: Box::new(half), buf: BytesMut::with_capacity(4096), _writer: None };
        let end = loop {
            if let Some(at) = reader.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if reader.buf.len() > 16 * 1024 || !reader.fill().await? {
                return Err("no handshake answer".into());
            }
        };
        let head = reader.buf.split_to(end);
        if !head.starts_with(b"HTTP/1.1 101") {
            let status = String::from_utf8_lossy(&head[..head.len().min(40)]).into_owned();
            return Err(format!("handshake refused: {status}").into());
        }
        let deflate = match target.deflate_offer {
            Some(_) => agreed_deflate(extension_answers(&head)?)?,
            None => None,
        };
        Ok(Conn { reader, writer: Box::new(writer), deflate })
    }

    /// Opens the WebSocket as a stream of the HTTP/2 connection `http2`:
    /// an extended CONNECT, answered 200.
    async fn open_stream(mut http2: SendRequest<Empty<Bytes>>, target: &Target) -> Result<Conn, Failure> {
        let uri = format!("http://{}{}", target.authority, target.path);
        let mut request = Request::builder().method(Method::CONNECT).uri(uri).header("sec-websocket-version", "13");
        if let Some(offer) = target.deflate_offer {
            request = request.header("sec-websocket-extensions", offer);
        }
        let request = request.extension(Protocol::from_static("websocket")).body(Empty::new())?;
        http2.ready().await?;
        let answer = http2.send_request(request).await?;
        if answer.status() != StatusCode::OK {
            return Err(format!("CONNECT refused: {}", answer.status()).into());
        }
        let deflate = match target.deflate_offer {
            Some(_) => {
                let answers = answer.headers().get_all("sec-websocket-extensions").iter();
                agreed_deflate(answers.map(|value| value.to_str().map(str::to_owned)).collect::<Result<_, _>>()?)?
            }
            None => None,
        };
        let (half, writer) = tokio::io::split(TokioIo::new(hyper::upgrade::on(answer).await?));
        let reader = Reader { half: Box::new(half), buf: BytesMut::with_capacity(4096), _writer: None };
        Ok(Conn { reader, writer: Box::new(writer), deflate })
    }

    /// The reading half alone; the connection stays open until it is dropped.
    pub(crate) fn into_reader(self) -> Reader {
        Reader { _writer: Some(self.writer), ..self.reader }
    }
}

impl Reader {
    /// Reads once from the socket into the buffer; false at the end of the stream.
    pub(crate) async fn fill(&mut self) -> Result<bool, Failure> {
        self.buf.reserve(64 * 1024);
        Ok(self.half.read_buf(&mut self.buf).await? > 0)
    }

    /// The next whole frame in the buffer, if there is one.
    pub(crate) fn next_frame(&mut self) -> Option<Frame> {
        let (at, len) = frame_extent(&self.buf)?;
        if self.buf.len() < at + len {
            return None;
        }
        let mut frame = self.buf.split_to(at + len).freeze();
        let (opcode, compressed) = (frame[0] & 0x0f, frame[0] & 0x40 != 0);
        frame.advance(at);
        Some(Frame { opcode, compressed, payload: frame })
    }

    /// The next frame, reading as needed; an error at the end of the stream.
    pub(crate) async fn frame(&mut self) -> Result<Frame, Failure> {
        loop {
            if let Some(frame) = self.next_frame() {
                return Ok(frame);
            }
            if !self.fill().await? {
                return Err("the server ended the connection".into());
            }
        }
    }
}

/// The `Sec-WebSocket-Extensions` values of a 101 answer's head.
fn extension_answers(head: &[u8]) -> Result<Vec<String>, Failure> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut fields);
    response.parse(head)?;
    let answers = response.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"));
    Ok(answers.map(|answer| std::str::from_utf8(answer.value).map(str::to_owned)).collect::<Result<_, _>>()?)
}

/// The permessage-deflate parameters that an answer's `Sec-WebSocket-Extensions`
/// values agree to, if they agree; an error for an answer the default
/// [`DeflateConfig`] would not offer for.
fn agreed_deflate(answers: Vec<String>) -> Result<Option<DeflateParams>, Failure> {
    let mut agreed = Vec::new();
    for answer in answers {
        agreed.extend(ExtensionOffer::parse_list(&answer)?);
    }
    match agreed.iter().find(|e| e.name == ws_proto::deflate::NAME) {
        Some(answer) => Ok(Some(DeflateConfig::default().accept_response(answer)?)),
        None => Ok(None),
    }
}

/// Where a frame's payload starts and how long it is, once its header is in `buf`.
fn frame_extent(buf: &[u8]) -> Option<(usize, usize)> {
    let second = *buf.get(1)?;
    let (len, mut at) = match second & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (usize::try_from(u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?)).ok()?, 10),
        short => (short as usize, 2),
    };
    if second & 0x80 != 0 {
        at += 4;
    }
    Some((at, len))
}

/// A masked frame of `opcode` carrying `payload`, as a client sends it.
pub(crate) fn client_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    client_frame_with(opcode, 0, payload)
}

/// A masked frame with reserved bits `rsv` (`ws_proto::frame::RSV1`: compressed).
pub(crate) fn client_frame_with(opcode: OpCode, rsv: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    let mask = Some(rand::random());
    encode_frame(FrameHeader { fin: true, rsv, opcode, mask, payload_len: 0 }, payload, &mut out);
    out.freeze()
}

/// Why the server closed: the close code in a close frame's payload.
pub(crate) fn close_reason(frame: &Frame) -> String {
    match frame.payload.get(..2) {
        Some(code) => format!("closed by the server with {}", u16::from_be_bytes([code[0], code[1]])),
        None => "closed by the server".to_owned(),
    }
}
