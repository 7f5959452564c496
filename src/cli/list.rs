//! `pvabridge list`: the servers that answer on the configured search addresses, like
//! `pvxlist` without arguments.

use std::process::ExitCode;

use clap::Args;
use serde_json::json;

use super::pvaclient::{run as run_client, ClientArgs};

/// Arguments of `list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Ask the servers to answer for the timeout (default 1 s here) and print them.
pub fn run(args: ListArgs) -> anyhow::Result<ExitCode> {
    run_client("list", |ctx| async move {
        let wait = match args.client.timeout {
            Some(_) => args.client.timeout(ctx.config())?,
            None => std::time::Duration::from_secs(1),
        };
        for (guid, addr) in ctx.discover(wait).await {
            let guid: String = guid.iter().map(|b| format!("{b:02x}")).collect();
            if args.client.json {
                println!("{}", json!({ "guid": guid, "address": addr.to_string() }));
            } else {
                println!("GUID 0x{guid} tcp@{addr}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
