//! The consumers' books from `Report`, and what the PVs show.

use super::*;

#[test]
fn members_reports_give_ready_progress_and_the_frame_counts() {
    let mut m = job_running_with(r#"{"workflow":"w","expectedFrames":10,"consumers":2}"#);
    m.report(report(0, true, 0, 0, 0), T0 + 1.0).unwrap();
    assert_eq!(m.state(), State::WaitReady, "one of two members is ready");
    let err = m.report(report(2, true, 0, 0, 0), T0 + 1.0).unwrap_err();
    assert!(err.contains("not one of the run's 2 consumer(s)"), "{err}");
    m.report(report(1, true, 0, 0, 0), T0 + 2.0).unwrap();
    assert_eq!(m.state(), State::Ready);
    m.command(Command::AcqStarted, T0 + 3.0).unwrap();
    m.report(report(0, true, 4, 1, 3), T0 + 4.0).unwrap();
    m.report(report(1, true, 4, 0, 4), T0 + 4.0).unwrap();
    let view = m.view(T0 + 4.0);
    assert_eq!(view.frames_received, 8);
    assert_eq!(view.frames_missed, 1, "the members' own missed counts");
    assert_eq!(view.progress, 7);
    assert_eq!(view.members.len(), 2);
    assert_eq!(
        view.workflow_pvs,
        [format!("{PREFIX}wf:0:Stats"), format!("{PREFIX}wf:1:Stats")]
    );
    m.command(Command::AcqDone, T0 + 5.0).unwrap();
    m.report(report(0, true, 5, 1, 5), T0 + 6.0).unwrap();
    m.report(report(1, true, 4, 0, 4), T0 + 6.0).unwrap();
    let idle = Timeouts::default().drain_idle.as_secs_f64();
    m.handle(Input::Tick, T0 + 6.0 + idle);
    assert_eq!(m.state(), State::Processing);
    assert_eq!(
        m.view(T0 + 20.0).frames_missed,
        1,
        "expected minus received"
    );
    assert!(machine().report(report(0, true, 0, 0, 0), T0).is_err());
}

#[test]
fn a_silent_member_is_named_lost_and_its_frames_count_missed() {
    let mut m = job_running_with(r#"{"workflow":"w","expectedFrames":12,"consumers":3}"#);
    m.report(report(0, true, 0, 0, 0), T0 + 1.0).unwrap();
    assert!(
        m.view(T0 + 1.0).message.contains("1 of 3 ready"),
        "{}",
        m.view(T0 + 1.0).message
    );
    m.report(report(1, true, 0, 0, 0), T0 + 1.0).unwrap();
    m.report(report(2, true, 0, 0, 0), T0 + 1.0).unwrap();
    assert_eq!(m.state(), State::Ready);
    assert!(m.view(T0 + 1.0).message.contains("3 of 3"));
    m.command(Command::AcqStarted, T0 + 1.5).unwrap();
    m.report(report(1, true, 2, 0, 2), T0 + 2.0).unwrap();
    m.report(report(0, true, 3, 0, 3), T0 + 4.5).unwrap();
    m.report(report(2, true, 3, 0, 3), T0 + 4.5).unwrap();
    assert!(!m.view(T0 + 4.5).message.contains("lost"));
    m.report(report(0, true, 4, 0, 4), T0 + 5.0).unwrap();
    let message = m.view(T0 + 5.0).message;
    assert!(
        message.contains("member 1 lost: no report for 3 s"),
        "{message}"
    );
    assert!(!message.contains("member 0 lost"), "{message}");
    m.command(Command::AcqDone, T0 + 5.0).unwrap();
    m.report(report(0, true, 4, 0, 4), T0 + 5.5).unwrap();
    m.report(report(2, true, 4, 0, 4), T0 + 5.5).unwrap();
    // The members that finished stop reporting in DRAINING: they are not lost.
    let idle = Timeouts::default().drain_idle.as_secs_f64();
    m.handle(Input::Tick, T0 + 5.5 + idle);
    let view = m.view(T0 + 5.5 + idle);
    assert_eq!(view.state, State::Processing);
    assert_eq!((view.frames_received, view.frames_missed), (10, 2));
    assert!(!view.message.contains("member 0 lost"), "{}", view.message);
    assert!(view.message.contains("member 1 lost"), "{}", view.message);
}

/// A member killed right after a report leaves no frame unreported: the group's books can
/// reach the expected count at ACQ_DONE, and the run leaves DRAINING before the member's
/// silence is long enough to call it lost. When the job then fails (its stage failed with the
/// member), the members that never sent their final report are the lost ones.
#[test]
fn the_members_without_a_final_report_are_named_lost_when_the_job_fails() {
    let mut m = job_running_with(r#"{"workflow":"w","expectedFrames":12,"consumers":3}"#);
    for k in 0..3 {
        m.report(report(k, true, 0, 0, 0), T0 + 1.0).unwrap();
    }
    m.command(Command::AcqStarted, T0 + 1.5).unwrap();
    m.report(report(1, true, 2, 0, 2), T0 + 2.0).unwrap();
    m.report(report(0, true, 5, 0, 5), T0 + 2.5).unwrap();
    m.report(report(2, true, 5, 0, 5), T0 + 2.5).unwrap();
    m.command(Command::AcqDone, T0 + 2.6).unwrap();
    assert_eq!(m.state(), State::Processing, "{}", m.message());
    for k in [0, 2] {
        let last = MemberReport {
            ended: true,
            ..report(k, true, 5, 0, 5)
        };
        m.report(last, T0 + 3.0).unwrap();
    }
    assert!(!m.view(T0 + 3.0).message.contains("lost"));
    let mut failed = job("j1", JobStatus::Failed, "01-CONSUME");
    failed.error_message = Some("its command ended with exit status 137".into());
    m.handle(Input::JobPolled(JobPoll::Seen(failed)), T0 + 3.5);
    let view = m.view(T0 + 3.5);
    assert_eq!(view.state, State::Failed);
    assert!(
        view.message.contains(
            "member 1 lost: it had not sent its final report when the DM job failed \
             (last report 1.5 s before, 2 frames received)"
        ),
        "{}",
        view.message
    );
    for k in [0, 2] {
        assert!(
            !view.message.contains(&format!("member {k} lost")),
            "{}",
            view.message
        );
    }
    assert_eq!((view.frames_received, view.frames_missed), (12, 0));
}

#[test]
fn the_view_shows_the_run_time_of_a_running_job() {
    let (m, _) = at(State::Acquiring);
    let view = m.view(T0 + 12.5);
    assert_eq!(view.run_time, 12.5);
    assert_eq!(view.stage_id, "01-START");
    assert_eq!(view.job_status, "running");
    assert_eq!(view.run_uid, "uid-1");
    assert_eq!(view.workflow, "stream");
    assert!(view.request.contains("\"expectedFrames\":5"));
}
