//! What the chaos run saw: every message a publisher sent and what became of
//! it, and every member's deliveries and gaps, room by room; then the audit
//! of one against the other.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;
use ws_client::hub::HubEvent;

/// A message a publisher sent.
pub struct Sent {
    /// Its id, which its ack carries.
    pub id: String,
    /// What its content starts with, `publisher-n`, which members see.
    pub key: String,
    /// Its room.
    pub room: String,
    /// The client that sent it.
    pub publisher: usize,
    /// Its place among its publisher's messages, from 0.
    pub n: u64,
    /// What the server answered.
    pub answer: Answer,
    /// When it was sent and answered, in seconds of the run.
    pub times: (f64, f64),
    /// The `sender` members saw: the publisher's connection that published it.
    pub sender: Option<String>,
}

/// What the server answered to a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Nothing yet.
    Waiting,
    /// `ack`, with the seq it got.
    Acked(u64),
    /// `error`, with its code: the message may or may not have been published.
    Refused(String),
}

/// One client's view of one room.
#[derive(Default)]
pub struct Membership {
    /// The room's latest seq at the first `joined`: what came before is not for this member.
    pub start: Option<u64>,
    /// The last seq delivered or told missed.
    pub reached: u64,
    /// Deliveries: seq and the message's index among those sent, in seq order.
    pub delivered: Vec<(u64, u32)>,
    /// Gaps told: first and last seq missed.
    pub gaps: Vec<(u64, u64)>,
}

impl Membership {
    fn told_missed(&self, seq: u64) -> bool {
        self.gaps.iter().any(|&(from, to)| (from..=to).contains(&seq))
    }

    /// Whether the message `index`, numbered `seq`, was delivered; an error
    /// naming what was delivered as `seq` instead.
    fn got(&self, seq: u64, index: u32) -> Result<bool, u32> {
        match self.delivered.binary_search_by_key(&seq, |(s, _)| *s) {
            Ok(i) if self.delivered[i].1 == index => Ok(true),
            Ok(i) => Err(self.delivered[i].1),
            Err(_) => Ok(false),
        }
    }
}

/// A message's key: the first word of its content.
pub fn key(envelope: &Value) -> &str {
    envelope["content"].as_str().unwrap_or_default().split(' ').next().unwrap_or_default()
}

/// One client's view of everything.
#[derive(Default)]
pub struct Client {
    /// Its rooms.
    pub rooms: BTreeMap<String, Membership>,
    /// Connections opened.
    pub connections: u64,
    /// Connections closed by the server as a slow consumer (1008 "slow consumer").
    pub slow_closes: u64,
    /// Joins refused for a while (`unavailable`), and sent again.
    pub joins_refused: u64,
}

/// Everything, shared by the run's tasks.
pub struct Record {
    begun: Instant,
    /// Sent messages, in the order sent.
    pub sent: Vec<Sent>,
    ids: HashMap<String, u32>,
    keys: HashMap<String, u32>,
    published: HashMap<usize, u64>,
    /// Clients by index.
    pub clients: Vec<Client>,
    /// What broke a promise, as it was seen.
    pub violations: Vec<String>,
}

impl Record {
    /// A record of `clients` clients.
    pub fn new(clients: usize) -> Record {
        Record {
            begun: Instant::now(),
            sent: Vec::new(),
            ids: HashMap::new(),
            keys: HashMap::new(),
            published: HashMap::new(),
            clients: (0..clients).map(|_| Client::default()).collect(),
            violations: Vec::new(),
        }
    }

    /// The key of `publisher`'s next message, its content's first word.
    pub fn next_key(&self, publisher: usize) -> String {
        format!("{publisher}-{}", self.published.get(&publisher).copied().unwrap_or(0))
    }

    /// Takes note that `publisher` sent its next message, `id`, to `room`.
    pub fn sent(&mut self, publisher: usize, id: String, room: &str) {
        let (key, index, now) = (self.next_key(publisher), self.sent.len() as u32, self.begun.elapsed().as_secs_f64());
        let n = self.published.entry(publisher).or_default();
        self.ids.insert(id.clone(), index);
        self.keys.insert(key.clone(), index);
        let answer = Answer::Waiting;
        self.sent.push(Sent {
            id,
            key,
            room: room.to_owned(),
            publisher,
            n: *n,
            answer,
            times: (now, 0.0),
            sender: None,
        });
        *n += 1;
    }

    /// What client `c` heard.
    pub fn heard(&mut self, c: usize, event: HubEvent) {
        match event {
            HubEvent::Connected => self.clients[c].connections += 1,
            HubEvent::Disconnected { code: Some(1008), reason } if reason.contains("slow") => {
                self.clients[c].slow_closes += 1
            }
            HubEvent::Message { room, seq, envelope } => self.delivered(c, &room, seq, &envelope),
            HubEvent::Gap { room, from, to } => {
                let membership = self.clients[c].rooms.entry(room).or_default();
                membership.gaps.push((from, to));
                membership.reached = membership.reached.max(to);
            }
            HubEvent::Renumbered { room } => {
                self.violations.push(format!("client {c}: {room} was numbered again, with Redis keeping its data"))
            }
            HubEvent::Envelope(envelope) => self.envelope(c, &envelope),
            _ => {}
        }
    }

    fn delivered(&mut self, c: usize, room: &str, seq: u64, envelope: &Value) {
        let membership = self.clients[c].rooms.entry(room.to_owned()).or_default();
        if seq <= membership.reached {
            let reached = membership.reached;
            self.violations.push(format!("client {c}: {room} seq {seq} delivered after seq {reached}"));
            return;
        }
        membership.reached = seq;
        match self.keys.get(key(envelope)) {
            Some(&index) => {
                membership.delivered.push((seq, index));
                let sender = &mut self.sent[index as usize].sender;
                if sender.is_none() {
                    *sender = envelope["sender"].as_str().map(str::to_owned);
                }
            }
            None => self.violations.push(format!("client {c}: {room} seq {seq} is no message sent: {envelope}")),
        }
    }

    fn envelope(&mut self, c: usize, envelope: &Value) {
        let id = envelope["id"].as_str().unwrap_or_default();
        match envelope["type"].as_str().unwrap_or_default() {
            "joined" => {
                let room = envelope["room"].as_str().unwrap_or_default().to_owned();
                let membership = self.clients[c].rooms.entry(room).or_default();
                if membership.start.is_none() {
                    let latest = envelope["seq"].as_u64().unwrap_or(0);
                    membership.start = Some(latest);
                    membership.reached = latest;
                }
            }
            "ack" => self.answered(id, Answer::Acked(envelope["seq"].as_u64().unwrap_or(0))),
            "error" if self.ids.contains_key(id) => {
                self.answered(id, Answer::Refused(envelope["code"].as_str().unwrap_or_default().to_owned()))
            }
            // A join refused for a while: the client sends it again.
            "error" if !id.is_empty() && matches!(envelope["code"].as_str(), Some("unavailable" | "rate_limited")) => {
                self.clients[c].joins_refused += 1
            }
            "error" => self.violations.push(format!("client {c}: an error about no message sent: {envelope}")),
            _ => {}
        }
    }

    fn answered(&mut self, id: &str, answer: Answer) {
        let now = self.begun.elapsed().as_secs_f64();
        let Some(sent) = self.ids.get(id).map(|&index| &mut self.sent[index as usize]) else {
            return self.violations.push(format!("an answer for no message sent: {id} {answer:?}"));
        };
        match (&sent.answer, &answer) {
            (Answer::Waiting, _) => (sent.answer, sent.times.1) = (answer, now),
            // A retry of an acked message is acked again, with the same seq.
            (Answer::Acked(seq), Answer::Acked(again)) if seq == again => {}
            (first, _) => self.violations.push(format!("message {id} answered {first:?}, then {answer:?}")),
        }
    }

    /// Messages not answered yet.
    pub fn waiting(&self) -> usize {
        self.sent.iter().filter(|s| s.answer == Answer::Waiting).count()
    }

    /// The highest acked seq of each room.
    pub fn latest(&self) -> BTreeMap<String, u64> {
        let mut latest = BTreeMap::new();
        for sent in &self.sent {
            if let Answer::Acked(seq) = sent.answer {
                let top = latest.entry(sent.room.clone()).or_insert(0);
                *top = seq.max(*top);
            }
        }
        latest
    }

    /// Members that have not yet reached their rooms' latest acked seq.
    pub fn behind(&self) -> usize {
        let latest = self.latest();
        let reached = |(room, m): (&String, &Membership)| m.reached >= latest.get(room).copied().unwrap_or(0);
        self.clients.iter().flat_map(|c| &c.rooms).filter(|&member| !reached(member)).count()
    }

    /// Audits every acked message against every member and against
    /// `history`, each room's messages as a fresh member replays them (seq
    /// to key), and every delivery against every other. With `lossy`
    /// Redis may have lost acked messages: one missing from the history is
    /// forgiven, its seq holding another message is not.
    pub fn audit(&mut self, history: &BTreeMap<String, BTreeMap<u64, String>>, lossy: bool) {
        let mut found = self.audit_deliveries();
        found.extend(self.audit_history(history, lossy));
        found.extend(self.audit_members());
        found.extend(self.audit_order());
        self.violations.extend(found);
    }

    /// The acked messages, with their indexes and seqs.
    fn acked(&self) -> impl Iterator<Item = (u32, &Sent, u64)> {
        let acked = self.sent.iter().enumerate();
        acked.filter_map(|(index, sent)| match sent.answer {
            Answer::Acked(seq) => Some((index as u32, sent, seq)),
            _ => None,
        })
    }

    /// Acked messages the room's history does not hold as numbered (with
    /// `lossy`, only those whose seq it holds as another message).
    fn audit_history(&self, history: &BTreeMap<String, BTreeMap<u64, String>>, lossy: bool) -> Vec<String> {
        let kept = |sent: &Sent, seq| history.get(&sent.room).and_then(|h| h.get(&seq));
        let wrong = |sent: &Sent, seq| match kept(sent, seq) {
            None => !lossy,
            Some(key) => *key != sent.key,
        };
        let lost = self.acked().filter(|&(_, sent, seq)| wrong(sent, seq));
        lost.map(|(_, s, seq)| {
            format!("acked {} ({} seq {seq}) is {:?} in the room's history", s.key, s.room, kept(s, seq))
        })
        .collect()
    }

    /// Per member and room, the acked seqs it neither got nor was told
    /// missed, and those it got as another message.
    fn audit_members(&self) -> Vec<String> {
        let mut by_room: HashMap<&str, Vec<(u32, &Sent, u64)>> = HashMap::new();
        for acked in self.acked() {
            by_room.entry(&acked.1.room).or_default().push(acked);
        }
        let mut found = Vec::new();
        for (c, client) in self.clients.iter().enumerate() {
            for (room, membership) in &client.rooms {
                let start = membership.start.unwrap_or(u64::MAX);
                let mut missed = Vec::new();
                let acked = by_room.get(room.as_str()).map_or(&[][..], Vec::as_slice);
                for &(index, sent, seq) in acked.iter().filter(|(_, _, seq)| *seq > start) {
                    match membership.got(seq, index) {
                        Ok(true) => {}
                        Ok(false) if membership.told_missed(seq) => {}
                        Ok(false) => missed.push(seq),
                        Err(other) => {
                            let other = &self.sent[other as usize].key;
                            found.push(format!("client {c}: {room} seq {seq} is {other}, acked as {}", sent.key));
                        }
                    }
                }
                if !missed.is_empty() {
                    missed.sort_unstable();
                    let delivered: Vec<u64> = membership.delivered.iter().map(|(seq, _)| *seq).collect();
                    found.push(format!(
                        "client {c}: {room}: acked seqs {} neither delivered nor told missed (delivered {}; gaps told {:?})",
                        ranges(&missed),
                        ranges(&delivered),
                        membership.gaps
                    ));
                }
            }
        }
        found
    }

    /// Each publisher's acked messages to a room numbered in the order it sent them.
    fn audit_order(&self) -> Vec<String> {
        let mut by_publisher: BTreeMap<(usize, &str), Vec<(&Sent, u64)>> = BTreeMap::new();
        for (_, sent, seq) in self.acked() {
            by_publisher.entry((sent.publisher, &sent.room)).or_default().push((sent, seq));
        }
        let mut found = Vec::new();
        for ((publisher, room), acked) in by_publisher {
            for pair in acked.windows(2).filter(|pair| pair[0].1 >= pair[1].1) {
                let [(first, one), (then, other)] = [pair[0], pair[1]];
                found.push(format!(
                    "publisher {publisher}'s {} got {room} seq {one} and its next, {}, seq {other} (sent at {:.3} and {:.3} s, acked at {:.3} and {:.3} s, published by {} and {})",
                    first.key, then.key, first.times.0, then.times.0, first.times.1, then.times.1,
                    first.sender.as_deref().unwrap_or("?"), then.sender.as_deref().unwrap_or("?")
                ));
            }
        }
        found
    }

    /// Deliveries that disagree: one seq of a room two messages, or one message two seqs.
    fn audit_deliveries(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut numbered: HashMap<(&str, u64), u32> = HashMap::new();
        let mut seq_of: HashMap<u32, u64> = HashMap::new();
        for (c, client) in self.clients.iter().enumerate() {
            for (room, membership) in &client.rooms {
                for &(seq, index) in &membership.delivered {
                    let key = &self.sent[index as usize].key;
                    if let Some(other) = numbered.insert((room, seq), index).filter(|&other| other != index) {
                        let other = &self.sent[other as usize].key;
                        found.push(format!("{room} seq {seq} is {key} for client {c} and {other} for another"));
                    }
                    if let Some(other) = seq_of.insert(index, seq).filter(|&other| other != seq) {
                        found.push(format!("message {key} delivered as {room} seq {seq} and seq {other}: twice"));
                    }
                }
            }
        }
        found
    }
}

/// Sorted seqs as ranges: `1-5, 8, 10-12`.
fn ranges(seqs: &[u64]) -> String {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for &seq in seqs {
        match ranges.last_mut() {
            Some(last) if last.1 + 1 == seq => last.1 = seq,
            _ => ranges.push((seq, seq)),
        }
    }
    let ranges = ranges.iter().map(|&(from, to)| if from == to { from.to_string() } else { format!("{from}-{to}") });
    ranges.collect::<Vec<_>>().join(", ")
}
