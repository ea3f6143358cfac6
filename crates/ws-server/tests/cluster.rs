//! Several servers joined through a real Redis: each test starts its own
//! `redis-server` on a free port, without persistence, and two or three
//! servers with `--redis`, then asserts on what clients of every server
//! receive. Without redis-server installed the tests say so and pass, unless
//! `WS_REQUIRE_REDIS=1` (as `.ci/run` sets), when they fail.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::timeout;
use ws_proto::{Event, Message};
use ws_server::config::ServerConfig;
use ws_tokio::WebSocket;
use ws_tokio::client::connect;

/// Generous: a wait for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(30);

/// A `redis-server` of this test alone, stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Redis {
    /// Starts one on a free port; `None` (said on stderr) when redis-server
    /// is not installed, unless `WS_REQUIRE_REDIS=1`.
    async fn start() -> Option<Redis> {
        if Command::new("redis-server").arg("--version").stdout(Stdio::null()).status().is_err() {
            let why = "the cluster tests need redis-server (apt-get install redis-server)";
            assert!(std::env::var("WS_REQUIRE_REDIS").as_deref() != Ok("1"), "WS_REQUIRE_REDIS=1, but {why}");
            // Once for all the tests, straight to standard error, past the harness's capture.
            static SKIPPED: std::sync::Once = std::sync::Once::new();
            SKIPPED.call_once(|| {
                let skipped = format!("Redis tests skipped: {why}; WS_REQUIRE_REDIS=1 makes this a failure\n");
                let _ = std::io::Write::write_all(&mut std::io::stderr(), skipped.as_bytes());
            });
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("ws-server-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Redis { child: spawn_redis(port, &dir), port, dir };
        redis.wait_ready().await;
        Some(redis)
    }

    /// Sends one command, in RESP, and reads the first line of the reply.
    async fn command(&self, args: &[&str]) -> String {
        self.reply_lines(args, 1).await.remove(0)
    }

    /// How many connections are subscribed to the channel of `room`.
    async fn subscribers(&self, room: &str) -> u64 {
        // *2, $len, the channel, then :count.
        let reply = self.reply_lines(&["PUBSUB", "NUMSUB", &format!("ws:{{{room}}}:channel")], 4).await;
        reply[3].trim().trim_start_matches(':').parse().unwrap()
    }

    /// Sends one command, in RESP, and reads `lines` lines of the reply.
    async fn reply_lines(&self, args: &[&str], lines: usize) -> Vec<String> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request += &format!("${}\r\n{arg}\r\n", arg.len());
        }
        let mut tcp = BufReader::new(TcpStream::connect(("127.0.0.1", self.port)).await.unwrap());
        tcp.get_mut().write_all(request.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        for _ in 0..lines {
            let mut line = String::new();
            tcp.read_line(&mut line).await.unwrap();
            assert!(!line.starts_with('-'), "{args:?}: {line}");
            reply.push(line);
        }
        reply
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it outright (SIGKILL): whatever it held is gone.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts it again, empty, on the same port.
    async fn restart(&mut self) {
        self.child = spawn_redis(self.port, &self.dir);
        self.wait_ready().await;
    }

    /// Waits until it answers PING.
    async fn wait_ready(&mut self) {
        let ready = async {
            loop {
                if let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", self.port)).await {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut pong = [0; 7];
                    if tcp.write_all(b"PING\r\n").await.is_ok() && tcp.read_exact(&mut pong).await.is_ok() {
                        assert_eq!(&pong, b"+PONG\r\n");
                        return;
                    }
                }
                assert!(self.child.try_wait().unwrap().is_none(), "redis-server exited");
                tokio::task::yield_now().await;
            }
        };
        timeout(PATIENCE, ready).await.expect("redis-server ready in time");
    }
}

fn spawn_redis(port: u16, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts a server on a free port, joined to `redis`.
async fn server(redis: &Redis, flags: &[&str]) -> SocketAddr {
    let url = redis.url();
    let args = ["ws-server", "--listen", "127.0.0.1:0", "--rate-limit", "0", "--redis", &url];
    ws_server::http::spawn(ServerConfig::load(args.iter().chain(flags)).unwrap()).await.unwrap().addr
}

/// Sends one HTTP/1.1 request, `Connection: close`; the whole response.
async fn http(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}");
    let request = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    timeout(PATIENCE, tcp.read_to_string(&mut response)).await.unwrap().unwrap();
    response
}

/// The value of a metric at `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = http(addr, "GET", "/metrics", "", "").await;
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("{name} in {text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

struct Client {
    ws: WebSocket<TcpStream>,
}

impl Client {
    /// Connects, takes the welcome and the `joined` of the default room: its epoch.
    async fn connect(addr: SocketAddr) -> (Client, Value) {
        let (ws, _) = connect(&format!("ws://{addr}/ws")).await.unwrap();
        let mut client = Client { ws };
        assert_eq!(client.next().await["type"], "system");
        let joined = client.next().await;
        assert_eq!((&joined["type"], &joined["room"]), (&json!("joined"), &json!("general")), "{joined}");
        (client, joined)
    }

    async fn send(&mut self, envelope: Value) {
        self.ws.send(&Message::from(envelope.to_string())).await.unwrap();
    }

    async fn next(&mut self) -> Value {
        serde_json::from_str(&self.next_text().await).unwrap()
    }

    /// The next envelope, as the server wrote it.
    async fn next_text(&mut self) -> String {
        loop {
            let event = timeout(PATIENCE, self.ws.recv()).await.expect("an envelope in time");
            match event.expect("an open connection").expect("no error") {
                Event::Message(Message::Text(text)) => return text.as_str().to_owned(),
                Event::Close(close) => panic!("closed: {close:?}"),
                _ => {}
            }
        }
    }

    /// Who is in `general`: how many, and the names.
    async fn presence(&mut self) -> (u64, Vec<String>) {
        self.send(json!({"type": "presence", "room": "general"})).await;
        loop {
            let reply = self.next().await;
            if reply["type"] == "presence" {
                let names = reply["members"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned());
                return (reply["count"].as_u64().unwrap(), names.collect());
            }
        }
    }

    /// Publishes to `general` with `id`; the ack's seq, or the error's code.
    async fn publish(&mut self, id: &str, content: &str) -> Result<u64, String> {
        self.send(json!({"type": "message", "room": "general", "id": id, "content": content})).await;
        loop {
            let reply = self.next().await;
            match (reply["type"].as_str(), reply["id"].as_str()) {
                (Some("ack"), Some(acked)) if acked == id => return Ok(reply["seq"].as_u64().unwrap()),
                (Some("error"), Some(failed)) if failed == id => return Err(reply["code"].as_str().unwrap().into()),
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
    /// Takes one envelope; every seq must follow the last.
    fn take(&mut self, envelope: &Value) {
        let (from, to) = match envelope["type"].as_str() {
            Some("message") => {
                let seq = envelope["seq"].as_u64().unwrap();
                let entry = self.contents.entry(seq).or_insert((envelope["content"].as_str().unwrap().into(), 0));
                entry.1 += 1;
                (seq, seq)
            }
            Some("gap") => {
                let gap = (envelope["from"].as_u64().unwrap(), envelope["to"].as_u64().unwrap());
                self.gaps.push(gap);
                gap
            }
            _ => return,
        };
        assert!(from > self.last, "seq {from} after {}: out of order or twice ({envelope})", self.last);
        self.last = to;
    }

    /// Reads `member` until it has seen seq `upto` or a gap past it.
    async fn read_until(&mut self, member: &mut Client, upto: u64) {
        while self.last < upto {
            let envelope = member.next().await;
            self.take(&envelope);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_every_server_receive_every_message_once_and_in_order() {
    let Some(redis) = Redis::start().await else { return };
    let servers = [server(&redis, &[]).await, server(&redis, &[]).await, server(&redis, &[]).await];
    let mut members = Vec::new();
    let mut epochs = HashSet::new();
    for addr in servers.iter().chain(&servers) {
        let (member, joined) = Client::connect(*addr).await;
        epochs.insert(joined["epoch"].as_str().unwrap().to_owned());
        members.push(member);
    }
    assert_eq!(epochs.len(), 1, "one numbering across the cluster: {epochs:?}");
    // One publisher per server, taking turns.
    let mut publishers = Vec::new();
    for addr in servers {
        publishers.push(Client::connect(addr).await.0);
    }
    let mut acked = BTreeMap::new();
    for round in 0..40 {
        for (p, publisher) in publishers.iter_mut().enumerate() {
            let content = format!("{p}:{round}");
            let seq = publisher.publish(&format!("m{p}-{round}"), &content).await.unwrap();
            assert!(acked.insert(seq, content).is_none(), "seq {seq} given twice");
        }
    }
    let last = *acked.keys().last().unwrap();
    assert_eq!(acked.keys().copied().collect::<Vec<_>>(), (1..=last).collect::<Vec<_>>());
    // The publishers read past the messages while they wait for their acks: the members tell.
    for member in &mut members {
        let mut seen = Seen::default();
        seen.read_until(member, last).await;
        assert!(seen.gaps.is_empty(), "no gap without a failure: {:?}", seen.gaps);
        let received: BTreeMap<u64, String> = seen.contents.into_iter().map(|(seq, (c, _))| (seq, c)).collect();
        assert_eq!(received, acked);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_moves_to_another_server_recovers_with_since() {
    let Some(redis) = Redis::start().await else { return };
    let (first, second) = (server(&redis, &[]).await, server(&redis, &[]).await);
    let (mut mover, _) = Client::connect(first).await;
    let (mut publisher, _) = Client::connect(second).await;
    for i in 1..=3 {
        publisher.publish(&format!("a{i}"), &format!("before {i}")).await.unwrap();
    }
    let mut seen = Seen::default();
    seen.read_until(&mut mover, 3).await;
    drop(mover);
    for i in 4..=6 {
        publisher.publish(&format!("a{i}"), &format!("away {i}")).await.unwrap();
    }
    let (mut moved, _) = Client::connect(second).await;
    moved.send(json!({"type": "join", "room": "general", "since": 3})).await;
    // Messages before `joined` came live to the default room; the replay has them too.
    while moved.next().await["type"] != "joined" {}
    // The replay, up to what the server had delivered at the join, then the
    // rest live (an ack can come before the server's own delivery).
    let (mut after, mut recovered) = (Seen { last: 3, ..Seen::default() }, None);
    while recovered.is_none() || after.last < 6 {
        let envelope = moved.next().await;
        if envelope["type"] == "recovered" {
            recovered = Some(envelope["complete"].clone());
        }
        after.take(&envelope);
    }
    assert_eq!(recovered, Some(json!(true)));
    let contents: Vec<_> = seen.contents.values().chain(after.contents.values()).cloned().collect();
    let expected = (1..=3).map(|i| format!("before {i}")).chain((4..=6).map(|i| format!("away {i}")));
    assert_eq!(contents, expected.map(|c| (c, 1)).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_through_another_server_is_not_published_twice() {
    let Some(redis) = Redis::start().await else { return };
    let (first, second) = (server(&redis, &[]).await, server(&redis, &[]).await);
    let (mut observer, _) = Client::connect(first).await;
    let (mut sender, _) = Client::connect(first).await;
    let seq = sender.publish("once", "hello").await.unwrap();
    // The same client (the same address) retries after moving to another server.
    let (mut moved, _) = Client::connect(second).await;
    assert_eq!(moved.publish("once", "hello").await, Ok(seq), "the retry gets the first seq");
    let next = moved.publish("twice", "after").await.unwrap();
    assert_eq!(next, seq + 1);
    let mut seen = Seen::default();
    seen.read_until(&mut observer, next).await;
    assert_eq!(seen.contents.values().map(|(c, n)| (c.as_str(), *n)).collect::<Vec<_>>(), [("hello", 1), ("after", 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jump_in_the_seqs_is_filled_from_the_history_or_told_as_a_gap() {
    let Some(redis) = Redis::start().await else { return };
    let member_server = server(&redis, &[]).await;
    let (mut member, _) = Client::connect(member_server).await;
    let mut publisher = Client::connect(server(&redis, &[]).await).await.0;
    assert_eq!(publisher.publish("p1", "one").await, Ok(1));
    // Seqs 2 and 3 are given out without a word on the channel, as while a
    // server's link is down; the history holds 2 only.
    let two = r#"{"type":"message","id":"x","seq":2,"time":1,"sender":"elsewhere","content":"two","room":"general"}"#;
    redis.command(&["XADD", "ws:{general}:history", "2-0", "m", two]).await;
    redis.command(&["SET", "ws:{general}:seq", "3"]).await;
    assert_eq!(publisher.publish("p4", "four").await, Ok(4));
    let mut seen = Seen::default();
    seen.read_until(&mut member, 4).await;
    let contents: Vec<_> = seen.contents.iter().map(|(seq, (c, n))| (*seq, c.as_str(), *n)).collect();
    assert_eq!(contents, [(1, "one", 1), (2, "two", 1), (4, "four", 1)]);
    assert_eq!(seen.gaps, [(3, 3)]);
    assert_eq!(metric(member_server, "ws_redis_lost_messages_total").await, 1.0);
}

/// A member that saw a message on one server moves to another whose
/// channel has not brought it yet: that server catches the room up from
/// Redis before it answers, so `joined` gives no latest below what the
/// member saw, and the recovery is complete, not a replay of everything as
/// for a new numbering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_with_since_past_what_the_server_delivered_catches_the_room_up_first() {
    let Some(redis) = Redis::start().await else { return };
    let lagging = server(&redis, &[]).await;
    let (mut member, _) = Client::connect(lagging).await;
    member.send(json!({"type": "join", "room": "news"})).await;
    while member.next().await["type"] != "joined" {}
    member.send(json!({"type": "message", "room": "news", "id": "n1", "content": "one"})).await;
    let one = loop {
        let envelope = member.next().await;
        if envelope["type"] == "message" && envelope["room"] == "news" {
            break envelope;
        }
    };
    assert_eq!(one["seq"], 1);
    // Seq 2, numbered by another server, whose channel message has not come here yet.
    let two = r#"{"type":"message","id":"x","seq":2,"time":1,"sender":"elsewhere","content":"two","room":"news"}"#;
    redis.command(&["XADD", "ws:{news}:history", "2-0", "m", two]).await;
    redis.command(&["SET", "ws:{news}:seq", "2"]).await;
    let (mut mover, _) = Client::connect(lagging).await;
    mover.send(json!({"type": "join", "room": "news", "since": 2})).await;
    let mut heard = Vec::new();
    loop {
        let envelope = mover.next().await;
        if envelope["room"] == "news" {
            heard.push(envelope.clone());
        }
        if envelope["type"] == "recovered" {
            break;
        }
    }
    assert_eq!(heard[0]["type"], "joined", "{heard:?}");
    assert_eq!(heard[0]["seq"], 2, "the latest the mover saw, not what the channel had brought: {heard:?}");
    assert_eq!(heard.len(), 2, "nothing to replay after seq 2: {heard:?}");
    assert_eq!(heard[1]["complete"], true);
    // The member here got seq 2 as well, from the history.
    let mut seen = Seen { last: 1, ..Seen::default() };
    while seen.last < 2 {
        let envelope = member.next().await;
        if envelope["room"] == "news" {
            seen.take(&envelope);
        }
    }
    assert_eq!(seen.contents.get(&2), Some(&("two".to_owned(), 1)));
}

/// Redis loses the last writes of a room (as a replica promoted before it
/// had them): a server that had heard of them numbers on 10,000 past what
/// it knows, since others may have acked more than it heard of, and no seq
/// is given to two messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seqs_redis_lost_are_skipped_past_and_never_given_twice() {
    let Some(redis) = Redis::start().await else { return };
    let servers = [server(&redis, &[]).await, server(&redis, &[]).await];
    let (mut here, _) = Client::connect(servers[0]).await;
    let (mut there, _) = Client::connect(servers[1]).await;
    let mut publisher = Client::connect(servers[0]).await.0;
    for (n, content) in ["one", "two", "three"].into_iter().enumerate() {
        assert_eq!(publisher.publish(&format!("p{n}"), content).await, Ok(n as u64 + 1));
    }
    let (mut seen_here, mut seen_there) = (Seen::default(), Seen::default());
    seen_here.read_until(&mut here, 3).await;
    seen_there.read_until(&mut there, 3).await;
    // Redis now holds the room as it was after seq 1.
    redis.command(&["SET", "ws:{general}:seq", "1"]).await;
    redis.command(&["XDEL", "ws:{general}:history", "2-0", "3-0"]).await;
    let mut late = Client::connect(servers[1]).await.0;
    assert_eq!(late.publish("after", "after the loss").await, Ok(10_004), "numbered past seq 3 and the skip");
    for (seen, member) in [(&mut seen_here, &mut here), (&mut seen_there, &mut there)] {
        seen.read_until(member, 10_004).await;
        assert_eq!(seen.gaps, [(4, 10_003)], "the skipped seqs are told as a gap");
        assert_eq!(seen.contents.get(&10_004), Some(&("after the loss".to_owned(), 1)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_publishes_without_pause_still_gets_the_rooms_messages() {
    let Some(redis) = Redis::start().await else { return };
    // A room buffer of one message, and a history of 100, a third of the
    // burst: the session must take the room's messages between its requests
    // to Redis, not after all of them, and what leaves the buffer before it
    // does (all but the last of those the server receives at once) must be
    // fetched again from the history.
    let client = Client::connect(server(&redis, &["--room-buffer", "1"]).await).await.0;
    burst(client, 300).await;
}

/// Sends `n` messages at once, then reads until each is acked and came
/// back: every one, once, in order, and no gap.
async fn burst(mut client: Client, n: usize) {
    for i in 0..n {
        client.send(json!({"type": "message", "room": "general", "id": i.to_string(), "content": "x"})).await;
    }
    let (mut acks, mut seen) = (0, Seen::default());
    while acks < n || seen.last < n as u64 {
        let envelope = client.next().await;
        acks += usize::from(envelope["type"] == "ack");
        seen.take(&envelope);
    }
    assert!(seen.gaps.is_empty() && seen.contents.len() == n);
}

/// With the default room buffer and history, a connection keeps 59 of its
/// messages in flight to Redis, and a burst of 2,000 still comes back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_far_deeper_than_the_pipeline_comes_back_whole() {
    let Some(redis) = Redis::start().await else { return };
    burst(Client::connect(server(&redis, &[]).await).await.0, 2000).await;
}

/// Many connections send bursts at once, and Redis is killed and started
/// again meanwhile: what each connection had sent on while the server was
/// linking again is refused or numbered after what came before it, never
/// ahead of it. Each connection's acked messages are numbered in the order
/// it sent them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_restart_of_redis_a_connections_messages_are_numbered_in_the_order_sent() {
    let Some(mut redis) = Redis::start().await else { return };
    let flags = ["--room-buffer", "1000", "--max-queue-bytes", "268435456", "--max-connections-per-ip", "0"];
    let addr = server(&redis, &flags).await;
    let mut clients = Vec::new();
    for _ in 0..24 {
        clients.push(Client::connect(addr).await.0);
    }
    // Linked: the first message is acked.
    clients[0].publish("first", "x").await.unwrap();
    let (answered, mut half) = tokio::sync::mpsc::channel(24);
    let bursts: Vec<_> =
        clients.into_iter().map(|client| tokio::spawn(burst_answers(client, 400, answered.clone()))).collect();
    // Once some connection has half of its messages answered, Redis goes and comes back.
    half.recv().await;
    redis.kill();
    redis.restart().await;
    for burst in bursts {
        let seqs: Vec<u64> = burst.await.unwrap().into_values().flatten().collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "acked out of the order sent: {seqs:?}");
    }
}

/// Sends `n` messages at once, and reads until each is answered: the seq of
/// each acked one, by its place (`None` if refused). Says on `half` when
/// half are answered.
async fn burst_answers(mut client: Client, n: u32, half: tokio::sync::mpsc::Sender<()>) -> BTreeMap<u32, Option<u64>> {
    for i in 0..n {
        client.send(json!({"type": "message", "room": "general", "id": i.to_string(), "content": "x"})).await;
    }
    let mut answers = BTreeMap::new();
    while answers.len() < n as usize {
        let envelope = client.next().await;
        let Some(id) = envelope["id"].as_str().and_then(|id| id.parse::<u32>().ok()) else { continue };
        match envelope["type"].as_str() {
            Some("ack") => answers.insert(id, Some(envelope["seq"].as_u64().unwrap())),
            Some("error") => answers.insert(id, None),
            _ => continue,
        };
        if answers.len() == n as usize / 2 {
            let _ = half.try_send(());
        }
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_listens_to_a_room_while_it_has_members_there() {
    let Some(redis) = Redis::start().await else { return };
    let (first, second) = (server(&redis, &[]).await, server(&redis, &[]).await);
    let (mut a, _) = Client::connect(first).await;
    let (mut b, _) = Client::connect(second).await;
    assert_eq!(redis.subscribers("general").await, 2);
    assert_eq!(redis.subscribers("side").await, 0);
    a.send(json!({"type": "join", "room": "side"})).await;
    assert_eq!(a.next().await["type"], "joined");
    assert_eq!(redis.subscribers("side").await, 1);
    a.send(json!({"type": "leave", "room": "side"})).await;
    assert_eq!(a.next().await["type"], "left");
    // The server lets the channel go after the member's leave: wait for it.
    while redis.subscribers("side").await != 0 {}
    drop(b.ws.close(ws_proto::CloseCode::NORMAL, "").await);
    while redis.subscribers("general").await != 1 {}
    assert_eq!(a.publish("still", "here").await, Ok(1));
}

/// Takes the messages `seqs`, whose data must be `data` as written, each in
/// the place the protocol gives it: after the sender, before the room.
async fn expect_data(client: &mut Client, seqs: std::ops::RangeInclusive<u64>, data: &[&str]) {
    for (seq, data) in seqs.zip(data) {
        let text = client.next_text().await;
        assert!(text.contains(&format!(r#""seq":{seq},"#)), "seq {seq}: {text}");
        assert!(text.ends_with(&format!(r#","data":{data},"room":"general"}}"#)), "{data} as written: {text}");
    }
}

/// A message's `data`, published on one server or through the API of
/// another, reaches members on both, and the replay from Redis's history,
/// as its publisher wrote it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_crosses_the_servers_and_redis_history_byte_for_byte() {
    let Some(redis) = Redis::start().await else { return };
    let flags = ["--api-key", "k"];
    let (first, second) = (server(&redis, &flags).await, server(&redis, &flags).await);
    let (mut publisher, _) = Client::connect(first).await;
    let (mut member, _) = Client::connect(second).await;
    let data = [r#"{ "price" : 1.50, "tags":["a",null,true] }"#, r#"[1,  2.0 ,"\u00e9"]"#, "-0.0e+5"];
    let envelope = |data: &str| format!(r#"{{"type":"message","room":"general","data":{data}}}"#);
    for data in &data[..2] {
        publisher.ws.send(&Message::from(envelope(data))).await.unwrap();
    }
    expect_data(&mut member, 1..=2, &data[..2]).await;
    let response = http(second, "POST", "/api/publish", "Authorization: Bearer k\r\n", &envelope(data[2])).await;
    assert!(response.ends_with(r#"{"type":"ack","seq":3}"#), "{response}");
    expect_data(&mut member, 3..=3, &data[2..]).await;
    expect_data(&mut publisher, 1..=3, &data).await;
    let (mut late, _) = Client::connect(second).await;
    late.send(json!({"type": "join", "room": "general", "since": 0})).await;
    while late.next().await["type"] != "joined" {}
    expect_data(&mut late, 1..=3, &data).await;
    assert_eq!(late.next().await, json!({"type": "recovered", "room": "general", "complete": true}));
}

/// The namespaces of one TOML file, given to every server: each enforces
/// them for its clients, and the history each room keeps in Redis is its
/// namespace's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_rules_hold_on_every_server_and_in_redis() {
    let Some(redis) = Redis::start().await else { return };
    let toml = "[namespace.feed]\npublish = \"server\"\nhistory = 2\n[namespace.quiet]\npresence = false\n";
    let file = std::env::temp_dir().join(format!("ws-server-cluster-{}-namespaces.toml", std::process::id()));
    std::fs::write(&file, toml).unwrap();
    let flags = ["--config", file.to_str().unwrap(), "--api-key", "k"];
    let (first, second) = (server(&redis, &flags).await, server(&redis, &flags).await);
    let (mut near, _) = Client::connect(first).await;
    let (mut far, _) = Client::connect(second).await;
    for client in [&mut near, &mut far] {
        for room in ["feed:btc", "quiet:x"] {
            client.send(json!({"type": "join", "room": room})).await;
            while client.next().await["type"] != "joined" {}
        }
    }
    far.send(json!({"type": "message", "room": "feed:btc", "content": "fake", "id": "f"})).await;
    assert_eq!(far.next().await["code"], "forbidden");
    far.send(json!({"type": "presence", "room": "quiet:x", "id": "p"})).await;
    assert_eq!(far.next().await["code"], "not_offered");
    for price in 1..=4 {
        let body = format!(r#"{{"type":"message","room":"feed:btc","data":{{"price":{price}}}}}"#);
        let response = http(first, "POST", "/api/publish", "Authorization: Bearer k\r\n", &body).await;
        assert!(response.ends_with(&format!(r#"{{"type":"ack","seq":{price}}}"#)), "{response}");
    }
    for client in [&mut near, &mut far] {
        for price in 1..=4 {
            let message = client.next().await;
            assert_eq!((&message["seq"], &message["data"]), (&json!(price), &json!({"price": price})), "{message}");
        }
    }
    // The feed keeps 2 messages in Redis: a late joiner on the other server gets those.
    let (mut late, _) = Client::connect(second).await;
    late.send(json!({"type": "join", "room": "feed:btc", "since": 0})).await;
    while late.next().await["type"] != "joined" {}
    let replayed: Vec<Value> = [late.next().await, late.next().await].into_iter().map(|m| m["seq"].clone()).collect();
    assert_eq!(replayed, [json!(3), json!(4)]);
    assert_eq!(late.next().await, json!({"type": "recovered", "room": "feed:btc", "complete": false}));
    let _ = std::fs::remove_file(file);
}

/// A client of `addr` whose token names `user`, and who joined `room`.
async fn user_in(addr: SocketAddr, user: &str, room: &str) -> Client {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let key = jsonwebtoken::EncodingKey::from_secret(b"s3cret");
    let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &json!({"sub": user, "exp": exp}), &key);
    let (ws, _) = connect(&format!("ws://{addr}/ws?token={}", token.unwrap())).await.unwrap();
    let mut client = Client { ws };
    client.send(json!({"type": "join", "room": room})).await;
    loop {
        let envelope = client.next().await;
        if envelope["type"] == "joined" && envelope["room"] == room {
            return client;
        }
    }
}

/// Publishes `mark` to `room` and takes what came before its own copy.
async fn before_own(client: &mut Client, room: &str, mark: &str) -> Vec<Value> {
    client.send(json!({"type": "message", "room": room, "content": mark})).await;
    let mut before = Vec::new();
    loop {
        let envelope = client.next().await;
        if envelope["type"] == "message" && envelope["content"] == mark {
            return before;
        }
        before.push(envelope);
    }
}

/// Join and leave events count a user's connections on every server: the
/// first anywhere is told, and the last anywhere to leave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_events_count_a_users_connections_on_every_server() {
    let Some(redis) = Redis::start().await else { return };
    let file = std::env::temp_dir().join(format!("ws-server-cluster-{}-events.toml", std::process::id()));
    std::fs::write(&file, "[namespace.chat]\njoin-leave-events = true\n").unwrap();
    let flags = ["--config", file.to_str().unwrap(), "--jwt-secret", "s3cret"];
    let (first, second) = (server(&redis, &flags).await, server(&redis, &flags).await);
    let mut ann = user_in(first, "ann", "chat:x").await;
    let bob_far = user_in(second, "bob", "chat:x").await;
    assert_eq!(ann.next().await, json!({"type": "member_joined", "room": "chat:x", "member": "bob"}));
    let bob_near = user_in(first, "bob", "chat:x").await;
    assert!(before_own(&mut ann, "chat:x", "1").await.is_empty(), "bob was in the room on the other server");
    drop(bob_far);
    // Its leaving is told through Redis, where nothing comes: wait for the room to forget it there.
    let gone = async {
        while redis.subscribers("chat:x").await > 1 {
            tokio::task::yield_now().await;
        }
    };
    timeout(PATIENCE, gone).await.expect("the other server unsubscribed");
    assert!(before_own(&mut ann, "chat:x", "2").await.is_empty(), "bob is still in the room on this server");
    drop(bob_near);
    assert_eq!(ann.next().await, json!({"type": "member_left", "room": "chat:x", "member": "bob"}));
    let _ = std::fs::remove_file(file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_api_of_one_server_reaches_the_members_of_every_server() {
    let Some(redis) = Redis::start().await else { return };
    let (first, second) = (server(&redis, &["--api-key", "k"]).await, server(&redis, &["--api-key", "k"]).await);
    let (mut member, _) = Client::connect(first).await;
    let body = r#"{"type":"message","room":"general","content":"from a service","id":"s1"}"#;
    for _ in 0..2 {
        let response = http(second, "POST", "/api/publish", "Authorization: Bearer k\r\n", body).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with(r#"{"type":"ack","id":"s1","seq":1}"#), "a retry gets the first seq: {response}");
    }
    let message = member.next().await;
    assert_eq!(
        (&message["seq"], &message["sender"], &message["content"]),
        (&json!(1), &json!("api"), &json!("from a service"))
    );
    assert_eq!(member.publish("after", "next").await, Ok(2), "the retry was not published");
}

/// The answer of a server API call to `addr`.
async fn api(addr: SocketAddr, call: &str, body: Value) -> Value {
    let response = http(addr, "POST", &format!("/api/{call}"), "Authorization: Bearer k\r\n", &body.to_string()).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    serde_json::from_str(response.split_once("\r\n\r\n").unwrap().1).unwrap()
}

/// The server API of one server reaches the users of another: it takes one
/// out of a room, disconnects another, and counts rooms and servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_of_one_server_disconnects_and_unsubscribes_the_users_of_another() {
    let Some(redis) = Redis::start().await else { return };
    let flags = ["--api-key", "k", "--jwt-secret", "s3cret"];
    let (first, second) = (server(&redis, &flags).await, server(&redis, &flags).await);
    let mut ann = user_in(second, "ann", "news").await;
    let mut bob = user_in(second, "bob", "news").await;
    let _ann_here = user_in(first, "ann", "news").await;
    let info = api(first, "info", json!({})).await;
    let counts: Vec<&Value> = info["servers"].as_array().unwrap().iter().map(|s| &s["connections"]).collect();
    assert_eq!((&info["connections"], counts.len()), (&json!(3), 2), "{info}");
    let rooms = api(first, "rooms", json!({})).await;
    let news = rooms["rooms"].as_array().unwrap().iter().find(|r| r["room"] == "news").unwrap().clone();
    assert_eq!(news, json!({"room": "news", "members": 2, "connections": 3}), "{rooms}");

    let removed = api(first, "unsubscribe", json!({"user": "bob", "room": "news"})).await;
    assert_eq!(removed["connections"], 1, "{removed}");
    loop {
        let envelope = bob.next().await;
        if envelope["type"] == "left" {
            assert_eq!(envelope, json!({"type": "left", "room": "news", "reason": "removed"}));
            break;
        }
    }
    let disconnected = api(first, "disconnect", json!({"user": "ann", "code": 4403, "reason": "bye"})).await;
    assert_eq!(disconnected["connections"], 2, "both of ann's connections, one on each server: {disconnected}");
    let closed = loop {
        match timeout(PATIENCE, ann.ws.recv()).await.expect("the close in time") {
            Some(Ok(Event::Close(frame))) => break frame.unwrap(),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!((closed.code.0, closed.reason.as_str()), (4403, "bye"));
    assert_eq!(bob.publish("still", "here").await, Ok(1), "bob's connection stays open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_spans_the_servers_and_drops_what_no_server_renews() {
    let Some(redis) = Redis::start().await else { return };
    let (first, second) = (server(&redis, &[]).await, server(&redis, &[]).await);
    let (mut alice, _) = Client::connect(first).await;
    let (bob, _) = Client::connect(second).await;
    let name = |client: &Client| client.ws.get_ref().local_addr().unwrap().to_string();
    let (alice_name, bob_name) = (name(&alice), name(&bob));
    // A server that died left these: one past its expiry, one not yet.
    redis.command(&["ZADD", "ws:{general}:presence", "1", "expired\ndead"]).await;
    redis.command(&["ZADD", "ws:{general}:presence", "99999999999999", "ghost\ndead"]).await;
    let presence = alice.presence().await;
    let mut expected = vec![alice_name.clone(), bob_name.clone(), "ghost".to_owned()];
    expected.sort();
    assert_eq!(presence, (3, expected));
    drop(bob);
    // Bob's server takes him out when his connection ends.
    while alice.presence().await.1.contains(&bob_name) {}
    assert_eq!(alice.presence().await, (2, vec![alice_name, "ghost".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_in_redis_keeps_no_message_past_its_age_limit() {
    let Some(redis) = Redis::start().await else { return };
    let addr = server(&redis, &["--history-max-age", "1"]).await;
    let (mut publisher, _) = Client::connect(addr).await;
    assert_eq!(publisher.publish("old", "old").await, Ok(1));
    // Not a synchronization: the limit is an age, and this lets seq 1 reach it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(publisher.publish("new", "new").await, Ok(2));
    let ttl = redis.command(&["PTTL", "ws:{general}:history"]).await;
    assert!(ttl.trim_start_matches(':').trim().parse::<i64>().unwrap() > 0, "the history expires when idle: {ttl}");
    let (mut late, _) = Client::connect(addr).await;
    late.send(json!({"type": "join", "room": "general", "since": 0})).await;
    while late.next().await["type"] != "joined" {}
    let mut replayed = Vec::new();
    let complete = loop {
        let envelope = late.next().await;
        match envelope["type"].as_str() {
            Some("message") => replayed.push(envelope["content"].as_str().unwrap().to_owned()),
            Some("recovered") => break envelope["complete"].clone(),
            _ => {}
        }
    };
    // Seq 2 may have aged too on a slow machine; seq 1 cannot be there.
    assert!(replayed.is_empty() || replayed == ["new"], "{replayed:?}");
    assert_eq!(complete, json!(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_while_redis_is_down_waits_for_it() {
    let Some(mut redis) = Redis::start().await else { return };
    redis.kill();
    let addr = server(&redis, &[]).await;
    // The welcome comes at once; the default room's join waits for the link.
    let joining = tokio::spawn(Client::connect(addr));
    redis.restart().await;
    let (mut client, joined) = joining.await.unwrap();
    assert_eq!(joined["seq"], 0);
    assert_eq!(client.publish("first", "hello").await, Ok(1));
}

/// Publishes one message after another, keeping what was acked and counting what was refused.
#[derive(Default)]
struct Publisher {
    client: Option<Client>,
    acked: BTreeMap<u64, String>,
    refused: usize,
    sent: usize,
}

impl Publisher {
    async fn publish(&mut self) {
        self.sent += 1;
        let content = format!("m{}", self.sent);
        match self.client.as_mut().unwrap().publish(&content, &content).await {
            Ok(seq) => assert!(self.acked.insert(seq, content).is_none(), "seq {seq} acked twice"),
            Err(code) => {
                assert_eq!(code, "unavailable");
                self.refused += 1;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_every_acked_message_arrives_once_or_as_a_gap() {
    let Some(mut redis) = Redis::start().await else { return };
    let servers = [server(&redis, &[]).await, server(&redis, &[]).await];
    let mut members = Vec::new();
    for addr in servers.iter().chain(&servers) {
        members.push(Client::connect(*addr).await.0);
    }
    let mut publisher = Publisher { client: Some(Client::connect(servers[0]).await.0), ..Publisher::default() };
    for _ in 0..20 {
        publisher.publish().await;
    }
    redis.kill();
    // Until a publish is refused: the servers know Redis is gone.
    while publisher.refused == 0 {
        publisher.publish().await;
    }
    redis.restart().await;
    let before = publisher.acked.len();
    // Until 20 more are acked: the servers are back.
    while publisher.acked.len() < before + 20 {
        publisher.publish().await;
    }
    let acked = publisher.acked;
    eprintln!("acked {} ({} after the restart), refused {}", acked.len(), acked.len() - before, publisher.refused);
    let last = *acked.keys().last().unwrap();
    for member in &mut members {
        let mut seen = Seen::default();
        seen.read_until(member, last).await;
        eprintln!("member: {} of {} acked received, gaps {:?}", seen.contents.len(), acked.len(), seen.gaps);
        for (seq, content) in &acked {
            match seen.contents.get(seq) {
                Some((received, count)) => assert_eq!((received, *count), (content, 1), "seq {seq}"),
                None => assert!(
                    seen.gaps.iter().any(|(from, to)| (from..=to).contains(&seq)),
                    "acked seq {seq} neither received nor in a gap: {seen:?}"
                ),
            }
        }
    }
    for addr in servers {
        assert!(metric(addr, "ws_redis_outages_total").await >= 1.0);
        assert_eq!(metric(addr, "ws_redis_up").await, 1.0);
    }
    // The seqs went on from where they were: nothing numbered twice.
    assert!(acked.keys().zip(acked.keys().skip(1)).all(|(a, b)| a < b));
}

/// A TCP proxy in front of Redis whose replies can be held back: what the
/// servers send reaches Redis at once, what Redis answers waits while held.
struct HeldReplies {
    addr: SocketAddr,
    held: tokio::sync::watch::Sender<bool>,
}

impl HeldReplies {
    async fn start(redis: &Redis) -> HeldReplies {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (held, watch) = tokio::sync::watch::channel(false);
        let (addr, port) = (listener.local_addr().unwrap(), redis.port);
        tokio::spawn(async move {
            while let Ok((server, _)) = listener.accept().await {
                let redis = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
                let ((mut from_server, to_server), (from_redis, mut to_redis)) =
                    (server.into_split(), redis.into_split());
                tokio::spawn(async move { tokio::io::copy(&mut from_server, &mut to_redis).await });
                tokio::spawn(Self::replies(from_redis, to_server, watch.clone()));
            }
        });
        HeldReplies { addr, held }
    }

    /// Forwards what Redis answers, each read once the replies are not held.
    async fn replies(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut held: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0; 64 << 10];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if held.wait_for(|held| !held).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connections_messages_reach_redis_before_the_first_is_answered_and_are_acked_in_order() {
    let Some(redis) = Redis::start().await else { return };
    let proxy = HeldReplies::start(&redis).await;
    let url = proxy.url();
    let args = ["ws-server", "--listen", "127.0.0.1:0", "--rate-limit", "0", "--redis", &url];
    let addr = ws_server::http::spawn(ServerConfig::load(args).unwrap()).await.unwrap().addr;
    // In the default room, joined through Redis before its replies are
    // held, and one message acked first: Redis has the publishing script.
    let (mut client, _) = Client::connect(addr).await;
    assert_eq!(client.publish("c-1", "1").await, Ok(1));
    proxy.held.send_replace(true);
    for i in 2..=6 {
        client
            .send(json!({"type": "message", "room": "general", "id": format!("c-{i}"), "content": i.to_string()}))
            .await;
    }
    // Redis numbers all five while it has answered none of them.
    let numbered = async {
        let seq = ["EVAL", "return tonumber(redis.call('GET', KEYS[1]) or '0')", "1", "ws:{general}:seq"];
        while redis.command(&seq).await.trim() != ":6" {
            // Asked again a little later: each asking is a connection of its own.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(PATIENCE, numbered).await.expect("five messages sent on before the first of them was answered");
    proxy.held.send_replace(false);
    let (mut acks, mut seen) = (Vec::new(), Seen::default());
    while acks.len() < 5 || seen.last < 6 {
        let envelope = client.next().await;
        if envelope["type"] == "ack" {
            acks.push((envelope["id"].as_str().unwrap().to_owned(), envelope["seq"].as_u64().unwrap()));
        }
        seen.take(&envelope);
    }
    let expected: Vec<_> = (2..=6).map(|i| (format!("c-{i}"), i)).collect();
    assert_eq!(acks, expected, "acked in the order of the messages");
    // Seq 1 may have come before its ack, taken by `publish`.
    let contents: Vec<_> = seen.contents.range(2..).map(|(seq, (c, n))| (*seq, c.clone(), *n)).collect();
    assert_eq!(contents, (2..=6).map(|i| (i, i.to_string(), 1)).collect::<Vec<_>>(), "each once, in order");
}
