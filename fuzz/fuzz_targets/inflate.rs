//! Arbitrary compressed bytes, in arbitrary pieces: the inflater yields at
//! most the limit (plus one chunk it cuts short), or an error.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ws_proto::deflate::Inflater;
use ws_proto::{DeflateParams, Role};

const LIMIT: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let [setup, stream @ ..] = data else { return };
    let params = DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 9 + setup % 7,
        client_max_window_bits: 15,
    };
    let mut inflater = Inflater::new(Role::Client, &params);
    let mut out = BytesMut::new();
    let piece = usize::from(setup >> 3) + 1;
    for input in stream.chunks(piece) {
        if inflater.inflate(input, &mut out, LIMIT).is_err() {
            return;
        }
        assert!(out.len() <= LIMIT);
    }
    if inflater.finish(&mut out, LIMIT).is_ok() {
        assert!(out.len() <= LIMIT);
    }
});
