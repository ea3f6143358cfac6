//! A room's messages in groups, one group at a time, each one pipeline to
//! the room's node: so they are numbered in the order they came, which a
//! cluster's client does not keep for commands given to it at once.
//!
//! With durable acks, a `WAIT` ends each pipeline. Redis serves the
//! commands a client sent after a `WAIT` only once that `WAIT` is answered,
//! and then late: pairs of a write and a `WAIT` pipelined on one connection
//! take about 4 ms each, where one `WAIT` after a thousand writes takes one
//! (docs/benchmarks.md). So one `WAIT` covers the whole group; those held
//! are then published to the room's channel together, in seq order
//! (without durable acks each script publishes its message). The messages
//! that come meanwhile make the room's next group.

use super::Durable;
use super::link::Commands;
use super::store::{by_eval, channel, no_script, seq_key};
use super::watch::Nodes;
use redis::{Cmd, ErrorKind, FromRedisValue, RedisError, RedisResult, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// The most messages in one group: a bound on one pipeline.
const GROUP: usize = 256;

/// The rooms with messages being numbered or waiting to be.
#[derive(Debug)]
pub(super) struct Commits {
    redis: Commands,
    durable: Durable,
    /// The publishing script, for a node that does not have it yet.
    source: String,
    nodes: Nodes,
    /// Each room whose group is being committed, and the messages that
    /// wait for the next.
    rooms: Mutex<HashMap<String, VecDeque<Message>>>,
}

/// A message to number and, once its replicas hold it, publish.
#[derive(Debug)]
pub(super) struct Message {
    /// Its publishing script (EVALSHA); with durable acks, told to publish nothing.
    pub(super) call: Cmd,
    /// Its JSON, before and after its seq.
    pub(super) around_seq: (String, String),
    pub(super) numbered: oneshot::Sender<RedisResult<u64>>,
}

impl Commits {
    pub(super) fn new(redis: Commands, durable: Durable, source: String, nodes: Nodes) -> Arc<Commits> {
        Arc::new(Commits { redis, durable, source, nodes, rooms: Mutex::default() })
    }

    /// Numbers `message` in `room` with the room's next group: its seq once
    /// the replicas hold it and it is published, or why not. The messages
    /// of a room are numbered in the order they come here.
    pub(super) fn publish(self: &Arc<Self>, room: &str, message: Message) {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(waiting) = rooms.get_mut(room) {
            return waiting.push_back(message);
        }
        rooms.insert(room.to_owned(), VecDeque::from([message]));
        tokio::spawn(self.clone().commit_all(room.to_owned()));
    }

    /// Commits `room`'s groups until no message waits.
    async fn commit_all(self: Arc<Self>, room: String) {
        while let Some(group) = self.next_group(&room) {
            self.commit(&room, group).await;
        }
    }

    fn next_group(&self, room: &str) -> Option<Vec<Message>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        let waiting = rooms.get_mut(room)?;
        if waiting.is_empty() {
            rooms.remove(room);
            return None;
        }
        let count = waiting.len().min(GROUP);
        Some(waiting.drain(..count).collect())
    }

    /// Numbers `group`, waits for its replicas and publishes what they hold.
    async fn commit(&self, room: &str, group: Vec<Message>) {
        let mut seqs = self.number(room, &group, false).await;
        // A node started anew, or promoted, since the link loaded the
        // script: none of the group was run; once more, loading it first.
        if seqs.first().is_some_and(|seq| seq.as_ref().is_err_and(no_script)) {
            seqs = self.number(room, &group, true).await;
        }
        let held: Vec<_> =
            group.iter().zip(&seqs).filter_map(|(message, seq)| Some((message, *seq.as_ref().ok()?))).collect();
        if let Err(e) = self.announce(room, &held).await {
            seqs.iter_mut().filter(|seq| seq.is_ok()).for_each(|seq| *seq = Err(e.clone()));
        }
        for (message, seq) in group.into_iter().zip(seqs) {
            // The publisher may have stopped waiting.
            let _ = message.numbered.send(seq);
        }
    }

    /// Runs the scripts of `group`, with durable acks a `WAIT` after them:
    /// each one's seq, or an error if its replicas did not take it in time.
    /// With `load`, the first script goes by EVAL, which loads it for the others.
    async fn number(&self, room: &str, group: &[Message], load: bool) -> Vec<RedisResult<u64>> {
        let mut pipe = redis::pipe();
        for (i, message) in group.iter().enumerate() {
            pipe.add_command(if load && i == 0 { by_eval(&message.call, &self.source) } else { message.call.clone() });
        }
        let replicas = self.durable.replicas;
        if replicas > 0 {
            pipe.add_command(self.durable.wait());
        }
        let commands = group.len() + usize::from(replicas > 0);
        let _sent = self.nodes.send(&seq_key(room), commands as u32);
        let answers = pipe.ignore_errors().query_async::<Vec<RedisResult<Value>>>(&mut self.redis.clone()).await;
        let mut answers = match answers {
            Ok(answers) if answers.len() == commands => answers,
            Ok(_) => return vec![Err((ErrorKind::Parse, "a pipeline answered short").into()); group.len()],
            Err(e) => return vec![Err(e); group.len()],
        };
        let held = match replicas {
            0 => 0,
            _ => answers.pop().and_then(|held| u32::from_redis_value(held.ok()?).ok()).unwrap_or(0),
        };
        let short = (held < replicas).then(|| {
            let why = format!(
                "{held} of the {replicas} replicas asked for took the message in time (it may still be delivered: a retry with its id tells)"
            );
            RedisError::from((ErrorKind::Io, "too few replicas", why))
        });
        let seq =
            |answer: RedisResult<Value>| match (answer.and_then(|value| Ok(u64::from_redis_value(value)?)), &short) {
                (Ok(_), Some(short)) => Err(short.clone()),
                (seq, _) => seq,
            };
        answers.into_iter().map(seq).collect()
    }

    /// Publishes the `held` messages to `room`'s channel, in seq order
    /// (without durable acks their scripts did).
    async fn announce(&self, room: &str, held: &[(&Message, u64)]) -> RedisResult<()> {
        if held.is_empty() || self.durable.replicas == 0 {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (message, seq) in held {
            let (head, tail) = &message.around_seq;
            pipe.add_command(self.redis.publish_command(&channel(room), format!("{seq}\n{head}{seq}{tail}")));
        }
        let _sent = self.nodes.send(&channel(room), held.len() as u32);
        pipe.query_async::<Vec<Value>>(&mut self.redis.clone()).await.map(drop)
    }
}
