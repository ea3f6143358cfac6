//! permessage-deflate, RFC 7692: negotiation (sections 5-7) and the codec
//! (section 7.2): a compressed message has RSV1 on its first frame, and its
//! payload is raw DEFLATE ended by a sync flush whose `00 00 ff ff` tail is
//! left off on the wire and put back by the receiver.
//!
//! The codec is zlib-rs, zlib in Rust, used directly for its memory level.
//! zlib cannot compress with an 8-bit window, so an end that agreed to
//! window bits 8 for its own messages sends them uncompressed, which the
//! extension allows; it inflates with at least 9 bits, which reads any
//! stream made with a smaller window. Inflation is bounded as it streams by
//! the message limit. A compressor or decompressor exists only once a message
//! needs it; one whose context is not kept is lent by a per-thread pool
//! ([`pool`]) for the length of one message and given back after it, so an
//! idle connection holds no zlib state.

mod pool;

use crate::handshake::ExtensionOffer;
use crate::{Error, Role};
use bytes::{Bytes, BytesMut};
use std::fmt::{self, Write};
use zlib_rs::{DeflateFlush, InflateFlush, Status};

/// The extension's token.
pub const NAME: &str = "permessage-deflate";
/// What a sync flush ends with; left off on the wire (section 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One end's settings for permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateConfig {
    /// zlib compression level, 0 (none) to 9 (best).
    pub level: u8,
    /// The most window bits (8-15) this end compresses with: memory and ratio
    /// grow with it. 8 means this end sends uncompressed.
    pub window_bits: u8,
    /// The most window bits (8-15) the peer may compress with, asked of it when
    /// it supports the parameter: it bounds the memory this end inflates with.
    pub peer_window_bits: u8,
    /// This end resets its compression context after each message: every
    /// message stands alone, and a server can compress a broadcast once for all.
    pub no_context_takeover: bool,
    /// Ask the peer to reset its context after each message, so this end can
    /// drop its decompressor between messages.
    pub peer_no_context_takeover: bool,
    /// zlib's memory level, 1 to 9: the size of its match buffers. A
    /// compressor holds `2^(window_bits + 2) + 7 * 2^(memory_level + 6)`
    /// bytes and a 128 KiB hash table; lower levels save memory for speed and ratio.
    pub memory_level: u8,
    /// Messages shorter than this are sent uncompressed.
    pub threshold: usize,
}

impl Default for DeflateConfig {
    /// Level 6, memory level 8, 15-bit windows both ways, contexts kept, 128-byte threshold.
    fn default() -> Self {
        DeflateConfig {
            level: 6,
            memory_level: 8,
            window_bits: 15,
            peer_window_bits: 15,
            no_context_takeover: false,
            peer_no_context_takeover: false,
            threshold: 128,
        }
    }
}

/// The agreed parameters, as the negotiation response states them (section 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its context after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its context after each message.
    pub client_no_context_takeover: bool,
    /// The largest window the server compresses with.
    pub server_max_window_bits: u8,
    /// The largest window the client compresses with.
    pub client_max_window_bits: u8,
}

/// The parameters of one offer or response, each at most once (section 7.1).
#[derive(Debug, Default)]
struct Parameters {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: the parameter without a value, allowed in an offer only.
    client_max_window_bits: Option<Option<u8>>,
}

impl Parameters {
    /// Parses the parameters; `None` for an unknown, repeated or invalid one.
    fn parse(ext: &ExtensionOffer) -> Option<Parameters> {
        let mut p = Parameters::default();
        for (name, value) in &ext.params {
            let value = value.as_deref();
            match name.as_str() {
                "server_no_context_takeover" if value.is_none() && !p.server_no_context_takeover => {
                    p.server_no_context_takeover = true
                }
                "client_no_context_takeover" if value.is_none() && !p.client_no_context_takeover => {
                    p.client_no_context_takeover = true
                }
                "server_max_window_bits" if p.server_max_window_bits.is_none() => {
                    p.server_max_window_bits = Some(window_bits(value?)?)
                }
                "client_max_window_bits" if p.client_max_window_bits.is_none() => {
                    p.client_max_window_bits = Some(value.map(window_bits).map_or(Some(None), |bits| bits.map(Some))?)
                }
                _ => return None,
            }
        }
        Some(p)
    }
}

/// A window size in bits: 8 to 15, in decimal without leading zeros (section 7.1.2).
fn window_bits(value: &str) -> Option<u8> {
    let bits: u8 = value.parse().ok()?;
    ((8..=15).contains(&bits) && !value.starts_with('0')).then_some(bits)
}

impl DeflateConfig {
    /// The server's side: accepts the first acceptable `permessage-deflate`
    /// offer (section 5.1) and returns the agreed parameters with the
    /// response's `Sec-WebSocket-Extensions` value. Offers with unknown,
    /// repeated or invalid parameters are declined; none acceptable, `None`.
    pub fn accept_offer(&self, offers: &[ExtensionOffer]) -> Option<(DeflateParams, String)> {
        offers.iter().filter(|o| o.name == NAME).find_map(|offer| {
            let asked = Parameters::parse(offer)?;
            let params = DeflateParams {
                server_no_context_takeover: asked.server_no_context_takeover || self.no_context_takeover,
                client_no_context_takeover: asked.client_no_context_takeover || self.peer_no_context_takeover,
                server_max_window_bits: self.window_bits.min(asked.server_max_window_bits.unwrap_or(15)),
                client_max_window_bits: match asked.client_max_window_bits {
                    Some(limit) => self.peer_window_bits.min(limit.unwrap_or(15)),
                    None => 15,
                },
            };
            let mut response = NAME.to_owned();
            if params.server_no_context_takeover {
                response.push_str("; server_no_context_takeover");
            }
            if params.client_no_context_takeover {
                response.push_str("; client_no_context_takeover");
            }
            if asked.server_max_window_bits.is_some() || params.server_max_window_bits < 15 {
                let _ = write!(response, "; server_max_window_bits={}", params.server_max_window_bits);
            }
            if asked.client_max_window_bits.is_some() {
                let _ = write!(response, "; client_max_window_bits={}", params.client_max_window_bits);
            }
            Some((params, response))
        })
    }

    /// The client's side: the offer to send in `Sec-WebSocket-Extensions`.
    pub fn offer(&self) -> String {
        let mut offer = NAME.to_owned();
        if self.no_context_takeover {
            offer.push_str("; client_no_context_takeover");
        }
        if self.peer_no_context_takeover {
            offer.push_str("; server_no_context_takeover");
        }
        if self.peer_window_bits < 15 {
            let _ = write!(offer, "; server_max_window_bits={}", self.peer_window_bits);
        }
        offer.push_str("; client_max_window_bits");
        if self.window_bits < 15 {
            let _ = write!(offer, "={}", self.window_bits);
        }
        offer
    }

    /// The client's side: checks the server's response against [`offer`](Self::offer)
    /// (section 7.1) and returns the agreed parameters.
    pub fn accept_response(&self, response: &ExtensionOffer) -> Result<DeflateParams, Error> {
        let bad = |what| Err(Error::BadResponse(what));
        let Some(answer) = Parameters::parse(response).filter(|_| response.name == NAME) else {
            return bad("malformed permessage-deflate response");
        };
        let server_bits = answer.server_max_window_bits.unwrap_or(15);
        if server_bits > self.peer_window_bits || (self.peer_no_context_takeover && !answer.server_no_context_takeover)
        {
            return bad("permessage-deflate response ignores the offer");
        }
        let client_bits = match answer.client_max_window_bits {
            None => 15,
            Some(Some(bits)) => bits,
            Some(None) => return bad("client_max_window_bits without a value"),
        };
        Ok(DeflateParams {
            server_no_context_takeover: answer.server_no_context_takeover,
            client_no_context_takeover: answer.client_no_context_takeover || self.no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits.min(self.window_bits),
        })
    }
}

impl DeflateParams {
    /// The window bits and context reset of what `role` sends, then of what it receives.
    fn sides(&self, role: Role) -> ((u8, bool), (u8, bool)) {
        let server = (self.server_max_window_bits, self.server_no_context_takeover);
        let client = (self.client_max_window_bits, self.client_no_context_takeover);
        match role {
            Role::Server => (server, client),
            Role::Client => (client, server),
        }
    }
}

/// Compresses the messages one end sends.
pub struct Compressor {
    config: zlib_rs::DeflateConfig,
    reset: bool,
    threshold: usize,
    /// The context kept from message to message; never set when it is reset.
    /// Boxed: an idle connection keeps only the pointer.
    state: Option<Box<zlib_rs::Deflate>>,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor").field("config", &self.config).field("reset", &self.reset).finish_non_exhaustive()
    }
}

impl Compressor {
    /// The compressor of `role` for the agreed `params`.
    pub fn new(role: Role, params: &DeflateParams, config: &DeflateConfig) -> Self {
        let ((window_bits, reset), _) = params.sides(role);
        let config_of_zlib = zlib_rs::DeflateConfig {
            level: config.level.min(9).into(),
            // Negative: raw DEFLATE, no zlib header.
            window_bits: -i32::from(window_bits.clamp(9, 15)),
            mem_level: config.memory_level.clamp(1, 9).into(),
            ..zlib_rs::DeflateConfig::default()
        };
        Compressor {
            config: config_of_zlib,
            reset: reset || config.no_context_takeover,
            threshold: if window_bits >= 9 { config.threshold } else { usize::MAX },
            state: None,
        }
    }

    /// Whether a payload of `len` bytes is sent compressed.
    pub fn wants(&self, len: usize) -> bool {
        len >= self.threshold
    }

    /// Whether each message is compressed on its own, so that the bytes
    /// serve any peer that agreed to these window bits or more.
    pub fn stands_alone(&self) -> bool {
        self.reset
    }

    /// The window bits it compresses with.
    pub fn window_bits(&self) -> u8 {
        self.config.window_bits.unsigned_abs() as u8
    }

    /// Compresses one message's payload, without the `00 00 ff ff` tail.
    pub fn compress(&mut self, payload: &[u8]) -> Bytes {
        let config = self.config;
        if self.reset {
            let mut state = pool::take_deflate(config);
            let out = deflate(&mut state, payload);
            pool::give_deflate(config, state);
            return out;
        }
        deflate(self.state.get_or_insert_with(|| pool::take_deflate(config)), payload)
    }
}

/// Compresses one message's payload with `state`, ending it with a sync
/// flush whose tail is left off.
fn deflate(state: &mut zlib_rs::Deflate, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() / 2 + 64);
    let mut input = payload;
    loop {
        let start = out.len();
        out.resize(start + (input.len() + 64).min(64 << 10), 0);
        let (before_in, before_out) = (state.total_in(), state.total_out());
        // Compressing into a buffer cannot fail: the stream is ours and well-formed.
        let _ = state.compress(input, &mut out[start..], DeflateFlush::SyncFlush);
        input = &input[(state.total_in() - before_in) as usize..];
        let produced = (state.total_out() - before_out) as usize;
        let full = produced == out.len() - start;
        out.truncate(start + produced);
        if input.is_empty() && !full {
            break;
        }
    }
    debug_assert!(out.ends_with(&TAIL));
    out.truncate(out.len().saturating_sub(TAIL.len()));
    out.freeze()
}

/// Inflates the compressed messages one end receives, bounded as it streams.
pub struct Inflater {
    reset: bool,
    /// The state of the message being received, and between messages the
    /// context kept, if it is. Boxed: an idle connection keeps only the pointer.
    state: Option<Box<zlib_rs::Inflate>>,
    /// The stream ended with a final block: what else the message holds is ignored.
    ended: bool,
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater").field("reset", &self.reset).finish_non_exhaustive()
    }
}

impl Inflater {
    /// The inflater of `role` for the agreed `params`. It inflates with a
    /// 15-bit window, which reads a stream made with any window the peer
    /// agreed to (zlib-rs allocates the full window whatever the bits).
    pub fn new(role: Role, params: &DeflateParams) -> Self {
        let (_, (_, reset)) = params.sides(role);
        Inflater { reset, state: None, ended: false }
    }

    /// Inflates the next compressed bytes of a message onto `out`, which may
    /// not grow past `limit`: more is [`Error::MessageTooLarge`], found before
    /// more than a small chunk past the limit is allocated.
    pub fn inflate(&mut self, input: &[u8], out: &mut BytesMut, limit: usize) -> Result<(), Error> {
        self.run(input, out, limit, InflateFlush::NoFlush)
    }

    /// Ends a message: inflates the `00 00 ff ff` tail, then gives the
    /// context back to the pool if it is not kept.
    pub fn finish(&mut self, out: &mut BytesMut, limit: usize) -> Result<(), Error> {
        let result = self.run(&TAIL, out, limit, InflateFlush::SyncFlush);
        if self.reset || self.ended {
            // A stream that failed is freed, not lent again.
            if let Some(state) = self.state.take().filter(|_| result.is_ok()) {
                pool::give_inflate(state);
            }
            self.ended = false;
        }
        result
    }

    fn run(&mut self, mut input: &[u8], out: &mut BytesMut, limit: usize, flush: InflateFlush) -> Result<(), Error> {
        let state = self.state.get_or_insert_with(pool::take_inflate);
        while !self.ended {
            let start = out.len();
            let room = (input.len() * 4).clamp(1 << 10, 64 << 10).min(limit.saturating_sub(start) + 1);
            out.resize(start + room, 0);
            let (before_in, before_out) = (state.total_in(), state.total_out());
            let status = state.decompress(input, &mut out[start..], flush);
            let produced = (state.total_out() - before_out) as usize;
            out.truncate(start + produced);
            let status = status.map_err(|_| Error::InvalidCompressedData)?;
            if out.len() > limit {
                return Err(Error::MessageTooLarge { size: out.len() as u64, limit });
            }
            input = &input[(state.total_in() - before_in) as usize..];
            self.ended = status == Status::StreamEnd;
            if (input.is_empty() && produced < room) || (produced == 0 && status == Status::BufError) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{FrameHeader, RSV1};
    use crate::{Config, Connection, Event, Message, SharedMessage};

    fn offers(value: &str) -> Vec<ExtensionOffer> {
        ExtensionOffer::parse_list(value).unwrap()
    }

    fn accept(config: &DeflateConfig, offer: &str) -> Option<String> {
        config.accept_offer(&offers(offer)).map(|(_, response)| response)
    }

    #[test]
    fn server_negotiation_table() {
        let default = DeflateConfig::default();
        let cases: &[(&str, Option<&str>)] = &[
            ("permessage-deflate", Some("permessage-deflate")),
            ("permessage-deflate; client_max_window_bits", Some("permessage-deflate; client_max_window_bits=15")),
            ("permessage-deflate; client_max_window_bits=10", Some("permessage-deflate; client_max_window_bits=10")),
            ("permessage-deflate; server_max_window_bits=9", Some("permessage-deflate; server_max_window_bits=9")),
            ("permessage-deflate; server_max_window_bits=8", Some("permessage-deflate; server_max_window_bits=8")),
            (
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
                Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
            ),
            // Declined: unknown, repeated, valueless or invalid parameters.
            ("permessage-deflate; foo", None),
            ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
            ("permessage-deflate; server_no_context_takeover=1", None),
            ("permessage-deflate; server_max_window_bits", None),
            ("permessage-deflate; server_max_window_bits=7", None),
            ("permessage-deflate; server_max_window_bits=16", None),
            ("permessage-deflate; server_max_window_bits=010", None),
            ("permessage-deflate; client_max_window_bits=0x9", None),
            ("permessage-deflate; client_max_window_bits=9; client_max_window_bits=9", None),
            ("x-webkit-deflate-frame", None),
            // The first acceptable offer wins.
            (
                "permessage-deflate; foo, permessage-deflate; server_max_window_bits=12",
                Some("permessage-deflate; server_max_window_bits=12"),
            ),
            ("x-other, permessage-deflate, permessage-deflate; server_no_context_takeover", Some("permessage-deflate")),
        ];
        for (offer, expected) in cases {
            assert_eq!(accept(&default, offer).as_deref(), *expected, "offer {offer:?}");
        }
    }

    #[test]
    fn server_settings_shape_the_answer() {
        let config = DeflateConfig {
            window_bits: 10,
            peer_window_bits: 9,
            no_context_takeover: true,
            peer_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let (params, response) = config.accept_offer(&offers("permessage-deflate; client_max_window_bits")).unwrap();
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=9"
        );
        assert_eq!(
            params,
            DeflateParams {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                server_max_window_bits: 10,
                client_max_window_bits: 9
            }
        );
        // A client that cannot take client_max_window_bits keeps its full window.
        let (params, response) = config.accept_offer(&offers("permessage-deflate")).unwrap();
        assert_eq!(params.client_max_window_bits, 15);
        assert!(!response.contains("client_max_window_bits"));
    }

    #[test]
    fn client_offer_and_response_table() {
        let config = DeflateConfig { peer_window_bits: 12, peer_no_context_takeover: true, ..DeflateConfig::default() };
        assert_eq!(
            config.offer(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; client_max_window_bits"
        );
        let response = |value: &str| config.accept_response(&offers(value)[0]);
        let params = response(
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9",
        )
        .unwrap();
        assert_eq!((params.server_max_window_bits, params.client_max_window_bits), (10, 9));
        for bad in [
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=13",
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; bogus",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ] {
            assert!(matches!(response(bad), Err(Error::BadResponse(_))), "{bad:?}");
        }
        let plain = DeflateConfig::default();
        let params = plain.accept_response(&offers("permessage-deflate")[0]).unwrap();
        assert_eq!((params.server_max_window_bits, params.client_max_window_bits), (15, 15));
    }

    /// A client and a server negotiate from the client's offer, as the handshake would.
    fn pair(client: &DeflateConfig, server: &DeflateConfig, limit: usize) -> (Connection, Connection) {
        let (params, response) = server.accept_offer(&offers(&client.offer())).unwrap();
        let client_params = client.accept_response(&offers(&response)[0]).unwrap();
        let config = Config { max_message_size: limit, ..Config::default() };
        (
            Connection::new(Role::Client, config).with_deflate(&client_params, client),
            Connection::new(Role::Server, config).with_deflate(&params, server),
        )
    }

    fn wire(conn: &mut Connection) -> Vec<u8> {
        let mut slices = [std::io::IoSlice::new(&[]); 64];
        let n = conn.output().io_slices(&mut slices);
        let bytes: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        conn.output_mut().advance(bytes.len());
        bytes
    }

    fn receive(conn: &mut Connection, mut input: &[u8]) -> Result<Vec<Event>, Error> {
        let mut events = Vec::new();
        while !input.is_empty() {
            let (used, event) = conn.receive(input)?;
            input = &input[used..];
            events.extend(event);
        }
        Ok(events)
    }

    fn sample(i: usize) -> Message {
        Message::from(format!("message {i}: {}", "the quick brown fox jumps over the lazy dog ".repeat(i % 7 + 3)))
    }

    #[test]
    fn round_trips_for_every_window_memory_level_and_context_setting() {
        for bits in 8..=15 {
            for reset in [false, true] {
                let config = DeflateConfig {
                    window_bits: bits,
                    peer_window_bits: bits,
                    no_context_takeover: reset,
                    peer_no_context_takeover: reset,
                    // Memory levels 2 to 9 along the way.
                    memory_level: bits - 6,
                    threshold: 0,
                    ..DeflateConfig::default()
                };
                let (mut client, mut server) = pair(&config, &config, 1 << 20);
                let messages: Vec<Message> = (0..20).map(sample).collect();
                for (i, m) in messages.iter().enumerate() {
                    client.send_fragmented(m, 1 + i * 3).unwrap();
                    server.send(m).unwrap();
                }
                let to_server = wire(&mut client);
                let to_client = wire(&mut server);
                let plain: usize = messages.iter().map(|m| m.payload().len()).sum();
                if bits > 8 {
                    assert!(to_server.len() < plain / 2, "bits {bits}: {} of {plain}", to_server.len());
                    assert_eq!(to_server[0] & 0x40, 0x40, "RSV1 on the first frame");
                } else {
                    assert_eq!(to_server[0] & 0x40, 0, "8 bits: sent uncompressed");
                }
                let expected: Vec<Event> = messages.into_iter().map(Event::Message).collect();
                assert_eq!(receive(&mut server, &to_server).unwrap(), expected, "bits {bits} reset {reset}");
                assert_eq!(receive(&mut client, &to_client).unwrap(), expected, "bits {bits} reset {reset}");
            }
        }
    }

    #[test]
    fn a_message_split_across_many_frames_and_reads() {
        let config = DeflateConfig { threshold: 0, ..DeflateConfig::default() };
        let (mut client, mut server) = pair(&config, &config, 1 << 24);
        let text: String = (0..200_000).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        client.send_fragmented(&Message::from(text.clone()), 100).unwrap();
        let bytes = wire(&mut client);
        let mut events = Vec::new();
        for read in bytes.chunks(37) {
            events.extend(receive(&mut server, read).unwrap());
        }
        assert_eq!(events, [Event::Message(Message::from(text))]);
    }

    #[test]
    fn messages_split_across_frames_on_interleaved_connections_borrow_from_one_pool() {
        let config = DeflateConfig {
            threshold: 0,
            no_context_takeover: true,
            peer_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let (mut client_a, mut server_a) = pair(&config, &config, 1 << 20);
        let (mut client_b, mut server_b) = pair(&config, &config, 1 << 20);
        for round in 0..3 {
            let words = |seed: usize| (0..600).map(|i| format!("{} ", (i * 7919 + seed) % 1009)).collect::<String>();
            let (a, b) = (Message::from(words(round)), Message::from(words(round + 100)));
            client_a.send_fragmented(&a, 300).unwrap();
            client_b.send_fragmented(&b, 200).unwrap();
            assert_eq!(pool::kept().0, 1, "one compressor serves both clients, given back after each message");
            let (wire_a, wire_b) = (wire(&mut client_a), wire(&mut client_b));
            assert!(wire_a.len().min(wire_b.len()) > 4 * 97, "several reads each: {} {}", wire_a.len(), wire_b.len());
            let mut events = (Vec::new(), Vec::new());
            let mut reads = (wire_a.chunks(97), wire_b.chunks(97));
            for i in 0.. {
                let (next_a, next_b) = (reads.0.next(), reads.1.next());
                if next_a.is_none() && next_b.is_none() {
                    break;
                }
                events.0.extend(next_a.map(|read| receive(&mut server_a, read).unwrap()).into_iter().flatten());
                events.1.extend(next_b.map(|read| receive(&mut server_b, read).unwrap()).into_iter().flatten());
                if i == 1 {
                    // Both messages in flight: each server holds a decompressor,
                    // taken from the pool after the first round.
                    assert_eq!(pool::kept().1, 0, "round {round}");
                }
            }
            assert_eq!(events, (vec![Event::Message(a)], vec![Event::Message(b)]), "round {round}");
            assert_eq!(pool::kept(), (1, 2), "both decompressors back after round {round}");
        }
    }

    #[test]
    fn a_kept_context_is_not_lent() {
        let config = DeflateConfig { threshold: 0, ..DeflateConfig::default() };
        let (mut client, mut server) = pair(&config, &config, 1 << 20);
        let message = Message::from("context kept from message to message ".repeat(10));
        for _ in 0..3 {
            client.send(&message).unwrap();
            assert_eq!(receive(&mut server, &wire(&mut client)).unwrap(), [Event::Message(message.clone())]);
        }
        assert_eq!(pool::kept(), (0, 0));
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit() {
        let config = DeflateConfig { threshold: 0, ..DeflateConfig::default() };
        let (mut client, _) = pair(&config, &config, 1 << 24);
        client.send(&Message::Binary(vec![0; 4 << 20].into())).unwrap();
        let bomb = wire(&mut client);
        assert!(bomb.len() < 8 << 10, "4 MiB of zeros compress to {} bytes", bomb.len());
        let (_, mut server) = pair(&config, &config, 64 << 10);
        let error = receive(&mut server, &bomb).unwrap_err();
        assert_eq!(error.close_code(), Some(crate::CloseCode::MESSAGE_TOO_BIG));
        assert!(server.buffered_capacity() <= 192 << 10, "{}", server.buffered_capacity());

        // A single 1 KiB frame that inflates past the limit.
        let (mut client, _) = pair(&config, &config, 1 << 24);
        client.send(&Message::Binary(vec![b'x'; 1_000_000].into())).unwrap();
        let frame = wire(&mut client);
        assert!(frame.len() <= 1 << 10, "{}", frame.len());
        let (_, mut server) = pair(&config, &config, 512 << 10);
        assert!(matches!(receive(&mut server, &frame), Err(Error::MessageTooLarge { .. })));
    }

    #[test]
    fn rsv1_rules_and_corrupt_data() {
        let config = DeflateConfig { threshold: 0, ..DeflateConfig::default() };
        let (mut client, _) = pair(&config, &config, 1 << 20);
        client.send_fragmented(&Message::from("compressed in two frames".repeat(4)), 10).unwrap();
        let mut bytes = wire(&mut client);
        let second = 2 + 4 + 10;
        bytes[second] |= 0x40; // RSV1 on a continuation
        let (_, mut server) = pair(&config, &config, 1 << 20);
        assert!(matches!(receive(&mut server, &bytes), Err(Error::ReservedBits(_))));

        let mut plain = Connection::new(Role::Server, Config::default());
        let (mut client, _) = pair(&config, &config, 1 << 20);
        client.send(&Message::from("hello hello hello")).unwrap();
        assert!(matches!(receive(&mut plain, &wire(&mut client)), Err(Error::ReservedBits(_))), "not negotiated");

        let (mut client, mut server) = pair(&config, &config, 1 << 20);
        client.ping(b"").unwrap();
        let mut ping = wire(&mut client);
        ping[0] |= 0x40;
        assert!(
            matches!(receive(&mut server, &ping), Err(Error::ReservedBits(_))),
            "control frames are never compressed"
        );

        let (mut client, mut server) = pair(&config, &config, 1 << 20);
        client.send(&Message::Binary(vec![1; 100].into())).unwrap();
        let mut bytes = wire(&mut client);
        let masked_first = bytes[6] ^ bytes[2];
        bytes[6] = (masked_first | 0b110) ^ bytes[2]; // BTYPE 11: reserved, invalid
        let error = receive(&mut server, &bytes).unwrap_err();
        assert_eq!(error, Error::InvalidCompressedData);
        assert_eq!(error.close_code(), Some(crate::CloseCode::INVALID_PAYLOAD));
    }

    #[test]
    fn invalid_utf8_inside_compressed_text_fails_with_1007() {
        let config = DeflateConfig { threshold: 0, ..DeflateConfig::default() };
        let (_, mut server) = pair(&config, &config, 1 << 20);
        let mut compressor = Compressor::new(
            Role::Client,
            &DeflateParams {
                server_no_context_takeover: false,
                client_no_context_takeover: false,
                server_max_window_bits: 15,
                client_max_window_bits: 15,
            },
            &config,
        );
        let payload = compressor.compress(b"valid, then \xed\xa0\x80");
        let header =
            FrameHeader { fin: true, rsv: RSV1, opcode: crate::OpCode::Text, mask: Some([1, 2, 3, 4]), payload_len: 0 };
        let mut bytes = BytesMut::new();
        crate::frame::encode_frame(header, &payload, &mut bytes);
        assert_eq!(receive(&mut server, &bytes), Err(Error::InvalidUtf8));
    }

    #[test]
    fn a_shared_broadcast_frame_decodes_at_every_client() {
        let broadcast =
            DeflateConfig { window_bits: 12, no_context_takeover: true, threshold: 64, ..DeflateConfig::default() };
        let message = Message::from("a broadcast to the whole room, compressed once ".repeat(20));
        let shared = SharedMessage::new(&message, Some(&broadcast));
        let clients = [
            DeflateConfig::default(),
            DeflateConfig { peer_window_bits: 12, ..DeflateConfig::default() },
            DeflateConfig { peer_window_bits: 10, ..DeflateConfig::default() },
        ];
        let mut compressed_frames = Vec::new();
        for client_config in clients {
            let (mut client, mut server) = pair(&client_config, &broadcast, 1 << 20);
            for _ in 0..3 {
                server.send_shared(&shared).unwrap();
                server.send(&Message::from("a direct message after the broadcast ".repeat(5))).unwrap();
            }
            let bytes = wire(&mut server);
            compressed_frames.push(bytes[0] & 0x40 != 0);
            let events = receive(&mut client, &bytes).unwrap();
            assert_eq!(events.len(), 6);
            assert_eq!(events[0], Event::Message(message.clone()));
            assert_eq!(events[4], Event::Message(message.clone()));
        }
        // Windows of 15 and 12 take the shared compressed frame; a 10-bit window gets the plain one.
        assert_eq!(compressed_frames, [true, true, false]);
    }
}
