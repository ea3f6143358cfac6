//! Any request head parses within the bounds, or is one error with an HTTP
//! status; a valid upgrade builds its response and negotiates its
//! extension offers without a panic; read as an HTTP/2 extended CONNECT's
//! headers (RFC 8441), it is a valid one or an error with a status.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_proto::handshake::server::{Request, Upgrade};
use ws_proto::{Config, DeflateConfig};

fuzz_target!(|data: &[u8]| {
    let config = Config::default();
    match Request::parse(data, &config) {
        Ok(Some((request, len))) => {
            assert!(len <= data.len() && len <= config.max_header_bytes);
            assert!(request.headers.0.len() <= config.max_headers);
            if let Ok(upgrade) = Upgrade::validate(&request) {
                let agreed = DeflateConfig::default().accept_offer(&upgrade.extensions);
                let protocol = upgrade.select_protocol(&["chat", "superchat"]);
                let response = upgrade.accept_response(protocol, agreed.as_ref().map(|(_, r)| r.as_str()));
                assert!(response.starts_with(b"HTTP/1.1 101 "));
            }
            let connect = Request { method: "CONNECT".to_owned(), ..request };
            if let Err(e) = Upgrade::validate_connect(&connect, Some("websocket")) {
                assert!(e.http_status().is_some(), "{e}");
            }
        }
        Ok(None) => assert!(data.len() <= config.max_header_bytes),
        Err(e) => assert!(e.http_status().is_some(), "{e}"),
    }
});
