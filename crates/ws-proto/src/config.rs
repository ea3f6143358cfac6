//! The limits of a connection and of its handshake. Every bound ws-proto
//! enforces is a field here, with a default fit for a general-purpose endpoint.

/// Limits for one connection and its opening handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// The largest frame payload accepted; larger is close 1009, found from the header.
    pub max_frame_size: usize,
    /// The largest message accepted, all fragments together; larger is close 1009.
    pub max_message_size: usize,
    /// The most bytes a handshake request or response head may take; more is HTTP 431.
    pub max_header_bytes: usize,
    /// The most header fields a handshake head may have; more is HTTP 431.
    pub max_headers: usize,
}

impl Default for Config {
    /// 16 MiB frames, 64 MiB messages, 8 KiB and 64 fields of handshake head.
    fn default() -> Self {
        Config { max_frame_size: 16 << 20, max_message_size: 64 << 20, max_header_bytes: 8 << 10, max_headers: 64 }
    }
}
