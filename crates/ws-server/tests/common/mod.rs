//! What the hub's tests share: a server on a free port, a client of its
//! protocol over real loopback TCP, and plain HTTP requests.

#![allow(clippy::unwrap_used, dead_code)] // helpers panic on failure by design; each test file uses some

use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use ws_proto::{CloseCode, Event, Message};
use ws_server::config::ServerConfig;
use ws_tokio::client::{ClientOptions, connect_with};
use ws_tokio::{Options, WebSocket};

/// Generous: a wait for an event, never a measure of speed.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

/// Starts a server with `flags` (and the TOML file of `--config`, if they name one) on a free port.
pub(crate) async fn server(flags: &[&str]) -> SocketAddr {
    let args = ["ws-server", "--listen", "127.0.0.1:0"].iter().chain(flags);
    ws_server::http::spawn(ServerConfig::load(args).unwrap()).await.unwrap().addr
}

/// Starts the binary itself with `flags` on a free port, its log read on
/// (so that it never blocks on it): the process, killed when dropped, and its address.
pub(crate) async fn server_process(flags: &[&str]) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ws-server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(flags)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = timeout(PATIENCE, log.next_line()).await.unwrap().unwrap().expect("the server's log");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    (child, addr)
}

/// Writes `toml` to a file of this test run named after `name`; its path.
pub(crate) fn config_file(name: &str, toml: &str) -> String {
    let path = std::env::temp_dir().join(format!("ws-server-test-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_owned()
}

pub(crate) struct Client {
    pub(crate) ws: WebSocket<TcpStream>,
}

impl Client {
    /// Connects to the hub and takes the welcome.
    pub(crate) async fn connect(addr: SocketAddr) -> Client {
        let mut client = Client::connect_quietly(addr).await;
        let welcome = client.next().await;
        assert_eq!(welcome["type"], "system", "{welcome}");
        assert!(welcome["time"].as_u64().unwrap() > 0);
        client
    }

    /// Connects with extra request headers and takes the welcome.
    pub(crate) async fn connect_with_headers(addr: SocketAddr, headers: Vec<(String, String)>) -> Client {
        let mut client = Client::open(addr, headers).await;
        client.expect(json!({"type": "system"})).await;
        client
    }

    /// Connects without reading anything.
    pub(crate) async fn connect_quietly(addr: SocketAddr) -> Client {
        Client::open(addr, Vec::new()).await
    }

    pub(crate) async fn open(addr: SocketAddr, headers: Vec<(String, String)>) -> Client {
        let socket = Options { close_timeout: PATIENCE, ..Options::default() };
        let options = ClientOptions { socket, headers, ..Default::default() };
        let (ws, _) = connect_with(&format!("ws://{addr}/ws"), &options).await.unwrap();
        Client { ws }
    }

    /// Connects, takes the welcome and the default room's `joined`, and leaves that room.
    pub(crate) async fn connect_elsewhere(addr: SocketAddr) -> Client {
        let mut client = Client::connect(addr).await;
        client.expect(json!({"type": "joined", "room": "general"})).await;
        client.send(json!({"type": "leave", "room": "general"})).await;
        client.expect(json!({"type": "left", "room": "general"})).await;
        client
    }

    pub(crate) async fn send(&mut self, envelope: Value) {
        self.send_text(&envelope.to_string()).await;
    }

    /// Sends an envelope as it is written.
    pub(crate) async fn send_text(&mut self, envelope: &str) {
        self.ws.send(&Message::from(envelope)).await.unwrap();
    }

    /// The next envelope.
    pub(crate) async fn next(&mut self) -> Value {
        serde_json::from_str(&self.next_text().await).unwrap()
    }

    /// The next envelope, as the server wrote it.
    pub(crate) async fn next_text(&mut self) -> String {
        loop {
            let event = timeout(PATIENCE, self.ws.recv()).await.expect("an envelope in time");
            match event.expect("an open connection").expect("no error") {
                Event::Message(Message::Text(text)) => return text.as_str().to_owned(),
                Event::Message(Message::Binary(_)) => panic!("a binary message"),
                Event::Close(close) => panic!("closed: {close:?}"),
                Event::Ping(_) | Event::Pong(_) => {}
            }
        }
    }

    /// The next envelope, which must have every field of `expected` with its value.
    pub(crate) async fn expect(&mut self, expected: Value) -> Value {
        let got = self.next().await;
        for (field, value) in expected.as_object().unwrap() {
            assert_eq!(&got[field], value, "field {field} of {got}, expected {expected}");
        }
        got
    }

    /// The next envelope that has every field of `expected` with its value,
    /// past any others.
    pub(crate) async fn until(&mut self, expected: Value) -> Value {
        loop {
            let got = self.next().await;
            if expected.as_object().unwrap().iter().all(|(field, value)| &got[field] == value) {
                return got;
            }
        }
    }

    /// Joins `room`, expecting `joined` with its latest seq.
    pub(crate) async fn join(&mut self, room: &str, latest: u64) {
        self.send(json!({"type": "join", "room": room})).await;
        self.expect(json!({"type": "joined", "room": room, "seq": latest})).await;
    }

    /// The close code the server ends the connection with, after any envelopes.
    pub(crate) async fn closed_with(&mut self) -> Option<CloseCode> {
        self.messages_until_closed().await.1
    }

    /// The code and reason of the close frame that ends the connection, after any envelopes.
    pub(crate) async fn close_frame(&mut self) -> Option<(CloseCode, String)> {
        loop {
            match timeout(PATIENCE, self.ws.recv()).await.expect("the end in time") {
                Some(Ok(Event::Close(frame))) => return frame.map(|f| (f.code, f.reason.as_str().to_owned())),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// How many messages arrive before the server ends the connection, and its close code.
    pub(crate) async fn messages_until_closed(&mut self) -> (usize, Option<CloseCode>) {
        let mut messages = 0;
        loop {
            match timeout(PATIENCE, self.ws.recv()).await.expect("the end in time") {
                Some(Ok(Event::Message(_))) => messages += 1,
                Some(Ok(Event::Close(frame))) => return (messages, frame.map(|f| f.code)),
                Some(Ok(_)) => {}
                Some(Err(e)) => return (messages, e.close_code()),
                None => return (messages, None),
            }
        }
    }
}

/// The whole response to a plain GET of `path`, `Connection: close`.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> String {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).await
}

/// The whole response to `request`, sent as it is.
pub(crate) async fn http(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    timeout(PATIENCE, tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    response
}

/// POSTs `body` to the publish API with `key`, `Connection: close`: the status and the JSON answer.
pub(crate) async fn api_publish(addr: SocketAddr, key: &str, body: &str) -> (u16, Value) {
    let head =
        format!("POST /api/publish HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n");
    let response = http(addr, &format!("{head}Content-Length: {}\r\n\r\n{body}", body.len())).await;
    let status = response[9..12].parse().unwrap();
    let json = response.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(json).unwrap())
}

/// A TCP proxy to `target` for one connection whose link can be blackholed,
/// as when the client's host vanishes: from then on the bytes stop both ways
/// and nothing is closed on the client's side.
pub(crate) struct Blackhole {
    pub(crate) addr: SocketAddr,
    cut: tokio::sync::watch::Sender<bool>,
    server_closed: tokio::sync::oneshot::Receiver<()>,
}

impl Blackhole {
    pub(crate) async fn start(target: SocketAddr) -> Blackhole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, watch) = tokio::sync::watch::channel(false);
        let (closed, server_closed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(target).await.unwrap();
            let ((client_in, client_out), (server_in, server_out)) = (client.into_split(), server.into_split());
            tokio::spawn(Blackhole::carry(client_in, server_out, watch.clone()));
            let _open = Blackhole::carry(server_in, client_out, watch).await;
            let _ = closed.send(());
            // A dropped write half would send the client a FIN: hold both until the test ends.
            std::future::pending::<()>().await;
        });
        Blackhole { addr, cut, server_closed }
    }

    /// Copies `from` to `to` until `from` ends, dropping what comes once cut;
    /// `to` is shut down only if `from` ends before the cut. Keeps both halves open.
    async fn carry(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        cut: tokio::sync::watch::Receiver<bool>,
    ) -> (tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf) {
        let mut buf = vec![0; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if !*cut.borrow() && to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        if !*cut.borrow() {
            let _ = to.shutdown().await;
        }
        (from, to)
    }

    /// From now on, no byte passes either way.
    pub(crate) fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Waits until the server has closed its end of the link.
    pub(crate) async fn server_closed(self) {
        timeout(PATIENCE, self.server_closed).await.expect("the server closes the link").unwrap();
    }
}
