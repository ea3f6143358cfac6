//! Idle: `connections` connections opened and held with nothing to say; the
//! server's resident memory before and after, per connection.

use crate::wire::{Reader, Target};
use crate::{Run, open_all};
use serde_json::{Value, json};
use std::time::Duration;
use ws_benches::Failure;

/// The idle mode's options.
#[derive(clap::Args)]
pub(crate) struct Options {
    /// The endpoint.
    #[arg(long)]
    url: String,
    /// Connections.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
}

/// How long the server is given to settle what the handshakes left behind.
const SETTLE: Duration = Duration::from_secs(1);

pub(crate) async fn run(options: &Options, run: &Run) -> Result<Value, Failure> {
    let target = Target::parse(&options.url)?;
    // One connection opened and closed first, so the baseline holds the server's own start-up allocations.
    drop(crate::wire::Conn::open(&target).await?);
    tokio::time::sleep(SETTLE).await;
    let before = run.rss()?;
    println!("idle: opening {} connections", options.connections);
    open_all(&target, options.connections, 100, run, |conn| drain(conn.into_reader())).await?;
    tokio::time::sleep(SETTLE).await;
    run.check()?;
    let after = run.rss()?;
    let mut report = json!({"mode": "idle", "connections": options.connections});
    if let (Some(before), Some(after)) = (before, after) {
        let per_connection = after.saturating_sub(before) as f64 / options.connections as f64;
        println!("idle: server RSS {before} -> {after} bytes: {per_connection:.0} bytes per idle connection");
        report["rss_per_connection"] = json!(per_connection);
    }
    Ok(report)
}

/// Reads and drops whatever the server sends (a hub's welcome, pings).
async fn drain(mut reader: Reader) -> Result<(), Failure> {
    while reader.fill().await? {
        while reader.next_frame().is_some() {}
    }
    Err("the server ended an idle connection".into())
}
