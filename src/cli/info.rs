//! `pvabridge info NAME...`: print a PV's type, like `pvxinfo`.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::format;
use super::pvaclient::{run as run_client, ClientArgs};

/// Arguments of `info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// PV names.
    #[arg(required = true)]
    pub names: Vec<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Ask each PV's type and print it.
pub fn run(args: InfoArgs) -> anyhow::Result<ExitCode> {
    run_client("info", |ctx| async move {
        let timeout = args.client.timeout(ctx.config())?;
        for name in &args.names {
            let d = ctx
                .info(name)
                .timeout(timeout)
                .await
                .map_err(|e| e.to_string())?;
            if args.client.json {
                println!("{}", json!({ "name": name, "type": format::type_json(&d) }));
            } else {
                println!("{name} {}", format::type_tree(&d));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
