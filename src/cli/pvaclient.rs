//! What the client commands share: the pvxs-tool options, a runtime, a context, and the
//! one-line error report.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use pva::client::Context;
use pva::ClientConfig;

/// Options every client command takes.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Timeout in seconds (default 5; EPICS_PVA_CONN_TMO is the connection's echo timeout, not
    /// this).
    #[arg(short = 'w', long = "timeout", value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// pvRequest, e.g. 'field(value)'.
    #[arg(short = 'r', long = "request", value_name = "PVREQUEST")]
    pub request: Option<String>,
    /// Print more (the full structure; connection events).
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Print JSON, one object per line.
    #[arg(long)]
    pub json: bool,
}

impl ClientArgs {
    /// The timeout to use, checked.
    pub fn timeout(&self, config: &ClientConfig) -> Result<Duration, String> {
        match self.timeout {
            None => Ok(config.timeout),
            Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
            Some(s) => Err(format!(
                "-w {s}: the timeout must be a positive number of seconds"
            )),
        }
    }
}

/// Run `body` in a runtime with a context from the environment; errors become one line on
/// stderr (`pvabridge CMD: ...`) and a failing exit code.
pub fn run<F, Fut>(cmd: &str, body: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Context) -> Fut,
    Fut: std::future::Future<Output = Result<ExitCode, String>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let ctx = Context::from_env().map_err(|e| e.to_string())?;
        body(ctx).await
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
