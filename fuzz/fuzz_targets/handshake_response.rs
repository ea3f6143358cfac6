//! Any response to a client's request (offering subprotocols and
//! permessage-deflate) is accepted, incomplete, or one error; an accepted one
//! names only what was offered.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_proto::handshake::client::ClientRequest;
use ws_proto::{Config, DeflateConfig};

fuzz_target!(|data: &[u8]| {
    let mut request = ClientRequest::new("example.com", "/chat");
    request.protocols = vec!["chat".into(), "superchat".into()];
    request.extensions = vec![DeflateConfig::default().offer()];
    let Ok((handshake, _)) = request.encode() else { return };
    if let Ok(Some((response, len))) = handshake.parse_response(data, &Config::default()) {
        assert!(len <= data.len());
        assert!(response.protocol.as_deref().is_none_or(|p| p == "chat" || p == "superchat"));
        for extension in &response.extensions {
            let _ = DeflateConfig::default().accept_response(extension);
        }
    }
});
