//! Codec benchmarks: NTNDArray frames (decode must stay flat as the array grows, since it is
//! zero-copy) and NTScalar doubles. Encode is measured both as the chunk list a vectored write
//! sends (zero-copy) and as one contiguous buffer.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use pva_codec::nt::{Alarm, NdArrayFrame, NtNdArray, NtScalar, ScalarReading, TimeStamp};
use pva_codec::{
    ByteOrder, FieldDesc, Limits, PodArray, Reader, ScalarArray, ScalarType, StructValue,
    TypeCache, Value, ValueDecoder, ValueEncoder, Writer,
};

const ORDER: ByteOrder = ByteOrder::native();

fn frame(width: i32, height: i32) -> NdArrayFrame {
    let n = (width * height) as usize;
    let pixels: Vec<u16> = (0..n).map(|i| i as u16).collect();
    let mut f = NdArrayFrame::new(
        ScalarArray::U16(PodArray::from_vec(pixels)),
        &[width, height],
        1,
    );
    f.attributes = vec![
        pva_codec::nt::NdAttribute::new("ColorMode", 0i32),
        pva_codec::nt::NdAttribute::new("AcquireTime", 0.001f64),
    ];
    f
}

fn encode(v: &StructValue) -> Writer {
    let mut w = Writer::with_capacity(ORDER, 1024);
    ValueEncoder::default()
        .structure(v, &mut w)
        .expect("a built value encodes");
    w
}

fn decode(desc: &FieldDesc, payload: &Bytes) -> Value {
    let mut r = Reader::new(payload.clone(), ORDER);
    let mut cache = TypeCache::new();
    let limits = Limits::default();
    ValueDecoder::new(&mut cache, &limits, &r)
        .value(desc, &mut r)
        .expect("a valid payload decodes")
}

fn ndarray(c: &mut Criterion) {
    let nt = NtNdArray::new();
    let desc = FieldDesc::Struct(nt.desc());
    // 256 KiB, 2 MiB and 8 MiB of uint16 pixels.
    for (label, w, h) in [
        ("256KiB", 512, 256),
        ("2MiB", 1024, 1024),
        ("8MiB", 2048, 2048),
    ] {
        let f = frame(w, h);
        let bytes = f.data.byte_len() as u64;
        let value = nt.build_value(f.clone()).expect("frame builds");
        let payload = encode(&value).finish_contiguous();

        let mut g = c.benchmark_group("ntndarray");
        g.throughput(Throughput::Bytes(bytes));
        g.bench_with_input(BenchmarkId::new("decode", label), &payload, |b, p| {
            b.iter(|| {
                let v = decode(&desc, p);
                let s = v.as_struct().expect("a structure");
                black_box(NdArrayFrame::from_value(s).expect("a frame"))
            })
        });
        g.bench_with_input(BenchmarkId::new("encode_chunks", label), &f, |b, f| {
            b.iter(|| {
                let v = nt.build_value(f.clone()).expect("frame builds");
                black_box(encode(&v).finish())
            })
        });
        g.bench_with_input(BenchmarkId::new("encode_contiguous", label), &f, |b, f| {
            b.iter(|| {
                let v = nt.build_value(f.clone()).expect("frame builds");
                black_box(encode(&v).finish_contiguous())
            })
        });
        g.finish();
    }
}

fn ntscalar(c: &mut Criterion) {
    let nt = NtScalar::new(ScalarType::F64);
    let desc = FieldDesc::Struct(nt.desc());
    let value = nt
        .build_value(1.5, &Alarm::none(), TimeStamp::now())
        .expect("double builds");
    let payload = encode(&value).finish_contiguous();
    let mut g = c.benchmark_group("ntscalar_double");
    g.bench_function("decode", |b| {
        b.iter(|| {
            let v = decode(&desc, &payload);
            let s = v.as_struct().expect("a structure");
            black_box(ScalarReading::from_value(s).expect("a reading"))
        })
    });
    g.bench_function("encode_chunks", |b| {
        b.iter(|| {
            let v = nt
                .build_value(black_box(2.5), &Alarm::none(), TimeStamp::default())
                .expect("double builds");
            black_box(encode(&v).finish())
        })
    });
    g.bench_function("encode_contiguous", |b| {
        b.iter(|| {
            let v = nt
                .build_value(black_box(2.5), &Alarm::none(), TimeStamp::default())
                .expect("double builds");
            black_box(encode(&v).finish_contiguous())
        })
    });
    g.finish();
}

criterion_group!(benches, ndarray, ntscalar);
criterion_main!(benches);
