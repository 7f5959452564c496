//! The frame model: one update of a detector stream, read once into the facts that accounting
//! and processing need, with the received value (and its zero-copy pixel array) kept as is.
//!
//! An NTNDArray frame is numbered by `uniqueId`. So that plain PV update rates can be measured
//! with the same tools, an NTScalar whose `value` is a number counts as a frame numbered by
//! that value.

use pva_codec::nt::{NdArrayFrame, NdAttribute, TimeStamp};
use pva_codec::{ScalarArray, ScalarType, StructValue, Value};

/// Why a value is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Neither an NTNDArray-like structure (array `value` and `uniqueId`) nor a numeric
    /// NTScalar.
    #[error("not a frame: {0}")]
    NotAFrame(String),
}

/// What accounting needs to know about one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameMeta {
    /// The source's frame number (`uniqueId`, or an NTScalar's value); 0 means "no frame yet"
    /// (the empty value a server holds before its first frame).
    pub unique_id: i64,
    /// When the frame was published (`timeStamp`).
    pub time_stamp: TimeStamp,
    /// When the data was taken (`dataTimeStamp`; the time stamp when absent).
    pub data_time_stamp: TimeStamp,
    /// Dimension sizes, x first (empty for scalars).
    pub sizes: Vec<i32>,
    /// Element type of the data.
    pub element: Option<ScalarType>,
    /// Bytes of data this frame carries (the array as received, or the scalar's width).
    pub payload_bytes: u64,
    /// `compressedSize` as sent (the payload when absent).
    pub compressed_size: i64,
    /// `uncompressedSize` as sent (the payload when absent).
    pub uncompressed_size: i64,
}

/// One received frame: its facts and the value it came in.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The facts, read once.
    pub meta: FrameMeta,
    /// The value as received; the pixel array shares the received bytes.
    pub value: StructValue,
}

/// Look through `any` and union wrappers to the value inside.
fn inner(v: &Value) -> Option<&Value> {
    match v {
        Value::Any(a) => inner(a.get()?),
        Value::Union(u) => inner(&u.selected.as_ref()?.1),
        other => Some(other),
    }
}

fn time_stamp(v: &StructValue, name: &str) -> Option<TimeStamp> {
    v.get(name)
        .and_then(Value::as_struct)
        .map(TimeStamp::from_value)
}

fn int(v: &StructValue, name: &str) -> Option<i64> {
    v.get(name).and_then(inner).and_then(Value::as_i64)
}

impl FrameMeta {
    /// Read the facts of `value` by member name.
    pub fn from_value(value: &StructValue) -> Result<FrameMeta, FrameError> {
        let data = value
            .get("value")
            .ok_or_else(|| FrameError::NotAFrame(format!("{} has no 'value'", value.id())))?;
        let ts = time_stamp(value, "timeStamp").unwrap_or_default();
        match (inner(data), int(value, "uniqueId")) {
            (Some(Value::Array(a)), Some(id)) => Ok(Self::array(value, a, id, ts)),
            // The empty union of a server that has no frame yet.
            (None, Some(0)) => Ok(FrameMeta {
                unique_id: 0,
                time_stamp: ts,
                data_time_stamp: ts,
                sizes: Vec::new(),
                element: None,
                payload_bytes: 0,
                compressed_size: 0,
                uncompressed_size: 0,
            }),
            (Some(scalar), None) if scalar.scalar_type().is_some_and(is_numeric) => {
                let t = scalar.scalar_type();
                let width = t.map_or(8, ScalarType::wire_size) as u64;
                Ok(FrameMeta {
                    unique_id: scalar
                        .as_i64()
                        .or_else(|| scalar.as_f64().map(|f| f as i64))
                        .unwrap_or_default(),
                    time_stamp: ts,
                    data_time_stamp: ts,
                    sizes: Vec::new(),
                    element: t,
                    payload_bytes: width,
                    compressed_size: width as i64,
                    uncompressed_size: width as i64,
                })
            }
            _ => Err(FrameError::NotAFrame(format!(
                "{} has neither an array 'value' with 'uniqueId' nor a numeric scalar 'value'",
                if value.id().is_empty() {
                    "the structure"
                } else {
                    value.id()
                }
            ))),
        }
    }

    fn array(value: &StructValue, a: &ScalarArray, id: i64, ts: TimeStamp) -> FrameMeta {
        let bytes = a.byte_len() as i64;
        let sizes = match value.get("dimension") {
            Some(Value::StructArray(dims)) => dims
                .items
                .iter()
                .flatten()
                .map(|d| int(d, "size").unwrap_or_default() as i32)
                .collect(),
            _ => Vec::new(),
        };
        FrameMeta {
            unique_id: id,
            time_stamp: ts,
            data_time_stamp: time_stamp(value, "dataTimeStamp").unwrap_or(ts),
            sizes,
            element: Some(a.element_type()),
            payload_bytes: bytes as u64,
            compressed_size: int(value, "compressedSize").unwrap_or(bytes),
            uncompressed_size: int(value, "uncompressedSize").unwrap_or(bytes),
        }
    }
}

fn is_numeric(t: ScalarType) -> bool {
    !matches!(t, ScalarType::String | ScalarType::Bool)
}

impl Frame {
    /// The frame with its data decompressed when it came compressed (an areaDetector codec
    /// named in `codec.name`), else the frame as it is. The facts are read again from the
    /// decompressed value, so sizes and element type are those of the image.
    pub fn decompressed(self) -> Result<Frame, crate::codec::CodecError> {
        match crate::codec::decompress_value(&self.value)? {
            None => Ok(self),
            Some(value) => Ok(Frame {
                meta: FrameMeta::from_value(&value)
                    .map_err(|e| crate::codec::CodecError::NotAnArray(e.to_string()))?,
                value,
            }),
        }
    }

    /// Read a received value as a frame.
    pub fn from_value(value: StructValue) -> Result<Frame, FrameError> {
        Ok(Frame {
            meta: FrameMeta::from_value(&value)?,
            value,
        })
    }

    /// The pixel data (shares the received bytes); `None` for scalar frames.
    pub fn data(&self) -> Option<&ScalarArray> {
        match self.value.get("value").and_then(inner) {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        }
    }

    /// The frame's NDArray attributes (`ColorMode`, `FrameRate`, ...), in the order sent.
    pub fn attributes(&self) -> Vec<NdAttribute> {
        NdArrayFrame::from_value(&self.value)
            .map(|f| f.attributes)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::nt::{NdArrayFrame, NtNdArray, NtScalar};
    use pva_codec::PodArray;

    #[test]
    fn reads_an_ntndarray_frame() {
        let mut f = NdArrayFrame::new(
            ScalarArray::U16(PodArray::from_vec(vec![7u16; 12])),
            &[4, 3],
            42,
        );
        f.attributes.push(NdAttribute::new("ColorMode", 0i32));
        let v = NtNdArray::new().build_value(f.clone()).unwrap();
        let frame = Frame::from_value(v).unwrap();
        assert_eq!(frame.meta.unique_id, 42);
        assert_eq!(frame.meta.sizes, vec![4, 3]);
        assert_eq!(frame.meta.payload_bytes, 24);
        assert_eq!(frame.meta.element, Some(ScalarType::U16));
        assert_eq!(frame.meta.time_stamp, f.time_stamp);
        assert_eq!(frame.data().map(ScalarArray::len), Some(12));
        assert_eq!(frame.attributes()[0].name, "ColorMode");
    }

    #[test]
    fn an_empty_ntndarray_is_frame_zero_and_a_counter_scalar_is_a_frame() {
        let empty = FrameMeta::from_value(&NtNdArray::new().create()).unwrap();
        assert_eq!(empty.unique_id, 0);
        let counter = NtScalar::new(ScalarType::F64)
            .build_value(17.0, &pva_codec::nt::Alarm::none(), TimeStamp::now())
            .unwrap();
        let meta = FrameMeta::from_value(&counter).unwrap();
        assert_eq!((meta.unique_id, meta.payload_bytes), (17, 8));
        let text = NtScalar::new(ScalarType::String).create();
        assert!(FrameMeta::from_value(&text).is_err());
    }
}
