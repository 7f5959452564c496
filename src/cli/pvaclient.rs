//! What the client commands share: the pvxs-tool options (each command flattens only those it
//! uses), the context, the printing of values, and the exit codes (1 when anything failed, 2
//! when interrupted).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use pva::client::Context;
use pva::ClientConfig;
use pva_codec::{BitSet, StructValue};
use serde_json::json;

use super::common::{positive_duration, runtime, shutdown_signal};
use super::format;

/// The exit code of an interrupted command (Ctrl-C or SIGTERM), as the pvxs tools use.
pub const INTERRUPTED: u8 = 2;

/// The options of a command that reads and prints values (`get`, `call`): `-w`, `-r` and the
/// output format.
#[derive(Args, Debug)]
pub struct ReadArgs {
    #[command(flatten)]
    pub timeout: TimeoutArg,
    #[command(flatten)]
    pub request: RequestArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// `-w`: the one deadline of a command's requests.
#[derive(Args, Debug, Clone)]
pub struct TimeoutArg {
    /// How long the requests may take, all together (seconds, or 500ms, 30s, 1m; default
    /// 5 s: EPICS_PVA_CONN_TMO is the connection's echo timeout, not this).
    #[arg(short = 'w', long = "timeout", value_name = "DURATION", value_parser = positive_duration)]
    pub timeout: Option<Duration>,
}

impl TimeoutArg {
    /// The deadline to use: `-w`, else the library's operation timeout (5 s).
    pub fn get(&self, config: &ClientConfig) -> Duration {
        match self.timeout {
            Some(t) => t,
            None => config.timeout,
        }
    }
}

/// `-r`: a pvRequest.
#[derive(Args, Debug, Clone)]
pub struct RequestArg {
    /// pvRequest, e.g. 'field(value)'.
    #[arg(short = 'r', long = "request", value_name = "PVREQUEST")]
    pub request: Option<String>,
}

/// How values are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// The structure as an indented tree of types, names and values.
    #[default]
    Tree,
    /// One `NAME.field.path TYPE = VALUE` line per field (a monitor: per changed field).
    Delta,
    /// pvget's one line per value: `NAME TIMESTAMP VALUE` (normative types).
    Nt,
    /// One JSON object per line.
    Json,
}

/// `-F`, `--json` and `-#`.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Output format.
    #[arg(short = 'F', long = "format", value_enum, default_value_t)]
    pub format: Format,
    /// The same as -F json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Print at most this many elements of each array (0: all).
    #[arg(short = '#', long = "array-limit", value_name = "N", default_value_t = format::DEFAULT_ARRAY_LIMIT)]
    pub array_limit: usize,
}

impl OutputArgs {
    /// The format asked for.
    pub fn format(&self) -> Format {
        if self.json {
            Format::Json
        } else {
            self.format
        }
    }

    /// The value of PV `name` as printed (several lines but no final newline for tree and
    /// delta); `changed` restricts delta to a monitor update's fields.
    pub fn render(&self, name: &str, v: &StructValue, changed: Option<&BitSet>) -> String {
        match self.format() {
            Format::Json => json!({ "name": name, "value": format::struct_json(v) }).to_string(),
            Format::Delta => format::delta(name, v, changed, self.array_limit)
                .trim_end()
                .to_owned(),
            Format::Nt => format::nt(name, v, self.array_limit)
                .unwrap_or_else(|| format!("{name} {}", format::tree(v, self.array_limit))),
            Format::Tree => format!("{name} {}", format::tree(v, self.array_limit)),
        }
    }
}

/// The exit code of a command whose requests all succeeded (`true`) or not.
pub fn exit_code(all_ok: bool) -> ExitCode {
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The result of a request spawned as a task, its error (or the task's) as text.
pub async fn joined<T, E: std::fmt::Display>(
    task: tokio::task::JoinHandle<Result<T, E>>,
) -> Result<T, String> {
    match task.await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Run `body` in the runtime with a context from the environment; errors become one line on
/// stderr (`pvabridge CMD: ...`) and exit code 1, Ctrl-C or SIGTERM exit code 2.
pub fn run<F, Fut>(cmd: &str, body: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Context) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, String>>,
{
    let rt = runtime()?;
    let result = rt.block_on(async {
        let ctx = Context::from_env().map_err(|e| e.to_string())?;
        tokio::select! {
            result = body(ctx) => result,
            () = shutdown_signal() => Ok(ExitCode::from(INTERRUPTED)),
        }
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    Ok(match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pvabridge {cmd}: {e}");
            ExitCode::FAILURE
        }
    })
}
