//! Our client against independently written servers: p4p (pvxs) and pvapy (pvAccessCPP),
//! started as Python processes on loopback ports of their own.

#[path = "../../../tests/common/peers.rs"]
mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use pva::client::{Context, MonitorEvent, Update};
use pva::ClientConfig;
use pva_codec::{FieldDesc, ScalarArray, ScalarType, StructValue, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::time::timeout;

/// A Python server process; killed when dropped.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

/// Free TCP and UDP ports on loopback (bound, then released for the peer).
fn free_ports() -> (u16, u16) {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind udp");
    (
        tcp.local_addr().expect("tcp addr").port(),
        udp.local_addr().expect("udp addr").port(),
    )
}

fn peer_env(tcp: u16, udp: u16) -> HashMap<String, String> {
    [
        ("EPICS_PVA_ADDR_LIST", "127.0.0.1".to_string()),
        ("EPICS_PVA_AUTO_ADDR_LIST", "NO".to_string()),
        ("EPICS_PVA_SERVER_PORT", tcp.to_string()),
        ("EPICS_PVA_BROADCAST_PORT", udp.to_string()),
        ("EPICS_PVAS_SERVER_PORT", tcp.to_string()),
        ("EPICS_PVAS_BROADCAST_PORT", udp.to_string()),
        ("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1".to_string()),
        ("EPICS_PVA_CONN_TMO", "5".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn start_peer(script: &str, prefix: &str, ports: (u16, u16)) -> Peer {
    let mut cmd = tokio::process::Command::new(common::python());
    cmd.arg(common::peer_script(script))
        .arg(prefix)
        .envs(peer_env(ports.0, ports.1))
        // The peer server drops clients silent for longer than this; keep it well above our
        // client's echo period so that a loaded machine cannot break a connection.
        .env("EPICS_PVA_CONN_TMO", "30")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = cmd.spawn().expect("start the Python peer");
    let stdin = child.stdin.take().expect("peer stdin");
    let stdout = child.stdout.take().expect("peer stdout");
    let mut peer = Peer {
        child,
        stdin,
        lines: BufReader::new(stdout).lines(),
    };
    peer.expect_line("READY", Duration::from_secs(30)).await;
    peer
}

impl Peer {
    async fn expect_line(&mut self, want: &str, within: Duration) {
        let line = timeout(within, self.lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("peer did not print {want} within {within:?}"))
            .expect("read peer stdout");
        assert_eq!(line.as_deref(), Some(want), "peer output");
    }

    async fn command(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write to peer");
        self.stdin.flush().await.expect("flush peer stdin");
    }

    async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

fn client(ports: (u16, u16)) -> Context {
    let env = peer_env(ports.0, ports.1);
    let config = ClientConfig::from_lookup(&|k| env.get(k).cloned()).expect("client config");
    Context::new(config).expect("client context")
}

const T: Duration = Duration::from_secs(10);

async fn next_event(m: &mut pva::client::Monitor) -> MonitorEvent {
    timeout(T, m.recv())
        .await
        .expect("monitor event within the time limit")
        .expect("monitor still running")
}

async fn next_update(m: &mut pva::client::Monitor) -> Update {
    loop {
        match next_event(m).await {
            MonitorEvent::Update(u) => return u,
            MonitorEvent::Connected => continue,
            other => panic!("expected an update, got {other:?}"),
        }
    }
}

/// (name, scalar type, initial value, value to put as text, value expected after the put).
/// pvapy sets bytes from characters only, so its byte starts at 'x' (120).
fn scalar_cases(byte: i8) -> Vec<(&'static str, ScalarType, Value, &'static str, Value)> {
    vec![
        (
            "bool",
            ScalarType::Bool,
            Value::Bool(true),
            "false",
            Value::Bool(false),
        ),
        (
            "byte",
            ScalarType::I8,
            Value::I8(byte),
            "-100",
            Value::I8(-100),
        ),
        (
            "short",
            ScalarType::I16,
            Value::I16(-16),
            "-30000",
            Value::I16(-30000),
        ),
        (
            "int",
            ScalarType::I32,
            Value::I32(-32),
            "-70000",
            Value::I32(-70000),
        ),
        (
            "long",
            ScalarType::I64,
            Value::I64(-64),
            "-5000000000",
            Value::I64(-5_000_000_000),
        ),
        ("ubyte", ScalarType::U8, Value::U8(8), "200", Value::U8(200)),
        (
            "ushort",
            ScalarType::U16,
            Value::U16(16),
            "60000",
            Value::U16(60000),
        ),
        (
            "uint",
            ScalarType::U32,
            Value::U32(32),
            "4000000000",
            Value::U32(4_000_000_000),
        ),
        (
            "ulong",
            ScalarType::U64,
            Value::U64(64),
            "10000000000",
            Value::U64(10_000_000_000),
        ),
        (
            "float",
            ScalarType::F32,
            Value::F32(1.5),
            "2.5",
            Value::F32(2.5),
        ),
        (
            "double",
            ScalarType::F64,
            Value::F64(2.25),
            "-3.75",
            Value::F64(-3.75),
        ),
        (
            "string",
            ScalarType::String,
            Value::String("hello".into()),
            "world",
            Value::String("world".into()),
        ),
    ]
}

/// Get, info, monitor and put every scalar type and an array of each.
async fn scalar_matrix(script: &str, prefix: &str, byte: i8) {
    let ports = free_ports();
    let peer = start_peer(script, prefix, ports).await;
    let ctx = client(ports);
    for (name, t, initial, put, after) in scalar_cases(byte) {
        let pv = format!("{prefix}{name}");
        let v = ctx
            .get(&pv)
            .timeout(T)
            .await
            .unwrap_or_else(|e| panic!("get {pv}: {e}"));
        assert_eq!(v.id(), "epics:nt/NTScalar:1.0", "{pv}");
        assert_eq!(v.get("value"), Some(&initial), "{pv}");

        let desc = ctx
            .info(&pv)
            .timeout(T)
            .await
            .unwrap_or_else(|e| panic!("info {pv}: {e}"));
        let s = desc.as_struct().expect("a structure");
        assert_eq!(
            s.member("value").map(|m| &m.desc),
            Some(&FieldDesc::Scalar(t)),
            "{pv}"
        );

        let mut mon = ctx.monitor(&pv).exec().expect("monitor starts");
        assert_eq!(next_event(&mut mon).await, MonitorEvent::Connected, "{pv}");
        assert_eq!(
            next_update(&mut mon).await.value.get("value"),
            Some(&initial),
            "{pv}"
        );

        ctx.put(&pv)
            .set("value", put)
            .timeout(T)
            .await
            .unwrap_or_else(|e| panic!("put {pv}: {e}"));
        let u = next_update(&mut mon).await;
        assert_eq!(u.value.get("value"), Some(&after), "{pv} monitor after put");
        assert!(u.changed.get(1), "{pv}: value marked changed");
        let v = ctx
            .get(&pv)
            .request("field(value)")
            .timeout(T)
            .await
            .expect("get after put");
        assert_eq!(v.get("value"), Some(&after), "{pv} get after put");

        // The array of the same type.
        let apv = format!("{prefix}arr_{name}");
        let v = ctx
            .get(&apv)
            .timeout(T)
            .await
            .unwrap_or_else(|e| panic!("get {apv}: {e}"));
        let arr = v.get("value").and_then(Value::as_array).expect("an array");
        assert_eq!(arr.element_type(), t, "{apv}");
        assert_eq!(arr.len(), 2, "{apv}");
        let desc = ctx.info(&apv).timeout(T).await.expect("info array");
        assert!(
            matches!(desc.as_struct().and_then(|s| s.member("value")).map(|m| &m.desc),
                Some(FieldDesc::ScalarArray(et, _)) if *et == t),
            "{apv}: {desc:?}"
        );
        let text = format!("[{put}, {put}, {put}]");
        ctx.put(&apv)
            .set("value", text.as_str())
            .timeout(T)
            .await
            .unwrap_or_else(|e| panic!("put {apv}: {e}"));
        let v = ctx.get(&apv).timeout(T).await.expect("get array after put");
        let arr = v.get("value").and_then(Value::as_array).expect("an array");
        assert_eq!(arr.len(), 3, "{apv}");
        assert_eq!(
            pva_codec::value::array_item(arr, 2).as_ref(),
            Some(&after),
            "{apv}"
        );
    }
    peer.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_every_scalar_and_array_get_put_monitor_info() {
    timeout(
        Duration::from_secs(60),
        scalar_matrix("p4p_server.py", "c4s:", -8),
    )
    .await
    .expect("test time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvapy_every_scalar_and_array_get_put_monitor_info() {
    timeout(
        Duration::from_secs(60),
        scalar_matrix("pvapy_server.py", "cys:", 120),
    )
    .await
    .expect("test time limit");
}

fn strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(ScalarArray::String(s))) => s.clone(),
        other => panic!("not a string array: {other:?}"),
    }
}

/// NTEnum, NTTable, NTNDArray and a structure with union, any and structure-array members.
async fn structured_matrix(script: &str, prefix: &str) {
    let ports = free_ports();
    let peer = start_peer(script, prefix, ports).await;
    let ctx = client(ports);
    let pv = |n: &str| format!("{prefix}{n}");

    // NTEnum: read, set by choice name, see it in a monitor.
    let e = ctx.get(&pv("enum")).timeout(T).await.expect("get enum");
    assert_eq!(e.id(), "epics:nt/NTEnum:1.0");
    assert_eq!(e.get("value.index"), Some(&Value::I32(1)));
    assert_eq!(strings(e.get("value.choices")), ["Off", "On", "Auto"]);
    let info = ctx.info(&pv("enum")).timeout(T).await.expect("info enum");
    assert!(matches!(
        info.as_struct()
            .and_then(|s| s.member("value"))
            .map(|m| &m.desc),
        Some(FieldDesc::Struct(_))
    ));
    let mut mon = ctx.monitor(&pv("enum")).exec().expect("monitor enum");
    assert_eq!(
        next_update(&mut mon).await.value.get("value.index"),
        Some(&Value::I32(1))
    );
    ctx.put(&pv("enum"))
        .set("value", "Auto")
        .timeout(T)
        .await
        .expect("put enum by name");
    assert_eq!(
        next_update(&mut mon).await.value.get("value.index"),
        Some(&Value::I32(2))
    );
    drop(mon);

    // NTTable: labels and columns; put one column.
    let t = ctx.get(&pv("table")).timeout(T).await.expect("get table");
    assert_eq!(t.id(), "epics:nt/NTTable:1.0");
    assert_eq!(strings(t.get("labels")), ["name", "x", "n"]);
    let cols = t
        .get("value")
        .and_then(Value::as_struct)
        .expect("value structure");
    let names: Vec<&str> = cols.iter().map(|(n, _)| n).collect();
    assert_eq!(names.len(), 3);
    assert_eq!(strings(cols.fields().first()), ["a", "b"]);
    let x = format!("value.{}", names[1]);
    ctx.put(&pv("table"))
        .set(x.as_str(), "[5, 6.5]")
        .timeout(T)
        .await
        .expect("put table column");
    let t = ctx
        .get(&pv("table"))
        .timeout(T)
        .await
        .expect("get table after put");
    let col = t.get(&x).and_then(Value::as_array).expect("a column");
    assert_eq!(col.get_f64(1), Some(6.5));
    let mut mon = ctx.monitor(&pv("table")).exec().expect("monitor table");
    assert_eq!(
        next_update(&mut mon)
            .await
            .value
            .get(&x)
            .and_then(Value::as_array)
            .and_then(|c| c.get_f64(0)),
        Some(5.0)
    );
    drop(mon);
    assert!(ctx
        .info(&pv("table"))
        .timeout(T)
        .await
        .expect("info table")
        .as_struct()
        .is_some());

    // NTNDArray: 64x32 ushort image.
    let img = ctx.get(&pv("image")).timeout(T).await.expect("get image");
    assert_eq!(img.id(), "epics:nt/NTNDArray:1.0");
    let frame = pva_codec::nt::NdArrayFrame::from_value(&img).expect("an NDArray frame");
    assert_eq!(frame.sizes(), vec![64, 32]);
    let Some(Value::Union(u)) = img.get("value") else {
        panic!("value is a union")
    };
    let (_, data) = u.selected.as_ref().expect("a selected member");
    let Value::Array(ScalarArray::U16(data)) = data.as_ref() else {
        panic!("ushort data")
    };
    assert_eq!(data.len(), 64 * 32);
    assert_eq!(data.get(100), Some(100));
    ctx.put(&pv("image"))
        .set("uniqueId", 77)
        .timeout(T)
        .await
        .expect("put uniqueId");
    let mut mon = ctx.monitor(&pv("image")).exec().expect("monitor image");
    assert_eq!(
        next_update(&mut mon).await.value.get("uniqueId"),
        Some(&Value::I32(77))
    );
    drop(mon);
    let info = ctx.info(&pv("image")).timeout(T).await.expect("info image");
    assert!(matches!(
        info.as_struct()
            .and_then(|s| s.member("value"))
            .map(|m| &m.desc),
        Some(FieldDesc::Union(_))
    ));

    // Nested: union, any, structure array, nested structures.
    let n = ctx.get(&pv("nested")).timeout(T).await.expect("get nested");
    let Some(Value::Union(u)) = n.get("u") else {
        panic!("u is a union")
    };
    let (sel, v) = u.selected.as_ref().expect("u has a selection");
    assert_eq!(u.desc.members()[*sel].name, "s");
    assert_eq!(**v, Value::String("selected".into()));
    let Some(Value::Any(a)) = n.get("a") else {
        panic!("a is any")
    };
    assert_eq!(a.get(), Some(&Value::F64(42.5)));
    let Some(Value::StructArray(sa)) = n.get("sa") else {
        panic!("sa is a structure array")
    };
    assert_eq!(sa.items.len(), 2);
    assert_eq!(
        sa.items[1].as_ref().and_then(|s| s.get("y")),
        Some(&Value::String("two".into()))
    );
    assert_eq!(n.get("inner.deeper.flag"), Some(&Value::Bool(true)));
    ctx.put(&pv("nested"))
        .set("inner.level", "7")
        .timeout(T)
        .await
        .expect("put nested");
    let mut mon = ctx.monitor(&pv("nested")).exec().expect("monitor nested");
    let u = next_update(&mut mon).await;
    assert_eq!(u.value.get("inner.level"), Some(&Value::I32(7)));
    assert_eq!(
        u.value.get("sa").map(|v| v.desc()),
        n.get("sa").map(|v| v.desc())
    );
    drop(mon);
    let info = ctx
        .info(&pv("nested"))
        .timeout(T)
        .await
        .expect("info nested");
    let s = info.as_struct().expect("a structure");
    assert!(matches!(
        s.member("a").map(|m| &m.desc),
        Some(FieldDesc::Any)
    ));
    assert!(matches!(
        s.member("sa").map(|m| &m.desc),
        Some(FieldDesc::StructArray(_))
    ));

    // A channel nobody has: a timeout, in the words the CLI prints.
    let err = ctx
        .get(&pv("missing"))
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("timeout after 0.3s waiting for '{}'", pv("missing"))
    );
    peer.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_enum_table_ndarray_and_nested_structures() {
    timeout(
        Duration::from_secs(60),
        structured_matrix("p4p_server.py", "c4n:"),
    )
    .await
    .expect("test time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvapy_enum_table_ndarray_and_nested_structures() {
    timeout(
        Duration::from_secs(60),
        structured_matrix("pvapy_server.py", "cyn:"),
    )
    .await
    .expect("test time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_rpc_returns_the_servers_answer() {
    timeout(Duration::from_secs(60), async {
        let ports = free_ports();
        let peer = start_peer("p4p_server.py", "c4r:", ports).await;
        let ctx = client(ports);
        let query = pva_codec::StructDesc::builder("")
            .scalar("a", ScalarType::String)
            .scalar("b", ScalarType::String)
            .build();
        let desc = std::sync::Arc::new(
            pva_codec::StructDesc::builder("epics:nt/NTURI:1.0")
                .scalar("scheme", ScalarType::String)
                .scalar("path", ScalarType::String)
                .structure("query", query)
                .build(),
        );
        let mut arg = StructValue::new(desc);
        arg.set("scheme", "pva").unwrap();
        arg.set("path", "c4r:add").unwrap();
        arg.set("query.a", "1.5").unwrap();
        arg.set("query.b", "2").unwrap();
        let got = ctx.rpc("c4r:add", arg).timeout(T).await.expect("rpc");
        let Some(Value::Struct(s)) = got else {
            panic!("a structure back: {got:?}")
        };
        assert_eq!(s.get("value"), Some(&Value::F64(3.5)));
        peer.kill().await;
    })
    .await
    .expect("test time limit");
}

/// Monitor the peer's `counter` (queue `queue_size`, pipelined or not), have the peer post
/// 1..=10,000, and check every update arrives, in order, marked changed and not squashed.
async fn all_10000_updates_in_order(script: &str, prefix: &str, pipeline: bool, queue_size: u32) {
    let ports = free_ports();
    let mut peer = start_peer(script, prefix, ports).await;
    let ctx = client(ports);
    let mut mon = ctx
        .monitor(&format!("{prefix}counter"))
        .pipeline(pipeline)
        .queue_size(queue_size)
        .exec()
        .expect("monitor starts");
    assert_eq!(next_event(&mut mon).await, MonitorEvent::Connected);
    assert_eq!(
        next_update(&mut mon).await.value.get("value"),
        Some(&Value::I64(0))
    );
    peer.command("count counter 10000").await;
    for want in 1..=10_000i64 {
        let u = next_update(&mut mon).await;
        assert_eq!(
            u.value.get("value"),
            Some(&Value::I64(want)),
            "update {want}"
        );
        // pvapy replaces the whole structure on update: bit 0 (all) or bit 1 (value).
        assert!(
            u.changed.get(0) || u.changed.get(1),
            "update {want}: value marked changed"
        );
        assert!(
            u.overrun.is_empty() && u.squashed == 0,
            "update {want} was squashed"
        );
    }
    peer.expect_line("DONE", T).await;
    peer.kill().await;
}

/// pvxs sizes the server queue and our window alike from queueSize, and drops posts that find
/// the queue full; so the queue holds the initial value and every post, the server sends as our
/// window allows, and we ack as we take updates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_pipelined_monitor_sees_all_10000_updates_in_order() {
    timeout(
        Duration::from_secs(60),
        all_10000_updates_in_order("p4p_server.py", "c4c:", true, 10_002),
    )
    .await
    .expect("test time limit");
}

/// pvxs adds whatever an ack carries to its window: our byte-counted window acknowledges more
/// updates than were taken while they are small, and pvxs then sends more than the first window
/// of 4 without our taking any; once we have taken them, our acks open the window again.
/// (pvxs sends what an ack allows only at its next post, so each round posts anew.) Between the
/// rounds the connection idles past the client's silence limit, kept by echoes pvxs answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p4p_accepts_acks_that_deepen_the_window() {
    timeout(Duration::from_secs(60), async {
        let ports = free_ports();
        let mut peer = start_peer("p4p_server.py", "c4w:", ports).await;
        let ctx = client(ports);
        let mut mon = ctx
            .monitor("c4w:counter")
            .pipeline(true)
            .queue_size(64)
            .byte_budget(1 << 20)
            .exec()
            .expect("monitor starts");
        assert_eq!(
            next_update(&mut mon).await.value.get("value"),
            Some(&Value::I64(0))
        );
        for round in 1..=2 {
            if round == 2 {
                // Idle for longer than the client's silence limit (4/3 of EPICS_PVA_CONN_TMO=5):
                // only echoes pvxs answers keep the connection.
                tokio::time::sleep(Duration::from_secs(8)).await;
            }
            peer.command("count counter 10000").await;
            peer.expect_line("DONE", T).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let waiting = mon.pending();
            assert!(
                (5..=64).contains(&waiting),
                "round {round}: pvxs sent past the first window, within ours: {waiting} waiting"
            );
            let mut last = 0;
            for _ in 0..waiting {
                let u = next_update(&mut mon).await;
                let Some(&Value::I64(n)) = u.value.get("value") else {
                    panic!("counter value {:?}", u.value.get("value"));
                };
                // In round 2 the server's queue still holds round 1's last posts first.
                assert!(round == 2 || n > last, "round {round}: {n} after {last}");
                assert_eq!(u.squashed, 0, "the client queue never squashes");
                last = n;
            }
        }
        peer.kill().await;
    })
    .await
    .expect("test time limit");
}

/// pvAccessCPP with pvDatabase (pvapy 5.6.0) breaks its own pipelining: asked for
/// `pipeline=true` it sends queueSize copies of the first value, then stalls, and pvapy's own
/// client loses most updates the same way. So against pvapy the 10,000 updates go without
/// pipelining, through a server queue large enough to hold every post; none may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvapy_monitor_sees_all_10000_updates_in_order() {
    timeout(
        Duration::from_secs(60),
        all_10000_updates_in_order("pvapy_server.py", "cyq:", false, 10_002),
    )
    .await
    .expect("test time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_reports_disconnect_and_resumes_after_the_server_restarts() {
    timeout(Duration::from_secs(60), async {
        let ports = free_ports();
        let peer = start_peer("p4p_server.py", "c4x:", ports).await;
        let ctx = client(ports);
        let mut mon = ctx.monitor("c4x:double").exec().expect("monitor starts");
        assert_eq!(next_event(&mut mon).await, MonitorEvent::Connected);
        assert_eq!(
            next_update(&mut mon).await.value.get("value"),
            Some(&Value::F64(2.25))
        );

        peer.kill().await;
        assert_eq!(next_event(&mut mon).await, MonitorEvent::Disconnected);

        let peer = start_peer("p4p_server.py", "c4x:", ports).await;
        assert_eq!(next_event(&mut mon).await, MonitorEvent::Connected);
        assert_eq!(
            next_update(&mut mon).await.value.get("value"),
            Some(&Value::F64(2.25))
        );
        ctx.put("c4x:double")
            .set("value", 9.5)
            .timeout(T)
            .await
            .expect("put after restart");
        assert_eq!(
            next_update(&mut mon).await.value.get("value"),
            Some(&Value::F64(9.5))
        );
        peer.kill().await;
    })
    .await
    .expect("test time limit");
}

/// With no UDP search address at all, a name server (EPICS_PVA_NAME_SERVERS) is searched over
/// TCP: pvxs answers there, and the channel is then created on that connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_over_tcp_finds_a_p4p_pv_through_the_name_server() {
    timeout(Duration::from_secs(60), async {
        let ports = free_ports();
        let peer = start_peer("p4p_server.py", "c4n:", ports).await;
        let mut env = peer_env(ports.0, ports.1);
        env.insert("EPICS_PVA_ADDR_LIST".into(), String::new());
        env.insert(
            "EPICS_PVA_NAME_SERVERS".into(),
            format!("127.0.0.1:{}", ports.0),
        );
        let config = ClientConfig::from_lookup(&|k| env.get(k).cloned()).expect("client config");
        assert!(config.addr_list.is_empty() && !config.auto_addr_list);
        let ctx = Context::new(config).expect("client context");
        let v = ctx
            .get("c4n:double")
            .timeout(T)
            .await
            .expect("get by name server");
        assert_eq!(v.get("value"), Some(&Value::F64(2.25)));
        let missing = ctx
            .get("c4n:no_such_pv")
            .timeout(Duration::from_secs(2))
            .await;
        assert!(missing.is_err(), "a name the server lacks is not found");
        peer.kill().await;
    })
    .await
    .expect("test time limit");
}

/// A server that stops answering but keeps its socket open (here: a p4p process frozen with
/// SIGSTOP) is noticed by the unanswered echoes: the monitor reports the loss, and resumes once
/// the server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_gives_up_on_a_frozen_server_and_resumes_when_it_thaws() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    timeout(Duration::from_secs(60), async {
        let ports = free_ports();
        let peer = start_peer("p4p_server.py", "c4f:", ports).await;
        let pid = Pid::from_raw(peer.child.id().expect("peer pid") as i32);
        let mut env = peer_env(ports.0, ports.1);
        env.insert("EPICS_PVA_CONN_TMO".into(), "2".into());
        let config = ClientConfig::from_lookup(&|k| env.get(k).cloned()).expect("client config");
        let ctx = Context::new(config).expect("client context");
        let mut mon = ctx.monitor("c4f:double").exec().expect("monitor starts");
        assert_eq!(next_event(&mut mon).await, MonitorEvent::Connected);
        next_update(&mut mon).await;

        kill(pid, Signal::SIGSTOP).expect("freeze the peer");
        let lost = timeout(Duration::from_secs(8), mon.recv()).await;
        kill(pid, Signal::SIGCONT).expect("thaw the peer");
        assert_eq!(
            lost.expect("the loss is noticed within 8 s (silence limit 2.7 s)"),
            Some(MonitorEvent::Disconnected)
        );
        assert_eq!(next_event(&mut mon).await, MonitorEvent::Connected);
        assert_eq!(
            next_update(&mut mon).await.value.get("value"),
            Some(&Value::F64(2.25))
        );
        peer.kill().await;
    })
    .await
    .expect("test time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pvapy_segmented_ndarray_is_reassembled() {
    timeout(Duration::from_secs(60), async {
        let ports = free_ports();
        let peer = start_peer("pvapy_server.py", "cyb:", ports).await;
        let ctx = client(ports);
        let check = |v: &StructValue| {
            let frame = pva_codec::nt::NdArrayFrame::from_value(v).expect("an NDArray frame");
            assert_eq!(frame.sizes(), vec![256, 256]);
            let ScalarArray::U16(data) = &frame.data else {
                panic!("ushort data")
            };
            assert_eq!(data.len(), 65536);
            assert!(
                data.iter().enumerate().all(|(i, x)| x == i as u16),
                "every pixel"
            );
        };
        check(
            &ctx.get("cyb:bigimage")
                .timeout(T)
                .await
                .expect("get big image"),
        );
        let mut mon = ctx.monitor("cyb:bigimage").exec().expect("monitor starts");
        check(&next_update(&mut mon).await.value);
        peer.kill().await;
    })
    .await
    .expect("test time limit");
}
