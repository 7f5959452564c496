//! PVAccess server, serving channels from [`Source`]s within [`ServerLimits`] and, when given
//! one, an [`AccessPolicy`] deciding who may write what.
//!
//! [`proto`] holds the protocol logic of a connection as a sans-I/O state machine, in the
//! client's shape; the rest is a thin tokio layer: a TCP listener with one task per connection
//! (`conn`), a UDP search responder and beacons.

pub mod access;
mod conn;
pub mod distributor;
pub mod limits;
pub mod proto;
pub mod select;
pub mod server_channel;
pub mod shared_pv;
pub mod source;
pub mod stats;
pub mod subscription;
mod udp;
mod wake;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pva_codec::Guid;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{self, ServerConfig};
pub use access::{writer_rules, AccessDenied, AccessError, AccessPolicy, AccessRules, WriteKind};
pub use limits::ServerLimits;
pub use proto::ConnLimits;
pub use shared_pv::{
    Attachment, ConnectHook, PutHandler, PutRequest, RpcHandler, SharedPv, SharedPvBuilder,
};
pub use source::{PeerInfo, Source, StaticSource};
pub use stats::{ServerStats, StatsSnapshot};
pub use subscription::{SubscribeOptions, SubscriberStats, Subscription};
pub use wake::Wakeup;

/// How often beacons go out.
const BEACON_PERIOD: Duration = Duration::from_secs(15);

/// How long the accept loop waits after a failed accept (out of file descriptors, say) before
/// trying again, so that a persistent failure does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// A running server. Dropping it (or calling [`Server::stop`]) stops every task.
pub struct Server {
    /// One TCP address per interface, the first interface's first.
    tcp: Vec<SocketAddr>,
    /// One UDP address per interface, in the same order.
    udp: Vec<SocketAddr>,
    stats: Arc<ServerStats>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// How a server treats its peers beyond where it listens: its limits and its access policy.
/// `ServerOptions::default()` is what [`Server::start`] uses.
///
/// ```no_run
/// # async fn demo(sources: Vec<std::sync::Arc<dyn pva::server::Source>>) -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use pva::server::{writer_rules, Server, ServerLimits, ServerOptions};
/// let options = ServerOptions {
///     limits: ServerLimits { max_connections_per_host: 16, ..ServerLimits::default() },
///     access: Some(Arc::new(writer_rules(
///         &["bdp:wf1:"],
///         &[("acquisition", "bluesky", &["Command", "Request"])],
///     )?)),
/// };
/// let server = Server::start_with(pva::ServerConfig::from_env()?, sources, options).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// The limits every peer is held to.
    pub limits: ServerLimits,
    /// Asked before every put and RPC on a channel of the sources; `None` leaves the decision
    /// to each PV (a [`SharedPv`] is writable or not, and its put handler may refuse).
    pub access: Option<Arc<dyn AccessPolicy>>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("limits", &self.limits)
            .field("access", &self.access.is_some())
            .finish()
    }
}

/// What every connection of a server shares.
struct Shared {
    sources: Vec<Arc<dyn Source>>,
    limits: ServerLimits,
    access: Option<Arc<dyn AccessPolicy>>,
    stats: Arc<ServerStats>,
}

/// A server start that failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding a socket failed.
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        /// "TCP" or "UDP".
        what: &'static str,
        /// Address tried.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

fn new_guid() -> Guid {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let a = h.finish().to_le_bytes();
    let mut g = [0u8; 12];
    g[..8].copy_from_slice(&a);
    g[8..].copy_from_slice(&std::process::id().to_le_bytes());
    Guid(g)
}

impl Server {
    /// Bind and start serving `sources` (asked in order) with `config`.
    pub async fn start(
        config: ServerConfig,
        sources: Vec<Arc<dyn Source>>,
    ) -> Result<Self, ServerError> {
        Self::start_with(config, sources, ServerOptions::default()).await
    }

    /// Like [`Server::start`], with the limits and access policy of `options`.
    ///
    /// Binds a TCP listener and a UDP search socket on every interface of the configuration
    /// (all interfaces when it names none). As in pvxs, the first interface takes the
    /// configured ports (its TCP port falls back to a free one when taken, and port 0 picks
    /// one); the others then use the same port numbers. The connection and search limits
    /// hold over all interfaces together.
    pub async fn start_with(
        config: ServerConfig,
        sources: Vec<Arc<dyn Source>>,
        options: ServerOptions,
    ) -> Result<Self, ServerError> {
        let interfaces = if config.interfaces.is_empty() {
            vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
        } else {
            config.interfaces.clone()
        };
        let mut tcp_port = config.tcp_port;
        let mut udp_port = config.udp_port;
        let mut bound = Vec::with_capacity(interfaces.len());
        for (i, ip) in interfaces.iter().enumerate() {
            let listener = bind_tcp(SocketAddr::new(*ip, tcp_port), i == 0).await?;
            let tcp = local_addr(listener.local_addr(), "TCP", *ip, tcp_port)?;
            let udp_addr = SocketAddr::new(*ip, udp_port);
            let udp_sock = bind_udp(udp_addr).map_err(|source| ServerError::Bind {
                what: "UDP",
                addr: udp_addr,
                source,
            })?;
            let udp = local_addr(udp_sock.local_addr(), "UDP", *ip, udp_port)?;
            tcp_port = tcp.port();
            udp_port = udp.port();
            bound.push((listener, tcp, Arc::new(udp_sock), udp));
        }

        let (shutdown, rx) = watch::channel(false);
        let guid = new_guid();
        let mut tasks = JoinSet::new();
        let tcp_addrs: Vec<SocketAddr> = bound.iter().map(|b| b.1).collect();
        let udp_addrs: Vec<SocketAddr> = bound.iter().map(|b| b.3).collect();
        let beacon_destinations = beacon_destinations(&config, &interfaces, udp_port);
        if config.beacons && !beacon_destinations.is_empty() {
            tasks.spawn(udp::send_beacons(
                bound[0].2.clone(),
                beacon_destinations,
                guid,
                bound[0].1,
                BEACON_PERIOD,
                rx.clone(),
            ));
        }
        let idle = config.idle_timeout;
        let limits = options.limits;
        let stats = Arc::new(ServerStats::default());
        let shared = Arc::new(Shared {
            sources,
            limits,
            access: options.access,
            stats: stats.clone(),
        });
        let gate =
            limits::ConnectionGate::new(limits.max_connections, limits.max_connections_per_host);
        let local_group = local_group(
            &bound.iter().map(|b| b.2.clone()).collect::<Vec<_>>(),
            &interfaces,
            udp_port,
        );
        let responder = Arc::new(udp::Responder {
            shared: shared.clone(),
            limiter: Arc::new(Mutex::new(limits::SearchLimiter::new(
                limits.max_searches_per_second,
            ))),
            guid,
            endpoints: bound
                .iter()
                .map(|(_, tcp, sock, _)| udp::Endpoint {
                    ip: tcp.ip(),
                    sock: sock.clone(),
                    tcp: *tcp,
                })
                .collect(),
            forward: local_group.as_ref().map(|g| (g.sender.clone(), g.group)),
            ignore: config.ignore_addrs.clone(),
        });
        if let Some(listener) = local_group.and_then(|g| g.listener) {
            tasks.spawn(responder.clone().listen(listener, None, rx.clone()));
        }
        for (i, (listener, tcp, udp_sock, _)) in bound.into_iter().enumerate() {
            tasks.spawn(responder.clone().listen(udp_sock, Some(i), rx.clone()));
            let shared = shared.clone();
            let gate = gate.clone();
            let mut rx = rx.clone();
            tasks.spawn(async move {
                let mut conns = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((stream, peer)) => match gate.admit(peer.ip()) {
                                Ok(permit) => {
                                    conns.spawn(conn::serve_connection(stream, peer, shared.clone(), permit, idle, rx.clone()));
                                }
                                Err(kind) => refuse_connection(&shared, &gate, kind, peer),
                            },
                            Err(e) => {
                                tracing::warn!(addr = %tcp, "cannot accept a connection: {e}");
                                tokio::time::sleep(ACCEPT_RETRY).await;
                            }
                        },
                        Some(_) = conns.join_next(), if !conns.is_empty() => {}
                        _ = rx.changed() => return,
                    }
                }
            });
        }
        tracing::info!(tcp = ?tcp_addrs, udp = ?udp_addrs, "PVA server listening");
        Ok(Server {
            tcp: tcp_addrs,
            udp: udp_addrs,
            stats,
            shutdown,
            tasks,
        })
    }

    /// What the server has refused, dropped or closed so far, and its connections.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// The live counters, for a task that reports them while the server runs.
    pub fn stats_handle(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// The TCP address clients connect to (on the first interface).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp[0]
    }

    /// The UDP address searches go to (on the first interface).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp[0]
    }

    /// The TCP address on every interface served, in the configured order.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// The UDP search address on every interface served, in the configured order.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    /// Stop serving and wait for every task to end.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Count and log a connection the gate refused; dropping the stream closes it.
fn refuse_connection(
    shared: &Shared,
    gate: &limits::ConnectionGate,
    kind: stats::Refusal,
    peer: SocketAddr,
) {
    let (total, from_host) = gate.open(peer.ip());
    let limits = &shared.limits;
    let why = match kind {
        stats::Refusal::ConnectionsPerHost => format!(
            "refusing a connection: {from_host} already open from {} (max_connections_per_host = {})",
            peer.ip(),
            limits.max_connections_per_host
        ),
        _ => format!(
            "refusing a connection: {total} already open (max_connections = {})",
            limits.max_connections
        ),
    };
    shared.stats.refuse(kind, peer, format_args!("{why}"));
}

/// A TCP listener on `addr`; with `fallback`, a free port when the port asked for is taken
/// (as pvxs does for the default port).
async fn bind_tcp(addr: SocketAddr, fallback: bool) -> Result<TcpListener, ServerError> {
    let error = |source| ServerError::Bind {
        what: "TCP",
        addr,
        source,
    };
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(_) if fallback && addr.port() != 0 => TcpListener::bind(SocketAddr::new(addr.ip(), 0))
            .await
            .map_err(error),
        Err(e) => Err(error(e)),
    }
}

/// The address a socket bound to, or the bind error for `ip:port`.
fn local_addr(
    result: std::io::Result<SocketAddr>,
    what: &'static str,
    ip: IpAddr,
    port: u16,
) -> Result<SocketAddr, ServerError> {
    result.map_err(|source| ServerError::Bind {
        what,
        addr: SocketAddr::new(ip, port),
        source,
    })
}

/// A UDP socket that shares its port with other PVA servers and clients on the host
/// (SO_REUSEADDR and SO_REUSEPORT, as pvxs and pvAccessCPP set them, so that every start order
/// works).
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.set_broadcast(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// The local multicast group of the host's PVA servers, as this server takes part in it.
struct LocalGroup {
    /// The group at the search port.
    group: SocketAddr,
    /// Sends forwarded searches out through loopback.
    sender: Arc<UdpSocket>,
    /// A socket of its own bound to the group, when no search socket is bound to every
    /// interface (such a socket receives the group's datagrams itself).
    listener: Option<Arc<UdpSocket>>,
}

/// Join the local multicast group at `port` on loopback: with the search socket when it is
/// bound to every interface, else with a socket bound to the group. `None` (searches are then
/// answered without forwarding) when the host does not allow it.
fn local_group(sockets: &[Arc<UdpSocket>], interfaces: &[IpAddr], port: u16) -> Option<LocalGroup> {
    let group = SocketAddr::new(config::LOCAL_MULTICAST_GROUP.into(), port);
    let joined = || -> std::io::Result<LocalGroup> {
        let wildcard = interfaces.iter().position(IpAddr::is_unspecified);
        let listener = match wildcard {
            Some(i) => {
                socket2::SockRef::from(sockets[i].as_ref())
                    .join_multicast_v4(&config::LOCAL_MULTICAST_GROUP, &Ipv4Addr::LOCALHOST)?;
                None
            }
            None => {
                let sock = bind_udp(group)?;
                socket2::SockRef::from(&sock)
                    .join_multicast_v4(&config::LOCAL_MULTICAST_GROUP, &Ipv4Addr::LOCALHOST)?;
                Some(Arc::new(sock))
            }
        };
        let sender = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        sender.set_multicast_if_v4(&Ipv4Addr::LOCALHOST)?;
        sender.set_multicast_loop_v4(true)?;
        sender.set_multicast_ttl_v4(1)?;
        sender.set_nonblocking(true)?;
        sender.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
        Ok(LocalGroup {
            group,
            sender: Arc::new(UdpSocket::from_std(sender.into())?),
            listener,
        })
    };
    match joined() {
        Ok(g) => Some(g),
        Err(e) => {
            tracing::warn!(
                "cannot join the local multicast group {group}: {e}; unicast searches are \
                 answered here only, so other servers on this host may not be found"
            );
            None
        }
    }
}

/// Where beacons go: the configured destinations and, with the automatic list, the broadcast
/// address of every interface served that is up and can broadcast.
fn beacon_destinations(config: &ServerConfig, interfaces: &[IpAddr], port: u16) -> Vec<SocketAddr> {
    let mut out = config.beacon_destinations.clone();
    if config.auto_beacon {
        let only: Vec<Ipv4Addr> = interfaces
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        let up = crate::interfaces::up_interfaces();
        for b in crate::interfaces::broadcast_addresses(&up, &only) {
            let dest = SocketAddr::new(b.into(), port);
            if !out.contains(&dest) {
                out.push(dest);
            }
        }
    }
    out
}
