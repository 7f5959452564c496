//! A client of one slot's handshake PVs over PVAccess.
//!
//! The workflow side (a DM stage: `pvabridge workflow ...`, or a consumer built on this crate)
//! reports through [`HandshakeClient::set_ready`], [`HandshakeClient::report_progress`] (or a
//! coalescing [`ProgressReporter`]) and [`HandshakeClient::set_workflow_message`]. Whoever plays
//! the Bluesky side (the demo, tests, Rust plans) uses [`HandshakeClient::start`],
//! [`HandshakeClient::command`] and [`HandshakeClient::wait_for_state`]. Both may read
//! [`HandshakeClient::status`].

use std::time::Duration;

use pva::client::{ClientError, Context, MonitorEvent};
use pva_codec::{StructValue, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::fields::{suffix, Id};
use crate::members::MemberReport;
use crate::request::RunRequest;
use crate::state::{Command, State, WorkflowCommand};

/// What a handshake client call can fail with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AgentError {
    /// The PVAccess operation failed (unreachable, refused by the coordinator, ...).
    #[error(transparent)]
    Pva(#[from] ClientError),
    /// A PV held something other than what the handshake layout says.
    #[error("{pv} holds an unexpected value: {message}")]
    Unexpected {
        /// The PV.
        pv: String,
        /// What was wrong.
        message: String,
    },
    /// The wanted state did not come in time.
    #[error("{wanted} not reached within {} s (last seen: {})", .after.as_secs_f64(),
        .last.map_or("nothing".to_string(), |s| s.to_string()))]
    Timeout {
        /// The states waited for.
        wanted: String,
        /// The time allowed.
        after: Duration,
        /// The last state seen.
        last: Option<State>,
    },
    /// The run reached a final state that was not waited for.
    #[error("the run ended in {state}: {message}")]
    RunEnded {
        /// The final state.
        state: State,
        /// The coordinator's message.
        message: String,
    },
}

/// The `Status` PV of a slot, read into plain fields: one per `Status` member of the field
/// table ([`crate::fields`]), each required (a member missing from the PV is an error, never a
/// silent 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatusSnapshot {
    /// The state.
    pub state: State,
    /// The run request JSON.
    pub request: String,
    /// The workflow's Ready (derived from the members once they report).
    #[serde(with = "as_int")]
    pub ready: bool,
    /// Frames processed (the members' sum once they report).
    pub progress: i64,
    /// The workflow's message.
    pub workflow_message: String,
    /// The PVs the workflow's members serve.
    #[serde(rename = "workflowPVs")]
    pub workflow_pvs: Vec<String>,
    /// The DM workflow.
    pub workflow: String,
    /// The DM job's owner.
    pub owner: String,
    /// The DM job id.
    pub job_id: String,
    /// The DM job status.
    pub job_status: String,
    /// The DM job's stage.
    pub stage_id: String,
    /// Seconds the DM job has run.
    pub run_time: f64,
    /// Frames expected.
    pub frames_expected: i64,
    /// Frames the consumers received.
    pub frames_received: i64,
    /// Frames missed.
    pub frames_missed: i64,
    /// What happened last.
    pub message: String,
    /// The coordinator's heartbeat.
    pub heartbeat: i64,
    /// The Bluesky run uid.
    pub run_uid: String,
}

/// `Status` carries `ready` as an int.
mod as_int {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bool(*value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        Ok(i64::deserialize(d)? != 0)
    }
}

impl StatusSnapshot {
    /// Read a `Status` structure; a member missing or of another type is an error naming it.
    pub fn from_value(pv: &str, value: &StructValue) -> Result<StatusSnapshot, AgentError> {
        let unexpected = |message: String| AgentError::Unexpected {
            pv: pv.to_string(),
            message,
        };
        let members = crate::fields::read_status(value).map_err(unexpected)?;
        serde_json::from_value(serde_json::Value::Object(members))
            .map_err(|err| unexpected(err.to_string()))
    }
}

/// A client of the PVs of the slot under one prefix. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HandshakeClient {
    ctx: Context,
    prefix: String,
    timeout: Duration,
}

impl HandshakeClient {
    /// A client of slot `prefix` through `ctx`; each operation may take the context's default
    /// timeout (EPICS_PVA_CONN_TMO).
    pub fn new(ctx: Context, prefix: impl Into<String>) -> Self {
        let timeout = ctx.default_timeout();
        HandshakeClient {
            ctx,
            prefix: prefix.into(),
            timeout,
        }
    }

    /// The same client with another time limit per operation.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The slot's prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full name of the slot's PV `suffix` (see [`crate::fields::FIELDS`]).
    pub fn pv_name(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    async fn put(&self, suffix: &str, value: impl Into<Value>) -> Result<(), AgentError> {
        self.ctx
            .put(&self.pv_name(suffix))
            .set("value", value)
            .timeout(self.timeout)
            .exec()
            .await?;
        Ok(())
    }

    async fn get(&self, suffix: &str) -> Result<StructValue, AgentError> {
        Ok(self
            .ctx
            .get(&self.pv_name(suffix))
            .timeout(self.timeout)
            .exec()
            .await?)
    }

    /// Workflow side: say whether the workflow is ready to receive.
    pub async fn set_ready(&self, ready: bool) -> Result<(), AgentError> {
        self.put(suffix(Id::Ready), i32::from(ready)).await
    }

    /// Workflow side: report the frames processed so far.
    pub async fn report_progress(&self, frames: u64) -> Result<(), AgentError> {
        let frames = i64::try_from(frames).unwrap_or(i64::MAX);
        self.put(suffix(Id::Progress), frames).await
    }

    /// Workflow side: free text for the operator.
    pub async fn set_workflow_message(&self, text: &str) -> Result<(), AgentError> {
        self.put(suffix(Id::WorkflowMessage), text).await
    }

    /// Workflow side: end acquisition (`reason` goes to WorkflowMessage first). A no-op when
    /// acquisition already ended; refused before ACQUIRING.
    pub async fn end_acquisition(&self, reason: &str) -> Result<(), AgentError> {
        self.set_workflow_message(reason).await?;
        self.put(
            suffix(Id::WorkflowCommand),
            WorkflowCommand::EndAcquisition.name(),
        )
        .await
    }

    /// Workflow side: fail the run with `reason` (which goes to WorkflowMessage first); the
    /// bridge stops the DM job.
    pub async fn fail(&self, reason: &str) -> Result<(), AgentError> {
        self.set_workflow_message(reason).await?;
        self.put(suffix(Id::WorkflowCommand), WorkflowCommand::Fail.name())
            .await
    }

    /// Workflow side: a consumer member's books, with an RPC on `Report`.
    pub async fn report(&self, report: &MemberReport) -> Result<(), AgentError> {
        self.ctx
            .rpc(&self.pv_name(suffix(Id::Report)), report.to_value())
            .timeout(self.timeout)
            .exec()
            .await?;
        Ok(())
    }

    /// Workflow side: a reporter that takes progress as often as frames come and puts the
    /// latest value at most once per `period`; [`ProgressReporter::finish`] puts the last one.
    pub fn progress_reporter(&self, period: Duration) -> ProgressReporter {
        ProgressReporter::start(self.clone(), period)
    }

    /// Bluesky side: write the run request.
    pub async fn submit_request(&self, request: &RunRequest) -> Result<(), AgentError> {
        self.put(suffix(Id::Request), request.to_json()).await
    }

    /// Bluesky side: send a command. When this returns, the coordinator has applied it; a
    /// refused command is an error with the coordinator's reason.
    pub async fn command(&self, command: Command) -> Result<(), AgentError> {
        self.put(suffix(Id::Command), command.name()).await
    }

    /// Bluesky side: write the request and START the run.
    pub async fn start(&self, request: &RunRequest) -> Result<(), AgentError> {
        self.submit_request(request).await?;
        self.command(Command::Start).await
    }

    /// The slot's state.
    pub async fn state(&self) -> Result<State, AgentError> {
        let pv = self.pv_name(suffix(Id::State));
        state_of(&pv, &self.get(suffix(Id::State)).await?)
    }

    /// The slot's `Status` structure.
    pub async fn status(&self) -> Result<StatusSnapshot, AgentError> {
        let value = self.get(suffix(Id::Status)).await?;
        StatusSnapshot::from_value(&self.pv_name(suffix(Id::Status)), &value)
    }

    /// Wait until the state is one of `wanted` and return it. A final state that is not
    /// wanted ends the wait with [`AgentError::RunEnded`], so that nobody waits for a run that is
    /// over. The monitor rides out a restart of the coordinator.
    pub async fn wait_for_state(
        &self,
        wanted: &[State],
        timeout: Duration,
    ) -> Result<State, AgentError> {
        let pv = self.pv_name(suffix(Id::State));
        let mut monitor = self.ctx.monitor(&pv).exec()?;
        let mut last = None;
        let watch = async {
            while let Some(event) = monitor.recv().await {
                match event {
                    MonitorEvent::Update(update) => {
                        let state = state_of(&pv, &update.value)?;
                        last = Some(state);
                        if wanted.contains(&state) {
                            return Ok(state);
                        }
                        if state.is_final() {
                            let message = match self.get(suffix(Id::Message)).await {
                                Ok(value) => value
                                    .get("value")
                                    .and_then(Value::as_str)
                                    .unwrap_or_default()
                                    .to_string(),
                                Err(err) => format!("(Message unreadable: {err})"),
                            };
                            return Err(AgentError::RunEnded { state, message });
                        }
                    }
                    MonitorEvent::Finished(Err(err)) => return Err(err.into()),
                    MonitorEvent::Finished(Ok(())) => break,
                    MonitorEvent::Connected | MonitorEvent::Disconnected => {}
                }
            }
            Err(AgentError::Unexpected {
                pv: pv.clone(),
                message: "the server ended the monitor".into(),
            })
        };
        match tokio::time::timeout(timeout, watch).await {
            Ok(result) => result,
            Err(_) => Err(AgentError::Timeout {
                wanted: wanted
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(" or "),
                after: timeout,
                last,
            }),
        }
    }
}

fn state_of(pv: &str, value: &StructValue) -> Result<State, AgentError> {
    let index = value
        .get("value.index")
        .and_then(Value::as_i64)
        .ok_or_else(|| AgentError::Unexpected {
            pv: pv.to_string(),
            message: "no value.index: not an NTEnum".into(),
        })?;
    i32::try_from(index)
        .ok()
        .and_then(State::from_index)
        .ok_or_else(|| AgentError::Unexpected {
            pv: pv.to_string(),
            message: format!("state index {index} is out of range"),
        })
}

/// Puts the latest progress at a bounded rate, however fast frames come.
#[derive(Debug)]
pub struct ProgressReporter {
    latest: watch::Sender<u64>,
    task: JoinHandle<Result<(), AgentError>>,
}

impl ProgressReporter {
    fn start(client: HandshakeClient, period: Duration) -> ProgressReporter {
        let (latest, mut receiver) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut sent = None;
            loop {
                let more = receiver.changed().await.is_ok();
                let frames = *receiver.borrow_and_update();
                if sent != Some(frames) {
                    client.report_progress(frames).await?;
                    sent = Some(frames);
                }
                if !more {
                    return Ok(());
                }
                tokio::time::sleep(period).await;
            }
        });
        ProgressReporter { latest, task }
    }

    /// Note the frames processed so far (never blocks).
    pub fn report(&self, frames: u64) {
        self.latest.send_replace(frames);
    }

    /// Put the last value reported (0 if none was) and stop; the first failed put, if any, is
    /// the error.
    pub async fn finish(self) -> Result<(), AgentError> {
        drop(self.latest);
        match self.task.await {
            Ok(result) => result,
            Err(join_error) => Err(AgentError::Unexpected {
                pv: "Progress".into(),
                message: format!("the reporter task failed: {join_error}"),
            }),
        }
    }
}
