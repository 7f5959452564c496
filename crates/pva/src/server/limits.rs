//! The limits a server holds its peers to, and the two sans-I/O gates that enforce the ones
//! shared between connections: [`ConnectionGate`] (connections per client host and in all)
//! and [`SearchLimiter`] (UDP searches answered per second and source address).
//!
//! | limit | default | reached |
//! | --- | --- | --- |
//! | [`Limits::max_message_size`] | 64 MiB | the connection is closed, one log line |
//! | [`ServerLimits::max_connections`] | 1000 | the new connection is closed, one log line |
//! | [`ServerLimits::max_connections_per_host`] | 100 | the new connection is closed, one log line |
//! | [`ServerLimits::max_searches_per_second`] | 200 | searches from that address go unanswered |
//! | [`ConnLimits::max_channels`] | 1024 | create-channel answers an error status |
//! | [`ConnLimits::max_operations`] | 4096 | the operation's create answers an error status |
//! | [`ConnLimits::max_operations_per_channel`] | 256 | the operation's create answers an error status |
//! | [`ConnLimits::max_queue_size`] | 1024 | a monitor asking for more gets this many |
//! | [`ConnLimits::max_queue_bytes`] | 64 MiB | a monitor's newer updates squash into its newest |
//!
//! Every refusal is counted in the server's [`StatsSnapshot`](super::StatsSnapshot).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pva_codec::Limits;

pub use super::proto::ConnLimits;
use super::stats::Refusal;

/// Every limit of a server. Each is an error to the peer that reaches it alone: the others go
/// on being served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Decoding limits: the largest message (after reassembly of segments), the deepest type
    /// nesting and the size of a connection's type cache. A peer past them is disconnected.
    pub decode: Limits,
    /// What one connection may hold: channels, operations (per connection and per channel),
    /// and the largest monitor queue it may ask for.
    pub connection: ConnLimits,
    /// Connections open at once, from all hosts. The default stays under the usual limit of
    /// 1024 open files per process.
    pub max_connections: usize,
    /// Connections open at once from one client IP address.
    pub max_connections_per_host: usize,
    /// UDP searches answered per second for one source IP address, with bursts of up to one
    /// second's worth. Past it, searches from that address are dropped and counted; other
    /// addresses are answered as before. (A client with 10,000 PVs sends about 200 searches
    /// when it starts, 50 names to a datagram.)
    pub max_searches_per_second: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            decode: Limits::default(),
            connection: ConnLimits::default(),
            max_connections: 1000,
            max_connections_per_host: 100,
            max_searches_per_second: 200,
        }
    }
}

#[derive(Debug, Default)]
struct GateState {
    total: usize,
    per_host: HashMap<IpAddr, usize>,
}

/// Counts the connections open, per client host and in all, and admits new ones while both
/// stay within their limits.
#[derive(Debug, Clone)]
pub struct ConnectionGate {
    state: Arc<Mutex<GateState>>,
    max_total: usize,
    max_per_host: usize,
}

/// A connection admitted by a [`ConnectionGate`]; dropping it frees its place.
#[derive(Debug)]
pub struct ConnectionPermit {
    state: Arc<Mutex<GateState>>,
    host: IpAddr,
}

impl ConnectionGate {
    /// A gate admitting `max_total` connections in all and `max_per_host` from one address.
    pub fn new(max_total: usize, max_per_host: usize) -> Self {
        ConnectionGate {
            state: Arc::default(),
            max_total,
            max_per_host,
        }
    }

    /// Admit a connection from `host`, or say which limit it would pass. The per-host limit
    /// is checked first, so that a host flooding the server is told so.
    pub fn admit(&self, host: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let from_host = st.per_host.get(&host).copied().unwrap_or(0);
        if from_host >= self.max_per_host {
            return Err(Refusal::ConnectionsPerHost);
        }
        if st.total >= self.max_total {
            return Err(Refusal::Connections);
        }
        st.total += 1;
        *st.per_host.entry(host).or_default() += 1;
        Ok(ConnectionPermit {
            state: self.state.clone(),
            host,
        })
    }

    /// Connections admitted and still open: (in all, from `host`).
    pub fn open(&self, host: IpAddr) -> (usize, usize) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (st.total, st.per_host.get(&host).copied().unwrap_or(0))
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.total -= 1;
        if let Some(n) = st.per_host.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                st.per_host.remove(&self.host);
            }
        }
    }
}

/// Most source addresses whose search rate is tracked at once. When a new address comes and
/// the table is full, it is emptied (every address starts again with a full bucket), so that a
/// flood from many addresses can neither grow memory nor cost more than O(1) per search.
const MAX_TRACKED_SOURCES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A token bucket per source address: each answered search takes a token, tokens come back
/// at `per_second`, and an address may save up one second's worth.
#[derive(Debug)]
pub struct SearchLimiter {
    per_second: f64,
    burst: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

impl SearchLimiter {
    /// Answer up to `per_second` searches per second from each source address (none at 0).
    pub fn new(per_second: u32) -> Self {
        SearchLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(per_second),
            buckets: HashMap::new(),
        }
    }

    /// Should a search from `from`, arriving at `now`, be answered?
    pub fn allow(&mut self, from: IpAddr, now: Instant) -> bool {
        if self.burst < 1.0 {
            return false;
        }
        if self.buckets.len() >= MAX_TRACKED_SOURCES && !self.buckets.contains_key(&from) {
            self.buckets.clear();
        }
        let burst = self.burst;
        let bucket = self.buckets.entry(from).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Number of source addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + n))
    }

    #[test]
    fn the_gate_refuses_per_host_first_then_in_all_and_frees_on_drop() {
        let gate = ConnectionGate::new(3, 2);
        let a1 = gate.admit(ip(1)).unwrap();
        let _a2 = gate.admit(ip(1)).unwrap();
        assert_eq!(gate.admit(ip(1)).unwrap_err(), Refusal::ConnectionsPerHost);
        let _b1 = gate.admit(ip(2)).unwrap();
        assert_eq!(gate.admit(ip(3)).unwrap_err(), Refusal::Connections);
        // A host at its own limit hears about that limit even when the server is full.
        assert_eq!(gate.admit(ip(1)).unwrap_err(), Refusal::ConnectionsPerHost);
        drop(a1);
        assert_eq!(gate.open(ip(1)), (2, 1));
        let _c1 = gate.admit(ip(3)).unwrap();
        assert_eq!(gate.open(ip(3)), (3, 1));
    }

    #[test]
    fn a_flooding_address_is_cut_to_its_rate_and_others_are_not() {
        let mut limiter = SearchLimiter::new(10);
        let t0 = Instant::now();
        let answered = (0..1000).filter(|_| limiter.allow(ip(1), t0)).count();
        assert_eq!(answered, 10, "one second's worth as a burst");
        assert!(
            limiter.allow(ip(2), t0),
            "another address has its own budget"
        );
        // Half a second later, five more tokens have come back.
        let t1 = t0 + Duration::from_millis(500);
        let answered = (0..1000).filter(|_| limiter.allow(ip(1), t1)).count();
        assert_eq!(answered, 5);
        // Tokens never pile up past one second's worth.
        let t2 = t1 + Duration::from_secs(60);
        let answered = (0..1000).filter(|_| limiter.allow(ip(1), t2)).count();
        assert_eq!(answered, 10);
    }

    #[test]
    fn a_zero_rate_answers_nothing() {
        let mut limiter = SearchLimiter::new(0);
        let t0 = Instant::now();
        assert!(!limiter.allow(ip(1), t0));
        assert!(!limiter.allow(ip(1), t0 + Duration::from_secs(10)));
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_from_many_addresses() {
        let mut limiter = SearchLimiter::new(5);
        let t0 = Instant::now();
        for n in 0..3 * MAX_TRACKED_SOURCES as u32 {
            limiter.allow(ip(n), t0);
        }
        assert!(limiter.tracked() <= MAX_TRACKED_SOURCES);
    }
}
