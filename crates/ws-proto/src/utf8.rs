//! UTF-8 for text messages and close reasons (RFC 6455 sections 5.6 and 8.1),
//! validated incrementally so invalid text fails at the first bad byte, even in
//! the middle of a fragment, while a code point cut at a fragment edge is carried over.

use crate::Error;
use bytes::Bytes;
use std::{fmt, ops::Deref, str};

/// Validates a stream of bytes as UTF-8, chunk by chunk.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    partial: [u8; 4],
    len: u8,
}

impl Utf8Validator {
    /// Validates the next chunk. Fails as soon as the bytes seen so far cannot
    /// begin any valid UTF-8 text; an incomplete code point at the end is kept
    /// for the next chunk.
    pub fn feed(&mut self, input: &[u8]) -> Result<(), Error> {
        let input = self.complete_partial(input)?;
        match str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(Error::InvalidUtf8),
            Err(e) => {
                let tail = &input[e.valid_up_to()..];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Ends the text: fails if it stopped inside a code point.
    pub fn finish(&mut self) -> Result<(), Error> {
        let len = std::mem::take(&mut self.len);
        if len == 0 { Ok(()) } else { Err(Error::InvalidUtf8) }
    }

    /// Moves bytes from `input` into the carried code point until it is
    /// complete; returns the rest of `input`.
    fn complete_partial<'a>(&mut self, mut input: &'a [u8]) -> Result<&'a [u8], Error> {
        while self.len > 0 {
            let Some((&byte, rest)) = input.split_first() else { break };
            input = rest;
            self.partial[self.len as usize] = byte;
            self.len += 1;
            match str::from_utf8(&self.partial[..self.len as usize]) {
                Ok(_) => self.len = 0,
                Err(e) if e.error_len().is_some() => return Err(Error::InvalidUtf8),
                Err(_) => {}
            }
        }
        Ok(input)
    }
}

/// Bytes known to be valid UTF-8: the payload of a text message or a close reason.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Wraps bytes that the crate has already validated.
    pub(crate) fn from_validated(bytes: Bytes) -> Self {
        debug_assert!(str::from_utf8(&bytes).is_ok());
        Utf8Bytes(bytes)
    }

    /// Wraps a static string without copying it.
    pub const fn from_static(text: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(text.as_bytes()))
    }

    /// The text.
    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor guarantees valid UTF-8: `try_from` and the
        // `From` impls take checked bytes or a `str`, and `from_validated` is
        // only called on bytes that passed `Utf8Validator` to `finish` (see the
        // `split_code_points_round_trip` test, which reads them back through here).
        unsafe { str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes, shared, without a copy.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = Error;

    fn try_from(bytes: Bytes) -> Result<Self, Error> {
        str::from_utf8(&bytes).map_err(|_| Error::InvalidUtf8)?;
        Ok(Utf8Bytes(bytes))
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Utf8Bytes(Bytes::from(text))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(text: &str) -> Self {
        Utf8Bytes(Bytes::copy_from_slice(text.as_bytes()))
    }
}

impl Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "aé€𝄞z\u{10FFFF}κόσμε";

    #[test]
    fn split_code_points_round_trip() {
        let bytes = SAMPLE.as_bytes();
        for cut in 0..=bytes.len() {
            let mut v = Utf8Validator::default();
            v.feed(&bytes[..cut]).unwrap();
            v.feed(&bytes[cut..]).unwrap();
            v.finish().unwrap();
            let text = Utf8Bytes::from_validated(Bytes::copy_from_slice(bytes));
            assert_eq!(text.as_str(), SAMPLE);
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let mut v = Utf8Validator::default();
        for b in SAMPLE.as_bytes() {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn unfinished_code_point_fails_at_the_end() {
        let mut v = Utf8Validator::default();
        v.feed(&[0xF0, 0x9D, 0x84]).unwrap();
        assert_eq!(v.finish(), Err(Error::InvalidUtf8));
    }

    /// Each case: valid prefix, then the first byte that makes it invalid.
    /// The validator must fail on that byte, fed alone, without waiting for more.
    #[test]
    fn fails_at_the_first_bad_byte() {
        let cases: &[(&[u8], u8)] = &[
            (b"abc", 0xFF),
            (b"abc", 0x80),        // lone continuation byte
            (&[0xCE, 0xBA], 0xC0), // overlong lead
            (&[0xE0], 0x80),       // overlong 3-byte
            (&[0xED], 0xA0),       // UTF-16 surrogate
            (&[0xF4], 0x90),       // above U+10FFFF
            (&[0xF0], 0x80),       // overlong 4-byte
            (&[0xF0, 0x9D], 0x41), // sequence cut by ASCII
            (&[0xE2, 0x82], 0xE2), // sequence cut by a new lead
            (&[0xF5 - 1, 0x8F, 0xBF], 0xC0),
        ];
        for &(prefix, bad) in cases {
            let mut v = Utf8Validator::default();
            v.feed(prefix).unwrap_or_else(|_| panic!("prefix {prefix:x?} is valid"));
            assert_eq!(v.feed(&[bad]), Err(Error::InvalidUtf8), "{prefix:x?} then {bad:#x}");
        }
        for lead in [0xC0, 0xC1, 0xF5, 0xF8, 0xFF] {
            assert_eq!(Utf8Validator::default().feed(&[lead]), Err(Error::InvalidUtf8));
        }
    }

    #[test]
    fn try_from_checks() {
        assert!(Utf8Bytes::try_from(Bytes::from_static(b"ok")).is_ok());
        assert!(Utf8Bytes::try_from(Bytes::from_static(b"\xed\xa0\x80")).is_err());
    }
}
