//! The report: docs/benchmarks.md's section between the compare markers,
//! with the machine, the commands, the medians side by side, the
//! micro-benchmarks and the targets, met or missed.

use crate::micro::Pair;
use crate::{API_KEY, DURATION, SCENARIOS, Sample, Samples, Server, WARMUP, median};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use ws_benches::Failure;

const BEGIN: &str = "<!-- benches/compare: begin. Written by benches/compare; edits here are overwritten. -->";
const END: &str = "<!-- benches/compare: end -->";

/// Where and how the run went.
pub(crate) struct Machine {
    description: String,
}

impl Machine {
    pub(crate) fn here(rounds: usize, pinned: bool) -> Result<Machine, Failure> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map_or("unknown CPU", |m| m.trim_start_matches([' ', '\t', ':']));
        let cores = std::thread::available_parallelism()?.get();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
        let run = |program: &str, args: &[&str]| -> Result<String, Failure> {
            Ok(String::from_utf8(Command::new(program).args(args).output()?.stdout)?.trim().to_owned())
        };
        let (date, rustc, commit) =
            (run("date", &["-u", "+%F"])?, run("rustc", &["-V"])?, run("git", &["rev-parse", "--short", "HEAD"])?);
        let pinning = if pinned {
            "The server runs on CPU 0 and ws-load on CPU 1 (taskset)."
        } else {
            "Fewer than 2 cores: server and ws-load were not pinned and shared the machine."
        };
        let description = format!(
            "Written by `benches/compare {rounds}` on {date} at {commit}: {model}, {cores} cores, Linux {}, {rustc}. \
             {pinning} Each scenario runs every server in turn for {rounds} rounds, each round starting with the \
             next server; a figure is the median of the rounds. A run is {WARMUP} s of warm-up and {DURATION} s \
             measured; the server's CPU time and memory come from /proc/PID of the server process.",
            kernel.trim()
        );
        Ok(Machine { description })
    }
}

/// Prints the section and writes it into `path`, in place of the last one
/// or at the end: the file holds what the run printed.
pub(crate) fn write(path: &Path, machine: &Machine, samples: &Samples, micro: &[Pair]) -> Result<(), Failure> {
    let section = section(machine, samples, micro);
    println!("{section}");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(begin), Some(end)) => format!("{}{section}{}", &old[..begin], &old[end + END.len()..]),
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}

fn section(machine: &Machine, samples: &Samples, micro: &[Pair]) -> String {
    let mut out = format!("{BEGIN}\n## Beside the peers, in one run (benches/compare)\n\n{}\n\n", machine.description);
    out.push_str(COMMANDS);
    out.push_str("\n### Server cost, medians (lower is better, unless the figure says otherwise)\n\n");
    out.push_str("In parentheses: ours divided by that server's figure; below 1, ours costs less. ");
    out.push_str("A target applies to ours, and is listed under Targets as well.\n\n");
    table(&mut out, samples, true);
    out.push_str("\n### Rate seen by ws-load, medians per second\n\n");
    out.push_str(
        "ws-load runs on one core; where it is the limit, these rates say more about it than about the server.\n\n",
    );
    table(&mut out, samples, false);
    out.push_str("\n### Micro-benchmarks (criterion, median time per iteration)\n\n");
    out.push_str("| bench | ours | peer | peer's time | ours/peer |\n|---|---|---|---|---|\n");
    for p in micro {
        let ratio = p.ours_ns / p.peer_ns;
        let _ = writeln!(out, "| {} | {:.0} ns | {} | {:.0} ns | {ratio:.2} |", p.what, p.ours_ns, p.peer, p.peer_ns);
    }
    out.push_str("\n### Targets\n\n| target | measured | |\n|---|---|---|\n");
    for target in crate::report::targets(samples, micro) {
        let verdict = if target.met { "met" } else { "**missed**" };
        let _ = writeln!(out, "| {} | {} | {verdict} |", target.what, target.measured);
    }
    out.push_str("\n![ours and the peers, cost relative to ours](benchmarks-compare.svg)\n");
    out.push_str(END);
    out
}

const COMMANDS: &str = "The commands (PORT and PID are each run's own):\n\n\
- ours: `RUST_LOG=warn target/release/ws-server --echo --max-connections 0 --max-connections-per-ip 0 --rate-limit 0 --api-key KEY --max-rooms 100000 --listen 127.0.0.1:PORT`\n\
- a peer: `target/release/peer KIND --listen 127.0.0.1:PORT` (benches/src/bin/peer: KIND is tungstenite, tokio-websockets, fastwebsockets, gorilla-hub or floor)\n\
- the load: `target/release/ws-load --pid PID --warmup 1 --duration 3 MODE --url ws://127.0.0.1:PORT/PATH ...` (`http://` for `/api/publish`), the mode and options in the first column\n";

/// A table of medians, a column per server: with `cost`, a row per figure
/// of each scenario, with ratios to ours and the target; else a row per
/// scenario of the rate ws-load saw.
fn table(out: &mut String, samples: &Samples, cost: bool) {
    out.push_str(if cost { "| scenario | figure | target |" } else { "| scenario | figure |" });
    for server in Server::ALL {
        let _ = write!(out, " {} |", server.name());
    }
    out.push_str(if cost { "\n|---|---|---|" } else { "\n|---|---|" });
    out.push_str(&"---|".repeat(Server::ALL.len()));
    out.push('\n');
    for (index, scenario) in SCENARIOS.iter().enumerate() {
        let rows = if cost { (0..scenario.figures.len()).map(Some).collect() } else { vec![None] };
        for row in rows {
            let value = |s: &Sample| match row {
                Some(k) => s.figures.get(k).copied(),
                None => s.per_second,
            };
            if Server::ALL.iter().all(|&server| medians(samples, index, server, value).is_none()) {
                continue;
            }
            let load = scenario.load.join(" ").replace(API_KEY, "KEY");
            let _ = write!(out, "| {} (`{load}`) |", scenario.title);
            match row {
                Some(k) if scenario.figures.len() > 1 => {
                    _ = write!(out, " `{}`, {} |", scenario.figures[k], scenario.unit)
                }
                Some(_) => _ = write!(out, " {} |", scenario.unit),
                None => out.push_str(" per second |"),
            }
            if cost {
                let target = scenario.target.filter(|_| row == Some(0)).map(|goal| goal.describe());
                let _ = write!(out, " {} |", target.unwrap_or_default());
            }
            let ours = medians(samples, index, Server::Ours, value);
            for server in Server::ALL {
                let cell = match (medians(samples, index, server, value), ours) {
                    (Some(v), Some(o)) if cost && server != Server::Ours => format!("{} ({:.2})", figure(v), o / v),
                    (Some(v), _) => figure(v),
                    (None, _) => String::new(),
                };
                let _ = write!(out, " {cell} |");
            }
            out.push('\n');
        }
    }
}

/// The median of one figure of a scenario's runs on `server`, if it ran there.
pub(crate) fn medians(
    samples: &Samples,
    index: usize,
    server: Server,
    value: impl Fn(&Sample) -> Option<f64>,
) -> Option<f64> {
    let mut values: Vec<f64> = samples.get(&(index, server))?.iter().filter_map(value).collect();
    (!values.is_empty()).then(|| median(&mut values))
}

fn figure(value: f64) -> String {
    if value >= 100.0 { format!("{value:.0}") } else { format!("{value:.3}") }
}

/// A target of the benchmark issue, and how this run stands against it.
struct Target {
    what: String,
    measured: String,
    met: bool,
}

/// The median figure of scenario `short` on `server`.
fn cost(samples: &Samples, short: &str, server: Server) -> f64 {
    SCENARIOS
        .iter()
        .position(|s| s.short == short)
        .and_then(|index| medians(samples, index, server, |s| s.figures.first().copied()))
        .unwrap_or(f64::NAN)
}

fn targets(samples: &Samples, micro: &[Pair]) -> Vec<Target> {
    let ratio = |short: &str, peer: Server| cost(samples, short, Server::Ours) / cost(samples, short, peer);
    let peers = [Server::Tungstenite, Server::TokioWebsockets, Server::Fastwebsockets];
    let best = peers
        .into_iter()
        .min_by(|a, b| cost(samples, "echo 20 B x10", *a).total_cmp(&cost(samples, "echo 20 B x10", *b)));
    let best = best.unwrap_or(Server::Fastwebsockets);
    let at_most = |what: &str, measured: f64, limit: f64, label: String| Target {
        what: what.to_owned(),
        measured: format!("{label} = {measured:.2}"),
        met: measured <= limit,
    };
    let worst = |peer: &str| micro.iter().filter(|p| p.peer == peer).map(|p| p.ours_ns / p.peer_ns).fold(0.0, f64::max);
    let mut targets = vec![
        at_most(
            "Echo, small messages pipelined: at most half the best peer's server CPU per message",
            ratio("echo 20 B x10", best),
            0.5,
            format!("ours / {}", best.name()),
        ),
        at_most(
            "... and at most 1.5 times the raw TCP floor",
            ratio("echo 20 B x10", Server::Floor),
            1.5,
            "ours / floor".into(),
        ),
        at_most(
            "Echo, 16 KiB messages: at most 1.3 times the floor",
            ratio("echo 16 KiB", Server::Floor),
            1.3,
            "ours / floor".into(),
        ),
        at_most(
            "Echo, one message in flight per connection: no worse than fastwebsockets",
            ratio("echo 20 B x1", Server::Fastwebsockets),
            1.0,
            "ours / fastwebsockets".into(),
        ),
        at_most(
            "Idle memory under 1 KiB per connection at 10,000 connections: echo",
            cost(samples, "idle echo", Server::Ours),
            1023.0,
            "bytes".into(),
        ),
        at_most("... and hub", cost(samples, "idle hub", Server::Ours), 1023.0, "bytes".into()),
        at_most(
            "Fan-out to 10,000 members: at most 1 us of server CPU per delivery",
            cost(samples, "fan-out 10k", Server::Ours),
            1.0,
            "us".into(),
        ),
        at_most(
            "... and at most a third of the gorilla-style tokio-tungstenite hub",
            ratio("fan-out 10k", Server::GorillaHub),
            1.0 / 3.0,
            "ours / gorilla-style hub".into(),
        ),
        at_most(
            "apply_mask at least as fast as fastwebsockets::unmask at every size",
            worst("fastwebsockets::unmask"),
            1.0,
            "slowest size, ours/peer time".into(),
        ),
        at_most(
            "Decoding at least twice tungstenite's messages per second",
            worst("tungstenite"),
            0.5,
            "slowest size, ours/peer time".into(),
        ),
    ];
    for scenario in SCENARIOS {
        let Some(goal) = scenario.target else { continue };
        let measured = cost(samples, scenario.short, Server::Ours);
        targets.push(Target {
            what: format!("{}: {} {}", scenario.title, goal.describe(), scenario.unit),
            measured: format!("{} = {measured:.0}", scenario.figures[0]),
            met: goal.met(measured),
        });
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(short: &str) -> usize {
        SCENARIOS.iter().position(|s| s.short == short).expect("a scenario")
    }

    #[test]
    fn rows_per_figure_and_targets() {
        let mut samples = Samples::new();
        let sample = |figures: Vec<f64>| vec![Sample { figures, per_second: Some(10.0) }];
        samples.insert((index("fan-out 10/s"), Server::Ours), sample(vec![1000.0, 3000.0]));
        samples.insert((index("fan-out 10/s"), Server::GorillaHub), sample(vec![2000.0, 6000.0]));
        samples.insert((index("api x1"), Server::Ours), sample(vec![25_000.0]));
        let mut out = String::new();
        table(&mut out, &samples, true);
        assert!(out.contains("| `p50_us`, us from publish to delivery |  | 1000 |"), "{out}");
        assert!(out.contains("| `p99_us`, us from publish to delivery |  | 3000 |"), "{out}");
        assert!(out.contains("6000 (0.50)"), "{out}");
        assert!(out.contains("| messages per second (higher is better) | at least 20000 | 25000 |"), "{out}");
        assert!(out.contains("--api-key KEY"), "{out}");
        let api = targets(&samples, &[])
            .into_iter()
            .find(|t| t.what.starts_with("API publish") && t.what.contains("one message"));
        assert!(api.is_some_and(|t| t.met && t.measured == "per_second = 25000"));
    }
}
