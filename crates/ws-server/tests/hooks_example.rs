//! The example backend of docs/hooks.md (examples/backend/server.mjs), run
//! with node on a free port, behind a server with every hook: a user signs
//! in for a cookie, connects with it and no JWT, is refused a message with
//! the banned word, has the others stored, reads them back with an rpc, and
//! the backend counts the events. Without `node` it says so in one line and
//! passes, unless `WS_REQUIRE_NODE=1` (as `.ci/run` sets) makes that a failure.

#![allow(clippy::unwrap_used)] // tests panic on failure by design

mod common;

use common::{Client, PATIENCE, http_get, server};
use serde_json::json;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;
use ws_tokio::client::{ClientOptions, connect_with};

/// The example backend, running; killed when dropped.
struct Example {
    _child: Child,
    url: String,
    store: std::path::PathBuf,
}

impl Example {
    /// Starts the example with `node`, or `None` without node (if allowed).
    async fn start() -> Option<Example> {
        if std::process::Command::new("node").arg("--version").output().is_err() {
            let why = "the example backend needs node (apt-get install nodejs)";
            assert!(std::env::var("WS_REQUIRE_NODE").as_deref() != Ok("1"), "WS_REQUIRE_NODE=1, but {why}");
            let skipped = format!("example backend test skipped: {why}; WS_REQUIRE_NODE=1 makes this a failure\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr(), skipped.as_bytes());
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/backend/server.mjs");
        let store = std::env::temp_dir().join(format!("ws-server-example-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&store);
        let mut child = Command::new("node")
            .arg(script)
            .env("PORT", "0")
            .env("STORE", &store)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = timeout(PATIENCE, lines.next_line()).await.unwrap().unwrap().unwrap();
        let url = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("{first}")).to_owned();
        // The rest of what it prints (an event a line) is read and dropped.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(Example { _child: child, url, store })
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.store);
    }
}

#[tokio::test]
async fn the_example_backend_admits_by_cookie_stores_messages_and_refuses_the_banned_word() {
    let Some(example) = Example::start().await else { return };
    let hooks = ["connect", "refresh", "join", "publish", "rpc", "events"];
    let flags: Vec<String> =
        hooks.iter().flat_map(|hook| [format!("--hook-{hook}"), format!("{}/{hook}", example.url)]).collect();
    let addr = server(&flags.iter().map(String::as_str).collect::<Vec<_>>()).await;

    let backend: std::net::SocketAddr = example.url.strip_prefix("http://").unwrap().parse().unwrap();
    let signed_in = http_get(backend, "/login?user=alice").await;
    let cookie = signed_in.lines().find_map(|line| line.strip_prefix("Set-Cookie: ")).unwrap();
    let session = cookie.split(';').next().unwrap().to_owned();
    let refused = connect_with(&format!("ws://{addr}/ws"), &ClientOptions::default()).await.map(|_| ()).unwrap_err();
    assert!(matches!(refused, ws_tokio::Error::Refused { status: 401, .. }), "{refused}");

    let headers = vec![("Cookie".to_owned(), session)];
    let mut alice = Client::connect_with_headers(addr, headers).await;
    alice.expect(json!({"type": "joined", "room": "general", "data": {"stored": 0}})).await;
    alice.send(json!({"type": "message", "room": "general", "content": "you insult", "id": "1"})).await;
    alice.expect(json!({"type": "error", "code": "refused", "id": "1"})).await;
    alice.send(json!({"type": "message", "room": "general", "content": "hello", "id": "2"})).await;
    alice.until(json!({"type": "ack", "id": "2", "seq": 1})).await;
    alice.send(json!({"type": "rpc", "method": "history", "data": {"room": "general"}, "id": "h"})).await;
    let history = alice.until(json!({"type": "rpc", "id": "h"})).await;
    let stored = history["result"].as_array().unwrap();
    assert_eq!((stored.len(), &stored[0]["user"], &stored[0]["content"]), (1, &json!("alice"), &json!("hello")));
    // The events come after the fact: asked until the backend has them.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        alice.send(json!({"type": "rpc", "method": "events", "id": "e"})).await;
        let events = alice.until(json!({"type": "rpc", "id": "e"})).await["result"].clone();
        if events == json!({"connect": 1, "join": 1, "occupied": 1}) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{events}");
    }
    let text = std::fs::read_to_string(&example.store).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
}
