//! Any text a client sends parses into a valid request or an error with a
//! code; a parsed request names a valid room, and a message says something
//! within the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_server::envelope::{Limits, Request, is_room_name, parse};

const LIMITS: Limits = Limits { content_chars: 1000, data_bytes: 1000 };

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text, &LIMITS) {
        Ok(envelope) => {
            let room = match &envelope.request {
                Request::Join { room, .. }
                | Request::Leave { room }
                | Request::Presence { room }
                | Request::Message { room, .. } => room,
            };
            assert!(is_room_name(room));
            if let Request::Message { body, .. } = &envelope.request {
                assert!(body.content.is_some() || body.data.is_some());
                assert!(body.content.as_ref().is_none_or(|c| c.chars().count() <= LIMITS.content_chars));
                assert!(body.data.as_ref().is_none_or(|d| d.get().len() <= LIMITS.data_bytes && d.get() != "null"));
            }
        }
        Err(error) => assert!(!error.code.is_empty()),
    }
});
