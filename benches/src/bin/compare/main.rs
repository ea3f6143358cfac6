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

/// One load scenario: what `ws-load` runs, against which servers, and the
/// figure of its result that the report compares (lower is better).
struct Scenario {
    title: &'static str,
    short: &'static str,
    servers: &'static [Server],
    path: &'static str,
    load: &'static [&'static str],
    figure: &'static str,
    unit: &'static str,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        title: "Echo, 20 B binary, 100 connections, 10 in flight each",
        short: "echo 20 B x10",
        servers: ECHO,
        path: "/echo",
        load: &["echo", "--connections", "100", "--size", "20", "--depth", "10"],
        figure: "server_cpu_us",
        unit: "us of server CPU per message",
    },
    Scenario {
        title: "Echo, 16 KiB binary, 100 connections, 10 in flight each",
        short: "echo 16 KiB",
        servers: ECHO,
        path: "/echo",
        load: &["echo", "--connections", "100", "--size", "16384", "--depth", "10"],
        figure: "server_cpu_us",
        unit: "us of server CPU per message",
    },
    Scenario {
        title: "Echo, 20 B binary, 100 connections, 1 in flight each",
        short: "echo 20 B x1",
        servers: ECHO,
        path: "/echo",
        load: &["echo", "--connections", "100", "--size", "20", "--depth", "1"],
        figure: "server_cpu_us",
        unit: "us of server CPU per message",
    },
    Scenario {
        title: "Opening handshakes, 16 at a time",
        short: "handshake",
        servers: ECHO,
        path: "/echo",
        load: &["connect", "--concurrency", "16"],
        figure: "server_cpu_us",
        unit: "us of server CPU per handshake",
    },
    Scenario {
        title: "Idle echo connections, 10,000",
        short: "idle echo",
        servers: ECHO,
        path: "/echo",
        load: &["idle", "--connections", "10000"],
        figure: "rss_per_connection",
        unit: "bytes of server RSS per connection",
    },
    Scenario {
        title: "Idle hub connections, 10,000 (each in one room)",
        short: "idle hub",
        servers: HUBS,
        path: "/ws",
        load: &["idle", "--connections", "10000"],
        figure: "rss_per_connection",
        unit: "bytes of server RSS per connection",
    },
    Scenario {
        title: "Fan-out to 1,000 members of one room, publisher flat out (16 messages in flight)",
        short: "fan-out 1k",
        servers: HUBS,
        path: "/ws",
        load: &["fanout", "--members", "1000", "--window", "16"],
        figure: "server_cpu_us",
        unit: "us of server CPU per delivery",
    },
    Scenario {
        title: "Fan-out to 10,000 members of one room, publisher flat out (16 messages in flight)",
        short: "fan-out 10k",
        servers: HUBS,
        path: "/ws",
        load: &["fanout", "--members", "10000", "--window", "16"],
        figure: "server_cpu_us",
        unit: "us of server CPU per delivery",
    },
];

/// Seconds of warm-up and of measurement per run.
const WARMUP: &str = "1";
const DURATION: &str = "3";

/// One run's figures: the compared one, and the rate ws-load saw.
#[derive(Clone, Copy)]
struct Sample {
    figure: f64,
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
                progress(scenario, server, round, rounds, sample);
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

fn progress(scenario: &Scenario, server: Server, round: usize, rounds: usize, sample: Sample) {
    let rate = sample.per_second.map(|r| format!(", {r:.0}/s")).unwrap_or_default();
    println!(
        "[{}] round {}/{rounds} {}: {:.3} {}{rate}",
        scenario.short,
        round + 1,
        server.name(),
        sample.figure,
        scenario.unit
    );
}

/// Starts `server`, runs the scenario's load on it, stops it.
fn run(bin: &Path, scenario: &Scenario, server: Server, pinned: bool) -> Result<Sample, Failure> {
    let port = free_port()?;
    let running = Running(pin(server.command(bin, port), 0, pinned).stdout(Stdio::null()).spawn()?);
    ready(port)?;
    let url = format!("ws://127.0.0.1:{port}{}", scenario.path);
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
    let figure = result[scenario.figure].as_f64().ok_or_else(|| format!("no {} in {result}", scenario.figure))?;
    Ok(Sample { figure, per_second: result["per_second"].as_f64() })
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
