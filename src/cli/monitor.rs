//! `pvabridge monitor NAME...`: print every update, like `pvxmonitor`.

use std::process::ExitCode;

use clap::Args;
use pva::client::MonitorEvent;
use serde_json::json;
use tokio::sync::mpsc;

use super::format;
use super::pvaclient::{run as run_client, ClientArgs};

/// Arguments of `monitor`.
#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// PV names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Exit after this many updates (all PVs together).
    #[arg(short = 'n', long = "count")]
    pub count: Option<u64>,
    /// Flow control with acks (record[pipeline=true]).
    #[arg(long)]
    pub pipeline: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

fn print(name: &str, ev: &MonitorEvent, json_out: bool, verbose: bool) {
    match (ev, json_out) {
        (MonitorEvent::Update(u), true) => println!(
            "{}",
            json!({
                "name": name,
                "event": "update",
                "value": format::struct_json(&u.value),
                "changed": u.changed.iter().collect::<Vec<_>>(),
                "overrun": u.overrun.iter().collect::<Vec<_>>(),
            })
        ),
        (MonitorEvent::Update(u), false) => println!("{name} {}", format::tree(&u.value)),
        (MonitorEvent::Connected, true) => {
            println!("{}", json!({"name": name, "event": "connected"}))
        }
        (MonitorEvent::Disconnected, true) => {
            println!("{}", json!({"name": name, "event": "disconnected"}))
        }
        (MonitorEvent::Connected, false) if verbose => println!("{name} <Connected>"),
        (MonitorEvent::Disconnected, false) => println!("{name} <Disconnected>"),
        _ => {}
    }
}

/// Subscribe to every PV and print events until interrupted, finished, or `--count` updates.
pub fn run(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    run_client("monitor", |ctx| async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for name in &args.names {
            let mut op = ctx.monitor(name).pipeline(args.pipeline);
            if let Some(r) = &args.client.request {
                op = op.request(r.clone());
            }
            let mut mon = op.exec().map_err(|e| e.to_string())?;
            let tx = tx.clone();
            let name = name.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(ev) = mon.recv().await {
                    if tx.send((name.clone(), ev)).is_err() {
                        return;
                    }
                }
            }));
        }
        drop(tx);
        let mut updates = 0u64;
        let mut finished = 0usize;
        loop {
            let ev = tokio::select! {
                ev = rx.recv() => ev,
                _ = tokio::signal::ctrl_c() => break,
            };
            let Some((name, ev)) = ev else { break };
            print(&name, &ev, args.client.json, args.client.verbose);
            match ev {
                MonitorEvent::Update(_) => {
                    updates += 1;
                    if args.count.is_some_and(|n| updates >= n) {
                        break;
                    }
                }
                MonitorEvent::Finished(Err(e)) => return Err(e.to_string()),
                MonitorEvent::Finished(Ok(())) => {
                    finished += 1;
                    if finished == args.names.len() {
                        break;
                    }
                }
                _ => {}
            }
        }
        for t in tasks {
            t.abort();
        }
        Ok(ExitCode::SUCCESS)
    })
}
