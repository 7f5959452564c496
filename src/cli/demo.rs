//! `pvabridge demo`: the whole streaming handshake on one machine, with nothing to configure.
//! In this process: the embedded DM service, the bridge and the simulated detector, each on
//! loopback ports of its own; the DM workflow's stage runs `pvabridge workflow consume` as a
//! child process; this process plays the Bluesky side and prints what happened.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use coordinator::embedded::EmbeddedDm;
use coordinator::machine::{CatalogStatus, Run, SlotRecord};
use coordinator::{
    Bridge, BridgeConfig, Command, HandshakeClient, MachineConfig, RunRequest, State, Timeouts,
};
use dm::{ProcessingJob, Stage, Workflow};
use indicatif::{ProgressBar, ProgressStyle};
use pva::client::Context;
use pva::server::{Server, StaticSource};
use pva::{ClientConfig, ServerConfig};
use serde::Serialize;
use serde_json::Value;
use stream::simdet::{Published, SimDet, SimDetConfig};
use tokio::sync::watch;

use super::common::shutdown_signal;
use super::workflow_consume::RESULTS_FILE;

/// The run slot the demo serves.
const PREFIX: &str = "demo:";
/// The detector's PV.
const DATA_CHANNEL: &str = "demo:det:Image";
/// The DM workflow the demo registers.
const WORKFLOW: &str = "pvabridge-demo";
/// The stage that receives the stream.
const CONSUME_STAGE: &str = "01-CONSUME";
/// Seconds the workflow has to become ready.
const READY_TIMEOUT: f64 = 30.0;

/// Options of `pvabridge demo`.
#[derive(Args, Debug)]
#[command(after_help = "\
What runs, all on loopback ports of its own (two demos never meet, and no EPICS setting is read):
  * the embedded DM processing service, in a new work directory;
  * the bridge (`pvabridge serve`) serving the handshake PVs demo:State, demo:Command, ...;
  * a DM workflow `pvabridge-demo` whose stage 01-CONSUME runs
      pvabridge workflow consume --handshake $handshakePrefix --channel $dataChannel --expected $expectedFrames
    as a child process, which subscribes to the detector, sets Ready, and writes one row of
    statistics per frame to frame-stats.csv in the DM job's working directory;
  * the simulated detector on demo:det:Image;
  * the Bluesky side, played here: write Request, START, wait for READY, ACQ_STARTED, publish
    the frames, ACQ_DONE, wait for a final state.
Then a summary: the states with their times, frames expected/received/missed, rates, the DM job's
stages with their exit status, and where the results are.

With --runs N the Bluesky side runs N runs one after the other through the same bridge, DM service
and detector, whose frame counter goes on from run to run (as areaDetector's ArrayCounter does);
each Request carries firstFrameId, the detector's next uniqueId. Each run is summarised; --json
then prints {\"ok\": ..., \"runs\": [summary, ...]}. The runs stop at the first that fails.

Exit status: 0 only when every run ended DONE with no frame lost.

Examples:
  pvabridge demo
  pvabridge demo --frames 5000 --fps 1000 --nx 256 --ny 256
  pvabridge demo --runs 3 --frames 300
  pvabridge demo --keep /tmp/demo --json")]
pub struct DemoArgs {
    /// Frames the detector publishes in each run.
    #[arg(long, default_value_t = 500)]
    frames: u64,
    /// Runs, one after the other, with the detector's counter going on.
    #[arg(long, value_name = "N", default_value_t = 1)]
    runs: u64,
    /// Frames per second (0: as fast as the workflow takes them).
    #[arg(long, default_value_t = 100.0)]
    fps: f64,
    /// Pixels along x.
    #[arg(long, default_value_t = 512)]
    nx: usize,
    /// Pixels along y.
    #[arg(long, default_value_t = 512)]
    ny: usize,
    /// Element type: int8 uint8 int16 uint16 int32 uint32 int64 uint64 float32 float64 bool.
    #[arg(long, default_value = "uint16")]
    dtype: String,
    /// Keep the work directory (DM database, job directories with the results, bridge state)
    /// in DIR, which must be new or empty; without it a temporary directory is removed at the end.
    #[arg(long, value_name = "DIR")]
    keep: Option<PathBuf>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress on stderr.
    #[arg(short, long)]
    quiet: bool,
}

/// One state of the run, as the bridge recorded it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StateTime {
    state: State,
    /// Seconds since START.
    at_s: f64,
    message: String,
}

/// The frame counts of the run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Frames {
    expected: u64,
    published: u64,
    /// Frames the workflow received and processed (the bridge's FramesReceived).
    received: u64,
    /// Frames never accounted for (the bridge's FramesMissed).
    missed: u64,
    /// Frames received more than once, by the consumers' books (once they reported).
    duplicates: Option<u64>,
    /// What the workflow's consumer counted, when its stage reported.
    out_of_order: Option<u64>,
}

/// Rates on both sides of the stream.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rates {
    detector_fps: f64,
    detector_mb_per_s: f64,
    workflow_fps: Option<f64>,
    workflow_mb_per_s: Option<f64>,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
}

/// One stage of the DM job.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct StageRun {
    stage: String,
    status: String,
    exit_status: Option<i32>,
    run_time_s: Option<f64>,
    working_dir: Option<String>,
    std_out: String,
}

/// The DM job of the run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobSummary {
    id: String,
    status: String,
    run_time_s: Option<f64>,
    error: Option<String>,
    stages: Vec<StageRun>,
}

/// Where the results are.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Results {
    file: Option<PathBuf>,
    rows: Option<u64>,
    /// The work directory stays after the demo (`--keep`).
    kept: bool,
}

/// Everything the demo prints at the end.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    /// Which run this was, from 1.
    run: u64,
    /// The uniqueId of the run's first frame (the Request's firstFrameId).
    first_frame_id: i32,
    /// The final state (or the last one seen, when the run did not end).
    final_state: Option<State>,
    /// DONE with no frame lost.
    ok: bool,
    /// The bridge's last message.
    message: String,
    prefix: String,
    data_channel: String,
    frame_bytes: usize,
    states: Vec<StateTime>,
    frames: Frames,
    rates: Rates,
    job: Option<JobSummary>,
    results: Results,
    /// Whether the run's metadata reached the DM run catalog.
    run_catalog: String,
    work_dir: PathBuf,
    /// What went wrong on the Bluesky side, if anything.
    error: Option<String>,
}

/// The work directory: kept, or removed when dropped.
enum WorkDir {
    Kept(PathBuf),
    Temporary(tempfile::TempDir),
}

impl WorkDir {
    fn new(keep: Option<&Path>) -> anyhow::Result<WorkDir> {
        match keep {
            Some(dir) => {
                let used = std::fs::read_dir(dir).map(|mut entries| entries.next().is_some());
                if matches!(used, Ok(true)) {
                    bail!(
                        "--keep {}: the directory is not empty; give a new or empty one",
                        dir.display()
                    );
                }
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                Ok(WorkDir::Kept(std::path::absolute(dir)?))
            }
            None => Ok(WorkDir::Temporary(
                tempfile::Builder::new()
                    .prefix("pvabridge-demo-")
                    .tempdir()
                    .context("cannot create a temporary directory")?,
            )),
        }
    }

    fn path(&self) -> &Path {
        match self {
            WorkDir::Kept(path) => path,
            WorkDir::Temporary(dir) => dir.path(),
        }
    }
}

/// Live progress on stderr: a line per state, and a bar of the frames the workflow processed
/// on a terminal.
struct LiveView {
    bar: Option<ProgressBar>,
    quiet: bool,
    started: Instant,
    /// The state of the last line shown.
    shown: Cell<Option<State>>,
    /// The frames of a run, the end of the bar.
    frames: u64,
}

impl LiveView {
    fn new(frames: u64, quiet: bool) -> LiveView {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(frames).with_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} frames processed {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        LiveView {
            bar,
            quiet,
            started: Instant::now(),
            shown: Cell::new(None),
            frames,
        }
    }

    /// Show the slot's record: a line when its state changed, and the frames processed.
    fn record(&self, record: &SlotRecord) {
        let run = record.run.as_ref();
        if self.shown.replace(Some(record.state)) != Some(record.state) {
            let lost = run.map(Run::lost_summary).unwrap_or_default();
            self.line(&format!("{}: {}{lost}", record.state, record.message));
        }
        if let Some(bar) = &self.bar {
            bar.set_position(run.map_or(0, Run::processed).min(self.frames));
            bar.set_message(record.state.to_string());
        }
    }

    fn line(&self, text: &str) {
        let line = format!("[{:7.2} s] {text}", self.started.elapsed().as_secs_f64());
        match &self.bar {
            Some(bar) => bar.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Quote `text` for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The demo's DM workflow: the streaming stage, then a stage that counts the results, both
/// searching the demo's own servers only.
fn demo_workflow(exe: &Path, search: &str) -> Workflow {
    let env = format!(
        "EPICS_PVA_ADDR_LIST={} EPICS_PVA_AUTO_ADDR_LIST=NO EPICS_PVA_NAME_SERVERS=",
        shell_quote(search)
    );
    let consume = format!(
        "{env} {} workflow consume --handshake $handshakePrefix --channel $dataChannel \
         --expected $expectedFrames --drain-timeout 5 --json",
        shell_quote(&exe.display().to_string())
    );
    let count = format!(
        "echo \"$(($(wc -l < {RESULTS_FILE}) - 1)) rows of statistics in $PWD/{RESULTS_FILE}\""
    );
    let stages = [(CONSUME_STAGE, consume), ("02-COUNT", count)]
        .into_iter()
        .map(|(key, command)| {
            let stage = Stage {
                command,
                ..Stage::default()
            };
            (key.to_string(), stage)
        })
        .collect::<BTreeMap<_, _>>();
    Workflow {
        name: WORKFLOW.into(),
        description: Some(
            "pvabridge demo: per-frame statistics of a simulated detector stream".into(),
        ),
        stages,
        ..Workflow::default()
    }
}

/// The machine's waits, scaled to the run: the demo never waits long for something that failed.
fn timeouts(acquisition: Duration) -> Timeouts {
    Timeouts {
        start: Duration::from_secs(30),
        ready: Duration::from_secs_f64(READY_TIMEOUT),
        arm: Duration::from_secs(30),
        acquire: acquisition + Duration::from_secs(60),
        drain_idle: Duration::from_secs(10),
        processing: Some(Duration::from_secs(60)),
        dm_lost: Duration::from_secs(30),
        finish: Duration::from_secs(10),
        member_silence: Duration::from_secs(3),
    }
}

/// Everything the demo runs, started.
struct Services {
    dm: EmbeddedDm,
    bridge: Bridge,
    detector: Server,
    det: Arc<SimDet>,
}

impl Services {
    async fn start(dir: &Path, det: SimDetConfig, acquisition: Duration) -> anyhow::Result<Self> {
        let dm = EmbeddedDm::start(&dir.join("dm"), ([127, 0, 0, 1], 0).into())
            .await
            .context("cannot start the embedded DM service")?;
        let mut config = BridgeConfig::new(vec![PREFIX.to_string()], dir.join("bridge-state"));
        config.machine = MachineConfig {
            timeouts: timeouts(acquisition),
            experiment: "pvabridge-demo".into(),
            stop_job_on_timeout: true,
        };
        config.poll_period = Duration::from_millis(200);
        let bridge = Bridge::start(config, dm.client()?, ServerConfig::isolated())
            .await
            .context("cannot start the bridge")?;
        let det = Arc::new(SimDet::new(det)?);
        let source = Arc::new(StaticSource::new());
        source.add(DATA_CHANNEL, det.pv().clone());
        let detector = Server::start(ServerConfig::isolated(), vec![source])
            .await
            .context("cannot start the simulated detector's server")?;
        Ok(Services {
            dm,
            bridge,
            detector,
            det,
        })
    }

    /// The EPICS_PVA_ADDR_LIST that finds the bridge and the detector, and only them.
    fn search_list(&self) -> String {
        format!("{} {}", self.bridge.udp_addr(), self.detector.udp_addr())
    }

    async fn stop(self) {
        self.detector.stop().await;
        self.bridge.stop().await;
        self.dm.shutdown().await;
    }
}

/// What the Bluesky side saw.
struct Played {
    published: Published,
    final_state: Option<State>,
    error: Option<String>,
}

/// Play the Bluesky side: START, READY, ACQ_STARTED, the frames, ACQ_DONE, a final state.
async fn play_bluesky(
    slot: &HandshakeClient,
    det: &Arc<SimDet>,
    request: &RunRequest,
    acquisition: Duration,
    display: &LiveView,
) -> Played {
    let stop = Arc::new(AtomicBool::new(false));
    let mut published = Published::default();
    let finals = [State::Done, State::Failed, State::Aborted, State::Timeout];
    let steps = async {
        slot.start(request).await.context("START")?;
        display.line(&format!(
            "START: DM workflow {WORKFLOW} asked to run; waiting for the workflow to be ready"
        ));
        slot.wait_for_state(
            &[State::Ready],
            Duration::from_secs_f64(READY_TIMEOUT + 30.0),
        )
        .await
        .context("waiting for READY")?;
        slot.command(Command::AcqStarted)
            .await
            .context("ACQ_STARTED")?;
        let c = det.config();
        display.line(&format!(
            "ACQ_STARTED: publishing {} frames of {}x{} {} at {} on {DATA_CHANNEL}",
            c.frames.unwrap_or(0),
            c.nx,
            c.ny,
            c.dtype.name(),
            if c.fps > 0.0 {
                format!("{} frames/s", c.fps)
            } else {
                "full speed".into()
            }
        ));
        let publisher = {
            let (det, stop) = (det.clone(), stop.clone());
            tokio::task::spawn_blocking(move || det.run(&stop, |_| {}))
        };
        published = publisher.await.context("the detector thread failed")?;
        display.line(&format!(
            "detector done: {} frames in {:.2} s ({:.1} frames/s, {:.1} MB/s); ACQ_DONE",
            published.frames, published.elapsed_s, published.fps, published.mb_per_s
        ));
        slot.command(Command::AcqDone).await.context("ACQ_DONE")?;
        let end = slot
            .wait_for_state(&finals, acquisition + Duration::from_secs(120))
            .await
            .context("waiting for the end of the run")?;
        anyhow::Ok(end)
    };
    let outcome = tokio::select! {
        outcome = steps => outcome,
        () = shutdown_signal() => {
            stop.store(true, Ordering::Relaxed);
            display.line("interrupted: ABORT");
            let _ = slot.command(Command::Abort).await;
            Err(anyhow!("interrupted"))
        }
    };
    stop.store(true, Ordering::Relaxed);
    match outcome {
        Ok(state) => Played {
            published,
            final_state: Some(state),
            error: None,
        },
        Err(err) => {
            // The run may still end on its own (a refused or failed step ends it in a final
            // state): a short wait so the summary shows where it ended.
            let end = slot
                .wait_for_state(&finals, Duration::from_secs(15))
                .await
                .ok();
            Played {
                published,
                final_state: end,
                error: Some(format!("{err:#}")),
            }
        }
    }
}

/// Show the slot's record as it changes, until dropped.
async fn follow(
    mut records: watch::Receiver<SlotRecord>,
    display: &LiveView,
) -> std::convert::Infallible {
    loop {
        display.record(&records.borrow_and_update());
        if records.changed().await.is_err() {
            // The bridge stopped: nothing more to show.
            return std::future::pending().await;
        }
    }
}

/// The slot's record once the bridge has offered the run to the DM run catalog, or after a
/// short wait the record as it is.
async fn catalog_settled(records: &mut watch::Receiver<SlotRecord>) -> SlotRecord {
    let settled = |record: &SlotRecord| {
        let run = record.run.as_ref();
        run.is_some_and(|run| run.catalog != CatalogStatus::Pending)
    };
    let _ = tokio::time::timeout(Duration::from_secs(15), records.wait_for(settled)).await;
    records.borrow().clone()
}

fn job_summary(job: &ProcessingJob) -> JobSummary {
    let stages = job
        .workflow
        .as_ref()
        .map(|w| {
            w.stages
                .iter()
                .map(|(key, stage)| {
                    let last = stage.child_processes.as_ref().and_then(|children| {
                        children.values().max_by_key(|c| c.child_process_number)
                    });
                    StageRun {
                        stage: key.clone(),
                        status: last
                            .and_then(|c| c.status)
                            .map_or_else(|| "not run".into(), |s| s.to_string()),
                        exit_status: last.and_then(|c| c.exit_status),
                        run_time_s: last.and_then(|c| c.run_time),
                        working_dir: last.map(|c| c.working_dir.clone()),
                        std_out: last
                            .map(|c| c.std_out.trim().to_string())
                            .unwrap_or_default(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    JobSummary {
        id: job.id.clone(),
        status: job.status.to_string(),
        run_time_s: job.run_time,
        error: job.error_message.clone(),
        stages,
    }
}

/// The streaming stage's own summary (`workflow consume --json` prints it on stdout), read only
/// for what the consumer alone measured: its rates, latency and out-of-order count. The frame
/// counts come from the consumers' books in the slot's record.
fn stage_report(job: Option<&JobSummary>) -> Option<Value> {
    let stage = job?.stages.iter().find(|s| s.stage == CONSUME_STAGE)?;
    serde_json::from_str(stage.std_out.lines().last()?).ok()
}

fn count_rows(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    Some(text.lines().count().saturating_sub(1) as u64)
}

/// Run the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let dtype = super::simdet::frame_type(&args.dtype)?;
    if args.frames == 0 {
        bail!("--frames 0: the demo needs at least one frame");
    }
    let det_config = SimDetConfig {
        nx: args.nx,
        ny: args.ny,
        dtype,
        fps: args.fps,
        frames: Some(args.frames),
        runtime: None,
        start_delay: Duration::ZERO,
        seed: 1,
        counter: false,
        start_id: 1,
    };
    det_config.validate()?;
    let acquisition = if args.fps > 0.0 {
        Duration::from_secs_f64(args.frames as f64 / args.fps)
    } else {
        Duration::from_secs(60)
    };
    if args.runs == 0 {
        bail!("--runs 0: the demo needs at least one run");
    }
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let work = WorkDir::new(args.keep.as_deref())?;
    let runtime = super::common::runtime()?;
    let summaries = runtime.block_on(async {
        let services = Services::start(work.path(), det_config.clone(), acquisition).await?;
        let dm = services.dm.client()?;
        dm.add_workflow(&demo_workflow(&exe, &services.search_list()))
            .await
            .context("cannot register the demo workflow")?;
        let mut records = services
            .bridge
            .records(PREFIX)
            .context("the bridge serves the demo's slot")?;
        let ctx = Context::new(ClientConfig::isolated(services.bridge.udp_addr()))?;
        let slot = HandshakeClient::new(ctx, PREFIX).with_timeout(Duration::from_secs(10));
        let mut summaries = Vec::new();
        for run in 1..=args.runs {
            let display = LiveView::new(args.frames, args.quiet);
            if run == 1 {
                display.line(&format!(
                    "bridge on {} (slot {PREFIX}), detector on {} ({DATA_CHANNEL}), DM at {}; work directory {}",
                    services.bridge.udp_addr(),
                    services.detector.udp_addr(),
                    services.dm.url(),
                    work.path().display()
                ));
            }
            let first_frame_id = services.det.next_id();
            if args.runs > 1 {
                display.line(&format!(
                    "run {run} of {}: frames from uniqueId {first_frame_id}",
                    args.runs
                ));
            }
            let mut request = RunRequest::new(WORKFLOW);
            request.run_uid = Some(uuid::Uuid::new_v4().to_string());
            request.expected_frames = Some(args.frames);
            request.first_frame_id = Some(first_frame_id);
            request.data_channel = Some(DATA_CHANNEL.into());
            request.ready_timeout = Some(READY_TIMEOUT);
            request
                .args_dict
                .insert("sample".into(), "simulated spots".into());
            let played = tokio::select! {
                played = play_bluesky(&slot, &services.det, &request, acquisition, &display) => played,
                never = follow(records.clone(), &display) => match never {},
            };
            display.record(&records.borrow());
            display.finish();
            let record = catalog_settled(&mut records).await;
            let summary = summarize(
                &args,
                (run, first_frame_id),
                &det_config,
                &work,
                played,
                &record,
            );
            let ok = summary.ok;
            summaries.push(summary);
            if !ok || run == args.runs {
                break;
            }
            // The next run starts from IDLE.
            slot.command(Command::Reset).await.context("RESET")?;
            slot.wait_for_state(&[State::Idle], Duration::from_secs(30))
                .await
                .context("waiting for IDLE after RESET")?;
        }
        services.stop().await;
        anyhow::Ok(summaries)
    })?;
    let ok = summaries.len() as u64 == args.runs && summaries.iter().all(|s| s.ok);
    if args.json {
        let text = match summaries.as_slice() {
            [one] if args.runs == 1 => serde_json::to_string_pretty(one)?,
            all => serde_json::to_string_pretty(&serde_json::json!({"ok": ok, "runs": all}))?,
        };
        println!("{text}");
    } else {
        for summary in &summaries {
            if args.runs > 1 {
                println!("\n=== run {} of {}", summary.run, args.runs);
            }
            print_text(summary);
        }
        if args.runs > 1 {
            let verdict = if ok {
                "every run ended DONE with every frame accounted for".to_string()
            } else {
                format!(
                    "{} of {} runs ended DONE with every frame accounted for",
                    summaries.iter().filter(|s| s.ok).count(),
                    args.runs
                )
            };
            println!("\npvabridge demo: {} runs; {verdict}", args.runs);
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Summarise run `run_number` (from 1), whose first frame was `first_frame_id`.
fn summarize(
    args: &DemoArgs,
    (run_number, first_frame_id): (u64, i32),
    det: &SimDetConfig,
    work: &WorkDir,
    played: Played,
    record: &SlotRecord,
) -> Summary {
    let run = record.run.as_ref();
    let job = run.and_then(|r| r.job.as_ref()).map(job_summary);
    let started = run.map_or(0.0, |r| r.started_at);
    let states = run
        .map(|r| {
            r.history
                .iter()
                .map(|t| StateTime {
                    state: t.state,
                    at_s: t.at - started,
                    message: t.message.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    let received = run.map_or(0, |r| r.received());
    let missed = run
        .and_then(|r| r.frames_missed)
        .unwrap_or_else(|| args.frames.saturating_sub(received));
    let duplicates = run
        .filter(|r| !r.members.is_empty())
        .map(|r| r.members.values().map(|m| m.duplicates).sum());
    let stage = stage_report(job.as_ref());
    let stream = stage.as_ref().map(|s| &s["stream"]);
    let number = |key: &str| stream.and_then(|s| s[key].as_f64());
    let results_file = job
        .as_ref()
        .and_then(|job| job.stages.iter().find(|s| s.stage == CONSUME_STAGE))
        .and_then(|stage| stage.working_dir.as_ref())
        .map(|dir| Path::new(dir).join(RESULTS_FILE));
    let rows = results_file.as_deref().and_then(count_rows);
    let final_state = played
        .final_state
        .or(Some(record.state).filter(|s| s.is_final()));
    let ok = final_state == Some(State::Done) && missed == 0 && received == args.frames;
    Summary {
        run: run_number,
        first_frame_id,
        final_state,
        ok,
        message: record.message.clone(),
        prefix: PREFIX.into(),
        data_channel: DATA_CHANNEL.into(),
        frame_bytes: det.frame_bytes(),
        states,
        frames: Frames {
            expected: args.frames,
            published: played.published.frames,
            received,
            missed,
            duplicates,
            out_of_order: stream.and_then(|s| s["out_of_order"].as_u64()),
        },
        rates: Rates {
            detector_fps: played.published.fps,
            detector_mb_per_s: played.published.mb_per_s,
            workflow_fps: number("fps"),
            workflow_mb_per_s: number("mb_per_s"),
            latency_p50_ms: stream.and_then(|s| s["latency"]["p50_ms"].as_f64()),
            latency_p99_ms: stream.and_then(|s| s["latency"]["p99_ms"].as_f64()),
        },
        job,
        results: Results {
            file: results_file,
            rows,
            kept: matches!(work, WorkDir::Kept(_)),
        },
        run_catalog: match run.map(|r| &r.catalog) {
            Some(CatalogStatus::Sent) => "sent".into(),
            Some(CatalogStatus::Failed { message }) => format!("failed: {message}"),
            Some(CatalogStatus::Pending) | None => "not sent".into(),
        },
        work_dir: work.path().to_path_buf(),
        error: played.error,
    }
}

fn print_text(s: &Summary) {
    let verdict = match (s.final_state, s.ok) {
        (_, true) => "the run ended DONE with every frame accounted for".to_string(),
        (Some(state), false) => format!("the run ended {state}: {}", s.message),
        (None, false) => format!("the run did not end: {}", s.message),
    };
    println!("\npvabridge demo: {verdict}");
    if let Some(error) = &s.error {
        println!("  Bluesky side: {error}");
    }
    println!("\nStates (seconds after START):");
    for t in &s.states {
        println!("  {:8.3}  {:<11} {}", t.at_s, t.state.name(), t.message);
    }
    let f = &s.frames;
    println!(
        "\nFrames: {} expected from uniqueId {}, {} published, {} received, {} missed{}",
        f.expected,
        s.first_frame_id,
        f.published,
        f.received,
        f.missed,
        match (f.duplicates, f.out_of_order) {
            (Some(d), Some(o)) => format!(", {d} duplicated, {o} out of order"),
            _ => String::new(),
        }
    );
    let r = &s.rates;
    println!(
        "Rates: detector {:.1} frames/s, {:.1} MB/s ({} bytes a frame)",
        r.detector_fps, r.detector_mb_per_s, s.frame_bytes
    );
    if let (Some(fps), Some(mbps)) = (r.workflow_fps, r.workflow_mb_per_s) {
        println!(
            "       workflow {fps:.1} frames/s, {mbps:.1} MB/s; latency p50 {:.3} ms, p99 {:.3} ms",
            r.latency_p50_ms.unwrap_or(0.0),
            r.latency_p99_ms.unwrap_or(0.0)
        );
    }
    match &s.job {
        Some(job) => {
            println!(
                "\nDM job {} ({}{}):",
                job.id,
                job.status,
                job.run_time_s
                    .map_or(String::new(), |t| format!(", {t:.2} s"))
            );
            for stage in &job.stages {
                println!(
                    "  {:<11} {:<8} exit {:<4} {}",
                    stage.stage,
                    stage.status,
                    stage
                        .exit_status
                        .map_or_else(|| "-".to_string(), |e| e.to_string()),
                    stage
                        .run_time_s
                        .map_or(String::new(), |t| format!("{t:.2} s"))
                );
            }
            if let Some(error) = &job.error {
                println!("  error: {error}");
            }
        }
        None => println!("\nDM job: none was started"),
    }
    println!("Run catalog: {}", s.run_catalog);
    match (&s.results.file, s.results.rows) {
        (Some(file), Some(rows)) if s.results.kept => {
            println!(
                "\nResults: {rows} rows of per-frame statistics in {}",
                file.display()
            );
        }
        (Some(_), Some(rows)) => println!(
            "\nResults: {rows} rows of per-frame statistics, removed with the work directory \
             (pass --keep DIR to keep them)"
        ),
        _ => println!("\nResults: none were written"),
    }
    if s.results.kept {
        println!("Work directory: {}", s.work_dir.display());
    }
}
