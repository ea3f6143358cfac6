//! The bytes a connection has encoded and the caller has yet to write.
//!
//! Small frames are encoded into one growing buffer; a large shared payload is
//! queued as its own chunk, without a copy. The caller writes the chunks with
//! one vectored write and reports how much went out.

use crate::frame::{FrameHeader, encode_frame};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;

/// Encoded bytes waiting to be written, in order.
#[derive(Debug, Default)]
pub struct Output {
    /// Boxed, and only while something waits: an idle connection keeps the pointer alone.
    chunks: Option<Box<Chunks>>,
}

/// The chunks of an [`Output`]: shared payloads sealed in order, then the
/// buffer that small frames are encoded into.
#[derive(Debug, Default)]
struct Chunks {
    sealed: VecDeque<Bytes>,
    tail: BytesMut,
    /// The bytes waiting in all of them.
    len: usize,
}

impl Output {
    /// The number of bytes waiting.
    pub fn len(&self) -> usize {
        self.chunks.as_ref().map_or(0, |chunks| chunks.len)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `dst` with the waiting chunks, in order; returns how many it filled.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let Some(Chunks { sealed, tail, .. }) = self.chunks.as_deref() else { return 0 };
        let chunks = sealed.iter().map(|b| &b[..]).chain(Some(&tail[..]));
        let mut n = 0;
        for (slot, chunk) in dst.iter_mut().zip(chunks.filter(|c| !c.is_empty())) {
            *slot = IoSlice::new(chunk);
            n += 1;
        }
        n
    }

    /// Drops the first `n` bytes, which the caller has written. Once
    /// everything is written the buffers are let go: an idle connection
    /// holds no output memory.
    pub fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len(), "advanced past the output");
        let Some(Chunks { sealed, tail, len }) = self.chunks.as_deref_mut() else { return };
        *len -= n;
        if *len == 0 {
            self.chunks = None;
            return;
        }
        while let Some(front) = sealed.front_mut() {
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            sealed.pop_front();
        }
        tail.advance(n);
    }

    /// Encodes a frame after everything before it, copying the payload.
    pub(crate) fn push_frame(&mut self, header: FrameHeader, payload: &[u8]) {
        let Chunks { tail, len, .. } = self.chunks();
        let before = tail.len();
        encode_frame(header, payload, tail);
        *len += tail.len() - before;
    }

    /// Queues bytes already encoded as whole frames, without a copy.
    pub(crate) fn push_shared(&mut self, frames: Bytes) {
        let Chunks { sealed, tail, len } = self.chunks();
        *len += frames.len();
        if !tail.is_empty() {
            sealed.push_back(tail.split().freeze());
        }
        sealed.push_back(frames);
    }

    /// Encodes an unmasked frame whose payload is queued as it is, without a copy.
    pub(crate) fn push_shared_frame(&mut self, header: FrameHeader, payload: Bytes) {
        debug_assert!(header.mask.is_none() && header.payload_len == payload.len() as u64);
        let chunks = self.chunks();
        header.encode(&mut chunks.tail);
        chunks.len += header.encoded_len();
        self.push_shared(payload);
    }

    fn chunks(&mut self) -> &mut Chunks {
        self.chunks.get_or_insert_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::OpCode;

    fn text(out: &mut Output, payload: &[u8]) {
        let header = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Text, mask: None, payload_len: 0 };
        out.push_frame(header, payload);
    }

    fn drain(out: &Output) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 8];
        let n = out.io_slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn keeps_order_across_shared_chunks() {
        let mut out = Output::default();
        text(&mut out, b"ab");
        let header = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: None, payload_len: 1 };
        out.push_shared_frame(header, Bytes::from_static(b"c"));
        text(&mut out, b"gh");
        assert_eq!((drain(&out), out.len()), (b"\x81\x02ab\x82\x01c\x81\x02gh".to_vec(), 11));
        out.advance(5);
        assert_eq!(drain(&out), b"\x01c\x81\x02gh");
        out.advance(5);
        assert_eq!(drain(&out), b"h");
        out.advance(1);
        assert!(out.is_empty());
    }
}
