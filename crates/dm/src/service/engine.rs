//! The workflow engine: runs a job's stages in key order, each command as `sh -c` in its own
//! process group, with `$var` substitution, output capture, repeats, `runIf`, and stop.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use regex::Regex;
use serde_json::{Map, Value};
use tokio::sync::{watch, AcquireError, OwnedSemaphorePermit};

use super::condition;
use super::store::{Store, StoreError};
use super::{locked, Shared, INTERRUPTED_MESSAGE, SHUTDOWN_GRACE};
use crate::model::{value_as_text, ChildProcess, JobStatus, ProcessingJob, Stage, Workflow};

/// The message of a job started without any file specification.
pub(crate) const INVALID_FILE_SPEC: &str = "Invalid input file specification.";
/// argsDict keys that count as a file specification.
const FILE_SPEC_KEYS: [&str; 4] = ["filePath", "filePathList", "filePathPattern", "dataDir"];
/// Keys the job itself sets; an argsDict cannot override them.
const RESERVED_KEYS: [&str; 13] = [
    "id",
    "owner",
    "status",
    "stage",
    "workflow",
    "errorMessage",
    "submissionTime",
    "submissionTimestamp",
    "startTime",
    "startTimestamp",
    "endTime",
    "endTimestamp",
    "runTime",
];
/// The wait between repeats when a stage gives no `repeatPeriod`.
const DEFAULT_REPEAT_PERIOD: f64 = 1.0;
/// The part of a failed command's standard error quoted in the job's `errorMessage`.
const ERROR_TAIL_CHARS: usize = 500;

static VARIABLE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)").expect("valid regex")
});

/// What a job task is asked to do besides running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopRequest {
    /// Keep running.
    Run,
    /// A user stopped the job: kill its stage and end it `aborted`.
    User,
    /// The service is stopping: kill the stage and leave the job as stored.
    Shutdown,
}

enum StageOutcome {
    Done,
    Failed(String),
    Stopped(StopRequest),
}

/// The time now, in seconds since the epoch.
pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// A time as the text of DM's `*Timestamp` fields: local time with the zone's abbreviation,
/// e.g. `2023/05/02 05:39:56 CDT`.
pub(crate) fn timestamp(seconds: f64) -> String {
    let Ok(at) = jiff::Timestamp::from_second(seconds.floor() as i64) else {
        return String::new();
    };
    at.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%Y/%m/%d %H:%M:%S %Z")
        .to_string()
}

/// Make a new job of `workflow` for `owner`: failed at once without a file specification,
/// pending otherwise.
pub(crate) fn new_job(workflow: &Workflow, owner: &str, args: Map<String, Value>) -> ProcessingJob {
    let submitted = now();
    let has_file_spec = FILE_SPEC_KEYS.iter().any(|key| args.contains_key(*key));
    let extra = args
        .into_iter()
        .filter(|(key, _)| !RESERVED_KEYS.contains(&key.as_str()))
        .collect();
    let mut job = ProcessingJob {
        id: uuid::Uuid::new_v4().to_string(),
        owner: owner.to_string(),
        status: JobStatus::Pending,
        stage: None,
        workflow: Some(workflow.clone()),
        error_message: None,
        submission_time: Some(submitted),
        submission_timestamp: Some(timestamp(submitted)),
        start_time: None,
        start_timestamp: None,
        end_time: None,
        end_timestamp: None,
        run_time: None,
        extra,
    };
    if !has_file_spec {
        finish(
            &mut job,
            JobStatus::Failed,
            Some(INVALID_FILE_SPEC.to_string()),
        );
    }
    job
}

/// Queue a pending job: it takes a free running slot at once, or waits for one, then runs.
pub(crate) fn launch(shared: &Arc<Shared>, job: ProcessingJob) {
    let free_slot = shared.running_slots.clone().try_acquire_owned().ok();
    let (sender, receiver) = watch::channel(StopRequest::Run);
    locked(&shared.job_controls).insert(job.id.clone(), sender);
    let task_shared = shared.clone();
    let mut tasks = locked(&shared.job_tasks);
    while tasks.try_join_next().is_some() {}
    tasks.spawn(async move {
        let id = job.id.clone();
        run_job(&task_shared, job, free_slot, receiver).await;
        locked(&task_shared.job_controls).remove(&id);
    });
}

/// Ask a job to stop; false when it is not queued or running here.
pub(crate) fn request_stop(shared: &Shared, id: &str) -> bool {
    locked(&shared.job_controls)
        .get(id)
        .is_some_and(|sender| sender.send(StopRequest::User).is_ok())
}

/// Kill every running stage for a shutdown and wait (a bounded time) for the job tasks.
pub(crate) async fn stop_all_jobs(shared: &Shared) {
    for sender in locked(&shared.job_controls).values() {
        sender.send_replace(StopRequest::Shutdown);
    }
    let mut tasks = std::mem::take(&mut *locked(&shared.job_tasks));
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
}

/// Mark failed the jobs a previous run of the service left running or pending.
pub(crate) fn fail_interrupted_jobs(store: &Store) -> Result<(), StoreError> {
    for status in [JobStatus::Running, JobStatus::Pending] {
        for mut job in store.jobs_with_status(status.as_str())? {
            for stage in job.workflow.iter_mut().flat_map(|w| w.stages.values_mut()) {
                for child in stage
                    .child_processes
                    .iter_mut()
                    .flat_map(|c| c.values_mut())
                {
                    if child.status == Some(JobStatus::Running) {
                        child.status = Some(JobStatus::Failed);
                    }
                }
            }
            finish(
                &mut job,
                JobStatus::Failed,
                Some(INTERRUPTED_MESSAGE.to_string()),
            );
            tracing::warn!(
                "job {} was {} when the service stopped: marked failed",
                job.id,
                status
            );
            store.put_job(&job)?;
        }
    }
    Ok(())
}

fn finish(job: &mut ProcessingJob, status: JobStatus, error_message: Option<String>) {
    let ended = now();
    job.status = status;
    job.error_message = error_message;
    job.end_time = Some(ended);
    job.end_timestamp = Some(timestamp(ended));
    job.run_time = job.start_time.map(|started| ended - started);
}

fn save(shared: &Shared, job: &ProcessingJob) {
    if let Err(err) = shared.store.put_job(job) {
        tracing::error!("cannot store job {}: {err}", job.id);
    }
}

async fn stop_requested(receiver: &mut watch::Receiver<StopRequest>) -> StopRequest {
    loop {
        let request = *receiver.borrow_and_update();
        if request != StopRequest::Run {
            return request;
        }
        if receiver.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

async fn run_job(
    shared: &Shared,
    mut job: ProcessingJob,
    free_slot: Option<OwnedSemaphorePermit>,
    mut stop: watch::Receiver<StopRequest>,
) {
    let slot = tokio::select! {
        slot = wait_for_slot(shared, free_slot) => slot,
        request = stop_requested(&mut stop) => {
            if request == StopRequest::User {
                finish(&mut job, JobStatus::Aborted, None);
                save(shared, &job);
            }
            return;
        }
    };
    let Ok(_slot) = slot else {
        return;
    };
    let started = now();
    job.status = JobStatus::Running;
    job.start_time = Some(started);
    job.start_timestamp = Some(timestamp(started));
    let working_dir = shared.jobs_dir.join(&job.id);
    if let Err(err) = std::fs::create_dir_all(&working_dir) {
        let message = format!(
            "cannot create working directory {}: {err}",
            working_dir.display()
        );
        finish(&mut job, JobStatus::Failed, Some(message));
        save(shared, &job);
        return;
    }
    save(shared, &job);
    let stage_ids: Vec<String> = job
        .workflow
        .iter()
        .flat_map(|w| w.stages.keys().cloned())
        .collect();
    for stage_id in stage_ids {
        job.stage = Some(stage_id.clone());
        save(shared, &job);
        match run_stage(shared, &mut job, &stage_id, &working_dir, &mut stop).await {
            StageOutcome::Done => {}
            StageOutcome::Failed(message) => {
                tracing::info!("job {} failed in stage {stage_id}: {message}", job.id);
                finish(&mut job, JobStatus::Failed, Some(message));
                save(shared, &job);
                return;
            }
            StageOutcome::Stopped(StopRequest::User) => {
                finish(&mut job, JobStatus::Aborted, None);
                save(shared, &job);
                return;
            }
            StageOutcome::Stopped(_) => return,
        }
    }
    finish(&mut job, JobStatus::Done, None);
    save(shared, &job);
}

async fn wait_for_slot(
    shared: &Shared,
    free_slot: Option<OwnedSemaphorePermit>,
) -> Result<OwnedSemaphorePermit, AcquireError> {
    match free_slot {
        Some(slot) => Ok(slot),
        None => shared.running_slots.clone().acquire_owned().await,
    }
}

fn stage_of<'a>(job: &'a mut ProcessingJob, stage_id: &str) -> &'a mut Stage {
    job.workflow
        .as_mut()
        .and_then(|w| w.stages.get_mut(stage_id))
        .expect("stage ids come from the job's own workflow")
}

/// The number of the job's next child process: DM numbers them across the whole job, so a
/// stage's children continue the count of the stages before it (and of its own repeats).
fn next_child_number(job: &ProcessingJob) -> u64 {
    job.workflow.as_ref().map_or(0, |w| {
        w.stages
            .values()
            .filter_map(|s| s.child_processes.as_ref())
            .map(|c| c.len() as u64)
            .sum()
    })
}

fn record_child(job: &mut ProcessingJob, child: ChildProcess) {
    let stage = stage_of(job, &child.stage_id);
    stage
        .child_processes
        .get_or_insert_with(Default::default)
        .insert(child.child_process_number.to_string(), child);
}

async fn run_stage(
    shared: &Shared,
    job: &mut ProcessingJob,
    stage_id: &str,
    working_dir: &Path,
    stop: &mut watch::Receiver<StopRequest>,
) -> StageOutcome {
    let stage = stage_of(job, stage_id).clone();
    let working_dir_text = working_dir.display().to_string();
    if let Some(run_if) = &stage.run_if {
        match condition::evaluate(&substitute(run_if, job)) {
            Ok(true) => {}
            Ok(false) => {
                let at = now();
                record_child(
                    job,
                    ChildProcess {
                        stage_id: stage_id.to_string(),
                        child_process_number: next_child_number(job),
                        command: substitute(&stage.command, job),
                        working_dir: working_dir_text,
                        status: Some(JobStatus::Skipped),
                        submit_time: Some(at),
                        ..ChildProcess::default()
                    },
                );
                save(shared, job);
                return StageOutcome::Done;
            }
            Err(err) => return StageOutcome::Failed(format!("Stage {stage_id}: runIf: {err}")),
        }
    }
    let patterns = match compile_patterns(&stage) {
        Ok(patterns) => patterns,
        Err(message) => return StageOutcome::Failed(format!("Stage {stage_id}: {message}")),
    };
    let mut runs: u64 = 0;
    loop {
        let command = substitute(&stage.command, job);
        let submitted = now();
        let mut child = ChildProcess {
            stage_id: stage_id.to_string(),
            child_process_number: next_child_number(job),
            command: command.clone(),
            working_dir: working_dir_text.clone(),
            status: Some(JobStatus::Running),
            submit_time: Some(submitted),
            start_time: Some(submitted),
            ..ChildProcess::default()
        };
        record_child(job, child.clone());
        save(shared, job);
        let result = run_process(&command, working_dir, stop).await;
        let ended = now();
        child.end_time = Some(ended);
        child.run_time = Some(ended - submitted);
        runs += 1;
        match result {
            ProcessResult::Exited {
                exit_status,
                std_out,
                std_err,
            } => {
                child.exit_status = exit_status;
                child.status = Some(if exit_status == Some(0) {
                    JobStatus::Done
                } else {
                    JobStatus::Failed
                });
                capture_variables(&patterns, &std_out, job);
                child.std_out = std_out;
                child.std_err = std_err;
            }
            ProcessResult::Stopped {
                request,
                std_out,
                std_err,
            } => {
                if request == StopRequest::User {
                    child.status = Some(JobStatus::Aborted);
                    child.std_out = std_out;
                    child.std_err = std_err;
                    record_child(job, child);
                    save(shared, job);
                }
                return StageOutcome::Stopped(request);
            }
            ProcessResult::SpawnFailed(message) => {
                child.status = Some(JobStatus::Failed);
                child.std_err = message.clone();
                record_child(job, child);
                return StageOutcome::Failed(format!(
                    "Stage {stage_id}: cannot run the command: {message}"
                ));
            }
        }
        let failure = (child.exit_status != Some(0)).then(|| command_failure(stage_id, &child));
        record_child(job, child);
        save(shared, job);
        if let Some(message) = failure {
            return StageOutcome::Failed(message);
        }
        let Some(repeat_until) = &stage.repeat_until else {
            return StageOutcome::Done;
        };
        match condition::evaluate(&substitute(repeat_until, job)) {
            Ok(true) => return StageOutcome::Done,
            Ok(false) => {}
            Err(err) => {
                return StageOutcome::Failed(format!("Stage {stage_id}: repeatUntil: {err}"))
            }
        }
        if let Some(max_repeats) = stage.max_repeats.filter(|max| runs >= *max) {
            return StageOutcome::Failed(format!(
                "Stage {stage_id} reached maxRepeats ({max_repeats}) before repeatUntil ({repeat_until}) held."
            ));
        }
        let period = stage
            .repeat_period
            .unwrap_or(DEFAULT_REPEAT_PERIOD)
            .max(0.0);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(period)) => {}
            request = stop_requested(stop) => return StageOutcome::Stopped(request),
        }
    }
}

fn command_failure(stage_id: &str, child: &ChildProcess) -> String {
    let status = child.exit_status.map_or_else(
        || "a signal".to_string(),
        |code| format!("exit status {code}"),
    );
    let std_err = child.std_err.trim();
    let tail_start = std_err
        .char_indices()
        .rev()
        .nth(ERROR_TAIL_CHARS)
        .map_or(0, |(index, _)| index);
    let mut message = format!("Stage {stage_id} failed: its command ended with {status}.");
    if !std_err.is_empty() {
        message.push_str(&format!(" Error output: {}", &std_err[tail_start..]));
    }
    message
}

fn compile_patterns(stage: &Stage) -> Result<Vec<Regex>, String> {
    stage
        .output_variable_regex_list
        .iter()
        .flatten()
        .map(|pattern| {
            Regex::new(pattern)
                .map_err(|err| format!("bad outputVariableRegexList entry {pattern:?}: {err}"))
        })
        .collect()
}

fn capture_variables(patterns: &[Regex], std_out: &str, job: &mut ProcessingJob) {
    for pattern in patterns {
        let Some(captures) = pattern.captures(std_out) else {
            continue;
        };
        for name in pattern.capture_names().flatten() {
            if let Some(found) = captures.name(name) {
                if !RESERVED_KEYS.contains(&name) {
                    job.extra
                        .insert(name.to_string(), Value::String(found.as_str().to_string()));
                }
            }
        }
    }
}

/// Replace `$name` and `${name}` with the job's variables (argsDict keys, output variables,
/// `id`, `owner`); unknown names stay as they are, for the shell.
fn substitute(text: &str, job: &ProcessingJob) -> String {
    let mut variables: HashMap<&str, String> = job
        .extra
        .iter()
        .map(|(key, value)| (key.as_str(), value_as_text(value)))
        .collect();
    variables.insert("id", job.id.clone());
    variables.insert("owner", job.owner.clone());
    VARIABLE
        .replace_all(text, |captures: &regex::Captures<'_>| {
            let name = captures
                .get(1)
                .or_else(|| captures.get(2))
                .map_or("", |m| m.as_str());
            variables
                .get(name)
                .cloned()
                .unwrap_or_else(|| captures[0].to_string())
        })
        .into_owned()
}

enum ProcessResult {
    Exited {
        exit_status: Option<i32>,
        std_out: String,
        std_err: String,
    },
    Stopped {
        request: StopRequest,
        std_out: String,
        std_err: String,
    },
    SpawnFailed(String),
}

async fn run_process(
    command: &str,
    working_dir: &Path,
    stop: &mut watch::Receiver<StopRequest>,
) -> ProcessResult {
    let spawned = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let child = match spawned {
        Ok(child) => child,
        Err(err) => return ProcessResult::SpawnFailed(err.to_string()),
    };
    let process_group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .map(Pid::from_raw);
    let output = child.wait_with_output();
    tokio::pin!(output);
    let request = tokio::select! {
        result = &mut output => {
            return match result {
                Ok(output) => ProcessResult::Exited {
                    exit_status: output.status.code(),
                    std_out: String::from_utf8_lossy(&output.stdout).into_owned(),
                    std_err: String::from_utf8_lossy(&output.stderr).into_owned(),
                },
                Err(err) => ProcessResult::SpawnFailed(err.to_string()),
            };
        }
        request = stop_requested(stop) => request,
    };
    if let Some(group) = process_group {
        if let Err(err) = killpg(group, Signal::SIGKILL) {
            tracing::warn!("cannot kill process group {group}: {err}");
        }
    }
    let (std_out, std_err) = match tokio::time::timeout(SHUTDOWN_GRACE, output).await {
        Ok(Ok(output)) => (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ),
        _ => (String::new(), String::new()),
    };
    ProcessResult::Stopped {
        request,
        std_out,
        std_err,
    }
}
