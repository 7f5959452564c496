//! The handshake's fields, declared once: every PV of a slot (its suffix, type, writer and
//! ophyd-async attribute) and every member of the `Status` structure. The PVs, the `Status`
//! structure, the PVI structure, the default access rules and the client-side reader of `Status`
//! are all derived from [`FIELDS`]; what a field shows comes from [`SlotView::member`], a match
//! over [`Id`] that does not compile while a field is left out.

use std::sync::Arc;

use pva::server::{AccessError, AccessRules};
use pva_codec::nt::TimeStamp;
use pva_codec::{ArrayKind, FieldDesc, ScalarType, StructDesc, StructValue, Value};
use serde_json::{Map, Value as Json};

use crate::machine::SlotView;

/// Every field of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Id {
    /// Where the slot is.
    State,
    /// Bluesky's command.
    Command,
    /// The run request.
    Request,
    /// The workflow is ready.
    Ready,
    /// Frames the workflow processed.
    Progress,
    /// The workflow's free text.
    WorkflowMessage,
    /// The workflow's command.
    WorkflowCommand,
    /// The PVs the workflow's members serve.
    WorkflowPvs,
    /// The consumers' books (RPC).
    Report,
    /// One row per consumer member.
    Members,
    /// The DM job's stages.
    Stages,
    /// The DM workflow.
    Workflow,
    /// The DM job's owner.
    Owner,
    /// The DM job id.
    JobId,
    /// The DM job status.
    JobStatus,
    /// The DM job's current stage.
    StageId,
    /// The DM job's run time.
    RunTime,
    /// Frames the detector sends.
    FramesExpected,
    /// Frames the consumers received.
    FramesReceived,
    /// Frames never accounted for.
    FramesMissed,
    /// What happened last.
    Message,
    /// +1 each second.
    Heartbeat,
    /// The Bluesky run uid (a `Status` member only).
    RunUid,
    /// Everything in one structure.
    Status,
    /// ophyd-async autodiscovery.
    Pvi,
}

/// The type of a field's PV (and of its `Status` member).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// NTEnum (a string member in `Status`).
    Enum,
    /// NTScalar string.
    Text,
    /// NTScalar int.
    Int,
    /// NTScalar long.
    Long,
    /// NTScalar double.
    Double,
    /// NTScalarArray of strings.
    TextArray,
    /// NTTable.
    Table,
    /// An RPC service.
    Rpc,
    /// A structure of its own (`Status`, `PVI`).
    Structure,
}

impl Kind {
    /// The type of the `Status` member of a field of this kind, if it can be one.
    fn member_desc(self) -> Option<FieldDesc> {
        Some(match self {
            Kind::Enum | Kind::Text => FieldDesc::Scalar(ScalarType::String),
            Kind::Int => FieldDesc::Scalar(ScalarType::I32),
            Kind::Long => FieldDesc::Scalar(ScalarType::I64),
            Kind::Double => FieldDesc::Scalar(ScalarType::F64),
            Kind::TextArray => FieldDesc::ScalarArray(ScalarType::String, ArrayKind::Variable),
            Kind::Table | Kind::Rpc | Kind::Structure => return None,
        })
    }

    /// How the type reads in docs/handshake.md.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Enum => "NTEnum",
            Kind::Text => "NTScalar string",
            Kind::Int => "NTScalar int",
            Kind::Long => "NTScalar long",
            Kind::Double => "NTScalar double",
            Kind::TextArray => "NTScalarArray string",
            Kind::Table => "NTTable",
            Kind::Rpc => "RPC",
            Kind::Structure => "structure",
        }
    }
}

/// Who writes a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// The bridge alone (read-only to clients).
    Coordinator,
    /// The acquisition side (Bluesky).
    Bluesky,
    /// The workflow side (a DM stage).
    Workflow,
}

impl Writer {
    /// How the writer reads in docs/handshake.md.
    pub fn name(self) -> &'static str {
        match self {
            Writer::Coordinator => "coordinator",
            Writer::Bluesky => "Bluesky",
            Writer::Workflow => "workflow",
        }
    }
}

/// One field of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Which field.
    pub id: Id,
    /// The PV suffix (the PV is prefix + suffix); `None` for a `Status` member without a PV.
    pub suffix: Option<&'static str>,
    /// The `Status` member; `None` for a PV that is not in `Status`.
    pub member: Option<&'static str>,
    /// The ophyd-async attribute in the PVI structure; `None` when not listed there.
    pub attribute: Option<&'static str>,
    /// The type.
    pub kind: Kind,
    /// Who writes it.
    pub writer: Writer,
}

const fn field(
    id: Id,
    suffix: Option<&'static str>,
    member: Option<&'static str>,
    attribute: Option<&'static str>,
    kind: Kind,
    writer: Writer,
) -> Field {
    Field {
        id,
        suffix,
        member,
        attribute,
        kind,
        writer,
    }
}

use Kind::{Double, Enum, Int, Long, Rpc, Structure, Table, Text, TextArray};
use Writer::{Bluesky, Coordinator, Workflow};

/// Every field, in the order of the `Status` structure and of the PV listing.
pub const FIELDS: [Field; 25] = [
    field(
        Id::State,
        Some("State"),
        Some("state"),
        Some("state"),
        Enum,
        Coordinator,
    ),
    field(
        Id::Command,
        Some("Command"),
        None,
        Some("command"),
        Enum,
        Bluesky,
    ),
    field(
        Id::Request,
        Some("Request"),
        Some("request"),
        Some("request"),
        Text,
        Bluesky,
    ),
    field(
        Id::Ready,
        Some("Ready"),
        Some("ready"),
        Some("ready"),
        Int,
        Workflow,
    ),
    field(
        Id::Progress,
        Some("Progress"),
        Some("progress"),
        Some("progress"),
        Long,
        Workflow,
    ),
    field(
        Id::WorkflowMessage,
        Some("WorkflowMessage"),
        Some("workflowMessage"),
        Some("workflow_message"),
        Text,
        Workflow,
    ),
    field(
        Id::WorkflowCommand,
        Some("WorkflowCommand"),
        None,
        Some("workflow_command"),
        Enum,
        Workflow,
    ),
    field(
        Id::WorkflowPvs,
        Some("WorkflowPVs"),
        Some("workflowPVs"),
        Some("workflow_pvs"),
        TextArray,
        Coordinator,
    ),
    field(Id::Report, Some("Report"), None, None, Rpc, Workflow),
    field(Id::Members, Some("Members"), None, None, Table, Coordinator),
    field(Id::Stages, Some("Stages"), None, None, Table, Coordinator),
    field(
        Id::Workflow,
        Some("Workflow"),
        Some("workflow"),
        Some("workflow"),
        Text,
        Coordinator,
    ),
    field(
        Id::Owner,
        Some("Owner"),
        Some("owner"),
        Some("owner"),
        Text,
        Coordinator,
    ),
    field(
        Id::JobId,
        Some("JobId"),
        Some("jobId"),
        Some("job_id"),
        Text,
        Coordinator,
    ),
    field(
        Id::JobStatus,
        Some("JobStatus"),
        Some("jobStatus"),
        Some("job_status"),
        Text,
        Coordinator,
    ),
    field(
        Id::StageId,
        Some("StageId"),
        Some("stageId"),
        Some("stage_id"),
        Text,
        Coordinator,
    ),
    field(
        Id::RunTime,
        Some("RunTime"),
        Some("runTime"),
        Some("run_time"),
        Double,
        Coordinator,
    ),
    field(
        Id::FramesExpected,
        Some("FramesExpected"),
        Some("framesExpected"),
        Some("frames_expected"),
        Long,
        Coordinator,
    ),
    field(
        Id::FramesReceived,
        Some("FramesReceived"),
        Some("framesReceived"),
        Some("frames_received"),
        Long,
        Coordinator,
    ),
    field(
        Id::FramesMissed,
        Some("FramesMissed"),
        Some("framesMissed"),
        Some("frames_missed"),
        Long,
        Coordinator,
    ),
    field(
        Id::Message,
        Some("Message"),
        Some("message"),
        Some("message"),
        Text,
        Coordinator,
    ),
    field(
        Id::Heartbeat,
        Some("Heartbeat"),
        Some("heartbeat"),
        Some("heartbeat"),
        Long,
        Coordinator,
    ),
    field(Id::RunUid, None, Some("runUid"), None, Text, Coordinator),
    field(
        Id::Status,
        Some("Status"),
        None,
        None,
        Structure,
        Coordinator,
    ),
    field(Id::Pvi, Some("PVI"), None, None, Structure, Coordinator),
];

/// The field `id`.
pub fn get(id: Id) -> &'static Field {
    FIELDS
        .iter()
        .find(|f| f.id == id)
        .expect("every Id is in FIELDS (a test checks it)")
}

/// The PV suffix of field `id` (the PV name is the slot's prefix + suffix).
///
/// # Panics
/// For a field without a PV of its own (a `Status` member only, such as [`Id::RunUid`]).
pub fn suffix(id: Id) -> &'static str {
    get(id).suffix.expect("a field with a PV of its own")
}

/// The fields that are members of `Status`, with their member names.
pub fn status_members() -> impl Iterator<Item = (&'static Field, &'static str)> {
    FIELDS.iter().filter_map(|f| f.member.map(|m| (f, m)))
}

/// Type id of the `Status` structure.
pub const STATUS_ID: &str = "pvabridge:handshake/Status:1.0";

/// The type of the `Status` structure: one member per field that has one, and a timeStamp.
pub fn status_desc() -> Arc<StructDesc> {
    let mut builder = StructDesc::builder(STATUS_ID);
    for (field, member) in status_members() {
        let desc = field
            .kind
            .member_desc()
            .expect("only fields of a scalar kind have a Status member (a test checks it)");
        builder = builder.field(member, desc);
    }
    Arc::new(
        builder
            .field("timeStamp", FieldDesc::Struct(TimeStamp::desc()))
            .build(),
    )
}

/// The `Status` structure showing `view` (without its time stamp).
pub fn status_value(view: &SlotView, heartbeat: i64) -> StructValue {
    let mut status = StructValue::new(status_desc());
    for (field, member) in status_members() {
        if let Some(value) = view.member(field.id, heartbeat) {
            let _ = status.set(member, value);
        }
    }
    status
}

/// Read a `Status` structure into JSON keyed by member name, checking that every member of the
/// table is there with its type: a member missing or of another type is an error naming it.
pub fn read_status(value: &StructValue) -> Result<Map<String, Json>, String> {
    let mut out = Map::new();
    for (field, member) in status_members() {
        let got = value
            .get(member)
            .ok_or_else(|| format!("Status has no member {member}"))?;
        let wrong = || {
            format!(
                "Status member {member} is not of type {}",
                field.kind.name()
            )
        };
        let json = match field.kind {
            Kind::Enum | Kind::Text => Json::from(got.as_str().ok_or_else(wrong)?),
            Kind::Int | Kind::Long => Json::from(got.as_i64().ok_or_else(wrong)?),
            Kind::Double => Json::from(got.as_f64().ok_or_else(wrong)?),
            Kind::TextArray => match got.as_array() {
                Some(pva_codec::ScalarArray::String(items)) => Json::from(items.clone()),
                _ => return Err(wrong()),
            },
            Kind::Table | Kind::Rpc | Kind::Structure => continue,
        };
        out.insert(member.to_string(), json);
    }
    Ok(out)
}

/// The signals the PVI structure lists: (PV suffix, ophyd-async attribute, writable).
pub fn signals() -> impl Iterator<Item = (&'static str, &'static str, bool)> {
    FIELDS
        .iter()
        .filter_map(|f| Some((f.suffix?, f.attribute?, f.writer != Writer::Coordinator)))
}

/// The default access rules of the slots under `prefixes`: each PV that Bluesky writes is
/// writable by `acquisition_user` alone, each PV (and RPC) the workflow writes by
/// `workflow_user` alone, from any host; every other PV is read-only. Names are literal.
pub fn access_rules<P: AsRef<str>>(
    prefixes: &[P],
    acquisition_user: &str,
    workflow_user: &str,
) -> Result<AccessRules, AccessError> {
    let writes = |writer: Writer| -> Vec<&'static str> {
        FIELDS
            .iter()
            .filter(|f| f.writer == writer)
            .filter_map(|f| f.suffix)
            .collect()
    };
    let (bluesky, workflow) = (writes(Writer::Bluesky), writes(Writer::Workflow));
    pva::server::writer_rules(
        prefixes,
        &[
            ("acquisition", acquisition_user, &bluesky),
            ("workflow", workflow_user, &workflow),
        ],
    )
}

impl SlotView {
    /// What field `id` shows (its PV's `value` and its `Status` member); `None` for a field
    /// whose PV is not a scalar shown from the view (commands, tables, RPC, structures).
    pub fn member(&self, id: Id, heartbeat: i64) -> Option<Value> {
        let text = |s: &str| Some(Value::String(s.to_string()));
        match id {
            Id::State => text(self.state.name()),
            Id::Request => text(&self.request),
            Id::Ready => Some(Value::I32(i32::from(self.ready))),
            Id::Progress => Some(Value::I64(self.progress)),
            Id::WorkflowMessage => text(&self.workflow_message),
            Id::WorkflowPvs => Some(Value::Array(pva_codec::ScalarArray::String(
                self.workflow_pvs.clone(),
            ))),
            Id::Workflow => text(&self.workflow),
            Id::Owner => text(&self.owner),
            Id::JobId => text(&self.job_id),
            Id::JobStatus => text(&self.job_status),
            Id::StageId => text(&self.stage_id),
            Id::RunTime => Some(Value::F64(self.run_time)),
            Id::FramesExpected => Some(Value::I64(self.frames_expected)),
            Id::FramesReceived => Some(Value::I64(self.frames_received)),
            Id::FramesMissed => Some(Value::I64(self.frames_missed)),
            Id::Message => text(&self.message),
            Id::Heartbeat => Some(Value::I64(heartbeat)),
            Id::RunUid => text(&self.run_uid),
            Id::Command
            | Id::WorkflowCommand
            | Id::Report
            | Id::Members
            | Id::Stages
            | Id::Status
            | Id::Pvi => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Machine, MachineConfig};
    use std::collections::BTreeSet;

    const ALL: [Id; 25] = [
        Id::State,
        Id::Command,
        Id::Request,
        Id::Ready,
        Id::Progress,
        Id::WorkflowMessage,
        Id::WorkflowCommand,
        Id::WorkflowPvs,
        Id::Report,
        Id::Members,
        Id::Stages,
        Id::Workflow,
        Id::Owner,
        Id::JobId,
        Id::JobStatus,
        Id::StageId,
        Id::RunTime,
        Id::FramesExpected,
        Id::FramesReceived,
        Id::FramesMissed,
        Id::Message,
        Id::Heartbeat,
        Id::RunUid,
        Id::Status,
        Id::Pvi,
    ];

    #[test]
    fn every_id_is_in_the_table_once_with_unique_names() {
        for id in ALL {
            assert_eq!(FIELDS.iter().filter(|f| f.id == id).count(), 1, "{id:?}");
        }
        let suffixes: Vec<_> = FIELDS.iter().filter_map(|f| f.suffix).collect();
        let members: Vec<_> = FIELDS.iter().filter_map(|f| f.member).collect();
        let attributes: Vec<_> = FIELDS.iter().filter_map(|f| f.attribute).collect();
        for names in [&suffixes, &members, &attributes] {
            let unique: BTreeSet<_> = names.iter().collect();
            assert_eq!(unique.len(), names.len(), "{names:?}");
        }
    }

    #[test]
    fn every_status_member_is_shown_and_read_back() {
        let view = Machine::new("p:", MachineConfig::default(), 0.0).view(0.0);
        for (field, member) in status_members() {
            assert!(field.kind.member_desc().is_some(), "{member}");
            assert!(view.member(field.id, 0).is_some(), "{member} is not shown");
        }
        let status = status_value(&view, 7);
        let read = read_status(&status).unwrap();
        assert_eq!(read.len(), status_members().count());
        assert_eq!(read["heartbeat"], 7);
        assert_eq!(read["state"], "IDLE");
    }

    #[test]
    fn a_missing_or_mistyped_member_is_an_error_that_names_it() {
        let desc = Arc::new(
            StructDesc::builder(STATUS_ID)
                .scalar("state", ScalarType::String)
                .build(),
        );
        let err = read_status(&StructValue::new(desc)).unwrap_err();
        assert!(err.contains("no member request"), "{err}");
        let desc = Arc::new(
            StructDesc::builder(STATUS_ID)
                .scalar("state", ScalarType::I32)
                .build(),
        );
        let err = read_status(&StructValue::new(desc)).unwrap_err();
        assert!(err.contains("state is not of type NTEnum"), "{err}");
    }

    #[test]
    fn docs_handshake_md_lists_every_field_with_its_type_and_writer() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/handshake.md");
        let docs = std::fs::read_to_string(path).expect("docs/handshake.md");
        for field in FIELDS {
            if let Some(suffix) = field.suffix {
                let row = format!(
                    "| `P {suffix}` | {} | {} |",
                    field.kind.name(),
                    field.writer.name()
                );
                assert!(docs.contains(&row), "docs/handshake.md lacks the row {row}");
            }
        }
        let status = docs
            .split("`Status` (`pvabridge:handshake/Status:1.0`) has the members")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .expect("the Status paragraph");
        for (_, member) in status_members() {
            assert!(
                status.contains(&format!("`{member}`")),
                "{member} is not in {status}"
            );
        }
        let rows = docs.lines().filter(|l| l.starts_with("| `P ")).count();
        assert_eq!(rows, FIELDS.iter().filter(|f| f.suffix.is_some()).count());
    }

    #[test]
    fn access_rules_follow_the_writers() {
        let rules = access_rules(&["p:"], "bluesky", "dm").unwrap();
        let text = format!("{rules:?}");
        for name in [
            "p:Command",
            "p:Request",
            "p:WorkflowCommand",
            "p:Report",
            "p:Ready",
        ] {
            assert!(text.contains(name), "{name} missing: {text}");
        }
        assert!(!text.contains("p:State"), "{text}");
        assert!(access_rules(&["p:"], "", "dm").is_err());
    }
}
