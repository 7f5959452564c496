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

use super::streaming::{init_logging, runtime, seconds, shutdown_signal, Progress};

/// Receive a stream and account for every frame.
#[derive(Args, Debug)]
#[command(after_help = "\
Every frame is booked as it arrives: received, missed (gaps in uniqueId), duplicated, out of
order. Frames count from uniqueId 1 (a frame before the first one received is missed) unless
--join is given. Frames then go to processing threads; a slow processing step shows as a
backlog (--backlog bounds it; beyond, the server holds and, at worst, drops frames, which show
as missed).

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
  pvabridge consume --pv relay:Image --stride 3 --runtime 60
  pvabridge consume --pv det:Image --expected 100 --stats stats.csv")]
pub struct ConsumeArgs {
    /// The PV to monitor.
    #[arg(long, default_value = "sim:det:Image")]
    pv: String,
    /// End once this many frames are accounted for (received or missed).
    #[arg(long)]
    expected: Option<u64>,
    /// End after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    runtime: Option<f64>,
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
    /// Count from the first frame received instead of from uniqueId 1.
    #[arg(long)]
    join: bool,
    /// Write each processed frame's statistics (uniqueId,count,min,max,mean,sum) to this CSV.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// Seconds between progress lines when not on a terminal.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    report_period: f64,
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
    init_logging();
    if args.threads == 0 {
        bail!("--threads 0: at least one processing thread is needed");
    }
    if args.stride == 0 {
        bail!("--stride 0: the stride is at least 1");
    }
    let report_every = seconds("--report-period", Some(args.report_period))?
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(1));
    let config = ConsumerConfig {
        pv: args.pv.clone(),
        expected: args.expected,
        runtime: seconds("--runtime", args.runtime)?,
        queue_size: args.queue_size.max(1),
        pipeline: !args.no_pipeline,
        threads: args.threads,
        backlog: args.backlog.max(1),
        process_time: Duration::from_secs_f64(
            seconds("--process-time", Some(args.process_time / 1000.0))?
                .unwrap_or_default()
                .as_secs_f64(),
        ),
        stride: args.stride,
        origin: if args.join {
            Origin::FromFirst
        } else {
            Origin::FromOne
        },
    };
    let stats = match &args.stats {
        Some(path) => Some(Arc::new(StatsFile::create(path).map_err(|e| anyhow!(e))?)),
        None => None,
    };
    let hooks = Hooks {
        process: stats.clone().map(|file| {
            Arc::new(move |frame: &stream::Frame| file.write(frame)) as stream::consumer::ProcessFn
        }),
        ..Hooks::default()
    };
    let report = runtime()?.block_on(async {
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
