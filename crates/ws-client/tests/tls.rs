//! `wss://` against a ws-server serving TLS with a certificate made by the
//! test (rcgen): a round trip when the client trusts it, a refusal when not.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::time::timeout;
use ws_client::{ClientSettings, Trust, connect};
use ws_proto::{Event, Message};
use ws_server::config::ServerConfig;

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

/// A self-signed certificate for localhost and 127.0.0.1, and its key, as
/// PEM files named after `name` in the tests' scratch folder.
fn certificate(name: &str) -> (PathBuf, PathBuf) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// A hub serving TLS with the certificate made under `name`; its address and certificate file.
async fn tls_server(name: &str) -> (SocketAddr, PathBuf) {
    let (cert, key) = certificate(name);
    let args = ["ws-server", "--listen", "127.0.0.1:0", "--tls-cert", cert.to_str().unwrap()];
    let config = ServerConfig::parse_from(args.into_iter().chain(["--tls-key", key.to_str().unwrap()]));
    (ws_server::http::spawn(config).await.unwrap().addr, cert)
}

fn settings(addr: SocketAddr, trust: Trust) -> ClientSettings {
    ClientSettings { url: format!("wss://localhost:{}/ws", addr.port()), trust, ..ClientSettings::default() }
}

async fn next_text(ws: &mut ws_tokio::WebSocket<ws_client::Stream>) -> serde_json::Value {
    loop {
        if let Event::Message(Message::Text(text)) = timeout(PATIENCE, ws.recv()).await.unwrap().unwrap().unwrap() {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

#[tokio::test]
async fn a_wss_round_trip_with_the_server_certificate_trusted() {
    let (addr, cert) = tls_server("round-trip").await;
    let (mut ws, _) = connect(&settings(addr, Trust::CaFile(cert))).await.unwrap();
    assert_eq!(next_text(&mut ws).await["type"], "system");
    assert_eq!(next_text(&mut ws).await["type"], "joined");
    let envelope = r#"{"type":"message","room":"general","content":"over TLS"}"#;
    ws.send(&Message::from(envelope)).await.unwrap();
    assert_eq!(next_text(&mut ws).await["content"], "over TLS");
}

#[tokio::test]
async fn a_certificate_the_client_does_not_trust_is_refused() {
    let (addr, _) = tls_server("untrusted").await;
    let (other, _) = certificate("someone-else");
    for trust in [Trust::WebRoots, Trust::CaFile(other)] {
        let error = connect(&settings(addr, trust.clone())).await.expect_err("refused");
        assert!(error.to_string().contains("certificate"), "{trust:?}: {error}");
    }
    // Accepting anything is a choice, for development.
    assert!(connect(&settings(addr, Trust::Insecure)).await.is_ok());
}

#[tokio::test]
async fn the_tool_connects_with_insecure_or_the_ca_file() {
    let (addr, cert) = tls_server("tool").await;
    let url = format!("wss://localhost:{}/ws", addr.port());
    for trust in [vec!["--insecure"], vec!["--ca-file", cert.to_str().unwrap()], vec![]] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-client"))
            .arg(&url)
            .args(&trust)
            .stdin(Stdio::null())
            .output();
        let output = timeout(PATIENCE, output).await.unwrap().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        if trust.is_empty() {
            assert!(!output.status.success() && stderr.contains("certificate"), "{stderr}");
        } else {
            assert!(output.status.success() && stdout.contains(r#""type":"system""#), "{trust:?}: {stdout} {stderr}");
        }
    }
}
