//! Our server against the p4p (pvxs) and pvapy (pvAccessCPP) clients: get, put, info and
//! monitor of every scalar and of the type matrix, over loopback.

#[path = "../../../tests/common/peers.rs"]
mod common;

use common::p4p_monitor::P4pMonitor;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use pva::server::{Server, SharedPv, Source, StaticSource};
use pva::ServerConfig;
use pva_codec::nt::{NdArrayFrame, NdAttribute, NtEnum, NtNdArray, NtScalar, NtTable};
use pva_codec::{
    AnyValue, BitSet, FieldDesc, Member, PodArray, ScalarArray, ScalarType, StructArray,
    StructDesc, StructValue, UnionDesc, UnionValue, Value,
};
use serde_json::{json, Value as Json};

/// For each `check: p4p_test, pvapy_test;`, a test of `check` with each Python client, p4p
/// (pvxs) and pvapy (pvAccessCPP): `check` takes the client's peer script.
macro_rules! with_each_client {
    ($($check:ident: $p4p:ident, $pvapy:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $p4p() {
            $check("p4p_client_ops.py").await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $pvapy() {
            $check("pvapy_client_ops.py").await;
        }
    )*};
}

with_each_client! {
    check_scalars:
        p4p_client_gets_puts_and_reads_types_of_every_scalar,
        pvapy_client_gets_puts_and_reads_types_of_every_scalar;
    check_monitor:
        p4p_client_monitor_sees_every_update_in_order,
        pvapy_client_monitor_sees_every_update_in_order;
    check_matrix_get_info_put:
        p4p_client_gets_reads_types_of_and_puts_the_type_matrix,
        pvapy_client_gets_reads_types_of_and_puts_the_type_matrix;
    check_matrix_monitor:
        p4p_client_monitors_the_type_matrix,
        pvapy_client_monitors_the_type_matrix;
    check_field_selection:
        p4p_client_gets_and_monitors_a_field_selection,
        pvapy_client_gets_and_monitors_a_field_selection;
}

/// An isolated server of `source`, and its UDP port.
async fn serve(source: Arc<StaticSource>) -> (Server, u16) {
    let server = Server::start(ServerConfig::isolated(), vec![source])
        .await
        .expect("server starts");
    let udp = server.udp_addr().port();
    (server, udp)
}

fn scalar_pv(t: ScalarType, v: impl Into<Value>) -> SharedPv {
    let mut s: StructValue = NtScalar::new(t).create();
    s.set("value", v).expect("value fits its type");
    SharedPv::mailbox(s)
}

async fn check_scalars(script: &'static str) {
    let source = Arc::new(StaticSource::new());
    let cases: Vec<(&str, ScalarType, Value, &str)> = vec![
        ("t:bool", ScalarType::Bool, Value::Bool(true), "false"),
        // Positive: pvapy's Python API hands bytes out as characters, which breaks below 0.
        ("t:byte", ScalarType::I8, Value::I8(5), "7"),
        ("t:short", ScalarType::I16, Value::I16(-300), "301"),
        ("t:int", ScalarType::I32, Value::I32(-70000), "70001"),
        (
            "t:long",
            ScalarType::I64,
            Value::I64(-5_000_000_000),
            "5000000001",
        ),
        ("t:ubyte", ScalarType::U8, Value::U8(200), "201"),
        ("t:ushort", ScalarType::U16, Value::U16(60000), "60001"),
        (
            "t:uint",
            ScalarType::U32,
            Value::U32(4_000_000_000),
            "4000000001",
        ),
        (
            "t:ulong",
            ScalarType::U64,
            Value::U64(10_000_000_000),
            "10000000001",
        ),
        ("t:float", ScalarType::F32, Value::F32(1.5), "2.5"),
        ("t:double", ScalarType::F64, Value::F64(-2.25), "3.75"),
        (
            "t:string",
            ScalarType::String,
            Value::String("hello".into()),
            "\"world\"",
        ),
    ];
    for (name, t, v, _) in &cases {
        source.add(*name, scalar_pv(*t, v.clone()));
    }
    let server = Server::start(ServerConfig::isolated(), vec![source.clone()])
        .await
        .expect("server starts");
    let udp = server.udp_addr().port();

    let mut args = Vec::new();
    for (name, _, _, put) in &cases {
        args.extend([
            "get", name, "--", "put", name, put, "--", "info", name, "--",
        ]);
    }
    let results = tokio::task::spawn_blocking(move || peer_client(script, udp, &args))
        .await
        .unwrap();
    assert_eq!(results.len(), cases.len() * 3);
    for (i, (name, t, v, put)) in cases.iter().enumerate() {
        let get = &results[i * 3];
        if script.starts_with("p4p") {
            // pvapy's Python API does not expose the type id.
            assert_eq!(get["id"], "epics:nt/NTScalar:1.0", "{name}");
        }
        let got = &get["value"]["value"];
        let want: Json = match v {
            Value::Bool(b) => Json::from(*b),
            Value::String(s) => Json::from(s.clone()),
            other => serde_json::from_str(&format!("{}", other.as_f64().unwrap())).unwrap(),
        };
        match t {
            ScalarType::F32 | ScalarType::F64 => {
                assert_eq!(got.as_f64(), want.as_f64(), "{name}")
            }
            ScalarType::Bool | ScalarType::String => assert_eq!(got, &want, "{name}"),
            _ => assert_eq!(got.as_f64(), want.as_f64(), "{name}"),
        }
        let put_back = &results[i * 3 + 1]["value"];
        let expected: Json = serde_json::from_str(put).unwrap();
        match &expected {
            Json::String(_) => assert_eq!(put_back, &expected, "{name}: put then get"),
            _ => assert_eq!(
                as_number(put_back),
                as_number(&expected),
                "{name}: put then get"
            ),
        }
        // The put reached our server's PV too.
        let ours = source_value(&source, name);
        match &expected {
            Json::String(s) => assert_eq!(ours.as_str(), Some(s.as_str()), "{name}"),
            other => assert_eq!(ours.as_f64(), as_number(other), "{name}: server-side value"),
        }
        let info = &results[i * 3 + 2]["type"];
        if script.starts_with("p4p") {
            let info = info.as_str().unwrap();
            assert!(info.contains("epics:nt/NTScalar:1.0"), "{name}: {info}");
            assert!(
                info.contains(&format!("('value', '{}')", p4p_code(*t))),
                "{name}: {info}"
            );
        } else {
            let value_type = info["value"].to_string().to_ascii_lowercase();
            // pvapy names types as pvData does.
            assert!(value_type.contains(t.name()), "{name}: {info}");
        }
    }
    server.stop().await;
}

/// A JSON number or bool as f64 (strings are compared as text).
fn as_number(j: &Json) -> Option<f64> {
    j.as_f64().or(j.as_bool().map(|b| b as u8 as f64))
}

/// p4p's one-letter code for a scalar type in its type description.
fn p4p_code(t: ScalarType) -> char {
    match t {
        ScalarType::Bool => '?',
        ScalarType::I8 => 'b',
        ScalarType::I16 => 'h',
        ScalarType::I32 => 'i',
        ScalarType::I64 => 'l',
        ScalarType::U8 => 'B',
        ScalarType::U16 => 'H',
        ScalarType::U32 => 'I',
        ScalarType::U64 => 'L',
        ScalarType::F32 => 'f',
        ScalarType::F64 => 'd',
        ScalarType::String => 's',
    }
}

fn source_value(source: &StaticSource, name: &str) -> Value {
    source
        .channel(name)
        .expect("pv exists")
        .current()
        .get("value")
        .cloned()
        .expect("value field")
}

/// An isolated server of one i64 PV, `name`, starting at `initial`; and its UDP port.
async fn serve_counter(name: &str, initial: i64) -> (Server, SharedPv, u16) {
    let source = Arc::new(StaticSource::new());
    let pv = scalar_pv(ScalarType::I64, initial);
    source.add(name, pv.clone());
    let (server, udp) = serve(source).await;
    (server, pv, udp)
}

async fn check_monitor(script: &'static str) {
    let (server, pv, udp) = serve_counter("t:counter", 0).await;

    // Count up every few milliseconds while the client monitors.
    let poster = tokio::spawn(async move {
        for n in 1..=100_000i64 {
            pv.update(|v| {
                v.set("value", n).expect("long fits");
                pva_codec::BitSet::with(1)
            });
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let results = tokio::task::spawn_blocking(move || {
        peer_client(script, udp, &["monitor", "t:counter", "200"])
    })
    .await
    .unwrap();
    poster.abort();
    let mon = results.last().unwrap();
    assert_eq!(mon["complete"], true, "{mon}");
    let values: Vec<i64> = mon["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert!(values.len() >= 200);
    for pair in values[1..].windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "a monitor update was lost or reordered: {values:?}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_monitor_sees_a_closed_pv_as_the_end_of_its_subscription() {
    let (server, pv, udp) = serve_counter("t:closing", 1).await;
    let monitor =
        tokio::task::spawn_blocking(move || P4pMonitor::start(udp, "t:closing", i64::MAX, 60))
            .await
            .unwrap();
    assert_eq!(monitor.next_value(Duration::from_secs(20)), 1);
    pv.close();
    assert_eq!(
        monitor.next(Duration::from_secs(10))["event"],
        "finished",
        "pvxs's client takes the close as the end of the subscription"
    );
    server.stop().await;
}

/// One PV of the type matrix and what the tests do with it.
struct Case {
    name: String,
    initial: StructValue,
    /// Fields the server changes while a peer monitors (dotted path, new value).
    change: Vec<(&'static str, Value)>,
    /// Fields a peer puts (dotted path, value).
    put: Vec<(&'static str, Value)>,
}

impl Case {
    fn new(name: impl Into<String>, initial: StructValue) -> Self {
        Case {
            name: name.into(),
            initial,
            change: Vec::new(),
            put: Vec::new(),
        }
    }
}

/// `base` with `fields` set, and the bits of the fields set.
fn apply(base: &StructValue, fields: &[(&str, Value)]) -> (StructValue, BitSet) {
    let mut v = base.clone();
    let mut changed = BitSet::new();
    for (path, value) in fields {
        *v.get_mut(path).expect("field exists") = value.clone();
        changed.set(v.desc().bit_of(path).expect("field has a bit"));
    }
    (v, changed)
}

fn array<T: pva_codec::Element>(items: Vec<T>) -> PodArray<T> {
    PodArray::from_vec(items)
}

/// Values at the edges of each type's range, for puts.
fn extreme_array(t: ScalarType) -> ScalarArray {
    match t {
        ScalarType::Bool => ScalarArray::Bool(vec![false, true, true]),
        ScalarType::I8 => ScalarArray::I8(array(vec![i8::MIN, 0, i8::MAX])),
        ScalarType::I16 => ScalarArray::I16(array(vec![i16::MIN, i16::MAX])),
        ScalarType::I32 => ScalarArray::I32(array(vec![i32::MIN, i32::MAX])),
        ScalarType::I64 => ScalarArray::I64(array(vec![i64::MIN, i64::MAX])),
        ScalarType::U8 => ScalarArray::U8(array(vec![u8::MAX, 0])),
        ScalarType::U16 => ScalarArray::U16(array(vec![u16::MAX, 0])),
        ScalarType::U32 => ScalarArray::U32(array(vec![u32::MAX, 0])),
        ScalarType::U64 => ScalarArray::U64(array(vec![u64::MAX, 0])),
        ScalarType::F32 => ScalarArray::F32(array(vec![1.5, -0.25, 65504.0])),
        ScalarType::F64 => ScalarArray::F64(array(vec![1e300, -2.5, 0.0])),
        ScalarType::String => {
            ScalarArray::String(vec!["x y".into(), String::new(), "\u{fc}ber".into()])
        }
    }
}

fn text_array(t: ScalarType, items: &[&str]) -> Value {
    let strings = Value::Array(ScalarArray::String(
        items.iter().map(|s| s.to_string()).collect(),
    ));
    strings
        .coerce(&FieldDesc::ScalarArray(t, pva_codec::ArrayKind::Variable))
        .expect("items convert")
}

fn union_of(desc: &FieldDesc, member: &str, v: Value) -> Value {
    let FieldDesc::Union(u) = desc else {
        panic!("not a union: {desc:?}")
    };
    Value::Union(UnionValue {
        desc: u.clone(),
        selected: Some((u.index_of(member).expect("member exists"), Box::new(v))),
    })
}

fn empty_union(desc: &FieldDesc) -> Value {
    let FieldDesc::Union(u) = desc else {
        panic!("not a union: {desc:?}")
    };
    Value::Union(UnionValue {
        desc: u.clone(),
        selected: None,
    })
}

fn struct_array(desc: &FieldDesc, items: Vec<StructValue>) -> Value {
    let FieldDesc::StructArray(d) = desc else {
        panic!("not a structure array: {desc:?}")
    };
    Value::StructArray(StructArray {
        desc: d.clone(),
        items: items.into_iter().map(Some).collect(),
    })
}

/// The type matrix: every scalar array, NTEnum, NTTable, NTNDArray, and a nested structure
/// with union, any and structure-array members.
fn matrix() -> Vec<Case> {
    let mut cases = Vec::new();
    for t in ScalarType::ALL {
        let (initial, changed): (&[&str], &[&str]) = match t {
            ScalarType::Bool => (&["true", "false", "true"], &["false", "true"]),
            ScalarType::String => (&["a", "b", "c"], &["d", "e"]),
            _ => (&["1", "2", "3"], &["4", "5"]),
        };
        let mut v = NtScalar::array(t).create();
        v.set("value", text_array(t, initial)).unwrap();
        let mut case = Case::new(format!("a:{}", t.name()), v);
        case.change = vec![("value", text_array(t, changed))];
        case.put = vec![("value", Value::Array(extreme_array(t)))];
        cases.push(case);
    }

    let mut e = NtEnum::create();
    e.set(
        "value.choices",
        text_array(ScalarType::String, &["Off", "On", "Auto"]),
    )
    .unwrap();
    e.set("value.index", 2).unwrap();
    let mut case = Case::new("t:enum", e);
    case.change = vec![("value.index", Value::I32(1))];
    case.put = vec![("value.index", Value::I32(0))];
    cases.push(case);

    let table = NtTable::new()
        .column("x", ScalarType::F64, Some("X (mm)"))
        .column("name", ScalarType::String, None);
    let mut tv = table.create();
    tv.set("value.x", text_array(ScalarType::F64, &["0.5", "1.5"]))
        .unwrap();
    tv.set("value.name", text_array(ScalarType::String, &["p", "q"]))
        .unwrap();
    let mut case = Case::new("t:table", tv);
    case.change = vec![
        (
            "value.x",
            text_array(ScalarType::F64, &["2.5", "3.5", "4.5"]),
        ),
        (
            "value.name",
            text_array(ScalarType::String, &["r", "s", "t"]),
        ),
    ];
    case.put = vec![
        ("value.x", text_array(ScalarType::F64, &["-1"])),
        ("value.name", text_array(ScalarType::String, &["put"])),
    ];
    cases.push(case);

    let pixels: Vec<u16> = (0..64 * 32).map(|i| (3 * i + 1) as u16).collect();
    let mut frame = NdArrayFrame::new(ScalarArray::U16(array(pixels)), &[64, 32], 7);
    frame.attributes.push(NdAttribute::new("exposure", 0.25));
    frame.attributes.push(NdAttribute::new("detector", "sim"));
    let image = NtNdArray::new()
        .build_value(frame)
        .expect("NTNDArray builds");
    let value_desc = image.field_desc("value").unwrap();
    let dimension_desc = image.field_desc("dimension").unwrap();
    let dimension = |sizes: &[i32]| {
        let FieldDesc::StructArray(d) = &dimension_desc else {
            unreachable!()
        };
        let items = sizes
            .iter()
            .map(|&s| {
                let mut dim = StructValue::new(d.clone());
                dim.set("size", s).unwrap();
                dim.set("fullSize", s).unwrap();
                dim.set("binning", 1).unwrap();
                dim
            })
            .collect();
        struct_array(&dimension_desc, items)
    };
    let mut case = Case::new("t:image", image);
    case.change = vec![
        (
            "value",
            union_of(
                &value_desc,
                "ushortValue",
                Value::Array(ScalarArray::U16(array(vec![9, 8, 7, 6, 5, 4]))),
            ),
        ),
        ("uniqueId", Value::I32(8)),
        ("dimension", dimension(&[3, 2])),
    ];
    case.put = vec![
        (
            "value",
            union_of(
                &value_desc,
                "shortValue",
                Value::Array(ScalarArray::I16(array(vec![5, -6, 7]))),
            ),
        ),
        ("uniqueId", Value::I32(9)),
        ("dimension", dimension(&[3])),
    ];
    cases.push(case);

    let item = Arc::new(
        StructDesc::builder("item_t")
            .scalar("name", ScalarType::String)
            .scalar("n", ScalarType::I64)
            .build(),
    );
    let choice = FieldDesc::Union(Arc::new(UnionDesc::new(
        "",
        vec![
            Member {
                name: "i".into(),
                desc: FieldDesc::Scalar(ScalarType::I32),
            },
            Member {
                name: "s".into(),
                desc: FieldDesc::Scalar(ScalarType::String),
            },
        ],
    )));
    let items_desc = FieldDesc::StructArray(item.clone());
    let items = |names: &[(&str, i64)]| {
        let values = names
            .iter()
            .map(|(name, n)| {
                let mut s = StructValue::new(item.clone());
                s.set("name", *name).unwrap();
                s.set("n", *n).unwrap();
                s
            })
            .collect();
        struct_array(&items_desc, values)
    };
    let sub = StructDesc::builder("")
        .scalar("a", ScalarType::I32)
        .field("choice", choice.clone())
        .field("anything", FieldDesc::Any)
        .field("items", items_desc.clone())
        .build();
    let nested = Arc::new(
        StructDesc::builder("my:nested:1.0")
            .scalar("value", ScalarType::F64)
            .structure("sub", sub)
            .build(),
    );
    let (nv, _) = apply(
        &StructValue::new(nested),
        &[
            ("value", Value::F64(4.5)),
            ("sub.a", Value::I32(42)),
            (
                "sub.choice",
                union_of(&choice, "s", Value::String("hi".into())),
            ),
            ("sub.anything", Value::Any(AnyValue::new(Value::F64(1.25)))),
            ("sub.items", items(&[("first", 0), ("second", 10)])),
        ],
    );
    let mut case = Case::new("t:nested", nv);
    case.change = vec![
        // Emptied: the union selects no member, the any holds nothing.
        ("sub.choice", empty_union(&choice)),
        ("sub.anything", Value::Any(AnyValue(None))),
        ("sub.items", items(&[("x", 1), ("y", 2), ("z", 3)])),
    ];
    case.put = vec![
        ("value", Value::F64(5.5)),
        ("sub.a", Value::I32(7)),
        (
            "sub.choice",
            union_of(&choice, "s", Value::String("put".into())),
        ),
        (
            "sub.anything",
            Value::Any(AnyValue::new(Value::Array(ScalarArray::I16(array(vec![
                1, -2,
            ]))))),
        ),
        ("sub.items", items(&[("z", 99)])),
    ];
    cases.push(case);
    cases
}

/// A value as both peer scripts print it (p4p's `todict()` form): a union or any as the
/// value it holds, arrays as lists.
fn canonical(v: &Value) -> Json {
    match v {
        Value::Bool(b) => Json::from(*b),
        Value::I8(n) => Json::from(*n),
        Value::I16(n) => Json::from(*n),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U8(n) => Json::from(*n),
        Value::U16(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        Value::F32(x) => Json::from(f64::from(*x)),
        Value::F64(x) => Json::from(*x),
        Value::String(s) => Json::from(s.clone()),
        Value::Array(a) => Json::Array(
            (0..a.len())
                .map(|i| canonical(&pva_codec::value::array_item(a, i).unwrap()))
                .collect(),
        ),
        Value::Struct(s) => canonical_struct(s),
        Value::StructArray(a) => Json::Array(
            a.items
                .iter()
                .map(|s| s.as_ref().map_or(Json::Null, canonical_struct))
                .collect(),
        ),
        Value::Union(u) => u
            .selected
            .as_ref()
            .map_or(Json::Null, |(_, v)| canonical(v)),
        Value::UnionArray(a) => Json::Array(
            a.items
                .iter()
                .map(|u| {
                    u.as_ref()
                        .and_then(|u| u.selected.as_ref())
                        .map_or(Json::Null, |(_, v)| canonical(v))
                })
                .collect(),
        ),
        Value::Any(a) => a.get().map_or(Json::Null, canonical),
        Value::AnyArray(items) => Json::Array(
            items
                .iter()
                .map(|a| {
                    a.as_ref()
                        .and_then(AnyValue::get)
                        .map_or(Json::Null, canonical)
                })
                .collect(),
        ),
    }
}

fn canonical_struct(s: &StructValue) -> Json {
    Json::Object(
        s.iter()
            .map(|(name, v)| (name.to_owned(), canonical(v)))
            .collect(),
    )
}

/// The type name a FIELDS entry gives for a union member or any content.
fn type_tag(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("{}[]", a.element_type().name()),
        other => other
            .scalar_type()
            .expect("the matrix puts scalars or scalar arrays in unions")
            .name()
            .to_owned(),
    }
}

/// The FIELDS argument of the peer scripts' `set` op for `fields` of `base`.
fn set_argument(base: &StructValue, fields: &[(&str, Value)]) -> String {
    let mut out = serde_json::Map::new();
    for (path, v) in fields {
        let entry = match (base.field_desc(path).unwrap(), v) {
            (FieldDesc::Union(u), Value::Union(uv)) => {
                let (i, held) = uv.selected.as_ref().expect("a member is selected");
                json!({"@union": u.members()[*i].name, "@type": type_tag(held), "value": canonical(held)})
            }
            (FieldDesc::Any, Value::Any(a)) => {
                let held = a.get().expect("the any holds a value");
                json!({"@type": type_tag(held), "value": canonical(held)})
            }
            _ => canonical(v),
        };
        out.insert(path.to_string(), entry);
    }
    Json::Object(out).to_string()
}

/// A type as p4p's `Type.aspy()` shows it.
fn p4p_spec(d: &FieldDesc) -> Json {
    fn members(ms: &[Member]) -> Json {
        Json::Array(
            ms.iter()
                .map(|m| json!([m.name, p4p_spec(&m.desc)]))
                .collect(),
        )
    }
    match d {
        FieldDesc::Scalar(t) => Json::from(p4p_code(*t).to_string()),
        FieldDesc::BoundedString(_) => Json::from("s"),
        FieldDesc::ScalarArray(t, _) => Json::from(format!("a{}", p4p_code(*t))),
        FieldDesc::Struct(s) => json!(["S", p4p_id(s.id()), members(s.members())]),
        FieldDesc::StructArray(s) => json!(["aS", p4p_id(s.id()), members(s.members())]),
        FieldDesc::Union(u) => json!(["U", p4p_id(u.id()), members(u.members())]),
        FieldDesc::UnionArray(u) => json!(["aU", p4p_id(u.id()), members(u.members())]),
        FieldDesc::Any => Json::from("v"),
        FieldDesc::AnyArray => Json::from("av"),
    }
}

/// p4p shows an empty type id as the pvData default, "structure".
fn p4p_id(id: &str) -> &str {
    if id.is_empty() {
        "structure"
    } else {
        id
    }
}

/// A type as pvapy's introspection dict shows it: scalar types by upper-case name, arrays and
/// structure arrays as one-element lists, a union as a list holding its members, an any as an
/// empty list. pvapy shows no type ids.
fn pvapy_type(d: &FieldDesc) -> Json {
    fn fields(ms: &[Member]) -> Json {
        Json::Object(
            ms.iter()
                .map(|m| (m.name.clone(), pvapy_type(&m.desc)))
                .collect(),
        )
    }
    match d {
        FieldDesc::Scalar(t) => Json::from(t.name().to_ascii_uppercase()),
        FieldDesc::BoundedString(_) => Json::from("STRING"),
        FieldDesc::ScalarArray(t, _) => json!([t.name().to_ascii_uppercase()]),
        FieldDesc::Struct(s) => fields(s.members()),
        FieldDesc::StructArray(s) => json!([fields(s.members())]),
        FieldDesc::Union(u) => json!([fields(u.members())]),
        FieldDesc::UnionArray(u) => json!([[fields(u.members())]]),
        FieldDesc::Any => json!([]),
        FieldDesc::AnyArray => json!([[]]),
    }
}

/// The leaf fields (not structures) under the set bits of `changed`, as dotted paths.
fn changed_leaves(desc: &StructDesc, changed: &BitSet) -> Vec<String> {
    fn walk(
        d: &StructDesc,
        base: usize,
        prefix: &str,
        all: bool,
        bits: &BitSet,
        out: &mut Vec<String>,
    ) {
        let all = all || bits.get(base);
        for (m, off) in d.members_with_offsets() {
            let path = if prefix.is_empty() {
                m.name.clone()
            } else {
                format!("{prefix}.{}", m.name)
            };
            match &m.desc {
                FieldDesc::Struct(s) => walk(s, base + off, &path, all, bits, out),
                _ if all || bits.get(base + off) => out.push(path),
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(desc, 0, "", false, changed, &mut out);
    out.sort();
    out
}

/// Run a peer client script and parse its JSON lines.
fn peer_client(script: &str, udp_port: u16, args: &[&str]) -> Vec<Json> {
    let mut cmd = Command::new(common::python());
    cmd.arg(common::peer_script(script)).args(args);
    common::loopback_env(&mut cmd, udp_port);
    let out = common::run_bounded(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("peer script prints JSON lines"))
        .collect()
}

/// A peer client script read line by line while it runs, so the test can act between its
/// outputs. Killed when dropped.
struct PeerSession {
    script: String,
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl PeerSession {
    fn start(script: &str, udp_port: u16, args: &[String]) -> Self {
        let mut cmd = Command::new(common::python());
        cmd.arg(common::peer_script(script))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        common::loopback_env(&mut cmd, udp_port);
        let mut child = cmd.spawn().expect("start the peer script");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        PeerSession {
            script: script.to_owned(),
            child,
            lines,
        }
    }

    /// The next JSON line, within 30 s. Fails the test, with the peer's stderr, when none comes,
    /// or when the peer reports an error or a monitor that did not get all its updates.
    fn next(&mut self) -> Json {
        let line = match self.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(e) => self.fail(&format!("no output line ({e})")),
        };
        let json: Json = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{}: not JSON: {line}: {e}", self.script));
        if json.get("error").is_some() || json["complete"] == false {
            self.fail(&line);
        }
        json
    }

    /// Stop the peer and fail the test with `what` and everything the peer wrote to stderr.
    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let mut stderr = String::new();
        if let Some(mut s) = self.child.stderr.take() {
            let _ = s.read_to_string(&mut stderr);
        }
        panic!("{}: {what}; stderr:\n{stderr}", self.script)
    }
}

impl Drop for PeerSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peer_name(script: &str) -> &'static str {
    if script.starts_with("p4p") {
        "p4p"
    } else {
        "pvapy"
    }
}

/// Get, info and put of every PV of the matrix, checked against the server's own values.
async fn check_matrix_get_info_put(script: &'static str) {
    let cases = matrix();
    let source = Arc::new(StaticSource::new());
    for c in &cases {
        source.add(c.name.clone(), SharedPv::mailbox(c.initial.clone()));
    }
    let server = Server::start(ServerConfig::isolated(), vec![source.clone()])
        .await
        .expect("server starts");
    let udp = server.udp_addr().port();
    let mut args: Vec<String> = Vec::new();
    for c in &cases {
        let put = set_argument(&c.initial, &c.put);
        for op in [
            vec!["get", c.name.as_str()],
            vec!["info", c.name.as_str()],
            vec!["set", c.name.as_str(), put.as_str()],
        ] {
            args.extend(op.into_iter().map(String::from));
            args.push("--".into());
        }
    }
    let results = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        peer_client(script, udp, &args)
    })
    .await
    .unwrap();
    assert_eq!(results.len(), cases.len() * 3, "{results:?}");
    let peer = peer_name(script);
    for (c, r) in cases.iter().zip(results.chunks(3)) {
        let name = &c.name;
        let (get, info, set) = (&r[0], &r[1], &r[2]);
        assert_eq!(
            get["value"],
            canonical_struct(&c.initial),
            "{peer} get {name}"
        );
        let desc = FieldDesc::Struct(c.initial.desc().clone());
        if peer == "p4p" {
            assert_eq!(get["id"], c.initial.id(), "{peer} get {name}: type id");
            assert_eq!(info["spec"], p4p_spec(&desc), "{peer} info {name}");
        } else {
            // pvapy's introspection dict has field names and types, but no type ids.
            assert_eq!(info["type"], pvapy_type(&desc), "{peer} info {name}");
        }
        let (expected, _) = apply(&c.initial, &c.put);
        let ours = source.channel(name).expect("pv exists").current();
        assert_eq!(
            canonical_struct(&ours),
            canonical_struct(&expected),
            "{peer} put {name}: the server's value"
        );
        assert_eq!(
            set["value"],
            canonical_struct(&expected),
            "{peer} put {name}: read back"
        );
    }
    server.stop().await;
}

/// Monitor every PV of the matrix: the first update is the current value, and a change the
/// server posts arrives as the second, carrying the changed fields.
async fn check_matrix_monitor(script: &'static str) {
    let cases = matrix();
    let source = Arc::new(StaticSource::new());
    let pvs: Vec<SharedPv> = cases
        .iter()
        .map(|c| {
            let pv = SharedPv::mailbox(c.initial.clone());
            source.add(c.name.clone(), pv.clone());
            pv
        })
        .collect();
    let (server, udp) = serve(source).await;
    let peer = peer_name(script);
    tokio::task::spawn_blocking(move || {
        let mut args = Vec::new();
        for c in &cases {
            args.extend([
                "monitor".to_owned(),
                c.name.clone(),
                "2".into(),
                "--".into(),
            ]);
        }
        let mut session = PeerSession::start(script, udp, &args);
        for (c, pv) in cases.iter().zip(&pvs) {
            let name = &c.name;
            let first = session.next();
            assert_eq!(
                (&first["op"], &first["pv"], &first["n"]),
                (&json!("update"), &json!(name), &json!(1)),
                "{first}"
            );
            assert_eq!(
                first["value"],
                canonical_struct(&c.initial),
                "{peer} monitor {name}: first update"
            );

            let (changed_value, changed) = apply(&c.initial, &c.change);
            pv.post_changed(changed_value.clone(), changed.clone());
            let second = session.next();
            assert_eq!(
                (&second["op"], &second["n"]),
                (&json!("update"), &json!(2)),
                "{second}"
            );
            assert_eq!(
                second["value"],
                canonical_struct(&changed_value),
                "{peer} monitor {name}: posted change"
            );
            if peer == "p4p" {
                // p4p reports which fields the update marked (pvapy's callback does not).
                let leaves = changed_leaves(c.initial.desc(), &changed);
                let reported: Vec<String> = second["changed"]
                    .as_array()
                    .expect("a list of changed fields")
                    .iter()
                    .filter_map(Json::as_str)
                    .filter(|f| !matches!(c.initial.field_desc(f), Some(FieldDesc::Struct(_))))
                    .map(String::from)
                    .collect();
                assert_eq!(reported, leaves, "{peer} monitor {name}: changed fields");
            }
            let done = session.next();
            assert_eq!(
                (&done["op"], &done["complete"]),
                (&json!("monitor"), &json!(true)),
                "{done}"
            );
        }
    })
    .await
    .unwrap();
    server.stop().await;
}

/// A get with `field(value,alarm.severity)` serves only those fields, with the PV's type ids;
/// a monitor with `field(value)` sends only changes of `value`.
async fn check_field_selection(script: &'static str) {
    let mut initial = NtScalar::new(ScalarType::F64).create();
    initial.set("value", 2.5).unwrap();
    initial.set("alarm.severity", 1).unwrap();
    initial.set("alarm.message", "minor").unwrap();
    initial.set("timeStamp.userTag", 7).unwrap();
    let pv = SharedPv::mailbox(initial.clone());
    let source = Arc::new(StaticSource::new());
    source.add("t:sel", pv.clone());
    let (server, udp) = serve(source).await;
    let peer = peer_name(script);
    tokio::task::spawn_blocking(move || {
        let args: Vec<String> = [
            "get",
            "t:sel",
            "field(value,alarm.severity)",
            "--",
            "monitor",
            "t:sel",
            "2",
            "field(value)",
        ]
        .map(String::from)
        .to_vec();
        let mut session = PeerSession::start(script, udp, &args);
        let get = session.next();
        assert_eq!(
            get["value"],
            json!({"value": 2.5, "alarm": {"severity": 1}}),
            "{peer}: {get}"
        );
        if peer == "p4p" {
            assert_eq!(
                get["spec"],
                json!([
                    "S",
                    "epics:nt/NTScalar:1.0",
                    [
                        ["value", "d"],
                        ["alarm", ["S", "alarm_t", [["severity", "i"]]]]
                    ]
                ]),
                "{peer}: the served type"
            );
        } else {
            assert_eq!(
                get["type"],
                json!({"value": "DOUBLE", "alarm": {"severity": "INT"}}),
                "{peer}: the served type"
            );
        }

        let first = session.next();
        assert_eq!(first["value"], json!({"value": 2.5}), "{peer}: {first}");
        // A change outside the selection sends nothing; the next update is the value's.
        let desc = initial.desc().clone();
        pv.update(|v| {
            v.set("timeStamp.userTag", 8).unwrap();
            BitSet::with(desc.bit_of("timeStamp.userTag").unwrap())
        });
        pv.update(|v| {
            v.set("value", 3.5).unwrap();
            BitSet::with(desc.bit_of("value").unwrap())
        });
        let second = session.next();
        assert_eq!(second["value"], json!({"value": 3.5}), "{peer}: {second}");
        if peer == "p4p" {
            assert_eq!(second["changed"], json!(["value"]), "{peer}: {second}");
        }
        let done = session.next();
        assert_eq!(done["complete"], true, "{done}");
    })
    .await
    .unwrap();
    server.stop().await;
}

/// Null elements of a structure array (p4p only: pvapy's Python layer crashes on them, from a
/// pvxs server too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_client_reads_null_structure_array_elements() {
    let item = Arc::new(
        StructDesc::builder("item_t")
            .scalar("n", ScalarType::I32)
            .build(),
    );
    let desc = Arc::new(
        StructDesc::builder("with_nulls")
            .field("items", FieldDesc::StructArray(item.clone()))
            .build(),
    );
    let element = |n: i32| {
        let mut s = StructValue::new(item.clone());
        s.set("n", n).unwrap();
        Some(s)
    };
    let mut v = StructValue::new(desc);
    *v.get_mut("items").unwrap() = Value::StructArray(StructArray {
        desc: item.clone(),
        items: vec![element(1), None, element(3)],
    });
    let source = Arc::new(StaticSource::new());
    source.add("t:nulls", SharedPv::readonly(v));
    let (server, udp) = serve(source).await;
    let results = tokio::task::spawn_blocking(move || {
        peer_client("p4p_client_ops.py", udp, &["get", "t:nulls"])
    })
    .await
    .unwrap();
    assert_eq!(
        results[0]["value"],
        json!({"items": [{"n": 1}, null, {"n": 3}]})
    );
    server.stop().await;
}
