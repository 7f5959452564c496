//! Our server against the p4p (pvxs) client: get, put, info and monitor over loopback.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use pva::server::{Server, SharedPv, StaticSource};
use pva::ServerConfig;
use pva_codec::nt::NtScalar;
use pva_codec::{ScalarType, StructValue, Value};
use serde_json::Value as Json;

fn scalar_pv(t: ScalarType, v: impl Into<Value>) -> SharedPv {
    let mut s: StructValue = NtScalar::new(t).create();
    s.set("value", v).expect("value fits its type");
    SharedPv::mailbox(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_client_gets_puts_and_reads_types_of_every_scalar() {
    check_scalars("p4p_client_ops.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvapy_client_gets_puts_and_reads_types_of_every_scalar() {
    check_scalars("pvapy_client_ops.py").await;
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
    use pva::server::Source;
    source
        .channel(name)
        .expect("pv exists")
        .current()
        .get("value")
        .cloned()
        .expect("value field")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_client_monitor_sees_every_update_in_order() {
    check_monitor("p4p_client_ops.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvapy_client_monitor_sees_every_update_in_order() {
    check_monitor("pvapy_client_ops.py").await;
}

async fn check_monitor(script: &'static str) {
    let source = Arc::new(StaticSource::new());
    let pv = scalar_pv(ScalarType::I64, 0i64);
    source.add("t:counter", pv.clone());
    let server = Server::start(ServerConfig::isolated(), vec![source])
        .await
        .expect("server starts");
    let udp = server.udp_addr().port();

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

/// The PVs of the type matrix: every scalar array, NTEnum, NTTable, NTNDArray, and a nested
/// structure with union, any and structure-array members.
fn matrix_source() -> Arc<StaticSource> {
    use pva_codec::nt::{NdArrayFrame, NtEnum, NtNdArray, NtTable};
    use pva_codec::{
        AnyValue, FieldDesc, Member, PodArray, ScalarArray, StructArray, StructDesc, UnionDesc,
        UnionValue,
    };
    let source = Arc::new(StaticSource::new());
    for t in ScalarType::ALL {
        let mut v = NtScalar::array(t).create();
        let items: Vec<String> = match t {
            ScalarType::Bool => vec!["true".into(), "false".into(), "true".into()],
            ScalarType::String => vec!["a".into(), "b".into(), "c".into()],
            _ => vec!["1".into(), "2".into(), "3".into()],
        };
        v.set("value", Value::Array(ScalarArray::String(items)))
            .expect("array converts");
        source.add(format!("a:{}", t.name()), SharedPv::mailbox(v));
    }

    let mut e = NtEnum::create();
    e.set(
        "value.choices",
        Value::Array(ScalarArray::String(vec![
            "Off".into(),
            "On".into(),
            "Auto".into(),
        ])),
    )
    .unwrap();
    e.set("value.index", 2).unwrap();
    source.add("t:enum", SharedPv::mailbox(e));

    let table = NtTable::new()
        .column("x", ScalarType::F64, Some("X (mm)"))
        .column("name", ScalarType::String, None);
    let mut tv = table.create();
    tv.set(
        "value.x",
        Value::Array(ScalarArray::F64(PodArray::from_vec(vec![0.5, 1.5]))),
    )
    .unwrap();
    tv.set(
        "value.name",
        Value::Array(ScalarArray::String(vec!["p".into(), "q".into()])),
    )
    .unwrap();
    source.add("t:table", SharedPv::mailbox(tv));

    let pixels: Vec<u16> = (0..64 * 32).map(|i| (3 * i + 1) as u16).collect();
    let frame = NdArrayFrame::new(ScalarArray::U16(PodArray::from_vec(pixels)), &[64, 32], 7);
    let image = NtNdArray::new()
        .build_value(frame)
        .expect("NTNDArray builds");
    source.add("t:image", SharedPv::readonly(image));

    let item = Arc::new(
        StructDesc::builder("item_t")
            .scalar("name", ScalarType::String)
            .scalar("n", ScalarType::I64)
            .build(),
    );
    let choice = Arc::new(UnionDesc::new(
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
    ));
    let sub = StructDesc::builder("")
        .scalar("a", ScalarType::I32)
        .field("choice", FieldDesc::Union(choice.clone()))
        .field("anything", FieldDesc::Any)
        .field("items", FieldDesc::StructArray(item.clone()))
        .build();
    let nested = Arc::new(
        StructDesc::builder("my:nested:1.0")
            .scalar("value", ScalarType::F64)
            .structure("sub", sub)
            .build(),
    );
    let mut nv = StructValue::new(nested);
    nv.set("value", 4.5).unwrap();
    nv.set("sub.a", 42).unwrap();
    *nv.get_mut("sub.choice").unwrap() = Value::Union(UnionValue {
        desc: choice,
        selected: Some((1, Box::new(Value::String("hi".into())))),
    });
    *nv.get_mut("sub.anything").unwrap() = Value::Any(AnyValue::new(Value::F64(1.25)));
    let items = ["first", "second"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut s = StructValue::new(item.clone());
            s.set("name", *name).unwrap();
            s.set("n", i as i64 * 10).unwrap();
            Some(s)
        })
        .collect();
    *nv.get_mut("sub.items").unwrap() = Value::StructArray(StructArray { desc: item, items });
    source.add("t:nested", SharedPv::readonly(nv));
    source
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

/// Find `key` anywhere under `j` (peers differ in how they nest unions and anys).
fn find<'a>(j: &'a Json, key: &str) -> Option<&'a Json> {
    match j {
        Json::Object(m) => m.get(key).or_else(|| m.values().find_map(|v| find(v, key))),
        Json::Array(a) => a.iter().find_map(|v| find(v, key)),
        _ => None,
    }
}

fn contains_value(j: &Json, want: &Json) -> bool {
    j == want
        || match j {
            Json::Object(m) => m.values().any(|v| contains_value(v, want)),
            Json::Array(a) => a.iter().any(|v| contains_value(v, want)),
            _ => false,
        }
}

fn check_matrix(script: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let source = matrix_source();
    let server = runtime
        .block_on(Server::start(
            ServerConfig::isolated(),
            vec![source.clone()],
        ))
        .expect("server starts");
    let udp = server.udp_addr().port();
    let names: Vec<String> = pva::server::Source::names(source.as_ref());
    let mut args: Vec<&str> = Vec::new();
    for n in &names {
        args.extend(["get", n.as_str(), "--"]);
    }
    args.extend([
        "put",
        "a:double",
        "[7.5, 8.5]",
        "--",
        "put",
        "t:enum",
        "{\"index\": 0}",
    ]);
    let results = peer_client(script, udp, &args);
    assert_eq!(results.len(), names.len() + 2, "{results:?}");
    let by_name: std::collections::HashMap<&str, &Json> = names
        .iter()
        .map(String::as_str)
        .zip(results.iter().map(|r| &r["value"]))
        .collect();

    for t in ScalarType::ALL {
        let got = &by_name[format!("a:{}", t.name()).as_str()]["value"];
        let want = match t {
            ScalarType::Bool => serde_json::json!([true, false, true]),
            ScalarType::String => serde_json::json!(["a", "b", "c"]),
            _ => serde_json::json!([1.0, 2.0, 3.0]),
        };
        // pvapy reports booleans as 0/1; compare them as booleans.
        let got_norm: Json = match got {
            Json::Array(a) if t == ScalarType::Bool => Json::Array(
                a.iter()
                    .map(|x| Json::from(x.as_bool().unwrap_or(x.as_i64() == Some(1))))
                    .collect(),
            ),
            Json::Array(a) if t != ScalarType::String => {
                Json::Array(a.iter().map(|x| Json::from(x.as_f64().unwrap())).collect())
            }
            other => other.clone(),
        };
        assert_eq!(got_norm, want, "{script}: array of {}", t.name());
    }
    let e = by_name["t:enum"];
    assert_eq!(find(e, "index"), Some(&Json::from(2)), "{script}: {e}");
    assert_eq!(
        find(e, "choices"),
        Some(&serde_json::json!(["Off", "On", "Auto"]))
    );
    let table = by_name["t:table"];
    assert_eq!(
        find(table, "labels"),
        Some(&serde_json::json!(["X (mm)", "name"]))
    );
    assert_eq!(
        find(table, "x"),
        Some(&serde_json::json!([0.5, 1.5])),
        "{table}"
    );
    assert_eq!(find(table, "name"), Some(&serde_json::json!(["p", "q"])));
    let image = by_name["t:image"];
    assert_eq!(find(image, "uniqueId"), Some(&Json::from(7)), "{script}");
    let pixels = find(image, "ushortValue")
        .or_else(|| find(image, "value"))
        .and_then(Json::as_array)
        .unwrap_or_else(|| panic!("{script}: no pixels in {image}"));
    assert_eq!(pixels.len(), 64 * 32);
    assert_eq!(pixels[1], 4);
    let dims = find(image, "dimension").and_then(Json::as_array).unwrap();
    let sizes: Vec<i64> = dims.iter().map(|d| d["size"].as_i64().unwrap()).collect();
    assert_eq!(sizes, vec![64, 32], "{script}");
    let nested = by_name["t:nested"];
    assert_eq!(
        find(nested, "a"),
        Some(&Json::from(42)),
        "{script}: {nested}"
    );
    assert!(
        contains_value(nested, &Json::from("hi")),
        "{script}: union member: {nested}"
    );
    assert!(
        contains_value(nested, &Json::from(1.25)),
        "{script}: any member: {nested}"
    );
    assert!(
        contains_value(nested, &Json::from("second")),
        "{script}: struct array: {nested}"
    );
    assert!(
        contains_value(nested, &Json::from(10)),
        "{script}: struct array: {nested}"
    );

    let put_array = &results[names.len()]["value"];
    assert_eq!(put_array, &serde_json::json!([7.5, 8.5]), "{script}");
    use pva::server::Source;
    let ours = source.channel("t:enum").unwrap().current();
    assert_eq!(
        ours.get("value.index"),
        Some(&Value::I32(0)),
        "{script}: enum put"
    );
    runtime.block_on(server.stop());
}

#[test]
fn p4p_client_reads_the_type_matrix() {
    check_matrix("p4p_client_ops.py");
}

#[test]
fn pvapy_client_reads_the_type_matrix() {
    check_matrix("pvapy_client_ops.py");
}
