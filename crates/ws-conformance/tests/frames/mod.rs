//! Autobahn-style cases in Rust: for each section 1-10 of the Autobahn
//! testsuite (its grouping of RFC 6455's rules), at least one case per
//! distinct rule, driven by raw bytes against `ws-server --echo`, over the
//! transport the including test file names (`super::OVER`): a TCP socket
//! (autobahn_style.rs) or a stream of an HTTP/2 connection, RFC 8441
//! (autobahn_style_over_http2.rs). The cases are written from RFC 6455
//! itself, not from the testsuite's sources.
//!
//! Every test starts the echo server on a free port: the opening handshake
//! is written by hand over TCP (an extended CONNECT over HTTP/2), client
//! frames are built byte by byte (masked, unless a case says otherwise),
//! and every server frame is checked against section 5.2 (unmasked, no RSV
//! bits, the shortest length form). Every close is checked to end with the
//! server closing the transport first (section 7.1.1: TCP, or the stream's
//! END_STREAM), with no byte after its close frame: the client never closes
//! its side. Nothing waits on time: each read waits for bytes, within a
//! generous limit, so a server that closed only at a close timeout shorter
//! than that limit would pass, slowly.
//!
//! Sections: 1 framing, 2 pings and pongs, 3 reserved bits, 4 opcodes,
//! 5 fragmentation, 6 UTF-8, 7 closing, 9 large messages, 10 masking.

#![allow(dead_code)] // each including file uses its part

use bytes::{Bytes, BytesMut};
use clap::Parser;
use http_body_util::Empty;
use hyper::client::conn::http2::handshake;
use hyper::ext::Protocol;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ws_proto::frame::{FrameHeader, OpCode, encode_frame};
use ws_server::config::ServerConfig;

/// How long one awaited event may take: generous, for debug builds on a loaded machine.
const WAIT: Duration = Duration::from_secs(10);
/// The masking key of every client frame; its bytes differ so an offset error shows.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The example key of RFC 6455 section 1.3 and the accept value it yields.
pub(crate) const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

const CONTINUATION: u8 = OpCode::Continuation as u8;
const TEXT: u8 = OpCode::Text as u8;
const BINARY: u8 = OpCode::Binary as u8;
const CLOSE: u8 = OpCode::Close as u8;
const PING: u8 = OpCode::Ping as u8;
const PONG: u8 = OpCode::Pong as u8;

// ---------------------------------------------------------------------------
// The server and a raw client.
// ---------------------------------------------------------------------------

/// The transport a case runs over.
pub(crate) enum Over {
    /// A TCP socket of its own, opened by an HTTP/1.1 upgrade.
    Tcp,
    /// A stream of an HTTP/2 connection in cleartext, opened by an extended CONNECT.
    Http2,
}

/// Starts `ws-server --echo --h2c` on a free port of this test's runtime.
pub(crate) async fn echo_server() -> SocketAddr {
    let config = ServerConfig::parse_from(["ws-server", "--echo", "--h2c", "--listen", "127.0.0.1:0"]);
    let listener = TcpListener::bind(config.listen).await.expect("bind a free port");
    let addr = listener.local_addr().expect("the bound address");
    tokio::spawn(ws_server::http::serve(listener, Arc::new(config)));
    addr
}

/// Awaits `future` for at most [`WAIT`]; `what` names the awaited event.
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
}

/// A client frame with the given FIN, RSV bits and opcode bits (reserved
/// ones too), its payload masked with `mask` when there is one.
fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(FrameHeader { fin, rsv: 0, opcode: OpCode::Binary, mask, payload_len: 0 }, payload, &mut out);
    out[0] = u8::from(fin) << 7 | rsv << 4 | opcode;
    out.to_vec()
}

/// A masked frame with no RSV bits.
fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, 0, opcode, payload, Some(KEY))
}

/// A whole text message in one masked frame.
fn text(payload: &[u8]) -> Vec<u8> {
    masked(true, TEXT, payload)
}

/// A masked close frame with a code and a reason.
fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    masked(true, CLOSE, &[&code.to_be_bytes()[..], reason].concat())
}

/// `len` bytes of ASCII text.
fn ascii(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// `len` bytes running through every byte value.
fn all_byte_values(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 256) as u8).collect()
}

/// Asserts two payloads are equal without printing megabytes when they are not.
fn assert_same_payload(got: &[u8], expected: &[u8], what: &str) {
    if got != expected {
        let first_difference = got.iter().zip(expected).position(|(a, b)| a != b);
        panic!(
            "{what}: {} bytes, expected {}; first difference at {first_difference:?}; got {:x?}",
            got.len(),
            expected.len(),
            &got[..got.len().min(32)]
        );
    }
}

/// A frame the server sent.
struct Frame {
    fin: bool,
    opcode: OpCode,
    payload: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = &self.payload[..self.payload.len().min(32)];
        write!(f, "{:?} fin={} {} bytes {:x?}", self.opcode, self.fin, self.payload.len(), shown)
    }
}

/// What a case's bytes go over.
trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// A WebSocket client on a raw transport: it writes what a case says,
/// byte for byte, and decodes what the server sends.
struct RawClient {
    transport: Box<dyn Transport>,
    received: BytesMut,
    /// The case, named in every failure.
    case: String,
}

impl RawClient {
    /// Connects to `/echo` over `super::OVER` and completes the opening
    /// handshake (section 4.1; RFC 8441 section 5 over HTTP/2).
    async fn connect(server: SocketAddr, case: impl Into<String>) -> RawClient {
        let tcp = within("TCP connection", TcpStream::connect(server)).await.expect("connect");
        tcp.set_nodelay(true).expect("TCP_NODELAY");
        let case = case.into();
        let transport: Box<dyn Transport> = match super::OVER {
            Over::Tcp => Box::new(tcp),
            Over::Http2 => Box::new(connect_stream(tcp, server, &case).await),
        };
        let mut client = RawClient { transport, received: BytesMut::new(), case };
        if let Over::Tcp = super::OVER {
            client.send(upgrade_request("/echo", Some("13"), Some(SAMPLE_KEY)).as_bytes()).await;
            let head = client.read_http_head().await;
            assert!(head.starts_with("HTTP/1.1 101 "), "[{}] not a 101: {head}", client.case);
            assert_eq!(header(&head, "sec-websocket-accept"), Some(SAMPLE_ACCEPT), "[{}] {head}", client.case);
            assert!(header(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")), "{head}");
        }
        client
    }

    /// Writes `wire` as it is.
    async fn send(&mut self, wire: &[u8]) {
        within("write", self.transport.write_all(wire)).await.unwrap_or_else(|e| panic!("[{}] write: {e}", self.case));
    }

    /// Writes each byte of `wire` with its own write. After each, the task
    /// yields, so the server (on this runtime) mostly reads them one by one;
    /// the outcome must be the same however the bytes are read.
    async fn send_byte_by_byte(&mut self, wire: &[u8]) {
        for byte in wire.chunks(1) {
            self.send(byte).await;
            tokio::task::yield_now().await;
        }
    }

    /// Reads once more from the socket; the number of bytes read, 0 at EOF.
    async fn read_more(&mut self, what: &str) -> usize {
        self.received.reserve(64 << 10);
        let read = within(what, self.transport.read_buf(&mut self.received)).await;
        read.unwrap_or_else(|e| panic!("[{}] reading {what}: {e}", self.case))
    }

    /// Reads an HTTP response head and returns it; later bytes stay buffered.
    async fn read_http_head(&mut self) -> String {
        loop {
            if let Some(end) = self.received.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = self.received.split_to(end + 4);
                return String::from_utf8_lossy(&head).into_owned();
            }
            let n = self.read_more("handshake response").await;
            assert_ne!(n, 0, "[{}] EOF inside the response head: {:?}", self.case, self.received);
        }
    }

    /// Reads the next frame and checks its header against section 5.2.
    async fn read_frame(&mut self) -> Frame {
        loop {
            if let Some(frame) = self.take_frame() {
                return frame;
            }
            let n = self.read_more("frame from the server").await;
            assert_ne!(n, 0, "[{}] EOF where a frame was expected; held {:x?}", self.case, &self.received[..]);
        }
    }

    /// A whole frame from the bytes received so far, if they hold one.
    fn take_frame(&mut self) -> Option<Frame> {
        let decoded = FrameHeader::decode(&self.received);
        let (header, header_len) = decoded.unwrap_or_else(|e| panic!("[{}] bad server frame: {e}", self.case))?;
        assert_eq!(header.mask, None, "[{}] a server frame is never masked (5.1)", self.case);
        assert_eq!(header.rsv, 0, "[{}] RSV bits with no extension (5.2)", self.case);
        assert_eq!(header_len, header.encoded_len(), "[{}] not the shortest length form (5.2)", self.case);
        let end = header_len + usize::try_from(header.payload_len).expect("a payload length that fits");
        if self.received.len() < end {
            return None;
        }
        let wire = self.received.split_to(end);
        Some(Frame { fin: header.fin, opcode: header.opcode, payload: wire[header_len..].to_vec() })
    }

    /// Reads a whole data message, which may come in fragments.
    async fn read_message(&mut self) -> (OpCode, Vec<u8>) {
        let first = self.read_frame().await;
        let data = matches!(first.opcode, OpCode::Text | OpCode::Binary);
        assert!(data, "[{}] expected a message, got {first:?}", self.case);
        let (mut fin, mut payload) = (first.fin, first.payload);
        while !fin {
            let next = self.read_frame().await;
            assert_eq!(next.opcode, OpCode::Continuation, "[{}] inside a message: {next:?}", self.case);
            payload.extend_from_slice(&next.payload);
            fin = next.fin;
        }
        (first.opcode, payload)
    }

    /// Expects the next message to be `payload` with `opcode` (text or binary).
    async fn expect_echo(&mut self, opcode: u8, payload: &[u8]) {
        let (got_opcode, got) = self.read_message().await;
        assert_eq!(got_opcode as u8, opcode, "[{}] opcode of the echo", self.case);
        assert_same_payload(&got, payload, &format!("[{}] echo", self.case));
    }

    /// Expects the next frame to be a pong carrying `payload` (section 5.5.3).
    async fn expect_pong(&mut self, payload: &[u8]) {
        let frame = self.read_frame().await;
        assert_eq!(frame.opcode, OpCode::Pong, "[{}] expected a pong, got {frame:?}", self.case);
        assert_eq!(frame.payload, payload, "[{}] the pong's payload", self.case);
    }

    /// Expects the next frame to be a close, and returns its code, if it has one.
    /// Its payload must be empty or a code with a UTF-8 reason (section 5.5.1).
    async fn read_close(&mut self) -> Option<u16> {
        let frame = self.read_frame().await;
        assert_eq!(frame.opcode, OpCode::Close, "[{}] expected a close, got {frame:?}", self.case);
        let payload = frame.payload;
        assert_ne!(payload.len(), 1, "[{}] a one-byte close payload", self.case);
        let reason = payload.get(2..).unwrap_or_default();
        assert!(std::str::from_utf8(reason).is_ok(), "[{}] close reason {reason:x?} is not UTF-8", self.case);
        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
    }

    /// Expects the server to fail the connection: a close with `code`, then
    /// the end of TCP without waiting for our close (sections 7.1.7, 7.1.1).
    async fn expect_failure(&mut self, code: u16) {
        assert_eq!(self.read_close().await, Some(code), "[{}] the close code", self.case);
        self.expect_tcp_close().await;
    }

    /// Starts the closing handshake with `code`: the server must answer with
    /// the same code, then close TCP (sections 5.5.1, 7.1.1).
    async fn close(&mut self, code: u16) {
        self.send(&close_frame(code, b"")).await;
        assert_eq!(self.read_close().await, Some(code), "[{}] the close reply", self.case);
        self.expect_tcp_close().await;
    }

    /// Expects the server to close TCP, with nothing after its close frame.
    async fn expect_tcp_close(&mut self) {
        loop {
            assert!(self.received.is_empty(), "[{}] bytes after the close: {:x?}", self.case, &self.received[..]);
            if self.read_more("the server's end of the transport").await == 0 {
                return;
            }
        }
    }
}

/// An opening handshake request for `path`, with the given version and key headers.
pub(crate) fn upgrade_request(path: &str, version: Option<&str>, key: Option<&str>) -> String {
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    if let Some(key) = key {
        request.push_str(&format!("Sec-WebSocket-Key: {key}\r\n"));
    }
    if let Some(version) = version {
        request.push_str(&format!("Sec-WebSocket-Version: {version}\r\n"));
    }
    request + "\r\n"
}

/// The value of header `name` (any case) in an HTTP response head.
pub(crate) fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (field, value) = line.split_once(':')?;
        field.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Opens an HTTP/2 connection over `tcp` with prior knowledge, and on it
/// a stream to `/echo` by an extended CONNECT (RFC 8441), answered 200.
async fn connect_stream(tcp: TcpStream, server: SocketAddr, case: &str) -> TokioIo<Upgraded> {
    let (mut send, connection) = within("HTTP/2 connection", handshake(TokioExecutor::new(), TokioIo::new(tcp)))
        .await
        .unwrap_or_else(|e| panic!("[{case}] HTTP/2: {e}"));
    tokio::spawn(connection);
    let connect = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{server}/echo"))
        .header("sec-websocket-version", "13")
        .extension(Protocol::from_static("websocket"))
        .body(Empty::<Bytes>::new())
        .expect("a request");
    within("HTTP/2 stream", send.ready()).await.unwrap_or_else(|e| panic!("[{case}] HTTP/2: {e}"));
    let answer = within("CONNECT answer", send.send_request(connect)).await.unwrap_or_else(|e| panic!("[{case}] {e}"));
    assert_eq!(answer.status(), StatusCode::OK, "[{case}] CONNECT /echo");
    TokioIo::new(within("the stream", hyper::upgrade::on(answer)).await.unwrap_or_else(|e| panic!("[{case}] {e}")))
}

/// Sends a text, then `bad`, then another text, in one write. The first text
/// must be echoed, then the connection failed with `code`; the second text
/// is never echoed.
async fn expect_failure_after_echo(server: SocketAddr, case: &str, bad: &[u8], code: u16) {
    let mut ws = RawClient::connect(server, case).await;
    ws.send(&[text(b"before"), bad.to_vec(), text(b"after")].concat()).await;
    ws.expect_echo(TEXT, b"before").await;
    ws.expect_failure(code).await;
}

// ---------------------------------------------------------------------------
// 1. Framing (RFC 6455 section 5.2).
// ---------------------------------------------------------------------------

/// The 7-bit, 16-bit and 64-bit length forms, at and around their edges, for
/// text and binary, all on one connection.
#[tokio::test]
async fn s1_text_and_binary_echo_at_every_length_form() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "length forms").await;
    for len in [0, 1, 125, 126, 127, 128, 65535, 65536] {
        ws.send(&text(&ascii(len))).await;
        ws.expect_echo(TEXT, &ascii(len)).await;
        ws.send(&masked(true, BINARY, &all_byte_values(len))).await;
        ws.expect_echo(BINARY, &all_byte_values(len)).await;
    }
    ws.close(1000).await;
}

/// Frames that reach the server one byte per write: headers of each length
/// form and payloads, including multi-byte UTF-8, are reassembled across reads.
#[tokio::test]
async fn s1_frames_written_one_byte_at_a_time() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "one byte per write").await;
    let greeting = "Hello, κόσμε 𝄞".as_bytes();
    ws.send_byte_by_byte(&text(greeting)).await;
    ws.expect_echo(TEXT, greeting).await;
    ws.send_byte_by_byte(&masked(true, BINARY, &all_byte_values(300))).await;
    ws.expect_echo(BINARY, &all_byte_values(300)).await;
    ws.send_byte_by_byte(&close_frame(1000, b"done")).await;
    assert_eq!(ws.read_close().await, Some(1000));
    ws.expect_tcp_close().await;
}

// ---------------------------------------------------------------------------
// 2. Pings and pongs (sections 5.5.2, 5.5.3).
// ---------------------------------------------------------------------------

/// A ping is answered with a pong carrying the same payload: empty, text,
/// binary, and the largest a control frame may carry.
#[tokio::test]
async fn s2_ping_is_answered_with_an_identical_pong() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "ping payloads").await;
    let binary = [0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff];
    for payload in [&b""[..], b"Hello, ping", &binary, &all_byte_values(125)] {
        ws.send(&masked(true, PING, payload)).await;
        ws.expect_pong(payload).await;
    }
    ws.close(1000).await;
}

/// A control frame may carry at most 125 bytes (section 5.5): a ping of 126
/// fails the connection with 1002.
#[tokio::test]
async fn s2_ping_longer_than_125_bytes_fails_with_1002() {
    let server = echo_server().await;
    expect_failure_after_echo(server, "ping of 126 bytes", &masked(true, PING, &all_byte_values(126)), 1002).await;
}

/// An unsolicited pong needs no answer (section 5.5.3): the next frame the
/// server sends is the echo of the following text.
#[tokio::test]
async fn s2_unsolicited_pong_is_ignored() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "unsolicited pong").await;
    ws.send(&[masked(true, PONG, b""), masked(true, PONG, b"unsolicited"), text(b"after pongs")].concat()).await;
    ws.expect_echo(TEXT, b"after pongs").await;
    ws.close(1000).await;
}

/// Ten pings in one write get ten pongs, in order.
#[tokio::test]
async fn s2_ten_pings_get_ten_pongs_in_order() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "ten pings").await;
    let payloads: Vec<Vec<u8>> = (0..10).map(|i| format!("ping {i}").into_bytes()).collect();
    ws.send(&payloads.iter().flat_map(|p| masked(true, PING, p)).collect::<Vec<u8>>()).await;
    for payload in &payloads {
        ws.expect_pong(payload).await;
    }
    ws.close(1000).await;
}

// ---------------------------------------------------------------------------
// 3. Reserved bits (section 5.2: RSV1-3 MUST be 0 without an extension).
// ---------------------------------------------------------------------------

/// Each RSV bit, and all three, on every kind of frame fail the connection
/// with 1002, after the message sent before is echoed.
#[tokio::test]
async fn s3_reserved_bits_fail_with_1002() {
    let server = echo_server().await;
    for rsv in [0b100, 0b010, 0b001, 0b111] {
        for (opcode, payload) in [(TEXT, &b"rsv"[..]), (BINARY, b"\x00rsv"), (PING, b"rsv"), (CLOSE, b"\x03\xe8")] {
            let case = format!("rsv {rsv:#05b} on opcode {opcode:#x}");
            expect_failure_after_echo(server, &case, &frame(true, rsv, opcode, payload, Some(KEY)), 1002).await;
        }
    }
}

// ---------------------------------------------------------------------------
// 4. Opcodes (section 5.2: reserved opcodes fail the connection).
// ---------------------------------------------------------------------------

/// The reserved non-control opcodes 3-7 and control opcodes 0xB-0xF fail the
/// connection with 1002, with and without payload, after the message sent
/// before is echoed.
#[tokio::test]
async fn s4_reserved_opcodes_fail_with_1002() {
    let server = echo_server().await;
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        for payload in [&b""[..], b"reserved opcode"] {
            let case = format!("opcode {opcode:#x} with {} bytes", payload.len());
            expect_failure_after_echo(server, &case, &masked(true, opcode, payload), 1002).await;
        }
    }
}

// ---------------------------------------------------------------------------
// 5. Fragmentation (section 5.4).
// ---------------------------------------------------------------------------

/// A text and a binary message in three fragments come back whole.
#[tokio::test]
async fn s5_text_and_binary_in_fragments_are_echoed_whole() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "fragments").await;
    for opcode in [TEXT, BINARY] {
        ws.send(&masked(false, opcode, b"frag")).await;
        ws.send(&masked(false, CONTINUATION, b"men")).await;
        ws.send(&masked(true, CONTINUATION, b"ted")).await;
        ws.expect_echo(opcode, b"fragmented").await;
    }
    ws.close(1000).await;
}

/// Control frames are never fragmented (section 5.5): a ping without FIN
/// fails with 1002, alone or followed by its would-be continuation.
#[tokio::test]
async fn s5_fragmented_ping_fails_with_1002() {
    let server = echo_server().await;
    let alone = masked(false, PING, b"ping");
    let continued = [masked(false, PING, b"pi"), masked(true, CONTINUATION, b"ng")].concat();
    expect_failure_after_echo(server, "ping without FIN", &alone, 1002).await;
    expect_failure_after_echo(server, "ping in two fragments", &continued, 1002).await;
}

/// A ping between fragments is answered at once, before the message ends,
/// and the message is then echoed whole (section 5.4: control frames may be
/// injected in the middle of a fragmented message).
#[tokio::test]
async fn s5_ping_between_fragments_is_answered_before_the_message_ends() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "ping between fragments").await;
    ws.send(&[masked(false, TEXT, b"frag"), masked(true, PING, b"between")].concat()).await;
    ws.expect_pong(b"between").await;
    ws.send(&masked(true, CONTINUATION, b"ment")).await;
    ws.expect_echo(TEXT, b"fragment").await;
    ws.close(1000).await;
}

/// Pings and pongs between every two fragments, all in one write: one pong
/// per ping, then the whole message.
#[tokio::test]
async fn s5_control_frames_between_every_fragment_in_one_write() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "control frames between fragments").await;
    let wire = [
        masked(false, BINARY, b"one "),
        masked(true, PING, b"1"),
        masked(false, CONTINUATION, b"two "),
        masked(true, PONG, b"unsolicited"),
        masked(false, CONTINUATION, b"three"),
        masked(true, PING, b"2"),
        masked(true, CONTINUATION, b""),
    ];
    ws.send(&wire.concat()).await;
    ws.expect_pong(b"1").await;
    ws.expect_pong(b"2").await;
    ws.expect_echo(BINARY, b"one two three").await;
    ws.close(1000).await;
}

/// A continuation frame with no message to continue fails with 1002:
/// first thing on the connection, or after a message already ended.
#[tokio::test]
async fn s5_continuation_without_a_message_fails_with_1002() {
    let server = echo_server().await;
    let final_only = masked(true, CONTINUATION, b"orphan");
    let unfinished = [masked(false, CONTINUATION, b"orph"), masked(true, CONTINUATION, b"an")].concat();
    let after_end = [masked(false, TEXT, b"ended"), masked(true, CONTINUATION, b""), final_only.clone()].concat();
    expect_failure_after_echo(server, "final continuation", &final_only, 1002).await;
    expect_failure_after_echo(server, "continuation without FIN", &unfinished, 1002).await;

    let mut ws = RawClient::connect(server, "continuation after the message ended").await;
    ws.send(&after_end).await;
    ws.expect_echo(TEXT, b"ended").await;
    ws.expect_failure(1002).await;
}

/// A new text or binary frame where a continuation is expected fails with 1002.
#[tokio::test]
async fn s5_data_frame_inside_a_fragmented_message_fails_with_1002() {
    let server = echo_server().await;
    let cases = [
        ("text inside text", masked(false, TEXT, b"a"), masked(true, TEXT, b"b")),
        ("binary inside text", masked(false, TEXT, b"a"), masked(false, BINARY, b"b")),
        ("text inside binary", masked(false, BINARY, b"a"), masked(true, TEXT, b"b")),
    ];
    for (case, first, second) in cases {
        expect_failure_after_echo(server, case, &[first, second].concat(), 1002).await;
    }
}

/// A message in fragments of one byte each.
#[tokio::test]
async fn s5_fragments_of_one_byte() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "one-byte fragments").await;
    let message = b"Hello, fragments!";
    let last = message.len() - 1;
    let fragments = message.iter().enumerate().map(|(i, byte)| {
        let opcode = if i == 0 { TEXT } else { CONTINUATION };
        masked(i == last, opcode, &[*byte])
    });
    ws.send(&fragments.flatten().collect::<Vec<u8>>()).await;
    ws.expect_echo(TEXT, message).await;
    ws.close(1000).await;
}

/// Empty fragments, first, middle and last, add nothing to the message.
#[tokio::test]
async fn s5_empty_fragments() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "empty fragments").await;
    for (opcode, middle) in [(TEXT, &b""[..]), (TEXT, b"middle"), (BINARY, b""), (BINARY, b"\x00\xff")] {
        let wire = [masked(false, opcode, b""), masked(false, CONTINUATION, middle), masked(true, CONTINUATION, b"")];
        ws.send(&wire.concat()).await;
        ws.expect_echo(opcode, middle).await;
    }
    ws.close(1000).await;
}

// ---------------------------------------------------------------------------
// 6. UTF-8 in text messages (sections 5.6, 8.1; RFC 3629).
// ---------------------------------------------------------------------------

/// Code points of every encoded length and at the edges of each range are
/// valid text and come back unchanged.
#[tokio::test]
async fn s6_valid_multi_byte_text_is_echoed() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "valid UTF-8").await;
    let samples = [
        "κόσμε",
        "€ and ∑",
        "𝄞 and 😀",
        "\u{0}\u{7F}\u{80}\u{7FF}\u{800}\u{FFFF}\u{10000}\u{10FFFF}",
        "\u{D7FF}\u{E000}\u{FFFD}\u{FFFE}",
    ];
    for sample in samples {
        ws.send(&text(sample.as_bytes())).await;
        ws.expect_echo(TEXT, sample.as_bytes()).await;
    }
    ws.close(1000).await;
}

/// A code point cut by a fragment edge, at every byte position, is carried
/// over to the next fragment: the text is valid and echoed; so is the same
/// text with every byte in its own fragment.
#[tokio::test]
async fn s6_code_points_split_across_fragments_at_every_byte() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "split code points").await;
    let sample = "aé€𝄞\u{10FFFF}z".as_bytes();
    for cut in 1..sample.len() {
        ws.send(&[masked(false, TEXT, &sample[..cut]), masked(true, CONTINUATION, &sample[cut..])].concat()).await;
        ws.expect_echo(TEXT, sample).await;
    }
    let last = sample.len() - 1;
    for (i, byte) in sample.iter().enumerate() {
        ws.send(&masked(i == last, if i == 0 { TEXT } else { CONTINUATION }, &[*byte])).await;
    }
    ws.expect_echo(TEXT, sample).await;
    ws.close(1000).await;
}

/// The invalid sequences, each one the single reason a text is invalid.
const INVALID_UTF8: [(&str, &[u8]); 14] = [
    ("lone continuation byte", b"ok \x80 ok"),
    ("lone 0xBF", b"\xbf"),
    ("overlong '/' in two bytes", b"\xc0\xaf"),
    ("overlong 0xC1", b"\xc1\xbf"),
    ("overlong '/' in three bytes", b"\xe0\x80\xaf"),
    ("overlong in four bytes", b"\xf0\x80\x80\xaf"),
    ("surrogate U+D800", b"\xed\xa0\x80"),
    ("surrogate U+DFFF", b"\xed\xbf\xbf"),
    ("above U+10FFFF", b"\xf4\x90\x80\x80"),
    ("byte 0xF5", b"\xf5\x80\x80\x80"),
    ("byte 0xFF", b"\xce\xba\xff"),
    ("truncated two-byte sequence at the end", b"end \xce"),
    ("truncated three-byte sequence at the end", b"end \xe2\x82"),
    ("truncated four-byte sequence at the end", b"end \xf0\x9d\x84"),
];

/// Invalid UTF-8 in a text message fails the connection with 1007, after
/// the message sent before is echoed.
#[tokio::test]
async fn s6_invalid_utf8_fails_with_1007() {
    let server = echo_server().await;
    for (case, invalid) in INVALID_UTF8 {
        expect_failure_after_echo(server, case, &text(invalid), 1007).await;
    }
}

/// The UTF-8 rule is for text alone: the same bytes in binary messages are echoed.
#[tokio::test]
async fn s6_invalid_utf8_in_binary_is_echoed() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "invalid UTF-8 as binary").await;
    for (_, invalid) in INVALID_UTF8 {
        ws.send(&masked(true, BINARY, invalid)).await;
        ws.expect_echo(BINARY, invalid).await;
    }
    ws.close(1000).await;
}

/// A message that ends inside a code point fails with 1007, even when the
/// final fragment that ends it is empty.
#[tokio::test]
async fn s6_code_point_truncated_at_the_final_fragment_fails_with_1007() {
    let server = echo_server().await;
    let wire = [masked(false, TEXT, b"cut \xe2\x82"), masked(true, CONTINUATION, b"")].concat();
    expect_failure_after_echo(server, "truncated before an empty final fragment", &wire, 1007).await;
}

/// Invalid text fails fast (section 8.1): the close 1007 comes when the
/// first invalid byte arrives, while the rest of the frame is never sent.
#[tokio::test]
async fn s6_invalid_utf8_fails_before_the_rest_of_the_frame_arrives() {
    let server = echo_server().await;
    for (case, invalid) in [("overlong", &b"\xc0\xaf"[..]), ("surrogate", b"valid \xed\xa0"), ("high", b"\xf4\x90")] {
        let mut ws = RawClient::connect(server, format!("fail fast: {case}")).await;
        let whole = text(&[invalid, &ascii(64)].concat());
        let header_len = 2 + 4;
        ws.send(&whole[..header_len + invalid.len()]).await;
        ws.expect_failure(1007).await;
    }
}

/// Invalid text in a middle fragment fails with 1007 before the final
/// fragment is sent.
#[tokio::test]
async fn s6_invalid_utf8_in_a_middle_fragment_fails_before_the_final_fragment() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "invalid middle fragment").await;
    let first = masked(false, TEXT, "κόσμε".as_bytes());
    ws.send(&[first, masked(false, CONTINUATION, b"ok \xed\xa0\x80 more")].concat()).await;
    ws.expect_failure(1007).await;
}

// ---------------------------------------------------------------------------
// 7. Closing (sections 5.5.1, 7.1, 7.4).
// ---------------------------------------------------------------------------

/// A close with no payload is answered with a close that is empty or 1000,
/// and the server then closes TCP.
#[tokio::test]
async fn s7_close_without_payload_is_answered_and_tcp_closed() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "empty close").await;
    ws.send(&masked(true, CLOSE, b"")).await;
    let code = ws.read_close().await;
    assert!(matches!(code, None | Some(1000)), "the reply to an empty close: {code:?}");
    ws.expect_tcp_close().await;
}

/// A close with a code and a reason, up to the 123 bytes that fit, is
/// answered with the same code.
#[tokio::test]
async fn s7_close_with_a_reason_is_answered_with_its_code() {
    let server = echo_server().await;
    for reason in [&b"bye"[..], "au revoir, κόσμε".as_bytes(), &ascii(123)] {
        let mut ws = RawClient::connect(server, format!("close reason of {} bytes", reason.len())).await;
        ws.send(&close_frame(1000, reason)).await;
        assert_eq!(ws.read_close().await, Some(1000));
        ws.expect_tcp_close().await;
    }
}

/// A close payload of one byte (no room for a code), or longer than a
/// control frame may be, fails with 1002.
#[tokio::test]
async fn s7_malformed_close_payload_fails_with_1002() {
    let server = echo_server().await;
    let one_byte = masked(true, CLOSE, b"\x03");
    let too_long = close_frame(1000, &ascii(124));
    expect_failure_after_echo(server, "one-byte close payload", &one_byte, 1002).await;
    expect_failure_after_echo(server, "close payload of 126 bytes", &too_long, 1002).await;
}

/// Every code a peer may send (section 7.4.1, 7.4.2: 1000-1003, 1007-1011,
/// 3000-4999) is accepted and echoed in the reply.
#[tokio::test]
async fn s7_valid_close_codes_are_echoed() {
    let server = echo_server().await;
    for code in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
        let mut ws = RawClient::connect(server, format!("close code {code}")).await;
        ws.close(code).await;
    }
}

/// Codes that may not be sent (below 1000, the reserved 1004-1006 and 1015,
/// undefined 1016-2999, above 4999) fail with 1002.
#[tokio::test]
async fn s7_invalid_close_codes_fail_with_1002() {
    let server = echo_server().await;
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        expect_failure_after_echo(server, &format!("close code {code}"), &close_frame(code, b""), 1002).await;
    }
}

/// A close reason that is not UTF-8 fails with 1007 (section 5.5.1).
#[tokio::test]
async fn s7_invalid_utf8_in_the_close_reason_fails_with_1007() {
    let server = echo_server().await;
    for (case, reason) in [("surrogate", &b"\xed\xa0\x80"[..]), ("0xFF", b"bye \xff"), ("truncated", b"bye \xce")] {
        expect_failure_after_echo(server, case, &close_frame(1000, reason), 1007).await;
    }
}

/// After the client's close, data and pings are ignored: the next frame is
/// the close reply and then the server closes TCP (sections 5.5.1, 7.1.1).
#[tokio::test]
async fn s7_frames_after_the_close_are_ignored() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "frames after close").await;
    let after = [masked(true, BINARY, b"after close"), masked(true, PING, b"after close"), text(b"after close")];
    ws.send(&[close_frame(1000, b""), after.concat()].concat()).await;
    assert_eq!(ws.read_close().await, Some(1000));
    ws.expect_tcp_close().await;
}

/// A close in the middle of a fragmented message is a valid control frame:
/// it is answered, and the unfinished message is not echoed.
#[tokio::test]
async fn s7_close_in_the_middle_of_a_fragmented_message() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "close between fragments").await;
    ws.send(&masked(false, TEXT, b"unfinished")).await;
    ws.close(1000).await;
}

// ---------------------------------------------------------------------------
// 9. Large messages (kept moderate: tests run in debug builds).
// ---------------------------------------------------------------------------

/// A 1 MiB text and a 4 MiB binary message, each in one frame.
#[tokio::test]
async fn s9_large_messages_in_one_frame() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "large in one frame").await;
    for (opcode, payload) in [(TEXT, ascii(1 << 20)), (BINARY, all_byte_values(4 << 20))] {
        ws.send(&masked(true, opcode, &payload)).await;
        ws.expect_echo(opcode, &payload).await;
    }
    ws.close(1000).await;
}

/// The same messages in fragments of 64 KiB.
#[tokio::test]
async fn s9_large_messages_in_64_kib_fragments() {
    let server = echo_server().await;
    let mut ws = RawClient::connect(server, "large in fragments").await;
    for (opcode, payload) in [(TEXT, ascii(1 << 20)), (BINARY, all_byte_values(4 << 20))] {
        let chunks: Vec<&[u8]> = payload.chunks(64 << 10).collect();
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            ws.send(&masked(i == last, if i == 0 { opcode } else { CONTINUATION }, chunk)).await;
        }
        ws.expect_echo(opcode, &payload).await;
    }
    ws.close(1000).await;
}

// ---------------------------------------------------------------------------
// 10. Masking (section 5.1: a client MUST mask every frame).
// ---------------------------------------------------------------------------

/// An unmasked data or control frame from the client fails with 1002.
#[tokio::test]
async fn s10_unmasked_client_frame_fails_with_1002() {
    let server = echo_server().await;
    for (opcode, payload) in [(TEXT, &b"unmasked"[..]), (BINARY, b""), (PING, b"unmasked"), (CLOSE, b"\x03\xe8")] {
        let case = format!("unmasked opcode {opcode:#x}");
        expect_failure_after_echo(server, &case, &frame(true, 0, opcode, payload, None), 1002).await;
    }
}
