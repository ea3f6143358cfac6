//! Any text a client sends parses into a valid request or an error with a
//! code; a parsed request names a valid room.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_server::envelope::{Request, is_room_name, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text, 1000) {
        Ok(envelope) => {
            let room = match &envelope.request {
                Request::Join { room, .. }
                | Request::Leave { room }
                | Request::Presence { room }
                | Request::Message { room, .. } => room,
            };
            assert!(is_room_name(room));
            if let Request::Message { content, .. } = &envelope.request {
                assert!(content.chars().count() <= 1000);
            }
        }
        Err(error) => assert!(!error.code.is_empty()),
    }
});
