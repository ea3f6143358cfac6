//! Idle: `connections` connections opened and held with nothing to say; the
//! server's resident memory before and after, per connection. With
//! `--browser` each is a browser-like hub client (browser.rs) that has had
//! its one exchange before it falls idle.

use crate::browser::{CHROMIUM_OFFER, Tally, exchange};
use crate::wire::{Conn, Reader};
use crate::{Run, open_all};
use serde_json::{Value, json};
use std::cell::Cell;
use std::rc::Rc;
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
    /// Browser-like hub clients: each offers permessage-deflate as Chromium
    /// does, joins a room of its own and sends one message, which comes back.
    #[arg(long)]
    browser: bool,
}

/// How long the server is given to settle what the handshakes left behind.
const SETTLE: Duration = Duration::from_secs(1);

/// How long the browser-like clients' exchanges may take, all together:
/// less than a hub's heartbeat timeout, since they answer no ping.
const EXCHANGES: Duration = Duration::from_secs(60);

pub(crate) async fn run(options: &Options, run: &Run) -> Result<Value, Failure> {
    let mut target = run.target(&options.url).await?;
    let tally = Rc::new(Tally::default());
    let next = Rc::new(Cell::new(0));
    let hold = |conn: Conn| {
        let (n, tally, browser) = (next.get() + 1, tally.clone(), options.browser);
        next.set(n);
        async move {
            let reader = if browser { exchange(conn, n, &tally).await? } else { conn.into_reader() };
            drain(reader).await
        }
    };
    if options.browser {
        target.deflate_offer = Some(CHROMIUM_OFFER);
    }
    // One connection opened (and, for browsers, its exchange done) and
    // closed first, so the baseline holds the server's own start-up allocations.
    let first = Conn::open(&target).await?;
    if options.browser {
        drop(exchange(first, 0, &Tally::default()).await?);
    }
    tokio::time::sleep(SETTLE).await;
    let before = run.rss()?;
    let kind = if options.browser { "browser-like" } else { "idle" };
    println!("idle: opening {} {kind} connections", options.connections);
    open_all(&target, options.connections, 100, run, hold).await?;
    if options.browser {
        let deadline = tokio::time::Instant::now() + EXCHANGES;
        while tally.done.get() < options.connections {
            if tokio::time::Instant::now() > deadline {
                let (joined, done) = (tally.joined.get(), tally.done.get());
                return Err(format!(
                    "of {} clients, {joined} joined and {done} had their message back",
                    options.connections
                )
                .into());
            }
            run.sleep_unless_failed(Duration::from_millis(50)).await?;
        }
    }
    tokio::time::sleep(SETTLE).await;
    run.check()?;
    let after = run.rss()?;
    let mut report = json!({"mode": "idle", "connections": options.connections});
    if options.browser {
        let (deflated, compressed) = (tally.deflated.get(), tally.compressed_echoes.get());
        println!("idle: {deflated} negotiated permessage-deflate; {compressed} messages came back compressed");
        report["browser"] = json!(true);
        report["deflate"] = json!(deflated);
        report["compressed_echoes"] = json!(compressed);
    }
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
