//! `pvabridge get NAME...`: read PVs once, like `pvxget`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::format;
use super::pvaclient::{run as run_client, ClientArgs};

/// Arguments of `get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// PV names.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Read every PV and print it.
pub fn run(args: GetArgs) -> anyhow::Result<ExitCode> {
    run_client("get", |ctx| async move {
        let timeout = args.client.timeout(ctx.config())?;
        for name in &args.names {
            let mut op = ctx.get(name).timeout(timeout);
            if let Some(r) = &args.client.request {
                op = op.request(r.clone());
            }
            let v = op.await.map_err(|e| e.to_string())?;
            if args.client.json {
                println!(
                    "{}",
                    json!({ "name": name, "value": format::struct_json(&v) })
                );
            } else {
                println!("{name} {}", format::tree(&v));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
