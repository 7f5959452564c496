//! The legal transitions of a slot, written as data: (state, cause, next state). The machine
//! checks every transition it makes against this table (in debug builds), and the tests walk
//! every row, driving a machine into the state and applying the cause.

use crate::state::State::{self, *};

/// What makes a slot change state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Bluesky's START.
    Start,
    /// Bluesky's ACQ_STARTED.
    AcqStarted,
    /// Bluesky's ACQ_DONE.
    AcqDone,
    /// Bluesky's ABORT.
    Abort,
    /// Bluesky's RESET.
    Reset,
    /// The workflow's END_ACQUISITION.
    EndAcquisition,
    /// The workflow's FAIL.
    WorkflowFail,
    /// The workflow is ready (Ready=1, or every consumer reported ready).
    ReadyOn,
    /// The workflow withdrew its readiness (Ready=0 before ACQ_STARTED).
    ReadyOff,
    /// The DM job reached the Request's readyStage.
    ReadyStageReached,
    /// DM named the run's job (answer to the start, or found after a restart).
    JobNamed,
    /// DM refused the start.
    StartRefused,
    /// DM has no job of the run (a start cut short by a restart).
    NoJobFound,
    /// Every expected frame is processed.
    AllFramesIn,
    /// The DM job failed.
    JobFailed,
    /// The DM job was aborted outside the bridge.
    JobAborted,
    /// The DM job is done.
    JobDone,
    /// DM no longer knows the job.
    JobLost,
    /// DM did not answer for `--dm-lost-timeout`.
    DmLost,
    /// The state's wait ran out (in DRAINING: no new frame for the idle wait).
    Timeout,
}

use Cause::*;

/// Every legal transition.
pub const TRANSITIONS: &[(State, Cause, State)] = &[
    (Idle, Start, Starting),
    (Done, Start, Starting),
    (Failed, Start, Starting),
    (Aborted, Start, Starting),
    (State::Timeout, Start, Starting),
    (Done, Reset, Idle),
    (Failed, Reset, Idle),
    (Aborted, Reset, Idle),
    (State::Timeout, Reset, Idle),
    (Starting, JobNamed, WaitReady),
    (Starting, StartRefused, Failed),
    (Starting, NoJobFound, Failed),
    (WaitReady, ReadyOn, Ready),
    (WaitReady, ReadyStageReached, Ready),
    (Ready, ReadyOff, WaitReady),
    (Ready, AcqStarted, Acquiring),
    (Acquiring, AcqDone, Draining),
    (Acquiring, EndAcquisition, Draining),
    (Draining, AllFramesIn, Processing),
    (Draining, Cause::Timeout, Processing),
    (Draining, JobDone, Done),
    (Processing, JobDone, Done),
    (Starting, Cause::Timeout, State::Timeout),
    (WaitReady, Cause::Timeout, State::Timeout),
    (Ready, Cause::Timeout, State::Timeout),
    (Acquiring, Cause::Timeout, State::Timeout),
    (Processing, Cause::Timeout, State::Timeout),
    (WaitReady, JobDone, Failed),
    (Ready, JobDone, Failed),
    (Acquiring, JobDone, Failed),
    // From every active state.
    (Starting, Abort, Aborted),
    (WaitReady, Abort, Aborted),
    (Ready, Abort, Aborted),
    (Acquiring, Abort, Aborted),
    (Draining, Abort, Aborted),
    (Processing, Abort, Aborted),
    (Starting, WorkflowFail, Failed),
    (WaitReady, WorkflowFail, Failed),
    (Ready, WorkflowFail, Failed),
    (Acquiring, WorkflowFail, Failed),
    (Draining, WorkflowFail, Failed),
    (Processing, WorkflowFail, Failed),
    (Starting, DmLost, Failed),
    (WaitReady, DmLost, Failed),
    (Ready, DmLost, Failed),
    (Acquiring, DmLost, Failed),
    (Draining, DmLost, Failed),
    (Processing, DmLost, Failed),
    (WaitReady, JobFailed, Failed),
    (Ready, JobFailed, Failed),
    (Acquiring, JobFailed, Failed),
    (Draining, JobFailed, Failed),
    (Processing, JobFailed, Failed),
    (WaitReady, JobAborted, Aborted),
    (Ready, JobAborted, Aborted),
    (Acquiring, JobAborted, Aborted),
    (Draining, JobAborted, Aborted),
    (Processing, JobAborted, Aborted),
    (WaitReady, JobLost, Failed),
    (Ready, JobLost, Failed),
    (Acquiring, JobLost, Failed),
    (Draining, JobLost, Failed),
    (Processing, JobLost, Failed),
];

/// Whether the table has a transition from `from` to `to` (for any cause).
pub fn is_legal(from: State, to: State) -> bool {
    TRANSITIONS.iter().any(|(f, _, t)| *f == from && *t == to)
}
