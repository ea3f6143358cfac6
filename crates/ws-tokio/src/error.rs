//! The one error type of ws-tokio.

use ws_proto::CloseCode;

/// What can go wrong with a WebSocket on a socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol, or the handshake was refused; the close
    /// frame or error response has been sent.
    #[error(transparent)]
    Protocol(#[from] ws_proto::Error),
    /// The opening handshake did not complete in time.
    #[error("the opening handshake timed out")]
    HandshakeTimeout,
    /// The peer dropped the connection without a close frame (close code 1006).
    #[error("the connection dropped without a close frame")]
    Abnormal,
    /// The URL given to connect cannot be used.
    #[error("invalid URL: {0}")]
    Url(String),
    /// The server answered the upgrade with another status than 101.
    #[error("the server refused the connection with HTTP {status}{}", reason_suffix(.reason))]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The response's body, which says why, if the server gave one (at most 1 KiB of it).
        reason: String,
        /// The `Location` header of a redirect.
        location: Option<String>,
    },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() { String::new() } else { format!(": {reason}") }
}

impl Error {
    /// The close code this error stands for, if any: the protocol error's own
    /// code, or 1006 for a connection that dropped.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Error::Protocol(e) => e.close_code(),
            Error::Abnormal => Some(CloseCode::ABNORMAL),
            _ => None,
        }
    }
}
