//! A `SharedPv`'s life as our own client sees it over a loopback server: closing it ends every
//! subscription, a later `open` serves again, and its hooks open it for the first channel and
//! close it after the last.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pva::client::{ClientError, Context, Monitor, MonitorEvent};
use pva::server::{Server, SharedPv, StaticSource};
use pva::{ClientConfig, ServerConfig};
use pva_codec::nt::NtScalar;
use pva_codec::{ScalarType, StructValue, Value};

fn counter(n: i64) -> StructValue {
    let mut v = NtScalar::new(ScalarType::I64).create();
    v.set("value", n).unwrap();
    v
}

async fn serve(name: &str, pv: &SharedPv) -> (Server, Context) {
    let source = Arc::new(StaticSource::new());
    source.add(name, pv.clone());
    let server = Server::start(ServerConfig::isolated(), vec![source])
        .await
        .expect("start server");
    let ctx = Context::new(ClientConfig::isolated(server.udp_addr())).unwrap();
    (server, ctx)
}

async fn next_event(m: &mut Monitor) -> Option<MonitorEvent> {
    tokio::time::timeout(Duration::from_secs(10), m.recv())
        .await
        .expect("an event within 10 s")
}

async fn next_value(m: &mut Monitor) -> i64 {
    loop {
        match next_event(m).await {
            Some(MonitorEvent::Update(u)) => {
                return u.value.get("value").and_then(Value::as_i64).unwrap()
            }
            Some(MonitorEvent::Connected) => continue,
            other => panic!("expected an update, got {other:?}"),
        }
    }
}

async fn get_value(ctx: &Context, name: &str) -> Result<i64, ClientError> {
    let v = ctx.get(name).await?;
    Ok(v.get("value").and_then(Value::as_i64).unwrap())
}

/// Wait up to 10 s for `done`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "{what} within 10 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_the_subscription_and_open_serves_again() {
    let pv = SharedPv::readonly(counter(1));
    let (_server, ctx) = serve("life:close", &pv).await;
    let mut m = ctx.monitor("life:close").exec().unwrap();
    assert_eq!(next_value(&mut m).await, 1);
    pv.post(counter(2));
    assert_eq!(next_value(&mut m).await, 2);

    pv.close();
    match next_event(&mut m).await {
        Some(MonitorEvent::Finished(Ok(()))) => {}
        other => panic!("the close ends the subscription, got {other:?}"),
    }
    assert!(next_event(&mut m).await.is_none(), "nothing after the end");
    match get_value(&ctx, "life:close").await {
        Err(ClientError::Remote { status, .. }) => {
            assert!(status.message.contains("closed"), "{status:?}")
        }
        other => panic!("a closed PV refuses a get, got {other:?}"),
    }

    pv.open(counter(10));
    assert_eq!(get_value(&ctx, "life:close").await.unwrap(), 10);
    let mut again = ctx.monitor("life:close").exec().unwrap();
    assert_eq!(next_value(&mut again).await, 10);
    pv.post(counter(11));
    assert_eq!(next_value(&mut again).await, 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_open_for_the_first_channel_and_close_after_the_last() {
    let firsts = Arc::new(AtomicUsize::new(0));
    let lasts = Arc::new(AtomicUsize::new(0));
    let pv = SharedPv::builder(counter(0))
        .on_first_connect({
            let firsts = firsts.clone();
            move |pv| {
                let n = firsts.fetch_add(1, Ordering::SeqCst) as i64 + 1;
                pv.open(counter(100 * n));
            }
        })
        .on_last_disconnect({
            let lasts = lasts.clone();
            move |pv| {
                lasts.fetch_add(1, Ordering::SeqCst);
                pv.close();
            }
        })
        .build();
    pv.close();
    let (server, ctx) = serve("life:hooks", &pv).await;

    let mut m = ctx.monitor("life:hooks").exec().unwrap();
    assert_eq!(next_value(&mut m).await, 100, "opened by the first channel");
    assert_eq!(get_value(&ctx, "life:hooks").await.unwrap(), 100);
    // A second client's channel is not the first.
    let other = Context::new(ClientConfig::isolated(server.udp_addr())).unwrap();
    assert_eq!(get_value(&other, "life:hooks").await.unwrap(), 100);
    assert_eq!(firsts.load(Ordering::SeqCst), 1);
    drop(other);
    drop(m);
    drop(ctx);
    until("the last channel leaves and closes the PV", || {
        lasts.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(!pv.is_open());

    let ctx = Context::new(ClientConfig::isolated(server.udp_addr())).unwrap();
    assert_eq!(
        get_value(&ctx, "life:hooks").await.unwrap(),
        200,
        "opened again by the next first channel"
    );
    assert_eq!(firsts.load(Ordering::SeqCst), 2);
}
