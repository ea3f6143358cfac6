//! The load generator's side of the wire: a client handshake and a lenient
//! frame reader of its own. Only the frames it sends, and permessage-deflate
//! where a target offers it, come from ws-proto. It reads masked frames too,
//! since the raw TCP floor sends back what it got.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
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
        Ok(Target { authority: authority.to_owned(), path: path.to_owned(), deflate_offer: None })
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

/// A client connection past its handshake, in halves so that one task can
/// write while another reads.
pub(crate) struct Conn {
    pub(crate) reader: Reader,
    pub(crate) writer: OwnedWriteHalf,
    /// permessage-deflate as the server agreed to the target's offer; `None`
    /// without an offer or an agreement.
    pub(crate) deflate: Option<DeflateParams>,
}

/// The reading half of a connection, and what it has read but not taken.
pub(crate) struct Reader {
    half: OwnedReadHalf,
    buf: BytesMut,
}

impl Conn {
    /// Connects and completes the opening handshake; fails on any answer but 101.
    pub(crate) async fn open(target: &Target) -> Result<Conn, Failure> {
        let mut stream = TcpStream::connect(&target.authority).await?;
        stream.set_nodelay(true)?;
        let offer = target.deflate_offer.map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n")).unwrap_or_default();
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
            target.path, target.authority
        );
        stream.write_all(request.as_bytes()).await?;
        let (half, writer) = stream.into_split();
        let mut reader = Reader { half, buf: BytesMut::with_capacity(4096) };
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
            Some(_) => agreed_deflate(&head)?,
            None => None,
        };
        Ok(Conn { reader, writer, deflate })
    }

    /// The reading half alone; the connection stays open until it is dropped.
    pub(crate) fn into_reader(self) -> Reader {
        self.writer.forget();
        self.reader
    }
}

impl Reader {
    /// Reads once from the socket into the buffer; false at the end of the stream.
    pub(crate) async fn fill(&mut self) -> Result<bool, Failure> {
        self.buf.reserve(64 * 1024);
        Ok(self.half.read_buf(&mut self.buf).await? > 0)
    }

    /// The whole connection again, from its halves.
    pub(crate) fn unsplit(self, writer: OwnedWriteHalf) -> Result<TcpStream, Failure> {
        Ok(self.half.reunite(writer)?)
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

/// The permessage-deflate parameters that a 101 answer's head agrees to, if
/// it agrees; an error for an answer the default [`DeflateConfig`] would not offer for.
fn agreed_deflate(head: &[u8]) -> Result<Option<DeflateParams>, Failure> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut fields);
    response.parse(head)?;
    let answers = response.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"));
    let mut agreed = Vec::new();
    for answer in answers {
        agreed.extend(ExtensionOffer::parse_list(std::str::from_utf8(answer.value)?)?);
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
