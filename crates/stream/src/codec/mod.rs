//! NTNDArray compression, compatible with areaDetector's codec plugin (NDPluginCodec) and the
//! consumers that read what it writes (pvapy's `AdImageUtility`, the `lz4`, `bitshuffle` and
//! `blosc` Python packages).
//!
//! A compressed NTNDArray carries the compressed bytes in `value` as `ubyteValue`, the codec's
//! name in `codec.name`, the element type of the uncompressed data in `codec.parameters` (an
//! `int` holding the pvData scalar type code: 1 byte, 2 short, ... 10 double), and the byte
//! counts in `compressedSize` and `uncompressedSize`. The codecs:
//!
//! * `lz4`: one LZ4 block of the whole array, no header (`LZ4_compress_default`).
//! * `bslz4`: bitshuffle + LZ4 in the `bitshuffle` library's block layout ([`bslz4`]).
//! * `blosc`: a Blosc 1 frame ([`blosc`]).
//!
//! Everything here is pure: bytes in, bytes out, no I/O.

pub mod bitshuffle;
pub mod blosc;
mod blosclz;
pub mod bslz4;

use bytes::Bytes;
use pva_codec::nt::union_member_name;
use pva_codec::{AnyValue, BitSet, ByteOrder, PodArray, ScalarArray, ScalarType};
use pva_codec::{StructValue, UnionValue, Value};

/// Why a frame could not be compressed or decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A codec or a variant of one that is not implemented.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The compressed bytes end too early.
    #[error("truncated compressed data: {wanted} missing at byte {at}")]
    Truncated {
        /// Where the data ended.
        at: usize,
        /// What was expected there.
        wanted: &'static str,
    },
    /// The compressed bytes, or the sizes that go with them, do not make sense.
    #[error("corrupt compressed data: {0}")]
    Corrupt(String),
    /// The data of a frame compressed with `codec` did not decompress.
    #[error("{codec} frame: {source}")]
    InFrame {
        /// The codec's name.
        codec: &'static str,
        /// Why.
        source: Box<CodecError>,
    },
    /// The value is not an NTNDArray that can be (de)compressed.
    #[error("{0}")]
    NotAnArray(String),
}

/// A compressor of NTNDArray data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// LZ4 block of the whole array.
    Lz4,
    /// Bitshuffle + LZ4 blocks.
    Bslz4,
    /// Blosc 1 frame (LZ4 inside, byte shuffle).
    Blosc,
}

impl Codec {
    /// Every codec.
    pub const ALL: [Codec; 3] = [Codec::Lz4, Codec::Bslz4, Codec::Blosc];

    /// The name in `codec.name`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Lz4 => "lz4",
            Codec::Bslz4 => "bslz4",
            Codec::Blosc => "blosc",
        }
    }

    /// The codec called `name`; other names (`jpeg`, ...) are unsupported.
    pub fn from_name(name: &str) -> Result<Codec, CodecError> {
        Codec::ALL
            .into_iter()
            .find(|c| c.name() == name)
            .ok_or_else(|| {
                CodecError::Unsupported(format!(
                    "codec '{name}' (lz4, bslz4 and blosc are implemented)"
                ))
            })
    }

    /// Compress `data`, whole elements of `size` bytes. `level` (0-9) matters to Blosc only
    /// (0 stores the data as is).
    pub fn compress(self, data: &[u8], size: usize, level: u8) -> Vec<u8> {
        match self {
            Codec::Lz4 => lz4_flex::block::compress(data),
            Codec::Bslz4 => bslz4::compress(data, size),
            Codec::Blosc => blosc::compress(data, size, level.min(9), blosc::Shuffle::Byte),
        }
    }

    /// Decompress `data` into exactly `expected` bytes of `size`-byte elements.
    pub fn decompress(
        self,
        data: &[u8],
        expected: usize,
        size: usize,
    ) -> Result<Vec<u8>, CodecError> {
        match self {
            Codec::Lz4 => {
                let mut out = vec![0u8; expected];
                let got = lz4_flex::block::decompress_into(data, &mut out)
                    .map_err(|e| CodecError::Corrupt(format!("LZ4 block: {e}")))?;
                if got != expected {
                    return Err(CodecError::Corrupt(format!(
                        "LZ4 block holds {got} bytes, not {expected}"
                    )));
                }
                Ok(out)
            }
            Codec::Bslz4 => bslz4::decompress(data, expected, size),
            Codec::Blosc => blosc::decompress(data, expected),
        }
    }
}

impl std::str::FromStr for Codec {
    type Err = CodecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Codec::from_name(s)
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The pvData type code of `t` (what `codec.parameters` holds): 0 boolean, 1 byte, ... 10
/// double.
pub fn type_code(t: ScalarType) -> i32 {
    ScalarType::ALL.iter().position(|x| *x == t).unwrap_or(0) as i32
}

/// Look through `any` and union wrappers.
fn inner(v: &Value) -> Option<&Value> {
    match v {
        Value::Any(a) => inner(a.get()?),
        Value::Union(u) => inner(&u.selected.as_ref()?.1),
        other => Some(other),
    }
}

/// The codec name of an NTNDArray, when it names one (an empty name means uncompressed).
pub fn codec_name(value: &StructValue) -> Option<&str> {
    match value.get("codec.name") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The bits of the members a (de)compression changes, to add to an update's changed set.
pub fn changed_bits(value: &StructValue) -> BitSet {
    let mut bits = BitSet::new();
    for member in ["value", "codec", "compressedSize", "uncompressedSize"] {
        if let Some(bit) = value.desc().bit_of(member) {
            bits.set(bit);
        }
    }
    bits
}

/// Put `array` in `value`'s `value` member (the typed-array union, or an `any`).
fn put_array(value: &mut StructValue, array: ScalarArray) -> Result<(), CodecError> {
    let t = array.element_type();
    match value.get_mut("value") {
        Some(Value::Union(u)) => {
            let index = union_member_name(t)
                .and_then(|name| u.desc.index_of(name))
                .ok_or_else(|| {
                    CodecError::NotAnArray(format!("'value' has no member for {} arrays", t.name()))
                })?;
            *u = UnionValue {
                desc: u.desc.clone(),
                selected: Some((index, Box::new(Value::Array(array)))),
            };
        }
        Some(Value::Any(a)) => *a = AnyValue::new(Value::Array(array)),
        Some(slot @ Value::Array(_)) => *slot = Value::Array(array),
        _ => {
            return Err(CodecError::NotAnArray(
                "no array 'value' to hold the data".into(),
            ))
        }
    }
    Ok(())
}

/// Set the codec members (those the value has).
fn put_codec(
    value: &mut StructValue,
    name: &str,
    element: ScalarType,
    compressed: usize,
    uncompressed: usize,
) {
    let _ = value.set("codec.name", name);
    if let Some(Value::Any(a)) = value.get_mut("codec.parameters") {
        *a = AnyValue::new(Value::I32(type_code(element)));
    }
    let _ = value.set("compressedSize", compressed as i64);
    let _ = value.set("uncompressedSize", uncompressed as i64);
}

/// The pixel array of an NTNDArray.
fn array_of(value: &StructValue) -> Result<&ScalarArray, CodecError> {
    match value.get("value").and_then(inner) {
        Some(Value::Array(a)) => Ok(a),
        _ => Err(CodecError::NotAnArray("the value holds no array".into())),
    }
}

/// Compress an uncompressed NTNDArray with `codec` into a new value laid out as areaDetector's
/// codec plugin lays it out; the other members are shared with `value`, not copied.
pub fn compress_value(
    value: &StructValue,
    codec: Codec,
    level: u8,
) -> Result<StructValue, CodecError> {
    if let Some(name) = codec_name(value) {
        return Err(CodecError::Unsupported(format!(
            "compressing a frame already compressed with '{name}'"
        )));
    }
    let array = array_of(value)?;
    let t = array.element_type();
    let raw = raw_bytes(array)?;
    let packed = codec.compress(&raw, t.wire_size(), level);
    let mut out = value.clone();
    let compressed = packed.len();
    put_array(&mut out, ScalarArray::U8(PodArray::from_vec(packed)))?;
    put_codec(&mut out, codec.name(), t, compressed, raw.len());
    Ok(out)
}

/// The little-endian bytes of a numeric array (shared when they are so already).
fn raw_bytes(array: &ScalarArray) -> Result<Bytes, CodecError> {
    macro_rules! le {
        ($($v:ident),*) => {
            match array {
                $(ScalarArray::$v(a) => Ok(a.bytes_in(ByteOrder::Little)),)*
                other => Err(CodecError::Unsupported(format!(
                    "compressing {} arrays (areaDetector has numeric ones only)",
                    other.element_type().name()
                ))),
            }
        };
    }
    le!(I8, I16, I32, I64, U8, U16, U32, U64, F32, F64)
}

/// The decompressed form of a compressed NTNDArray, laid out as an uncompressed one (the
/// element type from `codec.parameters`, `codec.name` empty); `None` when `value` is not
/// compressed. Every size is checked against the others: a frame that does not decompress to
/// exactly the size its dimensions and `uncompressedSize` say is an error, never a wrong image.
pub fn decompress_value(value: &StructValue) -> Result<Option<StructValue>, CodecError> {
    let Some(name) = codec_name(value) else {
        return Ok(None);
    };
    let codec = Codec::from_name(name)?;
    let code = value
        .get("codec.parameters")
        .and_then(inner)
        .and_then(Value::as_i64)
        .ok_or_else(|| CodecError::Corrupt("codec.parameters holds no element type".into()))?;
    let t = usize::try_from(code)
        .ok()
        .and_then(|c| ScalarType::ALL.get(c).copied())
        .filter(|t| !matches!(t, ScalarType::Bool | ScalarType::String))
        .ok_or_else(|| {
            CodecError::Corrupt(format!(
                "codec.parameters {code} is not a numeric element type"
            ))
        })?;
    let size = t.wire_size();
    let expected = expected_bytes(value, size)?;
    let packed = match array_of(value)? {
        ScalarArray::U8(a) => a.raw().clone(),
        ScalarArray::I8(a) => a.raw().clone(),
        other => {
            return Err(CodecError::Corrupt(format!(
                "compressed data in a {} array, not bytes",
                other.element_type().name()
            )))
        }
    };
    let raw = codec
        .decompress(&packed, expected, size)
        .map_err(|e| CodecError::InFrame {
            codec: codec.name(),
            source: Box::new(e),
        })?;
    let array = ScalarArray::from_raw(t, Bytes::from(raw), ByteOrder::Little).ok_or_else(|| {
        CodecError::Corrupt(format!(
            "{expected} bytes are not whole {} elements",
            t.name()
        ))
    })?;
    let mut out = value.clone();
    put_array(&mut out, array)?;
    put_codec(&mut out, "", t, expected, expected);
    Ok(Some(out))
}

/// The uncompressed size: `uncompressedSize`, which must agree with the dimensions when both
/// are given.
fn expected_bytes(value: &StructValue, size: usize) -> Result<usize, CodecError> {
    let from_dims = match value.get("dimension") {
        Some(Value::StructArray(dims)) if !dims.items.is_empty() => {
            let mut n = 1usize;
            for d in dims.items.iter().flatten() {
                let s = d.get("size").and_then(Value::as_i64).unwrap_or(0);
                n = n.saturating_mul(usize::try_from(s).unwrap_or(0));
            }
            Some(n.saturating_mul(size))
        }
        _ => None,
    };
    let declared = value
        .get("uncompressedSize")
        .and_then(Value::as_i64)
        .filter(|n| *n > 0)
        .map(|n| n as usize);
    let n = match (declared, from_dims) {
        (Some(d), Some(f)) if d != f => {
            return Err(CodecError::Corrupt(format!(
                "uncompressedSize {d} does not match the dimensions ({f} bytes)"
            )))
        }
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => {
            return Err(CodecError::Corrupt(
                "neither uncompressedSize nor dimensions give the size".into(),
            ))
        }
    };
    if n > MAX_FRAME_BYTES {
        return Err(CodecError::Corrupt(format!(
            "an uncompressed size of {n} bytes is past the {MAX_FRAME_BYTES}-byte limit"
        )));
    }
    Ok(n)
}

/// The largest uncompressed frame accepted (what a 32-bit `uncompressedSize` of areaDetector
/// can say): a corrupt size must not make us allocate without bound.
pub const MAX_FRAME_BYTES: usize = 1 << 31;

#[cfg(test)]
mod tests;
