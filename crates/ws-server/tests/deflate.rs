//! permessage-deflate with browsers' offers, over real loopback TCP: a
//! client sends exactly the `Sec-WebSocket-Extensions` of Chromium or of
//! Firefox, gets the documented answer (the server resets its context and
//! asks the client to reset its own, which neither offered), and exchanges
//! compressed and plain messages with the hub, frame by frame, through
//! ws-proto's client `Connection`.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use common::{PATIENCE, server};
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use ws_proto::handshake::client::ClientRequest;
use ws_proto::{Config, Connection, DeflateConfig, Event, Message, Role};

const CHROMIUM: &str = "permessage-deflate; client_max_window_bits";
const FIREFOX: &str = "permessage-deflate";

/// A hub client that sees each frame's first byte.
struct RawClient {
    tcp: TcpStream,
    conn: Connection,
    /// Read and not yet fed to `conn`.
    pending: Vec<u8>,
    /// The server's `Sec-WebSocket-Extensions`.
    extensions: String,
}

impl RawClient {
    /// Opens the hub's WebSocket offering `offer`, and takes the welcome.
    async fn connect(addr: SocketAddr, offer: &str) -> RawClient {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let request =
            ClientRequest { extensions: vec![offer.to_owned()], ..ClientRequest::new(addr.to_string(), "/ws") };
        let (handshake, bytes) = request.encode().unwrap();
        tcp.write_all(&bytes).await.unwrap();
        let mut pending = Vec::new();
        let (response, used) = loop {
            if let Some(parsed) = handshake.parse_response(&pending, &Config::default()).unwrap() {
                break parsed;
            }
            read_more(&mut tcp, &mut pending).await;
        };
        pending.drain(..used);
        let extensions = response.headers.get("sec-websocket-extensions").unwrap_or_default().to_owned();
        // The browser's offer is the default client's: the same checks of the answer.
        let config = DeflateConfig::default();
        let params = config.accept_response(&response.extensions[0]).unwrap();
        let conn = Connection::new(Role::Client, Config::default()).with_deflate(&params, &config);
        let mut client = RawClient { tcp, conn, pending, extensions };
        assert_eq!(client.next().await.1["type"], "system");
        client
    }

    async fn send(&mut self, envelope: Value) {
        self.conn.send(&Message::from(envelope.to_string())).unwrap();
        while !self.conn.output().is_empty() {
            let mut slices = [std::io::IoSlice::new(&[]); 16];
            let n = self.conn.output().io_slices(&mut slices);
            let written = self.tcp.write_vectored(&slices[..n]).await.unwrap();
            self.conn.output_mut().advance(written);
        }
    }

    /// The next envelope, and whether its frame had RSV1 (compressed).
    async fn next(&mut self) -> (bool, Value) {
        let mut first = None;
        loop {
            if !self.pending.is_empty() {
                let byte = *first.get_or_insert(self.pending[0]);
                let (used, event) = self.conn.receive(&self.pending).unwrap();
                self.pending.drain(..used);
                match event {
                    Some(Event::Message(Message::Text(text))) => {
                        return (byte & 0x40 != 0, serde_json::from_str(text.as_str()).unwrap());
                    }
                    Some(Event::Ping(_) | Event::Pong(_)) => first = None,
                    Some(other) => panic!("{other:?}"),
                    None => {}
                }
                continue;
            }
            read_more(&mut self.tcp, &mut self.pending).await;
        }
    }

    /// The next envelope of `kind`, past others, with whether it came compressed.
    async fn next_of(&mut self, kind: &str) -> (bool, Value) {
        loop {
            let (compressed, envelope) = self.next().await;
            if envelope["type"] == kind {
                return (compressed, envelope);
            }
        }
    }

    /// Joins a room of its own (past the default room's `joined`).
    async fn join(&mut self, room: &str) {
        self.send(json!({"type": "join", "room": room})).await;
        while self.next_of("joined").await.1["room"] != room {}
    }

    /// Says `content` in `room` and receives it back: whether it came compressed.
    async fn say(&mut self, room: &str, content: &str) -> bool {
        self.send(json!({"type": "message", "room": room, "content": content})).await;
        let (compressed, envelope) = self.next_of("message").await;
        assert_eq!(envelope["content"], content, "{envelope}");
        compressed
    }
}

async fn read_more(tcp: &mut TcpStream, into: &mut Vec<u8>) {
    let mut buf = [0; 4096];
    let n = timeout(PATIENCE, tcp.read(&mut buf)).await.expect("bytes in time").unwrap();
    assert!(n > 0, "the server closed the connection");
    into.extend_from_slice(&buf[..n]);
}

/// A chat message long enough to be compressed (past the 128-byte threshold).
fn long(i: usize) -> String {
    format!("message {i}: {}", "the quick brown fox jumps over the lazy dog, again and again. ".repeat(4))
}

#[tokio::test]
async fn chromium_and_firefox_offers_get_both_contexts_reset_and_exchange_compressed_and_plain_messages() {
    let addr = server(&["--rate-limit", "0"]).await;
    for (offer, answer) in [
        (
            CHROMIUM,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=15",
        ),
        (FIREFOX, "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ] {
        let mut client = RawClient::connect(addr, offer).await;
        assert_eq!(client.extensions, answer, "offer {offer:?}");
        // Short names keep the relayed "hi" under the threshold.
        let room = if offer == CHROMIUM { "c" } else { "f" };
        client.join(room).await;
        // The client was refused context takeover it did not ask to give up:
        // every message stands alone, or the server could not inflate the second.
        for i in 0..5 {
            assert!(client.say(room, &long(i)).await, "{offer:?}: message {i} came compressed");
            assert!(!client.say(room, "hi").await, "{offer:?}: a short message came plain");
        }
    }
}

#[tokio::test]
async fn clients_keep_their_context_when_the_server_lets_them() {
    let addr = server(&["--rate-limit", "0", "--deflate-client-context-takeover"]).await;
    let mut client = RawClient::connect(addr, CHROMIUM).await;
    assert_eq!(client.extensions, "permessage-deflate; server_no_context_takeover; client_max_window_bits=15");
    client.join("k").await;
    for i in 0..5 {
        assert!(client.say("k", &long(i)).await);
        assert!(!client.say("k", "hi").await);
    }
}
