//! `pvabridge serve`: the coordinator. Serves the handshake PVs of each run slot and drives its
//! runs through DM (the facility's service, or the embedded one started in this process).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use coordinator::embedded::EmbeddedDm;
use coordinator::fields::access_rules;
use coordinator::{Bridge, BridgeConfig, MachineConfig, Timeouts};
use dm::client::{read_login_file, LOGIN_FILE_ENV, URL_ENV};
use dm::{ClientConfig, DmClient, ServicePaths};
use pva::server::AccessRules;
use serde_json::json;

use super::common::positive_duration;

/// Options of `pvabridge serve`.
#[derive(Args, Debug)]
#[command(after_help = "\
Each --prefix is one run slot with the PVs PREFIX State, Command, Request, Ready, Progress,
WorkflowMessage, WorkflowCommand, WorkflowPVs, Report (RPC), Members, Stages, Workflow, Owner, JobId,
JobStatus, StageId, RunTime, FramesExpected, FramesReceived, FramesMissed, Message, Heartbeat, Status
and PVI (ophyd-async: PviDeviceConnector on PREFIX PVI); docs/handshake.md says what each means.

A run: write the request JSON to Request, e.g.
  {\"workflow\": \"stream-stats\", \"argsDict\": {\"sample\": \"Si\"}, \"runUid\": \"...\",
   \"expectedFrames\": 100, \"dataChannel\": \"det:Image\", \"readyTimeout\": 30}
then put Command START, wait for State READY, put ACQ_STARTED, take data, put ACQ_DONE, and wait for
DONE, FAILED, ABORTED or TIMEOUT. The DM job gets the argsDict plus handshakePrefix, pvabridgeRunId,
dataChannel, expectedFrames, runUid, experimentName and a placeholder filePath; its stage reports with
`pvabridge workflow ready|progress|message|end-acquisition|fail --handshake $handshakePrefix`, or
runs `pvabridge workflow consume`, which reports its books on Report. When the run ends, it goes to
the DM run catalog as {experimentName, runId: uid_<first 8 of runUid>, metadata: the Request's
metadata and the handshake's record}.

The DM job is followed until it ends; with --processing-timeout the run goes to TIMEOUT once
PROCESSING lasts that long, and the job is left running (Message says how to follow it) unless
--stop-job-on-timeout is given.

DM: --dm-url and DM_LOGIN_FILE (or DM_PROC_WEB_SERVICE_URL), or --embedded-dm DIR to run the
embedded DM service in this process (its stages then end with it: for runs that survive a restart of
the bridge, run `pvabridge dm-service` apart and point --dm-url at it).
When DM fails (errors, answers slower than --dm-timeout, down), polls are retried (--dm-read-retries)
and Message says so while it lasts; an active run fails after --dm-lost-timeout without an answer.
A start is never sent twice: without a clear answer the bridge looks for the job by the run's id.

Access: --acquisition-user and --workflow-user give each side its PVs alone (Command and Request
for the acquisition account, Ready, Progress, WorkflowMessage, WorkflowCommand and Report for the
workflow's, matched on the
\"ca\" user a client sends); --access FILE reads rules of your own (docs/access.md). Without either,
any client may write them.

Each slot keeps its current run in STATE_DIR, so a restarted bridge follows the same DM job.
Ports come from EPICS_PVAS_SERVER_PORT / EPICS_PVA_SERVER_PORT and EPICS_PVA_BROADCAST_PORT.

Examples:
  pvabridge serve --prefix bdp:wf1: --embedded-dm /tmp/dm
  pvabridge serve --prefix bdp:wf1: --embedded-dm /tmp/dm --acquisition-user bluesky --workflow-user dmuser
  DM_LOGIN_FILE=~/.dm/login pvabridge serve --prefix bdp:wf1: --prefix bdp:wf2: --dm-url https://dmhost:22236")]
pub struct ServeArgs {
    /// PV prefix of a run slot, e.g. bdp:wf1: (repeat for several slots).
    #[arg(long = "prefix", value_name = "PREFIX", required = true)]
    prefixes: Vec<String>,
    /// URL of the DM processing service.
    #[arg(long, env = URL_ENV, value_name = "URL")]
    dm_url: Option<String>,
    /// File whose first line is `username|password` for DM.
    #[arg(long, env = LOGIN_FILE_ENV, value_name = "FILE")]
    dm_login_file: Option<PathBuf>,
    /// Run the embedded DM service in this process, with its data in DIR (a login is made in
    /// DIR/users); overrides --dm-url.
    #[arg(long, value_name = "DIR")]
    embedded_dm: Option<PathBuf>,
    /// Address of the embedded DM service (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    embedded_dm_listen: SocketAddr,
    /// The DM owner of workflows and jobs (default: the login name).
    #[arg(long, value_name = "NAME")]
    dm_owner: Option<String>,
    /// PEM file of the certificate authority to trust for https.
    #[arg(long, value_name = "PEM")]
    dm_ca_file: Option<PathBuf>,
    /// Path below /dm that stops a job ({owner}, {id} are filled in).
    #[arg(long, value_name = "TEMPLATE", default_value_t = ServicePaths::default().stop_job)]
    dm_stop_job_path: String,
    /// Path below /dm that adds a run to the run catalog ({experiment} is filled in).
    #[arg(long, value_name = "TEMPLATE", default_value_t = ServicePaths::default().add_run)]
    dm_add_run_path: String,
    /// URL of the DM run catalog service (default: the processing service's), with the same
    /// login.
    #[arg(long, value_name = "URL")]
    dm_catalog_url: Option<String>,
    /// Experiment of the run catalog for requests that name none.
    #[arg(long, value_name = "NAME", default_value = "pvabridge")]
    experiment: String,
    /// Directory of the slots' state files (default: DIR/bridge-state with --embedded-dm,
    /// else ./pvabridge-state).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How long one DM request may take before it counts as unanswered.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    dm_timeout: Duration,
    /// Times a DM read (a poll of the job) is tried again after a timeout, a broken connection
    /// or a server error, before the poll counts as unanswered; a start is never sent twice.
    #[arg(long, value_name = "N", default_value_t = 3)]
    dm_read_retries: u32,
    /// Time between polls of DM.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = positive_duration)]
    poll_period: Duration,
    /// Time for DM to start the job (STARTING).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    start_timeout: Duration,
    /// Time for the workflow's Ready (WAIT_READY), unless the request gives readyTimeout.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    ready_timeout: Duration,
    /// Time for ACQ_STARTED after READY.
    #[arg(long, value_name = "DURATION", default_value = "600s", value_parser = positive_duration)]
    arm_timeout: Duration,
    /// Time for ACQ_DONE after ACQ_STARTED.
    #[arg(long, value_name = "DURATION", default_value = "3600s", value_parser = positive_duration)]
    acquire_timeout: Duration,
    /// Time without new progress in DRAINING before the missing frames count as missed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    drain_idle_timeout: Duration,
    /// Time for the DM job to end after PROCESSING began (default: no limit, the job is
    /// followed until it ends). Reaching it ends the run in TIMEOUT and stops the following;
    /// the job runs on unless --stop-job-on-timeout.
    #[arg(long, value_name = "DURATION", value_parser = positive_duration)]
    processing_timeout: Option<Duration>,
    /// Time a consumer member may stay silent (no Report) from READY to the end of acquisition
    /// before it is named lost in Message; its unreported frames then count missed. Keep it a
    /// few of the members' --progress-period.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = positive_duration)]
    member_silence: Duration,
    /// Stop the DM job when --processing-timeout is reached.
    #[arg(long, requires = "processing_timeout")]
    stop_job_on_timeout: bool,
    /// How long DM may stay unreachable before an active run fails.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = positive_duration)]
    dm_lost_timeout: Duration,
    /// Time after a final state to wait for the job's final snapshot before the run goes to
    /// the catalog without it.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    finish_timeout: Duration,
    /// Only this account may write Command and Request (the "ca" user Bluesky runs as);
    /// with --workflow-user, the default access rules of every slot.
    #[arg(
        long,
        value_name = "USER",
        requires = "workflow_user",
        conflicts_with = "access"
    )]
    acquisition_user: Option<String>,
    /// Only this account may write Ready, Progress and WorkflowMessage (the DM stage's user).
    #[arg(long, value_name = "USER", requires = "acquisition_user")]
    workflow_user: Option<String>,
    /// An access rules file (TOML, see docs/access.md) instead of the default rules.
    #[arg(long, env = "PVABRIDGE_ACCESS", value_name = "FILE")]
    access: Option<PathBuf>,
    /// Print the startup report as one JSON object.
    #[arg(long)]
    json: bool,
}

impl ServeArgs {
    /// The access rules asked for, if any.
    fn access_rules(&self) -> anyhow::Result<Option<Arc<AccessRules>>> {
        let rules = match (&self.access, &self.acquisition_user, &self.workflow_user) {
            (Some(file), _, _) => AccessRules::load(file)?,
            (None, Some(acquisition), Some(workflow)) => {
                access_rules(&self.prefixes, acquisition, workflow)?
            }
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(rules)))
    }
}

impl ServeArgs {
    fn timeouts(&self) -> anyhow::Result<Timeouts> {
        Ok(Timeouts {
            start: self.start_timeout,
            ready: self.ready_timeout,
            arm: self.arm_timeout,
            acquire: self.acquire_timeout,
            drain_idle: self.drain_idle_timeout,
            processing: self.processing_timeout,
            dm_lost: self.dm_lost_timeout,
            finish: self.finish_timeout,
            member_silence: self.member_silence,
        })
    }

    fn paths(&self) -> ServicePaths {
        ServicePaths {
            stop_job: self.dm_stop_job_path.clone(),
            add_run: self.dm_add_run_path.clone(),
            ..ServicePaths::default()
        }
    }

    fn facility_config(&self) -> anyhow::Result<ClientConfig> {
        let Some(url) = &self.dm_url else {
            bail!("no DM service: pass --dm-url (or set {URL_ENV}), or --embedded-dm DIR");
        };
        let Some(login_file) = &self.dm_login_file else {
            bail!("no DM login: pass --dm-login-file or set {LOGIN_FILE_ENV} (a file with one line username|password)");
        };
        let (username, password) = read_login_file(login_file)?;
        let mut config = ClientConfig::new(url.clone(), username, password);
        config.ca_file = self.dm_ca_file.clone();
        Ok(config)
    }
}

/// Serve until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let machine = MachineConfig {
        timeouts: args.timeouts()?,
        experiment: args.experiment.clone(),
        stop_job_on_timeout: args.stop_job_on_timeout,
    };
    let poll_period = args.poll_period;
    let dm_timeout = args.dm_timeout;
    let access = args.access_rules()?;
    let pva_config = pva::ServerConfig::from_env()?;
    super::common::runtime()?.block_on(async move {
        let (embedded, mut dm_config) = match &args.embedded_dm {
            Some(dir) => {
                let service = EmbeddedDm::start(dir, args.embedded_dm_listen)
                    .await
                    .with_context(|| format!("cannot start the embedded DM service in {}", dir.display()))?;
                let config = service.client_config();
                (Some(service), config)
            }
            None => (None, args.facility_config()?),
        };
        dm_config.owner = args.dm_owner.clone();
        dm_config.paths = args.paths();
        dm_config.request_timeout = dm_timeout;
        dm_config.connect_timeout = dm_config.connect_timeout.min(dm_timeout);
        dm_config.read_retries = args.dm_read_retries;
        let catalog = match &args.dm_catalog_url {
            Some(url) => {
                let mut config = dm_config.clone();
                config.base_url = url.clone();
                Some(DmClient::new(config)?)
            }
            None => None,
        };
        let dm = DmClient::new(dm_config)?;
        let state_dir = match (&args.state_dir, &args.embedded_dm) {
            (Some(dir), _) => dir.clone(),
            (None, Some(dm_dir)) => dm_dir.join("bridge-state"),
            (None, None) => PathBuf::from("pvabridge-state"),
        };
        let mut config = BridgeConfig::new(args.prefixes.clone(), &state_dir);
        config.machine = machine;
        config.poll_period = poll_period;
        config.catalog = catalog;
        if access.is_none() {
            tracing::warn!(
                "no access rules (--acquisition-user/--workflow-user or --access): any client may \
                 write Command, Request, Ready, Progress and WorkflowMessage"
            );
        }
        config.access = access;
        let bridge = Bridge::start(config, dm.clone(), pva_config).await?;
        let login_file = embedded
            .as_ref()
            .map(|service| service.login_file().display().to_string());
        if args.json {
            println!(
                "{}",
                json!({
                    "event": "serving",
                    "prefixes": bridge.prefixes(),
                    "tcp": bridge.tcp_addr().to_string(),
                    "udp": bridge.udp_addr().to_string(),
                    "dmUrl": embedded.as_ref().map_or_else(|| dm.base_url().to_string(), |s| s.url()),
                    "dmLoginFile": login_file,
                    "stateDir": state_dir.display().to_string(),
                })
            );
        } else {
            if let Some(service) = &embedded {
                println!(
                    "pvabridge serve: embedded DM service at {} (DM_LOGIN_FILE={})",
                    service.url(),
                    service.login_file().display()
                );
            }
            println!(
                "pvabridge serve: serving {} on TCP {} and UDP {}; DM at {}; state in {}",
                bridge.prefixes().join(" "),
                bridge.tcp_addr(),
                bridge.udp_addr(),
                dm.base_url(),
                state_dir.display()
            );
        }
        super::common::shutdown_signal().await;
        tracing::info!("stopping");
        bridge.stop().await;
        if let Some(service) = embedded {
            service.shutdown().await;
        }
        Ok(ExitCode::SUCCESS)
    })
}
