//! Helpers of the end-to-end handshake tests: `pvabridge serve` and `pvabridge dm-service` as
//! child processes on loopback, DM workflows whose stages run `pvabridge workflow ...`, and the
//! Bluesky side played by our PVA client.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use coordinator::{AgentError, Command, HandshakeClient, RunRequest, State};
use dm::client::read_login_file;
use dm::{ClientConfig, DmClient, ProcessingJob, Stage, Workflow};
use pva::client::{Context, MonitorEvent};
use serde_json::Value;

pub const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");
/// The longest any single wait of these tests may take.
pub const WAIT: Duration = Duration::from_secs(30);

/// A child process killed when the test ends, however it ends.
pub struct Running {
    pub child: Child,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The loopback EPICS environment of a test: servers on `udp`, clients searching there. Stages
/// started by a DM service inherit it, so that their `pvabridge workflow` finds the bridge.
pub fn loopback(cmd: &mut Process, udp: u16) {
    cmd.env("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_SERVER_PORT", "0")
        .env("EPICS_PVA_BROADCAST_PORT", udp.to_string())
        .env("EPICS_PVA_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVA_NAME_SERVERS", "")
        .env_remove("PVABRIDGE_HANDSHAKE")
        .env_remove("DM_PROC_WEB_SERVICE_URL")
        .env_remove("DM_LOGIN_FILE");
}

/// Start `cmd`, logging its stderr to `log`, and return it with its first stdout line.
pub fn spawn_reporting(mut cmd: Process, log: &Path) -> (Running, String) {
    let log_file = std::fs::File::create(log).expect("create log file");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .expect("start pvabridge");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    let running = Running { child };
    let line = receiver.recv_timeout(WAIT).unwrap_or_else(|_| {
        panic!(
            "no startup line; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        )
    });
    (running, line)
}

/// A bridge process and what it reported.
pub struct Bridge {
    pub process: Running,
    pub dm_url: String,
    pub login_file: PathBuf,
    pub log: PathBuf,
}

impl Bridge {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `pvabridge serve --json` of slot `prefix`, polling DM every 0.2 s.
fn serve_command(prefix: &str) -> Process {
    let mut cmd = Process::new(BINARY);
    cmd.args([
        "serve",
        "--json",
        "--prefix",
        prefix,
        "--poll-period",
        "0.2",
    ]);
    cmd
}

/// `pvabridge serve --json` with `dm` options, its state in `dir/state`.
pub fn serve(dir: &Path, udp: u16, prefix: &str, dm: &[&str], log_name: &str) -> Bridge {
    let mut cmd = serve_command(prefix);
    cmd.args(dm)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env("RUST_LOG", "info");
    loopback(&mut cmd, udp);
    let log = dir.join(log_name);
    let (process, line) = spawn_reporting(cmd, &log);
    let info: Value =
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("startup line {line:?} is not JSON"));
    assert_eq!(info["event"], "serving", "{info}");
    Bridge {
        process,
        dm_url: info["dmUrl"].as_str().unwrap().to_string(),
        login_file: info["dmLoginFile"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("users")),
        log,
    }
}

/// Run an end-to-end test on a runtime of its own, failed if it takes longer than `limit`.
pub fn run_test(limit: Duration, test: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        tokio::time::timeout(limit, test)
            .await
            .expect("the test finishes in time");
    });
}

/// The start of most end-to-end tests: `pvabridge serve` with the embedded DM service, in a
/// directory of its own, on a UDP port of its own, with one workflow added to DM.
pub struct EmbeddedRun {
    pub bridge: Bridge,
    pub dm: DmClient,
    pub udp: u16,
    pub prefix: String,
    /// Declared last, so it is removed only after the bridge has stopped.
    pub dir: tempfile::TempDir,
}

impl EmbeddedRun {
    pub async fn start(prefix: &str, workflow: Workflow) -> EmbeddedRun {
        EmbeddedRun::start_with(prefix, workflow, &[]).await
    }

    /// As [`EmbeddedRun::start`], with more `pvabridge serve` options (e.g. another --prefix).
    pub async fn start_with(prefix: &str, workflow: Workflow, options: &[&str]) -> EmbeddedRun {
        let dir = tempfile::tempdir().unwrap();
        let udp = super::free_udp_port();
        let dm_dir = dir.path().join("dm");
        let mut args = vec!["--embedded-dm", dm_dir.to_str().unwrap()];
        args.extend_from_slice(options);
        let bridge = serve(dir.path(), udp, prefix, &args, "bridge.log");
        let dm = dm_client(&bridge.dm_url, &bridge.login_file);
        dm.add_workflow(&workflow)
            .await
            .expect("DM takes the workflow");
        EmbeddedRun {
            bridge,
            dm,
            udp,
            prefix: prefix.to_owned(),
            dir,
        }
    }

    /// A client of the bridge's slot, as the Bluesky side.
    pub fn slot(&self) -> HandshakeClient {
        slot(self.udp, &self.prefix)
    }

    /// Run `pvabridge dm ARGS` against the bridge's embedded DM service; its stdout.
    pub fn dm_command(&self, args: &[&str]) -> String {
        let mut cmd = Process::new(BINARY);
        cmd.arg("dm")
            .args(args)
            .args(["--url", &self.bridge.dm_url, "--login-file"])
            .arg(&self.bridge.login_file);
        let out = super::run_bounded(cmd, WAIT);
        assert!(
            out.status.success(),
            "pvabridge dm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    }
}

/// `pvabridge serve --json` of one slot with an embedded DM service, started by
/// [`super::spawn_server`]: the process, its startup JSON and where its log is.
pub struct EmbeddedBridge {
    /// The process, killed when this is dropped.
    pub process: super::Running,
    /// What it printed at startup (`dmUrl`, `dmLoginFile`, ...).
    pub info: Value,
    /// Its stderr.
    pub log: PathBuf,
}

impl EmbeddedBridge {
    /// Serve slot `prefix` (polling DM every 0.2 s) on UDP port `udp`, searching `search`, the
    /// DM service's data and the log in `dir`; `configure` adds options or environment.
    pub fn start(
        dir: &Path,
        prefix: &str,
        udp: u16,
        search: &[u16],
        configure: impl FnOnce(&mut Process),
    ) -> EmbeddedBridge {
        let mut serve = serve_command(prefix);
        serve.arg("--embedded-dm").arg(dir.join("dm"));
        configure(&mut serve);
        let log = dir.join("bridge.log");
        let mut process = super::spawn_server(serve, udp, &log, search);
        let line = super::first_line(&mut process);
        let info = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("startup line {line:?} is not JSON"));
        EmbeddedBridge { process, info, log }
    }

    /// A client of its DM service, logged in as the bridge is.
    pub fn dm(&self) -> DmClient {
        let login_file = self.info["dmLoginFile"].as_str().expect("dmLoginFile");
        dm_client(
            self.info["dmUrl"].as_str().expect("dmUrl"),
            Path::new(login_file),
        )
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A client of the DM service at `url`, with the credentials of `login_file`.
pub fn dm_client(url: &str, login_file: &Path) -> DmClient {
    let (username, password) = read_login_file(login_file).expect("login file");
    DmClient::new(ClientConfig::new(url, username, password)).expect("DM client")
}

/// A workflow of shell stages; `pvabridge` in a command is the binary under test.
pub fn workflow(name: &str, stages: &[(&str, &str)]) -> Workflow {
    let binary = format!("'{BINARY}'");
    Workflow {
        name: name.into(),
        stages: stages
            .iter()
            .map(|(key, command)| {
                let stage = Stage {
                    command: command.replace("pvabridge", &binary),
                    ..Stage::default()
                };
                (key.to_string(), stage)
            })
            .collect::<BTreeMap<_, _>>(),
        ..Workflow::default()
    }
}

pub fn slot(udp: u16, prefix: &str) -> HandshakeClient {
    let config = pva::ClientConfig::isolated(([127, 0, 0, 1], udp).into());
    HandshakeClient::new(Context::new(config).expect("client"), prefix)
        .with_timeout(Duration::from_secs(10))
}

/// Poll DM until the job satisfies `done`.
pub async fn job_until(
    dm: &DmClient,
    job_id: &str,
    done: impl Fn(&ProcessingJob) -> bool,
) -> ProcessingJob {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let job = dm.get_job(job_id).await.expect("get job");
        if done(&job) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job_id} stayed {} in stage {:?}",
            job.status,
            job.stage
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait for the run catalog entry of the run with Bluesky uid `run_uid` in experiment
/// `pvabridge` (the bridge's default).
pub async fn catalog_run(dm: &DmClient, run_uid: &str) -> dm::ExperimentRun {
    catalog_run_in(dm, "pvabridge", run_uid).await
}

/// Wait for the run catalog entry of the run with Bluesky uid `run_uid` in `experiment`.
pub async fn catalog_run_in(dm: &DmClient, experiment: &str, run_uid: &str) -> dm::ExperimentRun {
    let run_id = dm::ExperimentRun::run_id_for_uid(run_uid);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let runs = dm.list_runs(experiment).await.expect("list runs");
        if let Some(run) = runs.into_iter().find(|r| r.run_id == run_id) {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} never reached the run catalog of {experiment}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every state the slot's `State` PV shows until a final one, as a monitor sees them.
pub fn watch_states(udp: u16, client: &HandshakeClient) -> tokio::task::JoinHandle<Vec<State>> {
    let config = pva::ClientConfig::isolated(([127, 0, 0, 1], udp).into());
    let name = client.pv_name("State");
    tokio::spawn(async move {
        let ctx = Context::new(config).expect("client");
        let mut monitor = ctx.monitor(&name).exec().expect("monitor");
        let mut states = Vec::new();
        while let Some(event) = monitor.recv().await {
            if let MonitorEvent::Update(update) = event {
                let index = update.value.get("value.index").and_then(|v| v.as_i64());
                let state = State::from_index(index.unwrap_or(-1) as i32).expect("a state");
                if states.last() != Some(&state) {
                    states.push(state);
                }
                if state.is_final() {
                    break;
                }
            }
        }
        states
    })
}

/// A DM stage's shell command: `steps` one after the other (`&&`), a step written
/// `workflow ARGS` being `pvabridge workflow ARGS` on the run's handshake prefix.
pub fn stage_command(steps: &[&str]) -> String {
    steps
        .iter()
        .map(|step| match step.strip_prefix("workflow ") {
            Some(args) => format!("pvabridge workflow {args} --handshake $handshakePrefix"),
            None => step.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" && ")
}

/// A workflow of one stage, 01-STREAM, that runs `steps` (see [`stage_command`]).
pub fn streaming_workflow(name: &str, steps: &[&str]) -> Workflow {
    workflow(name, &[("01-STREAM", &stage_command(steps))])
}

/// Start `request` on `slot`, wait for READY and put ACQ_STARTED: the run is acquiring.
pub async fn start_acquiring(slot: &HandshakeClient, request: &RunRequest) {
    slot.start(request).await.unwrap();
    assert_eq!(
        slot.wait_for_state(&[State::Ready], WAIT).await,
        Ok(State::Ready)
    );
    slot.command(Command::AcqStarted).await.unwrap();
}

/// The states a run that ends DONE goes through, in order, as its history records them.
pub const DONE_HISTORY: [&str; 7] = [
    "STARTING",
    "WAIT_READY",
    "READY",
    "ACQUIRING",
    "DRAINING",
    "PROCESSING",
    "DONE",
];

/// Run the Python peer `script` with `python` and `args`, searching the servers on `udp_ports`
/// (on loopback), bounded in time; whether it succeeded, and the JSON it printed.
pub async fn p4p_peer(
    python: &Path,
    script: &str,
    args: &[&str],
    udp_ports: &[u16],
) -> (bool, Value) {
    let mut cmd = Process::new(python);
    cmd.arg(super::peer_script(script)).args(args);
    super::loopback_env(&mut cmd, udp_ports[0]);
    let list: Vec<String> = udp_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    cmd.env("EPICS_PVA_ADDR_LIST", list.join(" "));
    let out = tokio::task::spawn_blocking(move || super::run_bounded(cmd, WAIT * 2))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "{script} printed {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), result)
}

/// [`start_acquiring`] for a test that reports rather than panics (on a thread of a network
/// namespace, say): READY within `wait`, or what went wrong.
pub async fn try_start_acquiring(
    slot: &HandshakeClient,
    request: &RunRequest,
    wait: Duration,
) -> Result<(), String> {
    slot.start(request).await.map_err(|e| e.to_string())?;
    let ready = slot.wait_for_state(&[State::Ready], wait).await;
    if ready != Ok(State::Ready) {
        return Err(format!("not READY: {ready:?}"));
    }
    slot.command(Command::AcqStarted)
        .await
        .map_err(|e| e.to_string())
}

/// [`try_start_acquiring`]'s other end: put ACQ_DONE and wait (at most `wait`) for a final
/// state; how that wait ended, and the frames received and missed then.
pub async fn try_finish(
    slot: &HandshakeClient,
    wait: Duration,
) -> Result<(Result<State, AgentError>, i64, i64), String> {
    slot.command(Command::AcqDone)
        .await
        .map_err(|e| e.to_string())?;
    let end = slot
        .wait_for_state(&[State::Done, State::Failed, State::Timeout], wait)
        .await;
    let status = slot.status().await.map_err(|e| e.to_string())?;
    Ok((end, status.frames_received, status.frames_missed))
}

/// A run request for `workflow` with Bluesky uid `run_uid`.
pub fn request(workflow: &str, run_uid: &str) -> RunRequest {
    let mut request = RunRequest::new(workflow);
    request.run_uid = Some(run_uid.into());
    request
}

/// Wait (at most `limit`) until `field` of PV `pv` reads `wanted`: how a plan waits for a
/// detector's acquisition to end.
pub async fn wait_for_value(
    ctx: &Context,
    pv: &str,
    field: &str,
    wanted: i64,
    limit: Duration,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let value = ctx
            .get(pv)
            .timeout(Duration::from_secs(10))
            .exec()
            .await
            .map_err(|e| format!("get {pv}: {e}"))?;
        if value.get(field).and_then(|v| v.as_i64()) == Some(wanted) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{pv} did not read {wanted} within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
