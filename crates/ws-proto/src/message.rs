//! Messages and their reassembly from fragments (RFC 6455 section 5.4).
//!
//! A message's payload is unmasked and, for text, validated as its bytes
//! arrive, so a limit or an invalid byte is caught before the rest comes.

use crate::deflate::{Compressor, DeflateConfig, DeflateParams, Inflater};
use crate::frame::{FrameHeader, OpCode, RSV1, encode_frame};
use crate::mask::{apply_mask, copy_masked};
use crate::utf8::{Utf8Bytes, Utf8Validator};
use crate::{Error, Role};
use bytes::{Bytes, BytesMut};
use std::sync::OnceLock;

/// A complete data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message, valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        match self {
            Message::Text(text) => text.as_bytes(),
            Message::Binary(bytes) => bytes,
        }
    }

    /// The payload, shared without a copy.
    pub fn payload_bytes(&self) -> Bytes {
        match self {
            Message::Text(text) => text.clone().into_bytes(),
            Message::Binary(bytes) => bytes.clone(),
        }
    }

    /// The opcode of the message's first frame.
    pub fn opcode(&self) -> OpCode {
        match self {
            Message::Text(_) => OpCode::Text,
            Message::Binary(_) => OpCode::Binary,
        }
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Message::Text(text.into())
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(text.into())
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Self {
        Message::Binary(bytes.into())
    }
}

/// Most of a frame's announced length reserved up front; the rest grows as
/// bytes arrive, so a header alone cannot make the receiver allocate much.
const RESERVE_AHEAD: u64 = 64 << 10;
/// Past this, the spare room left after a message is let go at once, so a
/// connection does not keep the allocation of the largest message it
/// received; below, it serves the next messages until the connection has
/// nothing more to read ([`Reassembly::release_spare`]).
const KEEP_SPARE: usize = 4 << 10;
/// Compressed bytes are unmasked through a buffer of this size on the stack.
const UNMASK_CHUNK: usize = 4 << 10;

/// The data message being received.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    opcode: Option<OpCode>,
    payload: BytesMut,
    utf8: Utf8Validator,
    /// Set when permessage-deflate was negotiated; boxed, as it is not always.
    inflater: Option<Box<Inflater>>,
    /// The message in progress had RSV1 on its first frame.
    compressed: bool,
}

impl Reassembly {
    /// Receives compressed messages with the agreed parameters.
    pub(crate) fn set_inflater(&mut self, inflater: Inflater) {
        self.inflater = Some(Box::new(inflater));
    }

    /// Checks a data frame's header against the message so far, the
    /// extension and the limits. RSV1 may mark the first frame of a message
    /// as compressed when permessage-deflate is on; no other RSV bit is defined.
    pub(crate) fn start_frame(
        &mut self,
        header: &FrameHeader,
        max_frame_size: usize,
        max_message_size: usize,
    ) -> Result<(), Error> {
        let first = header.opcode != OpCode::Continuation;
        let allowed = if first && self.inflater.is_some() { RSV1 } else { 0 };
        if header.rsv & !allowed != 0 {
            return Err(Error::ReservedBits(header.rsv));
        }
        match (header.opcode, self.opcode) {
            (OpCode::Continuation, None) => return Err(Error::UnexpectedContinuation),
            (OpCode::Continuation, Some(_)) => {}
            (_, Some(_)) => return Err(Error::ExpectedContinuation),
            (opcode, None) => {
                self.opcode = Some(opcode);
                self.compressed = header.rsv & RSV1 != 0;
            }
        }
        if header.payload_len > max_frame_size as u64 {
            return Err(Error::FrameTooLarge { size: header.payload_len, limit: max_frame_size });
        }
        if !self.compressed {
            let size = self.payload.len() as u64 + header.payload_len;
            if size > max_message_size as u64 {
                return Err(Error::MessageTooLarge { size, limit: max_message_size });
            }
            self.payload.reserve(header.payload_len.min(RESERVE_AHEAD) as usize);
        }
        Ok(())
    }

    /// Appends payload bytes that arrived, unmasking them as bytes `offset..`
    /// of their frame, inflating them if the message is compressed (bounded
    /// by `limit`), and validating the result if the message is text.
    pub(crate) fn extend(
        &mut self,
        data: &[u8],
        mask: Option<[u8; 4]>,
        offset: u64,
        limit: usize,
    ) -> Result<(), Error> {
        let start = self.payload.len();
        match self.inflater.as_mut().filter(|_| self.compressed) {
            Some(inflater) => inflate_masked(inflater, data, mask, offset, &mut self.payload, limit)?,
            None => match mask {
                Some(key) => {
                    self.payload.resize(start + data.len(), 0);
                    copy_masked(&mut self.payload[start..], data, key, offset as usize);
                }
                None => self.payload.extend_from_slice(data),
            },
        }
        self.validate_from(start)
    }

    /// Validates the text added since `start`, if the message is text.
    fn validate_from(&mut self, start: usize) -> Result<(), Error> {
        if self.opcode == Some(OpCode::Text) {
            self.utf8.feed(&self.payload[start..])?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn payload_capacity(&self) -> usize {
        self.payload.capacity()
    }

    /// Lets the spare room go, between messages: for a connection that has
    /// nothing more to read, which then holds no buffer while idle. Even with
    /// no room left, the buffer a message was split from is still shared
    /// with it: it is let go as well, whole, once the message is.
    pub(crate) fn release_spare(&mut self) {
        if self.opcode.is_none() {
            self.payload = BytesMut::new();
        }
    }

    /// Ends the message after its final frame.
    pub(crate) fn finish(&mut self, limit: usize) -> Result<Message, Error> {
        if let Some(inflater) = self.inflater.as_mut().filter(|_| self.compressed) {
            let start = self.payload.len();
            inflater.finish(&mut self.payload, limit)?;
            self.validate_from(start)?;
            self.compressed = false;
        }
        let payload = self.payload.split().freeze();
        if self.payload.capacity() > KEEP_SPARE {
            self.payload = BytesMut::new();
        }
        match self.opcode.take() {
            Some(OpCode::Text) => {
                self.utf8.finish()?;
                Ok(Message::Text(Utf8Bytes::from_validated(payload)))
            }
            _ => Ok(Message::Binary(payload)),
        }
    }
}

/// Unmasks compressed bytes, bytes `offset..` of their frame, through a
/// buffer on the stack and inflates them into `payload`, bounded by `limit`.
/// Not inlined, so the buffer stays off the stack of uncompressed messages.
#[inline(never)]
fn inflate_masked(
    inflater: &mut Inflater,
    data: &[u8],
    mask: Option<[u8; 4]>,
    offset: u64,
    payload: &mut BytesMut,
    limit: usize,
) -> Result<(), Error> {
    for (i, chunk) in data.chunks(UNMASK_CHUNK).enumerate() {
        let mut buf = [0; UNMASK_CHUNK];
        let buf = &mut buf[..chunk.len()];
        buf.copy_from_slice(chunk);
        if let Some(key) = mask {
            apply_mask(buf, key, offset as usize + i * UNMASK_CHUNK);
        }
        inflater.inflate(buf, payload, limit)?;
    }
    Ok(())
}

/// A message encoded once as a server frame, to be sent as it is on many
/// connections: the plain frame, and, when it is worth compressing, a frame
/// compressed on its own (no context), which serves every connection that
/// agreed to permessage-deflate with at least its window bits and does not
/// keep a compression context of its own. That frame is made once, when the
/// first such connection is sent the message: a message that none of them
/// receives is never compressed. A message that will most likely reach one
/// connection ([`SharedMessage::for_one`]) keeps no compressed frame: it is
/// compressed for each connection that takes it so, and the memory it holds
/// while it waits in a room's history is its plain frame alone.
#[derive(Debug, Clone)]
pub struct SharedMessage {
    plain: Bytes,
    compressed: Option<Compressed>,
}

/// The compressed frame of a [`SharedMessage`], made on first use.
#[derive(Debug, Clone)]
struct Compressed {
    opcode: OpCode,
    /// Whether the frame, once made, is kept for the next connections.
    keep: bool,
    /// The settings it is compressed with, alone: each message with a fresh context.
    alone: DeflateConfig,
    frame: OnceLock<Bytes>,
}

/// A server frame of `payload`, unmasked.
fn server_frame(opcode: OpCode, rsv: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    encode_frame(FrameHeader { fin: true, rsv, opcode, mask: None, payload_len: 0 }, payload, &mut out);
    out.freeze()
}

impl SharedMessage {
    /// Encodes `message` once; with `deflate`, a message that reaches its
    /// threshold is compressed once as well, when first asked for so.
    pub fn new(message: &Message, deflate: Option<&DeflateConfig>) -> Self {
        Self::encode(message, deflate, true)
    }

    /// Encodes `message` once, for what will most likely be one connection:
    /// with `deflate`, it is compressed anew for each connection that takes
    /// it so, and no compressed frame is kept.
    pub fn for_one(message: &Message, deflate: Option<&DeflateConfig>) -> Self {
        Self::encode(message, deflate, false)
    }

    fn encode(message: &Message, deflate: Option<&DeflateConfig>, keep: bool) -> Self {
        let payload = message.payload();
        let compressed =
            deflate.map(|config| DeflateConfig { no_context_takeover: true, ..*config }).and_then(|alone| {
                Compressed::compressor(&alone).wants(payload.len()).then(|| Compressed {
                    opcode: message.opcode(),
                    keep,
                    alone,
                    frame: OnceLock::new(),
                })
            });
        SharedMessage { plain: server_frame(message.opcode(), 0, payload), compressed }
    }

    /// The length of the plain frame: about what either frame takes in a queue.
    pub fn frame_len(&self) -> usize {
        self.plain.len()
    }

    /// The message's payload, as it was given: the plain frame past its header.
    pub fn payload(&self) -> &[u8] {
        // A frame encoded here: its header always decodes.
        let header = FrameHeader::decode(&self.plain).ok().flatten().map_or(0, |(_, len)| len);
        &self.plain[header..]
    }

    /// The frame for a connection that compresses with `compressor`, if any.
    pub(crate) fn frame_for(&self, compressor: Option<&Compressor>) -> Bytes {
        match (&self.compressed, compressor) {
            (Some(compressed), Some(c))
                if c.stands_alone()
                    && c.window_bits() >= compressed.alone.window_bits
                    && c.wants(self.payload().len()) =>
            {
                match compressed.keep {
                    true => compressed.frame.get_or_init(|| compressed.compress(self.payload())).clone(),
                    false => compressed.compress(self.payload()),
                }
            }
            _ => self.plain.clone(),
        }
    }
}

impl Compressed {
    /// A compressor with no context kept, for peers that agreed to `alone`'s window bits or more.
    fn compressor(alone: &DeflateConfig) -> Compressor {
        let params = DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: alone.window_bits,
            client_max_window_bits: alone.window_bits,
        };
        Compressor::new(Role::Server, &params, alone)
    }

    fn compress(&self, payload: &[u8]) -> Bytes {
        server_frame(self.opcode, RSV1, &Self::compressor(&self.alone).compress(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_message_is_compressed_when_a_connection_first_takes_it_so() {
        let shared = SharedMessage::new(&Message::from("a broadcast ".repeat(50)), Some(&DeflateConfig::default()));
        let compressed = shared.compressed.as_ref().expect("over the threshold");
        assert_eq!(shared.frame_for(None), shared.plain);
        assert!(compressed.frame.get().is_none(), "not compressed for plain connections");
        let frame = shared.frame_for(Some(&Compressed::compressor(&compressed.alone)));
        assert!(frame[0] & 0x40 != 0 && frame.len() < shared.plain.len(), "RSV1 set, and smaller");
        assert_eq!(compressed.frame.get(), Some(&frame), "compressed once, then kept");
    }

    #[test]
    fn a_message_for_one_is_compressed_for_each_connection_and_keeps_no_frame() {
        let text = "a message to one member ".repeat(20);
        let shared = SharedMessage::for_one(&Message::from(text.as_str()), Some(&DeflateConfig::default()));
        let compressed = shared.compressed.as_ref().expect("over the threshold");
        let compressor = Compressed::compressor(&compressed.alone);
        let (first, second) = (shared.frame_for(Some(&compressor)), shared.frame_for(Some(&compressor)));
        assert!(first[0] & 0x40 != 0 && first.len() < shared.plain.len(), "RSV1 set, and smaller");
        assert_eq!(first, second, "the same frame each time");
        assert!(compressed.frame.get().is_none(), "and none kept");
        assert_eq!(shared.frame_for(None), shared.plain);
    }

    #[test]
    fn the_payload_is_found_past_each_length_of_header() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let payload = vec![b'x'; len];
            let shared = SharedMessage::new(&Message::Binary(payload.clone().into()), None);
            assert_eq!(shared.payload(), payload.as_slice(), "payload of {len} bytes");
        }
    }
}
