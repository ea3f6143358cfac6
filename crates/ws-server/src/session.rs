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
use crate::fanout::{Lagged, Member};
use crate::http::Server;
use crate::hub::{Delivery, Replay, Subscription};
use crate::limits::{Permit, TokenBucket};
use crate::metrics::Reason;
use crate::pulse::{Listener, Signal};
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};
use ws_proto::{CloseCode, Event, Message, State};
use ws_tokio::WebSocket;

/// Messages refused in a row for the rate limit before the client is closed (1008).
const MAX_REFUSED: u32 = 20;

/// Deliveries of one room taken at once, to leave in one write.
const BATCH: usize = 64;

/// A room the client is in.
#[derive(Debug)]
struct Membership {
    /// Its place in the room's fan-out, which knows the room's name.
    member: Member,
    /// The last seq sent to the client, or skipped past.
    delivered: u64,
    /// Seqs skipped and not yet reported: first and last.
    gap: Option<(u64, u64)>,
    /// The last seq that left the room's fan-out before the client took it.
    /// While it is past `delivered`, the room waits for the lost seqs to be
    /// fetched from the cluster's history, between the client's requests.
    lost: u64,
}

/// What a request to the cluster brings back to the session.
enum Done {
    /// A message was published, or could not be.
    Published { id: Option<String>, seq: Result<u64, EnvelopeError> },
    /// The client joined `room` (anew, with its subscription, or again), or could not.
    Joined { room: String, joined: Result<(Option<Subscription>, Option<Replay>), EnvelopeError> },
    /// Who is in `room`: how many, and names.
    Presence { room: String, presence: Result<(usize, Vec<Arc<str>>), EnvelopeError> },
    /// What the history of `room` still held of the seqs it lost, up to `upto`.
    Refetched { room: Arc<str>, upto: u64, held: Result<Replay, EnvelopeError> },
}

/// A request to the cluster in flight: the session reads nothing more from
/// its client until it is done, so that answers keep the order of requests.
struct Pending {
    future: Pin<Box<dyn Future<Output = Done> + Send>>,
    /// A room whose messages wait until it is done: the replay it brings goes out first.
    holds: Option<String>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl Membership {
    /// The room's name, shared with the hub.
    fn room(&self) -> &Arc<str> {
        self.member.room()
    }

    fn waits_for_lost(&self) -> bool {
        self.lost > self.delivered
    }
}

/// One hub connection, and the future that serves it.
///
/// A hand-written future rather than an `async` loop over `select!`: the
/// task of an idle connection holds this struct and nothing else, no timer
/// and no future per branch (docs/benchmarks.md).
#[derive(Debug)]
pub struct Session<S> {
    ws: WebSocket<S>,
    server: Arc<Server>,
    /// Counts the connection among the open ones until the session ends.
    _permit: Permit,
    /// Who the client is: its name, as other members see it, and the rooms it may join.
    identity: Identity,
    /// A boxed slice, not a `Vec`: joins and leaves are rare, sessions many.
    rooms: Box<[Membership]>,
    /// Its place among the listeners of the server's pulse: heartbeat and shutdown.
    pulse: Listener,
    /// The pulse's beat count when the client last sent anything.
    heard_at: u32,
    bucket: TokenBucket,
    /// Messages refused in a row for the rate limit.
    refused: u32,
    /// A request to the cluster in flight (boxed twice: a thin pointer
    /// keeps the session, and so every connection's task, smaller).
    pending: Option<Box<Pending>>,
}

/// The most a plain session may take: tokio rounds a task to 128 bytes, and
/// with its own 96, the task tracker's 8 and this, the task of an idle
/// connection stays at 384 bytes rather than 512 (docs/benchmarks.md). A
/// field that must be added is paid for by another made smaller or boxed.
const _: () = assert!(size_of::<Session<tokio::net::TcpStream>>() <= 280);

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A session for `ws` of `server`, whose client is `identity`, admitted
    /// with `permit`: welcomed and in the default room, ready to be spawned.
    pub fn start(ws: WebSocket<S>, identity: Identity, server: Arc<Server>, permit: Permit) -> Self {
        server.metrics.connections.inc();
        let mut session = Session {
            ws,
            bucket: TokenBucket::default(),
            pulse: server.pulse.listen(),
            heard_at: server.pulse.beats(),
            server,
            _permit: permit,
            identity,
            rooms: Box::default(),
            refused: 0,
            pending: None,
        };
        session.welcome();
        session
    }

    /// Welcomes the client and joins it to the default room.
    fn welcome(&mut self) {
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
    }

    /// Takes the rooms' deliveries that are ready, up to a batch per room;
    /// true if there were any. Otherwise the task of `cx` is woken by the next.
    fn poll_deliveries(&mut self, cx: &mut Context<'_>) -> bool {
        let mut any = false;
        let mut batch = Vec::new();
        let held = self.pending.as_ref().and_then(|p| p.holds.as_deref()).and_then(|room| self.membership(room));
        for i in 0..self.rooms.len() {
            if held == Some(i) || self.rooms[i].waits_for_lost() {
                continue;
            }
            match self.rooms[i].member.poll_recv(cx, &mut batch, BATCH) {
                Poll::Ready(Ok(())) => {
                    self.deliver(i, &batch);
                    batch.clear();
                }
                Poll::Ready(Err(Lagged { upto })) => self.lagged(i, upto),
                Poll::Pending => continue,
            }
            any = true;
        }
        any
    }

    /// Serves the client: the answer of the request in flight, or up to a
    /// batch of its envelopes, so that its rooms' messages get their turn.
    /// Break when the connection ends; otherwise whether anything was done.
    fn poll_client(&mut self, cx: &mut Context<'_>) -> ControlFlow<(), bool> {
        let mut served = false;
        for _ in 0..BATCH {
            if self.pending.is_none() {
                self.refetch_lost();
            }
            if let Some(pending) = &mut self.pending {
                let Poll::Ready(done) = pending.future.as_mut().poll(cx) else {
                    // Write errors come back to poll_recv once the request is done.
                    let _ = self.ws.poll_flush(cx);
                    return ControlFlow::Continue(served);
                };
                self.pending = None;
                self.done(done);
                served = true;
                // Lost messages, if a room has any, are fetched before the next request.
                continue;
            }
            match self.ws.poll_recv(cx) {
                Poll::Ready(Some(Ok(event))) => self.receive(event),
                Poll::Ready(Some(Err(e))) => {
                    info!(sender = %self.identity.name, code = ?e.close_code().map(|c| c.0), "connection failed: {e}");
                    return ControlFlow::Break(());
                }
                Poll::Ready(None) => {
                    info!(sender = %self.identity.name, "connection closed");
                    return ControlFlow::Break(());
                }
                Poll::Pending => return ControlFlow::Continue(served),
            }
            served = true;
        }
        ControlFlow::Continue(served)
    }

    /// The server's pulse: a heartbeat, or the word to close with 1001.
    fn poll_pulse(&mut self, cx: &mut Context<'_>) {
        match self.pulse.poll(&self.server.pulse, cx) {
            Some(Signal::Beat) => self.heartbeat(),
            Some(Signal::Shutdown) if self.ws.connection().state() == State::Open => {
                // Fails only if the connection is closing already.
                let _ = self.ws.queue_close(CloseCode::GOING_AWAY, "server shutting down");
            }
            Some(Signal::Shutdown) | None => {}
        }
    }

    fn receive(&mut self, event: Event) {
        self.heard_at = self.server.pulse.beats();
        let Event::Message(message) = event else { return };
        self.server.metrics.messages_received.inc();
        self.server.metrics.bytes_received.inc_by(message.payload().len() as u64);
        if !self.bucket.take(self.server.config.rate_limit, self.server.started.elapsed()) {
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
            Request::Presence { room } => self.presence(room),
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
        let rate = self.server.config.rate_limit;
        let wait = self.bucket.wait(rate, self.server.started.elapsed()).as_millis();
        self.send_error(EnvelopeError::new(
            "rate_limited",
            format!("over {rate} messages a second; retry in {wait} ms"),
        ));
    }

    fn membership(&self, room: &str) -> Option<usize> {
        self.rooms.iter().position(|m| &**m.room() == room)
    }

    fn join(&mut self, room: String, since: Option<u64>) -> Result<(), EnvelopeError> {
        if let Some(i) = self.membership(&room) {
            // Already a member: what came after `delivered` is on its way in the stream.
            let delivered = self.rooms[i].delivered;
            if let Some(cluster) = self.server.cluster.clone() {
                let holds = since.is_some().then(|| room.clone());
                self.wait_for(holds, async move {
                    let replay = match since {
                        Some(since) => cluster.replay(&room, since, delivered).await.map(Some),
                        None => Ok(None),
                    };
                    Done::Joined { room, joined: replay.map(|replay| (None, replay)) }
                });
                return Ok(());
            }
            let replay = since.map(|since| {
                let mut replay = self.server.hub.replay(&room, since);
                replay.deliveries.retain(|d| d.seq <= delivered);
                replay
            });
            self.joined(i, delivered, replay);
            return Ok(());
        }
        if !self.identity.may_join(&room) {
            return Err(EnvelopeError::new("forbidden", format!("not allowed to join room {room}")));
        }
        let limit = self.server.config.max_rooms_per_connection;
        if self.rooms.len() >= limit {
            return Err(EnvelopeError::new("room_limit", format!("at most {limit} rooms per connection")));
        }
        if let Some(cluster) = self.server.cluster.clone() {
            let member = self.identity.name.clone();
            self.wait_for(None, async move {
                let joined = cluster.join(room.clone(), member, since).await;
                Done::Joined { room, joined: joined.map(|(subscription, replay)| (Some(subscription), replay)) }
            });
            return Ok(());
        }
        let (subscription, replay) = self.server.hub.join(&room, &self.identity.name, since)?;
        self.subscribed(subscription, replay);
        Ok(())
    }

    /// Reads nothing more from the client until `future`, a request to the
    /// cluster, is done; the messages of room `holds`, if any, wait too.
    fn wait_for(&mut self, holds: Option<String>, future: impl Future<Output = Done> + Send + 'static) {
        self.pending = Some(Box::new(Pending { future: Box::pin(future), holds }));
    }

    /// Becomes a member of the subscription's room.
    fn subscribed(&mut self, subscription: Subscription, replay: Option<Replay>) {
        let mut rooms = std::mem::take(&mut self.rooms).into_vec();
        rooms.reserve_exact(1);
        let latest = subscription.latest;
        rooms.push(Membership { member: subscription.member, delivered: latest, gap: None, lost: latest });
        self.rooms = rooms.into_boxed_slice();
        self.joined(self.rooms.len() - 1, subscription.latest, replay);
    }

    /// A request to the cluster is done: its answer to the client.
    fn done(&mut self, done: Done) {
        match done {
            Done::Published { id, seq: Ok(seq) } => self.acked(id.as_deref(), seq),
            Done::Published { id, seq: Err(error) } => self.send_error(error.about(id)),
            Done::Joined { joined: Ok((Some(subscription), replay)), .. } => self.subscribed(subscription, replay),
            Done::Joined { room, joined: Ok((None, replay)) } => match self.membership(&room) {
                Some(i) => self.joined(i, self.rooms[i].delivered, replay),
                None => self.send_error(EnvelopeError::new("not_joined", format!("not in room {room}"))),
            },
            Done::Joined { joined: Err(error), .. } => self.send_error(error),
            Done::Presence { room, presence: Ok(presence) } => self.present(&room, presence),
            Done::Presence { presence: Err(error), .. } => self.send_error(error),
            Done::Refetched { room, upto, held } => {
                if let Some(i) = self.membership(&room) {
                    // Unreachable, the history holds nothing: the seqs are skipped.
                    let held = held.map_or_else(|_| Vec::new(), |replay| replay.deliveries);
                    self.refill(i, &held, upto);
                }
            }
        }
    }

    /// Tells the client it is in room `i`, then replays what it asked for.
    fn joined(&mut self, i: usize, latest: u64, replay: Option<Replay>) {
        let room = self.rooms[i].room().clone();
        let server = self.server.clone();
        self.send(&Outgoing::Joined { room: &room, seq: latest, epoch: &server.hub.epoch() });
        let Some(replay) = replay else { return };
        self.queue_all(i, replay.deliveries.iter().map(|d| &**d));
        self.send(&Outgoing::Recovered { room: &room, complete: replay.complete });
    }

    fn leave(&mut self, room: String) -> Result<(), EnvelopeError> {
        let Some(i) = self.membership(&room) else {
            return Err(EnvelopeError::new("not_joined", format!("not in room {room}")));
        };
        let mut rooms = std::mem::take(&mut self.rooms).into_vec();
        let member = rooms.swap_remove(i);
        self.rooms = rooms.into_boxed_slice();
        self.left(member);
        self.send(&Outgoing::Left { room: &room });
        Ok(())
    }

    fn presence(&mut self, room: String) -> Result<(), EnvelopeError> {
        if self.membership(&room).is_none() {
            return Err(EnvelopeError::new("not_joined", format!("join room {room} to see who is in it")));
        }
        if let Some(cluster) = self.server.cluster.clone() {
            self.wait_for(None, async move {
                let presence = cluster.presence(&room, envelope::MAX_PRESENCE).await;
                Done::Presence { room, presence }
            });
            return Ok(());
        }
        let presence = self.server.hub.presence(&room, envelope::MAX_PRESENCE);
        self.present(&room, presence);
        Ok(())
    }

    /// Tells the client who is in `room`.
    fn present(&mut self, room: &str, (count, names): (usize, Vec<Arc<str>>)) {
        let members = names.iter().map(|n| &**n).collect();
        self.send(&Outgoing::Presence { room, count, members });
    }

    fn publish(&mut self, room: String, content: &str, id: Option<&str>) -> Result<(), EnvelopeError> {
        if self.membership(&room).is_none() {
            return Err(EnvelopeError::new("not_joined", format!("join room {room} before sending to it")));
        }
        let client_id = id.map(|id| (self.identity.retry_origin(), id));
        if let Some(cluster) = self.server.cluster.clone() {
            let (sender, content, id) = (self.identity.name.clone(), content.to_owned(), id.map(str::to_owned));
            let origin = self.identity.retry_origin().to_owned();
            self.wait_for(None, async move {
                let client_id = id.as_deref().map(|id| (origin.as_str(), id));
                let seq = cluster.publish(&room, &sender, &content, client_id).await;
                Done::Published { id, seq }
            });
            return Ok(());
        }
        // The room exists while this client is in it: it cannot be full.
        let seq = self.server.hub.publish(&room, &self.identity.name, content, client_id)?;
        self.acked(id, seq);
        Ok(())
    }

    /// Tells the client the seq its message got, if it gave an id.
    fn acked(&mut self, id: Option<&str>, seq: u64) {
        if let Some(id) = id {
            self.send(&Outgoing::Ack { id: Some(id), seq });
        }
    }

    /// Messages of room `i`, in seq order, those not sent yet. The fan-out
    /// latency is taken of the first, the oldest: one clock read per batch,
    /// not per message.
    fn deliver(&mut self, i: usize, batch: &[Arc<Delivery>]) {
        let delivered = self.rooms[i].delivered;
        let fresh = batch.iter().filter(|d| d.seq > delivered);
        if let Some(first) = fresh.clone().next() {
            self.server.metrics.fanout_latency.observe(first.published.elapsed().as_secs_f64());
        }
        self.queue_all(i, fresh.map(|d| &**d));
    }

    /// The client fell more than room `i`'s buffer behind: seqs up to `upto`
    /// left the fan-out before it took them. They come from the room's
    /// history: the hub's at once, the cluster's before the next request.
    fn lagged(&mut self, i: usize, upto: u64) {
        let delivered = self.rooms[i].delivered;
        if upto <= delivered {
            return;
        }
        self.server.metrics.lagged.inc_by(upto - delivered);
        if self.server.cluster.is_some() {
            self.rooms[i].lost = upto;
            return;
        }
        let held = self.server.hub.replay(self.rooms[i].room(), delivered);
        self.refill(i, &held.deliveries, upto);
    }

    /// Asks the cluster's history for the seqs a room lost, if one did.
    fn refetch_lost(&mut self) {
        let Some(member) = self.rooms.iter().find(|m| m.waits_for_lost()) else { return };
        let (room, after, upto) = (member.room().clone(), member.delivered, member.lost);
        let Some(cluster) = self.server.cluster.clone() else { return };
        self.wait_for(None, async move {
            let held = cluster.replay(&room, after, upto).await;
            Done::Refetched { room, upto, held }
        });
    }

    /// Sends room `i`'s messages that `held`, its history, has after those
    /// sent and up to `upto`; the seqs it lacks are skipped.
    fn refill(&mut self, i: usize, held: &[Arc<Delivery>], upto: u64) {
        for delivery in held.iter().filter(|d| d.seq <= upto) {
            let next = self.rooms[i].delivered + 1;
            if delivery.seq > next {
                self.skip(i, next, delivery.seq - 1);
            }
            if delivery.seq >= next {
                self.queue_all(i, std::iter::once(&**delivery));
            }
        }
        let delivered = self.rooms[i].delivered;
        if delivered < upto {
            self.skip(i, delivered + 1, upto);
        }
        // Closing already, if the policy is to disconnect: nothing more is owed.
        self.rooms[i].delivered = upto.max(delivered);
    }

    /// Queues messages of room `i`, and counts them in the metrics once for all.
    fn queue_all<'a>(&mut self, i: usize, deliveries: impl Iterator<Item = &'a Delivery>) {
        let (mut count, mut bytes) = (0, 0);
        for delivery in deliveries {
            if let Some(len) = self.queue(i, delivery) {
                count += 1;
                bytes += len;
            }
        }
        if count > 0 {
            self.server.metrics.sent(count, bytes);
        }
    }

    /// Queues a message of room `i` if the queue has room for it, and says
    /// how many bytes it queued; else the slow-consumer policy.
    fn queue(&mut self, i: usize, delivery: &Delivery) -> Option<usize> {
        let queued = self.ws.connection().output().len();
        if queued + delivery.frame.frame_len() > self.server.config.max_queue_bytes {
            self.skip(i, delivery.seq, delivery.seq);
            return None;
        }
        let member = &mut self.rooms[i];
        member.delivered = member.delivered.max(delivery.seq);
        // A gap is told before the messages that follow it.
        if let Some((from, to)) = member.gap.take() {
            self.send_gap(i, from, to);
        }
        // Queuing fails only once the connection is closing; the message is then moot.
        self.ws.queue_shared(&delivery.frame).ok().map(|()| delivery.frame.frame_len())
    }

    /// Seqs `first` to `last` of room `i` will not reach the client.
    fn skip(&mut self, i: usize, first: u64, last: u64) {
        match self.server.config.slow_consumer {
            SlowConsumer::Disconnect => {
                if self.ws.queue_close(CloseCode::POLICY_VIOLATION, "slow consumer").is_ok() {
                    warn!(sender = %self.identity.name, room = &**self.rooms[i].room(), "slow consumer: disconnected");
                    self.server.metrics.slow_consumers.get_or_create(&Reason { reason: "disconnect" }).inc();
                }
            }
            SlowConsumer::Skip => {
                let member = &mut self.rooms[i];
                if member.gap.is_none() {
                    self.server.metrics.slow_consumers.get_or_create(&Reason { reason: "skip" }).inc();
                }
                member.gap = Some((member.gap.map_or(first, |(from, _)| from), last));
                member.delivered = member.delivered.max(last);
            }
        }
    }

    /// Sends the gap notices that fit in the queue again; true if it sent any.
    fn report_gaps(&mut self) -> bool {
        let mut sent = false;
        for i in 0..self.rooms.len() {
            if self.ws.connection().output().len() >= self.server.config.max_queue_bytes / 2 {
                break;
            }
            if let Some((from, to)) = self.rooms[i].gap.take() {
                self.send_gap(i, from, to);
                sent = true;
            }
        }
        sent
    }

    fn send_gap(&mut self, i: usize, from: u64, to: u64) {
        let room = self.rooms[i].room().clone();
        warn!(sender = %self.identity.name, room = &*room, from, to, "slow consumer: skipped messages");
        self.send(&Outgoing::Gap { room: &room, from, to });
    }

    /// Pings, or closes a client that has sent nothing, pong included, for too long:
    /// for as many beats, after the one in whose interval it was last heard, as
    /// make the timeout.
    fn heartbeat(&mut self) {
        let silent = self.server.pulse.beats_since(self.heard_at);
        let config = &self.server.config;
        if config.heartbeat_interval.checked_mul(silent.saturating_sub(1)).is_none_or(|s| s >= config.heartbeat_timeout)
        {
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

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Session<S> {
    type Output = ();

    /// Serves the client until the connection ends: the pulse, what the
    /// client sends, then what its rooms publish, until none has more.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let session = self.get_mut();
        loop {
            session.poll_pulse(cx);
            let ControlFlow::Continue(served) = session.poll_client(cx) else { return Poll::Ready(()) };
            let delivered = session.poll_deliveries(cx);
            // Written out, the queue may have room again for the gap notices that wait.
            let reported = session.report_gaps();
            // What was queued goes out at the top of the loop.
            if !served && !delivered && !reported {
                return Poll::Pending;
            }
        }
    }
}

impl<S> Session<S> {
    /// Lets go of a membership, with this connection's place in the room's presence.
    fn left(&self, member: Membership) {
        // Its receiver gone first, so that a cluster can let the room go if it was the last here.
        let room = member.room().clone();
        drop(member);
        match &self.server.cluster {
            Some(cluster) => cluster.left(room, self.identity.name.clone()),
            None => {
                self.server.hub.leave(&room, &self.identity.name);
            }
        }
    }
}

impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        for member in std::mem::take(&mut self.rooms) {
            self.left(member);
        }
        self.pulse.release(&self.server.pulse);
        self.server.metrics.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use clap::Parser;
    use serde_json::{Value, json};
    use tokio::io::DuplexStream;
    use ws_proto::{Config, Connection, Role};
    use ws_tokio::Options;

    /// A hub server with `flags`, and a session of it whose client is the
    /// other end of an in-memory pipe.
    fn session(flags: &[&str]) -> (Arc<Server>, Session<DuplexStream>, WebSocket<DuplexStream>) {
        let config = ServerConfig::parse_from(["ws-server"].iter().chain(flags));
        let server = Arc::new(Server::new(Arc::new(config)).unwrap());
        let (near, far) = tokio::io::duplex(1 << 20);
        let socket = |io, role| {
            WebSocket::from_parts(io, Connection::new(role, Config::default()), Options::default(), Default::default())
        };
        let permit = server.limits.admit([127, 0, 0, 1].into()).unwrap();
        let session =
            Session::start(socket(near, Role::Server), Identity::anonymous("a".into()), server.clone(), permit);
        (server, session, socket(far, Role::Client))
    }

    /// Lets the session do all it can, then takes what it sent, up to the
    /// `joined` of the default room, and the `count` envelopes after it.
    async fn envelopes(
        session: &mut Session<DuplexStream>,
        client: &mut WebSocket<DuplexStream>,
        count: usize,
    ) -> Vec<Value> {
        let cx = &mut Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(session).poll(cx).is_pending());
        let mut envelopes = Vec::new();
        while envelopes.len() < count + 2 {
            let event = tokio::time::timeout(std::time::Duration::from_secs(10), client.recv()).await;
            match event.expect("an envelope, already sent").unwrap().unwrap() {
                Event::Message(Message::Text(text)) => envelopes.push(serde_json::from_str(text.as_str()).unwrap()),
                event => panic!("{event:?}"),
            }
        }
        envelopes.split_off(2)
    }

    fn publish(server: &Server, contents: &[&str]) {
        for content in contents {
            server.hub.publish("general", "b", content, None).unwrap();
        }
    }

    #[tokio::test]
    async fn a_member_that_fell_behind_its_room_gets_the_lost_messages_from_the_history() {
        let (server, mut session, mut client) = session(&["--room-buffer", "2"]);
        // Published before the session's task runs: three leave the room's buffer unread.
        publish(&server, &["1", "2", "3", "4", "5"]);
        let contents: Vec<_> =
            envelopes(&mut session, &mut client, 5).await.iter().map(|e| e["content"].clone()).collect();
        assert_eq!(contents, ["1", "2", "3", "4", "5"]);
        assert_eq!(server.metrics.lagged.get(), 3);
    }

    #[tokio::test]
    async fn what_the_history_no_longer_holds_is_a_gap() {
        let (server, mut session, mut client) =
            session(&["--room-buffer", "2", "--history", "4", "--slow-consumer", "skip"]);
        publish(&server, &["1", "2", "3", "4", "5", "6"]);
        let got = envelopes(&mut session, &mut client, 5).await;
        assert_eq!(got[0], json!({"type": "gap", "room": "general", "from": 1, "to": 2}));
        let contents: Vec<_> = got[1..].iter().map(|e| e["content"].clone()).collect();
        assert_eq!(contents, ["3", "4", "5", "6"]);
    }
}
