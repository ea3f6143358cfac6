//! WebSockets over HTTP/2 (RFC 8441), through hyper's HTTP/2 client: over
//! TLS, chosen by ALPN, a thousand hub sessions over one connection; in
//! cleartext with prior knowledge (`--h2c`), the answers to what is not a
//! WebSocket's CONNECT, the limits counting streams, a stream reset, and
//! HTTP/1.1 on the same port.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use bytes::{Bytes, BytesMut};
use common::{Client, PATIENCE, server};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http2::SendRequest;
use hyper::ext::Protocol;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::net::TcpStream;
use tokio::time::timeout;
use ws_proto::{Config, Connection, Event, Message, Role};
use ws_tokio::{Options, WebSocket};

type Stream = WebSocket<TokioIo<Upgraded>>;

/// An HTTP/2 connection to `addr`, with prior knowledge.
async fn h2(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    handshake(TcpStream::connect(addr).await.unwrap()).await
}

/// HTTP/2 over `io`, its connection driven by a task of its own.
async fn handshake<I>(io: I) -> SendRequest<Empty<Bytes>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
    tokio::spawn(connection);
    send
}

/// A hub serving TLS with a certificate for localhost made here, with
/// `flags`; its address, and an HTTP/2 connection to it over TLS, which
/// ALPN chose.
async fn h2_over_tls(flags: &[&str]) -> (SocketAddr, SendRequest<Empty<Bytes>>) {
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let (cert, key) = (dir.join("http2.crt"), dir.join("http2.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    let tls = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let addr = server(&[&tls[..], flags].concat()).await;
    let mut roots = RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(std::sync::Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = "localhost".try_into().unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    (addr, handshake(tls).await)
}

/// A CONNECT to `path`, with `:protocol` if given, and `headers`.
fn connect(
    addr: SocketAddr,
    path: &str,
    protocol: Option<&'static str>,
    headers: &[(&str, &str)],
) -> Request<Empty<Bytes>> {
    let mut request = Request::builder().method(Method::CONNECT).uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(protocol) = protocol {
        request = request.extension(Protocol::from_static(protocol));
    }
    request.body(Empty::new()).unwrap()
}

/// The answer to `request` on the connection.
async fn ask(send: &mut SendRequest<Empty<Bytes>>, request: Request<Empty<Bytes>>) -> Response<hyper::body::Incoming> {
    timeout(PATIENCE, send.ready()).await.unwrap().unwrap();
    timeout(PATIENCE, send.send_request(request)).await.unwrap().unwrap()
}

/// The status and the body of the answer to `request`.
async fn status_and_body(send: &mut SendRequest<Empty<Bytes>>, request: Request<Empty<Bytes>>) -> (StatusCode, String) {
    let response = ask(send, request).await;
    let status = response.status();
    let body = timeout(PATIENCE, response.into_body().collect()).await.unwrap().unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A WebSocket to the hub on a new stream of the connection.
async fn open(send: &mut SendRequest<Empty<Bytes>>, addr: SocketAddr) -> Stream {
    let response = ask(send, connect(addr, "/ws", Some("websocket"), &[("sec-websocket-version", "13")])).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stream = timeout(PATIENCE, hyper::upgrade::on(response)).await.unwrap().unwrap();
    WebSocket::from_parts(
        TokioIo::new(stream),
        Connection::new(Role::Client, Config::default()),
        Options::default(),
        BytesMut::new(),
    )
}

/// A WebSocket to the hub on a new stream, welcomed and in the default room.
async fn member(send: &mut SendRequest<Empty<Bytes>>, addr: SocketAddr) -> Stream {
    let mut ws = open(send, addr).await;
    expect(&mut ws, json!({"type": "system"})).await;
    expect(&mut ws, json!({"type": "joined", "room": "general"})).await;
    ws
}

/// The next envelope of `ws`.
async fn next(ws: &mut Stream) -> Value {
    loop {
        match timeout(PATIENCE, ws.recv()).await.expect("an envelope in time").expect("open").expect("no error") {
            Event::Message(Message::Text(text)) => return serde_json::from_str(text.as_str()).unwrap(),
            Event::Close(close) => panic!("closed: {close:?}"),
            _ => {}
        }
    }
}

/// The next envelope of `ws`, which must have every field of `expected`.
async fn expect(ws: &mut Stream, expected: Value) -> Value {
    let got = next(ws).await;
    for (field, value) in expected.as_object().unwrap() {
        assert_eq!(&got[field], value, "field {field} of {got}, expected {expected}");
    }
    got
}

async fn send(ws: &mut Stream, envelope: Value) {
    ws.send(&Message::from(envelope.to_string())).await.unwrap();
}

#[tokio::test]
async fn a_thousand_websockets_share_one_tls_connection_each_a_session_of_its_own() {
    let (addr, mut connection) = h2_over_tls(&["--max-connections-per-ip", "0"]).await;
    let mut members = Vec::new();
    for _ in 0..1000 {
        members.push(member(&mut connection, addr).await);
    }
    send(&mut members[0], json!({"type": "presence", "room": "general"})).await;
    let presence = expect(&mut members[0], json!({"type": "presence"})).await;
    assert_eq!(presence["count"], 1000, "each stream is a member of its own: {presence}");
    for content in ["first", "second"] {
        send(&mut members[999], json!({"type": "message", "room": "general", "content": content})).await;
    }
    for ws in &mut members {
        let first = expect(ws, json!({"type": "message", "content": "first"})).await;
        expect(ws, json!({"type": "message", "content": "second", "seq": first["seq"].as_u64().unwrap() + 1})).await;
    }
    let metrics = Request::get(format!("https://localhost:{}/metrics", addr.port())).body(Empty::new()).unwrap();
    let (status, metrics) = status_and_body(&mut connection, metrics).await;
    assert_eq!(status, StatusCode::OK);
    for line in ["ws_connections_accepted_total 1000", "ws_connections_accepted_h2_total 1000", "ws_connections 1000"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn with_h2c_http1_and_http2_share_the_port() {
    let addr = server(&["--h2c"]).await;
    let mut stream = member(&mut h2(addr).await, addr).await;
    let mut socket = Client::connect(addr).await;
    socket.expect(json!({"type": "joined", "room": "general"})).await;
    socket.send(json!({"type": "message", "room": "general", "content": "to the stream"})).await;
    expect(&mut stream, json!({"type": "message", "content": "to the stream"})).await;
    send(&mut stream, json!({"type": "message", "room": "general", "content": "to the socket"})).await;
    socket.until(json!({"type": "message", "content": "to the socket"})).await;
    let metrics = common::http_get(addr, "/metrics").await;
    assert!(metrics.contains("\nws_connections_accepted_total 2\n"), "{metrics}");
    assert!(metrics.contains("\nws_connections_accepted_h2_total 1\n"), "{metrics}");
}

#[tokio::test]
async fn what_is_not_a_websockets_connect_gets_its_answer() {
    let addr = server(&["--h2c"]).await;
    let mut connection = h2(addr).await;
    let version = [("sec-websocket-version", "13")];
    let cases = [
        (connect(addr, "/ws", None, &version), StatusCode::METHOD_NOT_ALLOWED),
        (connect(addr, "/nowhere", Some("websocket"), &version), StatusCode::NOT_FOUND),
        (connect(addr, "/echo", Some("websocket"), &version), StatusCode::NOT_FOUND),
        (connect(addr, "/ws", Some("websocket"), &[("sec-websocket-version", "8")]), StatusCode::UPGRADE_REQUIRED),
        (connect(addr, "/ws", Some("websocket"), &[]), StatusCode::BAD_REQUEST),
        (
            connect(
                addr,
                "/ws",
                Some("websocket"),
                &[("sec-websocket-version", "13"), ("origin", "https://elsewhere.example")],
            ),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (request, expected) in cases {
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let response = ask(&mut connection, request).await;
        assert_eq!(response.status(), expected, "{method} {path}");
        if expected == StatusCode::UPGRADE_REQUIRED {
            assert_eq!(response.headers()["sec-websocket-version"], "13");
        }
    }
    let get = |path: &str| Request::get(format!("http://{addr}{path}")).body(Empty::new()).unwrap();
    assert_eq!(status_and_body(&mut connection, get("/healthz")).await, (StatusCode::OK, "ok\n".to_owned()));
    assert_eq!(status_and_body(&mut connection, get("/ws")).await.0, StatusCode::BAD_REQUEST);
    // The refusals left the connection serving.
    let mut ws = open(&mut connection, addr).await;
    expect(&mut ws, json!({"type": "system"})).await;
}

#[tokio::test]
async fn each_websocket_stream_counts_as_a_connection_for_the_limits() {
    let addr = server(&["--h2c", "--max-connections-per-ip", "2"]).await;
    let mut connection = h2(addr).await;
    let _first = open(&mut connection, addr).await;
    let _second = open(&mut connection, addr).await;
    let refused =
        ask(&mut connection, connect(addr, "/ws", Some("websocket"), &[("sec-websocket-version", "13")])).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // The pages are no connection of the hub's.
    let get = Request::get(format!("http://{addr}/healthz")).body(Empty::new()).unwrap();
    assert_eq!(status_and_body(&mut connection, get).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_stream_reset_ends_its_session_and_its_presence() {
    // No rate limit: presence is asked for until it changes.
    let addr = server(&["--h2c", "--max-connections-per-ip", "0", "--rate-limit", "0"]).await;
    let mut connection = h2(addr).await;
    let mut stays = member(&mut connection, addr).await;
    let goes = member(&mut connection, addr).await;
    // Dropped unclosed, the stream is reset (RST_STREAM), the connection stays.
    drop(goes);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        send(&mut stays, json!({"type": "presence", "room": "general"})).await;
        let presence = expect(&mut stays, json!({"type": "presence"})).await;
        if presence["count"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the reset stream is still present: {presence}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut again = open(&mut connection, addr).await;
    expect(&mut again, json!({"type": "system"})).await;
}

/// A stream that is not read is slowed by HTTP/2's flow control, as a
/// socket is by TCP, and closed as a slow consumer; the stream beside it on
/// the same connection gets every message.
#[tokio::test]
async fn a_stream_that_is_not_read_is_a_slow_consumer_and_the_stream_beside_it_gets_everything() {
    let addr = server(&["--h2c", "--rate-limit", "0", "--max-queue-bytes", "65536", "--no-deflate"]).await;
    let mut connection = h2(addr).await;
    let mut slow = open(&mut connection, addr).await;
    let mut reader = member(&mut connection, addr).await;
    let count = 20_000;
    let reading = tokio::spawn(async move {
        for seq in 1..=count {
            expect(&mut reader, json!({"type": "message", "seq": seq})).await;
        }
    });
    let mut publisher = Client::connect(addr).await;
    publisher.expect(json!({"type": "joined"})).await;
    let content = "x".repeat(1000);
    for i in 1..=count {
        publisher.send(json!({"type": "message", "room": "general", "content": content, "id": i.to_string()})).await;
        publisher.until(json!({"type": "ack", "id": i.to_string()})).await;
    }
    timeout(PATIENCE, reading).await.unwrap().unwrap();
    let mut received = 0;
    let end = loop {
        match timeout(PATIENCE, slow.recv()).await.expect("the end in time") {
            Some(Ok(Event::Message(_))) => received += 1,
            Some(Ok(Event::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(e)) => break e.close_code(),
            None => break None,
        }
    };
    assert!(received < count as usize, "the slow stream was cut off, not buffered for: {received} of {count}");
    assert!(
        matches!(end, Some(ws_proto::CloseCode::POLICY_VIOLATION) | Some(ws_proto::CloseCode::ABNORMAL)),
        "closed as a slow consumer: {end:?}"
    );
}

/// A shutdown closes the sessions of HTTP/2 streams with 1001, as those
/// of sockets, and ends once they have closed.
#[tokio::test]
async fn a_shutdown_closes_each_streams_session_with_1001() {
    let args = ["ws-server", "--listen", "127.0.0.1:0", "--h2c", "--max-connections-per-ip", "0"];
    let running = ws_server::http::spawn(ws_server::config::ServerConfig::load(args.iter()).unwrap()).await.unwrap();
    let addr = running.addr;
    let mut connection = h2(addr).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(member(&mut connection, addr).await);
    }
    let stopping = tokio::spawn(running.stop());
    for ws in &mut streams {
        let close = loop {
            match timeout(PATIENCE, ws.recv()).await.expect("the close in time") {
                Some(Ok(Event::Close(frame))) => break frame.map(|f| f.code),
                Some(Ok(_)) => {}
                other => panic!("closed without a close frame: {other:?}"),
            }
        };
        assert_eq!(close, Some(ws_proto::CloseCode::GOING_AWAY));
    }
    timeout(PATIENCE, stopping).await.unwrap().unwrap().unwrap();
}

/// The server announces RFC 8441's SETTINGS_ENABLE_CONNECT_PROTOCOL and its
/// bound on streams open at once (SETTINGS_MAX_CONCURRENT_STREAMS), which a
/// client then keeps to: seen through the h2 crate itself.
#[tokio::test]
async fn the_server_announces_extended_connect_and_its_bound_on_streams() {
    let addr = server(&["--h2c", "--max-streams-per-connection", "2"]).await;
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, mut connection) = timeout(PATIENCE, h2::client::handshake(tcp)).await.unwrap().unwrap();
    let mut ping_pong = connection.ping_pong().unwrap();
    // The server's SETTINGS come before its answer to the ping.
    tokio::select! {
        pong = ping_pong.ping(h2::Ping::opaque()) => drop(pong.unwrap()),
        ended = &mut connection => panic!("the connection ended: {ended:?}"),
        () = tokio::time::sleep(PATIENCE) => panic!("no pong in time"),
    }
    assert_eq!(connection.max_concurrent_send_streams(), 2);
    assert!(send.is_extended_connect_protocol_enabled());
}

/// A connection lost with streams open ends every stream's session: each
/// leaves its rooms and presence.
#[tokio::test]
async fn a_connection_lost_with_streams_open_ends_each_streams_session() {
    // No rate limit: presence is asked for until it changes.
    let addr = server(&["--h2c", "--max-connections-per-ip", "0", "--rate-limit", "0"]).await;
    // A second handle on the socket, to end it under the HTTP/2 connection.
    let socket = TcpStream::connect(addr).await.unwrap().into_std().unwrap();
    let cut = socket.try_clone().unwrap();
    let mut connection = handshake(TcpStream::from_std(socket).unwrap()).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(member(&mut connection, addr).await);
    }
    let mut watcher = Client::connect(addr).await;
    watcher.expect(json!({"type": "joined", "room": "general"})).await;
    watcher.send(json!({"type": "presence", "room": "general"})).await;
    assert_eq!(watcher.until(json!({"type": "presence"})).await["count"], 4);
    cut.shutdown(std::net::Shutdown::Both).unwrap();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        watcher.send(json!({"type": "presence", "room": "general"})).await;
        let presence = watcher.until(json!({"type": "presence"})).await;
        if presence["count"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the lost connection's streams are still present: {presence}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
