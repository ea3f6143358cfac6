//! The server's settings, from the command line.

use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

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
}

impl ServerConfig {
    /// The handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.handshake_timeout)
    }
}
