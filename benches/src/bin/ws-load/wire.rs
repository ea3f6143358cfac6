//! The load generator's side of the wire: a client handshake and a lenient
//! frame reader of its own. Only the frames it sends come from ws-proto. It
//! reads masked frames too, since the raw TCP floor sends back what it got.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use ws_benches::Failure;
use ws_proto::frame::{FrameHeader, OpCode, encode_frame};

/// Where to connect: `ws://host:port/path` taken apart.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// `host:port`.
    pub(crate) authority: String,
    /// The request path, `/` at least.
    pub(crate) path: String,
}

impl Target {
    /// Parses a `ws://` URL.
    pub(crate) fn parse(url: &str) -> Result<Target, Failure> {
        let rest = url.strip_prefix("ws://").ok_or("the URL must start with ws://")?;
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        Ok(Target { authority: authority.to_owned(), path: path.to_owned() })
    }
}

/// One received frame: its opcode and its payload as sent (a masked payload
/// stays masked).
pub(crate) struct Frame {
    pub(crate) opcode: u8,
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
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
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
        Ok(Conn { reader, writer })
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
        let opcode = frame[0] & 0x0f;
        frame.advance(at);
        Some(Frame { opcode, payload: frame })
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
    let mut out = BytesMut::new();
    let mask = Some(rand::random());
    encode_frame(FrameHeader { fin: true, rsv: 0, opcode, mask, payload_len: 0 }, payload, &mut out);
    out.freeze()
}

/// Why the server closed: the close code in a close frame's payload.
pub(crate) fn close_reason(frame: &Frame) -> String {
    match frame.payload.get(..2) {
        Some(code) => format!("closed by the server with {}", u16::from_be_bytes([code[0], code[1]])),
        None => "closed by the server".to_owned(),
    }
}
