//! Our server through our own client: the pvRequest field selection of get and monitor, and
//! serving on every interface of EPICS_PVAS_INTF_ADDR_LIST.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use pva::client::{ClientError, Context, MonitorEvent};
use pva::server::{Server, SharedPv, StaticSource};
use pva::{ClientConfig, ServerConfig};
use pva_codec::nt::NtScalar;
use pva_codec::{BitSet, ScalarType, StructValue, Value};

const LIMIT: Duration = Duration::from_secs(20);

fn nt_double(v: f64) -> StructValue {
    let mut s = NtScalar::new(ScalarType::F64).create();
    s.set("value", v).unwrap();
    s.set("alarm.severity", 1).unwrap();
    s
}

fn member_names(v: &StructValue) -> Vec<&str> {
    v.iter().map(|(name, _)| name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_monitor_serve_only_the_selected_fields() {
    let pv = SharedPv::mailbox(nt_double(1.5));
    let source = Arc::new(StaticSource::new());
    source.add("t:sel", pv.clone());
    let server = Server::start(ServerConfig::isolated(), vec![source])
        .await
        .expect("server starts");
    let ctx = Context::new(ClientConfig::isolated(server.udp_addr())).unwrap();
    tokio::time::timeout(LIMIT, async {
        let got = ctx
            .get("t:sel")
            .request("field(value,alarm.severity)")
            .await
            .unwrap();
        assert_eq!(got.id(), "epics:nt/NTScalar:1.0");
        assert_eq!(member_names(&got), ["value", "alarm"]);
        assert_eq!(got.get("value"), Some(&Value::F64(1.5)));
        let alarm = got.get("alarm").and_then(Value::as_struct).unwrap();
        assert_eq!(member_names(alarm), ["severity"]);
        assert_eq!(alarm.get("severity"), Some(&Value::I32(1)));

        match ctx.get("t:sel").request("field(nothing)").await {
            Err(ClientError::Remote { status, .. }) => {
                assert!(status.message.contains("selects no field"), "{status:?}")
            }
            other => panic!("a request naming no field must fail: {other:?}"),
        }

        let mut monitor = ctx.monitor("t:sel").request("field(value)").exec().unwrap();
        let mut values = Vec::new();
        while values.len() < 2 {
            match monitor.recv().await.expect("monitor events") {
                MonitorEvent::Connected => {}
                MonitorEvent::Update(u) => {
                    assert_eq!(member_names(&u.value), ["value"]);
                    values.push(u.value.get("value").cloned().unwrap());
                    if values.len() == 1 {
                        // Outside the selection: no update. Then a value change: one.
                        let desc = pv.current().desc().clone();
                        pv.update(|v| {
                            v.set("alarm.severity", 2).unwrap();
                            BitSet::with(desc.bit_of("alarm.severity").unwrap())
                        });
                        pv.update(|v| {
                            v.set("value", 2.5).unwrap();
                            BitSet::with(desc.bit_of("value").unwrap())
                        });
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(values, [Value::F64(1.5), Value::F64(2.5)]);
    })
    .await
    .expect("within the time limit");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_interface_of_the_list_is_served() {
    let beacon_sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let env: HashMap<&str, String> = HashMap::from([
        (
            "EPICS_PVAS_INTF_ADDR_LIST",
            "127.0.0.1 127.0.0.2".to_owned(),
        ),
        ("EPICS_PVAS_SERVER_PORT", "0".to_owned()),
        ("EPICS_PVAS_BROADCAST_PORT", "0".to_owned()),
        (
            "EPICS_PVAS_BEACON_ADDR_LIST",
            beacon_sink.local_addr().unwrap().to_string(),
        ),
        ("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "NO".to_owned()),
    ]);
    let config = ServerConfig::from_lookup(&|k| env.get(k).cloned()).unwrap();
    let source = Arc::new(StaticSource::new());
    source.add("t:both", SharedPv::readonly(nt_double(4.25)));
    let server = Server::start(config, vec![source])
        .await
        .expect("server starts");

    let ips = [
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
    ];
    let tcp_ips: Vec<IpAddr> = server.tcp_addrs().iter().map(|a| a.ip()).collect();
    let udp_ips: Vec<IpAddr> = server.udp_addrs().iter().map(|a| a.ip()).collect();
    assert_eq!(tcp_ips, ips);
    assert_eq!(udp_ips, ips);
    // One port number on every interface, as pvxs does.
    assert_eq!(server.tcp_addrs()[0].port(), server.tcp_addrs()[1].port());
    assert_eq!(server.udp_addrs()[0].port(), server.udp_addrs()[1].port());

    for udp in server.udp_addrs() {
        let ctx = Context::new(ClientConfig::isolated(*udp)).unwrap();
        let found = tokio::time::timeout(LIMIT, ctx.resolve("t:both"))
            .await
            .expect("the server answers a search on each interface");
        assert_eq!(
            found.ip(),
            udp.ip(),
            "connect through the interface searched"
        );
        let got = ctx.get("t:both").await.unwrap();
        assert_eq!(got.get("value"), Some(&Value::F64(4.25)));
    }
    server.stop().await;
}
