//! The metrics of each Redis node, from the watch over the nodes: a real
//! Redis Cluster (tests/redis_cluster), whose six nodes are up with their
//! roles, whose room's primary counts the commands published there, and
//! whose failover shows; and a single redis-server, one node whose PINGs
//! are timed. Every wait polls `/metrics` within a generous deadline.
//! Without redis-server installed the tests say so and pass, unless
//! `WS_REQUIRE_REDIS=1`, when they fail.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

mod redis_cluster;

use redis_cluster::{Redis, RedisCluster};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::time::timeout;
use ws_proto::{Event, Message};
use ws_server::config::ServerConfig;
use ws_tokio::WebSocket;
use ws_tokio::client::connect;

/// Generous: a deadline for an event, never a measure of speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// Between two looks at `/metrics` while waiting for an event.
const POLL: Duration = Duration::from_millis(100);

/// The samples of `/metrics`, by name and labels, as written:
/// `ws_redis_node_up{node="127.0.0.1:7000",role="primary"}`.
type Samples = HashMap<String, f64>;

/// A hub connection.
struct Member(WebSocket<TcpStream>);

impl Member {
    /// Connects, and waits for the `joined` of the default room.
    async fn connect(addr: SocketAddr) -> Member {
        let mut member = Member(connect(&format!("ws://{addr}/ws")).await.unwrap().0);
        member.joined("general").await;
        member
    }

    /// Joins `room`, and waits until it is in.
    async fn join(&mut self, room: &str) {
        let join = format!(r#"{{"type":"join","room":"{room}"}}"#);
        self.0.send(&Message::from(join)).await.unwrap();
        self.joined(room).await;
    }

    async fn joined(&mut self, room: &str) {
        loop {
            let event = timeout(PATIENCE, self.0.recv()).await.expect("an envelope in time");
            if let Event::Message(Message::Text(text)) = event.expect("an open connection").expect("no error") {
                let envelope: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                if envelope["type"] == "joined" && envelope["room"] == room {
                    return;
                }
            }
        }
    }
}

/// Starts a server on a free port, joined to the Redis at `url`, with the server API (key `k`).
async fn server(url: &str) -> SocketAddr {
    let args = ["ws-server", "--listen", "127.0.0.1:0", "--rate-limit", "0", "--redis", url, "--api-key", "k"];
    ws_server::http::spawn(ServerConfig::load(args).unwrap()).await.unwrap().addr
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

/// Publishes a message to `room` through the server API: whether it was acked.
async fn publish(addr: SocketAddr, room: &str) -> bool {
    let body = format!(r#"{{"type":"message","room":"{room}","content":"hello"}}"#);
    http(addr, "POST", "/api/publish", "Authorization: Bearer k\r\n", &body).await.contains(r#""type":"ack""#)
}

/// The samples `/metrics` serves now.
async fn samples(addr: SocketAddr) -> Samples {
    let text = http(addr, "GET", "/metrics", "", "").await;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let samples = body.lines().filter(|line| !line.starts_with('#')).filter_map(|line| line.rsplit_once(' '));
    samples.map(|(name, value)| (name.to_owned(), value.parse().unwrap())).collect()
}

/// Polls `/metrics` until `done` holds of its samples: those samples.
async fn wait_for(addr: SocketAddr, what: &str, done: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let samples = samples(addr).await;
        if done(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}; the metrics: {samples:#?}");
        tokio::time::sleep(POLL).await;
    }
}

/// The name of a sample of the node on `port`, in `role` (none: a single Redis).
fn sample(metric: &str, port: u16, role: Option<&str>) -> String {
    match role {
        Some(role) => format!(r#"{metric}{{node="127.0.0.1:{port}",role="{role}"}}"#),
        None => format!(r#"{metric}{{node="127.0.0.1:{port}"}}"#),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_cluster_node_is_up_in_its_role_a_rooms_primary_counts_its_commands_and_a_failover_shows() {
    let Some(mut cluster) = RedisCluster::start().await else { return };
    let addr = server(&cluster.url()).await;
    let primaries = cluster.primaries().await;
    let mut roles = Vec::new();
    for primary in &primaries {
        roles.push((primary.port, "primary"));
        roles.extend(primary.replicas.iter().map(|&replica| (cluster.port(replica), "replica")));
    }
    assert_eq!(roles.len(), 6, "{primaries:?}");
    let up = |port, role| sample("ws_redis_node_up", port, Some(role));
    wait_for(addr, "all six nodes up in their roles", |samples| {
        samples.get("ws_redis_up") == Some(&1.0)
            && roles.iter().all(|&(port, role)| samples.get(&up(port, role)) == Some(&1.0))
    })
    .await;

    let room = "metrics";
    let owner = cluster.primary_of_room(room).await;
    let commands = |port| sample("ws_redis_commands_total", port, Some("primary"));
    let before = samples(addr).await;
    for _ in 0..3 {
        assert!(publish(addr, room).await, "a publish acked");
    }
    let after = samples(addr).await;
    for primary in &primaries {
        let grown =
            after.get(&commands(primary.port)).unwrap_or(&0.0) - before.get(&commands(primary.port)).unwrap_or(&0.0);
        let expected = if primary.node == owner.node { 3.0 } else { 0.0 };
        assert_eq!(grown, expected, "the commands of {primary:?}, the room's primary being node {}", owner.node);
    }
    assert_eq!(after[&sample("ws_redis_commands_in_flight", owner.port, Some("primary"))], 0.0, "all answered");

    // A member joins the room here: the server subscribes to its channel
    // and reads its seq on the room's primary, counted there too.
    let mut member = Member::connect(addr).await;
    let before = samples(addr).await;
    member.join(room).await;
    let after = samples(addr).await;
    let grown = after.get(&commands(owner.port)).unwrap_or(&0.0) - before.get(&commands(owner.port)).unwrap_or(&0.0);
    assert!(grown >= 2.0, "the subscription and the seq's read counted: {grown}");

    cluster.kill(owner.node).await;
    let heir = cluster.port(cluster.wait_failover(owner.node).await);
    wait_for(addr, "the killed primary down and its replica promoted", |samples| {
        samples.get(&up(owner.port, "primary")) == Some(&0.0)
            && samples.get(&up(heir, "primary")) == Some(&1.0)
            && !samples.contains_key(&up(heir, "replica"))
    })
    .await;
    let deadline = Instant::now() + PATIENCE;
    while !publish(addr, room).await {
        assert!(Instant::now() < deadline, "a publish acked after the failover within {PATIENCE:?}");
        tokio::time::sleep(POLL).await;
    }
    let after = samples(addr).await;
    assert!(after.get(&commands(heir)) >= Some(&1.0), "the room's commands go to its new primary: {after:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_redis_is_one_node_up_whose_pings_are_timed_and_commands_counted() {
    let Some(redis) = Redis::start().await else { return };
    let addr = server(&format!("redis://127.0.0.1:{}/", redis.port)).await;
    let (up, pings) =
        (sample("ws_redis_node_up", redis.port, None), sample("ws_redis_node_latency_seconds_count", redis.port, None));
    let first = wait_for(addr, "the node up", |samples| samples.get(&up) == Some(&1.0)).await;
    let nodes: Vec<&String> = first.keys().filter(|name| name.starts_with("ws_redis_node_up{")).collect();
    assert_eq!(nodes, [&up], "one node");
    wait_for(addr, "more PINGs timed", |samples| samples[&pings] > first[&pings]).await;

    for _ in 0..2 {
        assert!(publish(addr, "single").await, "a publish acked");
    }
    let after = samples(addr).await;
    assert!(after[&sample("ws_redis_commands_total", redis.port, None)] >= 2.0, "{after:#?}");
    assert_eq!(after[&sample("ws_redis_commands_in_flight", redis.port, None)], 0.0);
}
