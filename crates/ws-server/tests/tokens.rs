//! What tokens grant, over real loopback TCP: the `publish` claim, and
//! room tokens that let a user into one room beyond its connection's
//! token, each refused when it is expired, for another user or room, or
//! signed with another key; and how long: a connection's token refreshed
//! in time keeps it, one that expires closes it (4001), and a room token
//! that expires takes its member out of the room.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod common;

use common::{Client, server};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &[u8] = b"s3cret";

/// Seconds since the Unix epoch, `offset` from now.
fn at(offset: i64) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    i64::try_from(now).unwrap() + offset
}

/// `claims` signed with `secret`, HS256.
fn sign(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(&Header::default(), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// A client whose connection's token has `claims` (and an `exp` an hour
/// away, unless they have one), out of the default room.
async fn connect_as(addr: std::net::SocketAddr, mut claims: Value) -> Client {
    if claims.get("exp").is_none() {
        claims["exp"] = json!(at(3600));
    }
    let bearer = vec![("Authorization".to_owned(), format!("Bearer {}", sign(&claims, SECRET)))];
    let mut client = Client::connect_with_headers(addr, bearer).await;
    client.send(json!({"type": "leave", "room": "general"})).await;
    loop {
        let envelope = client.next().await;
        if envelope["type"] == "left" || envelope["code"] == "not_joined" {
            return client;
        }
    }
}

/// A server that checks tokens and beats every 0.1 s: it asks for a
/// refresh from `refresh_before` seconds ahead of a token's expiry.
async fn beating_server(refresh_before: &str) -> std::net::SocketAddr {
    let flags = ["--jwt-secret", "s3cret", "--rate-limit", "0", "--heartbeat-interval", "0.1"];
    server(&[&flags[..], &["--refresh-before", refresh_before]].concat()).await
}

#[tokio::test]
async fn a_token_refreshed_in_time_keeps_the_connection_and_its_rooms_and_one_that_expires_closes_it() {
    let addr = beating_server("3600").await;
    // Far enough ahead for the refresh to come first on a loaded machine.
    let expires = at(8);
    let mut ann = connect_as(addr, json!({"sub": "ann", "exp": expires})).await;
    let mut bob = connect_as(addr, json!({"sub": "bob", "exp": expires})).await;
    ann.join("chat:x", 0).await;
    ann.until(json!({"type": "refresh", "expires": expires})).await;
    let refused = [
        ("other user", sign(&json!({"sub": "eve", "exp": at(3600)}), SECRET)),
        ("other key", sign(&json!({"sub": "ann", "exp": at(3600)}), b"guess")),
        ("expired", sign(&json!({"sub": "ann", "exp": at(-10)}), SECRET)),
    ];
    for (why, token) in refused {
        ann.send(json!({"type": "refresh", "token": token, "id": why})).await;
        ann.until(json!({"type": "error", "code": "invalid_token", "id": why})).await;
    }
    let later = at(3600);
    ann.send(json!({"type": "refresh", "token": sign(&json!({"sub": "ann", "exp": later}), SECRET)})).await;
    ann.until(json!({"type": "refreshed", "expires": later})).await;
    // Bob did not refresh: closed once the token expired.
    assert_eq!(bob.closed_with().await, Some(ws_proto::CloseCode(4001)));
    // Past that expiry, Ann is still connected, and in her room.
    ann.send(json!({"type": "message", "room": "chat:x", "content": "still here", "id": "m"})).await;
    ann.until(json!({"type": "ack", "id": "m", "seq": 1})).await;
}

#[tokio::test]
async fn a_refreshed_token_s_claims_hold_the_rooms_it_no_longer_allows_are_left() {
    let addr = beating_server("0.1").await;
    let mut cid = connect_as(addr, json!({"sub": "cid", "rooms": ["a", "b"]})).await;
    cid.join("a", 0).await;
    cid.join("b", 0).await;
    let narrower = sign(&json!({"sub": "cid", "exp": at(3600), "rooms": ["a"]}), SECRET);
    cid.send(json!({"type": "refresh", "token": narrower})).await;
    cid.until(json!({"type": "refreshed"})).await;
    cid.expect(json!({"type": "left", "room": "b", "reason": "forbidden"})).await;
    cid.send(json!({"type": "join", "room": "b", "id": "again"})).await;
    cid.expect(json!({"type": "error", "code": "forbidden", "id": "again"})).await;
}

#[tokio::test]
async fn a_room_token_that_expires_takes_its_member_out_unless_renewed_with_a_join() {
    let addr = beating_server("3600").await;
    let mut ann = connect_as(addr, json!({"sub": "ann", "rooms": ["lobby"]})).await;
    let soon = at(8);
    for room in ["private:1", "private:2"] {
        let token = sign(&json!({"sub": "ann", "room": room, "exp": soon}), SECRET);
        ann.send(json!({"type": "join", "room": room, "token": token})).await;
        ann.until(json!({"type": "joined", "room": room})).await;
    }
    ann.until(json!({"type": "refresh", "room": "private:2", "expires": soon})).await;
    let renewed = sign(&json!({"sub": "ann", "room": "private:2", "exp": at(3600)}), SECRET);
    ann.send(json!({"type": "join", "room": "private:2", "token": renewed})).await;
    ann.until(json!({"type": "joined", "room": "private:2"})).await;
    ann.until(json!({"type": "left", "room": "private:1", "reason": "token_expired"})).await;
    ann.send(json!({"type": "message", "room": "private:1", "content": "gone", "id": "1"})).await;
    ann.until(json!({"type": "error", "code": "not_joined", "id": "1"})).await;
    ann.send(json!({"type": "message", "room": "private:2", "content": "kept", "id": "2"})).await;
    ann.until(json!({"type": "ack", "id": "2", "seq": 1})).await;
}

#[tokio::test]
async fn the_publish_claim_limits_where_a_user_publishes_and_without_it_where_it_may_join() {
    let addr = server(&["--jwt-secret", "s3cret", "--rate-limit", "0"]).await;
    let reader = json!({"sub": "rita", "rooms": ["feed:*", "chat:*"], "publish": ["chat:*"]});
    let mut rita = connect_as(addr, reader).await;
    rita.join("feed:btc", 0).await;
    rita.join("chat:x", 0).await;
    rita.send(json!({"type": "message", "room": "feed:btc", "content": "fake", "id": "f"})).await;
    rita.expect(json!({"type": "error", "code": "forbidden", "id": "f"})).await;
    rita.send(json!({"type": "message", "room": "chat:x", "content": "hi", "id": "c"})).await;
    rita.expect(json!({"type": "ack", "id": "c", "seq": 1})).await;
    rita.expect(json!({"type": "message", "room": "chat:x", "sender": "rita", "content": "hi"})).await;

    let mut walt = connect_as(addr, json!({"sub": "walt", "rooms": ["feed:*"]})).await;
    walt.join("feed:btc", 0).await;
    walt.send(json!({"type": "message", "room": "feed:btc", "content": "mine", "id": "w"})).await;
    walt.expect(json!({"type": "ack", "id": "w", "seq": 1})).await;
    rita.expect(json!({"type": "message", "room": "feed:btc", "sender": "walt", "content": "mine"})).await;
}

#[tokio::test]
async fn a_room_token_lets_its_user_into_its_room_and_no_other() {
    let addr = server(&["--jwt-secret", "s3cret", "--rate-limit", "0"]).await;
    let mut ann = connect_as(addr, json!({"sub": "ann", "rooms": ["lobby"]})).await;
    let room_token = |claims: Value| sign(&claims, SECRET);
    ann.send(json!({"type": "join", "room": "private:42", "id": "none"})).await;
    ann.expect(json!({"type": "error", "code": "forbidden", "id": "none"})).await;
    let refused = [
        ("expired", room_token(json!({"sub": "ann", "room": "private:42", "exp": at(-3600)}))),
        ("other user", room_token(json!({"sub": "bea", "room": "private:42", "exp": at(3600)}))),
        ("other room", room_token(json!({"sub": "ann", "room": "private:43", "exp": at(3600)}))),
        ("no exp", room_token(json!({"sub": "ann", "room": "private:42"}))),
        ("other key", sign(&json!({"sub": "ann", "room": "private:42", "exp": at(3600)}), b"guess")),
        ("not a token", "not.a.token".to_owned()),
    ];
    for (why, token) in refused {
        ann.send(json!({"type": "join", "room": "private:42", "token": token, "id": why})).await;
        ann.expect(json!({"type": "error", "code": "invalid_token", "id": why})).await;
    }
    let valid = room_token(json!({"sub": "ann", "room": "private:42", "exp": at(3600)}));
    ann.send(json!({"type": "join", "room": "private:42", "token": valid})).await;
    ann.expect(json!({"type": "joined", "room": "private:42", "seq": 0})).await;
    // In the room, it publishes as any member (its token has no publish claim).
    ann.send(json!({"type": "message", "room": "private:42", "content": "in", "id": "m"})).await;
    ann.expect(json!({"type": "ack", "id": "m", "seq": 1})).await;
    ann.expect(json!({"type": "message", "room": "private:42", "seq": 1, "sender": "ann"})).await;
    // The grant is for that room alone.
    ann.send(json!({"type": "join", "room": "private:43", "token": valid, "id": "other"})).await;
    ann.expect(json!({"type": "error", "code": "invalid_token", "id": "other"})).await;
}
