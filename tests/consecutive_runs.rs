//! Consecutive streaming runs through `pvabridge serve` (embedded DM) with a detector whose
//! frame counter continues from run to run, as areaDetector's ArrayCounter does: a p4p NTNDArray
//! server, pvapy-ad-sim-server and `pvabridge simdet --start-id`. Every run must end DONE with
//! nothing missed, and each DM job's statistics file must hold exactly that run's frames.

mod common;

use std::path::Path;
use std::time::Duration;

use common::handshake::workflow;
use common::handshake::EmbeddedBridge;
use common::proc::{p4p_detector, pvapy_ad_sim_server, simdet, Proc};
use coordinator::{Command as Handshake, HandshakeClient, RunRequest, State};
use pva::client::Context;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
/// Frames of each run.
const FRAMES: u64 = 40;
const RUNS: u64 = 3;

/// How the Bluesky side makes the detector acquire one run.
enum Trigger {
    /// tests/peers/p4p_detector.py: told on stdin to run.
    Stdin,
    /// `pvabridge simdet --trigger PV`: put 1 to PV.
    Put(&'static str),
    /// pvapy-ad-sim-server streams all along: a run is the frames the workflow takes.
    FreeRunning,
}

/// The detector process of a test.
struct Detector {
    process: Proc,
    trigger: Trigger,
}

impl Detector {
    async fn acquire(&mut self, ctx: &Context) {
        match self.trigger {
            Trigger::Stdin => {
                self.process.send(&format!("run {FRAMES} 200"));
                self.process.wait_for_stdout("DONE", WAIT);
            }
            Trigger::Put(acquire) => {
                ctx.put(acquire).set("value", 1i32).exec().await.unwrap();
                let deadline = tokio::time::Instant::now() + WAIT;
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let now = ctx.get(acquire).exec().await.unwrap();
                    if now.get("value").and_then(|v| v.as_i64()) == Some(0) {
                        break;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "simdet never finished"
                    );
                }
            }
            Trigger::FreeRunning => {}
        }
    }
}

/// Run `RUNS` runs of `FRAMES` frames through one bridge and one detector serving `channel` on
/// `detector_udp`; `first` is the id of the first run's first frame, when the test knows it.
fn consecutive_runs(
    name: &str,
    channel: &str,
    detector_udp: u16,
    detector: Detector,
    first: Option<i64>,
) {
    let dir = tempfile::tempdir().unwrap();
    let bridge_udp = common::free_udp_port();
    let search = [bridge_udp, detector_udp];
    let prefix = format!("{name}:");
    let bridge = EmbeddedBridge::start(dir.path(), &prefix, bridge_udp, &search, |_| {});
    let log = || bridge.log();
    common::handshake::run_test(Duration::from_secs(150), async {
        let mut detector = detector;
        let dm = bridge.dm();
        let stage =
            "pvabridge workflow consume --handshake $handshakePrefix --drain-timeout 3 --json";
        dm.add_workflow(&workflow("runs", &[("01-CONSUME", stage)]))
            .await
            .unwrap();
        let mut config = pva::ClientConfig::isolated(([127, 0, 0, 1], bridge_udp).into());
        config.addr_list.push(([127, 0, 0, 1], detector_udp).into());
        let ctx = Context::new(config).unwrap();
        let slot = HandshakeClient::new(ctx.clone(), &prefix).with_timeout(WAIT);
        let mut last_id: Option<i64> = None;
        for run in 1..=RUNS {
            let mut request = RunRequest::new("runs");
            request.expected_frames = Some(FRAMES);
            request.data_channel = Some(channel.into());
            request.run_uid = Some(format!("uid-{name}-{run}"));
            slot.start(&request).await.unwrap();
            let ready = slot.wait_for_state(&[State::Ready], WAIT).await;
            assert_eq!(ready, Ok(State::Ready), "run {run}: {}", log());
            slot.command(Handshake::AcqStarted).await.unwrap();
            detector.acquire(&ctx).await;
            slot.command(Handshake::AcqDone).await.unwrap();
            let finals = [State::Done, State::Failed, State::Aborted, State::Timeout];
            let end = slot.wait_for_state(&finals, WAIT).await;
            let status = slot.status().await.unwrap();
            assert_eq!(
                end,
                Ok(State::Done),
                "run {run}: {}\n{}",
                status.message,
                log()
            );
            let job = dm.get_job(&status.job_id).await.unwrap();
            let stages = &job.workflow.as_ref().unwrap().stages;
            let consume = &stages["01-CONSUME"].child_processes.as_ref().unwrap()["0"];
            let summary: Value = serde_json::from_str(consume.std_out.trim()).unwrap();
            assert_eq!(
                status.frames_received, FRAMES as i64,
                "run {run}: {summary}"
            );
            assert_eq!(status.frames_missed, 0, "run {run}: {summary}");
            assert_eq!(summary["stream"]["missed"], 0, "run {run}: {summary}");
            assert_eq!(
                summary["stream"]["counter_resets"], 0,
                "run {run}: {summary}"
            );
            let stats =
                std::fs::read_to_string(Path::new(&consume.working_dir).join("frame-stats.csv"))
                    .unwrap();
            let ids: Vec<i64> = stats
                .lines()
                .skip(1)
                .map(|row| row.split(',').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(ids.len() as u64, FRAMES, "run {run}: {stats}");
            assert!(
                ids.windows(2).all(|w| w[1] == w[0] + 1),
                "run {run}: one run's frames, in order: {ids:?}"
            );
            match first {
                Some(first) => {
                    let want = first + (run as i64 - 1) * FRAMES as i64;
                    assert_eq!(ids[0], want, "run {run}: {ids:?}");
                }
                None => assert!(
                    last_id.is_none_or(|last| ids[0] > last),
                    "run {run} starts after run {}: {ids:?}",
                    run - 1
                ),
            }
            // The monitor's initial value was the previous run's last frame, not counted.
            if let (Some(last), Some(first)) = (last_id, first) {
                assert_eq!(
                    summary["stream"]["initial_id"], last,
                    "run {run}: {summary}"
                );
                assert_eq!(last + 1, first + (run as i64 - 1) * FRAMES as i64);
            }
            last_id = ids.last().copied();
            slot.command(Handshake::Reset).await.unwrap();
            let idle = slot.wait_for_state(&[State::Idle], WAIT).await;
            assert_eq!(idle, Ok(State::Idle), "run {run}: {}", log());
        }
    });
}

#[test]
fn three_runs_with_a_p4p_detector_whose_counter_continues() {
    let udp = common::free_udp_port();
    let det = p4p_detector(udp, "runs:p4p:Image", 1);
    consecutive_runs(
        "runs:p4p",
        "runs:p4p:Image",
        udp,
        Detector {
            process: det,
            trigger: Trigger::Stdin,
        },
        Some(1),
    );
}

#[test]
fn three_runs_with_simdet_starting_from_a_counter_left_by_earlier_runs() {
    let udp = common::free_udp_port();
    let det = simdet(
        udp,
        &[
            "--pv",
            "runs:sim:Image",
            "--trigger",
            "runs:sim:Acquire",
            "--nx",
            "16",
            "--ny",
            "16",
            "--fps",
            "200",
            "--frames",
            &FRAMES.to_string(),
            "--start-id",
            "70001",
        ],
    );
    consecutive_runs(
        "runs:sim",
        "runs:sim:Image",
        udp,
        Detector {
            process: det,
            trigger: Trigger::Put("runs:sim:Acquire"),
        },
        Some(70001),
    );
}

#[test]
fn three_runs_with_pvapy_ad_sim_server_streaming_all_along() {
    let udp = common::free_udp_port();
    let det = pvapy_ad_sim_server(udp, "runs:pvapy:Image", 50, 120);
    consecutive_runs(
        "runs:pvapy",
        "runs:pvapy:Image",
        udp,
        Detector {
            process: det,
            trigger: Trigger::FreeRunning,
        },
        None,
    );
}
