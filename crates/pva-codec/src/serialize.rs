//! pvData value serialization: full values, and partial structures selected by a BitSet.

use crate::array::{each_pod, PodArray, ScalarArray};
use crate::bitset::BitSet;
use crate::error::{DecodeError, DecodeResult, EncodeError};
use crate::types::{
    ArrayKind, FieldDesc, Limits, ScalarType, StructDesc, TypeCache, TypeDecoder, TypeEncoder,
};
use crate::value::{AnyValue, StructArray, StructValue, UnionArray, UnionValue, Value};
use crate::wire::{Reader, Writer};
use std::sync::Arc;

/// Decodes values with a connection's type cache (for `any` members), limits, and a budget of
/// value nodes proportional to the input, so small inputs cannot cause large allocations.
pub struct ValueDecoder<'a> {
    types: TypeDecoder<'a>,
    budget: usize,
    initial_budget: usize,
}

/// Value nodes allowed per input byte, plus a floor; generous for real data (an empty
/// structure costs no bytes but one node), tight enough to stop amplification.
const NODES_PER_BYTE: usize = 4;
const NODE_FLOOR: usize = 1024;

impl<'a> ValueDecoder<'a> {
    /// A decoder for the data that remains in `r`.
    pub fn new(cache: &'a mut TypeCache, limits: &'a Limits, r: &Reader) -> Self {
        let budget = NODE_FLOOR + r.remaining().saturating_mul(NODES_PER_BYTE);
        ValueDecoder {
            types: TypeDecoder { cache, limits },
            budget,
            initial_budget: budget,
        }
    }

    /// Decode a field description (for messages that carry one).
    pub fn decode_type(&mut self, r: &mut Reader) -> DecodeResult<Option<FieldDesc>> {
        self.types.decode(r)
    }

    fn spend(&mut self, nodes: usize) -> DecodeResult<()> {
        self.budget = self
            .budget
            .checked_sub(nodes)
            .ok_or(DecodeError::AllocationBudget(self.initial_budget))?;
        Ok(())
    }

    /// Decode a full value of type `desc`.
    pub fn value(&mut self, desc: &FieldDesc, r: &mut Reader) -> DecodeResult<Value> {
        self.value_at(desc, r, 0)
    }

    /// Decode a variant union (`any`): a type description then a value of it.
    pub fn any(&mut self, r: &mut Reader) -> DecodeResult<AnyValue> {
        self.any_at(r, 0)
    }

    fn value_at(&mut self, desc: &FieldDesc, r: &mut Reader, depth: usize) -> DecodeResult<Value> {
        if depth > self.types.limits.max_depth {
            return Err(DecodeError::TooDeep(self.types.limits.max_depth));
        }
        self.spend(1)?;
        Ok(match desc {
            FieldDesc::Scalar(t) => scalar(*t, r)?,
            FieldDesc::BoundedString(_) => Value::String(r.string()?),
            FieldDesc::ScalarArray(t, kind) => {
                let n = match kind {
                    ArrayKind::Fixed(n) => *n as usize,
                    _ => r.size()?,
                };
                Value::Array(self.array(*t, n, r)?)
            }
            FieldDesc::Struct(s) => Value::Struct(self.structure(s, r, depth)?),
            FieldDesc::StructArray(s) => {
                let n = r.size()?;
                r.check_count("structure array length", n, 1)?;
                self.spend(n)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(if r.u8()? != 0 {
                        Some(self.structure(s, r, depth + 1)?)
                    } else {
                        None
                    });
                }
                Value::StructArray(StructArray {
                    desc: s.clone(),
                    items,
                })
            }
            FieldDesc::Union(u) => Value::Union(self.union(u, r, depth)?),
            FieldDesc::UnionArray(u) => {
                let n = r.size()?;
                r.check_count("union array length", n, 1)?;
                self.spend(n)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(if r.u8()? != 0 {
                        Some(self.union(u, r, depth + 1)?)
                    } else {
                        None
                    });
                }
                Value::UnionArray(UnionArray {
                    desc: u.clone(),
                    items,
                })
            }
            FieldDesc::Any => Value::Any(self.any_at(r, depth)?),
            FieldDesc::AnyArray => {
                let n = r.size()?;
                r.check_count("any array length", n, 1)?;
                self.spend(n)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(if r.u8()? != 0 {
                        Some(self.any_at(r, depth + 1)?)
                    } else {
                        None
                    });
                }
                Value::AnyArray(items)
            }
        })
    }

    fn any_at(&mut self, r: &mut Reader, depth: usize) -> DecodeResult<AnyValue> {
        match self.types.decode(r)? {
            None => Ok(AnyValue(None)),
            Some(d) => Ok(AnyValue::new(self.value_at(&d, r, depth + 1)?)),
        }
    }

    fn union(
        &mut self,
        u: &Arc<crate::types::UnionDesc>,
        r: &mut Reader,
        depth: usize,
    ) -> DecodeResult<UnionValue> {
        let selected = match r.size_or_null()? {
            None => None,
            Some(i) => {
                let m = u.members().get(i).ok_or(DecodeError::BadUnionSelector {
                    selector: i as u64,
                    members: u.members().len(),
                })?;
                Some((i, Box::new(self.value_at(&m.desc, r, depth + 1)?)))
            }
        };
        Ok(UnionValue {
            desc: u.clone(),
            selected,
        })
    }

    fn structure(
        &mut self,
        s: &Arc<StructDesc>,
        r: &mut Reader,
        depth: usize,
    ) -> DecodeResult<StructValue> {
        let mut fields = Vec::with_capacity(s.members().len().min(r.remaining() + 1));
        for m in s.members() {
            fields.push(self.value_at(&m.desc, r, depth + 1)?);
        }
        Ok(StructValue::from_decoded(s.clone(), fields))
    }

    fn array(&mut self, t: ScalarType, n: usize, r: &mut Reader) -> DecodeResult<ScalarArray> {
        r.check_count("array length", n, t.wire_size())?;
        match t {
            ScalarType::Bool => {
                let raw = r.take_bytes(n)?;
                Ok(ScalarArray::Bool(raw.iter().map(|&b| b != 0).collect()))
            }
            ScalarType::String => {
                self.spend(n)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(r.string()?);
                }
                Ok(ScalarArray::String(v))
            }
            pod => {
                let raw = r.take_bytes(n * pod.wire_size())?;
                ScalarArray::from_raw(pod, raw, r.order()).ok_or(DecodeError::Invalid {
                    what: "array",
                    detail: "length is not a whole number of elements".into(),
                })
            }
        }
    }

    /// Decode a partial structure: the fields whose bits are set in `changed` are read into
    /// `into`, every other field keeps its value.
    pub fn partial(
        &mut self,
        into: &mut StructValue,
        changed: &BitSet,
        r: &mut Reader,
    ) -> DecodeResult<()> {
        let bits = into.desc().bit_count();
        if changed.len() > bits {
            return Err(DecodeError::BitOutOfRange {
                bit: changed.len() - 1,
                bits,
            });
        }
        self.partial_at(into, changed, 0, r, 0)
    }

    fn partial_at(
        &mut self,
        into: &mut StructValue,
        changed: &BitSet,
        base: usize,
        r: &mut Reader,
        depth: usize,
    ) -> DecodeResult<()> {
        if depth > self.types.limits.max_depth {
            return Err(DecodeError::TooDeep(self.types.limits.max_depth));
        }
        let desc = into.desc().clone();
        if changed.get(base) {
            *into = self.structure(&desc, r, depth)?;
            return Ok(());
        }
        for ((m, off), field) in desc.members_with_offsets().zip(into.fields_mut()) {
            let off = base + off;
            match (&m.desc, field) {
                (FieldDesc::Struct(s), Value::Struct(sv)) => {
                    if changed.any_in(off, off + s.bit_count()) {
                        self.partial_at(sv, changed, off, r, depth + 1)?;
                    }
                }
                (d, field) => {
                    if changed.get(off) {
                        *field = self.value_at(d, r, depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn scalar(t: ScalarType, r: &mut Reader) -> DecodeResult<Value> {
    Ok(match t {
        ScalarType::Bool => Value::Bool(r.u8()? != 0),
        ScalarType::I8 => Value::I8(r.i8()?),
        ScalarType::I16 => Value::I16(r.i16()?),
        ScalarType::I32 => Value::I32(r.i32()?),
        ScalarType::I64 => Value::I64(r.i64()?),
        ScalarType::U8 => Value::U8(r.u8()?),
        ScalarType::U16 => Value::U16(r.u16()?),
        ScalarType::U32 => Value::U32(r.u32()?),
        ScalarType::U64 => Value::U64(r.u64()?),
        ScalarType::F32 => Value::F32(r.f32()?),
        ScalarType::F64 => Value::F64(r.f64()?),
        ScalarType::String => Value::String(r.string()?),
    })
}

/// Encodes values; `any` members carry type descriptions, optionally through a type cache.
pub struct ValueEncoder<'a> {
    /// The encoder for type descriptions inside `any` values.
    pub types: TypeEncoder<'a>,
}

impl Default for ValueEncoder<'_> {
    fn default() -> Self {
        ValueEncoder {
            types: TypeEncoder { cache: None },
        }
    }
}

fn mismatch(v: &Value, d: &FieldDesc) -> EncodeError {
    EncodeError::TypeMismatch(format!(
        "{} value for a {} field",
        v.desc().type_name(),
        d.type_name()
    ))
}

impl ValueEncoder<'_> {
    /// Encode a full value as type `desc`.
    pub fn value(
        &mut self,
        desc: &FieldDesc,
        v: &Value,
        w: &mut Writer,
    ) -> Result<(), EncodeError> {
        match (desc, v) {
            (FieldDesc::Scalar(_), _) | (FieldDesc::BoundedString(_), Value::String(_))
                if v.matches(desc) =>
            {
                encode_scalar(v, w)
            }
            (FieldDesc::ScalarArray(t, kind), Value::Array(a)) if a.element_type() == *t => {
                if let ArrayKind::Fixed(n) = kind {
                    if a.len() != *n as usize {
                        return Err(EncodeError::TypeMismatch(format!(
                            "fixed array of {n} given {} elements",
                            a.len()
                        )));
                    }
                } else {
                    w.size(a.len())?;
                }
                encode_array(a, w)
            }
            (FieldDesc::Struct(_), Value::Struct(s)) if v.matches(desc) => self.structure(s, w),
            (FieldDesc::StructArray(_), Value::StructArray(a)) if v.matches(desc) => {
                w.size(a.items.len())?;
                for item in &a.items {
                    match item {
                        None => w.u8(0),
                        Some(s) => {
                            w.u8(1);
                            self.structure(s, w)?;
                        }
                    }
                }
                Ok(())
            }
            (FieldDesc::Union(_), Value::Union(u)) if v.matches(desc) => self.union(u, w),
            (FieldDesc::UnionArray(_), Value::UnionArray(a)) if v.matches(desc) => {
                w.size(a.items.len())?;
                for item in &a.items {
                    match item {
                        None => w.u8(0),
                        Some(u) => {
                            w.u8(1);
                            self.union(u, w)?;
                        }
                    }
                }
                Ok(())
            }
            (FieldDesc::Any, Value::Any(a)) => self.any(a, w),
            (FieldDesc::AnyArray, Value::AnyArray(items)) => {
                w.size(items.len())?;
                for item in items {
                    match item {
                        None => w.u8(0),
                        Some(a) => {
                            w.u8(1);
                            self.any(a, w)?;
                        }
                    }
                }
                Ok(())
            }
            _ => Err(mismatch(v, desc)),
        }
    }

    /// Encode a variant union: the held value's type, then the value.
    pub fn any(&mut self, a: &AnyValue, w: &mut Writer) -> Result<(), EncodeError> {
        match a.get() {
            None => self.types.encode(None, w),
            Some(v) => {
                let d = v.desc();
                self.types.encode_desc(&d, w)?;
                self.value(&d, v, w)
            }
        }
    }

    fn union(&mut self, u: &UnionValue, w: &mut Writer) -> Result<(), EncodeError> {
        match &u.selected {
            None => w.null_size(),
            Some((i, v)) => {
                let m = u.desc.members().get(*i).ok_or_else(|| {
                    EncodeError::TypeMismatch(format!("union selector {i} out of range"))
                })?;
                w.size(*i)?;
                self.value(&m.desc, v, w)?;
            }
        }
        Ok(())
    }

    /// Encode every field of a structure.
    pub fn structure(&mut self, s: &StructValue, w: &mut Writer) -> Result<(), EncodeError> {
        for (m, v) in s.desc().members().iter().zip(s.fields()) {
            self.value(&m.desc, v, w)?;
        }
        Ok(())
    }

    /// Encode the fields of `s` selected by `changed` (bit 0 selects everything).
    pub fn partial(
        &mut self,
        s: &StructValue,
        changed: &BitSet,
        w: &mut Writer,
    ) -> Result<(), EncodeError> {
        self.partial_at(s, changed, 0, w)
    }

    fn partial_at(
        &mut self,
        s: &StructValue,
        changed: &BitSet,
        base: usize,
        w: &mut Writer,
    ) -> Result<(), EncodeError> {
        if changed.get(base) {
            return self.structure(s, w);
        }
        for ((m, off), v) in s.desc().members_with_offsets().zip(s.fields()) {
            let off = base + off;
            match (&m.desc, v) {
                (FieldDesc::Struct(d), Value::Struct(sv)) => {
                    if changed.any_in(off, off + d.bit_count()) {
                        self.partial_at(sv, changed, off, w)?;
                    }
                }
                (d, v) => {
                    if changed.get(off) {
                        self.value(d, v, w)?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn encode_scalar(v: &Value, w: &mut Writer) -> Result<(), EncodeError> {
    match v {
        Value::Bool(b) => w.u8(*b as u8),
        Value::I8(x) => w.i8(*x),
        Value::I16(x) => w.i16(*x),
        Value::I32(x) => w.i32(*x),
        Value::I64(x) => w.i64(*x),
        Value::U8(x) => w.u8(*x),
        Value::U16(x) => w.u16(*x),
        Value::U32(x) => w.u32(*x),
        Value::U64(x) => w.u64(*x),
        Value::F32(x) => w.f32(*x),
        Value::F64(x) => w.f64(*x),
        Value::String(s) => w.string(s)?,
        other => {
            return Err(EncodeError::TypeMismatch(format!(
                "{other:?} is not a scalar"
            )))
        }
    }
    Ok(())
}

fn encode_array(a: &ScalarArray, w: &mut Writer) -> Result<(), EncodeError> {
    each_pod!(a,
        p => { encode_pod(p, w); Ok(()) },
        bool b => { for &x in b { w.u8(x as u8); } Ok(()) },
        string s => { for x in s { w.string(x)?; } Ok(()) })
}

fn encode_pod<T: crate::array::Element>(p: &PodArray<T>, w: &mut Writer) {
    w.shared(&p.bytes_in(w.order()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ByteOrder;
    use bytes::Bytes;

    fn roundtrip(desc: &FieldDesc, v: &Value, order: ByteOrder) -> Value {
        let mut w = Writer::new(order);
        ValueEncoder::default().value(desc, v, &mut w).unwrap();
        let mut r = Reader::new(w.finish_contiguous(), order);
        let mut cache = TypeCache::new();
        let limits = Limits::default();
        let out = ValueDecoder::new(&mut cache, &limits, &r)
            .value(desc, &mut r)
            .unwrap();
        assert!(r.is_empty());
        out
    }

    #[test]
    fn big_array_decodes_without_copying() {
        let data: Vec<u16> = (0..1_048_576u32).map(|i| i as u16).collect();
        let v = Value::Array(ScalarArray::U16(PodArray::from_vec(data)));
        let desc = FieldDesc::ScalarArray(ScalarType::U16, ArrayKind::Variable);
        let mut w = Writer::new(ByteOrder::native());
        ValueEncoder::default().value(&desc, &v, &mut w).unwrap();
        let payload = w.finish_contiguous();
        let mut r = Reader::new(payload.clone(), ByteOrder::native());
        let mut cache = TypeCache::new();
        let limits = Limits::default();
        let out = ValueDecoder::new(&mut cache, &limits, &r)
            .value(&desc, &mut r)
            .unwrap();
        let Value::Array(ScalarArray::U16(a)) = &out else {
            panic!("wrong type")
        };
        // The decoded array points into the payload buffer: no copy was made.
        assert_eq!(a.raw().as_ptr(), payload[5..].as_ptr());
        assert_eq!(out, v);
    }

    #[test]
    fn arrays_round_trip_in_both_orders() {
        let v = Value::Array(ScalarArray::F64(PodArray::from_vec(vec![1.0, -2.5, 3.25])));
        let desc = FieldDesc::ScalarArray(ScalarType::F64, ArrayKind::Variable);
        assert_eq!(roundtrip(&desc, &v, ByteOrder::Big), v);
        assert_eq!(roundtrip(&desc, &v, ByteOrder::Little), v);
    }

    #[test]
    fn array_count_beyond_input_is_refused() {
        // double[] claiming 0x10000000 elements in 5 bytes.
        let bytes = Bytes::from_static(&[0xFE, 0x00, 0x00, 0x00, 0x10]);
        let mut r = Reader::new(bytes, ByteOrder::Little);
        let mut cache = TypeCache::new();
        let limits = Limits::default();
        let err = ValueDecoder::new(&mut cache, &limits, &r)
            .value(
                &FieldDesc::ScalarArray(ScalarType::F64, ArrayKind::Variable),
                &mut r,
            )
            .unwrap_err();
        assert!(matches!(err, DecodeError::SizeExceedsInput { .. }));
    }
}
