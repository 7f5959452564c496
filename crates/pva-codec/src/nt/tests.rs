use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use super::*;
use crate::array::{PodArray, ScalarArray};
use crate::serialize::{ValueDecoder, ValueEncoder};
use crate::types::{ArrayKind, Limits, ScalarType, StructDesc, TypeCache};
use crate::value::{AnyValue, StructArray};
use crate::wire::{ByteOrder, Reader, Writer};

/// Encode a structure with its type, as a GET reply carries it, and decode it back.
fn wire_roundtrip(v: &StructValue, order: ByteOrder) -> (StructValue, Bytes) {
    let desc = FieldDesc::Struct(v.desc().clone());
    let mut w = Writer::new(order);
    let mut enc = ValueEncoder::default();
    enc.types.encode_desc(&desc, &mut w).unwrap();
    enc.value(&desc, &Value::Struct(v.clone()), &mut w).unwrap();
    let payload = w.finish_contiguous();
    let mut r = Reader::new(payload.clone(), order);
    let mut cache = TypeCache::new();
    let limits = Limits::default();
    let mut dec = ValueDecoder::new(&mut cache, &limits, &r);
    let d = dec.decode_type(&mut r).unwrap().unwrap();
    let out = dec.value(&d, &mut r).unwrap();
    assert!(r.is_empty());
    match out {
        Value::Struct(s) => (s, payload),
        other => panic!("not a structure: {other:?}"),
    }
}

fn frame() -> NdArrayFrame {
    let pixels: Vec<u16> = (0..64 * 32).map(|i| i as u16).collect();
    let mut f = NdArrayFrame::new(ScalarArray::U16(PodArray::from_vec(pixels)), &[64, 32], 7);
    f.codec.parameters = Some(Value::I32(5));
    f.attributes = vec![
        NdAttribute::new("ColorMode", 0i32),
        NdAttribute::new("Exposure", 0.25f64),
        NdAttribute {
            value: None,
            ..NdAttribute::new("Empty", 0i32)
        },
    ];
    f.alarm = Alarm::new(AlarmSeverity::Minor, 1, "hot");
    f
}

#[test]
fn ndarray_builds_in_pvxs_order_and_round_trips() {
    let nt = NtNdArray::new();
    let d = nt.desc();
    let names: Vec<&str> = d.members().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "value",
            "codec",
            "compressedSize",
            "uncompressedSize",
            "uniqueId",
            "dataTimeStamp",
            "alarm",
            "timeStamp",
            "dimension",
            "attribute"
        ]
    );
    let f = frame();
    let v = nt.build_value(f.clone()).unwrap();
    assert_eq!(v.id(), NT_NDARRAY_ID);
    for order in [ByteOrder::Little, ByteOrder::Big] {
        let (back, _) = wire_roundtrip(&v, order);
        assert_eq!(NdArrayFrame::from_value(&back).unwrap(), f);
    }
    assert_eq!(f.sizes(), vec![64, 32]);
    assert_eq!(f.attribute("Exposure"), Some(&Value::F64(0.25)));
    assert_eq!(f.attribute_pairs().count(), 2);
}

#[test]
fn ndarray_build_does_not_copy_pixels() {
    let f = frame();
    let ptr = match &f.data {
        ScalarArray::U16(a) => a.raw().as_ptr(),
        _ => unreachable!(),
    };
    let v = NtNdArray::new().build_value(f).unwrap();
    let back = NdArrayFrame::from_value(&v).unwrap();
    match &back.data {
        ScalarArray::U16(a) => assert_eq!(a.raw().as_ptr(), ptr),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ndarray_decode_is_zero_copy() {
    let v = NtNdArray::new().build_value(frame()).unwrap();
    let (back, payload) = wire_roundtrip(&v, ByteOrder::native());
    let f = NdArrayFrame::from_value(&back).unwrap();
    let ScalarArray::U16(a) = &f.data else {
        panic!("wrong type")
    };
    let start = payload.as_ptr() as usize;
    let p = a.raw().as_ptr() as usize;
    assert!(p >= start && p + a.raw().len() <= start + payload.len());
}

#[test]
fn ndarray_reader_tolerates_other_layouts() {
    // normativeTypesCPP-like order, `value` as any, dimensions with only `size`, no codec,
    // no attribute array, uniqueId as a long.
    let dim = Arc::new(
        StructDesc::builder("dimension_t")
            .scalar("size", ScalarType::I32)
            .build(),
    );
    let desc = Arc::new(
        StructDesc::builder(NT_NDARRAY_ID)
            .field("timeStamp", FieldDesc::Struct(TimeStamp::desc()))
            .field("dimension", FieldDesc::StructArray(dim.clone()))
            .scalar("uniqueId", ScalarType::I64)
            .field("value", FieldDesc::Any)
            .build(),
    );
    let mut v = StructValue::new(desc);
    let data = ScalarArray::U8(PodArray::from_vec(vec![1u8, 2, 3, 4, 5, 6]));
    *v.get_mut("value").unwrap() = Value::Any(AnyValue::new(Value::Array(data.clone())));
    let dims = [3, 2]
        .iter()
        .map(|&s| {
            let mut d = StructValue::new(dim.clone());
            d.set("size", s).unwrap();
            Some(d)
        })
        .collect();
    *v.get_mut("dimension").unwrap() = Value::StructArray(StructArray {
        desc: dim,
        items: dims,
    });
    v.set("uniqueId", 99i64).unwrap();
    v.set("timeStamp.secondsPastEpoch", 12i64).unwrap();
    let (back, _) = wire_roundtrip(&v, ByteOrder::Big);
    let f = NdArrayFrame::from_value(&back).unwrap();
    assert_eq!(f.data, data);
    assert_eq!(f.sizes(), vec![3, 2]);
    assert_eq!(f.dims[0], Dimension::new(3));
    assert_eq!(f.unique_id, 99);
    assert_eq!(f.time_stamp.seconds_past_epoch, 12);
    assert_eq!(f.uncompressed_size, 6);
    assert!(f.codec.name.is_empty() && f.attributes.is_empty());
}

#[test]
fn ndarray_reader_errors_are_typed() {
    let empty = StructValue::new(Arc::new(StructDesc::new(NT_NDARRAY_ID, Vec::new())));
    assert_eq!(
        NdArrayFrame::from_value(&empty),
        Err(NtError::MissingField("value".into()))
    );
    let v = NtNdArray::new().create();
    assert!(matches!(
        NdArrayFrame::from_value(&v),
        Err(NtError::WrongType { .. })
    ));
    let strings = NdArrayFrame::new(ScalarArray::String(vec!["a".into()]), &[1], 0);
    assert!(NtNdArray::new().build_value(strings).is_err());
}

#[test]
fn ndarray_with_metadata() {
    let nt = NtNdArray::with_metadata();
    let mut f = frame();
    f.descriptor = Some("det".into());
    f.display = Some(Display {
        limit_high: 10.0,
        units: "counts".into(),
        ..Display::default()
    });
    let v = nt.build_value(f.clone()).unwrap();
    let (back, _) = wire_roundtrip(&v, ByteOrder::Little);
    assert_eq!(NdArrayFrame::from_value(&back).unwrap(), f);
}

#[test]
fn scalar_round_trips_with_metadata() {
    let nt = NtScalar::new(ScalarType::F64)
        .with_descriptor()
        .with_form()
        .with_control();
    let desc = nt.desc();
    assert_eq!(desc.id(), NT_SCALAR_ID);
    let mut r = ScalarReading::new(2.5);
    r.descriptor = Some("a knob".into());
    r.display = Some(Display {
        limit_low: -1.0,
        limit_high: 1.0,
        description: "d".into(),
        units: "mm".into(),
        precision: 3,
        form: Some(EnumValue::new(0, ["Default", "String"])),
    });
    r.control = Some(Control {
        limit_low: -2.0,
        limit_high: 2.0,
        min_step: 0.5,
    });
    r.alarm = Alarm::new(AlarmSeverity::Major, 3, "bad");
    let v = nt.build_reading(&r).unwrap();
    let (back, _) = wire_roundtrip(&v, ByteOrder::Big);
    assert_eq!(ScalarReading::from_value(&back).unwrap(), r);

    let ints =
        NtScalar::new(ScalarType::I32).build_value("42", &Alarm::none(), TimeStamp::default());
    assert_eq!(
        ScalarReading::from_value(&ints.unwrap()).unwrap().value,
        Value::I32(42)
    );
    assert!(NtScalar::new(ScalarType::U8)
        .build_value(300, &Alarm::none(), TimeStamp::default())
        .is_err());
}

#[test]
fn scalar_array_and_strings() {
    let nt = NtScalar::array(ScalarType::F32).with_display();
    assert_eq!(nt.desc().id(), NT_SCALAR_ARRAY_ID);
    let arr = ScalarArray::F32(PodArray::from_vec(vec![1.0, 2.0]));
    let v = nt
        .build_value(arr.clone(), &Alarm::none(), TimeStamp::default())
        .unwrap();
    let r = ScalarReading::from_value(&v).unwrap();
    assert_eq!(r.value, Value::Array(arr));
    assert!(r.display.is_some() && r.control.is_none());

    let s = NtScalar::new(ScalarType::String)
        .with_display()
        .with_control();
    let d = s.desc();
    let names: Vec<&str> = d.members().iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["value", "alarm", "timeStamp", "display"]);
    let v = s.create();
    assert_eq!(
        ScalarReading::from_value(&v).unwrap().value,
        Value::String(String::new())
    );
}

#[test]
fn scalar_reader_accepts_any_value_and_refuses_structures() {
    let desc = Arc::new(
        StructDesc::builder("")
            .field("value", FieldDesc::Any)
            .build(),
    );
    let mut v = StructValue::new(desc);
    *v.get_mut("value").unwrap() = Value::Any(AnyValue::new(Value::I16(3)));
    assert_eq!(ScalarReading::from_value(&v).unwrap().as_f64(), Some(3.0));
    let e = NtEnum::create();
    assert!(matches!(
        ScalarReading::from_value(&e),
        Err(NtError::WrongType { .. })
    ));
}

#[test]
fn enum_round_trips() {
    let value = EnumValue::new(2, ["IDLE", "STARTING", "READY"]);
    let v = NtEnum::build_value(&value, &Alarm::none(), TimeStamp::default());
    assert_eq!(v.id(), NT_ENUM_ID);
    let (back, _) = wire_roundtrip(&v, ByteOrder::Little);
    let r = EnumReading::from_value(&back).unwrap();
    assert_eq!(r.value, value);
    assert_eq!(r.value.selected(), Some("READY"));
    assert_eq!(EnumValue::new(5, ["a"]).selected(), None);
    assert!(EnumReading::from_value(&NtScalar::new(ScalarType::I32).create()).is_err());
}

#[test]
fn table_round_trips() {
    let t = NtTable::new()
        .column("x", ScalarType::F64, Some("X (mm)"))
        .column("name", ScalarType::String, None);
    let v = t
        .build_value(
            vec![
                ScalarArray::F64(PodArray::from_vec(vec![1.0, 2.0])),
                ScalarArray::String(vec!["a".into(), "b".into()]),
            ],
            &Alarm::none(),
            TimeStamp::default(),
        )
        .unwrap();
    assert_eq!(v.id(), NT_TABLE_ID);
    let (back, _) = wire_roundtrip(&v, ByteOrder::Big);
    let r = TableReading::from_value(&back).unwrap();
    assert_eq!(r.labels, vec!["X (mm)", "name"]);
    assert_eq!(
        r.column("name"),
        Some(&ScalarArray::String(vec!["a".into(), "b".into()]))
    );
    assert!(t
        .build_value(Vec::new(), &Alarm::none(), TimeStamp::default())
        .is_err());
    assert_eq!(
        TableReading::from_value(&t.create()).unwrap().columns.len(),
        2
    );
}

#[test]
fn time_stamps() {
    let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
    let ts = TimeStamp::from(t);
    assert_eq!(ts.seconds_past_epoch, 1_700_000_000);
    assert_eq!(ts.nanoseconds, 123);
    assert_eq!(ts.to_system_time(), Some(t));
    let before = UNIX_EPOCH - Duration::new(1, 250_000_000);
    let ts = TimeStamp::from(before);
    assert_eq!((ts.seconds_past_epoch, ts.nanoseconds), (-2, 750_000_000));
    assert_eq!(ts.to_system_time(), Some(before));
    // Extreme values never panic; whether they fit depends on the platform.
    for secs in [i64::MAX, i64::MIN] {
        let extreme = TimeStamp {
            seconds_past_epoch: secs,
            nanoseconds: 999_999_999,
            user_tag: 0,
        };
        let _ = extreme.to_system_time();
    }
    assert!(TimeStamp::now().seconds_past_epoch > 1_600_000_000);
    assert_eq!(TimeStamp::from_value(&ts.to_value()), ts);
}

#[test]
fn set_alarm_and_time_stamp_on_any_layout() {
    let mut v = NtScalar::new(ScalarType::I64).create();
    set_alarm(&mut v, &Alarm::new(AlarmSeverity::Invalid, 2, "gone")).unwrap();
    set_time_stamp(&mut v, TimeStamp::from(UNIX_EPOCH + Duration::from_secs(5))).unwrap();
    let r = ScalarReading::from_value(&v).unwrap();
    assert_eq!(r.alarm.severity_kind(), AlarmSeverity::Invalid);
    assert_eq!(r.time_stamp.seconds_past_epoch, 5);
    let mut bare = StructValue::new(Arc::new(StructDesc::new("", Vec::new())));
    assert!(set_alarm(&mut bare, &Alarm::none()).is_err());
    assert!(set_time_stamp(&mut bare, TimeStamp::default()).is_err());
    assert_eq!(AlarmSeverity::from(9), AlarmSeverity::Undefined);
}

#[test]
fn fixed_arrays_are_not_used_by_builders() {
    let nt = NtScalar::array(ScalarType::I8);
    assert!(matches!(
        nt.desc().member("value").map(|m| &m.desc),
        Some(FieldDesc::ScalarArray(ScalarType::I8, ArrayKind::Variable))
    ));
}
