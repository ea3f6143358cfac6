//! The opening handshake (RFC 6455 section 4): the server's side in [`server`],
//! the client's in [`client`], and what both share here: the accept value,
//! header lookups with case-insensitive token lists, and extension offers
//! (section 9.1).

pub mod client;
pub mod server;

use crate::Error;
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use sha1::{Digest, Sha1};

/// The GUID a server appends to the client's key (section 1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64 of the SHA-1 of
/// the key followed by the protocol's GUID.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID.as_bytes());
    BASE64.encode(sha1.finalize())
}

/// One header field of a request or response, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The field name, as sent (compare it case-insensitively).
    pub name: String,
    /// The raw field value.
    pub value: Vec<u8>,
}

/// The header fields of a request or response, with the lookups the handshake needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    fn from_httparse(headers: &[httparse::Header<'_>]) -> Self {
        Headers(headers.iter().map(|h| Header { name: h.name.to_owned(), value: h.value.to_vec() }).collect())
    }

    /// Every value of the field `name` that is valid UTF-8, in order.
    pub fn get_all<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(&h.value).ok())
    }

    /// The first value of the field `name`, trimmed.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_all(name).next().map(str::trim)
    }

    /// The value of a field that must appear exactly once.
    fn get_once(&self, name: &str) -> Option<&str> {
        let mut values = self.get_all(name);
        let first = values.next()?;
        values.next().is_none().then(|| first.trim())
    }

    /// The comma-separated elements of every value of `name`, trimmed, empty ones skipped.
    pub fn list<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> {
        self.get_all(name).flat_map(|v| v.split(',')).map(str::trim).filter(|t| !t.is_empty())
    }

    /// Whether `name` lists `token`, compared case-insensitively (`Connection: keep-alive, Upgrade`).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.list(name).any(|t| t.eq_ignore_ascii_case(token))
    }
}

/// One extension in `Sec-WebSocket-Extensions`: a name and its parameters,
/// each with or without a value (quoted values are unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension token, such as `permessage-deflate`.
    pub name: String,
    /// The parameters in order, such as `("client_max_window_bits", None)`.
    pub params: Vec<(String, Option<String>)>,
}

impl ExtensionOffer {
    /// Parses every `Sec-WebSocket-Extensions` value in `headers`, in order.
    pub fn parse_all(headers: &Headers) -> Result<Vec<ExtensionOffer>, Error> {
        let mut offers = Vec::new();
        for value in headers.get_all("sec-websocket-extensions") {
            offers.extend(Self::parse_list(value)?);
        }
        Ok(offers)
    }

    /// Parses one `Sec-WebSocket-Extensions` value, such as
    /// `permessage-deflate; client_max_window_bits, x-other`.
    pub fn parse_list(value: &str) -> Result<Vec<ExtensionOffer>, Error> {
        let mut offers = Vec::new();
        ExtensionList { s: value.as_bytes(), i: 0 }.parse_into(&mut offers)?;
        Ok(offers)
    }
}

impl std::fmt::Display for ExtensionOffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            match value {
                Some(v) => write!(f, "; {name}={v}")?,
                None => write!(f, "; {name}")?,
            }
        }
        Ok(())
    }
}

const BAD_EXTENSIONS: Error = Error::BadUpgrade("malformed Sec-WebSocket-Extensions");

/// A cursor over one header value with the grammar of RFC 6455 section 9.1.
struct ExtensionList<'a> {
    s: &'a [u8],
    i: usize,
}

impl ExtensionList<'_> {
    fn parse_into(&mut self, offers: &mut Vec<ExtensionOffer>) -> Result<(), Error> {
        loop {
            self.skip_space();
            if self.eat(b',') {
                continue;
            }
            if self.i == self.s.len() {
                return Ok(());
            }
            let name = self.token()?;
            let mut params = Vec::new();
            while self.eat(b';') {
                let param = self.token()?;
                let value = if self.eat(b'=') { Some(self.value()?) } else { None };
                params.push((param, value));
            }
            offers.push(ExtensionOffer { name, params });
            if self.i < self.s.len() && !self.eat(b',') {
                return Err(BAD_EXTENSIONS);
            }
        }
    }

    fn skip_space(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// Skips spaces, then consumes `byte` if it comes next.
    fn eat(&mut self, byte: u8) -> bool {
        self.skip_space();
        let found = self.s.get(self.i) == Some(&byte);
        self.i += usize::from(found);
        found
    }

    fn token(&mut self) -> Result<String, Error> {
        self.skip_space();
        let start = self.i;
        while self.s.get(self.i).is_some_and(|&b| is_tchar(b)) {
            self.i += 1;
        }
        let token = &self.s[start..self.i];
        if token.is_empty() {
            return Err(BAD_EXTENSIONS);
        }
        Ok(String::from_utf8_lossy(token).into_owned())
    }

    /// A token or a quoted string whose content is a token (section 9.1).
    fn value(&mut self) -> Result<String, Error> {
        if !self.eat(b'"') {
            return self.token();
        }
        let mut value = Vec::new();
        loop {
            match self.s.get(self.i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    value.push(*self.s.get(self.i + 1).ok_or(BAD_EXTENSIONS)?);
                    self.i += 2;
                }
                Some(&b) => {
                    value.push(b);
                    self.i += 1;
                }
                None => return Err(BAD_EXTENSIONS),
            }
        }
        self.i += 1;
        if value.is_empty() || !value.iter().all(|&b| is_tchar(b)) {
            return Err(BAD_EXTENSIONS);
        }
        Ok(String::from_utf8_lossy(&value).into_owned())
    }
}

/// The token characters of RFC 7230 section 3.2.6.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether `s` is a non-empty token, as subprotocol names must be.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(pairs.iter().map(|(n, v)| Header { name: n.to_string(), value: v.as_bytes().to_vec() }).collect())
    }

    #[test]
    fn rfc_section_1_3_accept_example() {
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn token_lists_are_case_insensitive() {
        let h = headers(&[("connection", "keep-alive, Upgrade"), ("UPGRADE", "WebSocket")]);
        assert!(h.has_token("Connection", "upgrade"));
        assert!(h.has_token("upgrade", "websocket"));
        assert!(!h.has_token("connection", "close"));
    }

    #[test]
    fn extension_offers() {
        let h = headers(&[
            ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits, x-foo"),
            ("sec-websocket-extensions", "permessage-deflate;server_max_window_bits=\"10\" ; a=b"),
        ]);
        let offers = ExtensionOffer::parse_all(&h).unwrap();
        let names: Vec<_> = offers.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["permessage-deflate", "x-foo", "permessage-deflate"]);
        assert_eq!(offers[0].params, [("client_max_window_bits".into(), None)]);
        assert_eq!(
            offers[2].params,
            [("server_max_window_bits".into(), Some("10".into())), ("a".into(), Some("b".into()))]
        );
        assert_eq!(offers[2].to_string(), "permessage-deflate; server_max_window_bits=10; a=b");
        for bad in ["p; =1", "p; a=\"\"", "p; a=\"x y\"", "p; a=\"10", "p q", "p; a=", "=p"] {
            let h = headers(&[("Sec-WebSocket-Extensions", bad)]);
            assert!(ExtensionOffer::parse_all(&h).is_err(), "{bad:?} should be rejected");
        }
    }
}
