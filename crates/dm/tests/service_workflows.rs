//! The client against the embedded service over real HTTP on loopback: a workflow engine run
//! end to end, and the service's rules (file spec, maxRepeats, stop, limits, owners, catalog).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use dm::{
    ChildProcess, DmClient, DmError, ExperimentRun, JobQuery, JobStatus, ProcessingJob, WatchEvent,
};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(30);

fn children(job: &ProcessingJob, stage: &str) -> BTreeMap<String, ChildProcess> {
    job.workflow.as_ref().unwrap().stages[stage]
        .child_processes
        .clone()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_runs_its_stages_as_real_processes() {
    with_service(2, LIMIT, |Ctx { client, dir, .. }| async move {
        let stages = json!({
            "01-DATE": {
                "command": "date -u +'today=%Y-%m-%d'",
                "outputVariableRegexList": ["today=(?P<today>[0-9]{4}-[0-9]{2}-[0-9]{2})"]
            },
            "02-USE": {"command": "echo \"day $today file $filePath owner $owner job $id\""},
            "03-REPEAT": {
                "command": "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; echo count=$n",
                "outputVariableRegexList": ["count=(?P<count>[0-9]+)"],
                "repeatPeriod": 0.05,
                "repeatUntil": "$count >= 3",
                "maxRepeats": 5
            },
            "04-SKIP": {"command": "echo should not run", "runIf": "'$mode' == 'full'"},
            "05-FAIL": {"command": "echo partial; echo 'detector file missing' >&2; exit 3"},
            "06-NEVER": {"command": "echo never"}
        });
        let added = client.add_workflow(&workflow("engine-demo", stages)).await.unwrap();
        assert_eq!(added.owner, USER);
        let listed = client.list_workflows().await.unwrap();
        assert_eq!(listed.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["engine-demo"]);
        assert_eq!(client.get_workflow("engine-demo").await.unwrap(), added);

        let started = client
            .start_job("engine-demo", &args(json!({"filePath": "/data/scan1.h5", "mode": "quick", "frames": 10})))
            .await
            .unwrap();
        assert!(matches!(started.status, JobStatus::Pending | JobStatus::Running));
        assert_eq!(started.variable("filePath").as_deref(), Some("/data/scan1.h5"));
        assert_eq!(started.variable("frames").as_deref(), Some("10"));

        let mut watch = client.watch(&started.id, quick_watch(Duration::from_secs(20)));
        let mut seen = Vec::new();
        while let Some(event) = watch.next().await {
            match event.unwrap() {
                WatchEvent::Changed(job) => seen.push((job.status, job.stage.clone())),
                WatchEvent::Unreachable(err) => panic!("the service was always up: {err}"),
            }
        }
        assert_eq!(seen.last().unwrap(), &(JobStatus::Failed, Some("05-FAIL".to_string())));
        assert!(seen.windows(2).all(|pair| pair[0] != pair[1]), "each event is a change: {seen:?}");

        let job = client.get_job(&started.id).await.unwrap();
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.stage.as_deref(), Some("05-FAIL"));
        let message = job.error_message.clone().unwrap();
        assert!(message.contains("05-FAIL") && message.contains("exit status 3"), "{message}");
        assert!(message.contains("detector file missing"), "{message}");

        let date = &children(&job, "01-DATE")["0"];
        assert_eq!(date.exit_status, Some(0));
        assert_eq!(date.status, Some(JobStatus::Done));
        let today = job.variable("today").expect("captured variable at the top level");
        assert_eq!(date.std_out.trim(), format!("today={today}"));
        assert_eq!(today, jiff::Timestamp::now().strftime("%Y-%m-%d").to_string());

        // Child processes are numbered across the whole job, as DM does.
        let used = &children(&job, "02-USE")["1"];
        assert_eq!(used.std_out, format!("day {today} file /data/scan1.h5 owner {USER} job {}\n", job.id));
        assert_eq!(used.command, format!("echo \"day {today} file /data/scan1.h5 owner {USER} job {}\"", job.id));

        let repeats = children(&job, "03-REPEAT");
        assert_eq!(repeats.keys().collect::<Vec<_>>(), ["2", "3", "4"]);
        for (number, child) in repeats.values().enumerate() {
            assert_eq!(child.child_process_number, number as u64 + 2);
            assert_eq!(child.std_out, format!("count={}\n", number + 1));
            assert_eq!(child.exit_status, Some(0));
        }
        assert_eq!(job.variable("count").as_deref(), Some("3"));

        let skipped = children(&job, "04-SKIP");
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped["5"].status, Some(JobStatus::Skipped));
        assert_eq!(skipped["5"].exit_status, None);

        let failed = &children(&job, "05-FAIL")["6"];
        assert_eq!(failed.exit_status, Some(3));
        assert_eq!(failed.status, Some(JobStatus::Failed));
        assert_eq!(failed.std_out, "partial\n");
        assert_eq!(failed.std_err, "detector file missing\n");
        assert!(children(&job, "06-NEVER").is_empty());

        let working_dir = dir.join("data").join("jobs").join(&job.id);
        assert_eq!(failed.working_dir, working_dir.display().to_string());
        assert_eq!(std::fs::read_to_string(working_dir.join("count")).unwrap(), "3\n");

        let submitted = job.submission_time.unwrap();
        let start = job.start_time.unwrap();
        let end = job.end_time.unwrap();
        assert!(submitted <= start && start <= end);
        assert!((job.run_time.unwrap() - (end - start)).abs() < 1e-6);
        for stamp in [&job.submission_timestamp, &job.start_timestamp, &job.end_timestamp] {
            // DM's form: local time and the zone's abbreviation, e.g. "2023/05/02 05:39:56 CDT".
            let stamp = stamp.as_deref().expect("every timestamp is set");
            let parts: Vec<&str> = stamp.split(' ').collect();
            assert_eq!(parts.len(), 3, "{stamp}");
            assert!(parts[0].len() == 10 && parts[0].matches('/').count() == 2, "{stamp}");
            assert!(parts[1].len() == 8 && parts[1].matches(':').count() == 2, "{stamp}");
            assert!(!parts[2].is_empty() && !parts[2].contains(':'), "{stamp}");
        }
        let mut previous_end = start;
        for stage in ["01-DATE", "02-USE", "03-REPEAT", "05-FAIL"] {
            for child in children(&job, stage).values() {
                let (child_start, child_end) = (child.start_time.unwrap(), child.end_time.unwrap());
                assert!(previous_end <= child_start && child_start <= child_end, "{stage} times in order");
                assert!((child.run_time.unwrap() - (child_end - child_start)).abs() < 1e-6);
                previous_end = child_end;
            }
        }
        assert!(previous_end <= end);
        let repeat_children: Vec<ChildProcess> = repeats.into_values().collect();
        let gap = repeat_children[1].start_time.unwrap() - repeat_children[0].end_time.unwrap();
        assert!(gap >= 0.04, "repeatPeriod waited between runs: {gap}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reaching_max_repeats_fails_the_stage() {
    with_service(2, LIMIT, |Ctx { client, .. }| async move {
        let poll = json!({"01-POLL": {"command": "echo waiting", "repeatPeriod": 0.01, "repeatUntil": "False", "maxRepeats": 2}});
        let job = add_and_start(&client, "never-ready", poll, json!({"filePath": "x"})).await;
        let job = final_job(&client, &job.id).await;
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(job.stage.as_deref(), Some("01-POLL"));
        assert!(job.error_message.unwrap().contains("maxRepeats (2)"));
        assert_eq!(children(&client.get_job(&job.id).await.unwrap(), "01-POLL").len(), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_a_file_spec_fails_at_once() {
    with_service(2, LIMIT, |Ctx { client, .. }| async move {
        let stages = json!({"01-RUN": {"command": "touch ran"}});
        let job = add_and_start(
            &client,
            "needs-files",
            stages,
            json!({"experimentName": "e1"}),
        )
        .await;
        assert_eq!(job.status, JobStatus::Failed);
        assert_eq!(
            job.error_message.as_deref(),
            Some("Invalid input file specification.")
        );
        for spec in ["filePath", "filePathList", "filePathPattern", "dataDir"] {
            let job = client
                .start_job("needs-files", &args(json!({spec: "/data"})))
                .await
                .unwrap();
            let job = final_job(&client, &job.id).await;
            assert_eq!(job.status, JobStatus::Done, "{spec} is a file spec");
        }
    })
    .await;
}

fn process_is_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_job_kills_its_process_group_and_aborts_it() {
    with_service(2, LIMIT, |Ctx { client, dir, .. }| async move {
        let stages = json!({"01-SLEEP": {"command": "sleep 30 & echo $! > background.pid; wait"}, "02-AFTER": {"command": "echo after"}});
        let job = add_and_start(&client, "long", stages, json!({"filePath": "x"})).await;
        let pid_file = dir.join("data").join("jobs").join(&job.id).join("background.pid");
        let pid: i32 = bounded(Duration::from_secs(10), async {
            loop {
                if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse().ok()) {
                    return pid;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let stopped = client.stop_job(&job.id).await.unwrap();
        assert_eq!(stopped.status, JobStatus::Aborted);
        assert_eq!(stopped.stage.as_deref(), Some("01-SLEEP"));
        assert_eq!(children(&stopped, "01-SLEEP")["0"].status, Some(JobStatus::Aborted));
        assert!(children(&stopped, "02-AFTER").is_empty());
        wait_until(|| process_is_gone(pid)).await;
        let again = client.stop_job(&job.id).await.unwrap();
        assert_eq!(again.status, JobStatus::Aborted, "stopping a finished job changes nothing");
    })
    .await;
}

async fn wait_until(condition: impl Fn() -> bool) {
    bounded(Duration::from_secs(5), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_past_the_running_limit_wait_pending() {
    with_service(1, LIMIT, |Ctx { client, .. }| async move {
        let stages = json!({"01-SLEEP": {"command": "sleep 1"}});
        let first = add_and_start(&client, "short", stages, json!({"filePath": "a"})).await;
        let second = client
            .start_job("short", &args(json!({"filePath": "b"})))
            .await
            .unwrap();
        wait_for_job(&client, &first.id, LIMIT, |job| {
            job.status == JobStatus::Running
        })
        .await;
        assert_eq!(
            client.get_job(&second.id).await.unwrap().status,
            JobStatus::Pending
        );
        let pending = client
            .list_jobs(&JobQuery {
                filter: Some(args(json!({"status": "pending"}))),
                ..JobQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(
            pending.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            [second.id.as_str()]
        );
        let second = final_job(&client, &second.id).await;
        let first = client.get_job(&first.id).await.unwrap();
        assert_eq!(
            (first.status, second.status),
            (JobStatus::Done, JobStatus::Done)
        );
        assert!(second.start_time.unwrap() >= first.end_time.unwrap());
        let all = client.list_jobs(&JobQuery::default()).await.unwrap();
        assert_eq!(
            all.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            [second.id.as_str(), first.id.as_str()],
            "newest first"
        );
        let page = client
            .list_jobs(&JobQuery {
                skip: Some(1),
                limit: Some(1),
                filter: None,
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].id, first.id);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_workflow_updates_and_the_run_catalog() {
    with_service(
        2,
        LIMIT,
        |Ctx {
             client: alice, url, ..
         }| async move {
            let bob = DmClient::new(quick_config(&url, OTHER_USER, OTHER_PASSWORD)).unwrap();
            alice
                .add_workflow(&workflow("mine", json!({"01-A": {"command": "true"}})))
                .await
                .unwrap();
            let duplicate = alice
                .add_workflow(&workflow("mine", json!({"01-A": {"command": "true"}})))
                .await
                .unwrap_err();
            assert!(
                matches!(duplicate, DmError::Service { code: 15, .. }),
                "{duplicate}"
            );
            assert!(
                duplicate.to_string().contains("already exists"),
                "{duplicate}"
            );

            let mut changed = workflow("mine", json!({"01-A": {"command": "echo v2"}}));
            changed.description = Some("second version".into());
            alice.update_workflow(&changed).await.unwrap();
            assert_eq!(
                alice
                    .get_workflow("mine")
                    .await
                    .unwrap()
                    .description
                    .as_deref(),
                Some("second version")
            );
            let missing = alice
                .update_workflow(&workflow("nope", json!({"01-A": {"command": "true"}})))
                .await
                .unwrap_err();
            assert!(
                matches!(
                    missing,
                    DmError::Service {
                        code: 14,
                        http_status: 404,
                        ..
                    }
                ),
                "{missing}"
            );

            let job = alice
                .start_job("mine", &args(json!({"filePath": "f"})))
                .await
                .unwrap();
            let foreign = bob.get_job(&job.id).await.unwrap_err();
            assert!(
                foreign.to_string().contains("does not exist"),
                "bob sees only his own jobs: {foreign}"
            );
            assert!(bob.list_workflows().await.unwrap().is_empty());
            assert!(bob
                .start_job("mine", &args(json!({"filePath": "f"})))
                .await
                .is_err());

            let wrong_password = DmClient::new(quick_config(&url, USER, "nope")).unwrap();
            let refused = wrong_password.list_workflows().await.unwrap_err();
            assert!(matches!(refused, DmError::Login { .. }), "{refused}");

            let run = ExperimentRun {
                id: None,
                experiment_name: "bdp-2024".into(),
                run_id: ExperimentRun::run_id_for_uid("0123456789abcdef"),
                metadata: args(json!({"frames": 100, "jobId": job.id})),
            };
            let added = alice.add_run(&run).await.unwrap();
            assert!(added.id.is_some(), "the catalog gives the entry an id");
            assert_eq!(added.run_id, "uid_01234567");
            assert_eq!(
                ExperimentRun {
                    id: None,
                    ..added.clone()
                },
                run
            );
            assert!(
                alice.add_run(&run).await.is_err(),
                "a run id is unique in its experiment"
            );
            assert_eq!(bob.list_runs("bdp-2024").await.unwrap(), vec![added]);
            assert!(alice.list_runs("other").await.unwrap().is_empty());
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_timeout_stops_the_watching_not_the_job() {
    with_service(2, LIMIT, |Ctx { client, .. }| async move {
        let stages = json!({"01-SLEEP": {"command": "sleep 20"}});
        let job = add_and_start(&client, "slow", stages, json!({"filePath": "x"})).await;
        let began = std::time::Instant::now();
        let err = client
            .watch(&job.id, quick_watch(Duration::from_millis(300)))
            .wait_final()
            .await
            .unwrap_err();
        assert!(began.elapsed() < Duration::from_secs(2));
        assert!(matches!(err, DmError::WatchTimeout { .. }), "{err}");
        assert_eq!(
            client.get_job(&job.id).await.unwrap().status,
            JobStatus::Running
        );
        assert_eq!(
            client.stop_job(&job.id).await.unwrap().status,
            JobStatus::Aborted
        );
    })
    .await;
}
