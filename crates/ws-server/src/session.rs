//! One hub connection: its envelopes in, its rooms' messages out.
//!
//! The session owns the WebSocket and one broadcast receiver per room it
//! joined. It never waits on the client: what the client is sent is queued,
//! and the queue is bounded in bytes. A client that falls behind by more is
//! a slow consumer, disconnected (close 1008) or skipped with a `gap`
//! notice, as configured.

use crate::auth::Identity;
use crate::config::SlowConsumer;
use crate::envelope::{self, Envelope, EnvelopeError, Outgoing, Request};
use crate::http::Server;
use crate::hub::{Delivery, Replay};
use crate::limits::{Permit, TokenBucket};
use crate::metrics::Reason;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tokio::net::TcpStream;
use tokio::time::{Duration, Instant, MissedTickBehavior};
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::{Stream, StreamExt};
use tracing::{info, warn};
use ws_proto::{CloseCode, Event, Message, State};
use ws_tokio::WebSocket;

/// Messages refused in a row for the rate limit before the client is closed (1008).
const MAX_REFUSED: u32 = 20;

/// Deliveries taken at once, to leave in one write.
const BATCH: usize = 64;

/// While a gap notice waits for room in the queue, it is tried this often.
const GAP_RETRY: Duration = Duration::from_millis(100);

/// A room the client is in.
#[derive(Debug, Default)]
struct Membership {
    /// The last seq sent to the client, or skipped past.
    delivered: u64,
    /// Seqs skipped and not yet reported: first and last.
    gap: Option<(u64, u64)>,
}

/// The state of one hub connection.
pub struct Session {
    ws: WebSocket<TcpStream>,
    server: Arc<Server>,
    /// Counts the connection among the open ones until the session ends.
    _permit: Permit,
    /// Who the client is: its name, as other members see it, and the rooms it may join.
    identity: Identity,
    streams: Deliveries,
    rooms: HashMap<String, Membership>,
    last_heard: Instant,
    bucket: TokenBucket,
    /// Messages refused in a row for the rate limit.
    refused: u32,
}

impl Session {
    /// A session for `ws` of `server`, whose client is `identity`, admitted with `permit`.
    pub fn new(ws: WebSocket<TcpStream>, identity: Identity, server: Arc<Server>, permit: Permit) -> Self {
        server.metrics.connections.inc();
        Session {
            ws,
            bucket: TokenBucket::new(server.config.rate_limit, std::time::Instant::now()),
            server,
            _permit: permit,
            identity,
            streams: StreamMap::new(),
            rooms: HashMap::new(),
            last_heard: Instant::now(),
            refused: 0,
        }
    }

    /// Welcomes the client, joins it to the default room, then serves it
    /// until the connection ends.
    ///
    /// An `async` block rather than an `async fn`: the block keeps the one
    /// `Session` it captures, where an `async fn` would hold its argument
    /// and a moved copy of it, twice the memory of every idle connection
    /// (docs/benchmarks.md).
    #[allow(clippy::manual_async_fn)]
    pub fn run(mut self) -> impl Future<Output = ()> + Send {
        async move {
            let welcome = format!("welcome, {}", self.identity.name);
            self.send(&Outgoing::System { content: &welcome, time: envelope::now_millis() });
            let default_room =
                self.server.config.default_room.clone().filter(|r| !r.is_empty() && self.identity.may_join(r));
            if let Some(room) = default_room {
                // Joining the first room cannot meet a limit but a full server's.
                if let Err(error) = self.join(room, None) {
                    self.send_error(error);
                }
            }
            let every = self.server.config.heartbeat_interval;
            let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
            heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                let gaps_waiting = self.rooms.values().any(|m| m.gap.is_some());
                tokio::select! {
                    event = self.ws.recv() => match event {
                        Some(Ok(event)) => self.receive(event),
                        Some(Err(e)) => {
                            info!(sender = %self.identity.name, code = ?e.close_code().map(|c| c.0), "connection failed: {e}");
                            break;
                        }
                        None => {
                            info!(sender = %self.identity.name, "connection closed");
                            break;
                        }
                    },
                    Some((room, delivery)) = self.streams.next() => {
                        self.deliver(room, delivery);
                        // What else is ready goes out in the same write.
                        for (room, delivery) in ready(&mut self.streams) {
                            self.deliver(room, delivery);
                        }
                    }
                    _ = heartbeat.tick() => self.heartbeat(),
                    () = self.server.shutdown.cancelled(), if self.ws.connection().state() == State::Open => {
                        // Fails only if the connection is closing already.
                        let _ = self.ws.queue_close(CloseCode::GOING_AWAY, "server shutting down");
                    }
                    _ = tokio::time::sleep(GAP_RETRY), if gaps_waiting => {}
                }
                self.report_gaps();
            }
            self.server.metrics.connections.dec();
        }
    }

    fn receive(&mut self, event: Event) {
        self.last_heard = Instant::now();
        let Event::Message(message) = event else { return };
        self.server.metrics.messages_received.inc();
        self.server.metrics.bytes_received.inc_by(message.payload().len() as u64);
        if !self.bucket.take(self.last_heard.into_std()) {
            return self.refuse();
        }
        self.refused = 0;
        let request = match &message {
            Message::Text(text) => envelope::parse(text.as_str(), self.server.config.max_content_chars),
            Message::Binary(_) => Err(EnvelopeError::new("invalid_json", "binary messages are not envelopes")),
        };
        let Envelope { request, id } = match request {
            Ok(envelope) => envelope,
            Err(error) => return self.send_error(error),
        };
        let refused = match request {
            Request::Join { room, since } => self.join(room, since),
            Request::Leave { room } => self.leave(room),
            Request::Message { room, content } => self.publish(room, &content, id.as_deref()),
        };
        if let Err(error) = refused {
            self.send_error(error.about(id));
        }
    }

    /// Over the rate limit: an error, or the end for a client that keeps on.
    fn refuse(&mut self) {
        self.refused += 1;
        if self.refused > MAX_REFUSED {
            if self.ws.queue_close(CloseCode::POLICY_VIOLATION, "rate limit exceeded").is_ok() {
                warn!(sender = %self.identity.name, "rate limit exceeded again and again: closed");
            }
            return;
        }
        let (rate, wait) = (self.server.config.rate_limit, self.bucket.wait().as_millis());
        self.send_error(EnvelopeError::new(
            "rate_limited",
            format!("over {rate} messages a second; retry in {wait} ms"),
        ));
    }

    fn join(&mut self, room: String, since: Option<u64>) -> Result<(), EnvelopeError> {
        if let Some(member) = self.rooms.get(&room) {
            // Already a member: what came after `delivered` is on its way in the stream.
            let delivered = member.delivered;
            let replay = since.map(|since| {
                let mut replay = self.server.hub.replay(&room, since);
                replay.deliveries.retain(|d| d.seq <= delivered);
                replay
            });
            self.joined(&room, delivered, replay);
            return Ok(());
        }
        if !self.identity.may_join(&room) {
            return Err(EnvelopeError::new("forbidden", format!("not allowed to join room {room}")));
        }
        let limit = self.server.config.max_rooms_per_connection;
        if self.rooms.len() >= limit {
            return Err(EnvelopeError::new("room_limit", format!("at most {limit} rooms per connection")));
        }
        let (subscription, replay) = (self.server.hub)
            .join(&room, since)
            .map_err(|_| EnvelopeError::new("room_limit", "the server holds all the rooms it can"))?;
        self.streams.insert(room.clone(), BroadcastStream::new(subscription.receiver));
        self.rooms.insert(room.clone(), Membership { delivered: subscription.latest, gap: None });
        self.joined(&room, subscription.latest, replay);
        Ok(())
    }

    /// Tells the client it is in `room`, then replays what it asked for.
    fn joined(&mut self, room: &str, latest: u64, replay: Option<Replay>) {
        self.send(&Outgoing::Joined { room, seq: latest });
        let Some(replay) = replay else { return };
        for delivery in &replay.deliveries {
            self.queue(room, delivery);
        }
        self.send(&Outgoing::Recovered { room, complete: replay.complete });
    }

    fn leave(&mut self, room: String) -> Result<(), EnvelopeError> {
        if self.rooms.remove(&room).is_none() {
            return Err(EnvelopeError::new("not_joined", format!("not in room {room}")));
        }
        self.streams.remove(&room);
        self.send(&Outgoing::Left { room: &room });
        Ok(())
    }

    fn publish(&mut self, room: String, content: &str, id: Option<&str>) -> Result<(), EnvelopeError> {
        if !self.rooms.contains_key(&room) {
            return Err(EnvelopeError::new("not_joined", format!("join room {room} before sending to it")));
        }
        let seq = self.server.hub.publish(&room, &self.identity.name, content);
        if let Some(id) = id {
            self.send(&Outgoing::Ack { id, seq });
        }
        Ok(())
    }

    /// A message of one of the client's rooms, or word that the client fell
    /// more than the room's buffer behind.
    fn deliver(&mut self, room: String, delivery: Result<Arc<Delivery>, BroadcastStreamRecvError>) {
        match delivery {
            Ok(delivery) => {
                if self.rooms.get(&room).is_some_and(|m| delivery.seq > m.delivered) {
                    self.server.metrics.fanout_latency.observe(delivery.published.elapsed().as_secs_f64());
                    self.queue(&room, &delivery);
                }
            }
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                if let Some(member) = self.rooms.get(&room) {
                    let first = member.delivered + 1;
                    self.skip(&room, first, member.delivered + missed);
                }
            }
        }
    }

    /// Queues a room's message if the queue has room for it; else the slow-consumer policy.
    fn queue(&mut self, room: &str, delivery: &Delivery) {
        let queued = self.ws.connection().output().len();
        if queued + delivery.frame.frame_len() > self.server.config.max_queue_bytes {
            return self.skip(room, delivery.seq, delivery.seq);
        }
        let Some(member) = self.rooms.get_mut(room) else { return };
        member.delivered = member.delivered.max(delivery.seq);
        // A gap is told before the messages that follow it.
        if let Some((from, to)) = member.gap.take() {
            self.send_gap(room, from, to);
        }
        // Queuing fails only once the connection is closing; the message is then moot.
        if self.ws.queue_shared(&delivery.frame).is_ok() {
            self.server.metrics.sent(1, delivery.frame.frame_len());
        }
    }

    /// Seqs `first` to `last` of `room` will not reach the client.
    fn skip(&mut self, room: &str, first: u64, last: u64) {
        match self.server.config.slow_consumer {
            SlowConsumer::Disconnect => {
                if self.ws.queue_close(CloseCode::POLICY_VIOLATION, "slow consumer").is_ok() {
                    warn!(sender = %self.identity.name, room, "slow consumer: disconnected");
                    self.server.metrics.slow_consumers.get_or_create(&Reason { reason: "disconnect" }).inc();
                }
            }
            SlowConsumer::Skip => {
                let Some(member) = self.rooms.get_mut(room) else { return };
                if member.gap.is_none() {
                    self.server.metrics.slow_consumers.get_or_create(&Reason { reason: "skip" }).inc();
                }
                member.gap = Some((member.gap.map_or(first, |(from, _)| from), last));
                member.delivered = member.delivered.max(last);
            }
        }
    }

    /// Sends the gap notices that fit in the queue again.
    fn report_gaps(&mut self) {
        let room_left = self.ws.connection().output().len() < self.server.config.max_queue_bytes / 2;
        if !room_left {
            return;
        }
        let gaps: Vec<(String, (u64, u64))> =
            self.rooms.iter_mut().filter_map(|(room, m)| Some((room.clone(), m.gap.take()?))).collect();
        for (room, (from, to)) in gaps {
            self.send_gap(&room, from, to);
        }
    }

    fn send_gap(&mut self, room: &str, from: u64, to: u64) {
        warn!(sender = %self.identity.name, room, from, to, "slow consumer: skipped messages");
        self.send(&Outgoing::Gap { room, from, to });
    }

    /// Pings, or closes a client that has sent nothing, pong included, for too long.
    fn heartbeat(&mut self) {
        if self.last_heard.elapsed() > self.server.config.heartbeat_timeout {
            if self.ws.queue_close(CloseCode::GOING_AWAY, "heartbeat timeout").is_ok() {
                info!(sender = %self.identity.name, "heartbeat timeout");
            }
        } else {
            // Fails only once the connection is closing.
            let _ = self.ws.queue_ping(b"");
        }
    }

    fn send_error(&mut self, error: EnvelopeError) {
        self.send_json(error.to_json());
    }

    fn send(&mut self, envelope: &Outgoing<'_>) {
        self.send_json(envelope.to_json());
    }

    /// Queues an envelope for this client alone.
    fn send_json(&mut self, json: String) {
        let len = json.len();
        // Fails only once the connection is closing; the envelope is then moot.
        if self.ws.queue(&Message::from(json)).is_ok() {
            self.server.metrics.sent(1, len);
        }
    }
}

type Deliveries = StreamMap<String, BroadcastStream<Arc<Delivery>>>;

/// The deliveries ready now, up to a batch, without waiting. The stream
/// forgets the no-op waker at the next `next().await`, which registers the
/// task's own.
fn ready(streams: &mut Deliveries) -> Vec<(String, Result<Arc<Delivery>, BroadcastStreamRecvError>)> {
    let mut context = Context::from_waker(Waker::noop());
    let mut batch = Vec::new();
    while batch.len() < BATCH {
        match Pin::new(&mut *streams).poll_next(&mut context) {
            Poll::Ready(Some(item)) => batch.push(item),
            Poll::Ready(None) | Poll::Pending => break,
        }
    }
    batch
}
