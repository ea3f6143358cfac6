//! Fan-out: `members` connections in the server's default room, and a
//! publisher that sends `tick <n> <time>` messages to the room, flat out with
//! at most `window` messages not yet delivered to everyone, or at a fixed
//! rate. Every delivery is counted, the publisher's own copy included, with
//! its latency from the publish.
//!
//! A member is ready once it has a frame that says `"joined"`; the publisher
//! starts when every member is.
//!
//! At a rate, `--sample K` times every K-th member (and the publisher's own
//! copy) alone: those read as soon as a message comes, the others drain
//! their sockets once a second, staggered. One thread cannot read 10,000
//! sockets per message as fast as a server writes them, so without it the
//! latency is mostly this generator's; with it, mostly the server's.

use crate::wire::{CLOSE, Conn, Reader, WriteHalf, client_frame, close_reason};
use crate::{Run, Shared, open_all};
use serde_json::{Value, json};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;
use ws_benches::Failure;
use ws_proto::frame::OpCode;

/// The fan-out mode's options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// The hub endpoint.
    #[arg(long)]
    url: String,
    /// Members of the room, besides the publisher.
    #[arg(long, default_value_t = 1000)]
    members: usize,
    /// Messages the publisher sends per second; flat out without it.
    #[arg(long)]
    rate: Option<f64>,
    /// Flat out: messages published but not yet delivered to everyone, at most.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Characters of content per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// At a rate: time every K-th member only; the others read once a second.
    #[arg(long, requires = "rate")]
    sample: Option<usize>,
}

/// What members and publisher share: how many are ready, and how many
/// receivers each recent message has reached.
struct Room {
    ready: Cell<usize>,
    reached: Vec<Cell<usize>>,
    progress: Notify,
    start: Instant,
}

/// Slots of `reached` per message of the window.
const RING_PER_WINDOW: usize = 2;

/// How long the publisher waits for the room to move before giving up.
const STALL: Duration = Duration::from_secs(30);

/// How often a member that is not timed reads, under `--sample`.
const LAZY_READS: Duration = Duration::from_secs(1);

pub(crate) async fn run(options: &Options, run: &Run) -> Result<Value, Failure> {
    let target = run.target(&options.url).await?;
    let ring = options.window.max(1) * RING_PER_WINDOW;
    let room = Rc::new(Room {
        ready: Cell::new(0),
        reached: (0..ring).map(|_| Cell::new(0)).collect(),
        progress: Notify::new(),
        start: Instant::now(),
    });
    println!("fanout: {} members and a publisher", options.members);
    let sample = options.sample.map(|k| k.max(1));
    let opened = Cell::new(0);
    open_all(&target, options.members, 100, run, |conn| {
        opened.set(opened.get() + 1);
        let (reader, room, shared) = (conn.into_reader(), room.clone(), run.shared.clone());
        let timed = sample.is_none_or(|k| opened.get() % k == 0);
        async move { if timed { member(reader, room, shared).await } else { lazy_member(reader, room, shared).await } }
    })
    .await?;
    room.wait(|| room.ready.get() == options.members).await.map_err(|_| "members never all joined")?;
    let publisher = Conn::open(&target).await?;
    let reader = member(publisher.reader, room.clone(), run.shared.clone());
    let shared = run.shared.clone();
    tokio::task::spawn_local(async move { reader.await.unwrap_or_else(|e| shared.fail(e)) });
    room.wait(|| room.ready.get() == options.members + 1).await.map_err(|_| "the publisher never joined")?;
    let pacing = Pacing {
        receivers: options.members + 1,
        rate: options.rate,
        window: options.window.max(1) as u64,
        padding: "x".repeat(options.size.saturating_sub(32)),
    };
    let publishing = publish(publisher.writer, pacing, room.clone(), run.shared.clone());
    let shared = run.shared.clone();
    tokio::task::spawn_local(async move { publishing.await.unwrap_or_else(|e| shared.fail(e)) });
    let mut report = run.measure("deliveries", "delivery").await?;
    report["mode"] = "fanout".into();
    report["members"] = json!(options.members);
    if let Some(k) = sample {
        // Every member gets every message, the timed ones alone are counted:
        // the totals are their counts scaled up.
        let timed = options.members / k;
        let scale = (options.members + 1) as f64 / (timed + 1) as f64;
        for key in ["count", "per_second"] {
            report[key] = json!(report[key].as_f64().map(|v| v * scale));
        }
        report["server_cpu_us"] = json!(report["server_cpu_us"].as_f64().map(|v| v / scale));
        report["timed_members"] = json!(timed);
        let (rate, cpu) = (report["per_second"].as_f64().unwrap_or(0.0), report["server_cpu_us"].as_f64());
        let cpu = cpu.map(|cpu| format!(", server CPU {cpu:.3} us per delivery")).unwrap_or_default();
        println!("fanout: {timed} members timed; all deliveries {rate:.0}/s{cpu}");
    }
    Ok(report)
}

impl Room {
    /// Waits until `done` holds, or fails after `STALL` without progress.
    async fn wait(&self, done: impl Fn() -> bool) -> Result<(), tokio::time::error::Elapsed> {
        while !done() {
            tokio::time::timeout(STALL, self.progress.notified()).await?;
        }
        Ok(())
    }

    fn reached(&self, n: u64) -> &Cell<usize> {
        &self.reached[n as usize % self.reached.len()]
    }
}

/// Reads frames until one says `"joined"`, and counts the member ready.
async fn join(reader: &mut Reader, room: &Room) -> Result<(), Failure> {
    while !reader.frame().await?.payload.windows(8).any(|w| w == b"\"joined\"") {}
    room.ready.set(room.ready.get() + 1);
    room.progress.notify_one();
    Ok(())
}

/// A member that is not timed: ready at `"joined"`, then it drains its
/// socket once every `LAZY_READS`, at a moment of its own.
async fn lazy_member(mut reader: Reader, room: Rc<Room>, shared: Rc<Shared>) -> Result<(), Failure> {
    join(&mut reader, &room).await?;
    let first = tokio::time::Instant::now() + LAZY_READS.mul_f64(rand::random::<f64>());
    let mut reads = tokio::time::interval_at(first, LAZY_READS);
    while !shared.stopped() {
        reads.tick().await;
        if !reader.fill().await? {
            return Err("the server ended a member's connection".into());
        }
        while let Some(frame) = reader.next_frame() {
            if frame.opcode == CLOSE {
                return Err(close_reason(&frame).into());
            }
        }
    }
    Ok(())
}

/// Reads one receiver's frames: ready at `"joined"`, then every tick counted.
async fn member(mut reader: Reader, room: Rc<Room>, shared: Rc<Shared>) -> Result<(), Failure> {
    join(&mut reader, &room).await?;
    while !shared.stopped() {
        if !reader.fill().await? {
            return Err("the server ended a member's connection".into());
        }
        while let Some(frame) = reader.next_frame() {
            if frame.opcode == CLOSE {
                return Err(close_reason(&frame).into());
            }
            if let Some((n, sent)) = frame.is_data().then(|| tick(&frame.payload)).flatten() {
                let reached = room.reached(n);
                reached.set(reached.get() + 1);
                shared.record(room.start.elapsed().saturating_sub(Duration::from_nanos(sent)));
            }
        }
        room.progress.notify_one();
    }
    Ok(())
}

/// The number and the send time of a tick message.
fn tick(payload: &[u8]) -> Option<(u64, u64)> {
    let at = payload.windows(5).position(|w| w == b"tick ")? + 5;
    let mut numbers = payload[at..].split(|&b| b == b' ').map(|n| std::str::from_utf8(n).ok()?.parse().ok());
    Some((numbers.next()??, numbers.next()??))
}

/// How the publisher goes: at a rate, or flat out within a window.
struct Pacing {
    receivers: usize,
    rate: Option<f64>,
    window: u64,
    padding: String,
}

/// Publishes ticks until the run stops.
async fn publish(mut writer: WriteHalf, pacing: Pacing, room: Rc<Room>, shared: Rc<Shared>) -> Result<(), Failure> {
    let Pacing { receivers, rate, window, padding } = pacing;
    let mut pace = rate.map(|rate| tokio::time::interval(Duration::from_secs_f64(1.0 / rate)));
    for n in 0u64.. {
        if shared.stopped() {
            break;
        }
        match &mut pace {
            Some(pace) => _ = pace.tick().await,
            None if n >= window => {
                let behind = room.reached(n - window);
                room.wait(|| behind.get() >= receivers).await.map_err(|_| format!("message {} stalled", n - window))?;
            }
            None => {}
        }
        room.reached(n).set(0);
        let sent = room.start.elapsed().as_nanos();
        let content = format!("tick {n} {sent} {padding}");
        let envelope = json!({"type": "message", "room": "general", "content": content});
        writer.write_all(&client_frame(OpCode::Text, envelope.to_string().as_bytes())).await?;
    }
    Ok(())
}
