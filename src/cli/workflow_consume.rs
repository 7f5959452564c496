//! `pvabridge workflow consume`: the streaming stage of a DM workflow. It subscribes to the
//! detector stream, accounts for every frame with the stream consumer, writes per-frame
//! statistics, reports its books to the bridge (ready, received, missed, processed: see
//! [`super::workflow_report`]), serves its `Stats` PV, and ends once acquisition is over and every
//! expected frame is accounted for.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use coordinator::{HandshakeClient, RunRequest, State};
use pva::client::Context;
use serde::Serialize;
use stream::consumer::{consume_with, ConsumerConfig, Hooks, Report};
use stream::stats::StatsFile;
use stream::{Frame, Origin};
use tokio::sync::watch;

use super::common::positive_duration;
use super::streaming::Progress;
use super::workflow_report::{Books, Reporting};

/// The file the statistics go to, in the results directory.
pub const RESULTS_FILE: &str = "frame-stats.csv";
/// Exit status when frames were lost (as `pvabridge consume --require-complete`).
const EXIT_FRAMES_LOST: u8 = 3;

/// Options of `pvabridge workflow consume`.
#[derive(Args, Debug)]
#[command(after_help = "\
What the streaming stage of a DM workflow runs, e.g.
  pvabridge workflow consume --handshake $handshakePrefix --channel $dataChannel --expected $expectedFrames

It subscribes to the detector channel, books every frame (received, missed, duplicated, out of order)
and hands it to a processing thread that writes the frame's statistics (uniqueId, count, min, max,
mean, sum) as a CSV row to RESULTS/frame-stats.csv. It reports its books to the bridge with an RPC
on PREFIX Report (ready once the subscription is in place, then received, missed, duplicates,
processed, first and last uniqueId, every --progress-period and at the end): the bridge derives
Ready, Progress, FramesReceived and FramesMissed from them and shows them in PREFIX Members. While
it runs it serves SERVE_PREFIX Stats (received, missed, processed, frames/s and the last frame's
uniqueId, min, max, mean, sum), which the bridge lists in PREFIX WorkflowPVs. It ends once the run
has left ACQUIRING (DRAINING or PROCESSING) and every expected frame is accounted for, or no frame
came for --drain-timeout after that; then it writes WorkflowMessage and prints a summary.

The channel, the expected count and the first frame's uniqueId default to the run's Request
(dataChannel, expectedFrames, firstFrameId). The monitor's first update (the channel's value from
before the subscription, such as the last frame of the previous run) is booked apart, never
counted; the run counts from the first frame after it, or from --first-id / firstFrameId when
given, whatever the detector's counter says. Missed = expected - received at the end.

A run with several consumers (the Request's consumers N) has N members, each started with
--member K/N (or PVABRIDGE_MEMBER=K/N in its environment, as a DM stage or a batch job array sets
it), each behind a distributor that gives it its share of the frames: `pvabridge relay
--distribute N`, or the data channel's own server when each member asks for its share with
--distributor (pvDatabase's _[pydistributor=...] option, which pvabridge and pvapy servers
have). A member books the frames it received and serves its Stats under PREFIX wf:K:; the bridge
is READY once all N are, sums their books, and counts missed the frames no member received
(expected minus the sum). A member that stops reporting is named lost in Message. A member exits
0 unless something failed. See docs/scale-out.md.
  for k in 0 1 2 3; do pvabridge workflow consume --handshake $handshakePrefix --member $k/4 & done; wait

Exit status: 0 when every frame came; 3 when frames were lost; 1 when the run ended (ABORTED,
FAILED, TIMEOUT) or anything failed.")]
pub struct ConsumeArgs {
    /// The detector's PV (default: the Request's dataChannel).
    #[arg(long, value_name = "PV")]
    channel: Option<String>,
    /// Frames the detector sends (default: the Request's expectedFrames, or FramesExpected).
    #[arg(long, value_name = "N")]
    expected: Option<u64>,
    /// The uniqueId of the run's first frame (default: the Request's firstFrameId, else the
    /// first frame received after subscribing).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    first_id: Option<i32>,
    /// Directory of the results file (default: the working directory, the DM job's).
    #[arg(long, value_name = "DIR", default_value = ".")]
    results: PathBuf,
    /// Time without a new frame, once acquisition is over, before the missing frames count
    /// as lost.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    drain_timeout: Duration,
    /// The longest this stage waits for acquisition to end.
    #[arg(long, value_name = "DURATION", default_value = "3600s", value_parser = positive_duration)]
    max_wait: Duration,
    /// Time between reports to the bridge (and updates of Stats).
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = positive_duration)]
    progress_period: Duration,
    /// This consumer's place among the run's consumers: K, or K/N (N must then be the
    /// Request's `consumers`); 0 for a single one.
    #[arg(long, value_name = "K[/N]", env = MEMBER_ENV, default_value = "0", value_parser = member)]
    member: Member,
    /// Time each frame costs to process, in milliseconds (a sleep per frame before its
    /// statistics; what makes a scaling measurement show on a small machine).
    #[arg(long, value_name = "MS", default_value = "0", value_parser = milliseconds, allow_negative_numbers = true)]
    process_time: Duration,
    /// Ask the channel's server for this member's share with pvDatabase's data distributor
    /// (a pvapy or pvDatabase server, or any pvabridge server), e.g. `trigger:uniqueId;updates:1`
    /// (keys group, set, trigger, updates, mode).
    #[arg(long, value_name = "SPEC", value_parser = distributor_spec)]
    distributor: Option<String>,
    /// Prefix of the PVs this stage serves (default: the handshake prefix + `wf:`, or + `wf:K:`
    /// for member K of a group of several).
    #[arg(long, value_name = "PREFIX")]
    serve_prefix: Option<String>,
    /// UDP port on which this stage's PVs are searched (0 picks a free one, so that a stage on
    /// the bridge's host never takes the searches meant for the bridge; give the facility's
    /// port, e.g. 5076, on a compute host of its own so that clients find Stats).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    serve_udp_port: u16,
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

/// The environment variable that gives `--member` (K or K/N) when the option is absent: what a
/// DM stage or a batch job array sets for each member it starts.
pub const MEMBER_ENV: &str = "PVABRIDGE_MEMBER";

/// `--member K[/N]`: the member's number and, when given, the size of its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    k: u32,
    n: Option<u32>,
}

fn member(text: &str) -> Result<Member, String> {
    let number = |t: &str, what: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|_| format!("{what} must be a whole number, not '{t}' (give K or K/N)"))
    };
    let (k, n) = match text.split_once('/') {
        Some((k, n)) => (number(k, "K")?, Some(number(n, "N")?)),
        None => (number(text, "K")?, None),
    };
    match n {
        Some(0) => Err("N must be 1 or more".into()),
        Some(n) if k >= n => Err(format!("member {k} of {n}: K counts from 0 to N-1")),
        _ => Ok(Member { k, n }),
    }
}

fn distributor_spec(text: &str) -> Result<String, String> {
    pva::server::distributor::DistributorRequest::parse(text).map(|_| text.to_string())
}

fn milliseconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .ok_or_else(|| format!("'{text}' is not a number of milliseconds (0 or more)"))
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
    let (drain_timeout, max_wait, progress_period) =
        (args.drain_timeout, args.max_wait, args.progress_period);
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
    let first_id = args
        .first_id
        .or_else(|| request.as_ref().and_then(|r| r.first_frame_id));
    let consumers = request.as_ref().map_or(1, RunRequest::consumer_count);
    let Member { k, n } = args.member;
    if let Some(n) = n.filter(|n| *n != consumers) {
        bail!("--member {k}/{n}: the run's Request has consumers {consumers}, not {n}",);
    }
    if k >= consumers {
        bail!(
            "--member {k}: the run has {consumers} consumer(s), numbered 0 to {}",
            consumers - 1
        );
    }
    // In a group each member gets a share of the frames: which ones is the distributor's
    // choice, so a member books what it received and the bridge books the group's missed
    // frames (expected minus the members' received).
    let group = consumers > 1;
    let (expected, first_id) = if group {
        (None, None)
    } else {
        (expected, first_id)
    };
    let results =
        Arc::new(StatsFile::create(&args.results.join(RESULTS_FILE)).map_err(|e| anyhow!(e))?);
    let serve_prefix = args.serve_prefix.clone().unwrap_or_else(|| {
        if group || k > 0 {
            format!("{}wf:{k}:", slot.prefix())
        } else {
            format!("{}wf:", slot.prefix())
        }
    });
    let books = Arc::new(Books::default());
    if group {
        books.set_group_member();
    }
    let reporting = Reporting::start(
        slot.clone(),
        k,
        (&serve_prefix, args.serve_udp_port),
        progress_period,
        books.clone(),
    )
    .await?;

    let acquisition = watch_acquisition(&slot, max_wait);
    let processed = Arc::new(AtomicU64::new(0));
    let (subscribed_tx, mut subscribed_rx) = tokio::sync::mpsc::unbounded_channel();
    let hooks = Hooks {
        process: Some({
            let (results, books, processed) = (results.clone(), books.clone(), processed.clone());
            Arc::new(move |frame: &Frame| {
                let stats = results.write(frame);
                books.processed(frame.meta.unique_id, stats);
                processed.fetch_add(1, Ordering::Relaxed);
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
        origin: first_id.map_or(Origin::FirstReceived, |id| Origin::Id(id.into())),
        process_time: args.process_time,
        distributor: args.distributor.clone(),
        ..ConsumerConfig::default()
    };
    let progress = Progress::new("workflow consume", expected, args.quiet);
    let consuming = consume_with(
        ctx,
        &config,
        hooks,
        progress_period,
        drained(acquisition.clone(), processed.clone(), drain_timeout),
        |p| {
            books.progress(p);
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
            books.set_ready();
            reporting.now();
            tracing::info!(
                "subscribed to {channel}; ready reported to {}",
                slot.prefix()
            );
        }
    };
    let report = tokio::select! {
        report = &mut consuming => report,
        () = ready => consuming.await,
    };
    progress.finish();
    let report = report.with_context(|| format!("the stream on {channel} failed"))?;
    books.finish(&report);
    let state = acquisition_outcome(&mut acquisition.clone()).await;
    let rows = results.finish().map_err(|e| anyhow!(e))?;
    reporting.finish().await?;
    let state = state.map_err(|reason| {
        anyhow!(
            "{reason} ({} of {} frames received)",
            report.counts.received,
            expected.map_or("?".into(), |n| n.to_string())
        )
    })?;
    let missed = if group { 0 } else { report.counts.missed };
    let message = if group {
        format!(
            "member {k} of {consumers}: {} frames received (the group's missed frames are the \
             bridge's books); statistics of {rows} frames in {}",
            report.counts.received,
            results.path().display()
        )
    } else {
        format!(
            "{} frames received, {missed} missed{}; statistics of {rows} frames in {}",
            report.counts.received,
            expected.map_or(String::new(), |n| format!(" of {n}")),
            results.path().display()
        )
    };
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
