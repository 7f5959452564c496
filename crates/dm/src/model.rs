//! Typed DM objects. Each keeps the keys it does not know in `extra`, because DM objects are
//! open dictionaries: a processing job carries every argsDict key and output variable at its top.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A DM workflow: named stages that run in the order of their sorted keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    /// The workflow name, unique per owner.
    pub name: String,
    /// The user that owns the workflow.
    #[serde(default)]
    pub owner: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Stages keyed by names that sort into run order (`01-START`, `02-...`).
    #[serde(default)]
    pub stages: BTreeMap<String, Stage>,
    /// Keys this model does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One stage of a workflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    /// The shell command, with `$var` substitution.
    pub command: String,
    /// Regular expressions applied to the standard output; named groups become job variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_variable_regex_list: Option<Vec<String>>,
    /// Seconds between repeats of the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_period: Option<f64>,
    /// A condition checked after each run; the stage repeats until it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_until: Option<String>,
    /// The most runs allowed; reaching it without `repeatUntil` holding fails the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_repeats: Option<u64>,
    /// A condition checked before the stage; false skips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_if: Option<String>,
    /// The processes run for this stage (in a job's copy of the workflow), keyed "0", "1", ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_processes: Option<BTreeMap<String, ChildProcess>>,
    /// Keys this model does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The status of a processing job or of one of its child processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a free slot.
    Pending,
    /// Running a stage.
    Running,
    /// Finished successfully.
    Done,
    /// Finished with an error.
    Failed,
    /// Stopped by a user.
    Aborted,
    /// Not run because its `runIf` was false (child processes only).
    Skipped,
    /// A status this client does not know.
    #[serde(other)]
    Unknown,
}

impl JobStatus {
    /// True for the statuses a job never leaves: done, failed, aborted.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobStatus::Done | JobStatus::Failed | JobStatus::Aborted
        )
    }

    /// The name DM uses.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Aborted => "aborted",
            JobStatus::Skipped => "skipped",
            JobStatus::Unknown => "unknown",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A DM processing job: one run of a workflow with an argsDict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessingJob {
    /// The job id (a uuid).
    pub id: String,
    /// The user that owns the job.
    #[serde(default)]
    pub owner: String,
    /// Where the job is.
    pub status: JobStatus,
    /// The key of the stage running now (or where the job ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The job's copy of its workflow, with the child processes run so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Workflow>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// When the job was submitted (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_time: Option<f64>,
    /// `submissionTime` as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_timestamp: Option<String>,
    /// When the job started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<f64>,
    /// `startTime` as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<String>,
    /// When the job ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<f64>,
    /// `endTime` as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_timestamp: Option<String>,
    /// Seconds from start to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_time: Option<f64>,
    /// Every other key: the argsDict, output variables, and anything DM adds.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ProcessingJob {
    /// The workflow name of the job, as DM records it (`workflow.name`).
    pub fn workflow_name(&self) -> Option<&str> {
        self.workflow.as_ref().map(|w| w.name.as_str())
    }

    /// One top-level key of the job as text (argsDict entries and output variables live there).
    pub fn variable(&self, key: &str) -> Option<String> {
        self.extra.get(key).map(value_as_text)
    }
}

/// One process a stage ran.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChildProcess {
    /// The stage key.
    pub stage_id: String,
    /// The number of this process within its stage, from 0.
    pub child_process_number: u64,
    /// The command after `$var` substitution.
    pub command: String,
    /// Where it ran.
    #[serde(default)]
    pub working_dir: String,
    /// running, done, failed, aborted or skipped.
    pub status: Option<JobStatus>,
    /// When it was submitted (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_time: Option<f64>,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<f64>,
    /// When it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<f64>,
    /// Seconds it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_time: Option<f64>,
    /// The exit status (absent when killed by a signal or not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    /// Its standard output.
    #[serde(default)]
    pub std_out: String,
    /// Its standard error.
    #[serde(default)]
    pub std_err: String,
    /// Keys this model does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An experiment run in the run catalog, in DM's shape (`addExperimentRun` /
/// `getExperimentRuns`): the experiment, the run's id (APS plans use `uid_` + the first 8
/// characters of the Bluesky run uid) and its metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentRun {
    /// The catalog's id of the entry, given when it is added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The experiment the run belongs to.
    pub experiment_name: String,
    /// The run's id, unique within the experiment.
    pub run_id: String,
    /// The run's metadata.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl ExperimentRun {
    /// The catalog's run id for a Bluesky run uid: `uid_` and its first 8 characters.
    pub fn run_id_for_uid(uid: &str) -> String {
        format!("uid_{}", uid.chars().take(8).collect::<String>())
    }
}

/// A JSON value as the text `$var` substitution puts in a command: strings bare, others as JSON.
pub fn value_as_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
