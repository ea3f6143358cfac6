//! The hub of gorilla/websocket's chat example (`hub.go`, `client.go`),
//! on tokio-tungstenite 0.30: one hub task owns the set of clients and
//! serves register, unregister and broadcast channels; each client has a
//! reader task and a writer task, and a bounded outgoing channel of 256
//! messages (gorilla's `send chan []byte`). A client whose channel is full
//! is dropped by the hub, its channel closed, as gorilla does.
//!
//! A client sends text frames `{"type":"message","room":...,"content":...}`;
//! everyone is in the one room `general`, told `{"type":"joined",...}` once registered. The hub builds
//! one envelope string per message, `{"type":"message","room":"general",
//! "content":...,"sender":<peer address>,"time":<ms since epoch>,"seq":<n>}`,
//! and shares that string with every client, whose writer frames it itself
//! (each message is encoded once per client) and, like gorilla's
//! `writePump`, writes what is queued and flushes once the queue is empty.

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, Receiver, Sender};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use ws_benches::Failure;

/// Messages a client's outgoing channel holds (gorilla's `send` buffer).
const SEND_CAPACITY: usize = 256;
/// Messages waiting for the hub, from all readers together.
const BROADCAST_CAPACITY: usize = 1024;
/// How long a writer may take to write what is queued, or its close
/// frame, before the client is dropped (gorilla's `writeWait`).
const WRITE_WAIT: Duration = Duration::from_secs(10);
/// The one room.
const ROOM: &str = "general";
/// What a client is told once the hub has it, as our hub says it: from then
/// on it receives every message (a load generator waits for it).
const JOINED: &str = r#"{"type":"joined","room":"general"}"#;

/// What a client sends.
#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    content: Cow<'a, str>,
}

/// What every client receives.
#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'static str,
    content: &'a str,
    sender: &'a str,
    time: u64,
    seq: u64,
}

/// The hub's channels, one clone per client.
#[derive(Clone)]
struct Hub {
    register: Sender<(u64, Sender<Utf8Bytes>)>,
    unregister: Sender<u64>,
    broadcast: Sender<(Arc<str>, String)>,
}

type Sink = SplitSink<WebSocketStream<TcpStream>, Message>;
type Source = SplitStream<WebSocketStream<TcpStream>>;

/// Starts the hub and serves clients, each with an id of its own.
pub(crate) async fn run(listener: TcpListener) -> Result<(), Failure> {
    let (register, registered) = mpsc::channel(BROADCAST_CAPACITY);
    let (unregister, unregistered) = mpsc::channel(BROADCAST_CAPACITY);
    let (broadcast, messages) = mpsc::channel(BROADCAST_CAPACITY);
    tokio::spawn(hub(registered, unregistered, messages));
    let hub = Hub { register, unregister, broadcast };
    let mut last_id = 0;
    super::accept_loop(listener, move |stream| {
        last_id += 1;
        client(stream, last_id, hub.clone())
    })
    .await
}

/// Gorilla's `Hub.run`: owns the clients and fans each message out.
async fn hub(
    mut registered: Receiver<(u64, Sender<Utf8Bytes>)>,
    mut unregistered: Receiver<u64>,
    mut messages: Receiver<(Arc<str>, String)>,
) {
    let mut clients = HashMap::new();
    let mut seq = 0;
    loop {
        // Registers first: a client's unregister never overtakes its register.
        tokio::select! {
            biased;
            Some((id, send)) = registered.recv() => {
                // The queue is new and empty: this cannot fail for want of room.
                let _ = send.try_send(Utf8Bytes::from_static(JOINED));
                clients.insert(id, send);
            }
            Some(id) = unregistered.recv() => { clients.remove(&id); }
            Some((sender, content)) = messages.recv() => {
                seq += 1;
                fan_out(&mut clients, envelope(&sender, &content, seq));
            }
            else => return,
        }
    }
}

/// The one envelope string of a message.
fn envelope(sender: &str, content: &str, seq: u64) -> Utf8Bytes {
    let time = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let envelope = Envelope { kind: "message", room: ROOM, content, sender, time, seq };
    serde_json::to_string(&envelope).unwrap_or_default().into()
}

/// Queues `text` for every client, dropping (so closing the queue of) those
/// whose queue is full or whose writer has ended.
fn fan_out(clients: &mut HashMap<u64, Sender<Utf8Bytes>>, text: Utf8Bytes) {
    clients.retain(|_, send| send.try_send(text.clone()).is_ok());
}

/// One client: registers, reads until it ends, or until the hub drops it.
async fn client(stream: TcpStream, id: u64, hub: Hub) -> Result<(), Failure> {
    let peer: Arc<str> = stream.peer_addr()?.to_string().into();
    let (sink, source) = tokio_tungstenite::accept_async(stream).await?.split();
    let (send, queue) = mpsc::channel(SEND_CAPACITY);
    hub.register.send((id, send)).await?;
    let mut writer = tokio::spawn(write_pump(sink, queue));
    tokio::select! {
        () = read_pump(source, &peer, &hub) => {}
        _ = &mut writer => {}
    }
    hub.unregister.send(id).await?;
    Ok(())
}

/// Gorilla's `readPump`: hands every well-formed message to the hub.
async fn read_pump(mut source: Source, peer: &Arc<str>, hub: &Hub) {
    while let Some(Ok(message)) = source.next().await {
        let Message::Text(text) = message else { continue };
        let Ok(incoming) = serde_json::from_str::<Incoming<'_>>(&text) else { continue };
        if incoming.kind == "message" && hub.broadcast.send((peer.clone(), incoming.content.into())).await.is_err() {
            return;
        }
    }
}

/// Gorilla's `writePump`: writes what is queued, flushes once the queue is
/// empty, and closes once the hub has closed the queue; a write that takes
/// longer than `WRITE_WAIT` ends it, and so the client.
async fn write_pump(mut sink: Sink, mut queue: Receiver<Utf8Bytes>) -> Result<(), Failure> {
    while let Some(text) = queue.recv().await {
        timeout(WRITE_WAIT, write_queued(&mut sink, text, &mut queue)).await??;
    }
    timeout(WRITE_WAIT, sink.close()).await??;
    Ok(())
}

/// Writes `text` and whatever else is queued, then flushes.
async fn write_queued(sink: &mut Sink, text: Utf8Bytes, queue: &mut Receiver<Utf8Bytes>) -> Result<(), Failure> {
    sink.feed(Message::Text(text)).await?;
    while let Ok(text) = queue.try_recv() {
        sink.feed(Message::Text(text)).await?;
    }
    sink.flush().await?;
    Ok(())
}
