//! What a server refused or dropped, counted so that no loss goes unseen: a limit reached, a
//! write the access policy denied, a search past the rate limit, a connection closed for bad
//! input. Each refusal is also logged, one line per kind and second at most, so that a flood
//! cannot flood the log.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Shortest time between two log lines about the same kind of refusal.
const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A kind of refusal, named after the limit (or rule) that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A connection past `max_connections_per_host`.
    ConnectionsPerHost,
    /// A connection past `max_connections`.
    Connections,
    /// A channel past `max_channels` of its connection.
    Channels,
    /// An operation past `max_operations` of its connection.
    Operations,
    /// An operation past `max_operations_per_channel` of its channel.
    OperationsPerChannel,
    /// A search past `max_searches_per_second` of its source address.
    SearchRate,
    /// A put or RPC the access policy denied.
    Write,
}

impl Refusal {
    const COUNT: usize = 7;

    fn index(self) -> usize {
        self as usize
    }

    /// The name of the limit (`access` for the access policy), as the documentation and the
    /// log lines (field `refused_by`) spell it.
    pub fn limit_name(self) -> &'static str {
        match self {
            Refusal::ConnectionsPerHost => "max_connections_per_host",
            Refusal::Connections => "max_connections",
            Refusal::Channels => "max_channels",
            Refusal::Operations => "max_operations",
            Refusal::OperationsPerChannel => "max_operations_per_channel",
            Refusal::SearchRate => "max_searches_per_second",
            Refusal::Write => "access",
        }
    }
}

/// When the last log line of one kind went out, and how many refusals went unlogged since.
#[derive(Debug, Default, Clone, Copy)]
struct Report {
    last: Option<Instant>,
    unlogged: u64,
}

/// A server's counters, shared by its tasks.
#[derive(Debug, Default)]
pub struct ServerStats {
    refused: [AtomicU64; Refusal::COUNT],
    accepted: AtomicU64,
    open: AtomicU64,
    closed_for_bad_input: AtomicU64,
    reports: Mutex<[Report; Refusal::COUNT]>,
}

/// The counters of a server at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since the start.
    pub connections_accepted: u64,
    /// Connections refused by `max_connections_per_host`.
    pub refused_connections_per_host: u64,
    /// Connections refused by `max_connections`.
    pub refused_connections: u64,
    /// Channels refused by `max_channels`.
    pub refused_channels: u64,
    /// Operations refused by `max_operations`.
    pub refused_operations: u64,
    /// Operations refused by `max_operations_per_channel`.
    pub refused_operations_per_channel: u64,
    /// Searches dropped by `max_searches_per_second`.
    pub dropped_searches: u64,
    /// Puts and RPCs denied by the access policy.
    pub denied_writes: u64,
    /// Connections closed because the peer sent bytes that are not PVAccess or broke the
    /// protocol.
    pub closed_for_bad_input: u64,
}

impl StatsSnapshot {
    /// Everything refused, dropped, denied or closed for bad input, added up.
    pub fn total_refused(&self) -> u64 {
        self.refused_connections_per_host
            + self.refused_connections
            + self.refused_channels
            + self.refused_operations
            + self.refused_operations_per_channel
            + self.dropped_searches
            + self.denied_writes
            + self.closed_for_bad_input
    }
}

impl fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "connections {} open, {} accepted; refused: {} connections (per host), \
             {} connections (in all), {} channels, {} operations (per connection), \
             {} operations (per channel); {} searches dropped; {} writes denied; \
             {} connections closed for bad input",
            self.connections_open,
            self.connections_accepted,
            self.refused_connections_per_host,
            self.refused_connections,
            self.refused_channels,
            self.refused_operations,
            self.refused_operations_per_channel,
            self.dropped_searches,
            self.denied_writes,
            self.closed_for_bad_input,
        )
    }
}

impl ServerStats {
    /// Count one refusal of `kind` from `peer`, and log `why` unless a line about this kind
    /// went out less than a second ago (the next line then says how many went unlogged).
    pub fn refuse(&self, kind: Refusal, peer: SocketAddr, why: fmt::Arguments<'_>) {
        self.refused[kind.index()].fetch_add(1, Ordering::Relaxed);
        let unlogged = {
            let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
            let report = &mut reports[kind.index()];
            let now = Instant::now();
            match report.last {
                Some(last) if now.duration_since(last) < REPORT_INTERVAL => {
                    report.unlogged += 1;
                    return;
                }
                _ => {
                    report.last = Some(now);
                    std::mem::take(&mut report.unlogged)
                }
            }
        };
        let refused_by = kind.limit_name();
        if unlogged == 0 {
            tracing::warn!(%peer, refused_by, "{why}");
        } else {
            tracing::warn!(
                %peer,
                refused_by,
                "{why} ({unlogged} more of these since the last line)"
            );
        }
    }

    /// Count a connection accepted; it stays counted as open until [`ServerStats::closed`].
    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// Count a connection closed.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Count a connection closed because its peer sent bad input (the caller logs why).
    pub fn closed_for_bad_input(&self) {
        self.closed_for_bad_input.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let refused = |kind: Refusal| self.refused[kind.index()].load(Ordering::Relaxed);
        StatsSnapshot {
            connections_open: self.open.load(Ordering::Relaxed),
            connections_accepted: self.accepted.load(Ordering::Relaxed),
            refused_connections_per_host: refused(Refusal::ConnectionsPerHost),
            refused_connections: refused(Refusal::Connections),
            refused_channels: refused(Refusal::Channels),
            refused_operations: refused(Refusal::Operations),
            refused_operations_per_channel: refused(Refusal::OperationsPerChannel),
            dropped_searches: refused(Refusal::SearchRate),
            denied_writes: refused(Refusal::Write),
            closed_for_bad_input: self.closed_for_bad_input.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_counted_even_when_not_logged() {
        let stats = ServerStats::default();
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for _ in 0..5 {
            stats.refuse(Refusal::SearchRate, peer, format_args!("dropped"));
        }
        stats.refuse(Refusal::Write, peer, format_args!("denied"));
        let s = stats.snapshot();
        assert_eq!(s.dropped_searches, 5);
        assert_eq!(s.denied_writes, 1);
        assert_eq!(s.total_refused(), 6);
        // Four of the five searches fell within a second of the first line.
        let reports = stats.reports.lock().unwrap();
        assert_eq!(reports[Refusal::SearchRate.index()].unlogged, 4);
        assert_eq!(reports[Refusal::Write.index()].unlogged, 0);
    }

    #[test]
    fn open_connections_go_up_and_down() {
        let stats = ServerStats::default();
        stats.accepted();
        stats.accepted();
        stats.closed();
        let s = stats.snapshot();
        assert_eq!((s.connections_open, s.connections_accepted), (1, 2));
        assert!(s.to_string().starts_with("connections 1 open, 2 accepted"));
    }
}
