//! The events the application's backend is told of (docs/hooks.md): a
//! connection opened or closed, a connection's join and leave of a room,
//! a room occupied (its first member) and vacated (its last gone). They
//! wait in one queue, in the order they happened, and are posted in
//! batches, one batch at a time, each until the backend takes it (a 2xx),
//! with a backoff while it does not: at least once, in order, each with an
//! id to drop those seen twice. The queue is bounded: past
//! `--hook-events-max-waiting`, the oldest event is dropped and counted.

use super::Hooks;
use crate::envelope::now_millis;
use crate::metrics::HookMetrics;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tracing::warn;

/// The most events posted in one call.
const BATCH: usize = 100;
/// The first wait after a failed call; each next one twice as long, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A hub connection of the user opened.
    Connect,
    /// A hub connection of the user closed.
    Disconnect,
    /// A connection of the user joined the room.
    Join,
    /// A connection of the user left the room (it asked, was removed, or closed).
    Leave,
    /// The room had no member, and the user's connection is its first.
    Occupied,
    /// The user's connection was the room's last member.
    Vacated,
}

/// One event, as the backend is sent it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: Kind,
    user: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<Arc<str>>,
    /// Milliseconds since the Unix epoch.
    time: u64,
}

/// What one call posts.
#[derive(Serialize)]
pub(super) struct Batch<'a> {
    events: &'a [Event],
}

/// The events waiting for the backend to take them.
#[derive(Debug)]
pub struct Events {
    waiting: Mutex<VecDeque<Event>>,
    /// Wakes the delivery when an event comes to an empty queue.
    arrived: Notify,
    /// The ids' prefix, unique to this server's run, and the next number.
    prefix: String,
    next: AtomicU64,
    max_waiting: usize,
    metrics: HookMetrics,
}

impl Events {
    /// An empty queue of at most `max_waiting` events, whose ids start with `prefix`.
    pub fn new(prefix: String, max_waiting: usize, metrics: HookMetrics) -> Events {
        let waiting = Mutex::new(VecDeque::new());
        Events { waiting, arrived: Notify::new(), prefix, next: AtomicU64::new(1), max_waiting, metrics }
    }

    fn waiting(&self) -> MutexGuard<'_, VecDeque<Event>> {
        // Every change to the queue is one call: a panic leaves it whole.
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues what happened to `user` (in `room`), after every event before it.
    pub fn tell(&self, kind: Kind, user: &Arc<str>, room: Option<&Arc<str>>) {
        let id = format!("{}-{}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed));
        let event = Event { id, kind, user: user.clone(), room: room.cloned(), time: now_millis() };
        let mut waiting = self.waiting();
        if waiting.len() >= self.max_waiting {
            waiting.pop_front();
            self.metrics.events_dropped.inc();
        }
        waiting.push_back(event);
        self.metrics.events_waiting.set(waiting.len() as i64);
        drop(waiting);
        self.arrived.notify_one();
    }

    /// The oldest events, up to a batch, left in the queue until taken.
    fn oldest(&self) -> Vec<Event> {
        self.waiting().iter().take(BATCH).cloned().collect()
    }

    /// The backend took `batch`, the oldest events when it was sent: they
    /// leave the queue, by id, since the oldest may have been dropped
    /// meanwhile for room.
    fn taken(&self, batch: &[Event]) {
        let mut waiting = self.waiting();
        let Some(last) = batch.last() else { return };
        if let Some(at) = waiting.iter().position(|event| event.id == last.id) {
            waiting.drain(..=at);
        }
        self.metrics.events_waiting.set(waiting.len() as i64);
    }

    /// Posts the events to the backend through `hooks`, oldest first, for
    /// as long as the server runs.
    pub(super) async fn deliver(self: Arc<Self>, hooks: Arc<Hooks>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let batch = self.oldest();
            if batch.is_empty() {
                self.arrived.notified().await;
                continue;
            }
            match hooks.tell(&Batch { events: &batch }).await {
                Ok(()) => {
                    self.taken(&batch);
                    backoff = FIRST_BACKOFF;
                }
                Err(error) => {
                    warn!(waiting = self.waiting().len(), "events not taken, again in {backoff:?}: {}", error.message);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_bound_the_oldest_events_are_dropped_and_counted() {
        let events = Events::new("p".into(), 2, HookMetrics::default());
        let user: Arc<str> = "u".into();
        events.tell(Kind::Connect, &user, None);
        let batch = events.oldest();
        events.tell(Kind::Join, &user, Some(&user));
        events.tell(Kind::Leave, &user, Some(&user));
        // The batch in flight was dropped meanwhile: taking it takes nothing else.
        events.taken(&batch);
        let ids: Vec<String> = events.oldest().into_iter().map(|event| event.id).collect();
        assert_eq!(ids, ["p-2", "p-3"]);
        assert_eq!((events.metrics.events_dropped.get(), events.metrics.events_waiting.get()), (1, 2));
        events.taken(&events.oldest()[..1]);
        assert_eq!(events.oldest()[0].kind, Kind::Leave);
    }
}
