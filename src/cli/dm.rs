//! `pvabridge dm-service` and `pvabridge dm ...`: the embedded DM processing service, and a
//! client mirroring the `dm-*` command-line tools of the DM distribution.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::ValueEnum;
use clap::{Args, Subcommand};
use dm::client::{read_login_file, LOGIN_FILE_ENV, URL_ENV};
use dm::{
    ClientConfig, DmClient, JobQuery, JobStatus, ProcessingJob, ServiceConfig, ServicePaths,
    WatchEvent, WatchOptions, Workflow,
};
use serde_json::{Map, Value};

use super::common::{positive_duration, runtime};
use super::streaming::Progress;

/// Options of `pvabridge dm-service`.
#[derive(Args, Debug)]
#[command(after_help = "\
The service speaks the HTTP API of the APS DM processing web service under /dm, so the `pvabridge dm`
commands and the coordinator use it exactly as they use the facility's service. Point them at it with
  export DM_PROC_WEB_SERVICE_URL=http://127.0.0.1:22236
  export DM_LOGIN_FILE=/path/to/users   (its first line is the login)

Stages run as `sh -c` processes in DATA_DIR/jobs/<job id>/. Workflows, jobs and catalog runs are kept in
DATA_DIR/dm.sqlite3 and survive a restart; a job that was running when the service stopped is marked failed.")]
pub struct ServiceArgs {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:22236")]
    listen: SocketAddr,
    /// Directory for the database and the job working directories (created if missing).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// File of `username|password` lines: the users who may log in (DM_LOGIN_FILE format).
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
    /// The most jobs running at once; later jobs wait as `pending`.
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_running_jobs: usize,
}

/// What `pvabridge dm --help` teaches after the options.
const DM_AFTER_HELP: &str = r#"Connection: --url and --login-file, or DM_PROC_WEB_SERVICE_URL and DM_LOGIN_FILE as for the DM tools.

A workflow file, JSON or a Python dict as the DM tools write them (stages run in the order of their
names; $var takes argsDict keys, id, owner and the named groups captured by earlier stages):
  {'name': 'example', 'description': 'capture a date, then use it',   # a comment
   'stages': {'01-DATE': {'command': 'date +today=%F', 'outputVariableRegexList': [r'today=(?P<today>.+)']},
              '02-USE':  {'command': 'echo $today $filePath'},},}

Objects print as key=value lines; --display-keys picks the keys (ALL: every key), --display-format
json or pprint prints them as JSON, --json prints the service's whole objects.

Examples:
  pvabridge dm add-workflow workflow.py
  pvabridge dm start-job --workflow-name example filePath:/data/scan1.h5 pvaPrefix:bdp:wf1:
  pvabridge dm get-job --id 5c0e...   (add --json for the whole job)
  pvabridge dm watch-job --id 5c0e...   (follows the job's stages until it ends)
  pvabridge dm list-jobs status:running --display-keys id,stage,startTimestamp
  pvabridge dm list-runs --experiment pvabridge   (the runs pvabridge serve recorded)"#;

/// Options of `pvabridge dm`.
#[derive(Args, Debug)]
#[command(after_help = DM_AFTER_HELP)]
pub struct DmArgs {
    /// Base URL of the processing service.
    #[arg(long, env = URL_ENV, value_name = "URL", global = true)]
    url: Option<String>,
    /// File whose first line is `username|password`.
    #[arg(long, env = LOGIN_FILE_ENV, value_name = "FILE", global = true)]
    login_file: Option<PathBuf>,
    /// PEM file of the certificate authority to trust for https.
    #[arg(long, value_name = "PEM", global = true)]
    ca_file: Option<PathBuf>,
    /// Do not check the service's certificate (only for a test service you trust).
    #[arg(long, global = true)]
    insecure: bool,
    /// How long one request may take.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration, global = true)]
    timeout: Duration,
    /// Print the service's JSON instead of one line per object.
    #[arg(long, global = true)]
    json: bool,
    /// The keys to print, comma-separated, or ALL (default: the command's usual keys).
    #[arg(long, global = true, value_name = "KEYS", value_delimiter = ',')]
    display_keys: Vec<String>,
    /// How to print the keys.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    display_format: DisplayFormat,
    /// Path below /dm that stops a job ({owner}, {id} are filled in); DM does not publish it.
    #[arg(long, value_name = "TEMPLATE", global = true, default_value_t = ServicePaths::default().stop_job)]
    stop_job_path: String,
    /// Path below /dm that lists the runs of an experiment ({experiment} is filled in).
    #[arg(long, value_name = "TEMPLATE", global = true, default_value_t = ServicePaths::default().list_runs)]
    list_runs_path: String,
    #[command(subcommand)]
    command: DmCommand,
}

#[derive(Subcommand, Debug)]
enum DmCommand {
    /// List the workflows of the logged-in owner.
    ListWorkflows,
    /// Add a workflow from a file (name, description, stages), JSON or a Python dict.
    AddWorkflow {
        /// The workflow file.
        file: PathBuf,
        /// Replace the workflow if one of that name exists (so that a deployment can add it at
        /// every start).
        #[arg(long)]
        replace: bool,
    },
    /// Replace an existing workflow with the one in a file (JSON or a Python dict).
    UpdateWorkflow {
        /// The workflow file.
        file: PathBuf,
    },
    /// Start a processing job of a workflow; arguments are `key:value` argsDict entries.
    StartJob {
        /// The workflow to run.
        #[arg(long)]
        workflow_name: String,
        /// argsDict entries as `key:value` (the value is text; a job needs a file spec such as
        /// filePath:..., filePathList, filePathPattern or dataDir).
        #[arg(value_name = "KEY:VALUE")]
        args: Vec<String>,
    },
    /// Show one processing job.
    GetJob {
        /// The job id.
        #[arg(long)]
        id: String,
    },
    /// List processing jobs, newest first.
    ListJobs {
        /// Only jobs with these values, e.g. status:running workflow.name:example sample:lysozyme.
        #[arg(value_name = "KEY:VALUE")]
        filters: Vec<String>,
        /// Only jobs with this status (pending, running, done, failed, aborted).
        #[arg(long)]
        status: Option<String>,
        /// At most this many jobs.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Follow a processing job stage by stage until it ends (a progress bar on a terminal, a
    /// line per change otherwise); then print it. Exit status 0 when it is done, 1 otherwise.
    WatchJob {
        /// The job id.
        #[arg(long)]
        id: String,
        /// Time between polls.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = positive_duration)]
        period: std::time::Duration,
        /// The longest watch (the job goes on after it).
        #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = positive_duration)]
        max_wait: std::time::Duration,
    },
    /// Stop a processing job: its running stage is killed and it ends aborted.
    StopJob {
        /// The job id.
        #[arg(long)]
        id: String,
    },
    /// List the runs of an experiment in the run catalog (pvabridge serve adds one per run).
    ListRuns {
        /// The experiment.
        #[arg(long)]
        experiment: String,
    },
}

/// Run the embedded service until interrupted (Ctrl-C or SIGTERM).
pub fn run_service(args: ServiceArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let mut config = ServiceConfig::new(args.listen, args.data_dir, args.users);
        config.max_running_jobs = args.max_running_jobs;
        let service = dm::service::start(config).await?;
        emit(&format!("dm-service listening on {}", service.url()))?;
        let handle = service.shutdown_handle();
        tokio::spawn(async move {
            super::common::shutdown_signal().await;
            handle.shutdown();
        });
        service.wait().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Run one `pvabridge dm` command.
pub fn run(args: DmArgs) -> anyhow::Result<ExitCode> {
    let client = DmClient::new(client_config(&args)?)?;
    let json = args.json;
    let display = Display {
        keys: args.display_keys.clone(),
        format: args.display_format,
    };
    let print_workflows = |workflows: &[Workflow], shown| {
        display.show(workflows, &["name", "owner", "stages"], shown)
    };
    let print_jobs = |jobs: &[ProcessingJob], shown| display.show(jobs, JOB_KEYS, shown);
    runtime()?.block_on(async {
        match args.command {
            DmCommand::ListWorkflows => {
                print_workflows(&client.list_workflows().await?, Shown::list(json))
            }
            DmCommand::AddWorkflow { file, replace } => {
                let workflow = read_workflow(&file)?;
                let exists = replace && client.get_workflow(&workflow.name).await.is_ok();
                let added = if exists {
                    client.update_workflow(&workflow).await?
                } else {
                    client.add_workflow(&workflow).await?
                };
                print_workflows(&[added], Shown::one(json))
            }
            DmCommand::UpdateWorkflow { file } => {
                let updated = client.update_workflow(&read_workflow(&file)?).await?;
                print_workflows(&[updated], Shown::one(json))
            }
            DmCommand::StartJob {
                workflow_name,
                args,
            } => {
                let args_dict = parse_key_values(&args)?;
                print_jobs(
                    &[client.start_job(&workflow_name, &args_dict).await?],
                    Shown::one(json),
                )
            }
            DmCommand::GetJob { id } => print_jobs(&[client.get_job(&id).await?], Shown::one(json)),
            DmCommand::ListJobs {
                filters,
                status,
                limit,
            } => {
                let mut filter = parse_key_values(&filters)?;
                if let Some(status) = status {
                    filter.insert("status".to_string(), Value::String(status));
                }
                let query = JobQuery {
                    skip: None,
                    limit,
                    filter: (!filter.is_empty()).then_some(filter),
                };
                print_jobs(&client.list_jobs(&query).await?, Shown::list(json))
            }
            DmCommand::WatchJob {
                id,
                period,
                max_wait,
            } => {
                let job = watch_job(&client, &id, period, max_wait).await?;
                print_jobs(std::slice::from_ref(&job), Shown::one(json))?;
                return Ok(if job.status == JobStatus::Done {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            DmCommand::StopJob { id } => {
                print_jobs(&[client.stop_job(&id).await?], Shown::one(json))
            }
            DmCommand::ListRuns { experiment } => {
                let runs = client.list_runs(&experiment).await?;
                if display.keys.is_empty() {
                    print_runs(&runs, Shown::list(json))
                } else {
                    display.show(&runs, &["experimentName", "runId"], Shown::list(json))
                }
            }
        }?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The keys `get-job`, `list-jobs` and the other job commands print by default: who, where, and
/// the times, as the DM tools show them.
const JOB_KEYS: &[&str] = &[
    "id",
    "owner",
    "status",
    "stage",
    "submissionTimestamp",
    "startTimestamp",
    "endTimestamp",
    "runTime",
    "errorMessage",
];

/// Follow job `id` until it ends (or `max_wait` passes), showing its stage and status; the job
/// as last seen.
async fn watch_job(
    client: &DmClient,
    id: &str,
    period: std::time::Duration,
    max_wait: std::time::Duration,
) -> anyhow::Result<ProcessingJob> {
    let mut watch = client.watch(
        id,
        WatchOptions {
            period,
            timeout: max_wait,
        },
    );
    let mut progress: Option<Progress> = None;
    let mut last = None;
    while let Some(event) = watch.next().await {
        let job = match event {
            Ok(WatchEvent::Changed(job)) => job,
            Ok(WatchEvent::Unreachable(_)) => continue,
            Err(err) => {
                if let Some(progress) = &progress {
                    progress.finish();
                }
                return Err(err.into());
            }
        };
        let stages: Vec<&String> = job
            .workflow
            .as_ref()
            .map(|w| w.stages.keys().collect())
            .unwrap_or_default();
        let position = job
            .stage
            .as_ref()
            .and_then(|stage| stages.iter().position(|s| *s == stage))
            .map_or(0, |i| i + 1);
        let total = stages.len();
        let progress = progress
            .get_or_insert_with(|| Progress::new("dm watch-job", Some(total as u64), false));
        progress.update(
            position as u64,
            &format!(
                "{} stage {} ({position}/{total})",
                job.status,
                job.stage.as_deref().unwrap_or("-")
            ),
        );
        last = Some(job);
    }
    if let Some(progress) = &progress {
        progress.finish();
    }
    last.map(|job| *job)
        .ok_or_else(|| anyhow::anyhow!("job {id}: no answer"))
}

fn client_config(args: &DmArgs) -> anyhow::Result<ClientConfig> {
    let Some(url) = &args.url else {
        bail!("no DM service URL: pass --url or set {URL_ENV}");
    };
    let Some(login_file) = &args.login_file else {
        bail!("no DM login: pass --login-file or set {LOGIN_FILE_ENV} (a file with one line username|password)");
    };
    let (username, password) = read_login_file(login_file)?;
    let mut config = ClientConfig::new(url.clone(), username, password);
    config.ca_file = args.ca_file.clone();
    config.accept_invalid_certs = args.insecure;
    config.request_timeout = args.timeout;
    config.paths = ServicePaths {
        stop_job: args.stop_job_path.clone(),
        list_runs: args.list_runs_path.clone(),
        ..ServicePaths::default()
    };
    Ok(config)
}

/// A workflow file: JSON, or a Python dict literal as the DM tools' workflow files are.
fn read_workflow(path: &std::path::Path) -> anyhow::Result<Workflow> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value = match serde_json::from_str::<Value>(&text) {
        Ok(value) => value,
        Err(_) => super::pyliteral::parse(&text).map_err(|err| {
            anyhow::anyhow!(
                "{} is neither JSON nor a Python dict literal: {err}",
                path.display()
            )
        })?,
    };
    serde_json::from_value(value).with_context(|| {
        format!(
            "{} is not a workflow (a dict with name and stages)",
            path.display()
        )
    })
}

/// Turn `key:value` arguments into an argsDict; the value is everything after the first colon.
fn parse_key_values(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut args_dict = Map::new();
    for pair in pairs {
        match pair.split_once(':') {
            Some((key, value)) if !key.is_empty() => {
                args_dict.insert(key.to_string(), Value::String(value.to_string()));
            }
            _ => bail!("argument {pair:?} is not key:value (for example filePath:/data/scan1.h5)"),
        }
    }
    Ok(args_dict)
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// One `key=value` line per object.
    Lines,
    /// The one object's JSON.
    JsonObject,
    /// A JSON array, also for zero or one object.
    JsonArray,
}

impl Shown {
    fn one(json: bool) -> Self {
        if json {
            Shown::JsonObject
        } else {
            Shown::Lines
        }
    }

    fn list(json: bool) -> Self {
        if json {
            Shown::JsonArray
        } else {
            Shown::Lines
        }
    }
}

/// Print one line; a reader that went away (`| head`) ends the output quietly, not in a panic.
fn emit(line: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(err).context("cannot write to standard output")
        }
        _ => Ok(()),
    }
}

fn print_json<T: serde::Serialize>(objects: &[T], shown: Shown) -> anyhow::Result<()> {
    let text = match (shown, objects) {
        (Shown::JsonObject, [object]) => serde_json::to_string_pretty(object)?,
        _ => serde_json::to_string_pretty(objects)?,
    };
    emit(&text)
}

/// How `--display-format` prints the keys of an object.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
enum DisplayFormat {
    /// One line of `key=value` pairs per object.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
    /// Indented JSON per object.
    Pprint,
}

/// `--display-keys` and `--display-format`.
struct Display {
    /// The keys asked for (empty: the command's usual keys; `ALL`: every key).
    keys: Vec<String>,
    format: DisplayFormat,
}

impl Display {
    /// Print `objects`: the whole objects with --json, else the keys asked for (or
    /// `default_keys`) in the display format.
    fn show<T: serde::Serialize>(
        &self,
        objects: &[T],
        default_keys: &[&str],
        shown: Shown,
    ) -> anyhow::Result<()> {
        if shown != Shown::Lines {
            return print_json(objects, shown);
        }
        for object in objects {
            let Value::Object(all) = serde_json::to_value(object)? else {
                bail!("the service returned something other than an object");
            };
            let picked: Vec<(String, Value)> = if self.keys.iter().any(|k| k == "ALL") {
                all.into_iter().collect()
            } else if self.keys.is_empty() {
                pick(&all, default_keys.iter().copied())
            } else {
                pick(&all, self.keys.iter().map(String::as_str))
            };
            emit(&match self.format {
                DisplayFormat::Text => picked
                    .iter()
                    .map(|(key, value)| format!("{key}={}", display_text(value)))
                    .collect::<Vec<_>>()
                    .join(" "),
                DisplayFormat::Json => Value::Object(picked.into_iter().collect()).to_string(),
                DisplayFormat::Pprint => {
                    serde_json::to_string_pretty(&Value::Object(picked.into_iter().collect()))?
                }
            })?;
        }
        Ok(())
    }
}

fn print_runs(runs: &[dm::model::ExperimentRun], shown: Shown) -> anyhow::Result<()> {
    if shown != Shown::Lines {
        return print_json(runs, shown);
    }
    for run in runs {
        let handshake = run.metadata.get("handshake");
        let text = |key: &str| {
            handshake
                .and_then(|h| h.get(key))
                .map(dm::model::value_as_text)
                .filter(|text| !text.is_empty() && text != "null")
                .unwrap_or_else(|| "-".into())
        };
        let mut keys: Vec<&str> = run
            .metadata
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "handshake")
            .collect();
        keys.sort_unstable();
        emit(&format!(
            "experiment={} runId={} state={} job={} metadata={}",
            run.experiment_name,
            run.run_id,
            text("finalState"),
            text("jobId"),
            if keys.is_empty() {
                "-".to_string()
            } else {
                keys.join(",")
            }
        ))?;
    }
    Ok(())
}

/// The keys of `all` that are among `keys` and not empty, in the order of `keys`.
fn pick<'a>(all: &Map<String, Value>, keys: impl Iterator<Item = &'a str>) -> Vec<(String, Value)> {
    keys.filter_map(|key| {
        all.get(key)
            .filter(|v| !v.is_null())
            .map(|v| (key.to_owned(), v.clone()))
    })
    .collect()
}

/// A value in a `key=value` line: text bare, an object as its keys and a list as its items
/// (comma-separated), anything else as JSON.
fn display_text(value: &Value) -> String {
    match value {
        Value::Object(map) => map.keys().cloned().collect::<Vec<_>>().join(","),
        Value::Array(items) => items.iter().map(display_text).collect::<Vec<_>>().join(","),
        other => dm::model::value_as_text(other),
    }
}
