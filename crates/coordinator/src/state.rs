//! The states of a run slot and the commands Bluesky sends, with the names the `State` and
//! `Command` NTEnum PVs carry as their choices.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A name that is not one of the choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{given}' is not one of {choices}")]
pub struct UnknownName {
    /// The name given.
    pub given: String,
    /// The names allowed, comma-separated.
    pub choices: String,
}

/// Defines a command enum whose variants are the choices of an NTEnum PV, in index order, with
/// `ALL`, `name`, `index`, `from_index`, `Display` and a case-insensitive `FromStr`.
macro_rules! choices {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every choice, in NTEnum index order.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The name the PV shows.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The NTEnum index.
            pub fn index(self) -> i32 {
                $name::ALL.iter().position(|c| *c == self).unwrap_or(0) as i32
            }

            /// The choice at an NTEnum index.
            pub fn from_index(index: i32) -> Option<$name> {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| $name::ALL.get(i).copied())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            /// Parse a name, case-insensitively (`-` for `_` too).
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                let wanted = text.trim().to_ascii_uppercase().replace('-', "_");
                $name::ALL
                    .into_iter()
                    .find(|c| c.name() == wanted)
                    .ok_or_else(|| UnknownName {
                        given: text.to_string(),
                        choices: $name::ALL.map($name::name).join(", "),
                    })
            }
        }
    };
}

choices! {
    /// Where a run slot is. The index of each state in [`State::ALL`] is its NTEnum index.
    State {
        /// No run: waiting for START.
        Idle = "IDLE",
        /// START received: the DM job is being started.
        Starting = "STARTING",
        /// The DM job exists: waiting for the workflow to say it is ready.
        WaitReady = "WAIT_READY",
        /// The workflow is ready to receive: waiting for ACQ_STARTED.
        Ready = "READY",
        /// Bluesky is acquiring: waiting for ACQ_DONE (or the workflow's END_ACQUISITION).
        Acquiring = "ACQUIRING",
        /// Acquisition is done: waiting until every frame is accounted for (or no more come).
        Draining = "DRAINING",
        /// Frames are accounted for: waiting for the DM job to end.
        Processing = "PROCESSING",
        /// The DM job ended successfully (final).
        Done = "DONE",
        /// The DM job failed, the workflow failed the run, or the workflow was lost (final).
        Failed = "FAILED",
        /// The run was aborted (final).
        Aborted = "ABORTED",
        /// A wait ran out of time (final).
        Timeout = "TIMEOUT",
    }
}

impl State {
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

choices! {
    /// What Bluesky asks of the coordinator through the `Command` PV.
    Command {
        /// Nothing (the value the PV rests at).
        None = "NONE",
        /// Start a run with the current `Request`.
        Start = "START",
        /// Acquisition has started (after READY).
        AcqStarted = "ACQ_STARTED",
        /// Acquisition is done; every frame has been sent.
        AcqDone = "ACQ_DONE",
        /// Stop the run and its DM job.
        Abort = "ABORT",
        /// Leave a final state for IDLE.
        Reset = "RESET",
    }
}

choices! {
    /// What the workflow asks of the coordinator through the `WorkflowCommand` PV; its
    /// `WorkflowMessage` says why.
    WorkflowCommand {
        /// Nothing (the value the PV rests at).
        None = "NONE",
        /// End acquisition (in ACQUIRING, as Bluesky's ACQ_DONE).
        EndAcquisition = "END_ACQUISITION",
        /// Fail the run and stop the DM job.
        Fail = "FAIL",
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
