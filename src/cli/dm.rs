//! `pvabridge dm-service` and `pvabridge dm ...`: the embedded DM processing service, and a
//! client mirroring the `dm-*` command-line tools of the DM distribution.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use dm::client::{read_login_file, LOGIN_FILE_ENV, URL_ENV};
use dm::{
    ClientConfig, DmClient, ExperimentRun, JobQuery, ProcessingJob, ServiceConfig, ServicePaths,
    Workflow,
};
use serde_json::{Map, Value};

use super::common::{positive_duration, runtime};

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

A workflow file (stages run in the order of their names; $var takes argsDict keys, id, owner and
the named groups captured by earlier stages):
  {"name": "example", "description": "capture a date, then use it",
   "stages": {"01-DATE": {"command": "date +today=%F", "outputVariableRegexList": ["today=(?P<today>.+)"]},
              "02-USE":  {"command": "echo $today $filePath"}}}

Examples:
  pvabridge dm add-workflow workflow.json
  pvabridge dm start-job --workflow-name example filePath:/data/scan1.h5 pvaPrefix:bdp:wf1:
  pvabridge dm get-job --id 5c0e...   (add --json for the whole job)
  pvabridge dm list-jobs --json
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
    /// Seconds one request may take.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration, global = true)]
    timeout: Duration,
    /// Print the service's JSON instead of one line per object.
    #[arg(long, global = true)]
    json: bool,
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
    /// Add a workflow from a JSON file (name, description, stages).
    AddWorkflow {
        /// The workflow JSON file.
        file: PathBuf,
        /// Replace the workflow if one of that name exists (so that a deployment can add it at
        /// every start).
        #[arg(long)]
        replace: bool,
    },
    /// Replace an existing workflow with the one in a JSON file.
    UpdateWorkflow {
        /// The workflow JSON file.
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
        /// Only jobs with this status (pending, running, done, failed, aborted).
        #[arg(long)]
        status: Option<String>,
        /// At most this many jobs.
        #[arg(long)]
        limit: Option<u64>,
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
            DmCommand::ListJobs { status, limit } => {
                let filter = status
                    .map(|status| Map::from_iter([("status".to_string(), Value::String(status))]));
                let query = JobQuery {
                    skip: None,
                    limit,
                    filter,
                };
                print_jobs(&client.list_jobs(&query).await?, Shown::list(json))
            }
            DmCommand::StopJob { id } => {
                print_jobs(&[client.stop_job(&id).await?], Shown::one(json))
            }
            DmCommand::ListRuns { experiment } => {
                print_runs(&client.list_runs(&experiment).await?, Shown::list(json))
            }
        }
    })?;
    Ok(ExitCode::SUCCESS)
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

fn read_workflow(path: &std::path::Path) -> anyhow::Result<Workflow> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a workflow (JSON with name and stages)",
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

fn print_jobs(jobs: &[ProcessingJob], shown: Shown) -> anyhow::Result<()> {
    if shown != Shown::Lines {
        return print_json(jobs, shown);
    }
    for job in jobs {
        emit(&format!(
            "id={} owner={} status={} stage={}",
            job.id,
            job.owner,
            job.status,
            job.stage.as_deref().unwrap_or("-")
        ))?;
        if let Some(message) = &job.error_message {
            emit(&format!("  errorMessage={message}"))?;
        }
    }
    Ok(())
}

fn print_runs(runs: &[ExperimentRun], shown: Shown) -> anyhow::Result<()> {
    if shown != Shown::Lines {
        return print_json(runs, shown);
    }
    for run in runs {
        let extra_text = |key: &str| {
            run.extra
                .get(key)
                .map(dm::model::value_as_text)
                .filter(|text| !text.is_empty() && text != "null")
                .unwrap_or_else(|| "-".into())
        };
        emit(&format!(
            "experiment={} run={} state={} job={}",
            run.experiment_name,
            run.run_name,
            extra_text("finalState"),
            extra_text("jobId")
        ))?;
    }
    Ok(())
}

fn print_workflows(workflows: &[Workflow], shown: Shown) -> anyhow::Result<()> {
    if shown != Shown::Lines {
        return print_json(workflows, shown);
    }
    for workflow in workflows {
        let stages: Vec<&str> = workflow.stages.keys().map(String::as_str).collect();
        emit(&format!(
            "name={} owner={} stages={}",
            workflow.name,
            workflow.owner,
            stages.join(",")
        ))?;
    }
    Ok(())
}
