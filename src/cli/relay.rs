//! `pvabridge relay`: serve an upstream stream again to many consumers, or distribute it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use pva::client::Context;
use pva::server::{Server, StaticSource};
use pva::ServerConfig;
use stream::codec::Codec;
use stream::relay::{relay_transcoding, RelayConfig, RelayReport, Transcode};

use super::common::{duration, positive_duration, runtime, shutdown_signal};
use super::streaming::Progress;

/// Relay a stream to many consumers.
#[derive(Args, Debug)]
#[command(after_help = "\
Every consumer of the relayed PV has its own bounded queue (its monitor's queueSize): a slow
consumer loses frames without slowing the others, and the relay counts, per consumer, the frames
it dropped (printed at the end, with --json as \"consumers\": [{\"dropped\": N, ...}]).

--distribute N hands successive frames to N consumers in turn (each frame to one), like pvapy's
data distributor; it starts once N consumers are subscribed (then goes on among those still
subscribed). Those consumers account with
`pvabridge consume --stride N`.

Frames are not copied: the pixel bytes received upstream are what every consumer is sent.

--codec lz4|bslz4|blosc compresses an uncompressed upstream once for all consumers, laid out as
areaDetector's codec plugin does (frames already compressed pass as they are); --decompress
serves decompressed frames to consumers that cannot decompress (a frame that does not decompress
is not relayed, and is counted in transcode_errors).
The relay runs until the upstream ends, --runtime, or Ctrl-C / SIGTERM; then it prints its summary.

Examples:
  pvabridge relay --from 13SIM1:Pva1:Image --as bl:Image
  pvabridge relay --from sim:det:Image --as sim:dist --distribute 4 --json
  pvabridge relay --from 13SIM1:Pva1:Image --as bl:Image:bslz4 --codec bslz4
Use EPICS_PVAS_BROADCAST_PORT / EPICS_PVAS_SERVER_PORT to serve on other ports than the client
searches (EPICS_PVA_ADDR_LIST, EPICS_PVA_BROADCAST_PORT) when both run on one host.")]
pub struct RelayArgs {
    /// The upstream PV.
    #[arg(long)]
    from: String,
    /// The name to serve it under.
    #[arg(long = "as", value_name = "NAME")]
    as_name: String,
    /// Distribute over N consumers: each frame to one of them, in turn.
    #[arg(long, value_name = "N")]
    distribute: Option<usize>,
    /// Upstream monitor queue size.
    #[arg(long, default_value_t = 64)]
    queue_size: u32,
    /// Compress frames with this codec (lz4, bslz4, blosc) once for all consumers.
    #[arg(long, value_name = "NAME", conflicts_with = "decompress")]
    codec: Option<Codec>,
    /// Compression level, 0-9 (Blosc only; 0 stores the data as is).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u8).range(0..=9))]
    codec_level: u8,
    /// Serve frames decompressed.
    #[arg(long)]
    decompress: bool,
    /// Stop after this long (seconds, or 30s, 5m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = duration)]
    runtime: Option<Duration>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Time between progress lines when not on a terminal.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = positive_duration)]
    report_period: Duration,
    /// No progress output.
    #[arg(short, long)]
    quiet: bool,
}

fn print_text(r: &RelayReport) {
    let u = &r.upstream;
    println!(
        "relayed {} frames from {} as {} in {:.3} s; upstream: {} received, {} missed{}",
        r.relayed,
        r.from,
        r.served_as,
        r.elapsed_s,
        u.received,
        u.missed,
        if r.undelivered > 0 {
            format!("; {} found no consumer", r.undelivered)
        } else {
            String::new()
        }
    );
    if r.transcode_errors > 0 {
        println!(
            "{} frame(s) could not be decompressed and were not relayed",
            r.transcode_errors
        );
    }
    for c in &r.consumers {
        println!(
            "consumer {} ({}): {} posted, {} dropped{}",
            c.id,
            c.peer.map_or("-".into(), |p| p.to_string()),
            c.posted,
            c.dropped,
            if c.open { "" } else { ", left" }
        );
    }
}

/// Relay until the upstream ends, the runtime, or Ctrl-C / SIGTERM.
pub fn run(args: RelayArgs) -> anyhow::Result<ExitCode> {
    if args.distribute == Some(0) {
        bail!("--distribute 0: distribute over at least 1 consumer");
    }
    if args.from == args.as_name {
        bail!(
            "--from and --as are both '{}': serve it under another name",
            args.from
        );
    }
    let runtime_limit = args.runtime;
    let report_every = args.report_period;
    let config = RelayConfig {
        from: args.from.clone(),
        as_name: args.as_name.clone(),
        distribute: args.distribute,
        upstream_queue: args.queue_size.max(1),
    };
    let server_config = ServerConfig::from_env()?;
    let report = runtime()?.block_on(async {
        let ctx = Context::from_env()?;
        let source = Arc::new(StaticSource::new());
        let server = Server::start(server_config, vec![source.clone()]).await?;
        eprintln!(
            "pvabridge relay: serving {} (from {}) on TCP {} and UDP {}",
            args.as_name,
            args.from,
            server.tcp_addr(),
            server.udp_addr()
        );
        let stop = async {
            match runtime_limit {
                Some(limit) => {
                    tokio::select! {
                        _ = shutdown_signal() => {}
                        _ = tokio::time::sleep(limit) => {}
                    }
                }
                None => shutdown_signal().await,
            }
        };
        let progress = Progress::new("relay", None, args.quiet);
        let transcode = match (args.codec, args.decompress) {
            (Some(codec), _) => Transcode::Compress(codec, args.codec_level),
            (None, true) => Transcode::Decompress,
            (None, false) => Transcode::None,
        };
        let report = relay_transcoding(&ctx, source, &config, transcode, report_every, stop, |p| {
            progress.update(
                p.relayed,
                &format!(
                    "{} relayed, {} consumers, {} dropped for them, upstream {} missed",
                    p.relayed, p.consumers, p.dropped, p.upstream.missed
                ),
            )
        })
        .await;
        progress.finish();
        server.stop().await;
        anyhow::Ok(report?)
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_text(&report);
    }
    Ok(ExitCode::SUCCESS)
}
