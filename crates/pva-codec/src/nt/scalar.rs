//! NTScalar and NTScalarArray.

use std::sync::Arc;

use super::{
    make, string_member, struct_member, struct_or_default, unwrap_value, value_member, Alarm,
    Control, Display, NtError, TimeStamp,
};
use crate::types::{ArrayKind, FieldDesc, ScalarType, StructDesc};
use crate::value::{StructValue, Value};

/// Type id of NTScalar.
pub const NT_SCALAR_ID: &str = "epics:nt/NTScalar:1.0";
/// Type id of NTScalarArray.
pub const NT_SCALAR_ARRAY_ID: &str = "epics:nt/NTScalarArray:1.0";

/// Builds NTScalar (one scalar `value`) and NTScalarArray (`value` an array) types and values.
#[derive(Debug, Clone)]
pub struct NtScalar {
    element: ScalarType,
    array: bool,
    descriptor: bool,
    display: bool,
    form: bool,
    control: bool,
    desc: Arc<StructDesc>,
}

impl NtScalar {
    /// An NTScalar whose value is of type `t`.
    pub fn new(t: ScalarType) -> Self {
        NtScalar::make(t, false)
    }

    /// An NTScalarArray whose value is an array of `t`.
    pub fn array(t: ScalarType) -> Self {
        NtScalar::make(t, true)
    }

    fn make(t: ScalarType, array: bool) -> Self {
        let mut s = NtScalar {
            element: t,
            array,
            descriptor: false,
            display: false,
            form: false,
            control: false,
            desc: Arc::new(StructDesc::new("", Vec::new())),
        };
        s.desc = s.build_desc();
        s
    }

    /// Add a `descriptor` string member.
    pub fn with_descriptor(mut self) -> Self {
        self.descriptor = true;
        self.desc = self.build_desc();
        self
    }

    /// Add `display` metadata (limits only for numeric values).
    pub fn with_display(mut self) -> Self {
        self.display = true;
        self.desc = self.build_desc();
        self
    }

    /// Add `display.precision` and `display.form` (implies `display`; numeric values only).
    pub fn with_form(mut self) -> Self {
        self.display = true;
        self.form = true;
        self.desc = self.build_desc();
        self
    }

    /// Add `control` metadata (numeric values only).
    pub fn with_control(mut self) -> Self {
        self.control = true;
        self.desc = self.build_desc();
        self
    }

    fn build_desc(&self) -> Arc<StructDesc> {
        let numeric = !matches!(self.element, ScalarType::Bool | ScalarType::String);
        let (id, value) = if self.array {
            (
                NT_SCALAR_ARRAY_ID,
                FieldDesc::ScalarArray(self.element, ArrayKind::Variable),
            )
        } else {
            (NT_SCALAR_ID, FieldDesc::Scalar(self.element))
        };
        let mut b = StructDesc::builder(id)
            .field("value", value)
            .field("alarm", FieldDesc::Struct(Alarm::desc()))
            .field("timeStamp", FieldDesc::Struct(TimeStamp::desc()));
        if self.descriptor {
            b = b.scalar("descriptor", ScalarType::String);
        }
        if self.display {
            b = b.field(
                "display",
                FieldDesc::Struct(Display::desc(self.element, self.form)),
            );
        }
        if self.control && numeric {
            b = b.field("control", FieldDesc::Struct(Control::desc(self.element)));
        }
        Arc::new(b.build())
    }

    /// The structure type.
    pub fn desc(&self) -> Arc<StructDesc> {
        self.desc.clone()
    }

    /// A value with every member at its default.
    pub fn create(&self) -> StructValue {
        StructValue::new(self.desc.clone())
    }

    /// A value holding `value` (converted to the value type), `alarm` and `time_stamp`.
    pub fn build_value(
        &self,
        value: impl Into<Value>,
        alarm: &Alarm,
        time_stamp: TimeStamp,
    ) -> Result<StructValue, NtError> {
        self.fill(value.into(), alarm, time_stamp, None, None, None)
    }

    /// A value holding everything in `r`; metadata the type has no member for is left out.
    pub fn build_reading(&self, r: &ScalarReading) -> Result<StructValue, NtError> {
        self.fill(
            r.value.clone(),
            &r.alarm,
            r.time_stamp,
            r.descriptor.as_deref(),
            r.display.as_ref(),
            r.control.as_ref(),
        )
    }

    fn fill(
        &self,
        value: Value,
        alarm: &Alarm,
        time_stamp: TimeStamp,
        descriptor: Option<&str>,
        display: Option<&Display>,
        control: Option<&Control>,
    ) -> Result<StructValue, NtError> {
        let mut fields = Vec::with_capacity(self.desc.members().len());
        for m in self.desc.members() {
            fields.push(match (m.name.as_str(), &m.desc) {
                ("value", d) => value.clone().coerce(d)?,
                ("alarm", _) => Value::Struct(alarm.to_value()),
                ("timeStamp", _) => Value::Struct(time_stamp.to_value()),
                ("descriptor", _) => Value::String(descriptor.unwrap_or_default().to_owned()),
                ("display", FieldDesc::Struct(d)) => {
                    Value::Struct(display.cloned().unwrap_or_default().to_value(d))
                }
                ("control", FieldDesc::Struct(d)) => {
                    Value::Struct(control.copied().unwrap_or_default().to_value(d))
                }
                (_, d) => Value::default_for(d),
            });
        }
        Ok(make(&self.desc, fields))
    }
}

/// What an NTScalar or NTScalarArray holds, read by member name.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalarReading {
    /// The value: a scalar, or `Value::Array` for NTScalarArray (`any` wrappers removed).
    pub value: Value,
    /// Alarm (zero when absent).
    pub alarm: Alarm,
    /// Time stamp (zero when absent).
    pub time_stamp: TimeStamp,
    /// Descriptor text, when present.
    pub descriptor: Option<String>,
    /// Display metadata, when present.
    pub display: Option<Display>,
    /// Control metadata, when present.
    pub control: Option<Control>,
}

impl ScalarReading {
    /// A reading of `value` with no alarm, the current time and no metadata.
    pub fn new(value: impl Into<Value>) -> Self {
        ScalarReading {
            value: value.into(),
            alarm: Alarm::none(),
            time_stamp: TimeStamp::now(),
            descriptor: None,
            display: None,
            control: None,
        }
    }

    /// Read an NTScalar or NTScalarArray (or any structure with a scalar `value`).
    pub fn from_value(v: &StructValue) -> Result<ScalarReading, NtError> {
        let value = value_member(v, "a scalar or scalar array", |raw| {
            unwrap_value(raw).filter(|x| x.scalar_type().is_some() || matches!(x, Value::Array(_)))
        })?
        .clone();
        Ok(ScalarReading {
            value,
            alarm: struct_or_default(v, "alarm", Alarm::from_value),
            time_stamp: struct_or_default(v, "timeStamp", TimeStamp::from_value),
            descriptor: string_member(v, "descriptor"),
            display: struct_member(v, "display").map(Display::from_value),
            control: struct_member(v, "control").map(Control::from_value),
        })
    }

    /// The value as a double, when it is a number (or numeric text).
    pub fn as_f64(&self) -> Option<f64> {
        self.value.as_f64()
    }
}
