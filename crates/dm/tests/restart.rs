//! A restart of the embedded service: workflows, jobs and catalog runs are still there, and a
//! job that was running when the service stopped is marked failed, which a watch across the
//! restart reports.

mod common;

use std::time::Duration;

use common::*;
use dm::service::INTERRUPTED_MESSAGE;
use dm::{ExperimentRun, JobQuery, JobStatus, ServiceConfig, WatchEvent};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_survives_a_restart_and_interrupted_jobs_are_failed() {
    let dir = tempfile::tempdir().unwrap();
    let service = start_service(dir.path(), 2).await;
    let address = service.local_addr();
    let client = client(&service.url());
    bounded(Duration::from_secs(30), async {
        client
            .add_workflow(&workflow(
                "quick",
                json!({"01-A": {"command": "echo done"}}),
            ))
            .await
            .unwrap();
        client
            .add_workflow(&workflow(
                "long",
                json!({"01-SLEEP": {"command": "sleep 30"}}),
            ))
            .await
            .unwrap();
        let finished = client
            .start_job("quick", &args(json!({"filePath": "a"})))
            .await
            .unwrap();
        let finished = client
            .watch(&finished.id, quick_watch(Duration::from_secs(10)))
            .wait_final()
            .await
            .unwrap();
        assert_eq!(finished.status, JobStatus::Done);
        let run = ExperimentRun {
            experiment_name: "e1".into(),
            run_id: "r1".into(),
            ..ExperimentRun::default()
        };
        let run = client.add_run(&run).await.unwrap();
        let running = client
            .start_job("long", &args(json!({"filePath": "b"})))
            .await
            .unwrap();
        wait_for_job(&client, &running.id, Duration::from_secs(10), |job| {
            job.status == JobStatus::Running
        })
        .await;

        let mut watch = client.watch(&running.id, quick_watch(Duration::from_secs(20)));
        assert!(matches!(
            watch.next().await.unwrap().unwrap(),
            WatchEvent::Changed(_)
        ));
        service.shutdown().await;
        let mut config =
            ServiceConfig::new(address, dir.path().join("data"), write_users(dir.path()));
        config.max_running_jobs = 2;
        let restarted = dm::service::start(config)
            .await
            .expect("restarts on the same port");

        let mut final_job = None;
        while let Some(event) = watch.next().await {
            if let WatchEvent::Changed(job) = event.unwrap() {
                final_job = Some(job);
            }
        }
        let interrupted = final_job.expect("the watch saw the job again");
        assert_eq!(interrupted.status, JobStatus::Failed);
        assert_eq!(
            interrupted.error_message.as_deref(),
            Some(INTERRUPTED_MESSAGE)
        );
        assert_eq!(interrupted.stage.as_deref(), Some("01-SLEEP"));
        let child = &interrupted.workflow.as_ref().unwrap().stages["01-SLEEP"]
            .child_processes
            .as_ref()
            .unwrap()["0"];
        assert_eq!(child.status, Some(JobStatus::Failed));

        let names: Vec<String> = client
            .list_workflows()
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(names, ["long", "quick"]);
        assert_eq!(client.get_job(&finished.id).await.unwrap(), finished);
        assert_eq!(
            client.list_jobs(&JobQuery::default()).await.unwrap().len(),
            2
        );
        assert_eq!(client.list_runs("e1").await.unwrap(), vec![run]);
        let again = client
            .start_job("quick", &args(json!({"filePath": "c"})))
            .await
            .unwrap();
        let again = client
            .watch(&again.id, quick_watch(Duration::from_secs(10)))
            .wait_final()
            .await
            .unwrap();
        assert_eq!(
            again.status,
            JobStatus::Done,
            "the restarted service runs jobs"
        );
        restarted.shutdown().await;
    })
    .await;
}
