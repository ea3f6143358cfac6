//! Connect: opening handshakes, `concurrency` at a time, each connection
//! reset once its 101 has come (no close handshake, no TIME_WAIT left); with
//! `--http2`, each stream dropped once its 200 has come.

use crate::wire::{Conn, Target};
use crate::{Run, Shared};
use serde_json::Value;
use std::rc::Rc;
use std::time::Instant;
use ws_benches::Failure;

/// The connect mode's options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// The endpoint.
    #[arg(long)]
    url: String,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

pub(crate) async fn run(options: &Options, run: &Run) -> Result<Value, Failure> {
    let target = Rc::new(Target { reset: true, ..run.target(&options.url).await? });
    println!("connect: {} handshakes at a time", options.concurrency);
    for _ in 0..options.concurrency {
        let (target, shared) = (target.clone(), run.shared.clone());
        tokio::task::spawn_local(async move { handshakes(&target, &shared).await.unwrap_or_else(|e| shared.fail(e)) });
    }
    let mut report = run.measure("handshakes", "handshake").await?;
    report["mode"] = "connect".into();
    Ok(report)
}

/// Opens connections one after another until the run stops.
async fn handshakes(target: &Target, shared: &Shared) -> Result<(), Failure> {
    while !shared.stopped() {
        let start = Instant::now();
        // Reset when dropped, so that thousands of them per second leave no
        // socket in TIME_WAIT to run out of ports.
        drop(Conn::open(target).await?);
        shared.record(start.elapsed());
    }
    Ok(())
}
