//! Property tests: random types and values round-trip through the codec in both byte orders,
//! full and partial; type descriptions round-trip with and without the type cache; BitSet,
//! Status and pvRequest round-trip; and no input makes a decoder panic.

use std::sync::Arc;

use bytes::Bytes;
use proptest::prelude::*;

use pva_codec::types::{TypeDecoder, TypeEncoder};
use pva_codec::{
    AnyValue, ArrayKind, BitSet, ByteOrder, FieldDesc, Limits, Member, PodArray, PvRequest, Reader,
    ScalarArray, ScalarType, Status, StatusKind, StructArray, StructDesc, StructValue, TypeCache,
    UnionArray, UnionDesc, UnionValue, Value, ValueDecoder, ValueEncoder, Writer,
};

const ORDERS: [ByteOrder; 2] = [ByteOrder::Little, ByteOrder::Big];

fn scalar_type() -> impl Strategy<Value = ScalarType> {
    prop::sample::select(ScalarType::ALL.to_vec())
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_]{0,6}"
}

/// Members with distinct names.
fn members(inner: BoxedStrategy<FieldDesc>, min: usize) -> impl Strategy<Value = Vec<Member>> {
    prop::collection::vec((name(), inner), min..4).prop_map(|ms| {
        let mut seen = std::collections::HashSet::new();
        ms.into_iter()
            .filter(|(n, _)| seen.insert(n.clone()))
            .map(|(name, desc)| Member { name, desc })
            .collect()
    })
}

fn leaf_desc() -> impl Strategy<Value = FieldDesc> {
    prop_oneof![
        scalar_type().prop_map(FieldDesc::Scalar),
        (1u32..10).prop_map(FieldDesc::BoundedString),
        (scalar_type(), 0u32..4).prop_map(|(t, k)| {
            let kind = match k {
                0 | 1 => ArrayKind::Variable,
                2 => ArrayKind::Bounded(6),
                _ => ArrayKind::Fixed(3),
            };
            FieldDesc::ScalarArray(t, kind)
        }),
        Just(FieldDesc::Any),
        Just(FieldDesc::AnyArray),
    ]
}

fn field_desc() -> impl Strategy<Value = FieldDesc> {
    leaf_desc().prop_recursive(3, 24, 4, |inner| {
        let inner = inner.boxed();
        prop_oneof![
            (name(), members(inner.clone(), 0))
                .prop_map(|(id, ms)| FieldDesc::Struct(Arc::new(StructDesc::new(id, ms)))),
            members(inner.clone(), 0)
                .prop_map(|ms| FieldDesc::StructArray(Arc::new(StructDesc::new("", ms)))),
            (name(), members(inner.clone(), 1))
                .prop_map(|(id, ms)| FieldDesc::Union(Arc::new(UnionDesc::new(id, ms)))),
            members(inner, 1)
                .prop_map(|ms| FieldDesc::UnionArray(Arc::new(UnionDesc::new("", ms)))),
        ]
    })
}

fn struct_desc() -> impl Strategy<Value = Arc<StructDesc>> {
    (name(), members(field_desc().boxed(), 0))
        .prop_map(|(id, ms)| Arc::new(StructDesc::new(id, ms)))
}

fn text(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        prop::string::string_regex(&format!("[a-z0-9 ]{{0,{max}}}")).unwrap(),
        prop::collection::vec(any::<char>(), 0..max.min(4)).prop_map(|cs| cs.into_iter().collect()),
    ]
    .boxed()
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![-1e300f64..1e300, Just(0.0), Just(-0.0), Just(f64::INFINITY)]
}

fn scalar_value(t: ScalarType) -> BoxedStrategy<Value> {
    match t {
        ScalarType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        ScalarType::I8 => any::<i8>().prop_map(Value::I8).boxed(),
        ScalarType::I16 => any::<i16>().prop_map(Value::I16).boxed(),
        ScalarType::I32 => any::<i32>().prop_map(Value::I32).boxed(),
        ScalarType::I64 => any::<i64>().prop_map(Value::I64).boxed(),
        ScalarType::U8 => any::<u8>().prop_map(Value::U8).boxed(),
        ScalarType::U16 => any::<u16>().prop_map(Value::U16).boxed(),
        ScalarType::U32 => any::<u32>().prop_map(Value::U32).boxed(),
        ScalarType::U64 => any::<u64>().prop_map(Value::U64).boxed(),
        ScalarType::F32 => (-1e30f32..1e30).prop_map(Value::F32).boxed(),
        ScalarType::F64 => finite_f64().prop_map(Value::F64).boxed(),
        ScalarType::String => text(8).prop_map(Value::String).boxed(),
    }
}

fn array_value(t: ScalarType, len: std::ops::Range<usize>) -> BoxedStrategy<ScalarArray> {
    macro_rules! pod {
        ($v:ident, $s:expr) => {
            prop::collection::vec($s, len)
                .prop_map(|v| ScalarArray::$v(PodArray::from_vec(v)))
                .boxed()
        };
    }
    match t {
        ScalarType::Bool => prop::collection::vec(any::<bool>(), len)
            .prop_map(ScalarArray::Bool)
            .boxed(),
        ScalarType::String => prop::collection::vec(text(6), len)
            .prop_map(ScalarArray::String)
            .boxed(),
        ScalarType::I8 => pod!(I8, any::<i8>()),
        ScalarType::I16 => pod!(I16, any::<i16>()),
        ScalarType::I32 => pod!(I32, any::<i32>()),
        ScalarType::I64 => pod!(I64, any::<i64>()),
        ScalarType::U8 => pod!(U8, any::<u8>()),
        ScalarType::U16 => pod!(U16, any::<u16>()),
        ScalarType::U32 => pod!(U32, any::<u32>()),
        ScalarType::U64 => pod!(U64, any::<u64>()),
        ScalarType::F32 => pod!(F32, -1e30f32..1e30),
        ScalarType::F64 => pod!(F64, finite_f64()),
    }
}

fn struct_value(s: &Arc<StructDesc>) -> BoxedStrategy<StructValue> {
    let s = s.clone();
    let fields: Vec<BoxedStrategy<Value>> = s.members().iter().map(|m| value(&m.desc)).collect();
    fields
        .prop_map(move |f| StructValue::from_parts(s.clone(), f).expect("generated to match"))
        .boxed()
}

fn union_value(u: &Arc<UnionDesc>) -> BoxedStrategy<UnionValue> {
    let u = u.clone();
    let n = u.members().len();
    let u2 = u.clone();
    prop_oneof![
        1 => Just(UnionValue { desc: u.clone(), selected: None }),
        4 => (0..n).prop_flat_map(move |i| {
            let u = u2.clone();
            value(&u.members()[i].desc).prop_map(move |v| UnionValue {
                desc: u.clone(),
                selected: Some((i, Box::new(v))),
            })
        }),
    ]
    .boxed()
}

fn any_value() -> BoxedStrategy<AnyValue> {
    prop_oneof![
        1 => Just(AnyValue(None)),
        3 => leaf_desc()
            .prop_filter("no nested any", |d| !matches!(d, FieldDesc::Any | FieldDesc::AnyArray))
            .prop_flat_map(|d| value(&d))
            .prop_map(AnyValue::new),
        1 => (name(), members(leaf_desc().boxed(), 0))
            .prop_map(|(id, ms)| Arc::new(StructDesc::new(id, ms)))
            .prop_flat_map(|s| struct_value(&s))
            .prop_map(|s| AnyValue::new(Value::Struct(s))),
    ]
    .boxed()
}

fn value(desc: &FieldDesc) -> BoxedStrategy<Value> {
    match desc {
        FieldDesc::Scalar(t) => scalar_value(*t),
        FieldDesc::BoundedString(n) => prop::string::string_regex(&format!("[a-z]{{0,{n}}}"))
            .unwrap()
            .prop_map(Value::String)
            .boxed(),
        FieldDesc::ScalarArray(t, kind) => {
            let len = match kind {
                ArrayKind::Variable => 0..6,
                ArrayKind::Bounded(n) => 0..(*n as usize + 1),
                ArrayKind::Fixed(n) => (*n as usize)..(*n as usize + 1),
            };
            array_value(*t, len).prop_map(Value::Array).boxed()
        }
        FieldDesc::Struct(s) => struct_value(s).prop_map(Value::Struct).boxed(),
        FieldDesc::StructArray(s) => {
            let s2 = s.clone();
            prop::collection::vec(prop::option::of(struct_value(s)), 0..3)
                .prop_map(move |items| {
                    Value::StructArray(StructArray {
                        desc: s2.clone(),
                        items,
                    })
                })
                .boxed()
        }
        FieldDesc::Union(u) => union_value(u).prop_map(Value::Union).boxed(),
        FieldDesc::UnionArray(u) => {
            let u2 = u.clone();
            prop::collection::vec(prop::option::of(union_value(u)), 0..3)
                .prop_map(move |items| {
                    Value::UnionArray(UnionArray {
                        desc: u2.clone(),
                        items,
                    })
                })
                .boxed()
        }
        FieldDesc::Any => any_value().prop_map(Value::Any).boxed(),
        FieldDesc::AnyArray => prop::collection::vec(prop::option::of(any_value()), 0..3)
            .prop_map(Value::AnyArray)
            .boxed(),
    }
}

fn desc_and_value() -> impl Strategy<Value = (FieldDesc, Value)> {
    field_desc().prop_flat_map(|d| {
        let d2 = d.clone();
        value(&d).prop_map(move |v| (d2.clone(), v))
    })
}

fn struct_and_bits() -> impl Strategy<Value = (StructValue, BitSet)> {
    struct_desc()
        .prop_flat_map(|s| {
            let bits = s.bit_count();
            (struct_value(&s), prop::collection::vec(any::<bool>(), bits))
        })
        .prop_map(|(v, flags)| {
            let bits = flags
                .iter()
                .enumerate()
                .filter(|(_, &f)| f)
                .map(|(i, _)| i)
                .collect();
            (v, bits)
        })
}

fn encode_value(desc: &FieldDesc, v: &Value, order: ByteOrder) -> Bytes {
    let mut w = Writer::new(order);
    ValueEncoder::default().value(desc, v, &mut w).unwrap();
    w.finish_contiguous()
}

fn decode_value(desc: &FieldDesc, bytes: Bytes, order: ByteOrder) -> Result<Value, String> {
    let mut r = Reader::new(bytes, order);
    let mut cache = TypeCache::new();
    let limits = Limits::default();
    let v = ValueDecoder::new(&mut cache, &limits, &r)
        .value(desc, &mut r)
        .map_err(|e| e.to_string())?;
    if !r.is_empty() {
        return Err(format!("{} bytes left over", r.remaining()));
    }
    Ok(v)
}

fn encode_type(desc: &FieldDesc, cache: Option<&mut TypeCache>, w: &mut Writer) {
    TypeEncoder { cache }.encode_desc(desc, w).unwrap();
}

fn decode_type(r: &mut Reader, cache: &mut TypeCache) -> Result<Option<FieldDesc>, String> {
    let limits = Limits::default();
    TypeDecoder {
        cache,
        limits: &limits,
    }
    .decode(r)
    .map_err(|e| e.to_string())
}

/// A generated pvRequest field tree.
#[derive(Debug, Clone)]
struct Tree {
    name: String,
    options: Vec<(String, String)>,
    children: Vec<Tree>,
}

fn option() -> impl Strategy<Value = (String, String)> {
    (
        "[a-zA-Z][a-zA-Z0-9_]{0,5}",
        "[a-zA-Z0-9_:;.=+-]([a-zA-Z0-9_:; .=+-]{0,6}[a-zA-Z0-9_:;.=+-])?",
    )
}

fn add_tree(mut req: PvRequest, prefix: &str, t: &Tree) -> PvRequest {
    let path = if prefix.is_empty() {
        t.name.clone()
    } else {
        format!("{prefix}.{}", t.name)
    };
    req = req.with_field(&path);
    for (k, v) in &t.options {
        req = req.with_field_option(&path, k, v);
    }
    for c in &t.children {
        req = add_tree(req, &path, c);
    }
    req
}

/// A pvRequest built through the builder from a random tree of fields and options.
fn pvrequest() -> impl Strategy<Value = PvRequest> {
    let leaf = (name(), prop::collection::vec(option(), 0..3)).prop_map(|(name, options)| Tree {
        name,
        options,
        children: Vec::new(),
    });
    let tree = leaf.prop_recursive(3, 16, 3, |inner| {
        (
            name(),
            prop::collection::vec(option(), 0..2),
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(name, options, children)| Tree {
                name,
                options,
                children,
            })
    });
    (
        prop::collection::vec(tree, 0..4),
        prop::collection::vec(option(), 0..3),
    )
        .prop_map(|(nodes, record)| {
            let mut req = PvRequest::new();
            for (k, v) in record {
                req = req.with_record_option(&k, v);
            }
            for n in &nodes {
                req = add_tree(req, "", n);
            }
            req
        })
}

proptest! {
    #[test]
    fn values_round_trip_in_both_orders((desc, v) in desc_and_value()) {
        for order in ORDERS {
            let bytes = encode_value(&desc, &v, order);
            prop_assert_eq!(&decode_value(&desc, bytes, order).unwrap(), &v);
        }
    }

    #[test]
    fn chunked_encoding_matches_contiguous((desc, v) in desc_and_value()) {
        for order in ORDERS {
            let mut w = Writer::new(order);
            ValueEncoder::default().value(&desc, &v, &mut w).unwrap();
            let joined: Vec<u8> = w.finish().iter().flat_map(|c| c.to_vec()).collect();
            prop_assert_eq!(&joined[..], &encode_value(&desc, &v, order)[..]);
        }
    }

    #[test]
    fn partial_values_round_trip_and_match_merge((v, bits) in struct_and_bits()) {
        for order in ORDERS {
            let mut w = Writer::new(order);
            ValueEncoder::default().partial(&v, &bits, &mut w).unwrap();
            let mut r = Reader::new(w.finish_contiguous(), order);
            let mut cache = TypeCache::new();
            let limits = Limits::default();
            let mut decoded = StructValue::new(v.desc().clone());
            ValueDecoder::new(&mut cache, &limits, &r)
                .partial(&mut decoded, &bits, &mut r)
                .unwrap();
            prop_assert!(r.is_empty());
            let mut merged = StructValue::new(v.desc().clone());
            merged.merge_from(&v, &bits);
            prop_assert_eq!(&decoded, &merged);
            // Every selected leaf carries the sent value.
            for bit in bits.iter() {
                if let Some(path) = path_of_bit(v.desc(), bit) {
                    prop_assert_eq!(decoded.get(&path), v.get(&path));
                }
            }
            // Selecting everything is the full value.
            let mut all = StructValue::new(v.desc().clone());
            all.merge_from(&v, &BitSet::with(0));
            prop_assert_eq!(&all, &v);
        }
    }

    #[test]
    fn types_round_trip_with_and_without_cache(desc in field_desc()) {
        for order in ORDERS {
            let mut w = Writer::new(order);
            encode_type(&desc, None, &mut w);
            let mut r = Reader::new(w.finish_contiguous(), order);
            prop_assert_eq!(decode_type(&mut r, &mut TypeCache::new()).unwrap(), Some(desc.clone()));
            prop_assert!(r.is_empty());

            let mut send = TypeCache::new();
            let mut w = Writer::new(order);
            encode_type(&desc, Some(&mut send), &mut w);
            let first = w.len();
            encode_type(&desc, Some(&mut send), &mut w);
            if matches!(desc, FieldDesc::Struct(_) | FieldDesc::Union(_)) {
                // The second time only the id (0xFE + u16) is sent.
                prop_assert_eq!(w.len() - first, 3);
            }
            let mut r = Reader::new(w.finish_contiguous(), order);
            let mut recv = TypeCache::new();
            prop_assert_eq!(decode_type(&mut r, &mut recv).unwrap(), Some(desc.clone()));
            prop_assert_eq!(decode_type(&mut r, &mut recv).unwrap(), Some(desc.clone()));
            prop_assert!(r.is_empty());
        }
    }

    #[test]
    fn values_with_cached_any_types_round_trip((desc, v) in desc_and_value()) {
        for order in ORDERS {
            let mut send = TypeCache::new();
            let mut w = Writer::new(order);
            {
                let mut enc = ValueEncoder { types: TypeEncoder { cache: Some(&mut send) } };
                enc.value(&desc, &v, &mut w).unwrap();
                enc.value(&desc, &v, &mut w).unwrap();
            }
            let mut r = Reader::new(w.finish_contiguous(), order);
            let mut recv = TypeCache::new();
            let limits = Limits::default();
            let mut dec = ValueDecoder::new(&mut recv, &limits, &r);
            prop_assert_eq!(&dec.value(&desc, &mut r).unwrap(), &v);
            prop_assert_eq!(&dec.value(&desc, &mut r).unwrap(), &v);
            prop_assert!(r.is_empty());
        }
    }

    #[test]
    fn bitsets_round_trip(bits in prop::collection::btree_set(0usize..300, 0..20)) {
        let set: BitSet = bits.iter().copied().collect();
        for order in ORDERS {
            let bytes = set.to_bytes(order);
            let mut r = Reader::new(Bytes::from(bytes), order);
            let back = BitSet::decode(&mut r).unwrap();
            prop_assert!(r.is_empty());
            prop_assert_eq!(back.iter().collect::<Vec<_>>(), bits.iter().copied().collect::<Vec<_>>());
        }
    }

    #[test]
    fn statuses_round_trip(kind in 0u8..4, message in text(12), call_tree in text(12)) {
        let kind = [StatusKind::Ok, StatusKind::Warning, StatusKind::Error, StatusKind::Fatal][kind as usize];
        let s = Status { kind, message, call_tree };
        for order in ORDERS {
            let mut w = Writer::new(order);
            s.encode(&mut w).unwrap();
            let mut r = Reader::new(w.finish_contiguous(), order);
            prop_assert_eq!(&Status::decode(&mut r).unwrap(), &s);
            prop_assert!(r.is_empty());
        }
    }

    #[test]
    fn pvrequest_print_parse_round_trips(req in pvrequest()) {
        let text = req.to_string();
        let parsed = PvRequest::parse(&text).unwrap();
        prop_assert_eq!(&parsed, &req, "{}", text);
        prop_assert_eq!(parsed.to_string(), text);
        prop_assert_eq!(PvRequest::from_value(&req.to_value()), req);
    }

    #[test]
    fn pvrequest_parse_never_panics(text in "[a-z(),.\\[\\]{}=_: ]{0,40}") {
        if let Ok(req) = PvRequest::parse(&text) {
            prop_assert_eq!(PvRequest::parse(&req.to_string()).unwrap(), req);
        }
    }

    #[test]
    fn decoding_random_bytes_as_a_type_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        for order in ORDERS {
            let mut r = Reader::new(Bytes::from(bytes.clone()), order);
            let mut cache = TypeCache::new();
            // Twice, so cache references may hit entries the first pass defined.
            let _ = decode_type(&mut r, &mut cache);
            let _ = decode_type(&mut r, &mut cache);
        }
    }

    #[test]
    fn decoding_random_bytes_as_a_value_never_panics(
        desc in field_desc(),
        s in struct_desc(),
        bytes in prop::collection::vec(any::<u8>(), 0..96),
    ) {
        for order in ORDERS {
            let _ = decode_value(&desc, Bytes::from(bytes.clone()), order);
            let mut r = Reader::new(Bytes::from(bytes.clone()), order);
            let mut cache = TypeCache::new();
            let limits = Limits::default();
            let mut dec = ValueDecoder::new(&mut cache, &limits, &r);
            let _ = dec.any(&mut r);
            let mut r = Reader::new(Bytes::from(bytes.clone()), order);
            if let Ok(bits) = BitSet::decode(&mut r) {
                let mut into = StructValue::new(s.clone());
                let _ = dec.partial(&mut into, &bits, &mut r);
            }
        }
    }
}

/// The dotted path of the leaf (non-structure) field at `bit`, if that bit is a leaf.
fn path_of_bit(s: &StructDesc, bit: usize) -> Option<String> {
    for (i, m) in s.members().iter().enumerate() {
        let off = s.bit_offset(i).expect("member index in range");
        match &m.desc {
            FieldDesc::Struct(sub) if bit >= off && bit < off + sub.bit_count() => {
                return if bit == off {
                    Some(m.name.clone())
                } else {
                    path_of_bit(sub, bit - off).map(|p| format!("{}.{p}", m.name))
                };
            }
            _ if bit == off => return Some(m.name.clone()),
            _ => {}
        }
    }
    None
}
