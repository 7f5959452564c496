//! A relay distributing a detector stream over three consumers, in one process on loopback:
//! each frame reaches exactly one consumer, in turn, and each consumer's books (counting in
//! steps of three) are complete.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use pva::client::Context;
use pva::server::{Server, StaticSource};
use pva::{ClientConfig, ServerConfig};
use pva_codec::ScalarType;
use stream::consumer::{consume, ConsumerConfig};
use stream::relay::{relay, RelayConfig};
use stream::simdet::{SimDet, SimDetConfig};

const FRAMES: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribution_hands_each_frame_to_one_consumer_in_turn() {
    let det = Arc::new(
        SimDet::new(SimDetConfig {
            nx: 32,
            ny: 32,
            dtype: ScalarType::U16,
            fps: 300.0,
            frames: Some(FRAMES),
            runtime: None,
            start_delay: Duration::from_secs(3),
            seed: 3,
            counter: false,
            start_id: 1,
        })
        .unwrap(),
    );
    let det_source = Arc::new(StaticSource::new());
    det_source.add("d:det", det.pv().clone());
    let det_server = Server::start(ServerConfig::isolated(), vec![det_source])
        .await
        .unwrap();

    let relay_source = Arc::new(StaticSource::new());
    let relay_server = Server::start(ServerConfig::isolated(), vec![relay_source.clone()])
        .await
        .unwrap();
    let upstream = Context::new(ClientConfig::isolated(det_server.udp_addr())).unwrap();
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relay_task = tokio::spawn(async move {
        let config = RelayConfig {
            from: "d:det".into(),
            as_name: "d:dist".into(),
            distribute: Some(3),
            upstream_queue: 64,
        };
        relay(
            &upstream,
            relay_source,
            &config,
            Duration::from_secs(1),
            async {
                let _ = relay_stopped.await;
            },
            |_| {},
        )
        .await
        .unwrap()
    });

    let downstream = Context::new(ClientConfig::isolated(relay_server.udp_addr())).unwrap();
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let ctx = downstream.clone();
            tokio::spawn(async move {
                let config = ConsumerConfig {
                    pv: "d:dist".into(),
                    expected: Some(FRAMES / 3),
                    runtime: Some(Duration::from_secs(30)),
                    stride: 3,
                    ..ConsumerConfig::default()
                };
                consume(
                    &ctx,
                    &config,
                    Duration::from_secs(1),
                    std::future::pending(),
                    |_| {},
                )
                .await
                .unwrap()
            })
        })
        .collect();

    let publisher = {
        let det = det.clone();
        tokio::task::spawn_blocking(move || det.run(&AtomicBool::new(false), |_| {}))
    };
    assert_eq!(publisher.await.unwrap().frames, FRAMES);
    let mut reports = Vec::new();
    for c in consumers {
        reports.push(
            tokio::time::timeout(Duration::from_secs(60), c)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let _ = stop_relay.send(());
    let relayed = relay_task.await.unwrap();

    assert_eq!(
        relayed.undelivered, 0,
        "all three were subscribed in time: {relayed:?} {reports:?}"
    );
    assert_eq!(relayed.relayed, FRAMES);
    let mut firsts = Vec::new();
    for r in &reports {
        assert_eq!(r.counts.received, FRAMES / 3, "{r:?}");
        assert_eq!(r.counts.missed, 0, "{r:?}");
        assert_eq!(r.counts.ignored, 0, "no other consumer's frame: {r:?}");
        assert_eq!(r.initial_id, None, "the initial value is empty: {r:?}");
        firsts.push(r.first_id.unwrap());
    }
    firsts.sort_unstable();
    assert_eq!(firsts, vec![1, 2, 3], "in turn, in order of subscription");
    let shares: Vec<u64> = relayed.consumers.iter().map(|c| c.dropped).collect();
    assert_eq!(shares, vec![0, 0, 0]);
}
