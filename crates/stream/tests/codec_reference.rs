//! The stream crate's NTNDArray codecs against the reference implementations from PyPI (`lz4`,
//! `bitshuffle`, `blosc`, what pvapy decompresses with): frames pvabridge compresses decompress
//! bit-exactly with them, and frames they compress decompress bit-exactly with pvabridge, for
//! every NTNDArray element type, compressible and incompressible data, every Blosc shuffle and
//! the Blosc compressors areaDetector's plugin offers that we read (BloscLZ, LZ4, LZ4HC). The
//! root tests/codec_reference.rs runs the same references against the `pvabridge` binary.

#[path = "../../../tests/common/peers.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pva_codec::ScalarType;
use serde_json::{json, Value as Json};
use stream::codec::Codec;

const TYPES: [(ScalarType, &str); 10] = [
    (ScalarType::I8, "int8"),
    (ScalarType::U8, "uint8"),
    (ScalarType::I16, "int16"),
    (ScalarType::U16, "uint16"),
    (ScalarType::I32, "int32"),
    (ScalarType::U32, "uint32"),
    (ScalarType::I64, "int64"),
    (ScalarType::U64, "uint64"),
    (ScalarType::F32, "float32"),
    (ScalarType::F64, "float64"),
];

fn reference(mode: &str, dir: &Path) -> String {
    let mut cmd = Command::new(common::python_with_codecs());
    cmd.arg(common::peer_script("codec_reference.py"))
        .arg(mode)
        .arg(dir);
    let out = common::run_bounded(cmd, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "codec_reference.py {mode} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Detector-like counts (small numbers, most bytes zero) or noise, `count` elements of `size`
/// bytes.
fn pixels(count: usize, size: usize, seed: u64, noise: bool) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..count * size)
        .map(|i| match (noise, i % size) {
            (true, _) => rng.u8(..),
            (false, 0) => rng.u8(0..20),
            _ => 0,
        })
        .collect()
}

#[test]
fn frames_pvabridge_compresses_decompress_bit_exactly_with_the_references() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut manifest = Vec::new();
    for (k, (t, dtype)) in TYPES.into_iter().enumerate() {
        for noise in [false, true] {
            // Odd counts: tails past the last multiple of 8 and past a bitshuffle block.
            for count in [5003 + k, 70_001] {
                let raw = pixels(count, t.wire_size(), k as u64, noise);
                for codec in Codec::ALL {
                    let case = format!(
                        "{codec}-{dtype}-{count}-{}",
                        if noise { "noise" } else { "counts" }
                    );
                    let packed = codec.compress(&raw, t.wire_size(), 5);
                    std::fs::write(dir.path().join(format!("{case}.raw")), &raw).unwrap();
                    std::fs::write(dir.path().join(format!("{case}.packed")), &packed).unwrap();
                    manifest.push(json!({"case": case, "codec": codec.name(), "dtype": dtype, "count": count}));
                }
            }
        }
    }
    std::fs::write(
        dir.path().join("manifest.json"),
        Json::Array(manifest.clone()).to_string(),
    )
    .unwrap();
    let out = reference("check", dir.path());
    let results: Vec<Json> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(results.len(), manifest.len(), "every case checked:\n{out}");
    let failed: Vec<&Json> = results.iter().filter(|r| r["ok"] != true).collect();
    assert!(
        failed.is_empty(),
        "the references did not decompress these to the raw bytes: {failed:#?}"
    );
}

#[test]
fn frames_the_references_compress_decompress_bit_exactly_with_pvabridge() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let out = reference("make", dir.path());
    let manifest: Json = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    let cases = manifest.as_array().expect("a list of cases");
    assert!(cases.len() > 200, "{out}");
    let mut failed = Vec::new();
    for case in cases {
        let name = case["case"].as_str().unwrap();
        let dtype = case["dtype"].as_str().unwrap();
        let (t, _) = TYPES
            .iter()
            .find(|(_, d)| *d == dtype)
            .expect("a known dtype");
        let codec: Codec = case["codec"]
            .as_str()
            .unwrap()
            .parse()
            .expect("a codec we have");
        let raw = std::fs::read(dir.path().join(format!("{name}.raw"))).unwrap();
        let packed = std::fs::read(dir.path().join(format!("{name}.packed"))).unwrap();
        match codec.decompress(&packed, raw.len(), t.wire_size()) {
            Ok(out) if out == raw => {}
            Ok(_) => failed.push(format!("{name}: wrong bytes")),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failed.is_empty(),
        "pvabridge did not decompress these: {failed:#?}"
    );
}
