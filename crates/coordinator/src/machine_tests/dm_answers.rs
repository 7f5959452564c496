//! DM's answers: failed, aborted and forgotten jobs, outages, restarts, stops, and the run
//! catalog.

use super::*;

#[test]
fn a_failure_without_error_message_names_the_stage_exit_status_and_stderr_tail() {
    let (mut m, now) = at(State::Acquiring);
    let mut failed = job("j1", JobStatus::Failed, "02-RUN");
    let child = |n: u64, status: i32, err: &str| dm::ChildProcess {
        stage_id: "02-RUN".into(),
        child_process_number: n,
        exit_status: Some(status),
        std_err: err.into(),
        ..dm::ChildProcess::default()
    };
    let stage = dm::Stage {
        command: "run".into(),
        child_processes: Some(
            [
                ("9", child(9, 0, "")),
                ("10", child(10, 2, "a\nb\nc\nno space left on device\n")),
            ]
            .into_iter()
            .map(|(k, c)| (k.to_string(), c))
            .collect(),
        ),
        ..dm::Stage::default()
    };
    failed.workflow = Some(dm::Workflow {
        stages: [("02-RUN".to_string(), stage)].into_iter().collect(),
        ..dm::Workflow::default()
    });
    m.handle(Input::JobPolled(JobPoll::Seen(failed)), now + 1.0);
    assert_eq!(m.state(), State::Failed);
    let message = m.message();
    for words in [
        "stage 02-RUN",
        "child process 10",
        "exit status 2",
        "b | c | no space left on device",
    ] {
        assert!(message.contains(words), "{words}: {message}");
    }
    assert!(!message.contains("a | b"), "only the tail: {message}");
    assert_eq!(m.view(now + 1.0).stages[0].exit_status, 2);
}

#[test]
fn the_catalog_entry_has_dms_shape_with_the_request_metadata() {
    let mut m = started_with(
        r#"{"workflow":"w","runUid":"0123456789ab","experimentName":"e7","metadata":{"plan_name":"count","detectors":["det"]}}"#,
    );
    let refused = Input::JobStarted(Err(DmFailure::Refused("no such workflow".into())));
    let actions = m.handle(refused, T0 + 1.0);
    let run = sent_run(&actions).expect("a run that never started is sent at once");
    assert_eq!(run.experiment_name, "e7");
    assert_eq!(run.run_id, "uid_01234567");
    assert_eq!(run.metadata["plan_name"], "count");
    assert_eq!(run.metadata["detectors"][0], "det");
    assert_eq!(run.metadata["handshake"]["finalState"], "FAILED");
    assert_eq!(run.metadata["handshake"]["runUid"], "0123456789ab");
}

#[test]
fn a_failed_job_fails_the_run_with_dms_reason_in_every_active_state() {
    for state in &ACTIVE[1..] {
        let (mut m, now) = at(*state);
        let actions = m.handle(
            Input::JobPolled(JobPoll::Seen(failed_job(
                "j1",
                "Stage 02-RUN failed: disk full",
            ))),
            now + 1.0,
        );
        assert_eq!(transitions(&actions), [State::Failed], "{state}");
        assert!(m.message().contains("disk full"), "{}", m.message());
        assert!(stops(&actions).is_empty(), "a failed job needs no stop");
        assert!(sent_run(&actions).is_some(), "{state}");
    }
}

#[test]
fn a_job_that_fails_at_once_fails_the_run() {
    let mut m = machine();
    start(&mut m, T0);
    let actions = m.handle(
        Input::JobStarted(Ok(failed_job("j1", "Invalid input file specification."))),
        T0 + 1.0,
    );
    assert_eq!(transitions(&actions), [State::WaitReady, State::Failed]);
    assert!(m.message().contains("Invalid input file specification."));
}

#[test]
fn a_workflow_that_ends_before_the_run_is_over_is_lost() {
    for state in [State::WaitReady, State::Ready, State::Acquiring] {
        let (mut m, now) = at(state);
        m.handle(
            Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Done, "02"))),
            now + 1.0,
        );
        assert_eq!(m.state(), State::Failed, "{state}");
        assert!(m.message().contains("workflow is gone"), "{}", m.message());
    }
}

#[test]
fn a_job_aborted_by_someone_else_ends_aborted() {
    let (mut m, now) = at(State::Acquiring);
    let actions = m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Aborted, "02"))),
        now + 1.0,
    );
    assert_eq!(transitions(&actions), [State::Aborted]);
    assert!(m.message().contains("outside the bridge"));
}

#[test]
fn a_job_dm_forgot_fails_the_run() {
    let (mut m, now) = at(State::Processing);
    let actions = m.handle(
        Input::JobPolled(JobPoll::NotFound("Job j1 not found.".into())),
        now + 1.0,
    );
    assert_eq!(transitions(&actions), [State::Failed]);
    assert!(m.message().contains("no longer has job j1"));
    assert!(sent_run(&actions).is_some());
    assert_eq!(m.dm_query(), None);
}

#[test]
fn dm_out_of_reach_for_too_long_fails_the_run() {
    let (mut m, now) = at(State::Acquiring);
    let lost = Timeouts::default().dm_lost.as_secs_f64();
    let poll = |m: &mut Machine, t: f64| {
        m.handle(
            Input::JobPolled(JobPoll::Unreachable("connection refused".into())),
            t,
        )
    };
    assert!(poll(&mut m, now + 1.0).is_empty());
    assert!(poll(&mut m, now + lost).is_empty());
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Running, "02"))),
        now + lost + 0.5,
    );
    assert!(
        poll(&mut m, now + lost + 1.0).is_empty(),
        "an answer resets the count"
    );
    let actions = poll(&mut m, now + 2.0 * lost + 1.0);
    assert_eq!(transitions(&actions), [State::Failed]);
    assert!(m.message().contains("lost contact with DM"));
    assert_eq!(
        stops(&actions),
        ["j1"],
        "the job is stopped if DM comes back"
    );
}

#[test]
fn a_refused_start_fails_the_run_with_dms_reason() {
    let mut m = machine();
    start(&mut m, T0);
    let actions = m.handle(
        Input::JobStarted(Err(DmFailure::Refused(
            "DM error 14: Workflow stream not found.".into(),
        ))),
        T0 + 1.0,
    );
    assert_eq!(transitions(&actions), [State::Failed]);
    assert!(m.message().contains("Workflow stream not found."));
    let run = sent_run(&actions).expect("a run that never started is sent at once");
    assert_eq!(run.metadata["handshake"]["jobId"], Value::Null);
}

#[test]
fn the_run_goes_to_the_catalog_after_the_finish_wait_even_without_a_final_job() {
    let (mut m, now) = at(State::Acquiring);
    let actions = m.command(Command::Abort, now).unwrap();
    assert_eq!(stops(&actions), ["j1"]);
    m.handle(Input::JobStopped(Err(refused_stop())), now + 1.0);
    assert!(m.message().contains("could not stop DM job j1"));
    let actions = m.handle(Input::Tick, now + 3.0);
    assert_eq!(stops(&actions), ["j1"], "stopping is tried again");
    m.handle(Input::JobStopped(Err(refused_stop())), now + 4.0);
    let actions = m.handle(Input::Tick, now + 6.0);
    assert_eq!(stops(&actions), ["j1"]);
    m.handle(Input::JobStopped(Err(refused_stop())), now + 7.0);
    assert!(
        stops(&m.handle(Input::Tick, now + 10.0)).is_empty(),
        "three attempts at most"
    );
    let finish = Timeouts::default().finish.as_secs_f64();
    let actions = m.handle(Input::Tick, now + finish);
    let run = sent_run(&actions).expect("sent after the finish wait");
    assert_eq!(run.metadata["handshake"]["job"]["status"], "running");
    assert!(sent_run(&m.handle(Input::Tick, now + finish + 1.0)).is_none());
}

#[test]
fn a_refused_catalog_entry_is_reported() {
    let (m, _) = done_and_answered(Err("Run uid-1 already exists.".into()));
    assert!(matches!(
        m.run().unwrap().catalog,
        CatalogStatus::Failed { .. }
    ));
    assert!(m.message().contains("already exists"), "{}", m.message());
    assert_eq!(m.state(), State::Done);
}

#[test]
fn after_a_restart_the_same_job_is_followed_to_done() {
    let (m, now) = at(State::Processing);
    let mut m = restored(&m);
    assert_eq!(m.state(), State::Processing);
    assert!(m.handle(Input::Tick, now + 1.0).is_empty());
    assert_eq!(
        m.dm_query(),
        Some(DmQuery::Poll {
            job_id: "j1".into()
        })
    );
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Done, "02"))),
        now + 2.0,
    );
    assert_eq!(m.state(), State::Done);
    assert_eq!(m.run().unwrap().history.len(), 7);
}

#[test]
fn a_restart_during_the_start_finds_the_job_by_run_id() {
    let mut m = machine();
    start(&mut m, T0);
    let mut found = restored(&m);
    let run_id = m.run().unwrap().run_id.clone();
    assert_eq!(found.dm_query(), Some(DmQuery::Find { run_id }));
    found.handle(
        Input::JobFound(Ok(Some(job("j1", JobStatus::Running, "01")))),
        T0 + 1.0,
    );
    assert_eq!(found.state(), State::WaitReady);

    let mut lost = restored(&m);
    lost.handle(Input::JobFound(Ok(None)), T0 + 1.0);
    assert_eq!(lost.state(), State::Failed);
    assert!(lost.message().contains("restarted while starting"));
}

#[test]
fn a_start_without_a_clear_answer_looks_for_its_job_instead_of_starting_another() {
    let unconfirmed = || {
        let mut m = machine();
        start(&mut m, T0);
        let actions = m.handle(
            Input::JobStarted(Err(DmFailure::NoAnswer(
                "DM answered HTTP 500: Internal Server Error".into(),
            ))),
            T0 + 1.0,
        );
        assert!(actions.is_empty(), "no second start: {actions:?}");
        assert_eq!(m.state(), State::Starting);
        assert!(m.message().contains("no clear answer"), "{}", m.message());
        let run_id = m.run().unwrap().run_id.clone();
        assert_eq!(m.dm_query(), Some(DmQuery::Find { run_id }));
        m
    };

    let mut found = unconfirmed();
    found.handle(
        Input::JobFound(Ok(Some(job("j1", JobStatus::Running, "01")))),
        T0 + 2.0,
    );
    assert_eq!(found.state(), State::WaitReady);
    assert_eq!(found.run().unwrap().start_unconfirmed, None);

    let mut none = unconfirmed();
    let actions = none.handle(Input::JobFound(Ok(None)), T0 + 2.0);
    assert_eq!(transitions(&actions), [State::Failed]);
    assert!(
        none.message().contains("HTTP 500") && none.message().contains("has no job of run"),
        "{}",
        none.message()
    );
    assert!(
        sent_run(&actions).is_some(),
        "no job: the run goes to the catalog"
    );

    let mut unanswered = unconfirmed();
    unanswered.handle(Input::JobFound(Err("connection refused".into())), T0 + 2.0);
    let start = Timeouts::default().start.as_secs_f64();
    let actions = unanswered.handle(Input::Tick, T0 + start);
    assert_eq!(transitions(&actions), [State::Timeout]);
    assert!(
        unanswered
            .message()
            .contains("last DM error: connection refused"),
        "{}",
        unanswered.message()
    );
}

#[test]
fn a_job_made_by_an_unconfirmed_start_after_the_run_ended_is_found_and_stopped() {
    let mut m = machine();
    start(&mut m, T0);
    m.command(Command::Abort, T0 + 1.0).unwrap();
    let actions = m.handle(
        Input::JobStarted(Err(DmFailure::NoAnswer("timed out".into()))),
        T0 + 2.0,
    );
    assert!(
        sent_run(&actions).is_none(),
        "the run waits: a job may exist"
    );
    let run_id = m.run().unwrap().run_id.clone();
    assert_eq!(m.dm_query(), Some(DmQuery::Find { run_id }));
    let actions = m.handle(
        Input::JobFound(Ok(Some(job("j1", JobStatus::Running, "01")))),
        T0 + 3.0,
    );
    assert_eq!(stops(&actions), ["j1"]);
    assert_eq!(m.state(), State::Aborted);
}

#[test]
fn message_tells_of_a_dm_outage_while_it_lasts() {
    let (mut m, now) = at(State::Processing);
    let before = m.message().to_string();
    m.handle(
        Input::JobPolled(JobPoll::Unreachable("DM answered HTTP 500".into())),
        now + 1.0,
    );
    let shown = m.view(now + 4.0).message;
    assert!(
        shown.starts_with(&before)
            && shown.contains("DM unreachable for 3 s (the run fails after 120 s)")
            && shown.ends_with("DM answered HTTP 500"),
        "{shown}"
    );
    assert_eq!(m.message(), before, "the record keeps what happened last");
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Running, "02"))),
        now + 5.0,
    );
    assert_eq!(m.view(now + 5.0).message, before, "DM answers again");

    let (mut m, now) = at(State::Acquiring);
    m.handle(
        Input::JobPolled(JobPoll::Unreachable("connection refused".into())),
        now,
    );
    m.command(Command::Abort, now + 1.0).unwrap();
    assert_eq!(
        m.view(now + 2.0).message,
        m.message(),
        "a run that ended is not failing"
    );
}

#[test]
fn stopping_goes_on_while_dm_does_not_answer() {
    let (mut m, now) = at(State::Acquiring);
    let actions = m.command(Command::Abort, now).unwrap();
    assert_eq!(stops(&actions), ["j1"]);
    let mut t = now;
    for _ in 0..6 {
        t += 1.0;
        m.handle(
            Input::JobStopped(Err(DmFailure::NoAnswer("connection refused".into()))),
            t,
        );
        t += STOP_RETRY_SECS;
        assert_eq!(stops(&m.handle(Input::Tick, t)), ["j1"], "at {t}");
    }
    assert_eq!(
        m.message().matches("could not stop DM job j1").count(),
        1,
        "told once: {}",
        m.message()
    );
    m.handle(
        Input::JobStopped(Ok(job("j1", JobStatus::Aborted, "01"))),
        t + 1.0,
    );
    assert!(stops(&m.handle(Input::Tick, t + 10.0)).is_empty());
}

#[test]
fn a_restart_in_a_final_state_resumes_stopping_and_sending() {
    let (mut m, now) = at(State::Acquiring);
    m.command(Command::Abort, now).unwrap();
    let mut m = restored(&m);
    let actions = m.handle(Input::Tick, now + 10.0);
    assert_eq!(stops(&actions), ["j1"], "the stop in flight is sent again");
    let actions = m.handle(
        Input::JobPolled(JobPoll::Seen(job("j1", JobStatus::Aborted, "02"))),
        now + 11.0,
    );
    assert!(sent_run(&actions).is_some());
}

#[test]
fn answers_about_other_jobs_or_runs_are_ignored() {
    let (mut m, now) = at(State::Acquiring);
    let before = m.record().clone();
    m.handle(
        Input::JobPolled(JobPoll::Seen(job("other", JobStatus::Failed, "01"))),
        now,
    );
    m.handle(
        Input::RunSent {
            run_id: "other".into(),
            result: Ok(()),
        },
        now,
    );
    m.handle(
        Input::JobStarted(Ok(job("other", JobStatus::Running, "01"))),
        now,
    );
    assert_eq!(m.record(), &before);
}
