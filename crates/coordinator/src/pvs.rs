//! The PV set of one run slot under a prefix, derived from the field table ([`crate::fields`]):
//! normative types with `alarm` and `timeStamp`, so that ophyd-async and p4p read them without
//! special code, the `Members` and `Stages` tables, the `Report` RPC, a `Status` structure with
//! every member of the table, and a `PVI` structure for ophyd-async device autodiscovery.

use std::collections::BTreeMap;
use std::sync::Arc;

use pva::server::{SharedPv, StaticSource};
use pva_codec::nt::{
    set_alarm, set_time_stamp, Alarm, AlarmSeverity, EnumValue, NtEnum, NtScalar, TimeStamp,
};
use pva_codec::{ScalarArray, ScalarType, Status, StructDesc, StructValue, Value};

use crate::fields::{self, Id, Kind, Writer, FIELDS};
use crate::machine::SlotView;
use crate::members::{members_table, stages_table, MemberReport};
use crate::state::{Command, State, WorkflowCommand};

pub use crate::fields::STATUS_ID;
/// Type id of the `PVI` structure (as pvi and FastCS serve it).
pub const PVI_ID: &str = "epics:nt/NTPVI:1.0";

/// Decides a put of a value of type `T`: `Err` refuses it with that text.
pub type PutHook<T> = Box<dyn Fn(T) -> Result<(), String> + Send + Sync>;

/// Decides a put of a text.
pub type TextHook = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the PVs hand to the coordinator when clients write them. Each returns an error text to
/// refuse the write (the PV then keeps its value), or `Ok` to accept it.
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
    /// The workflow put WorkflowCommand; it is applied before the put completes.
    pub workflow_command: PutHook<WorkflowCommand>,
    /// A consumer member called Report.
    pub report: PutHook<MemberReport>,
}

/// The PVs of one slot, one per field of the table that has a PV.
#[derive(Debug, Clone)]
pub struct HandshakePvs {
    prefix: String,
    pvs: BTreeMap<Id, SharedPv>,
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

fn text_array(items: Vec<String>) -> StructValue {
    let mut v = NtScalar::array(ScalarType::String).create();
    let _ = v.set("value", Value::Array(ScalarArray::String(items)));
    stamped(v)
}

/// The scalar type of the PV of a field of `kind`, for the NTScalar kinds.
fn scalar_type(kind: Kind) -> Option<ScalarType> {
    match kind {
        Kind::Text => Some(ScalarType::String),
        Kind::Int => Some(ScalarType::I32),
        Kind::Long => Some(ScalarType::I64),
        Kind::Double => Some(ScalarType::F64),
        _ => None,
    }
}

/// An NTScalar or NTScalarArray of a field holding `value`.
fn field_value(kind: Kind, value: Value) -> Option<StructValue> {
    match (kind, value) {
        (Kind::TextArray, Value::Array(ScalarArray::String(items))) => Some(text_array(items)),
        (kind, value) => scalar_type(kind).map(|t| scalar(t, value)),
    }
}

fn enum_value<const N: usize>(index: i32, choices: [&str; N]) -> StructValue {
    NtEnum::build_value(
        &EnumValue::new(index, choices),
        &Alarm::none(),
        TimeStamp::now(),
    )
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

fn refuse(message: String) -> Status {
    Status::error(message)
}

/// Whether a field's PV shows the slot's view (the coordinator's fields, and the workflow's
/// scalars, which the bridge derives from the members' reports); Bluesky's PVs hold what it
/// put, and the command PVs rest at NONE.
fn shown_from_view(kind: Kind, writer: Writer) -> bool {
    writer != Writer::Bluesky && (scalar_type(kind).is_some() || kind == Kind::TextArray)
}

/// The PVI structure of a slot: `value.<attribute>.<r|rw>` holds each signal's PV name.
pub fn pvi_value(prefix: &str) -> StructValue {
    let key = |writable: bool| if writable { "rw" } else { "r" };
    let mut entries = StructDesc::builder("");
    for (_, attribute, writable) in fields::signals() {
        entries = entries.structure(
            attribute,
            StructDesc::builder("")
                .scalar(key(writable), ScalarType::String)
                .build(),
        );
    }
    // The same `display` (a description) as the normative types have.
    let display = NtEnum::desc()
        .member("display")
        .expect("NTEnum has a display")
        .desc
        .clone();
    let desc = Arc::new(
        StructDesc::builder(PVI_ID)
            .structure("value", entries.build())
            .field("display", display)
            .build(),
    );
    let mut v = StructValue::new(desc);
    for (suffix, attribute, writable) in fields::signals() {
        let _ = v.set(
            &format!("value.{attribute}.{}", key(writable)),
            format!("{prefix}{suffix}"),
        );
    }
    let _ = v.set(
        "display.description",
        format!("pvabridge handshake slot {prefix}"),
    );
    v
}

/// A writable NTEnum that hands each choice put to `hook` and rests at the first choice.
fn command_pv<C: Copy + 'static, const N: usize>(
    choices: [&'static str; N],
    from_index: fn(i32) -> Option<C>,
    hook: impl Fn(C) -> Result<(), String> + Send + Sync + 'static,
) -> SharedPv {
    SharedPv::builder(enum_value(0, choices))
        .on_put(move |put| {
            let index = put
                .value
                .get("value.index")
                .and_then(Value::as_i64)
                .unwrap_or(-1);
            let command = i32::try_from(index)
                .ok()
                .and_then(from_index)
                .ok_or_else(|| {
                    refuse(format!(
                        "command index {index} is not one of {}",
                        choices.join(", ")
                    ))
                })?;
            hook(command).map_err(refuse)?;
            Ok(Some(enum_value(0, choices)))
        })
        .build()
}

/// A writable NTScalar that hands the value put, read by `read`, to the hook (through `apply`).
fn input_pv<T>(
    initial: StructValue,
    read: impl Fn(&StructValue) -> Result<(T, StructValue), Status> + Send + Sync + 'static,
    apply: impl Fn(T) -> Result<(), String> + Send + Sync + 'static,
) -> SharedPv {
    SharedPv::builder(initial)
        .on_put(move |put| {
            let (value, shown) = read(&put.value)?;
            apply(value).map_err(refuse)?;
            Ok(Some(shown))
        })
        .build()
}

impl HandshakePvs {
    /// The PVs of slot `prefix`, showing `view`; writes go through `hooks`.
    pub fn new(prefix: &str, view: &SlotView, hooks: PutHooks) -> Self {
        let hooks = Arc::new(hooks);
        let mut pvs = BTreeMap::new();
        for field in FIELDS {
            if field.suffix.is_none() {
                continue;
            }
            let h = hooks.clone();
            let pv = match field.id {
                Id::Command => command_pv(Command::ALL.map(Command::name), Command::from_index, {
                    move |c| (h.command)(c)
                }),
                Id::WorkflowCommand => command_pv(
                    WorkflowCommand::ALL.map(WorkflowCommand::name),
                    WorkflowCommand::from_index,
                    move |c| (h.workflow_command)(c),
                ),
                Id::Request => input_pv(
                    scalar(ScalarType::String, view.request.as_str()),
                    |v| {
                        let text = v.get("value").and_then(Value::as_str).unwrap_or("");
                        Ok((text.to_string(), stamped(v.clone())))
                    },
                    move |text: String| (h.request)(&text),
                ),
                Id::WorkflowMessage => input_pv(
                    scalar(ScalarType::String, view.workflow_message.as_str()),
                    |v| {
                        let text = v.get("value").and_then(Value::as_str).unwrap_or("");
                        Ok((text.to_string(), stamped(v.clone())))
                    },
                    move |text: String| (h.workflow_message)(&text),
                ),
                Id::Ready => input_pv(
                    scalar(ScalarType::I32, i32::from(view.ready)),
                    |v| {
                        let on = v.get("value").and_then(Value::as_i64).unwrap_or(0) != 0;
                        Ok((on, scalar(ScalarType::I32, i32::from(on))))
                    },
                    move |on| (h.ready)(on),
                ),
                Id::Progress => input_pv(
                    scalar(ScalarType::I64, view.progress),
                    |v| {
                        let value = v.get("value").and_then(Value::as_i64).unwrap_or(0);
                        let frames = u64::try_from(value).map_err(|_| {
                            refuse(format!("Progress must not be negative, not {value}"))
                        })?;
                        Ok((frames, stamped(v.clone())))
                    },
                    move |frames| (h.progress)(frames),
                ),
                Id::Report => SharedPv::builder(StructValue::new(MemberReport::desc()))
                    .on_rpc(move |argument, _peer| {
                        let report = argument
                            .as_struct()
                            .ok_or_else(|| refuse("Report takes a structure".into()))
                            .and_then(|v| MemberReport::from_value(v).map_err(refuse))?;
                        (h.report)(report).map_err(refuse)?;
                        Ok(Value::Struct(StructValue::new(Arc::new(
                            StructDesc::builder("").build(),
                        ))))
                    })
                    .build(),
                Id::State => SharedPv::readonly(state_value(view.state)),
                Id::Members => SharedPv::readonly(members_table(&view.members)),
                Id::Stages => SharedPv::readonly(stages_table(&view.stages)),
                Id::Status => SharedPv::readonly(StructValue::new(fields::status_desc())),
                Id::Pvi => SharedPv::readonly(pvi_value(prefix)),
                id => {
                    let value = view.member(id, 0).unwrap_or(Value::I32(0));
                    let initial = field_value(field.kind, value)
                        .expect("the other fields are NTScalars or string arrays");
                    SharedPv::readonly(initial)
                }
            };
            pvs.insert(field.id, pv);
        }
        let pvs = HandshakePvs {
            prefix: prefix.to_string(),
            pvs,
        };
        pvs.show(view, 0);
        pvs
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn pv(&self, id: Id) -> &SharedPv {
        &self.pvs[&id]
    }

    /// Every PV with its full name.
    pub fn all(&self) -> Vec<(String, SharedPv)> {
        FIELDS
            .iter()
            .filter_map(|f| {
                let suffix = f.suffix?;
                Some((format!("{}{suffix}", self.prefix), self.pv(f.id).clone()))
            })
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
        for field in FIELDS {
            if field.suffix.is_none() || !shown_from_view(field.kind, field.writer) {
                continue;
            }
            if let Some(wanted) = view.member(field.id, heartbeat) {
                let pv = self.pv(field.id);
                if pv.current().get("value") != Some(&wanted) {
                    if let Some(value) = field_value(field.kind, wanted) {
                        pv.post(value);
                    }
                }
            }
        }
        post_if_changed(self.pv(Id::Members), members_table(&view.members));
        post_if_changed(self.pv(Id::Stages), stages_table(&view.stages));
        post_if_changed(self.pv(Id::Status), fields::status_value(view, heartbeat));
    }

    /// Show `view` at once, keeping the heartbeat shown: for a command's put, so that when it
    /// returns, State, Message and Status already show what it did.
    pub fn show_now(&self, view: &SlotView) {
        let heartbeat = self
            .pv(Id::Heartbeat)
            .current()
            .get("value")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        self.show(view, heartbeat);
    }

    /// Show `state` on the State PV (if it shows another). The bridge shows while it holds the
    /// slot's machine, so that the PV never shows an older state than one already shown.
    fn show_state(&self, state: State) {
        let pv = self.pv(Id::State);
        let state_now = pv.current().get("value.index").and_then(Value::as_i64);
        if state_now != Some(i64::from(state.index())) {
            pv.post(state_value(state));
        }
    }
}

/// Post `value` (time-stamped now) unless the PV holds the same apart from its time stamp.
fn post_if_changed(pv: &SharedPv, value: StructValue) {
    let mut previous = pv.current();
    let mut unstamped = value.clone();
    let _ = set_time_stamp(&mut previous, TimeStamp::default());
    let _ = set_time_stamp(&mut unstamped, TimeStamp::default());
    if previous != unstamped {
        pv.post(stamped(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Machine, MachineConfig};
    use std::sync::Mutex;

    fn hooks(log: Arc<Mutex<Vec<String>>>) -> PutHooks {
        let entry = move |text: String| log.lock().unwrap().push(text);
        let (a, b, c, d, e, f, g) = (
            entry.clone(),
            entry.clone(),
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
            workflow_command: Box::new(move |c| {
                f(format!("workflow command {c}"));
                Ok(())
            }),
            report: Box::new(move |r| {
                g(format!("report {} received {}", r.member, r.received));
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
        let pvs = HandshakePvs::new("p:", &view, hooks(log.clone()));
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
        let workflow_command = pv(&all, "p:WorkflowCommand");
        assert!(put(workflow_command, "value.index", 2i32).is_success());
        assert_eq!(
            workflow_command.current().get("value.index"),
            Some(&Value::I32(0))
        );
        let report = MemberReport {
            received: 3,
            ..MemberReport::default()
        };
        pv(&all, "p:Report")
            .rpc(&Value::Struct(report.to_value()), &peer())
            .unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            [
                "command START",
                "ready true",
                "progress 7",
                "message hello",
                "workflow command FAIL",
                "report 0 received 3"
            ]
        );
        pvs.show(
            &Machine::new("p:", MachineConfig::default(), 0.0).view(0.0),
            1,
        );
        assert_eq!(
            pv(&all, "p:Progress").current().get("value"),
            Some(&Value::I64(0)),
            "the workflow's PVs show the slot's view"
        );
    }

    #[test]
    fn the_view_is_shown_on_the_pvs_and_in_status() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut view = Machine::new("p:", MachineConfig::default(), 0.0).view(0.0);
        let pvs = HandshakePvs::new("p:", &view, hooks(log));
        view.state = State::Failed;
        view.message = "DM job failed".into();
        view.frames_missed = 3;
        view.workflow_pvs = vec!["p:wf:Stats".into()];
        view.members = vec![MemberReport::default()];
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
        assert_eq!(
            pv(&all, "p:WorkflowPVs").current().get("value"),
            Some(&Value::Array(ScalarArray::String(
                vec!["p:wf:Stats".into()]
            )))
        );
        let members = pv(&all, "p:Members").current();
        assert_eq!(members.id(), pva_codec::nt::NT_TABLE_ID);
        assert_eq!(
            members.get("value.member"),
            Some(&Value::Array(ScalarArray::I32(vec![0i32].into())))
        );
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
        assert_eq!(entries.fields().len(), fields::signals().count());
        assert_eq!(
            pvi.get("value.workflow_command.rw"),
            Some(&Value::String("bdp:wf1:WorkflowCommand".into()))
        );
        assert_eq!(
            pvi.get("value.workflow_pvs.r"),
            Some(&Value::String("bdp:wf1:WorkflowPVs".into()))
        );
    }
}
