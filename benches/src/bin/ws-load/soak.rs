//! Soak: `connections` hub clients held for the run's `--duration`, each a
//! member of one of `rooms` rooms and answering the server's pings; every
//! second, `reconnect` percent of them, drawn at random, close (a close
//! frame) and connect and join again; and a publisher sends `rate` messages
//! a second, round the rooms. Every `sample` seconds it prints the server's
//! resident memory, open files and threads (from /proc, given `--pid`), its
//! runtime's tasks and its connections (from its `/metrics`), and the
//! clients' own counts. At the end: the growth of each figure from the
//! first sample after `--warmup` to the last, and, with `--chart`, an SVG
//! of the samples.

use crate::Run;
use crate::wire::{CLOSE, Conn, Target, client_frame, close_reason};
use plotters::prelude::*;
use rand::seq::index::sample;
use serde_json::{Value, json};
use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior, interval};
use ws_benches::{Failure, rss_bytes};
use ws_proto::frame::OpCode;

/// The soak mode's options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// The hub endpoint.
    #[arg(long)]
    url: String,
    /// Connections held.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Rooms the connections are spread over.
    #[arg(long, default_value_t = 100)]
    rooms: usize,
    /// Percent of the connections closed and opened again every second.
    #[arg(long, default_value_t = 1.0)]
    reconnect: f64,
    /// Messages the publisher sends per second, round the rooms.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Seconds between two samples.
    #[arg(long, default_value_t = 60.0)]
    sample: f64,
    /// Where to draw the samples, as SVG.
    #[arg(long)]
    chart: Option<PathBuf>,
}

/// What the clients counted since the start.
#[derive(Default)]
struct Tally {
    /// Connections opened, the first of each slot included.
    opened: Cell<u64>,
    /// Room messages received.
    delivered: Cell<u64>,
    /// Pings answered.
    pongs: Cell<u64>,
}

/// A figure of a sample: its name in the result, its label, and its value.
type Figure = (&'static str, &'static str, fn(&Sample) -> f64);

const FIGURES: [Figure; 5] = [
    ("rss_mib", "resident memory, MiB", |s| s.rss_mib),
    ("open_files", "open files", |s| s.open_files),
    ("threads", "threads", |s| s.threads),
    ("tasks", "tasks", |s| s.tasks),
    ("connections", "connections", |s| s.connections),
];

/// One sample of the server.
#[derive(Clone, Copy, Debug)]
struct Sample {
    minute: f64,
    rss_mib: f64,
    open_files: f64,
    threads: f64,
    tasks: f64,
    connections: f64,
}

pub(crate) async fn run(options: &Options, run: &Run) -> Result<Value, Failure> {
    let target = run.target(&options.url).await?;
    let (tally, slots) = (Rc::new(Tally::default()), (0..options.connections).map(|_| Rc::new(Notify::new())));
    let slots: Vec<Rc<Notify>> = slots.collect();
    println!("soak: opening {} connections in {} rooms", options.connections, options.rooms);
    for (i, leave) in slots.iter().enumerate() {
        let (target, leave, tally, shared) = (target.clone(), leave.clone(), tally.clone(), run.shared.clone());
        let room = format!("soak-{}", i % options.rooms);
        let conn = Conn::open(&target).await?;
        tokio::task::spawn_local(async move {
            if let Err(e) = member(conn, &target, &room, &leave, &tally).await {
                shared.fail(e);
            }
        });
        if i % 100 == 99 {
            run.check()?;
        }
    }
    let publishing = tokio::task::spawn_local(publish(target.clone(), options.rooms, options.rate));
    let samples = watch(options, run, &target, &slots, &tally).await;
    publishing.abort();
    let samples = samples?;
    if let Some(path) = &options.chart {
        draw(path, &samples, options)?;
    }
    report(&samples, run, &tally)
}

/// A member's slot: connects, joins `room`, reads and answers pings until
/// `leave` says to go, then closes and does it all again.
async fn member(mut conn: Conn, target: &Target, room: &str, leave: &Notify, tally: &Tally) -> Result<(), Failure> {
    let join = json!({"type": "join", "room": room}).to_string();
    loop {
        conn.writer.write_all(&client_frame(OpCode::Text, join.as_bytes())).await?;
        tally.opened.set(tally.opened.get() + 1);
        loop {
            tokio::select! {
                filled = conn.reader.fill() => {
                    if !filled? {
                        return Err("the server ended a connection".into());
                    }
                    while let Some(frame) = conn.reader.next_frame() {
                        match frame.opcode {
                            0x9 => {
                                conn.writer.write_all(&client_frame(OpCode::Pong, &frame.payload)).await?;
                                tally.pongs.set(tally.pongs.get() + 1);
                            }
                            CLOSE => return Err(close_reason(&frame).into()),
                            0x1 if frame.payload.starts_with(br#"{"type":"message""#) => {
                                tally.delivered.set(tally.delivered.get() + 1);
                            }
                            _ => {}
                        }
                    }
                }
                _ = leave.notified() => break,
            }
        }
        conn.writer.write_all(&client_frame(OpCode::Close, &1000u16.to_be_bytes())).await?;
        drop(conn);
        conn = Conn::open(target).await?;
    }
}

/// The publisher: a member of every room, sending `rate` messages a second round them.
async fn publish(target: Target, rooms: usize, rate: f64) -> Result<(), Failure> {
    let mut conn = Conn::open(&target).await?;
    for room in 0..rooms {
        let join = json!({"type": "join", "room": format!("soak-{room}")}).to_string();
        conn.writer.write_all(&client_frame(OpCode::Text, join.as_bytes())).await?;
    }
    let (mut reader, mut writer) = (conn.reader, conn.writer);
    let mut ticks = interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                let room = format!("soak-{}", n as usize % rooms);
                let envelope = json!({"type": "message", "room": room, "content": format!("soak {n}")});
                writer.write_all(&client_frame(OpCode::Text, envelope.to_string().as_bytes())).await?;
                n += 1;
            }
            // What comes back is dropped; pings are answered.
            filled = reader.fill() => {
                if !filled? {
                    return Err("the server ended the publisher's connection".into());
                }
                while let Some(frame) = reader.next_frame() {
                    if frame.opcode == 0x9 {
                        writer.write_all(&client_frame(OpCode::Pong, &frame.payload)).await?;
                    }
                }
            }
        }
    }
}

/// Every second, `reconnect` percent of the slots told to go again; every
/// `sample` seconds, a sample, printed; until the run's duration is over.
async fn watch(
    options: &Options,
    run: &Run,
    target: &Target,
    slots: &[Rc<Notify>],
    tally: &Tally,
) -> Result<Vec<Sample>, Failure> {
    let per_second = ((slots.len() as f64 * options.reconnect / 100.0).round() as usize).min(slots.len());
    let start = Instant::now();
    let (mut seconds, mut samples, mut next_sample) = (interval(Duration::from_secs(1)), Vec::new(), start);
    seconds.set_missed_tick_behavior(MissedTickBehavior::Delay);
    println!("soak: {per_second} reconnections a second, {} messages a second, for {:?}", options.rate, run.duration);
    println!("minute  rss_MiB  open_files  threads  tasks  connections  opened  delivered  pongs");
    while start.elapsed() < run.duration {
        seconds.tick().await;
        run.check()?;
        for i in sample(&mut rand::rng(), slots.len(), per_second) {
            slots[i].notify_one();
        }
        if Instant::now() >= next_sample {
            let taken = take_sample(run, target, start.elapsed()).await?;
            println!(
                "{:6.1}  {:7.1}  {:10}  {:7}  {:5}  {:11}  {:6}  {:9}  {:5}",
                taken.minute,
                taken.rss_mib,
                taken.open_files,
                taken.threads,
                taken.tasks,
                taken.connections,
                tally.opened.get(),
                tally.delivered.get(),
                tally.pongs.get()
            );
            samples.push(taken);
            next_sample += Duration::from_secs_f64(options.sample);
        }
    }
    Ok(samples)
}

/// The server's figures now.
async fn take_sample(run: &Run, target: &Target, elapsed: Duration) -> Result<Sample, Failure> {
    let pid = run.pid.ok_or("a soak samples the server: give its --pid")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let threads = status.lines().find_map(|l| l.strip_prefix("Threads:")).ok_or("no Threads in /proc status")?;
    let metrics = metrics(target).await?;
    Ok(Sample {
        minute: elapsed.as_secs_f64() / 60.0,
        rss_mib: rss_bytes(pid)? as f64 / (1024.0 * 1024.0),
        open_files: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as f64,
        threads: threads.trim().parse()?,
        tasks: metric(&metrics, "ws_tasks")?,
        connections: metric(&metrics, "ws_connections")?,
    })
}

/// The server's `/metrics` text, over a connection of its own.
async fn metrics(target: &Target) -> Result<String, Failure> {
    let mut stream = TcpStream::connect(&target.authority).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", target.authority);
    stream.write_all(request.as_bytes()).await?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await?;
    Ok(text)
}

/// `name`'s value in a metrics text.
fn metric(text: &str, name: &str) -> Result<f64, Failure> {
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).ok_or(format!("no {name} in /metrics"))?;
    Ok(line.rsplit(' ').next().unwrap_or_default().parse()?)
}

/// Each figure's growth from the first sample after the warm-up to the
/// last, printed, with the clients' counts: the run's result.
fn report(samples: &[Sample], run: &Run, tally: &Tally) -> Result<Value, Failure> {
    let warm = run.warmup.as_secs_f64() / 60.0;
    let first = samples.iter().find(|s| s.minute >= warm).ok_or("no sample after the warm-up: run longer")?;
    let last = samples.last().ok_or("no sample")?;
    let mut growth = serde_json::Map::new();
    for (name, _, figure) in FIGURES {
        let (from, to) = (figure(first), figure(last));
        let (low, high) = samples
            .iter()
            .filter(|s| s.minute >= warm)
            .map(figure)
            .fold((f64::MAX, f64::MIN), |(low, high), v| (low.min(v), high.max(v)));
        println!(
            "soak: {name} from minute {:.1} to {:.1}: {from} -> {to} (between {low} and {high})",
            first.minute, last.minute
        );
        growth.insert(name.to_owned(), json!({"from": from, "to": to, "low": low, "high": high}));
    }
    println!(
        "soak: {} connections opened, {} messages delivered, {} pings answered",
        tally.opened.get(),
        tally.delivered.get(),
        tally.pongs.get()
    );
    let series: Vec<Value> =
        samples.iter().map(|s| json!([s.minute, s.rss_mib, s.open_files, s.threads, s.tasks, s.connections])).collect();
    Ok(json!({
        "mode": "soak",
        "after_warmup": growth,
        "opened": tally.opened.get(),
        "delivered": tally.delivered.get(),
        "samples": series,
    }))
}

/// The samples as three panels, one above the other: resident memory,
/// open files and tasks, by minute.
fn draw(path: &PathBuf, samples: &[Sample], options: &Options) -> Result<(), Failure> {
    let root = SVGBackend::new(path, (900, 720)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "ws-server under a soak: {} connections, {}% reconnecting a second, {} messages a second",
        options.connections, options.reconnect, options.rate
    );
    let root = root.titled(&title, ("sans-serif", 16))?;
    let panels = [FIGURES[0], FIGURES[1], FIGURES[3]];
    let end = samples.last().map_or(1.0, |s| s.minute).max(1.0);
    for ((_, label, figure), area) in panels.into_iter().zip(root.split_evenly((3, 1))) {
        let high = samples.iter().map(figure).fold(0.0, f64::max) * 1.15 + 1.0;
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..end, 0.0..high)?;
        chart.configure_mesh().x_desc("minute").y_desc(label).draw()?;
        chart.draw_series(LineSeries::new(samples.iter().map(|s| (s.minute, figure(s))), BLUE.stroke_width(2)))?;
    }
    root.present()?;
    Ok(())
}
