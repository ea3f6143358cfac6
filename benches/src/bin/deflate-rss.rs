//! The resident memory a real `ws-server` holds per browser-like compressed
//! connection between messages: clients with Chromium's offer (ws-tokio's
//! default client) each join a room of their own, send one chat message
//! and receive it back, compressed both ways; the server's VmRSS before the
//! clients connect and after, divided by their number.
//!
//! Run: `cargo build --release -p ws-server -p ws-benches && target/release/deflate-rss`

use serde_json::{Value, json};
use std::time::Duration;
use ws_benches::{Failure, rss_bytes, start_server};
use ws_proto::{Event, Message};
use ws_tokio::WebSocket;
use ws_tokio::client::{ClientOptions, connect_with};

/// Clients per run.
const CLIENTS: usize = 2_000;
/// Clients connecting at once.
const AT_ONCE: usize = 50;
/// Longer than jemalloc's 10 s dirty-page decay, for the second reading.
const SETTLE: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() -> Result<(), Failure> {
    println!("| server flags | RSS per connection, right after | after {} s |", SETTLE.as_secs());
    println!("| --- | ---: | ---: |");
    for flags in [&["--no-deflate"][..], &[], &["--deflate-client-context-takeover"], &["--deflate-context-takeover"]] {
        let (server, addr) = start_server(flags).await?;
        let pid = server.id().ok_or("no pid")?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss_bytes(pid)?;
        let mut clients = Vec::with_capacity(CLIENTS);
        for batch in 0..CLIENTS / AT_ONCE {
            let tasks: Vec<_> = (0..AT_ONCE)
                .map(|i| tokio::spawn(chat_once(addr.clone(), format!("room-{}", batch * AT_ONCE + i))))
                .collect();
            for task in tasks {
                clients.push(task.await??);
            }
        }
        let after = rss_bytes(pid)?;
        tokio::time::sleep(SETTLE).await;
        let settled = rss_bytes(pid)?;
        let per = |rss: u64| (rss.saturating_sub(before)) / CLIENTS as u64;
        let name = if flags.is_empty() { "(defaults)".to_owned() } else { format!("`{}`", flags.join(" ")) };
        println!("| {name} | {} | {} |", per(after), per(settled));
        drop(clients);
        drop(server);
    }
    Ok(())
}

/// Connects, joins `room`, says one chat message in it and receives it back.
async fn chat_once(addr: String, room: String) -> Result<WebSocket<tokio::net::TcpStream>, Failure> {
    let (mut ws, _) = connect_with(&format!("ws://{addr}/ws"), &ClientOptions::default()).await?;
    ws.send(&Message::from(json!({"type": "join", "room": room}).to_string())).await?;
    let content = "hello everyone, is the meeting still on for three o'clock? I will bring the slides from yesterday";
    let mut said = false;
    loop {
        let event = ws.recv().await.ok_or("closed")??;
        let Event::Message(Message::Text(text)) = event else { continue };
        let envelope: Value = serde_json::from_str(text.as_str())?;
        match envelope["type"].as_str() {
            Some("joined") if envelope["room"] == room.as_str() && !said => {
                let message = json!({"type": "message", "room": room, "content": content});
                ws.send(&Message::from(message.to_string())).await?;
                said = true;
            }
            Some("message") if envelope["content"] == content => return Ok(ws),
            _ => {}
        }
    }
}
