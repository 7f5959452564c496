//! `pvabridge demo` end to end: the bridge, the embedded DM service, a workflow stage running
//! `pvabridge workflow consume` as a child process, the simulated detector and the Bluesky side,
//! all started by one command on loopback ports of its own.

mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");
const FRAMES: u64 = 200;

/// Remove EPICS and DM settings a developer may have, to show the demo needs none.
fn bare(cmd: &mut Command) {
    for var in [
        "EPICS_PVA_ADDR_LIST",
        "EPICS_PVA_AUTO_ADDR_LIST",
        "EPICS_PVA_SERVER_PORT",
        "EPICS_PVA_BROADCAST_PORT",
        "EPICS_PVA_NAME_SERVERS",
        "EPICS_PVAS_INTF_ADDR_LIST",
        "PVABRIDGE_HANDSHAKE",
        "DM_PROC_WEB_SERVICE_URL",
        "DM_LOGIN_FILE",
    ] {
        cmd.env_remove(var);
    }
}

/// Run `pvabridge demo` (`cmd`) with no EPICS setting of the developer's: its JSON summary,
/// once it has succeeded.
fn run_demo(mut cmd: Command) -> Value {
    bare(&mut cmd);
    let out = common::run_bounded(cmd, Duration::from_secs(90));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|_| panic!("not JSON:\n{stdout}\nstderr:\n{stderr}"));
    assert!(out.status.success(), "{summary:#}\nstderr:\n{stderr}");
    summary
}

#[test]
fn the_demo_runs_a_streaming_workflow_to_done_with_every_frame_and_its_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("work");
    let mut cmd = Command::new(BINARY);
    cmd.args(["demo", "--frames", "200", "--fps", "200", "--nx", "32"])
        .args(["--ny", "24", "--dtype", "int32", "--json", "--keep"])
        .arg(&keep);
    let summary = run_demo(cmd);
    assert_eq!(summary["finalState"], "DONE", "{summary:#}");
    assert_eq!(summary["ok"], true);
    assert_eq!(summary["frames"]["expected"], FRAMES);
    assert_eq!(summary["frames"]["published"], FRAMES);
    assert_eq!(summary["frames"]["received"], FRAMES);
    assert_eq!(summary["frames"]["missed"], 0);
    assert_eq!(summary["frames"]["duplicates"], 0);
    assert_eq!(summary["frameBytes"], 32 * 24 * 4);

    let states: Vec<&str> = summary["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, common::handshake::DONE_HISTORY);
    let times: Vec<f64> = summary["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["atS"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    let job = &summary["job"];
    assert_eq!(job["status"], "done");
    let stages = job["stages"].as_array().unwrap();
    assert_eq!(stages[0]["stage"], "01-CONSUME");
    assert_eq!(stages[0]["exitStatus"], 0, "{job:#}");
    assert_eq!(stages[1]["exitStatus"], 0, "{job:#}");
    assert_eq!(
        stages[1]["stdOut"]
            .as_str()
            .unwrap()
            .split(' ')
            .next()
            .unwrap(),
        "200",
        "the second stage counts the rows"
    );
    assert_eq!(summary["runCatalog"], "sent");
    // The consumer's rates and latency reach the summary through its report to the bridge.
    let rates = &summary["rates"];
    assert!(rates["workflowFps"].as_f64().unwrap() > 0.0, "{rates}");
    assert!(rates["workflowMbPerS"].as_f64().unwrap() > 0.0, "{rates}");
    let (p50, p99) = (
        rates["latencyP50Ms"].as_f64(),
        rates["latencyP99Ms"].as_f64(),
    );
    assert!(p50.unwrap() <= p99.unwrap(), "{rates}");
    assert_eq!(summary["frames"]["outOfOrder"], 0);

    assert_eq!(summary["results"]["kept"], true);
    assert_eq!(summary["results"]["rows"], FRAMES);
    let file = summary["results"]["file"].as_str().unwrap();
    assert!(
        file.starts_with(keep.to_str().unwrap()),
        "{file} is in the kept work directory"
    );
    let text = std::fs::read_to_string(file).expect("the results file exists");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("uniqueId,count,min,max,mean,sum"));
    let rows: Vec<Vec<f64>> = lines
        .map(|line| line.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len() as u64, FRAMES);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0], (i + 1) as f64, "rows in frame order");
        assert_eq!(row[1], (32 * 24) as f64);
        assert!(
            row[2] <= row[4] && row[4] <= row[3],
            "min <= mean <= max: {row:?}"
        );
        assert!((row[4] * row[1] - row[5]).abs() < 1e-6 * row[5].abs().max(1.0));
    }
}

#[test]
fn three_demo_runs_go_through_one_bridge_and_detector_whose_counter_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let keep = dir.path().join("work");
    let mut cmd = Command::new(BINARY);
    cmd.args(["demo", "--runs", "3", "--frames", "50", "--fps", "200"])
        .args(["--nx", "16", "--ny", "16", "--json", "--quiet", "--keep"])
        .arg(&keep);
    let summary = run_demo(cmd);
    assert_eq!(summary["ok"], true, "{summary:#}");
    let runs = summary["runs"].as_array().expect("one summary a run");
    assert_eq!(runs.len(), 3, "{summary:#}");
    let mut jobs = Vec::new();
    for (k, run) in runs.iter().enumerate() {
        assert_eq!(run["run"], k + 1);
        assert_eq!(run["finalState"], "DONE", "{run:#}");
        assert_eq!(run["frames"]["received"], 50, "{run:#}");
        assert_eq!(run["frames"]["missed"], 0, "{run:#}");
        let first = 1 + 50 * k as i64;
        assert_eq!(run["firstFrameId"], first, "the counter goes on");
        let file = run["results"]["file"].as_str().unwrap();
        let text = std::fs::read_to_string(file).expect("the results file exists");
        let ids: Vec<i64> = text
            .lines()
            .skip(1)
            .map(|row| row.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            ids,
            (first..first + 50).collect::<Vec<_>>(),
            "run {}",
            k + 1
        );
        jobs.push(run["job"]["id"].as_str().unwrap().to_string());
    }
    jobs.dedup();
    assert_eq!(jobs.len(), 3, "a DM job a run: {jobs:?}");
}

#[test]
fn the_demo_refuses_a_work_directory_in_use_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("something"), "").unwrap();
    let mut cmd = Command::new(BINARY);
    cmd.args(["demo", "--keep"]).arg(dir.path());
    bare(&mut cmd);
    let out = common::run_bounded(cmd, Duration::from_secs(30));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("not empty"), "{err}");
}
