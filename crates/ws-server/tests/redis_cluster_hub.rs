//! Several servers joined through a real Redis Cluster (`--redis
//! redis+cluster://...`): each test starts its own six-node cluster (three
//! primaries, one replica each, see `tests/redis_cluster`) and two or three
//! in-process servers, then audits what the members of every server receive
//! while rooms live on every primary, while a primary is killed and its
//! replica takes over (with durable acks, `--redis-ack-replicas 1`, and
//! without, where the room's data is then lost for sure), and while a
//! room's slot moves to another primary. Without redis-server installed the
//! tests say so and pass, unless `WS_REQUIRE_REDIS=1`, when they fail.
//!
//! The audit is the one of `tests/cluster.rs`: a member sees each seq of a
//! room at most once and in increasing order, a gap notice counting as the
//! seqs it covers; every acked message reaches every member with its content,
//! or, where Redis may lose what it acked, falls inside a gap it was told of.
//! `RUST_LOG=ws_server=info` (the default) shows what the servers did, with
//! the output of a failing test.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod redis_cluster;

use redis_cluster::{RedisCluster, room_slot};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::timeout;
use ws_proto::{Event, Message};
use ws_server::config::ServerConfig;
use ws_tokio::WebSocket;
use ws_tokio::client::connect;

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// How many times a publisher sends one message (the same id) that is
/// refused as `unavailable` before it gives the message up.
const ATTEMPTS: usize = 100;

/// Between two attempts at a refused message: pacing, so that the attempts
/// span a failover; not what makes a test pass.
const RETRY_PACE: Duration = Duration::from_millis(100);

/// Between two messages of a publisher: pacing only.
const PACE: Duration = Duration::from_millis(5);

/// How many messages the publishers get acked before the cluster is
/// disturbed, and again after it settled.
const STREAM: usize = 30;

/// Shows the servers' logs (`RUST_LOG`, `ws_server=info` by default) with
/// the output of a failing test.
fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("ws_server=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Starts a server on a free port, joined to the cluster at `url`.
async fn server(url: &str, flags: &[&str]) -> SocketAddr {
    let args = ["ws-server", "--listen", "127.0.0.1:0", "--rate-limit", "0", "--redis", url];
    ws_server::http::spawn(ServerConfig::load(args.iter().chain(flags)).unwrap()).await.unwrap().addr
}

/// A WebSocket client of the hub.
struct Client {
    ws: WebSocket<TcpStream>,
}

impl Client {
    /// Connects, and takes the welcome and the `joined` of the default room.
    async fn connect(addr: SocketAddr) -> Client {
        let (ws, _) = connect(&format!("ws://{addr}/ws")).await.unwrap();
        let mut client = Client { ws };
        assert_eq!(client.next().await["type"], "system");
        let joined = client.next().await;
        assert_eq!((&joined["type"], &joined["room"]), (&json!("joined"), &json!("general")), "{joined}");
        client
    }

    async fn send(&mut self, envelope: Value) {
        self.ws.send(&Message::from(envelope.to_string())).await.unwrap();
    }

    /// The next envelope.
    async fn next(&mut self) -> Value {
        loop {
            let event = timeout(PATIENCE, self.ws.recv()).await.expect("an envelope in time");
            match event.expect("an open connection").expect("no error") {
                Event::Message(Message::Text(text)) => return serde_json::from_str(text.as_str()).unwrap(),
                Event::Close(close) => panic!("closed: {close:?}"),
                _ => {}
            }
        }
    }

    /// Joins `room` (no message of it comes before): its `joined`.
    async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "room": room, "id": format!("join-{room}")})).await;
        loop {
            let reply = self.next().await;
            match reply["type"].as_str() {
                Some("joined") if reply["room"] == room => return reply,
                Some("error") => panic!("join {room}: {reply}"),
                _ => {}
            }
        }
    }

    /// Joins `room` with `since`, nothing being published there meanwhile:
    /// its `joined`, the messages replayed as (seq, content), and whether
    /// `recovered` says the replay is complete.
    async fn recover(&mut self, room: &str, since: u64) -> (Value, Vec<(u64, String)>, bool) {
        self.send(json!({"type": "join", "room": room, "since": since})).await;
        let joined = loop {
            let reply = self.next().await;
            assert_ne!(reply["type"], "error", "join {room} since {since}: {reply}");
            if reply["type"] == "joined" && reply["room"] == room {
                break reply;
            }
        };
        let mut replayed = Vec::new();
        loop {
            let envelope = self.next().await;
            if envelope["room"] != room {
                continue;
            }
            match envelope["type"].as_str() {
                Some("message") => {
                    replayed.push((envelope["seq"].as_u64().unwrap(), envelope["content"].as_str().unwrap().into()))
                }
                Some("recovered") => return (joined, replayed, envelope["complete"] == true),
                _ => panic!("join {room} since {since}: {envelope} in the replay"),
            }
        }
    }

    /// Publishes to `room` with `id`: the ack's seq, or the error's code and message.
    async fn publish(&mut self, room: &str, id: &str, content: &str) -> Result<u64, (String, String)> {
        self.send(json!({"type": "message", "room": room, "id": id, "content": content})).await;
        loop {
            let reply = self.next().await;
            match (reply["type"].as_str(), reply["id"].as_str()) {
                (Some("ack"), Some(acked)) if acked == id => return Ok(reply["seq"].as_u64().unwrap()),
                (Some("error"), Some(failed)) if failed == id => {
                    return Err((reply["code"].as_str().unwrap().into(), reply["message"].as_str().unwrap().into()));
                }
                _ => {}
            }
        }
    }
}

/// What one member saw of a room: messages by seq (counted), and gaps.
#[derive(Default, Debug)]
struct Seen {
    contents: BTreeMap<u64, (String, usize)>,
    gaps: Vec<(u64, u64)>,
    last: u64,
}

impl Seen {
    /// Takes one envelope of the room; Err unless its seq (a gap's first)
    /// follows the last: out of order, or twice.
    fn take(&mut self, envelope: &Value) -> Result<(), String> {
        let (from, to) = match envelope["type"].as_str() {
            Some("message") => {
                let seq = envelope["seq"].as_u64().unwrap();
                let entry = self.contents.entry(seq).or_insert((envelope["content"].as_str().unwrap().into(), 0));
                entry.1 += 1;
                (seq, seq)
            }
            Some("gap") => {
                let gap = (envelope["from"].as_u64().unwrap(), envelope["to"].as_u64().unwrap());
                assert!(gap.0 <= gap.1, "an empty gap: {envelope}");
                self.gaps.push(gap);
                gap
            }
            _ => return Ok(()),
        };
        if from <= self.last {
            return Err(format!("seq {from} after {}: out of order or twice ({envelope})", self.last));
        }
        self.last = to;
        Ok(())
    }

    /// Whether `seq` is inside a gap this member was told of.
    fn in_gap(&self, seq: u64) -> bool {
        self.gaps.iter().any(|&(from, to)| (from..=to).contains(&seq))
    }
}

/// Whether the cluster may lose what it acked: what the audit forgives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Losses {
    /// Nothing acked may be lost, and no member is told a gap.
    None,
    /// An acked message may be lost, but only inside a gap the member was told of.
    Told,
}

/// A member of some rooms, and what it saw of each.
struct Member {
    /// Which member, on which server: for the failures.
    name: String,
    client: Client,
    seen: HashMap<String, Seen>,
}

impl Member {
    /// Connects to `addr` and joins `rooms`, each empty yet.
    async fn join(name: String, addr: SocketAddr, rooms: &[String]) -> Member {
        let mut client = Client::connect(addr).await;
        for room in rooms {
            let joined = client.join(room).await;
            assert_eq!(joined["seq"], 0, "{name}: {room} has no message yet: {joined}");
        }
        let seen = rooms.iter().map(|room| (room.clone(), Seen::default())).collect();
        Member { name, client, seen }
    }

    /// Reads the next envelope: one of its rooms' is taken into what it saw.
    async fn read(&mut self) -> Value {
        let envelope = self.client.next().await;
        if let Some(seen) = envelope["room"].as_str().and_then(|room| self.seen.get_mut(room)) {
            if let Err(wrong) = seen.take(&envelope) {
                panic!("{}: {wrong}; saw {seen:?}", self.name);
            }
        }
        envelope
    }

    /// Reads (every room's envelopes) until it has seen seq `upto` of
    /// `room`, or a gap past it.
    async fn read_until(&mut self, room: &str, upto: u64) {
        let read = async {
            while self.seen[room].last < upto {
                self.read().await;
            }
        };
        if timeout(PATIENCE, read).await.is_err() {
            panic!("{}: seq {upto} of {room} not reached within {PATIENCE:?}; saw {:?}", self.name, self.seen[room]);
        }
    }

    /// Checks what it saw of `room` against what was `acked` there (its seqs
    /// were checked as they came: each once, in order): each acked message
    /// with its content, or, with `Losses::Told`, inside a gap it was told
    /// of. With `Losses::None`, no gap at all, and no message (each has a
    /// content of its own) under two seqs: a retry is never numbered again.
    /// (Where Redis may lose what it acked, it may lose the retry's record
    /// too: a message whose first try was delivered but its ack lost with
    /// the primary is numbered again when sent again.)
    fn audit(&self, room: &str, acked: &BTreeMap<u64, String>, losses: Losses) {
        let (name, seen) = (&self.name, &self.seen[room]);
        for (seq, content) in acked {
            match seen.contents.get(seq) {
                Some((received, count)) => assert_eq!(
                    (received, *count),
                    (content, 1),
                    "{name}: acked seq {seq} of {room} received with another content or more than once"
                ),
                None if losses == Losses::Told && seen.in_gap(*seq) => {}
                None => panic!("{name}: acked seq {seq} of {room} ({content}) neither received nor in a gap: {seen:?}"),
            }
        }
        if losses == Losses::None {
            assert!(seen.gaps.is_empty(), "{name}: gaps in {room} where nothing acked may be lost: {:?}", seen.gaps);
            let mut contents = BTreeMap::new();
            for (seq, (content, _)) in &seen.contents {
                if let Some(first) = contents.insert(content, *seq) {
                    panic!("{name}: {content:?} received twice in {room}, as seq {first} and seq {seq}");
                }
            }
        }
        let told: u64 = seen.gaps.iter().map(|(from, to)| to - from + 1).sum();
        eprintln!(
            "{name}: {room}: {} of {} acked received, {} received in all, gaps {:?} ({told} seqs)",
            acked.keys().filter(|seq| seen.contents.contains_key(seq)).count(),
            acked.len(),
            seen.contents.len(),
            seen.gaps
        );
    }

    /// Reads what the server queued for it so far: until the `pong` of a
    /// `ping`, which comes after it.
    async fn read_queued(&mut self) {
        self.client.send(json!({"type": "ping", "id": "queued"})).await;
        while self.read().await != json!({"type": "pong", "id": "queued"}) {}
    }
}

/// A member on every server, twice, each in `rooms`.
async fn members(servers: &[SocketAddr], rooms: &[String]) -> Vec<Member> {
    let mut members = Vec::new();
    for (m, addr) in servers.iter().chain(servers).enumerate() {
        members.push(Member::join(format!("member {m} on server {}", m % servers.len()), *addr, rooms).await);
    }
    members
}

/// Publishes messages of its own to one room, each with an id of its own,
/// sending a refused one again with the same id until it is acked.
struct Publisher {
    name: String,
    client: Client,
    room: String,
    /// The messages acked: content by seq.
    acked: BTreeMap<u64, String>,
    /// How many messages it sent (first attempts).
    sent: usize,
    /// How many attempts were refused as `unavailable`.
    refused: usize,
    /// How many messages it gave up after `ATTEMPTS` refusals.
    given_up: usize,
    /// What it told so far, shared with the other publishers of a `Stream`.
    progress: Arc<watch::Sender<Progress>>,
}

/// What publishers were told so far, all together.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// Messages acked.
    acked: usize,
    /// Attempts refused because too few replicas took the message in time
    /// (`--redis-ack-replicas`).
    unreplicated: usize,
    /// The highest seq acked.
    last: u64,
}

impl Publisher {
    /// A publisher named `name` on the server at `addr`, in `room`.
    async fn join(name: String, addr: SocketAddr, room: &str) -> Publisher {
        let mut client = Client::connect(addr).await;
        client.join(room).await;
        let (room, progress) = (room.to_owned(), Arc::new(watch::channel(Progress::default()).0));
        Publisher { name, client, room, acked: BTreeMap::new(), sent: 0, refused: 0, given_up: 0, progress }
    }

    /// Publishes its next message, `content` if given: its seq, once acked;
    /// `None` if it was refused `ATTEMPTS` times.
    async fn publish(&mut self, content: Option<&str>) -> Option<u64> {
        self.sent += 1;
        let id = format!("{}-{}", self.name, self.sent);
        let content = content.map_or_else(|| format!("{} message {}", self.name, self.sent), str::to_owned);
        for attempt in 1..=ATTEMPTS {
            match self.client.publish(&self.room, &id, &content).await {
                Ok(seq) => {
                    let earlier = self.acked.insert(seq, content.clone());
                    assert!(earlier.is_none(), "{}: seq {seq} acked twice: {earlier:?} and {content}", self.name);
                    self.progress.send_modify(|progress| {
                        progress.acked += 1;
                        progress.last = progress.last.max(seq);
                    });
                    return Some(seq);
                }
                Err((code, message)) => {
                    assert_eq!(code, "unavailable", "{}: {id} refused: {message}", self.name);
                    self.refused += 1;
                    if message.contains("too few replicas") {
                        self.progress.send_modify(|progress| progress.unreplicated += 1);
                    }
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(RETRY_PACE).await;
                    }
                }
            }
        }
        self.given_up += 1;
        None
    }
}

/// Publishers publishing all at once, each in a task of its own, until stopped.
struct Stream {
    tasks: Vec<tokio::task::JoinHandle<Publisher>>,
    stop: Arc<AtomicBool>,
    progress: watch::Receiver<Progress>,
}

impl Stream {
    fn start(publishers: Vec<Publisher>) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(watch::channel(Progress::default()).0);
        let tasks = publishers
            .into_iter()
            .map(|mut publisher| {
                publisher.progress = progress.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        publisher.publish(None).await;
                        tokio::time::sleep(PACE).await;
                    }
                    publisher
                })
            })
            .collect();
        Stream { tasks, stop, progress: progress.subscribe() }
    }

    /// What the publishers were told so far.
    fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    /// Waits until the publishers' progress is `done`.
    async fn wait(&mut self, what: &str, done: impl FnMut(&Progress) -> bool) {
        let reached = timeout(PATIENCE, self.progress.wait_for(done)).await.is_ok();
        assert!(reached, "{what}: not within {PATIENCE:?}; {:?}", self.progress());
    }

    /// Waits until `n` messages in all were acked.
    async fn wait_acked(&mut self, n: usize, what: &str) {
        self.wait(&format!("{what}: {n} messages acked"), |progress| progress.acked >= n).await;
    }

    /// Stops the publishers once their current message is done; them.
    async fn stop(self) -> Vec<Publisher> {
        self.stop.store(true, Ordering::Relaxed);
        let mut publishers = Vec::new();
        for task in self.tasks {
            publishers.push(task.await.unwrap());
        }
        publishers
    }
}

/// Every publisher's acked messages, which no two share a seq of.
fn all_acked(publishers: &[Publisher]) -> BTreeMap<u64, String> {
    let mut all = BTreeMap::new();
    for publisher in publishers {
        eprintln!(
            "{}: sent {}, acked {}, refused attempts {}, given up {}",
            publisher.name,
            publisher.sent,
            publisher.acked.len(),
            publisher.refused,
            publisher.given_up
        );
        for (seq, content) in &publisher.acked {
            if let Some(other) = all.insert(*seq, content.clone()) {
                panic!("seq {seq} acked for two messages: {other:?} and {content:?}");
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_every_primary_reach_members_on_every_server_once_and_in_order() {
    logs();
    let Some(cluster) = RedisCluster::start().await else { return };
    let rooms = cluster.rooms_on_every_primary("spread", 1).await;
    let primaries: BTreeSet<usize> = cluster.primaries().await.iter().map(|primary| primary.node).collect();
    let mut on = BTreeSet::new();
    for room in &rooms {
        on.insert(cluster.primary_of_room(room).await.node);
    }
    assert_eq!((on.len(), &on), (3, &primaries), "the rooms {rooms:?} are on three distinct primaries");

    let url = cluster.url();
    let servers = [server(&url, &[]).await, server(&url, &[]).await, server(&url, &[]).await];
    let mut members = members(&servers, &rooms).await;
    // One publisher on each server, in every room, all three at once.
    const ROUNDS: usize = 10;
    let mut publishing = Vec::new();
    for (p, addr) in servers.iter().enumerate() {
        let mut client = Client::connect(*addr).await;
        for room in &rooms {
            client.join(room).await;
        }
        let rooms = rooms.clone();
        publishing.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for round in 0..ROUNDS {
                for room in &rooms {
                    let content = format!("publisher {p} round {round} in {room}");
                    let seq = client.publish(room, &format!("p{p}-{round}-{room}"), &content).await;
                    acked.push((room.clone(), seq.unwrap_or_else(|refused| panic!("{content}: {refused:?}")), content));
                }
            }
            acked
        }));
    }
    let mut acked: BTreeMap<String, BTreeMap<u64, String>> = BTreeMap::new();
    for task in publishing {
        for (room, seq, content) in task.await.unwrap() {
            let earlier = acked.entry(room.clone()).or_default().insert(seq, content);
            assert!(earlier.is_none(), "seq {seq} of {room} acked twice");
        }
    }
    let per_room = (servers.len() * ROUNDS) as u64;
    for (room, acked) in &acked {
        assert_eq!(acked.keys().copied().collect::<Vec<_>>(), (1..=per_room).collect::<Vec<_>>(), "{room}");
    }
    for member in &mut members {
        for (room, acked) in &acked {
            member.read_until(room, per_room).await;
            member.audit(room, acked, Losses::None);
            let received: BTreeMap<u64, &String> =
                member.seen[room].contents.iter().map(|(s, (c, _))| (*s, c)).collect();
            assert_eq!(received, acked.iter().map(|(s, c)| (*s, c)).collect(), "{}: {room}", member.name);
        }
    }

    // Recovery on any server: a client that saw a room up to `since` gets
    // exactly what came after, from the stream of the room's primary.
    for (r, room) in rooms.iter().enumerate() {
        for (s, addr) in servers.iter().enumerate() {
            let since = ((r + s) % servers.len()) as u64 * per_room / 3;
            let mut late = Client::connect(*addr).await;
            let (joined, replayed, complete) = late.recover(room, since).await;
            assert_eq!(joined["seq"], per_room, "{joined}");
            let expected: Vec<(u64, String)> = acked[room].range(since + 1..).map(|(s, c)| (*s, c.clone())).collect();
            assert_eq!(replayed, expected, "{room} since {since} on server {s}");
            assert!(complete, "{room} since {since} on server {s}: the replay is complete");
        }
    }
}

/// A cluster, two servers with `flags` and two members on each in the room
/// `failover`, and a publisher on each publishing there, all at once.
async fn failover_stream(flags: &[&str]) -> Option<(RedisCluster, [SocketAddr; 2], Vec<Member>, Stream)> {
    logs();
    let cluster = RedisCluster::start().await?;
    let url = cluster.url();
    let servers = [server(&url, flags).await, server(&url, flags).await];
    let members = members(&servers, &["failover".to_owned()]).await;
    let mut publishers = Vec::new();
    for (p, addr) in servers.iter().enumerate() {
        publishers.push(Publisher::join(format!("publisher {p}"), *addr, "failover").await);
    }
    Some((cluster, servers, members, Stream::start(publishers)))
}

/// Stops the publishers, publishes a last message through the first, reads
/// every member until it came and audits it, forgiving `losses`; what was acked.
async fn last_and_audit(stream: Stream, members: &mut [Member], losses: Losses) -> BTreeMap<u64, String> {
    let mut publishers = stream.stop().await;
    let marker = publishers[0].publish(Some("the last one")).await.expect("the last message acked");
    let acked = all_acked(&publishers);
    assert_eq!(acked.keys().last(), Some(&marker), "the last message came after every other acked message");
    for member in members {
        member.read_until("failover", marker).await;
        member.audit("failover", &acked, losses);
        let last = member.seen["failover"].contents.get(&marker);
        assert_eq!(last, Some(&("the last one".to_owned(), 1)), "{}", member.name);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_stream_with_durable_acks_loses_no_acked_message() {
    let flags = ["--redis-ack-replicas", "1"];
    let Some((mut cluster, _, mut members, mut stream)) = failover_stream(&flags).await else { return };
    let primary = cluster.primary_of_room("failover").await;
    stream.wait_acked(STREAM, "before the kill").await;
    cluster.kill(primary.node).await;
    let heir = cluster.wait_failover(primary.node).await;
    assert_eq!(cluster.primary_of_room("failover").await.node, heir, "the replica serves the room");
    // The heir has no replica: what it numbers now is held nowhere else, so
    // it is refused, and sent again with its id, until the killed node is
    // back as the heir's replica.
    stream.wait("a message refused while no replica holds it", |progress| progress.unreplicated > 0).await;
    cluster.restart(primary.node).await;
    let now = cluster.primary_of_room("failover").await;
    assert_eq!((now.node, now.replicas), (heir, vec![primary.node]), "the killed node is back as the replica");
    let replicated = stream.progress().acked;
    stream.wait_acked(replicated + STREAM, "with a replica again").await;
    let acked = last_and_audit(stream, &mut members, Losses::None).await;
    eprintln!("acked {}, {replicated} when the heir had a replica again", acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_mid_stream_without_durable_acks_tells_what_it_lost() {
    let Some((mut cluster, servers, mut members, mut stream)) = failover_stream(&[]).await else { return };
    let primary = cluster.primary_of_room("failover").await;
    stream.wait_acked(STREAM, "before the kill").await;
    cluster.kill(primary.node).await;
    let heir = cluster.wait_failover(primary.node).await;
    assert_eq!(cluster.primary_of_room("failover").await.node, heir, "the replica serves the room");
    let served = stream.progress().acked;
    stream.wait_acked(served + STREAM, "after the failover").await;
    // What the heir acked since is held nowhere else: killed with it, and
    // the first primary back with no data takes the room over, the loss is sure.
    let before_loss = stream.progress().last;
    cluster.kill(heir).await;
    cluster.restart(primary.node).await;
    assert_eq!(cluster.primary_of_room("failover").await.node, primary.node, "the first primary is back, empty");
    let back = stream.progress().acked;
    stream.wait_acked(back + STREAM, "after the loss").await;
    let acked = last_and_audit(stream, &mut members, Losses::Told).await;
    eprintln!("acked {}: {served} when the replica took over, {back} when the first primary was back", acked.len());
    // The room's seqs went on past what was lost; a client that saw it up
    // to just before the loss is told that the history no longer reaches back.
    let mut late = Client::connect(servers[1]).await;
    let (joined, replayed, complete) = late.recover("failover", before_loss - 1).await;
    assert_eq!(joined["seq"], *acked.keys().last().unwrap(), "{joined}");
    assert!(!complete, "seq {before_loss} was lost: {replayed:?}");
    assert!(replayed.iter().all(|(seq, _)| *seq > before_loss), "the seqs went on past the lost: {replayed:?}");
    for (seq, content) in &replayed {
        assert!(acked.get(seq).is_none_or(|acked| acked == content), "seq {seq} replayed as {content:?}");
    }
    assert_eq!(replayed.last(), acked.last_key_value().map(|(s, c)| (*s, c.clone())).as_ref(), "up to the last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_resharded_mid_stream_loses_and_doubles_nothing() {
    logs();
    let Some(cluster) = RedisCluster::start().await else { return };
    let room = "resharded".to_owned();
    let slot = room_slot(&room);
    let source = cluster.primary_of(slot).await;
    let target = cluster.primaries().await.into_iter().find(|primary| primary.node != source.node).unwrap();
    let url = cluster.url();
    let servers = [server(&url, &[]).await, server(&url, &[]).await, server(&url, &[]).await];
    let mut members = members(&servers, std::slice::from_ref(&room)).await;
    let mut publishers = Vec::new();
    for (p, addr) in servers.iter().enumerate() {
        publishers.push(Publisher::join(format!("publisher {p}"), *addr, &room).await);
    }
    let mut stream = Stream::start(publishers);
    stream.wait_acked(STREAM, "before the move").await;
    let before = stream.progress().acked;
    cluster.migrate_slot(slot, target.node).await;
    let moved = stream.progress().acked;
    assert_eq!(cluster.primary_of_room(&room).await.node, target.node, "the room's slot moved");
    stream.wait_acked(moved + STREAM, "after the move").await;
    let mut publishers = stream.stop().await;
    // Each server publishes once more, and every member hears each: every
    // server numbers on the new primary, and follows the room's channel there.
    let mut markers = Vec::new();
    for publisher in &mut publishers {
        let content = format!("{}: after the move", publisher.name);
        markers.push((publisher.publish(Some(&content)).await.expect("a marker acked after the move"), content));
    }
    let acked = all_acked(&publishers);
    eprintln!("acked {}: {before} when the move began, {moved} when it ended", acked.len());
    let last = *acked.keys().last().unwrap();
    assert_eq!(last, markers.last().unwrap().0, "the markers came after every other acked message");
    let seq_key = format!("ws:{{{room}}}:seq");
    assert_eq!(cluster.query::<u64>(target.node, &["GET", &seq_key]).await, last, "the new primary numbers the room");
    for member in &mut members {
        member.read_until(&room, last).await;
        member.audit(&room, &acked, Losses::None);
        for (seq, content) in &markers {
            assert_eq!(member.seen[&room].contents.get(seq), Some(&(content.clone(), 1)), "{}", member.name);
        }
    }
}

/// The value of the metric `name` of the server at `addr` (`/metrics`).
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = http(addr, &format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")).await;
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("{name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// What the server at `addr` answers to `request`, whole.
async fn http(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    timeout(PATIENCE, tcp.read_to_string(&mut text)).await.expect("an answer in time").unwrap();
    text
}

/// The history of `room` from the server API at `addr` (its key `k`): the
/// answer's status line and body.
async fn api_history(addr: SocketAddr, room: &str) -> (String, String) {
    api(addr, "/api/history", &format!(r#"{{"room":"{room}"}}"#)).await
}

/// What the server API at `addr` (its key `k`) answers to `body` posted to
/// `path`: the answer's status line and body.
async fn api(addr: SocketAddr, path: &str, body: &str) -> (String, String) {
    let headers =
        format!("Host: {addr}\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\nConnection: close", body.len());
    let answer = http(addr, &format!("POST {path} HTTP/1.1\r\n{headers}\r\n\r\n{body}")).await;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// Waits until the server at `addr` counts more than `outages` outages of
/// its link to Redis and is linked again: subscribed again to its rooms and
/// caught up with them (`ws_redis_up` is 1 only then).
async fn wait_linked_again(addr: SocketAddr, outages: f64) {
    let linked = async {
        while metric(addr, "ws_redis_outages_total").await <= outages || metric(addr, "ws_redis_up").await != 1.0 {
            // Between two looks at the metrics.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    timeout(PATIENCE, linked).await.expect("the server linked again in time");
}

/// Publishes `content` with `id` through `client` until it is acked, sending
/// it again on `unavailable` up to `ATTEMPTS` times: its seq.
async fn acked(client: &mut Client, room: &str, id: &str, content: &str) -> u64 {
    for _ in 0..ATTEMPTS {
        match client.publish(room, id, content).await {
            Ok(seq) => return seq,
            Err((code, message)) => assert_eq!(code, "unavailable", "{id}: {message}"),
        }
        tokio::time::sleep(RETRY_PACE).await;
    }
    panic!("{id} not acked in {ATTEMPTS} attempts");
}

/// With durable acks, a message is delivered to members only once a
/// replica holds it, also when a server links again and catches a room up
/// from its stream, where the message was numbered before it was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_durable_acks_a_message_no_replica_holds_reaches_no_member_when_the_servers_link_again() {
    logs();
    let Some(mut cluster) = RedisCluster::start().await else { return };
    let (url, flags) = (cluster.url(), ["--redis-ack-replicas", "1", "--api-key", "k"]);
    let servers = [server(&url, &flags).await, server(&url, &flags).await];
    let room = "failover".to_owned();
    let mut members = members(&servers, std::slice::from_ref(&room)).await;
    let mut publisher = Client::connect(servers[0]).await;
    publisher.join(&room).await;
    assert_eq!(publisher.publish(&room, "first", "held by a replica").await, Ok(1));
    let primary = cluster.primary_of_room(&room).await;
    cluster.kill(primary.node).await;
    let heir = cluster.wait_failover(primary.node).await;
    // The heir has no replica: the message is numbered there, and refused.
    let unheld = "held by no replica";
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts <= ATTEMPTS, "not refused for want of a replica in {ATTEMPTS} attempts");
        match publisher.publish(&room, "second", unheld).await {
            Err((_, message)) if message.contains("too few replicas") => break,
            Err((code, message)) => assert_eq!(code, "unavailable", "{message}"),
            Ok(seq) => panic!("acked as seq {seq} while the heir has no replica"),
        }
        tokio::time::sleep(RETRY_PACE).await;
    }
    // Every server's subscriptions on the heir are cut: each links again,
    // subscribes again, and catches the room up from its stream.
    let mut outages = Vec::new();
    for addr in servers {
        outages.push(metric(addr, "ws_redis_outages_total").await);
    }
    let cut: u64 = cluster.query(heir, &["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    assert!(cut >= 2, "the subscriptions of both servers cut: {cut}");
    for (addr, outages) in servers.iter().zip(outages) {
        wait_linked_again(*addr, outages).await;
    }
    for member in &mut members {
        member.read_queued().await;
        let seen = &member.seen[&room];
        let early = seen.contents.iter().find(|(_, (content, _))| content == unheld);
        assert!(early.is_none(), "{}: {early:?} delivered while no replica holds it: {seen:?}", member.name);
    }
    // Nor does the server API's history give it.
    for addr in servers {
        let (status, body) = api_history(addr, &room).await;
        assert!(status.contains(" 503 ") && body.contains("unavailable"), "{status}: {body}");
        assert!(!body.contains(unheld), "{body}");
    }
    // With the killed node back as the heir's replica, the retry is acked
    // with the seq the message was numbered first, and reaches every member once.
    cluster.restart(primary.node).await;
    let seq = acked(&mut publisher, &room, "second", unheld).await;
    assert_eq!(seq, 2, "the retry gets the first seq");
    let acked = BTreeMap::from([(1, "held by a replica".to_owned()), (2, unheld.to_owned())]);
    for member in &mut members {
        member.read_until(&room, 2).await;
        member.audit(&room, &acked, Losses::None);
    }
    let (status, body) = api_history(servers[1], &room).await;
    assert!(status.contains(" 200 ") && body.contains(unheld), "{status}: {body}");
}

/// Without durable acks, a replica promoted without the last messages its
/// primary acked numbers past them, also for a server that never heard of
/// them (no member of the room there): no seq is acked for two messages,
/// and a client that recovers is told that the history does not reach back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promoted_without_the_last_acked_messages_never_acks_their_seqs_again() {
    logs();
    let Some(mut cluster) = RedisCluster::start().await else { return };
    let (url, flags) = (cluster.url(), ["--api-key", "k"]);
    let servers = [server(&url, &flags).await, server(&url, &flags).await];
    let room = "promoted";
    for n in 1..=3 {
        assert_eq!(api_publish(servers[0], room, &format!("held {n}")).await, n);
    }
    let primary = cluster.primary_of_room(room).await;
    let replica = primary.replicas[0];
    cluster.wait_replicated(primary.node, replica).await;
    cluster.cut_off(replica).await;
    assert_eq!(api_publish(servers[0], room, "held by the primary alone").await, 4);
    cluster.kill(primary.node).await;
    assert_eq!(cluster.wait_failover(primary.node).await, replica, "the replica took over");
    let seq = api_publish(servers[1], room, "numbered by the heir").await;
    assert!(seq > 4 + 9_999, "seq {seq}: the heir numbers past what its primary may have acked");
    let mut late = Client::connect(servers[1]).await;
    let (joined, replayed, complete) = late.recover(room, 3).await;
    assert_eq!(joined["seq"], seq, "{joined}");
    assert_eq!(replayed, [(seq, "numbered by the heir".to_owned())]);
    assert!(!complete, "seq 4 was lost with the primary");
}

/// Publishes `content` to `room` through the server API at `addr` (its key
/// `k`), with `content` as its id, sending it again on `unavailable` up to
/// `ATTEMPTS` times: the ack's seq.
async fn api_publish(addr: SocketAddr, room: &str, content: &str) -> u64 {
    let body = json!({"type": "message", "room": room, "content": content, "id": content}).to_string();
    for _ in 0..ATTEMPTS {
        let (status, answer) = api(addr, "/api/publish", &body).await;
        let reply: Value = serde_json::from_str(&answer).unwrap_or_else(|_| panic!("an envelope: {status} {answer}"));
        if let Some(seq) = reply["seq"].as_u64() {
            return seq;
        }
        assert_eq!(reply["code"], "unavailable", "{content}: {reply}");
        tokio::time::sleep(RETRY_PACE).await;
    }
    panic!("{content} not acked in {ATTEMPTS} attempts");
}

/// Without durable acks, a connection's burst through the cluster is
/// numbered in the order it was sent, and acked in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connections_burst_through_the_cluster_is_numbered_in_the_order_sent() {
    logs();
    let Some(cluster) = RedisCluster::start().await else { return };
    let url = cluster.url();
    let addr = server(&url, &["--max-queue-bytes", "16777216", "--room-buffer", "4096"]).await;
    let mut publisher = Client::connect(addr).await;
    let room = "burst";
    publisher.join(room).await;
    // Once the script is loaded on the room's node: a refusal is not what this is about.
    assert_eq!(acked(&mut publisher, room, "first", "first").await, 1);
    const BURST: usize = 1000;
    for n in 0..BURST {
        publisher.send(json!({"type": "message", "room": room, "id": format!("m{n}"), "content": "burst"})).await;
    }
    let mut acks = Vec::new();
    while acks.len() < BURST {
        let reply = publisher.next().await;
        match reply["type"].as_str() {
            Some("ack") => acks.push((reply["id"].as_str().unwrap().to_owned(), reply["seq"].as_u64().unwrap())),
            Some("error") => panic!("{reply}"),
            _ => {}
        }
    }
    let sent: Vec<String> = (0..BURST).map(|n| format!("m{n}")).collect();
    let ids: Vec<&String> = acks.iter().map(|(id, _)| id).collect();
    assert_eq!(ids, sent.iter().collect::<Vec<_>>(), "acked in the order sent");
    let seqs: Vec<u64> = acks.iter().map(|(_, seq)| *seq).collect();
    let expected: Vec<u64> = (2..2 + BURST as u64).collect();
    assert_eq!(seqs, expected, "numbered in the order sent");
}
