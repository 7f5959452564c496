//! NTNDArray: an n-dimensional detector frame with codec, dimensions and attributes.
//!
//! The builder lays members out as pvxs does and hands the pixel array to the encoder without
//! copying it. The reader goes by member name only, because pvxs and normativeTypesCPP order the
//! members differently, some servers send `value` as `any` instead of the typed-array union, and
//! some send `dimension` elements with only `size`.

use std::sync::{Arc, OnceLock};

use super::{
    i32_member, int_member, make, make_by_name, member, string_member, strings_member,
    struct_member, struct_or_default, unwrap_value, value_member, Alarm, Display, NtError,
    TimeStamp,
};
use crate::array::ScalarArray;
use crate::types::{ArrayKind, FieldDesc, Member, ScalarType, StructDesc, UnionDesc};
use crate::value::{AnyValue, StructArray, StructValue, UnionValue, Value};

/// Type id of NTNDArray.
pub const NT_NDARRAY_ID: &str = "epics:nt/NTNDArray:1.0";
/// Type id of NTAttribute (the elements of `attribute`).
pub const NT_ATTRIBUTE_ID: &str = "epics:nt/NTAttribute:1.0";

/// Union members of `value`, in selector order.
const VALUE_MEMBERS: [(ScalarType, &str); 11] = [
    (ScalarType::Bool, "booleanValue"),
    (ScalarType::I8, "byteValue"),
    (ScalarType::I16, "shortValue"),
    (ScalarType::I32, "intValue"),
    (ScalarType::I64, "longValue"),
    (ScalarType::U8, "ubyteValue"),
    (ScalarType::U16, "ushortValue"),
    (ScalarType::U32, "uintValue"),
    (ScalarType::U64, "ulongValue"),
    (ScalarType::F32, "floatValue"),
    (ScalarType::F64, "doubleValue"),
];

/// The name of the `value` union member that holds arrays of `t` (`None` for strings).
pub fn union_member_name(t: ScalarType) -> Option<&'static str> {
    VALUE_MEMBERS.iter().find(|(s, _)| *s == t).map(|(_, n)| *n)
}

/// One dimension of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dimension {
    /// Number of elements along this dimension.
    pub size: i32,
    /// Offset of this region in the full frame.
    pub offset: i32,
    /// Size of the full frame along this dimension.
    pub full_size: i32,
    /// Binning applied.
    pub binning: i32,
    /// Whether the data is reversed along this dimension.
    pub reverse: bool,
}

impl Dimension {
    /// A dimension of `size` elements, unbinned, with no offset.
    pub fn new(size: i32) -> Self {
        Dimension {
            size,
            offset: 0,
            full_size: size,
            binning: 1,
            reverse: false,
        }
    }

    fn desc() -> Arc<StructDesc> {
        static DESC: OnceLock<Arc<StructDesc>> = OnceLock::new();
        DESC.get_or_init(|| {
            Arc::new(
                StructDesc::builder("dimension_t")
                    .scalar("size", ScalarType::I32)
                    .scalar("offset", ScalarType::I32)
                    .scalar("fullSize", ScalarType::I32)
                    .scalar("binning", ScalarType::I32)
                    .scalar("reverse", ScalarType::Bool)
                    .build(),
            )
        })
        .clone()
    }

    fn to_value(self, desc: &Arc<StructDesc>) -> StructValue {
        make(
            desc,
            vec![
                Value::I32(self.size),
                Value::I32(self.offset),
                Value::I32(self.full_size),
                Value::I32(self.binning),
                Value::Bool(self.reverse),
            ],
        )
    }

    /// Read by member name: only `size` is needed; `fullSize` defaults to `size`, `binning` to 1.
    fn from_value(v: &StructValue) -> Dimension {
        let size = i32_member(v, "size").unwrap_or_default();
        Dimension {
            size,
            offset: i32_member(v, "offset").unwrap_or_default(),
            full_size: i32_member(v, "fullSize").unwrap_or(size),
            binning: i32_member(v, "binning").unwrap_or(1),
            reverse: member(v, "reverse")
                .and_then(Value::as_i64)
                .is_some_and(|r| r != 0),
        }
    }
}

/// The compression codec of a frame; an empty name means uncompressed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Codec {
    /// Codec name (`""`, `jpeg`, `blosc`, `lz4`, `bslz4`, ...).
    pub name: String,
    /// Codec parameters (often the uncompressed element type as an int), if any.
    pub parameters: Option<Value>,
}

/// One NDArray attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct NdAttribute {
    /// Attribute name.
    pub name: String,
    /// Attribute value (`None` when the `any` was empty).
    pub value: Option<Value>,
    /// Description.
    pub descriptor: String,
    /// Where the value came from: 0 driver, 1 param, 2 EPICS PV, 3 function.
    pub source_type: i32,
    /// Source name.
    pub source: String,
    /// Tags.
    pub tags: Vec<String>,
}

impl NdAttribute {
    /// An attribute with a name and value, no source.
    pub fn new(name: impl Into<String>, value: impl Into<Value>) -> Self {
        NdAttribute {
            name: name.into(),
            value: Some(value.into()),
            descriptor: String::new(),
            source_type: 0,
            source: String::new(),
            tags: Vec::new(),
        }
    }
}

/// A decoded (or to-be-encoded) NTNDArray frame.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArrayFrame {
    /// Pixel data: shares its bytes with the message it was decoded from.
    pub data: ScalarArray,
    /// Dimensions, fastest-varying first (x, y, ...).
    pub dims: Vec<Dimension>,
    /// Frame number from the source.
    pub unique_id: i32,
    /// When the data was taken.
    pub data_time_stamp: TimeStamp,
    /// When the structure was last updated.
    pub time_stamp: TimeStamp,
    /// Alarm.
    pub alarm: Alarm,
    /// Compression codec.
    pub codec: Codec,
    /// Size of the (possibly compressed) data in bytes.
    pub compressed_size: i64,
    /// Size of the uncompressed data in bytes.
    pub uncompressed_size: i64,
    /// Attributes in the order sent.
    pub attributes: Vec<NdAttribute>,
    /// Descriptor text, when present.
    pub descriptor: Option<String>,
    /// Display metadata, when present.
    pub display: Option<Display>,
}

impl NdArrayFrame {
    /// An uncompressed frame of `data` with dimension sizes `sizes` (x first), `unique_id` and
    /// both time stamps set to now.
    pub fn new(data: ScalarArray, sizes: &[i32], unique_id: i32) -> Self {
        let bytes = data.byte_len() as i64;
        let now = TimeStamp::now();
        NdArrayFrame {
            data,
            dims: sizes.iter().map(|&s| Dimension::new(s)).collect(),
            unique_id,
            data_time_stamp: now,
            time_stamp: now,
            alarm: Alarm::none(),
            codec: Codec::default(),
            compressed_size: bytes,
            uncompressed_size: bytes,
            attributes: Vec::new(),
            descriptor: None,
            display: None,
        }
    }

    /// The dimension sizes, x first.
    pub fn sizes(&self) -> Vec<i32> {
        self.dims.iter().map(|d| d.size).collect()
    }

    /// The value of the attribute called `name`.
    pub fn attribute(&self, name: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.value.as_ref())
    }

    /// Attributes as (name, value) pairs, skipping empty values.
    pub fn attribute_pairs(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.attributes
            .iter()
            .filter_map(|a| Some((a.name.as_str(), a.value.as_ref()?)))
    }

    /// Read an NTNDArray by member name. Needs only `value` (the typed-array union, an `any`
    /// holding an array, or a bare array); every other member is optional.
    pub fn from_value(v: &StructValue) -> Result<NdArrayFrame, NtError> {
        let data = value_member(
            v,
            "a scalar array (in a union or any)",
            |raw| match unwrap_value(raw)? {
                Value::Array(a) => Some(a.clone()),
                _ => None,
            },
        )?;
        let dims = match v.get("dimension") {
            Some(Value::StructArray(a)) => a
                .items
                .iter()
                .flatten()
                .map(Dimension::from_value)
                .collect(),
            _ => Vec::new(),
        };
        let codec = struct_member(v, "codec")
            .map(|c| Codec {
                name: string_member(c, "name").unwrap_or_default(),
                parameters: member(c, "parameters").cloned(),
            })
            .unwrap_or_default();
        let bytes = data.byte_len() as i64;
        let attributes = match v.get("attribute") {
            Some(Value::StructArray(a)) => a.items.iter().flatten().map(read_attribute).collect(),
            _ => Vec::new(),
        };
        Ok(NdArrayFrame {
            dims,
            unique_id: i32_member(v, "uniqueId").unwrap_or_default(),
            data_time_stamp: struct_or_default(v, "dataTimeStamp", TimeStamp::from_value),
            time_stamp: struct_or_default(v, "timeStamp", TimeStamp::from_value),
            alarm: struct_or_default(v, "alarm", Alarm::from_value),
            codec,
            compressed_size: int_member(v, "compressedSize").unwrap_or(bytes),
            uncompressed_size: int_member(v, "uncompressedSize").unwrap_or(bytes),
            attributes,
            descriptor: string_member(v, "descriptor"),
            display: struct_member(v, "display").map(Display::from_value),
            data,
        })
    }
}

fn read_attribute(a: &StructValue) -> NdAttribute {
    NdAttribute {
        name: string_member(a, "name").unwrap_or_default(),
        value: member(a, "value").cloned(),
        descriptor: string_member(a, "descriptor").unwrap_or_default(),
        source_type: i32_member(a, "sourceType").unwrap_or_default(),
        source: string_member(a, "source").unwrap_or_default(),
        tags: strings_member(a, "tags").unwrap_or_default(),
    }
}

/// Builds NTNDArray values for our server and simulator.
#[derive(Debug, Clone)]
pub struct NtNdArray {
    desc: Arc<StructDesc>,
}

impl Default for NtNdArray {
    fn default() -> Self {
        NtNdArray::new()
    }
}

fn value_union() -> Arc<UnionDesc> {
    static DESC: OnceLock<Arc<UnionDesc>> = OnceLock::new();
    DESC.get_or_init(|| {
        Arc::new(UnionDesc::new(
            "",
            VALUE_MEMBERS
                .iter()
                .map(|(t, n)| Member {
                    name: (*n).into(),
                    desc: FieldDesc::ScalarArray(*t, ArrayKind::Variable),
                })
                .collect(),
        ))
    })
    .clone()
}

fn base_builder() -> crate::types::StructBuilder {
    let codec = StructDesc::builder("codec_t")
        .scalar("name", ScalarType::String)
        .field("parameters", FieldDesc::Any)
        .build();
    let attribute = StructDesc::builder(NT_ATTRIBUTE_ID)
        .scalar("name", ScalarType::String)
        .field("value", FieldDesc::Any)
        .array("tags", ScalarType::String)
        .scalar("descriptor", ScalarType::String)
        .field("alarm", FieldDesc::Struct(Alarm::desc()))
        .field("timeStamp", FieldDesc::Struct(TimeStamp::desc()))
        .scalar("sourceType", ScalarType::I32)
        .scalar("source", ScalarType::String)
        .build();
    StructDesc::builder(NT_NDARRAY_ID)
        .field("value", FieldDesc::Union(value_union()))
        .structure("codec", codec)
        .scalar("compressedSize", ScalarType::I64)
        .scalar("uncompressedSize", ScalarType::I64)
        .scalar("uniqueId", ScalarType::I32)
        .field("dataTimeStamp", FieldDesc::Struct(TimeStamp::desc()))
        .field("alarm", FieldDesc::Struct(Alarm::desc()))
        .field("timeStamp", FieldDesc::Struct(TimeStamp::desc()))
        .field("dimension", FieldDesc::StructArray(Dimension::desc()))
        .field("attribute", FieldDesc::StructArray(Arc::new(attribute)))
}

impl NtNdArray {
    /// The NTNDArray type in pvxs's member order.
    pub fn new() -> Self {
        static DESC: OnceLock<Arc<StructDesc>> = OnceLock::new();
        NtNdArray {
            desc: DESC
                .get_or_init(|| Arc::new(base_builder().build()))
                .clone(),
        }
    }

    /// The type with `descriptor` and `display` members added after pvxs's members.
    pub fn with_metadata() -> Self {
        NtNdArray {
            desc: Arc::new(
                base_builder()
                    .scalar("descriptor", ScalarType::String)
                    .field(
                        "display",
                        FieldDesc::Struct(Display::desc(ScalarType::F64, false)),
                    )
                    .build(),
            ),
        }
    }

    /// The structure type.
    pub fn desc(&self) -> Arc<StructDesc> {
        self.desc.clone()
    }

    /// A value with every member at its default (an empty `value` union).
    pub fn create(&self) -> StructValue {
        StructValue::new(self.desc.clone())
    }

    /// A value holding `frame`. The pixel array is moved in, not copied; string arrays are
    /// refused (the union has no member for them).
    pub fn build_value(&self, frame: NdArrayFrame) -> Result<StructValue, NtError> {
        let t = frame.data.element_type();
        let union = value_union();
        let selector = union
            .index_of(union_member_name(t).unwrap_or_default())
            .ok_or_else(|| NtError::WrongType {
                field: "value".into(),
                expected: "a numeric or boolean array",
                found: format!("{}[]", t.name()),
            })?;
        let NdArrayFrame {
            data,
            dims,
            unique_id,
            data_time_stamp,
            time_stamp,
            alarm,
            codec,
            compressed_size,
            uncompressed_size,
            attributes,
            descriptor,
            display,
        } = frame;
        let mut value = Some(Value::Union(UnionValue {
            desc: union,
            selected: Some((selector, Box::new(Value::Array(data)))),
        }));
        let mut fields = Vec::with_capacity(self.desc.members().len());
        for m in self.desc.members() {
            fields.push(match (m.name.as_str(), &m.desc) {
                ("value", d) => value.take().unwrap_or_else(|| Value::default_for(d)),
                ("codec", FieldDesc::Struct(d)) => Value::Struct(make(
                    d,
                    vec![
                        Value::String(codec.name.clone()),
                        Value::Any(to_any(codec.parameters.as_ref())),
                    ],
                )),
                ("compressedSize", _) => Value::I64(compressed_size),
                ("uncompressedSize", _) => Value::I64(uncompressed_size),
                ("uniqueId", _) => Value::I32(unique_id),
                ("dataTimeStamp", _) => Value::Struct(data_time_stamp.to_value()),
                ("alarm", _) => Value::Struct(alarm.to_value()),
                ("timeStamp", _) => Value::Struct(time_stamp.to_value()),
                ("dimension", FieldDesc::StructArray(d)) => Value::StructArray(StructArray {
                    desc: d.clone(),
                    items: dims.iter().map(|x| Some(x.to_value(d))).collect(),
                }),
                ("attribute", FieldDesc::StructArray(d)) => Value::StructArray(StructArray {
                    desc: d.clone(),
                    items: attributes
                        .iter()
                        .map(|a| Some(attribute_value(d, a)))
                        .collect(),
                }),
                ("descriptor", _) => Value::String(descriptor.clone().unwrap_or_default()),
                ("display", FieldDesc::Struct(d)) => {
                    Value::Struct(display.clone().unwrap_or_default().to_value(d))
                }
                (_, d) => Value::default_for(d),
            });
        }
        Ok(make(&self.desc, fields))
    }
}

fn attribute_value(desc: &Arc<StructDesc>, a: &NdAttribute) -> StructValue {
    let value = to_any(a.value.as_ref());
    make_by_name(desc, |name, _| {
        Some(match name {
            "name" => Value::String(a.name.clone()),
            "value" => Value::Any(value.clone()),
            "tags" => Value::Array(ScalarArray::String(a.tags.clone())),
            "descriptor" => Value::String(a.descriptor.clone()),
            "sourceType" => Value::I32(a.source_type),
            "source" => Value::String(a.source.clone()),
            _ => return None,
        })
    })
}

/// Wrap a value for an `any` member (an `any` given as the value is used as it is).
fn to_any(v: Option<&Value>) -> AnyValue {
    match v {
        Some(Value::Any(any)) => any.clone(),
        Some(v) => AnyValue::new(v.clone()),
        None => AnyValue(None),
    }
}
