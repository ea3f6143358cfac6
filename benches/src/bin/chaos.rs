//! The hub under faults, audited: see `ws_benches::chaos`.
//!
//! Run: `cargo build --release -p ws-server && cargo run --release -p ws-benches --bin chaos -- --seconds 600`
//! (`--seed N` replays a run's faults; `--help` for the rest). Needs
//! Debian's `redis-server`. Exits 1 on any violation, printing each and the
//! command that replays the run.

use clap::Parser;
use std::process::ExitCode;
use ws_benches::chaos::{Outcome, Settings, run};

#[tokio::main]
async fn main() -> ExitCode {
    let settings = Settings::parse();
    let given_seed = settings.seed.is_some();
    match run(settings).await {
        Ok(Outcome { violations, .. }) if violations.is_empty() => ExitCode::SUCCESS,
        Ok(Outcome { seed, violations }) => {
            for violation in violations.iter().take(50) {
                println!("violation: {violation}");
            }
            let args: Vec<String> = std::env::args().skip(1).collect();
            let seed = if given_seed { String::new() } else { format!(" --seed {seed}") };
            println!("replay: cargo run --release -p ws-benches --bin chaos -- {}{seed}", args.join(" "));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::FAILURE
        }
    }
}
