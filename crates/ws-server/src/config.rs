//! The server's settings, from the command line.

use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;
use ws_proto::DeflateConfig;
use ws_tokio::Options;

/// The WebSocket hub server.
#[derive(Debug, Clone, Parser)]
#[command(name = "ws-server", version, about)]
pub struct ServerConfig {
    /// Address to listen on; port 0 picks a free port (the log says which).
    #[arg(long, env = "WS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Serve /echo, which sends every text and binary message back unchanged
    /// (for conformance testing and benchmarks).
    #[arg(long, env = "WS_ECHO")]
    pub echo: bool,

    /// Seconds a client has to complete the opening handshake.
    #[arg(long, env = "WS_HANDSHAKE_TIMEOUT", default_value_t = 10.0, value_name = "SECONDS")]
    pub handshake_timeout: f64,

    /// Turn permessage-deflate compression (RFC 7692) off; it is on by default
    /// for clients that offer it.
    #[arg(long, env = "WS_NO_DEFLATE")]
    pub no_deflate: bool,

    /// Messages shorter than this many bytes are sent uncompressed.
    #[arg(long, env = "WS_DEFLATE_THRESHOLD", default_value_t = 128, value_name = "BYTES")]
    pub deflate_threshold: usize,

    /// The largest window the server compresses with, as a power of two
    /// (8-15). A connection that keeps its context holds about
    /// 2^(BITS+2) bytes plus 128 KiB for it (docs/benchmarks.md has the
    /// figures). 8 sends uncompressed.
    #[arg(long, env = "WS_DEFLATE_WINDOW_BITS", default_value_t = 15, value_name = "BITS",
          value_parser = clap::value_parser!(u8).range(8..=15))]
    pub deflate_window_bits: u8,

    /// The largest window a client may compress with (8-15), asked of
    /// clients that support it: the server inflates with 2^BITS bytes.
    #[arg(long, env = "WS_DEFLATE_CLIENT_WINDOW_BITS", default_value_t = 15, value_name = "BITS",
          value_parser = clap::value_parser!(u8).range(8..=15))]
    pub deflate_client_window_bits: u8,

    /// zlib memory level, 1 (least memory) to 9 (fastest): a compressor
    /// holds 7 * 2^(LEVEL+6) bytes of match buffers.
    #[arg(long, env = "WS_DEFLATE_MEMORY_LEVEL", default_value_t = 8, value_name = "LEVEL",
          value_parser = clap::value_parser!(u8).range(1..=9))]
    pub deflate_memory_level: u8,

    /// zlib compression level, 0 (fastest) to 9 (smallest).
    #[arg(long, env = "WS_DEFLATE_LEVEL", default_value_t = 6, value_name = "LEVEL",
          value_parser = clap::value_parser!(u8).range(0..=9))]
    pub deflate_level: u8,

    /// Compress each message on its own (server_no_context_takeover): a
    /// little larger on the wire, but no compression state is kept between
    /// messages and a broadcast is compressed once for every receiver.
    #[arg(long, env = "WS_DEFLATE_NO_CONTEXT_TAKEOVER")]
    pub deflate_no_context_takeover: bool,

    /// Ask clients to compress each message on its own
    /// (client_no_context_takeover), so the server keeps no inflate state
    /// between messages.
    #[arg(long, env = "WS_DEFLATE_CLIENT_NO_CONTEXT_TAKEOVER")]
    pub deflate_client_no_context_takeover: bool,
}

impl ServerConfig {
    /// The settings of every WebSocket this server accepts.
    pub fn socket_options(&self) -> Options {
        let deflate = (!self.no_deflate).then_some(DeflateConfig {
            level: self.deflate_level,
            window_bits: self.deflate_window_bits,
            peer_window_bits: self.deflate_client_window_bits,
            no_context_takeover: self.deflate_no_context_takeover,
            peer_no_context_takeover: self.deflate_client_no_context_takeover,
            memory_level: self.deflate_memory_level,
            threshold: self.deflate_threshold,
        });
        Options { deflate, ..Options::default() }
    }

    /// The handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.handshake_timeout)
    }
}
