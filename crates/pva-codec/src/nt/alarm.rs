//! `alarm_t`: severity, status and message.

use std::sync::{Arc, OnceLock};

use super::{i32_member, make, string_member, NtError};
use crate::types::{ScalarType, StructDesc};
use crate::value::{StructValue, Value};

/// EPICS alarm severities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AlarmSeverity {
    /// No alarm.
    #[default]
    NoAlarm = 0,
    /// Minor alarm.
    Minor = 1,
    /// Major alarm.
    Major = 2,
    /// The value is invalid.
    Invalid = 3,
    /// The severity is not known (any other number).
    Undefined = 4,
}

impl From<i32> for AlarmSeverity {
    fn from(v: i32) -> Self {
        match v {
            0 => AlarmSeverity::NoAlarm,
            1 => AlarmSeverity::Minor,
            2 => AlarmSeverity::Major,
            3 => AlarmSeverity::Invalid,
            _ => AlarmSeverity::Undefined,
        }
    }
}

/// The `alarm` member of a normative type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alarm {
    /// Severity number (see [`AlarmSeverity`]).
    pub severity: i32,
    /// Status number (0 none, 1 device, 2 driver, 3 record, 4 db, 5 conf, 6 undefined, 7 client).
    pub status: i32,
    /// Message text.
    pub message: String,
}

impl Alarm {
    /// An alarm of `severity` with a status number and a message.
    pub fn new(severity: AlarmSeverity, status: i32, message: impl Into<String>) -> Self {
        Alarm {
            severity: severity as i32,
            status,
            message: message.into(),
        }
    }

    /// No alarm.
    pub fn none() -> Self {
        Alarm::default()
    }

    /// The severity as an enum.
    pub fn severity_kind(&self) -> AlarmSeverity {
        AlarmSeverity::from(self.severity)
    }

    /// The `alarm_t` structure type (shared).
    pub fn desc() -> Arc<StructDesc> {
        static DESC: OnceLock<Arc<StructDesc>> = OnceLock::new();
        DESC.get_or_init(|| {
            Arc::new(
                StructDesc::builder("alarm_t")
                    .scalar("severity", ScalarType::I32)
                    .scalar("status", ScalarType::I32)
                    .scalar("message", ScalarType::String)
                    .build(),
            )
        })
        .clone()
    }

    /// This alarm as an `alarm_t` value.
    pub fn to_value(&self) -> StructValue {
        make(
            &Alarm::desc(),
            vec![
                Value::I32(self.severity),
                Value::I32(self.status),
                Value::String(self.message.clone()),
            ],
        )
    }

    /// Read an alarm structure by member name; missing members read as zero/empty.
    pub fn from_value(v: &StructValue) -> Alarm {
        Alarm {
            severity: i32_member(v, "severity").unwrap_or_default(),
            status: i32_member(v, "status").unwrap_or_default(),
            message: string_member(v, "message").unwrap_or_default(),
        }
    }
}

/// Set the `alarm` member of a normative type value, member by member (converting types).
pub fn set_alarm(target: &mut StructValue, alarm: &Alarm) -> Result<(), NtError> {
    if target.get("alarm").and_then(Value::as_struct).is_none() {
        return Err(NtError::MissingField("alarm".into()));
    }
    for (name, v) in [
        ("severity", Value::I32(alarm.severity)),
        ("status", Value::I32(alarm.status)),
        ("message", Value::String(alarm.message.clone())),
    ] {
        let path = format!("alarm.{name}");
        if target.get(&path).is_some() {
            target.set(&path, v)?;
        }
    }
    Ok(())
}
