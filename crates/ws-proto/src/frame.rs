//! The base framing protocol (RFC 6455 section 5.2): opcodes, frame headers
//! with their three payload length forms, and encoding of whole frames.

use crate::{Error, mask::apply_mask};
use bytes::{BufMut, BytesMut};

/// The longest header: 2 bytes, an 8-byte extended length and a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;
/// The most payload a control frame may carry (section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// The RSV1 bit as it sits in [`FrameHeader::rsv`]; permessage-deflate uses it.
pub const RSV1: u8 = 0b100;

/// What a frame carries (section 5.2). Reserved opcodes never become an `OpCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: the next fragment of a message.
    Continuation = 0x0,
    /// 0x1: the first frame of a text message.
    Text = 0x1,
    /// 0x2: the first frame of a binary message.
    Binary = 0x2,
    /// 0x8: close.
    Close = 0x8,
    /// 0x9: ping.
    Ping = 0x9,
    /// 0xA: pong.
    Pong = 0xA,
}

impl OpCode {
    /// Close, ping and pong are control frames (section 5.5).
    pub fn is_control(self) -> bool {
        self as u8 & 0x8 != 0
    }

    fn from_bits(bits: u8) -> Result<OpCode, Error> {
        Ok(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => return Err(Error::ReservedOpCode(other)),
        })
    }
}

/// A decoded or to-be-encoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last frame of its message.
    pub fin: bool,
    /// RSV1, RSV2, RSV3 as the bits `0b100`, `0b010`, `0b001`.
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every frame a client sends.
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Decodes a header from the start of `buf`: `Ok(None)` when more bytes are
    /// needed, else the header and its length in bytes. Rejects reserved
    /// opcodes, a 64-bit length with its top bit set, and control frames that
    /// are fragmented or longer than 125 bytes.
    #[inline]
    pub fn decode(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, Error> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let opcode = OpCode::from_bits(b0 & 0x0F)?;
        let fin = b0 & 0x80 != 0;
        let masked = b1 & 0x80 != 0;
        let (payload_len, len_bytes) = match b1 & 0x7F {
            126 => (2, 2),
            127 => (8, 8),
            short => (u64::from(short), 0),
        };
        let header_len = 2 + len_bytes + if masked { 4 } else { 0 };
        if buf.len() < header_len {
            return Ok(None);
        }
        let payload_len = match len_bytes {
            0 => payload_len,
            2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
            _ => {
                let len = u64::from_be_bytes(read_array(&buf[2..10]));
                if len >> 63 != 0 {
                    return Err(Error::InvalidPayloadLength);
                }
                len
            }
        };
        if opcode.is_control() {
            if !fin {
                return Err(Error::FragmentedControlFrame);
            }
            if payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(Error::ControlFrameTooLong(payload_len));
            }
        }
        let mask = masked.then(|| read_array(&buf[header_len - 4..header_len]));
        let rsv = (b0 >> 4) & 0x7;
        Ok(Some((FrameHeader { fin, rsv, opcode, mask, payload_len }, header_len)))
    }

    /// The length of the encoded header in bytes (2 to 14).
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Appends the encoded header, with the shortest length form, to `out`.
    pub fn encode(&self, out: &mut impl BufMut) {
        let b0 = u8::from(self.fin) << 7 | (self.rsv & 0x7) << 4 | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        out.put_u8(b0);
        match self.payload_len {
            len @ 0..=125 => out.put_u8(mask_bit | len as u8),
            len @ 126..=0xFFFF => {
                out.put_u8(mask_bit | 126);
                out.put_u16(len as u16);
            }
            len => {
                out.put_u8(mask_bit | 127);
                out.put_u64(len);
            }
        }
        if let Some(key) = self.mask {
            out.put_slice(&key);
        }
    }
}

/// Appends a whole frame to `out`: the header, then the payload, masked with
/// the header's key if it has one. `header.payload_len` is set from `payload`.
pub fn encode_frame(mut header: FrameHeader, payload: &[u8], out: &mut BytesMut) {
    header.payload_len = payload.len() as u64;
    out.reserve(header.encoded_len() + payload.len());
    header.encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = header.mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

fn read_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    std::array::from_fn(|i| bytes[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fin: bool, opcode: OpCode, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader { fin, rsv: 0, opcode, mask, payload_len: 0 }
    }

    fn frame(h: FrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_frame(h, payload, &mut out);
        out.to_vec()
    }

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// The examples of RFC 6455 section 5.7, byte for byte, both ways.
    #[test]
    fn rfc_section_5_7_examples() {
        let hello_unmasked = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(frame(header(true, OpCode::Text, None), b"Hello"), hello_unmasked);

        let hello_masked = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(frame(header(true, OpCode::Text, Some(KEY)), b"Hello"), hello_masked);
        let (h, n) = FrameHeader::decode(&hello_masked).unwrap().unwrap();
        assert_eq!((h.mask, h.payload_len, n), (Some(KEY), 5, 6));

        assert_eq!(frame(header(false, OpCode::Text, None), b"Hel"), [0x01, 0x03, 0x48, 0x65, 0x6c]);
        assert_eq!(frame(header(true, OpCode::Continuation, None), b"lo"), [0x80, 0x02, 0x6c, 0x6f]);

        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(frame(header(true, OpCode::Ping, None), b"Hello"), ping);
        let pong = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(frame(header(true, OpCode::Pong, Some(KEY)), b"Hello"), pong);

        let binary_256 = frame(header(true, OpCode::Binary, None), &[0u8; 256]);
        assert_eq!(binary_256[..4], [0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(binary_256.len(), 4 + 256);

        let binary_64k = frame(header(true, OpCode::Binary, None), &vec![0u8; 65536]);
        assert_eq!(binary_64k[..10], [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
        assert_eq!(binary_64k.len(), 10 + 65536);

        for bytes in [&binary_256[..4], &binary_64k[..10]] {
            let (h, n) = FrameHeader::decode(bytes).unwrap().unwrap();
            assert_eq!((h.opcode, h.fin, n), (OpCode::Binary, true, bytes.len()));
        }
    }

    #[test]
    fn every_length_form_round_trips() {
        for len in [0, 1, 125, 126, 127, 0xFFFF, 0x1_0000, u32::MAX as u64 + 9, i64::MAX as u64] {
            for mask in [None, Some(KEY)] {
                let h = FrameHeader { fin: true, rsv: 0b101, opcode: OpCode::Binary, mask, payload_len: len };
                let mut out = BytesMut::new();
                h.encode(&mut out);
                assert_eq!(out.len(), h.encoded_len());
                for cut in 0..out.len() {
                    assert_eq!(FrameHeader::decode(&out[..cut]), Ok(None), "len {len} cut {cut}");
                }
                assert_eq!(FrameHeader::decode(&out), Ok(Some((h, out.len()))));
            }
        }
    }

    #[test]
    fn structural_errors() {
        for op in [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(FrameHeader::decode(&[0x80 | op, 0]), Err(Error::ReservedOpCode(op)));
        }
        let top_bit = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::decode(&top_bit), Err(Error::InvalidPayloadLength));
        assert_eq!(FrameHeader::decode(&[0x09, 0x00]), Err(Error::FragmentedControlFrame));
        assert_eq!(FrameHeader::decode(&[0x89, 0x7E, 0x00, 0x7E]), Err(Error::ControlFrameTooLong(126)));
        assert!(FrameHeader::decode(&[0x89, 0x7D]).unwrap().is_some());
    }
}
