//! The client's side of the opening handshake (RFC 6455 section 4.1): build a
//! request with a fresh random key, then validate the server's response.

use super::{ExtensionOffer, Headers, accept_key, is_token, server::parse_head};
use crate::{Config, Error};
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use std::fmt::Write;

/// What a client asks for in its opening handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRequest {
    /// The `Host` header: the host, with the port when it is not the default.
    pub host: String,
    /// The request target: path and query, such as `/chat?token=abc`.
    pub target: String,
    /// Subprotocols to offer, in order of preference.
    pub protocols: Vec<String>,
    /// `Sec-WebSocket-Extensions` offers, such as `permessage-deflate; client_max_window_bits`.
    pub extensions: Vec<String>,
    /// Extra header fields, such as `Authorization` or `Origin`.
    pub headers: Vec<(String, String)>,
}

impl ClientRequest {
    /// A request for `target` on `host`, offering nothing more.
    pub fn new(host: impl Into<String>, target: impl Into<String>) -> Self {
        ClientRequest { host: host.into(), target: target.into(), ..Self::default() }
    }

    /// Encodes the request with a random 16-byte key, and returns it with the
    /// state needed to check the response.
    pub fn encode(&self) -> Result<(ClientHandshake, Vec<u8>), Error> {
        self.check()?;
        let key = BASE64.encode(rand::random::<[u8; 16]>());
        let mut out = String::with_capacity(256);
        let _ = write!(
            out,
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            self.target, self.host
        );
        if !self.protocols.is_empty() {
            let _ = write!(out, "Sec-WebSocket-Protocol: {}\r\n", self.protocols.join(", "));
        }
        if !self.extensions.is_empty() {
            let _ = write!(out, "Sec-WebSocket-Extensions: {}\r\n", self.extensions.join(", "));
        }
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        out.push_str("\r\n");
        Ok((self.handshake(Some(accept_key(key.as_bytes()))), out.into_bytes()))
    }

    /// The header fields of the same request as an HTTP/2 extended CONNECT
    /// (RFC 8441 section 5), whose `:protocol` is `websocket`, `:authority`
    /// the `host` and `:path` the `target`, which the HTTP/2 layer sends;
    /// and the state needed to check the answer. There is no key.
    pub fn connect_headers(&self) -> Result<(ClientHandshake, Vec<(String, String)>), Error> {
        self.check()?;
        let mut headers = vec![("sec-websocket-version".to_owned(), "13".to_owned())];
        if !self.protocols.is_empty() {
            headers.push(("sec-websocket-protocol".to_owned(), self.protocols.join(", ")));
        }
        if !self.extensions.is_empty() {
            headers.push(("sec-websocket-extensions".to_owned(), self.extensions.join(", ")));
        }
        headers.extend(self.headers.iter().cloned());
        Ok((self.handshake(None), headers))
    }

    /// The state that checks the answer to this request, with the
    /// `Sec-WebSocket-Accept` it expects over HTTP/1.1.
    fn handshake(&self, accept: Option<String>) -> ClientHandshake {
        let extensions =
            self.extensions.iter().map(|e| e.split(';').next().unwrap_or_default().trim().to_owned()).collect();
        ClientHandshake { accept, protocols: self.protocols.clone(), extensions }
    }

    /// Refuses anything that would break the request head: line breaks,
    /// a target that is not a path, names that are not tokens.
    fn check(&self) -> Result<(), Error> {
        let clean = |s: &str| !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        let ok = is_token(&self.host.replace([':', '[', ']'], ""))
            && self.target.starts_with('/')
            && !self.target.contains(' ')
            && clean(&self.target)
            && self.protocols.iter().all(|p| is_token(p))
            && self.extensions.iter().all(|e| clean(e))
            && self.headers.iter().all(|(n, v)| is_token(n) && clean(v));
        if ok { Ok(()) } else { Err(Error::MalformedHttp("invalid request field")) }
    }
}

/// A sent request's state, to validate the server's response against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    /// Over HTTP/1.1, the `Sec-WebSocket-Accept` that the key asks for.
    accept: Option<String>,
    protocols: Vec<String>,
    extensions: Vec<String>,
}

/// A server's 101 response, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The subprotocol the server chose, one of those offered.
    pub protocol: Option<String>,
    /// The extensions the server agreed to, each one that was offered.
    pub extensions: Vec<ExtensionOffer>,
    /// All header fields of the response.
    pub headers: Headers,
}

impl ClientHandshake {
    /// Parses and validates the response head at the start of `buf`: `Ok(None)`
    /// while incomplete, else the response and the length of its head. A status
    /// other than 101 is [`Error::UnexpectedStatus`], with `Location` for redirects.
    pub fn parse_response(&self, buf: &[u8], config: &Config) -> Result<Option<(Response, usize)>, Error> {
        let mut fields = vec![httparse::EMPTY_HEADER; config.max_headers];
        let mut res = httparse::Response::new(&mut fields);
        let Some(len) = parse_head(buf, config, |b| res.parse(b))? else { return Ok(None) };
        let headers = Headers::from_httparse(res.headers);
        let status = res.code.unwrap_or_default();
        if status != 101 {
            let location = headers.get("location").map(str::to_owned);
            return Err(Error::UnexpectedStatus { status, location });
        }
        Ok(Some((self.validate(headers)?, len)))
    }

    /// Validates the answer to an HTTP/2 extended CONNECT
    /// ([`ClientRequest::connect_headers`]): its `status`, which must be
    /// 200 (else [`Error::UnexpectedStatus`]), and its header fields.
    pub fn validate_connect(&self, status: u16, headers: Headers) -> Result<Response, Error> {
        if status != 200 {
            let location = headers.get("location").map(str::to_owned);
            return Err(Error::UnexpectedStatus { status, location });
        }
        self.validate(headers)
    }

    fn validate(&self, headers: Headers) -> Result<Response, Error> {
        let require = |ok: bool, what: &'static str| if ok { Ok(()) } else { Err(Error::BadResponse(what)) };
        if let Some(accept) = &self.accept {
            require(headers.has_token("upgrade", "websocket"), "Upgrade must be websocket")?;
            require(headers.has_token("connection", "upgrade"), "Connection must list upgrade")?;
            require(headers.get("sec-websocket-accept") == Some(accept.as_str()), "wrong Sec-WebSocket-Accept")?;
        }
        let protocols: Vec<&str> = headers.list("sec-websocket-protocol").collect();
        require(protocols.len() <= 1, "more than one subprotocol")?;
        let protocol = protocols.first().map(|p| p.to_string());
        require(protocol.as_ref().is_none_or(|p| self.protocols.contains(p)), "a subprotocol that was not offered")?;
        let extensions = ExtensionOffer::parse_all(&headers)
            .map_err(|_| Error::BadResponse("malformed Sec-WebSocket-Extensions"))?;
        require(extensions.iter().all(|e| self.extensions.contains(&e.name)), "an extension that was not offered")?;
        Ok(Response { protocol, extensions, headers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::server::{Request, Upgrade};

    fn request() -> ClientRequest {
        ClientRequest {
            protocols: vec!["chat".into(), "superchat".into()],
            extensions: vec!["permessage-deflate; client_max_window_bits".into()],
            headers: vec![("Origin".into(), "http://example.com".into())],
            ..ClientRequest::new("example.com:8080", "/chat?x=1")
        }
    }

    /// The server side accepts what the client side builds, and the client
    /// side accepts the server's answer.
    #[test]
    fn client_and_server_agree() {
        let config = Config::default();
        let (handshake, bytes) = request().encode().unwrap();
        let (req, _) = Request::parse(&bytes, &config).unwrap().unwrap();
        assert_eq!((req.path(), req.origin()), ("/chat", Some("http://example.com")));
        let upgrade = Upgrade::validate(&req).unwrap();
        assert_eq!(upgrade.extensions[0].name, "permessage-deflate");
        let answer = upgrade.accept_response(Some("superchat"), None);
        let (response, len) = handshake.parse_response(&answer, &config).unwrap().unwrap();
        assert_eq!((response.protocol.as_deref(), len), (Some("superchat"), answer.len()));
    }

    /// Over HTTP/2 the same offer goes as header fields, without a key, and
    /// the server's side takes it as an extended CONNECT.
    #[test]
    fn client_and_server_agree_over_http2() {
        let (handshake, headers) = request().connect_headers().unwrap();
        let headers = Headers(
            headers
                .iter()
                .map(|(name, value)| super::super::Header { name: name.clone(), value: value.clone().into() })
                .collect(),
        );
        assert!(headers.get("sec-websocket-key").is_none());
        let connect = Request { method: "CONNECT".into(), target: "/chat?x=1".into(), headers };
        let upgrade = Upgrade::validate_connect(&connect, Some("websocket")).unwrap();
        assert_eq!((upgrade.protocols.len(), upgrade.extensions[0].name.as_str()), (2, "permessage-deflate"));
        let answer = |fields: &[(&str, &str)]| {
            let fields = fields
                .iter()
                .map(|(name, value)| super::super::Header { name: (*name).into(), value: value.as_bytes().to_vec() });
            Headers(fields.collect())
        };
        let response = handshake.validate_connect(200, answer(&[("sec-websocket-protocol", "superchat")])).unwrap();
        assert_eq!(response.protocol.as_deref(), Some("superchat"));
        let refused = handshake.validate_connect(403, answer(&[]));
        assert_eq!(refused, Err(Error::UnexpectedStatus { status: 403, location: None }));
        assert!(handshake.validate_connect(200, answer(&[("sec-websocket-protocol", "other")])).is_err());
        assert!(handshake.validate_connect(200, answer(&[("sec-websocket-extensions", "x-unknown")])).is_err());
    }

    #[test]
    fn keys_are_random() {
        let (a, _) = request().encode().unwrap();
        let (b, _) = request().encode().unwrap();
        assert_ne!(a.accept, b.accept);
    }

    #[test]
    fn bad_responses() {
        let config = Config::default();
        let (handshake, _) = request().encode().unwrap();
        let accept = handshake.accept.clone().unwrap();
        let good = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        assert!(handshake.parse_response(good.as_bytes(), &config).unwrap().is_some());
        assert_eq!(handshake.parse_response(&good.as_bytes()[..20], &config), Ok(None));
        let cases = [
            good.replacen(&accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 1),
            good.replacen("Upgrade: websocket", "Upgrade: h2c", 1),
            good.replacen("Connection: Upgrade", "Connection: close", 1),
            good.replacen("\r\n\r\n", "\r\nSec-WebSocket-Protocol: other\r\n\r\n", 1),
            good.replacen("\r\n\r\n", "\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n", 1),
            good.replacen("\r\n\r\n", "\r\nSec-WebSocket-Extensions: x-unoffered\r\n\r\n", 1),
        ];
        for case in cases {
            let err = handshake.parse_response(case.as_bytes(), &config).unwrap_err();
            assert!(matches!(err, Error::BadResponse(_)), "{case:?} gave {err:?}");
        }
        let redirect = "HTTP/1.1 302 Found\r\nLocation: ws://elsewhere/\r\n\r\n";
        assert_eq!(
            handshake.parse_response(redirect.as_bytes(), &config),
            Err(Error::UnexpectedStatus { status: 302, location: Some("ws://elsewhere/".into()) })
        );
    }

    #[test]
    fn refuses_header_injection() {
        let mut req = request();
        req.headers.push(("X-Evil".into(), "a\r\nHost: other".into()));
        assert!(req.encode().is_err());
        assert!(ClientRequest::new("example.com", "no-slash").encode().is_err());
        assert!(ClientRequest::new("[::1]:9000", "/").encode().is_ok());
    }
}
