//! PVAccess server: a TCP listener with one task per connection, a UDP search responder and
//! beacons, serving channels from [`Source`]s.

pub mod conn;
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
    PutHandler, PutRequest, RpcHandler, SharedPv, SharedPvBuilder, SubscriberStats, Subscription,
};
pub use source::{PeerInfo, Source, StaticSource};

/// How often beacons go out.
const BEACON_PERIOD: Duration = Duration::from_secs(15);

/// A running server. Dropping it (or calling [`Server::stop`]) stops every task.
pub struct Server {
    tcp: SocketAddr,
    udp: SocketAddr,
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
    pub async fn start_with_limits(
        config: ServerConfig,
        sources: Vec<Arc<dyn Source>>,
        limits: Limits,
        conn_limits: ConnLimits,
    ) -> Result<Self, ServerError> {
        let ip = config
            .interfaces
            .first()
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let tcp_addr = SocketAddr::new(ip, config.tcp_port);
        let listener = match TcpListener::bind(tcp_addr).await {
            Ok(l) => l,
            // Like pvxs: when the default port is taken, fall back to any free port.
            Err(_) if config.tcp_port != 0 => TcpListener::bind(SocketAddr::new(ip, 0))
                .await
                .map_err(|source| ServerError::Bind {
                    what: "TCP",
                    addr: tcp_addr,
                    source,
                })?,
            Err(source) => {
                return Err(ServerError::Bind {
                    what: "TCP",
                    addr: tcp_addr,
                    source,
                })
            }
        };
        let tcp = listener.local_addr().map_err(|source| ServerError::Bind {
            what: "TCP",
            addr: tcp_addr,
            source,
        })?;
        let udp_addr = SocketAddr::new(ip, config.udp_port);
        let udp_sock = bind_udp(udp_addr).map_err(|source| ServerError::Bind {
            what: "UDP",
            addr: udp_addr,
            source,
        })?;
        let udp = udp_sock.local_addr().map_err(|source| ServerError::Bind {
            what: "UDP",
            addr: udp_addr,
            source,
        })?;
        let udp_sock = Arc::new(udp_sock);

        let (shutdown, rx) = watch::channel(false);
        let guid = new_guid();
        let mut tasks = JoinSet::new();
        tasks.spawn(udp::answer_searches(
            udp_sock.clone(),
            sources.clone(),
            guid,
            tcp,
            rx.clone(),
        ));
        if config.beacons && !config.beacon_destinations.is_empty() {
            tasks.spawn(udp::send_beacons(
                udp_sock,
                config.beacon_destinations.clone(),
                guid,
                tcp,
                BEACON_PERIOD,
                rx.clone(),
            ));
        }
        let idle = config.idle_timeout;
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            let mut rx = rx;
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
        tracing::info!(%tcp, %udp, "PVA server listening");
        Ok(Server {
            tcp,
            udp,
            shutdown,
            tasks,
        })
    }

    /// The TCP address clients connect to.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp
    }

    /// The UDP address searches go to.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    /// Stop serving and wait for every task to end.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
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
