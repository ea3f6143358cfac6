//! Who a hub connection speaks for: JWT authentication.
//!
//! With a key configured (an HS256 secret, or an RS256 or ES256 public key),
//! every hub connection must bring a token, in `Authorization: Bearer`, the
//! `token` query parameter or the `token` cookie; without one, or with one
//! that fails validation, the handshake is answered 401. The token's `sub`
//! is the sender of the user's messages, an optional `rooms` claim lists
//! the rooms the user may join (an entry ending in `*` matches every room
//! that starts with the rest), and an optional `publish` claim, with the
//! same patterns, the rooms it may publish to (without it, those it may
//! join). Tokens must carry `sub` and `exp`.
//!
//! A room token, signed with the same key, lets its user into one room
//! beyond what the connection's token allows: its `sub` is the user, its
//! `room` the room, and it too carries `exp`.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::sync::Arc;
use ws_proto::handshake::server::Request;

/// The key tokens are checked with, and how.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

/// The claims of a token that the hub reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(flatten)]
    grants: Grants,
}

/// The claims of a room token.
#[derive(Debug, Deserialize)]
struct RoomClaims {
    sub: String,
    room: String,
    exp: u64,
}

/// What a connection's token grants, and until when: the rooms its user
/// may join, and those it may publish to, as patterns (`prefix*` matches
/// every room that starts so).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Grants {
    /// The rooms it may join; without the claim, every room.
    pub rooms: Option<Vec<String>>,
    /// The rooms it may publish to; without the claim, those it may join.
    pub publish: Option<Vec<String>>,
    /// When the token expires, in seconds since the Unix epoch.
    #[serde(rename = "exp")]
    pub expires: u64,
    /// Given by the connect hook, not a token: its end is extended by the
    /// refresh hook, the client holding no token to refresh.
    #[serde(skip)]
    pub by_hook: bool,
    /// Whether the refresh hook was asked to extend it and has not said
    /// yes: not asked again.
    #[serde(skip)]
    pub refreshing: bool,
}

/// Who a hub connection speaks for. Shared and boxed, not growable strings
/// and vectors: every open connection keeps one, and its rooms share the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The sender of its messages: the token's `sub`, or the client's address.
    pub name: Arc<str>,
    /// What its token grants, if it came with one (behind a thin pointer,
    /// which keeps every session small).
    pub grants: Option<Box<Grants>>,
}

impl Identity {
    /// An unauthenticated client, known by its address.
    pub fn anonymous(name: String) -> Self {
        Identity { name: name.into(), grants: None }
    }

    /// When its token expires, in seconds since the Unix epoch, if it has one.
    pub fn expires(&self) -> Option<u64> {
        self.grants.as_ref().map(|g| g.expires)
    }

    /// Who a retried message id belongs to: the user, or for an anonymous
    /// client, named by its address and port, the address alone, since a
    /// reconnection changes the port.
    pub fn retry_origin(&self) -> &str {
        match self.name.parse::<std::net::SocketAddr>() {
            Ok(_) => self.name.rsplit_once(':').map_or(&self.name, |(address, _)| address),
            Err(_) => &self.name,
        }
    }

    /// Whether it may join `room`.
    pub fn may_join(&self, room: &str) -> bool {
        self.grants.as_ref().and_then(|g| g.rooms.as_deref()).is_none_or(|rooms| matches(rooms, room))
    }

    /// Whether it may publish to `room`, a room it is in: the `publish`
    /// claim says, if its token has one; otherwise it may publish where it
    /// may be.
    pub fn may_publish(&self, room: &str) -> bool {
        self.grants.as_ref().and_then(|g| g.publish.as_deref()).is_none_or(|rooms| matches(rooms, room))
    }
}

/// Whether one of `patterns` matches `room`: the same name, or a prefix
/// of it before a `*`.
fn matches(patterns: &[String], room: &str) -> bool {
    patterns.iter().any(|allowed| match allowed.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => allowed == room,
    })
}

impl Authenticator {
    /// Checks HS256 tokens signed with `secret`.
    pub fn from_secret(secret: &[u8]) -> Self {
        Authenticator::new(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// Checks RS256 or ES256 tokens with a PEM public key (RSA or P-256).
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Authenticator::new(key, Algorithm::RS256));
        }
        DecodingKey::from_ec_pem(pem)
            .map(|key| Authenticator::new(key, Algorithm::ES256))
            .map_err(|e| format!("neither an RSA nor a P-256 public key in PEM: {e}"))
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["sub", "exp"]);
        validation.validate_aud = false;
        // A token is good until its `exp`, no later, as the session enforces it.
        validation.leeway = 0;
        Authenticator { key, validation }
    }

    /// The identity a request's token proves, or why there is none.
    pub fn authenticate(&self, request: &Request) -> Result<Identity, String> {
        let token = token(request).ok_or("no token: send Authorization: Bearer, ?token= or a token cookie")?;
        self.identity(&token)
    }

    /// The identity `token` proves, or why it proves none.
    pub fn identity(&self, token: &str) -> Result<Identity, String> {
        let claims = jsonwebtoken::decode::<Claims>(token.as_bytes(), &self.key, &self.validation)
            .map_err(|e| format!("invalid token: {e}"))?
            .claims;
        Ok(Identity { name: claims.sub.into(), grants: Some(Box::new(claims.grants)) })
    }

    /// Checks a room token that lets `user` into `room`: when it expires,
    /// in seconds since the Unix epoch, or why it does not.
    pub fn admit_to_room(&self, token: &str, user: &str, room: &str) -> Result<u64, String> {
        let claims = jsonwebtoken::decode::<RoomClaims>(token.as_bytes(), &self.key, &self.validation)
            .map_err(|e| format!("invalid room token: {e}"))?
            .claims;
        if claims.sub != user {
            return Err(format!("the room token is for user {}, not {user}", claims.sub));
        }
        if claims.room != room {
            return Err(format!("the room token is for room {}, not {room}", claims.room));
        }
        Ok(claims.exp)
    }
}

/// Whether a request carries a token (a good one or not).
pub fn carries_token(request: &Request) -> bool {
    token(request).is_some()
}

/// The token of a request: the Authorization header, the `token` query
/// parameter, or the `token` cookie, in that order.
fn token(request: &Request) -> Option<String> {
    let bearer = request.headers.get("authorization").and_then(|v| {
        let (scheme, token) = v.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim().to_owned())
    });
    let query = || {
        url::form_urlencoded::parse(request.query()?.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    };
    let cookie = || {
        request.headers.get_all("cookie").flat_map(|v| v.split(';')).find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == "token").then(|| value.to_owned())
        })
    };
    bearer.or_else(query).or_else(cookie).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_claims_with_prefixes() {
        let grants = Grants { rooms: Some(vec!["general".into(), "team-7:*".into()]), ..Grants::default() };
        let user = Identity { name: "u".into(), grants: Some(Box::new(grants)) };
        assert!(user.may_join("general"));
        assert!(user.may_join("team-7:design"));
        assert!(!user.may_join("team-8:design"));
        assert!(!user.may_join("general2"));
        assert!(Identity::anonymous("a".into()).may_join("anything"));
        assert_eq!(Identity::anonymous("127.0.0.1:5000".into()).retry_origin(), "127.0.0.1");
        assert_eq!(Identity::anonymous("[::1]:5000".into()).retry_origin(), "[::1]");
        assert_eq!(user.retry_origin(), "u");
        assert!(user.may_publish("team-7:design"), "without a publish claim, where it may join");
        let nobody =
            Identity { name: "n".into(), grants: Some(Box::new(Grants { rooms: Some(vec![]), ..Grants::default() })) };
        assert!(!nobody.may_join("general"));
        let reader = Grants { publish: Some(vec!["chat:*".into()]), ..Grants::default() };
        let reader = Identity { name: "r".into(), grants: Some(Box::new(reader)) };
        assert!(reader.may_join("feed:btc") && !reader.may_publish("feed:btc") && reader.may_publish("chat:x"));
    }

    #[test]
    fn the_token_comes_from_the_header_the_query_or_a_cookie() {
        let request = |target: &str, headers: &[(&str, &str)]| {
            let mut head = format!("GET {target} HTTP/1.1\r\nHost: h\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            Request::parse(head.as_bytes(), &ws_proto::Config::default()).unwrap().unwrap().0
        };
        assert_eq!(token(&request("/ws", &[("Authorization", "Bearer abc.def")])).as_deref(), Some("abc.def"));
        assert_eq!(token(&request("/ws?room=x&token=q.r%2Bs", &[])).as_deref(), Some("q.r+s"));
        assert_eq!(token(&request("/ws", &[("Cookie", "theme=dark; token=c.d")])).as_deref(), Some("c.d"));
        assert_eq!(token(&request("/ws", &[("Authorization", "Basic Zm9v")])), None);
        assert_eq!(token(&request("/ws?token=", &[])), None);
    }
}
