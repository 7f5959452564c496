//! NTEnum: an `enum_t` value with alarm and time stamp.

use std::sync::{Arc, OnceLock};

use super::{
    make_by_name, struct_or_default, unwrap_value, value_member, Alarm, EnumValue, NtError,
    TimeStamp,
};
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
        make_by_name(&NtEnum::desc(), |name, _| {
            Some(Value::Struct(match name {
                "value" => value.to_value(),
                "alarm" => alarm.to_value(),
                "timeStamp" => time_stamp.to_value(),
                _ => return None,
            }))
        })
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
        let value = value_member(v, "enum_t", |raw| unwrap_value(raw)?.as_struct())?;
        Ok(EnumReading {
            value: EnumValue::from_value(value),
            alarm: struct_or_default(v, "alarm", Alarm::from_value),
            time_stamp: struct_or_default(v, "timeStamp", TimeStamp::from_value),
        })
    }
}
