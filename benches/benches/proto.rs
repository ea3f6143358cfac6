//! Hot paths of ws-proto: masking, and a server connection decoding messages.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use ws_proto::{Config, Connection, Role, apply_mask};

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
        group.bench_with_input(BenchmarkId::new("naive", size), &size, |b, _| {
            b.iter(|| naive_mask(black_box(&mut buf), [1, 2, 3, 4]))
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
    }
    group.finish();
}

criterion_group!(benches, mask, decode);
criterion_main!(benches);
