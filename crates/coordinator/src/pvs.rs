//! The PV set of one run slot under a prefix: normative types with `alarm` and `timeStamp`, so
//! that ophyd-async and p4p read them without special code, a `Status` structure with all of them,
//! and a `PVI` structure for ophyd-async device autodiscovery.

use std::sync::Arc;

use pva::server::{SharedPv, StaticSource};
use pva_codec::nt::{
    set_alarm, set_time_stamp, Alarm, AlarmSeverity, EnumValue, NtEnum, NtScalar, TimeStamp,
};
use pva_codec::{FieldDesc, ScalarType, Status, StructDesc, StructValue, Value};

use crate::machine::SlotView;
use crate::state::{Command, State};

/// The suffix of each PV of the set (the PV name is prefix + suffix).
pub mod names {
    /// NTEnum: where the slot is.
    pub const STATE: &str = "State";
    /// NTEnum, writable: Bluesky's command; reads NONE once the coordinator acted.
    pub const COMMAND: &str = "Command";
    /// NTScalar string (JSON), writable: the run request.
    pub const REQUEST: &str = "Request";
    /// NTScalar int, writable by the workflow: 1 when ready to receive.
    pub const READY: &str = "Ready";
    /// NTScalar long, writable by the workflow: frames processed so far.
    pub const PROGRESS: &str = "Progress";
    /// NTScalar string, writable by the workflow: free text.
    pub const WORKFLOW_MESSAGE: &str = "WorkflowMessage";
    /// NTScalar string: the DM workflow name.
    pub const WORKFLOW: &str = "Workflow";
    /// NTScalar string: the DM job's owner.
    pub const OWNER: &str = "Owner";
    /// NTScalar string: the DM job id.
    pub const JOB_ID: &str = "JobId";
    /// NTScalar string: the DM job status.
    pub const JOB_STATUS: &str = "JobStatus";
    /// NTScalar string: the DM job's current stage.
    pub const STAGE_ID: &str = "StageId";
    /// NTScalar double: seconds the DM job has run.
    pub const RUN_TIME: &str = "RunTime";
    /// NTScalar long: frames the detector will send.
    pub const FRAMES_EXPECTED: &str = "FramesExpected";
    /// NTScalar long: frames the workflow accounted for.
    pub const FRAMES_RECEIVED: &str = "FramesReceived";
    /// NTScalar long: frames never accounted for.
    pub const FRAMES_MISSED: &str = "FramesMissed";
    /// NTScalar string: what happened last; the error on failure.
    pub const MESSAGE: &str = "Message";
    /// NTScalar long: +1 each second while the coordinator lives.
    pub const HEARTBEAT: &str = "Heartbeat";
    /// Structure: everything above in one PV.
    pub const STATUS: &str = "Status";
    /// NTPVI: the signals of the slot, for ophyd-async autodiscovery.
    pub const PVI: &str = "PVI";
}

/// Type id of the `Status` structure.
pub const STATUS_ID: &str = "pvabridge:handshake/Status:1.0";
/// Type id of the `PVI` structure (as pvi and FastCS serve it).
pub const PVI_ID: &str = "epics:nt/NTPVI:1.0";

/// How ophyd-async may use a signal listed in the PVI structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only (`r`).
    Read,
    /// Read and write (`rw`).
    ReadWrite,
}

impl Access {
    fn key(self) -> &'static str {
        match self {
            Access::Read => "r",
            Access::ReadWrite => "rw",
        }
    }
}

/// The signals the PVI structure lists: the PV suffix, the ophyd-async attribute name, and access.
/// `Status` and `PVI` themselves are structures, not signals, and are left out.
pub const SIGNALS: [(&str, &str, Access); 17] = [
    (names::STATE, "state", Access::Read),
    (names::COMMAND, "command", Access::ReadWrite),
    (names::REQUEST, "request", Access::ReadWrite),
    (names::READY, "ready", Access::ReadWrite),
    (names::PROGRESS, "progress", Access::ReadWrite),
    (
        names::WORKFLOW_MESSAGE,
        "workflow_message",
        Access::ReadWrite,
    ),
    (names::WORKFLOW, "workflow", Access::Read),
    (names::OWNER, "owner", Access::Read),
    (names::JOB_ID, "job_id", Access::Read),
    (names::JOB_STATUS, "job_status", Access::Read),
    (names::STAGE_ID, "stage_id", Access::Read),
    (names::RUN_TIME, "run_time", Access::Read),
    (names::FRAMES_EXPECTED, "frames_expected", Access::Read),
    (names::FRAMES_RECEIVED, "frames_received", Access::Read),
    (names::FRAMES_MISSED, "frames_missed", Access::Read),
    (names::MESSAGE, "message", Access::Read),
    (names::HEARTBEAT, "heartbeat", Access::Read),
];

/// Decides a put of a value of type `T`: `Err` refuses it with that text.
pub type PutHook<T> = Box<dyn Fn(T) -> Result<(), String> + Send + Sync>;

/// Decides a put of a text.
pub type TextHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the PVs hand to the coordinator when clients write them. Each returns an error text to
/// refuse the put (the PV then keeps its value), or `Ok` to accept it.
pub struct PutHooks {
    /// A command was put; it is applied before the put completes.
    pub command: PutHook<Command>,
    /// A request text was put.
    pub request: TextHook,
    /// The workflow put Ready.
    pub ready: PutHook<bool>,
    /// The workflow put Progress.
    pub progress: PutHook<u64>,
    /// The workflow put WorkflowMessage.
    pub workflow_message: TextHook,
}

/// The PVs of one slot.
#[derive(Debug, Clone)]
pub struct HandshakePvs {
    prefix: String,
    state: SharedPv,
    command: SharedPv,
    request: SharedPv,
    ready: SharedPv,
    progress: SharedPv,
    workflow_message: SharedPv,
    workflow: SharedPv,
    owner: SharedPv,
    job_id: SharedPv,
    job_status: SharedPv,
    stage_id: SharedPv,
    run_time: SharedPv,
    frames_expected: SharedPv,
    frames_received: SharedPv,
    frames_missed: SharedPv,
    message: SharedPv,
    heartbeat: SharedPv,
    status: SharedPv,
    pvi: SharedPv,
}

fn stamped(mut value: StructValue) -> StructValue {
    // Every value built here has a timeStamp member.
    let _ = set_time_stamp(&mut value, TimeStamp::now());
    value
}

fn scalar(t: ScalarType, value: impl Into<Value>) -> StructValue {
    let mut v = NtScalar::new(t).create();
    let _ = v.set("value", value.into());
    stamped(v)
}

fn enum_value<const N: usize>(index: i32, choices: [&str; N]) -> StructValue {
    stamped(NtEnum::build_value(
        &EnumValue::new(index, choices),
        &Alarm::none(),
        TimeStamp::now(),
    ))
}

fn state_value(state: State) -> StructValue {
    let mut v = enum_value(state.index(), State::ALL.map(State::name));
    let alarm = match state {
        State::Failed | State::Timeout => Alarm::new(AlarmSeverity::Major, 7, state.name()),
        State::Aborted => Alarm::new(AlarmSeverity::Minor, 7, state.name()),
        _ => Alarm::none(),
    };
    let _ = set_alarm(&mut v, &alarm);
    v
}

fn command_value(command: Command) -> StructValue {
    enum_value(command.index(), Command::ALL.map(Command::name))
}

fn refuse(message: String) -> Status {
    Status::error(message)
}

fn status_desc() -> Arc<StructDesc> {
    use ScalarType::{F64, I32, I64};
    let s = ScalarType::String;
    Arc::new(
        StructDesc::builder(STATUS_ID)
            .scalar("state", s)
            .scalar("message", s)
            .scalar("workflow", s)
            .scalar("owner", s)
            .scalar("jobId", s)
            .scalar("jobStatus", s)
            .scalar("stageId", s)
            .scalar("runTime", F64)
            .scalar("framesExpected", I64)
            .scalar("framesReceived", I64)
            .scalar("framesMissed", I64)
            .scalar("ready", I32)
            .scalar("progress", I64)
            .scalar("workflowMessage", s)
            .scalar("runUid", s)
            .scalar("request", s)
            .scalar("heartbeat", I64)
            .field("timeStamp", FieldDesc::Struct(TimeStamp::desc()))
            .build(),
    )
}

/// The PVI structure of a slot: `value.<attribute>.<r|rw>` holds each signal's PV name.
pub fn pvi_value(prefix: &str) -> StructValue {
    let mut entries = StructDesc::builder("");
    for (_, attribute, access) in SIGNALS {
        entries = entries.structure(
            attribute,
            StructDesc::builder("")
                .scalar(access.key(), ScalarType::String)
                .build(),
        );
    }
    let desc = Arc::new(
        StructDesc::builder(PVI_ID)
            .structure("value", entries.build())
            .structure(
                "display",
                StructDesc::builder("")
                    .scalar("description", ScalarType::String)
                    .build(),
            )
            .build(),
    );
    let mut v = StructValue::new(desc);
    for (suffix, attribute, access) in SIGNALS {
        let _ = v.set(
            &format!("value.{attribute}.{}", access.key()),
            format!("{prefix}{suffix}"),
        );
    }
    let _ = v.set(
        "display.description",
        format!("pvabridge handshake slot {prefix}"),
    );
    v
}

impl HandshakePvs {
    /// The PVs of slot `prefix`, showing `view`, with the workflow's PVs at `ready`, `progress`,
    /// and an empty message; writes go through `hooks`.
    pub fn new(prefix: &str, view: &SlotView, ready: bool, progress: u64, hooks: PutHooks) -> Self {
        let hooks = Arc::new(hooks);
        let command = {
            let hooks = hooks.clone();
            SharedPv::builder(command_value(Command::None))
                .on_put(move |put| {
                    let index = put
                        .value
                        .get("value.index")
                        .and_then(Value::as_i64)
                        .unwrap_or(-1);
                    let command = i32::try_from(index)
                        .ok()
                        .and_then(Command::from_index)
                        .ok_or_else(|| {
                            refuse(format!(
                                "command index {index} is not one of {}",
                                Command::ALL.map(Command::name).join(", ")
                            ))
                        })?;
                    (hooks.command)(command).map_err(refuse)?;
                    Ok(Some(command_value(Command::None)))
                })
                .build()
        };
        let request = {
            let hooks = hooks.clone();
            SharedPv::builder(scalar(ScalarType::String, view.request.as_str()))
                .on_put(move |put| {
                    let text = put.value.get("value").and_then(Value::as_str).unwrap_or("");
                    (hooks.request)(text).map_err(refuse)?;
                    Ok(Some(stamped(put.value.clone())))
                })
                .build()
        };
        let ready = {
            let hooks = hooks.clone();
            SharedPv::builder(scalar(ScalarType::I32, i32::from(ready)))
                .on_put(move |put| {
                    let value = put.value.get("value").and_then(Value::as_i64).unwrap_or(0);
                    (hooks.ready)(value != 0).map_err(refuse)?;
                    Ok(Some(scalar(ScalarType::I32, i32::from(value != 0))))
                })
                .build()
        };
        let progress = {
            let hooks = hooks.clone();
            let initial = i64::try_from(progress).unwrap_or(i64::MAX);
            SharedPv::builder(scalar(ScalarType::I64, initial))
                .on_put(move |put| {
                    let value = put.value.get("value").and_then(Value::as_i64).unwrap_or(0);
                    let frames = u64::try_from(value).map_err(|_| {
                        refuse(format!("Progress must not be negative, not {value}"))
                    })?;
                    (hooks.progress)(frames).map_err(refuse)?;
                    Ok(Some(stamped(put.value.clone())))
                })
                .build()
        };
        let workflow_message = {
            let hooks = hooks.clone();
            SharedPv::builder(scalar(ScalarType::String, ""))
                .on_put(move |put| {
                    let text = put.value.get("value").and_then(Value::as_str).unwrap_or("");
                    (hooks.workflow_message)(text).map_err(refuse)?;
                    Ok(Some(stamped(put.value.clone())))
                })
                .build()
        };
        let text = |s: &str| SharedPv::readonly(scalar(ScalarType::String, s));
        let long = |n: i64| SharedPv::readonly(scalar(ScalarType::I64, n));
        let pvs = HandshakePvs {
            prefix: prefix.to_string(),
            state: SharedPv::readonly(state_value(view.state)),
            command,
            request,
            ready,
            progress,
            workflow_message,
            workflow: text(&view.workflow),
            owner: text(&view.owner),
            job_id: text(&view.job_id),
            job_status: text(&view.job_status),
            stage_id: text(&view.stage_id),
            run_time: SharedPv::readonly(scalar(ScalarType::F64, view.run_time)),
            frames_expected: long(view.frames_expected),
            frames_received: long(view.frames_received),
            frames_missed: long(view.frames_missed),
            message: text(&view.message),
            heartbeat: long(0),
            status: SharedPv::readonly(StructValue::new(status_desc())),
            pvi: SharedPv::readonly(pvi_value(prefix)),
        };
        pvs.show(view, 0);
        pvs
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Every PV with its full name.
    pub fn all(&self) -> Vec<(String, SharedPv)> {
        let pvs = [
            (names::STATE, &self.state),
            (names::COMMAND, &self.command),
            (names::REQUEST, &self.request),
            (names::READY, &self.ready),
            (names::PROGRESS, &self.progress),
            (names::WORKFLOW_MESSAGE, &self.workflow_message),
            (names::WORKFLOW, &self.workflow),
            (names::OWNER, &self.owner),
            (names::JOB_ID, &self.job_id),
            (names::JOB_STATUS, &self.job_status),
            (names::STAGE_ID, &self.stage_id),
            (names::RUN_TIME, &self.run_time),
            (names::FRAMES_EXPECTED, &self.frames_expected),
            (names::FRAMES_RECEIVED, &self.frames_received),
            (names::FRAMES_MISSED, &self.frames_missed),
            (names::MESSAGE, &self.message),
            (names::HEARTBEAT, &self.heartbeat),
            (names::STATUS, &self.status),
            (names::PVI, &self.pvi),
        ];
        pvs.into_iter()
            .map(|(suffix, pv)| (format!("{}{suffix}", self.prefix), pv.clone()))
            .collect()
    }

    /// Serve every PV of the set from `source`.
    pub fn add_to(&self, source: &StaticSource) {
        for (name, pv) in self.all() {
            source.add(name, pv);
        }
    }

    /// Post what changed between the PVs and `view` (and the heartbeat).
    pub fn show(&self, view: &SlotView, heartbeat: i64) {
        self.show_state(view.state);
        set_if_changed(&self.workflow, ScalarType::String, view.workflow.as_str());
        set_if_changed(&self.owner, ScalarType::String, view.owner.as_str());
        set_if_changed(&self.job_id, ScalarType::String, view.job_id.as_str());
        set_if_changed(
            &self.job_status,
            ScalarType::String,
            view.job_status.as_str(),
        );
        set_if_changed(&self.stage_id, ScalarType::String, view.stage_id.as_str());
        set_if_changed(&self.run_time, ScalarType::F64, view.run_time);
        set_if_changed(&self.frames_expected, ScalarType::I64, view.frames_expected);
        set_if_changed(&self.frames_received, ScalarType::I64, view.frames_received);
        set_if_changed(&self.frames_missed, ScalarType::I64, view.frames_missed);
        set_if_changed(&self.message, ScalarType::String, view.message.as_str());
        set_if_changed(&self.heartbeat, ScalarType::I64, heartbeat);
        self.show_status(view, heartbeat);
    }

    fn show_status(&self, view: &SlotView, heartbeat: i64) {
        let mut status = StructValue::new(status_desc());
        let read = |pv: &SharedPv| pv.current().get("value").cloned().unwrap_or(Value::I32(0));
        let fields: [(&str, Value); 17] = [
            ("state", view.state.name().into()),
            ("message", view.message.as_str().into()),
            ("workflow", view.workflow.as_str().into()),
            ("owner", view.owner.as_str().into()),
            ("jobId", view.job_id.as_str().into()),
            ("jobStatus", view.job_status.as_str().into()),
            ("stageId", view.stage_id.as_str().into()),
            ("runTime", view.run_time.into()),
            ("framesExpected", view.frames_expected.into()),
            ("framesReceived", view.frames_received.into()),
            ("framesMissed", view.frames_missed.into()),
            ("ready", read(&self.ready)),
            ("progress", read(&self.progress)),
            ("workflowMessage", read(&self.workflow_message)),
            ("runUid", view.run_uid.as_str().into()),
            ("request", view.request.as_str().into()),
            ("heartbeat", heartbeat.into()),
        ];
        for (name, value) in fields {
            let _ = status.set(name, value);
        }
        let mut previous = self.status.current();
        let _ = set_time_stamp(&mut previous, TimeStamp::default());
        if previous != status {
            self.status.post(stamped(status));
        }
    }

    /// Show `state` on the State PV (if it shows another). The bridge calls this while it holds
    /// the slot's machine, so that the PV never shows an older state than one already shown.
    pub fn show_state(&self, state: State) {
        let state_now = self
            .state
            .current()
            .get("value.index")
            .and_then(Value::as_i64);
        if state_now != Some(i64::from(state.index())) {
            self.state.post(state_value(state));
        }
    }

    /// Put the workflow-written PVs back to their defaults for a new run.
    pub fn clear_workflow_inputs(&self) {
        set_if_changed(&self.ready, ScalarType::I32, 0i32);
        set_if_changed(&self.progress, ScalarType::I64, 0i64);
        set_if_changed(&self.workflow_message, ScalarType::String, "");
    }
}

fn set_if_changed(pv: &SharedPv, t: ScalarType, value: impl Into<Value>) {
    let wanted = scalar(t, value);
    if pv.current().get("value") != wanted.get("value") {
        pv.post(wanted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Machine, MachineConfig};
    use std::sync::Mutex;

    fn hooks(log: Arc<Mutex<Vec<String>>>) -> PutHooks {
        let entry = move |text: String| log.lock().unwrap().push(text);
        let (a, b, c, d, e) = (
            entry.clone(),
            entry.clone(),
            entry.clone(),
            entry.clone(),
            entry,
        );
        PutHooks {
            command: Box::new(move |c| {
                if c == Command::AcqDone {
                    return Err("ACQ_DONE refused".into());
                }
                a(format!("command {c}"));
                Ok(())
            }),
            request: Box::new(move |t| {
                b(format!("request {t}"));
                Ok(())
            }),
            ready: Box::new(move |r| {
                c(format!("ready {r}"));
                Ok(())
            }),
            progress: Box::new(move |n| {
                d(format!("progress {n}"));
                Ok(())
            }),
            workflow_message: Box::new(move |t| {
                e(format!("message {t}"));
                Ok(())
            }),
        }
    }

    fn peer() -> pva::server::PeerInfo {
        pva::server::PeerInfo {
            addr: "127.0.0.1:1".parse().unwrap(),
            method: "anonymous".into(),
            user: String::new(),
            host: String::new(),
        }
    }

    fn pv<'a>(pvs: &'a [(String, SharedPv)], name: &str) -> &'a SharedPv {
        &pvs.iter().find(|(n, _)| n == name).unwrap().1
    }

    fn put(pv: &SharedPv, field: &str, value: impl Into<Value>) -> Status {
        let mut v = pv.current();
        v.set(field, value).unwrap();
        let changed = pva_codec::BitSet::with(v.desc().bit_of(field).unwrap());
        pv.put(&v, &changed, &peer())
    }

    #[test]
    fn commands_are_handed_over_and_the_pv_rests_at_none() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let view = Machine::new("p:", MachineConfig::default(), 0.0).view(0.0);
        let pvs = HandshakePvs::new("p:", &view, false, 0, hooks(log.clone()));
        let all = pvs.all();
        let command = pv(&all, "p:Command");
        assert!(put(command, "value.index", 1i32).is_success());
        assert_eq!(command.current().get("value.index"), Some(&Value::I32(0)));
        let refused = put(command, "value.index", 3i32);
        assert!(!refused.is_success());
        assert!(format!("{refused:?}").contains("ACQ_DONE refused"));
        assert!(!put(command, "value.index", 9i32).is_success());
        assert!(put(pv(&all, "p:Ready"), "value", 5i32).is_success());
        assert_eq!(
            pv(&all, "p:Ready").current().get("value"),
            Some(&Value::I32(1))
        );
        assert!(!put(pv(&all, "p:Progress"), "value", -2i64).is_success());
        assert!(put(pv(&all, "p:Progress"), "value", 7i64).is_success());
        assert!(put(pv(&all, "p:WorkflowMessage"), "value", "hello").is_success());
        assert_eq!(
            *log.lock().unwrap(),
            ["command START", "ready true", "progress 7", "message hello"]
        );
        pvs.clear_workflow_inputs();
        assert_eq!(
            pv(&all, "p:Progress").current().get("value"),
            Some(&Value::I64(0))
        );
    }

    #[test]
    fn the_view_is_shown_on_the_pvs_and_in_status() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut view = Machine::new("p:", MachineConfig::default(), 0.0).view(0.0);
        let pvs = HandshakePvs::new("p:", &view, false, 0, hooks(log));
        view.state = State::Failed;
        view.message = "DM job failed".into();
        view.frames_missed = 3;
        pvs.show(&view, 42);
        let all = pvs.all();
        let state = pv(&all, "p:State").current();
        assert_eq!(state.id(), "epics:nt/NTEnum:1.0");
        assert_eq!(state.get("value.index"), Some(&Value::I32(8)));
        assert_eq!(state.get("alarm.severity"), Some(&Value::I32(2)));
        assert_eq!(
            pv(&all, "p:Message").current().get("value"),
            Some(&Value::String("DM job failed".into()))
        );
        let status = pv(&all, "p:Status").current();
        assert_eq!(status.get("state"), Some(&Value::String("FAILED".into())));
        assert_eq!(status.get("framesMissed"), Some(&Value::I64(3)));
        assert_eq!(status.get("heartbeat"), Some(&Value::I64(42)));
    }

    #[test]
    fn the_pvi_lists_every_signal_with_its_access() {
        let pvi = pvi_value("bdp:wf1:");
        assert_eq!(pvi.id(), PVI_ID);
        assert_eq!(
            pvi.get("value.state.r"),
            Some(&Value::String("bdp:wf1:State".into()))
        );
        assert_eq!(
            pvi.get("value.command.rw"),
            Some(&Value::String("bdp:wf1:Command".into()))
        );
        assert_eq!(
            pvi.get("value.frames_missed.r"),
            Some(&Value::String("bdp:wf1:FramesMissed".into()))
        );
        let entries = pvi.get("value").and_then(Value::as_struct).unwrap();
        assert_eq!(entries.fields().len(), SIGNALS.len());
    }
}
