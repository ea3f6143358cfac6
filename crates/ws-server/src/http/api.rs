//! The server API for the application's backend (docs/api.md): `POST
//! /api/CALL` with the key of `--api-key` as `Authorization: Bearer KEY`, a
//! JSON body, and a JSON answer: an envelope of the call's `type`, or an
//! error envelope with the HTTP status that fits.
//!
//! - `publish`: the envelope a client would send, or an array of them;
//!   each gets its `ack` or error, in order. A message takes the hub's own
//!   path: the next seq of its room, the history, every member; a repeated
//!   `id` is a retry (docs/protocol.md).
//! - `history`: a room's held messages since a seq, at most `limit`,
//!   oldest or newest first.
//! - `presence`: who is in a room.
//! - `disconnect`, `unsubscribe`: every connection of a user, on every
//!   server, closed, or taken out of a room.
//! - `rooms`: the rooms with members; `info`: the servers and their connections.

use super::plain::{Answer, BodyError, answer, closing, read_body};
use crate::admin::{Command, Report};
use crate::envelope::{self, EnvelopeError, Outgoing};
use crate::server::Server;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use tracing::info;

/// The sender of the messages published through the API.
pub(super) const SENDER: &str = "api";

/// The most envelopes one `publish` call may carry.
pub const MAX_BATCH: usize = 1000;

const JSON: &str = "application/json";

/// A refusal: the status and the error envelope.
type Refusal = (StatusCode, EnvelopeError);

/// Answers the call `name` (the path after `/api/`).
pub(super) async fn call(name: &str, request: Request<Incoming>, server: &Server) -> Answer {
    let answered = match admit(&request, server) {
        Ok(()) => match read_body(request, server.config.max_message_size, server).await {
            Ok(body) => serve(name, &body, server).await,
            Err(BodyError::TooLong(max)) => {
                let refusal =
                    (StatusCode::PAYLOAD_TOO_LARGE, error("too_long", format!("the body is over {max} bytes")));
                return closing(refused(refusal));
            }
            Err(BodyError::Slow) => {
                let refusal = (StatusCode::REQUEST_TIMEOUT, error("timeout", "the body did not come in time"));
                return closing(refused(refusal));
            }
            Err(BodyError::Failed) => {
                Err((StatusCode::BAD_REQUEST, error("invalid_json", "the body could not be read")))
            }
        },
        Err(refusal) => Err(refusal),
    };
    match answered {
        Ok(json) => answer(StatusCode::OK, JSON, json),
        Err(refusal) => refused(refusal),
    }
}

fn refused((status, error): Refusal) -> Answer {
    answer(status, JSON, error.to_json())
}

fn error(code: &'static str, message: impl Into<String>) -> EnvelopeError {
    EnvelopeError::new(code, message)
}

/// Checks the method and the key.
fn admit(request: &Request<Incoming>, server: &Server) -> Result<(), Refusal> {
    if request.method() != Method::POST {
        return Err((StatusCode::METHOD_NOT_ALLOWED, error("method_not_allowed", "POST a JSON body to /api/CALL")));
    }
    let Some(key) = &server.config.api_key else {
        return Err((StatusCode::FORBIDDEN, error("forbidden", "the server API is off: the server has no --api-key")));
    };
    let given = request.headers().get("authorization").and_then(|v| v.to_str().ok()?.strip_prefix("Bearer "));
    if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes())) {
        return Err((StatusCode::UNAUTHORIZED, error("unauthorized", "send the API key as Authorization: Bearer KEY")));
    }
    Ok(())
}

/// Serves the call `name` with `body`: the answer's JSON.
async fn serve(name: &str, body: &[u8], server: &Server) -> Result<String, Refusal> {
    let text = std::str::from_utf8(body).map_err(|_| (StatusCode::BAD_REQUEST, error("invalid_json", "not UTF-8")))?;
    match name {
        "publish" if text.trim_start().starts_with('[') => publish_all(text, server).await,
        "publish" => publish(text, server).await,
        "history" => history(parse(text)?, server).await,
        "presence" => presence(parse(text)?, server).await,
        "disconnect" => disconnect(parse(text)?, server).await,
        "unsubscribe" => unsubscribe(parse(text)?, server).await,
        "rooms" => rooms(parse(text)?, server).await,
        "info" => info(parse(text)?, server).await,
        _ => Err((StatusCode::NOT_FOUND, error("unknown_call", format!("no call /api/{name} (docs/api.md)")))),
    }
}

/// The body of a call, an object; empty is `{}`.
fn parse<'a, T: Deserialize<'a> + Default>(text: &'a str) -> Result<T, Refusal> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(text).map_err(|e| (StatusCode::BAD_REQUEST, error("invalid_json", e.to_string())))
}

/// A field the call needs.
fn required<T>(field: Option<T>, name: &str) -> Result<T, Refusal> {
    field.ok_or_else(|| (StatusCode::BAD_REQUEST, error("missing_field", format!("{name} is missing"))))
}

/// A room named by a call, checked as a join checks it.
fn room(room: Option<String>, server: &Server) -> Result<String, Refusal> {
    let room = required(room, "room")?;
    if !envelope::is_room_name(&room) {
        let why = "room must be 1 to 64 letters, digits, '-', '_', '.' or ':'";
        return Err((StatusCode::BAD_REQUEST, error("invalid_field", why)));
    }
    server.namespaces.of(&room).map_err(|e| (StatusCode::NOT_FOUND, e))?;
    Ok(room)
}

/// Publishes the envelopes of an array, one after another: the array of their answers.
async fn publish_all(text: &str, server: &Server) -> Result<String, Refusal> {
    let envelopes: Vec<&RawValue> = serde_json::from_str(text)
        .map_err(|e| (StatusCode::BAD_REQUEST, error("invalid_json", format!("not an array of envelopes: {e}"))))?;
    if envelopes.len() > MAX_BATCH {
        let why = format!("{} envelopes, more than {MAX_BATCH} in one call", envelopes.len());
        return Err((StatusCode::PAYLOAD_TOO_LARGE, error("too_long", why)));
    }
    let mut answers = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        answers.push(publish(envelope.get(), server).await.unwrap_or_else(|(_, e)| e.to_json()));
    }
    Ok(format!("[{}]", answers.join(",")))
}

/// Publishes one envelope: its ack, or the status and error.
async fn publish(text: &str, server: &Server) -> Result<String, Refusal> {
    let envelope = envelope::parse(text).map_err(|e| (StatusCode::BAD_REQUEST, e))?;
    let envelope::Request::Message { room, body } = envelope.request else {
        let refusal = error("unknown_type", "the API publishes messages only").about(envelope.id);
        return Err((StatusCode::BAD_REQUEST, refusal));
    };
    let namespace = server.namespaces.of(&room).map_err(|e| (StatusCode::NOT_FOUND, e.about(envelope.id.clone())))?;
    body.check(&namespace.limits).map_err(|e| (StatusCode::BAD_REQUEST, e.about(envelope.id.clone())))?;
    let client_id = envelope.id.as_deref().map(|id| (SENDER, id));
    let seq = server.publish(&room, SENDER, body, client_id).wait().await;
    let seq = seq.map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.about(envelope.id.clone())))?;
    info!(room, seq, "published through the API");
    Ok(Outgoing::Ack { id: envelope.id.as_deref(), seq }.to_json())
}

/// The body of `history`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryCall {
    room: Option<String>,
    since: Option<u64>,
    limit: Option<usize>,
    order: Option<Order>,
}

/// Which messages of the held ones `history` gives when there are more than its limit.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Order {
    /// The oldest first: the ones right after `since` (also `asc`).
    #[default]
    #[serde(alias = "asc")]
    Oldest,
    /// The newest first: the latest ones (also `desc`).
    #[serde(alias = "desc")]
    Newest,
}

/// The held messages of a room after `since`, at most `limit`, in `order`.
async fn history(call: HistoryCall, server: &Server) -> Result<String, Refusal> {
    let room = room(call.room, server)?;
    let since = call.since.unwrap_or(0);
    let replay = server.history(&room, since).wait().await.map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))?;
    let limit = call.limit.unwrap_or(usize::MAX);
    let order = call.order.unwrap_or_default();
    let mut messages: Vec<&str> =
        replay.deliveries.iter().map(|d| std::str::from_utf8(d.frame.payload()).unwrap_or("null")).collect();
    if order == Order::Newest {
        messages.reverse();
    }
    messages.truncate(limit);
    let head = json!({"type": "history", "room": room, "epoch": &*server.hub.epoch(), "complete": replay.complete});
    let head = head.to_string();
    Ok(format!("{},\"messages\":[{}]}}", &head[..head.len() - 1], messages.join(",")))
}

/// The body of `presence`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomCall {
    room: Option<String>,
}

/// Who is in a room, on every server.
async fn presence(call: RoomCall, server: &Server) -> Result<String, Refusal> {
    let room = room(call.room, server)?;
    if !server.namespaces.rules(&room).presence {
        let why = format!("presence is not offered in room {room}");
        return Err((StatusCode::FORBIDDEN, error("not_offered", why)));
    }
    let presence = server.presence(&room, envelope::MAX_PRESENCE).wait().await;
    let (count, names) = presence.map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))?;
    let members = names.iter().map(|name| &**name).collect();
    Ok(Outgoing::Presence { room: &room, count, members }.to_json())
}

/// The body of `disconnect`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectCall {
    user: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
}

/// The close code of a disconnect that names none.
pub const DISCONNECT_CODE: u16 = 4000;

/// Closes every connection of a user, on every server.
async fn disconnect(call: DisconnectCall, server: &Server) -> Result<String, Refusal> {
    let user = user(call.user)?;
    let code = call.code.unwrap_or(DISCONNECT_CODE);
    if !(code == 1000 || code == 1008 || (3000..=4999).contains(&code)) {
        return Err((StatusCode::BAD_REQUEST, error("invalid_field", "code must be 1000, 1008 or 3000 to 4999")));
    }
    let reason = call.reason.unwrap_or_default();
    if reason.len() > 123 {
        return Err((StatusCode::BAD_REQUEST, error("too_long", "reason must be at most 123 bytes")));
    }
    let reports = command(Command::Disconnect { user: user.clone(), code, reason }, server).await?;
    let connections: usize = reports.iter().map(|r| r.connections).sum();
    info!(user, connections, "disconnected through the API");
    Ok(json!({"type": "disconnected", "user": user, "connections": connections}).to_string())
}

/// The body of `unsubscribe`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnsubscribeCall {
    user: Option<String>,
    room: Option<String>,
}

/// Takes every connection of a user out of a room, on every server.
async fn unsubscribe(call: UnsubscribeCall, server: &Server) -> Result<String, Refusal> {
    let user = user(call.user)?;
    let room = room(call.room, server)?;
    let reports = command(Command::Unsubscribe { user: user.clone(), room: room.clone() }, server).await?;
    let connections: usize = reports.iter().map(|r| r.connections).sum();
    info!(user, room, "unsubscribed through the API");
    Ok(json!({"type": "unsubscribed", "user": user, "room": room, "connections": connections}).to_string())
}

/// A user named by a call.
fn user(user: Option<String>) -> Result<String, Refusal> {
    let user = required(user, "user")?;
    if user.is_empty() {
        return Err((StatusCode::BAD_REQUEST, error("invalid_field", "user must not be empty")));
    }
    Ok(user)
}

/// The body of `rooms` and `info`: nothing, or an empty object.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// The rooms with members on any server: each with its distinct members
/// and its connections, by name.
async fn rooms(_: NoFields, server: &Server) -> Result<String, Refusal> {
    let mut rooms: BTreeMap<String, (BTreeSet<String>, u64)> = BTreeMap::new();
    for report in command(Command::Rooms, server).await? {
        for occupied in report.rooms {
            let (members, connections) = rooms.entry(occupied.room).or_default();
            members.extend(occupied.members);
            *connections += occupied.connections;
        }
    }
    let rooms: Vec<Value> = rooms
        .into_iter()
        .map(|(room, (members, connections))| json!({"room": room, "members": members.len(), "connections": connections}))
        .collect();
    Ok(json!({"type": "rooms", "rooms": rooms}).to_string())
}

/// The servers, each with its connections and rooms with members.
async fn info(_: NoFields, server: &Server) -> Result<String, Refusal> {
    let mut reports = command(Command::Info, server).await?;
    reports.sort_by(|a, b| a.server.cmp(&b.server));
    let connections: usize = reports.iter().map(|r| r.connections).sum();
    let servers: Vec<Value> = reports
        .iter()
        .map(|r| json!({"server": r.server, "connections": r.connections, "rooms": r.room_count}))
        .collect();
    Ok(json!({"type": "info", "connections": connections, "servers": servers}).to_string())
}

/// Carries `command` out on every server.
async fn command(command: Command, server: &Server) -> Result<Vec<Report>, Refusal> {
    server.command(command).wait().await.map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
