//! The adversarial suite: hostile clients against a real `ws-server` on
//! loopback. Each case asserts the server's answer, and that a bystander, a
//! normal hub client connected alongside, is still served afterwards.
//!
//! Every case names, in a comment, the protection it checks and how the
//! assertion would fail without it. The slow consumer (a client that stops
//! reading while its room floods) is in ws-server's own tests
//! (`a_client_that_never_reads_is_disconnected_and_the_others_get_everything`).

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use clap::Parser;
use serde_json::{Value, json};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use ws_proto::handshake::client::ClientRequest;
use ws_proto::{CloseCode, Config, Connection, Event, Message, Role};
use ws_server::config::ServerConfig;
use ws_tokio::client::{ClientOptions, connect_with, handshake};
use ws_tokio::{Options, WebSocket};

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// A request head for the hub, from a client that sends no Origin.
const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

/// Starts a server with `flags` on a free port.
async fn server(flags: &[&str]) -> SocketAddr {
    let args = ["ws-server", "--listen", "127.0.0.1:0"].iter().chain(flags);
    ws_server::http::spawn(ServerConfig::parse_from(args)).await.unwrap().addr
}

/// A normal hub client, there before the attack and checked after it.
struct Bystander {
    ws: WebSocket<TcpStream>,
}

impl Bystander {
    async fn arrive(addr: SocketAddr) -> Bystander {
        Bystander::arrive_from(addr, Ipv4Addr::LOCALHOST).await
    }

    /// Arrives from another loopback address than the attacker's 127.0.0.1.
    async fn arrive_from(addr: SocketAddr, source: Ipv4Addr) -> Bystander {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let request = ClientRequest::new(addr.to_string(), "/ws");
        let (ws, _) = timeout(PATIENCE, handshake(tcp, &request, Options::default())).await.unwrap().unwrap();
        let mut bystander = Bystander { ws };
        bystander.until("joined").await;
        bystander
    }

    /// The next envelope of type `kind`.
    async fn until(&mut self, kind: &str) -> Value {
        loop {
            let event = timeout(PATIENCE, self.ws.recv()).await.expect("the bystander waited in vain");
            if let Event::Message(Message::Text(text)) = event.unwrap().unwrap() {
                let envelope: Value = serde_json::from_str(text.as_str()).unwrap();
                if envelope["type"] == kind {
                    return envelope;
                }
            }
        }
    }

    /// Publishes to its room and receives its own message back.
    async fn expect_served(mut self) {
        let content = "still here";
        let envelope = json!({"type": "message", "room": "general", "content": content});
        self.ws.send(&Message::from(envelope.to_string())).await.unwrap();
        loop {
            let message = self.until("message").await;
            if message["content"] == content {
                return;
            }
        }
    }
}

/// A client that writes whatever bytes it likes and reads the server's frames.
struct Raw {
    tcp: TcpStream,
    /// Parses what the server sends; never used to send.
    frames: Connection,
    /// Bytes read and not yet parsed.
    rest: Vec<u8>,
}

impl Raw {
    /// Opens a hub connection by hand.
    async fn open(addr: SocketAddr) -> Raw {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(format!("{UPGRADE}\r\n").as_bytes()).await.unwrap();
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let frames = Connection::new(Role::Client, Config { max_message_size: usize::MAX, ..Config::default() });
        Raw { tcp, frames, rest: Vec::new() }
    }

    /// The next event from the server, `None` once it closed TCP.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if !self.rest.is_empty() {
                let (used, event) = self.frames.receive(&self.rest).unwrap();
                self.rest.drain(..used);
                if event.is_some() {
                    return event;
                }
                continue;
            }
            let mut buf = vec![0; 64 << 10];
            let n = timeout(PATIENCE, self.tcp.read(&mut buf)).await.expect("the server went silent").ok()?;
            if n == 0 {
                return None;
            }
            self.rest.extend_from_slice(&buf[..n]);
        }
    }

    /// The code of the server's close frame; `None` if TCP ended without one.
    async fn close_code(&mut self) -> Option<u16> {
        while let Some(event) = self.next().await {
            if let Event::Close(frame) = event {
                return Some(frame.map_or(1005, |f| f.code.0));
            }
        }
        None
    }
}

/// Reads an HTTP response head, byte by byte, so no frame byte is taken with it.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = timeout(PATIENCE, tcp.read_u8()).await.expect("no response").unwrap();
        head.push(byte);
    }
    String::from_utf8(head).unwrap()
}

/// A client frame with any fields, masked with a fixed key unless `masked` is false.
fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut bytes = vec![(fin as u8) << 7 | rsv << 4 | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => bytes.push(mask_bit | n as u8),
        n @ 126..=65535 => {
            bytes.push(mask_bit | 126);
            bytes.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            bytes.push(mask_bit | 127);
            bytes.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let key = [0x37, 0xfa, 0x21, 0x3d];
    if masked {
        bytes.extend_from_slice(&key);
    }
    bytes.extend(payload.iter().enumerate().map(|(i, b)| if masked { b ^ key[i % 4] } else { *b }));
    bytes
}

/// The header of a masked binary frame that announces `len` payload bytes.
fn header_announcing(len: u64) -> Vec<u8> {
    let mut bytes = vec![0x82, 0x80 | 127];
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(&[1, 2, 3, 4]);
    bytes
}

/// Sends `bytes` on a fresh hub connection and returns the server's close code.
async fn close_code_for(addr: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut raw = Raw::open(addr).await;
    raw.tcp.write_all(bytes).await.unwrap();
    raw.close_code().await
}

/// A frame that breaks the protocol gets the close code the RFC gives it.
/// Without each check the server would take the frame (or wait for more),
/// and no close, or another code, would come.
#[tokio::test]
async fn each_protocol_violation_gets_its_close_code() {
    let addr = server(&[]).await;
    let bystander = Bystander::arrive(addr).await;
    let mut bad_reason = vec![0x03, 0xe8];
    bad_reason.extend_from_slice(&[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80]);
    let cases: [(&str, Vec<u8>, u16); 9] = [
        ("an unmasked client frame", frame(true, 0, 0x1, b"hi", false), 1002),
        ("reserved data opcode 3", frame(true, 0, 0x3, b"", true), 1002),
        ("reserved control opcode 0xb", frame(true, 0, 0xb, b"", true), 1002),
        ("RSV2 set", frame(true, 2, 0x1, b"hi", true), 1002),
        ("RSV1 without permessage-deflate", frame(true, 4, 0x1, b"hi", true), 1002),
        ("close code 1005, which is never sent", frame(true, 0, 0x8, &[0x03, 0xed], true), 1002),
        ("close code 999", frame(true, 0, 0x8, &[0x03, 0xe7], true), 1002),
        ("invalid UTF-8 in a text message", frame(true, 0, 0x1, &[0xce, 0xba, 0xff], true), 1007),
        ("invalid UTF-8 in a close reason", frame(true, 0, 0x8, &bad_reason, true), 1007),
    ];
    for (case, bytes, expected) in cases {
        assert_eq!(close_code_for(addr, &bytes).await, Some(expected), "{case}");
    }
    bystander.expect_served().await;
}

/// Frame lengths of 2^63-1 and 2^62 are refused with 1009 from the header
/// alone: nothing of the payload is sent, so a server that allocated or
/// waited for it would send no close at all.
#[tokio::test]
async fn a_huge_frame_length_is_closed_with_1009_from_the_header() {
    let addr = server(&[]).await;
    let bystander = Bystander::arrive(addr).await;
    for len in [(1u64 << 63) - 1, 1 << 62] {
        assert_eq!(close_code_for(addr, &header_announcing(len)).await, Some(1009), "length {len}");
    }
    // The top bit set is not a length at all (section 5.2).
    assert_eq!(close_code_for(addr, &header_announcing(1 << 63)).await, Some(1002));
    bystander.expect_served().await;
}

/// A fragmented message that never ends is closed with 1009 once it passes
/// the message limit (64 KiB by default). The client offers ten times the
/// limit; a server without the limit would take it all and wait for more.
#[tokio::test]
async fn a_never_ending_fragmented_message_is_closed_with_1009_at_the_limit() {
    let addr = server(&[]).await;
    let bystander = Bystander::arrive(addr).await;
    let mut raw = Raw::open(addr).await;
    let chunk = vec![b'x'; 16 << 10];
    let writer = async {
        raw.tcp.write_all(&frame(false, 0, 0x1, &chunk, true)).await?;
        for _ in 0..40 {
            raw.tcp.write_all(&frame(false, 0, 0x0, &chunk, true)).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    // Writes fail once the server has closed: that is the expected end.
    let _ = writer.await;
    assert_eq!(raw.close_code().await, Some(1009));
    bystander.expect_served().await;
}

/// A compressed message that inflates past the limit is closed with 1009.
/// The client compresses 16 MiB of zeros into a few KiB; a server that
/// inflated without the bound would take the message whole.
#[tokio::test]
async fn a_decompression_bomb_is_closed_with_1009() {
    let addr = server(&[]).await;
    let bystander = Bystander::arrive(addr).await;
    let (mut ws, response) = connect_with(&format!("ws://{addr}/ws"), &ClientOptions::default()).await.unwrap();
    assert_eq!(response.extensions.len(), 1, "permessage-deflate agreed");
    let bomb = Message::Binary(vec![0; 16 << 20].into());
    // The write may fail once the server has closed.
    let _ = ws.send(&bomb).await;
    let code = loop {
        match timeout(PATIENCE, ws.recv()).await.expect("no close came") {
            Some(Ok(Event::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(e)) => break e.close_code(),
            None => break None,
        }
    };
    assert_eq!(code, Some(CloseCode::MESSAGE_TOO_BIG));
    bystander.expect_served().await;
}

/// 100,000 pings in one burst are each answered with a pong carrying their
/// payload, in order, while other clients are served. Without ping
/// handling the count would fall short. The memory bound (no socket read
/// while more than `max_output` waits to be written) is checked where it
/// can be without timing, over an in-memory pipe: ws-tokio's
/// `a_peer_that_does_not_read_is_not_read_either`.
#[tokio::test]
async fn a_burst_of_100000_pings_is_answered_in_order() {
    const PINGS: u32 = 100_000;
    let addr = server(&[]).await;
    let bystander = Bystander::arrive(addr).await;
    let Raw { tcp, mut frames, .. } = Raw::open(addr).await;
    let (mut read, mut write) = tcp.into_split();
    let writer = tokio::spawn(async move {
        let mut burst = Vec::new();
        for i in 0..PINGS {
            burst.extend_from_slice(&frame(true, 0, 0x9, &i.to_be_bytes(), true));
        }
        write.write_all(&burst).await.unwrap();
        write
    });
    let mut next = 0u32;
    let mut buf = vec![0; 64 << 10];
    while next < PINGS {
        let n = timeout(PATIENCE, read.read(&mut buf)).await.expect("pongs stopped").unwrap();
        assert!(n > 0, "closed after {next} pongs");
        let mut input = &buf[..n];
        while !input.is_empty() {
            let (used, event) = frames.receive(input).unwrap();
            input = &input[used..];
            match event {
                Some(Event::Pong(payload)) => {
                    assert_eq!(payload[..], next.to_be_bytes(), "pong {next}");
                    next += 1;
                }
                // The welcome, the room's `joined`, a heartbeat ping.
                Some(Event::Message(_) | Event::Ping(_)) | None => {}
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
    }
    drop(writer.await.unwrap());
    bystander.expect_served().await;
}

/// 5,000 hub connections opened and dropped without a close frame, 100 at
/// a time, half of them with a reset: every session ends, and the
/// connection gauge is back at the bystander alone. A session that
/// outlived its socket would keep the gauge above it.
#[tokio::test]
async fn connections_dropped_abruptly_leave_nothing_behind() {
    let addr = server(&["--max-connections-per-ip", "0"]).await;
    for _ in 0..50 {
        let opened: Vec<_> = (0..100).map(|_| tokio::spawn(Raw::open(addr))).collect();
        for (i, raw) in opened.into_iter().enumerate() {
            let raw = raw.await.unwrap();
            if i % 2 == 0 {
                // A reset rather than a FIN: the roughest way to go.
                raw.tcp.set_zero_linger().unwrap();
            }
        }
    }
    let bystander = Bystander::arrive(addr).await;
    timeout(PATIENCE, async {
        // Polls the gauge until it is down: a wait for the event, with a pause between looks.
        while !metrics(addr).await.lines().any(|l| l == "ws_connections 1") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("sessions left behind");
    bystander.expect_served().await;
}

async fn metrics(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut response = String::new();
    timeout(PATIENCE, tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    response
}

/// A request sent a byte at a time and never finished (a slowloris) is
/// dropped at the handshake timeout. Without the timeout the server would
/// wait for the end of the head, which never comes.
#[tokio::test]
async fn a_slowloris_is_dropped_at_the_handshake_timeout() {
    let addr = server(&["--handshake-timeout", "1"]).await;
    let bystander = Bystander::arrive_from(addr, Ipv4Addr::new(127, 0, 0, 2)).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!("{UPGRADE}X-Padding: ");
    let mut drip = tokio::time::interval(Duration::from_millis(100));
    let dropped = async {
        // The attack's pace, not a wait for the server: a byte every 100 ms, then `x` for ever.
        for byte in head.bytes().chain(std::iter::repeat(b'x')) {
            drip.tick().await;
            // Once the server has closed, a write is answered with a reset and the next one fails.
            if tcp.write_all(&[byte]).await.is_err() {
                return;
            }
        }
    };
    timeout(PATIENCE, dropped).await.expect("the half-sent request was never dropped");
    bystander.expect_served().await;
}

/// 1,000 half-sent requests from one address: no more than
/// `--max-connections-per-ip` (10) are held, the rest are answered 429 or
/// closed at once. The handshake timeout is far beyond the test's patience,
/// so without the limit not one socket would end in time.
#[tokio::test]
async fn a_thousand_slowloris_sockets_from_one_address_are_held_to_the_per_ip_limit() {
    let addr = server(&["--handshake-timeout", "3600"]).await;
    let bystander = Bystander::arrive_from(addr, Ipv4Addr::new(127, 0, 0, 2)).await;
    let (ended, mut endings) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..1000 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"G").await.unwrap();
        let ended = ended.clone();
        tokio::spawn(async move {
            let mut answer = Vec::new();
            // Ends when the server closes: after a 429, or with a reset.
            let _ = tcp.read_to_end(&mut answer).await;
            let _ = ended.send(answer);
        });
    }
    for _ in 0..990 {
        let answer = timeout(PATIENCE, endings.recv()).await.expect("more than the limit held").unwrap();
        assert!(answer.is_empty() || answer.starts_with(b"HTTP/1.1 429"), "{}", String::from_utf8_lossy(&answer));
    }
    bystander.expect_served().await;
}

/// A request line or a header too long for the head's bound (8 KiB) is
/// answered 431 as soon as the bound is passed, before the head ends (it
/// never does here). A server without the bound would read on, and drop the
/// socket at the handshake timeout without an answer.
#[tokio::test]
async fn an_oversized_request_line_or_header_is_answered_431() {
    let addr = server(&[]).await;
    let bystander = Bystander::arrive(addr).await;
    let long = "a".repeat(1 << 20);
    for (case, head) in
        [("a 1 MiB request line", format!("GET /{long}")), ("a 1 MiB header", format!("{UPGRADE}X-Long: {long}"))]
    {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // The write fails once the server has answered and closed: the answer is still there to read.
        let _ = tcp.write_all(head.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = timeout(PATIENCE, tcp.read_to_end(&mut answer)).await.expect("no answer");
        assert!(answer.starts_with(b"HTTP/1.1 431"), "{case}: {}", String::from_utf8_lossy(&answer));
    }
    bystander.expect_served().await;
}
