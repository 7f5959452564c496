//! `pvabridge workflow consume` as a DM stage, over real processes on loopback: frames that never
//! come are counted lost, the stage exits 3 and the run ends FAILED with the counts in the PVs; and
//! a stage started outside a run refuses in one line.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::handshake::EmbeddedBridge;
use common::{search_only, spawn_server};
use coordinator::{Command as Handshake, HandshakeClient, RunRequest, State};
use dm::{Stage, Workflow};
use pva::client::Context;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");
const WAIT: Duration = Duration::from_secs(30);

#[test]
fn frames_that_never_come_are_lost_and_fail_the_run_with_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (bridge_udp, detector_udp) = (common::free_udp_port(), common::free_udp_port());
    let search = [bridge_udp, detector_udp];
    let bridge = EmbeddedBridge::start(dir.path(), "wc:lost:", bridge_udp, &search, |_| {});
    let mut simdet = Command::new(BINARY);
    simdet.args([
        "simdet",
        "--pv",
        "wc:det:Image",
        "--trigger",
        "wc:det:Acquire",
    ]);
    simdet.args(["--nx", "16", "--ny", "16", "--fps", "200", "--frames", "20"]);
    let _detector = spawn_server(
        simdet,
        detector_udp,
        &dir.path().join("simdet.log"),
        &search,
    );

    // Outside a run the stage refuses at once.
    let mut early = Command::new(BINARY);
    early.args([
        "workflow",
        "consume",
        "--handshake",
        "wc:lost:",
        "--timeout",
        "5",
    ]);
    search_only(&mut early, &search);
    let out = common::run_bounded(early, WAIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("wc:lost: is IDLE, not in a run"), "{err}");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(90), async {
            let dm = bridge.dm();
            // No --channel and no --expected: both come from the run's Request.
            let stage = Stage {
                command: format!(
                    "'{BINARY}' workflow consume --handshake $handshakePrefix --drain-timeout 1 --json"
                ),
                ..Stage::default()
            };
            dm.add_workflow(&Workflow {
                name: "lost".into(),
                stages: BTreeMap::from([("01-CONSUME".to_string(), stage)]),
                ..Workflow::default()
            })
            .await
            .unwrap();

            let mut config = pva::ClientConfig::isolated(([127, 0, 0, 1], bridge_udp).into());
            config.addr_list.push(([127, 0, 0, 1], detector_udp).into());
            let ctx = Context::new(config).unwrap();
            let slot = HandshakeClient::new(ctx.clone(), "wc:lost:").with_timeout(WAIT);
            let mut request = RunRequest::new("lost");
            request.expected_frames = Some(25);
            request.data_channel = Some("wc:det:Image".into());
            request.run_uid = Some("uid-lost".into());
            slot.start(&request).await.unwrap();
            let ready = slot.wait_for_state(&[State::Ready], WAIT).await;
            let log = || bridge.log();
            assert_eq!(ready, Ok(State::Ready), "{}", log());
            slot.command(Handshake::AcqStarted).await.unwrap();
            ctx.put("wc:det:Acquire")
                .set("value", 1i32)
                .exec()
                .await
                .unwrap();
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                let acquire = ctx.get("wc:det:Acquire").exec().await.unwrap();
                if acquire.get("value").and_then(|v| v.as_i64()) == Some(0) {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "the detector never finished");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            slot.command(Handshake::AcqDone).await.unwrap();
            let end = slot.wait_for_state(&[State::Failed], WAIT).await;
            assert_eq!(end, Ok(State::Failed), "{}", log());

            let status = slot.status().await.unwrap();
            assert!(status.message.contains("exit status 3"), "{}", status.message);
            assert_eq!(status.frames_expected, 25);
            assert_eq!(status.frames_received, 20);
            assert_eq!(status.frames_missed, 5);
            assert!(
                status
                    .workflow_message
                    .starts_with("20 frames received, 5 missed of 25; statistics of 20 frames"),
                "{}",
                status.workflow_message
            );
            let job = dm.get_job(&status.job_id).await.unwrap();
            let stages = &job.workflow.as_ref().unwrap().stages;
            let consume = &stages["01-CONSUME"].child_processes.as_ref().unwrap()["0"];
            assert_eq!(consume.exit_status, Some(3));
            assert!(consume.std_err.contains("5 frame(s) lost on wc:det:Image"));
            let summary: Value = serde_json::from_str(consume.std_out.trim()).unwrap();
            assert_eq!(summary["state"], "DRAINING");
            assert_eq!(summary["stream"]["received"], 20);
            assert_eq!(summary["stream"]["missed"], 5);
            assert_eq!(summary["stream"]["expected"], 25);
            assert_eq!(summary["stream"]["missed_ranges"], serde_json::json!([[21, 25]]));
            assert_eq!(summary["rows"], 20);
            let rows = std::fs::read_to_string(Path::new(&consume.working_dir).join("frame-stats.csv"))
                .unwrap()
                .lines()
                .count();
            assert_eq!(rows, 21, "a header and the 20 frames that came");
        })
        .await
        .expect("the test ends in time");
    });
}
