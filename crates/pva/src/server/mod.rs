//! PVAccess server: a TCP listener with one task per connection, a UDP search responder and
//! beacons, serving channels from [`Source`]s.

pub mod conn;
pub mod select;
pub mod server_channel;
pub mod shared_pv;
pub mod source;
mod tcp;
mod udp;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use pva_codec::{Guid, Limits};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::ServerConfig;
pub use conn::ConnLimits;
pub use shared_pv::{
    PutHandler, PutRequest, RpcHandler, SharedPv, SharedPvBuilder, SubscribeOptions,
    SubscriberStats, Subscription,
};
pub use source::{PeerInfo, Source, StaticSource};

/// How often beacons go out.
const BEACON_PERIOD: Duration = Duration::from_secs(15);

/// A running server. Dropping it (or calling [`Server::stop`]) stops every task.
pub struct Server {
    /// One TCP address per interface, the first interface's first.
    tcp: Vec<SocketAddr>,
    /// One UDP address per interface, in the same order.
    udp: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
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
        Self::start_with_limits(config, sources, Limits::default(), ConnLimits::default()).await
    }

    /// Like [`Server::start`], with explicit decode and per-connection limits.
    ///
    /// Binds a TCP listener and a UDP search socket on every interface of the configuration
    /// (all interfaces when it names none). As in pvxs, the first interface takes the
    /// configured ports (its TCP port falls back to a free one when taken, and port 0 picks
    /// one); the others then use the same port numbers.
    pub async fn start_with_limits(
        config: ServerConfig,
        sources: Vec<Arc<dyn Source>>,
        limits: Limits,
        conn_limits: ConnLimits,
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
        if config.beacons && !config.beacon_destinations.is_empty() {
            tasks.spawn(udp::send_beacons(
                bound[0].2.clone(),
                config.beacon_destinations.clone(),
                guid,
                bound[0].1,
                BEACON_PERIOD,
                rx.clone(),
            ));
        }
        let idle = config.idle_timeout;
        for (listener, tcp, udp_sock, _) in bound {
            tasks.spawn(udp::answer_searches(
                udp_sock,
                sources.clone(),
                guid,
                tcp,
                rx.clone(),
            ));
            let sources = sources.clone();
            let mut rx = rx.clone();
            tasks.spawn(async move {
                let mut conns = JoinSet::new();
                loop {
                    tokio::select! {
                        accepted = listener.accept() => {
                            if let Ok((stream, _)) = accepted {
                                conns.spawn(tcp::serve_connection(stream, sources.clone(), limits, conn_limits, idle, rx.clone()));
                            }
                        }
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
            shutdown,
            tasks,
        })
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
/// (SO_REUSEADDR, as pvxs and pvAccessCPP do).
fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_broadcast(true)?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}
