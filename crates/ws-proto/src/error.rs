//! The one error type of ws-proto.
//!
//! Every protocol error names the close code it becomes (RFC 6455 section 7.4.1)
//! and every handshake error the HTTP status a server answers with, here and
//! nowhere else, so the I/O layers never invent codes.

use crate::close::CloseCode;

/// Everything that can go wrong in the handshake or on an open connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A frame used one of the reserved opcodes 3-7 or 0xB-0xF (section 5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpCode(u8),
    /// RSV1-3 set without a negotiated extension that defines them (section 5.2).
    #[error("reserved bits {0:#05b} set without an extension that defines them")]
    ReservedBits(u8),
    /// A control frame without FIN (section 5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame with more than 125 bytes of payload (section 5.5).
    #[error("control frame payload of {0} bytes, more than 125")]
    ControlFrameTooLong(u64),
    /// The 64-bit payload length had its most significant bit set (section 5.2).
    #[error("64-bit payload length with the most significant bit set")]
    InvalidPayloadLength,
    /// A client sent an unmasked frame (section 5.1).
    #[error("frame from the client is not masked")]
    UnmaskedFrame,
    /// A server sent a masked frame (section 5.1).
    #[error("frame from the server is masked")]
    MaskedFrame,
    /// A continuation frame arrived with no fragmented message to continue (section 5.4).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text or binary frame arrived inside a fragmented message (section 5.4).
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A close frame with a one-byte payload (section 5.5.1).
    #[error("close frame with a one-byte payload")]
    CloseFrameTooShort,
    /// A close code that may not be sent on the wire (section 7.4).
    #[error("close code {0} may not be sent on the wire")]
    InvalidCloseCode(u16),
    /// Text or a close reason that is not valid UTF-8 (sections 5.6, 8.1).
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A compressed message that is not a valid DEFLATE stream (RFC 7692 section 7.2.2).
    #[error("invalid compressed data")]
    InvalidCompressedData,
    /// A frame whose payload is larger than the configured limit.
    #[error("frame payload of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// The payload length the header announced.
        size: u64,
        /// The configured `max_frame_size`.
        limit: usize,
    },
    /// A message that grows larger than the configured limit.
    #[error("message of at least {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge {
        /// The message length reached with this frame.
        size: u64,
        /// The configured `max_message_size`.
        limit: usize,
    },

    /// The request or response is not valid HTTP/1.1.
    #[error("malformed HTTP: {0}")]
    MalformedHttp(&'static str),
    /// The request line or headers exceed `max_header_bytes` or `max_headers`.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The request is not a WebSocket upgrade the server can accept.
    #[error("bad upgrade request: {0}")]
    BadUpgrade(&'static str),
    /// The client asked for a protocol version other than 13 (section 4.2.2).
    #[error("unsupported Sec-WebSocket-Version")]
    UnsupportedVersion,
    /// The server answered with a status other than 101; redirects carry their `Location`.
    #[error("server answered HTTP {status}")]
    UnexpectedStatus {
        /// The HTTP status code.
        status: u16,
        /// The `Location` header, if the server sent one.
        location: Option<String>,
    },
    /// The server's 101 response breaks section 4.1 (tokens, accept value, protocol, extensions).
    #[error("bad handshake response: {0}")]
    BadResponse(&'static str),

    /// The application tried to send after the close handshake began.
    #[error("the connection is closing or closed")]
    Closed,
}

impl Error {
    /// The close code an endpoint sends when this error fails the connection,
    /// or `None` for handshake errors and local misuse.
    pub fn close_code(&self) -> Option<CloseCode> {
        use Error::*;
        match self {
            ReservedOpCode(_)
            | ReservedBits(_)
            | FragmentedControlFrame
            | ControlFrameTooLong(_)
            | InvalidPayloadLength
            | UnmaskedFrame
            | MaskedFrame
            | UnexpectedContinuation
            | ExpectedContinuation
            | CloseFrameTooShort
            | InvalidCloseCode(_) => Some(CloseCode::PROTOCOL_ERROR),
            InvalidUtf8 | InvalidCompressedData => Some(CloseCode::INVALID_PAYLOAD),
            FrameTooLarge { .. } | MessageTooLarge { .. } => Some(CloseCode::MESSAGE_TOO_BIG),
            _ => None,
        }
    }

    /// The HTTP status a server answers a failed handshake with, or `None` for
    /// errors that do not come from a request.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            Error::MalformedHttp(_) | Error::BadUpgrade(_) => Some(400),
            Error::HeadersTooLarge => Some(431),
            Error::UnsupportedVersion => Some(426),
            _ => None,
        }
    }
}
