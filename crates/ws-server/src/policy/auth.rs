//! Who a hub connection speaks for: JWT authentication.
//!
//! With a key configured (an HS256 secret, or an RS256 or ES256 public key),
//! every hub connection must bring a token, in `Authorization: Bearer`, the
//! `token` query parameter or the `token` cookie; without one, or with one
//! that fails validation, the handshake is answered 401. The token's `sub`
//! is the sender of the user's messages, and an optional `rooms` claim lists
//! the rooms the user may join (an entry ending in `*` matches every room
//! that starts with the rest). Tokens must carry `sub` and `exp`.

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
    rooms: Option<Vec<String>>,
}

/// Who a hub connection speaks for. Shared and boxed slices, not growable
/// strings and vectors: every open connection keeps one, and its rooms share the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The sender of its messages: the token's `sub`, or the client's address.
    pub name: Arc<str>,
    /// The rooms it may join, when its token limits them (behind a thin
    /// pointer: most connections have no such list).
    pub rooms: Option<Box<Vec<String>>>,
}

impl Identity {
    /// An unauthenticated client, known by its address.
    pub fn anonymous(name: String) -> Self {
        Identity { name: name.into(), rooms: None }
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
        self.rooms.as_ref().is_none_or(|rooms| {
            rooms.iter().any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => allowed == room,
            })
        })
    }
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
        Authenticator { key, validation }
    }

    /// The identity a request's token proves, or why there is none.
    pub fn authenticate(&self, request: &Request) -> Result<Identity, String> {
        let token = token(request).ok_or("no token: send Authorization: Bearer, ?token= or a token cookie")?;
        let claims = jsonwebtoken::decode::<Claims>(token.as_bytes(), &self.key, &self.validation)
            .map_err(|e| format!("invalid token: {e}"))?
            .claims;
        Ok(Identity { name: claims.sub.into(), rooms: claims.rooms.map(Box::new) })
    }
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
        let user = Identity { name: "u".into(), rooms: Some(Box::new(vec!["general".into(), "team-7:*".into()])) };
        assert!(user.may_join("general"));
        assert!(user.may_join("team-7:design"));
        assert!(!user.may_join("team-8:design"));
        assert!(!user.may_join("general2"));
        assert!(Identity::anonymous("a".into()).may_join("anything"));
        assert_eq!(Identity::anonymous("127.0.0.1:5000".into()).retry_origin(), "127.0.0.1");
        assert_eq!(Identity::anonymous("[::1]:5000".into()).retry_origin(), "[::1]");
        assert_eq!(user.retry_origin(), "u");
        let nobody = Identity { name: "n".into(), rooms: Some(Box::default()) };
        assert!(!nobody.may_join("general"));
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
