//! The heap one server connection holds after a compressed message each way,
//! per permessage-deflate setting, counted by an instrumented allocator.
//!
//! Run: `cargo run --release -p ws-benches --bin deflate-memory`

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use ws_proto::handshake::ExtensionOffer;
use ws_proto::{Config, Connection, DeflateConfig, Message, Role};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Connections measured per setting; the figure is their average.
const CONNECTIONS: usize = 200;

fn main() {
    let message = Message::from(ws_benches::json_text(4 << 10, 7));
    let base = DeflateConfig::default();
    let settings: [(&str, Option<DeflateConfig>); 7] = [
        ("no permessage-deflate", None),
        ("15 bits, memory level 8, contexts kept (ws-proto's default)", Some(base)),
        ("15 bits, memory level 1, contexts kept", Some(DeflateConfig { memory_level: 1, ..base })),
        (
            "12 bits, memory level 8, contexts kept",
            Some(DeflateConfig { window_bits: 12, peer_window_bits: 12, ..base }),
        ),
        (
            "9 bits, memory level 1, contexts kept",
            Some(DeflateConfig { window_bits: 9, peer_window_bits: 9, memory_level: 1, ..base }),
        ),
        (
            "15 bits, server_no_context_takeover (ws-server's default)",
            Some(DeflateConfig { no_context_takeover: true, ..base }),
        ),
        (
            "15 bits, server_ and client_no_context_takeover",
            Some(DeflateConfig { no_context_takeover: true, peer_no_context_takeover: true, ..base }),
        ),
    ];
    println!("| setting | bytes per connection |");
    println!("| --- | ---: |");
    for (name, deflate) in settings {
        println!("| {name} | {} |", held_per_connection(deflate, &message));
    }
}

/// Average heap held by a server connection that received `message`
/// compressed from a client and sent it back, with its output written.
fn held_per_connection(deflate: Option<DeflateConfig>, message: &Message) -> usize {
    let (client, server) = negotiated(deflate);
    let wire = {
        let mut client = client();
        client.send(message).expect("open");
        ws_conformance::drain(&mut client)
    };
    let mut servers = Vec::with_capacity(CONNECTIONS);
    let region = Region::new(GLOBAL);
    for _ in 0..CONNECTIONS {
        let mut conn = server();
        let (used, event) = conn.receive(&wire).expect("valid frames");
        assert_eq!((used, event.is_some()), (wire.len(), true));
        conn.send(message).expect("open");
        ws_conformance::drain(&mut conn);
        servers.push(conn);
    }
    let change = region.change();
    let held = change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated;
    drop(servers);
    held as usize / CONNECTIONS
}

type Make = Box<dyn Fn() -> Connection>;

/// Makers of a client and a server connection that agreed, as the handshake
/// would, on the offer of a client with the default settings (the same offer
/// as a browser's) and the server's settings `deflate`.
fn negotiated(deflate: Option<DeflateConfig>) -> (Make, Make) {
    let plain = |role| Box::new(move || Connection::new(role, Config::default())) as Make;
    let Some(server) = deflate else { return (plain(Role::Client), plain(Role::Server)) };
    let client = DeflateConfig::default();
    let offer = ExtensionOffer::parse_list(&client.offer()).expect("valid offer");
    let (server_params, response) = server.accept_offer(&offer).expect("accepted");
    let answer = ExtensionOffer::parse_list(&response).expect("valid response");
    let client_params = client.accept_response(&answer[0]).expect("agreed");
    (
        Box::new(move || Connection::new(Role::Client, Config::default()).with_deflate(&client_params, &client)),
        Box::new(move || Connection::new(Role::Server, Config::default()).with_deflate(&server_params, &server)),
    )
}
