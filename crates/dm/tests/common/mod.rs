//! Helpers shared by the dm integration tests: a service on a loopback port 0 in a temporary
//! directory, clients with short timeouts, and workflows written as JSON.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dm::{
    ClientConfig, DmClient, ProcessingJob, RunningService, ServiceConfig, WatchOptions, Workflow,
};
use serde_json::{Map, Value};

/// The user every test logs in as.
pub const USER: &str = "alice";
/// Alice's password.
pub const PASSWORD: &str = "wonderland";
/// A second user, for owner checks.
pub const OTHER_USER: &str = "bob";
/// Bob's password.
pub const OTHER_PASSWORD: &str = "builder";

/// Fail the test instead of hanging when `body` takes longer than `limit`.
pub async fn bounded<T>(limit: Duration, body: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, body)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
}

/// Write the users file in `dir`.
pub fn write_users(dir: &Path) -> PathBuf {
    let path = dir.join("users");
    std::fs::write(
        &path,
        format!("# test users\n{USER}|{PASSWORD}\n{OTHER_USER}|{OTHER_PASSWORD}\n"),
    )
    .unwrap();
    path
}

/// Start a service on 127.0.0.1 port 0 with its data in `dir`.
pub async fn start_service(dir: &Path, max_running_jobs: usize) -> RunningService {
    let users = write_users(dir);
    let mut config = ServiceConfig::new("127.0.0.1:0".parse().unwrap(), dir.join("data"), users);
    config.max_running_jobs = max_running_jobs;
    dm::service::start(config).await.expect("service starts")
}

/// What a test body gets from [`with_service`]: alice's client, the service's URL and the
/// service's temporary directory.
pub struct Ctx {
    /// A client of the service as alice.
    pub client: DmClient,
    /// The service's base URL.
    pub url: String,
    /// The directory the service keeps its users file and data in.
    pub dir: PathBuf,
}

/// Run `test` against a fresh service (at most `max_running_jobs` jobs at once) in a temporary
/// directory, failing it after `limit`; then shut the service down.
pub async fn with_service<F, Fut>(max_running_jobs: usize, limit: Duration, test: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let service = start_service(dir.path(), max_running_jobs).await;
    let ctx = Ctx {
        client: client(&service.url()),
        url: service.url(),
        dir: dir.path().to_path_buf(),
    };
    bounded(limit, test(ctx)).await;
    service.shutdown().await;
}

/// A client configuration with short timeouts and quick retries.
pub fn quick_config(url: &str, username: &str, password: &str) -> ClientConfig {
    let mut config = ClientConfig::new(url, username, password);
    config.request_timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(2);
    config.read_retries = 2;
    config.retry_backoff = Duration::from_millis(20);
    config
}

/// A client of `url` as alice.
pub fn client(url: &str) -> DmClient {
    DmClient::new(quick_config(url, USER, PASSWORD)).unwrap()
}

/// A workflow from a JSON object of stages.
pub fn workflow(name: &str, stages: Value) -> Workflow {
    serde_json::from_value(serde_json::json!({
        "name": name,
        "description": format!("test workflow {name}"),
        "stages": stages,
    }))
    .unwrap()
}

/// An argsDict from a JSON object.
pub fn args(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap()
}

/// Watch options for tests: quick polls, bounded.
pub fn quick_watch(timeout: Duration) -> WatchOptions {
    WatchOptions {
        period: Duration::from_millis(25),
        timeout,
    }
}

/// Poll until the job satisfies `done`, or panic after `limit`.
pub async fn wait_for_job(
    client: &DmClient,
    id: &str,
    limit: Duration,
    done: impl Fn(&ProcessingJob) -> bool,
) -> ProcessingJob {
    bounded(limit, async {
        loop {
            let job = client.get_job(id).await.unwrap();
            if done(&job) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Add workflow `name` of `stages`, then start a job of it with `job_args` (a JSON object).
pub async fn add_and_start(
    client: &DmClient,
    name: &str,
    stages: Value,
    job_args: Value,
) -> ProcessingJob {
    client.add_workflow(&workflow(name, stages)).await.unwrap();
    client.start_job(name, &args(job_args)).await.unwrap()
}

/// The job once it is final, watched with quick polls for at most 10 s.
pub async fn final_job(client: &DmClient, id: &str) -> ProcessingJob {
    client
        .watch(id, quick_watch(Duration::from_secs(10)))
        .wait_final()
        .await
        .unwrap()
}
