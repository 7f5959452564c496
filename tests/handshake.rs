//! The handshake end to end over real processes: `pvabridge serve` (with the embedded DM service,
//! or with `pvabridge dm-service` apart), a DM workflow whose stage runs `pvabridge workflow ...`,
//! and the Bluesky side played by our PVA client (and once by p4p), all on loopback with ports of
//! their own.

mod common;

use std::process::Command as Process;
use std::time::Duration;

use common::handshake::*;
use coordinator::{Command, State};
use dm::JobStatus;
use serde_json::Value;

/// The bound of each whole test.
const TEST_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_streaming_run_ends_done_with_every_frame_accounted_for() {
    run_test(TEST_LIMIT, async {
        let run = EmbeddedRun::start(
            "e2e:done:",
            workflow(
                "stream-done",
                &[
                    (
                        "01-STREAM",
                        &stage_command(&[
                            "workflow ready",
                            "workflow wait-state DRAINING --max-wait 30",
                            "workflow progress $expectedFrames",
                            "workflow message \"processed $expectedFrames frames\"",
                        ]),
                    ),
                    ("02-FINISH", "echo finished $runUid"),
                ],
            ),
        )
        .await;

        let slot = run.slot();
        let states = watch_states(run.udp, &slot);
        let mut request = request("stream-done", "uid-done");
        request.expected_frames = Some(4);
        start_acquiring(&slot, &request).await;
        slot.command(Command::AcqDone).await.unwrap();
        let end = slot.wait_for_state(&[State::Done], WAIT).await;
        assert_eq!(end, Ok(State::Done), "{}", run.bridge.log());

        let states = states.await.unwrap();
        assert!(
            states.windows(2).all(|w| w[0].index() < w[1].index()),
            "states go forward: {states:?}"
        );
        for state in [State::Ready, State::Acquiring, State::Draining, State::Done] {
            assert!(states.contains(&state), "{state} missing from {states:?}");
        }
        let status = slot.status().await.unwrap();
        assert_eq!(status.frames_expected, 4);
        assert_eq!(status.frames_received, 4);
        assert_eq!(status.frames_missed, 0);
        assert_eq!(status.workflow_message, "processed 4 frames");
        assert_eq!(status.job_status, "done");
        assert_eq!(status.workflow, "stream-done");
        assert!(!status.owner.is_empty());

        let job = run.dm.get_job(&status.job_id).await.unwrap();
        assert_eq!(job.status, JobStatus::Done);
        assert_eq!(
            job.variable("handshakePrefix").as_deref(),
            Some("e2e:done:")
        );
        let stages = &job.workflow.as_ref().unwrap().stages;
        let finish = &stages["02-FINISH"].child_processes.as_ref().unwrap()["1"];
        assert_eq!(finish.std_out.trim(), "finished uid-done");

        let catalog = catalog_run(&run.dm, "uid-done").await;
        assert_eq!(
            catalog.metadata["handshake"]["jobId"],
            status.job_id.as_str()
        );
        assert_eq!(catalog.metadata["handshake"]["finalState"], "DONE");
        assert_eq!(catalog.metadata["handshake"]["job"]["status"], "done");
        assert_eq!(
            catalog.metadata["handshake"]["request"]["expectedFrames"],
            4
        );
        assert_eq!(catalog.metadata["handshake"]["frames"]["received"], 4);
        assert!(catalog.metadata["handshake"]["secondsInState"]["ACQUIRING"]
            .as_f64()
            .is_some());
        let log = run.bridge.log();
        assert!(
            log.contains("PROCESSING -> DONE"),
            "transitions are logged:\n{log}"
        );
    });
}

#[test]
fn a_workflow_that_never_becomes_ready_times_out_and_its_job_is_stopped() {
    run_test(TEST_LIMIT, async {
        let run = EmbeddedRun::start(
            "e2e:timeout:",
            workflow("never-ready", &[("01-SLEEP", "sleep 60")]),
        )
        .await;

        let slot = run.slot();
        let mut request = request("never-ready", "uid-timeout");
        request.ready_timeout = Some(2.0);
        slot.start(&request).await.unwrap();
        let err = slot
            .wait_for_state(&[State::Ready], WAIT)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ended in TIMEOUT"), "{err}");
        let status = slot.status().await.unwrap();
        assert!(
            status.message.contains("did not become ready within 2 s"),
            "{}",
            status.message
        );
        let job = job_until(&run.dm, &status.job_id, |job| job.status.is_final()).await;
        assert_eq!(job.status, JobStatus::Aborted, "the DM job is stopped");
        let catalog = catalog_run(&run.dm, "uid-timeout").await;
        assert_eq!(catalog.metadata["handshake"]["finalState"], "TIMEOUT");
        assert_eq!(catalog.metadata["handshake"]["job"]["status"], "aborted");
    });
}

#[test]
fn a_job_failing_mid_run_fails_the_run_with_dms_error() {
    run_test(TEST_LIMIT, async {
        let run = EmbeddedRun::start(
            "e2e:fail:",
            streaming_workflow(
                "fails",
                &[
                    "workflow ready",
                    "workflow wait-state ACQUIRING --max-wait 30",
                    "echo 'detector stream broke at frame 3' >&2 && exit 3",
                ],
            ),
        )
        .await;

        let slot = run.slot();
        start_acquiring(&slot, &request("fails", "uid-fail")).await;
        let end = slot.wait_for_state(&[State::Failed], WAIT).await;
        assert_eq!(end, Ok(State::Failed), "{}", run.bridge.log());
        let status = slot.status().await.unwrap();
        assert!(
            status.message.contains("detector stream broke at frame 3")
                && status.message.contains("exit status 3"),
            "DM's error is in Message: {}",
            status.message
        );
        assert_eq!(status.job_status, "failed");
        let refused = slot.command(Command::AcqDone).await.unwrap_err();
        assert!(
            refused.to_string().contains("refused in state FAILED"),
            "{refused}"
        );
        let catalog = catalog_run(&run.dm, "uid-fail").await;
        assert_eq!(catalog.metadata["handshake"]["finalState"], "FAILED");
    });
}

#[test]
fn abort_during_acquisition_stops_the_dm_job() {
    run_test(TEST_LIMIT, async {
        let run = EmbeddedRun::start(
            "e2e:abort:",
            streaming_workflow("long", &["workflow ready", "sleep 60"]),
        )
        .await;

        let slot = run.slot();
        start_acquiring(&slot, &request("long", "uid-abort")).await;
        slot.command(Command::Abort).await.unwrap();
        assert_eq!(
            slot.state().await.unwrap(),
            State::Aborted,
            "ABORT takes effect before its put returns"
        );
        let job_id = slot.status().await.unwrap().job_id;
        let job = job_until(&run.dm, &job_id, |job| job.status.is_final()).await;
        assert_eq!(job.status, JobStatus::Aborted, "{}", run.bridge.log());
        let catalog = catalog_run(&run.dm, "uid-abort").await;
        assert_eq!(catalog.metadata["handshake"]["finalState"], "ABORTED");
        assert_eq!(catalog.metadata["handshake"]["job"]["status"], "aborted");
        slot.command(Command::Reset).await.unwrap();
        assert_eq!(slot.state().await.unwrap(), State::Idle);
    });
}

#[test]
fn a_bridge_restarted_during_processing_follows_the_same_job_to_done() {
    run_test(TEST_LIMIT, async {
        let dir = tempfile::tempdir().unwrap();
        let udp = common::free_udp_port();
        let users = dir.path().join("users");
        std::fs::write(&users, "dmuser|secret\n").unwrap();
        let mut service = Process::new(BINARY);
        service
            .args(["dm-service", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("dm"))
            .arg("--users")
            .arg(&users);
        loopback(&mut service, udp);
        let (_service, line) = spawn_reporting(service, &dir.path().join("dm.log"));
        let dm_url = line
            .trim()
            .strip_prefix("dm-service listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let dm = dm_client(&dm_url, &users);
        let marker = dir.path().join("go");
        dm.add_workflow(&streaming_workflow("survives", &["workflow ready", "workflow wait-state DRAINING --max-wait 30", "workflow progress $expectedFrames", "i=0 && while [ ! -f $markerFile ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done && test -f $markerFile"]))
        .await
        .unwrap();
        let dm_args = [
            "--dm-url",
            dm_url.as_str(),
            "--dm-login-file",
            users.to_str().unwrap(),
        ];

        let first = serve(dir.path(), udp, "e2e:restart:", &dm_args, "bridge1.log");
        let slot = slot(udp, "e2e:restart:");
        let mut request = request("survives", "uid-restart");
        request.expected_frames = Some(2);
        request
            .args_dict
            .insert("markerFile".into(), marker.display().to_string().into());
        start_acquiring(&slot, &request).await;
        slot.command(Command::AcqDone).await.unwrap();
        assert_eq!(
            slot.wait_for_state(&[State::Processing], WAIT).await,
            Ok(State::Processing),
            "{}",
            first.log()
        );
        let job_before = slot.status().await.unwrap().job_id;
        assert!(!job_before.is_empty());
        drop(first);

        let second = serve(dir.path(), udp, "e2e:restart:", &dm_args, "bridge2.log");
        let status = slot.status().await.unwrap();
        assert_eq!(status.state, State::Processing, "{}", second.log());
        assert_eq!(status.job_id, job_before, "the same job, picked up again");
        assert_eq!(status.frames_received, 2);
        std::fs::write(&marker, "").unwrap();
        let end = slot.wait_for_state(&[State::Done], WAIT).await;
        assert_eq!(end, Ok(State::Done), "{}", second.log());
        assert_eq!(slot.status().await.unwrap().job_id, job_before);
        let job = dm.get_job(&job_before).await.unwrap();
        assert_eq!(job.status, JobStatus::Done);
        let catalog = catalog_run(&dm, "uid-restart").await;
        assert_eq!(catalog.metadata["handshake"]["jobId"], job_before.as_str());
        assert_eq!(catalog.metadata["handshake"]["finalState"], "DONE");
        let history: Vec<&str> = catalog.metadata["handshake"]["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["state"].as_str().unwrap())
            .collect();
        assert_eq!(history, DONE_HISTORY);
        assert!(
            second.log().contains("resuming in PROCESSING"),
            "{}",
            second.log()
        );
    });
}

#[test]
fn p4p_plays_the_bluesky_side_like_ophyd_async() {
    let python = common::python();
    run_test(TEST_LIMIT, async {
        let run = EmbeddedRun::start(
            "e2e:p4p:",
            streaming_workflow(
                "p4p-run",
                &[
                    "workflow ready",
                    "workflow wait-state DRAINING --max-wait 30",
                    "workflow progress $expectedFrames",
                ],
            ),
        )
        .await;
        let mut request = request("p4p-run", "uid-p4p");
        request.expected_frames = Some(3);

        let (succeeded, result) = p4p_peer(
            &python,
            "p4p_handshake.py",
            &["e2e:p4p:", &request.to_json()],
            &[run.udp],
        )
        .await;
        assert!(succeeded, "{result}\n{}", run.bridge.log());
        assert_eq!(result["pviId"], "epics:nt/NTPVI:1.0");
        assert_eq!(result["pvi"]["state"]["r"], "e2e:p4p:State");
        assert_eq!(result["pvi"]["command"]["rw"], "e2e:p4p:Command");
        assert_eq!(result["commandAfterStart"], 0, "Command rests at NONE");
        assert_eq!(result["final"], "DONE", "{result}");
        let states: Vec<&str> = result["states"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert!(states.contains(&"READY"), "{states:?}");
        assert_eq!(states.last(), Some(&"DONE"));
        let refusal = result["refusal"]
            .as_str()
            .expect("the late command is refused");
        assert!(
            refusal.contains("ACQ_STARTED refused in state DONE"),
            "{refusal}"
        );
        assert_eq!(result["messageId"], "epics:nt/NTScalar:1.0");
        assert_eq!(result["status"]["framesReceived"], 3);
        assert_eq!(result["status"]["jobStatus"], "done");
    });
}

#[test]
fn bad_input_gets_one_line_and_a_failing_exit() {
    let cases: [(&[&str], &str); 5] = [
        (&["serve", "--prefix", "a:"], "no DM service"),
        (
            &[
                "serve",
                "--prefix",
                "a:",
                "--embedded-dm",
                "/nonexistent/x",
                "--ready-timeout=-1",
            ],
            "'--ready-timeout <DURATION>': a duration cannot be negative",
        ),
        (&["workflow", "ready"], "no run slot"),
        (
            &["workflow", "wait-state", "NOPE", "--handshake", "x:"],
            "'NOPE' is not one of IDLE",
        ),
        (
            &[
                "workflow",
                "progress",
                "1",
                "--handshake",
                "x:",
                "--timeout",
                "0",
            ],
            "'--timeout <DURATION>': must be more than zero",
        ),
    ];
    for (args, needle) in cases {
        let mut cmd = Process::new(BINARY);
        cmd.args(args);
        loopback(&mut cmd, common::free_udp_port());
        let out = common::run_bounded(cmd, WAIT);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// With `--acquisition-user` and `--workflow-user`, each side writes only its own PVs: the
/// refused put fails with the reason and changes nothing.
#[test]
fn access_rules_let_each_side_write_only_its_own_pvs() {
    let dir = tempfile::tempdir().unwrap();
    let udp = common::free_udp_port();
    let prefix = "e2e:acl:";
    let dm_dir = dir.path().join("dm");
    let bridge = serve(
        dir.path(),
        udp,
        prefix,
        &[
            "--embedded-dm",
            dm_dir.to_str().unwrap(),
            "--acquisition-user",
            "acq-account",
            "--workflow-user",
            "wf-account",
        ],
        "bridge.log",
    );
    let as_user = |user: &str, args: &[&str]| {
        let mut cmd = Process::new(BINARY);
        cmd.args(args).env("PVABRIDGE_CA_USER", user);
        loopback(&mut cmd, udp);
        common::run_bounded(cmd, WAIT)
    };
    let command = format!("{prefix}Command");
    let ready = |user: &str| as_user(user, &["workflow", "ready", "--handshake", prefix]);

    let refused = as_user("wf-account", &["put", &command, "value.index=4"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "the workflow wrote Command");
    assert!(
        err.contains("refused") && err.contains("wf-account"),
        "{err}"
    );
    let taken = as_user("acq-account", &["put", &command, "value.index=4"]);
    assert!(
        taken.status.success(),
        "ABORT by the acquisition account: {}",
        String::from_utf8_lossy(&taken.stderr)
    );

    let refused = ready("acq-account");
    assert!(!refused.status.success(), "the acquisition wrote Ready");
    let read = as_user("anyone", &["get", &format!("{prefix}Ready"), "--json"]);
    let value: Value = serde_json::from_slice(&read.stdout).expect("get --json");
    assert_eq!(
        value["value"]["value"], 0,
        "a refused put changes nothing: {value}"
    );
    let taken = ready("wf-account");
    assert!(
        taken.status.success(),
        "Ready by the workflow account: {}",
        String::from_utf8_lossy(&taken.stderr)
    );
    assert!(bridge.log().contains("refused"), "{}", bridge.log());
}
