//! The handshake in both directions, end to end over real processes on loopback: the workflow
//! ending acquisition itself (seen by p4p as a Bluesky plan sees it) or failing the run, the
//! consumer's books on `Report`, `Members` and its own `Stats` PV (read by p4p through
//! `WorkflowPVs`), the run catalog in DM's shape with the Request's metadata, the processing
//! timeout with and without stopping the job, and two slots running at once.

mod common;

use std::process::Command as Process;
use std::time::Duration;

use common::handshake::*;
use coordinator::{Command, State};
use dm::JobStatus;
use serde_json::{json, Value};

/// The bound of each whole test.
const TEST_LIMIT: Duration = Duration::from_secs(90);

/// `pvabridge workflow ARGS --handshake PREFIX` as a DM stage runs it; its output.
async fn workflow_command(udp: u16, prefix: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = Process::new(BINARY);
    cmd.arg("workflow").args(args).args(["--handshake", prefix]);
    loopback(&mut cmd, udp);
    tokio::task::spawn_blocking(move || common::run_bounded(cmd, WAIT))
        .await
        .unwrap()
}

/// Run a p4p peer script with `args` against the bridge (and more UDP ports to search); its
/// JSON output.
async fn p4p(script: &str, args: &[&str], udp_ports: &[u16]) -> Value {
    let (succeeded, result) = p4p_peer(&common::python(), script, args, udp_ports).await;
    assert!(succeeded, "{script}: {result}");
    result
}

#[test]
fn a_workflow_ending_acquisition_itself_is_seen_by_p4p_and_a_late_acq_done_succeeds() {
    run_test(TEST_LIMIT, async {
        let run = EmbeddedRun::start(
            "wf:end:",
            streaming_workflow(
                "ends-itself",
                &[
                    "workflow ready",
                    "workflow wait-state ACQUIRING --max-wait 30",
                    "workflow end-acquisition --reason 'enough data on the sample'",
                    "sleep 1",
                    "workflow progress $expectedFrames",
                ],
            ),
        )
        .await;
        let mut request = request("ends-itself", "uid-ends");
        request.expected_frames = Some(3);
        let result = p4p(
            "p4p_workflow_ends.py",
            &["wf:end:", &request.to_json()],
            &[run.udp],
        )
        .await;
        assert_eq!(result["final"], "DONE", "{result}\n{}", run.bridge.log());
        assert_eq!(result["left"], "DRAINING", "{result}");
        let on_leaving = result["messageOnLeaving"].as_str().unwrap();
        assert!(
            on_leaving.contains("the workflow ended acquisition: enough data on the sample"),
            "{on_leaving}"
        );
        let states = result["states"].as_array().unwrap();
        assert_eq!(states.last(), Some(&json!("DONE")), "{result}");
        assert_eq!(result["lateAcqDone"], "accepted");
        let catalog = catalog_run(&run.dm, "uid-ends").await;
        let history = catalog.metadata["handshake"]["history"].as_array().unwrap();
        let draining = history
            .iter()
            .find(|t| t["state"] == "DRAINING")
            .expect("the run went through DRAINING");
        assert!(
            draining["message"]
                .as_str()
                .unwrap()
                .contains("the workflow ended acquisition: enough data on the sample"),
            "{draining}"
        );
    });
}

#[test]
fn a_workflow_failing_the_run_fails_it_with_the_reason_and_its_job_is_stopped() {
    run_test(TEST_LIMIT, async {
        let run = EmbeddedRun::start(
            "wf:fail:",
            streaming_workflow(
                "fails-itself",
                &[
                    "workflow ready",
                    "workflow wait-state ACQUIRING --max-wait 30",
                    "sleep 0.5",
                    "workflow fail --message 'the sample moved out of the beam'",
                    "sleep 30",
                ],
            ),
        )
        .await;
        let slot = run.slot();
        slot.start(&request("fails-itself", "uid-fails"))
            .await
            .unwrap();
        assert_eq!(
            slot.wait_for_state(&[State::Ready], WAIT).await,
            Ok(State::Ready)
        );
        // Before ACQ_STARTED the workflow may withdraw its readiness, and give it again.
        let off = workflow_command(run.udp, "wf:fail:", &["ready", "--off"]).await;
        assert!(
            off.status.success(),
            "{}",
            String::from_utf8_lossy(&off.stderr)
        );
        assert_eq!(slot.state().await.unwrap(), State::WaitReady);
        let on = workflow_command(run.udp, "wf:fail:", &["ready"]).await;
        assert!(
            on.status.success(),
            "{}",
            String::from_utf8_lossy(&on.stderr)
        );
        assert_eq!(slot.state().await.unwrap(), State::Ready);
        slot.command(Command::AcqStarted).await.unwrap();
        // Afterwards withdrawing is refused in one line.
        let late = workflow_command(run.udp, "wf:fail:", &["ready", "--off"]).await;
        let err = String::from_utf8_lossy(&late.stderr);
        assert!(!late.status.success());
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("only before ACQ_STARTED"), "{err}");
        let end = slot.wait_for_state(&[State::Failed], WAIT).await;
        assert_eq!(end, Ok(State::Failed), "{}", run.bridge.log());
        let status = slot.status().await.unwrap();
        assert!(
            status
                .message
                .contains("the workflow failed the run: the sample moved out of the beam"),
            "{}",
            status.message
        );
        let job = job_until(&run.dm, &status.job_id, |job| job.status.is_final()).await;
        assert_eq!(job.status, JobStatus::Aborted, "the DM job is stopped");
        let refused = slot.command(Command::AcqDone).await.unwrap_err();
        assert!(
            refused.to_string().contains("refused in state FAILED"),
            "{refused}"
        );
    });
}

#[test]
fn the_consumers_books_reach_members_and_its_stats_pv_is_read_by_p4p_through_workflow_pvs() {
    const FRAMES: u64 = 12;
    run_test(TEST_LIMIT, async {
        let stats_udp = common::free_udp_port();
        let run = EmbeddedRun::start(
            "wf:books:",
            workflow(
                "books",
                &[(
                    "01-CONSUME",
                    "EPICS_PVA_ADDR_LIST=\"$searchList\" pvabridge workflow consume \
                     --handshake $handshakePrefix --drain-timeout 1 --progress-period 0.2 \
                     --serve-udp-port $statsPort --quiet",
                )],
            ),
        )
        .await;
        let detector_udp = common::free_udp_port();
        let mut simdet = Process::new(BINARY);
        simdet.args([
            "simdet",
            "--pv",
            "wf:det:Image",
            "--trigger",
            "wf:det:Acquire",
        ]);
        simdet.args(["--nx", "8", "--ny", "8", "--fps", "200", "--frames"]);
        simdet.arg(FRAMES.to_string());
        let _detector = common::spawn_server(
            simdet,
            detector_udp,
            &run.dir.path().join("simdet.log"),
            &[detector_udp],
        );

        let slot = run.slot();
        let mut request = request("books", "0123456789abcdef");
        request.expected_frames = Some(FRAMES);
        request.data_channel = Some("wf:det:Image".into());
        request.experiment_name = Some("exp-books".into());
        request.metadata = Some(
            json!({"plan_name": "count", "sample": "Si", "scan_id": 42})
                .as_object()
                .unwrap()
                .clone(),
        );
        request
            .args_dict
            .insert("statsPort".into(), stats_udp.to_string().into());
        // The stage searches the bridge and the detector.
        let search_list = format!("127.0.0.1:{} 127.0.0.1:{detector_udp}", run.udp);
        request
            .args_dict
            .insert("searchList".into(), search_list.into());
        slot.start(&request).await.unwrap();
        let ready = slot.wait_for_state(&[State::Ready], WAIT).await;
        assert_eq!(ready, Ok(State::Ready), "{}", run.bridge.log());
        slot.command(Command::AcqStarted).await.unwrap();
        let mut config = pva::ClientConfig::isolated(([127, 0, 0, 1], detector_udp).into());
        config.addr_list.clear();
        config.addr_list.push(([127, 0, 0, 1], detector_udp).into());
        let detector = pva::client::Context::new(config).unwrap();
        detector
            .put("wf:det:Acquire")
            .set("value", 1i32)
            .exec()
            .await
            .unwrap();

        // During the run, as a Bluesky plan would: the workflow's PVs by name, then Stats.
        let seen = p4p(
            "p4p_workflow_pvs.py",
            &["wf:books:", &FRAMES.to_string()],
            &[run.udp, stats_udp],
        )
        .await;
        assert_eq!(seen["workflowPVs"], json!(["wf:books:wf:Stats"]), "{seen}");
        assert_eq!(seen["statsId"], "pvabridge:workflow/Stats:1.0");
        assert_eq!(seen["stats"]["received"], FRAMES, "{seen}");
        assert_eq!(seen["stats"]["missed"], 0, "{seen}");
        assert!(seen["stats"]["uniqueId"].as_i64().unwrap() > 0, "{seen}");
        assert!(
            seen["stats"]["max"].as_f64() >= seen["stats"]["min"].as_f64(),
            "{seen}"
        );
        assert_eq!(seen["membersId"], "epics:nt/NTTable:1.0");
        assert_eq!(seen["members"]["member"], json!([0]), "{seen}");
        assert_eq!(seen["members"]["ready"], json!([1]), "{seen}");

        slot.command(Command::AcqDone).await.unwrap();
        let end = slot.wait_for_state(&[State::Done], WAIT).await;
        assert_eq!(end, Ok(State::Done), "{}", run.bridge.log());
        let status = slot.status().await.unwrap();
        assert_eq!(status.frames_received, FRAMES as i64);
        assert_eq!(status.frames_missed, 0);
        assert_eq!(status.progress, FRAMES as i64);
        assert!(status.ready);
        assert_eq!(status.workflow_pvs, ["wf:books:wf:Stats"]);

        // The run catalog entry in DM's shape, with the Request's metadata and the books.
        let entry = catalog_run_in(&run.dm, "exp-books", "0123456789abcdef").await;
        assert_eq!(entry.run_id, "uid_01234567");
        assert!(entry.id.is_some());
        assert_eq!(entry.metadata["plan_name"], "count");
        assert_eq!(entry.metadata["scan_id"], 42);
        let handshake = &entry.metadata["handshake"];
        assert_eq!(handshake["finalState"], "DONE");
        assert_eq!(handshake["members"][0]["received"], FRAMES);
        assert_eq!(handshake["frames"]["received"], FRAMES);
        assert_eq!(handshake["stages"][0]["name"], "01-CONSUME");
        assert_eq!(handshake["stages"][0]["exitStatus"], 0);
        let job = run.dm.get_job(&status.job_id).await.unwrap();
        assert_eq!(job.variable("experimentName").as_deref(), Some("exp-books"));

        let listed = run.dm_command(&["list-runs", "--experiment", "exp-books"]);
        assert!(
            listed.contains("experiment=exp-books runId=uid_01234567 state=DONE")
                && listed.contains("metadata=plan_name,sample,scan_id"),
            "{listed}"
        );
    });
}

#[test]
fn a_processing_timeout_leaves_the_job_running_unless_told_to_stop_it() {
    run_test(TEST_LIMIT, async {
        let stream = stage_command(&[
            "workflow ready",
            "workflow wait-state PROCESSING --max-wait 30",
        ]);
        let stages = [("01-STREAM", stream.as_str()), ("02-ANALYSE", "sleep 4")];
        let options = ["--drain-idle-timeout", "0.3", "--processing-timeout", "1"];
        let left = EmbeddedRun::start_with("wf:left:", workflow("slow", &stages), &options);
        let mut stopping = options.to_vec();
        stopping.push("--stop-job-on-timeout");
        let stopped = EmbeddedRun::start_with("wf:stop:", workflow("slow", &stages), &stopping);
        let (left, stopped) = tokio::join!(left, stopped);
        for (run, uid) in [(&left, "uid-left"), (&stopped, "uid-stop")] {
            let slot = run.slot();
            start_acquiring(&slot, &request("slow", uid)).await;
            slot.command(Command::AcqDone).await.unwrap();
        }
        let (a, b) = (left.slot(), stopped.slot());
        let (end_a, end_b) = tokio::join!(
            a.wait_for_state(&[State::Timeout], WAIT),
            b.wait_for_state(&[State::Timeout], WAIT)
        );
        assert_eq!(end_a, Ok(State::Timeout), "{}", left.bridge.log());
        assert_eq!(end_b, Ok(State::Timeout), "{}", stopped.bridge.log());

        let status = a.status().await.unwrap();
        assert!(
            status.message.contains("left it running")
                && status
                    .message
                    .contains(&format!("pvabridge dm get-job --id {}", status.job_id)),
            "{}",
            status.message
        );
        let job = left.dm.get_job(&status.job_id).await.unwrap();
        assert_eq!(job.status, JobStatus::Running, "the job goes on");
        let job = job_until(&left.dm, &status.job_id, |job| job.status.is_final()).await;
        assert_eq!(job.status, JobStatus::Done, "and ends by itself");
        let catalog = catalog_run(&left.dm, "uid-left").await;
        assert_eq!(catalog.metadata["handshake"]["finalState"], "TIMEOUT");

        let status = b.status().await.unwrap();
        assert!(status.message.contains("was stopped"), "{}", status.message);
        let job = job_until(&stopped.dm, &status.job_id, |job| job.status.is_final()).await;
        assert_eq!(
            job.status,
            JobStatus::Aborted,
            "--stop-job-on-timeout stops it"
        );
    });
}

#[test]
fn two_slots_run_at_once_to_done_each_with_its_own_job() {
    run_test(TEST_LIMIT, async {
        let run = EmbeddedRun::start_with(
            "wf:a:",
            streaming_workflow(
                "pair",
                &[
                    "workflow ready",
                    "workflow wait-state DRAINING --max-wait 30",
                    "workflow progress $expectedFrames",
                    "sleep 1",
                ],
            ),
            &["--prefix", "wf:b:"],
        )
        .await;
        let drive = |prefix: &'static str, uid: &'static str| {
            let slot = slot(run.udp, prefix);
            async move {
                let mut request = request("pair", uid);
                request.expected_frames = Some(2);
                start_acquiring(&slot, &request).await;
                slot.command(Command::AcqDone).await.unwrap();
                let end = slot.wait_for_state(&[State::Done], WAIT).await;
                (end, slot.status().await.unwrap())
            }
        };
        let ((end_a, a), (end_b, b)) =
            tokio::join!(drive("wf:a:", "uid-a"), drive("wf:b:", "uid-b"));
        assert_eq!(end_a, Ok(State::Done), "{}", run.bridge.log());
        assert_eq!(end_b, Ok(State::Done), "{}", run.bridge.log());
        assert_ne!(a.job_id, b.job_id, "each slot has its own job");
        for (status, prefix) in [(&a, "wf:a:"), (&b, "wf:b:")] {
            let job = run.dm.get_job(&status.job_id).await.unwrap();
            assert_eq!(job.variable("handshakePrefix").as_deref(), Some(prefix));
            assert_eq!(status.frames_received, 2);
        }
        let log = run.bridge.log();
        let started = |prefix: &str| {
            log.lines()
                .position(|l| l.contains(&format!("slot {prefix} ACQUIRING -> DRAINING")))
                .unwrap_or_else(|| panic!("{prefix} never drained:\n{log}"))
        };
        let done = |prefix: &str| {
            log.lines()
                .position(|l| l.contains(&format!("slot {prefix} PROCESSING -> DONE")))
                .unwrap_or_else(|| panic!("{prefix} never done:\n{log}"))
        };
        assert!(
            started("wf:a:") < done("wf:b:") && started("wf:b:") < done("wf:a:"),
            "the runs overlap:\n{log}"
        );
    });
}
