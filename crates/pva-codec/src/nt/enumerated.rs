//! NTEnum: an `enum_t` value with alarm and time stamp.

use std::sync::{Arc, OnceLock};

use super::{make, struct_member, type_name, Alarm, EnumValue, NtError, TimeStamp};
use crate::types::{FieldDesc, ScalarType, StructDesc};
use crate::value::{StructValue, Value};

/// Type id of NTEnum.
pub const NT_ENUM_ID: &str = "epics:nt/NTEnum:1.0";

/// Builds NTEnum values, laid out as pvxs does: value, alarm, timeStamp, display.description.
#[derive(Debug, Clone, Copy, Default)]
pub struct NtEnum;

impl NtEnum {
    /// The NTEnum structure type (shared).
    pub fn desc() -> Arc<StructDesc> {
        static DESC: OnceLock<Arc<StructDesc>> = OnceLock::new();
        DESC.get_or_init(|| {
            Arc::new(
                StructDesc::builder(NT_ENUM_ID)
                    .field("value", FieldDesc::Struct(EnumValue::desc()))
                    .field("alarm", FieldDesc::Struct(Alarm::desc()))
                    .field("timeStamp", FieldDesc::Struct(TimeStamp::desc()))
                    .structure(
                        "display",
                        StructDesc::builder("")
                            .scalar("description", ScalarType::String)
                            .build(),
                    )
                    .build(),
            )
        })
        .clone()
    }

    /// A value with every member at its default.
    pub fn create() -> StructValue {
        StructValue::new(NtEnum::desc())
    }

    /// A value selecting `value.index` of `value.choices`.
    pub fn build_value(value: &EnumValue, alarm: &Alarm, time_stamp: TimeStamp) -> StructValue {
        let desc = NtEnum::desc();
        let fields = desc
            .members()
            .iter()
            .map(|m| match m.name.as_str() {
                "value" => Value::Struct(value.to_value()),
                "alarm" => Value::Struct(alarm.to_value()),
                "timeStamp" => Value::Struct(time_stamp.to_value()),
                _ => Value::default_for(&m.desc),
            })
            .collect();
        make(&desc, fields)
    }
}

/// What an NTEnum holds, read by member name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnumReading {
    /// Index and choices.
    pub value: EnumValue,
    /// Alarm (zero when absent).
    pub alarm: Alarm,
    /// Time stamp (zero when absent).
    pub time_stamp: TimeStamp,
}

impl EnumReading {
    /// Read an NTEnum; its `value` must be a structure (an `enum_t`).
    pub fn from_value(v: &StructValue) -> Result<EnumReading, NtError> {
        let raw = v
            .get("value")
            .ok_or_else(|| NtError::MissingField("value".into()))?;
        let value = struct_member(v, "value").ok_or_else(|| NtError::WrongType {
            field: "value".into(),
            expected: "enum_t",
            found: type_name(raw),
        })?;
        Ok(EnumReading {
            value: EnumValue::from_value(value),
            alarm: struct_member(v, "alarm")
                .map(Alarm::from_value)
                .unwrap_or_default(),
            time_stamp: struct_member(v, "timeStamp")
                .map(TimeStamp::from_value)
                .unwrap_or_default(),
        })
    }
}
