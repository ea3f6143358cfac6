//! The `ws-client` tool and library against a `ws-server` on a free port.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use clap::Parser;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::time::timeout;
use ws_client::{ClientSettings, connect};
use ws_server::config::ServerConfig;

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

async fn echo_server() -> SocketAddr {
    let config = ServerConfig::parse_from(["ws-server", "--echo", "--listen", "127.0.0.1:0"]);
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(ws_server::http::serve(listener, Arc::new(config)));
    addr
}

#[tokio::test]
async fn the_tool_sends_lines_and_prints_what_arrives() {
    let addr = echo_server().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-client"))
        .arg(format!("ws://{addr}/echo"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
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
    assert!(stderr.contains("404"), "{stderr}");
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
