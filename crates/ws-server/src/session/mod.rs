//! One hub connection: its envelopes in, its rooms' messages out.
//!
//! The session owns the WebSocket and one broadcast receiver per room it
//! joined. It never waits on the client: what the client is sent is queued,
//! and the queue is bounded in bytes. A client that falls behind by more is
//! a slow consumer, disconnected (close 1008) or skipped with a `gap`
//! notice, as configured.

mod delivery;
pub mod echo;
mod requests;

use crate::envelope::{self, EnvelopeError, Outgoing};
use crate::hooks::events::Kind;
use crate::hub::fanout::Member;
use crate::hub::{Replay, Subscription};
use crate::policy::auth::Identity;
use crate::policy::limits::{Permit, TokenBucket};
use crate::pulse::{Listener, Order, Signal};
use crate::server::{Presence, Server};
use delivery::BATCH;
use std::collections::VecDeque;
use std::num::NonZeroU64;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;
use ws_proto::{CloseCode, FrameHeader, Message, OpCode, State};
use ws_tokio::WebSocket;

/// A room the client is in.
#[derive(Debug)]
struct Membership {
    /// Its place in the room's fan-out, which knows the room's name.
    member: Member,
    /// The last seq sent to the client, or skipped past.
    delivered: u64,
    /// Seqs skipped and not yet reported: first and last (a seq is never 0,
    /// which keeps the option in two words).
    gap: Option<(NonZeroU64, u64)>,
    /// The last seq that left the room's fan-out before the client took it.
    /// While it is past `delivered`, the room waits for the lost seqs to be
    /// fetched from its history, between the client's requests.
    lost: u64,
    /// When the room token the client joined with expires, in seconds since
    /// the Unix epoch; 0 when its connection's token let it in.
    token_expires: u64,
}

/// A membership fits a jemalloc size class of 64 bytes.
const _: () = assert!(size_of::<Membership>() <= 64);

/// The close code of a connection whose token expired unrefreshed.
pub const TOKEN_EXPIRED: CloseCode = CloseCode(4001);

/// What the server answered a request of the session: at once, or later
/// ([`Pending`]). Each carries what the session needs to tell the client.
enum Done {
    /// A message was published, or could not be.
    Published { id: Option<String>, seq: Result<u64, EnvelopeError> },
    /// The client joined `room` (anew, with its subscription, or again), or
    /// could not; `token_expires`, of the room token it joined with.
    Joined { room: String, id: Option<String>, token_expires: u64, joined: Result<Admitted, EnvelopeError> },
    /// Who is in `room`.
    Presence { room: String, id: Option<String>, presence: Result<Presence, EnvelopeError> },
    /// What the refresh hook answered: the connection's new end, if any.
    Extended(Result<Option<u64>, EnvelopeError>),
    /// What the backend answered an `rpc`.
    Rpc { id: Option<String>, result: Result<Box<serde_json::value::RawValue>, EnvelopeError> },
    /// What the history of `room` still held of the seqs it lost, up to `upto`.
    Refetched { room: Arc<str>, upto: u64, held: Result<Replay, EnvelopeError> },
}

/// What a join came to: the subscription of a new member (none for one
/// that was in the room already), the replay it asked for, and the join
/// hook's data for its `joined`.
struct Admitted {
    subscription: Option<Subscription>,
    replay: Option<Replay>,
    data: Option<Box<serde_json::value::RawValue>>,
}

/// How the session goes on while an answer is to come.
pub(super) enum InFlight {
    /// Reading the client's next envelopes: a message, which the next ones
    /// may follow to Redis before it is answered.
    Pipelined,
    /// Reading nothing more from the client until every answer is done (a
    /// join, presence, a refetch: what comes next may depend on it); with a
    /// room, that room's messages wait too, the replay it brings going first.
    Alone(Option<String>),
}

/// Answers to come (through the cluster), told to the client in the order
/// of its requests.
struct Pending {
    /// Oldest first, each with what it came to once it is ready.
    answers: VecDeque<Answering>,
    /// Whether an answer in flight is [`InFlight::Alone`].
    alone: bool,
    /// A room whose messages wait until every answer is done.
    holds: Option<String>,
    /// Told when the newest message through the publish hook is numbered
    /// (or refused): the next one waits for it.
    numbered: Option<tokio::sync::oneshot::Receiver<()>>,
}

enum Answering {
    Waiting(Pin<Box<dyn Future<Output = Done> + Send>>),
    Ready(Done),
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pending({})", self.answers.len())
    }
}

impl Pending {
    fn new() -> Box<Pending> {
        Box::new(Pending { answers: VecDeque::new(), alone: false, holds: None, numbered: None })
    }

    /// Adds `answer`, the newest.
    fn push(&mut self, answer: Answering, in_flight: InFlight) {
        if let InFlight::Alone(holds) = in_flight {
            self.alone = true;
            self.holds = holds.or(self.holds.take());
        }
        self.answers.push_back(answer);
    }

    /// Whether the client's next envelope may be read meanwhile, with up
    /// to `pipeline` answers in flight: the client's messages go on to
    /// Redis one after another, each before the previous one is answered.
    fn reads(&self, pipeline: usize) -> bool {
        !self.alone && self.answers.len() < pipeline
    }

    /// The oldest answer, if it is ready. Every answer still waiting is
    /// polled first (the task of `cx` is woken by any of them), unless the
    /// oldest is ready already.
    fn next(&mut self, cx: &mut Context<'_>) -> Option<Done> {
        if !matches!(self.answers.front(), Some(Answering::Ready(_))) {
            for answer in &mut self.answers {
                if let Answering::Waiting(future) = answer {
                    if let Poll::Ready(done) = future.as_mut().poll(cx) {
                        *answer = Answering::Ready(done);
                    }
                }
            }
        }
        match self.answers.pop_front()? {
            Answering::Ready(done) => Some(done),
            waiting => {
                self.answers.push_front(waiting);
                None
            }
        }
    }
}

impl Membership {
    /// The room's name, shared with the hub.
    fn room(&self) -> &Arc<str> {
        self.member.room()
    }

    fn waits_for_lost(&self) -> bool {
        self.lost > self.delivered
    }
}

/// One hub connection, and the future that serves it.
///
/// A hand-written future rather than an `async` loop over `select!`: the
/// task of an idle connection holds this struct and nothing else, no timer
/// and no future per branch (docs/benchmarks.md).
#[derive(Debug)]
pub struct Session<S> {
    ws: WebSocket<S>,
    server: Arc<Server>,
    /// Counts the connection among the open ones until the session ends.
    _permit: Permit,
    /// Who the client is: its name, as other members see it, and the rooms it may join.
    identity: Identity,
    /// A boxed slice, not a `Vec`: joins and leaves are rare, sessions many.
    rooms: Box<[Membership]>,
    /// Its place among the listeners of the server's pulse: heartbeat and shutdown.
    pulse: Listener,
    /// The pulse's beat count when the client last sent anything.
    heard_at: u32,
    bucket: TokenBucket,
    /// Messages refused in a row for the rate limit.
    refused: u32,
    /// Answers to come, in flight (boxed: a thin pointer keeps the
    /// session, and so every connection's task, smaller).
    pending: Option<Box<Pending>>,
}

/// The most a plain session may take: tokio rounds a task to 128 bytes, and
/// with its own 96, the task tracker's 8 and this, the task of an idle
/// connection stays at 384 bytes rather than 512 (docs/benchmarks.md). A
/// field that must be added is paid for by another made smaller or boxed.
const _: () = assert!(size_of::<Session<tokio::net::TcpStream>>() <= 280);

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A session for `ws` of `server`, whose client is `identity`, admitted
    /// with `permit`: welcomed and in the default room, ready to be spawned.
    pub fn start(ws: WebSocket<S>, identity: Identity, server: Arc<Server>, permit: Permit) -> Self {
        server.metrics.connections.inc();
        server.tell(Kind::Connect, &identity.name);
        let mut session = Session {
            ws,
            bucket: TokenBucket::default(),
            pulse: server.pulse.listen(&identity.name),
            heard_at: server.pulse.beats(),
            server,
            _permit: permit,
            identity,
            rooms: Box::default(),
            refused: 0,
            pending: None,
        };
        session.welcome();
        session
    }

    /// Welcomes the client and joins it to the default room.
    fn welcome(&mut self) {
        let welcome = format!("welcome, {}", self.identity.name);
        self.send(&Outgoing::System { content: &welcome, time: envelope::now_millis() });
        let default_room =
            self.server.config.default_room.clone().filter(|r| !r.is_empty() && self.identity.may_join(r));
        if let Some(room) = default_room {
            // Joining the first room cannot meet a limit but a full server's.
            if let Err(error) = self.join(room, None, None, None) {
                self.send_error(error);
            }
        }
    }

    /// Serves the client: the answer of the request in flight, or up to a
    /// batch of its envelopes, so that its rooms' messages get their turn.
    /// Break when the connection ends; otherwise whether anything was done.
    fn poll_client(&mut self, cx: &mut Context<'_>) -> ControlFlow<(), bool> {
        let mut served = false;
        for _ in 0..BATCH {
            if self.refetch_lost() {
                served = true;
            }
            if let Some(pending) = &mut self.pending {
                if let Some(done) = pending.next(cx) {
                    if pending.answers.is_empty() {
                        self.pending = None;
                    }
                    self.done(done);
                    served = true;
                    // Lost messages, if a room has any, are fetched before the next request.
                    continue;
                }
                if !pending.reads(self.server.pipeline) {
                    // Write errors come back to poll_recv once the requests are done.
                    let _ = self.ws.poll_flush(cx);
                    return ControlFlow::Continue(served);
                }
            }
            match self.ws.poll_recv(cx) {
                Poll::Ready(Some(Ok(event))) => self.receive(event),
                Poll::Ready(Some(Err(e))) => {
                    info!(sender = %self.identity.name, code = ?e.close_code().map(|c| c.0), "connection failed: {e}");
                    return ControlFlow::Break(());
                }
                Poll::Ready(None) => {
                    info!(sender = %self.identity.name, "connection closed");
                    return ControlFlow::Break(());
                }
                Poll::Pending => return ControlFlow::Continue(served),
            }
            served = true;
        }
        ControlFlow::Continue(served)
    }

    /// The server's pulse: a heartbeat, the word to close with 1001, or an
    /// order of the server API for this connection's user.
    fn poll_pulse(&mut self, cx: &mut Context<'_>) {
        while let Some(signal) = self.pulse.poll(&self.server.pulse, cx) {
            match signal {
                Signal::Beat => self.heartbeat(),
                Signal::Shutdown if self.ws.connection().state() == State::Open => {
                    // Fails only if the connection is closing already.
                    let _ = self.ws.queue_close(CloseCode::GOING_AWAY, "server shutting down");
                }
                Signal::Shutdown => {}
                Signal::Order(order) if order.user == *self.identity.name => self.obey(&order.order),
                Signal::Order(_) => {}
            }
        }
    }

    /// Carries out an order of the server API.
    fn obey(&mut self, order: &Order) {
        match order {
            Order::Disconnect { code, reason } => {
                if self.ws.queue_close(CloseCode(*code), reason).is_ok() {
                    info!(sender = %self.identity.name, code, reason, "disconnected through the server API");
                }
            }
            Order::Unsubscribe { room } => self.remove_where(|m| **m.room() == **room, "removed"),
        }
    }

    /// Pings, or closes a client that has sent nothing, pong included, for too long:
    /// for as many beats, after the one in whose interval it was last heard, as
    /// make the timeout.
    fn heartbeat(&mut self) {
        self.check_tokens();
        let silent = self.server.pulse.beats_since(self.heard_at);
        let config = &self.server.config;
        if config.heartbeat_interval.checked_mul(silent.saturating_sub(1)).is_none_or(|s| s >= config.heartbeat_timeout)
        {
            if self.ws.queue_close(CloseCode::GOING_AWAY, "heartbeat timeout").is_ok() {
                info!(sender = %self.identity.name, "heartbeat timeout");
            }
        } else {
            // Fails only once the connection is closing.
            let _ = self.ws.queue_ping(b"");
        }
    }

    fn send_error(&mut self, error: EnvelopeError) {
        self.send_json(error.to_json());
    }

    fn send(&mut self, envelope: &Outgoing<'_>) {
        self.send_json(envelope.to_json());
    }

    /// Queues an envelope for this client alone.
    fn send_json(&mut self, json: String) {
        let header =
            FrameHeader { fin: true, rsv: 0, opcode: OpCode::Text, mask: None, payload_len: json.len() as u64 };
        let frame_len = header.encoded_len() + json.len();
        // Fails only once the connection is closing; the envelope is then moot.
        if self.ws.queue(&Message::from(json)).is_ok() {
            self.server.metrics.sent(1, frame_len);
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for Session<S> {
    type Output = ();

    /// Serves the client until the connection ends: the pulse, what the
    /// client sends, then what its rooms publish, until none has more.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let session = self.get_mut();
        loop {
            session.poll_pulse(cx);
            let ControlFlow::Continue(served) = session.poll_client(cx) else { return Poll::Ready(()) };
            let delivered = session.poll_deliveries(cx);
            // Written out, the queue may have room again for the gap notices that wait.
            let reported = session.report_gaps();
            // What was queued goes out at the top of the loop.
            if !served && !delivered && !reported {
                return Poll::Pending;
            }
        }
    }
}

impl<S> Session<S> {
    /// Lets go of a membership, with this connection's place in the room's presence.
    fn left(&self, member: Membership) {
        // Its receiver gone first, so that a cluster can let the room go if it was the last here.
        let room = member.room().clone();
        drop(member);
        self.server.leave(room, self.identity.name.clone());
    }
}

impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        for member in std::mem::take(&mut self.rooms) {
            self.left(member);
        }
        // A join done and not yet told to the session is left too.
        for answer in self.pending.take().map(|pending| pending.answers).unwrap_or_default() {
            if let Answering::Ready(Done::Joined { joined: Ok(Admitted { subscription: Some(joined), .. }), .. }) =
                answer
            {
                let room = joined.member.room().clone();
                drop(joined);
                self.server.leave(room, self.identity.name.clone());
            }
        }
        self.server.tell(Kind::Disconnect, &self.identity.name);
        self.pulse.release(&self.server.pulse);
        self.server.metrics.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerConfig;
    use clap::Parser;
    use serde_json::{Value, json};
    use tokio::io::DuplexStream;
    use ws_proto::{Config, Connection, Event, Role};
    use ws_tokio::Options;

    /// A hub server with `flags`, and a session of it whose client is the
    /// other end of an in-memory pipe.
    fn session(flags: &[&str]) -> (Arc<Server>, Session<DuplexStream>, WebSocket<DuplexStream>) {
        let config = ServerConfig::parse_from(["ws-server"].iter().chain(flags));
        let server = Arc::new(Server::new(Arc::new(config)).unwrap());
        let (near, far) = tokio::io::duplex(1 << 20);
        let socket = |io, role| {
            WebSocket::from_parts(io, Connection::new(role, Config::default()), Options::default(), Default::default())
        };
        let permit = server.limits.admit([127, 0, 0, 1].into()).unwrap();
        let session =
            Session::start(socket(near, Role::Server), Identity::anonymous("a".into()), server.clone(), permit);
        (server, session, socket(far, Role::Client))
    }

    /// Lets the session do all it can, then takes what it sent, up to the
    /// `joined` of the default room, and the `count` envelopes after it.
    async fn envelopes(
        session: &mut Session<DuplexStream>,
        client: &mut WebSocket<DuplexStream>,
        count: usize,
    ) -> Vec<Value> {
        let cx = &mut Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(session).poll(cx).is_pending());
        let mut envelopes = Vec::new();
        while envelopes.len() < count + 2 {
            let event = tokio::time::timeout(std::time::Duration::from_secs(10), client.recv()).await;
            match event.expect("an envelope, already sent").unwrap().unwrap() {
                Event::Message(Message::Text(text)) => envelopes.push(serde_json::from_str(text.as_str()).unwrap()),
                event => panic!("{event:?}"),
            }
        }
        envelopes.split_off(2)
    }

    fn publish(server: &Server, contents: &[&str]) {
        for content in contents {
            server
                .hub
                .publish("general", "b", &envelope::Body::text(content), None, server.namespaces.default.history)
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_member_that_fell_behind_its_room_gets_the_lost_messages_from_the_history() {
        let (server, mut session, mut client) = session(&["--room-buffer", "2"]);
        // Published before the session's task runs: three leave the room's buffer unread.
        publish(&server, &["1", "2", "3", "4", "5"]);
        let contents: Vec<_> =
            envelopes(&mut session, &mut client, 5).await.iter().map(|e| e["content"].clone()).collect();
        assert_eq!(contents, ["1", "2", "3", "4", "5"]);
        assert_eq!(server.metrics.lagged.get(), 3);
    }

    /// Found by the `session` fuzz target: with `skip`, a replay that does
    /// not fit in the queue left its gap to be told inside the next replay,
    /// after its `joined` and before seqs below the gap's end.
    #[tokio::test]
    async fn a_gap_a_replay_leaves_is_told_within_that_replay() {
        let flags = ["--history", "8", "--slow-consumer", "skip", "--max-queue-bytes", "1500"];
        let (server, mut session, mut client) = session(&flags);
        let content = "y".repeat(200);
        // Eight messages delivered live, four at a time: each four fit in the queue.
        publish(&server, &[content.as_str(); 4]);
        assert_eq!(envelopes(&mut session, &mut client, 4).await.iter().filter(|e| e["type"] == "message").count(), 4);
        publish(&server, &[content.as_str(); 4]);
        let cx = &mut Context::from_waker(std::task::Waker::noop());
        assert!(Pin::new(&mut session).poll(cx).is_pending());
        for _ in 0..4 {
            assert!(matches!(client.recv().await, Some(Ok(Event::Message(_)))));
        }
        // Then three replays of all eight, queued at once: far more than the queue holds.
        let join = Message::from(json!({"type": "join", "room": "general", "since": 0}).to_string());
        for _ in 0..3 {
            client.send(&join).await.unwrap();
        }
        let (mut recovered, mut last, mut told) = (0, 8, Vec::new());
        while recovered < 3 {
            assert!(Pin::new(&mut session).poll(cx).is_pending());
            let event = tokio::time::timeout(std::time::Duration::from_secs(10), client.recv()).await;
            let Event::Message(Message::Text(text)) = event.expect("an envelope").unwrap().unwrap() else { continue };
            let envelope: Value = serde_json::from_str(text.as_str()).unwrap();
            let (from, to) = match envelope["type"].as_str().unwrap() {
                "joined" => {
                    last = 0;
                    continue;
                }
                "recovered" => {
                    recovered += 1;
                    assert_eq!(last, 8, "replay {recovered}: seqs to 8 given or told missed before its end: {told:?}");
                    continue;
                }
                "message" => (envelope["seq"].as_u64().unwrap(), envelope["seq"].as_u64().unwrap()),
                "gap" => (envelope["from"].as_u64().unwrap(), envelope["to"].as_u64().unwrap()),
                _ => continue,
            };
            told.push(format!("{}{from}-{to}", envelope["type"]));
            assert!(from > last && to >= from, "{envelope} after seq {last}: {told:?}");
            last = to;
        }
        assert!(told.iter().any(|e| e.contains("gap")), "the replays overflowed the queue: {told:?}");
    }

    #[tokio::test]
    async fn what_the_history_no_longer_holds_is_a_gap() {
        let (server, mut session, mut client) =
            session(&["--room-buffer", "2", "--history", "4", "--slow-consumer", "skip"]);
        publish(&server, &["1", "2", "3", "4", "5", "6"]);
        let got = envelopes(&mut session, &mut client, 5).await;
        assert_eq!(got[0], json!({"type": "gap", "room": "general", "from": 1, "to": 2}));
        let contents: Vec<_> = got[1..].iter().map(|e| e["content"].clone()).collect();
        assert_eq!(contents, ["3", "4", "5", "6"]);
    }
}
