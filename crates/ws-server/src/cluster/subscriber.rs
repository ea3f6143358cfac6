//! The task that holds this server's subscriptions to the rooms' channels
//! and delivers what they bring to the hub, in order and without a gap it
//! does not tell; it also keeps the presence of this server's members.

use super::link::{Commands, Feed, Heard, Target};
use super::store::*;
use super::watch::Nodes;
use super::{Answered, Asked, Durable, Waiting};
use crate::admin::{Command, Local};
use crate::envelope::{EnvelopeError, Outgoing};
use crate::hooks::events::Kind;
use crate::hub::{Hub, Subscription};
use crate::metrics::ClusterMetrics;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::{StreamExt, TryStreamExt};
use redis::{AsyncCommands, Msg, RedisResult};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tracing::{info, warn};

/// What sessions ask of the subscriber task.
#[derive(Debug)]
pub(super) enum Control {
    /// Join `room` as `member`, subscribing to its channel first if needed;
    /// with `announce`, its members are told if it is the member's first
    /// connection in the room on any server. `since`, the last seq the
    /// member saw (on any server): the room is caught up to it at least.
    Join {
        room: String,
        member: Arc<str>,
        since: Option<u64>,
        announce: bool,
        reply: oneshot::Sender<Result<Subscription, EnvelopeError>>,
    },
    /// A connection of `member` left `room`: it leaves the presence if it was
    /// its last here, and the server unsubscribes if it was the room's last;
    /// with `announce`, the members are told if it was its last anywhere.
    Left { room: Arc<str>, member: Arc<str>, announce: bool },
    /// A connection of `user` closed: told to the events hook after its leaves.
    Closed { user: Arc<str> },
    /// Answered once every request before it is carried out.
    Settle { reply: oneshot::Sender<()> },
}

/// The task that holds the subscriptions and delivers what they bring.
pub(super) struct Subscriber {
    hub: Arc<Hub>,
    /// What carries out the server API's commands here.
    local: Local,
    /// This server's commands waiting for reports.
    waiting: Arc<Waiting>,
    target: Target,
    /// When messages are acked: with replicas, a room catches up only to
    /// what they hold.
    durable: Durable,
    redis: Commands,
    /// Counts the commands sent to each node.
    nodes: Nodes,
    scripts: Scripts,
    /// The rooms subscribed to: those with members here.
    rooms: HashSet<Arc<str>>,
    /// Those of them whose members are told of joins and leaves.
    announcing: HashSet<Arc<str>>,
    metrics: ClusterMetrics,
    /// Whether the outage going on is counted.
    down: bool,
    /// Requests that came while there was no link, or behind one that lost it.
    held: Vec<Control>,
}

impl Subscriber {
    /// Starts the task for the hub of `local`, linked to `target` through a
    /// feed of its own (subscriptions) and `redis` (commands, counted by
    /// `nodes`); what sessions
    /// ask of it goes to the sender.
    pub(super) fn start(
        local: Local,
        waiting: Arc<Waiting>,
        (target, durable): (Target, Durable),
        (redis, nodes): (Commands, Nodes),
        metrics: ClusterMetrics,
    ) -> mpsc::UnboundedSender<Control> {
        let (control, requests) = mpsc::unbounded_channel();
        let subscriber = Subscriber {
            hub: local.hub.clone(),
            local,
            waiting,
            scripts: Scripts::new(target.sharded()),
            target,
            durable,
            redis,
            nodes,
            rooms: HashSet::new(),
            announcing: HashSet::new(),
            metrics,
            down: false,
            held: Vec::new(),
        };
        tokio::spawn(subscriber.run(requests));
        control
    }

    /// Links to Redis, again and again, until the server stops.
    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        let mut backoff = BACKOFF.0;
        loop {
            match self.serve(&mut control).await {
                Served::Stopped => return,
                Served::Lost(e) => {
                    warn!("redis: link lost ({e}); members keep their connections, reconnecting");
                    self.went_down();
                }
                Served::Unreachable(e) => {
                    warn!("redis: unreachable ({e}); retrying in {backoff:?}");
                    self.went_down();
                    if self.hold_for(&mut control, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                    continue;
                }
            }
            backoff = BACKOFF.0;
        }
    }

    /// Counts an outage once, however many attempts it takes to end.
    fn went_down(&mut self) {
        self.metrics.up.set(0);
        if !self.down {
            self.down = true;
            self.metrics.outages.inc();
        }
    }

    /// Waits `delay` with no link, holding the joins for the next link
    /// (their sessions give up after [`REQUEST_TIMEOUT`]); true if the server stops.
    async fn hold_for(&mut self, control: &mut mpsc::UnboundedReceiver<Control>, delay: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + delay;
        loop {
            match tokio::time::timeout_at(deadline, control.recv()).await {
                Err(_) => return false,
                Ok(None) => return true,
                Ok(Some(Control::Join { reply, .. })) if reply.is_closed() => {}
                Ok(Some(join @ Control::Join { .. })) => self.held.push(join),
                // Its presence entry expires on its own.
                Ok(Some(Control::Left { room, member, .. })) => {
                    self.hub.leave(&room, &member, false);
                }
                Ok(Some(Control::Closed { user })) => self.hub.tell(Kind::Disconnect, &user, None),
                Ok(Some(Control::Settle { reply })) => drop(reply.send(())),
            }
        }
    }

    /// One link: subscribes again, catches up, then delivers until the link is lost.
    async fn serve(&mut self, control: &mut mpsc::UnboundedReceiver<Control>) -> Served {
        let linked = timeout(REQUEST_TIMEOUT, self.link()).await;
        let mut feed = match linked.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string())) {
            Ok(feed) => feed,
            Err(e) => return Served::Unreachable(e),
        };
        if let Err(e) = self.resume(&mut feed).await {
            return Served::Unreachable(e.to_string());
        }
        let held = std::mem::take(&mut self.held);
        if let Err(e) = self.handle_all(held, &mut feed).await {
            return Served::Lost(e.to_string());
        }
        let mut renewals = tokio::time::interval(PRESENCE_TTL / 3);
        loop {
            let next = tokio::select! {
                _ = renewals.tick() => Next::Renew,
                heard = feed.next() => Next::Heard(heard),
                request = control.recv() => Next::Asked(request),
            };
            let outcome = match next {
                Next::Renew => self.renew().await,
                Next::Heard(Heard::Message(message)) => self.receive(message).await,
                Next::Heard(Heard::Dropped(channel)) => self.moved(&channel, &mut feed).await,
                Next::Heard(Heard::Lost) => return Served::Lost("a subscription link ended".into()),
                Next::Asked(Some(request)) => self.handle_waiting(request, control, &mut feed).await,
                Next::Asked(None) => return Served::Stopped,
            };
            if let Err(e) = outcome {
                return Served::Lost(e.to_string());
            }
        }
    }

    /// A subscription connection, and the cluster's epoch taken (or given, by the first server).
    async fn link(&mut self) -> RedisResult<Feed> {
        let mut feed = self.target.feed().await?;
        feed.subscribe(ADMIN_CHANNEL).await?;
        feed.subscribe(&reports_channel(self.hub.instance())).await?;
        let mine = self.hub.epoch();
        let _: bool = self.redis.set_nx(EPOCH_KEY, &*mine).await?;
        let epoch: String = self.redis.get(EPOCH_KEY).await?;
        // Each message is one EVALSHA: the script is there before the first.
        self.scripts.publish.load_async(&mut self.redis).await?;
        if *epoch != *mine {
            info!(epoch, "redis: joined the cluster's numbering");
            self.hub.set_epoch(&epoch);
        }
        Ok(feed)
    }

    /// After a new link: subscribes again to every room with members here
    /// and delivers what they missed.
    async fn resume(&mut self, feed: &mut Feed) -> RedisResult<()> {
        self.rooms.retain(|room| self.hub.has_members(room));
        for room in self.rooms.clone() {
            self.subscribe_again(&room, feed).await?;
        }
        info!(rooms = self.rooms.len(), "redis: linked");
        self.down = false;
        self.metrics.up.set(1);
        Ok(())
    }

    /// Subscribes to a room with members here, and delivers what it missed
    /// while it was not.
    async fn subscribe_again(&mut self, room: &str, feed: &mut Feed) -> RedisResult<()> {
        self.subscribe(room, feed).await?;
        self.catch_up(room).await
    }

    /// Delivers what Redis holds of `room` past what was delivered here.
    async fn catch_up(&mut self, room: &str) -> RedisResult<()> {
        match self.floor(room, self.hub.floor(room)).await? {
            Some(latest) => self.fill(room, self.hub.latest(room).unwrap_or(0), latest).await,
            None => {
                // What they hold comes with the room's next message.
                warn!(room, "redis: the room's replicas do not hold its latest messages; not caught up");
                Ok(())
            }
        }
    }

    /// Redis ended the subscription to `channel` (its slot moved to another
    /// node): subscribed again where it lives now, if its room has members here.
    async fn moved(&mut self, channel: &str, feed: &mut Feed) -> RedisResult<()> {
        let Some(room) = room_of(channel).filter(|room| self.rooms.contains(*room)) else {
            return Ok(());
        };
        info!(room, "redis: the room's slot moved; subscribing where it lives now");
        self.subscribe_again(room, feed).await
    }

    /// Handles `first` and the requests waiting behind it, up to
    /// [`BATCH`]: their joins' presence written to Redis together.
    async fn handle_waiting(
        &mut self,
        first: Control,
        control: &mut mpsc::UnboundedReceiver<Control>,
        feed: &mut Feed,
    ) -> RedisResult<()> {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match control.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        self.handle_all(batch, feed).await
    }

    /// Handles `requests` in order; the presence of consecutive joins is
    /// written at once, before they are answered.
    async fn handle_all(&mut self, requests: Vec<Control>, feed: &mut Feed) -> RedisResult<()> {
        let mut joins = Joins::default();
        let mut requests = requests.into_iter();
        while let Some(request) = requests.next() {
            match request {
                Control::Join { room, member, since, announce, reply } => {
                    if reply.is_closed() {
                        continue;
                    }
                    match self.join(&room, &member, since, announce, feed, &mut joins.writes).await {
                        Ok(joined) => joins.answers.push(Joined { room, member, announce, reply, joined }),
                        Err(e) => {
                            let _ = reply.send(Err(unavailable(&e)));
                            // The rest wait for the next link.
                            self.held.extend(requests);
                            self.answer(joins, Some(&e), feed).await?;
                            return Err(e);
                        }
                    }
                }
                Control::Left { room, member, announce } => {
                    // After the joins before it, whose entries it may take away.
                    self.answer(std::mem::take(&mut joins), None, feed).await?;
                    self.leave(&room, &member, announce, feed).await?;
                }
                Control::Closed { user } => {
                    // After the joins before it, which its session may have left unanswered.
                    self.answer(std::mem::take(&mut joins), None, feed).await?;
                    self.hub.tell(Kind::Disconnect, &user, None);
                }
                Control::Settle { reply } => {
                    self.answer(std::mem::take(&mut joins), None, feed).await?;
                    let _ = reply.send(());
                }
            }
        }
        self.answer(joins, None, feed).await
    }

    /// Writes the presence of `joins` and answers them; all `unavailable`
    /// if the writes fail, or if `failed`, an error before them.
    async fn answer(&mut self, joins: Joins, failed: Option<&redis::RedisError>, feed: &mut Feed) -> RedisResult<()> {
        let written = match failed {
            Some(e) => Err(redis::RedisError::from((e.kind(), "a join before failed"))),
            None => self.write(joins.writes).await,
        };
        for Joined { room, member, announce, reply, joined } in joins.answers {
            let answer = match (&written, joined) {
                (Ok(()), Ok(subscription)) => Ok(subscription),
                (_, Err(refused)) => Err(refused),
                (Err(e), Ok(subscription)) => {
                    drop(subscription);
                    self.hub.leave(&room, &member, false);
                    Err(unavailable(e))
                }
            };
            if let Err(Ok(subscription)) = reply.send(answer) {
                // The session is gone: so is its place in the room.
                drop(subscription);
                if written.is_ok() {
                    self.leave(&room, &member, announce, feed).await?;
                }
            }
        }
        written
    }

    /// Subscribes to the channel of `room`, on the node of its slot.
    async fn subscribe(&self, room: &str, feed: &mut Feed) -> RedisResult<()> {
        let channel = channel(room);
        let _sent = self.nodes.send(&channel, 1);
        feed.subscribe(&channel).await
    }

    /// Unsubscribes from the channel of `room`.
    async fn unsubscribe(&self, room: &str, feed: &mut Feed) -> RedisResult<()> {
        let channel = channel(room);
        let _sent = self.nodes.send(&channel, 1);
        feed.unsubscribe(&channel).await
    }

    /// A connection of `member` left `room` (its subscription dropped).
    async fn leave(&mut self, room: &str, member: &Arc<str>, announce: bool, feed: &mut Feed) -> RedisResult<()> {
        if self.hub.leave(room, member, false) {
            let entry = presence_entry(member, self.hub.instance());
            let _sent = self.nodes.send(&presence_key(room), 1);
            let _: usize = self.redis.zrem(presence_key(room), entry).await?;
            if announce {
                let notice = Outgoing::MemberLeft { room, member }.to_json();
                self.member(room, member, 0, &notice).await?;
            }
        }
        if !self.hub.has_members(room) && self.rooms.remove(room) {
            self.announcing.remove(room);
            self.unsubscribe(room, feed).await?;
        }
        Ok(())
    }

    /// Subscribes to `room` if needed, then joins it in the hub; with
    /// `announce`, tells the room if the member came into it. A member
    /// that saw more of the room (`since`, on another server) than was
    /// delivered here first has the room caught up: the channel may lag
    /// behind what Redis numbered, and the member's `joined` must not give
    /// a latest seq below what it saw.
    async fn join(
        &mut self,
        room: &str,
        member: &Arc<str>,
        since: Option<u64>,
        announce: bool,
        feed: &mut Feed,
        writes: &mut Writes,
    ) -> RedisResult<Result<Subscription, EnvelopeError>> {
        if !self.rooms.contains(room) {
            self.subscribe(room, feed).await?;
            let synced = match self.floor(room, self.hub.floor(room)).await? {
                Some(latest) => self.hub.sync(room, latest).map_err(EnvelopeError::from),
                None => Err(unavailable("the room's replicas do not hold its latest messages")),
            };
            if let Err(refused) = synced {
                self.unsubscribe(room, feed).await?;
                return Ok(Err(refused));
            }
            self.rooms.insert(Arc::from(room));
        } else if since.is_some_and(|since| since > self.hub.latest(room).unwrap_or(0)) {
            self.catch_up(room).await?;
        }
        let joined = self.hub.join(room, member, None, false).map(|(subscription, _)| subscription);
        let joined = joined.map_err(EnvelopeError::from);
        if let Ok(subscription) = &joined {
            let room: Arc<str> = Arc::from(room);
            writes.touch(&room, member, self.hub.instance());
            if announce {
                self.announcing.insert(room.clone());
                if subscription.first {
                    let notice = Outgoing::MemberJoined { room: &room, member }.to_json();
                    writes.members.push((room, member.clone(), notice));
                }
            }
        }
        Ok(joined)
    }

    /// Keeps this server among `member`'s in `room` for `ttl_ms` more (0:
    /// takes it away), publishing `notice` ('' for none) if the member
    /// thereby came into the room or left it on every server.
    fn member(&self, room: &str, member: &str, ttl_ms: u64, notice: &str) -> BoxFuture<'static, RedisResult<()>> {
        let (script, mut redis) = (self.scripts.member.clone(), self.redis.clone());
        let (key, instance, channel, notice) =
            (member_key(room, member), self.hub.instance().to_owned(), channel(room), notice.to_owned());
        let nodes = self.nodes.clone();
        async move {
            let _sent = nodes.send(&key, 1);
            let mut invocation = script.prepare_invoke();
            invocation.key(key).arg(instance).arg(ttl_ms).arg(channel).arg(notice);
            invocation.invoke_async::<u64>(&mut redis).await.map(drop)
        }
        .boxed()
    }

    /// Sets `entries` of `room`'s presence to expire a TTL from now.
    fn touch(&self, room: &str, entries: &[String]) -> BoxFuture<'static, RedisResult<()>> {
        let (script, mut redis) = (self.scripts.touch.clone(), self.redis.clone());
        let (key, entries) = (presence_key(room), entries.to_vec());
        let nodes = self.nodes.clone();
        async move {
            let _sent = nodes.send(&key, 1);
            let mut invocation = script.prepare_invoke();
            invocation.key(key).arg(PRESENCE_TTL.as_millis() as u64).arg(entries);
            invocation.invoke_async::<u64>(&mut redis).await.map(drop)
        }
        .boxed()
    }

    /// Sends `writes`: each room's entries in calls of at most
    /// [`TOUCH_BATCH`], and up to [`IN_FLIGHT`] calls at once (the
    /// connection pipelines them), rather than one round trip after another.
    async fn write(&self, writes: Writes) -> RedisResult<()> {
        let ttl = PRESENCE_TTL.as_millis() as u64;
        let mut calls: Vec<BoxFuture<'static, RedisResult<()>>> = Vec::new();
        for (room, entries) in &writes.touches {
            calls.extend(entries.chunks(TOUCH_BATCH).map(|chunk| self.touch(room, chunk)));
        }
        for (room, member, notice) in &writes.members {
            calls.push(self.member(room, member, ttl, notice));
        }
        futures_util::stream::iter(calls).buffer_unordered(IN_FLIGHT).try_collect().await
    }

    /// Renews the presence of every member here, before it expires.
    async fn renew(&mut self) -> RedisResult<()> {
        let mut writes = Writes::default();
        for room in self.rooms.clone() {
            let (_, members) = self.hub.presence(&room, usize::MAX);
            for member in &members {
                writes.touch(&room, member, self.hub.instance());
                if self.announcing.contains(&room) {
                    writes.members.push((room.clone(), member.clone(), String::new()));
                }
            }
        }
        self.write(writes).await
    }

    /// The seq of `room` in Redis, raised to `known` first if Redis lost
    /// it; with durable acks, `None` unless the replicas hold every message
    /// up to it (a message they do not hold may be refused, or lost).
    async fn floor(&mut self, room: &str, known: u64) -> RedisResult<Option<u64>> {
        let mut floor = redis::cmd("EVAL");
        floor.arg(self.scripts.floor).arg(2).arg(seq_key(room)).arg(node_key(room)).arg(known);
        floor.arg(self.durable.fence());
        let _sent = self.nodes.send(&seq_key(room), self.durable.commands());
        self.durable.held(floor, &mut self.redis).await
    }

    /// One message from a channel: a command of the server API or a report
    /// to one of this server's; otherwise from a room's, `<seq>\n<json>`, or
    /// a notice, `e\n<json>`.
    async fn receive(&mut self, message: Msg) -> RedisResult<()> {
        let channel = message.get_channel_name();
        if channel == ADMIN_CHANNEL {
            return self.carry_out(message.get_payload_bytes()).await;
        }
        if channel.starts_with(ADMIN_CHANNEL) {
            match serde_json::from_slice::<Answered>(message.get_payload_bytes()) {
                Ok(answered) => self.waiting.report(answered.number, answered.report),
                Err(_) => warn!("redis: a report not in this server's format, ignored"),
            }
            return Ok(());
        }
        let Some(room) = room_of(channel) else { return Ok(()) };
        let payload = String::from_utf8_lossy(message.get_payload_bytes());
        if let Some(notice) = payload.strip_prefix("e\n") {
            let member = serde_json::from_str::<serde_json::Value>(notice)
                .ok()
                .and_then(|v| v["member"].as_str().map(Arc::from));
            match member {
                Some(member) => self.hub.announce(room, notice.to_owned(), &member),
                None => warn!(room, "redis: a notice not in this server's format, ignored"),
            }
            return Ok(());
        }
        let Some((seq, json)) = payload.split_once('\n').and_then(|(s, j)| Some((s.parse::<u64>().ok()?, j))) else {
            warn!(room, "redis: a message not in this server's format, ignored");
            return Ok(());
        };
        if !self.rooms.contains(room) {
            return Ok(());
        }
        let known = self.hub.latest(room).unwrap_or(0);
        if seq <= known {
            return Ok(());
        }
        self.fill(room, known, seq - 1).await?;
        self.hub.deliver(room, seq, json.to_owned());
        Ok(())
    }

    /// Carries out a command of the server API heard from the cluster, and
    /// publishes the report to the server that asked.
    async fn carry_out(&mut self, payload: &[u8]) -> RedisResult<()> {
        let Ok(asked) = serde_json::from_slice::<Asked<Command>>(payload) else {
            warn!("redis: a command not in this server's format, ignored");
            return Ok(());
        };
        let report = Answered { number: asked.number, report: self.local.carry_out(&asked.command) };
        let report = serde_json::to_string(&report).unwrap_or_default();
        let _sent = self.nodes.send(&asked.to, 1);
        let _: usize = self.redis.publish_command(&asked.to, report).query_async(&mut self.redis).await?;
        Ok(())
    }

    /// Delivers the seqs `after + 1` to `upto` of `room` from its history,
    /// with a gap notice for those it no longer holds.
    async fn fill(&mut self, room: &str, after: u64, upto: u64) -> RedisResult<()> {
        let sent = (upto > after).then(|| self.nodes.send(&history_key(room), 1));
        let entries = history(&mut self.redis, room, after, upto).await?;
        drop(sent);
        for Entry { seq, json, .. } in entries {
            let known = self.hub.latest(room).unwrap_or(0);
            if seq > known + 1 {
                self.hub.gap(room, known + 1, seq - 1);
            }
            if seq > known {
                self.hub.deliver(room, seq, json);
            }
        }
        let known = self.hub.latest(room).unwrap_or(0);
        if known < upto {
            warn!(room, from = known + 1, to = upto, "redis: messages lost, members told of the gap");
            self.metrics.lost.inc_by(upto - known);
            self.hub.gap(room, known + 1, upto);
        }
        Ok(())
    }
}

/// The most requests handled together.
const BATCH: usize = 1024;

/// The most presence entries one call renews.
const TOUCH_BATCH: usize = 1000;

/// The most presence calls in flight at once.
const IN_FLIGHT: usize = 64;

/// Presence to write to Redis, gathered from many joins or one renewal.
#[derive(Default)]
struct Writes {
    /// Each room's entries to renew.
    touches: HashMap<Arc<str>, Vec<String>>,
    /// A room, a member there and its notice: this server among its servers in the room.
    members: Vec<(Arc<str>, Arc<str>, String)>,
}

impl Writes {
    fn touch(&mut self, room: &Arc<str>, member: &str, instance: &str) {
        self.touches.entry(room.clone()).or_default().push(presence_entry(member, instance));
    }
}

/// Joins done in the hub, waiting for their presence to be written before their answers.
#[derive(Default)]
struct Joins {
    writes: Writes,
    answers: Vec<Joined>,
}

/// A join done in the hub, and the session waiting for it.
struct Joined {
    room: String,
    member: Arc<str>,
    announce: bool,
    reply: oneshot::Sender<Result<Subscription, EnvelopeError>>,
    joined: Result<Subscription, EnvelopeError>,
}

/// What the task does next.
enum Next {
    Renew,
    Heard(Heard),
    Asked(Option<Control>),
}

/// How a link ended.
enum Served {
    /// The server stops.
    Stopped,
    /// Redis could not be reached.
    Unreachable(String),
    /// The link was lost.
    Lost(String),
}
