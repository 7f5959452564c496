//! The streaming handshake between Bluesky and an APS DM workflow.
//!
//! * [`machine`]: the state machine of one run slot, without I/O (inputs in, actions out).
//! * [`fields`]: the handshake's fields declared once (PV suffix, Status member, type, writer),
//!   from which the PVs, Status, PVI, the default access rules and the Status reader derive.
//! * [`pvs`]: the PV set of a slot (State, Command, Request, Ready, ..., Status, PVI).
//! * [`members`]: the consumers' books (`Report`, `Members`) and the DM job's `Stages`.
//! * [`bridge`]: the tokio runtime that serves the PVs of several slots, polls DM, carries
//!   out the machine's actions and keeps each slot's run in a state file.
//! * [`agent`]: a client of the handshake PVs, for the workflow side (Ready, Progress,
//!   WorkflowMessage) and for whoever plays the Bluesky side (Request, Command, waiting on State).
//! * [`embedded`]: the embedded DM service started in-process, with a login made for it.

#![warn(missing_docs)]

pub mod agent;
pub mod bridge;
pub mod embedded;
pub mod fields;
pub mod machine;
pub mod members;
pub mod pvs;
pub mod request;
pub mod state;
pub mod state_file;

pub use agent::{AgentError, HandshakeClient, ProgressReporter, StatusSnapshot};
pub use bridge::{Bridge, BridgeConfig, BridgeError};
pub use machine::{
    Action, DmFailure, Input, Machine, MachineConfig, SlotRecord, SlotView, Timeouts,
};
pub use members::MemberReport;
pub use request::RunRequest;
pub use state::{Command, State, WorkflowCommand};
