//! What goes to the DM run catalog when a run ends, in DM's shape.

use dm::ExperimentRun;
use serde_json::{json, Map, Value};

use super::{Machine, Run};
use crate::members::stage_rows;
use crate::request::{PREFIX_ARG, RUN_ID_ARG};

impl Machine {
    /// The run as the DM run catalog records it, in DM's shape: the experiment, `runId` =
    /// `uid_` + the first 8 characters of the run uid (the bridge's run id without one), and
    /// `metadata` = the Request's metadata plus the handshake's record under `handshake`.
    pub(super) fn catalog_entry(&self, run: &Run) -> ExperimentRun {
        let request = &run.request;
        let mut durations = Map::new();
        for pair in run.history.windows(2) {
            let spent = pair[1].at - pair[0].at;
            let entry = durations
                .entry(pair[0].state.name())
                .or_insert_with(|| Value::from(0.0));
            *entry = Value::from(entry.as_f64().unwrap_or(0.0) + spent);
        }
        let history: Vec<Value> = run
            .history
            .iter()
            .map(|t| json!({"state": t.state.name(), "at": t.at, "message": t.message}))
            .collect();
        let job = run.job.as_ref();
        let handshake = json!({
            PREFIX_ARG: self.record.prefix,
            RUN_ID_ARG: run.run_id,
            "workflow": request.workflow,
            "runUid": request.run_uid,
            "finalState": self.record.state.name(),
            "message": self.record.message,
            "request": request,
            "startTime": run.started_at,
            "endTime": run.ended_at,
            "history": history,
            "secondsInState": durations,
            "frames": {
                "expected": request.expected_frames,
                "received": run.received(),
                "processed": run.processed(),
                "missed": run.frames_missed.map(|_| run.missed()),
            },
            "members": run.members.values().collect::<Vec<_>>(),
            "lostMembers": run.lost_members,
            "workflowPVs": run.workflow_pvs(),
            "workflowMessage": run.workflow_message,
            "jobId": run.job_id,
            "jobStatus": job.map(|j| j.status.to_string()),
            "stages": job.map(stage_rows).unwrap_or_default(),
            "job": job,
        });
        let mut metadata = request.metadata.clone().unwrap_or_default();
        metadata.insert("handshake".into(), handshake);
        ExperimentRun {
            id: None,
            experiment_name: request
                .experiment_name
                .clone()
                .unwrap_or_else(|| self.config.experiment.clone()),
            run_id: match &request.run_uid {
                Some(uid) => ExperimentRun::run_id_for_uid(uid),
                None => run.run_id.clone(),
            },
            metadata,
        }
    }
}
