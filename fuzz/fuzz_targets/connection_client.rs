//! Arbitrary bytes, in arbitrary chunks, into a client `Connection` (with
//! permessage-deflate or without): no panic, at most one error, and no event
//! after the error or the peer's close.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ws_proto::Role;

#[path = "../src/connection_check.rs"]
mod connection_check;

fuzz_target!(|data: &[u8]| connection_check::run(Role::Client, data));
