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

use crate::envelope::{self, EnvelopeError};
use crate::hub::{Hub, Replay, RoomsFull, Subscription};
use crate::metrics::ClusterMetrics;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{AsyncCommands, Msg, RedisResult, Script};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;
use tokio_stream::StreamExt;
use tracing::{info, warn};

/// How long a message id is remembered, so that a retry is not published twice.
pub const RETRY_WINDOW: Duration = Duration::from_secs(600);

/// The longest a request to Redis may take before the client is told `unavailable`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The first and the longest wait between attempts to reach Redis again.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Numbers, appends and publishes one message; a retry gets its first seq.
/// KEYS: seq, history stream, retry key (the seq key when there is none).
/// ARGV: envelope head and tail, history length, retry window (s, 0: none),
/// channel, floor (the highest seq this server knows: a Redis that lost its
/// data does not number from 1 again), history age limit (ms, 0: none).
/// Each history entry holds the envelope `m` and Redis's time `t` in ms.
const PUBLISH: &str = r"
if ARGV[4] ~= '0' then
  local earlier = redis.call('GET', KEYS[3])
  if earlier then return tonumber(earlier) end
end
local seq = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[6])) + 1
redis.call('SET', KEYS[1], seq)
local json = ARGV[1] .. seq .. ARGV[2]
if ARGV[3] ~= '0' then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], seq .. '-0', 'm', json, 't', now)
  if ARGV[7] ~= '0' then
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 100)
    for _, entry in ipairs(oldest) do
      if tonumber(entry[2][4]) >= now - tonumber(ARGV[7]) then break end
      redis.call('XDEL', KEYS[2], entry[1])
    end
    redis.call('PEXPIRE', KEYS[2], ARGV[7])
  end
end
if ARGV[4] ~= '0' then redis.call('SET', KEYS[3], seq, 'EX', ARGV[4]) end
redis.call('PUBLISH', ARGV[5], seq .. '\n' .. json)
return seq
";

/// How long a presence entry lives unless its server renews it, which it
/// does every third of this: the members of a server that dies drop out.
pub const PRESENCE_TTL: Duration = Duration::from_secs(30);

/// Sets presence entries to expire `PRESENCE_TTL` from now (Redis's clock).
/// KEYS: presence set; ARGV: TTL in ms, then the entries.
const TOUCH: &str = r"
local t = redis.call('TIME')
local expires = t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expires, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return #ARGV - 1
";

/// Drops the expired presence entries and answers the others. KEYS: presence set.
const PRESENT: &str = r"
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t[1] * 1000 + math.floor(t[2] / 1000))
return redis.call('ZRANGE', KEYS[1], 0, -1)
";

/// Raises a room's seq to a floor, and answers the seq. KEYS: seq; ARGV: floor.
const FLOOR: &str = r"
local seq = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[1]))
if seq > 0 then redis.call('SET', KEYS[1], seq) end
return seq
";

fn seq_key(room: &str) -> String {
    format!("ws:{{{room}}}:seq")
}

fn history_key(room: &str) -> String {
    format!("ws:{{{room}}}:history")
}

fn presence_key(room: &str) -> String {
    format!("ws:{{{room}}}:presence")
}

/// A presence entry: the member, then the server it is on.
fn presence_entry(member: &str, instance: &str) -> String {
    format!("{member}\n{instance}")
}

fn channel(room: &str) -> String {
    format!("ws:{{{room}}}:channel")
}

/// The room of a channel name.
fn room_of(channel: &str) -> Option<&str> {
    channel.strip_prefix("ws:{")?.strip_suffix("}:channel")
}

const EPOCH_KEY: &str = "ws:epoch";

/// Redis could not serve a request.
fn unavailable(e: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::new("unavailable", format!("the message store is unavailable: {e}"))
}

/// What sessions ask of the subscriber task.
#[derive(Debug)]
enum Control {
    /// Join `room` as `member`, subscribing to its channel first if needed.
    Join { room: String, member: Arc<str>, reply: oneshot::Sender<Result<Subscription, EnvelopeError>> },
    /// A connection of `member` left `room`: it leaves the presence if it was
    /// its last here, and the server unsubscribes if it was the room's last.
    Left { room: Arc<str>, member: Arc<str> },
}

/// This server's link to the cluster.
#[derive(Debug)]
pub struct Cluster {
    hub: Arc<Hub>,
    redis: ConnectionManager,
    publish: Script,
    control: mpsc::UnboundedSender<Control>,
    history: usize,
    history_max_age: Option<Duration>,
}

impl Cluster {
    /// Links `hub` to the Redis at `url`, keeping `history` messages per
    /// room there, none older than `history_max_age`. The link is made in
    /// the background, and made again whenever it is lost; until then joins
    /// and publishes are `unavailable`.
    pub fn start(
        url: &str,
        hub: Arc<Hub>,
        (history, history_max_age): (usize, Option<Duration>),
        metrics: ClusterMetrics,
    ) -> RedisResult<Arc<Cluster>> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REQUEST_TIMEOUT))
            .set_response_timeout(Some(REQUEST_TIMEOUT))
            .set_min_delay(BACKOFF.0)
            .set_max_delay(BACKOFF.1)
            .set_number_of_retries(1);
        let redis = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let (control, requests) = mpsc::unbounded_channel();
        let subscriber = Subscriber {
            hub: hub.clone(),
            client,
            redis: redis.clone(),
            rooms: HashSet::new(),
            metrics,
            down: false,
            held: Vec::new(),
        };
        tokio::spawn(subscriber.run(requests));
        let publish = Script::new(PUBLISH);
        Ok(Arc::new(Cluster { hub, redis, publish, control, history, history_max_age }))
    }

    /// Publishes `content` from `sender` to `room` across the cluster; its seq.
    /// `client_id` (who gave it, the id) makes a retry within [`RETRY_WINDOW`] harmless.
    pub async fn publish(
        &self,
        room: &str,
        sender: &str,
        content: &str,
        client_id: Option<(&str, &str)>,
    ) -> Result<u64, EnvelopeError> {
        let id = self.hub.message_id();
        let (head, tail) = envelope::message_around_seq(&id, envelope::now_millis(), sender, content, room);
        let retry_key = client_id.map(|(origin, id)| format!("ws:{{{room}}}:retry:{origin}\n{id}"));
        let window = if retry_key.is_some() { RETRY_WINDOW.as_secs() } else { 0 };
        let mut invocation = self.publish.prepare_invoke();
        invocation.key(seq_key(room)).key(history_key(room)).key(retry_key.unwrap_or_else(|| seq_key(room)));
        invocation.arg(head).arg(tail).arg(self.history).arg(window).arg(channel(room));
        invocation.arg(self.hub.floor(room)).arg(self.history_max_age.map_or(0, |age| age.as_millis() as u64));
        let published = timeout(REQUEST_TIMEOUT, invocation.invoke_async(&mut self.redis.clone())).await;
        let seq = published.map_err(unavailable)?.map_err(unavailable)?;
        // Known before it is delivered here: a Redis that lost its data numbers on from it.
        self.hub.numbered(room, seq);
        Ok(seq)
    }

    /// Joins `room` as `member`; with `since`, also the messages after it
    /// from the room's history in Redis, up to the subscription's start.
    pub async fn join(
        &self,
        room: String,
        member: Arc<str>,
        since: Option<u64>,
    ) -> Result<(Subscription, Option<Replay>), EnvelopeError> {
        let (reply, joined) = oneshot::channel();
        let request = Control::Join { room, member, reply };
        self.control.send(request).map_err(|_| unavailable("the server is stopping"))?;
        // Held while there is no link, for as long as a request may take.
        let joined = timeout(REQUEST_TIMEOUT, joined).await.map_err(|_| unavailable("no link to redis"))?;
        let subscription = joined.map_err(|_| unavailable("the server is stopping"))??;
        let replay = match since {
            Some(since) => Some(self.replay(subscription.member.room(), since, subscription.latest).await?),
            None => None,
        };
        Ok((subscription, replay))
    }

    /// The messages of `room` after `since` up to `latest` that Redis holds.
    /// A `since` past `latest` comes from another numbering: all is replayed,
    /// and the replay is not complete.
    pub async fn replay(&self, room: &str, since: u64, latest: u64) -> Result<Replay, EnvelopeError> {
        let renumbered = since > latest;
        let after = if renumbered { 0 } else { since };
        let entries = timeout(REQUEST_TIMEOUT, history(&mut self.redis.clone(), room, after, latest)).await;
        let mut entries = entries.map_err(unavailable)?.map_err(unavailable)?;
        if let Some(age) = self.history_max_age {
            // Aged while no message came to trim them.
            let oldest = envelope::now_millis().saturating_sub(age.as_millis() as u64);
            entries.retain(|entry| entry.time >= oldest);
        }
        let complete = !renumbered && entries.first().map_or(after == latest, |entry| entry.seq == after + 1);
        let deliveries = entries.into_iter().map(|entry| Arc::new(self.hub.delivery(entry.seq, entry.json))).collect();
        Ok(Replay { deliveries, complete })
    }

    /// A connection of `member` left `room` on this server (its
    /// subscription dropped first).
    pub fn left(&self, room: Arc<str>, member: Arc<str>) {
        // Fails only when the server stops, and its subscriptions with it.
        let _ = self.control.send(Control::Left { room, member });
    }

    /// Who is in `room` on every server: how many, and up to `max` names, in order.
    pub async fn presence(&self, room: &str, max: usize) -> Result<(usize, Vec<Arc<str>>), EnvelopeError> {
        let (script, mut redis) = (Script::new(PRESENT), self.redis.clone());
        let mut invocation = script.prepare_invoke();
        let present = invocation.key(presence_key(room)).invoke_async(&mut redis);
        let entries: Vec<String> =
            timeout(REQUEST_TIMEOUT, present).await.map_err(unavailable)?.map_err(unavailable)?;
        let mut names: Vec<&str> = entries.iter().filter_map(|e| Some(e.rsplit_once('\n')?.0)).collect();
        names.sort_unstable();
        names.dedup();
        let count = names.len();
        Ok((count, names.into_iter().take(max).map(Arc::from).collect()))
    }
}

/// A message of a room's history in Redis.
struct Entry {
    seq: u64,
    json: String,
    /// When it was appended, in ms since the Unix epoch.
    time: u64,
}

/// The messages of `room` with seqs `after + 1` to `upto` that the history holds, in order.
async fn history(redis: &mut ConnectionManager, room: &str, after: u64, upto: u64) -> RedisResult<Vec<Entry>> {
    if upto <= after {
        return Ok(Vec::new());
    }
    let range = redis::cmd("XRANGE").arg(history_key(room)).arg(after + 1).arg(upto).to_owned();
    let entries: Vec<(String, Vec<String>)> = range.query_async(redis).await?;
    Ok(entries.into_iter().filter_map(|(id, fields)| entry(&id, fields)).collect())
}

/// An entry from its id, `<seq>-0`, and its fields, `m` and `t`.
fn entry(id: &str, fields: Vec<String>) -> Option<Entry> {
    let seq = id.split('-').next()?.parse().ok()?;
    let mut fields = fields.into_iter();
    let (mut json, mut time) = (None, 0);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match name.as_str() {
            "m" => json = Some(value),
            "t" => time = value.parse().ok()?,
            _ => {}
        }
    }
    Some(Entry { seq, json: json?, time })
}

/// The task that holds the subscriptions and delivers what they bring.
struct Subscriber {
    hub: Arc<Hub>,
    client: redis::Client,
    redis: ConnectionManager,
    /// The rooms subscribed to: those with members here.
    rooms: HashSet<Arc<str>>,
    metrics: ClusterMetrics,
    /// Whether the outage going on is counted.
    down: bool,
    /// Joins that came while there was no link.
    held: Vec<Control>,
}

impl Subscriber {
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
                Ok(Some(Control::Left { room, member })) => {
                    self.hub.leave(&room, &member);
                }
            }
        }
    }

    /// One link: subscribes again, catches up, then delivers until the link is lost.
    async fn serve(&mut self, control: &mut mpsc::UnboundedReceiver<Control>) -> Served {
        let linked = timeout(REQUEST_TIMEOUT, self.link()).await;
        let (mut sink, mut stream) = match linked.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()))
        {
            Ok(pair) => pair,
            Err(e) => return Served::Unreachable(e),
        };
        if let Err(e) = self.resume(&mut sink).await {
            return Served::Unreachable(e.to_string());
        }
        for join in std::mem::take(&mut self.held) {
            if let Err(e) = self.handle(join, &mut sink).await {
                return Served::Lost(e.to_string());
            }
        }
        let mut renewals = tokio::time::interval(PRESENCE_TTL / 3);
        loop {
            let outcome = tokio::select! {
                _ = renewals.tick() => self.renew().await,
                message = stream.next() => match message {
                    Some(message) => self.receive(message).await,
                    None => return Served::Lost("the subscription ended".into()),
                },
                request = control.recv() => match request {
                    Some(request) => self.handle(request, &mut sink).await,
                    None => return Served::Stopped,
                },
            };
            if let Err(e) = outcome {
                return Served::Lost(e.to_string());
            }
        }
    }

    /// A subscription connection, and the cluster's epoch taken (or given, by the first server).
    async fn link(&mut self) -> RedisResult<(PubSubSink, redis::aio::PubSubStream)> {
        let pubsub = self.client.get_async_pubsub().await?;
        let mine = self.hub.epoch();
        let _: bool = self.redis.set_nx(EPOCH_KEY, &*mine).await?;
        let epoch: String = self.redis.get(EPOCH_KEY).await?;
        if *epoch != *mine {
            info!(epoch, "redis: joined the cluster's numbering");
            self.hub.set_epoch(&epoch);
        }
        Ok(pubsub.split())
    }

    /// After a new link: subscribes again to every room with members here
    /// and delivers what they missed.
    async fn resume(&mut self, sink: &mut PubSubSink) -> RedisResult<()> {
        self.rooms.retain(|room| self.hub.has_members(room));
        for room in self.rooms.clone() {
            sink.subscribe(channel(&room)).await?;
            let latest = self.floor(&room, self.hub.floor(&room)).await?;
            self.fill(&room, self.hub.latest(&room).unwrap_or(0), latest).await?;
        }
        info!(rooms = self.rooms.len(), "redis: linked");
        self.down = false;
        self.metrics.up.set(1);
        Ok(())
    }

    async fn handle(&mut self, request: Control, sink: &mut PubSubSink) -> RedisResult<()> {
        match request {
            Control::Join { room, member, reply } => {
                if reply.is_closed() {
                    return Ok(());
                }
                let (answer, failure) = match self.join(&room, &member, sink).await {
                    Ok(Ok(subscription)) => (Ok(subscription), None),
                    Ok(Err(full)) => (Err(full.into()), None),
                    Err(e) => (Err(unavailable(&e)), Some(e)),
                };
                if let Err(Ok(subscription)) = reply.send(answer) {
                    // The session is gone: so is its place in the room.
                    drop(subscription);
                    self.leave(&room, &member, sink).await?;
                }
                failure.map_or(Ok(()), Err)
            }
            Control::Left { room, member } => self.leave(&room, &member, sink).await,
        }
    }

    /// A connection of `member` left `room` (its subscription dropped).
    async fn leave(&mut self, room: &str, member: &str, sink: &mut PubSubSink) -> RedisResult<()> {
        if self.hub.leave(room, member) {
            let entry = presence_entry(member, self.hub.instance());
            let _: usize = self.redis.zrem(presence_key(room), entry).await?;
        }
        if !self.hub.has_members(room) && self.rooms.remove(room) {
            sink.unsubscribe(channel(room)).await?;
        }
        Ok(())
    }

    /// Subscribes to `room` if needed, then joins it in the hub.
    async fn join(
        &mut self,
        room: &str,
        member: &Arc<str>,
        sink: &mut PubSubSink,
    ) -> RedisResult<Result<Subscription, RoomsFull>> {
        if !self.rooms.contains(room) {
            sink.subscribe(channel(room)).await?;
            let latest = self.floor(room, self.hub.floor(room)).await?;
            if let Err(full) = self.hub.sync(room, latest) {
                sink.unsubscribe(channel(room)).await?;
                return Ok(Err(full));
            }
            self.rooms.insert(Arc::from(room));
        }
        let joined = self.hub.join(room, member, None).map(|(subscription, _)| subscription);
        if joined.is_ok() {
            self.touch(room, std::slice::from_ref(member)).await?;
        }
        Ok(joined)
    }

    /// Renews the presence of `members` in `room`.
    async fn touch(&mut self, room: &str, members: &[Arc<str>]) -> RedisResult<()> {
        let script = Script::new(TOUCH);
        let mut invocation = script.prepare_invoke();
        invocation.key(presence_key(room)).arg(PRESENCE_TTL.as_millis() as u64);
        for member in members {
            invocation.arg(presence_entry(member, self.hub.instance()));
        }
        invocation.invoke_async(&mut self.redis).await
    }

    /// Renews the presence of every member here, before it expires.
    async fn renew(&mut self) -> RedisResult<()> {
        for room in self.rooms.clone() {
            let (_, members) = self.hub.presence(&room, usize::MAX);
            if !members.is_empty() {
                self.touch(&room, &members).await?;
            }
        }
        Ok(())
    }

    /// The seq of `room` in Redis, raised to `known` first if Redis lost it.
    async fn floor(&mut self, room: &str, known: u64) -> RedisResult<u64> {
        Script::new(FLOOR).key(seq_key(room)).arg(known).invoke_async(&mut self.redis).await
    }

    /// One message from a channel: `<seq>\n<json>`.
    async fn receive(&mut self, message: Msg) -> RedisResult<()> {
        let Some(room) = room_of(message.get_channel_name()) else { return Ok(()) };
        let payload = String::from_utf8_lossy(message.get_payload_bytes());
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

    /// Delivers the seqs `after + 1` to `upto` of `room` from its history,
    /// with a gap notice for those it no longer holds.
    async fn fill(&mut self, room: &str, after: u64, upto: u64) -> RedisResult<()> {
        for Entry { seq, json, .. } in history(&mut self.redis, room, after, upto).await? {
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

/// How a link ended.
enum Served {
    /// The server stops.
    Stopped,
    /// Redis could not be reached.
    Unreachable(String),
    /// The link was lost.
    Lost(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_room_comes_back_from_its_channel_name() {
        for room in ["general", "", "a}:channel{b", "ü"] {
            assert_eq!(room_of(&channel(room)), Some(room));
        }
        assert_eq!(room_of("other"), None);
    }
}
