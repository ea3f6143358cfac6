//! What every route and session of one server shares: the settings, the
//! hub, the link to the cluster, the limits, the pulse and the metrics.
//!
//! It is also where the two modes meet: a session or the API asks the
//! server to join, publish, replay or tell who is present, and gets an
//! [`Answer`], ready at once from the hub in memory, or later, a future
//! to poll, from the cluster through Redis. The callers do not branch on
//! the mode.

use crate::admin::{Command, Local, Report};
use crate::cluster::{Cluster, Durable};
use crate::config::ServerConfig;
use crate::config::namespaces::Namespaces;
use crate::envelope::{Body, EnvelopeError};
use crate::hooks::Hooks;
use crate::hooks::events::Kind;
use crate::hub::{Hub, Replay, Subscription};
use crate::metrics::Metrics;
use crate::policy::auth::Authenticator;
use crate::policy::limits::ConnectionLimits;
use crate::pulse::Pulse;
use std::pin::Pin;
use std::sync::Arc;
use tokio_util::task::TaskTracker;
use tracing::warn;

/// What every connection task of one server shares.
#[derive(Debug)]
pub struct Server {
    /// The settings.
    pub config: Arc<ServerConfig>,
    /// The rooms' namespaces and their options.
    pub namespaces: Namespaces,
    /// The token checker, when a key is configured.
    pub auth: Option<Authenticator>,
    /// The rooms.
    pub hub: Arc<Hub>,
    /// The link to the other servers through Redis, with `--redis`.
    pub cluster: Option<Arc<Cluster>>,
    /// The calls to the application's backend, when a hook is configured.
    pub hooks: Option<Arc<Hooks>>,
    /// The connection counts.
    pub limits: Arc<ConnectionLimits>,
    /// The handshakes in progress, per peer address.
    pub handshakes: Arc<ConnectionLimits>,
    /// Every connection's task, to wait for at shutdown.
    pub tasks: TaskTracker,
    /// The hub sessions' heartbeat, the word to shut down to every
    /// connection, and the server API's orders to a user's.
    pub pulse: Arc<Pulse>,
    /// What `/metrics` reports.
    pub metrics: Metrics,
    /// When the server started: the clock of the sessions' rate limits.
    pub started: std::time::Instant,
    /// How many answers of the cluster a session awaits at once: how many
    /// of a connection's messages go on to Redis before the first is answered.
    pub pipeline: usize,
}

/// How many of a connection's messages may be in flight to Redis at once:
/// from 16 to 64, and a sixth of what a room keeps for a member behind it
/// (its buffer, then its history). A session publishing flat out takes its
/// rooms' messages between its answers, and may be several times this
/// behind a room when it asks the history for what the room's buffer lost
/// (twice at rest, more on a loaded machine; docs/benchmarks.md).
fn pipeline(room_buffer: usize, namespaces: &Namespaces) -> usize {
    (room_buffer.saturating_add(namespaces.least_history()) / 6).clamp(16, 64)
}

/// What the server answers a request about its rooms: ready now (in
/// memory), or later, when the future is done (through the cluster).
pub enum Answer<T> {
    /// The answer.
    Now(T),
    /// The answer to come.
    Later(Pin<Box<dyn Future<Output = T> + Send>>),
}

impl<T> Answer<T> {
    /// The answer `future` comes to.
    pub fn later(future: impl Future<Output = T> + Send + 'static) -> Self {
        Answer::Later(Box::pin(future))
    }

    /// Waits for the answer.
    pub async fn wait(self) -> T {
        match self {
            Answer::Now(value) => value,
            Answer::Later(future) => future.await,
        }
    }
}

impl<T> std::fmt::Debug for Answer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Answer::Now(_) => "Answer::Now",
            Answer::Later(_) => "Answer::Later",
        })
    }
}

/// Who is in a room: how many, and names.
pub type Presence = (usize, Vec<Arc<str>>);

impl Server {
    /// The shared state of a server with `config`: its hub, and with
    /// `--redis` its link to the others, which starts on the current runtime.
    pub fn new(config: Arc<ServerConfig>) -> std::io::Result<Server> {
        let auth = config.authenticator()?;
        if auth.is_none() {
            warn!("no JWT key configured (--jwt-secret or --jwt-public-key): the hub is open to anyone");
        }
        let metrics = Metrics::default();
        let hub = Hub::new(config.hub_settings());
        let hooks = Hooks::start(&config, hub.instance(), metrics.hooks.clone());
        let hub = Arc::new(hub.telling(hooks.as_ref().and_then(|hooks| hooks.events().cloned())));
        let limits = Arc::new(ConnectionLimits::new(config.max_connections, config.max_connections_per_ip));
        let pulse = Arc::new(Pulse::default());
        let local = Local { hub: hub.clone(), pulse: pulse.clone(), limits: limits.clone() };
        let cluster = match &config.redis {
            Some(url) => {
                let durable = Durable { replicas: config.redis_ack_replicas, timeout: config.redis_ack_timeout };
                let started = Cluster::start(url, durable, local, metrics.cluster.clone());
                Some(started.map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--redis {url}: {e}"))
                })?)
            }
            None => None,
        };
        if let Some((hooks, events)) = hooks.as_ref().and_then(|hooks| Some((hooks.clone(), hooks.events()?.clone()))) {
            match &cluster {
                Some(cluster) => cluster.tell(events, hooks),
                None => drop(tokio::spawn(events.deliver(hooks))),
            }
        }
        let namespaces = config.namespaces();
        Ok(Server {
            hooks,
            pipeline: pipeline(config.room_buffer, &namespaces),
            namespaces,
            auth,
            hub,
            cluster,
            limits,
            handshakes: Arc::new(ConnectionLimits::new(0, config.max_connections_per_ip)),
            tasks: TaskTracker::new(),
            pulse,
            metrics,
            config,
            started: std::time::Instant::now(),
        })
    }

    /// Makes `member` a member of `room`; with `since`, also the held
    /// messages after it, up to the subscription's start. Where the room's
    /// namespace asks, its members are told of the member's first
    /// connection there, and of its last one's leaving.
    pub fn join(
        &self,
        room: &str,
        member: &Arc<str>,
        since: Option<u64>,
    ) -> Answer<Result<(Subscription, Option<Replay>), EnvelopeError>> {
        let namespace = self.namespaces.rules(room);
        let (history, announce) = (namespace.history, namespace.join_leave_events);
        let Some(cluster) = self.cluster.clone() else {
            let joined = self.hub.join(room, member, since.map(|s| (s, history)), announce);
            return Answer::Now(joined.map_err(EnvelopeError::from));
        };
        let (room, member) = (room.to_owned(), member.clone());
        Answer::later(async move { cluster.join(room, member, since, history, announce).await })
    }

    /// The held messages of `room` after `since`, up to `upto`.
    pub fn replay(&self, room: &str, since: u64, upto: u64) -> Answer<Result<Replay, EnvelopeError>> {
        let history = self.namespaces.rules(room).history;
        let Some(cluster) = self.cluster.clone() else {
            let mut replay = self.hub.replay(room, since, history);
            replay.deliveries.retain(|d| d.seq <= upto);
            return Answer::Now(Ok(replay));
        };
        let room = room.to_owned();
        Answer::later(async move { cluster.replay(&room, since, upto, history).await })
    }

    /// The held messages of `room` after `since`, for the server API.
    pub fn history(&self, room: &str, since: u64) -> Answer<Result<Replay, EnvelopeError>> {
        let history = self.namespaces.rules(room).history;
        let Some(cluster) = self.cluster.clone() else {
            return Answer::Now(Ok(self.hub.replay(room, since, history)));
        };
        let room = room.to_owned();
        Answer::later(async move { cluster.history(&room, since, history).await })
    }

    /// Publishes `body` from `sender` to `room`; its seq. `client_id`
    /// (who gave it, the id) makes a retry harmless (docs/protocol.md).
    pub fn publish(
        &self,
        room: &str,
        sender: &str,
        body: Body,
        client_id: Option<(&str, &str)>,
    ) -> Answer<Result<u64, EnvelopeError>> {
        let history = self.namespaces.rules(room).history;
        let Some(cluster) = self.cluster.clone() else {
            let seq = self.hub.publish(room, sender, &body, client_id, history);
            return Answer::Now(seq.map_err(EnvelopeError::from));
        };
        let (room, sender) = (room.to_owned(), sender.to_owned());
        let client_id = client_id.map(|(origin, id)| (origin.to_owned(), id.to_owned()));
        Answer::later(async move {
            let client_id = client_id.as_ref().map(|(origin, id)| (origin.as_str(), id.as_str()));
            cluster.publish(&room, &sender, &body, client_id, history).await
        })
    }

    /// Who is in `room` on every server: how many, and up to `max` names, in order.
    pub fn presence(&self, room: &str, max: usize) -> Answer<Result<Presence, EnvelopeError>> {
        let Some(cluster) = self.cluster.clone() else {
            return Answer::Now(Ok(self.hub.presence(room, max)));
        };
        let room = room.to_owned();
        Answer::later(async move { cluster.presence(&room, max).await })
    }

    /// Carries `command` out on every server: each one's report.
    pub fn command(&self, command: Command) -> Answer<Result<Vec<Report>, EnvelopeError>> {
        let Some(cluster) = self.cluster.clone() else {
            let local = Local { hub: self.hub.clone(), pulse: self.pulse.clone(), limits: self.limits.clone() };
            return Answer::Now(Ok(vec![local.carry_out(&command)]));
        };
        Answer::later(async move { cluster.broadcast(&command).await })
    }

    /// Tells the events hook, if there is one, that a connection of `user`
    /// opened or closed (after the leaves of its rooms, which a cluster
    /// carries out in order).
    pub fn tell(&self, kind: Kind, user: &Arc<str>) {
        match &self.cluster {
            Some(cluster) if kind == Kind::Disconnect => cluster.closed(user.clone()),
            _ => self.hub.tell(kind, user, None),
        }
    }

    /// Completes once the events hook, if there is one, has every event
    /// told so far: posted, or with `--redis` written to Redis, for another
    /// server to post if this one stops first.
    pub async fn events_flushed(&self) {
        let Some(events) = self.hooks.as_ref().and_then(|hooks| hooks.events()) else { return };
        if let Some(cluster) = &self.cluster {
            cluster.settled().await;
        }
        events.flushed().await;
    }

    /// A connection of `member` left `room` (its subscription dropped first,
    /// so that a cluster can let the room go if it was the last here).
    pub fn leave(&self, room: Arc<str>, member: Arc<str>) {
        let announce = self.namespaces.rules(&room).join_leave_events;
        match &self.cluster {
            Some(cluster) => cluster.left(room, member, announce),
            None => {
                self.hub.leave(&room, &member, announce);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn pipeline_of(flags: &[&str]) -> usize {
        let config = ServerConfig::parse_from(["ws-server"].iter().chain(flags));
        pipeline(config.room_buffer, &config.namespaces())
    }

    #[test]
    fn a_connections_pipeline_is_a_sixth_of_what_a_room_keeps_from_16_to_64() {
        assert_eq!(pipeline_of(&[]), 59, "a buffer of 256 and a history of 100");
        assert_eq!(pipeline_of(&["--room-buffer", "1"]), 16);
        assert_eq!(pipeline_of(&["--room-buffer", "1000"]), 64);
    }
}
