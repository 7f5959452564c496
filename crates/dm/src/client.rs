//! The DM processing web-service client: login and session, the argument encoding, DM's error
//! conventions, timeouts and read retries, and the calls the coordinator needs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::encoding::{encode_argument, encode_json};
use crate::error::{status, DmError};
use crate::model::{ExperimentRun, JobStatus, ProcessingJob, Workflow};

/// The environment variable with the service's base URL, as the DM tools read it.
pub const URL_ENV: &str = "DM_PROC_WEB_SERVICE_URL";
/// The environment variable naming the `username|password` login file.
pub const LOGIN_FILE_ENV: &str = "DM_LOGIN_FILE";
/// The header with DM's status code (0 is success).
pub const STATUS_CODE_HEADER: &str = "Dm-Status-Code";
/// The header with DM's status message.
pub const STATUS_MESSAGE_HEADER: &str = "Dm-Status-Message";

/// The paths of calls that DM does not publish, as templates below `/dm` with `{owner}`, `{id}`
/// and `{experiment}` placeholders. The defaults are the paths of the embedded service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePaths {
    /// Stop a processing job (`POST`).
    pub stop_job: String,
    /// Add an experiment run to the run catalog (`POST`, the run in `?run=`).
    pub add_run: String,
    /// List the runs of an experiment (`GET`).
    pub list_runs: String,
}

impl Default for ServicePaths {
    fn default() -> Self {
        ServicePaths {
            stop_job: "processingJobsByOwner/{owner}/{id}/stopProcessingJob".into(),
            add_run: "runCatalog/{experiment}/addRun".into(),
            list_runs: "runCatalog/{experiment}".into(),
        }
    }
}

/// How to reach and log in to a DM processing service. Its `Debug` output hides the password.
#[derive(Clone)]
pub struct ClientConfig {
    /// The base URL, e.g. `https://host:22236`; `/dm` is added unless the URL ends with it.
    pub base_url: String,
    /// The login name.
    pub username: String,
    /// The password.
    pub password: String,
    /// The owner of workflows and jobs the calls work on; the username when `None`.
    pub owner: Option<String>,
    /// A PEM file with the certificate authority to trust for HTTPS.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate checks; only when the user explicitly asks.
    pub accept_invalid_certs: bool,
    /// The time one request may take, connection included.
    pub request_timeout: Duration,
    /// The time to open a connection.
    pub connect_timeout: Duration,
    /// How many times a read is tried again after a transient error (writes: never).
    pub read_retries: u32,
    /// The wait before the first retry; it doubles with each retry.
    pub retry_backoff: Duration,
    /// Paths of the calls DM does not publish.
    pub paths: ServicePaths,
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("username", &self.username)
            .field("password", &"(hidden)")
            .field("owner", &self.owner)
            .field("ca_file", &self.ca_file)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_retries", &self.read_retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("paths", &self.paths)
            .finish()
    }
}

impl ClientConfig {
    /// A configuration with the given URL and credentials and default timeouts and retries.
    pub fn new(
        base_url: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            username: username.into(),
            password: password.into(),
            owner: None,
            ca_file: None,
            accept_invalid_certs: false,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            read_retries: 3,
            retry_backoff: Duration::from_millis(500),
            paths: ServicePaths::default(),
        }
    }

    /// The configuration the DM tools use: `DM_PROC_WEB_SERVICE_URL` and the `DM_LOGIN_FILE`.
    pub fn from_env() -> Result<Self, DmError> {
        let url =
            std::env::var(URL_ENV).map_err(|_| DmError::Config(format!("{URL_ENV} is not set")))?;
        let login_file = std::env::var(LOGIN_FILE_ENV)
            .map_err(|_| DmError::Config(format!("{LOGIN_FILE_ENV} is not set")))?;
        let (username, password) = read_login_file(Path::new(&login_file))?;
        Ok(ClientConfig::new(url, username, password))
    }
}

/// Read a DM login file: one line `username|password`.
pub fn read_login_file(path: &Path) -> Result<(String, String), DmError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        DmError::Config(format!("cannot read login file {}: {err}", path.display()))
    })?;
    parse_login_line(text.lines().next().unwrap_or_default()).ok_or_else(|| {
        DmError::Config(format!(
            "login file {} must hold one line username|password",
            path.display()
        ))
    })
}

/// Split a `username|password` line; `None` when it is not of that form.
pub fn parse_login_line(line: &str) -> Option<(String, String)> {
    let (username, password) = line.trim_end_matches(['\r', '\n']).split_once('|')?;
    (!username.trim().is_empty()).then(|| (username.trim().to_string(), password.to_string()))
}

/// Which jobs `list_jobs` returns.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    /// Jobs to skip, newest first.
    pub skip: Option<u64>,
    /// The most jobs to return.
    pub limit: Option<u64>,
    /// Keys and values a job must have (DM's `queryDict`).
    pub filter: Option<Map<String, Value>>,
}

/// How `watch` polls.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// The time between polls (apstools uses 1 s).
    pub period: Duration,
    /// When to stop watching; the job goes on.
    pub timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(3600),
        }
    }
}

/// What a watch reports.
#[derive(Debug)]
pub enum WatchEvent {
    /// The job's status or stage changed (the first poll always reports).
    Changed(Box<ProcessingJob>),
    /// A poll failed with an error that may pass; the watch goes on until its timeout.
    Unreachable(DmError),
}

/// A client of a DM processing web service (the facility's or the embedded one). Cheap to clone.
#[derive(Debug, Clone)]
pub struct DmClient {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    http: reqwest::Client,
    base: Url,
    config: ClientConfig,
    logged_in: tokio::sync::Mutex<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

struct Call {
    method: Method,
    segments: Vec<String>,
    query: Vec<(&'static str, String)>,
    kind: Kind,
    what: String,
}

impl DmClient {
    /// Build a client; nothing is sent until the first call, which logs in.
    pub fn new(config: ClientConfig) -> Result<Self, DmError> {
        let mut base = Url::parse(&config.base_url).map_err(|err| {
            DmError::Config(format!("bad service URL {:?}: {err}", config.base_url))
        })?;
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(DmError::Config(format!(
                "service URL {:?} must be http:// or https://",
                config.base_url
            )));
        }
        {
            let mut segments = base
                .path_segments_mut()
                .map_err(|()| DmError::Config("service URL cannot take a path".into()))?;
            segments.pop_if_empty();
        }
        if base.path_segments().and_then(|mut s| s.next_back()) != Some("dm") {
            base.path_segments_mut().expect("checked above").push("dm");
        }
        let mut builder = reqwest::Client::builder()
            .cookie_store(true)
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout);
        if let Some(ca_file) = &config.ca_file {
            let pem = std::fs::read(ca_file).map_err(|err| {
                DmError::Config(format!("cannot read CA file {}: {err}", ca_file.display()))
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|err| {
                DmError::Config(format!("bad CA file {}: {err}", ca_file.display()))
            })?;
            if certificates.is_empty() {
                return Err(DmError::Config(format!(
                    "CA file {} holds no PEM certificate",
                    ca_file.display()
                )));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if config.accept_invalid_certs {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder
            .build()
            .map_err(|err| DmError::Config(format!("cannot build the HTTP client: {err}")))?;
        Ok(DmClient {
            inner: Arc::new(ClientInner {
                http,
                base,
                config,
                logged_in: tokio::sync::Mutex::new(false),
            }),
        })
    }

    /// The owner the calls work on.
    pub fn owner(&self) -> &str {
        let config = &self.inner.config;
        config.owner.as_deref().unwrap_or(&config.username)
    }

    /// The base URL, `/dm` included.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// Log in now (calls log in by themselves when needed).
    pub async fn login(&self) -> Result<(), DmError> {
        let mut logged_in = self.inner.logged_in.lock().await;
        self.send_login().await?;
        *logged_in = true;
        Ok(())
    }

    /// The owner's workflows.
    pub async fn list_workflows(&self) -> Result<Vec<Workflow>, DmError> {
        let segments = vec!["workflowsByOwner".into(), self.owner().into()];
        self.read(segments, vec![], "list workflows").await
    }

    /// One workflow of the owner, by name.
    pub async fn get_workflow(&self, name: &str) -> Result<Workflow, DmError> {
        let segments = vec![
            "workflowsByOwner".into(),
            self.owner().into(),
            encode_argument(name),
        ];
        self.read(segments, vec![], &format!("get workflow {name}"))
            .await
    }

    /// Add a new workflow; DM refuses one whose name the owner already uses.
    pub async fn add_workflow(&self, workflow: &Workflow) -> Result<Workflow, DmError> {
        self.send_workflow(Method::POST, "addWorkflow", workflow)
            .await
    }

    /// Replace an existing workflow.
    pub async fn update_workflow(&self, workflow: &Workflow) -> Result<Workflow, DmError> {
        self.send_workflow(Method::PUT, "updateWorkflow", workflow)
            .await
    }

    /// Start a processing job of the owner's workflow. Never sent twice: on a timeout the job
    /// may or may not exist, and the error says so.
    pub async fn start_job(
        &self,
        workflow_name: &str,
        args: &Map<String, Value>,
    ) -> Result<ProcessingJob, DmError> {
        let call = Call {
            method: Method::POST,
            segments: vec![
                "processingJobsByWorkflow".into(),
                self.owner().into(),
                encode_argument(workflow_name),
                "startProcessingJob".into(),
            ],
            query: vec![("argsDict", encode_json(&Value::Object(args.clone())))],
            kind: Kind::Write,
            what: format!("start a job of workflow {workflow_name}"),
        };
        self.call_typed(&call, 0).await
    }

    /// One processing job of the owner, by id.
    pub async fn get_job(&self, id: &str) -> Result<ProcessingJob, DmError> {
        self.get_job_with_retries(id, self.inner.config.read_retries)
            .await
    }

    /// The owner's processing jobs, newest first.
    pub async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<ProcessingJob>, DmError> {
        let mut pairs = Vec::new();
        if let Some(skip) = query.skip {
            pairs.push(("skip", skip.to_string()));
        }
        if let Some(limit) = query.limit {
            pairs.push(("limit", limit.to_string()));
        }
        if let Some(filter) = &query.filter {
            pairs.push(("queryDict", encode_json(&Value::Object(filter.clone()))));
        }
        let segments = vec!["processingJobsByOwner".into(), self.owner().into()];
        self.read(segments, pairs, "list jobs").await
    }

    /// Stop a processing job; it ends `aborted`.
    pub async fn stop_job(&self, id: &str) -> Result<ProcessingJob, DmError> {
        let call = Call {
            method: Method::POST,
            segments: self.template(&self.inner.config.paths.stop_job, id, ""),
            query: vec![],
            kind: Kind::Write,
            what: format!("stop job {id}"),
        };
        self.call_typed(&call, 0).await
    }

    /// Add an experiment run to the run catalog.
    pub async fn add_run(&self, run: &ExperimentRun) -> Result<ExperimentRun, DmError> {
        let run_json = serde_json::to_value(run).map_err(|err| DmError::Decode {
            what: "add run".into(),
            message: err.to_string(),
        })?;
        let call = Call {
            method: Method::POST,
            segments: self.template(&self.inner.config.paths.add_run, "", &run.experiment_name),
            query: vec![("run", encode_json(&run_json))],
            kind: Kind::Write,
            what: format!(
                "add run {} of experiment {}",
                run.run_id, run.experiment_name
            ),
        };
        self.call_typed(&call, 0).await
    }

    /// The runs of an experiment in the run catalog.
    pub async fn list_runs(&self, experiment: &str) -> Result<Vec<ExperimentRun>, DmError> {
        let segments = self.template(&self.inner.config.paths.list_runs, "", experiment);
        self.read(
            segments,
            vec![],
            &format!("list runs of experiment {experiment}"),
        )
        .await
    }

    /// Watch a job: poll every `options.period` and report each change of status or stage until
    /// a final status, or until `options.timeout` ends the watching (not the job).
    pub fn watch(&self, job_id: &str, options: WatchOptions) -> JobWatch {
        JobWatch {
            client: self.clone(),
            job_id: job_id.to_string(),
            options,
            deadline: Instant::now() + options.timeout,
            next_poll: Instant::now(),
            last_seen: None,
            finished: false,
        }
    }

    async fn get_job_with_retries(&self, id: &str, retries: u32) -> Result<ProcessingJob, DmError> {
        let call = Call {
            method: Method::GET,
            segments: vec![
                "processingJobsByOwner".into(),
                self.owner().into(),
                id.into(),
            ],
            query: vec![],
            kind: Kind::Read,
            what: format!("get job {id}"),
        };
        self.call_typed(&call, retries).await
    }

    async fn send_workflow(
        &self,
        method: Method,
        action: &str,
        workflow: &Workflow,
    ) -> Result<Workflow, DmError> {
        let mut workflow = workflow.clone();
        if workflow.owner.is_empty() {
            workflow.owner = self.owner().to_string();
        }
        let workflow_json = serde_json::to_value(&workflow).map_err(|err| DmError::Decode {
            what: action.into(),
            message: err.to_string(),
        })?;
        let call = Call {
            method,
            segments: vec!["workflows".into(), action.into()],
            query: vec![("workflow", encode_json(&workflow_json))],
            kind: Kind::Write,
            what: format!("{action} {}", workflow.name),
        };
        self.call_typed(&call, 0).await
    }

    async fn read<T: DeserializeOwned>(
        &self,
        segments: Vec<String>,
        query: Vec<(&'static str, String)>,
        what: &str,
    ) -> Result<T, DmError> {
        let call = Call {
            method: Method::GET,
            segments,
            query,
            kind: Kind::Read,
            what: what.to_string(),
        };
        self.call_typed(&call, self.inner.config.read_retries).await
    }

    fn template(&self, template: &str, id: &str, experiment: &str) -> Vec<String> {
        template
            .split('/')
            .filter(|segment| !segment.is_empty())
            .map(|segment| {
                segment
                    .replace("{owner}", self.owner())
                    .replace("{id}", id)
                    .replace("{experiment}", experiment)
            })
            .collect()
    }

    async fn call_typed<T: DeserializeOwned>(
        &self,
        call: &Call,
        retries: u32,
    ) -> Result<T, DmError> {
        let value = self.call(call, retries).await?;
        serde_json::from_value(value).map_err(|err| DmError::Decode {
            what: call.what.clone(),
            message: err.to_string(),
        })
    }

    async fn call(&self, call: &Call, retries: u32) -> Result<Value, DmError> {
        self.ensure_logged_in().await?;
        let retries = if call.kind == Kind::Read { retries } else { 0 };
        let mut logged_in_again = false;
        let mut attempt = 0;
        loop {
            match self.send(call).await {
                Ok(value) => return Ok(value),
                Err(err) if err.is_invalid_session() && !logged_in_again => {
                    tracing::info!("DM session invalid during {}: logging in again", call.what);
                    logged_in_again = true;
                    self.login().await?;
                }
                Err(err) if err.is_transient() && attempt < retries => {
                    let backoff = self.inner.config.retry_backoff * 2u32.saturating_pow(attempt);
                    tracing::warn!("{err}; trying again in {backoff:?}");
                    attempt += 1;
                    tokio::time::sleep(backoff).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn ensure_logged_in(&self) -> Result<(), DmError> {
        let mut logged_in = self.inner.logged_in.lock().await;
        if !*logged_in {
            self.send_login().await?;
            *logged_in = true;
        }
        Ok(())
    }

    async fn send_login(&self) -> Result<(), DmError> {
        let config = &self.inner.config;
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("checked in new")
            .push("login");
        let form = [
            ("username", config.username.as_str()),
            ("password", config.password.as_str()),
        ];
        let what = "login";
        let response = self
            .inner
            .http
            .post(url)
            .form(&form)
            .send()
            .await
            .map_err(|err| self.transport_error(what, err))?;
        match self.read_reply(what, response).await {
            Ok(_) => Ok(()),
            Err(DmError::Service { message, .. }) => Err(DmError::Login {
                username: config.username.clone(),
                message,
            }),
            Err(DmError::Http { status, body }) => Err(DmError::Login {
                username: config.username.clone(),
                message: format!("HTTP {status}: {body}"),
            }),
            Err(other) => Err(other),
        }
    }

    async fn send(&self, call: &Call) -> Result<Value, DmError> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .expect("checked in new")
            .extend(&call.segments);
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(&call.query);
        }
        tracing::debug!("DM {} {}", call.method, url);
        let response = self
            .inner
            .http
            .request(call.method.clone(), url)
            .send()
            .await
            .map_err(|err| self.transport_error(&call.what, err))?;
        self.read_reply(&call.what, response).await
    }

    fn transport_error(&self, what: &str, err: reqwest::Error) -> DmError {
        if err.is_timeout() {
            DmError::Timeout {
                what: what.to_string(),
                timeout: self.inner.config.request_timeout,
            }
        } else {
            DmError::Transport {
                what: what.to_string(),
                message: error_chain(&err),
            }
        }
    }

    async fn read_reply(&self, what: &str, response: reqwest::Response) -> Result<Value, DmError> {
        let http_status = response.status();
        let header_code =
            header_text(&response, STATUS_CODE_HEADER).and_then(|v| v.trim().parse::<i64>().ok());
        let header_message = header_text(&response, STATUS_MESSAGE_HEADER);
        let body = response
            .text()
            .await
            .map_err(|err| self.transport_error(what, err))?;
        let json: Option<Value> = serde_json::from_str(&body).ok();
        let body_error = json.as_ref().and_then(body_error);
        match (header_code, body_error) {
            (Some(code), body_error) if code != status::OK => {
                let message = header_message
                    .or_else(|| body_error.map(|(_, message)| message))
                    .unwrap_or_else(|| summarize(&body));
                return Err(DmError::Service {
                    http_status: http_status.as_u16(),
                    code,
                    message,
                });
            }
            (_, Some((code, message))) => {
                return Err(DmError::Service {
                    http_status: http_status.as_u16(),
                    code,
                    message,
                })
            }
            _ => {}
        }
        if !http_status.is_success() {
            return Err(DmError::Http {
                status: http_status.as_u16(),
                body: summarize(&body),
            });
        }
        if body.trim().is_empty() {
            return Ok(Value::Null);
        }
        json.ok_or_else(|| DmError::Decode {
            what: what.to_string(),
            message: format!("not JSON: {}", summarize(&body)),
        })
    }
}

/// A running watch of one job; see [`DmClient::watch`].
#[derive(Debug)]
pub struct JobWatch {
    client: DmClient,
    job_id: String,
    options: WatchOptions,
    deadline: Instant,
    next_poll: Instant,
    last_seen: Option<(JobStatus, Option<String>)>,
    finished: bool,
}

impl JobWatch {
    /// The next change, a transient poll failure, or an error; `None` once the job reached a
    /// final status or the watch ended with an error.
    pub async fn next(&mut self) -> Option<Result<WatchEvent, DmError>> {
        loop {
            if self.finished {
                return None;
            }
            if Instant::now() >= self.deadline {
                self.finished = true;
                return Some(Err(DmError::WatchTimeout {
                    job_id: self.job_id.clone(),
                    timeout: self.options.timeout,
                    last_status: self
                        .last_seen
                        .as_ref()
                        .map_or_else(|| "never".to_string(), |(status, _)| status.to_string()),
                }));
            }
            tokio::time::sleep_until(self.next_poll.min(self.deadline)).await;
            if Instant::now() < self.next_poll {
                continue;
            }
            self.next_poll = Instant::now() + self.options.period;
            let poll = self.client.get_job_with_retries(&self.job_id, 0);
            match tokio::time::timeout_at(self.deadline, poll).await {
                Err(_elapsed) => continue,
                Ok(Ok(job)) => {
                    let seen = (job.status, job.stage.clone());
                    if self.last_seen.as_ref() == Some(&seen) {
                        continue;
                    }
                    self.last_seen = Some(seen);
                    self.finished = job.status.is_final();
                    return Some(Ok(WatchEvent::Changed(Box::new(job))));
                }
                Ok(Err(err)) if err.is_transient() => {
                    tracing::warn!("watching job {}: {err}; still trying", self.job_id);
                    return Some(Ok(WatchEvent::Unreachable(err)));
                }
                Ok(Err(err)) => {
                    self.finished = true;
                    return Some(Err(err));
                }
            }
        }
    }

    /// Watch to the end and return the job in its final status.
    pub async fn wait_final(mut self) -> Result<ProcessingJob, DmError> {
        let mut last_job = None;
        while let Some(event) = self.next().await {
            if let WatchEvent::Changed(job) = event? {
                last_job = Some(*job);
            }
        }
        last_job.ok_or_else(|| DmError::Decode {
            what: format!("watch job {}", self.job_id),
            message: "the watch ended without seeing the job".into(),
        })
    }
}

fn header_text(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

fn body_error(json: &Value) -> Option<(i64, String)> {
    let object = json.as_object()?;
    let code = object.get("errorCode")?;
    let code = code
        .as_i64()
        .or_else(|| code.as_str()?.trim().parse().ok())?;
    if code == status::OK {
        return None;
    }
    let message = object
        .get("errorMessage")
        .map(crate::model::value_as_text)
        .unwrap_or_else(|| "no message".into());
    Some((code, message))
}

fn summarize(body: &str) -> String {
    const LIMIT: usize = 300;
    let body = body.trim();
    match body.char_indices().nth(LIMIT) {
        Some((cut, _)) => format!("{}...", &body[..cut]),
        None if body.is_empty() => "(empty reply)".into(),
        None => body.to_string(),
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
