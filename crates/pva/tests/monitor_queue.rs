//! The client's monitor queue over a loopback server: bounded, every squashed update counted,
//! a dropped monitor destroyed on the server at once; and the byte-counted window, where a fast
//! server of 2 MiB frames and a slow user keep no more bytes in flight than the budget (counted
//! by a TCP relay between the client and the server), also when the PV's first value is an
//! empty image, while small updates get a deep window.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pva::client::{Context, Monitor, MonitorEvent, Update};
use pva::server::{Server, SharedPv, StaticSource};
use pva::{ClientConfig, ServerConfig};
use pva_codec::nt::NtScalar;
use pva_codec::{PodArray, ScalarArray, ScalarType, StructDesc, StructValue, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1 << 20;
const FRAME: usize = 2 << 20;

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

/// A relay on loopback to `server`; the returned counter holds the bytes it has passed from
/// the server to the client.
async fn relay(server: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let down = Arc::new(AtomicU64::new(0));
    let counter = down.clone();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let upstream = TcpStream::connect(server).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut ur, mut uw) = upstream.into_split();
        tokio::spawn(async move { tokio::io::copy(&mut cr, &mut uw).await });
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match ur.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
            counter.fetch_add(n as u64, Ordering::SeqCst);
        }
    });
    (addr, down)
}

/// A PV of frames whose current value holds `len` bytes.
fn frame_pv(len: usize) -> SharedPv {
    let desc = Arc::new(
        StructDesc::builder("frame_t")
            .scalar("count", ScalarType::I64)
            .array("value", ScalarType::U8)
            .build(),
    );
    let mut v = StructValue::new(desc);
    v.set(
        "value",
        Value::Array(ScalarArray::U8(PodArray::from_vec(vec![7u8; len]))),
    )
    .unwrap();
    SharedPv::readonly(v)
}

/// A server of some PVs reached through a byte-counting [`relay`], and a client of it.
struct Relayed {
    _server: Server,
    ctx: Context,
    via: SocketAddr,
    /// Bytes the relay has passed from the server to the client.
    down: Arc<AtomicU64>,
}

impl Relayed {
    async fn serve(pvs: &[(&str, &SharedPv)]) -> Relayed {
        let source = Arc::new(StaticSource::new());
        for &(name, pv) in pvs {
            source.add(name, pv.clone());
        }
        let server = Server::start(ServerConfig::isolated(), vec![source])
            .await
            .expect("start server");
        let (via, down) = relay(server.tcp_addr()).await;
        let ctx = Context::new(ClientConfig::isolated(server.udp_addr())).unwrap();
        Relayed {
            _server: server,
            ctx,
            via,
            down,
        }
    }

    /// A pipelined monitor of `name` through the relay: a queue of 256, at most `budget` bytes
    /// in flight.
    fn monitor(&self, name: &str, budget: u64) -> Monitor {
        self.ctx
            .monitor(name)
            .queue_size(256)
            .pipeline(true)
            .byte_budget(budget)
            .server(self.via)
            .exec()
            .unwrap()
    }
}

/// Subscribe to `name` and take the first value at once; then post 2 MiB frames to `frames`
/// far faster than the user takes them (one per 20 ms), and check that the bytes in flight
/// through the relay stay within `budget` while the server fills the window.
async fn a_slow_user_takes_frames(frames: &SharedPv, relayed: &Relayed, name: &str, budget: u64) {
    let down = &relayed.down;
    let before = down.load(Ordering::SeqCst);
    let mut m = relayed.monitor(name, budget);
    let mut taken_bytes = next_update(&mut m).await.value.array_bytes() as u64;
    let poster = {
        let frames = frames.clone();
        let mut frame = frame_pv(FRAME).current();
        tokio::spawn(async move {
            for n in 1.. {
                frame.set("count", n).unwrap();
                frames.post(frame.clone());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let mut most = 0u64;
    for taken in 0..40 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let in_flight = down.load(Ordering::SeqCst) - before - taken_bytes;
        most = most.max(in_flight);
        assert!(
            in_flight <= budget,
            "{in_flight} bytes in flight after {taken} frames taken, budget {budget}"
        );
        let held = m.pending() as u64;
        assert!(held <= budget / FRAME as u64, "{held} frames held");
        let u = next_update(&mut m).await;
        assert_eq!(u.squashed, 0, "the client queue never squashes");
        taken_bytes += u.value.array_bytes() as u64;
    }
    poster.abort();
    assert!(
        most >= 3 * FRAME as u64,
        "the server filled the window (at most {most} bytes were in flight)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_user_of_2_mib_frames_keeps_the_bytes_in_flight_within_the_budget() {
    let frames = frame_pv(FRAME);
    let scalars = SharedPv::readonly(NtScalar::new(ScalarType::I64).create());
    let relayed = Relayed::serve(&[("w:frames", &frames), ("w:scalars", &scalars)]).await;
    // 4 frames of 2 MiB (and their headers) fit; a fifth does not.
    let budget = 9 * MIB;

    // Small updates: after the first, the client grants far more than its first window of 4.
    let mut small = relayed.monitor("w:scalars", budget);
    next_update(&mut small).await;
    for n in 1..=200i64 {
        let mut v = scalars.current();
        v.set("value", n).unwrap();
        scalars.post(v);
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        small.pending() > 4,
        "small updates flow with a deep window: {} waiting",
        small.pending()
    );
    drop(small);

    a_slow_user_takes_frames(&frames, &relayed, "w:frames", budget).await;
}

/// An empty image before the first frame (an areaDetector PV before acquisition, simdet's
/// first value) must not make the client grant the frames a window sized for tiny updates:
/// after it the credit grows at most twofold per ack, so the first ack lets at most twice the
/// first window of 4 be in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_first_image_does_not_open_the_window_to_the_frames_after_it() {
    let frames = frame_pv(0);
    let relayed = Relayed::serve(&[("e:frames", &frames)]).await;
    // 8 frames of 2 MiB (and their headers) fit; a ninth does not.
    let budget = 17 * MIB;
    a_slow_user_takes_frames(&frames, &relayed, "e:frames", budget).await;
}
