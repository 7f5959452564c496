//! `pvabridge simdet`: a simulated area detector publishing NTNDArray frames.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Args;
use pva::server::{Server, StaticSource};
use pva::ServerConfig;
use pva_codec::ScalarType;
use serde_json::json;
use stream::relay::ConsumerShare;
use stream::simdet::{SimDet, SimDetConfig};

use super::streaming::{init_logging, runtime, seconds, shutdown_signal, Progress};

/// Publish simulated detector frames.
#[derive(Args, Debug)]
#[command(after_help = "\
Frames are NTNDArray values like areaDetector's NDPluginPva sends: uniqueId counting from 1,
dataTimeStamp and timeStamp, dimension, compressedSize/uncompressedSize, and the attributes
ColorMode, FrameRate and TotalFrames. The pixels (spots moving over noise) are made ahead of time
from --seed, so generation never limits the rate.

With --fps 0 the detector goes as fast as its slowest consumer takes frames, losing none.
After the last frame it keeps serving until every consumer has left (at most --linger seconds).

Examples:
  pvabridge simdet --nx 1024 --ny 1024 --dtype uint16 --fps 100 --frames 1000 --start-delay 2
  pvabridge simdet --pv bl:det:Image --fps 0 --runtime 10 --json
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
    /// Publish an NTScalar double counting 1, 2, 3 ... instead of frames (plain update rates).
    #[arg(long)]
    ntscalar: bool,
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
    let det = Arc::new(SimDet::new(config)?);
    runtime()?.block_on(async move {
        let source = Arc::new(StaticSource::new());
        source.add(args.pv.clone(), det.pv().clone());
        let server = Server::start(server_config, vec![source]).await?;
        let c = det.config();
        let what = if c.counter {
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
        };
        eprintln!(
            "pvabridge simdet: serving {} ({what}) on TCP {} and UDP {}",
            args.pv,
            server.tcp_addr(),
            server.udp_addr()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Progress::new("simdet", c.frames, args.quiet));
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
                "published {} frames in {:.3} s: {:.1} frames/s, {:.1} MB/s",
                published.frames, published.elapsed_s, published.fps, published.mb_per_s
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
