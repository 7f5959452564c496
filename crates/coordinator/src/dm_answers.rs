//! How a slot's machine takes DM's answers: the job named, a start refused or unanswered, a
//! poll, a stop, the run catalog's answer; and what the job as last seen means for the run.

use dm::{JobStatus, ProcessingJob};

use super::{secs, Action, CatalogStatus, DmFailure, JobPoll, Machine, Run, STOP_RETRY_SECS};
use crate::state::State;

impl Machine {
    /// DM named the job of the run (answer to the start, or found after a restart).
    pub(super) fn on_job_named(&mut self, job: ProcessingJob, now: f64, out: &mut Vec<Action>) {
        let state = self.record.state;
        let Some(run) = self.record.run.as_mut() else {
            return;
        };
        if run.job_id.as_ref().is_some_and(|id| *id != job.id) {
            return;
        }
        let job_id = job.id.clone();
        let status = job.status;
        run.job_id = Some(job.id.clone());
        run.job = Some(job);
        run.dm_answered();
        run.start_unconfirmed = None;
        if state != State::Starting {
            return;
        }
        self.go(
            State::WaitReady,
            format!("DM job {job_id} started ({status}); waiting for the workflow to be ready"),
            now,
            out,
        );
        self.react_to_job(now, out);
        if self.record.state == State::WaitReady && self.run().is_some_and(Run::is_ready) {
            self.go(State::Ready, "the workflow is ready".into(), now, out);
        }
    }

    pub(super) fn on_start_failed(&mut self, failure: DmFailure, now: f64, out: &mut Vec<Action>) {
        let starting = self.record.state == State::Starting;
        let Some(run) = self.record.run.as_mut() else {
            return;
        };
        let workflow = run.request.workflow.clone();
        match failure {
            DmFailure::NoAnswer(message) => {
                let text = format!(
                    "DM gave no clear answer to the start of workflow {workflow} ({message}); \
                     looking for a job of run {} rather than starting another",
                    run.run_id
                );
                run.start_unconfirmed = Some(message);
                self.record.message = if starting {
                    text
                } else {
                    format!("{}; {text}", self.record.message)
                };
            }
            DmFailure::Refused(message) => {
                let text = format!("DM could not start workflow {workflow}: {message}");
                if starting {
                    self.end(State::Failed, text, false, now, out);
                } else {
                    self.record.message = text;
                }
            }
        }
    }

    /// DM has no job with the run's id.
    pub(super) fn on_no_job_found(&mut self, now: f64, out: &mut Vec<Action>) {
        let state = self.record.state;
        let Some(run) = self.record.run.as_mut() else {
            return;
        };
        run.dm_answered();
        let unconfirmed = run.start_unconfirmed.take();
        if state != State::Starting {
            return;
        }
        let (workflow, run_id) = (&run.request.workflow, &run.run_id);
        let text = match unconfirmed {
            Some(error) => format!(
                "DM could not start workflow {workflow}: {error}; DM has no job of run {run_id}"
            ),
            None => format!(
                "the bridge restarted while starting the DM job, and DM has no job of run {run_id}"
            ),
        };
        self.end(State::Failed, text, false, now, out);
    }

    pub(super) fn on_poll(&mut self, poll: JobPoll, now: f64, out: &mut Vec<Action>) {
        let state = self.record.state;
        let Some(run) = self.record.run.as_mut() else {
            return;
        };
        let Some(job_id) = run.job_id.clone() else {
            return;
        };
        match poll {
            JobPoll::Seen(job) => {
                if job.id != job_id {
                    return;
                }
                run.dm_answered();
                run.job = Some(*job);
                self.react_to_job(now, out);
            }
            JobPoll::NotFound(message) => {
                run.dm_answered();
                run.job_lost = true;
                if state.is_active() {
                    self.end(
                        State::Failed,
                        format!("DM no longer has job {job_id}: {message}"),
                        false,
                        now,
                        out,
                    );
                }
            }
            JobPoll::Unreachable(message) => self.on_dm_unreachable(message, now, out),
        }
    }

    pub(super) fn on_dm_unreachable(&mut self, message: String, now: f64, out: &mut Vec<Action>) {
        let state = self.record.state;
        let dm_lost = secs(self.config.timeouts.dm_lost);
        let Some(run) = self.record.run.as_mut() else {
            return;
        };
        let since = *run.dm_unreachable_since.get_or_insert(now);
        run.dm_error = Some(message.clone());
        if state.is_active() && now - since >= dm_lost {
            self.end(
                State::Failed,
                format!("lost contact with DM for {:.0} s: {message}", now - since),
                true,
                now,
                out,
            );
        }
    }

    /// React to the job as last seen.
    pub(super) fn react_to_job(&mut self, now: f64, out: &mut Vec<Action>) {
        let state = self.record.state;
        let Some(run) = self.run() else {
            return;
        };
        let Some(job) = run.job.as_ref() else {
            return;
        };
        let job_id = job.id.clone();
        let status = job.status;
        let stage = job.stage.clone().unwrap_or_else(|| "-".into());
        let reason = Run::failure_reason(job);
        let summary = run.frames_summary();
        let ready_stage_reached = run
            .request
            .ready_stage
            .as_ref()
            .zip(job.stage.as_ref())
            .is_some_and(|(wanted, current)| current >= wanted);
        match (status, state) {
            (JobStatus::Failed, s) if s.is_active() => {
                let text = format!("DM job {job_id} failed in stage {stage}: {reason}");
                self.name_unended_members("failed", now);
                self.end(State::Failed, text, false, now, out);
            }
            (JobStatus::Aborted, s) if s.is_active() => {
                let text = format!("DM job {job_id} was aborted outside the bridge");
                self.name_unended_members("was aborted", now);
                self.end(State::Aborted, text, false, now, out);
            }
            (JobStatus::Done, State::Draining | State::Processing) => {
                let text = format!("DM job {job_id} done; {summary}");
                self.end(State::Done, text, false, now, out);
            }
            (JobStatus::Done, s) if s.is_active() => {
                let text = format!(
                    "DM job {job_id} ended (done, stage {stage}) in {s}, before the run was over: the workflow is gone"
                );
                self.name_unended_members("ended", now);
                self.end(State::Failed, text, false, now, out);
            }
            (JobStatus::Running, State::WaitReady) if ready_stage_reached => {
                self.go(
                    State::Ready,
                    format!("the DM job reached stage {stage}; the workflow counts as ready"),
                    now,
                    out,
                );
            }
            _ => {}
        }
    }

    pub(super) fn on_stopped(&mut self, result: Result<Box<ProcessingJob>, DmFailure>, now: f64) {
        let Some(run) = self.record.run.as_mut() else {
            return;
        };
        run.in_flight.stop = false;
        match result {
            Ok(job) => {
                if run.job_id.as_deref() == Some(job.id.as_str()) {
                    run.job = Some(*job);
                }
            }
            Err(failure) => {
                run.next_stop_at = now + STOP_RETRY_SECS;
                if let DmFailure::NoAnswer(_) = failure {
                    // Only DM's refusals count: while it does not answer, stopping goes on until
                    // it does, so that the job is not left running once DM is back.
                    run.stop_attempts = run.stop_attempts.saturating_sub(1);
                }
                let job_id = run.job_id.clone().unwrap_or_default();
                let note = format!("could not stop DM job {job_id}");
                if !self.record.message.contains(&note) {
                    self.record.message = format!("{}; {note}: {failure}", self.record.message);
                }
            }
        }
    }

    pub(super) fn on_run_sent(&mut self, run_id: &str, result: Result<(), String>) {
        let Some(run) = self.record.run.as_mut() else {
            return;
        };
        if run.run_id != run_id {
            return;
        }
        run.in_flight.send = false;
        match result {
            Ok(()) => {
                run.catalog = CatalogStatus::Sent;
                self.record.message = format!(
                    "{}; run metadata sent to the DM run catalog",
                    self.record.message
                );
            }
            Err(message) => {
                self.record.message = format!(
                    "{}; the run metadata did not go to the DM run catalog: {message}",
                    self.record.message
                );
                run.catalog = CatalogStatus::Failed { message };
            }
        }
    }
}
