//! The server limits as command-line options (each also read from a `PVABRIDGE_*` variable),
//! shared by the subcommands that serve PVs.

use clap::Args;
use pva::server::{ConnLimits, ServerLimits};

fn defaults() -> ServerLimits {
    ServerLimits::default()
}

/// Limits every client of the server is held to; see docs/limits.md.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Limits (a peer past one is refused alone; see docs/limits.md)")]
pub struct LimitArgs {
    /// Largest message a client may send, in bytes; a larger one closes its connection.
    #[arg(long, env = "PVABRIDGE_MAX_MESSAGE_SIZE", value_name = "BYTES",
          default_value_t = defaults().decode.max_message_size as u64,
          value_parser = clap::value_parser!(u64).range(1024..))]
    max_message_size: u64,

    /// Connections open at once, from all hosts.
    #[arg(long, env = "PVABRIDGE_MAX_CONNECTIONS", value_name = "N",
          default_value_t = defaults().max_connections as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,

    /// Connections open at once from one client IP address.
    #[arg(long, env = "PVABRIDGE_MAX_CONNECTIONS_PER_HOST", value_name = "N",
          default_value_t = defaults().max_connections_per_host as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_host: u64,

    /// Channels one connection may open.
    #[arg(long, env = "PVABRIDGE_MAX_CHANNELS", value_name = "N",
          default_value_t = defaults().connection.max_channels as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_channels: u64,

    /// Operations (get, put, monitor, rpc) one connection may hold at once.
    #[arg(long, env = "PVABRIDGE_MAX_OPERATIONS", value_name = "N",
          default_value_t = defaults().connection.max_operations as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_operations: u64,

    /// Operations one connection may hold at once on one channel.
    #[arg(long, env = "PVABRIDGE_MAX_OPERATIONS_PER_CHANNEL", value_name = "N",
          default_value_t = defaults().connection.max_operations_per_channel as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_operations_per_channel: u64,

    /// Largest monitor queue a client may ask for (record[queueSize=N]); more is cut to this.
    #[arg(long, env = "PVABRIDGE_MAX_QUEUE_SIZE", value_name = "N",
          default_value_t = defaults().connection.max_queue_size as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_queue_size: u64,

    /// Most bytes of array data one monitor's queue may hold; past it, newer updates squash
    /// into the newest (counted as missed by the client), so frames stay bounded in memory.
    #[arg(long, env = "PVABRIDGE_MAX_QUEUE_BYTES", value_name = "BYTES",
          default_value_t = defaults().connection.max_queue_bytes as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_queue_bytes: u64,

    /// UDP searches answered per second for one source address (0: answer none); past it,
    /// that address's searches are dropped and counted.
    #[arg(long, env = "PVABRIDGE_MAX_SEARCHES_PER_SECOND", value_name = "N",
          default_value_t = defaults().max_searches_per_second)]
    max_searches_per_second: u32,
}

/// A count given on the command line, as the server takes it (saturating on 32-bit hosts).
fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl LimitArgs {
    /// The limits these options give.
    pub fn limits(&self) -> ServerLimits {
        let d = defaults();
        ServerLimits {
            decode: pva_codec::Limits {
                max_message_size: count(self.max_message_size),
                ..d.decode
            },
            connection: ConnLimits {
                max_channels: count(self.max_channels),
                max_operations: count(self.max_operations),
                max_operations_per_channel: count(self.max_operations_per_channel),
                max_queue_size: count(self.max_queue_size),
                max_queue_bytes: count(self.max_queue_bytes),
            },
            max_connections: count(self.max_connections),
            max_connections_per_host: count(self.max_connections_per_host),
            max_searches_per_second: self.max_searches_per_second,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitArgs,
    }

    #[test]
    fn no_options_give_the_library_defaults() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.limits.limits(), ServerLimits::default());
    }

    #[test]
    fn options_set_each_limit_and_zero_counts_are_refused() {
        let cli = Cli::try_parse_from([
            "x",
            "--max-connections-per-host",
            "3",
            "--max-operations-per-channel",
            "5",
            "--max-searches-per-second",
            "0",
            "--max-message-size",
            "65536",
        ])
        .unwrap();
        let l = cli.limits.limits();
        assert_eq!(l.max_connections_per_host, 3);
        assert_eq!(l.connection.max_operations_per_channel, 5);
        assert_eq!(l.max_searches_per_second, 0);
        assert_eq!(l.decode.max_message_size, 65536);
        assert_eq!(l.max_connections, ServerLimits::default().max_connections);
        let e = Cli::try_parse_from(["x", "--max-channels", "0"])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--max-channels"), "{e}");
    }
}
