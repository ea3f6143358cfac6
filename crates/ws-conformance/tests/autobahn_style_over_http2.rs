//! The frame cases of sections 1-10 (frames/mod.rs) over HTTP/2 (RFC
//! 8441): each on a stream of an HTTP/2 connection of its own, in cleartext
//! with prior knowledge (`ws-server --echo --h2c`), opened by an extended
//! CONNECT. The frames, the close codes and the closing order are the same
//! as over a socket; the transport's end is the stream's END_STREAM.

mod frames;

use frames::Over;

/// The transport of the frame cases.
const OVER: Over = Over::Http2;
