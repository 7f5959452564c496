//! pvabridge's NTNDArray codecs against the reference implementations from PyPI (`lz4`,
//! `bitshuffle`, `blosc`, what pvapy decompresses with), through the `pvabridge` binary: frames
//! the references compress and p4p serves give `pvabridge consume` the right statistics, and
//! pvapy decompresses the frames `pvabridge simdet` compresses to the same images. The codecs'
//! bit-exactness against the references is crates/stream/tests/codec_reference.rs.

mod common;

use std::process::Command;
use std::time::Duration;

use pva_codec::ScalarType;
use serde_json::Value as Json;
use stream::codec::Codec;

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
