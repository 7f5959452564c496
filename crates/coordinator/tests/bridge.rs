//! The bridge in-process: the embedded DM service, two run slots on an isolated loopback PVA
//! server, and the handshake client playing both sides of a run that ends DONE.

use std::collections::BTreeMap;
use std::time::Duration;

use coordinator::embedded::EmbeddedDm;
use coordinator::machine::CatalogStatus;
use coordinator::{
    state_file, Bridge, BridgeConfig, Command, HandshakeClient, ProgressReporter, RunRequest, State,
};
use dm::{Stage, Workflow};
use pva::client::Context;

const WAIT: Duration = Duration::from_secs(20);

fn workflow() -> Workflow {
    let stage = |command: &str| Stage {
        command: command.into(),
        ..Stage::default()
    };
    Workflow {
        name: "stream-it".into(),
        stages: BTreeMap::from([
            ("01-PREPARE".to_string(), stage("echo preparing")),
            (
                "02-STREAM".to_string(),
                stage(
                    "i=0; while [ ! -f $markerFile ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done; test -f $markerFile",
                ),
            ),
        ]),
        ..Workflow::default()
    }
}

async fn progress_to(reporter: ProgressReporter, frames: u64) {
    for n in 1..=frames {
        reporter.report(n);
    }
    reporter.finish().await.expect("progress is put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_through_the_embedded_dm_ends_done_and_reaches_the_catalog() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let dir = tempfile::tempdir().unwrap();
        let dm_service = EmbeddedDm::start(&dir.path().join("dm"), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let dm = dm_service.client().unwrap();
        dm.add_workflow(&workflow()).await.unwrap();

        let mut config = BridgeConfig::new(
            vec!["it:a:".to_string(), "it:b:".to_string()],
            dir.path().join("state"),
        );
        config.poll_period = Duration::from_millis(200);
        let bridge = Bridge::start(config, dm.clone(), pva::ServerConfig::isolated())
            .await
            .unwrap();
        assert!(
            bridge.records("it:c:").is_none(),
            "not a slot of the bridge"
        );
        let mut records = bridge.records("it:a:").expect("a slot of the bridge");
        assert_eq!(records.borrow_and_update().state, State::Idle);
        let ctx = Context::new(pva::ClientConfig::isolated(bridge.udp_addr())).unwrap();
        let slot = HandshakeClient::new(ctx.clone(), "it:a:");
        let other = HandshakeClient::new(ctx, "it:b:");

        let refused = slot.command(Command::AcqStarted).await.unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("ACQ_STARTED refused in state IDLE"),
            "{refused}"
        );

        let marker = dir.path().join("go");
        let mut request = RunRequest::new("stream-it");
        request.run_uid = Some("uid-it".into());
        request.expected_frames = Some(3);
        request.ready_stage = Some("02-STREAM".into());
        request
            .args_dict
            .insert("markerFile".into(), marker.display().to_string().into());
        slot.start(&request).await.unwrap();
        assert_eq!(
            slot.wait_for_state(&[State::Ready], WAIT).await,
            Ok(State::Ready)
        );
        slot.command(Command::AcqStarted).await.unwrap();
        assert_eq!(slot.state().await.unwrap(), State::Acquiring);
        assert!(
            records.has_changed().unwrap(),
            "the record changed with the run"
        );
        assert_eq!(
            records.borrow_and_update().state,
            State::Acquiring,
            "the record changes before the PVs show the change"
        );
        let busy = slot.submit_request(&request).await.unwrap_err();
        assert!(busy.to_string().contains("a run is in progress"), "{busy}");
        let beat = slot.status().await.unwrap().heartbeat;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            slot.status().await.unwrap().heartbeat > beat,
            "the heartbeat counts while the bridge lives"
        );
        progress_to(slot.progress_reporter(Duration::from_millis(10)), 3).await;
        slot.command(Command::AcqDone).await.unwrap();
        assert_eq!(
            slot.state().await.unwrap(),
            State::Processing,
            "every frame was in, so ACQ_DONE leads through DRAINING at once"
        );
        assert_eq!(
            other.state().await.unwrap(),
            State::Idle,
            "the other slot is untouched"
        );

        std::fs::write(&marker, "").unwrap();
        assert_eq!(
            slot.wait_for_state(&[State::Done], WAIT).await,
            Ok(State::Done)
        );
        let status = slot.status().await.unwrap();
        assert_eq!(status.job_status, "done");
        assert_eq!(status.frames_expected, 3);
        assert_eq!(status.frames_received, 3);
        assert_eq!(status.frames_missed, 0);
        assert_eq!(status.run_uid, "uid-it");
        assert!(status.message.contains("done"), "{}", status.message);

        let sent = |record: &coordinator::SlotRecord| {
            let run = record.run.as_ref();
            run.is_some_and(|run| run.catalog != CatalogStatus::Pending)
        };
        let record = tokio::time::timeout(WAIT, records.wait_for(sent))
            .await
            .expect("the run is offered to the catalog in time")
            .unwrap()
            .clone();
        let record_run = record.run.as_ref().unwrap();
        assert_eq!(record_run.catalog, CatalogStatus::Sent);
        assert_eq!(record_run.received(), 3, "the books are in the record");
        let runs = dm.list_runs("pvabridge").await.unwrap();
        let run = runs
            .into_iter()
            .find(|r| r.run_id == "uid_uid-it")
            .expect("the run is in the catalog");
        assert_eq!(run.metadata["handshake"]["jobId"], status.job_id.as_str());
        assert_eq!(run.metadata["handshake"]["job"]["status"], "done");
        assert_eq!(run.metadata["handshake"]["frames"]["received"], 3);

        let err = slot
            .wait_for_state(&[State::Acquiring], WAIT)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("ended in DONE"), "{err}");

        slot.command(Command::Reset).await.unwrap();
        assert_eq!(slot.state().await.unwrap(), State::Idle);
        bridge.stop().await;
        assert!(dir.path().join("state/it%3Aa%3A.json").exists());
        let saved = state_file::load(&dir.path().join("state"), "it:a:")
            .unwrap()
            .expect("the slot saved its record");
        let last = records.borrow();
        assert_eq!(last.state, State::Idle, "RESET reached the watch");
        assert_eq!(
            (saved.state, &saved.message, saved.run.is_none()),
            (last.state, &last.message, last.run.is_none()),
            "the watch holds the record the state file holds"
        );
        dm_service.shutdown().await;
    })
    .await
    .expect("the test finishes in time");
}
