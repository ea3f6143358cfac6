//! The invariants of a `Connection` fed arbitrary bytes, shared by the
//! server and client targets. The first byte picks the chunk size and
//! whether permessage-deflate is on; the rest is the stream.

use ws_proto::{Config, Connection, DeflateConfig, DeflateParams, Event, Role, State};

/// Limits small enough that the size checks are reached.
const CONFIG: Config = Config { max_frame_size: 4096, max_message_size: 8192, max_header_bytes: 8192, max_headers: 64 };

pub fn run(role: Role, data: &[u8]) {
    let [setup, stream @ ..] = data else { return };
    let chunk = usize::from(setup & 0x3F) + 1;
    let mut conn = Connection::new(role, CONFIG);
    if setup & 0x40 != 0 {
        let params = DeflateParams {
            server_no_context_takeover: setup & 0x80 != 0,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        };
        conn = conn.with_deflate(&params, &DeflateConfig::default());
    }
    let mut failed = false;
    let mut closed = false;
    for mut input in stream.chunks(chunk) {
        while !input.is_empty() {
            match conn.receive(input) {
                Ok((used, event)) => {
                    assert!(used <= input.len());
                    if let Some(event) = event {
                        assert!(!failed && !closed, "an event after the end: {event:?}");
                        if let Event::Message(message) = &event {
                            assert!(message.payload().len() <= CONFIG.max_message_size);
                        }
                        closed = matches!(event, Event::Close(_));
                    } else {
                        assert_eq!(used, input.len(), "no event: everything used");
                    }
                    input = &input[used..];
                }
                Err(e) => {
                    assert!(!failed, "a second error: {e}");
                    assert!(e.close_code().is_some(), "a protocol error has a close code: {e}");
                    failed = true;
                    assert_eq!(conn.state(), State::Closed);
                    break;
                }
            }
        }
    }
}
