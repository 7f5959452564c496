//! The commands, the normal path through every state, and the waits that run out.

use super::*;

#[test]
fn a_run_goes_through_every_state_to_done_and_is_sent_to_the_catalog() {
    let mut m = machine();
    assert_eq!(m.state(), State::Idle);
    let actions = start(&mut m, T0 + 1.0);
    let Some(Action::StartJob { workflow, args }) = actions.last() else {
        panic!("{actions:?}");
    };
    assert_eq!(workflow, "stream");
    assert_eq!(args["handshakePrefix"], PREFIX);
    assert_eq!(args["filePath"], "pva://det:Image");
    assert_eq!(m.dm_query(), None, "no poll while the start is under way");

    let actions = m.handle(
        Input::JobStarted(Ok(job("j1", JobStatus::Running, "01-START"))),
        T0 + 2.0,
    );
    assert_eq!(transitions(&actions), [State::WaitReady]);
    assert_eq!(
        m.dm_query(),
        Some(DmQuery::Poll {
            job_id: "j1".into()
        })
    );
    assert_eq!(
        transitions(&m.handle(Input::Ready(true), T0 + 3.0)),
        [State::Ready]
    );
    m.command(Command::AcqStarted, T0 + 4.0).unwrap();
    assert_eq!(m.state(), State::Acquiring);
    m.handle(Input::Progress(4), T0 + 5.0);
    m.command(Command::AcqDone, T0 + 6.0).unwrap();
    assert_eq!(m.state(), State::Draining);
    let actions = m.handle(Input::Progress(5), T0 + 7.0);
    assert_eq!(transitions(&actions), [State::Processing]);
    assert!(m.message().contains("all 5 frames"), "{}", m.message());

    let mut done = job("j1", JobStatus::Done, "02-END");
    done.run_time = Some(9.0);
    let actions = m.handle(Input::JobPolled(JobPoll::Seen(done)), T0 + 10.0);
    assert_eq!(transitions(&actions), [State::Done]);
    let run = sent_run(&actions).expect("the run goes to the catalog at once");
    assert_eq!(run.experiment_name, "pvabridge");
    assert_eq!(run.run_id, "uid_uid-1");
    assert_eq!(run.metadata["handshake"]["startTime"], T0 + 1.0);
    assert_eq!(run.metadata["handshake"]["endTime"], T0 + 10.0);
    assert_eq!(run.metadata["handshake"]["finalState"], "DONE");
    assert_eq!(run.metadata["handshake"]["job"]["status"], "done");
    assert_eq!(run.metadata["handshake"]["request"]["workflow"], "stream");
    assert_eq!(run.metadata["handshake"]["frames"]["received"], 5);
    assert_eq!(run.metadata["handshake"]["frames"]["missed"], 0);
    assert_eq!(
        run.metadata["handshake"]["secondsInState"]["ACQUIRING"],
        2.0
    );
    assert_eq!(
        run.metadata["handshake"]["history"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    assert_eq!(m.dm_query(), None, "a final job is not polled");

    let view = m.view(T0 + 11.0);
    assert_eq!(view.state, State::Done);
    assert_eq!(view.job_id, "j1");
    assert_eq!(view.job_status, "done");
    assert_eq!(view.run_time, 9.0);
    assert_eq!(view.frames_expected, 5);
    assert_eq!(view.frames_received, 5);
    assert_eq!(view.owner, "dmuser");

    let run_id = m.run().unwrap().run_id.clone();
    m.handle(
        Input::RunSent {
            run_id,
            result: Ok(()),
        },
        T0 + 11.0,
    );
    assert_eq!(m.run().unwrap().catalog, CatalogStatus::Sent);
    assert!(m.message().contains("run catalog"), "{}", m.message());
}

#[test]
fn ready_before_the_job_id_leads_straight_to_ready() {
    let mut m = machine();
    start(&mut m, T0);
    m.handle(Input::Ready(true), T0 + 0.5);
    assert_eq!(m.state(), State::Starting);
    let actions = m.handle(
        Input::JobStarted(Ok(job("j1", JobStatus::Running, "01"))),
        T0 + 1.0,
    );
    assert_eq!(transitions(&actions), [State::WaitReady, State::Ready]);
}

#[test]
fn reaching_the_ready_stage_counts_as_ready() {
    let mut m = started_with(r#"{"workflow":"w","readyStage":"02-STREAM"}"#);
    m.handle(
        Input::JobStarted(Ok(job("j1", JobStatus::Running, "01-PREPARE"))),
        T0 + 1.0,
    );
    assert_eq!(m.state(), State::WaitReady);
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Running, "02-STREAM"))),
        T0 + 2.0,
    );
    assert_eq!(m.state(), State::Ready);
    assert!(m.message().contains("02-STREAM"), "{}", m.message());
}

#[test]
fn ready_may_come_in_any_state_without_harm() {
    let (mut m, now) = at(State::Acquiring);
    assert!(transitions(&m.handle(Input::Ready(true), now)).is_empty());
    assert!(transitions(&m.handle(Input::Ready(false), now)).is_empty());
    assert_eq!(m.state(), State::Acquiring);
    assert!(
        m.set_ready(false, now).is_err(),
        "but an explicit put is refused"
    );
    let mut idle = machine();
    assert!(idle.handle(Input::Ready(true), T0).is_empty());
    assert!(idle.handle(Input::Progress(3), T0).is_empty());
}

#[test]
fn abort_from_every_active_state_stops_the_job_and_ends_aborted() {
    for state in ACTIVE {
        let (mut m, now) = at(state);
        let actions = m.command(Command::Abort, now + 1.0).unwrap();
        assert_eq!(transitions(&actions), [State::Aborted], "from {state}");
        if state == State::Starting {
            assert!(stops(&actions).is_empty(), "no job id to stop yet");
            let actions = m.handle(
                Input::JobStarted(Ok(job("j1", JobStatus::Running, "01"))),
                now + 2.0,
            );
            assert_eq!(stops(&actions), ["j1"], "the late job is stopped");
            assert_eq!(m.state(), State::Aborted, "and the state stays");
        } else {
            assert_eq!(stops(&actions), ["j1"], "from {state}");
        }
        assert!(m.message().contains("aborted by command"));
        assert!(
            sent_run(&actions).is_none(),
            "the catalog waits for the stop"
        );
        let actions = m.handle(
            Input::JobStopped(Ok(job("j1", JobStatus::Aborted, "01"))),
            now + 3.0,
        );
        let run = sent_run(&actions).expect("sent once the job is final");
        assert_eq!(run.metadata["handshake"]["finalState"], "ABORTED");
        assert_eq!(run.metadata["handshake"]["job"]["status"], "aborted");
        assert_eq!(m.dm_query(), None);
    }
}

#[test]
fn abort_outside_a_run_changes_nothing() {
    let mut m = machine();
    let actions = m.command(Command::Abort, T0).unwrap();
    assert!(actions.is_empty());
    assert_eq!(m.state(), State::Idle);
    assert!(m.message().contains("nothing to abort"));
}

#[test]
fn each_wait_times_out_and_stops_the_job() {
    let timeouts = Timeouts::default();
    let cases = [
        (State::WaitReady, timeouts.ready, "did not become ready"),
        (State::Ready, timeouts.arm, "ACQ_STARTED did not come"),
        (State::Acquiring, timeouts.acquire, "ACQ_DONE did not come"),
    ];
    for (state, limit, words) in cases {
        let (mut m, now) = at(state);
        let limit = limit.as_secs_f64();
        assert!(
            m.handle(Input::Tick, now + limit - 0.5).is_empty(),
            "{state}"
        );
        let actions = m.handle(Input::Tick, now + limit);
        assert_eq!(transitions(&actions), [State::Timeout], "{state}");
        assert_eq!(stops(&actions), ["j1"], "{state}");
        assert!(m.message().contains(words), "{state}: {}", m.message());
    }
}

#[test]
fn without_a_processing_timeout_a_running_job_is_followed_for_as_long_as_it_runs() {
    let (mut m, now) = at(State::Processing);
    assert!(m.handle(Input::Tick, now + 100_000.0).is_empty());
    assert_eq!(m.state(), State::Processing);
    assert!(m.dm_query().is_some());
}

#[test]
fn a_processing_timeout_stops_the_following_and_leaves_the_job_running() {
    let (mut m, now) = at_with(
        machine_with_processing_timeout(60.0, false),
        State::Processing,
    );
    assert!(m.handle(Input::Tick, now + 59.0).is_empty());
    let actions = m.handle(Input::Tick, now + 60.0);
    assert_eq!(transitions(&actions), [State::Timeout]);
    assert!(stops(&actions).is_empty(), "the job is left running");
    assert!(m.message().contains("left it running"), "{}", m.message());
    assert!(
        m.message().contains("pvabridge dm get-job --id j1"),
        "{}",
        m.message()
    );
    assert_eq!(m.dm_query(), None, "the bridge stops following");
    let run = sent_run(&actions).expect("the run goes to the catalog at once");
    assert_eq!(run.metadata["handshake"]["finalState"], "TIMEOUT");

    let (mut m, now) = at_with(
        machine_with_processing_timeout(60.0, true),
        State::Processing,
    );
    let actions = m.handle(Input::Tick, now + 60.0);
    assert_eq!(transitions(&actions), [State::Timeout]);
    assert_eq!(stops(&actions), ["j1"]);
    assert!(m.message().contains("was stopped"), "{}", m.message());
}

#[test]
fn the_workflow_ends_acquisition_and_a_late_acq_done_succeeds() {
    let (mut m, now) = at(State::Acquiring);
    m.handle(Input::WorkflowMessage("sample gone".into()), now);
    let actions = m
        .workflow_command(WorkflowCommand::EndAcquisition, now + 1.0)
        .unwrap();
    assert_eq!(transitions(&actions), [State::Draining]);
    assert!(
        m.message()
            .contains("the workflow ended acquisition: sample gone"),
        "{}",
        m.message()
    );
    assert!(m.command(Command::AcqDone, now + 2.0).unwrap().is_empty());
    assert_eq!(m.state(), State::Draining);
    m.handle(Input::Progress(5), now + 3.0);
    assert_eq!(m.state(), State::Processing);
    assert!(m.command(Command::AcqDone, now + 4.0).is_ok());
    assert!(m
        .workflow_command(WorkflowCommand::EndAcquisition, now + 4.0)
        .is_ok());

    let (mut m, now) = at(State::Acquiring);
    m.command(Command::AcqDone, now).unwrap();
    assert!(
        m.workflow_command(WorkflowCommand::EndAcquisition, now + 1.0)
            .is_ok(),
        "whoever comes second succeeds"
    );
    let (mut m, now) = at(State::Ready);
    let err = m
        .workflow_command(WorkflowCommand::EndAcquisition, now)
        .unwrap_err();
    assert!(err.to_string().contains("only in ACQUIRING"), "{err}");
    assert_eq!(m.state(), State::Ready);
}

#[test]
fn the_workflow_fails_the_run_and_its_job_is_stopped() {
    for state in ACTIVE {
        let (mut m, now) = at(state);
        m.handle(Input::WorkflowMessage("detector saturated".into()), now);
        let actions = m
            .workflow_command(WorkflowCommand::Fail, now + 1.0)
            .unwrap();
        assert_eq!(transitions(&actions), [State::Failed], "{state}");
        assert!(
            m.message()
                .contains("the workflow failed the run: detector saturated"),
            "{}",
            m.message()
        );
        if state != State::Starting {
            assert_eq!(stops(&actions), ["j1"], "{state}");
        }
    }
    let err = machine()
        .workflow_command(WorkflowCommand::Fail, T0)
        .unwrap_err();
    assert!(
        err.to_string().contains("FAIL refused in state IDLE"),
        "{err}"
    );
}

#[test]
fn ready_off_withdraws_readiness_before_acq_started_and_is_refused_after() {
    let (mut m, now) = at(State::Ready);
    let actions = m.set_ready(false, now).unwrap();
    assert_eq!(transitions(&actions), [State::WaitReady]);
    m.set_ready(true, now + 1.0).unwrap();
    assert_eq!(m.state(), State::Ready);
    m.command(Command::AcqStarted, now + 2.0).unwrap();
    let err = m.set_ready(false, now + 3.0).unwrap_err();
    assert!(err.contains("only before ACQ_STARTED"), "{err}");
    assert_eq!(m.state(), State::Acquiring);
}

#[test]
fn starting_times_out_and_a_late_job_is_stopped() {
    let mut m = machine();
    start(&mut m, T0);
    let actions = m.handle(Input::Tick, T0 + 30.0);
    assert_eq!(transitions(&actions), [State::Timeout]);
    assert!(m.message().contains("did not start the job"));
    let actions = m.handle(
        Input::JobStarted(Ok(job("late", JobStatus::Pending, "01"))),
        T0 + 31.0,
    );
    assert_eq!(stops(&actions), ["late"]);
}

#[test]
fn the_request_ready_timeout_overrides_the_default() {
    let mut m = job_running_with(r#"{"workflow":"w","readyTimeout":2.5}"#);
    assert!(m.handle(Input::Tick, T0 + 2.4).is_empty());
    let actions = m.handle(Input::Tick, T0 + 2.5);
    assert_eq!(transitions(&actions), [State::Timeout]);
    assert!(m.message().contains("2.5 s"), "{}", m.message());
}

#[test]
fn draining_ends_when_frames_stop_coming_and_counts_the_missed_ones() {
    let (mut m, now) = at(State::Draining);
    let idle = Timeouts::default().drain_idle.as_secs_f64();
    m.handle(Input::Progress(4), now + idle - 1.0);
    assert!(
        m.handle(Input::Tick, now + idle + 1.0).is_empty(),
        "progress restarts the idle wait"
    );
    let actions = m.handle(Input::Tick, now + 2.0 * idle);
    assert_eq!(transitions(&actions), [State::Processing]);
    assert!(stops(&actions).is_empty(), "the job goes on processing");
    assert_eq!(m.view(now).frames_missed, 1);
    assert!(m.message().contains("4 of 5"), "{}", m.message());
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Done, "02"))),
        now + 30.0,
    );
    assert_eq!(m.state(), State::Done);
    assert!(m.message().contains("1 missed"), "{}", m.message());
}

#[test]
fn acq_done_with_every_frame_in_goes_on_to_processing() {
    let (mut m, now) = at(State::Acquiring);
    m.handle(Input::Progress(5), now);
    let actions = m.command(Command::AcqDone, now + 1.0).unwrap();
    assert_eq!(transitions(&actions), [State::Draining, State::Processing]);
}

#[test]
fn a_job_that_ends_while_draining_ends_the_run() {
    let (mut m, now) = at(State::Draining);
    let actions = m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Done, "02"))),
        now + 1.0,
    );
    assert_eq!(transitions(&actions), [State::Done]);
    assert_eq!(m.view(now).frames_missed, 2, "3 of 5 frames came");
}

#[test]
fn commands_out_of_place_are_refused_and_change_nothing() {
    let mut m = machine();
    let err = m.command(Command::Start, T0).unwrap_err();
    assert!(err.to_string().contains("Request is empty"), "{err}");
    m.handle(Input::Request(r#"{"workflw":"x"}"#.into()), T0);
    let err = m.command(Command::Start, T0).unwrap_err();
    assert!(err.to_string().contains("workflw"), "{err}");
    for command in [Command::AcqStarted, Command::AcqDone] {
        let err = m.command(command, T0).unwrap_err();
        assert_eq!(err.state, State::Idle);
    }
    assert_eq!(m.state(), State::Idle);

    let (mut m, now) = at(State::Acquiring);
    let before = m.record().clone();
    for command in [Command::Start, Command::AcqStarted, Command::Reset] {
        let err = m.command(command, now).unwrap_err();
        assert_eq!(err.command, command);
        assert_eq!(err.state, State::Acquiring);
    }
    assert_eq!(m.record(), &before);
    assert!(m.command(Command::None, now).unwrap().is_empty());
}

#[test]
fn reset_returns_a_final_state_to_idle_and_start_may_follow_a_final_state() {
    let (mut m, now) = at(State::Ready);
    m.command(Command::Abort, now).unwrap();
    let actions = m.command(Command::Reset, now + 1.0).unwrap();
    assert_eq!(transitions(&actions), [State::Idle]);
    assert!(
        sent_run(&actions).is_some(),
        "a run not yet in the catalog is sent before it is forgotten"
    );
    assert!(m.run().is_none());
    assert_eq!(m.view(now).job_id, "");
    let actions = m.command(Command::Reset, now + 2.0).unwrap();
    assert!(actions.is_empty());
    assert!(m.message().contains("already IDLE"));

    let (mut m, now) = done_and_answered(Ok(()));
    let actions = start(&mut m, now + 1.0);
    assert_eq!(transitions(&actions), [State::Starting]);
    assert!(sent_run(&actions).is_none(), "already in the catalog");
    assert_eq!(m.run().unwrap().job_id, None, "a fresh run");
}
