//! NTTable: labelled columns of equal length.

use std::sync::Arc;

use super::{
    make, strings_member, struct_or_default, unwrap_value, value_member, Alarm, NtError, TimeStamp,
};
use crate::array::ScalarArray;
use crate::types::{ArrayKind, FieldDesc, ScalarType, StructDesc};
use crate::value::{StructValue, Value};

/// Type id of NTTable.
pub const NT_TABLE_ID: &str = "epics:nt/NTTable:1.0";

/// Builds NTTable types and values, laid out as pvxs does: labels, value, descriptor, alarm,
/// timeStamp.
#[derive(Debug, Clone, Default)]
pub struct NtTable {
    columns: Vec<(String, ScalarType, String)>,
}

impl NtTable {
    /// A table with no columns yet.
    pub fn new() -> Self {
        NtTable::default()
    }

    /// Add a column of element type `t`; its label is `label`, or the name when `None`.
    pub fn column(mut self, name: &str, t: ScalarType, label: Option<&str>) -> Self {
        self.columns
            .push((name.to_owned(), t, label.unwrap_or(name).to_owned()));
        self
    }

    /// The structure type.
    pub fn desc(&self) -> Arc<StructDesc> {
        let mut value = StructDesc::builder("");
        for (name, t, _) in &self.columns {
            value = value.array(name.clone(), *t);
        }
        Arc::new(
            StructDesc::builder(NT_TABLE_ID)
                .array("labels", ScalarType::String)
                .structure("value", value.build())
                .scalar("descriptor", ScalarType::String)
                .field("alarm", FieldDesc::Struct(Alarm::desc()))
                .field("timeStamp", FieldDesc::Struct(TimeStamp::desc()))
                .build(),
        )
    }

    /// A value with the labels filled and empty columns.
    pub fn create(&self) -> StructValue {
        let empty = self
            .columns
            .iter()
            .map(|(_, t, _)| ScalarArray::empty(*t))
            .collect();
        self.build_value(empty, &Alarm::none(), TimeStamp::default())
            .unwrap_or_else(|_| StructValue::new(self.desc()))
    }

    /// A value with one array per column, in column order (converted to the column types).
    pub fn build_value(
        &self,
        columns: Vec<ScalarArray>,
        alarm: &Alarm,
        time_stamp: TimeStamp,
    ) -> Result<StructValue, NtError> {
        if columns.len() != self.columns.len() {
            return Err(NtError::Invalid(format!(
                "{} columns given for a table of {}",
                columns.len(),
                self.columns.len()
            )));
        }
        let desc = self.desc();
        let value_desc =
            super::sub_desc(&desc, "value").ok_or_else(|| NtError::MissingField("value".into()))?;
        let mut cols = Vec::with_capacity(columns.len());
        for (a, (_, t, _)) in columns.into_iter().zip(&self.columns) {
            cols.push(Value::Array(a).coerce(&FieldDesc::ScalarArray(*t, ArrayKind::Variable))?);
        }
        let labels = self.columns.iter().map(|(_, _, l)| l.clone()).collect();
        Ok(make(
            &desc,
            vec![
                Value::Array(ScalarArray::String(labels)),
                Value::Struct(make(&value_desc, cols)),
                Value::String(String::new()),
                Value::Struct(alarm.to_value()),
                Value::Struct(time_stamp.to_value()),
            ],
        ))
    }
}

/// What an NTTable holds, read by member name.
#[derive(Debug, Clone, PartialEq)]
pub struct TableReading {
    /// Column labels (the column names when the table has none).
    pub labels: Vec<String>,
    /// Columns as (name, array) in the order sent; non-array members are skipped.
    pub columns: Vec<(String, ScalarArray)>,
    /// Alarm (zero when absent).
    pub alarm: Alarm,
    /// Time stamp (zero when absent).
    pub time_stamp: TimeStamp,
}

impl TableReading {
    /// Read an NTTable; its `value` must be a structure.
    pub fn from_value(v: &StructValue) -> Result<TableReading, NtError> {
        let value = value_member(v, "a structure of columns", |raw| {
            unwrap_value(raw)?.as_struct()
        })?;
        let columns: Vec<(String, ScalarArray)> = value
            .iter()
            .filter_map(|(name, c)| match unwrap_value(c)? {
                Value::Array(a) => Some((name.to_owned(), a.clone())),
                _ => None,
            })
            .collect();
        let labels = strings_member(v, "labels")
            .unwrap_or_else(|| columns.iter().map(|(n, _)| n.clone()).collect());
        Ok(TableReading {
            labels,
            columns,
            alarm: struct_or_default(v, "alarm", Alarm::from_value),
            time_stamp: struct_or_default(v, "timeStamp", TimeStamp::from_value),
        })
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&ScalarArray> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
}
