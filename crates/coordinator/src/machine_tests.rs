//! Deterministic tests of the state machine: every transition, ABORT from every active state,
//! every timeout, RESET, restarts, and that a final state is always reached.

use super::transitions::{self, Cause};
use super::*;
use proptest::prelude::*;

const T0: f64 = 1_000.0;
const PREFIX: &str = "t:wf1:";

fn job(id: &str, status: JobStatus, stage: &str) -> Box<ProcessingJob> {
    Box::new(ProcessingJob {
        id: id.into(),
        owner: "dmuser".into(),
        status,
        stage: Some(stage.into()),
        workflow: None,
        error_message: None,
        submission_time: Some(T0),
        submission_timestamp: None,
        start_time: Some(T0),
        start_timestamp: None,
        end_time: None,
        end_timestamp: None,
        run_time: None,
        extra: Map::new(),
    })
}

fn failed_job(id: &str, message: &str) -> Box<ProcessingJob> {
    let mut job = job(id, JobStatus::Failed, "02-RUN");
    job.error_message = Some(message.into());
    job
}

fn machine() -> Machine {
    Machine::new(PREFIX, MachineConfig::default(), T0)
}

/// A machine with a processing timeout of `limit` seconds.
fn machine_with_processing_timeout(limit: f64, stop_job_on_timeout: bool) -> Machine {
    let mut config = MachineConfig::default();
    config.timeouts.processing = Some(Duration::from_secs_f64(limit));
    config.stop_job_on_timeout = stop_job_on_timeout;
    Machine::new(PREFIX, config, T0)
}

fn request_json() -> String {
    r#"{"workflow":"stream","expectedFrames":5,"runUid":"uid-1","dataChannel":"det:Image"}"#.into()
}

fn transitions(actions: &[Action]) -> Vec<State> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Transitioned { to, .. } => Some(*to),
            _ => None,
        })
        .collect()
}

fn stops(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::StopJob { job_id } => Some(job_id.clone()),
            _ => None,
        })
        .collect()
}

fn sent_run(actions: &[Action]) -> Option<ExperimentRun> {
    actions.iter().find_map(|a| match a {
        Action::SendRun { run, .. } => Some((**run).clone()),
        _ => None,
    })
}

/// START with the standard request; returns the actions.
fn start(m: &mut Machine, now: f64) -> Vec<Action> {
    m.handle(Input::Request(request_json()), now);
    m.command(Command::Start, now).expect("START accepted")
}

/// A slot driven to `target` along the normal path (job "j1", times one second apart).
fn at(target: State) -> (Machine, f64) {
    at_with(machine(), target)
}

/// `m` driven to `target` along the normal path.
fn at_with(mut m: Machine, target: State) -> (Machine, f64) {
    let mut now = T0;
    let path = [
        State::Starting,
        State::WaitReady,
        State::Ready,
        State::Acquiring,
        State::Draining,
        State::Processing,
    ];
    for step in path {
        now += 1.0;
        match step {
            State::Starting => {
                start(&mut m, now);
            }
            State::WaitReady => {
                m.handle(
                    Input::JobStarted(Ok(job("j1", JobStatus::Running, "01-START"))),
                    now,
                );
            }
            State::Ready => {
                m.handle(Input::Ready(true), now);
            }
            State::Acquiring => {
                m.command(Command::AcqStarted, now).unwrap();
            }
            State::Draining => {
                m.handle(Input::Progress(3), now);
                m.command(Command::AcqDone, now).unwrap();
            }
            State::Processing => {
                m.handle(Input::Progress(5), now);
            }
            _ => unreachable!(),
        }
        assert_eq!(m.state(), step, "{}", m.message());
        if step == target {
            return (m, now);
        }
    }
    panic!("{target} is not on the normal path");
}

const ACTIVE: [State; 6] = [
    State::Starting,
    State::WaitReady,
    State::Ready,
    State::Acquiring,
    State::Draining,
    State::Processing,
];

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
    let mut m = machine();
    m.handle(
        Input::Request(r#"{"workflow":"w","readyStage":"02-STREAM"}"#.into()),
        T0,
    );
    m.command(Command::Start, T0).unwrap();
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

fn report(member: u32, ready: bool, received: u64, missed: u64, processed: u64) -> MemberReport {
    MemberReport {
        member,
        ready,
        received,
        missed,
        processed,
        first_id: 100,
        last_id: 100 + received as i64,
        pvs: vec![format!("{PREFIX}wf:{member}:Stats")],
        ..MemberReport::default()
    }
}

#[test]
fn members_reports_give_ready_progress_and_the_frame_counts() {
    let mut m = machine();
    m.handle(
        Input::Request(r#"{"workflow":"w","expectedFrames":10,"consumers":2}"#.into()),
        T0,
    );
    m.command(Command::Start, T0).unwrap();
    m.handle(
        Input::JobStarted(Ok(job("j1", JobStatus::Running, "01"))),
        T0,
    );
    m.report(report(0, true, 0, 0, 0), T0 + 1.0).unwrap();
    assert_eq!(m.state(), State::WaitReady, "one of two members is ready");
    let err = m.report(report(2, true, 0, 0, 0), T0 + 1.0).unwrap_err();
    assert!(err.contains("not one of the run's 2 consumer(s)"), "{err}");
    m.report(report(1, true, 0, 0, 0), T0 + 2.0).unwrap();
    assert_eq!(m.state(), State::Ready);
    m.command(Command::AcqStarted, T0 + 3.0).unwrap();
    m.report(report(0, true, 4, 1, 3), T0 + 4.0).unwrap();
    m.report(report(1, true, 4, 0, 4), T0 + 4.0).unwrap();
    let view = m.view(T0 + 4.0);
    assert_eq!(view.frames_received, 8);
    assert_eq!(view.frames_missed, 1, "the members' own missed counts");
    assert_eq!(view.progress, 7);
    assert_eq!(view.members.len(), 2);
    assert_eq!(
        view.workflow_pvs,
        [format!("{PREFIX}wf:0:Stats"), format!("{PREFIX}wf:1:Stats")]
    );
    m.command(Command::AcqDone, T0 + 5.0).unwrap();
    m.report(report(0, true, 5, 1, 5), T0 + 6.0).unwrap();
    m.report(report(1, true, 4, 0, 4), T0 + 6.0).unwrap();
    let idle = Timeouts::default().drain_idle.as_secs_f64();
    m.handle(Input::Tick, T0 + 6.0 + idle);
    assert_eq!(m.state(), State::Processing);
    assert_eq!(
        m.view(T0 + 20.0).frames_missed,
        1,
        "expected minus received"
    );
    assert!(machine().report(report(0, true, 0, 0, 0), T0).is_err());
}

#[test]
fn a_silent_member_is_named_lost_and_its_frames_count_missed() {
    let mut m = machine();
    m.handle(
        Input::Request(r#"{"workflow":"w","expectedFrames":12,"consumers":3}"#.into()),
        T0,
    );
    m.command(Command::Start, T0).unwrap();
    m.handle(
        Input::JobStarted(Ok(job("j1", JobStatus::Running, "01"))),
        T0,
    );
    m.report(report(0, true, 0, 0, 0), T0 + 1.0).unwrap();
    assert!(
        m.view(T0 + 1.0).message.contains("1 of 3 ready"),
        "{}",
        m.view(T0 + 1.0).message
    );
    m.report(report(1, true, 0, 0, 0), T0 + 1.0).unwrap();
    m.report(report(2, true, 0, 0, 0), T0 + 1.0).unwrap();
    assert_eq!(m.state(), State::Ready);
    assert!(m.view(T0 + 1.0).message.contains("3 of 3"));
    m.command(Command::AcqStarted, T0 + 1.5).unwrap();
    m.report(report(1, true, 2, 0, 2), T0 + 2.0).unwrap();
    m.report(report(0, true, 3, 0, 3), T0 + 4.5).unwrap();
    m.report(report(2, true, 3, 0, 3), T0 + 4.5).unwrap();
    assert!(!m.view(T0 + 4.5).message.contains("lost"));
    m.report(report(0, true, 4, 0, 4), T0 + 5.0).unwrap();
    let message = m.view(T0 + 5.0).message;
    assert!(
        message.contains("member 1 lost: no report for 3 s"),
        "{message}"
    );
    assert!(!message.contains("member 0 lost"), "{message}");
    m.command(Command::AcqDone, T0 + 5.0).unwrap();
    m.report(report(0, true, 4, 0, 4), T0 + 5.5).unwrap();
    m.report(report(2, true, 4, 0, 4), T0 + 5.5).unwrap();
    // The members that finished stop reporting in DRAINING: they are not lost.
    let idle = Timeouts::default().drain_idle.as_secs_f64();
    m.handle(Input::Tick, T0 + 5.5 + idle);
    let view = m.view(T0 + 5.5 + idle);
    assert_eq!(view.state, State::Processing);
    assert_eq!((view.frames_received, view.frames_missed), (10, 2));
    assert!(!view.message.contains("member 0 lost"), "{}", view.message);
    assert!(view.message.contains("member 1 lost"), "{}", view.message);
}

#[test]
fn a_failure_without_error_message_names_the_stage_exit_status_and_stderr_tail() {
    let (mut m, now) = at(State::Acquiring);
    let mut failed = job("j1", JobStatus::Failed, "02-RUN");
    let child = |n: u64, status: i32, err: &str| dm::ChildProcess {
        stage_id: "02-RUN".into(),
        child_process_number: n,
        exit_status: Some(status),
        std_err: err.into(),
        ..dm::ChildProcess::default()
    };
    let stage = dm::Stage {
        command: "run".into(),
        child_processes: Some(
            [
                ("9", child(9, 0, "")),
                ("10", child(10, 2, "a\nb\nc\nno space left on device\n")),
            ]
            .into_iter()
            .map(|(k, c)| (k.to_string(), c))
            .collect(),
        ),
        ..dm::Stage::default()
    };
    failed.workflow = Some(dm::Workflow {
        stages: [("02-RUN".to_string(), stage)].into_iter().collect(),
        ..dm::Workflow::default()
    });
    m.handle(Input::JobPolled(JobPoll::Seen(failed)), now + 1.0);
    assert_eq!(m.state(), State::Failed);
    let message = m.message();
    for words in [
        "stage 02-RUN",
        "child process 10",
        "exit status 2",
        "b | c | no space left on device",
    ] {
        assert!(message.contains(words), "{words}: {message}");
    }
    assert!(!message.contains("a | b"), "only the tail: {message}");
    assert_eq!(m.view(now + 1.0).stages[0].exit_status, 2);
}

#[test]
fn the_catalog_entry_has_dms_shape_with_the_request_metadata() {
    let mut m = machine();
    m.handle(
        Input::Request(
            r#"{"workflow":"w","runUid":"0123456789ab","experimentName":"e7","metadata":{"plan_name":"count","detectors":["det"]}}"#
                .into(),
        ),
        T0,
    );
    m.command(Command::Start, T0).unwrap();
    let refused = Input::JobStarted(Err(DmFailure::Refused("no such workflow".into())));
    let actions = m.handle(refused, T0 + 1.0);
    let run = sent_run(&actions).expect("a run that never started is sent at once");
    assert_eq!(run.experiment_name, "e7");
    assert_eq!(run.run_id, "uid_01234567");
    assert_eq!(run.metadata["plan_name"], "count");
    assert_eq!(run.metadata["detectors"][0], "det");
    assert_eq!(run.metadata["handshake"]["finalState"], "FAILED");
    assert_eq!(run.metadata["handshake"]["runUid"], "0123456789ab");
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
    let mut m = machine();
    m.handle(
        Input::Request(r#"{"workflow":"w","readyTimeout":2.5}"#.into()),
        T0,
    );
    m.command(Command::Start, T0).unwrap();
    m.handle(
        Input::JobStarted(Ok(job("j1", JobStatus::Running, "01"))),
        T0,
    );
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
fn a_failed_job_fails_the_run_with_dms_reason_in_every_active_state() {
    for state in &ACTIVE[1..] {
        let (mut m, now) = at(*state);
        let actions = m.handle(
            Input::JobPolled(JobPoll::Seen(failed_job(
                "j1",
                "Stage 02-RUN failed: disk full",
            ))),
            now + 1.0,
        );
        assert_eq!(transitions(&actions), [State::Failed], "{state}");
        assert!(m.message().contains("disk full"), "{}", m.message());
        assert!(stops(&actions).is_empty(), "a failed job needs no stop");
        assert!(sent_run(&actions).is_some(), "{state}");
    }
}

#[test]
fn a_job_that_fails_at_once_fails_the_run() {
    let mut m = machine();
    start(&mut m, T0);
    let actions = m.handle(
        Input::JobStarted(Ok(failed_job("j1", "Invalid input file specification."))),
        T0 + 1.0,
    );
    assert_eq!(transitions(&actions), [State::WaitReady, State::Failed]);
    assert!(m.message().contains("Invalid input file specification."));
}

#[test]
fn a_workflow_that_ends_before_the_run_is_over_is_lost() {
    for state in [State::WaitReady, State::Ready, State::Acquiring] {
        let (mut m, now) = at(state);
        m.handle(
            Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Done, "02"))),
            now + 1.0,
        );
        assert_eq!(m.state(), State::Failed, "{state}");
        assert!(m.message().contains("workflow is gone"), "{}", m.message());
    }
}

#[test]
fn a_job_aborted_by_someone_else_ends_aborted() {
    let (mut m, now) = at(State::Acquiring);
    let actions = m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Aborted, "02"))),
        now + 1.0,
    );
    assert_eq!(transitions(&actions), [State::Aborted]);
    assert!(m.message().contains("outside the bridge"));
}

#[test]
fn a_job_dm_forgot_fails_the_run() {
    let (mut m, now) = at(State::Processing);
    let actions = m.handle(
        Input::JobPolled(JobPoll::NotFound("Job j1 not found.".into())),
        now + 1.0,
    );
    assert_eq!(transitions(&actions), [State::Failed]);
    assert!(m.message().contains("no longer has job j1"));
    assert!(sent_run(&actions).is_some());
    assert_eq!(m.dm_query(), None);
}

#[test]
fn dm_out_of_reach_for_too_long_fails_the_run() {
    let (mut m, now) = at(State::Acquiring);
    let lost = Timeouts::default().dm_lost.as_secs_f64();
    let poll = |m: &mut Machine, t: f64| {
        m.handle(
            Input::JobPolled(JobPoll::Unreachable("connection refused".into())),
            t,
        )
    };
    assert!(poll(&mut m, now + 1.0).is_empty());
    assert!(poll(&mut m, now + lost).is_empty());
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Running, "02"))),
        now + lost + 0.5,
    );
    assert!(
        poll(&mut m, now + lost + 1.0).is_empty(),
        "an answer resets the count"
    );
    let actions = poll(&mut m, now + 2.0 * lost + 1.0);
    assert_eq!(transitions(&actions), [State::Failed]);
    assert!(m.message().contains("lost contact with DM"));
    assert_eq!(
        stops(&actions),
        ["j1"],
        "the job is stopped if DM comes back"
    );
}

#[test]
fn a_refused_start_fails_the_run_with_dms_reason() {
    let mut m = machine();
    start(&mut m, T0);
    let actions = m.handle(
        Input::JobStarted(Err(DmFailure::Refused(
            "DM error 14: Workflow stream not found.".into(),
        ))),
        T0 + 1.0,
    );
    assert_eq!(transitions(&actions), [State::Failed]);
    assert!(m.message().contains("Workflow stream not found."));
    let run = sent_run(&actions).expect("a run that never started is sent at once");
    assert_eq!(run.metadata["handshake"]["jobId"], Value::Null);
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

    let (mut m, now) = at(State::Processing);
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Done, "02"))),
        now,
    );
    let run_id = m.run().unwrap().run_id.clone();
    m.handle(
        Input::RunSent {
            run_id,
            result: Ok(()),
        },
        now,
    );
    let actions = start(&mut m, now + 1.0);
    assert_eq!(transitions(&actions), [State::Starting]);
    assert!(sent_run(&actions).is_none(), "already in the catalog");
    assert_eq!(m.run().unwrap().job_id, None, "a fresh run");
}

fn refused_stop() -> DmFailure {
    DmFailure::Refused("DM error 16: the job cannot be stopped now".into())
}

#[test]
fn the_run_goes_to_the_catalog_after_the_finish_wait_even_without_a_final_job() {
    let (mut m, now) = at(State::Acquiring);
    let actions = m.command(Command::Abort, now).unwrap();
    assert_eq!(stops(&actions), ["j1"]);
    m.handle(Input::JobStopped(Err(refused_stop())), now + 1.0);
    assert!(m.message().contains("could not stop DM job j1"));
    let actions = m.handle(Input::Tick, now + 3.0);
    assert_eq!(stops(&actions), ["j1"], "stopping is tried again");
    m.handle(Input::JobStopped(Err(refused_stop())), now + 4.0);
    let actions = m.handle(Input::Tick, now + 6.0);
    assert_eq!(stops(&actions), ["j1"]);
    m.handle(Input::JobStopped(Err(refused_stop())), now + 7.0);
    assert!(
        stops(&m.handle(Input::Tick, now + 10.0)).is_empty(),
        "three attempts at most"
    );
    let finish = Timeouts::default().finish.as_secs_f64();
    let actions = m.handle(Input::Tick, now + finish);
    let run = sent_run(&actions).expect("sent after the finish wait");
    assert_eq!(run.metadata["handshake"]["job"]["status"], "running");
    assert!(sent_run(&m.handle(Input::Tick, now + finish + 1.0)).is_none());
}

#[test]
fn a_refused_catalog_entry_is_reported() {
    let (mut m, now) = at(State::Processing);
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Done, "02"))),
        now,
    );
    let run_id = m.run().unwrap().run_id.clone();
    m.handle(
        Input::RunSent {
            run_id,
            result: Err("Run uid-1 already exists.".into()),
        },
        now,
    );
    assert!(matches!(
        m.run().unwrap().catalog,
        CatalogStatus::Failed { .. }
    ));
    assert!(m.message().contains("already exists"), "{}", m.message());
    assert_eq!(m.state(), State::Done);
}

fn restored(m: &Machine) -> Machine {
    let text = serde_json::to_string(m.record()).unwrap();
    Machine::restore(
        serde_json::from_str(&text).unwrap(),
        MachineConfig::default(),
    )
}

#[test]
fn after_a_restart_the_same_job_is_followed_to_done() {
    let (m, now) = at(State::Processing);
    let mut m = restored(&m);
    assert_eq!(m.state(), State::Processing);
    assert!(m.handle(Input::Tick, now + 1.0).is_empty());
    assert_eq!(
        m.dm_query(),
        Some(DmQuery::Poll {
            job_id: "j1".into()
        })
    );
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Done, "02"))),
        now + 2.0,
    );
    assert_eq!(m.state(), State::Done);
    assert_eq!(m.run().unwrap().history.len(), 7);
}

#[test]
fn a_restart_during_the_start_finds_the_job_by_run_id() {
    let mut m = machine();
    start(&mut m, T0);
    let mut found = restored(&m);
    let run_id = m.run().unwrap().run_id.clone();
    assert_eq!(found.dm_query(), Some(DmQuery::Find { run_id }));
    found.handle(
        Input::JobFound(Ok(Some(job("j1", JobStatus::Running, "01")))),
        T0 + 1.0,
    );
    assert_eq!(found.state(), State::WaitReady);

    let mut lost = restored(&m);
    lost.handle(Input::JobFound(Ok(None)), T0 + 1.0);
    assert_eq!(lost.state(), State::Failed);
    assert!(lost.message().contains("restarted while starting"));
}

#[test]
fn a_start_without_a_clear_answer_looks_for_its_job_instead_of_starting_another() {
    let unconfirmed = || {
        let mut m = machine();
        start(&mut m, T0);
        let actions = m.handle(
            Input::JobStarted(Err(DmFailure::NoAnswer(
                "DM answered HTTP 500: Internal Server Error".into(),
            ))),
            T0 + 1.0,
        );
        assert!(actions.is_empty(), "no second start: {actions:?}");
        assert_eq!(m.state(), State::Starting);
        assert!(m.message().contains("no clear answer"), "{}", m.message());
        let run_id = m.run().unwrap().run_id.clone();
        assert_eq!(m.dm_query(), Some(DmQuery::Find { run_id }));
        m
    };

    let mut found = unconfirmed();
    found.handle(
        Input::JobFound(Ok(Some(job("j1", JobStatus::Running, "01")))),
        T0 + 2.0,
    );
    assert_eq!(found.state(), State::WaitReady);
    assert_eq!(found.run().unwrap().start_unconfirmed, None);

    let mut none = unconfirmed();
    let actions = none.handle(Input::JobFound(Ok(None)), T0 + 2.0);
    assert_eq!(transitions(&actions), [State::Failed]);
    assert!(
        none.message().contains("HTTP 500") && none.message().contains("has no job of run"),
        "{}",
        none.message()
    );
    assert!(
        sent_run(&actions).is_some(),
        "no job: the run goes to the catalog"
    );

    let mut unanswered = unconfirmed();
    unanswered.handle(Input::JobFound(Err("connection refused".into())), T0 + 2.0);
    let start = Timeouts::default().start.as_secs_f64();
    let actions = unanswered.handle(Input::Tick, T0 + start);
    assert_eq!(transitions(&actions), [State::Timeout]);
    assert!(
        unanswered
            .message()
            .contains("last DM error: connection refused"),
        "{}",
        unanswered.message()
    );
}

#[test]
fn a_job_made_by_an_unconfirmed_start_after_the_run_ended_is_found_and_stopped() {
    let mut m = machine();
    start(&mut m, T0);
    m.command(Command::Abort, T0 + 1.0).unwrap();
    let actions = m.handle(
        Input::JobStarted(Err(DmFailure::NoAnswer("timed out".into()))),
        T0 + 2.0,
    );
    assert!(
        sent_run(&actions).is_none(),
        "the run waits: a job may exist"
    );
    let run_id = m.run().unwrap().run_id.clone();
    assert_eq!(m.dm_query(), Some(DmQuery::Find { run_id }));
    let actions = m.handle(
        Input::JobFound(Ok(Some(job("j1", JobStatus::Running, "01")))),
        T0 + 3.0,
    );
    assert_eq!(stops(&actions), ["j1"]);
    assert_eq!(m.state(), State::Aborted);
}

#[test]
fn message_tells_of_a_dm_outage_while_it_lasts() {
    let (mut m, now) = at(State::Processing);
    let before = m.message().to_string();
    m.handle(
        Input::JobPolled(JobPoll::Unreachable("DM answered HTTP 500".into())),
        now + 1.0,
    );
    let shown = m.view(now + 4.0).message;
    assert!(
        shown.starts_with(&before)
            && shown.contains("DM unreachable for 3 s (the run fails after 120 s)")
            && shown.ends_with("DM answered HTTP 500"),
        "{shown}"
    );
    assert_eq!(m.message(), before, "the record keeps what happened last");
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Running, "02"))),
        now + 5.0,
    );
    assert_eq!(m.view(now + 5.0).message, before, "DM answers again");

    let (mut m, now) = at(State::Acquiring);
    m.handle(
        Input::JobPolled(JobPoll::Unreachable("connection refused".into())),
        now,
    );
    m.command(Command::Abort, now + 1.0).unwrap();
    assert_eq!(
        m.view(now + 2.0).message,
        m.message(),
        "a run that ended is not failing"
    );
}

#[test]
fn stopping_goes_on_while_dm_does_not_answer() {
    let (mut m, now) = at(State::Acquiring);
    let actions = m.command(Command::Abort, now).unwrap();
    assert_eq!(stops(&actions), ["j1"]);
    let mut t = now;
    for _ in 0..6 {
        t += 1.0;
        m.handle(
            Input::JobStopped(Err(DmFailure::NoAnswer("connection refused".into()))),
            t,
        );
        t += STOP_RETRY_SECS;
        assert_eq!(stops(&m.handle(Input::Tick, t)), ["j1"], "at {t}");
    }
    assert_eq!(
        m.message().matches("could not stop DM job j1").count(),
        1,
        "told once: {}",
        m.message()
    );
    m.handle(
        Input::JobStopped(Ok(job("j1", JobStatus::Aborted, "01"))),
        t + 1.0,
    );
    assert!(stops(&m.handle(Input::Tick, t + 10.0)).is_empty());
}

#[test]
fn a_restart_in_a_final_state_resumes_stopping_and_sending() {
    let (mut m, now) = at(State::Acquiring);
    m.command(Command::Abort, now).unwrap();
    let mut m = restored(&m);
    let actions = m.handle(Input::Tick, now + 10.0);
    assert_eq!(stops(&actions), ["j1"], "the stop in flight is sent again");
    let actions = m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Aborted, "02"))),
        now + 11.0,
    );
    assert!(sent_run(&actions).is_some());
}

#[test]
fn answers_about_other_jobs_or_runs_are_ignored() {
    let (mut m, now) = at(State::Acquiring);
    let before = m.record().clone();
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("other", JobStatus::Failed, "01"))),
        now,
    );
    m.handle(
        Input::RunSent {
            run_id: "other".into(),
            result: Ok(()),
        },
        now,
    );
    m.handle(
        Input::JobStarted(Ok(job("other", JobStatus::Running, "01"))),
        now,
    );
    assert_eq!(m.record(), &before);
}

#[test]
fn the_view_shows_the_run_time_of_a_running_job() {
    let (m, _) = at(State::Acquiring);
    let view = m.view(T0 + 12.5);
    assert_eq!(view.run_time, 12.5);
    assert_eq!(view.stage_id, "01-START");
    assert_eq!(view.job_status, "running");
    assert_eq!(view.run_uid, "uid-1");
    assert_eq!(view.workflow, "stream");
    assert!(view.request.contains("\"expectedFrames\":5"));
}

/// One step of a random session.
#[derive(Debug, Clone)]
enum Step {
    Command(Command),
    Ready(bool),
    Progress(u64),
    Started(u8),
    Found(u8),
    Poll(u8),
    Stopped(u8),
    Sent(bool),
    Wait(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        prop::sample::select(Command::ALL.to_vec()).prop_map(Step::Command),
        any::<bool>().prop_map(Step::Ready),
        (0u64..8).prop_map(Step::Progress),
        (0u8..3).prop_map(Step::Started),
        (0u8..3).prop_map(Step::Found),
        (0u8..6).prop_map(Step::Poll),
        (0u8..3).prop_map(Step::Stopped),
        any::<bool>().prop_map(Step::Sent),
        (0u16..5000).prop_map(Step::Wait),
    ]
}

proptest! {
    /// Whatever happens, once time passes every run ends in a final state (or the slot is IDLE),
    /// and every run that ended went to the catalog. (Without a processing timeout a running
    /// job is followed for as long as it runs, so the machine here has one.)
    #[test]
    fn a_final_state_is_always_reached(steps in prop::collection::vec(step(), 0..40)) {
        let mut m = machine_with_processing_timeout(3600.0, false);
        let mut now = T0;
        let mut sent = std::collections::HashSet::new();
        let mut note_sent = |actions: Vec<Action>| {
            for action in actions {
                if let Action::SendRun { run_id, .. } = action {
                    sent.insert(run_id);
                }
            }
        };
        m.handle(Input::Request(request_json()), now);
        for step in steps {
            now += 0.5;
            let job_id = m.run().and_then(|r| r.job_id.clone()).unwrap_or_else(|| "j1".into());
            let actions = match step {
                Step::Command(c) => m.command(c, now).unwrap_or_default(),
                Step::Ready(r) => m.handle(Input::Ready(r), now),
                Step::Progress(n) => m.handle(Input::Progress(n), now),
                Step::Started(kind) => m.handle(Input::JobStarted(match kind {
                    0 => Ok(job(&job_id, JobStatus::Running, "01")),
                    1 => Err(DmFailure::Refused("refused".into())),
                    _ => Err(DmFailure::NoAnswer("timed out".into())),
                }), now),
                Step::Found(kind) => m.handle(Input::JobFound(match kind {
                    0 => Ok(Some(job(&job_id, JobStatus::Running, "01"))),
                    1 => Ok(None),
                    _ => Err("down".into()),
                }), now),
                Step::Poll(kind) => {
                    let poll = match kind {
                        0 => JobPoll::Seen(job(&job_id, JobStatus::Running, "02")),
                        1 => JobPoll::Seen(job(&job_id, JobStatus::Done, "03")),
                        2 => JobPoll::Seen(failed_job(&job_id, "boom")),
                        3 => JobPoll::Seen(job(&job_id, JobStatus::Aborted, "02")),
                        4 => JobPoll::NotFound("gone".into()),
                        _ => JobPoll::Unreachable("down".into()),
                    };
                    m.handle(Input::JobPolled(poll), now)
                }
                Step::Stopped(kind) => m.handle(Input::JobStopped(match kind {
                    0 => Ok(job(&job_id, JobStatus::Aborted, "02")),
                    1 => Err(refused_stop()),
                    _ => Err(DmFailure::NoAnswer("timed out".into())),
                }), now),
                Step::Sent(ok) => {
                    let run_id = m.run().map(|r| r.run_id.clone()).unwrap_or_default();
                    m.handle(Input::RunSent { run_id, result: if ok { Ok(()) } else { Err("no".into()) } }, now)
                }
                Step::Wait(seconds) => {
                    now += f64::from(seconds);
                    m.handle(Input::Tick, now)
                }
            };
            note_sent(actions);
        }
        for _ in 0..4 {
            now += 10_000.0;
            note_sent(m.handle(Input::Tick, now));
        }
        prop_assert!(m.state().is_final() || m.state() == State::Idle, "stuck in {}", m.state());
        if let Some(run) = m.run() {
            prop_assert!(
                run.catalog != CatalogStatus::Pending || sent.contains(&run.run_id),
                "run {} never went to the catalog", run.run_id
            );
        }
    }
}

/// A machine in `state`, set up so that `cause` can act there, and the time.
fn in_state_for(state: State, cause: Cause) -> (Machine, f64) {
    match (state, cause) {
        (State::Idle, _) => {
            let mut m = machine();
            m.handle(Input::Request(request_json()), T0);
            (m, T0)
        }
        (State::WaitReady, Cause::ReadyStageReached) => {
            let mut m = machine();
            let request = r#"{"workflow":"w","readyStage":"02-RUN"}"#;
            m.handle(Input::Request(request.into()), T0);
            m.command(Command::Start, T0).unwrap();
            m.handle(
                Input::JobStarted(Ok(job("j1", JobStatus::Running, "01"))),
                T0,
            );
            (m, T0)
        }
        (State::Processing, Cause::Timeout) => at_with(
            machine_with_processing_timeout(60.0, false),
            State::Processing,
        ),
        (State::Done, _) => {
            let (mut m, now) = at(State::Processing);
            m.handle(
                Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Done, "02"))),
                now,
            );
            (m, now)
        }
        (State::Failed, _) => {
            let (mut m, now) = at(State::Acquiring);
            m.workflow_command(WorkflowCommand::Fail, now).unwrap();
            (m, now)
        }
        (State::Aborted, _) => {
            let (mut m, now) = at(State::Acquiring);
            m.command(Command::Abort, now).unwrap();
            (m, now)
        }
        (State::Timeout, _) => {
            let (mut m, now) = at(State::Ready);
            m.handle(Input::Tick, now + 10_000.0);
            (m, now + 10_000.0)
        }
        (state, _) => at(state),
    }
}

/// Apply `cause` to `m` at `now` (a refused command is a test failure).
fn apply(m: &mut Machine, cause: Cause, now: f64) {
    let poll = |m: &mut Machine, job: Box<ProcessingJob>| {
        m.handle(Input::JobPolled(JobPoll::Seen(job)), now);
    };
    match cause {
        Cause::Start => drop(m.command(Command::Start, now).unwrap()),
        Cause::AcqStarted => drop(m.command(Command::AcqStarted, now).unwrap()),
        Cause::AcqDone => drop(m.command(Command::AcqDone, now).unwrap()),
        Cause::Abort => drop(m.command(Command::Abort, now).unwrap()),
        Cause::Reset => drop(m.command(Command::Reset, now).unwrap()),
        Cause::EndAcquisition => {
            drop(
                m.workflow_command(WorkflowCommand::EndAcquisition, now)
                    .unwrap(),
            );
        }
        Cause::WorkflowFail => drop(m.workflow_command(WorkflowCommand::Fail, now).unwrap()),
        Cause::ReadyOn => drop(m.set_ready(true, now).unwrap()),
        Cause::ReadyOff => drop(m.set_ready(false, now).unwrap()),
        Cause::ReadyStageReached => poll(m, job("j1", JobStatus::Running, "02-RUN")),
        Cause::JobNamed => {
            m.handle(
                Input::JobStarted(Ok(job("j1", JobStatus::Running, "01"))),
                now,
            );
        }
        Cause::StartRefused => {
            m.handle(Input::JobStarted(Err(DmFailure::Refused("no".into()))), now);
        }
        Cause::NoJobFound => drop(m.handle(Input::JobFound(Ok(None)), now)),
        Cause::AllFramesIn => drop(m.handle(Input::Progress(5), now)),
        Cause::JobFailed => poll(m, failed_job("j1", "boom")),
        Cause::JobAborted => poll(m, job("j1", JobStatus::Aborted, "02")),
        Cause::JobDone => poll(m, job("j1", JobStatus::Done, "02")),
        Cause::JobLost => drop(m.handle(Input::JobPolled(JobPoll::NotFound("gone".into())), now)),
        Cause::DmLost => {
            let lost = Timeouts::default().dm_lost.as_secs_f64();
            m.handle(Input::JobFound(Err("down".into())), now);
            m.handle(Input::JobFound(Err("down".into())), now + lost);
        }
        Cause::Timeout => drop(m.handle(Input::Tick, now + 10_000.0)),
    }
}

#[test]
fn every_row_of_the_transition_table_is_what_the_machine_does() {
    for &(from, cause, to) in transitions::TRANSITIONS {
        let (mut m, now) = in_state_for(from, cause);
        assert_eq!(m.state(), from, "set-up for {from} {cause:?}");
        apply(&mut m, cause, now + 1.0);
        assert_eq!(m.state(), to, "{from} --{cause:?}--> {to}: {}", m.message());
    }
    assert!(!transitions::is_legal(State::Idle, State::Done));
    assert!(!transitions::is_legal(State::Draining, State::Timeout));
}
