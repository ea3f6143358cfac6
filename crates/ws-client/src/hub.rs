//! A client of the ws-server hub that stays connected.
//!
//! [`HubClient::start`] connects and keeps connecting: after a drop it
//! waits with exponential backoff and full jitter (a random delay up to a
//! ceiling that doubles per attempt, at most [`Backoff::max`]), so clients do
//! not all return at the same instant after an outage. On each reconnection
//! it joins its rooms again with `since` set to the last seq it saw (at
//! the first join, the room's latest: what came before is no gap), holds
//! what arrives for a room until that room's `recovered`, and hands the
//! application every message once, in seq order, or a [`HubEvent::Gap`] for
//! what it can no longer get. Messages sent with [`HubClient::send`] carry an
//! id and are sent again after a reconnection until acked; the server knows
//! a retry by its id and does not publish it twice. Given more than one
//! URL of the hub ([`HubSettings::servers`]), it moves to the next after a
//! drop or a failed attempt, so a client whose server is gone goes to another.
//! Its joins carry ids too: a join refused for a while (`unavailable`,
//! `rate_limited`) is sent again after a backoff, one that the room does not
//! offer recovery with `since` (`not_offered`) is sent again without it, and
//! a room refused otherwise is left, the application told by the `error`.

use crate::{ClientSettings, Stream, connect};
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, interval};
use ws_proto::{CloseCode, Event, Message};
use ws_tokio::WebSocket;

/// How long to wait between connection attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first attempt's delay.
    pub initial: Duration,
    /// The highest ceiling.
    pub max: Duration,
}

impl Default for Backoff {
    /// 0.5 s doubling up to 30 s.
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The ceiling of attempt `attempt` (from 0): `initial` doubled per attempt, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.initial.saturating_mul(1 << attempt.min(31)).min(self.max)
    }

    /// A delay for attempt `attempt`: uniform between zero and its ceiling (full jitter).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.ceiling(attempt).mul_f64(rand::random::<f64>())
    }
}

/// What the client was given.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// Where to connect first and what to offer.
    pub connection: ClientSettings,
    /// Other URLs of the same hub, tried in turn after `connection.url`:
    /// each drop or failed attempt moves to the next, round all of them.
    pub servers: Vec<String>,
    /// The wait between attempts.
    pub backoff: Backoff,
    /// A ping is sent after this long without hearing from the server, and
    /// the connection is given up after twice as long.
    pub heartbeat: Duration,
    /// Where the tokens come from, if the server wants them: one for every
    /// connection, and a fresh one whenever the server asks (`refresh`).
    pub token: Option<TokenSource>,
}

impl HubSettings {
    /// `connection` with the default backoff, a 30 s heartbeat and no token source.
    pub fn new(connection: ClientSettings) -> Self {
        HubSettings {
            connection,
            servers: Vec::new(),
            backoff: Backoff::default(),
            heartbeat: Duration::from_secs(30),
            token: None,
        }
    }

    /// The URL of attempt `turn` (from 0): `connection.url`, then each of `servers`, round again.
    fn url(&self, turn: usize) -> &str {
        match turn % (self.servers.len() + 1) {
            0 => &self.connection.url,
            n => &self.servers[n - 1],
        }
    }
}

/// A source of tokens for the connection: a callback that returns a
/// fresh token (a JWT for the same user each time), or why it has none.
/// It may block, as a command or a request to the application's backend
/// does: it is called on a thread of its own.
#[derive(Clone)]
pub struct TokenSource(Arc<dyn Fn() -> Result<String, String> + Send + Sync>);

impl TokenSource {
    /// The source that calls `fetch`.
    pub fn new(fetch: impl Fn() -> Result<String, String> + Send + Sync + 'static) -> Self {
        TokenSource(Arc::new(fetch))
    }

    /// A fresh token, or why there is none.
    pub async fn fetch(&self) -> Result<String, String> {
        let fetch = self.0.clone();
        tokio::task::spawn_blocking(move || fetch()).await.map_err(|e| format!("the token source failed: {e}"))?
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSource")
    }
}

/// What the application hears.
#[derive(Debug, Clone, PartialEq)]
pub enum HubEvent {
    /// A connection is open; the client's rooms are being joined again.
    Connected,
    /// The connection ended: the server's close code and reason, if it sent a close.
    Disconnected {
        /// The close code.
        code: Option<u16>,
        /// The reason, or what failed.
        reason: String,
    },
    /// The next attempt comes after `delay`, drawn up to `ceiling`.
    Reconnecting {
        /// The attempt, from 1.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
        /// The highest wait this attempt could have drawn.
        ceiling: Duration,
    },
    /// A room's message, each once and in seq order.
    Message {
        /// The room.
        room: String,
        /// Its seq in the room.
        seq: u64,
        /// The whole envelope: `id`, `time`, `sender`, `content` and/or `data`, ...
        envelope: Value,
    },
    /// Messages `from` to `to` of `room` will not arrive.
    Gap {
        /// The room.
        room: String,
        /// The first seq missed.
        from: u64,
        /// The last seq missed.
        to: u64,
    },
    /// The room's numbering started over (the server lost its history, as an
    /// in-memory server does when restarted). The client asks for all the
    /// room holds now; what the old numbering had and the client missed is lost.
    Renumbered {
        /// The room.
        room: String,
    },
    /// Any other envelope from the server: `system`, `joined`, `ack`, `error`, ...
    Envelope(Value),
    /// The server refused the connection with an HTTP status that trying
    /// again will not change (a 4xx other than 408 and 429): the client stops.
    Refused {
        /// The HTTP status.
        status: u16,
        /// Why, as the server put it.
        reason: String,
    },
}

/// What the application asks of the client's task.
#[derive(Debug)]
enum Command {
    Join(String),
    Leave(String),
    Send(String, String),
    Close,
}

/// A handle to a hub client running on a task of its own; dropping every
/// handle closes it.
#[derive(Debug, Clone)]
pub struct HubClient {
    commands: mpsc::UnboundedSender<Command>,
    /// Makes this client's message ids its own.
    id_prefix: String,
    next_id: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl HubClient {
    /// Starts the client, and returns it with the stream of its events.
    pub fn start(settings: HubSettings) -> (HubClient, mpsc::Receiver<HubEvent>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (events, listener) = mpsc::channel(1024);
        let id_prefix = format!("{:016x}", rand::random::<u64>());
        let connector = Connector {
            settings,
            events,
            rooms: BTreeMap::new(),
            pending: VecDeque::new(),
            id_prefix: id_prefix.clone(),
            joins: 0,
        };
        tokio::spawn(connector.run(receiver));
        (HubClient { commands, id_prefix, next_id: Default::default() }, listener)
    }

    /// Joins `room`, now and after every reconnection.
    pub fn join(&self, room: &str) {
        let _ = self.commands.send(Command::Join(room.to_owned()));
    }

    /// Leaves `room`.
    pub fn leave(&self, room: &str) {
        let _ = self.commands.send(Command::Leave(room.to_owned()));
    }

    /// Sends `content` to `room`, now or after the next reconnection, until
    /// acked; returns the message's id, which its `ack` carries.
    pub fn send(&self, room: &str, content: &str) -> String {
        self.publish(json!({"type": "message", "room": room, "content": content}))
    }

    /// Sends `data`, any JSON value, to `room`, as [`HubClient::send`] sends
    /// a text; members receive it as the message's `data`.
    pub fn send_data(&self, room: &str, data: &Value) -> String {
        self.publish(json!({"type": "message", "room": room, "data": data}))
    }

    /// Sends the message `envelope` with an id of its own until acked; the id.
    fn publish(&self, mut envelope: Value) -> String {
        let n = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-{n}", self.id_prefix);
        envelope["id"] = Value::from(id.as_str());
        let _ = self.commands.send(Command::Send(id.clone(), envelope.to_string()));
        id
    }

    /// Closes the connection (1000) and stops reconnecting.
    pub fn close(&self) {
        let _ = self.commands.send(Command::Close);
    }
}

/// A refusal that is final, a 4xx but 408 (timeout) and 429 (too many):
/// its status and reason; any other error as it is.
fn refusal(error: ws_tokio::Error) -> Result<(u16, String), ws_tokio::Error> {
    match error {
        ws_tokio::Error::Refused { status, reason, .. }
            if (400..500).contains(&status) && ![408, 429].contains(&status) =>
        {
            Ok((status, reason))
        }
        other => Err(other),
    }
}

/// A room the client is in.
#[derive(Debug, Default)]
struct Room {
    /// Whether a `joined` of it came: every join after the first asks for
    /// what was missed (`since`), even when nothing was seen yet.
    joined: bool,
    /// The last seq handed to the application, or reported missed; at the
    /// first join, the room's latest (what came before is not asked for).
    seen: u64,
    /// The epoch of the room's numbering, from its last `joined`.
    epoch: Option<String>,
    /// While the room is being recovered, what arrived, by seq: messages,
    /// and gaps (by their first seq).
    held: Option<BTreeMap<u64, Value>>,
    /// Joins with `since` whose `recovered` has not come yet.
    recovering: u32,
    /// The id of the last join sent, which an `error` about it carries.
    join_id: String,
    /// The room refused `since` (`not_offered`): joined without it.
    no_recovery: bool,
    /// Refusals for a while since the last `joined`: the backoff's attempt.
    refusals: u32,
    /// When the join goes again, after a refusal for a while.
    rejoin_at: Option<Instant>,
}

/// Why a connection ended.
enum End {
    Closed,
    Dropped(Option<u16>, String),
}

/// The client's task: its rooms, its unacked messages, and the connection.
struct Connector {
    settings: HubSettings,
    events: mpsc::Sender<HubEvent>,
    rooms: BTreeMap<String, Room>,
    /// Sent and not acked: id and envelope, in order.
    pending: VecDeque<(String, String)>,
    /// Makes the ids of joins the client's own, as those of its messages.
    id_prefix: String,
    /// Joins sent, for their ids.
    joins: u64,
}

impl Connector {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut attempt = 0;
        for turn in 0.. {
            match self.connect(self.settings.url(turn)).await {
                Ok((ws, _)) => {
                    attempt = 0;
                    self.emit(HubEvent::Connected).await;
                    match self.serve(ws, &mut commands).await {
                        End::Closed => return,
                        End::Dropped(code, reason) => self.emit(HubEvent::Disconnected { code, reason }).await,
                    }
                }
                Err(e) => match refusal(e) {
                    Ok((status, reason)) => return self.emit(HubEvent::Refused { status, reason }).await,
                    Err(e) => self.emit(HubEvent::Disconnected { code: None, reason: e.to_string() }).await,
                },
            }
            let backoff = self.settings.backoff;
            let (delay, ceiling) = (backoff.delay(attempt), backoff.ceiling(attempt));
            attempt += 1;
            self.emit(HubEvent::Reconnecting { attempt, delay, ceiling }).await;
            let wake = Instant::now() + delay;
            while let Ok(command) = tokio::time::timeout_at(wake, commands.recv()).await {
                match command {
                    Some(Command::Close) | None => return,
                    Some(command) => self.take_offline(command),
                }
            }
        }
    }

    /// Connects to `url`, with a fresh token from the source, if there is one.
    async fn connect(
        &self,
        url: &str,
    ) -> Result<(WebSocket<Stream>, ws_proto::handshake::client::Response), ws_tokio::Error> {
        let mut connection = ClientSettings { url: url.to_owned(), ..self.settings.connection.clone() };
        if let Some(source) = &self.settings.token {
            let token = source
                .fetch()
                .await
                .map_err(|e| ws_tokio::Error::Io(std::io::Error::other(format!("no token: {e}"))))?;
            connection.headers.push(("Authorization".to_owned(), format!("Bearer {token}")));
        }
        connect(&connection).await
    }

    /// The server asks for a fresh token for the connection: sent, if the source gives one.
    async fn refresh(&self, ws: &mut WebSocket<Stream>) {
        let Some(source) = &self.settings.token else { return };
        match source.fetch().await {
            // Fails only once the connection is closing: the next one takes a fresh token anyway.
            Ok(token) => _ = ws.queue(&Message::from(json!({"type": "refresh", "token": token}).to_string())),
            Err(e) => self.emit(HubEvent::Envelope(json!({"type": "error", "code": "no_token", "message": e}))).await,
        }
    }

    async fn emit(&self, event: HubEvent) {
        // The application stopped listening: nothing left to tell.
        let _ = self.events.send(event).await;
    }

    /// A command while there is no connection: remembered for the next.
    fn take_offline(&mut self, command: Command) {
        match command {
            Command::Join(room) => {
                self.rooms.entry(room).or_default();
            }
            Command::Leave(room) => {
                self.rooms.remove(&room);
            }
            Command::Send(id, envelope) => self.pending.push_back((id, envelope)),
            Command::Close => {}
        }
    }

    /// Serves one connection: rejoins, resends, then relays both ways.
    async fn serve(&mut self, mut ws: WebSocket<Stream>, commands: &mut mpsc::UnboundedReceiver<Command>) -> End {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            if let Some(state) = self.rooms.get_mut(&room) {
                // What the last connection was recovering comes again in this one's replay.
                (state.held, state.recovering) = (None, 0);
            }
            self.send_join(&room, &mut ws);
        }
        for (_, envelope) in &self.pending {
            let _ = ws.queue(&Message::from(envelope.as_str()));
        }
        let mut heartbeat = interval(self.settings.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let mut close = (None, "the connection ended".to_owned());
        loop {
            let rejoin_at = self.rooms.values().filter_map(|state| state.rejoin_at).min();
            tokio::select! {
                _ = tokio::time::sleep_until(rejoin_at.unwrap_or_else(Instant::now)), if rejoin_at.is_some() => {
                    self.rejoin_due(&mut ws);
                }
                event = ws.recv() => match event {
                    Some(Ok(event)) => {
                        last_heard = Instant::now();
                        match event {
                            Event::Message(Message::Text(text)) => self.receive(text.as_str(), &mut ws).await,
                            Event::Close(Some(frame)) => close = (Some(frame.code.0), frame.reason.as_str().to_owned()),
                            _ => {}
                        }
                    }
                    Some(Err(e)) => return End::Dropped(e.close_code().map(|c| c.0), e.to_string()),
                    None => return End::Dropped(close.0, close.1),
                },
                command = commands.recv() => match command {
                    Some(Command::Close) | None => {
                        let _ = ws.close(CloseCode::NORMAL, "").await;
                        return End::Closed;
                    }
                    Some(command) => self.take_online(command, &mut ws),
                },
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > self.settings.heartbeat * 2 {
                        return End::Dropped(None, "the server went silent".into());
                    }
                    let _ = ws.queue_ping(b"");
                }
            }
        }
    }

    /// A command while connected: remembered, and sent.
    fn take_online(&mut self, command: Command, ws: &mut WebSocket<Stream>) {
        let envelope = match &command {
            Command::Join(room) if !self.rooms.contains_key(room) => {
                let room = room.clone();
                self.take_offline(command);
                return self.send_join(&room, ws);
            }
            Command::Leave(room) => json!({"type": "leave", "room": room}).to_string(),
            Command::Send(_, envelope) => envelope.clone(),
            Command::Join(_) | Command::Close => return,
        };
        self.take_offline(command);
        // Fails only once the connection is closing: the command is then kept for the next.
        let _ = ws.queue(&Message::from(envelope));
    }

    /// Sends the join of `room`, with an id of its own; once joined before
    /// (and where the room offers it), with `since`, holding what arrives
    /// until its `recovered`.
    fn send_join(&mut self, room: &str, ws: &mut WebSocket<Stream>) {
        let Some(state) = self.rooms.get_mut(room) else { return };
        self.joins += 1;
        state.join_id = format!("{}-j{}", self.id_prefix, self.joins);
        state.rejoin_at = None;
        let mut join = json!({"type": "join", "room": room, "id": state.join_id});
        if state.joined && !state.no_recovery {
            join["since"] = Value::from(state.seen);
            state.held.get_or_insert_default();
            state.recovering += 1;
        }
        // Fails only once the connection is closing: the next one joins again.
        let _ = ws.queue(&Message::from(join.to_string()));
    }

    /// Sends the joins whose wait after a refusal is over.
    fn rejoin_due(&mut self, ws: &mut WebSocket<Stream>) {
        let now = Instant::now();
        let due = self.rooms.iter().filter(|(_, state)| state.rejoin_at.is_some_and(|at| at <= now));
        let due: Vec<String> = due.map(|(room, _)| room.clone()).collect();
        for room in due {
            self.send_join(&room, ws);
        }
    }

    /// An envelope from the server.
    async fn receive(&mut self, text: &str, ws: &mut WebSocket<Stream>) {
        let Ok(envelope) = serde_json::from_str::<Value>(text) else { return };
        let room = envelope["room"].as_str().unwrap_or_default().to_owned();
        match envelope["type"].as_str().unwrap_or_default() {
            "message" => return self.message(room, envelope).await,
            "joined" => {
                let (latest, epoch) = (envelope["seq"].as_u64().unwrap_or(0), envelope["epoch"].as_str());
                self.joined(&room, latest, epoch.unwrap_or_default(), ws).await;
            }
            "recovered" => self.recovered(&room).await,
            // The connection's token, not a room's (joined with a room token elsewhere).
            "refresh" if envelope.get("room").is_none() => self.refresh(ws).await,
            "gap" => return self.gap(room, envelope).await,
            "error" if self.refused_join(&envelope, ws).await => {}
            // Acked, or refused for good: not to be sent again.
            "ack" | "error" => {
                let id = envelope["id"].as_str().unwrap_or_default();
                self.pending.retain(|(pending, _)| pending != id);
            }
            _ => {}
        }
        self.emit(HubEvent::Envelope(envelope)).await;
    }

    /// Whether `envelope`, an `error`, is about a join: if so, the join is
    /// sent again after a backoff (refused for a while), at once without
    /// `since` (the room offers no recovery), or the room is left.
    async fn refused_join(&mut self, envelope: &Value, ws: &mut WebSocket<Stream>) -> bool {
        let id = envelope["id"].as_str().unwrap_or_default();
        let Some((room, state)) = self.rooms.iter_mut().find(|(_, state)| !id.is_empty() && state.join_id == id) else {
            return false;
        };
        let room = room.clone();
        match envelope["code"].as_str().unwrap_or_default() {
            "unavailable" | "rate_limited" => {
                state.recovering = state.recovering.saturating_sub(1);
                state.rejoin_at = Some(Instant::now() + self.settings.backoff.delay(state.refusals));
                state.refusals += 1;
            }
            "not_offered" if state.recovering > 0 => {
                state.no_recovery = true;
                // What was held goes on as it is, once no other replay is awaited.
                self.recovered(&room).await;
                self.send_join(&room, ws);
            }
            _ => _ = self.rooms.remove(&room),
        }
        true
    }

    /// The room's latest seq and epoch. Another epoch than before, or a
    /// latest seq below what the client saw, means the room was numbered
    /// again: what the client saw counts for nothing, and it asks for
    /// everything the room holds. In a room that offers no recovery, what
    /// came after the last seq seen is told as a gap.
    async fn joined(&mut self, room: &str, latest: u64, epoch: &str, ws: &mut WebSocket<Stream>) {
        let Some(state) = self.rooms.get_mut(room) else { return };
        let renumbered = state.epoch.as_deref().is_some_and(|seen| seen != epoch) || latest < state.seen;
        state.epoch = Some(epoch.to_owned());
        state.refusals = 0;
        if !std::mem::replace(&mut state.joined, true) {
            // The first join: messages from the next on.
            state.seen = latest;
            return;
        }
        if state.no_recovery {
            // Joined without `since`: what came after the last seq seen was missed.
            let from = std::mem::replace(&mut state.seen, latest) + 1;
            return match renumbered {
                true => self.emit(HubEvent::Renumbered { room: room.to_owned() }).await,
                false if from <= latest => self.emit(HubEvent::Gap { room: room.to_owned(), from, to: latest }).await,
                false => {}
            };
        }
        if !renumbered || state.seen == 0 {
            return;
        }
        state.seen = 0;
        self.send_join(room, ws);
        self.emit(HubEvent::Renumbered { room: room.to_owned() }).await;
    }

    /// A replay is complete: once every one asked for is, what was held goes out in order.
    async fn recovered(&mut self, room: &str) {
        let Some(state) = self.rooms.get_mut(room) else { return };
        state.recovering = state.recovering.saturating_sub(1);
        if state.recovering > 0 {
            return;
        }
        let Some(held) = state.held.take() else { return };
        for (_, envelope) in held {
            match envelope["type"] == "gap" {
                true => self.gap(room.to_owned(), envelope).await,
                false => self.message(room.to_owned(), envelope).await,
            }
        }
    }

    /// Seqs the server will not send: held in their place while the room
    /// recovers (the replay may still bring the messages before them), else
    /// told at once.
    async fn gap(&mut self, room: String, envelope: Value) {
        let (from, to) = (envelope["from"].as_u64().unwrap_or(0), envelope["to"].as_u64().unwrap_or(0));
        if let Some(state) = self.rooms.get_mut(&room) {
            if let Some(held) = &mut state.held {
                held.entry(from).or_insert(envelope);
                return;
            }
            state.seen = state.seen.max(to);
        }
        self.emit(HubEvent::Gap { room, from, to }).await;
    }

    /// A message: held while its room recovers, dropped if already seen,
    /// else handed on, after a gap if seqs were skipped.
    async fn message(&mut self, room: String, envelope: Value) {
        let seq = envelope["seq"].as_u64().unwrap_or(0);
        let Some(state) = self.rooms.get_mut(&room) else {
            // A room the application did not join (the server's default room): as it comes.
            return self.emit(HubEvent::Message { room, seq, envelope }).await;
        };
        if let Some(held) = &mut state.held {
            held.insert(seq, envelope);
            return;
        }
        if seq <= state.seen {
            return;
        }
        let from = state.seen + 1;
        state.seen = seq;
        if from < seq {
            self.emit(HubEvent::Gap { room: room.clone(), from, to: seq - 1 }).await;
        }
        self.emit(HubEvent::Message { room, seq, envelope }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_maximum_and_delays_stay_under_them() {
        let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1) };
        let ceilings: Vec<u64> = (0..7).map(|a| backoff.ceiling(a).as_millis() as u64).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff.ceiling(u32::MAX), backoff.max);
        for attempt in 0..40 {
            for _ in 0..100 {
                assert!(backoff.delay(attempt) <= backoff.ceiling(attempt));
            }
        }
    }

    #[test]
    fn delays_are_spread_not_all_the_same() {
        let backoff = Backoff::default();
        let delays: std::collections::HashSet<Duration> = (0..100).map(|_| backoff.delay(5)).collect();
        assert!(delays.len() > 50, "full jitter spreads the clients: {} distinct delays of 100", delays.len());
    }
}
