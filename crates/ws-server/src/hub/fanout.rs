//! A room's fan-out: its most recent deliveries, which every member reads
//! at its own pace, and the wakers of the members waiting for the next.
//!
//! A member holds a cursor (the place of the next delivery it wants, in
//! the order they were sent) and a slot for its waker, nothing more: no
//! receive future of its own. A member that falls further behind than the
//! room keeps learns which seqs it lost. Deliveries are messages, in seq
//! order, and the notices that come between them (join and leave events),
//! which carry the seq of the message before them.

use super::Delivery;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Wakers woken at a time, outside the lock.
const WAKE_BATCH: usize = 32;

/// The deliveries of one room, shared by its members.
#[derive(Debug)]
pub struct Fanout {
    /// The room's name.
    pub room: Arc<str>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The last deliveries, in the order they were sent.
    recent: VecDeque<Arc<Delivery>>,
    capacity: usize,
    /// How many deliveries were sent: the place of the next one.
    sent: u64,
    /// The highest seq that has left `recent`.
    dropped: u64,
    /// The wakers of waiting members, by slot.
    waiting: Vec<Option<Waker>>,
    free: Vec<u32>,
}

/// A member's place in a [`Fanout`]; its slot is given back when dropped.
#[derive(Debug)]
pub struct Member {
    fanout: Arc<Fanout>,
    slot: u32,
    /// The place of the next delivery it wants.
    next: u64,
}

/// Seqs up to `upto` left the room before the member read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged {
    /// The last of them.
    pub upto: u64,
}

impl Fanout {
    /// The fan-out of `room`, keeping the last `capacity` deliveries.
    pub fn new(room: Arc<str>, capacity: usize) -> Arc<Fanout> {
        let state = State {
            recent: VecDeque::new(),
            capacity: capacity.max(1),
            sent: 0,
            dropped: 0,
            waiting: Vec::new(),
            free: Vec::new(),
        };
        Arc::new(Fanout { room, state: Mutex::new(state) })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is one call: a panic cannot leave it half-made.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new member, which reads from the next delivery sent on.
    pub fn subscribe(self: &Arc<Self>) -> Member {
        let mut state = self.state();
        let slot = state.free.pop().unwrap_or_else(|| {
            if state.waiting.is_empty() {
                // Most rooms have one member: the first slot is made alone.
                state.waiting.reserve_exact(1);
            }
            state.waiting.push(None);
            (state.waiting.len() - 1) as u32
        });
        Member { fanout: self.clone(), slot, next: state.sent }
    }

    /// How many members it has.
    pub fn members(&self) -> usize {
        let state = self.state();
        state.waiting.len() - state.free.len()
    }

    /// Hands `delivery` to every member, and wakes those that wait.
    pub fn send(&self, delivery: Arc<Delivery>) {
        let mut slot = {
            let mut state = self.state();
            if state.recent.len() == state.capacity {
                if let Some(oldest) = state.recent.pop_front() {
                    state.dropped = state.dropped.max(oldest.seq);
                }
            }
            super::push_back(&mut state.recent, delivery);
            state.sent += 1;
            0
        };
        // In batches, the lock let go while waking, as the woken may want it at once.
        let mut batch = Vec::with_capacity(WAKE_BATCH);
        loop {
            {
                let mut state = self.state();
                while batch.len() < WAKE_BATCH && slot < state.waiting.len() {
                    batch.extend(state.waiting[slot].take());
                    slot += 1;
                }
            }
            if batch.is_empty() {
                return;
            }
            batch.drain(..).for_each(Waker::wake);
        }
    }
}

impl Member {
    /// The room this member reads.
    pub fn room(&self) -> &Arc<str> {
        &self.fanout.room
    }

    /// The next deliveries, up to `max`, added to `batch` under one lock
    /// (the lock is shared with every member, on every thread), or word of
    /// those lost; otherwise the task of `cx` is woken by the next one sent.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        batch: &mut Vec<Arc<Delivery>>,
        max: usize,
    ) -> Poll<Result<(), Lagged>> {
        let mut state = self.fanout.state();
        let oldest = state.sent - state.recent.len() as u64;
        if self.next < oldest {
            self.next = oldest;
            return Poll::Ready(Err(Lagged { upto: state.dropped }));
        }
        let first = (self.next - oldest) as usize;
        let end = state.recent.len().min(first.saturating_add(max));
        if first < end {
            batch.extend(state.recent.range(first..end).cloned());
            self.next = oldest + end as u64;
            return Poll::Ready(Ok(()));
        }
        let waiting = &mut state.waiting[self.slot as usize];
        if !waiting.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waiting = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut state = self.fanout.state();
        state.waiting[self.slot as usize] = None;
        state.free.push(self.slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliveries(seqs: &[u64]) -> Vec<Arc<Delivery>> {
        seqs.iter().map(|&seq| Arc::new(Delivery::new(seq, format!("{{\"seq\":{seq}}}"), None, 1))).collect()
    }

    fn recv(member: &mut Member) -> Poll<Result<u64, Lagged>> {
        let mut one = Vec::new();
        member.poll_recv(&mut Context::from_waker(Waker::noop()), &mut one, 1).map(|r| r.map(|()| one[0].seq))
    }

    #[test]
    fn a_member_takes_up_to_a_batch_at_once() {
        let fanout = Fanout::new(Arc::from("r"), 8);
        let mut member = fanout.subscribe();
        for delivery in deliveries(&[1, 2, 3, 4, 5]) {
            fanout.send(delivery);
        }
        let mut batch = Vec::new();
        let cx = &mut Context::from_waker(Waker::noop());
        assert_eq!(member.poll_recv(cx, &mut batch, 3), Poll::Ready(Ok(())));
        assert_eq!(member.poll_recv(cx, &mut batch, 3), Poll::Ready(Ok(())));
        assert_eq!(batch.iter().map(|d| d.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!(member.poll_recv(cx, &mut batch, 3), Poll::Pending);
    }

    #[test]
    fn each_member_reads_every_delivery_once_from_where_it_joined() {
        let fanout = Fanout::new(Arc::from("r"), 8);
        let mut early = fanout.subscribe();
        let sent = deliveries(&[1, 2, 3]);
        fanout.send(sent[0].clone());
        let mut late = fanout.subscribe();
        fanout.send(sent[1].clone());
        fanout.send(sent[2].clone());
        assert_eq!(
            [recv(&mut early), recv(&mut early), recv(&mut early)],
            [Poll::Ready(Ok(1)), Poll::Ready(Ok(2)), Poll::Ready(Ok(3))]
        );
        assert_eq!(recv(&mut early), Poll::Pending);
        assert_eq!(
            [recv(&mut late), recv(&mut late), recv(&mut late)],
            [Poll::Ready(Ok(2)), Poll::Ready(Ok(3)), Poll::Pending]
        );
        assert_eq!(fanout.members(), 2);
        drop(late);
        assert_eq!(fanout.members(), 1);
    }

    #[test]
    fn a_member_that_falls_behind_learns_what_it_lost_then_reads_on() {
        let fanout = Fanout::new(Arc::from("r"), 2);
        let mut member = fanout.subscribe();
        for delivery in deliveries(&[1, 2, 3, 4]) {
            fanout.send(delivery);
        }
        assert_eq!(recv(&mut member), Poll::Ready(Err(Lagged { upto: 2 })));
        assert_eq!([recv(&mut member), recv(&mut member)], [Poll::Ready(Ok(3)), Poll::Ready(Ok(4))]);
    }

    #[test]
    fn a_waiting_member_is_woken_by_the_next_delivery() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let fanout = Fanout::new(Arc::from("r"), 4);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut members: Vec<Member> = (0..100).map(|_| fanout.subscribe()).collect();
        for member in &mut members {
            assert!(member.poll_recv(&mut Context::from_waker(&waker), &mut Vec::new(), 1).is_pending());
        }
        fanout.send(deliveries(&[1])[0].clone());
        assert_eq!(count.0.load(Ordering::SeqCst), 100, "every waiting member, in batches");
        fanout.send(deliveries(&[2])[0].clone());
        assert_eq!(count.0.load(Ordering::SeqCst), 100, "a member is woken once until it waits again");
    }
}
