//! What `pvabridge demo` prints at the end of a run: the summary of the run, from the slot's
//! record (states, the consumers' books with their rates and latency, the DM job as last seen,
//! the run catalog).

use std::path::{Path, PathBuf};

use coordinator::machine::{CatalogStatus, Run, SlotRecord};
use coordinator::{MemberReport, State};
use dm::ProcessingJob;
use serde::Serialize;
use stream::simdet::SimDetConfig;

use super::{DemoArgs, Played, WorkDir, CONSUME_STAGE, DATA_CHANNEL, PREFIX};
use crate::cli::workflow_consume::RESULTS_FILE;

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
pub(super) struct Summary {
    /// Which run this was, from 1.
    pub(super) run: u64,
    /// The uniqueId of the run's first frame (the Request's firstFrameId).
    first_frame_id: i32,
    /// The final state (or the last one seen, when the run did not end).
    final_state: Option<State>,
    /// DONE with no frame lost.
    pub(super) ok: bool,
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

/// The consumers' rates and latency from their books in the slot's record: frames/s and MB/s
/// summed over the members (each receives its share of the stream), latency the worst member's.
fn member_rates(run: Option<&Run>) -> Option<MemberRates> {
    let members = &run?.members;
    if members.is_empty() {
        return None;
    }
    let worst =
        |f: fn(&MemberReport) -> Option<f64>| members.values().filter_map(f).reduce(f64::max);
    Some(MemberRates {
        fps: members.values().map(|m| m.fps).sum(),
        mb_per_s: members.values().map(|m| m.mb_per_s).sum(),
        out_of_order: members.values().map(|m| m.out_of_order).sum(),
        latency_p50_ms: worst(|m| m.latency_p50_ms),
        latency_p99_ms: worst(|m| m.latency_p99_ms),
    })
}

/// What [`member_rates`] adds up.
struct MemberRates {
    fps: f64,
    mb_per_s: f64,
    out_of_order: u64,
    latency_p50_ms: Option<f64>,
    latency_p99_ms: Option<f64>,
}

fn count_rows(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    Some(text.lines().count().saturating_sub(1) as u64)
}

/// Summarise run `run_number` (from 1), whose first frame was `first_frame_id`.
pub(super) fn summarize(
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
    let consumers = member_rates(run);
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
            out_of_order: consumers.as_ref().map(|c| c.out_of_order),
        },
        rates: Rates {
            detector_fps: played.published.fps,
            detector_mb_per_s: played.published.mb_per_s,
            workflow_fps: consumers.as_ref().map(|c| c.fps),
            workflow_mb_per_s: consumers.as_ref().map(|c| c.mb_per_s),
            latency_p50_ms: consumers.as_ref().and_then(|c| c.latency_p50_ms),
            latency_p99_ms: consumers.as_ref().and_then(|c| c.latency_p99_ms),
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

pub(super) fn print_text(s: &Summary) {
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
