//! The hub's wire protocol (docs/protocol.md): JSON envelopes in text frames.
//!
//! What a client sends is parsed and validated here into a [`Request`], or an
//! [`EnvelopeError`] whose code goes back in an error envelope while the
//! connection stays open. What the server sends is built here, each envelope
//! serialized once.

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest room name, in characters.
pub const MAX_ROOM_LEN: usize = 64;
/// The longest client message id, in characters.
pub const MAX_ID_LEN: usize = 64;
/// The longest method of an `rpc`, in characters.
pub const MAX_METHOD_LEN: usize = 64;
/// The longest token, in characters.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The most members a `presence` answer names.
pub const MAX_PRESENCE: usize = 1000;

/// A valid envelope from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Join a room; with `since`, replay what came after that seq.
    Join {
        /// The room.
        room: String,
        /// The last seq the client saw in this room.
        since: Option<u64>,
        /// A room token, which lets the user into this room beyond what its
        /// connection's token allows.
        token: Option<String>,
    },
    /// Leave a room.
    Leave {
        /// The room.
        room: String,
    },
    /// Who is in a room the client has joined.
    Presence {
        /// The room.
        room: String,
    },
    /// A fresh token for the connection, for the same user, whose claims
    /// then hold.
    Refresh {
        /// The token.
        token: String,
    },
    /// Whether the server is there: answered at once with a `pong`, so a
    /// client that cannot see WebSocket pings (a browser) sees it alive.
    Ping,
    /// Call `method` of the application's backend (the rpc hook), whose
    /// answer comes back with the envelope's id.
    Rpc(Call),
    /// Publish to a room the client has joined.
    Message {
        /// The room.
        room: String,
        /// What it says.
        body: Body,
    },
}

/// A call of the application's backend (the rpc hook).
#[derive(Debug, Clone)]
pub struct Call {
    /// Which of the backend's procedures, 1 to 64 characters.
    pub method: String,
    /// Its argument, any JSON value as the client wrote it.
    pub data: Option<Box<RawValue>>,
}

impl PartialEq for Call {
    fn eq(&self, other: &Self) -> bool {
        self.method == other.method
            && self.data.as_deref().map(RawValue::get) == other.data.as_deref().map(RawValue::get)
    }
}

impl Eq for Call {}

/// What a message says: a text, a JSON value, or both.
#[derive(Debug, Clone, Default)]
pub struct Body {
    /// The text, at most the configured number of characters.
    pub content: Option<String>,
    /// Any JSON value, kept as the publisher wrote it, at most the
    /// configured number of bytes: members get these very bytes.
    pub data: Option<Box<RawValue>>,
}

impl Body {
    /// A message of text alone.
    pub fn text(content: &str) -> Self {
        Body { content: Some(content.to_owned()), data: None }
    }
}

impl Body {
    /// Whether it is within `limits`; else `too_long`.
    pub fn check(&self, limits: &Limits) -> Result<(), EnvelopeError> {
        let chars = self.content.as_deref().map_or(0, |c| c.chars().count());
        if chars > limits.content_chars {
            let max = limits.content_chars;
            return Err(EnvelopeError::new("too_long", format!("content has {chars} characters, more than {max}")));
        }
        let bytes = self.data.as_deref().map_or(0, |raw| raw.get().len());
        if bytes > limits.data_bytes {
            let max = limits.data_bytes;
            return Err(EnvelopeError::new("too_long", format!("data has {bytes} bytes, more than {max}")));
        }
        Ok(())
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        self.content == other.content
            && self.data.as_deref().map(RawValue::get) == other.data.as_deref().map(RawValue::get)
    }
}

impl Eq for Body {}

/// The bounds of what a message may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most characters of `content`.
    pub content_chars: usize,
    /// The most bytes of `data`, as written.
    pub data_bytes: usize,
}

/// A valid envelope: the request, and the client's id for it, if it gave one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// What the client asks for.
    pub request: Request,
    /// Echoed in the ack of a message, and in any error about the envelope.
    pub id: Option<String>,
}

/// Why an envelope was refused: the `code` and `message` of the error envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeError {
    /// A stable code a client can act on, such as `missing_field`.
    pub code: &'static str,
    /// What was wrong, for a person.
    pub message: String,
    /// The client's id of the envelope, when it gave one.
    pub id: Option<String>,
}

impl EnvelopeError {
    /// An error with `code` and `message`, about no particular envelope.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        EnvelopeError { code, message: message.into(), id: None }
    }

    /// The same error about the envelope the client calls `id`.
    pub fn about(self, id: Option<String>) -> Self {
        EnvelopeError { id, ..self }
    }

    /// The error envelope.
    pub fn to_json(&self) -> String {
        json(&Outgoing::Error { code: self.code, message: &self.message, id: self.id.as_deref() })
    }
}

/// The fields of an envelope, each as it was written.
type Fields<'a> = HashMap<String, &'a RawValue>;

/// Parses and validates one text message from a client. What a message
/// says is bounded by its room's namespace ([`Body::check`]).
pub fn parse(text: &str) -> Result<Envelope, EnvelopeError> {
    let fields: Fields = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => EnvelopeError::new("invalid_json", "an envelope is a JSON object"),
        _ => EnvelopeError::new("invalid_json", e.to_string()),
    })?;
    let id = optional_string(&fields, "id", MAX_ID_LEN)?;
    match request(&fields) {
        Ok(request) => Ok(Envelope { request, id }),
        Err(error) => Err(error.about(id)),
    }
}

fn request(fields: &Fields) -> Result<Request, EnvelopeError> {
    let kind = string(fields, "type")?;
    match kind.as_str() {
        "join" => {
            let since = match value(fields, "since") {
                None => None,
                Some(value) => Some(value.as_u64().ok_or_else(|| invalid("since", "a whole number"))?),
            };
            let token = optional_string(fields, "token", MAX_TOKEN_LEN)?;
            Ok(Request::Join { room: room(fields)?, since, token })
        }
        "leave" => Ok(Request::Leave { room: room(fields)? }),
        "presence" => Ok(Request::Presence { room: room(fields)? }),
        "message" => Ok(Request::Message { room: room(fields)?, body: body(fields)? }),
        "ping" => Ok(Request::Ping),
        "rpc" => rpc(fields),
        "refresh" => match optional_string(fields, "token", MAX_TOKEN_LEN)? {
            Some(token) => Ok(Request::Refresh { token }),
            None => Err(EnvelopeError::new("missing_field", "token is missing")),
        },
        other => Err(EnvelopeError::new(
            "unknown_type",
            format!("unknown type {other:?}: join, leave, message, presence, refresh, rpc or ping"),
        )),
    }
}

/// A call of the backend: its `method`, and `data` if it has one.
fn rpc(fields: &Fields) -> Result<Request, EnvelopeError> {
    let method = string(fields, "method")?;
    if !(1..=MAX_METHOD_LEN).contains(&method.chars().count()) {
        return Err(invalid("method", &format!("a string of 1 to {MAX_METHOD_LEN} characters")));
    }
    let data = fields.get("data").copied().filter(|raw| raw.get() != "null").map(RawValue::to_owned);
    Ok(Request::Rpc(Call { method, data }))
}

/// What a message says: `content`, `data` or both.
fn body(fields: &Fields) -> Result<Body, EnvelopeError> {
    let data = fields.get("data").copied().filter(|raw| raw.get() != "null");
    let content = match value(fields, "content") {
        None if data.is_some() => None,
        None => return Err(EnvelopeError::new("missing_field", "content or data is missing")),
        Some(Value::String(content)) => Some(content),
        Some(_) => return Err(invalid("content", "a string")),
    };
    Ok(Body { content, data: data.map(RawValue::to_owned) })
}

/// The value of a field; `None` when it is missing or null.
fn value(fields: &Fields, name: &str) -> Option<Value> {
    // A field's text is valid JSON: the envelope parsed.
    fields.get(name).and_then(|raw| serde_json::from_str(raw.get()).ok()).filter(|v: &Value| !v.is_null())
}

fn invalid(field: &str, what: &str) -> EnvelopeError {
    EnvelopeError::new("invalid_field", format!("{field} must be {what}"))
}

fn string(fields: &Fields, name: &str) -> Result<String, EnvelopeError> {
    match value(fields, name) {
        None => Err(EnvelopeError::new("missing_field", format!("{name} is missing"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(name, "a string")),
    }
}

fn optional_string(fields: &Fields, name: &str, max: usize) -> Result<Option<String>, EnvelopeError> {
    match value(fields, name) {
        None => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Some(s)),
        Some(_) => Err(invalid(name, &format!("a string of at most {max} characters"))),
    }
}

/// A room name: 1 to 64 characters of letters, digits, `-`, `_`, `.` and `:`.
fn room(fields: &Fields) -> Result<String, EnvelopeError> {
    let room = string(fields, "room")?;
    if is_room_name(&room) { Ok(room) } else { Err(invalid("room", "1 to 64 letters, digits, '-', '_', '.' or ':'")) }
}

/// Whether `name` may name a room.
pub fn is_room_name(name: &str) -> bool {
    (1..=MAX_ROOM_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Every envelope the server sends.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Outgoing<'a> {
    /// The welcome, and other notices from the server.
    System {
        /// The notice.
        content: &'a str,
        /// Milliseconds since the Unix epoch.
        time: u64,
    },
    /// A message published to a room.
    Message {
        /// Unique among the messages of this server.
        id: &'a str,
        /// The message's place in its room, from 1 up, one by one.
        seq: u64,
        /// Milliseconds since the Unix epoch.
        time: u64,
        /// The user, or the peer address of an anonymous client.
        sender: &'a str,
        /// The text, if it has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<&'a str>,
        /// The JSON value, if it has one, as its publisher wrote it.
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a RawValue>,
        /// The room.
        room: &'a str,
    },
    /// The backend's answer to an `rpc`.
    Rpc {
        /// The client's id of the call, if it gave one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// What the backend answered, as it wrote it.
        result: &'a RawValue,
    },
    /// The sender's message got `seq`.
    Ack {
        /// The client's id of the message, if it gave one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// The seq it got.
        seq: u64,
    },
    /// The client is a member of `room`, whose latest message is `seq`.
    Joined {
        /// The room.
        room: &'a str,
        /// The latest seq in the room (0: none yet).
        seq: u64,
        /// Names the room's numbering: another epoch means the seqs started
        /// over (an in-memory server restarted), and a `since` from before means nothing.
        epoch: &'a str,
        /// What the join hook of the application's backend gave the member, if anything.
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a RawValue>,
    },
    /// The client left `room`: it asked to, or, with `reason`, the server removed it.
    Left {
        /// The room.
        room: &'a str,
        /// Why the server removed it: `token_expired` (its room token),
        /// `forbidden` (a refreshed token no longer allows the room), or
        /// `removed` (the server API took the user out of the room).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
    },
    /// The token of the connection, or with `room` the room token of that
    /// room, expires at `expires`: send a fresh one before then.
    Refresh {
        /// The room whose room token it is; none for the connection's token.
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
        /// When it expires, in seconds since the Unix epoch.
        expires: u64,
    },
    /// A `refresh` was taken: the connection's token now expires at `expires`.
    Refreshed {
        /// When the new token expires, in seconds since the Unix epoch.
        expires: u64,
    },
    /// Who is in `room`: `count` members, named in `members` (at most
    /// [`MAX_PRESENCE`] of them).
    Presence {
        /// The room.
        room: &'a str,
        /// How many distinct members the room has.
        count: usize,
        /// Their names: users, or the addresses of anonymous clients.
        members: Vec<&'a str>,
    },
    /// `member` joined `room`: it was in it on no connection before.
    #[serde(rename = "member_joined")]
    MemberJoined {
        /// The room.
        room: &'a str,
        /// The user, or the address of an anonymous client.
        member: &'a str,
    },
    /// `member` left `room`: it is in it on no connection now.
    #[serde(rename = "member_left")]
    MemberLeft {
        /// The room.
        room: &'a str,
        /// The user, or the address of an anonymous client.
        member: &'a str,
    },
    /// The replay asked for with `since` is done; `complete` is false when
    /// the history no longer reached back that far.
    Recovered {
        /// The room.
        room: &'a str,
        /// Whether every message after `since` was replayed.
        complete: bool,
    },
    /// Messages `from` to `to` of `room` were not delivered (slow consumer).
    Gap {
        /// The room.
        room: &'a str,
        /// The first seq missed.
        from: u64,
        /// The last seq missed.
        to: u64,
    },
    /// The answer to a `ping`, with its id: the server is alive.
    Pong {
        /// The client's id of the ping, if it gave one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
    /// A refused envelope or action; the connection stays open.
    Error {
        /// A stable code, such as `invalid_json`.
        code: &'a str,
        /// What was wrong.
        message: &'a str,
        /// The client's id of the envelope, when it gave one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
    },
}

impl Outgoing<'_> {
    /// The envelope as JSON text.
    pub fn to_json(&self) -> String {
        json(self)
    }
}

impl<'a> Outgoing<'a> {
    /// The envelope of a message that says `body`.
    pub fn message(id: &'a str, seq: u64, time: u64, sender: &'a str, body: &'a Body, room: &'a str) -> Self {
        Outgoing::Message { id, seq, time, sender, content: body.content.as_deref(), data: body.data.as_deref(), room }
    }
}

/// A message envelope cut where its seq goes, for a seq given elsewhere
/// (by Redis): the head, the seq in decimal, then the tail make the JSON.
pub fn message_around_seq(id: &str, time: u64, sender: &str, body: &Body, room: &str) -> (String, String) {
    let json = Outgoing::message(id, 0, time, sender, body, room).to_json();
    // The seq follows the type and the id, the server's own: nothing before it can read `"seq":0`.
    let (head, tail) = json.split_once(r#""seq":0"#).unwrap_or((&json, ""));
    (format!(r#"{head}"seq":"#), tail.to_owned())
}

fn json(value: &impl Serialize) -> String {
    // Serializing these plain structs cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At most `content_chars` characters of content and 32 bytes of data.
    fn limits(content_chars: usize) -> Limits {
        Limits { content_chars, data_bytes: 32 }
    }

    fn data(json: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(json.to_owned()).unwrap())
    }

    #[test]
    fn a_message_cut_around_its_seq_joins_into_the_envelope() {
        let body = Body { content: Some(r#"my "seq":0, yours"#.into()), data: data(r#"{"seq":0}"#) };
        let (head, tail) = message_around_seq("a-1", 7, "u", &body, "r");
        let whole = Outgoing::message("a-1", 42, 7, "u", &body, "r");
        assert_eq!(format!("{head}42{tail}"), whole.to_json());
    }

    /// The code of the error about `text`, checked within `limits(10)` if it parses.
    fn code(text: &str) -> &'static str {
        let checked = parse(text).and_then(|envelope| match &envelope.request {
            Request::Message { body, .. } => body.check(&limits(10)),
            _ => Ok(()),
        });
        checked.unwrap_err().code
    }

    #[test]
    fn valid_envelopes() {
        let request = |text| parse(text).map(|e| e.request);
        assert_eq!(
            request(r#"{"type":"join","room":"general"}"#),
            Ok(Request::Join { room: "general".into(), since: None, token: None })
        );
        assert_eq!(
            request(r#"{"type":"join","room":"a:b.c-d_e","since":41}"#),
            Ok(Request::Join { room: "a:b.c-d_e".into(), since: Some(41), token: None })
        );
        assert_eq!(request(r#"{"type":"leave","room":"x"}"#), Ok(Request::Leave { room: "x".into() }));
        assert_eq!(
            parse(r#"{"type":"ping","id":"p1"}"#),
            Ok(Envelope { request: Request::Ping, id: Some("p1".into()) })
        );
        let message = parse(r#"{"type":"message","room":"x","content":"héllo wörld","id":"c1","extra":true}"#);
        assert_eq!(
            message,
            Ok(Envelope {
                request: Request::Message { room: "x".into(), body: Body::text("héllo wörld") },
                id: Some("c1".into())
            })
        );
    }

    #[test]
    fn data_is_kept_as_it_was_written() {
        let body = |text| match parse(text).map(|e| e.request) {
            Ok(Request::Message { body, .. }) => body,
            other => panic!("{other:?}"),
        };
        let cases = [
            (r#"{"type":"message","room":"x","data": { "b" : [1, 2.50] } }"#, r#"{ "b" : [1, 2.50] }"#),
            (r#"{"type":"message","room":"x","data":[true,null,"é\u00e9"]}"#, r#"[true,null,"é\u00e9"]"#),
            (r#"{"type":"message","room":"x","data":1e3}"#, "1e3"),
            (r#"{"type":"message","room":"x","data":"text"}"#, r#""text""#),
        ];
        for (text, expected) in cases {
            assert_eq!(body(text), Body { content: None, data: data(expected) }, "{text}");
        }
        let both = body(r#"{"type":"message","room":"x","content":"hi","data":{"n":1},"id":"c"}"#);
        assert_eq!(both, Body { content: Some("hi".into()), data: data(r#"{"n":1}"#) });
        let null_data = body(r#"{"type":"message","room":"x","content":"hi","data":null}"#);
        assert_eq!(null_data, Body::text("hi"), "null data is no data");
        let null_content = body(r#"{"type":"message","room":"x","content":null,"data":0}"#);
        assert_eq!(null_content, Body { content: None, data: data("0") });
    }

    #[test]
    fn each_fault_has_its_code() {
        let cases = [
            ("not json", "invalid_json"),
            ("[1,2]", "invalid_json"),
            (r#"{"room":"x"}"#, "missing_field"),
            (r#"{"type":"shout","room":"x"}"#, "unknown_type"),
            (r#"{"type":7}"#, "invalid_field"),
            (r#"{"type":"join"}"#, "missing_field"),
            (r#"{"type":"join","room":""}"#, "invalid_field"),
            (r#"{"type":"join","room":"has space"}"#, "invalid_field"),
            (r#"{"type":"join","room":"x","since":-1}"#, "invalid_field"),
            (r#"{"type":"message","room":"x"}"#, "missing_field"),
            (r#"{"type":"message","room":"x","content":5}"#, "invalid_field"),
            (r#"{"type":"message","room":"x","content":"12345678901"}"#, "too_long"),
            (r#"{"type":"message","room":"x","content":"ok","id":7}"#, "invalid_field"),
            (r#"{"type":"message","room":"x","data":null}"#, "missing_field"),
            (r#"{"type":"message","room":"x","content":5,"data":1}"#, "invalid_field"),
            (r#"{"type":"message","room":"x","data":"1234567890123456789012345678901"}"#, "too_long"),
            (r#"{"type":"message","room":"x","data":{"a":1}"#, "invalid_json"),
        ];
        for (text, expected) in cases {
            assert_eq!(code(text), expected, "{text}");
        }
        let long_room = format!(r#"{{"type":"join","room":"{}"}}"#, "r".repeat(MAX_ROOM_LEN + 1));
        assert_eq!(code(&long_room), "invalid_field");
    }

    #[test]
    fn errors_carry_the_client_id() {
        let error = parse(r#"{"type":"message","room":"x","content":7,"id":"m7"}"#).unwrap_err();
        assert_eq!(error.id.as_deref(), Some("m7"));
        let value: Value = serde_json::from_str(&error.to_json()).unwrap();
        assert_eq!(value["type"], "error");
        assert_eq!(value["code"], "invalid_field");
        assert_eq!(value["id"], "m7");
    }

    proptest::proptest! {
        /// Whatever a client sends, parsing gives a request or an error, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,200}") {
            let _ = parse(&text);
        }

        /// Envelopes with fields of every JSON kind, in any mix.
        #[test]
        fn any_object_parses_or_is_refused(
            kind in proptest::option::of("join|leave|message|presence|refresh|rpc|ping|other"),
            room in proptest::option::of(proptest::prelude::any::<String>()),
            content in proptest::option::of(".{0,20}"),
            since in proptest::option::of(proptest::prelude::any::<i64>()),
            id in proptest::option::of(proptest::prelude::any::<u32>()),
        ) {
            let mut object = serde_json::Map::new();
            object.extend(kind.map(|k| ("type".to_owned(), Value::from(k))));
            object.extend(room.map(|r| ("room".to_owned(), Value::from(r))));
            object.extend(content.map(|c| ("content".to_owned(), Value::from(c))));
            object.extend(since.map(|s| ("since".to_owned(), Value::from(s))));
            object.extend(id.map(|i| ("id".to_owned(), Value::from(i))));
            if let Ok(Envelope { request, .. }) = parse(&Value::Object(object).to_string()) {
                let room = match request {
                    Request::Join { room, .. }
                    | Request::Leave { room }
                    | Request::Presence { room }
                    | Request::Message { room, .. } => room,
                    Request::Ping | Request::Rpc(_) => return Ok(()),
                    Request::Refresh { .. } => unreachable!("no token was given"),
                };
                proptest::prop_assert!(is_room_name(&room));
            }
        }
    }

    #[test]
    fn outgoing_envelopes_have_the_documented_fields() {
        let text = Body::text("Hi \"there\"");
        assert_eq!(
            Outgoing::message("a-1", 42, 1, "u", &text, "g").to_json(),
            r#"{"type":"message","id":"a-1","seq":42,"time":1,"sender":"u","content":"Hi \"there\"","room":"g"}"#
        );
        let data = Body { content: None, data: data(r#"{ "price": 1.50 }"#) };
        assert_eq!(
            Outgoing::message("a-2", 43, 1, "u", &data, "g").to_json(),
            r#"{"type":"message","id":"a-2","seq":43,"time":1,"sender":"u","data":{ "price": 1.50 },"room":"g"}"#
        );
        assert_eq!(
            Outgoing::Gap { room: "g", from: 3, to: 9 }.to_json(),
            r#"{"type":"gap","room":"g","from":3,"to":9}"#
        );
        assert_eq!(Outgoing::Ack { id: None, seq: 3 }.to_json(), r#"{"type":"ack","seq":3}"#);
        assert_eq!(Outgoing::Pong { id: None }.to_json(), r#"{"type":"pong"}"#);
        assert_eq!(Outgoing::Pong { id: Some("p") }.to_json(), r#"{"type":"pong","id":"p"}"#);
        assert_eq!(Outgoing::Ack { id: Some("c"), seq: 3 }.to_json(), r#"{"type":"ack","id":"c","seq":3}"#);
        assert_eq!(
            Outgoing::Presence { room: "g", count: 2, members: vec!["alice", "bob"] }.to_json(),
            r#"{"type":"presence","room":"g","count":2,"members":["alice","bob"]}"#
        );
    }
}
