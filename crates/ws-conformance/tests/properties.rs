//! Property tests of ws-proto: whatever the message, its fragmentation, the
//! masking keys and the read sizes, a message comes out as it went in; no byte
//! string can make a connection panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ws_conformance::{drain, receive_all};
use ws_proto::frame::{FrameHeader, OpCode, encode_frame};
use ws_proto::{Config, Connection, Event, Message, Role, State, apply_mask};

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any::<String>().prop_map(Message::from),
        proptest::collection::vec(any::<u8>(), 0..2048).prop_map(Message::from),
    ]
}

/// Encodes `message` as a client would, cut at the given fragment sizes, each
/// frame masked with its own key, with a ping between every two fragments.
fn fragmented(message: &Message, sizes: &[usize], keys: &[[u8; 4]]) -> Vec<u8> {
    let payload = message.payload();
    let mut out = BytesMut::new();
    let (mut start, mut i) = (0, 0);
    loop {
        let end = payload.len().min(start + sizes[i % sizes.len()]);
        let opcode = if start == 0 { message.opcode() } else { OpCode::Continuation };
        let fin = end == payload.len();
        let mask = Some(keys[i % keys.len()]);
        encode_frame(FrameHeader { fin, rsv: 0, opcode, mask, payload_len: 0 }, &payload[start..end], &mut out);
        if fin {
            return out.to_vec();
        }
        encode_frame(FrameHeader { fin: true, rsv: 0, opcode: OpCode::Ping, mask, payload_len: 0 }, b"", &mut out);
        (start, i) = (end, i + 1);
    }
}

/// Frames with arbitrary first bytes (FIN, RSV, opcode), masked or not, with
/// arbitrary payloads: mostly well-formed, so they reach deep into the state machine.
fn frame_soup() -> impl Strategy<Value = Vec<u8>> {
    let frame = (any::<u8>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300));
    proptest::collection::vec(frame, 0..12).prop_map(|frames| {
        let mut out = Vec::new();
        for (b0, masked, payload) in frames {
            let mut encoded = BytesMut::new();
            let mask = masked.then_some([b0, 1, 2, 3]);
            let header = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask, payload_len: 0 };
            encode_frame(header, &payload, &mut encoded);
            encoded[0] = b0;
            out.extend_from_slice(&encoded);
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_message_any_fragmentation_any_reads(
        message in message(),
        sizes in proptest::collection::vec(1usize..300, 1..8),
        keys in proptest::collection::vec(any::<[u8; 4]>(), 1..4),
        reads in proptest::collection::vec(0usize..64, 1..8),
    ) {
        let wire = fragmented(&message, &sizes, &keys);
        let mut server = Connection::new(Role::Server, Config::default());
        let (events, error) = receive_all(&mut server, &wire, &reads);
        prop_assert_eq!(error, None);
        let messages: Vec<_> = events.into_iter().filter(|e| !matches!(e, Event::Ping(_))).collect();
        prop_assert_eq!(messages, vec![Event::Message(message)]);
    }

    #[test]
    fn what_a_client_sends_a_server_receives(
        messages in proptest::collection::vec(message(), 1..6),
        frame_size in 1usize..500,
        reads in proptest::collection::vec(0usize..200, 1..8),
    ) {
        let mut client = Connection::new(Role::Client, Config::default());
        for m in &messages {
            client.send_fragmented(m, frame_size).unwrap();
        }
        let mut server = Connection::new(Role::Server, Config::default());
        let (events, error) = receive_all(&mut server, &drain(&mut client), &reads);
        prop_assert_eq!(error, None);
        let expected: Vec<_> = messages.into_iter().map(Event::Message).collect();
        prop_assert_eq!(events, expected);
    }

    /// Arbitrary bytes give events and at most one error, never a panic; after
    /// the error or the peer's close, nothing more comes out.
    #[test]
    fn any_bytes_never_panic(
        wire in prop_oneof![proptest::collection::vec(any::<u8>(), 0..4096), frame_soup()],
        reads in proptest::collection::vec(0usize..64, 1..8),
        role in prop_oneof![Just(Role::Server), Just(Role::Client)],
    ) {
        let config = Config { max_frame_size: 1 << 12, max_message_size: 1 << 13, ..Config::default() };
        let mut conn = Connection::new(role, config);
        let (events, error) = receive_all(&mut conn, &wire, &reads);
        let closes = events.iter().filter(|e| matches!(e, Event::Close(_))).count();
        prop_assert!(closes <= 1);
        prop_assert!(closes == 0 || matches!(events.last(), Some(Event::Close(_))));
        if error.is_some() || closes == 1 {
            prop_assert_eq!(conn.state(), State::Closed);
            prop_assert_eq!(receive_all(&mut conn, &wire, &[7]), (vec![], None));
        }
        if let Some(error) = error {
            prop_assert!(error.close_code().is_some(), "{} names no close code", error);
        }
    }

    #[test]
    fn apply_mask_is_the_definition(
        data in proptest::collection::vec(any::<u8>(), 0..1024),
        key in any::<[u8; 4]>(),
        offset in 0usize..64,
    ) {
        let mut fast = data.clone();
        apply_mask(&mut fast, key, offset);
        let naive: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ key[(offset + i) % 4]).collect();
        prop_assert_eq!(fast, naive);
    }

    #[test]
    fn server_output_decodes_as_sent(message in message(), frame_size in 1usize..5000) {
        let mut server = Connection::new(Role::Server, Config::default());
        server.send_fragmented(&message, frame_size).unwrap();
        let mut client = Connection::new(Role::Client, Config::default());
        let (events, error) = receive_all(&mut client, &drain(&mut server), &[usize::MAX]);
        prop_assert_eq!((events, error), (vec![Event::Message(message)], None));
    }
}

#[test]
fn payload_bytes_are_shared_not_copied() {
    let payload = Bytes::from(vec![1u8; 8192]);
    let message = Message::Binary(payload.clone());
    assert_eq!(message.payload_bytes().as_ptr(), payload.as_ptr());
}
