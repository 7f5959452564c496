//! The NTNDArray codecs on a detector-like 2 MiB frame (1024x1024 uint16 Poisson counts of
//! mean 10): bitshuffle with and without SIMD, and each codec's compress and decompress.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stream::codec::bitshuffle::{bitshuffle, bitshuffle_portable, bitunshuffle};
use stream::codec::Codec;

/// Poisson counts of mean 10 by inversion, little-endian u16.
fn frame() -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(1);
    let mut cdf = Vec::new();
    let (mut p, mut total) = ((-10f64).exp(), 0.0);
    for k in 0..60 {
        if k > 0 {
            p *= 10.0 / k as f64;
        }
        total += p;
        cdf.push(total);
    }
    (0..1024 * 1024)
        .flat_map(|_| {
            let u = rng.f64();
            (cdf.partition_point(|&c| c < u) as u16).to_le_bytes()
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    let raw = frame();
    let mut group = c.benchmark_group("2 MiB uint16 Poisson(10)");
    group.throughput(Throughput::Bytes(raw.len() as u64));
    let (mut out, mut tmp) = (vec![0u8; raw.len()], vec![0u8; raw.len()]);
    group.bench_function("bitshuffle (SSE2)", |b| {
        b.iter(|| bitshuffle(&raw, &mut out, &mut tmp, 2))
    });
    group.bench_function("bitshuffle (portable)", |b| {
        b.iter(|| bitshuffle_portable(&raw, &mut out, &mut tmp, 2))
    });
    let shuffled = out.clone();
    group.bench_function("bitunshuffle", |b| {
        b.iter(|| bitunshuffle(&shuffled, &mut out, &mut tmp, 2))
    });
    for codec in Codec::ALL {
        let packed = codec.compress(&raw, 2, 5);
        group.bench_function(format!("{codec} compress"), |b| {
            b.iter(|| codec.compress(&raw, 2, 5))
        });
        group.bench_function(
            format!(
                "{codec} decompress ({:.2}x)",
                raw.len() as f64 / packed.len() as f64
            ),
            |b| b.iter(|| codec.decompress(&packed, raw.len(), 2).unwrap()),
        );
    }
    group.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
