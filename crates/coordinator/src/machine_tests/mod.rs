//! Deterministic tests of the state machine: every transition, ABORT from every active state,
//! every timeout, RESET, restarts, and that a final state is always reached. The helpers are
//! here; the tests by topic: `flow` (the commands, the normal path and its waits), `books` (the
//! members' reports and what the PVs show), `dm_answers` (DM's answers, outages, restarts and
//! the run catalog) and `table` (the transition table walked in full, and random sessions).

use std::time::Duration;

use dm::{ExperimentRun, JobStatus, ProcessingJob};
use serde_json::Map;

use super::*;

mod books;
mod dm_answers;
mod flow;
mod table;

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
    for step in ACTIVE {
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

fn refused_stop() -> DmFailure {
    DmFailure::Refused("DM error 16: the job cannot be stopped now".into())
}

fn restored(m: &Machine) -> Machine {
    let text = serde_json::to_string(m.record()).unwrap();
    Machine::restore(
        serde_json::from_str(&text).unwrap(),
        MachineConfig::default(),
    )
}

/// START with the request `json`: in STARTING.
fn started_with(json: &str) -> Machine {
    let mut m = machine();
    m.handle(Input::Request(json.into()), T0);
    m.command(Command::Start, T0).unwrap();
    m
}

/// START with the request `json`, and DM's job "j1" running: in WAIT_READY.
fn job_running_with(json: &str) -> Machine {
    let mut m = started_with(json);
    m.handle(
        Input::JobStarted(Ok(job("j1", JobStatus::Running, "01"))),
        T0,
    );
    m
}

/// A run ended DONE (its job "j1" done), and the run catalog's answer `result` to its metadata.
fn done_and_answered(result: Result<(), String>) -> (Machine, f64) {
    let (mut m, now) = at(State::Processing);
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Done, "02"))),
        now,
    );
    let run_id = m.run().unwrap().run_id.clone();
    m.handle(Input::RunSent { run_id, result }, now);
    (m, now)
}
