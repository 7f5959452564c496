//! The states of a run slot and the commands Bluesky sends, with the names the `State` and
//! `Command` NTEnum PVs carry as their choices.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a run slot is. The index of each state in [`State::ALL`] is its NTEnum index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// No run: waiting for START.
    Idle,
    /// START received: the DM job is being started.
    Starting,
    /// The DM job exists: waiting for the workflow to say it is ready.
    WaitReady,
    /// The workflow is ready to receive: waiting for ACQ_STARTED.
    Ready,
    /// Bluesky is acquiring: waiting for ACQ_DONE.
    Acquiring,
    /// Acquisition is done: waiting until every frame is accounted for (or no more come).
    Draining,
    /// Frames are accounted for: waiting for the DM job to end.
    Processing,
    /// The DM job ended successfully (final).
    Done,
    /// The DM job failed or the workflow was lost (final).
    Failed,
    /// The run was aborted (final).
    Aborted,
    /// A wait ran out of time (final).
    Timeout,
}

impl State {
    /// Every state, in NTEnum index order.
    pub const ALL: [State; 11] = [
        State::Idle,
        State::Starting,
        State::WaitReady,
        State::Ready,
        State::Acquiring,
        State::Draining,
        State::Processing,
        State::Done,
        State::Failed,
        State::Aborted,
        State::Timeout,
    ];

    /// The name the `State` PV shows.
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "IDLE",
            State::Starting => "STARTING",
            State::WaitReady => "WAIT_READY",
            State::Ready => "READY",
            State::Acquiring => "ACQUIRING",
            State::Draining => "DRAINING",
            State::Processing => "PROCESSING",
            State::Done => "DONE",
            State::Failed => "FAILED",
            State::Aborted => "ABORTED",
            State::Timeout => "TIMEOUT",
        }
    }

    /// The NTEnum index.
    pub fn index(self) -> i32 {
        State::ALL.iter().position(|s| *s == self).unwrap_or(0) as i32
    }

    /// The state at an NTEnum index.
    pub fn from_index(index: i32) -> Option<State> {
        usize::try_from(index)
            .ok()
            .and_then(|i| State::ALL.get(i).copied())
    }

    /// True for the states a run ends in: DONE, FAILED, ABORTED, TIMEOUT.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Done | State::Failed | State::Aborted | State::Timeout
        )
    }

    /// True while a run is under way (neither IDLE nor final).
    pub fn is_active(self) -> bool {
        !self.is_final() && self != State::Idle
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of the choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{given}' is not one of {choices}")]
pub struct UnknownName {
    /// The name given.
    pub given: String,
    /// The names allowed, comma-separated.
    pub choices: String,
}

impl FromStr for State {
    type Err = UnknownName;

    /// Parse a state name, case-insensitively (`wait_ready` works too).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_uppercase().replace('-', "_");
        State::ALL
            .into_iter()
            .find(|s| s.name() == wanted)
            .ok_or_else(|| UnknownName {
                given: text.to_string(),
                choices: State::ALL.map(State::name).join(", "),
            })
    }
}

/// What Bluesky asks of the coordinator through the `Command` PV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Command {
    /// Nothing (the value the PV rests at).
    None,
    /// Start a run with the current `Request`.
    Start,
    /// Acquisition has started (after READY).
    AcqStarted,
    /// Acquisition is done; every frame has been sent.
    AcqDone,
    /// Stop the run and its DM job.
    Abort,
    /// Leave a final state for IDLE.
    Reset,
}

impl Command {
    /// Every command, in NTEnum index order.
    pub const ALL: [Command; 6] = [
        Command::None,
        Command::Start,
        Command::AcqStarted,
        Command::AcqDone,
        Command::Abort,
        Command::Reset,
    ];

    /// The name the `Command` PV shows.
    pub fn name(self) -> &'static str {
        match self {
            Command::None => "NONE",
            Command::Start => "START",
            Command::AcqStarted => "ACQ_STARTED",
            Command::AcqDone => "ACQ_DONE",
            Command::Abort => "ABORT",
            Command::Reset => "RESET",
        }
    }

    /// The NTEnum index.
    pub fn index(self) -> i32 {
        Command::ALL.iter().position(|c| *c == self).unwrap_or(0) as i32
    }

    /// The command at an NTEnum index.
    pub fn from_index(index: i32) -> Option<Command> {
        usize::try_from(index)
            .ok()
            .and_then(|i| Command::ALL.get(i).copied())
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Command {
    type Err = UnknownName;

    /// Parse a command name, case-insensitively.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted = text.trim().to_ascii_uppercase().replace('-', "_");
        Command::ALL
            .into_iter()
            .find(|c| c.name() == wanted)
            .ok_or_else(|| UnknownName {
                given: text.to_string(),
                choices: Command::ALL.map(Command::name).join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_indexes_round_trip() {
        for (i, state) in State::ALL.into_iter().enumerate() {
            assert_eq!(state.index(), i as i32);
            assert_eq!(State::from_index(i as i32), Some(state));
            assert_eq!(state.name().parse::<State>(), Ok(state));
        }
        for (i, command) in Command::ALL.into_iter().enumerate() {
            assert_eq!(command.index(), i as i32);
            assert_eq!(Command::from_index(i as i32), Some(command));
            assert_eq!(command.name().parse::<Command>(), Ok(command));
        }
        assert_eq!(State::from_index(11), None);
        assert_eq!(Command::from_index(-1), None);
        assert_eq!("wait-ready".parse::<State>(), Ok(State::WaitReady));
        let err = "GO".parse::<Command>().unwrap_err();
        assert!(err.to_string().contains("ACQ_STARTED"), "{err}");
    }

    #[test]
    fn final_and_active_states_partition_the_rest() {
        for state in State::ALL {
            let kinds = [state == State::Idle, state.is_active(), state.is_final()];
            assert_eq!(kinds.iter().filter(|k| **k).count(), 1, "{state}");
        }
    }
}
