//! Namespaces over real loopback TCP: the options of `[namespace.NAME]`
//! tables rule the rooms named `NAME:...` (who may publish, history,
//! recovery, presence, join and leave events, limits), unlisted
//! namespaces take the default's options or are refused, and
//! `--check-config` tells what a file sets.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use common::{Client, api_publish, config_file, server};
use serde_json::{Value, json};

/// A client, out of the default room, in `rooms`.
async fn member_of(addr: std::net::SocketAddr, rooms: &[&str]) -> Client {
    let mut client = Client::connect_elsewhere(addr).await;
    for room in rooms {
        client.join(room, 0).await;
    }
    client
}

#[tokio::test]
async fn a_feed_namespace_is_read_only_for_clients_and_the_api_reaches_every_member() {
    let file = config_file("feed", "[namespace.feed]\npublish = \"server\"\n");
    let addr = server(&["--config", &file, "--api-key", "k"]).await;
    let mut alice = member_of(addr, &["feed:btc", "chat:x"]).await;
    let mut bob = member_of(addr, &["feed:btc"]).await;
    alice.send(json!({"type": "message", "room": "feed:btc", "data": {"price": 1}, "id": "fake"})).await;
    alice.expect(json!({"type": "error", "code": "forbidden", "id": "fake"})).await;
    let (status, ack) = api_publish(addr, "k", r#"{"type":"message","room":"feed:btc","data":{"price":2}}"#).await;
    assert_eq!((status, ack), (200, json!({"type": "ack", "seq": 1})));
    for member in [&mut alice, &mut bob] {
        member
            .expect(json!({"type": "message", "room": "feed:btc", "seq": 1, "sender": "api", "data": {"price": 2}}))
            .await;
    }
    // A room of a namespace the file does not list has the default's options: members publish.
    alice.send(json!({"type": "message", "room": "chat:x", "content": "hi", "id": "c"})).await;
    alice.expect(json!({"type": "ack", "id": "c", "seq": 1})).await;
    alice.expect(json!({"type": "message", "room": "chat:x", "seq": 1, "content": "hi"})).await;
}

#[tokio::test]
async fn each_namespace_has_its_history_recovery_presence_and_limits() {
    let toml = r#"
        history = 5
        rate-limit = 0

        [namespace.short]
        history = 2
        max-content-chars = 5
        max-data-bytes = 10

        [namespace.quiet]
        recovery = false
        presence = false
    "#;
    let addr = server(&["--config", &config_file("rules", toml)]).await;
    let mut alice = member_of(addr, &["short:a", "quiet:a", "other:a"]).await;
    for (room, count) in [("short:a", 4), ("other:a", 6)] {
        for i in 1..=count {
            alice.send(json!({"type": "message", "room": room, "content": format!("m{i}")})).await;
            alice.expect(json!({"type": "message", "room": room, "seq": i})).await;
        }
    }
    // short keeps 2 messages; other, unlisted, the default's 5.
    let mut bob = Client::connect_elsewhere(addr).await;
    for (room, first, last) in [("short:a", 3, 4), ("other:a", 2, 6)] {
        bob.send(json!({"type": "join", "room": room, "since": 0})).await;
        bob.expect(json!({"type": "joined", "room": room, "seq": last})).await;
        for seq in first..=last {
            bob.expect(json!({"type": "message", "room": room, "seq": seq, "content": format!("m{seq}")})).await;
        }
        bob.expect(json!({"type": "recovered", "room": room, "complete": false})).await;
    }
    let refused = [
        (json!({"type": "message", "room": "short:a", "content": "sixsix", "id": "1"}), "too_long"),
        (json!({"type": "message", "room": "short:a", "data": [1, 2, 3, 4, 5], "id": "2"}), "too_long"),
        (json!({"type": "join", "room": "quiet:a", "since": 0, "id": "3"}), "not_offered"),
        (json!({"type": "presence", "room": "quiet:a", "id": "4"}), "not_offered"),
    ];
    for (envelope, code) in refused {
        let id = envelope["id"].clone();
        alice.send(envelope).await;
        alice.expect(json!({"type": "error", "code": code, "id": id})).await;
    }
    // What the namespaces allow still works, on the same connection.
    alice.send(json!({"type": "message", "room": "short:a", "content": "five!", "data": [1, 2, 3]})).await;
    alice.expect(json!({"type": "message", "room": "short:a", "seq": 5, "content": "five!"})).await;
    alice.send(json!({"type": "presence", "room": "other:a"})).await;
    alice.expect(json!({"type": "presence", "room": "other:a", "count": 2})).await;
    alice.send(json!({"type": "join", "room": "quiet:a"})).await;
    alice.expect(json!({"type": "joined", "room": "quiet:a", "seq": 0})).await;
}

#[tokio::test]
async fn rooms_of_unlisted_namespaces_are_refused_when_the_file_says_so() {
    let file = config_file("refuse", "unknown-namespaces = \"refuse\"\n[namespace.chat]\n");
    let addr = server(&["--config", &file, "--api-key", "k"]).await;
    let mut alice = Client::connect_elsewhere(addr).await;
    alice.send(json!({"type": "join", "room": "other:x", "id": "j"})).await;
    alice.expect(json!({"type": "error", "code": "unknown_namespace", "id": "j"})).await;
    alice.join("chat:x", 0).await;
    alice.join("plain", 0).await;
    let (status, error) = api_publish(addr, "k", r#"{"type":"message","room":"other:x","content":"no"}"#).await;
    assert_eq!((status, &error["code"]), (404, &json!("unknown_namespace")), "{error}");
    let (status, _) = api_publish(addr, "k", r#"{"type":"message","room":"chat:x","content":"yes"}"#).await;
    assert_eq!(status, 200);
    alice.expect(json!({"type": "message", "room": "chat:x", "seq": 1, "content": "yes"})).await;
}

/// A client of `user` (its token signed with `secret`), out of the default room.
async fn connect_as(addr: std::net::SocketAddr, user: &str) -> Client {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let key = jsonwebtoken::EncodingKey::from_secret(b"s3cret");
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!({"sub": user, "exp": exp}), &key);
    let bearer = vec![("Authorization".to_owned(), format!("Bearer {}", token.unwrap()))];
    let mut client = Client::connect_with_headers(addr, bearer).await;
    client.expect(json!({"type": "joined", "room": "general"})).await;
    client.send(json!({"type": "leave", "room": "general"})).await;
    client.expect(json!({"type": "left", "room": "general"})).await;
    client
}

/// Publishes to `room` from `client` and takes what comes before its own
/// copy: the notices, if any, that were sent to it first.
async fn notices_before_a_message(client: &mut Client, room: &str, mark: &str) -> Vec<Value> {
    client.send(json!({"type": "message", "room": room, "content": mark})).await;
    let mut before = Vec::new();
    loop {
        let envelope = client.next().await;
        if envelope["type"] == "message" && envelope["content"] == mark {
            return before;
        }
        before.push(envelope);
    }
}

#[tokio::test]
async fn members_are_told_of_each_users_first_join_and_last_leave_where_the_namespace_asks() {
    let file = config_file("events", "rate-limit = 0\n[namespace.chat]\njoin-leave-events = true\n");
    let addr = server(&["--config", &file, "--jwt-secret", "s3cret"]).await;
    let mut ann = connect_as(addr, "ann").await;
    ann.join("chat:x", 0).await;
    ann.join("plain", 0).await;
    let mut bob = connect_as(addr, "bob").await;
    bob.join("chat:x", 0).await;
    bob.join("plain", 0).await;
    assert_eq!(ann.next().await, json!({"type": "member_joined", "room": "chat:x", "member": "bob"}));
    assert_eq!(notices_before_a_message(&mut bob, "chat:x", "b1").await, [] as [Value; 0], "not of itself");
    // Bob's second connection: he was in the room already, nobody is told.
    let mut bob_again = connect_as(addr, "bob").await;
    bob_again.join("chat:x", 1).await;
    assert_eq!(notices_before_a_message(&mut ann, "chat:x", "a1").await.last().unwrap()["content"], "b1");
    bob.send(json!({"type": "leave", "room": "chat:x"})).await;
    bob.until(json!({"type": "left", "room": "chat:x"})).await;
    assert_eq!(notices_before_a_message(&mut ann, "chat:x", "a2").await, [] as [Value; 0], "bob is still there");
    drop(bob_again);
    assert_eq!(ann.next().await, json!({"type": "member_left", "room": "chat:x", "member": "bob"}));
    // A namespace that does not ask tells nothing.
    bob.send(json!({"type": "leave", "room": "plain"})).await;
    bob.until(json!({"type": "left", "room": "plain"})).await;
    assert_eq!(notices_before_a_message(&mut ann, "plain", "p").await, [] as [Value; 0]);
}

/// The production TOML of docs/operations.md, as the page shows it.
fn production_toml() -> String {
    let page = include_str!("../../../docs/operations.md");
    let start = page.find("```toml\n").expect("a TOML block in docs/operations.md") + "```toml\n".len();
    page[start..][..page[start..].find("```").unwrap()].to_owned()
}

/// Runs the server binary with `args`: its exit status, standard output and standard error.
fn ws_server(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_ws-server")).args(args).output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (output.status, text(output.stdout), text(output.stderr))
}

#[test]
fn check_config_prints_every_namespace_of_the_production_file_and_names_a_bad_line() {
    let file = config_file("production", &production_toml());
    let (status, out, err) = ws_server(&["--check-config", &file]);
    assert!(status.success(), "{status}: {err}");
    for line in ["[namespace.feed]", "[namespace.chat]", "publish = \"server\"", "presence = true"] {
        assert!(out.contains(line), "{line} in {out}");
    }
    let cases = [
        ("unknown", "history = 10\n\n[namespace.feed]\npublish = \"server\"\npresense = false\n", "line 5"),
        ("value", "history = 10\nmax-connections = \"many\"\n", "line 2"),
        ("top", "history = 10\n\nmax-conections = 5\n", "line 3"),
        ("name", "[namespace.ok]\n[namespace.\"a b\"]\n", "line 2"),
    ];
    for (name, toml, line) in cases {
        let (status, out, err) = ws_server(&["--check-config", &config_file(name, toml)]);
        assert_eq!(status.code(), Some(2), "{name}: {out}{err}");
        assert!(err.contains(line), "{name}: {line} in {err}");
    }
}
