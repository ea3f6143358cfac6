//! The watch over the Redis nodes. Every [`LOOK_EVERY`] it learns who they
//! are (the one node of a single Redis; for a cluster, CLUSTER NODES asked
//! of a node: the primaries with their slots, and their replicas) and PINGs
//! each, for the metrics of each node: up or down, and the round trip. It
//! logs the topology at its first look and each change after that: a node
//! down or back, a replica promoted, slots moved, a node added or removed.
//! The commands this server sends are counted to the node serving their
//! key's slot through [`Nodes::send`].
//!
//! CLUSTER NODES rather than SLOTS or SHARDS: it gives each node's own slots,
//! primary and flags, in every Redis since 3.0, where SLOTS leaves out a
//! primary without slots (one that failed over) and SHARDS groups nodes by
//! shard. The watch PINGs on connections of its own, one to each node: the
//! cluster client holds connections only to the nodes of the slot map it
//! last fetched, which it does again only when a command fails or moves.

use super::link::Target;
use super::store::REQUEST_TIMEOUT;
use crate::metrics::{NodeMetrics, RedisNode};
use prometheus_client::metrics::gauge::Gauge;
use redis::RedisResult;
use redis::aio::ConnectionManager;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, timeout};
use tracing::{info, warn};

/// How often the watch looks at the nodes.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How many hash slots a Redis Cluster has.
const SLOTS: u16 = 16384;

/// The hash slot of `key`, as CLUSTER KEYSLOT says: CRC16 (XMODEM) of its
/// hash tag, the part between the first `{` and the next `}` when not
/// empty, or else of the whole key, mod 16384. (The redis crate's
/// `cluster_routing::Slot::for_key` computes it, but does not tell the number.)
fn slot(key: &[u8]) -> u16 {
    let tag = key.iter().position(|&b| b == b'{').and_then(|open| {
        let tag = &key[open + 1..];
        let close = tag.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &tag[..close])
    });
    crc16(tag.unwrap_or(key)) % SLOTS
}

/// CRC16 with polynomial 0x1021 and no initial value (XMODEM), Redis Cluster's.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// What a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// The one node of a single Redis, serving every key.
    Single,
    /// A cluster's primary, serving these slots (in increasing order; maybe none).
    Primary(Vec<RangeInclusive<u16>>),
    /// A cluster's replica of this primary, when it is known.
    Replica(Option<Arc<str>>),
}

impl Role {
    /// Its `role` label: none for a single Redis.
    fn label(&self) -> Option<&'static str> {
        match self {
            Role::Single => None,
            Role::Primary(_) => Some("primary"),
            Role::Replica(_) => Some("replica"),
        }
    }

    /// What the log calls a node of this role.
    fn noun(&self) -> &'static str {
        self.label().unwrap_or("node")
    }

    /// Whether a node of this role serves `slot`.
    fn serves(&self, slot: u16) -> bool {
        match self {
            Role::Single => true,
            Role::Primary(slots) => slots.iter().any(|range| range.contains(&slot)),
            Role::Replica(_) => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Single => f.write_str("a single Redis"),
            Role::Primary(slots) => write!(f, "a primary serving {}", Slots(slots)),
            Role::Replica(Some(primary)) => write!(f, "a replica of {primary}"),
            Role::Replica(None) => f.write_str("a replica of an unknown primary"),
        }
    }
}

/// Slot ranges as the log writes them: `0-5460,5462`, or `no slots`.
struct Slots<'a>(&'a [RangeInclusive<u16>]);

impl fmt::Display for Slots<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("no slots");
        }
        for (i, range) in self.0.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            match (range.start(), range.end()) {
                (start, end) if start == end => write!(f, "{comma}{start}")?,
                (start, end) => write!(f, "{comma}{start}-{end}")?,
            }
        }
        Ok(())
    }
}

/// The nodes as one look found them, by address (`host:port`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Topology(BTreeMap<Arc<str>, Role>);

impl Topology {
    /// The one node of a single Redis at `address`.
    fn single(address: &str) -> Topology {
        Topology(BTreeMap::from([(Arc::from(address), Role::Single)]))
    }

    /// A cluster's, from CLUSTER NODES: a line per node, `id
    /// host:port@bus[,hostname] flags primary-id ping pong epoch link
    /// slot...`, where a slot being moved reads `[slot->-id]` or
    /// `[slot-<-id]`. Nodes without an address yet (in handshake, noaddr)
    /// are left out.
    fn from_cluster_nodes(text: &str) -> Topology {
        let lines: Vec<Vec<&str>> =
            text.lines().map(|line| line.split_whitespace().collect::<Vec<_>>()).filter(|f| f.len() >= 8).collect();
        let flagged = |fields: &[&str], flag: &str| fields[2].split(',').any(|f| f == flag);
        let addresses: HashMap<&str, Arc<str>> = lines
            .iter()
            .filter(|fields| !flagged(fields, "handshake") && !flagged(fields, "noaddr"))
            .filter_map(|fields| Some((fields[0], Arc::from(fields[1].split(['@', ',']).next()?))))
            .collect();
        let mut nodes = BTreeMap::new();
        for fields in &lines {
            let Some(address) = addresses.get(fields[0]) else { continue };
            let role = match flagged(fields, "master") {
                true => Role::Primary(fields[8..].iter().filter_map(|range| slot_range(range)).collect()),
                false => Role::Replica(addresses.get(fields[3]).cloned()),
            };
            nodes.insert(address.clone(), role);
        }
        Topology(nodes)
    }

    /// The node serving `slot`, and its role.
    fn serving(&self, slot: u16) -> Option<(&Arc<str>, &Role)> {
        self.0.iter().find(|(_, role)| role.serves(slot))
    }

    /// The known replicas of the node at `primary`.
    fn replicas_of<'a>(&'a self, primary: &'a str) -> impl Iterator<Item = &'a str> {
        self.0.iter().filter_map(move |(node, role)| match role {
            Role::Replica(Some(of)) if **of == *primary => Some(&**node),
            _ => None,
        })
    }
}

/// A range of slots of CLUSTER NODES, `a-b` or `a`; none for a slot being moved.
fn slot_range(range: &str) -> Option<RangeInclusive<u16>> {
    let (start, end) = range.split_once('-').unwrap_or((range, range));
    Some(start.parse().ok()?..=end.parse().ok()?)
}

impl fmt::Display for Topology {
    /// Each node with its role, a primary's replicas with it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut said = 0;
        for (node, role) in &self.0 {
            if matches!(role, Role::Replica(Some(primary)) if self.0.contains_key(primary)) {
                continue;
            }
            write!(f, "{}{node}: {role}", if said == 0 { "" } else { "; " })?;
            let replicas: Vec<&str> = self.replicas_of(node).collect();
            if !replicas.is_empty() {
                write!(f, ", replicas {}", replicas.join(", "))?;
            }
            said += 1;
        }
        Ok(())
    }
}

/// A change from one look at the nodes to the next, as the log tells it.
#[derive(Debug, PartialEq, Eq)]
enum Change {
    /// A node came into the topology.
    Added(Arc<str>, Role),
    /// A node left it.
    Removed(Arc<str>),
    /// A node has another role: a replica promoted, a primary that failed
    /// over back as a replica, a replica of another primary.
    Became { node: Arc<str>, was: Role, now: Role },
    /// Slots moved from one primary to another (none: no node served them).
    Moved { slots: Vec<RangeInclusive<u16>>, from: Option<Arc<str>>, to: Option<Arc<str>> },
}

impl Change {
    /// Whether the log warns of it: a node gone, a failover, slots left unserved.
    fn is_warning(&self) -> bool {
        match self {
            Change::Added(..) => false,
            Change::Removed(_) => true,
            Change::Became { was, now, .. } => matches!((was, now), (Role::Replica(_), Role::Primary(_))),
            Change::Moved { to, .. } => to.is_none(),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added(node, role) => write!(f, "node {node} added: {role}"),
            Change::Removed(node) => write!(f, "node {node} removed"),
            Change::Became { node, was, now } => write!(f, "{node} is now {now}, was {was}"),
            Change::Moved { slots, from: Some(from), to: Some(to) } => {
                write!(f, "slots {} moved from {from} to {to}", Slots(slots))
            }
            Change::Moved { slots, from: None, to: Some(to) } => write!(f, "slots {} now served by {to}", Slots(slots)),
            Change::Moved { slots, from, .. } => {
                write!(f, "slots {} no longer served, were {}'s", Slots(slots), from.as_deref().unwrap_or("no one"))
            }
        }
    }
}

/// What changed from `before` to `after`: nodes added, removed or of
/// another role, then slots moved, but for those a promoted replica took
/// from its primary, which its promotion tells.
fn changes(before: &Topology, after: &Topology) -> Vec<Change> {
    let mut changes = Vec::new();
    for (node, now) in &after.0 {
        match before.0.get(node) {
            None => changes.push(Change::Added(node.clone(), now.clone())),
            Some(Role::Primary(_)) if matches!(now, Role::Primary(_)) => {}
            Some(was) if was != now => {
                changes.push(Change::Became { node: node.clone(), was: was.clone(), now: now.clone() })
            }
            Some(_) => {}
        }
    }
    changes
        .extend(before.0.keys().filter(|node| !after.0.contains_key(*node)).map(|node| Change::Removed(node.clone())));
    for slot in 0..SLOTS {
        let (from, to) = (before.serving(slot).map(|(node, _)| node), after.serving(slot).map(|(node, _)| node));
        let promoted = to.is_some_and(|to| matches!(before.0.get(to), Some(Role::Replica(of)) if of.as_ref() == from));
        if from == to || promoted {
            continue;
        }
        let moved = changes.iter_mut().find_map(|change| match change {
            Change::Moved { slots, from: f, to: t } if f.as_ref() == from && t.as_ref() == to => Some(slots),
            _ => None,
        });
        match moved {
            Some(slots) => match slots.last_mut() {
                Some(last) if *last.end() + 1 == slot => *last = *last.start()..=slot,
                _ => slots.push(slot..=slot),
            },
            None => changes.push(Change::Moved { slots: vec![slot..=slot], from: from.cloned(), to: to.cloned() }),
        }
    }
    changes
}

/// The metrics' labels of `node` in `role`.
fn label(node: &Arc<str>, role: &Role) -> RedisNode {
    RedisNode { node: node.clone(), role: role.label() }
}

/// The Redis nodes as last seen, shared by the watch and the code that
/// sends commands, which counts them with [`Nodes::send`].
#[derive(Debug, Clone)]
pub(super) struct Nodes(Arc<Seen>);

/// What the watch saw last, and the metrics it keeps.
#[derive(Debug)]
struct Seen {
    /// The topology of the last look that learned one; empty before the first.
    topology: RwLock<Arc<Topology>>,
    metrics: NodeMetrics,
}

impl Nodes {
    /// Counts `commands` sent to the node serving the slot of `key` (the one
    /// Redis, or the cluster's primary, as last seen), in flight until the
    /// [`Sent`] is dropped. None are counted before the watch's first look.
    pub(super) fn send(&self, key: &str, commands: u32) -> Sent {
        let topology = self.topology();
        let Some((node, role)) = topology.serving(slot(key.as_bytes())) else { return Sent(None) };
        let (node, metrics) = (label(node, role), &self.0.metrics);
        metrics.commands.get_or_create(&node).inc_by(commands.into());
        let in_flight = metrics.in_flight.get_or_create(&node).clone();
        in_flight.inc_by(commands.into());
        Sent(Some((in_flight, commands.into())))
    }

    /// The topology as last seen.
    fn topology(&self) -> Arc<Topology> {
        self.0.topology.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Commands sent to a node and not answered yet: in flight until dropped.
#[derive(Debug)]
#[must_use = "the commands are in flight while it is held"]
pub(super) struct Sent(Option<(Gauge, i64)>);

impl Drop for Sent {
    fn drop(&mut self) {
        if let Some((in_flight, commands)) = &self.0 {
            in_flight.dec_by(*commands);
        }
    }
}

/// The task that looks at the nodes every [`LOOK_EVERY`].
pub(super) struct Watch {
    target: Target,
    /// Where it tells what it saw; gone once the cluster link is.
    seen: Weak<Seen>,
    /// A connection of the watch's own to each node.
    links: HashMap<Arc<str>, ConnectionManager>,
    /// Whether each node answered its last PING.
    answered: HashMap<Arc<str>, bool>,
}

impl Watch {
    /// Starts the watch over the nodes of `target`, reporting to `metrics`;
    /// it ends once the last of the [`Nodes`] it gives is dropped.
    pub(super) fn start(target: Target, metrics: NodeMetrics) -> Nodes {
        let nodes = Nodes(Arc::new(Seen { topology: RwLock::default(), metrics }));
        let watch = Watch { target, seen: Arc::downgrade(&nodes.0), links: HashMap::new(), answered: HashMap::new() };
        tokio::spawn(watch.run());
        nodes
    }

    /// Looks at the nodes, again and again, until the cluster link is dropped.
    async fn run(mut self) {
        let mut looks = tokio::time::interval(LOOK_EVERY);
        looks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            looks.tick().await;
            let Some(seen) = self.seen.upgrade() else { return };
            self.look(&Nodes(seen)).await;
        }
    }

    /// One look: the topology learned, what changed logged, then every node PINGed.
    async fn look(&mut self, nodes: &Nodes) {
        let last = nodes.topology();
        if let Some(topology) = self.learn(&last).await.filter(|topology| *topology != *last) {
            self.update(&last, &topology, &nodes.0.metrics);
            *nodes.0.topology.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(topology);
        }
        self.ping_all(&nodes.topology(), &nodes.0.metrics).await;
    }

    /// The topology: a single Redis's one node, or a cluster's as the first
    /// node to answer CLUSTER NODES tells it, those that answered their last
    /// PING asked first (at the first look, those the URL names); none if
    /// no node answered.
    async fn learn(&mut self, last: &Topology) -> Option<Topology> {
        if !self.target.sharded() {
            return self.target.named().first().map(|node| Topology::single(node));
        }
        let mut asked: Vec<Arc<str>> = match last.0.is_empty() {
            true => self.target.named().into_iter().map(Arc::from).collect(),
            false => last.0.keys().cloned().collect(),
        };
        asked.sort_by_key(|node| self.answered.get(node) != Some(&true));
        for node in asked {
            let Ok(mut link) = self.link(&node) else { continue };
            let asking = redis::cmd("CLUSTER").arg("NODES").to_owned();
            if let Ok(Ok(nodes)) = timeout(REQUEST_TIMEOUT, asking.query_async::<String>(&mut link)).await {
                return Some(Topology::from_cluster_nodes(&nodes));
            }
        }
        None
    }

    /// Logs the new `topology` (all of it at the first look, what changed
    /// from `last` after that), and forgets what is no more: the metrics of
    /// a node's former role, the link to a node gone.
    fn update(&mut self, last: &Topology, topology: &Topology, metrics: &NodeMetrics) {
        if last.0.is_empty() {
            info!("redis: the nodes: {topology}");
        } else {
            for change in changes(last, topology) {
                match change.is_warning() {
                    true => warn!("redis: {change}"),
                    false => info!("redis: {change}"),
                }
            }
        }
        for (node, role) in &last.0 {
            if topology.0.get(node).map(Role::label) != Some(role.label()) {
                metrics.up.remove(&label(node, role));
                metrics.latency.remove(&label(node, role));
            }
        }
        self.links.retain(|node, _| topology.0.contains_key(node));
        self.answered.retain(|node, _| topology.0.contains_key(node));
    }

    /// The watch's connection to `node`, made the first time.
    fn link(&mut self, node: &Arc<str>) -> RedisResult<ConnectionManager> {
        if let Some(link) = self.links.get(node) {
            return Ok(link.clone());
        }
        let link = self.target.node(node)?;
        self.links.insert(node.clone(), link.clone());
        Ok(link)
    }

    /// PINGs every node of `topology` at once, and reports each answer or its absence.
    async fn ping_all(&mut self, topology: &Topology, metrics: &NodeMetrics) {
        let mut pings = JoinSet::new();
        for node in topology.0.keys() {
            let (node, link) = (node.clone(), self.link(node));
            pings.spawn(async move {
                let answer = match link {
                    Ok(link) => ping(link).await,
                    Err(e) => Err(e.to_string()),
                };
                (node, answer)
            });
        }
        while let Some(pinged) = pings.join_next().await {
            if let Ok((node, answer)) = pinged
                && let Some(role) = topology.0.get(&node)
            {
                self.answered(node, role, answer, metrics);
            }
        }
    }

    /// Reports the answer of `node` to a PING: in its metrics, and in the log
    /// if it went down (or did not answer its first) or came back.
    fn answered(&mut self, node: Arc<str>, role: &Role, answer: Result<Duration, String>, metrics: &NodeMetrics) {
        let labels = label(&node, role);
        metrics.up.get_or_create(&labels).set(i64::from(answer.is_ok()));
        let was_up = self.answered.insert(node.clone(), answer.is_ok()).unwrap_or(true);
        match answer {
            Ok(round_trip) => {
                metrics.latency.get_or_create(&labels).observe(round_trip.as_secs_f64());
                if !was_up {
                    info!("redis: {} {node} back", role.noun());
                }
            }
            Err(why) if was_up => warn!("redis: {} {node} down: {why}", role.noun()),
            Err(_) => {}
        }
    }
}

/// PINGs a node on `link`: the round trip, or why there was none within [`REQUEST_TIMEOUT`].
async fn ping(mut link: ConnectionManager) -> Result<Duration, String> {
    let sent = Instant::now();
    match timeout(REQUEST_TIMEOUT, redis::cmd("PING").query_async::<()>(&mut link)).await {
        Ok(Ok(())) => Ok(sent.elapsed()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn a_keys_slot_is_the_one_cluster_keyslot_gives() {
        // As redis-server 7.0 answered CLUSTER KEYSLOT.
        let known = [("foo", 12182), ("{user1000}.following", 3443), ("ws:{general}:seq", 9981)];
        let tagged = [("a{}b", 13694), ("{}{x}", 3257), ("123456789", 12739)];
        for (key, keyslot) in known.into_iter().chain(tagged) {
            assert_eq!(slot(key.as_bytes()), keyslot, "{key}");
        }
        for key in ["", "{", "}{a}", "a{b}{c}", "{{}}", "ws:{ü}:history", "x{y"] {
            assert_eq!(Slot::new(slot(key.as_bytes())), Some(Slot::for_key(key)), "{key}");
        }
    }

    /// Three primaries with a replica each, on ports 7000 to 7005.
    const NODES: &str = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001,node-b master - 0 1 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master - 0 1 3 connected 10923-16383 [16000->-a1]
d4 127.0.0.1:7003@17003 slave c3 0 1 3 connected
e5 127.0.0.1:7004@17004 slave a1 0 1 1 connected
f6 127.0.0.1:7005@17005 slave b2 0 1 2 connected
g7 :0@0 handshake,noaddr - 0 0 0 disconnected
";

    fn primary(slots: &[RangeInclusive<u16>]) -> Role {
        Role::Primary(slots.to_vec())
    }

    fn replica(of: &str) -> Role {
        Role::Replica(Some(Arc::from(of)))
    }

    fn topology(nodes: &[(&str, Role)]) -> Topology {
        Topology(nodes.iter().map(|(node, role)| (Arc::from(*node), role.clone())).collect())
    }

    fn formed() -> Topology {
        topology(&[
            ("127.0.0.1:7000", primary(&[0..=5460])),
            ("127.0.0.1:7001", primary(&[5461..=10922])),
            ("127.0.0.1:7002", primary(&[10923..=16383])),
            ("127.0.0.1:7003", replica("127.0.0.1:7002")),
            ("127.0.0.1:7004", replica("127.0.0.1:7000")),
            ("127.0.0.1:7005", replica("127.0.0.1:7001")),
        ])
    }

    #[test]
    fn cluster_nodes_tell_the_primaries_their_slots_and_replicas() {
        let topology = Topology::from_cluster_nodes(NODES);
        assert_eq!(topology, formed());
        assert_eq!(topology.serving(5461).map(|(node, _)| &**node), Some("127.0.0.1:7001"));
        assert_eq!(
            topology.to_string(),
            "127.0.0.1:7000: a primary serving 0-5460, replicas 127.0.0.1:7004; \
             127.0.0.1:7001: a primary serving 5461-10922, replicas 127.0.0.1:7005; \
             127.0.0.1:7002: a primary serving 10923-16383, replicas 127.0.0.1:7003"
        );
        assert_eq!(Topology::single("127.0.0.1:6379").to_string(), "127.0.0.1:6379: a single Redis");
    }

    #[test]
    fn a_failover_is_one_promotion_and_the_old_primary_comes_back_as_replica() {
        let mut failed = formed();
        failed.0.insert(Arc::from("127.0.0.1:7000"), primary(&[]));
        failed.0.insert(Arc::from("127.0.0.1:7004"), primary(&[0..=5460]));
        let promoted = changes(&formed(), &failed);
        let now = primary(&[0..=5460]);
        let became = Change::Became { node: Arc::from("127.0.0.1:7004"), was: replica("127.0.0.1:7000"), now };
        assert_eq!(promoted, [became]);
        assert!(promoted[0].is_warning());
        assert_eq!(
            promoted[0].to_string(),
            "127.0.0.1:7004 is now a primary serving 0-5460, was a replica of 127.0.0.1:7000"
        );

        let mut back = failed;
        back.0.insert(Arc::from("127.0.0.1:7000"), replica("127.0.0.1:7004"));
        let rejoined = changes(&Topology::from_cluster_nodes(NODES), &back);
        assert_eq!(rejoined.len(), 2, "{rejoined:?}");
        assert_eq!(
            rejoined[0].to_string(),
            "127.0.0.1:7000 is now a replica of 127.0.0.1:7004, was a primary serving 0-5460"
        );
    }

    #[test]
    fn slots_moved_nodes_added_and_removed_are_each_told() {
        let mut after = formed();
        after.0.insert(Arc::from("127.0.0.1:7000"), primary(&[0..=99, 101..=5460]));
        after.0.insert(Arc::from("127.0.0.1:7001"), primary(&[100..=100, 5461..=10922, 16000..=16001]));
        after.0.insert(Arc::from("127.0.0.1:7002"), primary(&[10923..=15999, 16002..=16383]));
        after.0.remove("127.0.0.1:7005");
        after.0.insert(Arc::from("127.0.0.1:7006"), replica("127.0.0.1:7001"));
        let told: Vec<String> = changes(&formed(), &after).iter().map(ToString::to_string).collect();
        assert_eq!(
            told,
            [
                "node 127.0.0.1:7006 added: a replica of 127.0.0.1:7001",
                "node 127.0.0.1:7005 removed",
                "slots 100 moved from 127.0.0.1:7000 to 127.0.0.1:7001",
                "slots 16000-16001 moved from 127.0.0.1:7002 to 127.0.0.1:7001",
            ]
        );
        after.0.insert(Arc::from("127.0.0.1:7000"), primary(&[101..=5460]));
        let unserved = changes(&formed(), &after);
        assert_eq!(unserved[2].to_string(), "slots 0-99 no longer served, were 127.0.0.1:7000's");
        assert!(unserved[2].is_warning() && !unserved[3].is_warning());
        assert_eq!(changes(&formed(), &formed()), []);
    }

    #[test]
    fn commands_count_to_the_primary_of_their_slot_and_are_in_flight_until_answered() {
        let metrics = NodeMetrics::default();
        let nodes = Nodes(Arc::new(Seen { topology: RwLock::new(Arc::new(formed())), metrics: metrics.clone() }));
        let on = |port: u16| RedisNode { node: Arc::from(format!("127.0.0.1:{port}")), role: Some("primary") };
        let sent = nodes.send("ws:{general}:seq", 2);
        assert_eq!(metrics.commands.get_or_create(&on(7001)).get(), 2);
        assert_eq!(metrics.in_flight.get_or_create(&on(7001)).get(), 2);
        drop(sent);
        assert_eq!(metrics.in_flight.get_or_create(&on(7001)).get(), 0);
        drop(nodes.send("foo", 1));
        assert_eq!(metrics.commands.get_or_create(&on(7002)).get(), 1);
        let unknown = Nodes(Arc::new(Seen { topology: RwLock::default(), metrics: metrics.clone() }));
        drop(unknown.send("foo", 1));
        assert_eq!(metrics.commands.get_or_create(&on(7002)).get(), 1, "not counted before the first look");
    }
}
