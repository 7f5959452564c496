//! One `Value` model for any pvData value. Structures carry their description, so a value is
//! self-describing; large arrays share their bytes with the message they came from.

use std::sync::Arc;

use crate::array::{PodArray, ScalarArray};
use crate::types::{ArrayKind, FieldDesc, ScalarType, StructDesc, UnionDesc};

/// Any pvData value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `boolean`
    Bool(bool),
    /// `byte`
    I8(i8),
    /// `short`
    I16(i16),
    /// `int`
    I32(i32),
    /// `long`
    I64(i64),
    /// `ubyte`
    U8(u8),
    /// `ushort`
    U16(u16),
    /// `uint`
    U32(u32),
    /// `ulong`
    U64(u64),
    /// `float`
    F32(f32),
    /// `double`
    F64(f64),
    /// `string` (and bounded string)
    String(String),
    /// An array of scalars.
    Array(ScalarArray),
    /// A structure.
    Struct(StructValue),
    /// An array of structures, each possibly null.
    StructArray(StructArray),
    /// A union with fixed members.
    Union(UnionValue),
    /// An array of unions, each possibly null.
    UnionArray(UnionArray),
    /// A variant union holding a value of any type, or nothing.
    Any(AnyValue),
    /// An array of variant unions, each possibly null.
    AnyArray(Vec<Option<AnyValue>>),
}

/// A structure value: its description and one value per member, in member order.
///
/// The members are shared copy-on-write: cloning a structure is a reference-count increment,
/// and changing a clone copies only the structures on the path to the changed field. Servers
/// post one value to many subscribers and clients hand each merged value to the user, so
/// values are cloned far more often than they are changed.
#[derive(Debug, Clone, PartialEq)]
pub struct StructValue {
    desc: Arc<StructDesc>,
    fields: Arc<Vec<Value>>,
}

/// An array of structures of one type; `None` elements are null on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct StructArray {
    /// Element type.
    pub desc: Arc<StructDesc>,
    /// Elements.
    pub items: Vec<Option<StructValue>>,
}

/// A union value: its description and the selected member, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct UnionValue {
    /// Union type.
    pub desc: Arc<UnionDesc>,
    /// Selected member index and its value; `None` is the empty union.
    pub selected: Option<(usize, Box<Value>)>,
}

/// An array of unions of one type; `None` elements are null on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct UnionArray {
    /// Element type.
    pub desc: Arc<UnionDesc>,
    /// Elements.
    pub items: Vec<Option<UnionValue>>,
}

/// The content of a variant union (`any`): a value of its own type, or nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnyValue(pub Option<Box<Value>>);

impl AnyValue {
    /// A variant union holding `v`.
    pub fn new(v: Value) -> Self {
        AnyValue(Some(Box::new(v)))
    }

    /// The held value.
    pub fn get(&self) -> Option<&Value> {
        self.0.as_deref()
    }
}

/// Why a value could not be set or converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// No field at this path.
    #[error("no field '{0}'")]
    NoField(String),
    /// The value cannot be converted to the field's type.
    #[error("cannot store {value} in a field of type {field_type}")]
    Incompatible {
        /// What was offered.
        value: String,
        /// The field type.
        field_type: String,
    },
}

impl Value {
    /// The default (zero, empty) value of a type.
    pub fn default_for(desc: &FieldDesc) -> Value {
        match desc {
            FieldDesc::Scalar(t) => Value::default_scalar(*t),
            FieldDesc::BoundedString(_) => Value::String(String::new()),
            FieldDesc::ScalarArray(t, _) => Value::Array(ScalarArray::empty(*t)),
            FieldDesc::Struct(s) => Value::Struct(StructValue::new(s.clone())),
            FieldDesc::StructArray(s) => Value::StructArray(StructArray {
                desc: s.clone(),
                items: Vec::new(),
            }),
            FieldDesc::Union(u) => Value::Union(UnionValue {
                desc: u.clone(),
                selected: None,
            }),
            FieldDesc::UnionArray(u) => Value::UnionArray(UnionArray {
                desc: u.clone(),
                items: Vec::new(),
            }),
            FieldDesc::Any => Value::Any(AnyValue(None)),
            FieldDesc::AnyArray => Value::AnyArray(Vec::new()),
        }
    }

    /// The zero value of a scalar type.
    pub fn default_scalar(t: ScalarType) -> Value {
        match t {
            ScalarType::Bool => Value::Bool(false),
            ScalarType::I8 => Value::I8(0),
            ScalarType::I16 => Value::I16(0),
            ScalarType::I32 => Value::I32(0),
            ScalarType::I64 => Value::I64(0),
            ScalarType::U8 => Value::U8(0),
            ScalarType::U16 => Value::U16(0),
            ScalarType::U32 => Value::U32(0),
            ScalarType::U64 => Value::U64(0),
            ScalarType::F32 => Value::F32(0.0),
            ScalarType::F64 => Value::F64(0.0),
            ScalarType::String => Value::String(String::new()),
        }
    }

    /// The type of this value (bounded strings and fixed arrays read as their plain forms).
    pub fn desc(&self) -> FieldDesc {
        match self {
            Value::Struct(s) => FieldDesc::Struct(s.desc.clone()),
            Value::StructArray(a) => FieldDesc::StructArray(a.desc.clone()),
            Value::Union(u) => FieldDesc::Union(u.desc.clone()),
            Value::UnionArray(a) => FieldDesc::UnionArray(a.desc.clone()),
            Value::Any(_) => FieldDesc::Any,
            Value::AnyArray(_) => FieldDesc::AnyArray,
            Value::Array(a) => FieldDesc::ScalarArray(a.element_type(), ArrayKind::Variable),
            scalar => FieldDesc::Scalar(scalar.scalar_type().unwrap_or(ScalarType::String)),
        }
    }

    /// The scalar type of a scalar value.
    pub fn scalar_type(&self) -> Option<ScalarType> {
        Some(match self {
            Value::Bool(_) => ScalarType::Bool,
            Value::I8(_) => ScalarType::I8,
            Value::I16(_) => ScalarType::I16,
            Value::I32(_) => ScalarType::I32,
            Value::I64(_) => ScalarType::I64,
            Value::U8(_) => ScalarType::U8,
            Value::U16(_) => ScalarType::U16,
            Value::U32(_) => ScalarType::U32,
            Value::U64(_) => ScalarType::U64,
            Value::F32(_) => ScalarType::F32,
            Value::F64(_) => ScalarType::F64,
            Value::String(_) => ScalarType::String,
            _ => return None,
        })
    }

    /// True when this value can be encoded as type `desc` without conversion.
    pub fn matches(&self, desc: &FieldDesc) -> bool {
        match (self, desc) {
            (Value::String(_), FieldDesc::BoundedString(_)) => true,
            (v, FieldDesc::Scalar(t)) => v.scalar_type() == Some(*t),
            (Value::Array(a), FieldDesc::ScalarArray(t, _)) => a.element_type() == *t,
            (Value::Struct(s), FieldDesc::Struct(d)) => Arc::ptr_eq(&s.desc, d) || *s.desc == **d,
            (Value::StructArray(a), FieldDesc::StructArray(d)) => {
                Arc::ptr_eq(&a.desc, d) || *a.desc == **d
            }
            (Value::Union(u), FieldDesc::Union(d)) => Arc::ptr_eq(&u.desc, d) || *u.desc == **d,
            (Value::UnionArray(a), FieldDesc::UnionArray(d)) => {
                Arc::ptr_eq(&a.desc, d) || *a.desc == **d
            }
            (Value::Any(_), FieldDesc::Any) | (Value::AnyArray(_), FieldDesc::AnyArray) => true,
            _ => false,
        }
    }

    /// A number as f64 (bools as 0/1, strings parsed).
    pub fn as_f64(&self) -> Option<f64> {
        Some(match self {
            Value::F32(v) => *v as f64,
            Value::F64(v) => *v,
            Value::String(s) => s.trim().parse().ok()?,
            other => other.integer()? as f64,
        })
    }

    /// An integer as i64 (floats truncated; out-of-range unsigned fails).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match self {
            Value::F32(v) => *v as i64,
            Value::F64(v) => *v as i64,
            Value::String(s) => s.trim().parse().ok()?,
            other => i64::try_from(other.integer()?).ok()?,
        })
    }

    /// The text of a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The structure, if this is one.
    pub fn as_struct(&self) -> Option<&StructValue> {
        match self {
            Value::Struct(s) => Some(s),
            _ => None,
        }
    }

    /// The structure, mutably.
    pub fn as_struct_mut(&mut self) -> Option<&mut StructValue> {
        match self {
            Value::Struct(s) => Some(s),
            _ => None,
        }
    }

    /// The scalar array, if this is one.
    pub fn as_array(&self) -> Option<&ScalarArray> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// Convert this value to type `desc`: numbers between widths (range-checked), text parsed
    /// into numbers, numbers printed into strings, arrays element by element.
    pub fn coerce(self, desc: &FieldDesc) -> Result<Value, ValueError> {
        if self.matches(desc) {
            return Ok(self);
        }
        let incompatible = |v: &Value| ValueError::Incompatible {
            value: format!("{v:?}"),
            field_type: desc.type_name(),
        };
        match desc {
            FieldDesc::Scalar(t) => scalar_from(&self, *t).ok_or_else(|| incompatible(&self)),
            FieldDesc::BoundedString(_) => {
                scalar_from(&self, ScalarType::String).ok_or_else(|| incompatible(&self))
            }
            FieldDesc::ScalarArray(t, _) => {
                let items: Vec<Value> = match &self {
                    Value::Array(a) => (0..a.len()).filter_map(|i| array_item(a, i)).collect(),
                    v if v.scalar_type().is_some() => vec![v.clone()],
                    _ => return Err(incompatible(&self)),
                };
                array_from(&items, *t).ok_or_else(|| incompatible(&self))
            }
            FieldDesc::Any => Ok(Value::Any(AnyValue::new(self))),
            _ => Err(incompatible(&self)),
        }
    }
}

/// Element `i` of a scalar array as a scalar value.
pub fn array_item(a: &ScalarArray, i: usize) -> Option<Value> {
    Some(match a {
        ScalarArray::Bool(v) => Value::Bool(*v.get(i)?),
        ScalarArray::I8(v) => Value::I8(v.get(i)?),
        ScalarArray::I16(v) => Value::I16(v.get(i)?),
        ScalarArray::I32(v) => Value::I32(v.get(i)?),
        ScalarArray::I64(v) => Value::I64(v.get(i)?),
        ScalarArray::U8(v) => Value::U8(v.get(i)?),
        ScalarArray::U16(v) => Value::U16(v.get(i)?),
        ScalarArray::U32(v) => Value::U32(v.get(i)?),
        ScalarArray::U64(v) => Value::U64(v.get(i)?),
        ScalarArray::F32(v) => Value::F32(v.get(i)?),
        ScalarArray::F64(v) => Value::F64(v.get(i)?),
        ScalarArray::String(v) => Value::String(v.get(i)?.clone()),
    })
}

fn array_from(items: &[Value], t: ScalarType) -> Option<Value> {
    fn collect<T>(items: &[Value], f: impl Fn(Value) -> Option<T>) -> Option<Vec<T>> {
        items.iter().map(|v| f(v.clone())).collect()
    }
    macro_rules! pod {
        ($variant:ident, $t:expr) => {{
            let v = collect(items, |v| match scalar_from(&v, $t)? {
                Value::$variant(x) => Some(x),
                _ => None,
            })?;
            ScalarArray::$variant(PodArray::from_vec(v))
        }};
    }
    let arr = match t {
        ScalarType::Bool => ScalarArray::Bool(collect(items, |v| match scalar_from(&v, t)? {
            Value::Bool(b) => Some(b),
            _ => None,
        })?),
        ScalarType::String => ScalarArray::String(collect(items, |v| match scalar_from(&v, t)? {
            Value::String(s) => Some(s),
            _ => None,
        })?),
        ScalarType::I8 => pod!(I8, t),
        ScalarType::I16 => pod!(I16, t),
        ScalarType::I32 => pod!(I32, t),
        ScalarType::I64 => pod!(I64, t),
        ScalarType::U8 => pod!(U8, t),
        ScalarType::U16 => pod!(U16, t),
        ScalarType::U32 => pod!(U32, t),
        ScalarType::U64 => pod!(U64, t),
        ScalarType::F32 => pod!(F32, t),
        ScalarType::F64 => pod!(F64, t),
    };
    Some(Value::Array(arr))
}

/// Convert a scalar to scalar type `t`, refusing values that do not fit.
fn scalar_from(v: &Value, t: ScalarType) -> Option<Value> {
    if t == ScalarType::String {
        return Some(Value::String(match v {
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::F32(f) => f.to_string(),
            Value::F64(f) => f.to_string(),
            other => other.as_i128()?.to_string(),
        }));
    }
    if t == ScalarType::Bool {
        return Some(Value::Bool(match v {
            Value::Bool(b) => *b,
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return None,
            },
            other => other.as_f64()? != 0.0,
        }));
    }
    if matches!(t, ScalarType::F32 | ScalarType::F64) {
        let f = v.as_f64()?;
        return Some(if t == ScalarType::F32 {
            Value::F32(f as f32)
        } else {
            Value::F64(f)
        });
    }
    let i = v.as_i128()?;
    Some(match t {
        ScalarType::I8 => Value::I8(i.try_into().ok()?),
        ScalarType::I16 => Value::I16(i.try_into().ok()?),
        ScalarType::I32 => Value::I32(i.try_into().ok()?),
        ScalarType::I64 => Value::I64(i.try_into().ok()?),
        ScalarType::U8 => Value::U8(i.try_into().ok()?),
        ScalarType::U16 => Value::U16(i.try_into().ok()?),
        ScalarType::U32 => Value::U32(i.try_into().ok()?),
        _ => Value::U64(i.try_into().ok()?),
    })
}

impl Value {
    /// Bytes held in the arrays of this value, unions, `any` and structure arrays included
    /// (strings by their UTF-8 length): what holding it costs beyond its fixed fields, the
    /// measure a queue of large frames is bounded by.
    pub fn array_bytes(&self) -> usize {
        let any = |a: &AnyValue| a.0.as_deref().map_or(0, Value::array_bytes);
        let union = |u: &UnionValue| u.selected.as_ref().map_or(0, |(_, v)| v.array_bytes());
        match self {
            Value::String(s) => s.len(),
            Value::Array(a) => a.byte_len(),
            Value::Struct(s) => s.array_bytes(),
            Value::StructArray(a) => a.items.iter().flatten().map(StructValue::array_bytes).sum(),
            Value::Union(u) => union(u),
            Value::UnionArray(a) => a.items.iter().flatten().map(union).sum(),
            Value::Any(a) => any(a),
            Value::AnyArray(items) => items.iter().flatten().map(any).sum(),
            _ => 0,
        }
    }

    /// Whether a scalar array anywhere in this value (in members, unions, `any` and structure
    /// arrays) holds an element: false for an image before its first frame.
    pub fn holds_array_data(&self) -> bool {
        let any = |a: &AnyValue| a.0.as_deref().is_some_and(Value::holds_array_data);
        let union = |u: &UnionValue| {
            u.selected
                .as_ref()
                .is_some_and(|(_, v)| v.holds_array_data())
        };
        match self {
            Value::Array(a) => !a.is_empty(),
            Value::Struct(s) => s.holds_array_data(),
            Value::StructArray(a) => a.items.iter().flatten().any(StructValue::holds_array_data),
            Value::Union(u) => union(u),
            Value::UnionArray(a) => a.items.iter().flatten().any(union),
            Value::Any(a) => any(a),
            Value::AnyArray(items) => items.iter().flatten().any(any),
            _ => false,
        }
    }

    /// A bool (as 0/1) or an integer of any width as i128, exactly; `None` for anything else.
    fn integer(&self) -> Option<i128> {
        Some(match self {
            Value::Bool(v) => *v as i128,
            Value::I8(v) => *v as i128,
            Value::I16(v) => *v as i128,
            Value::I32(v) => *v as i128,
            Value::I64(v) => *v as i128,
            Value::U8(v) => *v as i128,
            Value::U16(v) => *v as i128,
            Value::U32(v) => *v as i128,
            Value::U64(v) => *v as i128,
            _ => return None,
        })
    }

    /// An integer as i128 (floats only when whole; strings parsed), so every width converts
    /// without loss before a range check.
    fn as_i128(&self) -> Option<i128> {
        Some(match self {
            Value::F32(f) if f.fract() == 0.0 && f.is_finite() => *f as i128,
            Value::F64(f) if f.fract() == 0.0 && f.is_finite() => *f as i128,
            Value::String(s) => {
                let s = s.trim();
                match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                    Some(hex) => i128::from_str_radix(hex, 16).ok()?,
                    None => s.parse().ok()?,
                }
            }
            other => other.integer()?,
        })
    }
}

macro_rules! from_scalar {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Self { Value::$v(v) }
        }
    )*};
}
from_scalar!(bool => Bool, i8 => I8, i16 => I16, i32 => I32, i64 => I64, u8 => U8, u16 => U16,
    u32 => U32, u64 => U64, f32 => F32, f64 => F64, String => String, ScalarArray => Array,
    StructValue => Struct);

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::String(v.to_owned())
    }
}

impl StructValue {
    /// A structure of type `desc` with every field at its default.
    pub fn new(desc: Arc<StructDesc>) -> Self {
        let fields = desc
            .members()
            .iter()
            .map(|m| Value::default_for(&m.desc))
            .collect();
        StructValue {
            desc,
            fields: Arc::new(fields),
        }
    }

    /// Build from a description and field values; `None` if they do not match.
    pub fn from_parts(desc: Arc<StructDesc>, fields: Vec<Value>) -> Option<Self> {
        let ok = fields.len() == desc.members().len()
            && fields
                .iter()
                .zip(desc.members())
                .all(|(v, m)| v.matches(&m.desc));
        ok.then(|| StructValue {
            desc,
            fields: Arc::new(fields),
        })
    }

    /// Build from parts already known to match (the decoder's output).
    pub(crate) fn from_decoded(desc: Arc<StructDesc>, fields: Vec<Value>) -> Self {
        debug_assert_eq!(fields.len(), desc.members().len());
        StructValue {
            desc,
            fields: Arc::new(fields),
        }
    }

    /// The structure's type.
    pub fn desc(&self) -> &Arc<StructDesc> {
        &self.desc
    }

    /// The type id.
    pub fn id(&self) -> &str {
        self.desc.id()
    }

    /// Bytes held in the arrays of this structure (see [`Value::array_bytes`]).
    pub fn array_bytes(&self) -> usize {
        self.fields.iter().map(Value::array_bytes).sum()
    }

    /// Whether a scalar array anywhere in this structure holds an element (see
    /// [`Value::holds_array_data`]).
    pub fn holds_array_data(&self) -> bool {
        self.fields.iter().any(Value::holds_array_data)
    }

    /// Field values in member order.
    pub fn fields(&self) -> &[Value] {
        &self.fields
    }

    /// Field values, mutably (copied first if shared). Callers must keep each value's type
    /// (see [`StructValue::set`]).
    pub(crate) fn fields_mut(&mut self) -> &mut [Value] {
        Arc::make_mut(&mut self.fields).as_mut_slice()
    }

    /// Names and values in member order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.desc
            .members()
            .iter()
            .map(|m| m.name.as_str())
            .zip(self.fields.iter())
    }

    /// The value at a dotted path (`alarm.severity`).
    pub fn get(&self, path: &str) -> Option<&Value> {
        let (head, rest) = split_path(path);
        let v = &self.fields[self.desc.index_of(head)?];
        match rest {
            None => Some(v),
            Some(rest) => v.as_struct()?.get(rest),
        }
    }

    /// The value at a dotted path, mutably. Use [`StructValue::set`] to change a leaf safely.
    pub fn get_mut(&mut self, path: &str) -> Option<&mut Value> {
        let (head, rest) = split_path(path);
        let i = self.desc.index_of(head)?;
        let v = &mut self.fields_mut()[i];
        match rest {
            None => Some(v),
            Some(rest) => v.as_struct_mut()?.get_mut(rest),
        }
    }

    /// The type of the field at a dotted path.
    pub fn field_desc(&self, path: &str) -> Option<FieldDesc> {
        let (head, rest) = split_path(path);
        let m = self.desc.member(head)?;
        match rest {
            None => Some(m.desc.clone()),
            Some(rest) => self.get(head)?.as_struct()?.field_desc(rest),
        }
    }

    /// Set the field at a dotted path, converting the value to the field's type.
    pub fn set(&mut self, path: &str, value: impl Into<Value>) -> Result<(), ValueError> {
        let desc = self
            .field_desc(path)
            .ok_or_else(|| ValueError::NoField(path.into()))?;
        let v = value.into().coerce(&desc)?;
        *self
            .get_mut(path)
            .ok_or_else(|| ValueError::NoField(path.into()))? = v;
        Ok(())
    }

    /// Copy into `self` the fields of `other` whose bits are set in `changed`. A value of
    /// another type replaces `self` whole (when anything changed), since its bits mean other
    /// fields.
    pub fn merge_from(&mut self, other: &StructValue, changed: &crate::bitset::BitSet) {
        if !Arc::ptr_eq(&self.desc, &other.desc) && self.desc != other.desc {
            if !changed.is_empty() {
                self.clone_from(other);
            }
            return;
        }
        self.merge_at(other, changed, 0);
    }

    /// Merge a value of the same type (checked by the caller).
    fn merge_at(&mut self, other: &StructValue, changed: &crate::bitset::BitSet, base: usize) {
        if changed.get(base) {
            self.clone_from(other);
            return;
        }
        // Untouched structures stay shared with their other holders.
        if !changed.any_in(base, base + self.desc.bit_count()) {
            return;
        }
        // A second handle on the description (a refcount, not a copy) lets the fields be
        // borrowed mutably while the offsets are read.
        let desc = Arc::clone(&self.desc);
        let offsets = desc.members_with_offsets().map(|(_, o)| o);
        let mine = Arc::make_mut(&mut self.fields);
        for ((mine, theirs), off) in mine.iter_mut().zip(other.fields.iter()).zip(offsets) {
            let off = base + off;
            match (mine, theirs) {
                (Value::Struct(mine), Value::Struct(theirs)) => mine.merge_at(theirs, changed, off),
                (mine, theirs) => {
                    if changed.get(off) {
                        mine.clone_from(theirs);
                    }
                }
            }
        }
    }
}

fn split_path(path: &str) -> (&str, Option<&str>) {
    match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nt() -> Arc<StructDesc> {
        Arc::new(
            StructDesc::builder("epics:nt/NTScalar:1.0")
                .scalar("value", ScalarType::I16)
                .structure(
                    "alarm",
                    StructDesc::builder("alarm_t")
                        .scalar("severity", ScalarType::I32)
                        .scalar("message", ScalarType::String)
                        .build(),
                )
                .build(),
        )
    }

    #[test]
    fn set_converts_and_range_checks() {
        let mut v = StructValue::new(nt());
        v.set("value", 12.0).unwrap();
        assert_eq!(v.get("value"), Some(&Value::I16(12)));
        v.set("value", "0x10").unwrap();
        assert_eq!(v.get("value"), Some(&Value::I16(16)));
        assert!(v.set("value", 70000i64).is_err());
        assert!(v.set("value", 1.5).is_err());
        v.set("alarm.message", 3i32).unwrap();
        assert_eq!(v.get("alarm.message"), Some(&Value::String("3".into())));
        assert_eq!(v.set("nope", 1), Err(ValueError::NoField("nope".into())));
    }

    #[test]
    fn array_data_is_found_in_unions_and_strings_are_not_array_data() {
        use crate::nt::{NdArrayFrame, NtNdArray};
        let mut image = NtNdArray::new().create();
        image.set("codec.name", "lz4").unwrap();
        assert!(
            !image.holds_array_data(),
            "an empty image with a codec name"
        );
        let pixels = ScalarArray::U8(crate::PodArray::from_vec(vec![1u8; 4]));
        let frame = NtNdArray::new()
            .build_value(NdArrayFrame::new(pixels, &[2, 2], 1))
            .unwrap();
        assert!(frame.holds_array_data(), "pixels in the value union");
        assert!(!StructValue::new(nt()).holds_array_data());
    }

    #[test]
    fn merging_a_value_of_another_type_replaces_it_instead_of_panicking() {
        let other = Arc::new(
            StructDesc::builder("other")
                .scalar("x", ScalarType::String)
                .build(),
        );
        let mut a = StructValue::new(nt());
        let b = StructValue::new(other);
        a.merge_from(&b, &crate::bitset::BitSet::with(2));
        assert_eq!(a, b);
    }

    #[test]
    fn clones_share_until_changed_and_changes_stay_apart() {
        let mut a = StructValue::new(nt());
        a.set("alarm.message", "first").unwrap();
        let mut b = a.clone();
        assert!(Arc::ptr_eq(&a.fields, &b.fields));
        b.set("alarm.severity", 3).unwrap();
        b.set("value", 7).unwrap();
        assert_eq!(a.get("alarm.severity"), Some(&Value::I32(0)));
        assert_eq!(a.get("value"), Some(&Value::I16(0)));
        assert_eq!(b.get("alarm.severity"), Some(&Value::I32(3)));
        assert_eq!(b.get("alarm.message"), Some(&Value::String("first".into())));
        // Merging only `value` copies the top level and leaves `alarm` shared.
        let mut c = b.clone();
        let mut d = b.clone();
        d.set("value", 9).unwrap();
        c.merge_from(&d, &crate::bitset::BitSet::with(1));
        assert_eq!(c.get("value"), Some(&Value::I16(9)));
        let alarm = |v: &StructValue| match v.get("alarm") {
            Some(Value::Struct(s)) => s.fields.clone(),
            _ => unreachable!("alarm is a structure"),
        };
        assert!(Arc::ptr_eq(&alarm(&b), &alarm(&c)));
    }

    #[test]
    fn merge_takes_only_changed_fields() {
        let mut a = StructValue::new(nt());
        let mut b = StructValue::new(nt());
        b.set("value", 5).unwrap();
        b.set("alarm.severity", 2).unwrap();
        let changed = crate::bitset::BitSet::with(nt().bit_of("alarm.severity").unwrap());
        a.merge_from(&b, &changed);
        assert_eq!(a.get("value"), Some(&Value::I16(0)));
        assert_eq!(a.get("alarm.severity"), Some(&Value::I32(2)));
    }
}
