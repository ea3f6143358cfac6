//! The plain HTTP routes and the server API over real loopback TCP: kept-alive
//! and pipelined connections within their bounds and timeouts, and every
//! call of docs/api.md with its success and its errors.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use common::{Client, PATIENCE, config_file, server};
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use ws_proto::CloseCode;

/// One HTTP/1.1 connection, read response by response.
struct Http {
    tcp: TcpStream,
    read: Vec<u8>,
}

/// A response: its status, its headers (names in lower case) and its body.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

impl Http {
    async fn open(addr: SocketAddr) -> Http {
        Http { tcp: TcpStream::connect(addr).await.unwrap(), read: Vec::new() }
    }

    async fn send(&mut self, request: &str) {
        self.tcp.write_all(request.as_bytes()).await.unwrap();
    }

    /// Reads more, failing when the server closes.
    async fn fill(&mut self) {
        let mut chunk = [0; 4096];
        let n = timeout(PATIENCE, self.tcp.read(&mut chunk)).await.expect("a response in time").unwrap();
        assert!(n > 0, "closed before the response: {}", String::from_utf8_lossy(&self.read));
        self.read.extend_from_slice(&chunk[..n]);
    }

    /// The next response, by its Content-Length.
    async fn response(&mut self) -> Response {
        let head_len = loop {
            if let Some(at) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill().await;
        };
        let head = String::from_utf8(self.read[..head_len].to_vec()).unwrap();
        let mut lines = head.lines();
        let status = lines.next().unwrap()[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
        while self.read.len() < head_len + len {
            self.fill().await;
        }
        let body = String::from_utf8(self.read[head_len..head_len + len].to_vec()).unwrap();
        self.read.drain(..head_len + len);
        Response { status, headers, body }
    }

    /// Waits for the server to close the connection, reading what comes before.
    async fn closed(&mut self) {
        let mut chunk = [0; 4096];
        loop {
            match timeout(PATIENCE, self.tcp.read(&mut chunk)).await.expect("the close in time") {
                Ok(0) | Err(_) => return,
                Ok(n) => self.read.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends one call and reads its answer.
    async fn call(&mut self, call: &str, body: &str) -> Response {
        self.send(&post(call, "k", body)).await;
        self.response().await
    }
}

/// A request to the call `call` with `key` and `body`, kept alive.
fn post(call: &str, key: &str, body: &str) -> String {
    let len = body.len();
    format!(
        "POST /api/{call} HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {key}\r\nContent-Length: {len}\r\n\r\n{body}"
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: hub\r\n\r\n")
}

#[tokio::test]
async fn one_connection_serves_request_after_request() {
    let addr = server(&["--api-key", "k"]).await;
    let mut http = Http::open(addr).await;
    for path in ["/healthz", "/", "/metrics", "/healthz"] {
        http.send(&get(path)).await;
        let response = http.response().await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
        assert_eq!(response.header("connection"), None, "kept alive: {response:?}");
    }
    for seq in 1..=3 {
        let ack = http.call("publish", r#"{"type":"message","room":"r","content":"hi"}"#).await;
        assert_eq!((ack.status, ack.json()), (200, json!({"type": "ack", "seq": seq})));
        assert_eq!(ack.header("content-type"), Some("application/json"));
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let addr = server(&["--api-key", "k"]).await;
    let mut http = Http::open(addr).await;
    let mut pipeline = String::new();
    for i in 1..=20 {
        pipeline += &post("publish", "k", &format!(r#"{{"type":"message","room":"p","content":"m{i}","id":"{i}"}}"#));
    }
    pipeline += &get("/healthz");
    pipeline += &post("history", "k", r#"{"room":"p","since":18}"#);
    http.send(&pipeline).await;
    for i in 1..=20 {
        assert_eq!(http.response().await.json(), json!({"type": "ack", "id": i.to_string(), "seq": i}));
    }
    assert_eq!(http.response().await.body, "ok\n");
    let history = http.response().await.json();
    let contents: Vec<&str> =
        history["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(contents, ["m19", "m20"]);
}

#[tokio::test]
async fn connection_close_is_honoured() {
    let addr = server(&[]).await;
    let mut http = Http::open(addr).await;
    http.send("GET /healthz HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n").await;
    let response = http.response().await;
    assert_eq!((response.status, response.header("connection")), (200, Some("close")));
    http.closed().await;
    assert!(http.read.is_empty(), "nothing after the response");
}

#[tokio::test]
async fn a_body_over_the_bound_is_refused_and_the_connection_closed() {
    let addr = server(&["--api-key", "k", "--max-message-size", "1000"]).await;
    let mut http = Http::open(addr).await;
    let body = format!(r#"{{"type":"message","room":"r","content":"{}"}}"#, "x".repeat(2000));
    let response = http.call("publish", &body).await;
    assert_eq!((response.status, &response.json()["code"]), (413, &json!("too_long")), "{response:?}");
    http.closed().await;
    // The same bound holds for a body sent in chunks, with no length told.
    let mut http = Http::open(addr).await;
    let head =
        "POST /api/publish HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer k\r\nTransfer-Encoding: chunked\r\n\r\n";
    http.send(&format!("{head}{:x}\r\n{body}\r\n0\r\n\r\n", body.len())).await;
    assert_eq!(http.response().await.status, 413);
    http.closed().await;
}

#[tokio::test]
async fn a_slow_body_or_an_idle_connection_is_dropped_at_the_timeout() {
    let addr = server(&["--api-key", "k", "--handshake-timeout", "1"]).await;
    let mut http = Http::open(addr).await;
    http.send("POST /api/publish HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer k\r\nContent-Length: 100\r\n\r\n{")
        .await;
    let response = http.response().await;
    assert_eq!((response.status, &response.json()["code"]), (408, &json!("timeout")), "{response:?}");
    http.closed().await;
    let mut idle = Http::open(addr).await;
    idle.send(&get("/healthz")).await;
    assert_eq!(idle.response().await.status, 200);
    idle.closed().await;
    // A head that never ends is dropped too.
    let mut slow = Http::open(addr).await;
    slow.send("GET /healthz HTTP/1.1\r\nHost: hub\r\n").await;
    slow.closed().await;
}

#[tokio::test]
async fn a_websocket_opens_only_as_the_first_request_of_a_connection() {
    let addr = server(&[]).await;
    let mut http = Http::open(addr).await;
    http.send(&get("/healthz")).await;
    assert_eq!(http.response().await.status, 200);
    let upgrade = "GET /ws HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    http.send(upgrade).await;
    let response = http.response().await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(response.body.contains("first request"), "{response:?}");
    // On a connection of its own it opens.
    Client::connect(addr).await;
}

#[tokio::test]
async fn every_call_refuses_a_wrong_key_method_or_call() {
    let addr = server(&["--api-key", "k"]).await;
    let mut http = Http::open(addr).await;
    for call in ["publish", "history", "presence", "disconnect", "unsubscribe", "rooms", "info"] {
        http.send(&post(call, "wrong", "{}")).await;
        let response = http.response().await;
        assert_eq!((response.status, &response.json()["code"]), (401, &json!("unauthorized")), "{call}");
        http.send(&get(&format!("/api/{call}"))).await;
        assert_eq!(http.response().await.status, 405, "{call}");
    }
    let unknown = http.call("nope", "{}").await;
    assert_eq!((unknown.status, &unknown.json()["code"]), (404, &json!("unknown_call")));
    let open = server(&[]).await;
    let mut http = Http::open(open).await;
    let off = http.call("rooms", "").await;
    assert_eq!((off.status, &off.json()["code"]), (403, &json!("forbidden")), "off without --api-key");
}

#[tokio::test]
async fn publish_takes_an_array_and_answers_each_envelope_in_order() {
    let addr = server(&["--api-key", "k", "--max-content-chars", "10"]).await;
    let mut member = Client::connect_elsewhere(addr).await;
    member.join("a", 0).await;
    let batch = json!([
        {"type": "message", "room": "a", "content": "one", "id": "1"},
        {"type": "message", "room": "b", "data": {"n": 2}},
        {"type": "message", "room": "a", "content": "far too long to pass"},
        {"type": "join", "room": "a"},
        "not an envelope",
        {"type": "message", "room": "a", "content": "one", "id": "1"},
        {"type": "message", "room": "a", "content": "two"},
    ]);
    let mut http = Http::open(addr).await;
    let answer = http.call("publish", &batch.to_string()).await;
    assert_eq!(answer.status, 200);
    let answers = answer.json();
    let codes: Vec<Value> =
        answers.as_array().unwrap().iter().map(|a| a.get("seq").or(a.get("code")).unwrap().clone()).collect();
    assert_eq!(
        codes,
        [json!(1), json!(1), json!("too_long"), json!("unknown_type"), json!("invalid_json"), json!(1), json!(2)]
    );
    assert_eq!(answers[0], json!({"type": "ack", "id": "1", "seq": 1}));
    member.expect(json!({"type": "message", "room": "a", "seq": 1, "content": "one", "sender": "api"})).await;
    member.expect(json!({"type": "message", "room": "a", "seq": 2, "content": "two"})).await;
    let too_many = json!(vec![json!({"type": "message", "room": "a", "content": "x"}); 1001]);
    let refused = http.call("publish", &too_many.to_string()).await;
    assert_eq!((refused.status, &refused.json()["code"]), (413, &json!("too_long")));
    let broken = http.call("publish", "[{").await;
    assert_eq!((broken.status, &broken.json()["code"]), (400, &json!("invalid_json")));
}

#[tokio::test]
async fn history_gives_a_rooms_messages_since_a_seq_oldest_or_newest_first() {
    let addr = server(&["--api-key", "k", "--history", "5"]).await;
    let mut http = Http::open(addr).await;
    for i in 1..=8 {
        http.call("publish", &format!(r#"{{"type":"message","room":"h","content":"m{i}"}}"#)).await;
    }
    let seqs = |answer: &Value| -> Vec<u64> {
        answer["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
    };
    let cases: [(&str, &[u64], bool); 8] = [
        (r#"{"room":"h"}"#, &[4, 5, 6, 7, 8], false),
        (r#"{"room":"h","since":3}"#, &[4, 5, 6, 7, 8], true),
        (r#"{"room":"h","since":5,"limit":2}"#, &[6, 7], true),
        (r#"{"room":"h","since":5,"limit":2,"order":"newest"}"#, &[8, 7], true),
        (r#"{"room":"h","since":5,"limit":2,"order":"desc"}"#, &[8, 7], true),
        (r#"{"room":"h","since":5,"limit":2,"order":"asc"}"#, &[6, 7], true),
        (r#"{"room":"h","since":8}"#, &[], true),
        (r#"{"room":"empty"}"#, &[], true),
    ];
    for (body, expected, complete) in cases {
        let answer = http.call("history", body).await;
        assert_eq!(answer.status, 200, "{body}: {answer:?}");
        let answer = answer.json();
        assert_eq!((seqs(&answer).as_slice(), &answer["complete"]), (expected, &json!(complete)), "{body}: {answer}");
        assert_eq!((&answer["type"], answer["epoch"].is_string()), (&json!("history"), true));
    }
    let message = &http.call("history", r#"{"room":"h","since":7}"#).await.json()["messages"][0];
    assert_eq!(
        (&message["type"], &message["content"], &message["sender"]),
        (&json!("message"), &json!("m8"), &json!("api"))
    );
    for (body, status, code) in [
        ("{}", 400, "missing_field"),
        (r#"{"room":"has space"}"#, 400, "invalid_field"),
        (r#"{"room":"h","since":-1}"#, 400, "invalid_json"),
        (r#"{"room":"h","order":"sideways"}"#, 400, "invalid_json"),
        (r#"{"room":"h","colour":"red"}"#, 400, "invalid_json"),
        ("[1]", 400, "invalid_json"),
    ] {
        let answer = http.call("history", body).await;
        assert_eq!((answer.status, answer.json()["code"].as_str()), (status, Some(code)), "{body}");
    }
}

#[tokio::test]
async fn presence_rooms_and_info_tell_who_is_where() {
    let file = config_file("api-presence", "unknown-namespaces = \"refuse\"\n[namespace.quiet]\npresence = false\n");
    let addr = server(&["--api-key", "k", "--config", &file]).await;
    let mut ann = Client::connect(addr).await;
    ann.expect(json!({"type": "joined", "room": "general"})).await;
    ann.join("lobby", 0).await;
    let mut bob = Client::connect(addr).await;
    bob.expect(json!({"type": "joined", "room": "general"})).await;
    let mut http = Http::open(addr).await;
    let presence = http.call("presence", r#"{"room":"lobby"}"#).await.json();
    assert_eq!((&presence["type"], &presence["count"]), (&json!("presence"), &json!(1)), "{presence}");
    assert_eq!(presence["members"].as_array().unwrap().len(), 1);
    let rooms = http.call("rooms", "").await.json();
    assert_eq!(
        rooms,
        json!({"type": "rooms", "rooms": [
            {"room": "general", "members": 2, "connections": 2},
            {"room": "lobby", "members": 1, "connections": 1},
        ]})
    );
    let info = http.call("info", "{}").await.json();
    assert_eq!((&info["type"], &info["connections"]), (&json!("info"), &json!(2)), "{info}");
    assert_eq!((info["servers"][0]["connections"].as_u64(), info["servers"][0]["rooms"].as_u64()), (Some(2), Some(2)));
    for (call, body, status, code) in [
        ("presence", r#"{"room":"quiet:x"}"#, 403, "not_offered"),
        ("presence", r#"{"room":"elsewhere:x"}"#, 404, "unknown_namespace"),
        ("presence", "{}", 400, "missing_field"),
        ("rooms", "nonsense", 400, "invalid_json"),
        ("info", r#"{"verbose":true}"#, 400, "invalid_json"),
    ] {
        let answer = http.call(call, body).await;
        assert_eq!((answer.status, answer.json()["code"].as_str()), (status, Some(code)), "{call} {body}");
    }
    let _ = std::fs::remove_file(file);
}

/// The name the server gave an anonymous client, from its welcome.
async fn named(addr: SocketAddr) -> (Client, String) {
    let mut client = Client::connect_quietly(addr).await;
    let welcome = client.next().await;
    let name = welcome["content"].as_str().unwrap().strip_prefix("welcome, ").unwrap().to_owned();
    client.expect(json!({"type": "joined", "room": "general"})).await;
    (client, name)
}

#[tokio::test]
async fn disconnect_closes_every_connection_of_a_user_with_its_code_and_reason() {
    let addr = server(&["--api-key", "k"]).await;
    let (mut ann, name) = named(addr).await;
    let (mut bob, _) = named(addr).await;
    let mut http = Http::open(addr).await;
    let body = json!({"user": name, "code": 4403, "reason": "account closed"}).to_string();
    let answer = http.call("disconnect", &body).await;
    assert_eq!(answer.json(), json!({"type": "disconnected", "user": name, "connections": 1}));
    let (code, reason) = ann.close_frame().await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (CloseCode(4403), "account closed"));
    drop(ann);
    // Gone from the room once its close is done.
    let gone = async {
        while http.call("rooms", "").await.json()["rooms"][0]["connections"] != 1 {
            tokio::task::yield_now().await;
        }
    };
    timeout(PATIENCE, gone).await.expect("the connection gone");
    bob.send(json!({"type": "presence", "room": "general"})).await;
    bob.expect(json!({"type": "presence", "count": 1})).await;
    let nobody = http.call("disconnect", r#"{"user":"nobody"}"#).await.json();
    assert_eq!(nobody["connections"], 0);
    for (body, code) in [
        ("{}", "missing_field"),
        (r#"{"user":""}"#, "invalid_field"),
        (r#"{"user":"u","code":1006}"#, "invalid_field"),
        (r#"{"user":"u","code":5000}"#, "invalid_field"),
        (&format!(r#"{{"user":"u","reason":"{}"}}"#, "x".repeat(124)), "too_long"),
    ] {
        let answer = http.call("disconnect", body).await;
        assert_eq!((answer.status, answer.json()["code"].as_str()), (400, Some(code)), "{body}");
    }
}

#[tokio::test]
async fn unsubscribe_takes_a_user_out_of_a_room_and_leaves_the_connection_open() {
    let addr = server(&["--api-key", "k"]).await;
    let (mut ann, name) = named(addr).await;
    ann.join("lobby", 0).await;
    let mut http = Http::open(addr).await;
    let body = json!({"user": name, "room": "lobby"}).to_string();
    let answer = http.call("unsubscribe", &body).await.json();
    assert_eq!(answer, json!({"type": "unsubscribed", "user": name, "room": "lobby", "connections": 1}));
    ann.expect(json!({"type": "left", "room": "lobby", "reason": "removed"})).await;
    http.call("publish", r#"{"type":"message","room":"lobby","content":"unseen"}"#).await;
    http.call("publish", r#"{"type":"message","room":"general","content":"seen"}"#).await;
    ann.expect(json!({"type": "message", "room": "general", "content": "seen"})).await;
    let rooms = http.call("rooms", "").await.json();
    assert_eq!(rooms["rooms"], json!([{"room": "general", "members": 1, "connections": 1}]));
    for (body, code) in [(r#"{"room":"lobby"}"#, "missing_field"), (r#"{"user":"u"}"#, "missing_field")] {
        let answer = http.call("unsubscribe", body).await;
        assert_eq!((answer.status, answer.json()["code"].as_str()), (400, Some(code)), "{body}");
    }
}
