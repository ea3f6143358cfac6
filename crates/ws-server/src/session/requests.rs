//! A session's requests: the client's envelopes parsed, checked against
//! the rate limit and its rights, and sent to the server, whose answers,
//! at once or later, go back to the client in the order of the requests.

use super::{Admitted, Answering, Done, InFlight, Membership, Pending, Session, TOKEN_EXPIRED};
use crate::config::namespaces::Publish;
use crate::envelope::{self, Body, Call, Envelope, EnvelopeError, Outgoing, Request};
use crate::hooks::no_rpc_hook;
use crate::hub::{Replay, Subscription};
use crate::server::{Answer, Presence};
use serde_json::value::RawValue;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::oneshot;
use tracing::{info, warn};
use ws_proto::{CloseCode, Event, Message};

/// Messages refused in a row for the rate limit before the client is closed (1008).
const MAX_REFUSED: u32 = 20;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) fn receive(&mut self, event: Event) {
        self.heard_at = self.server.pulse.beats();
        let Event::Message(message) = event else { return };
        self.server.metrics.messages_received.inc();
        self.server.metrics.bytes_received.inc_by(message.payload().len() as u64);
        if !self.bucket.take(self.server.config.rate_limit, self.server.started.elapsed()) {
            return self.refuse();
        }
        self.refused = 0;
        let request = match &message {
            Message::Text(text) => envelope::parse(text.as_str()),
            Message::Binary(_) => Err(EnvelopeError::new("invalid_json", "binary messages are not envelopes")),
        };
        let Envelope { request, id } = match request {
            Ok(envelope) => envelope,
            Err(error) => return self.send_error(error),
        };
        let refused = match request {
            Request::Join { room, since, token } => self.join(room, since, token, id.clone()),
            Request::Leave { room } => self.leave(room),
            Request::Presence { room } => self.presence(room, id.clone()),
            Request::Message { room, body } => self.publish(room, body, id.clone()),
            Request::Rpc(call) => self.rpc(call, id.clone()),
            Request::Refresh { token } => self.refresh(&token),
            Request::Ping => {
                self.send(&Outgoing::Pong { id: id.as_deref() });
                Ok(())
            }
        };
        if let Err(error) = refused {
            self.send_error(error.about(id));
        }
    }

    /// Over the rate limit: an error, or the end for a client that keeps on.
    fn refuse(&mut self) {
        self.refused += 1;
        if self.refused > MAX_REFUSED {
            if self.ws.queue_close(CloseCode::POLICY_VIOLATION, "rate limit exceeded").is_ok() {
                warn!(sender = %self.identity.name, "rate limit exceeded again and again: closed");
            }
            return;
        }
        let rate = self.server.config.rate_limit;
        let wait = self.bucket.wait(rate, self.server.started.elapsed()).as_millis();
        self.send_error(EnvelopeError::new(
            "rate_limited",
            format!("over {rate} messages a second; retry in {wait} ms"),
        ));
    }

    pub(super) fn membership(&self, room: &str) -> Option<usize> {
        self.rooms.iter().position(|m| &**m.room() == room)
    }

    pub(super) fn join(
        &mut self,
        room: String,
        since: Option<u64>,
        token: Option<String>,
        id: Option<String>,
    ) -> Result<(), EnvelopeError> {
        let namespace = self.server.namespaces.of(&room)?;
        if since.is_some() && !namespace.recovery {
            return Err(not_offered(&room, "recovery with since"));
        }
        if let Some(i) = self.membership(&room) {
            // Already a member: a room token given renews the membership's.
            if token.is_some() {
                self.rooms[i].token_expires = self.admit(&room, token.as_deref())?;
            }
            // What came after `delivered` is on its way in the stream.
            let delivered = self.rooms[i].delivered;
            let Some(since) = since else {
                self.joined(i, delivered, None, None);
                return Ok(());
            };
            let replay = self.server.replay(&room, since, delivered);
            let (holds, token_expires) = (Some(room.clone()), self.rooms[i].token_expires);
            self.answer(InFlight::Alone(holds), replay, move |replay| Done::Joined {
                room,
                id,
                token_expires,
                joined: replay.map(|replay| Admitted { subscription: None, replay: Some(replay), data: None }),
            });
            return Ok(());
        }
        let token_expires = self.admit(&room, token.as_deref())?;
        let limit = self.server.config.max_rooms_per_connection;
        if self.rooms.len() >= limit {
            return Err(EnvelopeError::new("room_limit", format!("at most {limit} rooms per connection")));
        }
        let joined = self.admitted(&room, since);
        self.answer(InFlight::Alone(None), joined, move |joined| Done::Joined { room, id, token_expires, joined });
        Ok(())
    }

    /// Joins `room` (with `since`), once the join hook allows it, if there is one.
    fn admitted(&self, room: &str, since: Option<u64>) -> Answer<Result<Admitted, EnvelopeError>> {
        let admitted = |(subscription, replay), data| Admitted { subscription: Some(subscription), replay, data };
        if !self.server.hooks.as_ref().is_some_and(|hooks| hooks.joins()) {
            return match self.server.join(room, &self.identity.name, since) {
                Answer::Now(joined) => Answer::Now(joined.map(|joined| admitted(joined, None))),
                Answer::Later(joined) => {
                    Answer::later(async move { joined.await.map(|joined| admitted(joined, None)) })
                }
            };
        }
        let (server, user, room) = (self.server.clone(), self.identity.name.clone(), room.to_owned());
        Answer::later(async move {
            let data = match &server.hooks {
                Some(hooks) => hooks.join(&user, &room, since).await?,
                None => None,
            };
            Ok(admitted(server.join(&room, &user, since).wait().await?, data))
        })
    }

    /// Whether the client may join `room`: its token allows it (0), or a
    /// room token for it does (when that expires). Without a key, every
    /// room is open and a room token moot.
    fn admit(&self, room: &str, token: Option<&str>) -> Result<u64, EnvelopeError> {
        match (token, &self.server.auth) {
            (Some(token), Some(auth)) => {
                auth.admit_to_room(token, &self.identity.name, room).map_err(|e| EnvelopeError::new("invalid_token", e))
            }
            _ if self.identity.may_join(room) => Ok(0),
            _ => Err(EnvelopeError::new("forbidden", format!("not allowed to join room {room}"))),
        }
    }

    /// Takes a fresh token for the connection: of the same user, whose
    /// claims then hold; the rooms its connection's token let it into and
    /// the new one does not, it leaves.
    fn refresh(&mut self, token: &str) -> Result<(), EnvelopeError> {
        let Some(auth) = &self.server.auth else {
            return Err(EnvelopeError::new("invalid_token", "the server checks no tokens: none is to be refreshed"));
        };
        let fresh = auth.identity(token).map_err(|e| EnvelopeError::new("invalid_token", e))?;
        if fresh.name != self.identity.name {
            let (new, old) = (&fresh.name, &self.identity.name);
            return Err(EnvelopeError::new("invalid_token", format!("the token is for user {new}, not {old}")));
        }
        self.send(&Outgoing::Refreshed { expires: fresh.expires().unwrap_or_default() });
        self.remove_where(|m| m.token_expires == 0 && !fresh.may_join(m.room()), "forbidden");
        self.identity = fresh;
        Ok(())
    }

    /// At each beat, the tokens: a connection whose token expired is closed
    /// (4001), a member whose room token expired leaves the room; the
    /// client is asked to refresh those that expire within --refresh-before.
    pub(super) fn check_tokens(&mut self) {
        // Without a key there are no tokens, room tokens included.
        let Some(expires) = self.identity.expires() else { return };
        let now = envelope::now_millis() / 1000;
        let by_hook = self.identity.grants.as_ref().is_some_and(|grants| grants.by_hook);
        if now >= expires {
            let reason = if by_hook { "session expired" } else { "token expired" };
            if self.ws.queue_close(TOKEN_EXPIRED, reason).is_ok() {
                info!(sender = %self.identity.name, "{reason}: closed");
            }
            return;
        }
        self.remove_where(|m| m.token_expires != 0 && now >= m.token_expires, "token_expired");
        let soon = now + self.server.config.refresh_before.as_secs();
        if soon >= expires && by_hook {
            self.extend(expires);
        } else if soon >= expires {
            self.send(&Outgoing::Refresh { room: None, expires });
        }
        let rooms = self.rooms.iter().filter(|m| m.token_expires != 0 && soon >= m.token_expires);
        let asks: Vec<_> = rooms.map(|m| (m.room().clone(), m.token_expires)).collect();
        for (room, expires) in asks {
            self.send(&Outgoing::Refresh { room: Some(&room), expires });
        }
    }

    /// Asks the refresh hook, once, to extend the connection the connect
    /// hook let in until `expires`.
    fn extend(&mut self, expires: u64) {
        if !self.server.hooks.as_ref().is_some_and(|hooks| hooks.refreshes()) {
            return;
        }
        let Some(grants) = self.identity.grants.as_deref_mut().filter(|grants| !grants.refreshing) else { return };
        grants.refreshing = true;
        let (server, user) = (self.server.clone(), self.identity.name.clone());
        let extended = Answer::later(async move {
            match &server.hooks {
                Some(hooks) => hooks.refresh(&user, expires).await,
                None => Ok(None),
            }
        });
        self.answer(InFlight::Pipelined, extended, Done::Extended);
    }

    /// The refresh hook answered: the connection's new end, which the
    /// client is told; none, and it ends as it was to; or a failure, and
    /// the hook is asked again at the next beat.
    fn extended(&mut self, extended: Result<Option<u64>, EnvelopeError>) {
        let Some(grants) = self.identity.grants.as_deref_mut() else { return };
        match extended {
            Ok(Some(expires)) => {
                (grants.expires, grants.refreshing) = (expires, false);
                self.send(&Outgoing::Refreshed { expires });
            }
            Ok(None) => info!(sender = %self.identity.name, "the backend lets the connection end"),
            Err(_) => grants.refreshing = false,
        }
    }

    /// Takes the client out of the rooms `gone` picks, and tells it why.
    pub(super) fn remove_where(&mut self, gone: impl Fn(&Membership) -> bool, reason: &str) {
        if !self.rooms.iter().any(&gone) {
            return;
        }
        let (removed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.rooms).into_vec().into_iter().partition(gone);
        self.rooms = kept.into_boxed_slice();
        for member in removed {
            let room = member.room().clone();
            self.left(member);
            self.send(&Outgoing::Left { room: &room, reason: Some(reason) });
        }
    }

    /// Serves an answer of the server: at once if it is ready and none is
    /// in flight; otherwise after those in flight, the session going on as
    /// `in_flight` says meanwhile.
    pub(super) fn answer<T: Send + 'static>(
        &mut self,
        in_flight: InFlight,
        answer: Answer<T>,
        done: impl FnOnce(T) -> Done + Send + 'static,
    ) {
        let answering = match (answer, &mut self.pending) {
            (Answer::Now(value), None) => return self.done(done(value)),
            (Answer::Now(value), Some(_)) => Answering::Ready(done(value)),
            (Answer::Later(future), _) => Answering::Waiting(Box::pin(async move { done(future.await) })),
        };
        self.pending.get_or_insert_with(Pending::new).push(answering, in_flight);
    }

    /// Becomes a member of the subscription's room, until `token_expires`
    /// if a room token let it in.
    fn subscribed(
        &mut self,
        subscription: Subscription,
        replay: Option<Replay>,
        data: Option<Box<RawValue>>,
        token_expires: u64,
    ) {
        let mut rooms = std::mem::take(&mut self.rooms).into_vec();
        rooms.reserve_exact(1);
        let latest = subscription.latest;
        let member = subscription.member;
        rooms.push(Membership { member, delivered: latest, gap: None, lost: latest, token_expires });
        self.rooms = rooms.into_boxed_slice();
        self.joined(self.rooms.len() - 1, latest, replay, data.as_deref());
    }

    /// The server answered: what the client is told.
    pub(super) fn done(&mut self, done: Done) {
        match done {
            Done::Published { id, seq: Ok(seq) } => self.acked(id.as_deref(), seq),
            Done::Published { id, seq: Err(error) } => self.send_error(error.about(id)),
            Done::Joined {
                joined: Ok(Admitted { subscription: Some(subscription), replay, data }),
                token_expires,
                ..
            } => {
                self.subscribed(subscription, replay, data, token_expires);
            }
            Done::Joined { room, id, joined: Ok(Admitted { subscription: None, replay, .. }), .. } => {
                match self.membership(&room) {
                    Some(i) => self.joined(i, self.rooms[i].delivered, replay, None),
                    None => self.send_error(EnvelopeError::new("not_joined", format!("not in room {room}")).about(id)),
                }
            }
            Done::Joined { id, joined: Err(error), .. } => self.send_error(error.about(id)),
            Done::Presence { room, presence: Ok(presence), .. } => self.present(&room, presence),
            Done::Presence { id, presence: Err(error), .. } => self.send_error(error.about(id)),
            Done::Extended(extended) => self.extended(extended),
            Done::Rpc { id, result: Ok(result) } => self.send(&Outgoing::Rpc { id: id.as_deref(), result: &result }),
            Done::Rpc { id, result: Err(error) } => self.send_error(error.about(id)),
            Done::Refetched { room, upto, held } => {
                if let Some(i) = self.membership(&room) {
                    // Unreachable, the history holds nothing: the seqs are skipped.
                    let held = held.map_or_else(|_| Vec::new(), |replay| replay.deliveries);
                    self.refill(i, &held, upto);
                }
            }
        }
    }

    /// Tells the client it is in room `i`, with the join hook's `data` if
    /// it gave some, then replays what it asked for.
    /// A gap not told yet is told first, and one the replay leaves (what did
    /// not fit in the queue) before its `recovered`: each before the seqs
    /// that follow it, never inside a later replay.
    fn joined(&mut self, i: usize, latest: u64, replay: Option<Replay>, data: Option<&RawValue>) {
        let room = self.rooms[i].room().clone();
        let server = self.server.clone();
        self.report_gap(i);
        self.send(&Outgoing::Joined { room: &room, seq: latest, epoch: &server.hub.epoch(), data });
        let Some(replay) = replay else { return };
        self.queue_all(i, replay.deliveries.iter().map(|d| &**d));
        self.report_gap(i);
        self.send(&Outgoing::Recovered { room: &room, complete: replay.complete });
    }

    fn leave(&mut self, room: String) -> Result<(), EnvelopeError> {
        let Some(i) = self.membership(&room) else {
            return Err(EnvelopeError::new("not_joined", format!("not in room {room}")));
        };
        let mut rooms = std::mem::take(&mut self.rooms).into_vec();
        let member = rooms.swap_remove(i);
        self.rooms = rooms.into_boxed_slice();
        self.left(member);
        self.send(&Outgoing::Left { room: &room, reason: None });
        Ok(())
    }

    fn presence(&mut self, room: String, id: Option<String>) -> Result<(), EnvelopeError> {
        if self.membership(&room).is_none() {
            return Err(EnvelopeError::new("not_joined", format!("join room {room} to see who is in it")));
        }
        if !self.server.namespaces.rules(&room).presence {
            return Err(not_offered(&room, "presence"));
        }
        let presence = self.server.presence(&room, envelope::MAX_PRESENCE);
        self.answer(InFlight::Alone(None), presence, move |presence| Done::Presence { room, id, presence });
        Ok(())
    }

    /// Tells the client who is in `room`.
    fn present(&mut self, room: &str, (count, names): Presence) {
        let members = names.iter().map(|n| &**n).collect();
        self.send(&Outgoing::Presence { room, count, members });
    }

    fn publish(&mut self, room: String, body: Body, id: Option<String>) -> Result<(), EnvelopeError> {
        if self.membership(&room).is_none() {
            return Err(EnvelopeError::new("not_joined", format!("join room {room} before sending to it")));
        }
        let namespace = self.server.namespaces.rules(&room);
        if namespace.publish == Publish::Server {
            return Err(EnvelopeError::new("forbidden", format!("only the server publishes to room {room}")));
        }
        if !self.identity.may_publish(&room) {
            return Err(EnvelopeError::new("forbidden", format!("not allowed to publish to room {room}")));
        }
        body.check(&namespace.limits)?;
        if self.server.hooks.as_ref().is_some_and(|hooks| hooks.publishes()) {
            let seq = self.hooked(room, body, id.clone());
            self.answer(InFlight::Pipelined, seq, move |seq| Done::Published { id, seq });
            return Ok(());
        }
        let client_id = id.as_deref().map(|id| (self.identity.retry_origin(), id));
        let seq = self.server.publish(&room, &self.identity.name, body, client_id);
        self.answer(InFlight::Pipelined, seq, move |seq| Done::Published { id, seq });
        Ok(())
    }

    /// Publishes what the publish hook makes of `body`: its seq, or the
    /// backend's refusal. A retry (the same `id`) is asked about again.
    /// The hook is called at once, while the connection's earlier messages
    /// may still be in its hands; the message is numbered only once the one
    /// before it was (or was refused), so in the order sent.
    fn hooked(&mut self, room: String, body: Body, id: Option<String>) -> Answer<Result<u64, EnvelopeError>> {
        let (server, user) = (self.server.clone(), self.identity.name.clone());
        let origin = self.identity.retry_origin().to_owned();
        let (numbered, next) = oneshot::channel::<()>();
        let before = self.pending.get_or_insert_with(Pending::new).numbered.replace(next);
        Answer::later(async move {
            let limits = server.namespaces.rules(&room).limits;
            let allowed = match &server.hooks {
                Some(hooks) => hooks.publish(&user, &room, body, id.as_deref(), &limits).await,
                None => Ok(body),
            };
            if let Some(before) = before {
                // Its sender is dropped once the message before is numbered or refused.
                let _ = before.await;
            }
            let client_id = id.as_deref().map(|id| (origin.as_str(), id));
            let seq = match allowed {
                Ok(body) => server.publish(&room, &user, body, client_id).wait().await,
                Err(refused) => Err(refused),
            };
            drop(numbered);
            seq
        })
    }

    /// Calls the backend: its answer comes back
    /// with `id`, in the order of the client's requests.
    fn rpc(&mut self, call: Call, id: Option<String>) -> Result<(), EnvelopeError> {
        let hooks = self.server.hooks.clone().filter(|hooks| hooks.answers_rpc()).ok_or_else(no_rpc_hook)?;
        let max = self.server.namespaces.default.limits.data_bytes;
        let bytes = call.data.as_deref().map_or(0, |raw| raw.get().len());
        if bytes > max {
            return Err(EnvelopeError::new("too_long", format!("data has {bytes} bytes, more than {max}")));
        }
        let user = self.identity.name.clone();
        let answer = Answer::later(async move { hooks.rpc(&user, &call).await });
        self.answer(InFlight::Pipelined, answer, move |result| Done::Rpc { id, result });
        Ok(())
    }

    /// Tells the client the seq its message got, if it gave an id.
    fn acked(&mut self, id: Option<&str>, seq: u64) {
        if let Some(id) = id {
            self.send(&Outgoing::Ack { id: Some(id), seq });
        }
    }
}

/// What `room`'s namespace does not offer.
fn not_offered(room: &str, what: &str) -> EnvelopeError {
    EnvelopeError::new("not_offered", format!("room {room} does not offer {what}"))
}
