//! The transition table walked row by row, and random sessions that always reach a final
//! state.

use proptest::prelude::*;

use super::super::transitions::{self, Cause};
use super::*;

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
