//! `display` and `control` metadata of NTScalar and NTScalarArray.

use std::sync::Arc;

use super::{i32_member, make_by_name, member, string_member, struct_member, EnumValue};
use crate::types::{FieldDesc, ScalarType, StructDesc};
use crate::value::{StructValue, Value};

/// Display metadata: limits, description, units, and optionally precision and a format choice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Display {
    /// Lowest value to display.
    pub limit_low: f64,
    /// Highest value to display.
    pub limit_high: f64,
    /// What the value is.
    pub description: String,
    /// Engineering units.
    pub units: String,
    /// Digits after the decimal point.
    pub precision: i32,
    /// Format choice (`Default`, `String`, `Binary`, ...), when the type carries one.
    pub form: Option<EnumValue>,
}

/// Control metadata: the range a client may set and the smallest step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Control {
    /// Lowest settable value.
    pub limit_low: f64,
    /// Highest settable value.
    pub limit_high: f64,
    /// Smallest meaningful change.
    pub min_step: f64,
}

fn numeric(t: ScalarType) -> bool {
    !matches!(t, ScalarType::Bool | ScalarType::String)
}

/// A number stored as the limits' scalar type.
fn num(t: ScalarType, v: f64) -> Value {
    let v = if matches!(t, ScalarType::F32 | ScalarType::F64) {
        v
    } else {
        v.round()
    };
    Value::F64(v)
        .coerce(&FieldDesc::Scalar(t))
        .unwrap_or_else(|_| Value::default_scalar(t))
}

fn f64_member(s: &StructValue, name: &str) -> f64 {
    member(s, name).and_then(Value::as_f64).unwrap_or_default()
}

impl Display {
    /// The `display` structure type for a value of element type `t`, as pvxs lays it out:
    /// limits (numeric only), description, units, then precision and form when `form` is set.
    pub fn desc(t: ScalarType, form: bool) -> Arc<StructDesc> {
        let mut b = StructDesc::builder("display_t");
        if numeric(t) {
            b = b.scalar("limitLow", t).scalar("limitHigh", t);
        }
        b = b
            .scalar("description", ScalarType::String)
            .scalar("units", ScalarType::String);
        if form && numeric(t) {
            b = b
                .scalar("precision", ScalarType::I32)
                .structure("form", (*EnumValue::desc()).clone());
        }
        Arc::new(b.build())
    }

    /// This metadata as a value of `desc` (from [`Display::desc`]); members not in `desc` are
    /// left out.
    pub fn to_value(&self, desc: &Arc<StructDesc>) -> StructValue {
        make_by_name(desc, |name, d| {
            Some(match (name, d) {
                ("limitLow", FieldDesc::Scalar(t)) => num(*t, self.limit_low),
                ("limitHigh", FieldDesc::Scalar(t)) => num(*t, self.limit_high),
                ("description", _) => Value::String(self.description.clone()),
                ("units", _) => Value::String(self.units.clone()),
                ("precision", _) => Value::I32(self.precision),
                ("form", _) => Value::Struct(self.form.clone().unwrap_or_default().to_value()),
                _ => return None,
            })
        })
    }

    /// Read display metadata by member name; missing members read as zero/empty.
    pub fn from_value(v: &StructValue) -> Display {
        Display {
            limit_low: f64_member(v, "limitLow"),
            limit_high: f64_member(v, "limitHigh"),
            description: string_member(v, "description").unwrap_or_default(),
            units: string_member(v, "units").unwrap_or_default(),
            precision: i32_member(v, "precision").unwrap_or_default(),
            form: struct_member(v, "form").map(EnumValue::from_value),
        }
    }
}

impl Control {
    /// The `control` structure type for element type `t` (numeric types only carry one).
    pub fn desc(t: ScalarType) -> Arc<StructDesc> {
        Arc::new(
            StructDesc::builder("control_t")
                .scalar("limitLow", t)
                .scalar("limitHigh", t)
                .scalar("minStep", t)
                .build(),
        )
    }

    /// This metadata as a value of `desc` (from [`Control::desc`]).
    pub fn to_value(&self, desc: &Arc<StructDesc>) -> StructValue {
        make_by_name(desc, |name, d| {
            Some(match (name, d) {
                ("limitLow", FieldDesc::Scalar(t)) => num(*t, self.limit_low),
                ("limitHigh", FieldDesc::Scalar(t)) => num(*t, self.limit_high),
                ("minStep", FieldDesc::Scalar(t)) => num(*t, self.min_step),
                _ => return None,
            })
        })
    }

    /// Read control metadata by member name; missing members read as zero.
    pub fn from_value(v: &StructValue) -> Control {
        Control {
            limit_low: f64_member(v, "limitLow"),
            limit_high: f64_member(v, "limitHigh"),
            min_step: f64_member(v, "minStep"),
        }
    }
}
