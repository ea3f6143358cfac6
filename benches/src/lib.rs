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

/// Text like a hub carries, about `len` bytes of JSON messages with varied
/// words and numbers, the same for the same `seed`.
pub fn json_text(len: usize, seed: u64) -> String {
    const WORDS: [&str; 16] = [
        "price",
        "update",
        "hello",
        "room",
        "market",
        "order",
        "the",
        "player",
        "moved",
        "to",
        "score",
        "chat",
        "dashboard",
        "value",
        "latency",
        "ok",
    ];
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    let mut out = String::with_capacity(len + 128);
    while out.len() < len {
        let words: Vec<&str> = (0..3 + next() % 8).map(|_| WORDS[next() % WORDS.len()]).collect();
        out.push_str(&format!(
            r#"{{"type":"message","room":"room-{}","seq":{},"data":{{"text":"{}","value":{}.{:02}}}}}"#,
            next() % 50,
            next() % 1_000_000,
            words.join(" "),
            next() % 10_000,
            next() % 100
        ));
        out.push('\n');
    }
    out.truncate(len);
    out
}
