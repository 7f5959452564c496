//! `pvabridge dm-service` and `pvabridge dm ...` as a user runs them: the built binary against
//! a service it starts on a free loopback port.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");

/// The service process, killed when the test ends however it ends.
struct ServiceProcess {
    child: Child,
    url: String,
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_service(dir: &Path) -> ServiceProcess {
    let mut child = Command::new(BINARY)
        .args([
            "dm-service",
            "--listen",
            "127.0.0.1:0",
            "--max-running-jobs",
            "2",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--users")
        .arg(dir.join("users"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("dm-service starts");
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let mut service = ServiceProcess {
        child,
        url: String::new(),
    };
    let line = receiver
        .recv_timeout(Duration::from_secs(20))
        .expect("dm-service prints its address");
    service.url = line
        .trim()
        .strip_prefix("dm-service listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    service
}

fn dm(service: &ServiceProcess, dir: &Path, args: &[&str]) -> Output {
    Command::new(BINARY)
        .arg("dm")
        .args(args)
        .env("DM_PROC_WEB_SERVICE_URL", &service.url)
        .env("DM_LOGIN_FILE", dir.join("users"))
        .output()
        .expect("pvabridge dm runs")
}

fn ok_stdout(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// A directory with the service's users file (alice may log in).
fn with_users() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "alice|wonderland\n").unwrap();
    dir
}

/// Write `text` to `dir/file`, start a service in `dir` and add that file's workflow with
/// `pvabridge dm add-workflow`: the service, and what the command printed.
fn service_with_workflow(dir: &Path, file: &str, text: &str) -> (ServiceProcess, String) {
    let workflow = dir.join(file);
    std::fs::write(&workflow, text).unwrap();
    let service = start_service(dir);
    let added = ok_stdout(dm(
        &service,
        dir,
        &["add-workflow", workflow.to_str().unwrap()],
    ));
    (service, added)
}

#[test]
fn the_dm_commands_drive_the_embedded_service() {
    let dir = with_users();
    let (service, added) = service_with_workflow(
        dir.path(),
        "workflow.json",
        r#"{"name": "cli-demo", "description": "two stages",
            "stages": {"01-HELLO": {"command": "echo hello $sample", "outputVariableRegexList": ["hello (?P<greeted>\\w+)"]},
                       "02-BYE": {"command": "echo bye $greeted"}}}"#,
    );
    assert_eq!(
        added.trim(),
        "name=cli-demo owner=alice stages=01-HELLO,02-BYE"
    );
    let listed = ok_stdout(dm(&service, dir.path(), &["list-workflows"]));
    assert_eq!(listed.trim(), added.trim());

    let started = ok_stdout(dm(
        &service,
        dir.path(),
        &[
            "start-job",
            "--workflow-name",
            "cli-demo",
            "filePath:/data/a.h5",
            "sample:lysozyme",
        ],
    ));
    let id = field(started.trim(), "id").to_string();
    assert_eq!(field(started.trim(), "owner"), "alice");

    let deadline = Instant::now() + Duration::from_secs(20);
    let finished = loop {
        let line = ok_stdout(dm(&service, dir.path(), &["get-job", "--id", &id]));
        if field(line.trim(), "status") == "done" {
            break line;
        }
        assert!(Instant::now() < deadline, "job never finished: {line}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Like the DM tools: who, where, and the times.
    let finished = finished.trim();
    assert!(
        finished.starts_with(&format!(
            "id={id} owner=alice status=done stage=02-BYE submissionTimestamp="
        )),
        "{finished}"
    );
    for key in ["startTimestamp=", "endTimestamp=", "runTime="] {
        assert!(finished.contains(key), "{key} in {finished}");
    }
    let run_time: f64 = field(finished, "runTime").parse().unwrap();
    assert!(run_time >= 0.0, "{finished}");

    let job: serde_json::Value = serde_json::from_str(&ok_stdout(dm(
        &service,
        dir.path(),
        &["get-job", "--id", &id, "--json"],
    )))
    .unwrap();
    assert_eq!(job["sample"], "lysozyme");
    assert_eq!(job["greeted"], "lysozyme");
    assert_eq!(
        job["workflow"]["stages"]["02-BYE"]["childProcesses"]["1"]["stdOut"],
        "bye lysozyme\n"
    );

    let jobs = ok_stdout(dm(&service, dir.path(), &["list-jobs"]));
    assert_eq!(jobs.trim(), finished.trim());
    let jobs: serde_json::Value = serde_json::from_str(&ok_stdout(dm(
        &service,
        dir.path(),
        &["--json", "list-jobs"],
    )))
    .unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["id"], id.as_str());
    assert_eq!(jobs[0]["status"], "done");
}

#[test]
fn bad_input_gives_one_clear_line_and_a_failure_exit() {
    let dir = with_users();
    let service = start_service(dir.path());

    let output = dm(
        &service,
        dir.path(),
        &["start-job", "--workflow-name", "cli-demo", "no-colon-here"],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("\"no-colon-here\" is not key:value"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"));

    let output = dm(&service, dir.path(), &["get-job", "--id", "no-such-job"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no-such-job") && stderr.contains("does not exist"),
        "{stderr}"
    );

    let missing = dir.path().join("missing.json");
    let output = dm(
        &service,
        dir.path(),
        &["add-workflow", missing.to_str().unwrap()],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("cannot read"));

    let output = Command::new(BINARY)
        .args(["dm", "list-jobs"])
        .env_remove("DM_PROC_WEB_SERVICE_URL")
        .env_remove("DM_LOGIN_FILE")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8(output.stderr)
        .unwrap()
        .contains("DM_PROC_WEB_SERVICE_URL"));
}

#[test]
fn list_runs_reads_the_run_catalog_through_a_configurable_path() {
    let dir = with_users();
    let service = start_service(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client =
            dm::DmClient::new(dm::ClientConfig::new(&service.url, "alice", "wonderland")).unwrap();
        let mut run = dm::ExperimentRun {
            experiment_name: "e1".into(),
            run_id: "r1".into(),
            ..dm::ExperimentRun::default()
        };
        run.metadata.insert(
            "handshake".into(),
            serde_json::json!({"finalState": "DONE", "jobId": "j1"}),
        );
        run.metadata.insert("plan_name".into(), "count".into());
        client.add_run(&run).await.unwrap();
    });

    let listed = ok_stdout(dm(
        &service,
        dir.path(),
        &["list-runs", "--experiment", "e1"],
    ));
    assert_eq!(
        listed.trim(),
        "experiment=e1 runId=r1 state=DONE job=j1 metadata=plan_name"
    );
    let json: serde_json::Value = serde_json::from_str(&ok_stdout(dm(
        &service,
        dir.path(),
        &["list-runs", "--experiment", "e1", "--json"],
    )))
    .unwrap();
    assert_eq!(json[0]["runId"], "r1");
    assert_eq!(json[0]["metadata"]["plan_name"], "count");
    assert!(
        json[0]["id"].is_string(),
        "the catalog gave the entry an id"
    );
    let none = ok_stdout(dm(
        &service,
        dir.path(),
        &["list-runs", "--experiment", "e2"],
    ));
    assert!(none.trim().is_empty(), "{none}");

    let output = dm(
        &service,
        dir.path(),
        &[
            "list-runs",
            "--experiment",
            "e1",
            "--list-runs-path",
            "elsewhere/{experiment}",
        ],
    );
    assert!(!output.status.success(), "the path is taken as given");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("No such DM request path"), "{stderr}");
}

#[test]
fn a_python_dict_workflow_a_watched_job_filters_and_display_keys() {
    let dir = with_users();
    // As the DM tools' workflow files are written: a Python dict, comments, either quote
    // style, a raw string, True, trailing commas.
    let (service, added) = service_with_workflow(
        dir.path(),
        "workflow.py",
        r#"# three stages, the second one slow enough to be seen
{
    'name': 'py-demo',
    "description": 'written ' 'as a Python dict',
    'public': True,
    'stages': {
        '01-HELLO': {'command': 'echo hello $sample',
                     'outputVariableRegexList': [r'hello (?P<greeted>\w+)',],},
        '02-WAIT': {'command': 'sleep 1'},
        '03-BYE': {'command': "echo bye $greeted"},
    },
}
"#,
    );
    assert_eq!(
        added.trim(),
        "name=py-demo owner=alice stages=01-HELLO,02-WAIT,03-BYE"
    );
    let broken = dir.path().join("broken.py");
    std::fs::write(
        &broken,
        "{'name': 'x',\n 'stages': {'01': {'command': 'true'}\n",
    )
    .unwrap();
    let output = dm(
        &service,
        dir.path(),
        &["add-workflow", broken.to_str().unwrap()],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is neither JSON nor a Python dict literal: line 3, column 1"),
        "{stderr}"
    );

    let started = ok_stdout(dm(
        &service,
        dir.path(),
        &[
            "start-job",
            "--workflow-name",
            "py-demo",
            "filePath:/data/a.h5",
            "sample:lysozyme",
        ],
    ));
    let id = field(started.trim(), "id").to_string();
    let watched = Command::new(BINARY)
        .args([
            "dm",
            "watch-job",
            "--id",
            &id,
            "--period",
            "100ms",
            "--max-wait",
            "30s",
        ])
        .env("DM_PROC_WEB_SERVICE_URL", &service.url)
        .env("DM_LOGIN_FILE", dir.path().join("users"))
        .output()
        .expect("pvabridge dm watch-job runs");
    let stdout = String::from_utf8_lossy(&watched.stdout);
    let stderr = String::from_utf8_lossy(&watched.stderr);
    assert!(watched.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout
            .trim()
            .starts_with(&format!("id={id} owner=alice status=done stage=03-BYE ")),
        "the job as it ended: {stdout}"
    );
    // Not a terminal: one line per change, the slow stage among them, the end last.
    assert!(
        stderr.contains("pvabridge dm watch-job: running stage 02-WAIT (2/3)"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().last(),
        Some("pvabridge dm watch-job: done stage 03-BYE (3/3)"),
        "{stderr}"
    );

    let other = ok_stdout(dm(
        &service,
        dir.path(),
        &[
            "start-job",
            "--workflow-name",
            "py-demo",
            "filePath:/b",
            "sample:insulin",
        ],
    ));
    let other = field(other.trim(), "id").to_string();
    let picked = ok_stdout(dm(
        &service,
        dir.path(),
        &[
            "list-jobs",
            "sample:lysozyme",
            "--display-keys",
            "id,sample,greeted",
        ],
    ));
    assert_eq!(
        picked.trim(),
        format!("id={id} sample=lysozyme greeted=lysozyme")
    );
    let picked = ok_stdout(dm(
        &service,
        dir.path(),
        &[
            "list-jobs",
            "sample:insulin",
            "--display-keys",
            "id,sample",
            "--display-format",
            "json",
        ],
    ));
    let picked: serde_json::Value = serde_json::from_str(picked.trim()).unwrap();
    assert_eq!(
        picked,
        serde_json::json!({"id": other, "sample": "insulin"})
    );
    let all = ok_stdout(dm(
        &service,
        dir.path(),
        &[
            "get-job",
            "--id",
            &id,
            "--display-keys",
            "ALL",
            "--display-format",
            "pprint",
        ],
    ));
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    for key in [
        "submissionTime",
        "startTime",
        "endTime",
        "runTime",
        "workflow",
        "filePath",
    ] {
        assert!(all.get(key).is_some(), "{key} in {all}");
    }
}
