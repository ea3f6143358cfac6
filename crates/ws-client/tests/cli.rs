//! The `ws-client` tool and library against a `ws-server` on a free port.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use clap::Parser;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::timeout;
use ws_client::{ClientSettings, connect};
use ws_server::config::ServerConfig;

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

async fn server(flags: &[&str]) -> SocketAddr {
    let args = ["ws-server", "--listen", "127.0.0.1:0"].iter().chain(flags);
    ws_server::http::spawn(ServerConfig::parse_from(args)).await.unwrap().addr
}

async fn echo_server() -> SocketAddr {
    server(&["--echo"]).await
}

fn tool(args: &[&str]) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-client"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn the_tool_sends_lines_and_prints_what_arrives() {
    let addr = echo_server().await;
    let mut child = tool(&[&format!("ws://{addr}/echo")]);
    let mut stdin = child.stdin.take().unwrap();
    let long = "a line long enough to be compressed on its way, ".repeat(10);
    stdin.write_all(format!("hello\nκόσμε\n{long}\n").as_bytes()).await.unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    for expected in ["hello", "κόσμε", long.as_str()] {
        let line = timeout(PATIENCE, stdout.next_line()).await.unwrap().unwrap();
        assert_eq!(line.as_deref(), Some(expected));
    }
    drop(stdin); // end of input: the tool closes with 1000 and exits
    let status = timeout(PATIENCE, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).await.unwrap();
    assert!(stderr.contains("permessage-deflate"), "compression agreed: {stderr}");
}

#[tokio::test]
async fn a_refusal_is_a_clear_error_and_a_failure() {
    let addr = echo_server().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-client"))
        .arg(format!("ws://{addr}/no-such-path"))
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused the connection with HTTP 404: not found"), "{stderr}");
}

#[tokio::test]
async fn compression_is_offered_by_default_and_can_be_left_out() {
    let addr = echo_server().await;
    let url = format!("ws://{addr}/echo");
    let settings = ClientSettings { url: url.clone(), ..ClientSettings::default() };
    let (_, response) = connect(&settings).await.unwrap();
    assert_eq!(response.extensions.len(), 1);
    assert_eq!(response.extensions[0].name, "permessage-deflate");
    let plain = ClientSettings { url, deflate: None, ..ClientSettings::default() };
    let (_, response) = connect(&plain).await.unwrap();
    assert!(response.extensions.is_empty());
}

/// With `--room`, two tools chat through the hub: each line typed reaches
/// both as `sender: content`.
#[tokio::test]
async fn with_a_room_the_tool_chats_through_the_hub() {
    let addr = server(&[]).await;
    let url = format!("ws://{addr}/ws");
    let mut alice = tool(&[&url, "--room", "lobby"]);
    let mut bob = tool(&[&url, "--room", "lobby", "--json"]);
    let mut alice_says = BufReader::new(alice.stdout.take().unwrap()).lines();
    let mut bob_hears = BufReader::new(bob.stdout.take().unwrap()).lines();
    // Bob's joined envelope, in JSON: he is in the room before Alice speaks.
    while !timeout(PATIENCE, bob_hears.next_line()).await.unwrap().unwrap().unwrap().contains(r#""room":"lobby""#) {}
    let mut stdin = alice.stdin.take().unwrap();
    stdin.write_all(b"hello, lobby\n").await.unwrap();
    let line = timeout(PATIENCE, alice_says.next_line()).await.unwrap().unwrap().unwrap();
    assert!(line.starts_with("127.0.0.1:") && line.ends_with(": hello, lobby"), "{line}");
    loop {
        let line = timeout(PATIENCE, bob_hears.next_line()).await.unwrap().unwrap().unwrap();
        let envelope: serde_json::Value = serde_json::from_str(&line).unwrap();
        if envelope["type"] == "message" {
            assert_eq!(
                (envelope["room"].as_str(), envelope["content"].as_str()),
                (Some("lobby"), Some("hello, lobby"))
            );
            break;
        }
    }
    drop(stdin);
    assert!(timeout(PATIENCE, alice.wait()).await.unwrap().unwrap().success());
}

/// A refused token ends the tool with the status, not endless retries.
#[tokio::test]
async fn with_a_room_a_refused_token_is_a_clear_error() {
    let addr = server(&["--jwt-secret", "a secret of the test"]).await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-client"))
        .args([&format!("ws://{addr}/ws"), "--room", "lobby", "--token", "not-a-token"])
        .stdin(Stdio::null())
        .output();
    let output = timeout(PATIENCE, output).await.unwrap().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused the connection with HTTP 401: "), "{stderr}");
    assert!(stderr.contains("token"), "the server's reason: {stderr}");
}
