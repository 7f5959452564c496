//! What a slot's machine does as time passes and after each input: members gone silent,
//! waits that ran out, a job to stop, a run to send to the DM run catalog.

use super::{secs, Action, CatalogStatus, Machine};
use crate::state::State;

/// How many times stopping a DM job is tried before the bridge gives up on it.
const MAX_STOP_ATTEMPTS: u32 = 3;

impl Machine {
    /// From READY to DRAINING, a member of a group silent for `member_silence` is lost: Message
    /// names it, and the frames it never reported count missed when draining ends (expected
    /// minus the group's received), so nothing is counted twice and nobody waits for it. A
    /// member that sent its final report, or reported after acquisition ended, has finished,
    /// not died: it stops reporting.
    pub(super) fn check_members(&mut self, now: f64) {
        let state = self.record.state;
        let draining_since = (state == State::Draining).then_some(self.record.state_since);
        let silence = secs(self.config.timeouts.member_silence);
        let Some(run) = self.record.run.as_mut() else {
            return;
        };
        if !matches!(state, State::Ready | State::Acquiring | State::Draining) {
            return;
        }
        let newly: Vec<(u32, f64)> = run
            .member_seen
            .iter()
            .filter(|(k, seen)| {
                now - **seen >= silence
                    && draining_since.is_none_or(|since| **seen < since)
                    && run.member_may_be_lost(**k)
            })
            .map(|(k, seen)| (*k, *seen))
            .collect();
        for (member, seen) in newly {
            let received = run.members.get(&member).map_or(0, |m| m.received);
            let why = format!(
                "no report for {:.0} s (in {state}, {received} frames received); \
                 the frames it was given and never reported count missed",
                now - seen
            );
            tracing::warn!("member {member} lost: {why}");
            run.lost_members.insert(member, why);
        }
    }

    /// The DM job `ended` (e.g. "failed") while the run was active: the members it ran that
    /// never sent their final report died with it, however short their silence, and are named
    /// lost. (A member killed just after a report leaves the group's books whole, so the run
    /// can leave DRAINING before its silence is long enough to call it lost.)
    pub(super) fn name_unended_members(&mut self, ended: &str, now: f64) {
        let Some(run) = self.record.run.as_mut() else {
            return;
        };
        let unended: Vec<(u32, f64)> = run
            .member_seen
            .iter()
            .filter(|(k, _)| run.member_may_be_lost(**k))
            .map(|(k, seen)| (*k, *seen))
            .collect();
        for (member, seen) in unended {
            let received = run.members.get(&member).map_or(0, |m| m.received);
            let why = format!(
                "it had not sent its final report when the DM job {ended} \
                 (last report {:.1} s before, {received} frames received)",
                now - seen
            );
            tracing::warn!("member {member} lost: {why}");
            run.lost_members.insert(member, why);
        }
    }

    pub(super) fn check_deadlines(&mut self, now: f64, out: &mut Vec<Action>) {
        self.check_members(now);
        let timeouts = self.config.timeouts;
        let since = self.record.state_since;
        let Some(run) = self.run() else {
            return;
        };
        let ready_limit = run
            .request
            .ready_timeout
            .unwrap_or_else(|| secs(timeouts.ready));
        let last_progress = since.max(run.progress_at);
        let job_id = run.job_id.clone().unwrap_or_default();
        let summary = run.frames_summary();
        let after = |limit: f64| now >= since + limit;
        let (to, text) = match self.record.state {
            State::Starting if after(secs(timeouts.start)) => (
                State::Timeout,
                format!(
                    "DM did not start the job within {} s{}",
                    secs(timeouts.start),
                    run.dm_error
                        .as_ref()
                        .or(run.start_unconfirmed.as_ref())
                        .map(|error| format!("; last DM error: {error}"))
                        .unwrap_or_default()
                ),
            ),
            State::WaitReady if after(ready_limit) => (
                State::Timeout,
                format!("the workflow did not become ready within {ready_limit} s"),
            ),
            State::Ready if after(secs(timeouts.arm)) => (
                State::Timeout,
                format!(
                    "ACQ_STARTED did not come within {} s of READY",
                    secs(timeouts.arm)
                ),
            ),
            State::Acquiring if after(secs(timeouts.acquire)) => (
                State::Timeout,
                format!(
                    "ACQ_DONE did not come within {} s of ACQ_STARTED",
                    secs(timeouts.acquire)
                ),
            ),
            State::Draining if now >= last_progress + secs(timeouts.drain_idle) => (
                State::Processing,
                format!(
                    "no new frame for {} s; {summary}",
                    secs(timeouts.drain_idle)
                ),
            ),
            State::Processing if timeouts.processing.is_some_and(|limit| after(secs(limit))) => {
                let limit = timeouts.processing.map_or(0.0, secs);
                let what = if self.config.stop_job_on_timeout {
                    format!("DM job {job_id} was stopped (--stop-job-on-timeout)")
                } else {
                    format!(
                        "the bridge stopped following DM job {job_id} and left it running; \
                         follow it with `pvabridge dm get-job --id {job_id}`"
                    )
                };
                (
                    State::Timeout,
                    format!("the DM job did not end within {limit} s of PROCESSING; {what}"),
                )
            }
            _ => return,
        };
        if to == State::Processing {
            self.leave_draining(text, now, out);
        } else if self.record.state == State::Processing {
            let stop = self.config.stop_job_on_timeout;
            if let Some(run) = self.record.run.as_mut() {
                run.unfollowed = !stop;
            }
            self.end(to, text, stop, now, out);
        } else {
            self.end(to, text, true, now, out);
        }
    }

    /// Requests that follow from where the run is: stop a job that must stop, send the run to
    /// the catalog once it has settled.
    pub(super) fn follow_up(&mut self, now: f64, out: &mut Vec<Action>) {
        let state = self.record.state;
        let finish = secs(self.config.timeouts.finish);
        let Some(run) = self.record.run.as_mut() else {
            return;
        };
        let job_final = run.job_is_final();
        if let Some(job_id) = run.job_id.clone() {
            if run.stop_wanted
                && !job_final
                && !run.job_lost
                && !run.in_flight.stop
                && run.stop_attempts < MAX_STOP_ATTEMPTS
                && now >= run.next_stop_at
            {
                run.in_flight.stop = true;
                run.stop_attempts += 1;
                out.push(Action::StopJob { job_id });
            }
        }
        let mut send = false;
        if state.is_final() && run.catalog == CatalogStatus::Pending && !run.in_flight.send {
            let never_started =
                run.job_id.is_none() && !run.in_flight.start && run.start_unconfirmed.is_none();
            let ended_at = run.ended_at.unwrap_or(now);
            send = job_final
                || never_started
                || run.job_lost
                || run.unfollowed
                || now >= ended_at + finish;
            run.in_flight.send = send;
        }
        if send {
            out.push(self.send_run_action());
        }
    }

    pub(super) fn send_run_action(&self) -> Action {
        let run = self.run().expect("called with a run");
        Action::SendRun {
            run_id: run.run_id.clone(),
            run: Box::new(self.catalog_entry(run)),
        }
    }
}
