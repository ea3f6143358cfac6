//! The hub: rooms, each a fan-out to its members with a numbered history.
//!
//! A published message gets the next seq of its room, is serialized to JSON
//! once and encoded as a frame once (and compressed once, when the server
//! compresses each message on its own); every member receives the same
//! [`Delivery`]. Each room keeps its last messages so that a client joining
//! with `since` misses nothing that is still held.

mod delivery;
pub mod fanout;
mod members;

use crate::envelope::{Body, EnvelopeError, Outgoing, now_millis};
use crate::hooks::events::{Events, Kind};
pub use delivery::Delivery;
use fanout::{Fanout, Member};
use members::Members;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use ws_proto::DeflateConfig;

/// What a room keeps for recovery: its last `len` messages, none older than `max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History {
    /// Messages kept at most.
    pub len: usize,
    /// How long a message is kept at most.
    pub max_age: Option<Duration>,
}

/// The hub's bounds and settings.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Messages a member may fall behind in the room's fan-out before it lags.
    pub room_buffer: usize,
    /// Rooms held at most; when full, rooms without members are let go.
    pub max_rooms: usize,
    /// Compress each broadcast once with these settings, for members that
    /// compress messages on their own.
    pub deflate: Option<DeflateConfig>,
}

/// A member's view of a room it just joined.
#[derive(Debug)]
pub struct Subscription {
    /// What is published from now on; it knows the room's name, shared with the hub.
    pub member: Member,
    /// The room's latest seq at the time of joining (0: none yet).
    pub latest: u64,
    /// Whether the member was in the room on no other connection here.
    pub first: bool,
}

/// What a join with `since` replays.
#[derive(Debug)]
pub struct Replay {
    /// The held messages after `since`, in order, up to the latest at joining.
    pub deliveries: Vec<Arc<Delivery>>,
    /// Whether they are every message after `since`.
    pub complete: bool,
}

/// The hub refused to make a room: it holds `max_rooms`, all with members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomsFull;

impl From<RoomsFull> for EnvelopeError {
    fn from(_: RoomsFull) -> Self {
        EnvelopeError::new("room_limit", "the server holds all the rooms it can")
    }
}

#[derive(Debug)]
struct Room {
    fanout: Arc<Fanout>,
    latest: u64,
    /// The highest seq known to be given, delivered here or not yet (numbered elsewhere).
    numbered: u64,
    history: VecDeque<Arc<Delivery>>,
    /// Who is in the room, with how many connections each.
    members: Members,
}

/// Every room of this server, in memory.
#[derive(Debug)]
pub struct Hub {
    rooms: Mutex<HashMap<Arc<str>, Room>>,
    settings: HubSettings,
    /// Names this server among others and makes message ids unique across
    /// restarts: the start time and a random part, in hex.
    id_prefix: String,
    /// Names the numbering of every room: this server's start, or the
    /// cluster's when the rooms are numbered in Redis.
    epoch: Mutex<Arc<str>>,
    /// Hashes retry keys, with keys of its own so clients cannot aim at collisions.
    retry_hasher: RandomState,
    next_id: AtomicU64,
    /// Where the joins and leaves are told, and the rooms occupied and
    /// vacated, with an events hook.
    events: Option<Arc<Events>>,
}

impl Hub {
    /// An empty hub.
    pub fn new(settings: HubSettings) -> Self {
        let id_prefix = format!("{:x}{:04x}", now_millis(), rand::random::<u16>());
        Hub {
            rooms: Mutex::default(),
            settings,
            epoch: Mutex::new(Arc::from(id_prefix.as_str())),
            id_prefix,
            retry_hasher: RandomState::new(),
            next_id: AtomicU64::new(1),
            events: None,
        }
    }

    /// The same hub, telling its joins and leaves to `events`, if any.
    pub fn telling(self, events: Option<Arc<Events>>) -> Self {
        Hub { events, ..self }
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<Arc<str>, Room>> {
        // A panic while holding the lock leaves the map whole: every change to it is one call.
        self.rooms.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Joins `room`, making it if needed; with `since` (a seq, and the room's
    /// history), also returns the messages after that seq that its history
    /// holds. The receiver and the replay are taken together, so nothing is
    /// missed or seen twice between them.
    ///
    /// With `announce`, the members are told when it is the member's first
    /// connection in the room (a `member_joined` notice).
    pub fn join(
        &self,
        room: &str,
        member: &Arc<str>,
        since: Option<(u64, History)>,
        announce: bool,
    ) -> Result<(Subscription, Option<Replay>), RoomsFull> {
        let mut rooms = self.rooms();
        let (name, room) = self.room(&mut rooms, room)?;
        let first = room.members.add(member) == 1;
        if let Some(events) = &self.events {
            events.tell(Kind::Join, member, Some(&name));
            if first && room.members.len() == 1 {
                events.tell(Kind::Occupied, member, Some(&name));
            }
        }
        if first && announce {
            let json = Outgoing::MemberJoined { room: &name, member }.to_json();
            room.fanout.send(Arc::new(self.notice(room, json, member)));
        }
        let subscription = Subscription { member: room.fanout.subscribe(), latest: room.latest, first };
        let replay = since.map(|(since, history)| room.replay(since, history.max_age));
        Ok((subscription, replay))
    }

    /// The room named `name`, made if needed: its shared name and state.
    fn room<'a>(
        &self,
        rooms: &'a mut HashMap<Arc<str>, Room>,
        name: &str,
    ) -> Result<(Arc<str>, &'a mut Room), RoomsFull> {
        if !rooms.contains_key(name) && rooms.len() >= self.settings.max_rooms {
            rooms.retain(|_, r| r.fanout.members() > 0);
            if rooms.len() >= self.settings.max_rooms {
                return Err(RoomsFull);
            }
        }
        let buffer = self.settings.room_buffer.max(1);
        let name = rooms.get_key_value(name).map_or_else(|| Arc::from(name), |(name, _)| name.clone());
        let room = rooms.entry(name.clone()).or_insert_with(|| Room {
            fanout: Fanout::new(name.clone(), buffer),
            latest: 0,
            numbered: 0,
            history: VecDeque::new(),
            members: Members::default(),
        });
        Ok((name, room))
    }

    /// Tells the events hook, if there is one, what happened to `user` (in `room`).
    pub fn tell(&self, kind: Kind, user: &Arc<str>, room: Option<&Arc<str>>) {
        if let Some(events) = &self.events {
            events.tell(kind, user, room);
        }
    }

    /// One connection of `member` left `room`; true if it was its last
    /// there. With `announce`, the members are then told (`member_left`).
    pub fn leave(&self, room: &str, member: &Arc<str>, announce: bool) -> bool {
        let mut rooms = self.rooms();
        let Some((name, state)) = rooms.get_key_value(room).map(|(name, _)| name.clone()).zip(rooms.get_mut(room))
        else {
            return false;
        };
        let left = state.members.remove(member);
        if let Some(events) = self.events.as_ref().filter(|_| left.is_some()) {
            events.tell(Kind::Leave, member, Some(&name));
            if state.members.is_empty() {
                events.tell(Kind::Vacated, member, Some(&name));
            }
        }
        if left != Some(0) {
            return false;
        }
        if announce {
            let json = Outgoing::MemberLeft { room, member }.to_json();
            state.fanout.send(Arc::new(self.notice(state, json, member)));
        }
        true
    }

    /// Hands `json`, a notice about `member` that came from elsewhere (the
    /// cluster), to the members of `room` here.
    pub fn announce(&self, room: &str, json: String, member: &Arc<str>) {
        let rooms = self.rooms();
        if let Some(state) = rooms.get(room) {
            state.fanout.send(Arc::new(self.notice(state, json, member)));
        }
    }

    /// `json`, a notice about `member`, after the latest message of `room`.
    fn notice(&self, room: &Room, json: String, member: &Arc<str>) -> Delivery {
        Delivery { about: Some(member.clone()), ..self.delivery(room.latest, json, room.fanout.members()) }
    }

    /// Who is in `room`: how many, and the names of up to `max` of them, in order.
    pub fn presence(&self, room: &str, max: usize) -> (usize, Vec<Arc<str>>) {
        let rooms = self.rooms();
        let Some(room) = rooms.get(room) else { return (0, Vec::new()) };
        let mut names: Vec<Arc<str>> = room.members.iter().map(|(name, _)| name.clone()).collect();
        names.sort_unstable();
        names.truncate(max);
        (room.members.len(), names)
    }

    /// The messages of `room` after `since` that its `history` holds, for a member that asks again.
    pub fn replay(&self, room: &str, since: u64, history: History) -> Replay {
        match self.rooms().get(room) {
            Some(room) => room.replay(since, history.max_age),
            None => Replay { deliveries: Vec::new(), complete: since == 0 },
        }
    }

    /// Publishes `body` from `sender` to every member of `room`, keeping it
    /// in the room's `history`; returns its seq.
    ///
    /// `client_id`, the id the client gave with who gave it (a user, or an
    /// address), makes a retry harmless: a message with the same pair still
    /// in the room's history is not published again, and its seq is returned.
    /// A room without members is made, as a join would make it.
    pub fn publish(
        &self,
        room: &str,
        sender: &str,
        body: &Body,
        client_id: Option<(&str, &str)>,
        history: History,
    ) -> Result<u64, RoomsFull> {
        let retry_key =
            client_id.map(|pair| NonZeroU64::new(self.retry_hasher.hash_one(pair)).unwrap_or(NonZeroU64::MIN));
        let mut rooms = self.rooms();
        let state = self.room(&mut rooms, room)?.1;
        if let Some(earlier) = retry_key.and_then(|key| state.history.iter().find(|d| d.retry_key == Some(key))) {
            return Ok(earlier.seq);
        }
        let id = self.message_id();
        let seq = state.latest + 1;
        let json = Outgoing::message(&id, seq, now_millis(), sender, body, room).to_json();
        let delivery = Arc::new(Delivery { retry_key, ..self.delivery(seq, json, state.fanout.members()) });
        state.latest = seq;
        if history.len > 0 {
            while state.history.len() >= history.len {
                state.history.pop_front();
            }
            push_back(&mut state.history, delivery.clone());
        }
        if let Some(age) = history.max_age {
            while state.history.front().is_some_and(|d| d.published.elapsed() > age) {
                state.history.pop_front();
            }
        }
        state.fanout.send(delivery);
        Ok(seq)
    }

    /// This server's name among others.
    pub fn instance(&self) -> &str {
        &self.id_prefix
    }

    /// A new message id, unique among every message of every start of this server.
    pub fn message_id(&self) -> String {
        format!("{}-{:x}", self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// `json`, the envelope of seq `seq`, encoded (and compressed) once for
    /// the `members` connections it is for (see [`Delivery::new`]).
    pub fn delivery(&self, seq: u64, json: String, members: usize) -> Delivery {
        Delivery::new(seq, json, self.settings.deflate.as_ref(), members)
    }

    /// The epoch of this hub's numbering: it changes with every start of the
    /// server, unless the cluster names it.
    pub fn epoch(&self) -> Arc<str> {
        self.epoch.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Takes the cluster's epoch as this hub's.
    pub fn set_epoch(&self, epoch: &str) {
        *self.epoch.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::from(epoch);
    }

    /// The latest seq of `room`, if the hub holds it.
    pub fn latest(&self, room: &str) -> Option<u64> {
        self.rooms().get(room).map(|room| room.latest)
    }

    /// The highest seq of `room` known here, delivered or only acked; 0 if none.
    pub fn floor(&self, room: &str) -> u64 {
        self.rooms().get(room).map_or(0, |room| room.latest.max(room.numbered))
    }

    /// Seq `seq` of `room` was given out elsewhere (in Redis), if the hub holds the room.
    pub fn numbered(&self, room: &str, seq: u64) {
        if let Some(room) = self.rooms().get_mut(room) {
            room.numbered = room.numbered.max(seq);
        }
    }

    /// Whether `room` has members on this server.
    pub fn has_members(&self, room: &str) -> bool {
        self.rooms().get(room).is_some_and(|room| room.fanout.members() > 0)
    }

    /// Numbered elsewhere, `room` is at `latest` at least: made if needed,
    /// and set there if it was behind.
    pub fn sync(&self, room: &str, latest: u64) -> Result<(), RoomsFull> {
        let mut rooms = self.rooms();
        let state = self.room(&mut rooms, room)?.1;
        state.latest = state.latest.max(latest);
        Ok(())
    }

    /// Delivers `json`, numbered `seq` elsewhere, to the members of `room`
    /// here, if it is the room's next message: the caller fills any gap first.
    /// False when the hub does not hold the room or `seq` does not follow.
    pub fn deliver(&self, room: &str, seq: u64, json: String) -> bool {
        let mut rooms = self.rooms();
        let Some(state) = rooms.get_mut(room) else { return false };
        if seq != state.latest + 1 {
            return false;
        }
        state.latest = seq;
        state.fanout.send(Arc::new(self.delivery(seq, json, state.fanout.members())));
        true
    }

    /// Tells the members of `room` here that seqs `from` to `to` will not
    /// reach them: a `gap` notice, delivered in the stream as seq `to`.
    pub fn gap(&self, room: &str, from: u64, to: u64) {
        let mut rooms = self.rooms();
        let Some(state) = rooms.get_mut(room) else { return };
        if to <= state.latest {
            return;
        }
        state.latest = to;
        let json = Outgoing::Gap { room, from, to }.to_json();
        state.fanout.send(Arc::new(self.delivery(to, json, state.fanout.members())));
    }

    /// The rooms with members: each with its members' names and its connections.
    pub fn occupancy(&self) -> Vec<(Arc<str>, Vec<Arc<str>>, u64)> {
        let rooms = self.rooms();
        let occupied = rooms.iter().filter(|(_, room)| !room.members.is_empty());
        occupied
            .map(|(name, room)| {
                let connections = room.members.iter().map(|(_, n)| u64::from(n)).sum();
                (name.clone(), room.members.iter().map(|(name, _)| name.clone()).collect(), connections)
            })
            .collect()
    }

    /// How many rooms have members.
    pub fn occupied(&self) -> usize {
        self.rooms().values().filter(|room| !room.members.is_empty()).count()
    }

    /// How many rooms the hub holds.
    pub fn room_count(&self) -> usize {
        self.rooms().len()
    }
}

/// Appends `delivery` to a room's ring or history. The first one makes room
/// for itself alone: most rooms are one member's, and hold a message or two.
fn push_back(deque: &mut VecDeque<Arc<Delivery>>, delivery: Arc<Delivery>) {
    if deque.capacity() == 0 {
        deque.reserve_exact(1);
    }
    deque.push_back(delivery);
}

impl Room {
    /// The held messages after `since`, none older than `max_age`. A `since`
    /// past the latest seq comes from another run of the room's numbering:
    /// everything held is replayed, and the replay is not complete.
    fn replay(&self, since: u64, max_age: Option<Duration>) -> Replay {
        let renumbered = since > self.latest;
        let after = if renumbered { 0 } else { since };
        let young = |d: &&Arc<Delivery>| max_age.is_none_or(|age| d.published.elapsed() <= age);
        let held: Vec<_> = self.history.iter().filter(young).collect();
        let first_held = held.first().map_or(self.latest + 1, |d| d.seq);
        let deliveries = held.into_iter().filter(|d| d.seq > after).cloned().collect();
        Replay { deliveries, complete: !renumbered && after + 1 >= first_held }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn hub(max_rooms: usize) -> Hub {
        Hub::new(HubSettings { room_buffer: 16, max_rooms, deflate: None })
    }

    /// A history of `len` messages, of any age.
    fn keep(len: usize) -> History {
        History { len, max_age: None }
    }

    /// The next delivery that is there, if any.
    fn recv(member: &mut Member) -> Option<Arc<Delivery>> {
        let mut one = Vec::new();
        let cx = &mut std::task::Context::from_waker(std::task::Waker::noop());
        match member.poll_recv(cx, &mut one, 1) {
            std::task::Poll::Ready(Ok(())) => one.pop(),
            _ => None,
        }
    }

    fn seqs(replay: &Replay) -> Vec<u64> {
        replay.deliveries.iter().map(|d| d.seq).collect()
    }

    #[test]
    fn replay_is_complete_only_when_the_history_reaches_back() {
        let (hub, history) = (hub(10), keep(3));
        let (mut member, _) = hub.join("r", &Arc::from("u"), None, false).unwrap();
        for i in 1..=5 {
            assert_eq!(hub.publish("r", "u", &Body::text(&format!("m{i}")), None, history).unwrap(), i);
        }
        assert_eq!((1..=5).map(|_| recv(&mut member.member).unwrap().seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        // Held: 3 to 5.
        let cases: [(u64, &[u64], bool); 5] = [
            (5, &[], true),
            (2, &[3, 4, 5], true),
            (1, &[3, 4, 5], false),
            (0, &[3, 4, 5], false),
            // Past the latest: the room was numbered again, as after a restart.
            (9, &[3, 4, 5], false),
        ];
        for (since, expected, complete) in cases {
            let replay = hub.replay("r", since, history);
            assert_eq!((seqs(&replay).as_slice(), replay.complete), (expected, complete), "since {since}");
        }
        assert!(hub.replay("unknown", 0, history).complete);
        assert!(!hub.replay("unknown", 3, history).complete);
    }

    #[test]
    fn a_join_with_since_and_the_live_stream_meet_without_a_gap_or_a_double() {
        let (hub, history) = (hub(10), keep(10));
        let _keep = hub.join("r", &Arc::from("u"), None, false).unwrap();
        hub.publish("r", "u", &Body::text("one"), None, history).unwrap();
        hub.publish("r", "u", &Body::text("two"), None, history).unwrap();
        let (mut late, replay) = hub.join("r", &Arc::from("u"), Some((0, history)), false).unwrap();
        assert_eq!((late.latest, seqs(&replay.unwrap())), (2, vec![1, 2]));
        hub.publish("r", "u", &Body::text("three"), None, history).unwrap();
        assert_eq!(recv(&mut late.member).unwrap().seq, 3);
        assert!(recv(&mut late.member).is_none());
    }

    #[test]
    fn a_retry_within_the_history_is_not_published_again() {
        let (hub, history) = (hub(10), keep(2));
        let (mut member, _) = hub.join("r", &Arc::from("u"), None, false).unwrap();
        assert_eq!(hub.publish("r", "u", &Body::text("hello"), Some(("u", "c1")), history).unwrap(), 1);
        assert_eq!(
            hub.publish("r", "u", &Body::text("hello"), Some(("u", "c1")), history).unwrap(),
            1,
            "a retry gets the first seq"
        );
        assert_eq!(
            hub.publish("r", "v", &Body::text("hello"), Some(("v", "c1")), history).unwrap(),
            2,
            "another sender's id is its own"
        );
        assert_eq!(hub.publish("r", "u", &Body::text("hello"), None, history).unwrap(), 3);
        assert_eq!((1..=3).map(|_| recv(&mut member.member).unwrap().seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(recv(&mut member.member).is_none(), "the retry reached no one");
        // Out of the history (2 messages), the pair is new again.
        assert_eq!(hub.publish("r", "u", &Body::text("hello"), Some(("u", "c1")), history).unwrap(), 4);
    }

    #[test]
    fn messages_past_the_age_limit_are_not_replayed() {
        let age = Duration::from_micros(1);
        let (hub, history) = (hub(10), History { len: 10, max_age: Some(age) });
        let _keep = hub.join("r", &Arc::from("u"), None, false).unwrap();
        hub.publish("r", "u", &Body::text("old"), None, history).unwrap();
        // The clock moves past the limit: an event, not a measure of speed.
        let published = Instant::now();
        while published.elapsed() <= age {}
        let replay = hub.replay("r", 0, history);
        assert_eq!((seqs(&replay), replay.complete), (vec![], false));
        assert!(hub.replay("r", 1, history).complete, "nothing after seq 1 was missed");
    }

    #[test]
    fn without_history_nothing_is_held_and_every_message_still_numbered() {
        let (hub, history) = (hub(10), keep(0));
        let _keep = hub.join("r", &Arc::from("u"), None, false).unwrap();
        assert_eq!(
            (
                hub.publish("r", "u", &Body::text("a"), None, history).unwrap(),
                hub.publish("r", "u", &Body::text("b"), None, history).unwrap()
            ),
            (1, 2)
        );
        let replay = hub.replay("r", 1, history);
        assert_eq!((seqs(&replay), replay.complete), (vec![], false));
        assert!(hub.replay("r", 2, history).complete);
    }

    #[test]
    fn presence_counts_each_member_once_until_its_last_connection_leaves() {
        let hub = hub(10);
        let (alice, bob) = (Arc::from("alice"), Arc::from("bob"));
        let _a1 = hub.join("r", &alice, None, false).unwrap();
        let _a2 = hub.join("r", &alice, None, false).unwrap();
        let _b = hub.join("r", &bob, None, false).unwrap();
        assert_eq!(hub.presence("r", 10), (2, vec![alice.clone(), bob.clone()]));
        assert_eq!(hub.presence("r", 1), (2, vec![alice.clone()]), "names are bounded, the count is not");
        hub.leave("r", &alice, false);
        assert_eq!(hub.presence("r", 10).0, 2, "alice still has a connection in the room");
        hub.leave("r", &alice, false);
        hub.leave("r", &bob, false);
        assert_eq!(hub.presence("r", 10), (0, vec![]));
        assert_eq!(hub.presence("elsewhere", 10), (0, vec![]));
    }

    #[test]
    fn a_full_hub_lets_go_of_rooms_without_members() {
        let (hub, history) = (hub(2), keep(10));
        let (kept, _) = hub.join("a", &Arc::from("u"), None, false).unwrap();
        let (left, _) = hub.join("b", &Arc::from("u"), None, false).unwrap();
        assert_eq!(hub.join("c", &Arc::from("u"), None, false).unwrap_err(), RoomsFull);
        drop(left);
        let _c = hub.join("c", &Arc::from("u"), None, false).unwrap();
        assert_eq!(hub.room_count(), 2);
        assert!(hub.replay("b", 0, history).deliveries.is_empty(), "b is gone");
        drop(kept);
    }
}
