//! Benchmarks of the WebSocket stack; run them with `cargo bench -p ws-benches`.
//! This library holds the inputs the benches share.

#![forbid(unsafe_code)]

use ws_proto::frame::{FrameHeader, OpCode, encode_frame};

/// `count` masked binary frames of `size` bytes each, as a client sends them.
pub fn masked_frames(size: usize, count: usize) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    let header = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: Some([1, 2, 3, 4]), payload_len: 0 };
    for _ in 0..count {
        encode_frame(header, &vec![0x5a; size], &mut out);
    }
    out.to_vec()
}
