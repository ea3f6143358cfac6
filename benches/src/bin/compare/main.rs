//! `compare`: every load scenario against ours, the peers and the raw TCP
//! floor, several rounds in alternating order, with the server pinned to one
//! core and `ws-load` to the other; then the micro-benchmarks that have a
//! peer. It prints a line per run and writes the medians to
//! docs/benchmarks.md (between its markers) and docs/benchmarks-compare.svg.
//!
//! Run it as `benches/compare [ROUNDS]`, which builds everything first.

mod chart;
mod micro;
mod report;

use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use ws_benches::Failure;

/// A server under test.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Server {
    Ours,
    Tungstenite,
    TokioWebsockets,
    Fastwebsockets,
    GorillaHub,
    Floor,
}

impl Server {
    /// Every server, in the order of the report's columns.
    const ALL: [Server; 6] = [
        Server::Ours,
        Server::Tungstenite,
        Server::TokioWebsockets,
        Server::Fastwebsockets,
        Server::GorillaHub,
        Server::Floor,
    ];

    fn name(self) -> &'static str {
        match self {
            Server::Ours => "ours",
            Server::Tungstenite => "tokio-tungstenite",
            Server::TokioWebsockets => "tokio-websockets",
            Server::Fastwebsockets => "fastwebsockets",
            Server::GorillaHub => "gorilla-style hub",
            Server::Floor => "raw TCP floor",
        }
    }

    /// The command that starts it on `port`.
    fn command(self, bin: &Path, port: u16) -> Command {
        let listen = format!("127.0.0.1:{port}");
        let mut command = match self {
            Server::Ours => {
                let mut c = Command::new(bin.join("ws-server"));
                c.args(["--echo", "--max-connections", "0", "--max-connections-per-ip", "0", "--rate-limit", "0"]);
                // The key turns on the HTTP publish API, for the API scenarios; nothing else uses
                // it. Each browser-like client makes a room of its own, past the default 10,000.
                c.args(["--api-key", API_KEY, "--max-rooms", "100000"]);
                // Peers log nothing per connection; ours logs warnings only, as they do.
                c.env("RUST_LOG", "warn");
                c
            }
            peer => {
                let mut c = Command::new(bin.join("peer"));
                c.arg(peer.peer_kind());
                c
            }
        };
        command.args(["--listen", &listen]);
        command
    }

    fn peer_kind(self) -> &'static str {
        match self {
            Server::Ours => "",
            Server::Tungstenite => "tungstenite",
            Server::TokioWebsockets => "tokio-websockets",
            Server::Fastwebsockets => "fastwebsockets",
            Server::GorillaHub => "gorilla-hub",
            Server::Floor => "floor",
        }
    }
}

/// The echo servers and the floor.
const ECHO: &[Server] =
    &[Server::Ours, Server::Tungstenite, Server::TokioWebsockets, Server::Fastwebsockets, Server::Floor];
/// The hubs.
const HUBS: &[Server] = &[Server::Ours, Server::GorillaHub];
/// Ours alone, where no peer has what the scenario needs.
const OURS: &[Server] = &[Server::Ours];

/// The key ours is started with, for its HTTP publish API.
const API_KEY: &str = "bench-key";

/// One load scenario: what `ws-load` runs, against which servers, the
/// figures of its result that the report compares (lower is better, but
/// where the unit says otherwise), and the target of the first, if the
/// issue that asked for the scenario set one.
struct Scenario {
    title: &'static str,
    short: &'static str,
    servers: &'static [Server],
    /// The endpoint; one under `/api/` is HTTP, any other a WebSocket.
    path: &'static str,
    load: &'static [&'static str],
    /// Keys of ws-load's `result` JSON; each is a row of the report.
    figures: &'static [&'static str],
    unit: &'static str,
    target: Option<Goal>,
}

/// What a scenario's first figure should be, on ours.
#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtMost(limit) => value <= limit,
            Goal::AtLeast(floor) => value >= floor,
        }
    }

    fn describe(self) -> String {
        match self {
            Goal::AtMost(limit) => format!("at most {limit}"),
            Goal::AtLeast(floor) => format!("at least {floor}"),
        }
    }
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        title: "Echo, 20 B binary, 100 connections, 10 in flight each",
        short: "echo 20 B x10",
        servers: ECHO,
        path: "/echo",
        load: &["echo", "--connections", "100", "--size", "20", "--depth", "10"],
        figures: &["server_cpu_us"],
        target: None,
        unit: "us of server CPU per message",
    },
    Scenario {
        title: "Echo, 16 KiB binary, 100 connections, 10 in flight each",
        short: "echo 16 KiB",
        servers: ECHO,
        path: "/echo",
        load: &["echo", "--connections", "100", "--size", "16384", "--depth", "10"],
        figures: &["server_cpu_us"],
        target: None,
        unit: "us of server CPU per message",
    },
    Scenario {
        title: "Echo, 20 B binary, 100 connections, 1 in flight each",
        short: "echo 20 B x1",
        servers: ECHO,
        path: "/echo",
        load: &["echo", "--connections", "100", "--size", "20", "--depth", "1"],
        figures: &["server_cpu_us"],
        target: None,
        unit: "us of server CPU per message",
    },
    Scenario {
        title: "Opening handshakes, 16 at a time",
        short: "handshake",
        servers: ECHO,
        path: "/echo",
        load: &["connect", "--concurrency", "16"],
        figures: &["server_cpu_us"],
        target: None,
        unit: "us of server CPU per handshake",
    },
    Scenario {
        title: "Idle echo connections, 10,000",
        short: "idle echo",
        servers: ECHO,
        path: "/echo",
        load: &["idle", "--connections", "10000"],
        figures: &["rss_per_connection"],
        target: None,
        unit: "bytes of server RSS per connection",
    },
    Scenario {
        title: "Idle hub connections, 10,000 (each in one room)",
        short: "idle hub",
        servers: HUBS,
        path: "/ws",
        load: &["idle", "--connections", "10000"],
        figures: &["rss_per_connection"],
        target: None,
        unit: "bytes of server RSS per connection",
    },
    Scenario {
        title: "Fan-out to 1,000 members of one room, publisher flat out (16 messages in flight)",
        short: "fan-out 1k",
        servers: HUBS,
        path: "/ws",
        load: &["fanout", "--members", "1000", "--window", "16"],
        figures: &["server_cpu_us"],
        target: None,
        unit: "us of server CPU per delivery",
    },
    Scenario {
        title: "Fan-out to 10,000 members of one room, publisher flat out (16 messages in flight)",
        short: "fan-out 10k",
        servers: HUBS,
        path: "/ws",
        load: &["fanout", "--members", "10000", "--window", "16"],
        figures: &["server_cpu_us"],
        target: None,
        unit: "us of server CPU per delivery",
    },
    // The gorilla-style hub has one room for everyone (each client's message
    // would go to all 10,000) and no permessage-deflate: ours alone.
    Scenario {
        title: "Idle hub connections of browser-like clients, 10,000 (Chromium's offer, one message each way; ours only)",
        short: "idle browser",
        servers: OURS,
        path: "/ws",
        load: &["idle", "--browser", "--connections", "10000"],
        figures: &["rss_per_connection"],
        target: Some(Goal::AtMost(2048.0)),
        unit: "bytes of server RSS per connection",
    },
    Scenario {
        title: "API publish over one kept-alive connection, one message per request, 32 in flight (ours only)",
        short: "api x1",
        servers: OURS,
        path: "/api/publish",
        load: &["api", "--api-key", API_KEY, "--depth", "32"],
        figures: &["per_second"],
        target: Some(Goal::AtLeast(20_000.0)),
        unit: "messages per second (higher is better)",
    },
    Scenario {
        title: "API publish over one kept-alive connection, batches of 100 messages, 8 in flight (ours only)",
        short: "api x100",
        servers: OURS,
        path: "/api/publish",
        load: &["api", "--api-key", API_KEY, "--depth", "8", "--batch", "100"],
        figures: &["per_second"],
        target: Some(Goal::AtLeast(20_000.0)),
        unit: "messages per second (higher is better)",
    },
    Scenario {
        title: "Fan-out latency to 10,000 members of one room at 10 messages/s (every 50th member timed)",
        short: "fan-out 10/s",
        servers: HUBS,
        path: "/ws",
        load: &["fanout", "--members", "10000", "--rate", "10", "--sample", "50"],
        figures: &["p50_us", "p99_us"],
        target: None,
        unit: "us from publish to delivery",
    },
    Scenario {
        title: "Fan-out latency to 10,000 members of one room at 50 messages/s (every 50th member timed)",
        short: "fan-out 50/s",
        servers: HUBS,
        path: "/ws",
        load: &["fanout", "--members", "10000", "--rate", "50", "--sample", "50"],
        figures: &["p50_us", "p99_us"],
        target: None,
        unit: "us from publish to delivery",
    },
];

/// Seconds of warm-up and of measurement per run.
const WARMUP: &str = "1";
const DURATION: &str = "3";

/// One run's figures: the compared ones, in the scenario's order, and the rate ws-load saw.
#[derive(Clone)]
struct Sample {
    figures: Vec<f64>,
    per_second: Option<f64>,
}

/// Every sample, by scenario (its index) and server.
type Samples = BTreeMap<(usize, Server), Vec<Sample>>;

fn main() -> Result<(), Failure> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(3), |r| r.parse())?;
    let bin = std::env::current_exe()?.parent().ok_or("no binary folder")?.to_path_buf();
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let pinned = std::thread::available_parallelism()?.get() >= 2;
    if !pinned {
        println!("warning: fewer than 2 cores: server and ws-load are not pinned, and they share a core");
    }
    let started = Instant::now();
    let mut samples = Samples::new();
    for (index, scenario) in SCENARIOS.iter().enumerate() {
        for round in 0..rounds {
            // Alternate: each round starts with the next server.
            for turn in 0..scenario.servers.len() {
                let server = scenario.servers[(turn + round) % scenario.servers.len()];
                let sample = run(&bin, scenario, server, pinned)?;
                progress(scenario, server, round, rounds, &sample);
                samples.entry((index, server)).or_default().push(sample);
            }
        }
    }
    let micro = micro::run(&root)?;
    let machine = report::Machine::here(rounds, pinned)?;
    let svg = root.join("docs/benchmarks-compare.svg");
    chart::draw(&svg, &samples)?;
    report::write(&root.join("docs/benchmarks.md"), &machine, &samples, &micro)?;
    println!("wrote docs/benchmarks.md and docs/benchmarks-compare.svg in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn progress(scenario: &Scenario, server: Server, round: usize, rounds: usize, sample: &Sample) {
    let rate = sample.per_second.map(|r| format!(", {r:.0}/s")).unwrap_or_default();
    let figures: Vec<String> = sample.figures.iter().map(|f| format!("{f:.3}")).collect();
    let keys = if scenario.figures.len() > 1 { format!(" ({})", scenario.figures.join(", ")) } else { String::new() };
    println!(
        "[{}] round {}/{rounds} {}: {} {}{keys}{rate}",
        scenario.short,
        round + 1,
        server.name(),
        figures.join(", "),
        scenario.unit
    );
}

/// Starts `server`, runs the scenario's load on it, stops it.
fn run(bin: &Path, scenario: &Scenario, server: Server, pinned: bool) -> Result<Sample, Failure> {
    let port = free_port()?;
    let running = Running(pin(server.command(bin, port), 0, pinned).stdout(Stdio::null()).spawn()?);
    ready(port)?;
    let scheme = if scenario.path.starts_with("/api/") { "http" } else { "ws" };
    let url = format!("{scheme}://127.0.0.1:{port}{}", scenario.path);
    let pid = running.0.id().to_string();
    let mut load = pin(Command::new(bin.join("ws-load")), 1, pinned);
    load.args(["--pid", &pid, "--warmup", WARMUP, "--duration", DURATION]).args(scenario.load).args(["--url", &url]);
    let output = load.stderr(Stdio::inherit()).output()?;
    drop(running);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result = stdout.lines().find_map(|l| l.strip_prefix("result ")).ok_or_else(|| {
        format!("{} on {}: ws-load failed ({}):\n{stdout}", scenario.short, server.name(), output.status)
    })?;
    let result: Value = serde_json::from_str(result)?;
    let figures =
        scenario.figures.iter().map(|&key| result[key].as_f64().ok_or_else(|| format!("no {key} in {result}")));
    Ok(Sample { figures: figures.collect::<Result<_, _>>()?, per_second: result["per_second"].as_f64() })
}

/// `command` on CPU `cpu`, when there are cores enough to pin.
fn pin(command: Command, cpu: usize, pinned: bool) -> Command {
    if !pinned {
        return command;
    }
    let mut taskset = Command::new("taskset");
    taskset.args(["-c", &cpu.to_string()]).arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            taskset.env(key, value);
        }
    }
    taskset
}

/// A port nobody listens on now.
fn free_port() -> Result<u16, Failure> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until the server accepts connections on `port`.
fn ready(port: u16) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("no server came up on port {port}").into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// A server process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The median of some figures.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 { (values[mid - 1] + values[mid]) / 2.0 } else { values[mid] }
}
