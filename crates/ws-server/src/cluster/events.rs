//! The events hook through Redis (docs/hooks.md): every server hands its
//! events, in order, to one script that appends them to one stream and
//! keeps, in Redis, the connections and joins each server has open and
//! each room's connections on every server, so that a room's `occupied`
//! and `vacated` are told when the first connection of any server comes
//! and the last of all goes. One server at a time, the holder of a lease,
//! posts the stream to the backend and moves a cursor past what it took;
//! when it dies, the lease ends and another takes over from the cursor.
//!
//! Each server keeps a key alive while it runs; the others look for the
//! servers whose key expired, and tell the leaves and disconnects of
//! their connections, and the rooms they vacate, in their stead. Every
//! key has the hash tag `{events}`: one slot, also on a Redis Cluster.

use super::link::Commands;
use super::watch::Nodes;
use crate::hooks::Hooks;
use crate::hooks::events::{Event, Events, FIRST_BACKOFF, Kind, MAX_BACKOFF};
use futures_util::future::FutureExt;
use redis::{AsyncCommands, RedisResult, Script};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tracing::{info, warn};

/// How long a server is taken for alive after it last said so; it says so
/// every third of this. As a member's presence, so a dead server's members
/// leave its rooms' presence and its events' rooms together.
const ALIVE: Duration = super::PRESENCE_TTL;

/// How long the lease of the server posting the events lasts unless
/// renewed, at the least: three times a hook's timeout, if longer, so that
/// it outlasts a call.
const LEASE: Duration = Duration::from_secs(10);

/// How often the stream is looked at for events from other servers.
const POLL: Duration = Duration::from_millis(200);

/// The most events posted in one call.
const BATCH: usize = 100;

const STREAM: &str = "ws:{events}:stream";
const OCCUPANCY: &str = "ws:{events}:occupancy";
const SERVERS: &str = "ws:{events}:servers";
const LEASE_KEY: &str = "ws:{events}:lease";
const CURSOR: &str = "ws:{events}:cursor";

/// The keys of `instance`'s own: its open connections (user -> count), its
/// joins (`room\nuser` -> count), the last event of it written, and whether it is alive.
fn own_keys(instance: &str) -> [String; 4] {
    ["connections", "joins", "written", "alive"].map(|what| format!("ws:{{events}}:{what}:{instance}"))
}

/// The functions both scripts share. KEYS[1] the stream, KEYS[2] each room's
/// connections, KEYS[3] and KEYS[4] the server's connections and joins;
/// ARGV[2] the stream's bound.
macro_rules! told {
    () => {
        r"
local dropped = 0
local function add(kind, user, room, time)
  if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[2]) then dropped = dropped + 1 end
  redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'k', kind, 'u', user, 'r', room, 't', time)
end
local function left(room, user, time)
  local n = redis.call('HINCRBY', KEYS[2], room, -1)
  add('leave', user, room, time)
  if n <= 0 then
    redis.call('HDEL', KEYS[2], room)
    if n == 0 then add('vacated', user, room, time) end
  end
end
local function unmark(key, field)
  local n = tonumber(redis.call('HGET', key, field) or '0')
  if n <= 0 then return false end
  if n == 1 then redis.call('HDEL', key, field) else redis.call('HINCRBY', key, field, -1) end
  return true
end
"
    };
}

/// Appends a server's events, skipping those written already (a retry).
/// KEYS: stream, occupancy, connections, joins, written, alive, servers;
/// ARGV: instance, bound, alive ms, then five for each event: number,
/// kind, user, room ('' for none), time. Answers the events dropped for room.
const WRITE: &str = concat!(
    told!(),
    r"
redis.call('SADD', KEYS[7], ARGV[1])
redis.call('SET', KEYS[6], '1', 'PX', ARGV[3])
local written = tonumber(redis.call('GET', KEYS[5]) or '0')
for i = 4, #ARGV, 5 do
  local number, kind, user, room, time = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  if number > written then
    written = number
    if kind == 'connect' then
      redis.call('HINCRBY', KEYS[3], user, 1)
      add(kind, user, '', time)
    elseif kind == 'disconnect' then
      if unmark(KEYS[3], user) then add(kind, user, '', time) end
    elseif kind == 'join' then
      redis.call('HINCRBY', KEYS[4], room .. '\n' .. user, 1)
      add(kind, user, room, time)
      if redis.call('HINCRBY', KEYS[2], room, 1) == 1 then add('occupied', user, room, time) end
    elseif kind == 'leave' then
      if unmark(KEYS[4], room .. '\n' .. user) then left(room, user, time) end
    end
  end
end
redis.call('SET', KEYS[5], written, 'PX', 86400000)
return dropped
"
);

/// Tells the leaves and disconnects of a server that is no longer alive,
/// once. KEYS: stream, occupancy, connections, joins, written, alive,
/// servers; ARGV: instance, bound. Answers 1 if it did.
const BURY: &str = concat!(
    told!(),
    r"
if redis.call('EXISTS', KEYS[6]) == 1 or redis.call('SREM', KEYS[7], ARGV[1]) == 0 then return 0 end
local t = redis.call('TIME')
local time = t[1] * 1000 + math.floor(t[2] / 1000)
local joins = redis.call('HGETALL', KEYS[4])
for i = 1, #joins, 2 do
  local at = string.find(joins[i], '\n', 1, true)
  local room, user = string.sub(joins[i], 1, at - 1), string.sub(joins[i], at + 1)
  for _ = 1, tonumber(joins[i + 1]) do left(room, user, time) end
end
local connections = redis.call('HGETALL', KEYS[3])
for i = 1, #connections, 2 do
  for _ = 1, tonumber(connections[i + 1]) do add('disconnect', connections[i], '', time) end
end
redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
return 1
"
);

/// Takes the lease, or keeps it. KEYS: lease; ARGV: instance, ms. Answers 1 if held.
const HOLD: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// The backend took the stream up to an id: the cursor moves past it and
/// the stream lets it go, if the lease is still held. KEYS: lease, cursor,
/// stream; ARGV: instance, the id, the id after it.
const TAKEN: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
return 1
";

/// This server's part in telling the events through Redis.
#[derive(Clone)]
struct Teller {
    redis: Commands,
    nodes: Nodes,
    instance: Arc<str>,
    events: Arc<Events>,
    hooks: Arc<Hooks>,
    scripts: Arc<[Script; 4]>,
    /// Wakes the posting when this server wrote events.
    written: Arc<Notify>,
    /// How long the lease lasts unless renewed.
    lease: Duration,
}

/// Starts the tasks that write this server's `events` to Redis, keep it
/// alive there and bury the servers that are not, and post the stream to
/// the backend through `hooks` while this server holds the lease.
pub(super) fn start(redis: Commands, nodes: Nodes, instance: &str, events: Arc<Events>, hooks: Arc<Hooks>) {
    let scripts = Arc::new([WRITE, BURY, HOLD, TAKEN].map(Script::new));
    let instance = Arc::from(instance);
    let (written, lease) = (Arc::new(Notify::new()), LEASE.max(hooks.timeout() * 3));
    let teller = Teller { redis, nodes, instance, events, hooks, scripts, written, lease };
    let writer = teller.clone();
    tokio::spawn(teller.events.clone().drain(move |batch| writer.clone().write(batch).boxed()));
    tokio::spawn(teller.clone().keep_alive());
    tokio::spawn(teller.post());
}

impl Teller {
    /// Invokes script `which` with this server's keys, or `instance`'s.
    fn invoke(&self, which: usize, instance: &str) -> redis::ScriptInvocation<'_> {
        let mut invocation = self.scripts[which].prepare_invoke();
        let [connections, joins, written, alive] = own_keys(instance);
        invocation.key(STREAM).key(OCCUPANCY).key(connections).key(joins).key(written).key(alive).key(SERVERS);
        invocation.arg(instance).arg(self.events.max_waiting());
        invocation
    }

    /// Appends `batch` to the stream.
    async fn write(self, batch: Vec<Event>) -> Result<(), String> {
        let mut invocation = self.invoke(0, &self.instance);
        invocation.arg(ALIVE.as_millis() as u64);
        for event in &batch {
            let room = event.room.as_deref().unwrap_or_default();
            invocation.arg(event.number).arg(event.kind.name()).arg(&*event.user).arg(room).arg(event.time);
        }
        let _sent = self.nodes.send(STREAM, 1);
        let dropped: u64 = invocation.invoke_async(&mut self.redis.clone()).await.map_err(|e| e.to_string())?;
        self.events.dropped(dropped);
        self.written.notify_one();
        Ok(())
    }

    /// Says this server is alive, and buries those that are not, every
    /// third of [`ALIVE`], for as long as the server runs. It buries only
    /// once it has said so without a failure for [`ALIVE`]: after an
    /// outage of Redis, the others have had the time to say so again.
    async fn keep_alive(self) {
        let mut beats = tokio::time::interval(ALIVE / 3);
        let mut linked_since = None;
        loop {
            beats.tick().await;
            let now = tokio::time::Instant::now();
            let settled = linked_since.is_some_and(|since| now.duration_since(since) >= ALIVE);
            match self.beat(settled).await {
                Ok(()) => linked_since = linked_since.or(Some(now)),
                Err(e) => {
                    linked_since = None;
                    warn!("redis: the events' servers not looked after: {e}");
                }
            }
        }
    }

    /// One beat: this server alive, and with `bury`, the dead buried.
    async fn beat(&self, bury: bool) -> RedisResult<()> {
        let mut redis = self.redis.clone();
        let alive = &own_keys(&self.instance)[3];
        let _sent = self.nodes.send(SERVERS, 3);
        let () = redis::pipe()
            .sadd(SERVERS, &*self.instance)
            .ignore()
            .pset_ex(alive, 1, ALIVE.as_millis() as u64)
            .ignore()
            .query_async(&mut redis)
            .await?;
        if !bury {
            return Ok(());
        }
        let servers: Vec<String> = redis.smembers(SERVERS).await?;
        for server in servers.iter().filter(|server| **server != *self.instance) {
            let buried: u32 = self.invoke(1, server).invoke_async(&mut redis).await?;
            if buried == 1 {
                info!(server, "redis: a server gone without a word; its leaves and disconnects told");
                self.written.notify_one();
            }
        }
        Ok(())
    }

    /// Posts the stream to the backend while this server holds the lease,
    /// and tries for it every [`POLL`] while another does.
    async fn post(self) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.post_once().await {
                Ok(true) => backoff = FIRST_BACKOFF,
                Ok(false) => {
                    let _ = tokio::time::timeout(POLL, self.written.notified()).await;
                }
                Err(e) => {
                    warn!("events not posted, again in {backoff:?}: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Posts the next events of the stream if this server holds the lease:
    /// whether there were any.
    async fn post_once(&self) -> Result<bool, String> {
        let Some((last, events)) = self.next_events().await.map_err(|e| e.to_string())? else {
            return Ok(false);
        };
        self.hooks.tell(&events).await.map_err(|e| e.message)?;
        let mut taken = self.scripts[3].prepare_invoke();
        taken.key(LEASE_KEY).key(CURSOR).key(STREAM).arg(&*self.instance).arg(&last).arg(after_id(&last));
        let _sent = self.nodes.send(STREAM, 1);
        let _: u32 = taken.invoke_async(&mut self.redis.clone()).await.map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// The events of the stream past the cursor, up to a batch, with the
    /// last one's id, if this server holds the lease (taken or renewed).
    async fn next_events(&self) -> RedisResult<Option<(String, Vec<Event>)>> {
        let (mut redis, _sent) = (self.redis.clone(), self.nodes.send(STREAM, 3));
        let mut hold = self.scripts[2].prepare_invoke();
        hold.key(LEASE_KEY).arg(&*self.instance).arg(self.lease.as_millis() as u64);
        if hold.invoke_async::<u32>(&mut redis).await? == 0 {
            return Ok(None);
        }
        let cursor: Option<String> = redis.get(CURSOR).await?;
        let after = cursor.map_or_else(|| "-".to_owned(), |id| format!("({id}"));
        let range = redis::cmd("XRANGE").arg(STREAM).arg(after).arg("+").arg("COUNT").arg(BATCH).to_owned();
        let entries: Vec<(String, Vec<String>)> = range.query_async(&mut redis).await?;
        let Some((last, _)) = entries.last() else { return Ok(None) };
        Ok(Some((last.clone(), entries.into_iter().filter_map(event).collect())))
    }
}

/// An event from its stream entry: its id and fields `k`, `u`, `r`, `t`.
fn event((id, fields): (String, Vec<String>)) -> Option<Event> {
    let (mut kind, mut user, mut room, mut time) = (None, None, None, 0);
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match name.as_str() {
            "k" => kind = Kind::named(&value),
            "u" => user = Some(Arc::from(value)),
            "r" => room = Some(value).filter(|room| !room.is_empty()).map(Arc::from),
            "t" => time = value.parse().ok()?,
            _ => {}
        }
    }
    Some(Event { id, number: 0, kind: kind?, user: user?, room, time })
}

/// The stream id right after `id` (`<ms>-<n>`).
fn after_id(id: &str) -> String {
    match id.split_once('-').and_then(|(ms, n)| Some((ms, n.parse::<u64>().ok()?))) {
        Some((ms, n)) => format!("{ms}-{}", n + 1),
        None => id.to_owned(),
    }
}
