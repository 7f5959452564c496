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
use stream::ad_sim::{self, Acquisition, AdSim, AdSimConfig};
use stream::codec::Codec;
use stream::relay::ConsumerShare;
use stream::simdet::{FrameOptions, Pattern, Published, SimDet, SimDetConfig};

use super::common::{duration, runtime, shutdown_signal};
use super::streaming::Progress;

/// Publish simulated detector frames.
#[derive(Args, Debug)]
#[command(after_help = "\
Frames are NTNDArray values like areaDetector's NDPluginPva sends: uniqueId counting from
--start-id (default 1; past 2147483647 it wraps to -2147483648 like an int32),
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
int; put 1 to publish --frames frames (or for --runtime), numbered on from the last acquisition
like areaDetector's ArrayCounter; it reads 0 again once they are out (put 0 to stop early).
Between acquisitions the image PV holds the last frame, as areaDetector's does: a workflow
subscribing for the next acquisition books it as its initial value, not as a frame of its run.
It serves until Ctrl-C.

With --ad-prefix P it serves the PVs of an ADSimDetector with a PVA plugin instead, as a real one
does over PVA (QSRV): P cam1:Acquire (Done/Acquire; put Acquire to take NumImages frames, it
returns to Done after them), P cam1:NumImages (from --frames), P cam1:AcquireTime (seconds per
frame, from --fps), P cam1:ArrayCounter (keeps counting from acquisition to acquisition unless
written; each frame's uniqueId is the counter), each with its _RBV readback, and the frames on
P Pva1:Image, which holds the last frame between acquisitions. It serves until Ctrl-C and prints a
line per acquisition.

Examples:
  pvabridge simdet --nx 1024 --ny 1024 --dtype uint16 --fps 100 --frames 1000 --start-delay 2
  pvabridge simdet --pv bl:det:Image --fps 0 --runtime 10 --json
  pvabridge simdet --pv bl:det:Image --trigger bl:det:Acquire --frames 100 --fps 50
  pvabridge simdet --start-id 301 --frames 300   (a detector whose counter went on from a run)
  pvabridge simdet --ad-prefix 13SIM1: --frames 100 --fps 50
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
    /// Stop after publishing this long (seconds, or 30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    runtime: Option<Duration>,
    /// Wait this long before the first frame (for consumers to connect).
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = duration)]
    start_delay: Duration,
    /// Seed of the pixel generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The uniqueId of the first frame (an int32; later frames count on from it).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    start_id: i32,
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
    /// After the last frame, serve at most this long more while consumers drain.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    linger: Duration,
    /// Serve an ADSimDetector's PVs under this prefix (cam1:Acquire, Pva1:Image, ...) instead
    /// of --pv; --frames sets NumImages, --fps AcquireTime.
    #[arg(long, value_name = "PREFIX", conflicts_with_all = ["trigger", "pv", "ntscalar", "runtime"])]
    ad_prefix: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

/// The element type `--dtype` names: any NTNDArray type, that is any scalar type but string.
pub(super) fn frame_type(name: &str) -> anyhow::Result<ScalarType> {
    ScalarType::parse(name)
        .filter(|t| *t != ScalarType::String)
        .ok_or_else(|| {
            anyhow!(
                "--dtype {name}: not an NTNDArray type (int8 uint8 int16 uint16 int32 uint32 \
                 int64 uint64 float32 float64 bool)"
            )
        })
}

/// Publish frames until the count, the runtime or Ctrl-C; then print what was published.
pub fn run(args: SimDetArgs) -> anyhow::Result<ExitCode> {
    let dtype = frame_type(&args.dtype)?;
    let config = SimDetConfig {
        nx: args.nx,
        ny: args.ny,
        dtype,
        fps: args.fps,
        frames: args.frames,
        runtime: args.runtime,
        start_delay: args.start_delay,
        seed: args.seed,
        counter: args.ntscalar,
        start_id: args.start_id,
    };
    let linger = args.linger;
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
        if let Some(prefix) = &args.ad_prefix {
            return serve_ad(&args, det, prefix, server_config).await;
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

/// Serve an ADSimDetector's PVs under `prefix` until interrupted, printing each acquisition.
async fn serve_ad(
    args: &SimDetArgs,
    det: Arc<SimDet>,
    prefix: &str,
    server_config: ServerConfig,
) -> anyhow::Result<ExitCode> {
    let num_images = i32::try_from(args.frames.unwrap_or(1).max(1)).map_err(|_| {
        anyhow!(
            "--frames {}: NumImages is a 32-bit count",
            args.frames.unwrap_or(1)
        )
    })?;
    let config = AdSimConfig {
        num_images,
        acquire_time: if args.fps > 0.0 { 1.0 / args.fps } else { 0.0 },
    };
    let sim = AdSim::new(det.clone(), config);
    let source = Arc::new(StaticSource::new());
    for (suffix, pv) in sim.pvs() {
        source.add(format!("{prefix}{suffix}"), pv.clone());
    }
    let server = Server::start(server_config, vec![source]).await?;
    eprintln!(
        "pvabridge simdet: serving an ADSimDetector under {prefix} ({}) on TCP {} and UDP {}; \
         put 1 to {prefix}{} to acquire",
        describe(&det),
        server.tcp_addr(),
        server.udp_addr(),
        ad_sim::names::ACQUIRE,
    );
    let image = format!("{prefix}{}", ad_sim::names::IMAGE);
    let mut acquisitions = 0u64;
    let json = args.json;
    tokio::select! {
        () = shutdown_signal() => {}
        () = sim.run(|acquisition: &Acquisition| {
            acquisitions += 1;
            if json {
                println!(
                    "{}",
                    json!({"pv": image, "acquisition": acquisitions, "published": acquisition})
                );
            } else {
                println!(
                    "acquisition {acquisitions}: {} frames, uniqueId {}..{}, in {:.3} s{}",
                    acquisition.frames,
                    acquisition.first_id,
                    acquisition.last_id,
                    acquisition.elapsed_s,
                    if acquisition.stopped { " (stopped)" } else { "" }
                );
            }
        }) => {}
    }
    server.stop().await;
    Ok(ExitCode::SUCCESS)
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
