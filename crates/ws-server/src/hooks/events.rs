//! The events the application's backend is told of (docs/hooks.md): a
//! connection opened or closed, a connection's join and leave of a room,
//! a room occupied (its first member) and vacated (its last gone). They
//! wait in one queue, in the order they happened, and are posted in
//! batches, one batch at a time, each until the backend takes it (a 2xx),
//! with a backoff while it does not: at least once, in order, each with an
//! id to drop those seen twice. The queue is bounded: past
//! `--hook-events-max-waiting`, the oldest event is dropped and counted.
//!
//! With `--redis`, the queue is drained into Redis instead, where the
//! servers share the rooms' occupancy and one of them posts to the
//! backend (cluster/events.rs).

use super::Hooks;
use crate::envelope::now_millis;
use crate::metrics::HookMetrics;
use futures_util::future::BoxFuture;
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
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(10);

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

impl Kind {
    const ALL: [Kind; 6] = [Kind::Connect, Kind::Disconnect, Kind::Join, Kind::Leave, Kind::Occupied, Kind::Vacated];

    /// Its name, as the backend reads it in `type`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Connect => "connect",
            Kind::Disconnect => "disconnect",
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::Occupied => "occupied",
            Kind::Vacated => "vacated",
        }
    }

    /// The kind of that name.
    pub fn named(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether it tells of a room on every server rather than of a connection.
    fn room_wide(self) -> bool {
        matches!(self, Kind::Occupied | Kind::Vacated)
    }
}

/// One event, as the backend is sent it.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Unique among every event of every run of every server.
    pub id: String,
    /// Its place in this server's queue, from 1.
    #[serde(skip)]
    pub number: u64,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: Kind,
    /// To whom.
    pub user: Arc<str>,
    /// Where, for a room's events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<Arc<str>>,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
}

/// What one call posts.
#[derive(Serialize)]
pub struct Batch<'a> {
    /// Oldest first.
    pub events: &'a [Event],
}

/// The events waiting for the backend to take them.
#[derive(Debug)]
pub struct Events {
    waiting: Mutex<VecDeque<Event>>,
    /// Wakes the delivery when an event comes to an empty queue.
    arrived: Notify,
    /// Wakes those waiting for the queue to empty.
    emptied: Notify,
    /// The ids' prefix, unique to this server's run, and the next number.
    prefix: String,
    next: AtomicU64,
    max_waiting: usize,
    /// Whether rooms are occupied and vacated here alone; with `--redis`,
    /// Redis tells, from the comings and goings of every server.
    rooms_here: bool,
    metrics: HookMetrics,
}

impl Events {
    /// An empty queue of at most `max_waiting` events, whose ids start with
    /// `prefix`; with `rooms_here`, the rooms' occupied and vacated are told here.
    pub fn new(prefix: String, max_waiting: usize, rooms_here: bool, metrics: HookMetrics) -> Events {
        let (waiting, next) = (Mutex::new(VecDeque::new()), AtomicU64::new(1));
        let (arrived, emptied) = (Notify::new(), Notify::new());
        Events { waiting, arrived, emptied, prefix, next, max_waiting, rooms_here, metrics }
    }

    /// The bound on the events waiting (`--hook-events-max-waiting`).
    pub fn max_waiting(&self) -> usize {
        self.max_waiting
    }

    /// Counts `count` events dropped for room.
    pub fn dropped(&self, count: u64) {
        self.metrics.events_dropped.inc_by(count);
    }

    fn waiting(&self) -> MutexGuard<'_, VecDeque<Event>> {
        // Every change to the queue is one call: a panic leaves it whole.
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues what happened to `user` (in `room`), after every event before it.
    pub fn tell(&self, kind: Kind, user: &Arc<str>, room: Option<&Arc<str>>) {
        if kind.room_wide() && !self.rooms_here {
            return;
        }
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{number}", self.prefix);
        let event = Event { id, number, kind, user: user.clone(), room: room.cloned(), time: now_millis() };
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

    /// The oldest events when a batch was sent, up to its `last`, were
    /// taken: they leave the queue, by id, since the oldest may have been
    /// dropped meanwhile for room.
    fn taken(&self, last: &Event) {
        let mut waiting = self.waiting();
        if let Some(at) = waiting.iter().position(|event| event.id == last.id) {
            waiting.drain(..=at);
        }
        self.metrics.events_waiting.set(waiting.len() as i64);
        if waiting.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    /// Completes once every event told so far is taken (posted, or written
    /// to Redis): at shutdown, once the connections are closed.
    pub async fn flushed(&self) {
        loop {
            let emptied = self.emptied.notified();
            if self.waiting().is_empty() {
                return;
            }
            emptied.await;
        }
    }

    /// Posts the events to the backend through `hooks`, oldest first, for
    /// as long as the server runs.
    pub async fn deliver(self: Arc<Self>, hooks: Arc<Hooks>) {
        let post = |batch: Vec<Event>| -> BoxFuture<'static, Result<(), String>> {
            let hooks = hooks.clone();
            Box::pin(async move { hooks.tell(&batch).await.map_err(|e| e.message) })
        };
        self.drain(post).await
    }

    /// Hands the events to `send`, a batch at a time, oldest first, each
    /// until it takes them, for as long as the server runs.
    pub async fn drain(self: Arc<Self>, mut send: impl FnMut(Vec<Event>) -> BoxFuture<'static, Result<(), String>>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let batch = self.oldest();
            let Some(last) = batch.last().cloned() else {
                self.arrived.notified().await;
                continue;
            };
            match send(batch).await {
                Ok(()) => {
                    self.taken(&last);
                    backoff = FIRST_BACKOFF;
                }
                Err(error) => {
                    warn!(waiting = self.waiting().len(), "events not taken, again in {backoff:?}: {error}");
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
        let events = Events::new("p".into(), 2, true, HookMetrics::default());
        let user: Arc<str> = "u".into();
        events.tell(Kind::Connect, &user, None);
        let batch = events.oldest();
        events.tell(Kind::Join, &user, Some(&user));
        events.tell(Kind::Leave, &user, Some(&user));
        // The batch in flight was dropped meanwhile: taking it takes nothing else.
        events.taken(&batch[0]);
        let ids: Vec<String> = events.oldest().into_iter().map(|event| event.id).collect();
        assert_eq!(ids, ["p-2", "p-3"]);
        assert_eq!((events.metrics.events_dropped.get(), events.metrics.events_waiting.get()), (1, 2));
        events.taken(&events.oldest()[0]);
        assert_eq!(events.oldest()[0].kind, Kind::Leave);
    }
}
