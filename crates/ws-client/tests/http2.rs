//! The client over HTTP/2 (RFC 8441) against ws-server: a thousand
//! WebSockets over one TLS connection, each a member of its room; a refusal
//! with its status and reason; `connect` and the tool with `--http2`, over
//! TLS and in cleartext (`--h2c`); `HubClient` over HTTP/2.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use clap::Parser;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::time::timeout;
use ws_client::http2::Http2;
use ws_client::hub::{HubClient, HubEvent, HubSettings};
use ws_client::{ClientSettings, Stream, Trust, connect};
use ws_proto::{Event, Message};
use ws_server::config::ServerConfig;

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

/// A hub serving TLS with a certificate for localhost made here, with
/// `flags`: its address, and settings for `wss://localhost:PORT/ws` trusting it.
async fn tls_server(name: &str, flags: &[&str]) -> (SocketAddr, ClientSettings) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let tls = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let args = ["ws-server", "--listen", "127.0.0.1:0"].into_iter().chain(tls).chain(flags.iter().copied());
    let addr = ws_server::http::spawn(ServerConfig::parse_from(args)).await.unwrap().addr;
    let url = format!("wss://localhost:{}/ws", addr.port());
    (addr, ClientSettings { url, trust: Trust::CaFile(cert), http2: true, ..ClientSettings::default() })
}

async fn next(ws: &mut ws_tokio::WebSocket<Stream>) -> Value {
    loop {
        match timeout(PATIENCE, ws.recv()).await.expect("an envelope in time").expect("open").expect("no error") {
            Event::Message(Message::Text(text)) => return serde_json::from_str(text.as_str()).unwrap(),
            Event::Close(close) => panic!("closed: {close:?}"),
            _ => {}
        }
    }
}

/// The next envelope, which must have every field of `expected`.
async fn expect(ws: &mut ws_tokio::WebSocket<Stream>, expected: Value) {
    let got = next(ws).await;
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&got[field], value, "field {field} of {got}, expected {expected}");
    }
}

async fn send(ws: &mut ws_tokio::WebSocket<Stream>, envelope: Value) {
    ws.send(&Message::from(envelope.to_string())).await.unwrap();
}

#[tokio::test]
async fn a_thousand_websockets_over_one_tls_connection_each_get_their_rooms_messages() {
    let flags = ["--max-connections-per-ip", "0", "--default-room", ""];
    let (_, settings) = tls_server("thousand", &flags).await;
    let mut connection = Http2::connect(&settings).await.unwrap();
    let mut members = Vec::new();
    for i in 0..1000 {
        let (mut ws, _) = connection.open("/ws").await.unwrap();
        expect(&mut ws, json!({"type": "system"})).await;
        send(&mut ws, json!({"type": "join", "room": format!("room-{}", i % 4)})).await;
        expect(&mut ws, json!({"type": "joined", "room": format!("room-{}", i % 4)})).await;
        members.push(ws);
    }
    for (i, ws) in members.iter_mut().enumerate().take(4) {
        send(ws, json!({"type": "message", "room": format!("room-{i}"), "content": format!("to room-{i}")})).await;
    }
    for (i, ws) in members.iter_mut().enumerate() {
        let room = format!("room-{}", i % 4);
        expect(ws, json!({"type": "message", "room": room, "content": format!("to {room}"), "seq": 1})).await;
    }
}

#[tokio::test]
async fn a_refusal_over_http2_comes_with_its_status_and_reason() {
    let (_, settings) = tls_server("refusal", &["--max-connections-per-ip", "1"]).await;
    let mut connection = Http2::connect(&settings).await.unwrap();
    let (_first, _) = connection.open("/ws").await.unwrap();
    match connection.open("/ws").await {
        Err(ws_tokio::Error::Refused { status: 429, reason, .. }) => assert!(!reason.is_empty()),
        other => panic!("expected a 429: {other:?}"),
    }
    match connection.open("/nowhere").await {
        Err(ws_tokio::Error::Refused { status: 404, .. }) => {}
        other => panic!("expected a 404: {other:?}"),
    }
}

#[tokio::test]
async fn connect_and_the_tool_speak_http2_when_asked_over_tls_and_in_cleartext() {
    let (_, secure) = tls_server("tool", &[]).await;
    let args = ["ws-server", "--listen", "127.0.0.1:0", "--h2c"];
    let h2c = ws_server::http::spawn(ServerConfig::parse_from(args)).await.unwrap().addr;
    let plain = ClientSettings { url: format!("ws://{h2c}/ws"), http2: true, ..ClientSettings::default() };
    for settings in [&secure, &plain] {
        let (mut ws, response) = connect(settings).await.unwrap();
        assert!(matches!(ws.get_ref(), Stream::Http2(_)));
        assert_eq!(response.extensions[0].name, "permessage-deflate", "{}", settings.url);
        expect(&mut ws, json!({"type": "system"})).await;
        expect(&mut ws, json!({"type": "joined", "room": "general"})).await;
        // Long enough to be compressed, both ways.
        let content = "over http/2 ".repeat(20);
        send(&mut ws, json!({"type": "message", "room": "general", "content": content})).await;
        expect(&mut ws, json!({"type": "message", "content": content})).await;
        let Trust::CaFile(cert) = &secure.trust else { unreachable!() };
        let mut tool = tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-client"));
        tool.arg(&settings.url).arg("--http2").args(["--ca-file", cert.to_str().unwrap()]);
        let output = timeout(PATIENCE, tool.stdin(Stdio::null()).output()).await.unwrap().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(
            output.status.success() && stdout.contains(r#""type":"system""#),
            "{}: {stdout} {stderr}",
            settings.url
        );
    }
    // Both of the cleartext server's hub connections came as HTTP/2 streams.
    let mut tcp = tokio::net::TcpStream::connect(h2c).await.unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {h2c}\r\nConnection: close\r\n\r\n");
    tokio::io::AsyncWriteExt::write_all(&mut tcp, request.as_bytes()).await.unwrap();
    let mut metrics = String::new();
    timeout(PATIENCE, tokio::io::AsyncReadExt::read_to_string(&mut tcp, &mut metrics)).await.unwrap().unwrap();
    assert!(metrics.contains("\nws_connections_accepted_h2_total 2\n"), "{metrics}");
}

#[tokio::test]
async fn the_hub_client_over_http2_joins_sends_and_receives() {
    let (_, settings) = tls_server("hub", &[]).await;
    let (client, mut events) = HubClient::start(HubSettings::new(settings));
    client.join("lobby");
    let mut sent = None;
    loop {
        match timeout(PATIENCE, events.recv()).await.unwrap().unwrap() {
            HubEvent::Envelope(v) if v["type"] == "joined" && v["room"] == "lobby" => {
                sent = Some(client.send("lobby", "over http/2"));
            }
            HubEvent::Message { room, envelope, .. } if room == "lobby" => {
                assert_eq!(envelope["content"], "over http/2");
                assert!(sent.is_some());
                break;
            }
            HubEvent::Disconnected { reason, .. } => panic!("disconnected: {reason}"),
            _ => {}
        }
    }
    client.close();
}
