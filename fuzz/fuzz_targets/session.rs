//! A whole hub session, in memory, driven by arbitrary steps: envelopes
//! built from the input (joins with and without `since`, leaves, messages,
//! presence, refreshes, rpcs, pings), arbitrary texts and binary messages,
//! pings, messages published to its rooms from elsewhere, a client that stops
//! reading and starts again, and time passing (on a paused clock: heartbeats
//! and timeouts come at once). Nothing panics; the session ends when the
//! client closes; what the server queued and the client has not read stays
//! within `--max-queue-bytes` and the pipe; every envelope is JSON with a
//! type; every error envelope has a code; and within one membership of a room
//! the seqs the client sees only grow. The first byte chooses the slow
//! consumers' policy.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::DuplexStream;
use ws_proto::{CloseCode, Connection, Event, FrameHeader, Message, OpCode, Role};
use ws_server::config::ServerConfig;
use ws_server::envelope::Body;
use ws_server::policy::auth::Identity;
use ws_server::server::Server;
use ws_server::session::Session;
use ws_tokio::{Options, WebSocket};

/// The rooms the steps name: the default room, two others, and one whose name is refused.
const ROOMS: [&str; 4] = ["general", "a", "b:c", "no room"];

/// What the server may queue for the client (`--max-queue-bytes`), and what the pipe between them holds.
const QUEUE: usize = 4096;
/// What one request may queue past [`QUEUE`]: its answers (a recovery's history at most).
const ANSWERS: usize = 16 * 1024;

/// Small buffers, queues and histories, so that a few steps reach lag, gaps,
/// slow consumers and trimming; `skip` or `disconnect` for the slow consumers.
fn config(skip: bool) -> Arc<ServerConfig> {
    static CONFIGS: OnceLock<[Arc<ServerConfig>; 2]> = OnceLock::new();
    let load = |policy| {
        let queue = QUEUE.to_string();
        let flags = ["ws-server", "--room-buffer", "2", "--history", "4", "--rate-limit", "0"];
        let flags = flags.into_iter().chain(["--max-queue-bytes", &queue, "--slow-consumer", policy]);
        Arc::new(ServerConfig::load(flags).expect("valid flags"))
    };
    CONFIGS.get_or_init(|| [load("disconnect"), load("skip")])[usize::from(skip)].clone()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a runtime")
    })
}

fuzz_target!(|data: &[u8]| runtime().block_on(drive(data)));

/// What the client saw so far, checked as it comes.
#[derive(Default)]
struct Seen {
    /// The last seq of each room, within its current membership.
    last: HashMap<String, u64>,
    /// Bytes of the frames read (the server's are plain and whole: no compression was negotiated).
    read: u64,
}

impl Seen {
    fn check(&mut self, text: &str) {
        let header =
            FrameHeader { fin: true, rsv: 0, opcode: OpCode::Text, mask: None, payload_len: text.len() as u64 };
        self.read += (header.encoded_len() + text.len()) as u64;
        let envelope: Value = serde_json::from_str(text).expect("every envelope is JSON");
        let kind = envelope["type"].as_str().expect("every envelope has a type");
        let room = envelope["room"].as_str().unwrap_or_default().to_owned();
        match kind {
            "error" => assert!(envelope["code"].as_str().is_some_and(|code| !code.is_empty()), "{text}"),
            "joined" | "left" => {
                self.last.remove(&room);
            }
            "message" => {
                let seq = envelope["seq"].as_u64().expect("a message has a seq");
                let last = self.last.entry(room).or_default();
                assert!(seq > *last, "seq {seq} after {last}: {text}");
                *last = seq;
            }
            "gap" => {
                let to = envelope["to"].as_u64().expect("a gap has an end");
                let last = self.last.entry(room).or_default();
                assert!(to > *last, "gap to {to} after {last}: {text}");
                *last = to;
            }
            _ => {}
        }
    }
}

async fn drive(data: &[u8]) {
    let Some((policy, mut steps)) = data.split_first() else { return };
    let server = Arc::new(Server::new(config(policy % 2 == 1)).expect("a server"));
    let (near, far) = tokio::io::duplex(QUEUE);
    // The server's end as the server makes it: it reads no more while it has
    // more than --max-queue-bytes to write.
    let socket = |io: DuplexStream, role, options: Options| {
        WebSocket::from_parts(io, Connection::new(role, options.config.clone()), options, Default::default())
    };
    let permit = server.limits.admit([127, 0, 0, 1].into()).expect("room for one connection");
    let near = socket(near, Role::Server, server.config.socket_options());
    let session = Session::start(near, Identity::anonymous("fuzz".into()), server.clone(), permit);
    let session = tokio::spawn(session);
    let mut client = socket(far, Role::Client, Options::default());
    let mut seen = Seen::default();
    let (mut open, mut reading) = (true, true);
    while let [step, rest @ ..] = steps {
        steps = rest;
        open = match step % 8 {
            0 => send(&mut client, Message::from(envelope(&mut steps).to_string())).await,
            1 => {
                let text = String::from_utf8_lossy(take(&mut steps)).into_owned();
                send(&mut client, Message::from(text)).await
            }
            2 => send(&mut client, Message::Binary(bytes::Bytes::copy_from_slice(take(&mut steps)))).await,
            3 => {
                // A ping carries at most 125 bytes: a longer one the client refuses to send.
                let payload = take(&mut steps);
                client.queue_ping(&payload[..payload.len().min(125)]).is_ok() && flush(&mut client).await
            }
            4 => {
                publish(&server, &mut steps);
                true
            }
            5 => {
                reading = !reading;
                true
            }
            6 => {
                tokio::time::sleep(Duration::from_millis(u64::from(byte(&mut steps)) * 250)).await;
                true
            }
            _ => true,
        };
        if reading {
            open &= drain(&mut client, &mut seen).await;
        } else {
            run().await;
        }
        if !open {
            break;
        }
        let unread = server.metrics.bytes_sent.get().saturating_sub(seen.read);
        assert!(unread <= (2 * QUEUE + ANSWERS) as u64, "{unread} bytes queued and unread");
    }
    if open {
        let _ = client.close(CloseCode::NORMAL, "").await;
    }
    let ended = async {
        while let Some(Ok(event)) = client.recv().await {
            if let Event::Message(Message::Text(text)) = event {
                seen.check(text.as_str());
            }
        }
        session.await.expect("the session ends without a panic");
    };
    tokio::time::timeout(Duration::from_secs(60), ended).await.expect("the session ends once closed");
}

/// Queues `message` and sends what it can: whether the connection is still open.
async fn send(client: &mut WebSocket<DuplexStream>, message: Message) -> bool {
    client.queue(&message).is_ok() && flush(client).await
}

/// Sends what the server reads within a second (a server that does not read
/// holds the rest): whether the connection is still open.
async fn flush(client: &mut WebSocket<DuplexStream>) -> bool {
    tokio::time::timeout(Duration::from_secs(1), client.flush()).await.unwrap_or(Ok(())).is_ok()
}

/// Lets the session run until it waits.
async fn run() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// Lets the session run, and checks what it sent meanwhile: whether the connection is still open.
async fn drain(client: &mut WebSocket<DuplexStream>, seen: &mut Seen) -> bool {
    run().await;
    loop {
        match futures_util::FutureExt::now_or_never(client.recv()) {
            None => return true,
            Some(Some(Ok(Event::Message(Message::Text(text))))) => seen.check(text.as_str()),
            Some(Some(Ok(Event::Close(_)))) | Some(None) | Some(Some(Err(_))) => return false,
            Some(Some(Ok(_))) => {}
        }
    }
}

/// The next byte of `steps` (0 when none is left).
fn byte(steps: &mut &[u8]) -> u8 {
    let (first, rest) = steps.split_first().map_or((0, &[][..]), |(first, rest)| (*first, rest));
    *steps = rest;
    first
}

/// A length byte, then that many bytes of `steps` (as many as are left).
fn take<'a>(steps: &mut &'a [u8]) -> &'a [u8] {
    let len = usize::from(byte(steps)).min(steps.len());
    let (taken, rest) = steps.split_at(len);
    *steps = rest;
    taken
}

/// A room of [`ROOMS`], by the next byte.
fn room(steps: &mut &[u8]) -> &'static str {
    ROOMS[usize::from(byte(steps)) % ROOMS.len()]
}

/// An envelope a client may send, its kind and fields from `steps`.
fn envelope(steps: &mut &[u8]) -> Value {
    let id = format!("i{}", byte(steps) % 4);
    match byte(steps) % 8 {
        0 => json!({"type": "join", "room": room(steps)}),
        1 => json!({"type": "join", "room": room(steps), "since": byte(steps) % 8}),
        2 => json!({"type": "leave", "room": room(steps)}),
        3 => json!({"type": "message", "room": room(steps), "content": "x".repeat(usize::from(byte(steps))), "id": id}),
        4 => json!({"type": "message", "room": room(steps), "data": {"n": byte(steps)}}),
        5 => json!({"type": "presence", "room": room(steps), "id": id}),
        6 => json!({"type": "refresh", "token": String::from_utf8_lossy(take(steps))}),
        _ => {
            let kind = if byte(steps) % 2 == 0 { "ping" } else { "rpc" };
            json!({"type": kind, "method": "m", "id": id})
        }
    }
}

/// A message published to a room from elsewhere (the server API's way).
fn publish(server: &Server, steps: &mut &[u8]) {
    let room = room(steps);
    let content = "y".repeat(usize::from(byte(steps) % 16) + 1);
    // In memory, published at once.
    drop(server.publish(room, "api", Body::text(&content), None));
}
