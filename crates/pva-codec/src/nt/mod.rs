//! Normative types: small builders for what we send and tolerant, by-name readers for what
//! peers send.
//!
//! Builders lay members out in the order pvxs uses. Readers never depend on member order or on
//! optional members being present: pvxs, normativeTypesCPP and hand-written servers differ in
//! both, and some send `any` where a union or a scalar is expected.

mod alarm;
mod display;
mod enum_t;
mod enumerated;
mod ndarray;
mod scalar;
mod table;
mod time;

use std::sync::Arc;

pub use alarm::{set_alarm, Alarm, AlarmSeverity};
pub use display::{Control, Display};
pub use enum_t::EnumValue;
pub use enumerated::{EnumReading, NtEnum, NT_ENUM_ID};
pub use ndarray::{
    union_member_name, Codec, Dimension, NdArrayFrame, NdAttribute, NtNdArray, NT_ATTRIBUTE_ID,
    NT_NDARRAY_ID,
};
pub use scalar::{NtScalar, ScalarReading, NT_SCALAR_ARRAY_ID, NT_SCALAR_ID};
pub use table::{NtTable, TableReading, NT_TABLE_ID};
pub use time::{set_time_stamp, TimeStamp};

use crate::types::{FieldDesc, StructDesc};
use crate::value::{StructValue, Value, ValueError};

/// Why a value could not be read or built as a normative type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NtError {
    /// A member the type needs is absent.
    #[error("missing field '{0}'")]
    MissingField(String),
    /// A member has a type the reader cannot use.
    #[error("field '{field}' has type {found}, expected {expected}")]
    WrongType {
        /// Member name.
        field: String,
        /// What the reader accepts.
        expected: &'static str,
        /// What was there.
        found: String,
    },
    /// A value given to a builder does not fit the type being built.
    #[error(transparent)]
    Value(#[from] ValueError),
    /// A builder was given inconsistent parts (e.g. a column count that differs from the type).
    #[error("{0}")]
    Invalid(String),
}

/// Assemble a structure from fields built to match `desc`; if they do not (a bug in a builder,
/// caught by the unit tests) the defaults are returned rather than panicking.
pub(crate) fn make(desc: &Arc<StructDesc>, fields: Vec<Value>) -> StructValue {
    StructValue::from_parts(desc.clone(), fields).unwrap_or_else(|| StructValue::new(desc.clone()))
}

/// The structure description of member `name` of `desc` (shared, not rebuilt).
pub(crate) fn sub_desc(desc: &StructDesc, name: &str) -> Option<Arc<StructDesc>> {
    desc.member(name).and_then(|m| m.desc.as_struct()).cloned()
}

/// Look through variant unions and selected union members to the value they hold.
pub(crate) fn unwrap_value(v: &Value) -> Option<&Value> {
    match v {
        Value::Any(a) => unwrap_value(a.get()?),
        Value::Union(u) => unwrap_value(&u.selected.as_ref()?.1),
        other => Some(other),
    }
}

/// Member `name` of `s`, looking through `any`/union wrappers.
pub(crate) fn member<'a>(s: &'a StructValue, name: &str) -> Option<&'a Value> {
    unwrap_value(s.get(name)?)
}

/// Member `name` as an integer.
pub(crate) fn int_member(s: &StructValue, name: &str) -> Option<i64> {
    member(s, name)?.as_i64()
}

/// Member `name` as an `i32`, saturating.
pub(crate) fn i32_member(s: &StructValue, name: &str) -> Option<i32> {
    int_member(s, name).map(|v| v.clamp(i32::MIN as i64, i32::MAX as i64) as i32)
}

/// Member `name` as text (strings as they are, other scalars printed).
pub(crate) fn string_member(s: &StructValue, name: &str) -> Option<String> {
    match member(s, name)? {
        Value::String(t) => Some(t.clone()),
        v if v.scalar_type().is_some() => {
            match v
                .clone()
                .coerce(&FieldDesc::Scalar(crate::types::ScalarType::String))
            {
                Ok(Value::String(t)) => Some(t),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Member `name` as a structure.
pub(crate) fn struct_member<'a>(s: &'a StructValue, name: &str) -> Option<&'a StructValue> {
    member(s, name)?.as_struct()
}

/// Member `name` as a list of strings (a string array, or a single string).
pub(crate) fn strings_member(s: &StructValue, name: &str) -> Option<Vec<String>> {
    match member(s, name)? {
        Value::Array(crate::array::ScalarArray::String(v)) => Some(v.clone()),
        Value::String(t) => Some(vec![t.clone()]),
        _ => None,
    }
}

fn type_name(v: &Value) -> String {
    v.desc().type_name()
}

/// Member `value` of `v` as `read` takes it; a missing member, or one `read` refuses, is an
/// error that names what was `expected`.
fn value_member<'a, T>(
    v: &'a StructValue,
    expected: &'static str,
    read: impl FnOnce(&'a Value) -> Option<T>,
) -> Result<T, NtError> {
    let raw = v
        .get("value")
        .ok_or_else(|| NtError::MissingField("value".into()))?;
    read(raw).ok_or_else(|| NtError::WrongType {
        field: "value".into(),
        expected,
        found: type_name(raw),
    })
}

/// Structure member `name` read by `read`, or the default (zero) when it is absent.
fn struct_or_default<T: Default>(s: &StructValue, name: &str, read: fn(&StructValue) -> T) -> T {
    struct_member(s, name).map(read).unwrap_or_default()
}

/// A structure of type `desc` whose members `field` gives by name and type; those it gives
/// `None` for are at their defaults.
fn make_by_name(
    desc: &Arc<StructDesc>,
    mut field: impl FnMut(&str, &FieldDesc) -> Option<Value>,
) -> StructValue {
    let fields = desc
        .members()
        .iter()
        .map(|m| field(&m.name, &m.desc).unwrap_or_else(|| Value::default_for(&m.desc)))
        .collect();
    make(desc, fields)
}

#[cfg(test)]
mod tests;
