//! Golden vectors: the byte examples of the pvAccess protocol specification (Data Encoding
//! chapter), written here as hex with the decoded form each one stands for. Every vector is
//! checked in both directions, in the byte order the example uses.

use std::sync::Arc;

use bytes::Bytes;

use pva_codec::types::{TypeDecoder, TypeEncoder};
use pva_codec::{
    AnyValue, ArrayKind, BitSet, ByteOrder, FieldDesc, Limits, Member, PodArray, Reader,
    ScalarArray, ScalarType, Status, StatusKind, StructArray, StructDesc, StructValue, TypeCache,
    UnionDesc, UnionValue, Value, ValueDecoder, ValueEncoder, Writer,
};

/// Parse "01 0a ff" style hex (whitespace ignored).
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    assert_eq!(digits.len() % 2, 0, "odd hex digit count");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Bytes written as hex with quoted text: `'name'` stands for the Size-prefixed string `name`
/// (lengths below 254), so a type description reads as the specification lays it out.
fn wire(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in s.split('\'').enumerate() {
        if i % 2 == 0 {
            out.extend(hex(part));
        } else {
            out.push(part.len() as u8);
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

fn reader(bytes: &[u8], order: ByteOrder) -> Reader {
    Reader::new(Bytes::copy_from_slice(bytes), order)
}

// ---- BitSet -------------------------------------------------------------------------------

/// (bits, encoding). The specification's examples put whole 64-bit words least significant
/// byte first, i.e. they are little-endian; examples of up to 7 bytes are byte-wise and so the
/// same in both orders.
fn bitset_vectors() -> Vec<(Vec<usize>, Vec<u8>)> {
    let base = vec![8, 17, 24, 25, 34, 40, 42, 49, 50];
    let with = |extra: &[usize]| {
        let mut v = base.clone();
        v.extend_from_slice(extra);
        v
    };
    vec![
        (vec![], hex("00")),
        (vec![0], hex("01 01")),
        (vec![1], hex("01 02")),
        (vec![7], hex("01 80")),
        (vec![8], hex("02 00 01")),
        (vec![15], hex("02 00 80")),
        (vec![55], hex("07 00 00 00 00 00 00 80")),
        (vec![56], hex("08 00 00 00 00 00 00 00 01")),
        (vec![63], hex("08 00 00 00 00 00 00 00 80")),
        (vec![64], hex("09 00 00 00 00 00 00 00 00 01")),
        (vec![65], hex("09 00 00 00 00 00 00 00 00 02")),
        (vec![0, 1, 2, 4], hex("01 17")),
        (vec![0, 1, 2, 4, 8], hex("02 17 01")),
        (base.clone(), hex("07 00 01 02 03 04 05 06")),
        (with(&[56, 57, 58]), hex("08 00 01 02 03 04 05 06 07")),
        (
            with(&[56, 57, 58, 67]),
            hex("09 00 01 02 03 04 05 06 07 08"),
        ),
        (
            with(&[56, 57, 58, 67, 72, 75]),
            hex("0A 00 01 02 03 04 05 06 07 08 09"),
        ),
        (
            with(&[56, 57, 58, 67, 72, 75, 81, 83]),
            hex("0B 00 01 02 03 04 05 06 07 08 09 0A"),
        ),
    ]
}

#[test]
fn bitset_examples() {
    for (bits, bytes) in bitset_vectors() {
        let set: BitSet = bits.iter().copied().collect();
        let mut orders = vec![ByteOrder::Little];
        if bytes.len() <= 8 {
            orders.push(ByteOrder::Big);
        }
        for order in orders {
            assert_eq!(set.to_bytes(order), bytes, "encode {bits:?} {order:?}");
            let mut r = reader(&bytes, order);
            let back = BitSet::decode(&mut r).unwrap();
            assert!(r.is_empty());
            assert_eq!(back.iter().collect::<Vec<_>>(), bits, "decode {order:?}");
        }
    }
}

#[test]
fn bitset_big_endian_words() {
    // In big-endian messages pvDataCPP writes whole words with the message's byte order.
    let set: BitSet = [56usize].into_iter().collect();
    assert_eq!(
        set.to_bytes(ByteOrder::Big),
        hex("08 01 00 00 00 00 00 00 00")
    );
}

// ---- Status -------------------------------------------------------------------------------

#[test]
fn status_examples() {
    let message = "Failed to get, due to unexpected exception";
    // The example's call tree is a 219-byte stack trace; any text of that length has the same
    // framing (a one-byte Size of 0xDB).
    let call_tree: String = "at example.Frame(Example.java:1)\n"
        .chars()
        .cycle()
        .take(219)
        .collect();
    let mut error = wire(&format!("02 '{message}' DB"));
    error.extend_from_slice(call_tree.as_bytes());
    assert_eq!(error.len(), 264);

    let warning = wire("01 'Low memory' 00");
    assert_eq!(warning, hex("01 0A 4C 6F 77 20 6D 65 6D 6F 72 79 00"));

    let cases = [
        (Status::OK, hex("FF")),
        (Status::warning("Low memory"), warning),
        (
            Status {
                kind: StatusKind::Error,
                message: message.into(),
                call_tree,
            },
            error,
        ),
    ];
    for (status, bytes) in cases {
        for order in [ByteOrder::Big, ByteOrder::Little] {
            let mut w = Writer::new(order);
            status.encode(&mut w).unwrap();
            assert_eq!(w.finish_contiguous().to_vec(), bytes);
            let mut r = reader(&bytes, order);
            assert_eq!(Status::decode(&mut r).unwrap(), status);
            assert!(r.is_empty());
        }
    }
}

// ---- Introspection ------------------------------------------------------------------------

fn decode_types(bytes: &[u8], order: ByteOrder) -> FieldDesc {
    let mut cache = TypeCache::new();
    let limits = Limits::default();
    let mut r = reader(bytes, order);
    let d = TypeDecoder {
        cache: &mut cache,
        limits: &limits,
    }
    .decode(&mut r)
    .unwrap()
    .unwrap();
    assert!(r.is_empty());
    d
}

/// Encode through a send cache whose id 0 is already taken, so the next ids are 1, 2, ... as in
/// the specification's examples.
fn encode_cached_from_id_1(desc: &FieldDesc, order: ByteOrder) -> Vec<u8> {
    let mut cache = TypeCache::new();
    let mut scratch = Writer::new(order);
    let placeholder = FieldDesc::Struct(Arc::new(StructDesc::new("placeholder", Vec::new())));
    TypeEncoder {
        cache: Some(&mut cache),
    }
    .encode_desc(&placeholder, &mut scratch)
    .unwrap();
    let mut w = Writer::new(order);
    TypeEncoder {
        cache: Some(&mut cache),
    }
    .encode_desc(desc, &mut w)
    .unwrap();
    w.finish_contiguous().to_vec()
}

fn encode_full(desc: &FieldDesc, order: ByteOrder) -> Vec<u8> {
    let mut w = Writer::new(order);
    TypeEncoder { cache: None }
        .encode_desc(desc, &mut w)
        .unwrap();
    w.finish_contiguous().to_vec()
}

/// A structure `id` of the scalar `members`.
fn scalars(id: &str, members: &[(&str, ScalarType)]) -> StructDesc {
    members
        .iter()
        .fold(StructDesc::builder(id), |b, (name, t)| b.scalar(*name, *t))
        .build()
}

fn time_stamp_t() -> FieldDesc {
    FieldDesc::Struct(Arc::new(scalars(
        "timeStamp_t",
        &[
            ("secondsPastEpoch", ScalarType::I64),
            ("nanoSeconds", ScalarType::I32),
            ("userTag", ScalarType::I32),
        ],
    )))
}

fn time_stamp_t_body() -> Vec<u8> {
    wire("80 'timeStamp_t' 03 'secondsPastEpoch' 23 'nanoSeconds' 22 'userTag' 22")
}

#[test]
fn introspection_example_1() {
    let mut spec = hex("FD 00 01");
    spec.extend(time_stamp_t_body());
    assert_eq!(spec.len(), 57);
    assert_eq!(
        &spec[..20],
        &hex("FD 00 01 80 0B 74 69 6D 65 53 74 61 6D 70 5F 74 03 10 73 65")[..]
    );
    let order = ByteOrder::Big;
    assert_eq!(decode_types(&spec, order), time_stamp_t());
    assert_eq!(encode_cached_from_id_1(&time_stamp_t(), order), spec);
    assert_eq!(encode_full(&time_stamp_t(), order), time_stamp_t_body());
}

fn example_structure() -> FieldDesc {
    let value_union = UnionDesc::new(
        "",
        vec![
            Member {
                name: "stringValue".into(),
                desc: FieldDesc::Scalar(ScalarType::String),
            },
            Member {
                name: "intValue".into(),
                desc: FieldDesc::Scalar(ScalarType::I32),
            },
            Member {
                name: "doubleValue".into(),
                desc: FieldDesc::Scalar(ScalarType::F64),
            },
        ],
    );
    FieldDesc::Struct(Arc::new(
        StructDesc::builder("exampleStructure")
            .array("value", ScalarType::I8)
            .field(
                "boundedSizeArray",
                FieldDesc::ScalarArray(ScalarType::I8, ArrayKind::Bounded(16)),
            )
            .field(
                "fixedSizeArray",
                FieldDesc::ScalarArray(ScalarType::I8, ArrayKind::Fixed(4)),
            )
            .structure(
                "timeStamp",
                scalars(
                    "time_t",
                    &[
                        ("secondsPastEpoch", ScalarType::I64),
                        ("nanoseconds", ScalarType::I32),
                        ("userTag", ScalarType::I32),
                    ],
                ),
            )
            .structure(
                "alarm",
                scalars(
                    "alarm_t",
                    &[
                        ("severity", ScalarType::I32),
                        ("status", ScalarType::I32),
                        ("message", ScalarType::String),
                    ],
                ),
            )
            .field("valueUnion", FieldDesc::Union(Arc::new(value_union)))
            .field("variantUnion", FieldDesc::Any)
            .build(),
    ))
}

/// Example #2 as the specification encodes it: every structure, union and the variant union
/// defined with a cache id (1 to 5, big-endian).
fn example_2_bytes() -> Vec<u8> {
    wire(
        "FD 00 01 80 'exampleStructure' 07
             'value' 28
             'boundedSizeArray' 30 10
             'fixedSizeArray' 38 04
             'timeStamp' FD 00 02 80 'time_t' 03
                 'secondsPastEpoch' 23
                 'nanoseconds' 22
                 'userTag' 22
             'alarm' FD 00 03 80 'alarm_t' 03
                 'severity' 22
                 'status' 22
                 'message' 60
             'valueUnion' FD 00 04 81 00 03
                 'stringValue' 60
                 'intValue' 22
                 'doubleValue' 43
             'variantUnion' FD 00 05 82",
    )
}

#[test]
fn introspection_example_2() {
    let spec = example_2_bytes();
    assert_eq!(spec.len(), 243);
    assert_eq!(&spec[spec.len() - 4..], &hex("FD 00 05 82")[..]);
    let order = ByteOrder::Big;
    assert_eq!(decode_types(&spec, order), example_structure());
    // Our encoder caches structures and unions but sends `any` by its one-byte code, so it
    // matches the example up to the last member's cache prefix.
    let mut ours = spec[..spec.len() - 4].to_vec();
    ours.push(0x82);
    assert_eq!(encode_cached_from_id_1(&example_structure(), order), ours);
    assert_eq!(decode_types(&ours, order), example_structure());
}

// ---- Values -------------------------------------------------------------------------------

fn decode_value(desc: &FieldDesc, bytes: &[u8], order: ByteOrder) -> Value {
    let mut cache = TypeCache::new();
    let limits = Limits::default();
    let mut r = reader(bytes, order);
    let v = ValueDecoder::new(&mut cache, &limits, &r)
        .value(desc, &mut r)
        .unwrap();
    assert!(r.is_empty());
    v
}

fn encode_value(desc: &FieldDesc, v: &Value, order: ByteOrder) -> Vec<u8> {
    let mut w = Writer::new(order);
    ValueEncoder::default().value(desc, v, &mut w).unwrap();
    w.finish_contiguous().to_vec()
}

#[test]
fn structure_array_example() {
    let elem = Arc::new(
        StructDesc::builder("")
            .scalar("a", ScalarType::I16)
            .scalar("b", ScalarType::I16)
            .build(),
    );
    let item = |a: i16, b: i16| {
        StructValue::from_parts(elem.clone(), vec![Value::I16(a), Value::I16(b)]).unwrap()
    };
    let desc = FieldDesc::StructArray(elem.clone());
    let v = Value::StructArray(StructArray {
        desc: elem.clone(),
        items: vec![Some(item(0x1111, 0x2222)), None, Some(item(0x3333, 0x4444))],
    });
    let bytes = hex("03 01 11 11 22 22 00 01 33 33 44 44");
    for order in [ByteOrder::Big, ByteOrder::Little] {
        assert_eq!(decode_value(&desc, &bytes, order), v);
        assert_eq!(encode_value(&desc, &v, order), bytes);
    }
}

#[test]
fn value_encoding_example() {
    let order = ByteOrder::Big;
    let desc = example_structure();
    let s = desc.as_struct().unwrap().clone();
    let FieldDesc::Union(value_union) = &s.member("valueUnion").unwrap().desc else {
        panic!("valueUnion is a union")
    };
    let bytes_of = |v: &[i8]| Value::Array(ScalarArray::I8(PodArray::from_vec(v.to_vec())));
    let sub = |name: &str| s.member(name).unwrap().desc.as_struct().unwrap().clone();
    let time = StructValue::from_parts(
        sub("timeStamp"),
        vec![
            Value::I64(0x1122_3344_5566_7788),
            Value::I32(0xAABB_CCDDu32 as i32),
            Value::I32(0xEEEE_EEEEu32 as i32),
        ],
    )
    .unwrap();
    let alarm = StructValue::from_parts(
        sub("alarm"),
        vec![
            Value::I32(0x1111_1111),
            Value::I32(0x2222_2222),
            Value::String("Allo, Allo!".into()),
        ],
    )
    .unwrap();
    let value = Value::Struct(
        StructValue::from_parts(
            s.clone(),
            vec![
                bytes_of(&[1, 2, 3]),
                bytes_of(&[4, 5, 6, 7, 8]),
                bytes_of(&[9, 10, 11, 12]),
                Value::Struct(time),
                Value::Struct(alarm),
                Value::Union(UnionValue {
                    desc: value_union.clone(),
                    selected: Some((1, Box::new(Value::I32(0x3333_3333)))),
                }),
                Value::Any(AnyValue::new(Value::String(
                    "String inside variant union.".into(),
                ))),
            ],
        )
        .unwrap(),
    );

    let mut spec = hex("03 01 02 03 05 04 05 06 07 08 09 0A 0B 0C
         11 22 33 44 55 66 77 88 AA BB CC DD EE EE EE EE
         11 11 11 11 22 22 22 22");
    spec.extend(wire(
        "'Allo, Allo!' 01 33 33 33 33 60 'String inside variant union.'",
    ));
    assert_eq!(spec.len(), 85);

    assert_eq!(decode_value(&desc, &spec, order), value);
    assert_eq!(encode_value(&desc, &value, order), spec);
}

#[test]
fn size_examples() {
    for (n, bytes) in [
        (0usize, hex("00")),
        (253, hex("FD")),
        (254, hex("FE 00 00 00 FE")),
        (0x7FFF_FFFE, hex("FE 7F FF FF FE")),
    ] {
        let mut w = Writer::new(ByteOrder::Big);
        w.size(n).unwrap();
        assert_eq!(w.finish_contiguous().to_vec(), bytes);
        assert_eq!(reader(&bytes, ByteOrder::Big).size().unwrap(), n);
    }
    assert_eq!(
        reader(&hex("FF"), ByteOrder::Big).size_or_null().unwrap(),
        None
    );
}
