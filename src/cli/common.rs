//! What every command shares: the global options (`-d`, `-v`, `--log-format`), the one logging
//! setup, the async runtime, the stop signal and the duration parser.

use std::num::NonZeroUsize;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// The crates whose debug lines `-d` turns on.
const OUR_CRATES: [&str; 6] = [
    "pvabridge",
    "pva",
    "pva_codec",
    "stream",
    "coordinator",
    "dm",
];

/// How log lines are written on stderr.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One line of text per event.
    #[default]
    Text,
    /// One JSON object per event (for log collectors of services).
    Json,
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Debug log lines of pvabridge's crates on stderr (RUST_LOG still adds its own filters).
    #[arg(short = 'd', long, global = true)]
    pub debug: bool,
    /// Print the effective EPICS PVAccess configuration on stderr first (and more where a
    /// command has more to say).
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,
    /// Log line format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "PVABRIDGE_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    pub log_format: LogFormat,
}

/// Set up logging on stderr: `RUST_LOG` when set (else `default_level`), plus debug for our
/// crates with `-d`; text or JSON lines.
pub fn init_logging(global: &GlobalArgs, default_level: &str) -> anyhow::Result<()> {
    let mut filter = EnvFilter::try_from_default_env().or_else(|_| {
        EnvFilter::try_new(default_level).context("the default log level is not a filter")
    })?;
    if global.debug {
        for krate in OUR_CRATES {
            filter = filter.add_directive(format!("{krate}=debug").parse()?);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let installed = match global.log_format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// The EPICS PVAccess configuration a client and a server of this process use, as
/// `NAME=value` lines (what pvxs tools print with `-v`).
pub fn effective_config() -> anyhow::Result<String> {
    let client = pva::ClientConfig::from_env()?;
    let server = pva::ServerConfig::from_env()?;
    let list = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let yes_no = |b: bool| if b { "YES" } else { "NO" };
    let interfaces = server
        .interfaces
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ");
    Ok([
        format!("EPICS_PVA_ADDR_LIST={}", list(&client.addr_list)),
        format!("EPICS_PVA_AUTO_ADDR_LIST={}", yes_no(client.auto_addr_list)),
        format!("EPICS_PVA_SERVER_PORT={}", client.server_port),
        format!("EPICS_PVA_BROADCAST_PORT={}", client.broadcast_port),
        format!("EPICS_PVA_NAME_SERVERS={}", list(&client.name_servers)),
        format!("EPICS_PVA_CONN_TMO={}", client.conn_timeout.as_secs_f64()),
        format!("EPICS_PVAS_INTF_ADDR_LIST={interfaces}"),
        format!("EPICS_PVAS_SERVER_PORT={}", server.tcp_port),
        format!("EPICS_PVAS_BROADCAST_PORT={}", server.udp_port),
        format!(
            "EPICS_PVAS_BEACON_ADDR_LIST={}",
            list(&server.beacon_destinations)
        ),
        format!(
            "EPICS_PVAS_AUTO_BEACON_ADDR_LIST={}",
            yes_no(server.auto_beacon)
        ),
    ]
    .join("\n"))
}

/// The runtime of most commands: multi-threaded (at least two workers), timers and I/O on.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism().map_or(2, NonZeroUsize::get);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(2))
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The runtime of a stream consumer: one thread for the connection and the receiving loop,
/// so that each update passes from one to the other in memory, without waking another
/// thread (processing runs on the consumer's own threads). Measured in BENCHMARKS.md.
pub fn consumer_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` and service managers send).
pub async fn shutdown_signal() {
    let terminated = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminated => {}
    }
}

/// A duration option: plain seconds (`2.5`) or a number with a unit (`250ms`, `30s`, `5m`,
/// `1h`); zero is allowed.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "'{text}' is not a duration (e.g. 2.5, 30s, 5m, 1h)"
        ));
    }
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "'{other}' is not a unit of time (use ms, s, m or h, e.g. 30s, 5m, 1h)"
            ))
        }
    };
    number
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|s| s.is_finite())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("'{text}' is not a duration (e.g. 2.5, 30s, 5m, 1h)"))
}

/// A duration option that must be more than zero.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        Duration::ZERO => Err("must be more than zero".into()),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_plain_seconds_and_units() {
        assert_eq!(duration("2.5"), Ok(Duration::from_millis(2500)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "-1", "5 days", "1e400", "nan"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert!(positive_duration("0s").is_err());
        assert_eq!(positive_duration("1m"), Ok(Duration::from_secs(60)));
    }
}
