//! Messages and their reassembly from fragments (RFC 6455 section 5.4).
//!
//! A message's payload is unmasked and, for text, validated as its bytes
//! arrive, so a limit or an invalid byte is caught before the rest comes.

use crate::frame::{FrameHeader, OpCode};
use crate::utf8::{Utf8Bytes, Utf8Validator};
use crate::{Config, Error, mask::apply_mask};
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

/// The data message being received.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    opcode: Option<OpCode>,
    payload: BytesMut,
    utf8: Utf8Validator,
}

impl Reassembly {
    /// Checks a data frame's header against the message so far and the limits.
    pub(crate) fn start_frame(&mut self, header: &FrameHeader, config: &Config) -> Result<(), Error> {
        match (header.opcode, self.opcode) {
            (OpCode::Continuation, None) => return Err(Error::UnexpectedContinuation),
            (OpCode::Continuation, Some(_)) => {}
            (_, Some(_)) => return Err(Error::ExpectedContinuation),
            (opcode, None) => self.opcode = Some(opcode),
        }
        if header.payload_len > config.max_frame_size as u64 {
            return Err(Error::FrameTooLarge { size: header.payload_len, limit: config.max_frame_size });
        }
        let size = self.payload.len() as u64 + header.payload_len;
        if size > config.max_message_size as u64 {
            return Err(Error::MessageTooLarge { size, limit: config.max_message_size });
        }
        self.payload.reserve(header.payload_len.min(RESERVE_AHEAD) as usize);
        Ok(())
    }

    /// Appends payload bytes that arrived, unmasking them as bytes `offset..`
    /// of their frame and validating them if the message is text.
    pub(crate) fn extend(&mut self, data: &[u8], mask: Option<[u8; 4]>, offset: u64) -> Result<(), Error> {
        let start = self.payload.len();
        self.payload.extend_from_slice(data);
        let added = &mut self.payload[start..];
        if let Some(key) = mask {
            apply_mask(added, key, offset as usize);
        }
        if self.opcode == Some(OpCode::Text) {
            self.utf8.feed(added)?;
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn payload_capacity(&self) -> usize {
        self.payload.capacity()
    }

    /// Ends the message after its final frame.
    pub(crate) fn finish(&mut self) -> Result<Message, Error> {
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
