//! The HTTP API for other services: `POST /api/publish` with the key of
//! `--api-key` as `Authorization: Bearer KEY` and, as its body, the envelope
//! a client would send, `{"type":"message","room":...,"content":...,"id":...}`.
//! The message takes the hub's own path: the next seq of its room, the
//! history, every member; a repeated `id` is a retry (docs/protocol.md).
//! The answer is `200 {"type":"ack","seq":N}` (with the `id` if one was
//! given), or an error envelope with the HTTP status that fits.

use crate::envelope::{self, EnvelopeError, Outgoing};
use crate::server::Server;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;
use ws_proto::handshake::server::{Request, http_response};
use ws_tokio::server::Handshake;

/// The sender of the messages published through the API.
pub(super) const SENDER: &str = "api";

const JSON: &str = "application/json";

/// Answers one `/api/publish` request.
pub(super) async fn publish<S: AsyncRead + AsyncWrite + Unpin>(
    mut handshake: Handshake<S>,
    server: &Server,
) -> Result<(), ws_tokio::Error> {
    let (status, body) = match admit(handshake.request(), server) {
        Err(refusal) => refusal,
        Ok(len) => {
            let body = handshake.read_body(len).await?;
            match publish_body(&body, server).await {
                Ok(ack) => (200, ack),
                Err((status, error)) => (status, error.to_json()),
            }
        }
    };
    handshake.respond(&http_response(status, "", JSON, body.as_bytes())).await
}

/// Checks the method, the key and the length: the body's length, or the status and error to answer.
fn admit(request: &Request, server: &Server) -> Result<usize, (u16, String)> {
    let refuse = |status, code, message: &str| Err((status, EnvelopeError::new(code, message).to_json()));
    if request.method != "POST" {
        return refuse(405, "method_not_allowed", "POST an envelope to /api/publish");
    }
    let Some(key) = &server.config.api_key else {
        return refuse(403, "forbidden", "the publish API is off: the server has no --api-key");
    };
    let given = request.headers.get("authorization").and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes())) {
        return refuse(401, "unauthorized", "send the API key as Authorization: Bearer KEY");
    }
    let Some(len) = request.headers.get("content-length").and_then(|v| v.trim().parse::<usize>().ok()) else {
        return refuse(411, "missing_field", "the request needs a Content-Length");
    };
    let max = server.config.max_message_size;
    if len > max {
        return refuse(413, "too_long", &format!("the body has {len} bytes, more than {max}"));
    }
    Ok(len)
}

/// Publishes the envelope in `body`; the ack to answer, or the status and error.
async fn publish_body(body: &[u8], server: &Server) -> Result<String, (u16, EnvelopeError)> {
    let text = std::str::from_utf8(body).map_err(|_| (400, EnvelopeError::new("invalid_json", "not UTF-8")))?;
    let envelope = envelope::parse(text).map_err(|e| (400, e))?;
    let envelope::Request::Message { room, body } = envelope.request else {
        return Err((400, EnvelopeError::new("unknown_type", "the API publishes messages only").about(envelope.id)));
    };
    let namespace = server.namespaces.of(&room).map_err(|e| (404, e.about(envelope.id.clone())))?;
    body.check(&namespace.limits).map_err(|e| (400, e.about(envelope.id.clone())))?;
    let client_id = envelope.id.as_deref().map(|id| (SENDER, id));
    let seq = server.publish(&room, SENDER, body, client_id).wait().await;
    let seq = seq.map_err(|e| (503, e.about(envelope.id.clone())))?;
    info!(room, seq, "published through the API");
    Ok(Outgoing::Ack { id: envelope.id.as_deref(), seq }.to_json())
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guessed key was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
