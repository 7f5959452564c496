//! `pvabridge get NAME...`: read PVs once, like `pvxget`: every request at once, one deadline,
//! every result printed, exit 1 if any failed.

use std::process::ExitCode;

use clap::Args;

use super::pvaclient::{exit_code, joined, run as run_client, ReadArgs};

/// Arguments of `get`.
#[derive(Args, Debug)]
#[command(after_help = "\
Every PV is asked for at once; each value is printed as it is (in the order of the arguments),
each failure as one line on stderr. Exit status 1 if any PV failed within -w, 2 if interrupted.
Examples:
  pvabridge get bl:wf1:State bl:wf1:JobId -F nt
  pvabridge get bl:det:Image -# 10")]
pub struct GetArgs {
    /// PV names.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Read every PV and print what came.
pub fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    run_client("get", |ctx| async move {
        let timeout = args.read.timeout.get(ctx.config());
        let requests: Vec<_> = args
            .names
            .iter()
            .map(|name| {
                let mut op = ctx.get(name).timeout(timeout);
                if let Some(r) = &args.read.request.request {
                    op = op.request(r.clone());
                }
                tracing::debug!("get {name}: asking, deadline {timeout:?}");
                tokio::spawn(op.exec())
            })
            .collect();
        let mut all_ok = true;
        for (name, request) in args.names.iter().zip(requests) {
            match joined(request).await {
                Ok(value) => {
                    tracing::debug!("get {name}: answered");
                    println!("{}", args.read.output.render(name, &value, None));
                }
                Err(e) => {
                    all_ok = false;
                    eprintln!("pvabridge get: {name}: {e}");
                }
            }
        }
        Ok(exit_code(all_ok))
    })
}
