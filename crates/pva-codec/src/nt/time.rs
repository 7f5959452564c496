//! `time_t`: seconds past the POSIX epoch, nanoseconds and a user tag.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{i32_member, int_member, make, NtError};
use crate::types::{ScalarType, StructDesc};
use crate::value::{StructValue, Value};

/// The `timeStamp` member of a normative type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct TimeStamp {
    /// Seconds since 1970-01-01 UTC.
    pub seconds_past_epoch: i64,
    /// Nanoseconds within the second.
    pub nanoseconds: i32,
    /// Application tag.
    pub user_tag: i32,
}

impl TimeStamp {
    /// The current time.
    pub fn now() -> Self {
        TimeStamp::from(SystemTime::now())
    }

    /// The time as a `SystemTime`; `None` when the platform cannot represent it.
    pub fn to_system_time(&self) -> Option<SystemTime> {
        let nanos = Duration::from_nanos(self.nanoseconds.clamp(0, 999_999_999) as u64);
        let secs = Duration::from_secs(self.seconds_past_epoch.unsigned_abs());
        let whole = if self.seconds_past_epoch >= 0 {
            UNIX_EPOCH.checked_add(secs)?
        } else {
            UNIX_EPOCH.checked_sub(secs)?
        };
        whole.checked_add(nanos)
    }

    /// Seconds since the epoch as a float.
    pub fn as_secs_f64(&self) -> f64 {
        self.seconds_past_epoch as f64 + self.nanoseconds as f64 * 1e-9
    }

    /// The `time_t` structure type (shared).
    pub fn desc() -> Arc<StructDesc> {
        static DESC: OnceLock<Arc<StructDesc>> = OnceLock::new();
        DESC.get_or_init(|| {
            Arc::new(
                StructDesc::builder("time_t")
                    .scalar("secondsPastEpoch", ScalarType::I64)
                    .scalar("nanoseconds", ScalarType::I32)
                    .scalar("userTag", ScalarType::I32)
                    .build(),
            )
        })
        .clone()
    }

    /// This time as a `time_t` value.
    pub fn to_value(&self) -> StructValue {
        make(
            &TimeStamp::desc(),
            vec![
                Value::I64(self.seconds_past_epoch),
                Value::I32(self.nanoseconds),
                Value::I32(self.user_tag),
            ],
        )
    }

    /// Read a time structure by member name; missing members read as zero.
    pub fn from_value(v: &StructValue) -> TimeStamp {
        TimeStamp {
            seconds_past_epoch: int_member(v, "secondsPastEpoch").unwrap_or_default(),
            nanoseconds: i32_member(v, "nanoseconds").unwrap_or_default(),
            user_tag: i32_member(v, "userTag").unwrap_or_default(),
        }
    }
}

impl From<SystemTime> for TimeStamp {
    fn from(t: SystemTime) -> Self {
        let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos() as i32,
            ),
            Err(e) => {
                // Before 1970: floor the seconds so nanoseconds stay in 0..1e9.
                let d = e.duration();
                let secs = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                match d.subsec_nanos() {
                    0 => (secs, 0),
                    n => (secs - 1, (1_000_000_000 - n) as i32),
                }
            }
        };
        TimeStamp {
            seconds_past_epoch: secs,
            nanoseconds: nanos,
            user_tag: 0,
        }
    }
}

/// Set the `timeStamp` member of a normative type value, member by member.
pub fn set_time_stamp(target: &mut StructValue, ts: TimeStamp) -> Result<(), NtError> {
    set_time_member(target, "timeStamp", ts)
}

/// Set a `time_t` member called `name` (e.g. `dataTimeStamp`).
pub(crate) fn set_time_member(
    target: &mut StructValue,
    name: &str,
    ts: TimeStamp,
) -> Result<(), NtError> {
    if target.get(name).and_then(Value::as_struct).is_none() {
        return Err(NtError::MissingField(name.into()));
    }
    for (field, v) in [
        ("secondsPastEpoch", Value::I64(ts.seconds_past_epoch)),
        ("nanoseconds", Value::I32(ts.nanoseconds)),
        ("userTag", Value::I32(ts.user_tag)),
    ] {
        let path = format!("{name}.{field}");
        if target.get(&path).is_some() {
            target.set(&path, v)?;
        }
    }
    Ok(())
}
