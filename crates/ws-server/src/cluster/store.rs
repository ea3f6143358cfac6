//! What the cluster keeps in Redis, and how it is reached: the keys of a
//! room, the Lua scripts that change them atomically, the history stream
//! read back, and the bounds on every request.

use super::link::Commands;
use crate::envelope::EnvelopeError;
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Script, ServerErrorKind};
use std::time::Duration;

/// How long a message id is remembered, so that a retry is not published twice.
pub const RETRY_WINDOW: Duration = Duration::from_secs(600);

/// The longest a request to Redis may take before the client is told `unavailable`.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The first and the longest wait between attempts to reach Redis again.
pub(super) const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The Lua function `next_after(key, node, known, fence)`: the seq a room's
/// next message follows, given its seq key, its node key (see `node_key`),
/// the highest seq this server knows and whether a promotion counts
/// (`'1'`; `Durable::fence`). Redis may have lost messages it had
/// numbered: when it holds less than `known` (a restart without its data,
/// a failover before the replica had the last writes, seen by a server
/// that heard of them), or when the node is a replica promoted since the
/// room was last numbered (its former primary's replication id is its
/// `master_replid2`), which no server may have heard of. Other servers may
/// have acked more of them than this one knows, so the numbering then skips
/// 10,000 seqs, and no seq is given to two messages. Members are told the
/// skipped seqs as a `gap`. A slot moved (MIGRATE) or a restart with the
/// data is no promotion, and skips nothing.
macro_rules! next_after {
    () => {
        r"
local function promoted(node)
  local info = redis.call('INFO', 'replication')
  local here = string.match(info, 'master_replid:(%x+)')
  local last = redis.call('GET', node)
  if last == here then return false end
  redis.call('SET', node, here)
  return last == string.match(info, 'master_replid2:(%x+)')
end
local function next_after(key, node, known, fence)
  local held, floor = tonumber(redis.call('GET', key) or '0'), tonumber(known)
  local lost = fence == '1' and promoted(node)
  if floor > held or lost then return math.max(held, floor) + 10000 end
  return held
end
"
    };
}

/// Numbers, appends and publishes one message; a retry gets its first seq.
/// KEYS: seq, history stream, retry key (the seq key when there is none), node.
/// ARGV: envelope head and tail, history length, retry window (s, 0: none),
/// channel ('' to publish nothing), floor (the highest seq this server
/// knows: a Redis that lost its data does not number from 1 again, and
/// skips seqs past it: `next_after!`), history
/// age limit (ms, 0: none), grace (ms, 0: none; with durable acks, how long
/// an entry is kept past the history's length: a message reaches the
/// channel only after its `WAIT`, out of seq order, and the servers fill
/// the seqs before it from the stream), fence (`next_after!`). Each history entry holds the
/// envelope `m` and Redis's time `t` in ms. A retry writes too (the retry
/// key's expiry), so that a `WAIT` after it waits for the replicas to hold
/// the first try.
const PUBLISH: &str = concat!(
    next_after!(),
    r"
if ARGV[4] ~= '0' then
  local earlier = redis.call('GET', KEYS[3])
  if earlier then
    redis.call('EXPIRE', KEYS[3], ARGV[4])
    return tonumber(earlier)
  end
end
local seq = next_after(KEYS[1], KEYS[4], ARGV[6], ARGV[9]) + 1
redis.call('SET', KEYS[1], seq)
local json = ARGV[1] .. seq .. ARGV[2]
local len, grace = tonumber(ARGV[3]), tonumber(ARGV[8])
-- Drops the oldest entries older than age ms, at most `most` of them, one
-- read each: every message may drop several, so the old ones never pile up.
local function drop_older(age, now, most)
  for _ = 1, most do
    local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
    if not oldest or tonumber(oldest[2][4]) >= now - age then return end
    redis.call('XDEL', KEYS[2], oldest[1])
  end
end
if len > 0 or grace > 0 then
  local t = redis.call('TIME')
  local now = t[1] * 1000 + math.floor(t[2] / 1000)
  if grace == 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', len, seq .. '-0', 'm', json, 't', now)
  else
    redis.call('XADD', KEYS[2], seq .. '-0', 'm', json, 't', now)
    local excess = redis.call('XLEN', KEYS[2]) - len
    if excess > 0 then drop_older(grace, now, math.min(excess, 8)) end
  end
  if ARGV[7] ~= '0' then
    drop_older(math.max(tonumber(ARGV[7]), grace), now, 8)
    redis.call('PEXPIRE', KEYS[2], math.max(tonumber(ARGV[7]), grace))
  end
end
if ARGV[4] ~= '0' then redis.call('SET', KEYS[3], seq, 'EX', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], seq .. '\n' .. json) end
return seq
"
);

/// With durable acks, how long a room's stream keeps a message past its
/// history's length: longer than a message can wait between its numbering
/// and its publication on the channel (its `WAIT`, bounded by a request's time).
pub(super) const DELIVERY_GRACE: Duration = Duration::from_secs(10);

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

/// Raises a room's seq to a floor (past it, if Redis held less or was
/// promoted since: `next_after!`), and answers the seq; a room never
/// numbered stays without keys. KEYS: seq, node; ARGV: floor, fence.
const FLOOR: &str = concat!(
    next_after!(),
    r"
if ARGV[1] == '0' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local seq = next_after(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if seq > 0 then redis.call('SET', KEYS[1], seq) end
return seq
"
);

/// The scripts, for one Redis or for a cluster, where a room's channel is
/// sharded: published with SPUBLISH, on the node of the room's slot.
#[derive(Debug, Clone)]
pub(super) struct Scripts {
    pub(super) publish: Script,
    /// The source of `publish`, for a node that does not hold it.
    pub(super) publish_source: String,
    pub(super) member: Script,
    pub(super) touch: Script,
    pub(super) present: Script,
    /// Run with EVAL: it is short, and rare (when a server starts on a room).
    pub(super) floor: &'static str,
}

impl Scripts {
    pub(super) fn new(sharded: bool) -> Scripts {
        let publish =
            |source: &str| if sharded { source.replace("'PUBLISH'", "'SPUBLISH'") } else { source.to_owned() };
        let publish_source = publish(PUBLISH);
        Scripts {
            publish: Script::new(&publish_source),
            publish_source,
            member: Script::new(&publish(MEMBER)),
            touch: Script::new(TOUCH),
            present: Script::new(PRESENT),
            floor: FLOOR,
        }
    }
}

/// Whether `e` says the node does not have the script (started anew, or
/// promoted, since the link loaded it).
pub(super) fn no_script(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

/// `call`, an EVALSHA, as the EVAL of the script's `source`, which loads it.
pub(super) fn by_eval(call: &Cmd, source: &str) -> Cmd {
    let mut eval = redis::cmd("EVAL");
    eval.arg(source);
    for arg in call.args_iter().skip(2) {
        if let redis::Arg::Simple(bytes) = arg {
            eval.arg(bytes);
        }
    }
    eval
}

pub(super) fn seq_key(room: &str) -> String {
    format!("ws:{{{room}}}:seq")
}

/// The replication id of the node that numbered the room last: a replica
/// promoted since may lack the last seqs (`next_after!`).
pub(super) fn node_key(room: &str) -> String {
    format!("ws:{{{room}}}:node")
}

pub(super) fn history_key(room: &str) -> String {
    format!("ws:{{{room}}}:history")
}

pub(super) fn presence_key(room: &str) -> String {
    format!("ws:{{{room}}}:presence")
}

/// The servers `member` is in `room` on, each expiring as a presence entry
/// does: kept for rooms whose members are told of joins and leaves.
pub(super) fn member_key(room: &str, member: &str) -> String {
    format!("ws:{{{room}}}:member:{member}")
}

/// Adds this server to a member's servers in a room (ARGV[2], the TTL in
/// ms) or takes it away (ARGV[2] = '0'); when that makes the member come
/// into the room or leave it, on any server, publishes the notice
/// ARGV[4] ('' for none) to the room's channel ARGV[3] as `e\n<json>`.
/// KEYS: the member's key; ARGV: instance, TTL, channel, notice.
const MEMBER: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local before = redis.call('ZCARD', KEYS[1])
if ARGV[2] == '0' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local after = redis.call('ZCARD', KEYS[1])
if ARGV[4] ~= '' and (before == 0) ~= (after == 0) then
  redis.call('PUBLISH', ARGV[3], 'e\n' .. ARGV[4])
end
return after
";

/// A presence entry: the member, then the server it is on.
pub(super) fn presence_entry(member: &str, instance: &str) -> String {
    format!("{member}\n{instance}")
}

pub(super) fn channel(room: &str) -> String {
    format!("ws:{{{room}}}:channel")
}

/// The room of a channel name.
pub(super) fn room_of(channel: &str) -> Option<&str> {
    channel.strip_prefix("ws:{")?.strip_suffix("}:channel")
}

pub(super) const EPOCH_KEY: &str = "ws:epoch";

/// The channel every server hears the server API's commands on.
pub(super) const ADMIN_CHANNEL: &str = "ws:admin";

/// The channel a server hears the reports to its commands on.
pub(super) fn reports_channel(instance: &str) -> String {
    format!("ws:admin:{instance}")
}

/// Redis could not serve a request.
pub(super) fn unavailable(e: impl std::fmt::Display) -> EnvelopeError {
    EnvelopeError::new("unavailable", format!("the message store is unavailable: {e}"))
}

/// A message of a room's history in Redis.
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) json: String,
    /// When it was appended, in ms since the Unix epoch.
    pub(super) time: u64,
}

/// The messages of `room` with seqs `after + 1` to `upto` that the history holds, in order.
pub(super) async fn history(redis: &mut Commands, room: &str, after: u64, upto: u64) -> RedisResult<Vec<Entry>> {
    if upto <= after {
        return Ok(Vec::new());
    }
    let range = redis::cmd("XRANGE").arg(history_key(room)).arg(after + 1).arg(upto).to_owned();
    let entries: Vec<(String, Vec<String>)> = range.query_async(redis).await?;
    Ok(entries.into_iter().filter_map(|(id, fields)| entry(&id, fields)).collect())
}

/// An entry from its id, `<seq>-0`, and its fields, `m` and `t`.
pub(super) fn entry(id: &str, fields: Vec<String>) -> Option<Entry> {
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
