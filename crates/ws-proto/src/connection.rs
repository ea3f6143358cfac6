//! One WebSocket connection as a state machine (RFC 6455 sections 5, 6 and 7):
//! received bytes in, events out; messages in, encoded bytes out. The caller
//! owns the socket and the clock.

use crate::close::{CloseCode, CloseFrame};
use crate::deflate::{Compressor, DeflateConfig, DeflateParams, Inflater};
use crate::frame::{FrameHeader, MAX_HEADER_LEN, OpCode, RSV1};
use crate::message::{Message, Reassembly, SharedMessage};
use crate::output::Output;
use crate::{Config, Error, mask::apply_mask, utf8::Utf8Bytes};
use bytes::{Bytes, BytesMut};

/// Which end of the connection this is; it decides who masks (section 5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end that opened the connection: masks what it sends.
    Client,
    /// The end that accepted it: requires masked frames.
    Server,
}

/// Where the connection is in its closing handshake (section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// This end sent a close and waits for the reply; received messages still arrive.
    CloseSent,
    /// Both closes are done, or the connection failed: only output remains to flush.
    Closed,
}

/// Something the peer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text or binary message.
    Message(Message),
    /// A ping; the pong is already queued.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close, with its code and reason if it gave one. The reply,
    /// if one was due, is already queued.
    Close(Option<CloseFrame>),
}

/// A frame cut by the end of an input, kept until the rest of it comes.
/// Boxed, and only while a frame is cut or a control frame is read: a
/// connection between frames keeps the pointer alone.
#[derive(Debug)]
enum Cut {
    /// The first bytes of a header.
    Header { buf: [u8; MAX_HEADER_LEN], len: usize },
    /// A header, how much of its payload came, and a control frame's payload so far.
    Payload { header: FrameHeader, received: u64, control: BytesMut },
}

/// From this payload size on, a server queues a message's bytes rather than copy them.
const SHARE_PAYLOAD_FROM: usize = 4 << 10;

/// The protocol state of one WebSocket connection, with no I/O.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    /// The limits of [`Config`] that apply once the handshake is done.
    max_frame_size: usize,
    max_message_size: usize,
    state: State,
    cut: Option<Box<Cut>>,
    message: Reassembly,
    output: Output,
    /// Set when permessage-deflate was negotiated; boxed, as it is not always.
    compressor: Option<Box<Compressor>>,
}

impl Connection {
    /// A connection whose opening handshake is done.
    pub fn new(role: Role, config: Config) -> Self {
        Connection {
            role,
            max_frame_size: config.max_frame_size,
            max_message_size: config.max_message_size,
            state: State::Open,
            cut: None,
            message: Reassembly::default(),
            output: Output::default(),
            compressor: None,
        }
    }

    /// Turns on permessage-deflate (RFC 7692) with the parameters agreed in
    /// the handshake and this end's settings.
    pub fn with_deflate(mut self, params: &DeflateParams, config: &DeflateConfig) -> Self {
        self.compressor = Some(Box::new(Compressor::new(self.role, params, config)));
        self.message.set_inflater(Inflater::new(self.role, params));
        self
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The closing-handshake state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Feeds received bytes. Returns how many were consumed and the event
    /// they completed, if any; without an event, all of `input` was consumed.
    /// Call again with the rest until it is used up.
    ///
    /// A protocol error fails the connection: the close frame with the
    /// error's code is queued, the error returned once, and every byte after
    /// it ignored. Bytes after the peer's close are ignored as well.
    #[inline]
    pub fn receive(&mut self, input: &[u8]) -> Result<(usize, Option<Event>), Error> {
        if self.state == State::Closed {
            return Ok((input.len(), None));
        }
        self.read(input).inspect_err(|e| self.fail(e))
    }

    /// Reads frames from `input` until one completes an event or the input
    /// runs out. A data frame whose payload is all in `input` goes from
    /// header to event in one pass; only a frame cut by the end of `input`
    /// is kept in `self.cut`. Kept out of line so that `receive`, inlined
    /// into its caller, leaves the event to be written once, into the
    /// caller's slot.
    #[inline(never)]
    fn read(&mut self, input: &[u8]) -> Result<(usize, Option<Event>), Error> {
        let mut pos = 0;
        loop {
            let (header, offset) = match self.cut.as_deref() {
                Some(Cut::Payload { header, received, .. }) => (*header, *received),
                _ => {
                    let Some((header, used)) = self.read_header(&input[pos..])? else {
                        return Ok((input.len(), None));
                    };
                    pos += used;
                    self.start_frame(&header)?;
                    (header, 0)
                }
            };
            let take = (header.payload_len - offset).min((input.len() - pos) as u64) as usize;
            self.payload(&header, &input[pos..pos + take], offset)?;
            pos += take;
            let received = offset + take as u64;
            if received < header.payload_len {
                self.cut_at(header, received);
                return Ok((pos, None));
            }
            if let Some(event) = self.end_frame(&header)? {
                return Ok((pos, Some(event)));
            }
        }
    }

    /// Completes a frame header from the bytes kept of it, if any, and
    /// `input`: the header and how many bytes of `input` it used, or `None`
    /// after keeping every byte of an `input` too short to finish it.
    fn read_header(&mut self, input: &[u8]) -> Result<Option<(FrameHeader, usize)>, Error> {
        let Some(Cut::Header { buf, len }) = self.cut.as_deref_mut() else {
            let decoded = FrameHeader::decode(input)?;
            if decoded.is_none() {
                let mut buf = [0; MAX_HEADER_LEN];
                buf[..input.len()].copy_from_slice(input);
                self.cut = Some(Box::new(Cut::Header { buf, len: input.len() }));
            }
            return Ok(decoded);
        };
        let kept = *len;
        let copied = (MAX_HEADER_LEN - kept).min(input.len());
        buf[kept..kept + copied].copy_from_slice(&input[..copied]);
        let Some((header, header_len)) = FrameHeader::decode(&buf[..kept + copied])? else {
            *len = kept + copied;
            return Ok(None);
        };
        self.cut = None;
        Ok(Some((header, header_len - kept)))
    }

    /// Keeps the frame, cut after `received` bytes of its payload.
    fn cut_at(&mut self, header: FrameHeader, received: u64) {
        match self.cut.as_deref_mut() {
            Some(Cut::Payload { received: kept, .. }) => *kept = received,
            _ => self.cut = Some(Box::new(Cut::Payload { header, received, control: BytesMut::new() })),
        }
    }

    /// Checks a new frame's header against the role and the message so far.
    fn start_frame(&mut self, header: &FrameHeader) -> Result<(), Error> {
        match (self.role, header.mask) {
            (Role::Server, None) => return Err(Error::UnmaskedFrame),
            (Role::Client, Some(_)) => return Err(Error::MaskedFrame),
            _ => {}
        }
        if header.opcode.is_control() {
            if header.rsv != 0 {
                return Err(Error::ReservedBits(header.rsv));
            }
            Ok(())
        } else {
            self.message.start_frame(header, self.max_frame_size, self.max_message_size)
        }
    }

    /// Takes payload bytes `offset..` of a frame: a data frame's into its
    /// message, a control frame's into the cut that keeps them.
    fn payload(&mut self, header: &FrameHeader, data: &[u8], offset: u64) -> Result<(), Error> {
        if !header.opcode.is_control() {
            return self.message.extend(data, header.mask, offset, self.max_message_size);
        }
        if data.is_empty() {
            return Ok(());
        }
        self.cut_at(*header, offset);
        if let Some(Cut::Payload { control, .. }) = self.cut.as_deref_mut() {
            let start = control.len();
            control.extend_from_slice(data);
            if let Some(key) = header.mask {
                apply_mask(&mut control[start..], key, offset as usize);
            }
        }
        Ok(())
    }

    fn end_frame(&mut self, header: &FrameHeader) -> Result<Option<Event>, Error> {
        if !header.opcode.is_control() {
            self.cut = None;
            return Ok(match header.fin {
                true => Some(Event::Message(self.message.finish(self.max_message_size)?)),
                false => None,
            });
        }
        let control = match self.cut.take().map(|cut| *cut) {
            Some(Cut::Payload { control, .. }) => control.freeze(),
            _ => Bytes::new(),
        };
        Ok(Some(match header.opcode {
            OpCode::Ping => {
                if self.state == State::Open {
                    self.push(OpCode::Pong, true, &control);
                }
                Event::Ping(control)
            }
            OpCode::Pong => Event::Pong(control),
            _ => Event::Close(self.receive_close(control)?),
        }))
    }

    /// Takes the peer's close: replies with its code unless this end closed
    /// first (section 5.5.1), and ends the connection.
    fn receive_close(&mut self, payload: Bytes) -> Result<Option<CloseFrame>, Error> {
        let frame = CloseFrame::parse(payload)?;
        if self.state == State::Open {
            let code = frame.as_ref().map(|f| f.code.0.to_be_bytes());
            self.push(OpCode::Close, true, code.as_ref().map_or(&[], |c| c.as_slice()));
        }
        self.state = State::Closed;
        Ok(frame)
    }

    /// Fails the connection: queues a close with the error's code, unless a
    /// close was already sent, and stops reading.
    #[cold]
    fn fail(&mut self, error: &Error) {
        if self.state == State::Open {
            if let Some(code) = error.close_code() {
                let frame = CloseFrame { code, reason: error.to_string().into() };
                self.push(OpCode::Close, true, &frame.encode());
            }
        }
        self.state = State::Closed;
    }

    /// Queues a message in one frame.
    pub fn send(&mut self, message: &Message) -> Result<(), Error> {
        self.send_fragmented(message, usize::MAX)
    }

    /// Queues a message in frames of at most `frame_size` payload bytes
    /// (at least one byte each; an empty message is one empty frame). With
    /// permessage-deflate, a message over the threshold is compressed first.
    pub fn send_fragmented(&mut self, message: &Message, frame_size: usize) -> Result<(), Error> {
        self.check_open()?;
        let (payload, mut rsv) = match self.compressor.as_mut().filter(|c| c.wants(message.payload().len())) {
            Some(compressor) => (compressor.compress(message.payload()), RSV1),
            None => (message.payload_bytes(), 0),
        };
        let frame_size = frame_size.max(1);
        let mut opcode = message.opcode();
        let mut start = 0_usize;
        loop {
            let end = payload.len().min(start.saturating_add(frame_size));
            let fin = end == payload.len();
            self.push_data(FrameHeader { fin, rsv, opcode, mask: None, payload_len: 0 }, payload.slice(start..end));
            if fin {
                return Ok(());
            }
            (start, opcode, rsv) = (end, OpCode::Continuation, 0);
        }
    }

    /// Queues a message that was encoded once for many connections; a server only.
    pub fn send_shared(&mut self, message: &SharedMessage) -> Result<(), Error> {
        debug_assert_eq!(self.role, Role::Server, "a client's frames are masked, never shared");
        self.check_open()?;
        self.output.push_shared(message.frame_for(self.compressor.as_deref()));
        Ok(())
    }

    /// Queues a ping with up to 125 bytes of payload.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.send_control(OpCode::Ping, payload)
    }

    /// Queues an unsolicited pong (a heartbeat) with up to 125 bytes of payload.
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.send_control(OpCode::Pong, payload)
    }

    /// Starts the closing handshake with a sendable code and a reason (cut to
    /// fit a control frame). After it nothing else is sent.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if !code.is_sendable() {
            return Err(Error::InvalidCloseCode(code.0));
        }
        self.check_open()?;
        let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
        self.push(OpCode::Close, true, &frame.encode());
        self.state = State::CloseSent;
        Ok(())
    }

    fn send_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), Error> {
        if payload.len() > crate::frame::MAX_CONTROL_PAYLOAD {
            return Err(Error::ControlFrameTooLong(payload.len() as u64));
        }
        self.check_open()?;
        self.push(opcode, true, payload);
        Ok(())
    }

    fn check_open(&self) -> Result<(), Error> {
        if self.state == State::Open { Ok(()) } else { Err(Error::Closed) }
    }

    /// Queues a data frame; a server shares a large payload instead of copying it.
    fn push_data(&mut self, mut header: FrameHeader, payload: Bytes) {
        if self.role == Role::Server && payload.len() >= SHARE_PAYLOAD_FROM {
            header.payload_len = payload.len() as u64;
            self.output.push_shared_frame(header, payload);
        } else {
            header.mask = (self.role == Role::Client).then(rand::random);
            self.output.push_frame(header, &payload);
        }
    }

    /// Queues a control frame.
    fn push(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        let mask = (self.role == Role::Client).then(rand::random);
        let header = FrameHeader { fin, rsv: 0, opcode, mask, payload_len: 0 };
        self.output.push_frame(header, payload);
    }

    /// Lets go of the buffer kept for the next message, unless one is in
    /// progress: for an I/O binding to call when the peer has nothing more
    /// to read, so that an idle connection holds none while a busy one
    /// reuses it.
    pub fn release_spare(&mut self) {
        self.message.release_spare();
    }

    #[cfg(test)]
    pub(crate) fn buffered_capacity(&self) -> usize {
        self.message.payload_capacity()
    }

    /// The encoded bytes waiting to be written.
    pub fn output(&self) -> &Output {
        &self.output
    }

    /// The output, to report what was written with [`Output::advance`].
    pub fn output_mut(&mut self) -> &mut Output {
        &mut self.output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A frame as a client sends it (masked) with explicit FIN, RSV and opcode bits.
    fn client_frame(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(FrameHeader { fin, rsv, opcode, mask: Some(KEY), payload_len: 0 }, payload, &mut out);
        out.to_vec()
    }

    fn text(fin: bool, payload: &[u8]) -> Vec<u8> {
        client_frame(fin, 0, OpCode::Text, payload)
    }

    fn cont(fin: bool, payload: &[u8]) -> Vec<u8> {
        client_frame(fin, 0, OpCode::Continuation, payload)
    }

    fn server() -> Connection {
        Connection::new(Role::Server, Config::default())
    }

    /// Feeds all of `wire` in one read; returns the events and the error, if any.
    fn feed(conn: &mut Connection, wire: &[u8]) -> (Vec<Event>, Option<Error>) {
        let mut events = Vec::new();
        let mut input = wire;
        loop {
            match conn.receive(input) {
                Ok((used, Some(event))) => {
                    events.push(event);
                    input = &input[used..];
                }
                Ok((used, None)) => {
                    assert_eq!(used, input.len());
                    return (events, None);
                }
                Err(e) => return (events, Some(e)),
            }
        }
    }

    /// What the connection queued, decoded as (opcode, payload) frames from a server.
    fn sent(conn: &mut Connection) -> Vec<(OpCode, Vec<u8>)> {
        let mut slices = [std::io::IoSlice::new(&[]); 32];
        let n = conn.output.io_slices(&mut slices);
        let wire: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        conn.output.advance(wire.len());
        let mut frames = Vec::new();
        let mut rest = &wire[..];
        while let Some((h, len)) = FrameHeader::decode(rest).unwrap() {
            let end = len + h.payload_len as usize;
            frames.push((h.opcode, rest[len..end].to_vec()));
            rest = &rest[end..];
        }
        assert!(rest.is_empty());
        frames
    }

    fn close_code_sent(conn: &mut Connection) -> u16 {
        let frames = sent(conn);
        let (opcode, payload) = frames.last().expect("a close frame");
        assert_eq!(*opcode, OpCode::Close);
        u16::from_be_bytes([payload[0], payload[1]])
    }

    fn message(text: &str) -> Event {
        Event::Message(Message::from(text))
    }

    #[test]
    fn fragments_with_interleaved_control_frames() {
        let mut conn = server();
        let mut wire = text(false, b"Hel");
        wire.extend(client_frame(true, 0, OpCode::Ping, b"p"));
        wire.extend(cont(false, b""));
        wire.extend(cont(true, b"lo"));
        let (events, error) = feed(&mut conn, &wire);
        assert_eq!(error, None);
        assert_eq!(events, [Event::Ping(Bytes::from_static(b"p")), message("Hello")]);
        assert_eq!(sent(&mut conn), [(OpCode::Pong, b"p".to_vec())]);
    }

    #[test]
    fn every_read_size_gives_the_same_events() {
        let mut wire = text(false, "κό".as_bytes());
        wire.extend(cont(true, "σμε".as_bytes()));
        wire.extend(client_frame(true, 0, OpCode::Binary, &[7; 300]));
        wire.extend(client_frame(true, 0, OpCode::Close, b"\x03\xe8"));
        for size in 1..wire.len() {
            let mut conn = server();
            let mut events = Vec::new();
            for read in wire.chunks(size) {
                events.extend(feed(&mut conn, read).0);
            }
            let binary = Event::Message(Message::Binary(Bytes::from(vec![7; 300])));
            let close = Event::Close(Some(CloseFrame { code: CloseCode::NORMAL, reason: Utf8Bytes::default() }));
            assert_eq!(events, [message("κόσμε"), binary, close], "read size {size}");
        }
    }

    #[test]
    fn utf8_split_at_every_position_across_two_fragments() {
        let sample = "aé€𝄞\u{10FFFF}z".as_bytes();
        for cut in 0..=sample.len() {
            let mut wire = text(false, &sample[..cut]);
            wire.extend(cont(true, &sample[cut..]));
            let (events, error) = feed(&mut server(), &wire);
            assert_eq!((events, error), (vec![message("aé€𝄞\u{10FFFF}z")], None), "cut {cut}");
        }
    }

    /// Invalid text fails at its first bad byte: in a middle fragment, and
    /// within a frame whose rest has not arrived.
    #[test]
    fn invalid_utf8_fails_at_the_first_bad_byte() {
        let mut conn = server();
        let mut wire = text(false, "κό".as_bytes());
        wire.extend(cont(false, b"ok\xed\xa0\x80more"));
        let (events, error) = feed(&mut conn, &wire);
        assert_eq!((events, error), (vec![], Some(Error::InvalidUtf8)));
        assert_eq!(close_code_sent(&mut conn), 1007);

        let whole = text(true, b"valid then \xf4\x90\x80\x80 and a long tail that never comes");
        // 0xF4 may begin a code point; 0x90 after it cannot (above U+10FFFF).
        let first_bad = 6 + b"valid then ".len() + 1;
        let mut conn = server();
        assert_eq!(feed(&mut conn, &whole[..first_bad]), (vec![], None));
        assert_eq!(feed(&mut conn, &whole[first_bad..first_bad + 1]), (vec![], Some(Error::InvalidUtf8)));
        assert_eq!(close_code_sent(&mut conn), 1007);
        assert_eq!(feed(&mut conn, &whole[first_bad + 1..]), (vec![], None), "ignored after failing");

        let (_, error) = feed(&mut server(), &text(true, b"cut \xe2\x82"));
        assert_eq!(error, Some(Error::InvalidUtf8));
    }

    #[test]
    fn each_protocol_error_closes_with_its_code() {
        let unmasked = {
            let mut out = BytesMut::new();
            encode_frame(
                FrameHeader { fin: true, rsv: 0, opcode: OpCode::Text, mask: None, payload_len: 0 },
                b"x",
                &mut out,
            );
            out.to_vec()
        };
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (unmasked, 1002),
            (client_frame(true, 0b100, OpCode::Text, b"x"), 1002),
            (client_frame(true, 0b001, OpCode::Ping, b""), 1002),
            (vec![0x83, 0x80, 1, 2, 3, 4], 1002),
            (client_frame(false, 0, OpCode::Ping, b""), 1002),
            (cont(true, b"x"), 1002),
            ([text(false, b"a"), text(true, b"b")].concat(), 1002),
            (client_frame(true, 0, OpCode::Close, b"\x03"), 1002),
            (client_frame(true, 0, OpCode::Close, b"\x03\xed"), 1002),
            (client_frame(true, 0, OpCode::Close, b"\x03\xe8\xff"), 1007),
            (text(true, b"\xff"), 1007),
        ];
        for (wire, code) in cases {
            let mut conn = server();
            let (_, error) = feed(&mut conn, &wire);
            let error = error.unwrap_or_else(|| panic!("{wire:x?} should fail"));
            assert_eq!(error.close_code(), Some(CloseCode(code)), "{wire:x?}: {error}");
            assert_eq!(close_code_sent(&mut conn), code);
            assert_eq!(conn.state(), State::Closed);
        }
    }

    #[test]
    fn client_rejects_masked_frames() {
        let mut conn = Connection::new(Role::Client, Config::default());
        let (_, error) = feed(&mut conn, &text(true, b"x"));
        assert_eq!(error, Some(Error::MaskedFrame));
    }

    /// Oversized frames and messages are refused from their headers, before
    /// any payload is buffered.
    #[test]
    fn limits_are_enforced_from_the_header() {
        let config = Config { max_frame_size: 100, max_message_size: 150, ..Config::default() };
        let mut conn = Connection::new(Role::Server, config);
        let big = text(true, &[b'a'; 101]);
        let (_, error) = feed(&mut conn, &big[..8]);
        assert_eq!(error, Some(Error::FrameTooLarge { size: 101, limit: 100 }));
        assert_eq!(close_code_sent(&mut conn), 1009);

        let mut conn = Connection::new(Role::Server, config);
        let wire = [text(false, &[b'a'; 100]), cont(true, &[b'b'; 51])].concat();
        let (_, error) = feed(&mut conn, &wire[..106 + 8]);
        assert_eq!(error, Some(Error::MessageTooLarge { size: 151, limit: 150 }));
        assert_eq!(close_code_sent(&mut conn), 1009);

        let huge = [0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4];
        let mut conn = server();
        assert!(matches!(feed(&mut conn, &huge).1, Some(Error::FrameTooLarge { .. })));
        assert_eq!(conn.message.payload_capacity(), 0);
    }

    #[test]
    fn a_large_message_leaves_no_spare_room_and_a_small_ones_goes_when_released() {
        let mut conn = server();
        let wire = [text(false, &[b'a'; 70_000]), cont(true, &[b'b'; 70_000])].concat();
        let (events, _) = feed(&mut conn, &wire);
        assert_eq!(events.len(), 1);
        assert_eq!(conn.message.payload_capacity(), 0);
        let (events, _) = feed(&mut conn, &[text(true, &[b'c'; 100]), text(false, &[b'd'; 100])].concat());
        assert_eq!(events.len(), 1);
        conn.release_spare();
        assert!(conn.message.payload_capacity() >= 100, "kept while a message is in progress");
        feed(&mut conn, &cont(true, &[b'e'; 10]));
        assert!(conn.message.payload_capacity() <= 4 << 10);
        conn.release_spare();
        assert_eq!(conn.message.payload_capacity(), 0);
    }

    #[test]
    fn a_message_that_filled_its_buffer_shares_it_with_nothing_once_released() {
        let mut conn = server();
        // A frame alone in a read: its payload takes exactly the room reserved for it.
        let (mut events, _) = feed(&mut conn, &text(true, &[b'a'; 300]));
        let Some(Event::Message(Message::Text(message))) = events.pop() else { panic!("one message: {events:?}") };
        let payload = message.into_bytes();
        assert!(!payload.is_unique(), "split from the connection's buffer");
        conn.release_spare();
        assert!(payload.is_unique(), "the connection holds no part of the message's buffer");
    }

    #[test]
    fn peer_close_is_echoed_and_ends_everything() {
        let mut conn = server();
        let mut wire = client_frame(true, 0, OpCode::Close, b"\x0f\xa0going");
        wire.extend(text(true, b"after close"));
        let (events, error) = feed(&mut conn, &wire);
        assert_eq!(error, None);
        let frame = CloseFrame { code: CloseCode(4000), reason: Utf8Bytes::from("going") };
        assert_eq!(events, [Event::Close(Some(frame))]);
        assert_eq!(sent(&mut conn), [(OpCode::Close, b"\x0f\xa0".to_vec())]);
        assert_eq!(conn.state(), State::Closed);
        assert_eq!(conn.send(&Message::from("late")), Err(Error::Closed));
        assert_eq!(conn.ping(b""), Err(Error::Closed));
        assert!(conn.output().is_empty());

        let mut conn = server();
        assert_eq!(feed(&mut conn, &client_frame(true, 0, OpCode::Close, b"")).0, [Event::Close(None)]);
        assert_eq!(sent(&mut conn), [(OpCode::Close, vec![])]);
    }

    #[test]
    fn own_close_waits_for_the_reply() {
        let mut conn = server();
        conn.close(CloseCode::GOING_AWAY, "restart").unwrap();
        assert_eq!(sent(&mut conn), [(OpCode::Close, b"\x03\xe9restart".to_vec())]);
        assert_eq!(conn.state(), State::CloseSent);
        assert_eq!(conn.close(CloseCode::NORMAL, ""), Err(Error::Closed));
        let mut wire = text(true, b"in flight");
        wire.extend(client_frame(true, 0, OpCode::Ping, b""));
        wire.extend(client_frame(true, 0, OpCode::Close, b"\x03\xe9"));
        let (events, _) = feed(&mut conn, &wire);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0], message("in flight"));
        assert!(sent(&mut conn).is_empty(), "nothing after our close, not even a pong");
        assert_eq!(conn.state(), State::Closed);
        assert_eq!(conn.close(CloseCode(1005), ""), Err(Error::InvalidCloseCode(1005)));
    }

    #[test]
    fn sending_fragments_and_sharing() {
        let mut conn = server();
        conn.send_fragmented(&Message::from("Hello"), 2).unwrap();
        conn.send(&Message::Binary(Bytes::new())).unwrap();
        let big = Bytes::from(vec![9u8; 10_000]);
        conn.send(&Message::Binary(big.clone())).unwrap();
        let frames = sent(&mut conn);
        let expected = [
            (OpCode::Text, b"He".to_vec()),
            (OpCode::Continuation, b"ll".to_vec()),
            (OpCode::Continuation, b"o".to_vec()),
            (OpCode::Binary, vec![]),
            (OpCode::Binary, big.to_vec()),
        ];
        assert_eq!(frames, expected);
        assert_eq!(conn.ping(&[0; 126]), Err(Error::ControlFrameTooLong(126)));
    }

    #[test]
    fn client_to_server_round_trip() {
        let mut client = Connection::new(Role::Client, Config::default());
        let mut server = server();
        client.send_fragmented(&Message::from("masked both ways"), 3).unwrap();
        client.ping(b"are you there").unwrap();
        let mut slices = [std::io::IoSlice::new(&[]); 32];
        let n = client.output.io_slices(&mut slices);
        let wire: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        let (events, error) = feed(&mut server, &wire);
        assert_eq!(error, None);
        assert_eq!(events, [message("masked both ways"), Event::Ping(Bytes::from_static(b"are you there"))]);
    }
}
