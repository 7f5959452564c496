//! The client's monitor queue over a loopback server: bounded, every squashed update counted,
//! and a dropped monitor destroyed on the server at once.

use std::sync::Arc;
use std::time::Duration;

use pva::client::{Context, Monitor, MonitorEvent, Update};
use pva::server::{Server, SharedPv, StaticSource};
use pva::{ClientConfig, ServerConfig};
use pva_codec::nt::NtScalar;
use pva_codec::{ScalarType, Value};

async fn serve(name: &str) -> (Server, SharedPv) {
    let pv = SharedPv::readonly(NtScalar::new(ScalarType::I64).create());
    let source = Arc::new(StaticSource::new());
    source.add(name, pv.clone());
    let server = Server::start(ServerConfig::isolated(), vec![source])
        .await
        .expect("start server");
    (server, pv)
}

fn counter(pv: &SharedPv, n: i64) {
    let mut v = pv.current();
    v.set("value", n).unwrap();
    pv.post(v);
}

async fn next_update(m: &mut Monitor) -> Update {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), m.recv()).await {
            Ok(Some(MonitorEvent::Update(u))) => return u,
            Ok(Some(MonitorEvent::Connected)) => continue,
            other => panic!("expected an update, got {other:?}"),
        }
    }
}

fn value_of(u: &Update) -> i64 {
    u.value.get("value").and_then(Value::as_i64).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_who_falls_behind_loses_counted_updates_only() {
    let (server, pv) = serve("q:count").await;
    let ctx = Context::new(ClientConfig::isolated(server.udp_addr())).unwrap();
    let mut m = ctx
        .monitor("q:count")
        .queue_size(4)
        .pipeline(false)
        .exec()
        .unwrap();
    assert_eq!(value_of(&next_update(&mut m).await), 0, "the initial value");

    // The user does not read meanwhile. Posts are spaced so that the server's queue seldom
    // overflows; when it does (a loaded machine), the server counts that loss itself.
    const POSTED: i64 = 200;
    for n in 1..=POSTED {
        counter(&pv, n);
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(m.pending() <= 4, "the queue is bounded: {}", m.pending());
    assert!(
        m.squashed() > 0,
        "the user fell behind, so updates were squashed"
    );

    let mut last = 0;
    let mut seen = 0;
    let mut squashed_sum = 0;
    while last < POSTED {
        let u = next_update(&mut m).await;
        let n = value_of(&u);
        assert!(
            (u.squashed as i64) < n - last,
            "an update claims more losses than the gap before it"
        );
        squashed_sum += u.squashed;
        seen += 1;
        last = n;
    }
    let server_squashed: u64 = pv.subscriber_stats().iter().map(|s| s.squashed).sum();
    assert_eq!(
        seen + squashed_sum as i64 + server_squashed as i64,
        POSTED,
        "every update was seen, or counted lost by the client or by the server"
    );
    assert_eq!(m.squashed(), squashed_sum);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_monitor_makes_the_server_wait_and_loses_nothing_on_the_client() {
    let (server, pv) = serve("q:pipe").await;
    let ctx = Context::new(ClientConfig::isolated(server.udp_addr())).unwrap();
    let mut m = ctx
        .monitor("q:pipe")
        .queue_size(4)
        .pipeline(true)
        .exec()
        .unwrap();
    next_update(&mut m).await;
    for n in 1..=50 {
        counter(&pv, n);
        tokio::time::sleep(Duration::from_micros(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut last = 0;
    while last < 50 {
        let u = next_update(&mut m).await;
        assert_eq!(
            u.squashed, 0,
            "the window keeps the client queue from overflowing"
        );
        last = value_of(&u);
    }
    assert_eq!(m.squashed(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_monitor_destroys_the_subscription_on_the_server_at_once() {
    let (server, pv) = serve("q:drop").await;
    let ctx = Context::new(ClientConfig::isolated(server.udp_addr())).unwrap();
    let mut m = ctx.monitor("q:drop").exec().unwrap();
    next_update(&mut m).await;
    assert_eq!(pv.subscriber_count(), 1);
    drop(m);
    // The PV stays quiet: only a destroy from the client can end the subscription.
    let gone = tokio::time::timeout(Duration::from_secs(2), async {
        while pv.subscriber_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the server still holds the dropped monitor");
}
