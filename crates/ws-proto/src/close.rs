//! Close codes and close frame payloads (RFC 6455 sections 5.5.1 and 7.4).

use crate::Error;
use crate::utf8::Utf8Bytes;
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// A close status code (section 7.4). Any `u16` can be held; [`CloseCode::is_sendable`]
/// says whether it may appear in a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: reported locally when a close frame carried no code; never sent.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: reported locally when the connection dropped without a close frame; never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with its type, such as invalid UTF-8 in text.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message that violates the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (overload).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// Whether the code may be sent in a close frame: 1000-1003, 1007-1014 and
    /// 3000-4999. Everything else (below 1000, 1004-1006, 1015, 1016-2999,
    /// 5000 and up) is reserved or undefined.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The body of a close frame: a code and a UTF-8 reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// The reason, at most 123 bytes when sent.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// Parses a received close payload: empty (no code), or a sendable code
    /// followed by a UTF-8 reason.
    pub fn parse(payload: Bytes) -> Result<Option<CloseFrame>, Error> {
        match payload.len() {
            0 => Ok(None),
            1 => Err(Error::CloseFrameTooShort),
            _ => {
                let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
                if !code.is_sendable() {
                    return Err(Error::InvalidCloseCode(code.0));
                }
                let reason = Utf8Bytes::try_from(payload.slice(2..))?;
                Ok(Some(CloseFrame { code, reason }))
            }
        }
    }

    /// Encodes the payload of a close frame, cutting the reason at a character
    /// boundary so the payload stays within the 125 bytes of a control frame.
    pub fn encode(&self) -> Bytes {
        let reason = truncate_utf8(self.reason.as_str(), 123);
        let mut out = BytesMut::with_capacity(2 + reason.len());
        out.put_u16(self.code.0);
        out.put_slice(reason.as_bytes());
        out.freeze()
    }
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let end = (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_of_close_code() {
        let sendable = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014];
        let reserved = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999];
        for code in sendable.into_iter().chain([3000, 3999, 4000, 4999]) {
            assert!(CloseCode(code).is_sendable(), "{code} should be sendable");
            let payload = Bytes::from(code.to_be_bytes().to_vec());
            assert_eq!(CloseFrame::parse(payload).unwrap().unwrap().code, CloseCode(code));
        }
        for code in reserved.into_iter().chain([5000, 65535]) {
            assert!(!CloseCode(code).is_sendable(), "{code} should not be sendable");
            let payload = Bytes::from(code.to_be_bytes().to_vec());
            let err = CloseFrame::parse(payload).unwrap_err();
            assert_eq!(err, Error::InvalidCloseCode(code));
            assert_eq!(err.close_code(), Some(CloseCode::PROTOCOL_ERROR));
        }
    }

    #[test]
    fn empty_one_byte_and_reasons() {
        assert_eq!(CloseFrame::parse(Bytes::new()), Ok(None));
        let err = CloseFrame::parse(Bytes::from_static(&[0x03])).unwrap_err();
        assert_eq!(err.close_code(), Some(CloseCode::PROTOCOL_ERROR));
        let frame = CloseFrame::parse(Bytes::from_static(b"\x03\xe8bye \xc3\xa9")).unwrap().unwrap();
        assert_eq!(frame.reason.as_str(), "bye é");
        let err = CloseFrame::parse(Bytes::from_static(b"\x03\xe8bad \xc3")).unwrap_err();
        assert_eq!(err.close_code(), Some(CloseCode::INVALID_PAYLOAD));
    }

    #[test]
    fn encoded_reason_fits_a_control_frame() {
        let reason = "é".repeat(100);
        let frame = CloseFrame { code: CloseCode::GOING_AWAY, reason: Utf8Bytes::from(reason) };
        let payload = frame.encode();
        assert!(payload.len() <= 125);
        let back = CloseFrame::parse(payload).unwrap().unwrap();
        assert_eq!(back.reason.as_str(), "é".repeat(61));
    }
}
