//! Conformance of the WebSocket stack to RFC 6455.
//!
//! The tests of this crate check ws-proto against the RFC: property tests
//! over arbitrary messages, fragmentations, masks and read sizes. This library
//! holds what they share: moving bytes between in-memory connections. It is
//! not a WebSocket implementation and has no I/O.
//!
//! ```
//! use ws_conformance::{drain, receive_all};
//! use ws_proto::{Config, Connection, Event, Message, Role};
//!
//! let mut client = Connection::new(Role::Client, Config::default());
//! client.send(&Message::from("hi")).unwrap();
//! let mut server = Connection::new(Role::Server, Config::default());
//! let (events, error) = receive_all(&mut server, &drain(&mut client), &[1]);
//! assert_eq!((events, error), (vec![Event::Message(Message::from("hi"))], None));
//! ```

#![forbid(unsafe_code)]

use std::io::IoSlice;
use ws_proto::{Connection, Error, Event};

/// Takes every byte `conn` has queued to send, as a socket would write it.
pub fn drain(conn: &mut Connection) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(conn.output().len());
    while !conn.output().is_empty() {
        let mut slices = [IoSlice::new(&[]); 64];
        let n = conn.output().io_slices(&mut slices);
        let before = bytes.len();
        slices[..n].iter().for_each(|s| bytes.extend_from_slice(s));
        conn.output_mut().advance(bytes.len() - before);
    }
    bytes
}

/// Feeds `wire` to `conn` in reads of the given sizes, cycled (a size of 0
/// counts as 1), and collects the events until the bytes run out or an error.
pub fn receive_all(conn: &mut Connection, wire: &[u8], read_sizes: &[usize]) -> (Vec<Event>, Option<Error>) {
    let mut events = Vec::new();
    let mut sizes = read_sizes.iter().map(|&s| s.max(1)).cycle();
    let mut rest = wire;
    while !rest.is_empty() {
        let (read, tail) = rest.split_at(sizes.next().unwrap_or(usize::MAX).min(rest.len()));
        rest = tail;
        let mut input = read;
        loop {
            match conn.receive(input) {
                Ok((used, event)) => {
                    input = &input[used..];
                    match event {
                        Some(event) => events.push(event),
                        None => break,
                    }
                }
                Err(error) => return (events, Some(error)),
            }
        }
    }
    (events, None)
}
