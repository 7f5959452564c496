//! `pvabridge simdet`, `consume` and `relay` as separate processes on loopback: a complete
//! stream at a fixed rate, a relay to three consumers where only the slow one loses frames and
//! its losses are counted exactly, and pvapy's simulated detector to our consumer.

mod common;

use std::process::Command;
use std::time::Duration;

use common::proc::{consumer, count, pva_command, simdet, Proc};

use common::proc::BINARY;

#[test]
fn simdet_to_consume_at_a_fixed_rate_is_complete() {
    let udp = common::free_udp_port();
    let det = simdet(
        udp,
        &[
            "--pv",
            "e2e:det",
            "--nx",
            "64",
            "--ny",
            "64",
            "--dtype",
            "uint16",
            "--fps",
            "200",
            "--frames",
            "400",
            "--start-delay",
            "2.5",
        ],
    );
    let cons = consumer(
        udp,
        &[
            "--pv",
            "e2e:det",
            "--expected",
            "400",
            "--runtime",
            "60",
            "--require-complete",
            "--queue-size",
            "256",
        ],
    );
    let (code, report) = cons.finish(Duration::from_secs(90));
    assert_eq!(code, Some(0), "consume --require-complete failed: {report}");
    assert_eq!(count(&report, "received"), 400, "{report}");
    assert_eq!(count(&report, "missed"), 0, "{report}");
    assert_eq!(count(&report, "duplicates"), 0, "{report}");
    assert_eq!(count(&report, "processed"), 400, "{report}");
    assert_eq!(count(&report, "bytes"), 400 * 64 * 64 * 2, "{report}");
    assert_eq!(report["ended_by"], "expected");
    assert!(
        report["latency"]["max_ms"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    let (code, published) = det.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0));
    assert_eq!(published["published"]["frames"], 400, "{published}");
    assert_eq!(published["consumers"][0]["dropped"], 0, "{published}");
}

#[test]
fn relay_to_three_consumers_counts_the_slow_ones_losses_exactly() {
    let det_udp = common::free_udp_port();
    let relay_udp = common::free_udp_port();
    let det = simdet(
        det_udp,
        &[
            "--pv",
            "e2e:src",
            "--nx",
            "64",
            "--ny",
            "64",
            "--fps",
            "200",
            "--frames",
            "400",
            "--start-delay",
            "4",
        ],
    );
    let mut relay_cmd = pva_command(BINARY, relay_udp, det_udp);
    relay_cmd.args([
        "relay", "--from", "e2e:src", "--as", "e2e:fan", "--json", "--quiet",
    ]);
    let mut relay = Proc::start("pvabridge relay", relay_cmd);
    relay.wait_for("serving", Duration::from_secs(30));
    let common_args = ["--pv", "e2e:fan", "--expected", "400", "--runtime", "60"];
    let fast: Vec<Proc> = (0..2).map(|_| consumer(relay_udp, &common_args)).collect();
    // One frame at a time, 20 ms each: about 50 frames/s of the 200 sent.
    let slow_args: Vec<&str> = common_args
        .iter()
        .copied()
        .chain([
            "--process-time",
            "20",
            "--backlog",
            "1",
            "--queue-size",
            "4",
        ])
        .collect();
    let slow = consumer(relay_udp, &slow_args);

    let mut missed = Vec::new();
    for c in fast {
        let (code, r) = c.finish(Duration::from_secs(90));
        assert_eq!(code, Some(0), "{r}");
        assert_eq!(
            count(&r, "received"),
            400,
            "a fast consumer lost frames: {r}"
        );
        assert_eq!(count(&r, "missed"), 0, "{r}");
        missed.push(0);
    }
    let (code, r) = slow.finish(Duration::from_secs(90));
    assert_eq!(code, Some(0), "{r}");
    let slow_missed = count(&r, "missed");
    assert!(
        slow_missed > 0,
        "the slow consumer should have lost frames: {r}"
    );
    assert_eq!(
        count(&r, "client_squashed"),
        0,
        "losses happen in the relay: {r}"
    );
    assert_eq!(count(&r, "received") + slow_missed, 400, "{r}");
    assert_eq!(count(&r, "duplicates"), 0, "{r}");
    missed.push(slow_missed);

    relay.terminate();
    let (code, report) = relay.finish(Duration::from_secs(30));
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(count(&report, "relayed"), 400, "{report}");
    let consumers = report["consumers"].as_array().expect("consumers");
    assert_eq!(consumers.len(), 3, "{report}");
    let mut dropped: Vec<u64> = consumers.iter().map(|c| count(c, "dropped")).collect();
    dropped.sort_unstable();
    missed.sort_unstable();
    assert_eq!(
        dropped, missed,
        "the relay's count of frames dropped for each consumer is what each one missed"
    );
    det.finish(Duration::from_secs(30));
}

#[test]
fn pvapy_ad_sim_server_to_consume() {
    let python = common::python();
    let script = python.with_file_name("pvapy-ad-sim-server");
    assert!(
        script.exists(),
        "pvapy-ad-sim-server is not beside {}: install pvapy",
        python.display()
    );
    let udp = common::free_udp_port();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free TCP port")
        .port();
    let mut server_cmd = Command::new(&python);
    server_cmd
        .arg(&script)
        .args([
            "-cn",
            "e2e:pvapy",
            "-nx",
            "64",
            "-ny",
            "64",
            "-dt",
            "uint16",
            "-fps",
            "100",
            "-rt",
            "3",
            "-std",
            "3",
            "-shd",
            "1",
            "-rp",
            "0",
            "-dc",
        ])
        .env("EPICS_PVA_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_SERVER_PORT", tcp.to_string())
        .env("EPICS_PVA_BROADCAST_PORT", udp.to_string());
    let server = Proc::start("pvapy-ad-sim-server", server_cmd);
    // pvapy's server re-sends old frames to pipelined monitors: no pipelining with it.
    let cons = consumer(
        udp,
        &["--pv", "e2e:pvapy", "--runtime", "9", "--no-pipeline"],
    );
    let (code, r) = cons.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{r}");
    let received = count(&r, "received");
    // 3 s at 100 frames/s; the exact count is pvapy's.
    assert!(received >= 250, "too few frames from pvapy: {r}");
    assert_eq!(count(&r, "missed"), 0, "{r}");
    assert_eq!(count(&r, "duplicates"), 0, "{r}");
    assert_eq!(r["first_id"], 1, "{r}");
    assert_eq!(r["last_id"].as_u64(), Some(received), "{r}");
    assert_eq!(count(&r, "bytes"), received * 64 * 64 * 2, "{r}");
    drop(server);
}
