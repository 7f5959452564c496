//! The run request Bluesky writes to the `Request` PV as JSON before START.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The argsDict key that carries the handshake prefix to the DM stage.
pub const PREFIX_ARG: &str = "handshakePrefix";
/// The argsDict key that carries the bridge's id of the run, so that a restarted bridge can find
/// the job it started.
pub const RUN_ID_ARG: &str = "pvabridgeRunId";
/// argsDict keys DM accepts as a file specification.
pub const FILE_SPEC_KEYS: [&str; 4] = ["filePath", "filePathList", "filePathPattern", "dataDir"];

/// What a run is: the DM workflow to start and what to tell it. Written as camelCase JSON, e.g.
/// `{"workflow": "stream-stats", "argsDict": {"sample": "Si"}, "runUid": "...",
/// "expectedFrames": 100, "dataChannel": "sim:det:Image", "readyTimeout": 30}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRequest {
    /// The DM workflow to start (owned by the bridge's DM user).
    pub workflow: String,
    /// Extra argsDict entries for the DM job.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub args_dict: Map<String, Value>,
    /// The Bluesky run uid; it names the run in the DM run catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_uid: Option<String>,
    /// How many frames the detector will send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_frames: Option<u64>,
    /// The PV the detector frames stream on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_channel: Option<String>,
    /// Seconds to wait for the workflow's Ready (the bridge's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_timeout: Option<f64>,
    /// A stage key: the workflow counts as ready once the DM job reaches this stage, for
    /// workflows that never write `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_stage: Option<String>,
    /// The experiment the run belongs to in the DM run catalog (the bridge's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_name: Option<String>,
    /// The run's metadata (for Bluesky, the run's start document): it goes to the DM run catalog
    /// with the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// The detector's next `uniqueId`, when known (areaDetector's counter goes on from run to
    /// run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_frame_id: Option<i64>,
}

/// Why a request text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Nothing was written to `Request`.
    #[error("Request is empty: write the run request JSON to it before START")]
    Empty,
    /// The text is not a request.
    #[error("Request is not a valid run request: {0}")]
    Invalid(String),
}

impl RunRequest {
    /// A request for `workflow` with nothing else.
    pub fn new(workflow: impl Into<String>) -> Self {
        RunRequest {
            workflow: workflow.into(),
            ..RunRequest::default()
        }
    }

    /// Parse and check the JSON text of the `Request` PV.
    pub fn parse(text: &str) -> Result<RunRequest, RequestError> {
        if text.trim().is_empty() {
            return Err(RequestError::Empty);
        }
        let request: RunRequest =
            serde_json::from_str(text).map_err(|err| RequestError::Invalid(err.to_string()))?;
        if request.workflow.trim().is_empty() {
            return Err(RequestError::Invalid(
                "workflow must name a DM workflow".into(),
            ));
        }
        if let Some(timeout) = request.ready_timeout {
            if !(timeout.is_finite() && timeout > 0.0) {
                return Err(RequestError::Invalid(format!(
                    "readyTimeout must be a positive number of seconds, not {timeout}"
                )));
            }
        }
        if request
            .run_uid
            .as_deref()
            .is_some_and(|uid| uid.trim().is_empty())
        {
            return Err(RequestError::Invalid("runUid must not be empty".into()));
        }
        Ok(request)
    }

    /// The JSON text for the `Request` PV.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a request always serializes")
    }

    /// The argsDict the DM job gets: the request's own entries, plus the handshake prefix, the
    /// run id, the data channel, the expected frames and the run uid (unless the request sets
    /// them), and a placeholder `filePath` when no file specification is given, since DM refuses
    /// jobs without one.
    pub fn job_args(&self, prefix: &str, run_id: &str) -> Map<String, Value> {
        let mut args = self.args_dict.clone();
        args.insert(PREFIX_ARG.into(), Value::String(prefix.into()));
        args.insert(RUN_ID_ARG.into(), Value::String(run_id.into()));
        if let Some(channel) = &self.data_channel {
            args.entry("dataChannel")
                .or_insert_with(|| Value::String(channel.clone()));
        }
        if let Some(frames) = self.expected_frames {
            args.entry("expectedFrames")
                .or_insert_with(|| Value::from(frames));
        }
        if let Some(uid) = &self.run_uid {
            args.entry("runUid")
                .or_insert_with(|| Value::String(uid.clone()));
        }
        if !FILE_SPEC_KEYS.iter().any(|key| args.contains_key(*key)) {
            let placeholder = match &self.data_channel {
                Some(channel) => format!("pva://{channel}"),
                None => format!("pva://{prefix}"),
            };
            args.insert("filePath".into(), Value::String(placeholder));
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_request_parses_and_round_trips() {
        let text = r#"{"workflow":"w","argsDict":{"sample":"Si"},"runUid":"u1","expectedFrames":10,
            "dataChannel":"det:Image","readyTimeout":5.5,"readyStage":"02-RUN","experimentName":"e1",
            "metadata":{"uid":"u1","plan_name":"streaming_run"},"firstFrameId":41}"#;
        let request = RunRequest::parse(text).unwrap();
        assert_eq!(request.expected_frames, Some(10));
        assert_eq!(request.ready_stage.as_deref(), Some("02-RUN"));
        assert_eq!(request.metadata.as_ref().unwrap()["uid"], "u1");
        assert_eq!(request.first_frame_id, Some(41));
        assert_eq!(RunRequest::parse(&request.to_json()).unwrap(), request);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        for (text, needle) in [
            ("", "empty"),
            ("{", "not a valid"),
            (r#"{"argsDict":{}}"#, "workflow"),
            (r#"{"workflow":" "}"#, "workflow must name"),
            (r#"{"workflow":"w","expectedFrame":3}"#, "expectedFrame"),
            (r#"{"workflow":"w","readyTimeout":-1}"#, "readyTimeout"),
            (r#"{"workflow":"w","runUid":""}"#, "runUid"),
        ] {
            let err = RunRequest::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn job_args_add_the_prefix_and_a_placeholder_file_spec() {
        let mut request = RunRequest::new("w");
        request.data_channel = Some("det:Image".into());
        request.expected_frames = Some(4);
        request.args_dict.insert("sample".into(), "Si".into());
        let args = request.job_args("bdp:wf1:", "run-1");
        assert_eq!(args[PREFIX_ARG], "bdp:wf1:");
        assert_eq!(args[RUN_ID_ARG], "run-1");
        assert_eq!(args["dataChannel"], "det:Image");
        assert_eq!(args["expectedFrames"], 4);
        assert_eq!(args["filePath"], "pva://det:Image");
        assert_eq!(args["sample"], "Si");

        request.args_dict.insert("dataDir".into(), "/data".into());
        let args = request.job_args("bdp:wf1:", "run-1");
        assert!(!args.contains_key("filePath"));
    }
}
