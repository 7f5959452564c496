//! `pvabridge workflow consume`: the streaming stage of a DM workflow. It subscribes to the
//! detector stream, tells the bridge it is ready, accounts for every frame with the stream
//! consumer, writes per-frame statistics, reports progress, and ends once acquisition is over
//! and every expected frame is accounted for.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use coordinator::{AgentError, HandshakeClient, ProgressReporter, RunRequest, State};
use pva::client::Context;
use serde::Serialize;
use stream::consumer::{consume_with, ConsumerConfig, Hooks, Report};
use stream::stats::StatsFile;
use stream::{Frame, Origin};
use tokio::sync::watch;

use super::streaming::{init_logging, Progress};

/// The file the statistics go to, in the results directory.
pub const RESULTS_FILE: &str = "frame-stats.csv";
/// Exit status when frames were lost (as `pvabridge consume --require-complete`).
const EXIT_FRAMES_LOST: u8 = 3;

/// Options of `pvabridge workflow consume`.
#[derive(Args, Debug)]
#[command(after_help = "\
What the streaming stage of a DM workflow runs, e.g.
  pvabridge workflow consume --handshake $handshakePrefix --channel $dataChannel --expected $expectedFrames

It subscribes to the detector channel, sets Ready once the subscription is in place, books every
frame (received, missed, duplicated, out of order) and hands it to a processing thread that writes
the frame's statistics (uniqueId, count, min, max, mean, sum) as a CSV row to RESULTS/frame-stats.csv.
Progress reports the frames processed (at most every --progress-period). It ends once the run has
left ACQUIRING (DRAINING or PROCESSING) and every expected frame is accounted for, or no frame came
for --drain-timeout seconds after that; then it writes WorkflowMessage and prints a summary.

The channel and the expected count default to the run's Request (dataChannel, expectedFrames).

Exit status: 0 when every frame came; 3 when frames were lost; 1 when the run ended (ABORTED,
FAILED, TIMEOUT) or anything failed.")]
pub struct ConsumeArgs {
    /// The detector's PV (default: the Request's dataChannel).
    #[arg(long, value_name = "PV")]
    channel: Option<String>,
    /// Frames the detector sends (default: the Request's expectedFrames, or FramesExpected).
    #[arg(long, value_name = "N")]
    expected: Option<u64>,
    /// Directory of the results file (default: the working directory, the DM job's).
    #[arg(long, value_name = "DIR", default_value = ".")]
    results: PathBuf,
    /// Seconds without a new frame, once acquisition is over, before the missing frames count
    /// as lost.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    drain_timeout: f64,
    /// The longest this stage waits for acquisition to end, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600.0)]
    max_wait: f64,
    /// Seconds between Progress updates.
    #[arg(long, value_name = "SECS", default_value_t = 0.5)]
    progress_period: f64,
    /// Processing threads (more than one: rows are no longer in frame order).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Frames that may wait for processing before the receiver waits too.
    #[arg(long, default_value_t = 64)]
    backlog: usize,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(short, long)]
    quiet: bool,
}

/// What a consume stage did, printed at the end (`--json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageSummary {
    /// The handshake prefix.
    pub handshake: String,
    /// The state that ended acquisition (or the final state the run ended in).
    pub state: State,
    /// The frame accounting.
    pub stream: Report,
    /// The results file.
    pub results: PathBuf,
    /// Rows of statistics written.
    pub rows: u64,
}

fn seconds(option: &str, value: f64) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        bail!("--{option} must be a positive number of seconds, not {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

/// Follows the slot until acquisition is over: `Ok` with DRAINING or PROCESSING (or DONE), or
/// the reason the run ended otherwise.
fn watch_acquisition(
    slot: &HandshakeClient,
    max_wait: Duration,
) -> watch::Receiver<Option<Result<State, String>>> {
    let (sender, receiver) = watch::channel(None);
    let slot = slot.clone();
    tokio::spawn(async move {
        let wanted = [State::Draining, State::Processing, State::Done];
        let outcome = slot
            .wait_for_state(&wanted, max_wait)
            .await
            .map_err(|err| err.to_string());
        sender.send_replace(Some(outcome));
    });
    receiver
}

async fn acquisition_outcome(
    receiver: &mut watch::Receiver<Option<Result<State, String>>>,
) -> Result<State, String> {
    match receiver.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or_else(|| Err("no outcome".into())),
        Err(_) => Err("the watch of the run's State ended".into()),
    }
}

/// Resolves once acquisition is over and no frame was processed for `idle`, or at once when
/// the run ended otherwise.
async fn drained(
    mut acquisition: watch::Receiver<Option<Result<State, String>>>,
    processed: Arc<AtomicU64>,
    idle: Duration,
) {
    if acquisition_outcome(&mut acquisition).await.is_err() {
        return;
    }
    let mut last = processed.load(Ordering::Relaxed);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100).min(idle)).await;
        let now = processed.load(Ordering::Relaxed);
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= idle {
            return;
        }
    }
}

/// Run the stage against slot `slot`.
pub async fn run(
    ctx: &Context,
    slot: HandshakeClient,
    args: ConsumeArgs,
) -> anyhow::Result<ExitCode> {
    init_logging();
    let drain_timeout = seconds("drain-timeout", args.drain_timeout)?;
    let max_wait = seconds("max-wait", args.max_wait)?;
    let progress_period = seconds("progress-period", args.progress_period)?;
    if args.threads == 0 {
        bail!("--threads 0: at least one processing thread is needed");
    }
    let status = slot
        .status()
        .await
        .with_context(|| format!("cannot read the run slot {}", slot.prefix()))?;
    if !status.state.is_active() {
        bail!(
            "slot {} is {}, not in a run: nothing to take part in",
            slot.prefix(),
            status.state
        );
    }
    let request = RunRequest::parse(&status.request).ok();
    let Some(channel) = args
        .channel
        .clone()
        .or_else(|| request.as_ref().and_then(|r| r.data_channel.clone()))
    else {
        bail!("no data channel: pass --channel PV, or put dataChannel in the run's Request");
    };
    let expected = args
        .expected
        .or_else(|| request.as_ref().and_then(|r| r.expected_frames))
        .or_else(|| {
            u64::try_from(status.frames_expected)
                .ok()
                .filter(|n| *n > 0)
        });
    let results =
        Arc::new(StatsFile::create(&args.results.join(RESULTS_FILE)).map_err(|e| anyhow!(e))?);

    let acquisition = watch_acquisition(&slot, max_wait);
    let reporter = Arc::new(slot.progress_reporter(progress_period));
    let processed = Arc::new(AtomicU64::new(0));
    let (subscribed_tx, mut subscribed_rx) = tokio::sync::mpsc::unbounded_channel();
    let hooks = Hooks {
        process: Some({
            let (results, reporter, processed) =
                (results.clone(), reporter.clone(), processed.clone());
            Arc::new(move |frame: &Frame| {
                results.write(frame);
                reporter.report(processed.fetch_add(1, Ordering::Relaxed) + 1);
            })
        }),
        subscribed: Some(Box::new(move || {
            let _ = subscribed_tx.send(());
        })),
    };
    let config = ConsumerConfig {
        pv: channel.clone(),
        expected,
        runtime: None,
        threads: args.threads,
        backlog: args.backlog.max(1),
        origin: Origin::FromOne,
        ..ConsumerConfig::default()
    };
    let progress = Progress::new("workflow consume", expected, args.quiet);
    let consuming = consume_with(
        ctx,
        &config,
        hooks,
        Duration::from_secs(2),
        drained(acquisition.clone(), processed.clone(), drain_timeout),
        |p| {
            progress.update(
                p.accounted,
                &format!(
                    "{channel}: {} received, {} missed, backlog {}, {:.1} frames/s",
                    p.counts.received, p.counts.missed, p.backlog, p.fps
                ),
            )
        },
    );
    tokio::pin!(consuming);
    let ready = async {
        if subscribed_rx.recv().await.is_some() {
            slot.set_ready(true).await?;
            tracing::info!("subscribed to {channel}; Ready set on {}", slot.prefix());
        }
        Ok::<(), AgentError>(())
    };
    let report = tokio::select! {
        report = &mut consuming => report,
        ready = ready => {
            ready.with_context(|| format!("cannot set {}Ready", slot.prefix()))?;
            consuming.await
        }
    };
    progress.finish();
    let report = report.with_context(|| format!("the stream on {channel} failed"))?;
    let state = acquisition_outcome(&mut acquisition.clone()).await;
    let rows = results.finish().map_err(|e| anyhow!(e))?;
    let reporter = Arc::try_unwrap(reporter)
        .map_err(|_| anyhow!("the processing step still holds the progress reporter"))?;
    finish_progress(reporter, report.processed).await?;
    let state = state.map_err(|reason| {
        anyhow!(
            "{reason} ({} of {} frames received)",
            report.counts.received,
            expected.map_or("?".into(), |n| n.to_string())
        )
    })?;
    let missed = report.counts.missed;
    let message = format!(
        "{} frames received, {missed} missed{}; statistics of {rows} frames in {}",
        report.counts.received,
        expected.map_or(String::new(), |n| format!(" of {n}")),
        results.path().display()
    );
    slot.set_workflow_message(&message)
        .await
        .with_context(|| format!("cannot set {}WorkflowMessage", slot.prefix()))?;
    let summary = StageSummary {
        handshake: slot.prefix().to_string(),
        state,
        stream: report,
        results: results.path().to_path_buf(),
        rows,
    };
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!("pvabridge workflow consume: {message}");
    }
    if missed > 0 {
        eprintln!(
            "pvabridge workflow consume: {missed} frame(s) lost on {}",
            summary.stream.pv
        );
        return Ok(ExitCode::from(EXIT_FRAMES_LOST));
    }
    Ok(ExitCode::SUCCESS)
}

/// Report the final count and put it.
async fn finish_progress(reporter: ProgressReporter, processed: u64) -> anyhow::Result<()> {
    reporter.report(processed);
    reporter
        .finish()
        .await
        .context("cannot put the final Progress")
}
