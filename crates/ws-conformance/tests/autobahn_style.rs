//! Autobahn-style cases in Rust over TCP: the frame cases of sections 1-10
//! (frames/mod.rs), each on a socket of its own opened by an HTTP/1.1
//! upgrade; then the opening handshake's HTTP answers (section 4.2).

mod frames;

use frames::{Over, SAMPLE_KEY, echo_server, header, upgrade_request, within};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The transport of the frame cases.
const OVER: Over = Over::Tcp;

// ---------------------------------------------------------------------------
// The opening handshake's HTTP answers (section 4.2).
// ---------------------------------------------------------------------------

/// Sends `request` on a new connection; returns the whole response, up to
/// the server's closing of TCP.
async fn http_response(server: SocketAddr, request: &str) -> String {
    let mut tcp = within("TCP connection", TcpStream::connect(server)).await.expect("connect");
    within("request write", tcp.write_all(request.as_bytes())).await.expect("write the request");
    let mut response = Vec::new();
    within("response and TCP close", tcp.read_to_end(&mut response)).await.expect("read the response");
    String::from_utf8_lossy(&response).into_owned()
}

/// A version other than 13 is answered 426 with the version the server
/// speaks (section 4.2.2, 4.4).
#[tokio::test]
async fn handshake_version_8_is_answered_426_with_version_13() {
    let server = echo_server().await;
    let response = http_response(server, &upgrade_request("/echo", Some("8"), Some(SAMPLE_KEY))).await;
    assert!(response.starts_with("HTTP/1.1 426 "), "{response}");
    assert_eq!(header(&response, "sec-websocket-version"), Some("13"), "{response}");
}

/// A request with no Sec-WebSocket-Key is not an opening handshake: 400 (section 4.2.1).
#[tokio::test]
async fn handshake_without_key_is_answered_400() {
    let server = echo_server().await;
    let response = http_response(server, &upgrade_request("/echo", Some("13"), None)).await;
    assert!(response.starts_with("HTTP/1.1 400 "), "{response}");
}

/// A path the server does not serve is 404, for an upgrade and for plain HTTP.
#[tokio::test]
async fn handshake_for_a_path_not_served_is_answered_404() {
    let server = echo_server().await;
    let upgrade = upgrade_request("/no-such-path", Some("13"), Some(SAMPLE_KEY));
    let plain = "GET /no-such-path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    for request in [upgrade.as_str(), plain] {
        let response = http_response(server, request).await;
        assert!(response.starts_with("HTTP/1.1 404 "), "{response}");
    }
}
