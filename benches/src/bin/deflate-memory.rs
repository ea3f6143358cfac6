//! What each permessage-deflate choice of ws-server costs and saves: the
//! heap one server connection holds between messages, after a chat message
//! and a 4 KiB JSON message each way (counted by an instrumented
//! allocator), and the bytes on the wire per message of each kind, from
//! the server and from the client, against the plain frames.
//!
//! Run: `cargo run --release -p ws-benches --bin deflate-memory`

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use ws_proto::handshake::ExtensionOffer;
use ws_proto::{Config, Connection, DeflateConfig, Message, Role};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Connections measured per choice; the figure is their average.
const CONNECTIONS: usize = 200;
/// Messages of each kind sent in a row for the wire bytes; the figure is their average.
const SERIES: usize = 50;

const CHROMIUM: &str = "permessage-deflate; client_max_window_bits";
const FIREFOX: &str = "permessage-deflate";

/// The server's settings with ws-server's defaults, or with the flags that
/// keep a context each way.
fn server(context_takeover: bool, client_context_takeover: bool) -> DeflateConfig {
    DeflateConfig {
        no_context_takeover: !context_takeover,
        peer_no_context_takeover: !client_context_takeover,
        ..DeflateConfig::default()
    }
}

fn main() {
    let kept_small = DeflateConfig { window_bits: 9, peer_window_bits: 9, memory_level: 1, ..server(true, true) };
    let choices: [(&str, &str, Option<DeflateConfig>); 7] = [
        ("`--no-deflate`", CHROMIUM, None),
        ("default: both contexts reset, Chromium's offer", CHROMIUM, Some(server(false, false))),
        ("default: both contexts reset, Firefox's offer", FIREFOX, Some(server(false, false))),
        ("`--deflate-client-context-takeover`", CHROMIUM, Some(server(false, true))),
        ("`--deflate-context-takeover`", CHROMIUM, Some(server(true, false))),
        ("both flags: both contexts kept", CHROMIUM, Some(server(true, true))),
        (
            "both flags, `--deflate-window-bits 9 --deflate-client-window-bits 9 --deflate-memory-level 1`",
            CHROMIUM,
            Some(kept_small),
        ),
    ];
    let chat: Vec<Message> = (0..SERIES).map(|i| Message::from(chat_envelope(i))).collect();
    let json: Vec<Message> = (0..SERIES as u64).map(|i| Message::from(ws_benches::json_text(4 << 10, i))).collect();
    println!(
        "chat messages: {} bytes on average; JSON messages: {} bytes\n",
        average(chat.iter().map(|m| m.payload().len())),
        json[0].payload().len()
    );
    println!(
        "| choice | bytes held per connection | chat, from the server | chat, from the client | \
         4 KiB JSON, from the server | 4 KiB JSON, from the client |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, offer, deflate) in choices {
        let negotiated = Negotiated::new(offer, deflate);
        let held = held_per_connection(&negotiated, &[&chat[0], &json[0]]);
        let (chat_server, chat_client) = wire_per_message(&negotiated, &chat);
        let (json_server, json_client) = wire_per_message(&negotiated, &json);
        println!("| {name} | {held} | {chat_server} | {chat_client} | {json_server} | {json_client} |");
    }
}

/// A chat message as the hub relays it, of 120 to 200 bytes.
fn chat_envelope(i: usize) -> String {
    const SAID: [&str; 8] = [
        "hello everyone, is the meeting still on for three o'clock?",
        "yes, see you there in the usual room",
        "can someone share the link to the slides from yesterday",
        "sure, it is in the pinned messages of this room",
        "thanks! I will be five minutes late",
        "no problem, we will wait for you before we start",
        "did anyone try the new build on their phone yet",
        "works fine here, no problems with the login so far",
    ];
    format!(
        r#"{{"type":"message","id":"1a2314ad27d662d-{i}","seq":{},"time":{},"sender":"user-{}","content":"{}","room":"lobby"}}"#,
        i + 1,
        1_796_123_316_863_u64 + 1_500 * i as u64,
        (i * 7) % 13,
        SAID[(i * 5) % SAID.len()]
    )
}

fn average(values: impl Iterator<Item = usize>) -> usize {
    let (sum, n) = values.fold((0, 0), |(sum, n), v| (sum + v, n + 1));
    sum / n.max(1)
}

/// Makers of a client and a server connection that agreed, as the
/// handshake would, on a browser's `offer` and the server's settings.
struct Negotiated {
    client: Box<dyn Fn() -> Connection>,
    server: Box<dyn Fn() -> Connection>,
}

impl Negotiated {
    fn new(offer: &str, deflate: Option<DeflateConfig>) -> Self {
        let plain = |role| Box::new(move || Connection::new(role, Config::default())) as Box<dyn Fn() -> Connection>;
        let Some(server) = deflate else {
            return Negotiated { client: plain(Role::Client), server: plain(Role::Server) };
        };
        let (server_params, response) =
            server.accept_offer(&ExtensionOffer::parse_list(offer).expect("valid offer")).expect("accepted");
        // A browser keeps its context unless asked not to, and compresses with 15 bits: the default client.
        let client = DeflateConfig::default();
        let answer = ExtensionOffer::parse_list(&response).expect("valid response");
        let client_params = client.accept_response(&answer[0]).expect("agreed");
        Negotiated {
            client: Box::new(move || {
                Connection::new(Role::Client, Config::default()).with_deflate(&client_params, &client)
            }),
            server: Box::new(move || {
                Connection::new(Role::Server, Config::default()).with_deflate(&server_params, &server)
            }),
        }
    }
}

/// Average heap held by a server connection that received `messages` from
/// a client and sent each back, with its output written and, as a socket
/// with nothing more to read, its spare buffer let go. One connection
/// goes first, so the per-thread pool of zlib state it fills is not counted.
fn held_per_connection(negotiated: &Negotiated, messages: &[&Message]) -> usize {
    let wire = {
        let mut client = (negotiated.client)();
        messages.iter().for_each(|m| client.send(m).expect("open"));
        ws_conformance::drain(&mut client)
    };
    let exchange = |conn: &mut Connection| {
        let mut input = &wire[..];
        while !input.is_empty() {
            let (used, event) = conn.receive(input).expect("valid frames");
            input = &input[used..];
            if let Some(ws_proto::Event::Message(message)) = event {
                conn.send(&message).expect("open");
            }
        }
        ws_conformance::drain(conn);
        // As ws-tokio does once the socket has nothing more to read.
        conn.release_spare();
    };
    exchange(&mut (negotiated.server)());
    let mut servers = Vec::with_capacity(CONNECTIONS);
    let region = Region::new(GLOBAL);
    for _ in 0..CONNECTIONS {
        let mut conn = (negotiated.server)();
        exchange(&mut conn);
        servers.push(conn);
    }
    // A reallocation's growth is counted in bytes_allocated, its shrinking in bytes_deallocated.
    let change = region.change();
    let held = change.bytes_allocated.saturating_sub(change.bytes_deallocated);
    drop(servers);
    held / CONNECTIONS
}

/// Average bytes on the wire per message of `messages`, sent in a row on
/// one connection: from the server, then from the client.
fn wire_per_message(negotiated: &Negotiated, messages: &[Message]) -> (usize, usize) {
    let (mut server, mut client) = ((negotiated.server)(), (negotiated.client)());
    let mut sent = (0, 0);
    for message in messages {
        server.send(message).expect("open");
        client.send(message).expect("open");
        sent.0 += ws_conformance::drain(&mut server).len();
        sent.1 += ws_conformance::drain(&mut client).len();
    }
    (sent.0 / messages.len(), sent.1 / messages.len())
}
