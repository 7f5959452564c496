//! pvabridge's NTNDArray codecs against the reference implementations from PyPI (`lz4`,
//! `bitshuffle`, `blosc`, what pvapy decompresses with): frames pvabridge compresses decompress
//! bit-exactly with them, and frames they compress decompress bit-exactly with pvabridge, for
//! every NTNDArray element type, compressible and incompressible data, every Blosc shuffle and
//! the Blosc compressors areaDetector's plugin offers that we read (BloscLZ, LZ4, LZ4HC).

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

#[test]
fn frames_compressed_by_the_references_and_served_by_p4p_give_consume_the_right_statistics() {
    use std::io::Write as _;
    use std::process::Stdio;

    let python = common::python_with_codecs();
    let udp = common::free_udp_port();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free TCP port")
        .port();
    let mut server = Command::new(&python);
    server
        .arg(common::peer_script("p4p_codec_server.py"))
        .arg("codec:image")
        .env("EPICS_PVA_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_SERVER_PORT", tcp.to_string())
        .env("EPICS_PVA_BROADCAST_PORT", udp.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut server = common::Running(server.spawn().expect("start the p4p codec server"));
    let server_out = common::lines_of(server.0.stdout.take().expect("stdout"));
    common::line_with(
        &server_out,
        "READY",
        Duration::from_secs(30),
        "the p4p codec server",
    );

    let dir = tempfile::tempdir().expect("temporary directory");
    let csv = dir.path().join("stats.csv");
    let mut consume = Command::new(env!("CARGO_BIN_EXE_pvabridge"));
    consume
        .args([
            "consume",
            "--pv",
            "codec:image",
            "--expected",
            "33",
            "--runtime",
            "60",
            "--json",
            "--quiet",
            "--stats",
        ])
        .arg(&csv)
        .env("RUST_LOG", "info")
        .env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{udp}"))
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVA_NAME_SERVERS", "")
        .env(
            "EPICS_PVA_BROADCAST_PORT",
            common::free_udp_port().to_string(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut consume = common::Running(consume.spawn().expect("start pvabridge consume"));
    let consume_err = common::lines_of(consume.0.stderr.take().expect("stderr"));
    let consume_out = common::lines_of(consume.0.stdout.take().expect("stdout"));
    common::line_with(
        &consume_err,
        "connected",
        Duration::from_secs(30),
        "pvabridge consume",
    );
    writeln!(server.0.stdin.as_mut().expect("stdin"), "go").expect("start the frames");
    let said = common::line_with(
        &server_out,
        "DONE",
        Duration::from_secs(30),
        "the p4p codec server",
    );
    let expected: Vec<Json> = said
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(expected.len(), 33, "{said:?}");

    let summary = common::line_with(
        &consume_out,
        "{",
        Duration::from_secs(60),
        "pvabridge consume",
    );
    let report: Json = serde_json::from_str(summary.last().unwrap()).expect("the JSON summary");
    assert_eq!(report["received"], 33, "{report}");
    assert_eq!(report["missed"], 0, "{report}");
    assert_eq!(
        report["error_frames"], 3,
        "the three bad frames are error frames: {report}"
    );
    let errors: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    for (id, words) in [
        (31, "lz4 frame: corrupt"),
        (32, "bslz4 frame: truncated"),
        (33, "blosc frame: truncated"),
    ] {
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("frame {id}:")) && e.contains(words)),
            "frame {id}'s reason: {errors:?}"
        );
    }
    assert_eq!(report["processed"], 30, "{report}");

    let text = std::fs::read_to_string(&csv).expect("the statistics file");
    let mut rows = text.lines();
    assert_eq!(rows.next(), Some("uniqueId,count,min,max,mean,sum"));
    let rows: Vec<Vec<f64>> = rows
        .map(|r| r.split(',').map(|x| x.parse().expect("a number")).collect())
        .collect();
    assert_eq!(rows.len(), 30, "one row per good frame:\n{text}");
    for want in expected.iter().filter(|e| e.get("bad").is_none()) {
        let id = want["uniqueId"].as_f64().unwrap();
        let row = rows
            .iter()
            .find(|r| r[0] == id)
            .unwrap_or_else(|| panic!("no row for {want}"));
        for (k, key) in ["count", "min", "max", "mean", "sum"].iter().enumerate() {
            let (got, exp) = (row[k + 1], want[key].as_f64().unwrap());
            assert!(
                (got - exp).abs() <= 1e-9 * exp.abs().max(1.0),
                "{key} of {want}: {got}"
            );
        }
    }
    drop(consume);
    drop(server);
}

#[test]
fn pvapy_decompresses_the_frames_simdet_compresses_to_the_same_images() {
    use std::process::Stdio;
    use stream::simdet::{FrameOptions, Pattern, SimDet, SimDetConfig};
    use stream::stats::FrameStats;

    let python = common::python();
    let config = SimDetConfig {
        nx: 64,
        ny: 48,
        dtype: ScalarType::U16,
        fps: 10.0,
        frames: Some(4),
        runtime: None,
        start_delay: Duration::ZERO,
        seed: 1,
        counter: false,
        start_id: 1,
    };
    let mut runs = Vec::new();
    for codec in Codec::ALL {
        let udp = common::free_udp_port();
        let pv = format!("codec:pvapy:{codec}");
        let mut det = Command::new(env!("CARGO_BIN_EXE_pvabridge"));
        det.args([
            "simdet", "--pv", &pv, "--nx", "64", "--ny", "48", "--dtype", "uint16",
        ])
        .args([
            "--pattern",
            "poisson",
            "--mean",
            "10",
            "--codec",
            codec.name(),
        ])
        .args([
            "--fps",
            "10",
            "--frames",
            "4",
            "--start-delay",
            "4",
            "--seed",
            "1",
            "--quiet",
        ])
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVAS_SERVER_PORT", "0")
        .env("EPICS_PVAS_BROADCAST_PORT", udp.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let det = common::Running(det.spawn().expect("start pvabridge simdet"));
        let mut client = Command::new(&python);
        client
            .arg(common::peer_script("pvapy_codec_client.py"))
            .args([&pv, "4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        common::loopback_env(&mut client, udp);
        let mut client = common::Running(client.spawn().expect("start the pvapy client"));
        let lines = common::lines_of(client.0.stdout.take().expect("stdout"));
        runs.push((codec, det, client, lines));
    }
    for (codec, _det, _client, lines) in &runs {
        let options = FrameOptions {
            pattern: Pattern::Poisson { mean: 10.0 },
            codec: Some(*codec),
            codec_level: 5,
        };
        let twin = SimDet::with_options(config.clone(), options).expect("the same detector");
        for id in 1..=4u64 {
            let said = common::line_with(
                lines,
                "uniqueId",
                Duration::from_secs(40),
                "the pvapy client",
            );
            let got: Json = serde_json::from_str(said.last().unwrap()).expect("a JSON line");
            assert_eq!(got["uniqueId"], id, "{codec}: {got}");
            assert_eq!(got["codec"], codec.name(), "{got}");
            let frame = stream::Frame::from_value(twin.frame(id as i32))
                .unwrap()
                .decompressed()
                .unwrap();
            let want = FrameStats::of(&frame).unwrap();
            for (key, value) in [
                ("count", want.count as f64),
                ("min", want.min),
                ("max", want.max),
                ("sum", want.sum),
            ] {
                assert_eq!(
                    got[key].as_f64(),
                    Some(value),
                    "{codec} frame {id}, {key}: {got}"
                );
            }
        }
    }
}
