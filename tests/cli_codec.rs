//! Compression along a chain of `pvabridge` processes on loopback: a detector of Poisson frames,
//! a relay compressing them with bslz4 once for its consumers, a relay decompressing them again,
//! and consumers on each: every consumer computes the same statistics (those of the images), and
//! the compressed hop carries fewer bytes.

mod common;

use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use serde_json::Value as Json;

const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");
const FRAMES: &str = "20";

/// A `pvabridge` process serving on UDP `serve` (0: none) and searching UDP `search`.
fn pvabridge(
    args: &[&str],
    serve: u16,
    search: u16,
) -> (common::Running, Receiver<String>, Receiver<String>) {
    let mut cmd = Command::new(BINARY);
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{search}"))
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVA_NAME_SERVERS", "")
        .env(
            "EPICS_PVA_BROADCAST_PORT",
            common::free_udp_port().to_string(),
        )
        .env("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVAS_SERVER_PORT", "0")
        .env("EPICS_PVAS_BROADCAST_PORT", serve.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut running = common::Running(cmd.spawn().expect("start pvabridge"));
    let out = common::lines_of(running.0.stdout.take().expect("stdout"));
    let err = common::lines_of(running.0.stderr.take().expect("stderr"));
    (running, out, err)
}

/// The JSON summary a process prints last.
fn summary(out: &Receiver<String>, what: &str) -> Json {
    let lines = common::line_with(out, "{", Duration::from_secs(60), what);
    serde_json::from_str(lines.last().unwrap()).expect("a JSON summary")
}

#[test]
fn a_relay_compresses_once_another_decompresses_and_every_consumer_sees_the_same_images() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (det_udp, packed_udp, plain_udp) = (
        common::free_udp_port(),
        common::free_udp_port(),
        common::free_udp_port(),
    );
    let (_det, det_out, det_err) = pvabridge(
        &[
            "simdet",
            "--pv",
            "chain:raw",
            "--nx",
            "200",
            "--ny",
            "150",
            "--pattern",
            "poisson",
            "--mean",
            "10",
            "--fps",
            "20",
            "--frames",
            FRAMES,
            "--start-delay",
            "6",
            "--json",
            "--quiet",
        ],
        det_udp,
        0,
    );
    common::line_with(&det_err, "serving", Duration::from_secs(30), "simdet");
    let (_packer, _, packer_err) = pvabridge(
        &[
            "relay",
            "--from",
            "chain:raw",
            "--as",
            "chain:bslz4",
            "--codec",
            "bslz4",
            "--runtime",
            "30",
            "--json",
            "--quiet",
        ],
        packed_udp,
        det_udp,
    );
    common::line_with(
        &packer_err,
        "serving chain:bslz4",
        Duration::from_secs(30),
        "relay --codec",
    );
    let (_unpacker, _, unpacker_err) = pvabridge(
        &[
            "relay",
            "--from",
            "chain:bslz4",
            "--as",
            "chain:plain",
            "--decompress",
            "--runtime",
            "30",
            "--json",
            "--quiet",
        ],
        plain_udp,
        packed_udp,
    );
    common::line_with(
        &unpacker_err,
        "serving chain:plain",
        Duration::from_secs(30),
        "relay --decompress",
    );
    let consumers: Vec<(&str, u16)> = vec![
        ("chain:raw", det_udp),
        ("chain:bslz4", packed_udp),
        ("chain:plain", plain_udp),
    ];
    let mut running = Vec::new();
    for (pv, udp) in &consumers {
        let csv = dir.path().join(format!("{pv}.csv"));
        let (p, out, err) = pvabridge(
            &[
                "consume",
                "--pv",
                pv,
                "--expected",
                FRAMES,
                "--runtime",
                "40",
                "--json",
                "--quiet",
                "--stats",
                csv.to_str().unwrap(),
            ],
            0,
            *udp,
        );
        common::line_with(&err, "connected", Duration::from_secs(30), pv);
        running.push((pv, p, out, csv));
    }
    let mut tables = Vec::new();
    for (pv, _p, out, csv) in &running {
        let r = summary(out, pv);
        assert_eq!(
            (
                r["received"].as_u64(),
                r["missed"].as_u64(),
                r["error_frames"].as_u64()
            ),
            (Some(20), Some(0), Some(0)),
            "{pv}: {r}"
        );
        assert_eq!(
            r["bytes"],
            20 * 200 * 150 * 2,
            "{pv}: bytes are those of the images: {r}"
        );
        let wire = r["wire_bytes"].as_u64().unwrap();
        if **pv == "chain:bslz4" {
            assert!(
                wire * 2 < 20 * 200 * 150 * 2,
                "bslz4 halves Poisson frames at least: {r}"
            );
        } else {
            assert_eq!(wire, 20 * 200 * 150 * 2, "{pv}: {r}");
        }
        let text = std::fs::read_to_string(csv).expect("statistics");
        assert_eq!(text.lines().count(), 21, "{pv}:\n{text}");
        tables.push(text);
    }
    assert_eq!(tables[0], tables[1], "statistics of the compressed stream");
    assert_eq!(
        tables[0], tables[2],
        "statistics of the decompressed stream"
    );
    let published = summary(&det_out, "simdet");
    assert_eq!(published["published"]["frames"], 20, "{published}");
}
