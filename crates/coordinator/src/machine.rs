//! The handshake state machine of one run slot, without I/O.
//!
//! Inputs go in ([`Machine::command`] for Bluesky's commands, [`Machine::handle`] for everything
//! else: the request text, the workflow's Ready and Progress, DM's answers, and the passing of
//! time; the workflow's commands through [`Machine::workflow_command`], its `Ready` through
//! [`Machine::set_ready`] and its consumers' books through [`Machine::report`]); [`Action`]s come
//! out for the runtime to carry out (start, find or stop a DM job, send the run to the DM run
//! catalog, log a transition). DM is polled, never
//! pushed: [`Machine::dm_query`] says what to ask DM next. Time is wall-clock seconds since the
//! epoch, given with every input, so that the machine is deterministic under test and its saved
//! [`SlotRecord`] keeps meaning after a restart.
//!
//! Here: the inputs, the commands and what they lead to. Beside it: `dm_answers.rs` (DM's
//! answers and the job as last seen), `deadlines.rs` (silent members, waits that ran out, the
//! stops and catalog sends that follow), `transitions.rs` (the legal transitions as data),
//! `record.rs` (what a slot saves), `view.rs` (what the PVs show) and `catalog.rs` (what goes to
//! the DM run catalog).

use std::time::Duration;

use dm::{ExperimentRun, ProcessingJob};
use serde_json::{Map, Value};

use crate::members::MemberReport;
use crate::request::RunRequest;
use crate::state::{Command, State, WorkflowCommand};

#[path = "catalog.rs"]
mod catalog;
#[path = "deadlines.rs"]
mod deadlines;
#[path = "dm_answers.rs"]
mod dm_answers;
#[path = "record.rs"]
mod record;
#[path = "transitions.rs"]
pub mod transitions;
#[path = "view.rs"]
mod view;

pub use record::{CatalogStatus, Run, SlotRecord, Transition};
pub use view::SlotView;

/// Seconds between attempts to stop a DM job.
const STOP_RETRY_SECS: f64 = 2.0;

/// How long each wait may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// STARTING: for DM to start the job.
    pub start: Duration,
    /// WAIT_READY: for the workflow's Ready, unless the request gives `readyTimeout`.
    pub ready: Duration,
    /// READY: for ACQ_STARTED.
    pub arm: Duration,
    /// ACQUIRING: for ACQ_DONE.
    pub acquire: Duration,
    /// DRAINING: without new progress, before the remaining frames count as missed.
    pub drain_idle: Duration,
    /// PROCESSING: for the DM job to end; `None` follows the job until it ends.
    pub processing: Option<Duration>,
    /// While a run is active: DM unreachable this long fails the run.
    pub dm_lost: Duration,
    /// After a final state: for the DM job's final snapshot before the run metadata is sent
    /// without it.
    pub finish: Duration,
    /// From READY to DRAINING: a consumer member silent this long (no `Report`) is lost; its
    /// frames that it never reported count missed.
    pub member_silence: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            start: Duration::from_secs(30),
            ready: Duration::from_secs(60),
            arm: Duration::from_secs(600),
            acquire: Duration::from_secs(3600),
            drain_idle: Duration::from_secs(10),
            member_silence: Duration::from_secs(3),
            processing: None,
            dm_lost: Duration::from_secs(120),
            finish: Duration::from_secs(30),
        }
    }
}

/// The settings of a machine that are not part of its saved record.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineConfig {
    /// The waits.
    pub timeouts: Timeouts,
    /// The run catalog experiment for requests that name none.
    pub experiment: String,
    /// Stop the DM job when the processing timeout is reached (otherwise it is left running and
    /// only the following stops).
    pub stop_job_on_timeout: bool,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            timeouts: Timeouts::default(),
            experiment: "pvabridge".into(),
            stop_job_on_timeout: false,
        }
    }
}

/// Something the runtime must do for the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a processing job of `workflow` with `args`; answer with [`Input::JobStarted`].
    StartJob {
        /// The workflow name.
        workflow: String,
        /// The argsDict.
        args: Map<String, Value>,
    },
    /// Stop the job; answer with [`Input::JobStopped`].
    StopJob {
        /// The job id.
        job_id: String,
    },
    /// Add the run to the DM run catalog; answer with [`Input::RunSent`].
    SendRun {
        /// The bridge's id of the run.
        run_id: String,
        /// The catalog entry.
        run: Box<ExperimentRun>,
    },
    /// The state changed; log it.
    Transitioned {
        /// The state left.
        from: State,
        /// The state entered.
        to: State,
        /// Why.
        message: String,
    },
}

/// What to ask DM next (one question at a time, at the poll period).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmQuery {
    /// Get the job; answer with [`Input::JobPolled`].
    Poll {
        /// The job id.
        job_id: String,
    },
    /// Look for the job of a run whose start was cut short by a restart; answer with
    /// [`Input::JobFound`].
    Find {
        /// The `pvabridgeRunId` argsDict value of the job.
        run_id: String,
    },
}

/// The answer to a poll of the job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobPoll {
    /// DM answered with the job.
    Seen(Box<ProcessingJob>),
    /// DM says there is no such job.
    NotFound(String),
    /// DM did not answer (or failed in a way that may pass).
    Unreachable(String),
}

/// Why DM did not do what the bridge asked of it (start or stop a job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DmFailure {
    /// DM answered that it did not do it.
    Refused(String),
    /// No clear answer (a timeout, a broken connection, or for a start also a server error or a
    /// reply not understood): DM may or may not have done it.
    NoAnswer(String),
}

impl std::fmt::Display for DmFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DmFailure::Refused(message) | DmFailure::NoAnswer(message) => f.write_str(message),
        }
    }
}

/// An input other than a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The text of the `Request` PV, read when a command comes.
    Request(String),
    /// The workflow wrote `Ready` (see also [`Machine::set_ready`], which says when it is
    /// refused).
    Ready(bool),
    /// The workflow wrote `Progress`.
    Progress(u64),
    /// The workflow wrote `WorkflowMessage`.
    WorkflowMessage(String),
    /// The answer to [`Action::StartJob`].
    JobStarted(Result<Box<ProcessingJob>, DmFailure>),
    /// The answer to [`DmQuery::Find`]: the job, or none.
    JobFound(Result<Option<Box<ProcessingJob>>, String>),
    /// The answer to [`DmQuery::Poll`].
    JobPolled(JobPoll),
    /// The answer to [`Action::StopJob`].
    JobStopped(Result<Box<ProcessingJob>, DmFailure>),
    /// The answer to [`Action::SendRun`].
    RunSent {
        /// The run it was about.
        run_id: String,
        /// Accepted, or why not.
        result: Result<(), String>,
    },
    /// Time passed.
    Tick,
}

/// A command refused; the `Command` (or `WorkflowCommand`) put fails with this text, and nothing
/// changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command} refused in state {state}: {reason}")]
pub struct Refused<C: std::fmt::Display> {
    /// The command.
    pub command: C,
    /// The state it came in.
    pub state: State,
    /// Why.
    pub reason: String,
}

/// Bluesky's command refused.
pub type CommandRefused = Refused<Command>;

/// The workflow's command refused.
pub type WorkflowCommandRefused = Refused<WorkflowCommand>;

/// The handshake state machine of one slot.
#[derive(Debug, Clone)]
pub struct Machine {
    config: MachineConfig,
    record: SlotRecord,
    pending_request: String,
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

impl Machine {
    /// A slot in IDLE.
    pub fn new(prefix: impl Into<String>, config: MachineConfig, now: f64) -> Machine {
        Machine {
            config,
            record: SlotRecord {
                prefix: prefix.into(),
                state: State::Idle,
                state_since: now,
                message: "waiting for START".into(),
                run: None,
            },
            pending_request: String::new(),
        }
    }

    /// A slot as a saved record left it; feed [`Input::Tick`] next, so that it resumes what was
    /// under way (find, poll or stop the job, send the run).
    pub fn restore(record: SlotRecord, config: MachineConfig) -> Machine {
        Machine {
            config,
            record,
            pending_request: String::new(),
        }
    }

    /// What to save.
    pub fn record(&self) -> &SlotRecord {
        &self.record
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.record.state
    }

    /// What happened last.
    pub fn message(&self) -> &str {
        &self.record.message
    }

    /// The current run.
    pub fn run(&self) -> Option<&Run> {
        self.record.run.as_ref()
    }

    /// Apply a command from Bluesky, or refuse it (then nothing changes).
    pub fn command(&mut self, command: Command, now: f64) -> Result<Vec<Action>, CommandRefused> {
        let state = self.record.state;
        let refuse = |reason: String| CommandRefused {
            command,
            state,
            reason,
        };
        let mut out = Vec::new();
        match command {
            Command::None => {}
            Command::Start => {
                if state.is_active() {
                    return Err(refuse("a run is in progress; ABORT it first".into()));
                }
                let request =
                    RunRequest::parse(&self.pending_request).map_err(|e| refuse(e.to_string()))?;
                self.retire_run(&mut out);
                let run_id = format!("{}@{}", self.record.prefix, (now * 1000.0) as u64);
                let args = request.job_args(&self.record.prefix, &run_id);
                let workflow = request.workflow.clone();
                let mut run = Run::new(run_id, request, now);
                run.in_flight.start = true;
                self.record.run = Some(run);
                self.go(
                    State::Starting,
                    format!("starting DM workflow {workflow}"),
                    now,
                    &mut out,
                );
                out.push(Action::StartJob { workflow, args });
            }
            Command::AcqStarted => {
                if state != State::Ready {
                    return Err(refuse("ACQ_STARTED is accepted only in READY".into()));
                }
                self.go(
                    State::Acquiring,
                    "acquisition started".into(),
                    now,
                    &mut out,
                );
            }
            Command::AcqDone => {
                if self.acquisition_ended() {
                    // The workflow ended acquisition first: whoever comes second succeeds.
                } else if state != State::Acquiring {
                    return Err(refuse("ACQ_DONE is accepted only in ACQUIRING".into()));
                } else {
                    self.end_acquisition("acquisition done".into(), now, &mut out);
                }
            }
            Command::Abort => {
                if state.is_active() {
                    self.end(
                        State::Aborted,
                        "aborted by command".into(),
                        true,
                        now,
                        &mut out,
                    );
                } else {
                    self.record.message = format!("ABORT: nothing to abort in state {state}");
                }
            }
            Command::Reset => {
                if state.is_active() {
                    return Err(refuse("a run is in progress; ABORT it first".into()));
                }
                if state.is_final() {
                    self.retire_run(&mut out);
                    self.go(
                        State::Idle,
                        "reset; waiting for START".into(),
                        now,
                        &mut out,
                    );
                } else {
                    self.record.message = "RESET: already IDLE".into();
                }
            }
        }
        self.check_deadlines(now, &mut out);
        self.follow_up(now, &mut out);
        Ok(out)
    }

    /// Apply a command from the workflow, or refuse it (then nothing changes). Its reason is
    /// the run's last `WorkflowMessage`.
    pub fn workflow_command(
        &mut self,
        command: WorkflowCommand,
        now: f64,
    ) -> Result<Vec<Action>, WorkflowCommandRefused> {
        let state = self.record.state;
        let refuse = |reason: &str| Refused {
            command,
            state,
            reason: reason.to_string(),
        };
        let reason = self
            .run()
            .map(|run| run.workflow_message.trim().to_string())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "no reason given (WorkflowMessage is empty)".into());
        let mut out = Vec::new();
        match command {
            WorkflowCommand::None => {}
            WorkflowCommand::EndAcquisition => {
                if self.acquisition_ended() {
                    // Bluesky's ACQ_DONE came first: whoever comes second succeeds.
                } else if state != State::Acquiring {
                    return Err(refuse("END_ACQUISITION is accepted only in ACQUIRING"));
                } else {
                    let text = format!("the workflow ended acquisition: {reason}");
                    self.end_acquisition(text, now, &mut out);
                }
            }
            WorkflowCommand::Fail => {
                if !state.is_active() {
                    return Err(refuse("no run is in progress"));
                }
                let text = format!("the workflow failed the run: {reason}");
                self.end(State::Failed, text, true, now, &mut out);
            }
        }
        self.check_deadlines(now, &mut out);
        self.follow_up(now, &mut out);
        Ok(out)
    }

    /// The workflow puts `Ready`: 0 before ACQ_STARTED withdraws readiness (READY goes back to
    /// WAIT_READY); afterwards it is refused with the reason.
    pub fn set_ready(&mut self, ready: bool, now: f64) -> Result<Vec<Action>, String> {
        let mut out = Vec::new();
        self.on_ready(ready, now, &mut out)?;
        self.check_deadlines(now, &mut out);
        self.follow_up(now, &mut out);
        Ok(out)
    }

    /// A consumer member's books from `Report`; refused without a run, or for a member number
    /// the request's `consumers` does not have.
    pub fn report(&mut self, report: MemberReport, now: f64) -> Result<Vec<Action>, String> {
        let state = self.record.state;
        let Some(run) = self.record.run.as_mut() else {
            return Err(format!("no run in state {state}: nothing to report to"));
        };
        let consumers = run.request.consumer_count();
        if report.member >= consumers {
            return Err(format!(
                "member {} is not one of the run's {consumers} consumer(s) (0..{})",
                report.member,
                consumers - 1
            ));
        }
        let processed_before = run.processed();
        let member = report.member;
        run.member_seen.insert(member, now);
        if let Some(why) = run.lost_members.remove(&member) {
            tracing::warn!("member {member} reports again after it was lost ({why})");
        }
        run.members.insert(member, report);
        if run.processed() != processed_before {
            run.progress_at = now;
        }
        let mut out = Vec::new();
        if state == State::WaitReady && run.is_ready() {
            self.go(
                State::Ready,
                format!("every consumer is ready ({consumers} of {consumers})"),
                now,
                &mut out,
            );
        } else if state == State::WaitReady && consumers > 1 {
            let ready = run.members.values().filter(|m| m.ready).count();
            self.record.message =
                format!("waiting for the workflow's consumers: {ready} of {consumers} ready");
        }
        self.check_drained(now, &mut out);
        self.check_deadlines(now, &mut out);
        self.follow_up(now, &mut out);
        Ok(out)
    }

    /// Acquisition is over (DRAINING was reached): a late ACQ_DONE or END_ACQUISITION is a
    /// no-op.
    fn acquisition_ended(&self) -> bool {
        self.run().is_some_and(Run::reached_draining)
    }

    /// ACQUIRING → DRAINING, saying why and how far the frames are.
    fn end_acquisition(&mut self, why: String, now: f64, out: &mut Vec<Action>) {
        let processed = self.run().map_or(0, Run::processed);
        let so_far = match self.run().and_then(|run| run.request.expected_frames) {
            Some(expected) => format!("{processed} of {expected} frames accounted for so far"),
            None => format!("{processed} frames accounted for so far"),
        };
        self.go(State::Draining, format!("{why}; {so_far}"), now, out);
        self.check_drained(now, out);
    }

    /// Apply an input other than a command.
    pub fn handle(&mut self, input: Input, now: f64) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Request(text) => self.pending_request = text,
            Input::Ready(ready) => {
                if let Err(refused) = self.on_ready(ready, now, &mut out) {
                    tracing::debug!("Ready {ready} ignored: {refused}");
                }
            }
            Input::Progress(frames) => self.on_progress(frames, now, &mut out),
            Input::WorkflowMessage(text) => {
                if let Some(run) = self.record.run.as_mut() {
                    run.workflow_message = text;
                }
            }
            Input::JobStarted(result) => {
                if let Some(run) = self.record.run.as_mut() {
                    run.in_flight.start = false;
                }
                match result {
                    Ok(job) => self.on_job_named(*job, now, &mut out),
                    Err(failure) => self.on_start_failed(failure, now, &mut out),
                }
            }
            Input::JobFound(result) => match result {
                Ok(Some(job)) => self.on_job_named(*job, now, &mut out),
                Ok(None) => self.on_no_job_found(now, &mut out),
                Err(message) => self.on_dm_unreachable(message, now, &mut out),
            },
            Input::JobPolled(poll) => self.on_poll(poll, now, &mut out),
            Input::JobStopped(result) => self.on_stopped(result, now),
            Input::RunSent { run_id, result } => self.on_run_sent(&run_id, result),
            Input::Tick => {}
        }
        self.check_deadlines(now, &mut out);
        self.follow_up(now, &mut out);
        out
    }

    /// What to ask DM next, if anything.
    pub fn dm_query(&self) -> Option<DmQuery> {
        let run = self.run()?;
        if run.job_lost || run.unfollowed {
            return None;
        }
        match &run.job_id {
            Some(job_id) => {
                let following =
                    self.record.state.is_active() || run.catalog == CatalogStatus::Pending;
                (following && !run.job_is_final()).then(|| DmQuery::Poll {
                    job_id: job_id.clone(),
                })
            }
            None => {
                // A start without a clear answer is looked for even after the run ended, so
                // that a job DM made anyway is stopped rather than left running unseen.
                let looking = self.record.state == State::Starting
                    || (run.start_unconfirmed.is_some() && run.catalog == CatalogStatus::Pending);
                (looking && !run.in_flight.start).then(|| DmQuery::Find {
                    run_id: run.run_id.clone(),
                })
            }
        }
    }

    fn go(&mut self, to: State, message: String, now: f64, out: &mut Vec<Action>) {
        let from = self.record.state;
        debug_assert!(
            transitions::is_legal(from, to),
            "{from} -> {to} is not in the transition table"
        );
        self.record.state = to;
        self.record.state_since = now;
        self.record.message = message.clone();
        if let Some(run) = self.record.run.as_mut() {
            run.history.push(Transition {
                state: to,
                at: now,
                message: message.clone(),
            });
            if to.is_final() {
                run.ended_at = Some(now);
                if run.frames_missed.is_none() && run.reached_draining() {
                    run.frames_missed = run
                        .request
                        .expected_frames
                        .map(|expected| expected.saturating_sub(run.received()));
                }
            }
        }
        out.push(Action::Transitioned { from, to, message });
    }

    /// Enter a final state; `stop_job` when the DM job must not run on.
    fn end(&mut self, to: State, message: String, stop_job: bool, now: f64, out: &mut Vec<Action>) {
        if let Some(run) = self.record.run.as_mut() {
            run.stop_wanted |= stop_job;
        }
        self.go(to, message, now, out);
    }

    /// Before a run is replaced or reset away: its metadata goes to the catalog now if it has
    /// not gone yet.
    fn retire_run(&mut self, out: &mut Vec<Action>) {
        if let Some(run) = self.record.run.as_ref() {
            if run.catalog == CatalogStatus::Pending && !run.in_flight.send {
                out.push(self.send_run_action());
            }
        }
        self.record.run = None;
    }

    fn on_ready(&mut self, ready: bool, now: f64, out: &mut Vec<Action>) -> Result<(), String> {
        let state = self.record.state;
        let Some(run) = self.record.run.as_mut() else {
            return Ok(());
        };
        if !ready && !matches!(state, State::Starting | State::WaitReady | State::Ready) {
            return Err(format!(
                "Ready 0 refused in state {state}: readiness can be withdrawn only before ACQ_STARTED"
            ));
        }
        run.ready |= ready;
        if !ready {
            run.ready = false;
        }
        let all_ready = run.is_ready();
        match state {
            State::WaitReady if all_ready => {
                self.go(State::Ready, "the workflow is ready".into(), now, out);
            }
            State::Ready if !ready => {
                self.go(
                    State::WaitReady,
                    "the workflow withdrew its readiness; waiting for it to be ready".into(),
                    now,
                    out,
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn on_progress(&mut self, frames: u64, now: f64, out: &mut Vec<Action>) {
        let Some(run) = self.record.run.as_mut() else {
            return;
        };
        if run.progress != frames {
            run.progress = frames;
            run.progress_at = now;
        }
        self.check_drained(now, out);
    }

    /// DRAINING ends once every expected frame is accounted for.
    fn check_drained(&mut self, now: f64, out: &mut Vec<Action>) {
        if self.record.state != State::Draining {
            return;
        }
        let expected = self.run().and_then(|run| {
            run.request
                .expected_frames
                .filter(|expected| run.processed() >= *expected)
        });
        if let Some(expected) = expected {
            self.leave_draining(format!("all {expected} frames accounted for"), now, out);
        }
    }

    fn leave_draining(&mut self, message: String, now: f64, out: &mut Vec<Action>) {
        if let Some(run) = self.record.run.as_mut() {
            run.frames_missed = run
                .request
                .expected_frames
                .map(|expected| expected.saturating_sub(run.received()));
        }
        self.go(State::Processing, message, now, out);
        self.react_to_job(now, out);
    }
}

#[cfg(test)]
#[path = "machine_tests/mod.rs"]
mod tests;
