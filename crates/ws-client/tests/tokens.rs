//! Tokens that expire, against a `ws-server` that checks them: the hub
//! client with a token source, and the tool with `--token-command`,
//! refresh on their own when the server asks, and keep their connection
//! past the expiry of the token they connected with.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use clap::Parser;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::timeout;
use ws_client::ClientSettings;
use ws_client::hub::{HubClient, HubEvent, HubSettings, TokenSource};
use ws_proto::{CloseCode, Event};
use ws_server::config::ServerConfig;

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

const SECRET: &[u8] = b"s3cret";

/// Seconds since the Unix epoch, `offset` from now.
fn at(offset: u64) -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + offset
}

/// A token for `sub` that expires at `exp`.
fn token(sub: &str, exp: u64) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!({"sub": sub, "exp": exp}), &key).unwrap()
}

/// A hub that checks tokens, beats every 0.1 s, and asks for a fresh
/// token at every beat (its tokens all expire within the hour).
async fn server() -> SocketAddr {
    let flags = ["--jwt-secret", "s3cret", "--heartbeat-interval", "0.1", "--refresh-before", "3600"];
    let args = ["ws-server", "--listen", "127.0.0.1:0"].iter().chain(&flags);
    ws_server::http::spawn(ServerConfig::parse_from(args)).await.unwrap().addr
}

/// Far enough ahead for the first refresh to come before it on a loaded machine.
const SHORT: u64 = 8;

/// Connects a plain client with `token` that never refreshes, and waits for
/// the server to close it: an event that comes only once `token` expired.
async fn expiry_of(addr: SocketAddr, token: String) {
    let headers = vec![("Authorization".to_owned(), format!("Bearer {token}"))];
    let settings = ClientSettings { url: format!("ws://{addr}/ws"), headers, ..ClientSettings::default() };
    let (mut ws, _) = ws_client::connect(&settings).await.unwrap();
    loop {
        match timeout(PATIENCE, ws.recv()).await.expect("the close in time") {
            Some(Ok(Event::Close(frame))) => return assert_eq!(frame.map(|f| f.code), Some(CloseCode(4001))),
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn the_hub_client_refreshes_from_its_token_source_and_stays_connected() {
    let addr = server().await;
    let first_expiry = at(SHORT);
    let source = TokenSource::new(|| Ok(token("ann", at(SHORT))));
    let connection = ClientSettings { url: format!("ws://{addr}/ws"), ..ClientSettings::default() };
    let (client, mut events) = HubClient::start(HubSettings { token: Some(source), ..HubSettings::new(connection) });
    client.join("chat:x");
    let witness = tokio::spawn(expiry_of(addr, token("witness", first_expiry)));
    let mut refreshed = false;
    while !witness.is_finished() || !refreshed {
        match timeout(PATIENCE, events.recv()).await.unwrap().unwrap() {
            HubEvent::Envelope(v) if v["type"] == "refreshed" => {
                refreshed |= v["expires"].as_u64() > Some(first_expiry)
            }
            HubEvent::Disconnected { code, reason } => panic!("disconnected: {code:?} {reason}"),
            _ => {}
        }
    }
    witness.await.unwrap();
    // Past the expiry of the token it connected with, the same connection serves.
    let id = client.send("chat:x", "still here");
    loop {
        match timeout(PATIENCE, events.recv()).await.unwrap().unwrap() {
            HubEvent::Envelope(v) if v["type"] == "ack" && v["id"] == id.as_str() => break,
            HubEvent::Disconnected { code, reason } => panic!("disconnected: {code:?} {reason}"),
            _ => {}
        }
    }
    client.close();
}

#[tokio::test]
async fn the_tool_runs_its_token_command_again_when_the_server_asks() {
    let addr = server().await;
    let file = std::env::temp_dir().join(format!("ws-client-token-{}", std::process::id()));
    std::fs::write(&file, token("tom", at(SHORT))).unwrap();
    let command = format!("cat {}", file.display());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-client"))
        .args([&format!("ws://{addr}/ws"), "--room", "lobby", "--json", "--token-command", &command])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || -> Value {
        let line = timeout(PATIENCE, stdout.next_line()).await.unwrap().unwrap().expect("a line");
        serde_json::from_str(&line).unwrap()
    };
    while next().await["type"] != "joined" {}
    // Connected with the first token: the command now gives a longer one, sent at the next ask.
    let later = at(3600);
    std::fs::write(&file, token("tom", later)).unwrap();
    loop {
        let envelope = next().await;
        if envelope["type"] == "refreshed" && envelope["expires"] == later {
            break;
        }
    }
    let _ = std::fs::remove_file(file);
}
