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
/// Past this, the spare room left after a message is let go, so an idle
/// connection does not keep the allocation of the largest message it received.
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
/// keep a compression context of its own.
#[derive(Debug, Clone)]
pub struct SharedMessage {
    plain: Bytes,
    compressed: Option<(u8, Bytes)>,
    len: usize,
}

impl SharedMessage {
    /// Encodes `message` once, and compresses it once as well when `deflate`
    /// is given and the message reaches its threshold.
    pub fn new(message: &Message, deflate: Option<&DeflateConfig>) -> Self {
        let payload = message.payload();
        let header = |rsv| FrameHeader { fin: true, rsv, opcode: message.opcode(), mask: None, payload_len: 0 };
        let frame = |rsv, payload: &[u8]| {
            let mut out = BytesMut::new();
            encode_frame(header(rsv), payload, &mut out);
            out.freeze()
        };
        let compressed = deflate.and_then(|config| {
            let alone = DeflateConfig { no_context_takeover: true, ..*config };
            let params = DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: config.window_bits,
                client_max_window_bits: config.window_bits,
            };
            let mut compressor = Compressor::new(Role::Server, &params, &alone);
            compressor.wants(payload.len()).then(|| (config.window_bits, frame(RSV1, &compressor.compress(payload))))
        });
        SharedMessage { plain: frame(0, payload), compressed, len: payload.len() }
    }

    /// The length of the plain frame: about what either frame takes in a queue.
    pub fn frame_len(&self) -> usize {
        self.plain.len()
    }

    /// The frame for a connection that compresses with `compressor`, if any.
    pub(crate) fn frame_for(&self, compressor: Option<&Compressor>) -> Bytes {
        match (&self.compressed, compressor) {
            (Some((bits, frame)), Some(c)) if c.stands_alone() && c.window_bits() >= *bits && c.wants(self.len) => {
                frame.clone()
            }
            _ => self.plain.clone(),
        }
    }
}
