//! `pvabridge simdet`: a simulated area detector publishing NTNDArray frames.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use pva::server::{Server, SharedPv, StaticSource};
use pva::ServerConfig;
use pva_codec::nt::{set_time_stamp, NtScalar, TimeStamp};
use pva_codec::{ScalarType, Status, Value};
use serde_json::json;
use stream::codec::Codec;
use stream::relay::ConsumerShare;
use stream::simdet::{FrameOptions, Pattern, Published, SimDet, SimDetConfig};

use super::streaming::{init_logging, runtime, seconds, shutdown_signal, Progress};

/// Publish simulated detector frames.
#[derive(Args, Debug)]
#[command(after_help = "\
Frames are NTNDArray values like areaDetector's NDPluginPva sends: uniqueId counting from 1,
dataTimeStamp and timeStamp, dimension, compressedSize/uncompressedSize, and the attributes
ColorMode, FrameRate and TotalFrames. The pixels (spots moving over noise) are made ahead of time
from --seed, so generation never limits the rate.

--pattern poisson --mean M fills every pixel with Poisson counts of mean M instead, like a
photon-counting detector: compression ratios are then those of real frames.

--codec lz4|bslz4|blosc compresses each frame as it is published (once for all consumers), laid
out as areaDetector's codec plugin does (the compressed bytes as ubyteValue, codec.name, the
element type in codec.parameters, compressedSize/uncompressedSize): pvapy, areaDetector and
`pvabridge consume` decompress it. --codec-level (0-9) sets Blosc's level (0: stored).

With --fps 0 the detector goes as fast as its slowest consumer takes frames, losing none.
After the last frame it keeps serving until every consumer has left (at most --linger seconds).

With --trigger PV it waits to be triggered, like areaDetector's Acquire: PV is a writable NTScalar
int; put 1 to publish --frames frames (or for --runtime), numbered from 1; it reads 0 again once
they are out (put 0 to stop early). Between acquisitions the image PV holds an empty frame
(uniqueId 0), so that a workflow subscribing for the next one starts clean. It serves until Ctrl-C.

Examples:
  pvabridge simdet --nx 1024 --ny 1024 --dtype uint16 --fps 100 --frames 1000 --start-delay 2
  pvabridge simdet --pv bl:det:Image --fps 0 --runtime 10 --json
  pvabridge simdet --pv bl:det:Image --trigger bl:det:Acquire --frames 100 --fps 50
  pvabridge simdet --pattern poisson --mean 10 --codec bslz4 --fps 100 --frames 1000
Ports come from EPICS_PVAS_SERVER_PORT / EPICS_PVA_SERVER_PORT and EPICS_PVAS_BROADCAST_PORT /
EPICS_PVA_BROADCAST_PORT.")]
pub struct SimDetArgs {
    /// PV name to publish on.
    #[arg(long, default_value = "sim:det:Image")]
    pv: String,
    /// Pixels along x.
    #[arg(long, default_value_t = 1024)]
    nx: usize,
    /// Pixels along y.
    #[arg(long, default_value_t = 1024)]
    ny: usize,
    /// Element type: int8 uint8 int16 uint16 int32 uint32 int64 uint64 float32 float64 bool.
    #[arg(long, default_value = "uint16")]
    dtype: String,
    /// Frames per second (0: as fast as the slowest consumer).
    #[arg(long, default_value_t = 10.0)]
    fps: f64,
    /// Stop after this many frames.
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds of publishing.
    #[arg(long, value_name = "SECONDS")]
    runtime: Option<f64>,
    /// Wait this many seconds before the first frame (for consumers to connect).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    start_delay: f64,
    /// Seed of the pixel generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Pixel pattern: spots (moving spots over noise) or poisson (counts of mean --mean).
    #[arg(long, value_name = "NAME", default_value = "spots", value_parser = ["spots", "poisson"])]
    pattern: String,
    /// Mean count per pixel of --pattern poisson.
    #[arg(long, value_name = "COUNTS", default_value_t = 10.0)]
    mean: f64,
    /// Compress each frame as areaDetector's codec plugin does: lz4, bslz4 or blosc.
    #[arg(long, value_name = "NAME")]
    codec: Option<Codec>,
    /// Compression level, 0-9 (Blosc only; 0 stores the data as is).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=9))]
    codec_level: u8,
    /// Publish an NTScalar double counting 1, 2, 3 ... instead of frames (plain update rates).
    #[arg(long)]
    ntscalar: bool,
    /// Wait for a put of 1 to this PV before each acquisition, and serve until interrupted.
    #[arg(long, value_name = "PV")]
    trigger: Option<String>,
    /// After the last frame, serve at most this many seconds more while consumers drain.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    linger: f64,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

/// Publish frames until the count, the runtime or Ctrl-C; then print what was published.
pub fn run(args: SimDetArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let dtype = ScalarType::parse(&args.dtype)
        .filter(|t| *t != ScalarType::String)
        .ok_or_else(|| {
            anyhow!(
                "--dtype {}: not an NTNDArray type (int8 uint8 int16 uint16 int32 uint32 int64 \
                 uint64 float32 float64 bool)",
                args.dtype
            )
        })?;
    let config = SimDetConfig {
        nx: args.nx,
        ny: args.ny,
        dtype,
        fps: args.fps,
        frames: args.frames,
        runtime: seconds("--runtime", args.runtime)?,
        start_delay: seconds("--start-delay", Some(args.start_delay))?.unwrap_or_default(),
        seed: args.seed,
        counter: args.ntscalar,
    };
    let linger = seconds("--linger", Some(args.linger))?.unwrap_or_default();
    let server_config = ServerConfig::from_env()?;
    let options = FrameOptions {
        pattern: match args.pattern.as_str() {
            "poisson" => Pattern::Poisson { mean: args.mean },
            _ => Pattern::Spots,
        },
        codec: args.codec,
        codec_level: args.codec_level,
    };
    let det = Arc::new(SimDet::with_options(config, options)?);
    runtime()?.block_on(async move {
        let source = Arc::new(StaticSource::new());
        source.add(args.pv.clone(), det.pv().clone());
        if let Some(trigger) = &args.trigger {
            return serve_triggered(&args, det, trigger, source, server_config).await;
        }
        let server = Server::start(server_config, vec![source]).await?;
        eprintln!(
            "pvabridge simdet: serving {} ({}) on TCP {} and UDP {}",
            args.pv,
            describe(&det),
            server.tcp_addr(),
            server.udp_addr()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::new("simdet", det.config().frames, args.quiet));
        let publisher = {
            let (det, stop, progress) = (det.clone(), stop.clone(), progress.clone());
            tokio::task::spawn_blocking(move || {
                det.run(&stop, |p| {
                    progress.update(
                        p.frames,
                        &format!(
                            "{} frames, {:.1} frames/s, {:.1} MB/s",
                            p.frames, p.fps, p.mb_per_s
                        ),
                    )
                })
            })
        };
        let interrupted = {
            let stop = stop.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                stop.store(true, Ordering::Relaxed);
            })
        };
        let published = publisher.await?;
        progress.finish();
        // Let consumers drain what is queued for them, unless interrupted.
        let until = Instant::now() + linger;
        while !stop.load(Ordering::Relaxed)
            && Instant::now() < until
            && det.pv().subscriber_count() > 0
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        interrupted.abort();
        let consumers: Vec<ConsumerShare> = det
            .pv()
            .subscriber_stats()
            .into_iter()
            .map(ConsumerShare::from)
            .collect();
        server.stop().await;
        if args.json {
            println!(
                "{}",
                json!({"pv": args.pv, "published": published, "consumers": consumers})
            );
        } else {
            println!(
                "published {} frames in {:.3} s: {:.1} frames/s, {:.1} MB/s{}",
                published.frames,
                published.elapsed_s,
                published.fps,
                published.mb_per_s,
                match args.codec {
                    Some(codec) if published.wire_bytes > 0 => format!(
                        ", {codec}: {:.2}x smaller on the wire",
                        published.bytes as f64 / published.wire_bytes as f64
                    ),
                    _ => String::new(),
                }
            );
            for s in &consumers {
                println!(
                    "consumer {} ({}): {} posted, {} dropped",
                    s.id,
                    s.peer.map_or("-".into(), |p| p.to_string()),
                    s.posted,
                    s.dropped
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// What the detector publishes, in words.
fn describe(det: &SimDet) -> String {
    let c = det.config();
    if c.counter {
        "an NTScalar double counter".to_owned()
    } else {
        format!(
            "{}x{} {}, {} bytes a frame, {} distinct",
            c.nx,
            c.ny,
            c.dtype.name(),
            c.frame_bytes(),
            det.distinct_frames()
        )
    }
}

/// The trigger PV: an NTScalar int whose puts are handed to `puts`.
fn trigger_pv(puts: tokio::sync::mpsc::UnboundedSender<i64>) -> SharedPv {
    SharedPv::builder(NtScalar::new(ScalarType::I32).create())
        .on_put(move |request| {
            let mut value = request.value.clone();
            let wanted = value.get("value").and_then(Value::as_i64).unwrap_or(0);
            set_time_stamp(&mut value, TimeStamp::now())
                .map_err(|err| Status::error(err.to_string()))?;
            let _ = puts.send(wanted);
            Ok(Some(value))
        })
        .build()
}

/// Put `value` to the trigger PV from this side.
fn show_trigger(pv: &SharedPv, value: i32) {
    let mut current = pv.current();
    let _ = current.set("value", value);
    let _ = set_time_stamp(&mut current, TimeStamp::now());
    pv.post(current);
}

/// Wait briefly until a put of 1 has been stored, so that the 0 shown at the end of a short
/// acquisition is never overwritten by the put that started it.
async fn until_trigger_shows_one(pv: &SharedPv) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while pv.current().get("value").and_then(Value::as_i64) != Some(1) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// What the triggered detector waits for.
enum TriggerEvent {
    Interrupted,
    Put(Option<i64>),
    Finished(Result<Published, tokio::task::JoinError>),
}

/// Serve the detector and acquire each time the trigger PV is put to 1, until interrupted.
async fn serve_triggered(
    args: &SimDetArgs,
    det: Arc<SimDet>,
    trigger: &str,
    source: Arc<StaticSource>,
    server_config: ServerConfig,
) -> anyhow::Result<ExitCode> {
    let (puts, mut triggers) = tokio::sync::mpsc::unbounded_channel();
    let trigger_pv = trigger_pv(puts);
    source.add(trigger.to_string(), trigger_pv.clone());
    let server = Server::start(server_config, vec![source]).await?;
    eprintln!(
        "pvabridge simdet: serving {} ({}) on TCP {} and UDP {}; put 1 to {trigger} to acquire",
        args.pv,
        describe(&det),
        server.tcp_addr(),
        server.udp_addr()
    );
    let empty = det.pv().current();
    let mut acquisitions = 0u64;
    let mut publisher: Option<tokio::task::JoinHandle<Published>> = None;
    let mut stop = Arc::new(AtomicBool::new(false));
    let interrupted = shutdown_signal();
    tokio::pin!(interrupted);
    loop {
        let acquiring = publisher.is_some();
        let finished = async {
            match publisher.as_mut() {
                Some(running) => running.await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            () = &mut interrupted => TriggerEvent::Interrupted,
            wanted = triggers.recv() => TriggerEvent::Put(wanted),
            published = finished => TriggerEvent::Finished(published),
        };
        match event {
            TriggerEvent::Interrupted | TriggerEvent::Put(None) => break,
            TriggerEvent::Put(Some(1)) if !acquiring => {
                until_trigger_shows_one(&trigger_pv).await;
                stop = Arc::new(AtomicBool::new(false));
                let (det, stop) = (det.clone(), stop.clone());
                publisher = Some(tokio::task::spawn_blocking(move || det.run(&stop, |_| {})));
            }
            TriggerEvent::Put(Some(0)) => stop.store(true, Ordering::Relaxed),
            TriggerEvent::Put(Some(_)) => {}
            TriggerEvent::Finished(published) => {
                publisher = None;
                let published = published?;
                acquisitions += 1;
                // The next acquisition's consumers subscribe to an empty frame, not this last one.
                det.pv().post(empty.clone());
                show_trigger(&trigger_pv, 0);
                if args.json {
                    println!(
                        "{}",
                        json!({"pv": args.pv, "acquisition": acquisitions, "published": published})
                    );
                } else {
                    println!(
                        "acquisition {acquisitions}: published {} frames in {:.3} s: {:.1} frames/s, {:.1} MB/s",
                        published.frames, published.elapsed_s, published.fps, published.mb_per_s
                    );
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(running) = publisher {
        let _ = running.await;
    }
    server.stop().await;
    Ok(ExitCode::SUCCESS)
}
