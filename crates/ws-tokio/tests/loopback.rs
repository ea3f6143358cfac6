//! ws-tokio over real loopback TCP: both roles exchanging every kind of
//! message, the close handshake, the handshake timeout and the size limit.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use bytes::Bytes;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use ws_proto::{CloseCode, Config, Event, Message};
use ws_tokio::client::ClientOptions;
use ws_tokio::{Error, Options, WebSocket, client, server};

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/test?q=1", listener.local_addr().unwrap());
    (listener, url)
}

/// A server that accepts one connection with `options` and echoes until it ends;
/// returns every event it saw, and the error it ended with.
fn echo_server(listener: TcpListener, options: Options) -> tokio::task::JoinHandle<(Vec<Event>, Option<Error>)> {
    tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        let handshake = server::read_request(tcp, options, PATIENCE).await.unwrap();
        assert_eq!((handshake.request().path(), handshake.request().query()), ("/test", Some("q=1")));
        assert_eq!(handshake.get_ref().peer_addr().unwrap(), peer);
        let mut ws = handshake.accept(|upgrade| upgrade.select_protocol(&["chat"]).map(str::to_owned)).await.unwrap();
        let mut events = Vec::new();
        while let Some(event) = ws.recv().await {
            match event {
                Ok(Event::Message(m)) => {
                    let _ = ws.queue(&m);
                    events.push(Event::Message(m));
                }
                Ok(event) => events.push(event),
                Err(e) => return (events, Some(e)),
            }
        }
        (events, None)
    })
}

/// Options whose close timeout is far longer than PATIENCE: with them on both
/// ends, only the server closing TCP after the closing handshake (RFC 6455
/// section 7.1.1), and the client answering with its own FIN, end it in time.
fn patient() -> Options {
    Options { close_timeout: PATIENCE * 10, ..Options::default() }
}

async fn patient_client(url: &str) -> (WebSocket<TcpStream>, ws_proto::handshake::client::Response) {
    client::connect_with(url, &ClientOptions { socket: patient(), ..Default::default() }).await.unwrap()
}

#[tokio::test]
async fn the_server_sees_the_request_and_picks_a_subprotocol() {
    let (listener, url) = listener().await;
    let server = echo_server(listener, Options::default());
    let options = ClientOptions {
        protocols: vec!["superchat".into(), "chat".into()],
        headers: vec![("Origin".into(), "http://example.com".into())],
        ..ClientOptions::default()
    };
    let (mut ws, response) = client::connect_with(&url, &options).await.unwrap();
    assert_eq!(response.protocol.as_deref(), Some("chat"));
    timeout(PATIENCE, ws.close(CloseCode::NORMAL, "")).await.unwrap().unwrap();
    timeout(PATIENCE, server).await.unwrap().unwrap();
}

async fn next(ws: &mut WebSocket<TcpStream>) -> Event {
    timeout(PATIENCE, ws.recv()).await.expect("an event in time").expect("an open connection").expect("no error")
}

/// Both ends with `options`: every kind of message, a ping, then the close handshake.
async fn messages_of_every_kind_and_the_close_handshake(options: Options) {
    let (listener, url) = listener().await;
    let server = echo_server(listener, options);
    let (mut ws, response) =
        client::connect_with(&url, &ClientOptions { socket: options, ..Default::default() }).await.unwrap();
    assert_eq!(response.extensions.len(), usize::from(options.deflate.is_some()), "permessage-deflate agreed");

    let text = Message::from("Hello, κόσμε");
    ws.send(&text).await.unwrap();
    assert_eq!(next(&mut ws).await, Event::Message(text.clone()));

    let binary = Message::Binary(Bytes::from_static(&[0, 1, 2, 255]));
    ws.send(&binary).await.unwrap();
    assert_eq!(next(&mut ws).await, Event::Message(binary.clone()));

    let fragmented = Message::from("a message in many small frames".repeat(10));
    ws.send_fragmented(&fragmented, 7).await.unwrap();
    assert_eq!(next(&mut ws).await, Event::Message(fragmented.clone()));

    let big = Message::Binary((0..16 << 20).map(|i: u32| (i % 251) as u8).collect::<Vec<u8>>().into());
    ws.send(&big).await.unwrap();
    assert_eq!(next(&mut ws).await, Event::Message(big.clone()));

    ws.ping(b"are you there").await.unwrap();
    assert_eq!(next(&mut ws).await, Event::Pong(Bytes::from_static(b"are you there")));

    timeout(PATIENCE, ws.close(CloseCode::NORMAL, "done")).await.unwrap().unwrap();
    let (events, error) = timeout(PATIENCE, server).await.unwrap().unwrap();
    assert!(error.is_none(), "{error:?}");
    assert_eq!(events.len(), 6);
    assert_eq!(events[..4], [text, binary, fragmented, big].map(Event::Message));
    assert!(matches!(&events[4], Event::Ping(p) if p == "are you there"));
    assert!(matches!(&events[5], Event::Close(Some(f)) if f.code == CloseCode::NORMAL && f.reason.as_str() == "done"));
}

#[tokio::test]
async fn messages_of_every_kind_compressed() {
    messages_of_every_kind_and_the_close_handshake(patient()).await;
}

#[tokio::test]
async fn messages_of_every_kind_uncompressed() {
    messages_of_every_kind_and_the_close_handshake(Options { deflate: None, ..patient() }).await;
}

/// The server ends the closing handshake by closing TCP first (RFC 6455 section 7.1.1).
#[tokio::test]
async fn server_close_ends_with_the_server_closing_tcp() {
    let (listener, url) = listener().await;
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = server::accept(tcp, patient(), PATIENCE).await.unwrap();
        ws.close(CloseCode::GOING_AWAY, "bye").await
    });
    let (mut ws, _) = patient_client(&url).await;
    let close = next(&mut ws).await;
    assert!(matches!(close, Event::Close(Some(f)) if f.code == CloseCode::GOING_AWAY));
    assert!(timeout(PATIENCE, ws.recv()).await.unwrap().is_none(), "ends without error");
    timeout(PATIENCE, server).await.unwrap().unwrap().unwrap();
}

/// Sends `message` from a client with `client` options to a server with a
/// frame and message limit of 1 KiB, which must fail the connection with 1009.
async fn over_the_limit_gets_close_1009(client: Options, message: Message) {
    let (listener, url) = listener().await;
    let limits = Config { max_frame_size: 1024, max_message_size: 1024, ..Config::default() };
    let server = echo_server(listener, Options { config: limits, ..Options::default() });
    let (mut ws, _) =
        client::connect_with(&url, &ClientOptions { socket: client, ..Default::default() }).await.unwrap();
    ws.send(&message).await.unwrap();
    let close = next(&mut ws).await;
    assert!(matches!(&close, Event::Close(Some(f)) if f.code == CloseCode::MESSAGE_TOO_BIG), "{close:?}");
    assert!(timeout(PATIENCE, ws.recv()).await.unwrap().is_none(), "the server closed TCP after 1009");
    let (_, error) = timeout(PATIENCE, server).await.unwrap().unwrap();
    assert_eq!(error.and_then(|e| e.close_code()), Some(CloseCode::MESSAGE_TOO_BIG));
}

#[tokio::test]
async fn a_frame_over_the_limit_gets_close_1009() {
    let plain = Options { deflate: None, ..Options::default() };
    over_the_limit_gets_close_1009(plain, Message::Binary(vec![7; 1025].into())).await;
}

/// 512 KiB of one byte compress to about 500 bytes, which inflate past the limit.
#[tokio::test]
async fn a_compressed_message_that_inflates_past_the_limit_gets_close_1009() {
    over_the_limit_gets_close_1009(Options::default(), Message::Binary(vec![7; 512 << 10].into())).await;
}

/// A client that connects and never finishes its request is dropped at the timeout.
#[tokio::test]
async fn a_handshake_that_never_completes_is_dropped() {
    let (listener, _) = listener().await;
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        server::read_request(tcp, Options::default(), Duration::from_millis(200)).await.map(|_| ())
    });
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /test HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let result = timeout(PATIENCE, server).await.unwrap().unwrap();
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
    let mut rest = Vec::new();
    let read = timeout(PATIENCE, tcp.read_to_end(&mut rest)).await.unwrap();
    assert!(read.as_ref().map_or(true, |n| *n == 0), "the socket is closed, nothing sent: {read:?}");
}

#[tokio::test]
async fn invalid_requests_get_their_status() {
    let (listener, _) = listener().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(server::accept(tcp, Options::default(), PATIENCE));
        }
    });
    let request = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let cases = [
        (request.replace("Version: 13", "Version: 8"), "HTTP/1.1 426 "),
        (request.replace("Upgrade: websocket\r\n", ""), "HTTP/1.1 400 "),
        (format!("GET / HTTP/1.1\r\n{}\r\n\r\n", "X: y\r\n".repeat(2000)), "HTTP/1.1 431 "),
    ];
    for (request, status) in cases {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        timeout(PATIENCE, tcp.read_to_end(&mut response)).await.unwrap().unwrap();
        let response = String::from_utf8_lossy(&response);
        assert!(response.starts_with(status), "expected {status:?}, got {response:?}");
    }
}

#[tokio::test]
async fn a_sender_writes_from_another_task() {
    let (listener, url) = listener().await;
    let server = echo_server(listener, Options::default());
    let (mut ws, _) = client::connect(&url).await.unwrap();
    let sender = ws.sender();
    let task = tokio::spawn(async move {
        for i in 0..100 {
            sender.send(Message::from(format!("from a task {i}"))).await.unwrap();
        }
        sender.close(CloseCode::NORMAL, "that is all").await.unwrap();
    });
    let mut received = Vec::new();
    while let Some(event) = timeout(PATIENCE, ws.recv()).await.unwrap() {
        received.push(event.unwrap());
    }
    task.await.unwrap();
    let expected: Vec<Event> = (0..100).map(|i| Event::Message(Message::from(format!("from a task {i}")))).collect();
    assert_eq!(received[..100], expected[..]);
    assert!(matches!(&received[100], Event::Close(Some(f)) if f.code == CloseCode::NORMAL));
    let (events, error) = timeout(PATIENCE, server).await.unwrap().unwrap();
    assert!(error.is_none());
    assert_eq!(events.len(), 101);
}

/// A broadcast encoded once: the server compresses it once on its own and
/// queues the same frames at clients that agreed to different windows, or to
/// no compression; each receives the message intact.
#[tokio::test]
async fn a_shared_compressed_broadcast_reaches_every_client() {
    let (listener, url) = listener().await;
    let broadcast = ws_proto::DeflateConfig { no_context_takeover: true, ..Default::default() };
    let message = Message::from("a broadcast to every client in the room ".repeat(50));
    let shared = ws_proto::SharedMessage::new(&message, Some(&broadcast));
    let clients = [
        Some(ws_proto::DeflateConfig::default()),
        Some(ws_proto::DeflateConfig { peer_window_bits: 11, ..Default::default() }),
        None,
    ];
    let server = tokio::spawn(async move {
        let options = Options { deflate: Some(broadcast), ..Options::default() };
        let mut sockets = Vec::new();
        for _ in 0..3 {
            let (tcp, _) = listener.accept().await.unwrap();
            sockets.push(server::accept(tcp, options, PATIENCE).await.unwrap());
        }
        for ws in &mut sockets {
            for _ in 0..3 {
                ws.queue_shared(&shared).unwrap();
            }
            ws.flush().await.unwrap();
        }
        for ws in &mut sockets {
            ws.close(CloseCode::NORMAL, "").await.unwrap();
        }
    });
    let mut connected = Vec::new();
    for deflate in clients {
        let options = ClientOptions { socket: Options { deflate, ..patient() }, ..Default::default() };
        connected.push(client::connect_with(&url, &options).await.unwrap());
    }
    for (ws, response) in &mut connected {
        let agreed = response.extensions.first().map(ToString::to_string);
        for _ in 0..3 {
            assert_eq!(next(ws).await, Event::Message(message.clone()), "{agreed:?}");
        }
        assert!(matches!(next(ws).await, Event::Close(_)));
        assert!(timeout(PATIENCE, ws.recv()).await.unwrap().is_none(), "the close reply went out and TCP closed");
    }
    timeout(PATIENCE, server).await.unwrap().unwrap();
}

/// A peer that sends without reading cannot grow what the WebSocket queues
/// for it: past `max_output` waiting, the socket is not read. 100,000 pings
/// of 125 bytes (13 MB) each owe a pong; the writer is held after a few
/// hundred KiB, and every pong still comes, in order, once it reads.
/// Without the bound the server would read all 13 MB and queue every pong.
/// Over an in-memory pipe with the clock paused, "held" is the runtime
/// having nothing left to do, not a measure of time.
#[tokio::test(start_paused = true)]
async fn a_peer_that_does_not_read_is_not_read_either() {
    const PINGS: u32 = 100_000;
    let (client, server_io) = tokio::io::duplex(8 << 10);
    let options = Options { max_output: 64 << 10, ..Options::default() };
    let conn = ws_proto::Connection::new(ws_proto::Role::Server, Config::default());
    let mut ws = WebSocket::from_parts(server_io, conn, options, bytes::BytesMut::new());
    let server = tokio::spawn(async move { while ws.recv().await.is_some() {} });
    let mut pings = Vec::new();
    for i in 0..PINGS {
        let payload: Vec<u8> = i.to_be_bytes().iter().copied().cycle().take(125).collect();
        pings.extend_from_slice(&[0x89, 0x80 | 125, 0, 0, 0, 0]);
        pings.extend_from_slice(&payload);
    }
    let (mut read, mut write) = tokio::io::split(client);
    let mut written = 0;
    let held = timeout(PATIENCE, async {
        for chunk in pings.chunks(4096) {
            write.write_all(chunk).await.unwrap();
            written += chunk.len();
        }
    })
    .await;
    assert!(held.is_err() && written < 1 << 20, "the writer was held: {written} of {} bytes taken", pings.len());
    let writing = tokio::spawn(async move { write.write_all(&pings[written..]).await.unwrap() });
    let mut frames = ws_proto::Connection::new(ws_proto::Role::Client, Config::default());
    let (mut next, mut buf) = (0, vec![0; 64 << 10]);
    while next < PINGS {
        let n = read.read(&mut buf).await.unwrap();
        let mut input = &buf[..n];
        while !input.is_empty() {
            let (used, event) = frames.receive(input).unwrap();
            input = &input[used..];
            if let Some(event) = event {
                let Event::Pong(payload) = event else { panic!("{event:?}") };
                assert_eq!(payload[..4], next.to_be_bytes(), "pong {next}");
                next += 1;
            }
        }
    }
    writing.await.unwrap();
    server.abort();
}

/// What was read at once is taken as events only while the output is within
/// `max_output`: a peer that sends many small messages at once and reads
/// nothing cannot make the answers to all of them pile up. Each is taken
/// once it reads again, none lost. (Found by the hub's session fuzz
/// target: one invalid envelope after another, each answered by an error.)
#[tokio::test(start_paused = true)]
async fn messages_read_at_once_are_taken_only_while_the_output_is_within_bounds() {
    const MESSAGES: usize = 500;
    const ANSWER: usize = 200;
    let (client, server_io) = tokio::io::duplex(8 << 10);
    let options = Options { max_output: 1024, ..Options::default() };
    let conn = ws_proto::Connection::new(ws_proto::Role::Server, Config::default());
    let mut ws = WebSocket::from_parts(server_io, conn, options, bytes::BytesMut::new());
    // How many were taken, and the most output that waited.
    let (tell, mut taken) = tokio::sync::watch::channel((0, 0));
    let server = tokio::spawn(async move {
        while let Some(Ok(Event::Message(_))) = ws.recv().await {
            ws.queue(&Message::Binary(Bytes::from(vec![0; ANSWER]))).unwrap();
            let output = ws.connection().output().len();
            tell.send_modify(|(n, most)| (*n, *most) = (*n + 1, output.max(*most)));
        }
    });
    // 500 masked one-byte texts, all in the pipe before the server reads.
    let texts: Vec<u8> = (0..MESSAGES).flat_map(|_| [0x81, 0x81, 0, 0, 0, 0, b'x']).collect();
    let (mut read, mut write) = tokio::io::split(client);
    write.write_all(&texts).await.unwrap();
    // Over an in-memory pipe with the clock paused, the timeout is the runtime having nothing left to do.
    let held = timeout(PATIENCE, taken.wait_for(|(n, _)| *n == MESSAGES)).await.is_err();
    let (n, most) = *taken.borrow();
    assert!(held && n < MESSAGES, "{n} of {MESSAGES} taken while the client read nothing");
    assert!(most <= 1024 + ANSWER + 4, "{most} bytes waited to be written: over 1024 and one answer");
    let reading = tokio::spawn(async move { while read.read(&mut [0; 4096]).await.is_ok_and(|n| n > 0) {} });
    let all = timeout(PATIENCE, taken.wait_for(|(n, _)| *n == MESSAGES)).await.is_ok();
    assert!(all, "every message taken once the client reads: {:?}", *taken.borrow());
    server.abort();
    reading.abort();
}
