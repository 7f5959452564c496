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
use dm::{Stage, Workflow};
use indicatif::{ProgressBar, ProgressStyle};
use pva::client::Context;
use pva::server::{Server, StaticSource};
use pva::{ClientConfig, ServerConfig};
use stream::simdet::{Published, SimDet, SimDetConfig};
use tokio::sync::watch;

use super::common::shutdown_signal;
use super::workflow_consume::RESULTS_FILE;

mod summary;

use summary::{print_text, summarize};

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
