//! Hot paths of ws-proto, each beside what peers do with the same input:
//! masking (fastwebsockets, the naive loop), UTF-8 validation (std,
//! simdutf8), frame headers, a server connection decoding messages
//! (tungstenite reading the same bytes from memory), and the opening
//! handshake.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use ws_proto::frame::{FrameHeader, OpCode};
use ws_proto::handshake::server::{Request, Upgrade};
use ws_proto::{Config, Connection, DeflateConfig, Role, Utf8Validator, apply_mask};

fn naive_mask(buf: &mut [u8], key: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_mask");
    for size in [1 << 10, 64 << 10, 1 << 20] {
        let mut buf = vec![0x5a_u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("ws-proto", size), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 1))
        });
        group.bench_with_input(BenchmarkId::new("fastwebsockets", size), &size, |b, _| {
            b.iter(|| fastwebsockets::unmask(black_box(&mut buf), [1, 2, 3, 4]))
        });
        group.bench_with_input(BenchmarkId::new("naive", size), &size, |b, _| {
            b.iter(|| naive_mask(black_box(&mut buf), [1, 2, 3, 4]))
        });
    }
    group.finish();
}

fn utf8(c: &mut Criterion) {
    let mut group = c.benchmark_group("utf8");
    for (name, text) in [("ascii", ws_benches::json_text(64 << 10, 1)), ("mixed", mixed_text(64 << 10))] {
        let bytes = text.as_bytes();
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("ws-proto", name), bytes, |b, bytes| {
            b.iter(|| {
                let mut validator = Utf8Validator::default();
                validator.feed(black_box(bytes)).expect("valid");
                validator.finish().expect("complete")
            })
        });
        group.bench_with_input(BenchmarkId::new("ws-proto, 1 KiB pieces", name), bytes, |b, bytes| {
            b.iter(|| {
                let mut validator = Utf8Validator::default();
                for piece in black_box(bytes).chunks(1 << 10) {
                    validator.feed(piece).expect("valid");
                }
                validator.finish().expect("complete")
            })
        });
        group.bench_with_input(BenchmarkId::new("std", name), bytes, |b, bytes| {
            b.iter(|| std::str::from_utf8(black_box(bytes)).is_ok())
        });
        group.bench_with_input(BenchmarkId::new("simdutf8", name), bytes, |b, bytes| {
            b.iter(|| simdutf8::basic::from_utf8(black_box(bytes)).is_ok())
        });
    }
    group.finish();
}

/// About `len` bytes of text in Greek, Cyrillic, CJK and emoji between ASCII words.
fn mixed_text(len: usize) -> String {
    let words = ["κόσμε", "привет", "世界", "🎉", "market", "price", "こんにちは", "update"];
    words.iter().cycle().take(len / 6).copied().collect::<Vec<_>>().join(" ")
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_header");
    for (name, payload_len) in [("7-bit length", 20), ("16-bit length", 1 << 10), ("64-bit length", 1 << 20)] {
        let header = FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask: Some([1, 2, 3, 4]), payload_len };
        let mut encoded = Vec::new();
        header.encode(&mut encoded);
        group.bench_with_input(BenchmarkId::new("decode", name), &encoded, |b, encoded| {
            b.iter(|| FrameHeader::decode(black_box(encoded)).expect("valid"))
        });
        group.bench_with_input(BenchmarkId::new("encode", name), &header, |b, header| {
            let mut out = Vec::with_capacity(16);
            b.iter(|| {
                out.clear();
                black_box(header).encode(&mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("server_decode");
    for size in [20, 1 << 10, 64 << 10] {
        let count = (1 << 20) / size;
        let wire = ws_benches::masked_frames(size, count);
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            b.iter(|| {
                let mut conn = Connection::new(Role::Server, Config::default());
                let mut input = &wire[..];
                while !input.is_empty() {
                    let (used, event) = conn.receive(input).expect("valid frames");
                    black_box(event);
                    input = &input[used..];
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("tungstenite", size), &wire, |b, wire| {
            b.iter(|| {
                let config = tungstenite::protocol::WebSocketConfig::default().max_message_size(None);
                let stream = Wire(std::io::Cursor::new(&wire[..]));
                let mut ws =
                    tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Server, Some(config));
                for _ in 0..count {
                    black_box(ws.read().expect("valid frames"));
                }
            })
        });
    }
    group.finish();
}

/// Bytes for tungstenite to read, and a sink for what it would write back.
struct Wire<'a>(std::io::Cursor<&'a [u8]>);

impl std::io::Read for Wire<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl std::io::Write for Wire<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn handshake(c: &mut Criterion) {
    let request = "GET /ws?room=general HTTP/1.1\r\nHost: example.com:8080\r\nUpgrade: websocket\r\n\
                   Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
                   Origin: https://example.com\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0\r\n\
                   Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    let config = Config::default();
    let deflate = DeflateConfig::default();
    c.bench_function("handshake: parse, validate and answer a browser's request", |b| {
        b.iter(|| {
            let (request, _) = Request::parse(black_box(request.as_bytes()), &config).expect("valid").expect("whole");
            let upgrade = Upgrade::validate(&request).expect("an upgrade");
            let (_, extension) = deflate.accept_offer(&upgrade.extensions).expect("deflate agreed");
            black_box(upgrade.accept_response(None, Some(&extension)))
        })
    });
}

criterion_group!(benches, mask, utf8, headers, decode, handshake);
criterion_main!(benches);
