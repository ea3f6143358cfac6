//! A session's deliveries: its rooms' messages taken from their fan-outs
//! in batches and queued for the client within `--max-queue-bytes`; what
//! a room's buffer lost before the session took it, refetched from the
//! room's history; and the slow-consumer policy for what cannot be sent.

use super::Session;
use crate::config::SlowConsumer;
use crate::envelope::Outgoing;
use crate::hub::Delivery;
use crate::hub::fanout::Lagged;
use crate::metrics::Reason;
use std::num::NonZeroU64;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::warn;
use ws_proto::CloseCode;

/// Deliveries of one room taken at once, to leave in one write.
pub(super) const BATCH: usize = 64;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Takes the rooms' deliveries that are ready, up to a batch per room;
    /// true if there were any. Otherwise the task of `cx` is woken by the next.
    pub(super) fn poll_deliveries(&mut self, cx: &mut Context<'_>) -> bool {
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

    /// Messages of room `i`, in seq order, those not sent yet, and the
    /// notices between them but those about the client's own user. The
    /// fan-out latency is taken of the first, the oldest: one clock read
    /// per batch, not per message.
    fn deliver(&mut self, i: usize, batch: &[Arc<Delivery>]) {
        // The name's own count, not the session's: per batch, on this connection alone.
        let (delivered, name) = (self.rooms[i].delivered, self.identity.name.clone());
        let fresh = batch.iter().filter(move |d| d.about.as_ref().map_or(d.seq > delivered, |about| *about != name));
        if let Some(first) = fresh.clone().next() {
            self.server.metrics.fanout_latency.observe(first.published.elapsed().as_secs_f64());
        }
        self.queue_all(i, fresh.map(|d| &**d));
    }

    /// The client fell more than room `i`'s buffer behind: seqs up to `upto`
    /// left the fan-out before it took them. They come from the room's
    /// history before the client's next request, the room's newer messages
    /// waiting until then.
    fn lagged(&mut self, i: usize, upto: u64) {
        let delivered = self.rooms[i].delivered;
        if upto <= delivered {
            return;
        }
        self.server.metrics.lagged.inc_by(upto - delivered);
        self.rooms[i].lost = upto;
    }

    /// Asks the rooms' history for the seqs the rooms lost, if any did: the
    /// hub's answers at once, the cluster's comes after the client's
    /// messages in flight, and nothing more is read until it has. True if
    /// it asked.
    pub(super) fn refetch_lost(&mut self) -> bool {
        let mut asked = false;
        while self.pending.as_ref().is_none_or(|pending| pending.reads(self.server.pipeline)) {
            let Some(member) = self.rooms.iter().find(|m| m.waits_for_lost()) else { break };
            let (room, after, upto) = (member.room().clone(), member.delivered, member.lost);
            let held = self.server.replay(&room, after, upto);
            self.answer(super::InFlight::Alone(None), held, move |held| super::Done::Refetched { room, upto, held });
            asked = true;
        }
        asked
    }

    /// Sends room `i`'s messages that `held`, its history, has after those
    /// sent and up to `upto`; the seqs it lacks are skipped.
    pub(super) fn refill(&mut self, i: usize, held: &[Arc<Delivery>], upto: u64) {
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
    pub(super) fn queue_all<'a>(&mut self, i: usize, deliveries: impl Iterator<Item = &'a Delivery>) {
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
    /// how many bytes it queued; else the slow-consumer policy (a notice
    /// that does not fit is dropped: it is no message to recover).
    fn queue(&mut self, i: usize, delivery: &Delivery) -> Option<usize> {
        let queued = self.ws.connection().output().len();
        if queued + delivery.frame.frame_len() > self.server.config.max_queue_bytes {
            if !delivery.is_notice() {
                self.skip(i, delivery.seq, delivery.seq);
            }
            return None;
        }
        let member = &mut self.rooms[i];
        member.delivered = member.delivered.max(delivery.seq);
        // A gap is told before the messages that follow it.
        self.report_gap(i);
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
                let first = NonZeroU64::new(first).unwrap_or(NonZeroU64::MIN);
                member.gap = Some((member.gap.map_or(first, |(from, _)| from), last));
                member.delivered = member.delivered.max(last);
            }
        }
    }

    /// Sends the gap notices that fit in the queue again; true if it sent any.
    pub(super) fn report_gaps(&mut self) -> bool {
        let mut sent = false;
        for i in 0..self.rooms.len() {
            if self.ws.connection().output().len() >= self.server.config.max_queue_bytes / 2 {
                break;
            }
            if let Some((from, to)) = self.rooms[i].gap.take() {
                self.send_gap(i, from.get(), to);
                sent = true;
            }
        }
        sent
    }

    /// Tells room `i`'s gap, if it has one not told yet, whether or not the queue has room.
    pub(super) fn report_gap(&mut self, i: usize) {
        if let Some((from, to)) = self.rooms[i].gap.take() {
            self.send_gap(i, from.get(), to);
        }
    }

    fn send_gap(&mut self, i: usize, from: u64, to: u64) {
        let room = self.rooms[i].room().clone();
        warn!(sender = %self.identity.name, room = &*room, from, to, "slow consumer: skipped messages");
        self.send(&Outgoing::Gap { room: &room, from, to });
    }
}
