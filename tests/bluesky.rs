//! The Bluesky example end to end: `examples/bluesky/run_stream.py` runs the pvabridge-bluesky
//! package's `streaming_run` (from `python/src`, as in the tree) under a real RunEngine against
//! `pvabridge serve --embedded-dm`, whose DM workflow (`examples/bluesky/stream-stats.workflow.json`)
//! runs `pvabridge workflow consume`, with `pvabridge simdet --ad-prefix` as the detector. All on
//! loopback with ports of their own. The package's own tests are in `python/tests` (pytest, run by
//! ./scripts/test); this one checks what the DM side kept of the run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::handshake::EmbeddedBridge;
use common::{search_only, spawn_server};

use dm::{JobStatus, Workflow};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");
const FRAMES: u64 = 40;
const RUNS: usize = 1;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/bluesky")
        .join(name)
}

#[test]
fn a_bluesky_plan_drives_streaming_runs_through_the_bridge_to_done() {
    let python = common::python_with_bluesky();
    let dir = tempfile::tempdir().unwrap();
    let (bridge_udp, detector_udp) = (common::free_udp_port(), common::free_udp_port());
    let search = [bridge_udp, detector_udp];

    // The stage command says `pvabridge`: the binary under test comes first on the PATH the
    // embedded DM service hands its stages.
    let bin_dir = Path::new(BINARY).parent().unwrap();
    let path = std::env::join_paths(std::iter::once(bin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let bridge = EmbeddedBridge::start(dir.path(), "bs:wf:", bridge_udp, &search, |serve| {
        serve.env("PATH", path).env("RUST_LOG", "info");
    });

    let mut simdet = Command::new(BINARY);
    simdet.args(["simdet", "--ad-prefix", "bs:det:"]);
    simdet.args(["--nx", "64", "--ny", "48", "--fps", "200", "--json"]);
    let simdet_log = dir.path().join("simdet.log");
    let mut detector = spawn_server(simdet, detector_udp, &simdet_log, &search);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dm = bridge.dm();
    let workflow: Workflow = serde_json::from_str(
        &std::fs::read_to_string(example("stream-stats.workflow.json")).unwrap(),
    )
    .unwrap();
    runtime.block_on(dm.add_workflow(&workflow)).unwrap();

    let mut plan = Command::new(&python);
    plan.arg(example("run_stream.py"))
        .args(["--prefix", "bs:wf:", "--detector", "bs:det:", "--workflow"])
        .arg(&workflow.name)
        .args(["--frames", &FRAMES.to_string(), "--runs", &RUNS.to_string()])
        .current_dir(dir.path())
        .env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("python/src"),
        );
    search_only(&mut plan, &search);
    plan.env(
        "EPICS_PVA_BROADCAST_PORT",
        common::free_udp_port().to_string(),
    );
    let out = common::run_bounded(plan, Duration::from_secs(90));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let bridge_text = || bridge.log();
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "the plan printed {stdout}\nstderr:\n{stderr}\nbridge:\n{}",
            bridge_text()
        )
    });
    assert!(
        out.status.success(),
        "{result:#}\nstderr:\n{stderr}\nbridge:\n{}",
        bridge_text()
    );

    let runs = result["runs"].as_array().unwrap();
    assert_eq!(runs.len(), RUNS);
    let catalog = runtime.block_on(dm.list_runs("pvabridge")).unwrap();
    for run in runs {
        assert_eq!(run["exitStatus"], "success", "{run:#}");
        let data = &run["data"];
        assert_eq!(data["state"], "DONE", "{run:#}");
        assert_eq!(data["frames_expected"], FRAMES);
        assert_eq!(data["frames_received"], FRAMES);
        assert_eq!(data["frames_missed"], 0);
        assert_eq!(data["job_status"], "done");

        let uid = run["uid"].as_str().unwrap();
        let entry = catalog
            .iter()
            .find(|entry| entry.run_id == dm::ExperimentRun::run_id_for_uid(uid))
            .unwrap_or_else(|| panic!("run {uid} is not in the DM run catalog"));
        assert_eq!(entry.metadata["handshake"]["finalState"], "DONE");
        assert_eq!(entry.metadata["handshake"]["request"]["runUid"], uid);
        // The run's start document (the plan's md in it) reached the catalog beside the
        // handshake's record.
        assert_eq!(entry.metadata["uid"], uid);
        assert_eq!(entry.metadata["workflow"], workflow.name.as_str());
        assert_eq!(entry.metadata["num_frames"], FRAMES);
        assert_eq!(entry.metadata["sample"], "simulated spots", "the plan's md");

        let job = runtime
            .block_on(dm.get_job(data["job_id"].as_str().unwrap()))
            .unwrap();
        assert_eq!(job.status, JobStatus::Done);
        assert_eq!(job.variable("runUid").as_deref(), Some(uid));
        let stages = &job.workflow.as_ref().unwrap().stages;
        let consume = &stages["01-CONSUME"].child_processes.as_ref().unwrap()["0"];
        assert_eq!(consume.exit_status, Some(0), "{}", consume.std_err);
        let summary: Value = serde_json::from_str(consume.std_out.trim()).unwrap();
        assert_eq!(summary["stream"]["received"], FRAMES);
        assert_eq!(summary["stream"]["missed"], 0);
        assert_eq!(summary["stream"]["duplicates"], 0);
        assert_eq!(summary["rows"], FRAMES);
        let results =
            std::fs::read_to_string(Path::new(&consume.working_dir).join("frame-stats.csv"))
                .expect("the results file is in the job's working directory");
        assert_eq!(
            results.lines().count() as u64,
            FRAMES + 1,
            "a header and a row per frame"
        );
    }

    // The detector took one acquisition per run.
    let _ = detector.0.kill();
    let _ = detector.0.wait();
    let mut printed = String::new();
    std::io::Read::read_to_string(&mut detector.0.stdout.take().unwrap(), &mut printed).unwrap();
    let acquisitions: Vec<Value> = printed
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(acquisitions.len(), RUNS, "{printed}");
    for acquisition in acquisitions {
        assert_eq!(acquisition["published"]["frames"], FRAMES);
        assert!(!acquisition["published"]["stopped"].as_bool().unwrap());
    }
}
