//! `pvabridge monitor NAME...`: print every update, like `pvxmonitor`: the data on stdout,
//! connection events on stderr.

use std::process::ExitCode;

use clap::Args;
use pva::client::MonitorEvent;
use tokio::sync::mpsc;

use super::pvaclient::{run as run_client, OutputArgs, RequestArg};

/// Arguments of `monitor`.
#[derive(Args, Debug)]
#[command(after_help = "\
Updates go to stdout; `NAME <Connected>` and `NAME <Disconnected>` go to stderr, and the monitor
subscribes again by itself when the server comes back. Runs until interrupted (exit status 2),
until -n updates (0), or until every subscription ended (0; 1 if the server refused one).")]
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
    pub request: RequestArg,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Subscribe to every PV and print events until interrupted, finished, or `--count` updates.
pub fn run(args: MonitorArgs) -> anyhow::Result<ExitCode> {
    run_client("monitor", |ctx| async move {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for name in &args.names {
            let mut op = ctx.monitor(name).pipeline(args.pipeline);
            if let Some(r) = &args.request.request {
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
        let mut refused = false;
        while let Some((name, ev)) = rx.recv().await {
            match ev {
                MonitorEvent::Update(u) => {
                    println!("{}", args.output.render(&name, &u.value, Some(&u.changed)));
                    updates += 1;
                    if args.count.is_some_and(|n| updates >= n) {
                        break;
                    }
                }
                MonitorEvent::Connected => eprintln!("{name} <Connected>"),
                MonitorEvent::Disconnected => eprintln!("{name} <Disconnected>"),
                MonitorEvent::Finished(result) => {
                    if let Err(e) = result {
                        eprintln!("pvabridge monitor: {name}: {e}");
                        refused = true;
                    } else {
                        eprintln!("{name} <Finished>");
                    }
                    finished += 1;
                    if finished == args.names.len() {
                        break;
                    }
                }
            }
        }
        for t in tasks {
            t.abort();
        }
        Ok(super::pvaclient::exit_code(!refused))
    })
}
