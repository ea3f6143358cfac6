//! The hub over real loopback TCP: each test starts a server on a free port
//! with the flags it needs, connects ws-tokio clients to `/ws`, and asserts
//! on the envelopes they receive. Every wait is for an event, within a
//! generous limit; nothing sleeps to synchronize.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use common::{Blackhole, Client, PATIENCE, api_publish, http_get, server, server_process};
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use ws_proto::{CloseCode, Event, Message};
use ws_tokio::client::{ClientOptions, connect_with};

#[tokio::test]
async fn welcome_then_the_default_room() {
    let addr = server(&[]).await;
    let mut client = Client::connect(addr).await;
    client.expect(json!({"type": "joined", "room": "general", "seq": 0})).await;

    let addr = server(&["--default-room", "lobby"]).await;
    let mut client = Client::connect(addr).await;
    client.expect(json!({"type": "joined", "room": "lobby", "seq": 0})).await;
}

#[tokio::test]
async fn a_message_reaches_every_member_and_no_one_else() {
    let addr = server(&[]).await;
    let mut alice = Client::connect_elsewhere(addr).await;
    let mut bob = Client::connect_elsewhere(addr).await;
    let mut carol = Client::connect_elsewhere(addr).await;
    alice.join("news", 0).await;
    bob.join("news", 0).await;
    carol.join("sports", 0).await;

    alice.send(json!({"type": "message", "room": "news", "content": "Hello", "id": "a1"})).await;
    alice.expect(json!({"type": "ack", "id": "a1", "seq": 1})).await;
    let own = alice.expect(json!({"type": "message", "room": "news", "seq": 1, "content": "Hello"})).await;
    let seen = bob.expect(json!({"type": "message", "room": "news", "seq": 1, "content": "Hello"})).await;
    assert_eq!(own, seen, "one envelope for every member");
    assert!(own["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(own["sender"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(own["time"].as_u64().unwrap() > 0);

    // Carol is not in news: the next thing she receives is her own room's message.
    carol.send(json!({"type": "message", "room": "sports", "content": "Goal"})).await;
    carol.expect(json!({"type": "message", "room": "sports", "seq": 1, "content": "Goal"})).await;
}

/// A message sent again with the same id from a new connection, as a
/// client retries after a reconnect, gets the first ack again and reaches
/// the members once.
#[tokio::test]
async fn a_retried_message_id_is_acked_with_its_first_seq_and_delivered_once() {
    let addr = server(&[]).await;
    let mut member = Client::connect(addr).await;
    member.expect(json!({"type": "joined", "seq": 0})).await;
    for _attempt in 0..2 {
        let mut sender = Client::connect(addr).await;
        sender.expect(json!({"type": "joined"})).await;
        sender.send(json!({"type": "message", "room": "general", "content": "once", "id": "m-1"})).await;
        sender.expect(json!({"type": "ack", "id": "m-1", "seq": 1})).await;
    }
    member.expect(json!({"type": "message", "seq": 1, "content": "once"})).await;
    member.send(json!({"type": "message", "room": "general", "content": "next"})).await;
    member.expect(json!({"type": "message", "seq": 2, "content": "next"})).await;
}

/// `presence` names the members of a room the client is in, each once,
/// and forgets a member once its connection has gone.
#[tokio::test]
async fn presence_names_who_is_in_the_room() {
    let addr = server(&[]).await;
    let mut alice = Client::connect(addr).await;
    alice.expect(json!({"type": "joined", "room": "general"})).await;
    let mut bob = Client::connect(addr).await;
    bob.expect(json!({"type": "joined"})).await;
    alice.send(json!({"type": "presence", "room": "general"})).await;
    let presence = alice.expect(json!({"type": "presence", "room": "general", "count": 2})).await;
    assert_eq!(presence["members"].as_array().unwrap().len(), 2, "{presence}");
    drop(bob);
    // Bob's session ends when the server sees his socket close: ask until it has.
    let bob_gone = async {
        loop {
            alice.send(json!({"type": "presence", "room": "general"})).await;
            let presence = alice.expect(json!({"type": "presence"})).await;
            if presence["count"] == 1 {
                assert_eq!(presence["members"].as_array().unwrap().len(), 1);
                break;
            }
        }
    };
    timeout(PATIENCE, bob_gone).await.expect("bob's presence ends with his connection");
    alice.send(json!({"type": "presence", "room": "elsewhere", "id": "p"})).await;
    alice.expect(json!({"type": "error", "code": "not_joined", "id": "p"})).await;
}

/// A client whose host vanished (no FIN, no RST: its bytes stop, through a
/// proxy that blackholes the link) is closed by the heartbeat, and leaves its
/// rooms and presence. Without the heartbeat's timeout, Bob would stay in
/// the room for good.
#[tokio::test]
async fn a_half_open_client_is_closed_by_the_heartbeat_and_leaves_its_rooms() {
    let addr = server(&["--heartbeat-interval", "0.5", "--heartbeat-timeout", "2"]).await;
    let mut alice = Client::connect(addr).await;
    alice.expect(json!({"type": "joined", "room": "general"})).await;
    let proxy = Blackhole::start(addr).await;
    let mut bob = Client::connect(proxy.addr).await;
    bob.expect(json!({"type": "joined", "room": "general"})).await;
    proxy.cut();
    // Alice asks, and so answers the server's pings, until Bob is gone.
    let bob_gone = async {
        loop {
            alice.send(json!({"type": "presence", "room": "general"})).await;
            let presence = alice.expect(json!({"type": "presence"})).await;
            if presence["count"] == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    };
    timeout(PATIENCE, bob_gone).await.expect("bob's presence ends with the heartbeat");
    proxy.server_closed().await;
    drop(bob);
}

#[tokio::test]
async fn seq_grows_by_one_per_room_in_order() {
    let addr = server(&["--rate-limit", "0"]).await;
    let mut alice = Client::connect(addr).await;
    let mut bob = Client::connect(addr).await;
    alice.expect(json!({"type": "joined"})).await;
    bob.expect(json!({"type": "joined"})).await;
    alice.join("other", 0).await;
    for i in 1..=50 {
        let room = if i % 5 == 0 { "other" } else { "general" };
        alice.send(json!({"type": "message", "room": room, "content": format!("m{i}")})).await;
    }
    for seq in 1..=40 {
        bob.expect(json!({"type": "message", "room": "general", "seq": seq})).await;
    }
    let mut other = 0;
    for _ in 0..50 {
        let m = alice.next().await;
        if m["room"] == "other" {
            other += 1;
            assert_eq!(m["seq"], other);
        }
    }
    assert_eq!(other, 10);
}

#[tokio::test]
async fn join_and_leave_at_any_time_in_many_rooms() {
    let addr = server(&[]).await;
    let mut alice = Client::connect(addr).await;
    alice.expect(json!({"type": "joined", "room": "general"})).await;
    alice.join("a", 0).await;
    alice.join("b", 0).await;
    alice.join("a", 0).await; // again: still a member, told so
    alice.send(json!({"type": "message", "room": "b", "content": "x"})).await;
    alice.expect(json!({"type": "message", "room": "b", "seq": 1})).await;
    alice.send(json!({"type": "leave", "room": "b"})).await;
    alice.expect(json!({"type": "left", "room": "b"})).await;
    alice.send(json!({"type": "message", "room": "b", "content": "y", "id": "late"})).await;
    alice.expect(json!({"type": "error", "code": "not_joined", "id": "late"})).await;
    alice.send(json!({"type": "leave", "room": "b"})).await;
    alice.expect(json!({"type": "error", "code": "not_joined"})).await;
    alice.join("b", 1).await;
    alice.send(json!({"type": "message", "room": "a", "content": "in a"})).await;
    alice.expect(json!({"type": "message", "room": "a", "seq": 1, "content": "in a"})).await;
}

#[tokio::test]
async fn join_with_since_replays_what_was_missed() {
    let addr = server(&["--history", "4", "--rate-limit", "0"]).await;
    let mut alice = Client::connect_elsewhere(addr).await;
    alice.join("r", 0).await;
    for i in 1..=3 {
        alice.send(json!({"type": "message", "room": "r", "content": format!("m{i}")})).await;
        alice.expect(json!({"type": "message", "seq": i})).await;
    }
    // Held: 1 to 3. Since 1: 2 and 3, complete.
    let mut bob = Client::connect_elsewhere(addr).await;
    bob.send(json!({"type": "join", "room": "r", "since": 1})).await;
    bob.expect(json!({"type": "joined", "room": "r", "seq": 3})).await;
    bob.expect(json!({"type": "message", "room": "r", "seq": 2, "content": "m2"})).await;
    bob.expect(json!({"type": "message", "room": "r", "seq": 3, "content": "m3"})).await;
    bob.expect(json!({"type": "recovered", "room": "r", "complete": true})).await;

    // Live messages follow the replay, once each.
    alice.send(json!({"type": "message", "room": "r", "content": "m4"})).await;
    bob.expect(json!({"type": "message", "seq": 4})).await;
    for i in 5..=9 {
        alice.send(json!({"type": "message", "room": "r", "content": format!("m{i}")})).await;
    }
    for seq in 5..=9 {
        bob.expect(json!({"type": "message", "seq": seq})).await;
    }
    // Held: 6 to 9. Since 2 misses 3 to 5: incomplete, and 6 to 9 come back.
    let mut carol = Client::connect_elsewhere(addr).await;
    carol.send(json!({"type": "join", "room": "r", "since": 2})).await;
    carol.expect(json!({"type": "joined", "room": "r", "seq": 9})).await;
    for seq in 6..=9 {
        carol.expect(json!({"type": "message", "seq": seq})).await;
    }
    carol.expect(json!({"type": "recovered", "room": "r", "complete": false})).await;
    // Up to date: nothing to replay, complete.
    carol.send(json!({"type": "join", "room": "r", "since": 9})).await;
    carol.expect(json!({"type": "joined", "room": "r", "seq": 9})).await;
    carol.expect(json!({"type": "recovered", "room": "r", "complete": true})).await;
}

#[tokio::test]
async fn invalid_envelopes_get_an_error_and_the_connection_stays_open() {
    let addr = server(&["--max-content-chars", "10"]).await;
    let mut client = Client::connect(addr).await;
    client.expect(json!({"type": "joined"})).await;
    let cases: [(&str, &str); 7] = [
        ("{not json", "invalid_json"),
        (r#"["an", "array"]"#, "invalid_json"),
        (r#"{"room":"general","content":"no type"}"#, "missing_field"),
        (r#"{"type":"message","content":"no room"}"#, "missing_field"),
        (r#"{"type":"teleport","room":"general"}"#, "unknown_type"),
        (r#"{"type":"message","room":"general","content":"eleven chars"}"#, "too_long"),
        (r#"{"type":"join","room":"no spaces please"}"#, "invalid_field"),
    ];
    for (text, code) in cases {
        client.ws.send(&Message::from(text)).await.unwrap();
        let error = client.expect(json!({"type": "error", "code": code})).await;
        assert!(!error["message"].as_str().unwrap().is_empty(), "{error}");
    }
    client.ws.send(&Message::Binary(vec![1, 2, 3].into())).await.unwrap();
    client.expect(json!({"type": "error", "code": "invalid_json"})).await;
    // Ten characters, some of them two bytes each: not too long.
    client.send(json!({"type": "message", "room": "general", "content": "ééééé12345", "id": "ok"})).await;
    client.expect(json!({"type": "ack", "id": "ok", "seq": 1})).await;
}

#[tokio::test]
async fn a_message_over_the_protocol_limit_is_closed_with_1009() {
    let addr = server(&["--max-message-size", "1024"]).await;
    let mut client = Client::connect(addr).await;
    client.expect(json!({"type": "joined"})).await;
    let noise: String = (0..2000).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
    client.send(json!({"type": "message", "room": "general", "content": noise})).await;
    assert_eq!(client.closed_with().await, Some(CloseCode::MESSAGE_TOO_BIG));
}

/// Publishes `count` messages of `content` to `general` from a new member
/// that waits for each one's ack (and takes its own copy), so that it never
/// falls behind itself; about 22 MB for 20,000 messages of 1,000 characters,
/// more than any socket buffers of a client that never reads hold.
async fn publish_in_step(addr: SocketAddr, count: u64, content: &str) {
    let mut publisher = Client::connect(addr).await;
    publisher.expect(json!({"type": "joined"})).await;
    for i in 1..=count {
        publisher.send(json!({"type": "message", "room": "general", "content": content, "id": i.to_string()})).await;
        loop {
            let m = publisher.next().await;
            if m["type"] == "ack" {
                assert_eq!(m["id"], i.to_string());
                break;
            }
        }
    }
}

/// A client that never reads is a slow consumer: disconnected by default,
/// while the members that read receive every message.
#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_and_the_others_get_everything() {
    let addr = server(&["--rate-limit", "0", "--max-queue-bytes", "65536", "--no-deflate"]).await;
    let mut slow = Client::connect_quietly(addr).await;
    let mut reader = Client::connect(addr).await;
    reader.expect(json!({"type": "joined"})).await;
    let count = 20_000;
    let reading = tokio::spawn(async move {
        for seq in 1..=count {
            reader.expect(json!({"type": "message", "seq": seq})).await;
        }
    });
    publish_in_step(addr, count, &"x".repeat(1000)).await;
    timeout(PATIENCE, reading).await.unwrap().unwrap();
    let (received, end) = slow.messages_until_closed().await;
    assert!(received < count as usize, "the slow client was cut off, not buffered for: {received} of {count}");
    assert!(
        matches!(end, Some(CloseCode::POLICY_VIOLATION) | Some(CloseCode::ABNORMAL)),
        "closed as a slow consumer: {end:?}"
    );
}

/// With `--slow-consumer skip`, what does not fit is dropped and reported
/// as a gap; every seq is either delivered or inside a gap, once. No
/// heartbeat comes within the test: the last gap notice must go out on
/// its own once the queue has room.
#[tokio::test]
async fn a_slow_client_is_told_of_the_gap_under_skip() {
    let flags = ["--rate-limit", "0", "--max-queue-bytes", "65536", "--slow-consumer", "skip", "--no-deflate"];
    let addr = server(&[&flags[..], &["--heartbeat-interval", "3600", "--heartbeat-timeout", "7200"]].concat()).await;
    let mut slow = Client::connect_quietly(addr).await;
    let count = 20_000;
    publish_in_step(addr, count, &"y".repeat(1000)).await;
    let mut covered = vec![0u8; count as usize + 1];
    let mut gaps = 0;
    slow.expect(json!({"type": "system"})).await;
    slow.expect(json!({"type": "joined", "seq": 0})).await;
    while covered[count as usize] == 0 {
        let m = slow.next().await;
        match m["type"].as_str().unwrap() {
            "message" => covered[m["seq"].as_u64().unwrap() as usize] += 1,
            "gap" => {
                gaps += 1;
                for seq in m["from"].as_u64().unwrap()..=m["to"].as_u64().unwrap() {
                    covered[seq as usize] += 1;
                }
            }
            other => panic!("unexpected {other}: {m}"),
        }
    }
    assert!(gaps > 0, "the slow client was skipped");
    assert!(covered[1..].iter().all(|&c| c == 1), "each seq delivered or reported once");
}

#[tokio::test]
async fn over_the_rate_limit_is_an_error_then_the_end() {
    // One envelope, then a token every 100 s: the rest of the test is over the limit.
    let addr = server(&["--rate-limit", "0.01"]).await;
    let mut client = Client::connect(addr).await;
    client.expect(json!({"type": "joined"})).await;
    client.send(json!({"type": "message", "room": "general", "content": "first", "id": "1"})).await;
    client.expect(json!({"type": "ack", "id": "1"})).await;
    client.expect(json!({"type": "message", "seq": 1})).await;
    client.send(json!({"type": "message", "room": "general", "content": "second", "id": "2"})).await;
    client.expect(json!({"type": "error", "code": "rate_limited"})).await;
    for _ in 0..30 {
        // Sends fail once the server has closed; the close is what this waits for.
        let _ = client.ws.send(&Message::from(r#"{"type":"leave","room":"general"}"#)).await;
    }
    let (more_errors, end) = client.messages_until_closed().await;
    assert_eq!(end, Some(CloseCode::POLICY_VIOLATION));
    assert_eq!(1 + more_errors, 20, "20 refusals in a row, then the close");
}

#[tokio::test]
async fn a_silent_client_is_closed_at_the_heartbeat_timeout() {
    let addr = server(&["--heartbeat-interval", "0.1", "--heartbeat-timeout", "0.3"]).await;
    // A raw client that completes the handshake, then only reads.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut pings = 0;
    let close = loop {
        let mut buf = [0; 4096];
        let n = timeout(PATIENCE, tcp.read(&mut buf)).await.expect("bytes in time").unwrap();
        assert!(n > 0, "the server closed TCP before its close frame");
        received.extend_from_slice(&buf[..n]);
        let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
        let Some(mut at) = head_end else { continue };
        let mut close = None;
        while let Some((header, len)) = ws_proto::FrameHeader::decode(&received[at..]).unwrap() {
            let end = at + len + header.payload_len as usize;
            if end > received.len() {
                break;
            }
            match header.opcode {
                ws_proto::OpCode::Ping => pings += 1,
                ws_proto::OpCode::Close => {
                    close = Some(u16::from_be_bytes([received[at + len], received[at + len + 1]]))
                }
                _ => {}
            }
            at = end;
        }
        if let Some(code) = close {
            break code;
        }
    };
    assert!(pings >= 1, "pinged before being closed");
    assert_eq!(close, 1001);
}

/// Other services publish over HTTP with the API key: the message takes the
/// hub's path (seq, members, retries), and every wrong request its status.
#[tokio::test]
async fn the_publish_api_delivers_through_the_hub() {
    let addr = server(&["--api-key", "service-key"]).await;
    let mut member = Client::connect_elsewhere(addr).await;
    member.join("alerts", 0).await;
    let message = r#"{"type":"message","room":"alerts","content":"disk full","id":"a-1"}"#;
    for _ in 0..2 {
        let (status, ack) = api_publish(addr, "service-key", message).await;
        assert_eq!((status, ack), (200, json!({"type": "ack", "id": "a-1", "seq": 1})), "once, then a retry");
    }
    member
        .expect(json!({"type": "message", "room": "alerts", "seq": 1, "sender": "api", "content": "disk full"}))
        .await;
    let refusals = [
        ("wrong-key", message.to_owned(), 401, "unauthorized"),
        ("service-key", "{not json".to_owned(), 400, "invalid_json"),
        ("service-key", r#"{"type":"join","room":"alerts"}"#.to_owned(), 400, "unknown_type"),
        (
            "service-key",
            format!(r#"{{"type":"message","room":"alerts","content":"{}"}}"#, "x".repeat(70_000)),
            413,
            "too_long",
        ),
    ];
    for (key, body, status, code) in refusals {
        let (got, error) = api_publish(addr, key, &body).await;
        assert_eq!((got, error["code"].as_str()), (status, Some(code)), "{error}");
    }
    assert!(http_get(addr, "/api/publish").await.starts_with("HTTP/1.1 405"));
    member.send(json!({"type": "message", "room": "alerts", "content": "next"})).await;
    member.expect(json!({"type": "message", "seq": 2, "content": "next"})).await;
    let closed = server(&[]).await;
    assert_eq!(api_publish(closed, "any", message).await.0, 403, "off without --api-key");
}

/// JSON values of every kind, written with the spaces, escapes and number
/// forms a publisher may choose.
const DATA: [&str; 4] = [r#"{ "price" : 1.50, "tags":["a",null,true] }"#, r#"[1,  2.0 ,"\u00e9"]"#, "-0.0e+5", "17"];

/// The message envelope of `data` in `room`, as a client writes it.
fn data_envelope(room: &str, data: &str) -> String {
    format!(r#"{{"type":"message","room":"{room}","data":{data}}}"#)
}

/// Takes the next envelope, a message whose data must be `data` byte for
/// byte, in the place the protocol gives it: after the sender, before the room.
async fn expect_data(client: &mut Client, room: &str, seq: u64, data: &str) {
    let text = client.next_text().await;
    let envelope: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((&envelope["type"], &envelope["seq"]), (&json!("message"), &json!(seq)), "{text}");
    assert!(text.contains(&format!(r#","data":{data},"room":"{room}"}}"#)), "{data} as written, in {text}");
    assert!(envelope.get("content").is_none(), "no content was given: {text}");
}

/// A message's `data` reaches the members, the history and the replay of a
/// `since`, and the API's members, as the publisher wrote it; beyond
/// --max-data-bytes it is `too_long`, and the connection stays open.
#[tokio::test]
async fn data_of_every_kind_arrives_byte_for_byte_live_from_history_and_through_the_api() {
    let addr = server(&["--api-key", "k", "--max-data-bytes", "48", "--rate-limit", "0"]).await;
    let mut alice = Client::connect_elsewhere(addr).await;
    alice.join("feed", 0).await;
    for (seq, data) in (1..).zip(DATA) {
        alice.send_text(&data_envelope("feed", data)).await;
        expect_data(&mut alice, "feed", seq, data).await;
    }
    let (status, ack) = api_publish(addr, "k", &data_envelope("feed", DATA[1])).await;
    assert_eq!((status, ack), (200, json!({"type": "ack", "seq": 5})));
    expect_data(&mut alice, "feed", 5, DATA[1]).await;

    let mut bob = Client::connect_elsewhere(addr).await;
    bob.send(json!({"type": "join", "room": "feed", "since": 0})).await;
    bob.expect(json!({"type": "joined", "room": "feed", "seq": 5})).await;
    for (seq, data) in (1..).zip(DATA.iter().chain([&DATA[1]])) {
        expect_data(&mut bob, "feed", seq, data).await;
    }
    bob.expect(json!({"type": "recovered", "room": "feed", "complete": true})).await;

    alice.send_text(r#"{"type":"message","room":"feed","content":"both","data":{"n":1},"id":"b"}"#).await;
    alice.expect(json!({"type": "ack", "id": "b", "seq": 6})).await;
    let both = alice.next_text().await;
    assert!(both.contains(r#""content":"both","data":{"n":1},"room":"feed"}"#), "{both}");
    bob.expect(json!({"type": "message", "seq": 6, "content": "both", "data": {"n": 1}})).await;

    let long = format!(r#"{{"type":"message","room":"feed","data":"{}","id":"l"}}"#, "x".repeat(47));
    alice.send_text(&long).await;
    alice.expect(json!({"type": "error", "code": "too_long", "id": "l"})).await;
    let (status, error) = api_publish(addr, "k", &long).await;
    assert_eq!((status, &error["code"]), (400, &json!("too_long")), "{error}");
    alice.send(json!({"type": "message", "room": "feed", "content": "still here"})).await;
    alice.expect(json!({"type": "message", "seq": 7, "content": "still here"})).await;
    bob.expect(json!({"type": "message", "seq": 7, "content": "still here"})).await;
}

#[tokio::test]
async fn the_demo_page_and_health_check_are_served() {
    let addr = server(&[]).await;
    for (path, status, needle) in [
        ("/", "200 OK", "<title>ws-server chat</title>"),
        ("/dashboard", "200 OK", "<title>ws-server live dashboard</title>"),
        ("/healthz", "200 OK", "ok"),
        ("/nope", "404", "not found"),
    ] {
        let response = http_get(addr, path).await;
        assert!(response.starts_with(&format!("HTTP/1.1 {status}")), "{path}: {response}");
        assert!(response.contains(needle), "{path}: {response}");
    }
}

#[tokio::test]
async fn metrics_count_what_happened() {
    let addr = server(&[]).await;
    let mut alice = Client::connect(addr).await;
    alice.expect(json!({"type": "joined"})).await;
    alice.send(json!({"type": "message", "room": "general", "content": "counted", "id": "m"})).await;
    alice.expect(json!({"type": "ack"})).await;
    alice.expect(json!({"type": "message"})).await;
    let origin = vec![("Origin".to_owned(), "https://elsewhere.example".to_owned())];
    assert_eq!(refused_status(addr, origin).await, Some(403));
    let metrics = http_get(addr, "/metrics").await;
    assert!(metrics.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{metrics}");
    for line in [
        "ws_connections 1",
        "ws_connections_accepted_total 1",
        "ws_connections_refused_total{reason=\"origin\"} 1",
        "ws_messages_received_total 1",
        // The welcome, joined, the ack and the room's message.
        "ws_messages_sent_total 4",
        "ws_rooms 1",
        "ws_fanout_latency_seconds_count 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
}

/// `name`'s value in the server's metrics.
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = http_get(addr, "/metrics").await;
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("{name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_tasks_metric_counts_a_task_per_connection_and_drops_it_when_it_closes() {
    let addr = server(&[]).await;
    let before = metric(addr, "ws_tasks").await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        let mut client = Client::connect(addr).await;
        client.expect(json!({"type": "joined"})).await;
        clients.push(client);
    }
    let open = metric(addr, "ws_tasks").await;
    assert!(open >= before + 5.0, "five connections, five tasks at least: {before} -> {open}");
    drop(clients);
    timeout(PATIENCE, async {
        while metric(addr, "ws_tasks").await > before || metric(addr, "ws_connections").await > 0.0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the connections' tasks end with them");
}

/// The error a handshake to `/ws` fails with: its HTTP status.
async fn refused_status(addr: SocketAddr, headers: Vec<(String, String)>) -> Option<u16> {
    let options = ClientOptions { headers, ..Default::default() };
    match connect_with(&format!("ws://{addr}/ws"), &options).await {
        Ok(_) => None,
        Err(ws_tokio::Error::Refused { status, .. }) => Some(status),
        Err(e) => panic!("not an HTTP refusal: {e}"),
    }
}

#[tokio::test]
async fn the_eleventh_connection_from_one_address_is_refused_with_429() {
    let addr = server(&[]).await;
    let mut open = Vec::new();
    for _ in 0..10 {
        open.push(Client::connect(addr).await);
    }
    assert_eq!(refused_status(addr, vec![]).await, Some(429));
    // One leaves: there is room for one more.
    let mut leaving = open.pop().unwrap();
    leaving.ws.close(CloseCode::NORMAL, "").await.unwrap();
    // The server counts the connection out when its task ends, just after the close.
    let admitted = async {
        loop {
            match connect_with(&format!("ws://{addr}/ws"), &ClientOptions::default()).await {
                Ok(admitted) => return admitted,
                Err(_) => tokio::task::yield_now().await,
            }
        }
    };
    timeout(PATIENCE, admitted).await.expect("admitted once another left");
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_counts() {
    let addr = server(&["--max-connections-per-ip", "1", "--trusted-proxy", "127.0.0.0/8"]).await;
    let from = |ip: &str| vec![("X-Forwarded-For".to_owned(), ip.to_owned())];
    let mut first = Client::connect_with_headers(addr, from("203.0.113.1")).await;
    let _second = Client::connect_with_headers(addr, from("203.0.113.2")).await;
    assert_eq!(refused_status(addr, from("203.0.113.1")).await, Some(429));
    first.expect(json!({"type": "joined"})).await;
    first.send(json!({"type": "message", "room": "general", "content": "hi"})).await;
    first.expect(json!({"type": "message", "sender": "203.0.113.1"})).await;

    // Without the proxy trusted, the header is the client's word and is ignored.
    let addr = server(&["--max-connections-per-ip", "1"]).await;
    let _one = Client::connect_with_headers(addr, from("203.0.113.1")).await;
    assert_eq!(refused_status(addr, from("203.0.113.2")).await, Some(429));
}

#[tokio::test]
async fn origins_other_than_our_own_and_the_listed_are_refused_with_403() {
    let addr = server(&["--allowed-origin", "https://app.example.com"]).await;
    let origin = |o: &str| vec![("Origin".to_owned(), o.to_owned())];
    assert_eq!(refused_status(addr, origin("https://evil.example")).await, Some(403));
    assert_eq!(refused_status(addr, origin("null")).await, Some(403));
    Client::connect_with_headers(addr, origin("https://app.example.com")).await;
    Client::connect_with_headers(addr, origin(&format!("http://{addr}"))).await;
    Client::connect_with_headers(addr, vec![]).await;

    let addr = server(&["--allowed-origin", "*"]).await;
    Client::connect_with_headers(addr, origin("https://evil.example")).await;
}

/// The binary itself: SIGTERM closes every connection, hub and echo, with 1001, then it exits 0.
#[tokio::test]
async fn sigterm_closes_everyone_with_1001_and_exits_0() {
    let (mut child, addr) = server_process(&["--echo"]).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(addr).await;
        client.expect(json!({"type": "joined"})).await;
        clients.push(client);
    }
    let (echo, _) = connect_with(&format!("ws://{addr}/echo"), &ClientOptions::default()).await.unwrap();
    clients.push(Client { ws: echo });
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    for client in &mut clients {
        assert_eq!(client.closed_with().await, Some(CloseCode::GOING_AWAY));
        while timeout(PATIENCE, client.ws.recv()).await.unwrap().is_some() {}
    }
    let status = timeout(PATIENCE, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

/// A token for `sub` with `rooms`, signed with `key` by `algorithm`, valid for an hour.
fn token(
    algorithm: jsonwebtoken::Algorithm,
    key: &jsonwebtoken::EncodingKey,
    sub: &str,
    rooms: Option<&[&str]>,
) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = match rooms {
        Some(rooms) => json!({"sub": sub, "exp": exp, "rooms": rooms}),
        None => json!({"sub": sub, "exp": exp}),
    };
    jsonwebtoken::encode(&jsonwebtoken::Header::new(algorithm), &claims, key).unwrap()
}

fn bearer(token: &str) -> Vec<(String, String)> {
    vec![("Authorization".to_owned(), format!("Bearer {token}"))]
}

#[tokio::test]
async fn with_a_jwt_secret_a_valid_token_is_the_sender_and_others_get_401() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let addr = server(&["--jwt-secret", "s3cret"]).await;
    let key = EncodingKey::from_secret(b"s3cret");
    let mut alice = Client::connect_with_headers(addr, bearer(&token(Algorithm::HS256, &key, "alice", None))).await;
    alice.expect(json!({"type": "joined", "room": "general"})).await;
    alice.send(json!({"type": "message", "room": "general", "content": "signed"})).await;
    alice.expect(json!({"type": "message", "sender": "alice", "content": "signed"})).await;

    // The token in the query or in a cookie serves as well.
    let bob_token = token(Algorithm::HS256, &key, "bob", None);
    let options = ClientOptions::default();
    let (mut ws, _) = connect_with(&format!("ws://{addr}/ws?token={bob_token}"), &options).await.unwrap();
    assert!(matches!(timeout(PATIENCE, ws.recv()).await.unwrap(), Some(Ok(Event::Message(_)))));
    Client::connect_with_headers(addr, vec![("Cookie".to_owned(), format!("lang=en; token={bob_token}"))]).await;

    let wrong_key = token(Algorithm::HS256, &EncodingKey::from_secret(b"guess"), "mallory", None);
    assert_eq!(refused_status(addr, bearer(&wrong_key)).await, Some(401));
    assert_eq!(refused_status(addr, vec![]).await, Some(401), "no token");
    assert_eq!(refused_status(addr, bearer("not.a.token")).await, Some(401));
    let expired = {
        let claims = json!({"sub": "old", "exp": 1_000_000_000});
        jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), &claims, &key).unwrap()
    };
    assert_eq!(refused_status(addr, bearer(&expired)).await, Some(401));
    let none_alg = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJldmUiLCJleHAiOjk5OTk5OTk5OTl9.";
    assert_eq!(refused_status(addr, bearer(none_alg)).await, Some(401), "alg none");
}

#[tokio::test]
async fn the_rooms_claim_limits_what_a_user_may_join() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let addr = server(&["--jwt-secret", "s3cret"]).await;
    let key = EncodingKey::from_secret(b"s3cret");
    let token = token(Algorithm::HS256, &key, "carol", Some(&["team-7:*", "lobby"]));
    let mut carol = Client::connect_with_headers(addr, bearer(&token)).await;
    // general is not hers: no default room; her rooms are.
    carol.send(json!({"type": "join", "room": "general", "id": "g"})).await;
    carol.expect(json!({"type": "error", "code": "forbidden", "id": "g"})).await;
    carol.join("lobby", 0).await;
    carol.join("team-7:design", 0).await;
    carol.send(json!({"type": "join", "room": "team-8:design"})).await;
    carol.expect(json!({"type": "error", "code": "forbidden"})).await;
}

/// RS256 and ES256 tokens, checked with the PEM public keys of tests/keys/.
#[tokio::test]
async fn public_keys_check_rs256_and_es256_tokens() {
    use jsonwebtoken::{Algorithm, EncodingKey};
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    for (algorithm, name) in [(Algorithm::RS256, "rs256"), (Algorithm::ES256, "es256")] {
        let public = format!("{keys}/{name}-public.pem");
        let addr = server(&["--jwt-public-key", &public]).await;
        let private = std::fs::read(format!("{keys}/{name}-private.pem")).unwrap();
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&private).unwrap(),
            _ => EncodingKey::from_ec_pem(&private).unwrap(),
        };
        let mut dave = Client::connect_with_headers(addr, bearer(&token(algorithm, &key, "dave", None))).await;
        dave.expect(json!({"type": "joined"})).await;
        dave.send(json!({"type": "message", "room": "general", "content": name})).await;
        dave.expect(json!({"type": "message", "sender": "dave"})).await;
        let forged = token(Algorithm::HS256, &EncodingKey::from_secret(b"public key as secret"), "eve", None);
        assert_eq!(refused_status(addr, bearer(&forged)).await, Some(401), "{name}: an HS256 token is refused");
    }
}

#[tokio::test]
async fn rooms_per_connection_and_per_server_are_bounded() {
    let addr = server(&["--max-rooms-per-connection", "2", "--max-rooms", "3"]).await;
    let mut alice = Client::connect(addr).await;
    alice.expect(json!({"type": "joined", "room": "general"})).await;
    alice.join("two", 0).await;
    alice.send(json!({"type": "join", "room": "three", "id": "j3"})).await;
    alice.expect(json!({"type": "error", "code": "room_limit", "id": "j3"})).await;
    // The server holds general, two and three; a fourth is refused while all have members.
    let mut bob = Client::connect_elsewhere(addr).await;
    bob.join("three", 0).await;
    bob.send(json!({"type": "join", "room": "four"})).await;
    bob.expect(json!({"type": "error", "code": "room_limit"})).await;
    // A room without members is let go to make room.
    alice.send(json!({"type": "leave", "room": "two"})).await;
    alice.expect(json!({"type": "left", "room": "two"})).await;
    bob.join("four", 0).await;
}

#[tokio::test]
async fn a_ping_is_answered_at_once_with_a_pong_that_carries_its_id() {
    let addr = server(&[]).await;
    let mut client = Client::connect(addr).await;
    client.expect(json!({"type": "joined", "room": "general"})).await;
    client.send(json!({"type": "ping", "id": "p-1"})).await;
    assert_eq!(client.next().await, json!({"type": "pong", "id": "p-1"}));
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.next().await, json!({"type": "pong"}));
    client.send(json!({"type": "ping", "id": 7})).await;
    client.expect(json!({"type": "error", "code": "invalid_field"})).await;
    client.send(json!({"type": "message", "room": "general", "content": "still here", "id": "m"})).await;
    client.expect(json!({"type": "ack", "id": "m", "seq": 1})).await;
}
