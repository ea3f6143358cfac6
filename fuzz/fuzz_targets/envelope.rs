//! Any text a client sends parses into a valid request or an error with a
//! code; a parsed request names a valid room (or, for a refresh, brings a
//! token within its bound, for an rpc a method within its bound), a
//! message says something,
//! and the limits' check passes only what is within them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_server::envelope::{Limits, MAX_METHOD_LEN, MAX_TOKEN_LEN, Request, is_room_name, parse};

const LIMITS: Limits = Limits { content_chars: 1000, data_bytes: 1000 };

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse(text) {
        Ok(envelope) => {
            let room = match &envelope.request {
                Request::Join { room, .. }
                | Request::Leave { room }
                | Request::Presence { room }
                | Request::Message { room, .. } => room,
                Request::Refresh { token } => return assert!(token.chars().count() <= MAX_TOKEN_LEN),
                Request::Rpc(ws_server::envelope::Call { method, data }) => {
                    assert!((1..=MAX_METHOD_LEN).contains(&method.chars().count()));
                    return assert!(data.as_ref().is_none_or(|d| d.get() != "null"));
                }
                Request::Ping => return,
            };
            assert!(is_room_name(room));
            if let Request::Message { body, .. } = &envelope.request {
                assert!(body.content.is_some() || body.data.as_ref().is_some_and(|d| d.get() != "null"));
                let within = body.content.as_ref().is_none_or(|c| c.chars().count() <= LIMITS.content_chars)
                    && body.data.as_ref().is_none_or(|d| d.get().len() <= LIMITS.data_bytes);
                assert_eq!(body.check(&LIMITS).is_ok(), within);
            }
        }
        Err(error) => assert!(!error.code.is_empty()),
    }
});
