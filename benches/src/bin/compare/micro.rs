//! The micro-benchmarks that have a peer, run briefly with criterion:
//! `apply_mask` beside `fastwebsockets::unmask`, and a server connection
//! decoding messages beside tungstenite.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use ws_benches::Failure;

/// One comparison: ours and the peer's time for the same work.
pub(crate) struct Pair {
    pub(crate) what: String,
    pub(crate) peer: &'static str,
    pub(crate) ours_ns: f64,
    pub(crate) peer_ns: f64,
}

/// Message sizes of the decode bench, and the bytes it decodes per run.
const DECODE_SIZES: [u64; 3] = [20, 1 << 10, 64 << 10];
const MASK_SIZES: [u64; 3] = [1 << 10, 64 << 10, 1 << 20];

pub(crate) fn run(root: &Path) -> Result<Vec<Pair>, Failure> {
    for filter in ["apply_mask", "server_decode"] {
        println!("[micro] cargo bench -p ws-benches --bench proto -- {filter}");
        let status = Command::new("cargo")
            .current_dir(root)
            .args(["bench", "-q", "-p", "ws-benches", "--bench", "proto", "--"])
            .args(["--warm-up-time", "0.5", "--measurement-time", "1.5", "--noplot", filter])
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            return Err(format!("cargo bench {filter} failed: {status}").into());
        }
    }
    let criterion = root.join("target/criterion");
    let mut pairs = Vec::new();
    for size in MASK_SIZES {
        pairs.push(Pair {
            what: format!("apply_mask, {}", bytes(size)),
            peer: "fastwebsockets::unmask",
            ours_ns: median_ns(&criterion.join(format!("apply_mask/ws-proto/{size}")))?,
            peer_ns: median_ns(&criterion.join(format!("apply_mask/fastwebsockets/{size}")))?,
        });
    }
    for size in DECODE_SIZES {
        pairs.push(Pair {
            what: format!("server decode, 1 MiB of {} messages", bytes(size)),
            peer: "tungstenite",
            ours_ns: median_ns(&criterion.join(format!("server_decode/{size}")))?,
            peer_ns: median_ns(&criterion.join(format!("server_decode/tungstenite/{size}")))?,
        });
    }
    for pair in &pairs {
        println!(
            "[micro] {}: ours {:.0} ns, {} {:.0} ns: ours/peer {:.2}",
            pair.what,
            pair.ours_ns,
            pair.peer,
            pair.peer_ns,
            pair.ours_ns / pair.peer_ns
        );
    }
    Ok(pairs)
}

/// The median time of one iteration, from criterion's latest estimates.
fn median_ns(bench: &Path) -> Result<f64, Failure> {
    let path = bench.join("new/estimates.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let estimates: Value = serde_json::from_str(&text)?;
    Ok(estimates["median"]["point_estimate"].as_f64().ok_or("no median estimate")?)
}

fn bytes(size: u64) -> String {
    match size {
        s if s >= 1 << 20 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}
