//! The hub's metrics, served at `/metrics` in the Prometheus text format
//! (OpenMetrics): connections, refusals by reason, messages and payload
//! bytes each way, slow consumers, members lagging behind a room's buffer,
//! rooms, and the latency of a broadcast from its publication to its
//! queueing at each member; with `--redis`, the link and each Redis node.

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

/// A label with one name and a fixed value.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why: `origin`, `unauthorized`, `connect_hook`, `per_ip`, `full`; or `disconnect`, `skip`.
    pub reason: &'static str,
}

/// A hook, as its metrics are labelled: `hook="connect"`, `"refresh"`,
/// `"join"`, `"publish"`, `"rpc"`, `"events"`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabel {
    /// Which hook.
    pub hook: &'static str,
}

/// What the calls to the application's backend report, by hook.
#[derive(Debug, Clone)]
pub struct HookMetrics {
    /// Calls made, answered or not.
    pub calls: Family<HookLabel, Counter>,
    /// Calls that failed: no answer in time, a status other than 2xx, or an
    /// answer that is not one.
    pub errors: Family<HookLabel, Counter>,
    /// Seconds from a call's start to its answer or failure.
    pub latency: Family<HookLabel, Histogram, fn() -> Histogram>,
    /// Events waiting for the backend to take them.
    pub events_waiting: Gauge,
    /// Events dropped unsent, the queue full.
    pub events_dropped: Counter,
}

impl Default for HookMetrics {
    fn default() -> Self {
        HookMetrics {
            calls: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(round_trips),
            events_waiting: Gauge::default(),
            events_dropped: Counter::default(),
        }
    }
}

/// Every metric of one server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Hub connections open now.
    pub connections: Gauge,
    /// Hub connections accepted since the start.
    pub accepted: Counter,
    /// Of those, the ones that came as streams of an HTTP/2 connection (RFC 8441).
    pub accepted_h2: Counter,
    /// Hub handshakes refused, by reason.
    pub refused: Family<Reason, Counter>,
    /// Envelopes received from clients.
    pub messages_received: Counter,
    /// Envelopes and room messages queued for clients.
    pub messages_sent: Counter,
    /// Payload bytes received from clients.
    pub bytes_received: Counter,
    /// Bytes of the frames queued for clients (their plain frames, before compression).
    pub bytes_sent: Counter,
    /// Slow consumers, by what was done: `disconnect` or `skip`.
    pub slow_consumers: Family<Reason, Counter>,
    /// Messages that left a room's buffer before a member's task took them.
    pub lagged: Counter,
    /// Rooms held now.
    pub rooms: Gauge,
    /// Tasks alive in the server's runtime now: a connection's, the links', the API's.
    pub tasks: Gauge,
    /// Seconds from a message's publication to its queueing at a member, for
    /// the first (oldest) message of each batch a member takes at once.
    pub fanout_latency: Histogram,
    /// The link to Redis, with `--redis`.
    pub cluster: ClusterMetrics,
    /// The calls to the application's backend.
    pub hooks: HookMetrics,
}

/// What the link to Redis reports: whether it is up, how often it went
/// down, and the messages it could not recover (told as gaps); and each node.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetrics {
    /// 1 while the link is up.
    pub up: Gauge,
    /// Times the link was lost or could not be made.
    pub outages: Counter,
    /// Messages numbered in Redis that no longer were there to deliver.
    pub lost: Counter,
    /// Each Redis node.
    pub nodes: NodeMetrics,
}

/// A Redis node as its metrics are labelled: `node="host:port"`, and in a
/// cluster `role="primary"` or `role="replica"`.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RedisNode {
    /// Its address, `host:port`.
    pub node: Arc<str>,
    /// In a cluster, `primary` or `replica`; none for a single Redis.
    pub role: Option<&'static str>,
}

impl EncodeLabelSet for RedisNode {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let node = ("node", &*self.node);
        match self.role {
            Some(role) => [node, ("role", role)].encode(encoder),
            None => [node].encode(encoder),
        }
    }
}

/// What the watch over the Redis nodes reports, by node: whether each
/// answers PING, how fast, and the commands this server sent it.
#[derive(Debug, Clone)]
pub struct NodeMetrics {
    /// 1 while the node answered its last PING in time.
    pub up: Family<RedisNode, Gauge>,
    /// Seconds a PING took to be answered.
    pub latency: Family<RedisNode, Histogram, fn() -> Histogram>,
    /// Commands sent, counted to the node serving their key's slot.
    pub commands: Family<RedisNode, Counter>,
    /// Commands sent and not answered yet.
    pub in_flight: Family<RedisNode, Gauge>,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics {
            up: Family::default(),
            latency: Family::new_with_constructor(round_trips),
            commands: Family::default(),
            in_flight: Family::default(),
        }
    }
}

/// A histogram of round trips (a PING, a hook's call): 50 µs to 5 s, each
/// bucket about 3.16 times the last.
fn round_trips() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 10f64.sqrt(), 11))
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            registry: Registry::with_prefix("ws"),
            connections: Gauge::default(),
            accepted: Counter::default(),
            accepted_h2: Counter::default(),
            refused: Family::default(),
            messages_received: Counter::default(),
            messages_sent: Counter::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            slow_consumers: Family::default(),
            lagged: Counter::default(),
            rooms: Gauge::default(),
            tasks: Gauge::default(),
            // 1 µs to about 4 s.
            fanout_latency: Histogram::new(exponential_buckets(1e-6, 4.0, 12)),
            cluster: ClusterMetrics::default(),
            hooks: HookMetrics::default(),
        };
        metrics.registered()
    }
}

impl Metrics {
    fn registered(mut self) -> Self {
        let r = &mut self.registry;
        r.register("connections", "Hub connections open now", self.connections.clone());
        r.register("connections_accepted", "Hub connections accepted", self.accepted.clone());
        let h2 = self.accepted_h2.clone();
        r.register("connections_accepted_h2", "Hub connections accepted as streams of an HTTP/2 connection", h2);
        r.register("connections_refused", "Hub handshakes refused, by reason", self.refused.clone());
        r.register("messages_received", "Envelopes received from clients", self.messages_received.clone());
        r.register("messages_sent", "Envelopes and room messages queued for clients", self.messages_sent.clone());
        r.register_with_unit("received", "Payload received from clients", Unit::Bytes, self.bytes_received.clone());
        r.register_with_unit("sent", "Frames queued for clients", Unit::Bytes, self.bytes_sent.clone());
        r.register("slow_consumers", "Slow consumers, by action", self.slow_consumers.clone());
        r.register(
            "lagged_messages",
            "Messages that left a room's buffer before a member's task took them: sent from the history if it held them",
            self.lagged.clone(),
        );
        r.register("rooms", "Rooms held now", self.rooms.clone());
        r.register("tasks", "Tasks alive in the server's runtime", self.tasks.clone());
        let latency = self.fanout_latency.clone();
        r.register_with_unit(
            "fanout_latency",
            "From publication to queueing, the oldest of a batch",
            Unit::Seconds,
            latency,
        );
        let cluster = &self.cluster;
        r.register("redis_up", "1 while the link to Redis (--redis) is up", cluster.up.clone());
        r.register("redis_outages", "Times the link to Redis was lost or could not be made", cluster.outages.clone());
        r.register(
            "redis_lost_messages",
            "Messages Redis no longer held to deliver: told as gaps",
            cluster.lost.clone(),
        );
        let nodes = &cluster.nodes;
        r.register("redis_node_up", "1 while the Redis node answered its last PING in time", nodes.up.clone());
        r.register_with_unit(
            "redis_node_latency",
            "PING round trips to the Redis node",
            Unit::Seconds,
            nodes.latency.clone(),
        );
        r.register("redis_commands", "Commands sent, to the node serving their key's slot", nodes.commands.clone());
        r.register("redis_commands_in_flight", "Commands sent and not answered yet", nodes.in_flight.clone());
        let hooks = &self.hooks;
        r.register("hook_calls", "Calls to the application's backend, by hook", hooks.calls.clone());
        r.register("hook_errors", "Calls to the backend that failed, by hook", hooks.errors.clone());
        r.register_with_unit("hook_latency", "Calls to the backend, by hook", Unit::Seconds, hooks.latency.clone());
        r.register("hook_events_waiting", "Events waiting for the backend to take them", hooks.events_waiting.clone());
        r.register("hook_events_dropped", "Events dropped unsent, the queue full", hooks.events_dropped.clone());
        self
    }

    /// Counts a refused handshake.
    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&Reason { reason }).inc();
    }

    /// Counts `count` messages of `bytes` in all queued for clients.
    pub fn sent(&self, count: u64, bytes: usize) {
        self.messages_sent.inc_by(count);
        self.bytes_sent.inc_by(bytes as u64);
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
