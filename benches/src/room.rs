//! One room under load, for the load binaries: members that read every
//! message, publishers that keep a window of messages unacked, and the
//! report of a run (messages and deliveries per second, p50 and p99 from
//! a publish to each member's receipt). The members offer
//! permessage-deflate, as browsers do, unless `CLUSTER_LOAD_PLAIN` is set.

use crate::Failure;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use ws_proto::{Event, Message};
use ws_tokio::WebSocket;
use ws_tokio::client::{ClientOptions, connect_with};

/// Room for members that fall behind a burst: a run measures throughput,
/// not the slow-consumer policy, which would close them at 1 MiB queued or
/// 256 messages behind.
pub const QUEUE: [&str; 4] = ["--max-queue-bytes", "268435456", "--room-buffer", "65536"];

/// A run's load, from the command line: members (default 100), messages
/// (default 20000), publishers (default 1), and the window of each
/// (default 64): the messages it keeps in flight, unacked.
pub struct Load {
    /// Members of the room, spread over the servers.
    pub members: usize,
    /// Messages published in all.
    pub messages: usize,
    /// Publishing connections.
    pub publishers: usize,
    /// Messages each publisher keeps unacked.
    pub window: usize,
}

impl Load {
    /// The load the arguments give, printed with the head of the report.
    pub fn from_args() -> Result<Load, Failure> {
        let mut args = std::env::args().skip(1);
        let mut next = |default: usize| args.next().map_or(Ok(default), |a| a.parse());
        let load = Load { members: next(100)?, messages: next(20_000)?, publishers: next(1)?, window: next(64)? };
        let Load { members, messages, publishers, window } = load;
        println!(
            "{members} members in one room, {messages} messages from {publishers} publishers, each with {window} in flight"
        );
        println!("{:<34} {:>12} {:>16} {:>10} {:>10}", "set-up", "messages/s", "deliveries/s", "p50 (ms)", "p99 (ms)");
        Ok(load)
    }
}

/// What one run measured.
pub struct Report {
    messages: usize,
    deliveries: u64,
    wall: Duration,
    latency: Histogram<u64>,
}

/// Prints the line of `setup`.
pub fn report(setup: &str, r: &Report) {
    let per_second = |n: f64| n / r.wall.as_secs_f64();
    let ms = |q: f64| r.latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{setup:<34} {:>12.0} {:>16.0} {:>10.2} {:>10.2}",
        per_second(r.messages as f64),
        per_second(r.deliveries as f64),
        ms(0.5),
        ms(0.99)
    );
}

/// Members split between `servers`, a publisher on the first: every message to every member.
pub async fn run(
    servers: &[String],
    members: usize,
    messages: usize,
    (publishers, window): (usize, usize),
) -> Result<Report, Failure> {
    let base = Instant::now();
    // Ids of this run alone: a set-up sharing the Redis of the one before
    // would take the same ids for retries, and publish nothing new.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos();
    let mut readers = Vec::new();
    for i in 0..members {
        let ws = join(&servers[i % servers.len()]).await?;
        readers.push(tokio::spawn(read(ws, base, messages)));
    }
    let start = Instant::now();
    let mut publishing = Vec::new();
    for p in 0..publishers {
        let ws = join(&servers[p % servers.len()]).await?;
        let ids = (p..messages).step_by(publishers);
        publishing.push(tokio::spawn(publish(ws, (run, ids), window, base)));
    }
    let mut acks = Vec::new();
    for publisher in publishing {
        acks.push(publisher.await??);
    }
    let mut latency = Histogram::<u64>::new(3)?;
    let mut deliveries = 0;
    for reader in readers {
        let histogram = reader.await??;
        deliveries += histogram.len();
        latency.add(&histogram)?;
    }
    let wall = start.elapsed();
    for reader in acks {
        reader.abort();
    }
    Ok(Report { messages, deliveries, wall, latency })
}

/// Publishes the messages `ids` of `run`, with up to `window` unacked; each
/// message's content is when it was sent, in microseconds after `base`.
/// A refused message ends the run (the members would wait for it forever).
/// Returns the task that reads the acks, to stop once the run is over.
async fn publish(
    mut ws: WebSocket<TcpStream>,
    (run, ids): (u128, impl Iterator<Item = usize>),
    window: usize,
    base: Instant,
) -> Result<tokio::task::JoinHandle<()>, Failure> {
    let window = Arc::new(Semaphore::new(window));
    let (sender, acks) = (ws.sender(), window.clone());
    // Its acks open the window; its own copies of the room's messages are dropped.
    let reading = tokio::spawn(async move {
        while let Some(Ok(event)) = ws.recv().await {
            let Event::Message(Message::Text(text)) = event else { continue };
            if text.as_str().starts_with(r#"{"type":"ack""#) {
                acks.add_permits(1);
            } else if text.as_str().starts_with(r#"{"type":"error""#) {
                eprintln!("cluster-load: a publish failed: {}", text.as_str());
                std::process::exit(1);
            }
        }
        eprintln!("cluster-load: a publisher's connection ended");
        std::process::exit(1);
    });
    for id in ids {
        window.acquire().await?.forget();
        let sent = base.elapsed().as_micros().to_string();
        let envelope = json!({"type": "message", "room": "general", "id": format!("{run}-{id}"), "content": sent});
        sender.send(Message::from(envelope.to_string())).await?;
    }
    Ok(reading)
}

/// A member: connected, welcomed, and in the default room.
async fn join(addr: &str) -> Result<WebSocket<TcpStream>, Failure> {
    let mut options = ClientOptions::default();
    if std::env::var_os("CLUSTER_LOAD_PLAIN").is_some() {
        options.socket.deflate = None;
    }
    let (mut ws, _) = connect_with(&format!("ws://{addr}/ws"), &options).await?;
    loop {
        let Some(event) = ws.recv().await else { return Err("closed before joining".into()) };
        if let Event::Message(Message::Text(text)) = event? {
            if text.as_str().starts_with(r#"{"type":"joined""#) {
                return Ok(ws);
            }
        }
    }
}

/// Reads `messages` room messages: the latency of each, in microseconds.
async fn read(mut ws: WebSocket<TcpStream>, base: Instant, messages: usize) -> Result<Histogram<u64>, Failure> {
    let mut latency = Histogram::<u64>::new(3)?;
    while (latency.len() as usize) < messages {
        let Some(event) = ws.recv().await else { return Err("a member was closed".into()) };
        let Event::Message(Message::Text(text)) = event? else { continue };
        let envelope: Value = serde_json::from_str(text.as_str())?;
        match envelope["type"].as_str() {
            Some("message") => {
                let sent: u64 = envelope["content"].as_str().ok_or("no content")?.parse()?;
                latency.record((base.elapsed().as_micros() as u64).saturating_sub(sent))?;
            }
            Some("gap") => return Err(format!("a member missed messages: {envelope}").into()),
            _ => {}
        }
    }
    Ok(latency)
}
