//! `pvabridge info NAME...`: the server that has each PV and the PV's type, like `pvxinfo`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::format;
use super::pvaclient::{exit_code, joined, run as run_client, TimeoutArg};

/// Arguments of `info`.
#[derive(Args, Debug)]
#[command(after_help = "\
Prints `NAME from HOST:PORT` (the server that answered the search) and then the type, for every PV
at once; exit status 1 if any PV failed within -w, 2 if interrupted.")]
pub struct InfoArgs {
    /// PV names.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub timeout: TimeoutArg,
    /// Print JSON, one object per line.
    #[arg(long)]
    pub json: bool,
}

/// Find each PV's server, ask for its type, and print both.
pub fn run(args: InfoArgs) -> anyhow::Result<ExitCode> {
    run_client("info", |ctx| async move {
        let timeout = args.timeout.get(ctx.config());
        let requests: Vec<_> = args
            .names
            .iter()
            .map(|name| {
                let (ctx, name) = (ctx.clone(), name.clone());
                let asked = async move {
                    let server = ctx.resolve(&name).await;
                    let desc = ctx.info(&name).timeout(timeout).await;
                    desc.map(|desc| (server, desc)).map_err(|e| e.to_string())
                };
                tokio::spawn(async move {
                    tokio::time::timeout(timeout, asked)
                        .await
                        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
                })
            })
            .collect();
        let mut all_ok = true;
        for (name, request) in args.names.iter().zip(requests) {
            match joined(request).await {
                Ok((server, desc)) if args.json => println!(
                    "{}",
                    json!({ "name": name, "server": server.to_string(), "type": format::type_json(&desc) })
                ),
                Ok((server, desc)) => {
                    println!("{name} from {server}\n{}", format::type_tree(&desc));
                }
                Err(e) => {
                    all_ok = false;
                    eprintln!("pvabridge info: {name}: {e}");
                }
            }
        }
        Ok(exit_code(all_ok))
    })
}
