//! Differential: every valid frame ws-proto encodes it decodes to the same
//! frame, and the fast mask equals the byte-by-byte definition at every offset.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ws_proto::frame::{FrameHeader, OpCode, encode_frame};

fuzz_target!(|data: &[u8]| {
    let [bits, k0, k1, k2, k3, offset, payload @ ..] = data else { return };
    let opcode = [OpCode::Continuation, OpCode::Text, OpCode::Binary, OpCode::Close, OpCode::Ping, OpCode::Pong]
        [usize::from(bits & 0x7) % 6];
    // Control frames are whole and short (RFC 6455 section 5.5).
    let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
    let payload = if control { &payload[..payload.len().min(125)] } else { payload };
    let key = [*k0, *k1, *k2, *k3];
    let mask = (bits & 0x80 != 0).then_some(key);
    let header = FrameHeader { fin: control || bits & 0x40 != 0, rsv: (bits >> 3) & 0x7, opcode, mask, payload_len: 0 };
    let mut wire = BytesMut::new();
    encode_frame(header, payload, &mut wire);
    let (decoded, len) = match FrameHeader::decode(&wire) {
        Ok(Some(decoded)) => decoded,
        other => panic!("an encoded frame decodes: {other:?}"),
    };
    assert_eq!((decoded.fin, decoded.rsv, decoded.opcode, decoded.mask), (header.fin, header.rsv, opcode, mask));
    assert_eq!(decoded.payload_len as usize, payload.len());
    let mut body = wire[len..].to_vec();
    if let Some(key) = mask {
        ws_proto::apply_mask(&mut body, key, 0);
    }
    assert_eq!(body, payload);

    let offset = usize::from(*offset);
    let mut fast = payload.to_vec();
    ws_proto::apply_mask(&mut fast, key, offset);
    let naive: Vec<u8> = payload.iter().enumerate().map(|(i, b)| b ^ key[(offset + i) % 4]).collect();
    assert_eq!(fast, naive);
});
