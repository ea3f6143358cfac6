//! The hooks to the application's backend (docs/hooks.md), against a real
//! HTTP backend on loopback that the tests start: the connect hook with a
//! cookie session and no JWT, the join hook's allow with data and its
//! refusal, the publish hook's allow, refusal and rewrite, an rpc's answer
//! and refusal, a backend that does not answer in time, that is down, that
//! answers garbage, and the bound on the calls in flight; the events,
//! told in order and at least once, through a backend that was down, and
//! through a real redis-server by two servers, one of them SIGKILLed, and
//! through a real Redis Cluster.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;
mod redis_cluster;

use bytes::Bytes;
use common::{Client, PATIENCE, http_get, server, server_process};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use redis_cluster::{Redis, RedisCluster};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::timeout;
use ws_server::config::ServerConfig;
use ws_tokio::client::{ClientOptions, connect_with};

/// How the backend answers a call to `path` (its status and body).
type Handler = dyn Fn(&str, &Value) -> (u16, String) + Send + Sync;

/// An application's backend on a free loopback port.
struct Backend {
    addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    handler: Box<Handler>,
    /// Every call received: its path and its JSON.
    calls: Mutex<Vec<(String, Value)>>,
    /// Calls being answered now, and the most there were at once.
    in_flight: watch::Sender<(usize, usize)>,
    /// Whether calls are answered; while it is closed, they are held.
    gate: watch::Sender<bool>,
    /// Calls answered so far.
    answered: watch::Sender<usize>,
}

impl Backend {
    /// Starts a backend answering as `handler` says, calls held until the
    /// gate opens if it starts closed.
    async fn start(open: bool, handler: impl Fn(&str, &Value) -> (u16, String) + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            handler: Box::new(handler),
            calls: Mutex::new(Vec::new()),
            in_flight: watch::channel((0, 0)).0,
            gate: watch::channel(open).0,
            answered: watch::channel(0).0,
        });
        let serving = state.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let state = serving.clone();
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(state.answer(request).await) }
                });
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(tcp), service));
            }
        });
        Backend { addr, state }
    }

    /// The URL of `path` on this backend.
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn calls(&self) -> Vec<(String, Value)> {
        self.state.calls.lock().unwrap().clone()
    }

    /// Waits until `count` calls are held at once.
    async fn holding(&self, count: usize) {
        let mut in_flight = self.state.in_flight.subscribe();
        timeout(PATIENCE, in_flight.wait_for(|(now, _)| *now >= count)).await.unwrap().unwrap();
    }

    /// Waits until `done` holds of the count of calls answered, checked
    /// again after each.
    async fn until(&self, done: impl Fn(usize) -> bool) {
        self.until_within(PATIENCE, done).await;
    }

    /// [`Backend::until`], waiting up to `patience`.
    async fn until_within(&self, patience: std::time::Duration, done: impl Fn(usize) -> bool) {
        let mut answered = self.state.answered.subscribe();
        timeout(patience, answered.wait_for(|answered| done(*answered))).await.unwrap().unwrap();
    }

    fn open(&self) {
        self.state.gate.send_replace(true);
    }

    /// The most calls there were in flight at once.
    fn peak(&self) -> usize {
        self.state.in_flight.borrow().1
    }
}

impl State {
    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let call: Value = serde_json::from_slice(&body).unwrap();
        self.calls.lock().unwrap().push((path.clone(), call.clone()));
        self.in_flight.send_modify(|(now, peak)| {
            *now += 1;
            *peak = (*peak).max(*now);
        });
        let _ = self.gate.subscribe().wait_for(|open| *open).await;
        let (status, answer) = (self.handler)(&path, &call);
        self.in_flight.send_modify(|(now, _)| *now -= 1);
        self.answered.send_modify(|answered| *answered += 1);
        Response::builder().status(status).body(Full::new(Bytes::from(answer))).unwrap()
    }
}

/// An application: admits the session cookie `s-alice` as alice, keeps
/// room `vip` to itself, refuses insults, shouts for "shout", adds for `add`.
fn application(path: &str, call: &Value) -> (u16, String) {
    let answer = match (path, call["content"].as_str(), call["method"].as_str()) {
        ("/connect", _, _) if call["cookies"]["session"] == "s-alice" => {
            json!({"allow": true, "user": "alice", "rooms": ["general", "chat:*"], "publish": ["chat:*"]})
        }
        ("/connect", _, _) => json!({"allow": false, "status": 401, "reason": "no session"}),
        ("/join", _, _) if call["room"] == "vip" => json!({"allow": false, "reason": "members only"}),
        ("/join", _, _) => json!({"allow": true, "data": {"welcome": call["room"]}}),
        ("/publish", Some(content), _) if content.contains("insult") => json!({"allow": false, "reason": "no insults"}),
        ("/publish", Some("shout"), _) => json!({"allow": true, "content": "SHOUT", "data": {"loud": true}}),
        ("/publish", Some("garbage"), _) => return (200, "not json".to_owned()),
        ("/publish", Some("status"), _) => return (500, String::new()),
        ("/publish", Some("wrong"), _) => json!({"allow": "yes"}),
        ("/publish", _, _) => json!({"allow": true}),
        ("/rpc", _, Some("add")) => {
            json!({"result": call["data"]["a"].as_i64().unwrap() + call["data"]["b"].as_i64().unwrap()})
        }
        ("/rpc", _, Some("null")) => json!({"result": null}),
        ("/rpc", _, _) => json!({"error": "no such method"}),
        _ => return (404, String::new()),
    };
    (200, answer.to_string())
}

/// A server whose hooks are `backend`'s, with `flags`.
async fn hooked(backend: &Backend, flags: &[&str]) -> SocketAddr {
    let (publish, rpc) = (backend.url("/publish"), backend.url("/rpc"));
    server(&[&["--hook-publish", &publish, "--hook-rpc", &rpc], flags].concat()).await
}

/// A client in the default room.
async fn member(addr: SocketAddr) -> Client {
    let mut client = Client::connect(addr).await;
    client.expect(json!({"type": "joined", "room": "general"})).await;
    client
}

/// Opens a hub connection to `addr` at `target` with `headers`: the client,
/// or the status and reason of its refusal.
async fn open(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Result<Client, (u16, String)> {
    let headers = headers.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
    match connect_with(&format!("ws://{addr}{target}"), &ClientOptions { headers, ..Default::default() }).await {
        Ok((ws, _)) => Ok(Client { ws }),
        Err(ws_tokio::Error::Refused { status, reason, .. }) => Err((status, reason)),
        Err(e) => panic!("not an HTTP refusal: {e}"),
    }
}

#[tokio::test]
async fn the_connect_hook_admits_a_cookie_session_without_a_jwt() {
    let backend = Backend::start(true, application).await;
    let addr = server(&["--hook-connect", &backend.url("/connect"), "--hook-header", "X-App"]).await;

    let mut alice =
        open(addr, "/ws?lang=en", &[("Cookie", "theme=dark; session=s-alice"), ("X-App", "7")]).await.unwrap();
    alice.expect(json!({"type": "system", "content": "welcome, alice"})).await;
    alice.expect(json!({"type": "joined", "room": "general"})).await;
    alice.send(json!({"type": "join", "room": "other"})).await;
    alice.expect(json!({"type": "error", "code": "forbidden"})).await;
    alice.send(json!({"type": "message", "room": "general", "content": "hi", "id": "g"})).await;
    alice.expect(json!({"type": "error", "code": "forbidden", "id": "g"})).await;
    alice.join("chat:1", 0).await;
    alice.send(json!({"type": "message", "room": "chat:1", "content": "hi", "id": "c"})).await;
    alice.until(json!({"type": "message", "room": "chat:1", "sender": "alice", "content": "hi"})).await;

    let (path, call) = backend.calls()[0].clone();
    assert_eq!(path, "/connect");
    assert_eq!(
        call,
        json!({
            "address": "127.0.0.1",
            "path": "/ws",
            "query": {"lang": "en"},
            "cookies": {"theme": "dark", "session": "s-alice"},
            "headers": {"x-app": "7"},
        })
    );

    let refused = open(addr, "/ws", &[("Cookie", "session=s-mallory")]).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.0, 401);
    assert!(refused.1.contains("no session"), "{refused:?}");
    let metrics = http_get(addr, "/metrics").await;
    assert!(metrics.contains(r#"ws_connections_refused_total{reason="connect_hook"} 1"#), "{metrics}");
}

#[tokio::test]
async fn with_a_jwt_key_too_the_connect_hook_decides_for_requests_without_a_token() {
    let backend = Backend::start(true, application).await;
    let addr = server(&["--hook-connect", &backend.url("/connect"), "--jwt-secret", "k"]).await;
    let claims = json!({"sub": "bob", "exp": 4_000_000_000u64});
    let key = jsonwebtoken::EncodingKey::from_secret(b"k");
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();

    let mut bob = open(addr, &format!("/ws?token={token}"), &[]).await.unwrap();
    bob.expect(json!({"type": "system", "content": "welcome, bob"})).await;
    let mut alice = open(addr, "/ws", &[("Cookie", "session=s-alice")]).await.unwrap();
    alice.expect(json!({"type": "system", "content": "welcome, alice"})).await;
    // A bad token is the key's to refuse, not the hook's.
    assert_eq!(open(addr, "/ws?token=bad", &[("Cookie", "session=s-alice")]).await.map(|_| ()).unwrap_err().0, 401);
    assert_eq!(backend.calls().len(), 1, "only alice's handshake went to the backend");

    // A connect hook that is down refuses every handshake without a token, 503.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let addr = server(&["--hook-connect", &format!("http://{closed}/connect")]).await;
    let refused = open(addr, "/ws", &[("Cookie", "session=s-alice")]).await.map(|_| ()).unwrap_err();
    assert_eq!(refused.0, 503, "{refused:?}");
    assert!(refused.1.contains("the connect hook could not be reached"), "{refused:?}");
}

#[tokio::test]
async fn the_refresh_hook_extends_a_connection_of_the_connect_hook_or_lets_it_end() {
    // Far enough ahead for the refresh to come first on a loaded machine.
    let ends = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 8;
    let backend = Backend::start(true, move |path: &str, call: &Value| {
        let user = call["cookies"]["session"].as_str().map(|session| session.trim_start_matches("s-"));
        let answer = match path {
            "/connect" => json!({"allow": true, "user": user, "expires": ends}),
            "/refresh" if call["user"] == "ann" => json!({"allow": true, "expires": ends + 3600}),
            _ => json!({"allow": false, "reason": "signed out"}),
        };
        (200, answer.to_string())
    })
    .await;
    let (connect, refresh) = (backend.url("/connect"), backend.url("/refresh"));
    let flags = ["--heartbeat-interval", "0.1", "--refresh-before", "3600", "--rate-limit", "0"];
    let addr = server(&[&["--hook-connect", &connect, "--hook-refresh", &refresh], &flags[..]].concat()).await;
    let mut ann = open(addr, "/ws", &[("Cookie", "session=s-ann")]).await.unwrap();
    let mut bob = open(addr, "/ws", &[("Cookie", "session=s-bob")]).await.unwrap();

    ann.until(json!({"type": "refreshed", "expires": ends + 3600})).await;
    // The backend let Bob's connection end: closed once it did.
    assert_eq!(bob.closed_with().await, Some(ws_proto::CloseCode(4001)));
    // Past that end, Ann is still connected.
    ann.send(json!({"type": "message", "room": "general", "content": "still here", "id": "m"})).await;
    ann.until(json!({"type": "ack", "id": "m", "seq": 1})).await;

    let refreshes: Vec<Value> =
        backend.calls().into_iter().filter(|(path, _)| path == "/refresh").map(|(_, call)| call).collect();
    assert!(refreshes.contains(&json!({"user": "ann", "expires": ends})), "{refreshes:?}");
    assert_eq!(refreshes.iter().filter(|call| call["user"] == "bob").count(), 1, "asked once: {refreshes:?}");
}

#[tokio::test]
async fn the_join_hook_allows_with_data_or_refuses() {
    let backend = Backend::start(true, application).await;
    let addr = server(&["--hook-join", &backend.url("/join")]).await;
    let mut client = Client::connect(addr).await;
    client.expect(json!({"type": "joined", "room": "general", "data": {"welcome": "general"}})).await;
    client.send(json!({"type": "join", "room": "vip", "id": "v"})).await;
    client.expect(json!({"type": "error", "code": "refused", "message": "members only", "id": "v"})).await;
    client.send(json!({"type": "join", "room": "lobby", "since": 0})).await;
    client.expect(json!({"type": "joined", "room": "lobby", "data": {"welcome": "lobby"}})).await;
    client.expect(json!({"type": "recovered", "room": "lobby"})).await;
    // Not a member of vip: its messages are not for this client.
    client.send(json!({"type": "message", "room": "vip", "content": "hi", "id": "m"})).await;
    client.expect(json!({"type": "error", "code": "not_joined", "id": "m"})).await;

    let calls: Vec<Value> = backend.calls().into_iter().map(|(_, call)| call).collect();
    let user = calls[0]["user"].clone();
    assert_eq!(
        calls,
        [
            json!({"user": user, "room": "general"}),
            json!({"user": user, "room": "vip"}),
            json!({"user": user, "room": "lobby", "since": 0}),
        ]
    );
}

#[tokio::test]
async fn the_publish_hook_allows_refuses_and_rewrites_before_a_message_is_numbered() {
    let backend = Backend::start(true, application).await;
    let addr = hooked(&backend, &[]).await;
    let (mut publisher, mut reader) = (member(addr).await, member(addr).await);

    publisher.send(json!({"type": "message", "room": "general", "content": "hello", "id": "h"})).await;
    publisher.until(json!({"type": "ack", "id": "h", "seq": 1})).await;
    reader.expect(json!({"type": "message", "seq": 1, "content": "hello"})).await;

    publisher.send(json!({"type": "message", "room": "general", "content": "an insult", "id": "i"})).await;
    publisher.until(json!({"type": "error", "code": "refused", "message": "no insults", "id": "i"})).await;

    publisher.send(json!({"type": "message", "room": "general", "content": "shout", "id": "s"})).await;
    publisher.until(json!({"type": "ack", "id": "s", "seq": 2})).await;
    // The refused message was never numbered nor delivered: the next is 2, rewritten.
    reader.expect(json!({"type": "message", "seq": 2, "content": "SHOUT", "data": {"loud": true}})).await;

    let (path, call) = backend.calls()[1].clone();
    assert_eq!(path, "/publish");
    assert_eq!(call, json!({"user": call["user"], "room": "general", "content": "an insult", "id": "i"}));
    assert!(call["user"].as_str().unwrap().starts_with("127.0.0.1:"), "{call}");
}

#[tokio::test]
async fn a_connections_messages_are_in_the_publish_hooks_hands_together_and_numbered_in_the_order_sent() {
    let backend = Backend::start(false, application).await;
    let addr = hooked(&backend, &["--rate-limit", "0"]).await;
    let (mut publisher, mut reader) = (member(addr).await, member(addr).await);
    let contents = ["one", "an insult", "three", "four"];
    for (i, content) in contents.iter().enumerate() {
        publisher.send(json!({"type": "message", "room": "general", "content": content, "id": i.to_string()})).await;
    }
    // Every call is made before any is answered.
    backend.holding(contents.len()).await;
    backend.open();
    publisher.until(json!({"type": "ack", "id": "0", "seq": 1})).await;
    publisher.until(json!({"type": "error", "code": "refused", "id": "1"})).await;
    publisher.until(json!({"type": "ack", "id": "2", "seq": 2})).await;
    publisher.until(json!({"type": "ack", "id": "3", "seq": 3})).await;
    for (seq, content) in [(1, "one"), (2, "three"), (3, "four")] {
        reader.expect(json!({"type": "message", "seq": seq, "content": content})).await;
    }
}

#[tokio::test]
async fn an_rpc_gets_the_backends_answer_with_its_id() {
    let backend = Backend::start(true, application).await;
    let addr = hooked(&backend, &[]).await;
    let mut client = member(addr).await;

    client.send(json!({"type": "rpc", "method": "add", "data": {"a": 2, "b": 3}, "id": "r1"})).await;
    assert_eq!(client.next().await, json!({"type": "rpc", "id": "r1", "result": 5}));
    client.send(json!({"type": "rpc", "method": "null", "id": "r2"})).await;
    assert_eq!(client.next().await, json!({"type": "rpc", "id": "r2", "result": null}));
    client.send(json!({"type": "rpc", "method": "other", "id": "r3"})).await;
    client.expect(json!({"type": "error", "code": "refused", "message": "no such method", "id": "r3"})).await;
    client.send(json!({"type": "rpc", "id": "r4"})).await;
    client.expect(json!({"type": "error", "code": "missing_field", "id": "r4"})).await;

    let (path, call) = backend.calls()[0].clone();
    assert_eq!(path, "/rpc");
    assert_eq!(call, json!({"user": call["user"], "method": "add", "data": {"a": 2, "b": 3}}));

    // A server without the rpc hook does not offer it.
    let mut client = member(server(&["--hook-publish", &backend.url("/publish")]).await).await;
    client.send(json!({"type": "rpc", "method": "add", "id": "r5"})).await;
    client.expect(json!({"type": "error", "code": "not_offered", "id": "r5"})).await;
}

#[tokio::test]
async fn a_backend_that_does_not_answer_in_time_is_unavailable_and_the_connection_stays_up() {
    let backend = Backend::start(false, application).await;
    let addr = hooked(&backend, &["--hook-timeout", "0.5"]).await;
    let mut client = member(addr).await;

    client.send(json!({"type": "message", "room": "general", "content": "hello", "id": "m"})).await;
    let error = client.expect(json!({"type": "error", "code": "unavailable", "id": "m"})).await;
    assert!(error["message"].as_str().unwrap().contains("did not answer within 0.5 s"), "{error}");
    client.send(json!({"type": "rpc", "method": "add", "id": "r"})).await;
    client.expect(json!({"type": "error", "code": "unavailable", "id": "r"})).await;
    client.send(json!({"type": "ping", "id": "p"})).await;
    client.expect(json!({"type": "pong", "id": "p"})).await;

    let metrics = http_get(addr, "/metrics").await;
    for line in [r#"ws_hook_errors_total{hook="publish"} 1"#, r#"ws_hook_errors_total{hook="rpc"} 1"#] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(metrics.contains(r#"ws_hook_latency_seconds_count{hook="publish"} 1"#), "{metrics}");
}

#[tokio::test]
async fn a_backend_that_is_down_is_unavailable_or_passed_over_as_configured() {
    // A port nothing listens on any more.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let url = format!("http://{closed}/publish");

    let mut client = member(server(&["--hook-publish", &url]).await).await;
    client.send(json!({"type": "message", "room": "general", "content": "hello", "id": "m"})).await;
    let error = client.expect(json!({"type": "error", "code": "unavailable", "id": "m"})).await;
    assert!(error["message"].as_str().unwrap().contains("could not be reached"), "{error}");

    let mut client = member(server(&["--hook-publish", &url, "--hook-failure", "allow"]).await).await;
    client.send(json!({"type": "message", "room": "general", "content": "hello", "id": "m"})).await;
    client.until(json!({"type": "message", "seq": 1, "content": "hello"})).await;
}

#[tokio::test]
async fn a_backend_that_answers_garbage_or_an_error_status_is_unavailable_and_the_connection_stays_up() {
    let backend = Backend::start(true, application).await;
    let mut client = member(hooked(&backend, &[]).await).await;
    for (content, said) in [
        ("garbage", "answered what is not an answer"),
        ("status", "answered 500 Internal Server Error"),
        ("wrong", "answered what is not an answer"),
    ] {
        client.send(json!({"type": "message", "room": "general", "content": content, "id": content})).await;
        let error = client.expect(json!({"type": "error", "code": "unavailable", "id": content})).await;
        assert!(error["message"].as_str().unwrap().contains(said), "{error}");
    }
    client.send(json!({"type": "message", "room": "general", "content": "fine", "id": "f"})).await;
    client.until(json!({"type": "ack", "id": "f", "seq": 1})).await;
}

#[tokio::test]
async fn calls_in_flight_to_a_hook_are_bounded() {
    let backend = Backend::start(false, application).await;
    let mut client = member(hooked(&backend, &["--hook-max-in-flight", "2", "--rate-limit", "0"]).await).await;
    for i in 0..5 {
        client.send(json!({"type": "rpc", "method": "add", "data": {"a": i, "b": 1}, "id": i.to_string()})).await;
    }
    backend.holding(2).await;
    // Answered at once: the server has read every rpc before it.
    client.send(json!({"type": "ping"})).await;
    client.expect(json!({"type": "pong"})).await;
    backend.open();
    for i in 0..5 {
        assert_eq!(client.next().await, json!({"type": "rpc", "id": i.to_string(), "result": i + 1}));
    }
    assert_eq!(backend.peak(), 2);
    assert_eq!(backend.calls().len(), 5);
}

/// A backend that takes batches of events into `taken` while it is up,
/// and answers 503 while it is down.
async fn events_backend(up: Arc<std::sync::atomic::AtomicBool>, taken: Arc<Mutex<Vec<Value>>>) -> Backend {
    Backend::start(true, move |_: &str, call: &Value| {
        if !up.load(std::sync::atomic::Ordering::SeqCst) {
            return (503, String::new());
        }
        taken.lock().unwrap().extend(call["events"].as_array().unwrap().iter().cloned());
        (200, String::new())
    })
    .await
}

/// The events `taken` as `(type, user, room)`, each once (by id), in the
/// order first taken; and whether every id was taken once in that order.
fn told(taken: &Mutex<Vec<Value>>) -> Vec<(String, String, String)> {
    let mut seen = std::collections::HashSet::new();
    let events = taken.lock().unwrap().clone();
    let unique = events.into_iter().filter(|event| seen.insert(event["id"].as_str().unwrap().to_owned()));
    unique
        .map(|e| {
            (
                e["type"].as_str().unwrap().into(),
                e["user"].as_str().unwrap().into(),
                e["room"].as_str().unwrap_or("").into(),
            )
        })
        .collect()
}

/// `(type, user, room)` for the events of the test.
fn event(kind: &str, user: &str, room: &str) -> (String, String, String) {
    (kind.into(), user.into(), room.into())
}

#[tokio::test]
async fn the_backend_is_told_every_connect_join_leave_disconnect_occupied_and_vacated_in_order() {
    let (up, taken) = (Arc::new(std::sync::atomic::AtomicBool::new(true)), Arc::new(Mutex::new(Vec::new())));
    let backend = events_backend(up, taken.clone()).await;
    let addr = server(&["--hook-events", &backend.url("/events")]).await;
    let mut ann = member(addr).await;
    let bob = member(addr).await;
    let name = |client: &Client| format!("127.0.0.1:{}", client.ws.get_ref().local_addr().unwrap().port());
    let (a, b) = (name(&ann), name(&bob));
    ann.join("lobby", 0).await;
    ann.send(json!({"type": "leave", "room": "lobby"})).await;
    ann.expect(json!({"type": "left", "room": "lobby"})).await;
    drop(ann);
    backend.until(|_| told(&taken).len() == 11).await;
    drop(bob);
    let expected = [
        event("connect", &a, ""),
        event("join", &a, "general"),
        event("occupied", &a, "general"),
        event("connect", &b, ""),
        event("join", &b, "general"),
        event("join", &a, "lobby"),
        event("occupied", &a, "lobby"),
        event("leave", &a, "lobby"),
        event("vacated", &a, "lobby"),
        event("leave", &a, "general"),
        event("disconnect", &a, ""),
        event("leave", &b, "general"),
        event("vacated", &b, "general"),
        event("disconnect", &b, ""),
    ];
    backend.until(|_| told(&taken).len() == expected.len()).await;
    assert_eq!(told(&taken), expected);
    let events = taken.lock().unwrap().clone();
    assert_eq!(events.len(), expected.len(), "each told once while the backend was up");
    assert!(events.iter().all(|e| e["time"].as_u64().unwrap() > 0 && e["id"].as_str().unwrap().contains('-')));
}

#[tokio::test]
async fn events_wait_while_the_backend_is_down_and_none_is_missed() {
    let (up, taken) = (Arc::new(std::sync::atomic::AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let backend = events_backend(up.clone(), taken.clone()).await;
    let addr = server(&["--hook-events", &backend.url("/events")]).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(member(addr).await);
    }
    // Refused at least once: the events wait.
    backend.until(|answered| answered > 0).await;
    drop(clients);
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    // 5 connects and joins, 1 occupied; 5 leaves and disconnects, 1 vacated.
    backend.until(|_| told(&taken).len() == 22).await;
    let events = told(&taken);
    let count = |kind: &str| events.iter().filter(|(k, _, _)| k == kind).count();
    assert_eq!((count("connect"), count("join"), count("leave"), count("disconnect")), (5, 5, 5, 5));
    assert_eq!((events[2].0.as_str(), events[21].0.as_str()), ("occupied", "disconnect"));
    assert_eq!(events.iter().filter(|(k, _, _)| k == "vacated").count(), 1);
    let metrics = http_get(addr, "/metrics").await;
    assert!(metrics.contains("ws_hook_events_waiting 0"), "{metrics}");
    assert!(!metrics.contains(r#"ws_hook_errors_total{hook="events"} 0"#), "{metrics}");
}

/// The events of `room` among `events`, as `(type, user)`.
fn of_room(events: &[(String, String, String)], room: &str) -> Vec<(String, String)> {
    events.iter().filter(|(_, _, r)| r == room).map(|(kind, user, _)| (kind.clone(), user.clone())).collect()
}

#[tokio::test]
async fn a_server_that_stops_has_told_its_members_leaves_and_disconnects_first() {
    let (up, taken) = (Arc::new(std::sync::atomic::AtomicBool::new(true)), Arc::new(Mutex::new(Vec::new())));
    let backend = events_backend(up, taken.clone()).await;
    let args = ["ws-server", "--listen", "127.0.0.1:0", "--hook-events", &backend.url("/events")];
    let running = ws_server::http::spawn(ServerConfig::load(args).unwrap()).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(member(running.addr).await);
    }
    running.stop().await.unwrap();
    let events = told(&taken);
    let count = |kind: &str| events.iter().filter(|(k, _, _)| k == kind).count();
    assert_eq!((count("leave"), count("vacated"), count("disconnect")), (3, 1, 3), "{events:?}");
}

#[tokio::test]
async fn through_redis_a_server_stopped_with_sigterm_has_written_its_members_leaves_before_it_exits() {
    let Some(redis) = Redis::start().await else { return };
    let backend = Backend::start(true, |_: &str, _: &Value| (200, String::new())).await;
    let (url, events) = (redis.url(), backend.url("/events"));
    let (mut child, addr) = server_process(&["--redis", &url, "--hook-events", &events]).await;
    let mut client = member(addr).await;
    client.join("lonely", 0).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(timeout(PATIENCE, child.wait()).await.unwrap().unwrap().success());
    // Without the leaves, the rooms would stay occupied until the server is taken for dead.
    let mut redis = redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap();
    let occupied: Vec<String> = redis::cmd("HKEYS").arg("ws:{events}:occupancy").query_async(&mut redis).await.unwrap();
    assert_eq!(occupied, Vec::<String>::new());
}

#[tokio::test]
async fn through_redis_a_killed_servers_members_are_told_gone_and_only_rooms_it_alone_held_vacated() {
    let Some(redis) = Redis::start().await else { return };
    let (up, taken) = (Arc::new(std::sync::atomic::AtomicBool::new(true)), Arc::new(Mutex::new(Vec::new())));
    let backend = events_backend(up, taken.clone()).await;
    let (url, events) = (redis.url(), backend.url("/events"));
    let flags = ["--redis", &url, "--hook-events", &events];
    let here = server(&flags).await;
    let (mut doomed, there) = server_process(&flags).await;
    let name = |client: &Client| format!("127.0.0.1:{}", client.ws.get_ref().local_addr().unwrap().port());
    let mut ann = member(here).await;
    let mut bob = member(there).await;
    let (a, b) = (name(&ann), name(&bob));
    ann.join("shared", 0).await;
    bob.join("shared", 0).await;
    bob.join("lonely", 0).await;
    let seen = |kind: &str, user: &str, room: &str| told(&taken).contains(&event(kind, user, room));
    backend.until(|_| seen("occupied", &b, "lonely") && seen("join", &a, "shared")).await;

    doomed.kill().await.unwrap();
    // Told once the server's key in Redis has expired, by the server left.
    let gone = std::time::Duration::from_secs(120);
    backend.until_within(gone, |_| seen("disconnect", &b, "")).await;
    drop(ann);
    backend.until(|_| seen("disconnect", &a, "")).await;
    drop(bob);

    let events = told(&taken);
    let event2 = |kind: &str, user: &str| (kind.to_owned(), user.to_owned());
    let lonely = [event2("join", &b), event2("occupied", &b), event2("leave", &b), event2("vacated", &b)];
    assert_eq!(of_room(&events, "lonely"), lonely);
    for room in [of_room(&events, "shared"), of_room(&events, "general")] {
        // One occupied, whoever came first; vacated only when ann, the last, left.
        assert_eq!(room.iter().filter(|(kind, _)| kind == "occupied").count(), 1, "{room:?}");
        assert_eq!(room.last(), Some(&event2("vacated", &a)), "{room:?}");
        assert_eq!(room.iter().filter(|(kind, _)| kind == "vacated").count(), 1, "{room:?}");
        let leaves: Vec<&(String, String)> = room.iter().filter(|(kind, _)| kind == "leave").collect();
        assert_eq!(leaves, [&event2("leave", &b), &event2("leave", &a)], "{room:?}");
    }
    let last_of = |kind: &str, user: &str| events.iter().rposition(|e| *e == event(kind, user, "")).unwrap();
    let b_left = events.iter().rposition(|(kind, user, _)| kind == "leave" && *user == b).unwrap();
    assert!(b_left < last_of("disconnect", &b), "{events:?}");
}

#[tokio::test]
async fn through_a_redis_cluster_a_room_is_occupied_and_vacated_once_for_every_server() {
    let Some(cluster) = RedisCluster::start().await else { return };
    let (up, taken) = (Arc::new(std::sync::atomic::AtomicBool::new(true)), Arc::new(Mutex::new(Vec::new())));
    let backend = events_backend(up, taken.clone()).await;
    let (url, events) = (cluster.url(), backend.url("/events"));
    let flags = ["--redis", &url, "--hook-events", &events];
    let (one, two) = (server(&flags).await, server(&flags).await);
    let name = |client: &Client| format!("127.0.0.1:{}", client.ws.get_ref().local_addr().unwrap().port());
    let (ann, bob) = (member(one).await, member(two).await);
    let (a, b) = (name(&ann), name(&bob));
    drop(ann);
    drop(bob);
    let seen = |kind: &str, user: &str| told(&taken).contains(&event(kind, user, ""));
    backend.until(|_| seen("disconnect", &a) && seen("disconnect", &b)).await;
    let general = of_room(&told(&taken), "general");
    let count = |kind: &str| general.iter().filter(|(k, _)| k == kind).count();
    assert_eq!((count("join"), count("occupied"), count("leave"), count("vacated")), (2, 1, 2, 1), "{general:?}");
    assert_eq!(general[1].0, "occupied", "{general:?}");
    assert_eq!(general.last().unwrap().0, "vacated", "{general:?}");
}

#[test]
fn hook_settings_are_checked_at_start_up() {
    for (flags, named) in [
        (&["--hook-publish", "ftp://backend/publish"][..], "--hook-publish"),
        (&["--hook-rpc", "backend/rpc"], "--hook-rpc"),
        (&["--hook-connect", "https://backend/connect"], "--hook-connect"),
        (&["--hook-join", "http:///join"], "--hook-join"),
        (&["--hook-header", "bad header"], "--hook-header"),
        (&["--hook-max-in-flight", "0"], "--hook-max-in-flight"),
        (&["--hook-timeout", "0"], "--hook-timeout"),
        (&["--hook-failure", "maybe"], "--hook-failure"),
        (&["--hook-events-max-waiting", "0"], "--hook-events-max-waiting"),
    ] {
        let error = ServerConfig::load(["ws-server"].iter().chain(flags)).unwrap_err().to_string();
        assert!(error.contains(named), "{error}");
    }
}
