//! An async WebSocket over any `AsyncRead + AsyncWrite`: a ws-proto
//! [`Connection`] driven by the socket.
//!
//! Reads land in a per-thread scratch buffer; a connection keeps only the
//! bytes that follow an event it returned, so an idle connection holds no read
//! buffer. Queued frames leave with vectored writes, all that is queued at
//! once, before the socket is read again.

use crate::Error;
use bytes::{Buf, Bytes, BytesMut};
use std::cell::RefCell;
use std::future::poll_fn;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use ws_proto::{CloseCode, Config, Connection, DeflateConfig, Event, Message, Role, SharedMessage, State};

/// How much one read takes from the socket.
const SCRATCH_LEN: usize = 64 << 10;
/// How many chunks one vectored write passes at most.
const MAX_IOVECS: usize = 64;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// Settings of an established WebSocket.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The protocol limits.
    pub config: Config,
    /// How long the closing handshake, and then the peer's closing of TCP,
    /// may take; kept to the millisecond, 49 days at most.
    pub close_timeout: Duration,
    /// While more than this many bytes wait to be written, the socket is not
    /// read: a peer that sends without reading cannot grow what we queue for
    /// it. 4 GiB at most.
    pub max_output: usize,
    /// permessage-deflate (RFC 7692): a server accepts a client's offer with
    /// these settings, a client offers it; `None` turns it off.
    pub deflate: Option<DeflateConfig>,
}

impl Default for Options {
    /// ws-proto's default limits, 5 s to close, 1 MiB of output, permessage-deflate on.
    fn default() -> Self {
        Options {
            config: Config::default(),
            close_timeout: Duration::from_secs(5),
            max_output: 1 << 20,
            deflate: Some(DeflateConfig::default()),
        }
    }
}

/// What another task asks of the WebSocket through a [`Sender`].
#[derive(Debug)]
enum Command {
    Message(Message),
    Ping(Bytes),
    Close(CloseCode, String),
}

/// A handle to send on a [`WebSocket`] from other tasks. What it sends is
/// written while the owner of the WebSocket is in [`WebSocket::recv`].
#[derive(Debug, Clone)]
pub struct Sender {
    commands: mpsc::Sender<Command>,
}

impl Sender {
    /// Queues a message; fails if the WebSocket is gone.
    pub async fn send(&self, message: Message) -> Result<(), Error> {
        self.command(Command::Message(message)).await
    }

    /// Queues a ping.
    pub async fn ping(&self, payload: Bytes) -> Result<(), Error> {
        self.command(Command::Ping(payload)).await
    }

    /// Starts the closing handshake.
    pub async fn close(&self, code: CloseCode, reason: impl Into<String>) -> Result<(), Error> {
        self.command(Command::Close(code, reason.into())).await
    }

    async fn command(&self, command: Command) -> Result<(), Error> {
        self.commands.send(command).await.map_err(|_| Error::Protocol(ws_proto::Error::Closed))
    }
}

/// What a WebSocket holds only at times.
#[derive(Debug, Default)]
struct Rare {
    /// Bytes read after the last event returned: the next frames'.
    leftover: BytesMut,
    /// What other tasks send, once a [`Sender`] was made.
    commands: Option<mpsc::Receiver<Command>>,
    /// When the closing handshake must be over, once it began.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Why the connection failed, until `recv` returns it.
    failure: Option<Error>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.leftover.capacity() == 0 && self.commands.is_none() && self.deadline.is_none() && self.failure.is_none()
    }
}

/// A WebSocket connection on a socket `S`, for either role.
#[derive(Debug)]
pub struct WebSocket<S> {
    io: S,
    conn: Connection,
    /// How long the closing handshake and the TCP close may take, in
    /// milliseconds (32 bits keep the WebSocket, held per connection, small).
    close_timeout_ms: u32,
    /// Output past which the socket is not read.
    max_output: u32,
    /// Boxed, and only while any of it is there: an idle WebSocket keeps the pointer alone.
    rare: Option<Box<Rare>>,
    needs_flush: bool,
    /// This end has sent its FIN.
    shut_down: bool,
    /// The connection is over: `recv` returns `None` (after the failure, if any).
    done: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// A WebSocket on `io`, whose opening handshake is done, with the
    /// protocol state `conn`; `leftover` holds bytes read after the
    /// handshake, which belong to the first frames.
    pub fn from_parts(io: S, conn: Connection, options: Options, leftover: BytesMut) -> Self {
        WebSocket {
            io,
            conn,
            close_timeout_ms: u32::try_from(options.close_timeout.as_millis()).unwrap_or(u32::MAX),
            max_output: u32::try_from(options.max_output).unwrap_or(u32::MAX),
            rare: (leftover.capacity() > 0).then(|| Box::new(Rare { leftover, ..Rare::default() })),
            needs_flush: false,
            shut_down: false,
            done: false,
        }
    }

    /// The protocol state, for its role and closing state.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The socket.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The next event from the peer. While waiting it writes what is queued,
    /// answers pings and completes the closing handshake. `None` once the
    /// connection has ended; a protocol error is returned once, after its
    /// close frame went out. Cancel-safe: dropping the future loses nothing.
    pub async fn recv(&mut self) -> Option<Result<Event, Error>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Queues a message to go out with the next write, without waiting.
    pub fn queue(&mut self, message: &Message) -> Result<(), Error> {
        Ok(self.conn.send(message)?)
    }

    /// Queues a message encoded once for many connections (a server's
    /// broadcast), without waiting.
    pub fn queue_shared(&mut self, message: &SharedMessage) -> Result<(), Error> {
        Ok(self.conn.send_shared(message)?)
    }

    /// Queues a ping, without waiting.
    pub fn queue_ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        Ok(self.conn.ping(payload)?)
    }

    /// Starts the closing handshake without waiting: the close frame goes
    /// out with what is queued before it, and `recv` ends the connection
    /// after the peer's reply or `close_timeout`.
    pub fn queue_close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        Ok(self.conn.close(code, reason)?)
    }

    /// Queues a message and writes everything queued.
    pub async fn send(&mut self, message: &Message) -> Result<(), Error> {
        self.queue(message)?;
        self.flush().await
    }

    /// Sends a message in frames of at most `frame_size` payload bytes.
    pub async fn send_fragmented(&mut self, message: &Message, frame_size: usize) -> Result<(), Error> {
        self.conn.send_fragmented(message, frame_size)?;
        self.flush().await
    }

    /// Sends a ping with up to 125 bytes of payload.
    pub async fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.queue_ping(payload)?;
        self.flush().await
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> Result<(), Error> {
        poll_fn(|cx| self.poll_write(cx)).await
    }

    /// Closes: sends the close frame, then reads (discarding messages) until
    /// the peer's close and the end of TCP, or `close_timeout`.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.queue_close(code, reason)?;
        while let Some(event) = self.recv().await {
            event?;
        }
        Ok(())
    }

    /// [`WebSocket::flush`] as a poll, for a hand-written future that
    /// writes while it reads nothing.
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_write(cx)
    }

    /// A handle for other tasks to send on this WebSocket.
    pub fn sender(&mut self) -> Sender {
        let (tx, rx) = mpsc::channel(64);
        self.rare().commands = Some(rx);
        Sender { commands: tx }
    }

    /// [`WebSocket::recv`] as a poll, for a hand-written future that owns
    /// the WebSocket: `Pending` registers the task of `cx` to be woken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event, Error>>> {
        loop {
            if self.done {
                if !self.shut_down {
                    // Errors no longer matter: the connection is over either way.
                    let _ = ready!(Pin::new(&mut self.io).poll_shutdown(cx));
                    self.shut_down = true;
                }
                return Poll::Ready(self.take_failure().map(Err));
            }
            // Bytes read before are taken as events only while the output is
            // within bounds: each may be answered, and a peer that does not
            // read must not make the answers to a whole buffer pile up.
            let within = self.conn.output().len() <= self.max_output as usize;
            if within && self.rare.as_ref().is_some_and(|rare| !rare.leftover.is_empty()) {
                if let Some(event) = self.receive_leftover() {
                    return Poll::Ready(Some(Ok(event)));
                }
                continue;
            }
            let written = match self.poll_write(cx) {
                Poll::Ready(Err(e)) => return self.end_with(e),
                Poll::Ready(Ok(())) => true,
                Poll::Pending => false,
            };
            if self.conn.state() != State::Open && self.poll_deadline(cx).is_ready() {
                self.done = true;
                continue;
            }
            let server_closes = self.conn.role() == Role::Server && self.conn.state() == State::Closed;
            if server_closes && written && !self.shut_down {
                // The server closes TCP first (section 7.1.1), then waits for the client's FIN;
                // the client sends its FIN when it reads the server's.
                if let Err(e) = ready!(Pin::new(&mut self.io).poll_shutdown(cx)) {
                    return self.end_with(e.into());
                }
                self.shut_down = true;
            }
            if self.conn.output().len() > self.max_output as usize {
                return Poll::Pending;
            }
            if self.rare.as_ref().is_some_and(|rare| !rare.leftover.is_empty()) {
                // Written down within bounds: the bytes read before come first.
                continue;
            }
            if self.poll_commands(cx) {
                continue;
            }
            match ready!(self.poll_read(cx)) {
                Ok(Some(event)) => return Poll::Ready(Some(Ok(event))),
                Ok(None) => {}
                Err(e) => return self.end_with(e),
            }
        }
    }

    /// Feeds the bytes kept from an earlier read.
    fn receive_leftover(&mut self) -> Option<Event> {
        let rare = self.rare.as_deref_mut()?;
        match self.conn.receive(&rare.leftover) {
            Ok((used, event)) => {
                rare.leftover.advance(used);
                event
            }
            Err(e) => {
                rare.leftover.clear();
                rare.failure = Some(e.into());
                None
            }
        }
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    fn take_failure(&mut self) -> Option<Error> {
        self.rare.as_mut()?.failure.take()
    }

    fn has_failed(&self) -> bool {
        self.rare.as_ref().is_some_and(|rare| rare.failure.is_some())
    }

    /// Reads once and feeds what came. `Ok(None)` when the bytes completed no event.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Event>, Error>> {
        if let Some(rare) = &mut self.rare {
            rare.leftover = BytesMut::new();
            if rare.is_empty() {
                self.rare = None;
            }
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let mut buf = ReadBuf::new(scratch);
            let Poll::Ready(read) = Pin::new(&mut self.io).poll_read(cx, &mut buf) else {
                // Nothing more to read: an idle connection keeps no message buffer.
                self.conn.release_spare();
                return Poll::Pending;
            };
            read?;
            let input = buf.filled();
            if input.is_empty() {
                return Poll::Ready(self.read_eof());
            }
            match self.conn.receive(input) {
                Ok((used, event)) => {
                    if used < input.len() {
                        self.rare().leftover.extend_from_slice(&input[used..]);
                    }
                    Poll::Ready(Ok(event))
                }
                Err(e) => {
                    self.rare().failure = Some(e.into());
                    Poll::Ready(Ok(None))
                }
            }
        })
    }

    /// The peer closed TCP: the end after a closing handshake, abnormal before it.
    fn read_eof(&mut self) -> Result<Option<Event>, Error> {
        if self.conn.state() != State::Closed && !self.has_failed() {
            self.rare().failure = Some(Error::Abnormal);
        }
        self.done = true;
        Ok(None)
    }

    /// Takes what other tasks sent; true if there was anything.
    fn poll_commands(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(commands) = self.rare.as_mut().and_then(|rare| rare.commands.as_mut()) else { return false };
        let command = match commands.poll_recv(cx) {
            Poll::Ready(Some(command)) => command,
            Poll::Ready(None) => {
                self.rare().commands = None;
                return false;
            }
            Poll::Pending => return false,
        };
        // A command that comes after the close is dropped, as a send would fail.
        let _ = match command {
            Command::Message(message) => self.conn.send(&message),
            Command::Ping(payload) => self.conn.ping(&payload),
            Command::Close(code, reason) => self.conn.close(code, &reason),
        };
        true
    }

    /// Writes everything queued, with vectored writes, then flushes.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while !self.conn.output().is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = self.conn.output().io_slices(&mut slices);
            let written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n]))?;
            if written == 0 {
                return Poll::Ready(Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()));
            }
            self.conn.output_mut().advance(written);
            self.needs_flush = true;
        }
        if self.needs_flush {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.needs_flush = false;
        }
        Poll::Ready(Ok(()))
    }

    /// The closing handshake and the TCP close must end within `close_timeout`.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let timeout = Duration::from_millis(self.close_timeout_ms.into());
        let deadline =
            self.rare().deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(Instant::now() + timeout)));
        deadline.as_mut().poll(cx)
    }

    /// Ends on an I/O error: reported, unless the closing handshake was
    /// already complete, when a reset while tearing TCP down changes nothing.
    fn end_with(&mut self, error: Error) -> Poll<Option<Result<Event, Error>>> {
        self.done = true;
        if self.conn.state() == State::Closed && !self.has_failed() {
            return Poll::Ready(None);
        }
        Poll::Ready(Some(Err(self.take_failure().unwrap_or(error))))
    }
}
