//! The consumer's hooks, in one process on loopback: the subscription is announced before any
//! frame is published, and the processing step sees every frame once, in order; without a
//! step, frames are still all processed and compressed ones still checked; a full backlog
//! holds the receiver back without holding its thread.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pva::client::Context;
use pva::server::{Server, StaticSource};
use pva::{ClientConfig, ServerConfig};
use pva_codec::ScalarType;
use stream::codec::Codec;
use stream::consumer::{consume_with, ConsumerConfig, Hooks, Report};
use stream::simdet::{FrameOptions, SimDet, SimDetConfig};
use stream::stats::FrameStats;
use tokio::sync::mpsc::UnboundedReceiver;

const FRAMES: u64 = 50;

/// Run a consumer with `hooks` to its end, within a minute.
async fn consume_until_done(ctx: &Context, config: &ConsumerConfig, hooks: Hooks) -> Report {
    tokio::time::timeout(
        Duration::from_secs(60),
        consume_with(
            ctx,
            config,
            hooks,
            Duration::from_secs(1),
            std::future::pending(),
            |_| {},
        ),
    )
    .await
    .expect("the consumer ends in time")
    .unwrap()
}

/// A simulated detector of `frames` 16x8 8-bit frames at `fps` (0: as fast as they are taken),
/// served as `name` by a loopback server; and a client context that finds it.
async fn detector_on_loopback(name: &str, fps: f64, frames: u64) -> (Arc<SimDet>, Server, Context) {
    let det = Arc::new(
        SimDet::new(SimDetConfig {
            nx: 16,
            ny: 8,
            dtype: ScalarType::U8,
            fps,
            frames: Some(frames),
            runtime: None,
            start_delay: Duration::ZERO,
            seed: 5,
            counter: false,
            start_id: 1,
        })
        .unwrap(),
    );
    let source = Arc::new(StaticSource::new());
    source.add(name, det.pv().clone());
    let server = Server::start(ServerConfig::isolated(), vec![source])
        .await
        .unwrap();
    let ctx = Context::new(ClientConfig::isolated(server.udp_addr())).unwrap();
    (det, server, ctx)
}

/// Frame ids in the order the processing step saw them.
type Seen = Arc<Mutex<Vec<i64>>>;

/// Hooks whose step runs `step` on each frame and then records its id, and that announce each
/// subscription on the returned receiver.
fn recording_hooks(
    step: impl Fn(&stream::Frame) + Send + Sync + 'static,
) -> (Hooks, Seen, UnboundedReceiver<()>) {
    let (subscribed_tx, subscribed_rx) = tokio::sync::mpsc::unbounded_channel();
    let seen = Seen::default();
    let hooks = Hooks {
        process: Some({
            let seen = seen.clone();
            Arc::new(move |frame: &stream::Frame| {
                step(frame);
                seen.lock().unwrap().push(frame.meta.unique_id);
            })
        }),
        subscribed: Some(Box::new(move || {
            let _ = subscribed_tx.send(());
        })),
    };
    (hooks, seen, subscribed_rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_published_after_the_subscription_hook_are_all_processed_in_order() {
    let (det, server, ctx) = detector_on_loopback("h:det", 500.0, FRAMES).await;

    let (hooks, seen, mut subscribed_rx) = recording_hooks(|frame| {
        let stats = FrameStats::of(frame).expect("a pixel frame has statistics");
        assert_eq!(stats.count, 16 * 8);
    });
    let publisher = {
        let det = det.clone();
        tokio::spawn(async move {
            subscribed_rx
                .recv()
                .await
                .expect("the subscription is announced");
            let published =
                tokio::task::spawn_blocking(move || det.run(&AtomicBool::new(false), |_| {}))
                    .await
                    .unwrap();
            (published, subscribed_rx)
        })
    };
    let config = ConsumerConfig {
        pv: "h:det".into(),
        expected: Some(FRAMES),
        runtime: Some(Duration::from_secs(30)),
        ..ConsumerConfig::default()
    };
    let report = consume_until_done(&ctx, &config, hooks).await;
    let (published, mut subscribed_rx) = publisher.await.unwrap();
    assert_eq!(published.frames, FRAMES);
    assert_eq!(report.counts.received, FRAMES, "{report:?}");
    assert_eq!(report.counts.missed, 0);
    assert_eq!(report.processed, FRAMES);
    let expected: Vec<i64> = (1..=FRAMES as i64).collect();
    assert_eq!(*seen.lock().unwrap(), expected);
    assert!(
        subscribed_rx.try_recv().is_err(),
        "announced once, without reconnection"
    );
    server.stop().await;
}

/// Without a processing step, plain frames are done with on the receiving side and compressed
/// ones still go to a processing thread to be decompressed: every frame counts as processed,
/// and a corrupt compressed frame is an error frame, not a processed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_step_every_frame_is_processed_and_corrupt_ones_are_error_frames() {
    let config = SimDetConfig {
        nx: 16,
        ny: 8,
        dtype: ScalarType::U16,
        fps: 0.0,
        frames: None,
        runtime: None,
        start_delay: Duration::ZERO,
        seed: 6,
        counter: false,
        start_id: 1,
    };
    let plain = SimDet::new(config.clone()).unwrap();
    let packed = SimDet::with_options(
        config,
        FrameOptions {
            codec: Some(Codec::Lz4),
            ..FrameOptions::default()
        },
    )
    .unwrap();
    let pv = plain.pv().clone();
    let source = Arc::new(StaticSource::new());
    source.add("h:mixed", pv.clone());
    let server = Server::start(ServerConfig::isolated(), vec![source])
        .await
        .unwrap();
    let ctx = Context::new(ClientConfig::isolated(server.udp_addr())).unwrap();
    let (subscribed_tx, mut subscribed_rx) = tokio::sync::mpsc::unbounded_channel();
    let hooks = Hooks {
        subscribed: Some(Box::new(move || {
            let _ = subscribed_tx.send(());
        })),
        ..Hooks::default()
    };
    // Frames 1-10 plain, 11-20 compressed, 15 of them with a size that does not match.
    let publisher = tokio::spawn(async move {
        subscribed_rx.recv().await.expect("subscribed");
        for id in 1..=20 {
            let value = if id <= 10 {
                plain.frame(id)
            } else {
                let mut v = packed.frame(id);
                if id == 15 {
                    v.set("uncompressedSize", 12i64).unwrap();
                }
                v
            };
            assert!(pv.wait_for_room(Duration::from_secs(10)));
            pv.post(value);
        }
    });
    let config = ConsumerConfig {
        pv: "h:mixed".into(),
        expected: Some(20),
        runtime: Some(Duration::from_secs(30)),
        origin: stream::Origin::Id(1),
        ..ConsumerConfig::default()
    };
    let report = consume_until_done(&ctx, &config, hooks).await;
    publisher.await.unwrap();
    assert_eq!(report.counts.received, 20, "{report:?}");
    assert_eq!(report.counts.missed, 0, "{report:?}");
    assert_eq!(report.error_frames, 1, "{report:?}");
    assert!(report.errors[0].starts_with("frame 15:"), "{report:?}");
    assert_eq!(report.processed, 19, "{report:?}");
    server.stop().await;
}

/// On a current-thread runtime, shared here by the server, the connection and the consumer, a
/// step slower than the stream fills the backlog of one frame again and again: the receiver
/// waits for room without holding the thread, and every frame arrives and is processed once,
/// in order.
#[tokio::test]
async fn a_full_backlog_waits_without_holding_a_current_thread_runtime() {
    const SLOW_FRAMES: u64 = 30;
    let (det, server, ctx) = detector_on_loopback("h:slow", 0.0, SLOW_FRAMES).await;
    let (hooks, seen, mut subscribed_rx) =
        recording_hooks(|_| std::thread::sleep(Duration::from_millis(5)));
    let publisher = tokio::spawn(async move {
        subscribed_rx.recv().await.expect("subscribed");
        tokio::task::spawn_blocking(move || det.run(&AtomicBool::new(false), |_| {}))
            .await
            .unwrap()
    });
    let config = ConsumerConfig {
        pv: "h:slow".into(),
        expected: Some(SLOW_FRAMES),
        runtime: Some(Duration::from_secs(30)),
        threads: 1,
        backlog: 1,
        ..ConsumerConfig::default()
    };
    let report = consume_until_done(&ctx, &config, hooks).await;
    assert_eq!(publisher.await.unwrap().frames, SLOW_FRAMES);
    assert_eq!(report.counts.received, SLOW_FRAMES, "{report:?}");
    assert_eq!(report.counts.missed, 0, "{report:?}");
    assert_eq!(report.processed, SLOW_FRAMES, "{report:?}");
    let expected: Vec<i64> = (1..=SLOW_FRAMES as i64).collect();
    assert_eq!(*seen.lock().unwrap(), expected);
    server.stop().await;
}
