//! `pvabridge list [SERVER]...`, like `pvxlist`: without arguments, the servers that answer on
//! the configured search addresses; with servers, the PV names each one serves, asked through
//! the RPC channel `server` (`op=channels`) that pvxs servers and ours answer.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use pva::client::Context;
use pva_codec::Value;
use serde_json::json;

use super::call::nturi;
use super::common::duration;
use super::pvaclient::{exit_code, run as run_client};

/// How long one search round waits for answers (`-w 0`).
const ONE_PASS: Duration = Duration::from_millis(200);

/// Arguments of `list`.
#[derive(Args, Debug)]
#[command(after_help = "\
Without SERVER, lists the servers that answer searches within -w (default 5 s; 0: one search
round), one HOST:PORT per line (with -v, followed by its GUID), which `list` takes back as SERVER.
With SERVER, lists the PV names each server serves.
Examples:
  pvabridge list                      # which servers are there?
  pvabridge list -w 1 | xargs pvabridge list   # and which PVs does each have?
  pvabridge list 10.0.0.5:5075        # which PVs does this server have?
  pvabridge list 0x5e1c9a...          # the same, naming the server by its GUID (list -v)
  pvabridge list --info 10.0.0.5      # its implementation and version")]
pub struct ListArgs {
    /// Servers to ask for their PV names: HOST[:PORT] (default port EPICS_PVA_SERVER_PORT,
    /// else 5075), or a server GUID as `pvabridge list` prints it (0x and 24 hex digits).
    #[arg(value_name = "SERVER")]
    pub servers: Vec<String>,
    /// Ask each server for its implementation and version instead of its PV names.
    #[arg(short = 'i', long)]
    pub info: bool,
    /// How long to wait for answers (seconds, or 500ms, 5s; 0: one search round).
    #[arg(short = 'w', long = "timeout", value_name = "DURATION", value_parser = duration, default_value = "5s")]
    pub timeout: Duration,
    /// Print JSON, one object per line.
    #[arg(long)]
    pub json: bool,
}

impl ListArgs {
    /// The wait: -w, with 0 meaning one search round.
    fn wait(&self) -> Duration {
        if self.timeout.is_zero() {
            ONE_PASS
        } else {
            self.timeout
        }
    }
}

/// List the servers, or the PV names of the servers given; `verbose` (-v) adds GUIDs and
/// headers.
pub fn run(args: ListArgs, verbose: bool) -> anyhow::Result<ExitCode> {
    run_client("list", |ctx| async move {
        if args.servers.is_empty() {
            if args.info {
                return Err("--info needs at least one SERVER".into());
            }
            return Ok(discover(&ctx, &args, verbose).await);
        }
        let timeout = args.wait();
        let mut failed = false;
        for server in &args.servers {
            let answer = async {
                let addr = server_address(&ctx, server, timeout).await?;
                let reply = ask(&ctx, addr, args.info, timeout).await?;
                Ok::<_, String>((addr, reply))
            };
            match answer
                .await
                .and_then(|(addr, reply)| print_reply(server, addr, &reply, &args, verbose))
            {
                Ok(()) => {}
                Err(e) => {
                    eprintln!("pvabridge list: {server}: {e}");
                    failed = true;
                }
            }
        }
        Ok(exit_code(!failed))
    })
}

/// Ask the servers to answer for -w and print them.
async fn discover(ctx: &Context, args: &ListArgs, verbose: bool) -> ExitCode {
    for (guid, addr) in ctx.discover(args.wait()).await {
        let guid = guid_text(&guid);
        if args.json {
            println!("{}", json!({ "guid": guid, "address": addr.to_string() }));
        } else if verbose {
            println!("{addr} 0x{guid}");
        } else {
            println!("{addr}");
        }
    }
    ExitCode::SUCCESS
}

fn guid_text(guid: &[u8; 12]) -> String {
    guid.iter().map(|b| format!("{b:02x}")).collect()
}

/// The 24 hex digits of a GUID argument (`0x` optional), or `None` if it is not one.
fn parse_guid(text: &str) -> Option<String> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    (digits.len() == 24 && digits.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| digits.to_ascii_lowercase())
}

/// The TCP address of a SERVER argument: a GUID is looked up among the servers answering a
/// search within `timeout`; anything else is HOST[:PORT].
async fn server_address(
    ctx: &Context,
    server: &str,
    timeout: Duration,
) -> Result<SocketAddr, String> {
    if let Some(guid) = parse_guid(server) {
        return ctx
            .discover(timeout)
            .await
            .into_iter()
            .find(|(g, _)| guid_text(g) == guid)
            .map(|(_, addr)| addr)
            .ok_or_else(|| {
                format!(
                    "no server with this GUID answered within {}s",
                    timeout.as_secs_f64()
                )
            });
    }
    let port = ctx.config().server_port;
    pva::config::parse_addr_list("address", server, port)
        .map_err(|e| e.problem)?
        .into_iter()
        .next()
        .ok_or_else(|| "an empty server address".to_owned())
}

/// Call the `server` channel of `addr` with `op=channels` (or `op=info`).
async fn ask(
    ctx: &Context,
    addr: SocketAddr,
    info: bool,
    timeout: Duration,
) -> Result<Value, String> {
    let op = if info { "op=info" } else { "op=channels" };
    let arg = nturi(
        pva::server::server_channel::SERVER_CHANNEL,
        &[op.to_owned()],
    )?;
    ctx.rpc(pva::server::server_channel::SERVER_CHANNEL, arg)
        .server(addr)
        .timeout(timeout)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the server returned nothing".to_owned())
}

/// Print a server's answer, or say why it is not one.
fn print_reply(
    server: &str,
    addr: SocketAddr,
    reply: &Value,
    args: &ListArgs,
    verbose: bool,
) -> Result<(), String> {
    let text = |path: &str| {
        reply
            .as_struct()
            .and_then(|s| s.get(path))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if args.info {
        let (version, lang) = (text("version"), text("implLang"));
        if args.json {
            println!(
                "{}",
                json!({ "server": server, "address": addr.to_string(), "version": version, "implLang": lang })
            );
        } else {
            println!("{server} version=\"{version}\" lang=\"{lang}\"");
        }
        return Ok(());
    }
    let names: Vec<String> = match reply.as_struct().and_then(|s| s.get("value")) {
        Some(Value::Array(pva_codec::ScalarArray::String(names))) => names.clone(),
        _ => return Err("the reply holds no list of PV names".into()),
    };
    if args.json {
        println!(
            "{}",
            json!({ "server": server, "address": addr.to_string(), "channels": names })
        );
    } else {
        if verbose {
            println!("# From {server}");
        }
        for name in names {
            println!("{name}");
        }
    }
    Ok(())
}
