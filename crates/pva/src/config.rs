//! Configuration from the EPICS_PVA_* environment, like pvxs, plus isolated loopback settings
//! for tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Default TCP port of PVA servers.
pub const DEFAULT_SERVER_PORT: u16 = 5075;
/// Default UDP port for searches and beacons.
pub const DEFAULT_BROADCAST_PORT: u16 = 5076;

/// Why a configuration value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    /// The variable.
    pub var: String,
    /// What is wrong with it.
    pub problem: String,
}

/// Default time limit of one client operation (search, connect and the operation), as in the
/// pvxs tools; EPICS_PVA_CONN_TMO does not change it.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(5);
/// Default EPICS_PVA_CONN_TMO: how long a connection may stay silent before it is given up.
pub const DEFAULT_CONN_TMO: Duration = Duration::from_secs(30);
/// The local multicast group PVA servers on one host forward unicast searches to.
pub const LOCAL_MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 128);

/// Where and how a client searches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Unicast, broadcast or multicast addresses searches go to (EPICS_PVA_ADDR_LIST).
    pub addr_list: Vec<SocketAddr>,
    /// Also search the broadcast address of every interface that is up and can broadcast
    /// (EPICS_PVA_AUTO_ADDR_LIST).
    pub auto_addr_list: bool,
    /// The local interfaces searches and beacons use (EPICS_PVA_INTF_ADDR_LIST): the automatic
    /// list takes only their broadcast addresses, and multicast searches leave through the
    /// first; empty means all.
    pub interfaces: Vec<Ipv4Addr>,
    /// Default TCP port of servers (EPICS_PVA_SERVER_PORT).
    pub server_port: u16,
    /// UDP port searches go to (EPICS_PVA_BROADCAST_PORT).
    pub broadcast_port: u16,
    /// Servers searched over TCP (EPICS_PVA_NAME_SERVERS).
    pub name_servers: Vec<SocketAddr>,
    /// Default time limit of one operation ([`DEFAULT_OP_TIMEOUT`]).
    pub timeout: Duration,
    /// The connection's inactivity timeout (EPICS_PVA_CONN_TMO): echoes go out at half of it,
    /// and a server silent for longer is given up.
    pub conn_timeout: Duration,
}

/// Where a server listens and beacons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Interfaces to bind (EPICS_PVAS_INTF_ADDR_LIST); empty means all.
    pub interfaces: Vec<IpAddr>,
    /// TCP port (EPICS_PVAS_SERVER_PORT / EPICS_PVA_SERVER_PORT); 0 picks a free one.
    pub tcp_port: u16,
    /// UDP port for searches (EPICS_PVAS_BROADCAST_PORT / EPICS_PVA_BROADCAST_PORT); 0 picks one.
    pub udp_port: u16,
    /// Where beacons go (EPICS_PVAS_BEACON_ADDR_LIST / EPICS_PVA_ADDR_LIST).
    pub beacon_destinations: Vec<SocketAddr>,
    /// Also beacon to the broadcast address of every interface served that is up and can
    /// broadcast (EPICS_PVAS_AUTO_BEACON_ADDR_LIST / EPICS_PVA_AUTO_ADDR_LIST).
    pub auto_beacon: bool,
    /// Send beacons at all (off in isolated mode).
    pub beacons: bool,
    /// Searches from these addresses are not answered (EPICS_PVAS_IGNORE_ADDR_LIST).
    pub ignore_addrs: Vec<IpAddr>,
    /// Close connections silent for this long (echo keeps clients alive).
    pub idle_timeout: Duration,
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn first(env: Lookup, names: &[&str]) -> Option<(String, String)> {
    names.iter().find_map(|n| {
        env(n)
            .filter(|v| !v.trim().is_empty())
            .map(|v| (n.to_string(), v))
    })
}

fn parse_port(env: Lookup, names: &[&str], default: u16) -> Result<u16, ConfigError> {
    match first(env, names) {
        None => Ok(default),
        Some((var, v)) => v.trim().parse().map_err(|_| ConfigError {
            var,
            problem: format!("'{v}' is not a port number"),
        }),
    }
}

fn parse_bool(env: Lookup, names: &[&str], default: bool) -> Result<bool, ConfigError> {
    match first(env, names) {
        None => Ok(default),
        Some((var, v)) => match v.trim().to_ascii_uppercase().as_str() {
            "YES" | "Y" | "TRUE" | "1" => Ok(true),
            "NO" | "N" | "FALSE" | "0" => Ok(false),
            _ => Err(ConfigError {
                var,
                problem: format!("'{v}' is not YES or NO"),
            }),
        },
    }
}

/// Parse a whitespace-separated list of `host[:port]` entries, with `port` as default. IPv6
/// addresses are refused (PVA over IPv6 is not supported), naming the entry.
pub fn parse_addr_list(var: &str, text: &str, port: u16) -> Result<Vec<SocketAddr>, ConfigError> {
    text.split_whitespace()
        .map(|entry| {
            let error = |problem: String| ConfigError {
                var: var.into(),
                problem,
            };
            let addr = if let Ok(sa) = entry.parse::<SocketAddr>() {
                sa
            } else if let Ok(ip) = entry.parse::<IpAddr>() {
                SocketAddr::new(ip, port)
            } else {
                let (host, p) = entry.rsplit_once(':').unwrap_or((entry, ""));
                let p = if p.is_empty() {
                    port
                } else {
                    p.parse()
                        .map_err(|_| error(format!("bad port in '{entry}'")))?
                };
                let ip = if host == "localhost" {
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                } else {
                    use std::net::ToSocketAddrs;
                    (host, p)
                        .to_socket_addrs()
                        .ok()
                        .and_then(|mut a| a.find(SocketAddr::is_ipv4))
                        .map(|a| a.ip())
                        .ok_or_else(|| {
                            error(format!("cannot resolve '{host}' to an IPv4 address"))
                        })?
                };
                SocketAddr::new(ip, p)
            };
            if addr.is_ipv6() {
                return Err(error(format!(
                    "'{entry}' is an IPv6 address; only IPv4 is supported"
                )));
            }
            Ok(addr)
        })
        .collect()
}

/// Parse a list of IPv4 interface addresses (no ports).
fn parse_interfaces(env: Lookup, names: &[&str]) -> Result<Vec<IpAddr>, ConfigError> {
    Ok(addr_list(env, names, 0)?
        .into_iter()
        .map(|a| a.ip())
        .collect())
}

fn parse_seconds(env: Lookup, names: &[&str], default: Duration) -> Result<Duration, ConfigError> {
    match first(env, names) {
        None => Ok(default),
        Some((var, v)) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| ConfigError {
                var,
                problem: format!("'{v}' is not a positive number of seconds"),
            }),
    }
}

fn addr_list(env: Lookup, names: &[&str], port: u16) -> Result<Vec<SocketAddr>, ConfigError> {
    match first(env, names) {
        None => Ok(Vec::new()),
        Some((var, v)) => parse_addr_list(&var, &v, port),
    }
}

impl ClientConfig {
    /// Read the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Read variables through `env` (for tests that must not touch the process environment).
    pub fn from_lookup(env: Lookup) -> Result<Self, ConfigError> {
        let server_port = parse_port(env, &["EPICS_PVA_SERVER_PORT"], DEFAULT_SERVER_PORT)?;
        let broadcast_port =
            parse_port(env, &["EPICS_PVA_BROADCAST_PORT"], DEFAULT_BROADCAST_PORT)?;
        let interfaces = parse_interfaces(env, &["EPICS_PVA_INTF_ADDR_LIST"])?
            .into_iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        Ok(ClientConfig {
            addr_list: addr_list(env, &["EPICS_PVA_ADDR_LIST"], broadcast_port)?,
            auto_addr_list: parse_bool(env, &["EPICS_PVA_AUTO_ADDR_LIST"], true)?,
            interfaces,
            server_port,
            broadcast_port,
            name_servers: addr_list(env, &["EPICS_PVA_NAME_SERVERS"], server_port)?,
            timeout: DEFAULT_OP_TIMEOUT,
            conn_timeout: parse_seconds(env, &["EPICS_PVA_CONN_TMO"], DEFAULT_CONN_TMO)?,
        })
    }

    /// Where searches go now: the address list, then (with the automatic list) the broadcast
    /// address of every interface in `up` that can broadcast, limited to the configured
    /// interfaces, without repeats.
    pub fn search_destinations(&self, up: &[crate::interfaces::Interface]) -> Vec<SocketAddr> {
        let mut out = self.addr_list.clone();
        if self.auto_addr_list {
            for b in crate::interfaces::broadcast_addresses(up, &self.interfaces) {
                let dest = SocketAddr::new(b.into(), self.broadcast_port);
                if !out.contains(&dest) {
                    out.push(dest);
                }
            }
        }
        out
    }

    /// A client that searches only the given isolated server's UDP port on loopback.
    pub fn isolated(server_udp: SocketAddr) -> Self {
        ClientConfig {
            addr_list: vec![server_udp],
            auto_addr_list: false,
            interfaces: Vec::new(),
            server_port: DEFAULT_SERVER_PORT,
            broadcast_port: server_udp.port(),
            name_servers: Vec::new(),
            timeout: DEFAULT_OP_TIMEOUT,
            conn_timeout: DEFAULT_CONN_TMO,
        }
    }
}

impl ServerConfig {
    /// Read the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(&|k| std::env::var(k).ok())
    }

    /// Read variables through `env`.
    pub fn from_lookup(env: Lookup) -> Result<Self, ConfigError> {
        let udp_port = parse_port(
            env,
            &["EPICS_PVAS_BROADCAST_PORT", "EPICS_PVA_BROADCAST_PORT"],
            DEFAULT_BROADCAST_PORT,
        )?;
        let interfaces = parse_interfaces(env, &["EPICS_PVAS_INTF_ADDR_LIST"])?;
        Ok(ServerConfig {
            interfaces,
            tcp_port: parse_port(
                env,
                &["EPICS_PVAS_SERVER_PORT", "EPICS_PVA_SERVER_PORT"],
                DEFAULT_SERVER_PORT,
            )?,
            udp_port,
            beacon_destinations: addr_list(
                env,
                &["EPICS_PVAS_BEACON_ADDR_LIST", "EPICS_PVA_ADDR_LIST"],
                udp_port,
            )?,
            auto_beacon: parse_bool(
                env,
                &[
                    "EPICS_PVAS_AUTO_BEACON_ADDR_LIST",
                    "EPICS_PVA_AUTO_ADDR_LIST",
                ],
                true,
            )?,
            beacons: true,
            ignore_addrs: parse_interfaces(env, &["EPICS_PVAS_IGNORE_ADDR_LIST"])?,
            idle_timeout: Duration::from_secs(40),
        })
    }

    /// Loopback only, free ports, no beacons: every test gets a server of its own.
    pub fn isolated() -> Self {
        ServerConfig {
            interfaces: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            tcp_port: 0,
            udp_port: 0,
            beacon_destinations: Vec::new(),
            auto_beacon: false,
            beacons: false,
            ignore_addrs: Vec::new(),
            idle_timeout: Duration::from_secs(40),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn client_reads_the_pvxs_variables() {
        let env = lookup(&[
            ("EPICS_PVA_ADDR_LIST", "127.0.0.1 10.0.0.255:6000"),
            ("EPICS_PVA_AUTO_ADDR_LIST", "NO"),
            ("EPICS_PVA_BROADCAST_PORT", "15076"),
            ("EPICS_PVA_NAME_SERVERS", "127.0.0.1:15075"),
            ("EPICS_PVA_CONN_TMO", "2.5"),
        ]);
        let c = ClientConfig::from_lookup(&env).unwrap();
        assert_eq!(
            c.addr_list,
            vec![
                "127.0.0.1:15076".parse().unwrap(),
                "10.0.0.255:6000".parse().unwrap()
            ]
        );
        assert!(!c.auto_addr_list);
        assert_eq!(c.name_servers, vec!["127.0.0.1:15075".parse().unwrap()]);
        assert_eq!(c.conn_timeout, Duration::from_millis(2500));
        assert_eq!(
            c.timeout, DEFAULT_OP_TIMEOUT,
            "CONN_TMO is not an operation timeout"
        );
    }

    #[test]
    fn server_prefers_pvas_variables() {
        let env = lookup(&[
            ("EPICS_PVA_SERVER_PORT", "1"),
            ("EPICS_PVAS_SERVER_PORT", "2"),
            ("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1"),
        ]);
        let s = ServerConfig::from_lookup(&env).unwrap();
        assert_eq!(s.tcp_port, 2);
        assert_eq!(s.interfaces, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let env = lookup(&[("EPICS_PVA_AUTO_ADDR_LIST", "maybe")]);
        let e = ClientConfig::from_lookup(&env).unwrap_err();
        assert_eq!(e.var, "EPICS_PVA_AUTO_ADDR_LIST");
    }

    #[test]
    fn ipv6_entries_are_refused_by_name() {
        for (var, text) in [
            ("EPICS_PVA_ADDR_LIST", "127.0.0.1 ::1"),
            ("EPICS_PVA_NAME_SERVERS", "[fe80::1]:5075"),
            ("EPICS_PVA_INTF_ADDR_LIST", "::"),
        ] {
            let env = lookup(&[(var, text)]);
            let e = ClientConfig::from_lookup(&env).unwrap_err();
            assert_eq!(e.var, var);
            assert!(e.problem.contains("IPv6"), "{e}");
        }
        let env = lookup(&[("EPICS_PVAS_IGNORE_ADDR_LIST", "10.0.0.1 ::2")]);
        let e = ServerConfig::from_lookup(&env).unwrap_err();
        assert!(e.to_string().contains("'::2' is an IPv6 address"), "{e}");
    }

    #[test]
    fn automatic_list_adds_interface_broadcasts_not_the_limited_broadcast() {
        use crate::interfaces::Interface;
        let up = [
            Interface {
                address: Ipv4Addr::LOCALHOST,
                broadcast: None,
                loopback: true,
            },
            Interface {
                address: Ipv4Addr::new(10, 9, 1, 2),
                broadcast: Some(Ipv4Addr::new(10, 9, 1, 255)),
                loopback: false,
            },
        ];
        let c =
            ClientConfig::from_lookup(&lookup(&[("EPICS_PVA_ADDR_LIST", "224.0.0.129")])).unwrap();
        assert_eq!(
            c.search_destinations(&up),
            vec![
                "224.0.0.129:5076".parse().unwrap(),
                "10.9.1.255:5076".parse().unwrap()
            ]
        );
        let env = lookup(&[("EPICS_PVA_INTF_ADDR_LIST", "127.0.0.1")]);
        assert!(ClientConfig::from_lookup(&env)
            .unwrap()
            .search_destinations(&up)
            .is_empty());
    }
}
