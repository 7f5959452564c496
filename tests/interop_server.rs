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

fn p4p(udp_port: u16, args: &[&str]) -> Vec<Json> {
    let mut cmd = Command::new(common::python());
    cmd.arg(common::peer_script("p4p_client_ops.py")).args(args);
    common::loopback_env(&mut cmd, udp_port);
    let out = common::run_bounded(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Json> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("p4p script prints JSON lines"))
        .collect();
    assert!(
        out.status.success(),
        "p4p client failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_client_gets_puts_and_reads_types_of_every_scalar() {
    let source = Arc::new(StaticSource::new());
    let cases: Vec<(&str, ScalarType, Value, &str)> = vec![
        ("t:bool", ScalarType::Bool, Value::Bool(true), "false"),
        ("t:byte", ScalarType::I8, Value::I8(-5), "7"),
        ("t:short", ScalarType::I16, Value::I16(-300), "301"),
        ("t:int", ScalarType::I32, Value::I32(-70000), "70001"),
        ("t:long", ScalarType::I64, Value::I64(-5_000_000_000), "5000000001"),
        ("t:ubyte", ScalarType::U8, Value::U8(200), "201"),
        ("t:ushort", ScalarType::U16, Value::U16(60000), "60001"),
        ("t:uint", ScalarType::U32, Value::U32(4_000_000_000), "4000000001"),
        ("t:ulong", ScalarType::U64, Value::U64(10_000_000_000), "10000000001"),
        ("t:float", ScalarType::F32, Value::F32(1.5), "2.5"),
        ("t:double", ScalarType::F64, Value::F64(-2.25), "3.75"),
        ("t:string", ScalarType::String, Value::String("hello".into()), "\"world\""),
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
        args.extend(["get", name, "--", "put", name, put, "--", "info", name, "--"]);
    }
    let results = tokio::task::spawn_blocking(move || p4p(udp, &args))
        .await
        .unwrap();
    assert_eq!(results.len(), cases.len() * 3);
    for (i, (name, t, v, put)) in cases.iter().enumerate() {
        let get = &results[i * 3];
        assert_eq!(get["id"], "epics:nt/NTScalar:1.0", "{name}");
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
        assert_eq!(as_number(put_back), as_number(&expected), "{name}: put then get");
        // The put reached our server's PV too.
        let ours = source_value(&source, name);
        match &expected {
            Json::String(s) => assert_eq!(ours.as_str(), Some(s.as_str()), "{name}"),
            other => assert_eq!(ours.as_f64(), as_number(other), "{name}: server-side value"),
        }
        let info = results[i * 3 + 2]["type"].as_str().unwrap();
        assert!(info.contains("epics:nt/NTScalar:1.0"), "{name}: {info}");
        assert!(
            info.contains(&format!("('value', '{}')", p4p_code(*t))),
            "{name}: {info}"
        );
    }
    server.stop().await;
}

/// A JSON number or bool as f64, strings as None (compared separately).
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
    let results = tokio::task::spawn_blocking(move || p4p(udp, &["monitor", "t:counter", "200"]))
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
        assert_eq!(pair[1], pair[0] + 1, "a monitor update was lost or reordered: {values:?}");
    }
    server.stop().await;
}
