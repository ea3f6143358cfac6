//! Several servers as one hub, through Redis (`--redis`).
//!
//! Each room has in Redis a seq counter, a stream of its last messages (the
//! history; entry ids `<seq>-0`) and a pub/sub channel. One Lua script numbers
//! a message, appends it and publishes it, atomically. Every server, the
//! sender's included, delivers it from the channel to its own members; a
//! server subscribes to a room's channel while it has members there.
//!
//! Each server delivers a room's seqs once and in order: a seq that jumps
//! ahead (messages published while the link was down) is preceded by the
//! missing ones, fetched from the stream, or by a `gap` notice for those the
//! stream no longer holds. Across an outage the server keeps its
//! connections, reconnects with backoff, subscribes again and catches up
//! the same way. A publish or a join that Redis cannot serve is answered
//! with an `unavailable` error, never dropped in silence.
//!
//! The server API's commands (admin.rs) go to every server on one channel;
//! each server carries them out and publishes its report on the channel of
//! the server that asked, which waits for as many as heard the command.
//!
//! A watch (watch.rs) looks at the Redis nodes every second: their metrics
//! (up, PING round trips, the commands sent to each) and, in the log, the
//! topology and its changes.

mod commit;
mod events;
mod link;
mod store;
mod subscriber;
mod watch;

use crate::admin::{Command, Local, Report};
use crate::envelope::{self, Body, EnvelopeError};
use crate::hooks::Hooks;
use crate::hooks::events::Events;
use crate::hub::{History, Hub, Replay, Subscription};
use crate::metrics::ClusterMetrics;
use commit::{Commits, Message};
use link::{Commands, Target};
use redis::{Cmd, FromRedisValue, RedisResult};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::*;
pub use store::{PRESENCE_TTL, RETRY_WINDOW};
use subscriber::{Control, Subscriber};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use watch::{Nodes, Watch};

/// This server's link to the cluster.
#[derive(Debug)]
pub struct Cluster {
    hub: Arc<Hub>,
    redis: Commands,
    scripts: Scripts,
    durable: Durable,
    /// Whether a room's messages go to Redis in groups, `commits`: with
    /// durable acks, and on a cluster, whose client sends commands given at
    /// once in no set order (one Redis has `Link`, which keeps it).
    grouped: bool,
    /// A room's messages, numbered in groups.
    commits: Arc<Commits>,
    control: mpsc::UnboundedSender<Control>,
    /// The commands of this server waiting for reports.
    waiting: Arc<Waiting>,
    next_command: AtomicU64,
    /// The nodes as the watch last saw them, to count the commands sent to each.
    nodes: Nodes,
}

/// When a message is acked: once its primary has it (`replicas` 0), or
/// once that many of its replicas have it too, waited for up to `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct Durable {
    /// The replicas that must hold a message before its ack (`--redis-ack-replicas`).
    pub replicas: u32,
    /// How long they have (`--redis-ack-timeout`).
    pub timeout: Duration,
}

/// Commands waiting for reports, by number.
#[derive(Debug, Default)]
pub(crate) struct Waiting(Mutex<HashMap<u64, mpsc::UnboundedSender<Report>>>);

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, mpsc::UnboundedSender<Report>>> {
        // Every change to the map is one call: a panic cannot leave it half-made.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands a report to the command it answers, if it still waits.
    fn report(&self, number: u64, report: Report) {
        if let Some(reports) = self.lock().get(&number) {
            let _ = reports.send(report);
        }
    }
}

/// A command as it goes to every server: where its reports go, and its
/// number at the server that asked.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Asked<C> {
    to: String,
    number: u64,
    command: C,
}

/// One server's report to the command of that number.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Answered {
    number: u64,
    report: Report,
}

impl Durable {
    /// Whether a replica promoted since a room was last numbered skips
    /// seqs (`next_after!`): only without durable acks, since with them no
    /// member is given a message before a replica holds it.
    fn fence(&self) -> &'static str {
        if self.replicas == 0 { "1" } else { "0" }
    }

    /// Waits for the replicas to hold what this connection wrote so far.
    fn wait(&self) -> Cmd {
        redis::cmd("WAIT").arg(self.replicas).arg(self.timeout.as_millis() as u64).to_owned()
    }

    /// How many commands `held` sends for one.
    fn commands(&self) -> u32 {
        1 + u32::from(self.replicas > 0)
    }

    /// What `command` answers, with a `WAIT` after it on the same
    /// connection when acks are durable: `None` unless the replicas then
    /// hold all that it read or wrote.
    async fn held<T: FromRedisValue>(&self, command: Cmd, redis: &mut Commands) -> RedisResult<Option<T>> {
        if self.replicas == 0 {
            return command.query_async(redis).await.map(Some);
        }
        let both = redis::pipe().add_command(command).add_command(self.wait()).to_owned();
        let (answer, held): (T, u32) = both.query_async(redis).await?;
        Ok((held >= self.replicas).then_some(answer))
    }
}

impl Cluster {
    /// Links `hub` to the Redis (or Redis Cluster) at `url`. The link is
    /// made in the background, and made again whenever it is lost; until
    /// then joins and publishes are `unavailable`.
    pub fn start(url: &str, durable: Durable, local: Local, metrics: ClusterMetrics) -> RedisResult<Arc<Cluster>> {
        let target = Target::open(url)?;
        let grouped = durable.replicas > 0 || target.sharded();
        let (redis, scripts) = (target.commands()?, Scripts::new(target.sharded()));
        let (hub, waiting) = (local.hub.clone(), Arc::new(Waiting::default()));
        let nodes = Watch::start(target.clone(), metrics.nodes.clone());
        // A connection of its own: its reads do not queue behind the `WAIT`s of durable acks.
        let subscriber = target.commands()?;
        let control =
            Subscriber::start(local, waiting.clone(), (target, durable), (subscriber, nodes.clone()), metrics);
        let next_command = AtomicU64::new(1);
        let commits = Commits::new(redis.clone(), durable, scripts.publish_source.clone(), nodes.clone());
        Ok(Arc::new(Cluster { hub, redis, scripts, durable, grouped, commits, control, waiting, next_command, nodes }))
    }

    /// Tells `events` to the backend through `hooks` by way of Redis, with
    /// the other servers (events.rs), from tasks started on the current runtime.
    pub fn tell(&self, events: Arc<Events>, hooks: Arc<Hooks>) {
        events::start(self.redis.clone(), self.nodes.clone(), self.hub.instance(), events, hooks);
    }

    /// Publishes `body` from `sender` to `room` across the cluster, kept in
    /// the room's `history` in Redis; its seq. `client_id` (who gave it, the
    /// id) makes a retry within [`RETRY_WINDOW`] harmless. With durable
    /// acks, the message is published to the room's channel only once the
    /// replicas hold it, so that no member sees a message a failover may lose.
    pub async fn publish(
        &self,
        room: &str,
        sender: &str,
        body: &Body,
        client_id: Option<(&str, &str)>,
        history: History,
    ) -> Result<u64, EnvelopeError> {
        let id = self.hub.message_id();
        let (head, tail) = envelope::message_around_seq(&id, envelope::now_millis(), sender, body, room);
        let retry_key = client_id.map(|(origin, id)| format!("ws:{{{room}}}:retry:{origin}\n{id}"));
        let window = if retry_key.is_some() { RETRY_WINDOW.as_secs() } else { 0 };
        let durable = self.durable.replicas > 0;
        let mut call = redis::cmd("EVALSHA");
        call.arg(self.scripts.publish.get_hash()).arg(4);
        call.arg(seq_key(room)).arg(history_key(room)).arg(retry_key.unwrap_or_else(|| seq_key(room)));
        call.arg(node_key(room));
        call.arg(&head).arg(&tail).arg(history.len).arg(window);
        call.arg(if durable { String::new() } else { channel(room) });
        call.arg(self.hub.floor(room)).arg(history.max_age.map_or(0, |age| age.as_millis() as u64));
        call.arg(if durable { DELIVERY_GRACE.as_millis() as u64 } else { 0 }).arg(self.durable.fence());
        if self.grouped {
            return self.publish_grouped(room, call, (head, tail)).await;
        }
        let numbered = async {
            // EVALSHA alone, one round trip: a connection's messages, sent on
            // before the first is answered, are numbered in the order they were sent.
            let numbered = self.number(room, &call).await;
            // A Redis started anew has lost the script: the message is
            // refused, not sent again by EVAL, for a later message of its
            // connection may be numbered already, once the script is back.
            if numbered.as_ref().is_err_and(no_script) {
                let _ = self.scripts.publish.load_async(&mut self.redis.clone()).await;
            }
            numbered
        };
        let seq = timeout(REQUEST_TIMEOUT, numbered).await.map_err(unavailable)?.map_err(unavailable)?;
        // Known before it is delivered here: a Redis that lost its data numbers on from it.
        self.hub.numbered(room, seq);
        Ok(seq)
    }

    /// Runs the publishing script `call` for `room`: its seq.
    async fn number(&self, room: &str, call: &Cmd) -> RedisResult<u64> {
        let _sent = self.nodes.send(&seq_key(room), 1);
        call.query_async(&mut self.redis.clone()).await
    }

    /// Publishes a message numbered with the room's next group (commit.rs),
    /// whose replicas are waited for together with durable acks.
    async fn publish_grouped(&self, room: &str, call: Cmd, around_seq: (String, String)) -> Result<u64, EnvelopeError> {
        let (numbered, seq) = oneshot::channel();
        self.commits.publish(room, Message { call, around_seq, numbered });
        let seq = timeout(REQUEST_TIMEOUT, seq).await.map_err(unavailable)?.map_err(unavailable)?;
        let seq = seq.map_err(unavailable)?;
        self.hub.numbered(room, seq);
        Ok(seq)
    }

    /// Joins `room` as `member`; with `since`, also the messages after it
    /// that the room's `history` in Redis holds, up to the subscription's
    /// start. With `announce`, the room's members on every server are told
    /// if it is the member's first connection there.
    pub async fn join(
        &self,
        room: String,
        member: Arc<str>,
        since: Option<u64>,
        history: History,
        announce: bool,
    ) -> Result<(Subscription, Option<Replay>), EnvelopeError> {
        let (reply, joined) = oneshot::channel();
        let request = Control::Join { room, member, since, announce, reply };
        self.control.send(request).map_err(|_| unavailable("the server is stopping"))?;
        // Held while there is no link, for as long as a request may take.
        let joined = timeout(REQUEST_TIMEOUT, joined).await.map_err(|_| unavailable("no link to redis"))?;
        let subscription = joined.map_err(|_| unavailable("the server is stopping"))??;
        let replay = match since {
            Some(since) => Some(self.replay(subscription.member.room(), since, subscription.latest, history).await?),
            None => None,
        };
        Ok((subscription, replay))
    }

    /// The messages of `room` after `since` up to `latest` that Redis holds,
    /// none older than the `history` allows. A `since` past `latest` comes
    /// from another numbering: all is replayed, and the replay is not complete.
    pub async fn replay(&self, room: &str, since: u64, latest: u64, history: History) -> Result<Replay, EnvelopeError> {
        let renumbered = since > latest;
        let after = if renumbered { 0 } else { since };
        let _sent = (latest > after).then(|| self.nodes.send(&history_key(room), 1));
        let entries = timeout(REQUEST_TIMEOUT, store::history(&mut self.redis.clone(), room, after, latest)).await;
        let mut entries = entries.map_err(unavailable)?.map_err(unavailable)?;
        if let Some(age) = history.max_age {
            // Aged while no message came to trim them.
            let oldest = envelope::now_millis().saturating_sub(age.as_millis() as u64);
            entries.retain(|entry| entry.time >= oldest);
        }
        // With durable acks, the stream keeps more for a while (`DELIVERY_GRACE`).
        entries.drain(..entries.len().saturating_sub(history.len));
        let complete = !renumbered && entries.first().map_or(after == latest, |entry| entry.seq == after + 1);
        let deliveries =
            entries.into_iter().map(|entry| Arc::new(self.hub.delivery(entry.seq, entry.json, 1))).collect();
        Ok(Replay { deliveries, complete })
    }

    /// The messages of `room` after `since` that Redis holds, up to its
    /// latest; with durable acks, `unavailable` while the replicas do not
    /// hold that far (a message refused for want of them is given to no one).
    pub async fn history(&self, room: &str, since: u64, history: History) -> Result<Replay, EnvelopeError> {
        let in_flight = self.nodes.send(&seq_key(room), self.durable.commands());
        let latest = timeout(REQUEST_TIMEOUT, self.latest(room)).await;
        drop(in_flight);
        let latest = latest.map_err(unavailable)?.map_err(unavailable)?;
        let latest = latest.ok_or_else(|| unavailable("too few replicas hold the room's latest messages"))?;
        self.replay(room, since, latest, history).await
    }

    /// The latest seq of `room` in Redis (0: none); with durable acks,
    /// `None` unless the replicas hold every message up to it.
    async fn latest(&self, room: &str) -> RedisResult<Option<u64>> {
        let get = redis::cmd("GET").arg(seq_key(room)).to_owned();
        let latest: Option<Option<u64>> = self.durable.held(get, &mut self.redis.clone()).await?;
        Ok(latest.map(|latest| latest.unwrap_or(0)))
    }

    /// A connection of `member` left `room` on this server (its
    /// subscription dropped first); with `announce`, the room's members on
    /// every server are told if it was the member's last there.
    pub fn left(&self, room: Arc<str>, member: Arc<str>, announce: bool) {
        // Fails only when the server stops, and its subscriptions with it.
        let _ = self.control.send(Control::Left { room, member, announce });
    }

    /// A connection of `user` closed: its `disconnect` is told after the
    /// leaves of its rooms, which the subscriber sees first.
    pub fn closed(&self, user: Arc<str>) {
        // Fails only when the server stops.
        let _ = self.control.send(Control::Closed { user });
    }

    /// Completes once the joins, leaves and closes asked before are carried
    /// out (or the server stops).
    pub async fn settled(&self) {
        let (reply, settled) = oneshot::channel();
        if self.control.send(Control::Settle { reply }).is_ok() {
            let _ = settled.await;
        }
    }

    /// Who is in `room` on every server: how many, and up to `max` names, in order.
    pub async fn presence(&self, room: &str, max: usize) -> Result<(usize, Vec<Arc<str>>), EnvelopeError> {
        let (mut redis, _sent) = (self.redis.clone(), self.nodes.send(&presence_key(room), 1));
        let mut invocation = self.scripts.present.prepare_invoke();
        let present = invocation.key(presence_key(room)).invoke_async(&mut redis);
        let entries: Vec<String> =
            timeout(REQUEST_TIMEOUT, present).await.map_err(unavailable)?.map_err(unavailable)?;
        let mut names: Vec<&str> = entries.iter().filter_map(|e| Some(e.rsplit_once('\n')?.0)).collect();
        names.sort_unstable();
        names.dedup();
        let count = names.len();
        Ok((count, names.into_iter().take(max).map(Arc::from).collect()))
    }

    /// Carries `command` out on every server: the report of each one that
    /// heard it, or `unavailable` if Redis could not take it or a server
    /// did not answer in time (the command may have been carried out there).
    pub async fn broadcast(&self, command: &Command) -> Result<Vec<Report>, EnvelopeError> {
        let number = self.next_command.fetch_add(1, Ordering::Relaxed);
        let (sender, mut reports) = mpsc::unbounded_channel();
        self.waiting.lock().insert(number, sender);
        let asked = Asked { to: reports_channel(self.hub.instance()), number, command };
        let sent = async {
            let payload = serde_json::to_string(&asked).map_err(unavailable)?;
            let in_flight = self.nodes.send(ADMIN_CHANNEL, 1);
            let heard: usize = self
                .redis
                .publish_command(ADMIN_CHANNEL, payload)
                .query_async(&mut self.redis.clone())
                .await
                .map_err(unavailable)?;
            drop(in_flight);
            let mut all = Vec::with_capacity(heard);
            while all.len() < heard {
                all.extend(reports.recv().await);
            }
            Ok::<_, EnvelopeError>(all)
        };
        let answered = timeout(REQUEST_TIMEOUT, sent).await;
        self.waiting.lock().remove(&number);
        answered.map_err(|_| unavailable("a server did not answer the command in time"))?
    }
}
