//! What a slot saves across a restart of the bridge (its state file): the run, its history,
//! its books and where it is with DM and the run catalog.

use std::collections::BTreeMap;

use dm::ProcessingJob;
use serde::{Deserialize, Serialize};

use crate::members::MemberReport;
use crate::request::RunRequest;
use crate::state::State;

/// Lines of a failed child process's stdErr that Message shows.
const STDERR_TAIL_LINES: usize = 3;

/// One entry of a run's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// The state entered.
    pub state: State,
    /// When (seconds since the epoch).
    pub at: f64,
    /// Why.
    pub message: String,
}

/// Where the run's metadata is with the DM run catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum CatalogStatus {
    /// Not sent yet.
    Pending,
    /// Accepted by the catalog.
    Sent,
    /// Refused or unreachable; the reason.
    Failed {
        /// What went wrong.
        message: String,
    },
}

/// Requests sent to DM whose answers have not come back (not saved: after a restart nothing
/// is in flight).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct InFlight {
    pub(crate) start: bool,
    pub(crate) stop: bool,
    pub(crate) send: bool,
}

/// The current run of a slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// The bridge's id of the run, passed to the DM job as `pvabridgeRunId`.
    pub run_id: String,
    /// What Bluesky asked for.
    pub request: RunRequest,
    /// When START was accepted.
    pub started_at: f64,
    /// When the run reached a final state.
    pub ended_at: Option<f64>,
    /// The DM job, once DM named it.
    pub job_id: Option<String>,
    /// The DM job as last seen.
    pub job: Option<ProcessingJob>,
    /// DM no longer knows the job: stop following it.
    pub job_lost: bool,
    /// The workflow said it is ready (`Ready`).
    pub ready: bool,
    /// Frames the workflow has processed, as it put on `Progress`.
    pub progress: u64,
    /// The workflow's last `WorkflowMessage`.
    #[serde(default)]
    pub workflow_message: String,
    /// The consumers' books, by member number, as they reported them on `Report`.
    #[serde(default)]
    pub members: BTreeMap<u32, MemberReport>,
    /// When each member last reported.
    #[serde(default)]
    pub member_seen: BTreeMap<u32, f64>,
    /// Members lost during the run (silent too long), with why.
    #[serde(default)]
    pub lost_members: BTreeMap<u32, String>,
    /// The processing timeout was reached and the job left running: DM is no longer polled.
    #[serde(default)]
    pub unfollowed: bool,
    /// When progress last changed.
    pub progress_at: f64,
    /// Frames expected but never accounted for, known once draining ended.
    pub frames_missed: Option<u64>,
    /// Every state entered, in order.
    pub history: Vec<Transition>,
    /// The DM job must be stopped (abort or timeout).
    pub stop_wanted: bool,
    /// Attempts made to stop it.
    pub stop_attempts: u32,
    /// Not before this time is stopping tried again.
    pub next_stop_at: f64,
    /// Since when DM has not answered polls.
    pub dm_unreachable_since: Option<f64>,
    /// What the last poll that DM did not answer failed with.
    pub dm_error: Option<String>,
    /// DM gave no clear answer to the start (this error), so it may have made the job: the
    /// job is looked for by the run's id instead of being started again.
    pub start_unconfirmed: Option<String>,
    /// Where the run's metadata is with the run catalog.
    pub catalog: CatalogStatus,
    #[serde(skip)]
    pub(crate) in_flight: InFlight,
}

impl Run {
    pub(crate) fn new(run_id: String, request: RunRequest, now: f64) -> Run {
        Run {
            run_id,
            request,
            started_at: now,
            ended_at: None,
            job_id: None,
            job: None,
            job_lost: false,
            ready: false,
            progress: 0,
            workflow_message: String::new(),
            members: BTreeMap::new(),
            member_seen: BTreeMap::new(),
            lost_members: BTreeMap::new(),
            unfollowed: false,
            progress_at: now,
            frames_missed: None,
            history: Vec::new(),
            stop_wanted: false,
            stop_attempts: 0,
            next_stop_at: now,
            dm_unreachable_since: None,
            dm_error: None,
            start_unconfirmed: None,
            catalog: CatalogStatus::Pending,
            in_flight: InFlight::default(),
        }
    }

    /// DM answered a poll or a search: any outage is over.
    pub(crate) fn dm_answered(&mut self) {
        self.dm_unreachable_since = None;
        self.dm_error = None;
    }

    pub(crate) fn job_is_final(&self) -> bool {
        self.job.as_ref().is_some_and(|job| job.status.is_final())
    }

    pub(crate) fn reached_draining(&self) -> bool {
        self.history.iter().any(|t| t.state == State::Draining)
    }

    /// Whether the workflow is ready: every consumer member ready, once members report;
    /// the `Ready` PV before that.
    pub fn is_ready(&self) -> bool {
        if self.members.is_empty() {
            return self.ready;
        }
        self.members.len() as u64 >= u64::from(self.request.consumer_count())
            && self.members.values().all(|m| m.ready)
    }

    /// Frames processed: the sum of the members' processed counts once members report, the
    /// `Progress` PV before that.
    pub fn processed(&self) -> u64 {
        if self.members.is_empty() {
            return self.progress;
        }
        self.members.values().map(|m| m.processed).sum()
    }

    /// Frames received: the sum of the members' received counts once members report, the
    /// `Progress` PV before that.
    pub fn received(&self) -> u64 {
        if self.members.is_empty() {
            return self.progress;
        }
        self.members.values().map(|m| m.received).sum()
    }

    /// Frames missed: expected minus received once draining ended, the members' own missed
    /// counts before that. Once draining ended it follows the members' later reports (a
    /// member's received count may lag its processed one by a progress period), so that
    /// received + missed = expected.
    pub fn missed(&self) -> u64 {
        match (self.frames_missed, self.request.expected_frames) {
            (Some(_), Some(expected)) => {
                expected.saturating_sub(self.received().max(self.processed()))
            }
            (Some(missed), None) => missed,
            (None, _) => self.members.values().map(|m| m.missed).sum(),
        }
    }

    /// Member `k` has not sent its final report and has not been named lost: its silence may
    /// still be a loss.
    pub(crate) fn member_may_be_lost(&self, k: u32) -> bool {
        !self.members.get(&k).is_some_and(|m| m.ended) && !self.lost_members.contains_key(&k)
    }

    /// `; member K lost: why` for each member lost during the run, for Message.
    pub fn lost_summary(&self) -> String {
        self.lost_members
            .iter()
            .map(|(k, why)| format!("; member {k} lost: {why}"))
            .collect()
    }

    /// The PVs the members serve, as they reported them, in member order.
    pub fn workflow_pvs(&self) -> Vec<String> {
        self.members
            .values()
            .flat_map(|m| m.pvs.iter().cloned())
            .collect()
    }

    pub(crate) fn frames_summary(&self) -> String {
        let processed = self.processed();
        match self.request.expected_frames {
            Some(expected) => format!(
                "{processed} of {expected} frames accounted for, {} missed",
                expected.saturating_sub(self.received())
            ),
            None => format!("{processed} frames accounted for"),
        }
    }

    /// Why the job failed: DM's errorMessage, or else the failed stage's last child process
    /// (its exit status and the tail of its stdErr), where a real DM keeps the reason.
    pub(crate) fn failure_reason(job: &ProcessingJob) -> String {
        if let Some(message) = job.error_message.as_ref().filter(|m| !m.trim().is_empty()) {
            return message.clone();
        }
        let child = job.stage.as_ref().and_then(|stage| {
            job.workflow
                .as_ref()?
                .stages
                .get(stage)?
                .child_processes
                .as_ref()?
                .values()
                .max_by_key(|c| c.child_process_number)
        });
        let Some(child) = child else {
            return "DM gave no reason".into();
        };
        let status = child.exit_status.map_or_else(
            || "no exit status".to_string(),
            |s| format!("exit status {s}"),
        );
        let lines: Vec<&str> = child.std_err.trim().lines().collect();
        let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join(" | ");
        if tail.is_empty() {
            format!(
                "child process {} ended with {status}, nothing on stdErr",
                child.child_process_number
            )
        } else {
            format!(
                "child process {} ended with {status}; stdErr: {tail}",
                child.child_process_number
            )
        }
    }
}

/// Everything a slot must remember across a restart of the bridge: its state file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlotRecord {
    /// The PV prefix of the slot.
    pub prefix: String,
    /// Where the slot is.
    pub state: State,
    /// Since when (seconds since the epoch).
    pub state_since: f64,
    /// What happened last, in words.
    pub message: String,
    /// The current run; `None` in IDLE.
    pub run: Option<Run>,
}
