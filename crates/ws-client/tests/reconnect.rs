//! The hub client against a real ws-server on loopback: cut off by a proxy
//! and brought back, and through a restart of the server itself.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use clap::Parser;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;
use ws_client::ClientSettings;
use ws_client::hub::{Backoff, HubClient, HubEvent, HubSettings};
use ws_proto::{Event, Message};
use ws_server::config::ServerConfig;
use ws_tokio::WebSocket;

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

const BACKOFF: Backoff = Backoff { initial: Duration::from_millis(10), max: Duration::from_millis(200) };

/// A hub on `listen` (port 0 for any).
async fn server(listen: &str) -> ws_server::http::Running {
    ws_server::http::spawn(ServerConfig::parse_from(["ws-server", "--listen", listen])).await.unwrap()
}

/// A TCP proxy to `target` on `listen`; aborting it cuts every connection through it.
async fn proxy(listen: SocketAddr, target: SocketAddr) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        while let Ok((mut client, _)) = listener.accept().await {
            connections.spawn(async move {
                // The server may be down: then the client's connection just ends.
                let Ok(mut server) = TcpStream::connect(target).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (addr, task)
}

/// A plain hub client that publishes to a room and waits for each ack.
struct Publisher {
    ws: WebSocket<TcpStream>,
}

impl Publisher {
    async fn connect(addr: SocketAddr, room: &str) -> Publisher {
        let (ws, _) = ws_tokio::client::connect(&format!("ws://{addr}/ws")).await.unwrap();
        let mut publisher = Publisher { ws };
        publisher.send(json!({"type": "join", "room": room})).await;
        publisher.until(|e| e["type"] == "joined" && e["room"] == room).await;
        publisher
    }

    async fn send(&mut self, envelope: Value) {
        self.ws.send(&Message::from(envelope.to_string())).await.unwrap();
    }

    async fn until(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let event = timeout(PATIENCE, self.ws.recv()).await.unwrap().unwrap().unwrap();
            if let Event::Message(Message::Text(text)) = event {
                let envelope: Value = serde_json::from_str(text.as_str()).unwrap();
                if wanted(&envelope) {
                    return envelope;
                }
            }
        }
    }

    async fn publish(&mut self, room: &str, content: &str) {
        self.send(json!({"type": "message", "room": room, "content": content, "id": content})).await;
        self.until(|e| e["type"] == "ack" && e["id"] == content).await;
    }
}

fn client(addr: SocketAddr) -> (HubClient, mpsc::Receiver<HubEvent>) {
    let connection = ClientSettings { url: format!("ws://{addr}/ws"), ..ClientSettings::default() };
    HubClient::start(HubSettings { backoff: BACKOFF, ..HubSettings::new(connection) })
}

/// The client's events, as they come, with what the tests look for.
struct Events {
    events: mpsc::Receiver<HubEvent>,
    /// Every room message seen so far: room, seq and content.
    messages: Vec<(String, u64, String)>,
    reconnections: Vec<HubEvent>,
    gaps: Vec<HubEvent>,
}

impl Events {
    fn new(events: mpsc::Receiver<HubEvent>) -> Events {
        Events { events, messages: Vec::new(), reconnections: Vec::new(), gaps: Vec::new() }
    }

    /// Takes events until one satisfies `wanted`, and returns it.
    async fn until(&mut self, wanted: impl Fn(&HubEvent) -> bool) -> HubEvent {
        loop {
            let event = timeout(PATIENCE, self.events.recv()).await.expect("an event in time").unwrap();
            match &event {
                HubEvent::Message { room, seq, envelope } => {
                    let content = envelope["content"].as_str().unwrap_or_default().to_owned();
                    self.messages.push((room.clone(), *seq, content));
                }
                HubEvent::Reconnecting { .. } => self.reconnections.push(event.clone()),
                HubEvent::Gap { .. } | HubEvent::Renumbered { .. } => self.gaps.push(event.clone()),
                _ => {}
            }
            if wanted(&event) {
                return event;
            }
        }
    }

    async fn joined(&mut self, room: &str) {
        self.until(|e| matches!(e, HubEvent::Envelope(v) if v["type"] == "joined" && v["room"] == room)).await;
    }

    async fn message(&mut self, content: &str) {
        self.until(|e| matches!(e, HubEvent::Message { envelope, .. } if envelope["content"] == content)).await;
    }

    /// Waits for the client to be trying again, `attempts` times.
    async fn retrying(&mut self, attempts: usize) {
        while self.reconnections.len() < attempts {
            self.until(|e| matches!(e, HubEvent::Reconnecting { .. })).await;
        }
    }

    /// The delays stayed under their ceilings, and the ceilings grew up to the maximum.
    fn check_backoff(&self) {
        let mut last_ceiling = Duration::ZERO;
        for event in &self.reconnections {
            let HubEvent::Reconnecting { delay, ceiling, .. } = *event else { unreachable!() };
            assert!(delay <= ceiling && ceiling <= BACKOFF.max, "{event:?}");
            assert!(ceiling >= last_ceiling || ceiling == BACKOFF.initial, "ceilings grow: {:?}", self.reconnections);
            last_ceiling = ceiling;
        }
    }

    fn room(&self, room: &str) -> Vec<(u64, &str)> {
        self.messages.iter().filter(|(r, ..)| r == room).map(|(_, seq, content)| (*seq, content.as_str())).collect()
    }
}

/// Cut off by the proxy, the client retries with backoff; what was
/// published meanwhile, and what it sent meanwhile, arrive once and in
/// order when it is back.
#[tokio::test]
async fn a_client_cut_off_recovers_what_it_missed_once_and_in_order() {
    let addr = server("127.0.0.1:0").await.addr;
    let (front, cut) = proxy("127.0.0.1:0".parse().unwrap(), addr).await;
    let (client, events) = client(front);
    let mut events = Events::new(events);
    client.join("news");
    events.joined("news").await;
    let mut publisher = Publisher::connect(addr, "news").await;
    publisher.publish("news", "one").await;
    events.message("one").await;

    cut.abort();
    events.until(|e| matches!(e, HubEvent::Disconnected { .. })).await;
    events.retrying(3).await;
    publisher.publish("news", "two").await;
    publisher.publish("news", "three").await;
    client.send("news", "mine");
    let (_, _restored) = proxy(front, addr).await;

    events.message("mine").await;
    publisher.publish("news", "four").await;
    events.message("four").await;
    assert_eq!(events.room("news"), [(1, "one"), (2, "two"), (3, "three"), (4, "mine"), (5, "four")]);
    assert!(events.gaps.is_empty(), "{:?}", events.gaps);
    events.check_backoff();
    client.close();
}

/// Joined into a room that has messages already, the client is handed
/// what comes next with no gap for what came before; cut off from a room
/// in which it saw no message yet, it still recovers what came meanwhile.
#[tokio::test]
async fn a_first_join_tells_no_gap_and_a_rejoin_asks_for_what_was_missed_even_before_a_first_message() {
    let addr = server("127.0.0.1:0").await.addr;
    let mut publisher = Publisher::connect(addr, "busy").await;
    publisher.publish("busy", "before").await;
    let (front, cut) = proxy("127.0.0.1:0".parse().unwrap(), addr).await;
    let (client, events) = client(front);
    let mut events = Events::new(events);
    client.join("busy");
    events.joined("busy").await;
    client.join("quiet");
    events.joined("quiet").await;
    publisher.publish("busy", "after").await;
    events.message("after").await;
    assert_eq!(events.room("busy"), [(2, "after")]);
    assert!(events.gaps.is_empty(), "nothing from before the join is missed: {:?}", events.gaps);

    cut.abort();
    events.until(|e| matches!(e, HubEvent::Disconnected { .. })).await;
    let mut quiet = Publisher::connect(addr, "quiet").await;
    quiet.publish("quiet", "meanwhile").await;
    let (_, _restored) = proxy(front, addr).await;
    events.message("meanwhile").await;
    assert_eq!(events.room("quiet"), [(1, "meanwhile")]);
    assert!(events.gaps.is_empty(), "{:?}", events.gaps);
    client.close();
}

/// `send_data` publishes a JSON value as the message's data: other members
/// get it, and the client its ack and its own copy, as for a text.
#[tokio::test]
async fn data_sent_by_the_client_arrives_as_the_messages_data() {
    let addr = server("127.0.0.1:0").await.addr;
    let (client, events) = client(addr);
    let mut events = Events::new(events);
    client.join("feed");
    events.joined("feed").await;
    let mut member = Publisher::connect(addr, "feed").await;
    let data = json!({"price": 1.5, "tags": ["a", null]});
    let id = client.send_data("feed", &data);
    let seen = member.until(|e| e["type"] == "message").await;
    assert_eq!((&seen["data"], seen.get("content")), (&data, None), "{seen}");
    let (mut acked, mut own) = (false, None);
    while !acked || own.is_none() {
        match events.until(|_| true).await {
            HubEvent::Envelope(v) if v["type"] == "ack" => acked = v["id"] == id.as_str(),
            HubEvent::Message { envelope, .. } => own = Some(envelope),
            _ => {}
        }
    }
    assert_eq!(own.map(|envelope| envelope["data"].clone()), Some(data));
    client.close();
}

/// The server restarts (in memory, so its rooms start over, in a new
/// epoch) while the client is cut off: back, the client learns that its
/// room was numbered again, recovers what the new server got meanwhile,
/// and then receives what follows, each once.
#[tokio::test]
async fn a_client_survives_a_server_restart_and_recovers_what_came_meanwhile() {
    let first = server("127.0.0.1:0").await;
    let addr = first.addr;
    let (front, cut) = proxy("127.0.0.1:0".parse().unwrap(), addr).await;
    let (client, events) = client(front);
    let mut events = Events::new(events);
    client.join("news");
    events.joined("news").await;
    Publisher::connect(addr, "news").await.publish("news", "before").await;
    events.message("before").await;

    first.stop().await.unwrap();
    let gone = events.until(|e| matches!(e, HubEvent::Disconnected { .. })).await;
    assert_eq!(gone, HubEvent::Disconnected { code: Some(1001), reason: "server shutting down".into() });
    cut.abort();
    events.retrying(3).await;
    let _second = server(&addr.to_string()).await;
    let mut publisher = Publisher::connect(addr, "news").await;
    publisher.publish("news", "while away").await;
    let (_, _restored) = proxy(front, addr).await;

    events.until(|e| matches!(e, HubEvent::Renumbered { room } if room == "news")).await;
    events.message("while away").await;
    publisher.publish("news", "after").await;
    events.message("after").await;
    assert_eq!(events.room("news"), [(1, "before"), (1, "while away"), (2, "after")]);
    assert_eq!(events.gaps, [HubEvent::Renumbered { room: "news".into() }]);
    events.check_backoff();
    client.close();
}

/// Given a second URL of the hub, a client whose server is gone goes there
/// (the first is never back: only the second can serve it), and recovers
/// what it missed meanwhile, once and in order.
#[tokio::test]
async fn a_client_whose_server_is_gone_goes_to_the_next_url_and_recovers_there() {
    let addr = server("127.0.0.1:0").await.addr;
    let (front, cut) = proxy("127.0.0.1:0".parse().unwrap(), addr).await;
    let connection = ClientSettings { url: format!("ws://{front}/ws"), ..ClientSettings::default() };
    let servers = vec![format!("ws://{addr}/ws")];
    let (client, events) = HubClient::start(HubSettings { backoff: BACKOFF, servers, ..HubSettings::new(connection) });
    let mut events = Events::new(events);
    client.join("news");
    events.joined("news").await;
    let mut publisher = Publisher::connect(addr, "news").await;
    publisher.publish("news", "one").await;
    events.message("one").await;

    cut.abort();
    events.until(|e| matches!(e, HubEvent::Disconnected { .. })).await;
    publisher.publish("news", "two").await;
    events.message("two").await;
    publisher.publish("news", "three").await;
    events.message("three").await;
    assert_eq!(events.room("news"), [(1, "one"), (2, "two"), (3, "three")]);
    assert!(events.gaps.is_empty(), "{:?}", events.gaps);
    client.close();
}

/// A hub of this test alone, scripted: on each connection in turn, for
/// each join the client sends there, the envelopes of that join's step (an
/// `id` of `"$join"` becomes the join's). The first connection ends after
/// its steps, the others stay open. The joins, as received, come out of the
/// channel returned.
async fn scripted_hub(script: Vec<Vec<Vec<Value>>>) -> (SocketAddr, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (joins, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut open = Vec::new();
        for (n, steps) in script.into_iter().enumerate() {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = ws_tokio::server::accept(tcp, ws_tokio::Options::default(), PATIENCE).await.unwrap();
            for envelopes in steps {
                let join = next_join(&mut ws).await;
                for mut envelope in envelopes {
                    if envelope["id"] == "$join" {
                        envelope["id"] = join["id"].clone();
                    }
                    ws.send(&Message::from(envelope.to_string())).await.unwrap();
                }
                let _ = joins.send(join);
            }
            if n > 0 {
                open.push(ws);
            }
        }
        std::future::pending::<()>().await;
    });
    (addr, received)
}

/// The next join the client sends.
async fn next_join(ws: &mut WebSocket<TcpStream>) -> Value {
    while let Some(Ok(event)) = ws.recv().await {
        if let Event::Message(Message::Text(text)) = event {
            let envelope: Value = serde_json::from_str(text.as_str()).unwrap();
            if envelope["type"] == "join" {
                return envelope;
            }
        }
    }
    panic!("the connection ended before a join");
}

/// A gap the server tells while a room recovers (it skipped messages after
/// the replay's) is handed on in its place, after the replayed messages
/// before it: none of those is dropped as if the gap covered it.
#[tokio::test]
async fn a_gap_told_during_a_recovery_comes_after_the_replayed_messages_before_it() {
    let joined = |seq: u64| json!({"type": "joined", "room": "news", "seq": seq, "epoch": "e"});
    let message = |seq: u64| json!({"type": "message", "room": "news", "seq": seq, "content": format!("m{seq}")});
    let gap = json!({"type": "gap", "room": "news", "from": 4, "to": 4});
    let recovered = json!({"type": "recovered", "room": "news", "complete": true});
    let (addr, _) = scripted_hub(vec![
        vec![vec![joined(0), message(1)]],
        vec![vec![joined(5), message(2), message(3), gap, message(5), recovered]],
    ])
    .await;
    let (client, events) = client(addr);
    let mut events = Events::new(events);
    client.join("news");
    events.message("m5").await;
    assert_eq!(events.room("news"), [(1, "m1"), (2, "m2"), (3, "m3"), (5, "m5")]);
    assert_eq!(events.gaps, [HubEvent::Gap { room: "news".into(), from: 4, to: 4 }]);
    client.close();
}

/// A join refused for a while (as while the hub's Redis is down) is sent
/// again after a backoff, with its `since`, and the room recovers then; one
/// refused with `not_offered` (no recovery there) is sent again at once
/// without `since`, and what came meanwhile is told as a gap.
#[tokio::test]
async fn a_refused_rejoin_is_sent_again_and_the_room_recovers() {
    let joined = |room: &str, seq: u64| json!({"type": "joined", "room": room, "seq": seq, "epoch": "e"});
    let message =
        |room: &str, seq: u64| json!({"type": "message", "room": room, "seq": seq, "content": format!("{room}{seq}")});
    let refused = |code: &str| json!({"type": "error", "code": code, "message": "refused", "id": "$join"});
    let recovered = json!({"type": "recovered", "room": "news", "complete": true});
    // The joins come in the order of the rooms' names: feed, then news.
    let (addr, mut joins) = scripted_hub(vec![
        vec![vec![joined("feed", 0), message("feed", 1)], vec![joined("news", 0), message("news", 1)]],
        vec![
            vec![refused("not_offered")],
            vec![refused("unavailable")],
            vec![joined("feed", 3), message("feed", 4)],
            vec![joined("news", 2), message("news", 2), recovered],
        ],
    ])
    .await;
    let (client, events) = client(addr);
    let mut events = Events::new(events);
    client.join("feed");
    events.joined("feed").await;
    client.join("news");
    events.message("news2").await;
    assert_eq!(events.room("feed"), [(1, "feed1"), (4, "feed4")]);
    assert_eq!(events.room("news"), [(1, "news1"), (2, "news2")]);
    assert_eq!(events.gaps, [HubEvent::Gap { room: "feed".into(), from: 2, to: 3 }]);
    let mut sent = Vec::new();
    while sent.len() < 6 {
        let join = timeout(PATIENCE, joins.recv()).await.unwrap().unwrap();
        sent.push((join["room"].as_str().unwrap().to_owned(), join["since"].as_u64()));
    }
    let expected =
        [("feed", None), ("news", None), ("feed", Some(1)), ("news", Some(1)), ("feed", None), ("news", Some(1))];
    assert_eq!(sent, expected.map(|(room, since)| (room.to_owned(), since)));
    client.close();
}
