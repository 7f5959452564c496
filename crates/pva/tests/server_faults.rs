//! Our server under faults: a client that stops reading must not cost memory or slow other
//! clients, and a monitoring p4p client must get updates again after the server restarts.

#[path = "../../../tests/common/peers.rs"]
mod common;

use common::p4p_monitor::P4pMonitor;

use std::sync::Arc;
use std::time::{Duration, Instant};

use pva::server::{Server, SharedPv, StaticSource};
use pva::transport::{write_chunks, FrameReader};
use pva::ServerConfig;
use pva_codec::msg::op::{MONITOR_START, SUB_INIT};
use pva_codec::msg::{cmd, CreateChannel, OpRequest, OpRequestBody, ValidationResponse};
use pva_codec::nt::NtScalar;
use pva_codec::{
    AnyValue, BitSet, ByteOrder, Direction, Message, PodArray, PvRequest, ScalarArray, ScalarType,
    ValueEncoder, Writer,
};
use tokio::net::TcpStream;

fn counter_pv() -> SharedPv {
    SharedPv::readonly(NtScalar::new(ScalarType::I64).create())
}

fn set_counter(pv: &SharedPv, n: i64) {
    pv.update(|v| {
        v.set("value", n).expect("long");
        BitSet::with(1)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_client_gets_updates_again_after_the_server_restarts() {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp = common::free_udp_port();
    let config = ServerConfig {
        tcp_port: tcp,
        udp_port: udp,
        ..ServerConfig::isolated()
    };
    let source = Arc::new(StaticSource::new());
    let pv = counter_pv();
    source.add("t:restart", pv.clone());
    let server = Server::start(config.clone(), vec![source.clone()])
        .await
        .unwrap();
    assert_eq!(server.tcp_addr().port(), tcp);

    let monitor =
        tokio::task::spawn_blocking(move || P4pMonitor::start(udp, "t:restart", 1000, 60))
            .await
            .unwrap();
    assert_eq!(monitor.next_value(Duration::from_secs(20)), 0);
    set_counter(&pv, 1);
    assert_eq!(monitor.next_value(Duration::from_secs(10)), 1);

    server.stop().await;
    assert_eq!(
        monitor.next(Duration::from_secs(10))["event"],
        "disconnected"
    );

    // A new server on the same ports, with the PV moved on meanwhile.
    set_counter(&pv, 1000);
    let server = Server::start(config, vec![source]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let e = monitor.next(deadline - Instant::now());
        if e["value"] == 1000 {
            break;
        }
        seen.push(e);
    }
    assert!(
        Instant::now() < deadline,
        "no update after the restart; saw {seen:?}"
    );
    server.stop().await;
}

/// A client that does the handshake, starts a monitor with a queue of 4, and then never
/// reads again. Returns the socket so that it stays open.
async fn stalled_client(addr: std::net::SocketAddr, pv: &str) -> TcpStream {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd, 1 << 24);
    let order = ByteOrder::Little;
    let send = |msgs: Vec<Message>| {
        let mut w = Writer::new(order);
        for m in msgs {
            m.write(&mut w, Direction::FromClient, &mut ValueEncoder::default())
                .unwrap();
        }
        w.finish()
    };
    write_chunks(
        &mut wr,
        &send(vec![
            Message::ValidationResponse(ValidationResponse {
                receive_buffer_size: 0x10000,
                registry_size: 0x7fff,
                qos: 0,
                method: "anonymous".into(),
                credentials: AnyValue(None),
            }),
            Message::CreateChannel(CreateChannel {
                channels: vec![(1, pv.into())],
            }),
        ]),
    )
    .await
    .unwrap();
    let sid = loop {
        let frame = reader.next().await.unwrap().expect("server answers");
        if frame.header.command == cmd::CREATE_CHANNEL {
            let mut r = pva_codec::Reader::new(frame.payload, frame.header.order);
            let _cid = r.u32().unwrap();
            break r.u32().unwrap();
        }
    };
    let pv_request = PvRequest::parse("record[queueSize=4]").unwrap().to_value();
    write_chunks(
        &mut wr,
        &send(vec![
            Message::OpRequest(OpRequest {
                command: cmd::MONITOR,
                sid,
                ioid: 1,
                subcmd: SUB_INIT,
                body: OpRequestBody::Init {
                    pv_request,
                    pipeline_window: None,
                },
            }),
            Message::OpRequest(OpRequest {
                command: cmd::MONITOR,
                sid,
                ioid: 1,
                subcmd: MONITOR_START,
                body: OpRequestBody::Empty,
            }),
        ]),
    )
    .await
    .unwrap();
    wr.reunite(reader.into_inner()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_costs_bounded_memory_and_slows_no_one() {
    const FRAME: usize = 1 << 20;
    const UPDATES: i64 = 400;
    let mut image = NtScalar::array(ScalarType::U8).create();
    image
        .set(
            "value",
            ScalarArray::U8(PodArray::from_vec(vec![0u8; FRAME])),
        )
        .unwrap();
    let big = SharedPv::readonly(image);
    let counter = counter_pv();
    let source = Arc::new(StaticSource::new());
    source.add("t:big", big.clone());
    source.add("t:count", counter.clone());
    let server = Server::start(ServerConfig::isolated(), vec![source])
        .await
        .unwrap();
    let udp = server.udp_addr().port();

    let _stalled = stalled_client(server.tcp_addr(), "t:big").await;
    let monitor =
        tokio::task::spawn_blocking(move || P4pMonitor::start(udp, "t:count", UPDATES, 60))
            .await
            .unwrap();
    assert_eq!(monitor.next_value(Duration::from_secs(20)), 0);

    let before = common::resident_bytes();
    // 400 MiB of frames to the stalled client, and a counter update with each.
    for n in 1..=UPDATES {
        let mut v = big.current();
        v.set(
            "value",
            ScalarArray::U8(PodArray::from_vec(vec![n as u8; FRAME])),
        )
        .unwrap();
        big.post_changed(v, BitSet::with(1));
        set_counter(&counter, n);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let grown = common::resident_bytes().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "server memory grew by {} MiB while 400 MiB went to a stalled client",
        grown >> 20
    );

    // The other client got every counter update, in order.
    let values: Vec<i64> = tokio::task::spawn_blocking(move || {
        let mut values = Vec::new();
        loop {
            let n = monitor.next_value(Duration::from_secs(20));
            values.push(n);
            if n == UPDATES {
                return values;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(values, (1..=UPDATES).collect::<Vec<_>>());
    server.stop().await;
}
