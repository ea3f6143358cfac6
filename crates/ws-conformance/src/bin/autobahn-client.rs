//! The client testee for Autobahn's fuzzingserver: runs every case on a
//! ws-tokio client that echoes what it receives, then asks for the report.
//!
//! Usage: `autobahn-client ws://127.0.0.1:9001 [agent]`

use ws_proto::{Event, Message};
use ws_tokio::client::connect;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().ok_or("usage: autobahn-client ws://HOST:PORT [agent]")?;
    let agent = args.next().unwrap_or_else(|| "ws-client".into());
    let count = case_count(&base).await?;
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        if let Err(e) = echo(&url).await {
            eprintln!("case {case}: {e}");
        }
    }
    let (mut ws, _) = connect(&format!("{base}/updateReports?agent={agent}")).await?;
    while ws.recv().await.is_some() {}
    println!("ran {count} cases as {agent}");
    Ok(())
}

async fn case_count(base: &str) -> Result<u32, Box<dyn std::error::Error>> {
    let (mut ws, _) = connect(&format!("{base}/getCaseCount")).await?;
    let mut count = None;
    while let Some(event) = ws.recv().await {
        if let Event::Message(Message::Text(text)) = event? {
            count = Some(text.trim().parse()?);
        }
    }
    Ok(count.ok_or("no case count")?)
}

/// Echoes every message until the connection ends; writes are batched by `recv`.
async fn echo(url: &str) -> Result<(), ws_tokio::Error> {
    let (mut ws, _) = connect(url).await?;
    while let Some(event) = ws.recv().await {
        if let Event::Message(message) = event? {
            // Fails only once the closing handshake began; the message is then dropped.
            let _ = ws.queue(&message);
        }
    }
    Ok(())
}
