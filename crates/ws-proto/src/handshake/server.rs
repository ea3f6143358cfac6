//! The server's side of the opening handshake (RFC 6455 section 4.2): parse a
//! request under explicit bounds, validate it as an upgrade, and build the 101
//! response or an error response.

use super::{ExtensionOffer, Headers, accept_key, is_token};
use crate::{Config, Error};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use std::fmt::Write;

/// An HTTP/1.1 request head, parsed within the limits of a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, such as `GET`.
    pub method: String,
    /// The request target: the path and the query, such as `/chat?room=a`.
    pub target: String,
    /// The header fields.
    pub headers: Headers,
}

impl Request {
    /// Parses a request head from the start of `buf`: `Ok(None)` while it is
    /// incomplete, else the request and the length of its head in bytes.
    /// A head longer than `max_header_bytes` or with more than `max_headers`
    /// fields is [`Error::HeadersTooLarge`], found without buffering past the bound.
    pub fn parse(buf: &[u8], config: &Config) -> Result<Option<(Request, usize)>, Error> {
        let mut fields = vec![httparse::EMPTY_HEADER; config.max_headers];
        let mut req = httparse::Request::new(&mut fields);
        let len = match parse_head(buf, config, |b| req.parse(b))? {
            Some(len) => len,
            None => return Ok(None),
        };
        if req.version != Some(1) {
            return Err(Error::MalformedHttp("HTTP/1.1 or later is required"));
        }
        let request = Request {
            method: req.method.unwrap_or_default().to_owned(),
            target: req.path.unwrap_or_default().to_owned(),
            headers: Headers::from_httparse(req.headers),
        };
        Ok(Some((request, len)))
    }

    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(path, _)| path)
    }

    /// The query of the target, without the `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }

    /// The `Origin` header, sent by browsers.
    pub fn origin(&self) -> Option<&str> {
        self.headers.get("origin")
    }

    /// Whether the request asks for a WebSocket upgrade (`Upgrade: websocket`),
    /// as opposed to a plain HTTP request for the same server.
    pub fn is_upgrade(&self) -> bool {
        self.headers.has_token("upgrade", "websocket")
    }
}

/// Runs an httparse parser on `buf` within the bounds of `config`, mapping
/// its outcome to the head length or the error it becomes.
pub(super) fn parse_head<'b>(
    buf: &'b [u8],
    config: &Config,
    parse: impl FnOnce(&'b [u8]) -> httparse::Result<usize>,
) -> Result<Option<usize>, Error> {
    let bounded = &buf[..buf.len().min(config.max_header_bytes)];
    match parse(bounded) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if bounded.len() < config.max_header_bytes => Ok(None),
        Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => Err(Error::HeadersTooLarge),
        Err(_) => Err(Error::MalformedHttp("malformed request or response head")),
    }
}

/// A request validated as a WebSocket upgrade: what the application needs to
/// decide, and what the 101 response needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The `Sec-WebSocket-Accept` of an HTTP/1.1 upgrade; over HTTP/2 there is no key.
    accept: Option<String>,
    /// The subprotocols the client offers, in its order of preference.
    pub protocols: Vec<String>,
    /// The extensions the client offers, in order.
    pub extensions: Vec<ExtensionOffer>,
}

impl Upgrade {
    /// Validates `req` as an opening handshake (section 4.2.1): `GET`, a `Host`,
    /// `Upgrade: websocket`, `Connection: upgrade`, a `Sec-WebSocket-Key` of 16
    /// bytes and `Sec-WebSocket-Version: 13` ([`Error::UnsupportedVersion`] otherwise).
    pub fn validate(req: &Request) -> Result<Upgrade, Error> {
        let h = &req.headers;
        let require = |ok: bool, what: &'static str| if ok { Ok(()) } else { Err(Error::BadUpgrade(what)) };
        require(req.method == "GET", "the method must be GET")?;
        require(h.get_once("host").is_some(), "exactly one Host header is required")?;
        require(req.is_upgrade(), "Upgrade must list websocket")?;
        require(h.has_token("connection", "upgrade"), "Connection must list upgrade")?;
        let version = h.get_once("sec-websocket-version");
        require(version.is_some(), "exactly one Sec-WebSocket-Version is required")?;
        if version != Some("13") {
            return Err(Error::UnsupportedVersion);
        }
        let key = h.get_once("sec-websocket-key").unwrap_or_default();
        let decoded = BASE64.decode(key).map_err(|_| Error::BadUpgrade("Sec-WebSocket-Key is not base64"))?;
        require(decoded.len() == 16, "Sec-WebSocket-Key must be 16 bytes")?;
        Ok(Upgrade { accept: Some(accept_key(key.as_bytes())), ..Upgrade::offered(h)? })
    }

    /// Validates `req` as a WebSocket opened over HTTP/2 (RFC 8441 section
    /// 5): an extended `CONNECT` whose `:protocol` pseudo-header is
    /// `protocol`, which must be `websocket`, with `Sec-WebSocket-Version: 13`
    /// ([`Error::UnsupportedVersion`] otherwise). There is no key, and the
    /// answer is a 200 with the chosen subprotocol and extensions
    /// (`Sec-WebSocket-Protocol`, `Sec-WebSocket-Extensions`) as headers.
    pub fn validate_connect(req: &Request, protocol: Option<&str>) -> Result<Upgrade, Error> {
        let require = |ok: bool, what: &'static str| if ok { Ok(()) } else { Err(Error::BadUpgrade(what)) };
        require(req.method == "CONNECT", "the method must be CONNECT")?;
        require(protocol.is_some_and(|p| p.eq_ignore_ascii_case("websocket")), ":protocol must be websocket")?;
        let version = req.headers.get_once("sec-websocket-version");
        require(version.is_some(), "exactly one Sec-WebSocket-Version is required")?;
        if version != Some("13") {
            return Err(Error::UnsupportedVersion);
        }
        Upgrade::offered(&req.headers)
    }

    /// The subprotocols and extensions offered in `h`, without a key.
    fn offered(h: &Headers) -> Result<Upgrade, Error> {
        let protocols: Vec<String> = h.list("sec-websocket-protocol").map(str::to_owned).collect();
        if !protocols.iter().all(|p| is_token(p)) {
            return Err(Error::BadUpgrade("malformed Sec-WebSocket-Protocol"));
        }
        Ok(Upgrade { accept: None, protocols, extensions: ExtensionOffer::parse_all(h)? })
    }

    /// The first subprotocol the client offers that the server supports.
    pub fn select_protocol<'a>(&self, supported: &[&'a str]) -> Option<&'a str> {
        self.protocols.iter().find_map(|p| supported.iter().find(|s| **s == p).copied())
    }

    /// The 101 response of an HTTP/1.1 upgrade, with `protocol` (which must
    /// be one the client offered) and the agreed `extensions` header value,
    /// if any. (Over HTTP/2 the answer is a 200 the application makes.)
    pub fn accept_response(&self, protocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
        debug_assert!(protocol.is_none_or(|p| self.protocols.iter().any(|o| o == p)));
        debug_assert!(self.accept.is_some(), "an HTTP/2 CONNECT is answered with a 200");
        let mut out = String::with_capacity(160);
        out.push_str("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
        let _ = write!(out, "Sec-WebSocket-Accept: {}\r\n", self.accept.as_deref().unwrap_or_default());
        if let Some(p) = protocol {
            let _ = write!(out, "Sec-WebSocket-Protocol: {p}\r\n");
        }
        if let Some(e) = extensions {
            let _ = write!(out, "Sec-WebSocket-Extensions: {e}\r\n");
        }
        out.push_str("\r\n");
        out.into_bytes()
    }
}

/// An error response with a short plain-text body, closing the connection.
/// A 426 names the version this server speaks (section 4.4).
pub fn error_response(status: u16, body: &str) -> Vec<u8> {
    let extra = if status == 426 { "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n" } else { "" };
    http_response(status, extra, "text/plain; charset=utf-8", body.as_bytes())
}

/// A complete HTTP/1.1 response that closes the connection, with the header
/// lines `extra` (each ending in CRLF), for a server's plain HTTP routes.
pub fn http_response(status: u16, extra: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\n{extra}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason_phrase(status),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The reason phrase of the statuses a WebSocket server answers with.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_REQUEST: &str = "GET /chat?room=a HTTP/1.1\r\nHost: server.example.com\r\n\
        Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn parse(text: &str) -> Request {
        Request::parse(text.as_bytes(), &Config::default()).unwrap().unwrap().0
    }

    fn validate(text: &str) -> Result<Upgrade, Error> {
        Upgrade::validate(&parse(text))
    }

    #[test]
    fn accepts_the_rfc_example() {
        let req = parse(RFC_REQUEST);
        assert_eq!((req.path(), req.query(), req.origin()), ("/chat", Some("room=a"), Some("http://example.com")));
        let upgrade = Upgrade::validate(&req).unwrap();
        assert_eq!(upgrade.protocols, ["chat", "superchat"]);
        assert_eq!(upgrade.select_protocol(&["superchat", "chat"]), Some("chat"));
        let response = String::from_utf8(upgrade.accept_response(Some("chat"), None)).unwrap();
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(response.contains("\r\nSec-WebSocket-Protocol: chat\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
    }

    /// An extended CONNECT of RFC 8441 as ws-proto sees it: its pseudo-headers
    /// taken apart by the HTTP/2 layer, the `:protocol` given beside.
    fn connect(method: &str, headers: &[(&str, &str)]) -> Request {
        let headers = headers
            .iter()
            .map(|(name, value)| super::super::Header { name: (*name).to_owned(), value: value.as_bytes().to_vec() });
        Request { method: method.to_owned(), target: "/chat".to_owned(), headers: Headers(headers.collect()) }
    }

    #[test]
    fn an_extended_connect_opens_a_websocket_over_http2_without_a_key() {
        let offer = [
            ("sec-websocket-version", "13"),
            ("sec-websocket-protocol", "chat, superchat"),
            ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
        ];
        let upgrade = Upgrade::validate_connect(&connect("CONNECT", &offer), Some("websocket")).unwrap();
        assert_eq!(upgrade.protocols, ["chat", "superchat"]);
        assert_eq!(upgrade.extensions.len(), 1);
        let status = |method, headers: &[(&str, &str)], protocol| {
            Upgrade::validate_connect(&connect(method, headers), protocol).map_err(|e| e.http_status())
        };
        let version = [("sec-websocket-version", "13")];
        assert!(status("CONNECT", &version, Some("WebSocket")).is_ok());
        assert_eq!(status("GET", &version, Some("websocket")), Err(Some(400)));
        assert_eq!(status("CONNECT", &version, None), Err(Some(400)));
        assert_eq!(status("CONNECT", &version, Some("h2c")), Err(Some(400)));
        assert_eq!(status("CONNECT", &[], Some("websocket")), Err(Some(400)));
        assert_eq!(status("CONNECT", &[("sec-websocket-version", "8")], Some("websocket")), Err(Some(426)));
        let bad_protocol = [("sec-websocket-version", "13"), ("sec-websocket-protocol", "a b")];
        assert_eq!(status("CONNECT", &bad_protocol, Some("websocket")), Err(Some(400)));
    }

    #[test]
    fn incomplete_until_the_blank_line() {
        let bytes = RFC_REQUEST.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(Request::parse(&bytes[..cut], &Config::default()), Ok(None));
        }
        let mut with_frame = bytes.to_vec();
        with_frame.extend_from_slice(&[0x81, 0x80]);
        let (_, len) = Request::parse(&with_frame, &Config::default()).unwrap().unwrap();
        assert_eq!(len, bytes.len());
    }

    #[test]
    fn each_rule_has_its_status() {
        let cases: &[(&str, &str, u16)] = &[
            ("GET /chat", "POST /chat", 400),
            ("Host: server.example.com\r\n", "", 400),
            ("Upgrade: websocket", "Upgrade: h2c", 400),
            ("Connection: Upgrade", "Connection: keep-alive", 400),
            ("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ==", 400),
            ("dGhlIHNhbXBsZSBub25jZQ==", "not base64!", 400),
            ("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8", 426),
            ("Sec-WebSocket-Version: 13\r\n", "", 400),
            ("chat, superchat", "chat, super chat", 400),
        ];
        for (from, to, status) in cases {
            let err = validate(&RFC_REQUEST.replacen(from, to, 1)).unwrap_err();
            assert_eq!(err.http_status(), Some(*status), "{from:?} -> {to:?}: {err}");
        }
        let twice = RFC_REQUEST.replacen("Origin", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin", 1);
        assert!(validate(&twice).is_err());
        let http10 = RFC_REQUEST.replacen("HTTP/1.1", "HTTP/1.0", 1);
        let err = Request::parse(http10.as_bytes(), &Config::default()).unwrap_err();
        assert_eq!(err.http_status(), Some(400));
        assert!(validate(&RFC_REQUEST.replacen("Connection: Upgrade", "Connection: keep-alive, UPGRADE", 1)).is_ok());
    }

    #[test]
    fn head_bounds_are_errors_not_allocations() {
        let config = Config { max_header_bytes: 256, max_headers: 8, ..Config::default() };
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
        let err = Request::parse(long.as_bytes(), &config).unwrap_err();
        assert_eq!(err.http_status(), Some(431));
        let never_ending = "GET / HTTP/1.1\r\n".to_string() + &"X: y\r\n".repeat(40);
        assert_eq!(Request::parse(never_ending.as_bytes(), &config).unwrap_err(), Error::HeadersTooLarge);
        let many = "GET / HTTP/1.1\r\n".to_string() + &"X: y\r\n".repeat(9) + "\r\n";
        assert_eq!(Request::parse(many.as_bytes(), &config).unwrap_err(), Error::HeadersTooLarge);
        let garbage = Request::parse(b"\x16\x03\x01\x02\x00\r\n\r\n", &config).unwrap_err();
        assert_eq!(garbage.http_status(), Some(400));
    }

    #[test]
    fn error_responses() {
        let text = String::from_utf8(error_response(426, "use version 13")).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(text.ends_with("\r\n\r\nuse version 13"));
        for status in [400, 401, 403, 429] {
            let text = String::from_utf8(error_response(status, "no")).unwrap();
            assert!(text.starts_with(&format!("HTTP/1.1 {status} ")));
            assert!(text.contains("Content-Length: 2\r\n"));
        }
    }
}
