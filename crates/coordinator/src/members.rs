//! The consumers' books: what a workflow member reports through the `Report` RPC, the
//! `Members` table the bridge keeps of them, and the `Stages` table of the DM job.

use std::sync::Arc;

use dm::ProcessingJob;
use pva_codec::nt::{Alarm, NtTable, TimeStamp};
use pva_codec::{ArrayKind, FieldDesc, ScalarArray, ScalarType, StructDesc, StructValue, Value};
use serde::{Deserialize, Serialize};

/// One consumer member's books, as it reports them with an RPC on `P Report`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberReport {
    /// The member's number: 0 for a single consumer, 0..N-1 for N.
    pub member: u32,
    /// Subscribed and ready to receive.
    pub ready: bool,
    /// Frames received in the run.
    pub received: u64,
    /// Frames the member knows it missed (gaps in uniqueId, and the ones never come once it
    /// ended).
    pub missed: u64,
    /// Frames received more than once.
    pub duplicates: u64,
    /// Frames processed.
    pub processed: u64,
    /// uniqueId of the first frame of the run (-1 before one came).
    pub first_id: i64,
    /// uniqueId of the last frame (-1 before one came).
    pub last_id: i64,
    /// The PVs the member serves itself.
    #[serde(default)]
    pub pvs: Vec<String>,
    /// Frames that came after a later one.
    #[serde(default)]
    pub out_of_order: u64,
    /// Frames per second between the member's first and last frame.
    #[serde(default)]
    pub fps: f64,
    /// Megabytes (10^6) of images per second over the same span.
    #[serde(default)]
    pub mb_per_s: f64,
    /// Median latency from a frame's timeStamp to its arrival, ms; known once the member ended.
    #[serde(default)]
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile of that latency, ms; known once the member ended.
    #[serde(default)]
    pub latency_p99_ms: Option<f64>,
    /// This is the member's final report: it has ended, and its silence from now on is not a
    /// loss.
    #[serde(default)]
    pub ended: bool,
}

/// A latency not measured yet, on the wire (a real latency is never negative).
const UNKNOWN: f64 = -1.0;

/// Type id of the `Report` RPC argument.
pub const REPORT_ID: &str = "pvabridge:handshake/Report:1.0";

impl MemberReport {
    /// The RPC argument structure.
    pub fn desc() -> Arc<StructDesc> {
        use ScalarType::{Bool, F64, I64, U32};
        Arc::new(
            StructDesc::builder(REPORT_ID)
                .scalar("member", U32)
                .scalar("ready", Bool)
                .scalar("received", I64)
                .scalar("missed", I64)
                .scalar("duplicates", I64)
                .scalar("processed", I64)
                .scalar("firstId", I64)
                .scalar("lastId", I64)
                .field(
                    "pvs",
                    FieldDesc::ScalarArray(ScalarType::String, ArrayKind::Variable),
                )
                .scalar("outOfOrder", I64)
                .scalar("fps", F64)
                .scalar("mbPerS", F64)
                .scalar("latencyP50Ms", F64)
                .scalar("latencyP99Ms", F64)
                .scalar("ended", Bool)
                .build(),
        )
    }

    /// The report as an RPC argument.
    pub fn to_value(&self) -> StructValue {
        let mut v = StructValue::new(MemberReport::desc());
        let long = |n: u64| Value::I64(i64::try_from(n).unwrap_or(i64::MAX));
        let members = [
            ("member", Value::U32(self.member)),
            ("ready", Value::Bool(self.ready)),
            ("received", long(self.received)),
            ("missed", long(self.missed)),
            ("duplicates", long(self.duplicates)),
            ("processed", long(self.processed)),
            ("firstId", Value::I64(self.first_id)),
            ("lastId", Value::I64(self.last_id)),
            ("pvs", Value::Array(ScalarArray::String(self.pvs.clone()))),
            ("outOfOrder", long(self.out_of_order)),
            ("fps", Value::F64(self.fps)),
            ("mbPerS", Value::F64(self.mb_per_s)),
            (
                "latencyP50Ms",
                Value::F64(self.latency_p50_ms.unwrap_or(UNKNOWN)),
            ),
            (
                "latencyP99Ms",
                Value::F64(self.latency_p99_ms.unwrap_or(UNKNOWN)),
            ),
            ("ended", Value::Bool(self.ended)),
        ];
        for (name, value) in members {
            let _ = v.set(name, value);
        }
        v
    }

    /// Read an RPC argument: `member` is required; a count or rate that is absent is 0, an id
    /// -1, a latency unknown; negative counts are refused.
    pub fn from_value(v: &StructValue) -> Result<MemberReport, String> {
        let int = |name: &str| v.get(name).and_then(Value::as_i64);
        let real = |name: &str| v.get(name).and_then(Value::as_f64);
        let flag = |name: &str| {
            int(name).is_some_and(|n| n != 0) || matches!(v.get(name), Some(Value::Bool(true)))
        };
        let count = |name: &str| match int(name) {
            None => Ok(0),
            Some(n) => {
                u64::try_from(n).map_err(|_| format!("{name} must not be negative, not {n}"))
            }
        };
        let member = int("member").ok_or("a report needs a member number (member)")?;
        let member =
            u32::try_from(member).map_err(|_| format!("member must be 0 or more, not {member}"))?;
        let pvs = match v.get("pvs").and_then(Value::as_array) {
            Some(ScalarArray::String(names)) => names.clone(),
            Some(_) => return Err("pvs must be an array of PV names".into()),
            None => Vec::new(),
        };
        Ok(MemberReport {
            member,
            ready: flag("ready"),
            received: count("received")?,
            missed: count("missed")?,
            duplicates: count("duplicates")?,
            processed: count("processed")?,
            first_id: int("firstId").unwrap_or(-1),
            last_id: int("lastId").unwrap_or(-1),
            pvs,
            out_of_order: count("outOfOrder")?,
            fps: real("fps").unwrap_or(0.0),
            mb_per_s: real("mbPerS").unwrap_or(0.0),
            latency_p50_ms: real("latencyP50Ms").filter(|ms| *ms >= 0.0),
            latency_p99_ms: real("latencyP99Ms").filter(|ms| *ms >= 0.0),
            ended: flag("ended"),
        })
    }
}

/// The `Members` NTTable: one row per member, in member order.
pub fn members_table(members: &[MemberReport]) -> StructValue {
    let long = |f: fn(&MemberReport) -> u64| {
        ScalarArray::I64(
            members
                .iter()
                .map(|m| i64::try_from(f(m)).unwrap_or(i64::MAX))
                .collect::<Vec<_>>()
                .into(),
        )
    };
    let columns = vec![
        ScalarArray::I32(
            members
                .iter()
                .map(|m| m.member as i32)
                .collect::<Vec<_>>()
                .into(),
        ),
        ScalarArray::I32(
            members
                .iter()
                .map(|m| i32::from(m.ready))
                .collect::<Vec<_>>()
                .into(),
        ),
        long(|m| m.received),
        long(|m| m.missed),
        long(|m| m.duplicates),
        long(|m| m.processed),
        ScalarArray::I64(
            members
                .iter()
                .map(|m| m.first_id)
                .collect::<Vec<_>>()
                .into(),
        ),
        ScalarArray::I64(members.iter().map(|m| m.last_id).collect::<Vec<_>>().into()),
        ScalarArray::String(members.iter().map(|m| m.pvs.join(" ")).collect()),
    ];
    build(members_nt(), columns)
}

fn members_nt() -> NtTable {
    use ScalarType::{I32, I64};
    NtTable::new()
        .column("member", I32, None)
        .column("ready", I32, None)
        .column("received", I64, None)
        .column("missed", I64, None)
        .column("duplicates", I64, None)
        .column("processed", I64, None)
        .column("firstId", I64, None)
        .column("lastId", I64, None)
        .column("pvs", ScalarType::String, None)
}

/// One row of the `Stages` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRow {
    /// The stage key, e.g. `01-STREAM`.
    pub name: String,
    /// The status of its last child process (`pending` before one ran).
    pub status: String,
    /// The exit status of its last child process (-1 before one ended).
    pub exit_status: i32,
    /// Seconds its child processes ran, summed.
    pub run_time: f64,
}

/// The stages of a DM job, in run order.
pub fn stage_rows(job: &ProcessingJob) -> Vec<StageRow> {
    let Some(workflow) = &job.workflow else {
        return Vec::new();
    };
    workflow
        .stages
        .iter()
        .map(|(name, stage)| {
            let children = stage.child_processes.as_ref();
            let last = children.and_then(|c| c.values().max_by_key(|c| c.child_process_number));
            StageRow {
                name: name.clone(),
                status: last
                    .and_then(|c| c.status)
                    .map_or_else(|| "pending".to_string(), |s| s.to_string()),
                exit_status: last.and_then(|c| c.exit_status).unwrap_or(-1),
                run_time: children.map_or(0.0, |c| c.values().filter_map(|c| c.run_time).sum()),
            }
        })
        .collect()
}

/// The `Stages` NTTable.
pub fn stages_table(rows: &[StageRow]) -> StructValue {
    let columns = vec![
        ScalarArray::String(rows.iter().map(|r| r.name.clone()).collect()),
        ScalarArray::String(rows.iter().map(|r| r.status.clone()).collect()),
        ScalarArray::I32(
            rows.iter()
                .map(|r| r.exit_status)
                .collect::<Vec<_>>()
                .into(),
        ),
        ScalarArray::F64(rows.iter().map(|r| r.run_time).collect::<Vec<_>>().into()),
    ];
    build(stages_nt(), columns)
}

fn stages_nt() -> NtTable {
    NtTable::new()
        .column("name", ScalarType::String, None)
        .column("status", ScalarType::String, None)
        .column("exitStatus", ScalarType::I32, None)
        .column("runTime", ScalarType::F64, None)
}

fn build(table: NtTable, columns: Vec<ScalarArray>) -> StructValue {
    table
        .build_value(columns, &Alarm::none(), TimeStamp::now())
        .expect("the columns match the table")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::nt::TableReading;

    #[test]
    fn a_report_round_trips_through_its_rpc_argument() {
        let report = MemberReport {
            member: 1,
            ready: true,
            received: 10,
            missed: 2,
            duplicates: 1,
            processed: 9,
            first_id: 101,
            last_id: 112,
            pvs: vec!["p:wf:1:Stats".into()],
            out_of_order: 3,
            fps: 250.5,
            mb_per_s: 2.25,
            latency_p50_ms: Some(0.5),
            latency_p99_ms: Some(1.75),
            ended: true,
        };
        assert_eq!(MemberReport::from_value(&report.to_value()), Ok(report));
        let running = MemberReport {
            fps: 10.0,
            ..MemberReport::default()
        };
        let read = MemberReport::from_value(&running.to_value()).unwrap();
        assert_eq!((read.latency_p50_ms, read.latency_p99_ms), (None, None));
        assert_eq!(read, running);
        let mut bad = MemberReport::default().to_value();
        bad.set("received", -3i64).unwrap();
        let err = MemberReport::from_value(&bad).unwrap_err();
        assert!(err.contains("received must not be negative"), "{err}");
    }

    #[test]
    fn the_members_table_has_a_row_per_member() {
        let rows = [
            MemberReport::default(),
            MemberReport {
                member: 1,
                received: 4,
                ..MemberReport::default()
            },
        ];
        let table = TableReading::from_value(&members_table(&rows)).unwrap();
        let received = table.columns.iter().find(|(n, _)| n == "received").unwrap();
        assert_eq!(received.1, ScalarArray::I64(vec![0i64, 4].into()));
    }
}
