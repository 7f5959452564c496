//! Frame accounting as a beamline sees it, over real processes on loopback: consumers joining
//! running streams (our simulated detector, a p4p NTNDArray server, pvapy-ad-sim-server) miss
//! nothing; a counter reset and a wrap past 2^31-1 are no losses; frames lost at the source are
//! counted exactly.

mod common;

use std::time::Duration;

use common::proc::{
    consumer, count, p4p_detector, pva_command, pvapy_ad_sim_server, simdet, Proc, BINARY,
};
use serde_json::Value as Json;

const LIMIT: Duration = Duration::from_secs(60);

/// `pvabridge consume ARGS` searching `udp`, once its subscription is in place.
fn subscribed_consumer(udp: u16, args: &[&str]) -> Proc {
    let mut cmd = pva_command(BINARY, common::free_udp_port(), udp);
    cmd.arg("consume")
        .args(args)
        .args(["--json", "--quiet"])
        .env("RUST_LOG", "stream=info");
    let mut p = Proc::start("pvabridge consume", cmd);
    p.wait_for("connected", LIMIT);
    p
}

fn id(r: &Json, key: &str) -> i64 {
    r[key]
        .as_i64()
        .unwrap_or_else(|| panic!("no id '{key}' in {r}"))
}

/// The books of a consumer that joined a running stream: everything after its initial value
/// came, and the initial value was not counted.
/// Simulated detector options: 16x16 frames at 300 frames/s.
const SMALL_AND_FAST: &[&str] = &["--nx", "16", "--ny", "16", "--fps", "300"];

/// A consumer with `args` that joins the stream on `udp` well into it (1.5 s late) succeeds,
/// having joined without loss (see [`assert_joined_without_loss`]); its report.
fn join_late_without_loss(udp: u16, args: &[&str], expected: u64) -> Json {
    std::thread::sleep(Duration::from_millis(1500));
    let (code, r) = consumer(udp, args).finish(LIMIT);
    assert_eq!(code, Some(0), "{r}");
    assert_joined_without_loss(&r, expected);
    r
}

fn assert_joined_without_loss(r: &Json, expected: u64) {
    assert_eq!(count(r, "received"), expected, "{r}");
    assert_eq!(count(r, "missed"), 0, "{r}");
    assert_eq!(count(r, "duplicates"), 0, "{r}");
    assert_eq!(count(r, "counter_resets"), 0, "{r}");
    let initial = id(r, "initial_id");
    assert!(initial > 1, "joined a running stream: {r}");
    assert_eq!(id(r, "first_id"), initial + 1, "{r}");
    assert_eq!(id(r, "last_id"), initial + expected as i64, "{r}");
}

#[test]
fn consume_joining_a_running_simdet_misses_nothing() {
    let udp = common::free_udp_port();
    let det = simdet(
        udp,
        &[&["--pv", "acc:sim"], SMALL_AND_FAST, &["--runtime", "20"]].concat(),
    );
    join_late_without_loss(udp, &["--pv", "acc:sim", "--expected", "300"], 300);
    drop(det);
}

#[test]
fn consume_joining_a_running_p4p_detector_misses_nothing() {
    let udp = common::free_udp_port();
    let mut det = p4p_detector(udp, "acc:p4p", 5001);
    det.send("run 3000 250");
    let r = join_late_without_loss(udp, &["--pv", "acc:p4p", "--expected", "250"], 250);
    assert!(id(&r, "initial_id") > 5000, "{r}");
}

/// pvxs sends what an ack allows only at its next post: a burst that finds the window shut
/// leaves its tail at the server until a post that never comes. The p4p detector's first value
/// is a frame, so the ack of it opens the whole window at once, and a burst posted while the
/// consumer is busy (each frame takes it 50 ms, with a backlog of 1) all comes; a credit grown
/// step by step let 18 of 30 through.
#[test]
fn a_burst_from_a_p4p_detector_while_the_consumer_is_busy_all_arrives() {
    let udp = common::free_udp_port();
    let mut det = p4p_detector(udp, "acc:burst", 1);
    let args = [
        "--pv",
        "acc:burst",
        "--expected",
        "30",
        "--require-complete",
        "--runtime",
        "10",
        "--process-time",
        "50",
        "--backlog",
        "1",
        "--threads",
        "1",
    ];
    let cons = subscribed_consumer(udp, &args);
    // The burst starts once the first value's ack has had ample time to reach the server: a
    // burst that beats it meets the first window of 4 whatever the window's policy.
    std::thread::sleep(Duration::from_secs(1));
    det.send("run 30 0");
    let (code, r) = cons.finish(LIMIT);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(count(&r, "received"), 30, "{r}");
    assert_eq!(count(&r, "missed"), 0, "{r}");
}

#[test]
fn consume_joining_a_running_pvapy_ad_sim_server_misses_nothing() {
    let udp = common::free_udp_port();
    let server = pvapy_ad_sim_server(udp, "acc:pvapy", 100, 20);
    // pvapy's server re-sends old frames to pipelined monitors: no pipelining with it.
    let args = ["--pv", "acc:pvapy", "--expected", "100", "--no-pipeline"];
    join_late_without_loss(udp, &args, 100);
    drop(server);
}

#[test]
fn a_counter_reset_and_a_wrap_past_the_int32_limit_are_no_losses() {
    let udp = common::free_udp_port();
    let mut det = p4p_detector(udp, "acc:reset", i64::from(i32::MAX) - 49);
    let cons = subscribed_consumer(
        udp,
        &[
            "--pv",
            "acc:reset",
            "--expected",
            "200",
            "--require-complete",
        ],
    );
    // 100 frames across the wrap, then the counter is reset to 1 for 100 more.
    det.send("run 100 400");
    det.wait_for_stdout("DONE", LIMIT);
    det.send("set 1");
    det.send("run 100 400");
    let (code, r) = cons.finish(LIMIT);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(count(&r, "received"), 200, "{r}");
    assert_eq!(count(&r, "missed"), 0, "{r}");
    assert_eq!(
        count(&r, "out_of_order"),
        0,
        "no flood of out-of-order frames: {r}"
    );
    assert_eq!(count(&r, "duplicates"), 0, "{r}");
    assert_eq!(count(&r, "counter_resets"), 1, "{r}");
    assert_eq!(id(&r, "initial_id"), i64::from(i32::MAX) - 50, "{r}");
    assert_eq!(id(&r, "first_id"), i64::from(i32::MAX) - 49, "{r}");
    assert_eq!(id(&r, "last_id"), 100, "{r}");
}

#[test]
fn simdet_start_id_wraps_like_an_int32_and_consume_follows() {
    let udp = common::free_udp_port();
    let start = i64::from(i32::MAX) - 29;
    let det = simdet(
        udp,
        &[
            &["--pv", "acc:wrap"],
            SMALL_AND_FAST,
            &[
                "--frames",
                "60",
                "--start-id",
                &start.to_string(),
                "--start-delay",
                "3",
            ],
        ]
        .concat(),
    );
    let cons = consumer(
        udp,
        &["--pv", "acc:wrap", "--expected", "60", "--require-complete"],
    );
    let (code, r) = cons.finish(LIMIT);
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(count(&r, "received"), 60, "{r}");
    assert_eq!(count(&r, "missed"), 0, "{r}");
    assert_eq!(count(&r, "counter_resets"), 0, "{r}");
    assert_eq!(
        r["initial_id"],
        Json::Null,
        "the detector had not published: {r}"
    );
    assert_eq!(id(&r, "first_id"), start, "{r}");
    assert_eq!(id(&r, "last_id"), i64::from(i32::MIN) + 29, "{r}");
    drop(det);
}

#[test]
fn frames_lost_at_the_source_are_counted_exactly() {
    let udp = common::free_udp_port();
    let mut det = p4p_detector(udp, "acc:lossy", 1001);
    // Counting from the run's first frame, known in advance: 1001.
    let cons = subscribed_consumer(
        udp,
        &[
            "--pv",
            "acc:lossy",
            "--first-id",
            "1001",
            "--expected",
            "80",
            "--require-complete",
        ],
    );
    // 1001..1030 sent, 1031..1037 lost, 1038..1067 sent, 1068 lost, 1069..1078 sent; the run's
    // last two frames (1079, 1080) never come.
    for command in ["run 30 300", "skip 7", "run 30 300", "skip 1", "run 10 300"] {
        det.send(command);
    }
    det.wait_for_stdout("DONE", LIMIT);
    det.wait_for_stdout("DONE", LIMIT);
    det.wait_for_stdout("DONE", LIMIT);
    // The consumer waits for the last two; stop it as a user would.
    std::thread::sleep(Duration::from_millis(500));
    cons.terminate();
    let (code, r) = cons.finish(LIMIT);
    assert_eq!(code, Some(3), "frames were lost: {r}");
    assert_eq!(count(&r, "received"), 70, "{r}");
    assert_eq!(count(&r, "missed"), 10, "{r}");
    assert_eq!(
        r["missed_ranges"],
        serde_json::json!([[1031, 1037], [1068, 1068], [1079, 1080]]),
        "{r}"
    );
    assert_eq!(id(&r, "initial_id"), 1000, "{r}");
}

#[test]
fn consume_join_is_gone_and_its_error_names_the_new_default() {
    let mut cmd = pva_command(BINARY, common::free_udp_port(), common::free_udp_port());
    cmd.args(["consume", "--pv", "acc:none", "--join"]);
    let out = common::run_bounded(cmd, LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--join was removed") && err.contains("first frame received"),
        "{err}"
    );
}
