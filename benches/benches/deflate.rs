//! permessage-deflate (RFC 7692) throughput: compressing and inflating JSON
//! text of 1 KiB and 64 KiB, with the compression context kept between
//! messages and reset after each.

use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use ws_proto::deflate::{Compressor, Inflater};
use ws_proto::{DeflateConfig, DeflateParams, Role};

/// About 1 MiB of messages of `size` bytes each, every one different.
fn messages(size: usize) -> Vec<String> {
    (0..(1 << 20) / size).map(|i| ws_benches::json_text(size, i as u64)).collect()
}

fn params(reset: bool) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: reset,
        client_no_context_takeover: reset,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    }
}

fn context(reset: bool) -> &'static str {
    if reset { "no_context_takeover" } else { "context_takeover" }
}

fn compress(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate_compress");
    for size in [1 << 10, 64 << 10] {
        let messages = messages(size);
        group.throughput(Throughput::Bytes((messages.len() * size) as u64));
        for reset in [false, true] {
            group.bench_with_input(BenchmarkId::new(context(reset), size), &messages, |b, messages| {
                b.iter(|| {
                    let mut compressor = Compressor::new(Role::Server, &params(reset), &DeflateConfig::default());
                    for m in messages {
                        black_box(compressor.compress(m.as_bytes()));
                    }
                })
            });
        }
    }
    group.finish();
}

fn inflate(c: &mut Criterion) {
    let mut group = c.benchmark_group("deflate_inflate");
    for size in [1 << 10, 64 << 10] {
        let messages = messages(size);
        group.throughput(Throughput::Bytes((messages.len() * size) as u64));
        for reset in [false, true] {
            let mut compressor = Compressor::new(Role::Client, &params(reset), &DeflateConfig::default());
            let compressed: Vec<_> = messages.iter().map(|m| compressor.compress(m.as_bytes())).collect();
            group.bench_with_input(BenchmarkId::new(context(reset), size), &compressed, |b, compressed| {
                let mut out = BytesMut::with_capacity(size);
                b.iter(|| {
                    let mut inflater = Inflater::new(Role::Server, &params(reset));
                    for m in compressed {
                        inflater.inflate(m, &mut out, size).expect("valid");
                        inflater.finish(&mut out, size).expect("valid");
                        black_box(&out);
                        out.clear();
                    }
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, compress, inflate);
criterion_main!(benches);
