//! What the PVs of a slot show, derived from its machine.

use dm::JobStatus;

use super::{secs, Machine, Run};
use crate::members::{stage_rows, MemberReport, StageRow};
use crate::state::State;

/// What the PVs of a slot show, derived from the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotView {
    /// `State`.
    pub state: State,
    /// `Message`.
    pub message: String,
    /// `Workflow`.
    pub workflow: String,
    /// `Owner`: the DM job's owner.
    pub owner: String,
    /// `JobId`.
    pub job_id: String,
    /// `JobStatus`.
    pub job_status: String,
    /// `StageId`.
    pub stage_id: String,
    /// `RunTime`: seconds the DM job has run.
    pub run_time: f64,
    /// `FramesExpected`.
    pub frames_expected: i64,
    /// `FramesReceived`: what the consumers received (the workflow's progress without them).
    pub frames_received: i64,
    /// `FramesMissed`.
    pub frames_missed: i64,
    /// The Bluesky run uid, if the request gave one.
    pub run_uid: String,
    /// The request of the current run as JSON (empty in IDLE).
    pub request: String,
    /// `Ready`: derived from the members once they report.
    pub ready: bool,
    /// `Progress`: frames processed (the members' sum once they report).
    pub progress: i64,
    /// `WorkflowMessage`.
    pub workflow_message: String,
    /// `WorkflowPVs`.
    pub workflow_pvs: Vec<String>,
    /// `Members`: one row per member, in member order.
    pub members: Vec<MemberReport>,
    /// `Stages`: the DM job's stages.
    pub stages: Vec<StageRow>,
}

impl Machine {
    /// What the PVs show at `now`.
    pub fn view(&self, now: f64) -> SlotView {
        let run = self.run();
        let job = run.and_then(|r| r.job.as_ref());
        let run_time = job
            .and_then(|job| {
                job.run_time.or_else(|| {
                    (job.status == JobStatus::Running)
                        .then_some(job.start_time)
                        .flatten()
                        .map(|start| (now - start).max(0.0))
                })
            })
            .unwrap_or(0.0);
        let as_long = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        SlotView {
            state: self.record.state,
            message: self.message_at(now),
            workflow: run.map(|r| r.request.workflow.clone()).unwrap_or_default(),
            owner: job.map(|j| j.owner.clone()).unwrap_or_default(),
            job_id: run.and_then(|r| r.job_id.clone()).unwrap_or_default(),
            job_status: job.map(|j| j.status.to_string()).unwrap_or_default(),
            stage_id: job.and_then(|j| j.stage.clone()).unwrap_or_default(),
            run_time,
            frames_expected: run
                .and_then(|r| r.request.expected_frames)
                .map_or(0, as_long),
            frames_received: run.map_or(0, |r| as_long(r.received())),
            frames_missed: run.map_or(0, |r| as_long(r.missed())),
            run_uid: run
                .and_then(|r| r.request.run_uid.clone())
                .unwrap_or_default(),
            request: run.map(|r| r.request.to_json()).unwrap_or_default(),
            ready: run.is_some_and(Run::is_ready),
            progress: run.map_or(0, |r| as_long(r.processed())),
            workflow_message: run.map(|r| r.workflow_message.clone()).unwrap_or_default(),
            workflow_pvs: run.map(Run::workflow_pvs).unwrap_or_default(),
            members: run
                .map(|r| r.members.values().cloned().collect())
                .unwrap_or_default(),
            stages: job.map(stage_rows).unwrap_or_default(),
        }
    }

    /// `Message`: what happened last, and while an active run gets no answer from DM, since
    /// when and why.
    fn message_at(&self, now: f64) -> String {
        let lost = self.run().map(Run::lost_summary).unwrap_or_default();
        let message = &format!("{}{lost}", self.record.message);
        let outage = self
            .run()
            .filter(|_| self.record.state.is_active())
            .and_then(|run| run.dm_unreachable_since.zip(run.dm_error.as_ref()));
        match outage {
            Some((since, error)) => format!(
                "{message}; DM unreachable for {:.0} s (the run fails after {:.0} s): {error}",
                (now - since).max(0.0),
                secs(self.config.timeouts.dm_lost)
            ),
            None => message.clone(),
        }
    }
}
