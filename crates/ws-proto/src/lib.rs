//! ws-proto: a sans-IO implementation of the WebSocket protocol, RFC 6455.
//!
//! It is the opening handshake for both roles ([`handshake`]), the frame codec
//! ([`frame`]), masking ([`mask`]), incremental UTF-8 ([`utf8`]), close codes
//! ([`close`]), message reassembly ([`message`]) and the per-socket state
//! machine ([`Connection`]). It is not an I/O library: it has no sockets, no
//! async runtime and no clock. Bytes go in, events come out; messages go in,
//! bytes come out, and the caller moves them. Every limit is a field of
//! [`Config`], and every protocol error maps to one close code in [`Error`].
//!
//! A server and a client exchanging a message in memory:
//!
//! ```
//! use ws_proto::{Config, Connection, Event, Message, Role};
//!
//! let mut client = Connection::new(Role::Client, Config::default());
//! let mut server = Connection::new(Role::Server, Config::default());
//!
//! client.send(&Message::from("Hello")).unwrap();
//! let wire = take_output(&mut client);
//! let (used, event) = server.receive(&wire).unwrap();
//! assert_eq!(used, wire.len());
//! assert_eq!(event, Some(Event::Message(Message::from("Hello"))));
//!
//! server.close(ws_proto::CloseCode::NORMAL, "bye").unwrap();
//! let wire = take_output(&mut server);
//! let (_, event) = client.receive(&wire).unwrap();
//! assert!(matches!(event, Some(Event::Close(Some(frame))) if frame.reason.as_str() == "bye"));
//!
//! // The client echoed the close; the server sees it and both are closed.
//! let wire = take_output(&mut client);
//! let (_, event) = server.receive(&wire).unwrap();
//! assert!(matches!(event, Some(Event::Close(Some(_)))));
//! assert_eq!(server.state(), ws_proto::State::Closed);
//!
//! /// What a socket would write: every pending byte, then marked as written.
//! fn take_output(conn: &mut Connection) -> Vec<u8> {
//!     let mut slices = [std::io::IoSlice::new(&[]); 16];
//!     let n = conn.output().io_slices(&mut slices);
//!     let bytes: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
//!     conn.output_mut().advance(bytes.len());
//!     bytes
//! }
//! ```

#![deny(unsafe_code)]

pub mod close;
mod config;
pub mod connection;
pub mod deflate;
mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod output;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use config::Config;
pub use connection::{Connection, Event, Role, State};
pub use deflate::{DeflateConfig, DeflateParams};
pub use error::Error;
pub use frame::{FrameHeader, OpCode};
pub use mask::apply_mask;
pub use message::{Message, SharedMessage};
pub use output::Output;
pub use utf8::{Utf8Bytes, Utf8Validator};
