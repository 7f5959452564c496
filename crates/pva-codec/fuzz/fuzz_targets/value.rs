//! Decode arbitrary bytes as a value of one of a fixed set of types. The first byte picks the
//! type (low bits) and the byte order (bit 7); the rest is decoded as a full value, then again
//! as a BitSet followed by a partial value. Decoded structures also go through the normative
//! type readers.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pva_codec::nt::{
    EnumReading, NdArrayFrame, NtEnum, NtNdArray, NtScalar, NtTable, ScalarReading, TableReading,
};
use pva_codec::{
    BitSet, ByteOrder, FieldDesc, Limits, Reader, ScalarType, StructDesc, StructValue, TypeCache,
    Value, ValueDecoder,
};

fn nested_any() -> Arc<StructDesc> {
    Arc::new(
        StructDesc::builder("nested")
            .field("a", FieldDesc::Any)
            .field("list", FieldDesc::AnyArray)
            .structure(
                "inner",
                StructDesc::builder("")
                    .field("b", FieldDesc::Any)
                    .array("s", ScalarType::String)
                    .build(),
            )
            .build(),
    )
}

fn pick(selector: u8) -> Arc<StructDesc> {
    match selector % 6 {
        0 => NtNdArray::new().desc(),
        1 => NtScalar::new(ScalarType::F64).with_display().desc(),
        2 => NtScalar::array(ScalarType::I32).desc(),
        3 => NtEnum::desc(),
        4 => NtTable::new()
            .column("x", ScalarType::F64, None)
            .column("name", ScalarType::String, None)
            .desc(),
        _ => nested_any(),
    }
}

fn read_nt(v: &StructValue) {
    let _ = NdArrayFrame::from_value(v);
    let _ = ScalarReading::from_value(v);
    let _ = EnumReading::from_value(v);
    let _ = TableReading::from_value(v);
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let order = if first & 0x80 != 0 {
        ByteOrder::Big
    } else {
        ByteOrder::Little
    };
    let desc = pick(first & 0x7F);
    let limits = Limits::default();
    let payload = Bytes::copy_from_slice(rest);

    let mut cache = TypeCache::new();
    let mut r = Reader::new(payload.clone(), order);
    let mut dec = ValueDecoder::new(&mut cache, &limits, &r);
    if let Ok(Value::Struct(s)) = dec.value(&FieldDesc::Struct(desc.clone()), &mut r) {
        read_nt(&s);
    }

    let mut r = Reader::new(payload, order);
    let mut dec = ValueDecoder::new(&mut cache, &limits, &r);
    if let Ok(changed) = BitSet::decode(&mut r) {
        let mut into = StructValue::new(desc);
        if dec.partial(&mut into, &changed, &mut r).is_ok() {
            read_nt(&into);
        }
    }
});
