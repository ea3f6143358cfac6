//! A browser-like hub client, for `idle --browser`: it offers
//! permessage-deflate as Chromium does, joins a room of its own, sends one
//! chat message long enough to be compressed, waits for it to come back,
//! and then has nothing more to say. Its zlib state lives only for that
//! exchange, so ten thousand of them cost the generator little.

use crate::wire::{CLOSE, Conn, Frame, Reader, close_reason};
use bytes::{Bytes, BytesMut};
use serde_json::json;
use std::cell::Cell;
use tokio::io::AsyncWriteExt;
use ws_benches::Failure;
use ws_proto::deflate::{Compressor, Inflater};
use ws_proto::frame::{OpCode, RSV1};
use ws_proto::{DeflateConfig, DeflateParams, Role};

/// Chromium's `Sec-WebSocket-Extensions` offer, word for word.
pub(crate) const CHROMIUM_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// Characters of the chat message's content: past the 128-byte threshold
/// from which ws-server (and the default [`DeflateConfig`]) compresses.
const CONTENT_LEN: usize = 200;

/// The largest message a browser-like client inflates.
const MAX_MESSAGE: usize = 1 << 20;

/// What the exchanges of a run have come to.
#[derive(Default)]
pub(crate) struct Tally {
    /// Clients told they joined their room.
    pub(crate) joined: Cell<usize>,
    /// Clients whose message came back.
    pub(crate) done: Cell<usize>,
    /// Of those, the ones that negotiated permessage-deflate.
    pub(crate) deflated: Cell<usize>,
    /// Of those, the ones whose message came back compressed (RSV1).
    pub(crate) compressed_echoes: Cell<usize>,
}

/// The one exchange of client `n`: join `browser-n`, send a message, read
/// it back; then the connection's reading half, for the idle wait.
pub(crate) async fn exchange(mut conn: Conn, n: usize, tally: &Tally) -> Result<Reader, Failure> {
    let room = format!("browser-{n}");
    let mut codec = conn.deflate.map(Codec::new);
    let join = json!({"type": "join", "room": room}).to_string();
    conn.writer.write_all(&codec_frame(&mut codec, &join)).await?;
    let quoted = format!("\"{room}\"");
    next_text(&mut conn.reader, &mut codec, |text| text.contains("\"joined\"") && text.contains(&quoted)).await?;
    tally.joined.set(tally.joined.get() + 1);
    let content = chat_content(n);
    let message = json!({"type": "message", "room": room, "content": content, "id": "1"}).to_string();
    conn.writer.write_all(&codec_frame(&mut codec, &message)).await?;
    let compressed = next_text(&mut conn.reader, &mut codec, |text| {
        text.contains("\"type\":\"message\"") && text.contains(&content)
    })
    .await?;
    tally.done.set(tally.done.get() + 1);
    tally.deflated.set(tally.deflated.get() + usize::from(codec.is_some()));
    tally.compressed_echoes.set(tally.compressed_echoes.get() + usize::from(compressed));
    Ok(conn.into_reader())
}

/// Chat-like text of `CONTENT_LEN` characters, its own for client `n`.
fn chat_content(n: usize) -> String {
    let mut content = format!("client {n} says: ");
    while content.len() < CONTENT_LEN {
        content.push_str("the quick brown fox jumps over the lazy dog, ");
    }
    content.truncate(CONTENT_LEN);
    content
}

/// Both directions of permessage-deflate, as agreed.
struct Codec {
    compressor: Compressor,
    inflater: Inflater,
}

impl Codec {
    fn new(params: DeflateParams) -> Codec {
        let config = DeflateConfig::default();
        Codec {
            compressor: Compressor::new(Role::Client, &params, &config),
            inflater: Inflater::new(Role::Client, &params),
        }
    }
}

/// `text` as a client frame, compressed where deflate was agreed and the text is long enough.
fn codec_frame(codec: &mut Option<Codec>, text: &str) -> Bytes {
    match codec {
        Some(codec) if codec.compressor.wants(text.len()) => {
            crate::wire::client_frame_with(OpCode::Text, RSV1, &codec.compressor.compress(text.as_bytes()))
        }
        _ => crate::wire::client_frame_with(OpCode::Text, 0, text.as_bytes()),
    }
}

/// Reads text messages until one that `wanted` holds of; whether it came
/// compressed. An error envelope fails the client.
async fn next_text(
    reader: &mut Reader,
    codec: &mut Option<Codec>,
    wanted: impl Fn(&str) -> bool,
) -> Result<bool, Failure> {
    loop {
        let frame = reader.frame().await?;
        if frame.opcode == CLOSE {
            return Err(close_reason(&frame).into());
        }
        if !frame.is_data() {
            continue;
        }
        let payload = payload(&frame, codec)?;
        let text = std::str::from_utf8(&payload)?;
        if text.contains("\"type\":\"error\"") {
            return Err(format!("the hub refused: {text}").into());
        }
        if wanted(text) {
            return Ok(frame.compressed);
        }
    }
}

/// A frame's payload, inflated if it came compressed.
fn payload(frame: &Frame, codec: &mut Option<Codec>) -> Result<Bytes, Failure> {
    if !frame.compressed {
        return Ok(frame.payload.clone());
    }
    let codec = codec.as_mut().ok_or("a compressed frame without permessage-deflate")?;
    let mut out = BytesMut::new();
    codec.inflater.inflate(&frame.payload, &mut out, MAX_MESSAGE)?;
    codec.inflater.finish(&mut out, MAX_MESSAGE)?;
    Ok(out.freeze())
}
