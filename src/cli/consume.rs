//! `pvabridge consume`: monitor a detector stream and account for every frame.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;
use pva::client::Context;
use stream::consumer::{consume_with, ConsumerConfig, Hooks, Report};
use stream::stats::StatsFile;
use stream::Origin;

use super::common::{consumer_runtime, duration, positive_duration, shutdown_signal};
use super::streaming::Progress;

/// Receive a stream and account for every frame.
#[derive(Args, Debug)]
#[command(after_help = "\
Every frame is booked as it arrives: received, missed (gaps in uniqueId), duplicated, out of
order. The monitor's first update is the PV's value from before the subscription: it is booked
apart (initial_id) and never counted. The run counts from the first frame after it, whatever its
uniqueId, so joining a running stream misses nothing; with --first-id N it counts from frame N
(frames from N on that never came are missed; --first-id 1 counts from 1). With --expected N the
run is N frames, and whatever never came is missed. uniqueId is an int32 compared modulo 2^32: a
wrap past 2147483647 is no loss. A counter that goes back (a reset, an IOC restart) starts a new
sequence, counted once in counter_resets.

Frames then go to processing threads; a slow processing step shows as a backlog (--backlog
bounds it; beyond, the server holds and, at worst, drops frames, which show as missed). A plain
frame with nothing to do (no --stats, no --process-time) is counted as processed at once, without
a hand-over to a thread.

pvapy's server (pvapy 5.6, pvAccessCPP) re-sends old frames to pipelined monitors: use
--no-pipeline with it.

An NTScalar whose value is a counter is accounted the same way (its value as uniqueId).

Compressed frames (areaDetector's codec plugin: codec lz4, bslz4 or blosc) are decompressed on
the processing threads: statistics and bytes are those of the images. A frame that cannot be
decompressed (corrupt, truncated, another codec) is an error frame: received, counted in
error_frames with the reason, never processed.

--stats FILE writes each processed frame's statistics as CSV (uniqueId,count,min,max,mean,sum),
as `workflow consume` does.

Exit status: 0, or 1 on errors, or 3 with --require-complete when a frame was missed or was an
error frame.

Examples:
  pvabridge consume --pv sim:det:Image --expected 1000 --require-complete --json
  pvabridge consume --pv 13SIM1:Pva1:Image --first-id 301 --expected 600
  pvabridge consume --pv relay:Image --stride 3 --runtime 60
  pvabridge consume --pv det:Image --expected 100 --stats stats.csv")]
pub struct ConsumeArgs {
    /// The PV to monitor.
    #[arg(long, default_value = "sim:det:Image")]
    pv: String,
    /// End once this many frames are accounted for (received or missed).
    #[arg(long)]
    expected: Option<u64>,
    /// End after this long (seconds, or 30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    runtime: Option<Duration>,
    /// Exit with status 3 if any frame was missed (or never came before the end).
    #[arg(long)]
    require_complete: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Monitor queue size (the server's window).
    #[arg(long, default_value_t = 64)]
    queue_size: u32,
    /// Do not use flow control: the server sends regardless, and the client squashes (counted).
    #[arg(long)]
    no_pipeline: bool,
    /// Processing threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Frames that may wait for processing before the receiver waits too.
    #[arg(long, default_value_t = 64)]
    backlog: usize,
    /// Simulated processing time per frame, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0.0)]
    process_time: f64,
    /// This consumer gets every N-th frame (of a relay distributing over N consumers).
    #[arg(long, default_value_t = 1)]
    stride: u64,
    /// The uniqueId of the run's first frame, when known (default: the first frame received
    /// after the subscription).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    first_id: Option<i32>,
    /// Removed: counting from the first frame received is the default now.
    #[arg(long, hide = true)]
    join: bool,
    /// Write each processed frame's statistics (uniqueId,count,min,max,mean,sum) to this CSV.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// Time between progress lines when not on a terminal.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = positive_duration)]
    report_period: Duration,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

fn print_text(r: &Report) {
    let c = &r.counts;
    println!(
        "{}: {} received, {} missed, {} duplicates, {} out of order{}",
        r.pv,
        c.received,
        c.missed,
        c.duplicates,
        c.out_of_order,
        r.expected
            .map_or(String::new(), |n| format!(" (expected {n})"))
    );
    println!(
        "{:.1} frames/s, {:.1} MB/s over {:.3} s; latency p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        r.fps, r.mb_per_s, r.elapsed_s, r.latency.p50_ms, r.latency.p99_ms, r.latency.max_ms
    );
    println!(
        "processed {}, largest backlog {}, squashed by the client {}",
        r.processed, r.max_backlog, r.client_squashed
    );
    let id = |id: Option<i64>| id.map_or("-".to_string(), |n| n.to_string());
    println!(
        "frames {} to {}; initial value {}; counter resets {}",
        id(r.first_id),
        id(r.last_id),
        id(r.initial_id),
        c.counter_resets
    );
    if r.error_frames > 0 {
        println!("{} error frame(s): {}", r.error_frames, r.errors.join("; "));
    }
    if !r.missed_ranges.is_empty() {
        let ranges: Vec<String> = r
            .missed_ranges
            .iter()
            .map(|[a, b]| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        println!("missed: {}", ranges.join(" "));
    }
}

/// Consume until the expected count, the runtime, the end of the stream or Ctrl-C.
pub fn run(args: ConsumeArgs) -> anyhow::Result<ExitCode> {
    if args.threads == 0 {
        bail!("--threads 0: at least one processing thread is needed");
    }
    if args.stride == 0 {
        bail!("--stride 0: the stride is at least 1");
    }
    if args.join {
        bail!(
            "--join was removed: consume now counts from the first frame received after \
             subscribing by default (give --first-id N to count from frame N)"
        );
    }
    if args.first_id.is_some() && args.stride > 1 {
        bail!("--first-id with --stride: a distributed stream counts from its first frame");
    }
    if !(args.process_time.is_finite() && args.process_time >= 0.0) {
        bail!(
            "--process-time {}: must be a non-negative number of milliseconds",
            args.process_time
        );
    }
    let report_every = args.report_period;
    let config = ConsumerConfig {
        pv: args.pv.clone(),
        expected: args.expected,
        runtime: args.runtime,
        queue_size: args.queue_size.max(1),
        pipeline: !args.no_pipeline,
        threads: args.threads,
        backlog: args.backlog.max(1),
        process_time: Duration::from_secs_f64(args.process_time / 1000.0),
        stride: args.stride,
        origin: args
            .first_id
            .map_or(Origin::FirstReceived, |id| Origin::Id(id.into())),
        distributor: None,
    };
    let stats = match &args.stats {
        Some(path) => Some(Arc::new(StatsFile::create(path).map_err(|e| anyhow!(e))?)),
        None => None,
    };
    let hooks = Hooks {
        process: stats.clone().map(|file| {
            Arc::new(move |frame: &stream::Frame| {
                file.write(frame);
            }) as stream::consumer::ProcessFn
        }),
        ..Hooks::default()
    };
    let report = consumer_runtime()?.block_on(async {
        let ctx = Context::from_env()?;
        let progress = Progress::new("consume", args.expected, args.quiet);
        let report = consume_with(&ctx, &config, hooks, report_every, shutdown_signal(), |p| {
            progress.update(
                p.accounted,
                &format!(
                    "{} received, {} missed, backlog {}, {:.1} frames/s, {:.1} MB/s",
                    p.counts.received, p.counts.missed, p.backlog, p.fps, p.mb_per_s
                ),
            )
        })
        .await;
        progress.finish();
        anyhow::Ok(report?)
    })?;
    if let Some(file) = &stats {
        file.finish().map_err(|e| anyhow!(e))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    if args.require_complete && (report.counts.missed > 0 || report.error_frames > 0) {
        eprintln!(
            "pvabridge consume: {} frame(s) missed and {} error frame(s) on '{}'",
            report.counts.missed, report.error_frames, report.pv
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
