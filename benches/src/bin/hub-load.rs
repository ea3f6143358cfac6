//! Load on a running `ws-server` hub: the server's memory per idle hub
//! connection, then the fan-out of one room's messages to every member,
//! measured on the server process (RSS and CPU time from /proc).
//!
//! Run: `cargo build --release -p ws-server && cargo run --release -p ws-benches --bin hub-load -- 10000`
//!
//! Arguments: the number of members (default 1000), then the number of
//! messages to publish (default: two million deliveries' worth). The server
//! is `target/release/ws-server`, started with its limits lifted; the members
//! are ws-tokio clients in this process, all in the default room.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use ws_benches::{Failure, cpu_seconds, rss_bytes, start_server};
use ws_proto::{Event, Message};
use ws_tokio::WebSocket;
use ws_tokio::client::connect;

#[tokio::main]
async fn main() -> Result<(), Failure> {
    let mut args = std::env::args().skip(1);
    let members: u64 = args.next().map_or(Ok(1000), |a| a.parse())?;
    let messages: u64 = args.next().map_or(Ok((2_000_000 / members).max(1)), |a| a.parse())?;
    let (mut server, addr) = start_server(&["--room-buffer", "4096"]).await?;
    let pid = server.id().ok_or("the server exited")?;
    let url = format!("ws://{addr}/ws");

    // Warm up: one connection opened and closed, so the baseline holds the runtime's own allocations.
    let (mut ws, _) = connect(&url).await?;
    welcome(&mut ws).await?;
    ws.close(ws_proto::CloseCode::NORMAL, "").await?;
    let before = rss_bytes(pid)?;

    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for batch in (0..members).collect::<Vec<_>>().chunks(250) {
        let mut connecting = Vec::new();
        for _ in batch {
            let url = url.clone();
            connecting.push(tokio::spawn(async move {
                let (mut ws, _) = connect(&url).await?;
                welcome(&mut ws).await?;
                Ok::<_, Failure>(ws)
            }));
        }
        for ws in connecting {
            readers.push(tokio::spawn(count_messages(ws.await??, received.clone())));
        }
    }
    // Let the server settle what the handshakes left behind.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_bytes(pid)?;
    let per_connection = (after.saturating_sub(before)) as f64 / members as f64;
    println!("idle: {members} hub connections (each in the default room): server RSS {before} -> {after} bytes");
    println!("idle: {per_connection:.0} bytes of server memory per idle hub connection");

    // Fan-out: one publisher, `messages` messages, each to every member.
    let (mut publisher, _) = connect(&url).await?;
    welcome(&mut publisher).await?;
    let target = members * messages;
    let cpu_before = cpu_seconds(pid)?;
    let start = Instant::now();
    // The publisher takes its own copies as they come, so it is no slow consumer.
    let sender = publisher.sender();
    let draining = tokio::spawn(async move { while publisher.recv().await.is_some() {} });
    let publishing = tokio::spawn(async move {
        for i in 0..messages {
            let content = format!("tick {i}: price 101.25, volume 3400, market open, all systems nominal");
            let envelope = json!({"type": "message", "room": "general", "content": content});
            sender.send(Message::from(envelope.to_string())).await?;
        }
        Ok::<_, ws_tokio::Error>(())
    });
    while received.load(Ordering::Relaxed) < target {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)? - cpu_before;
    publishing.await??;
    draining.abort();
    println!("fan-out: {messages} messages to {members} members: {target} deliveries in {wall:.2} s");
    println!("fan-out: {:.0} deliveries per second (wall clock, clients on the same 2 cores)", target as f64 / wall);
    println!("fan-out: {:.3} us of server CPU per delivery ({cpu:.2} s in all)", cpu * 1e6 / target as f64);
    for reader in readers {
        reader.abort();
    }
    server.kill().await?;
    Ok(())
}

/// Reads the welcome and the default room's `joined`.
async fn welcome(ws: &mut WebSocket<TcpStream>) -> Result<(), Failure> {
    for _ in 0..2 {
        match ws.recv().await.ok_or("closed before the welcome")?? {
            Event::Message(_) => {}
            other => return Err(format!("unexpected {other:?}").into()),
        }
    }
    Ok(())
}

/// Counts every message the member receives until the connection ends.
async fn count_messages(mut ws: WebSocket<TcpStream>, received: Arc<AtomicU64>) {
    while let Some(Ok(event)) = ws.recv().await {
        if matches!(event, Event::Message(_)) {
            received.fetch_add(1, Ordering::Relaxed);
        }
    }
}
