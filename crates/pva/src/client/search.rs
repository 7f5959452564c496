//! Finding which server has a channel: UDP searches with backoff to the configured addresses,
//! answers matched to waiters by search id. Duplicate answers are normal and ignored.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use pva_codec::msg::{Beacon, Search, SearchResponse, SEARCH_MUST_REPLY, SEARCH_UNICAST};
use pva_codec::{ByteOrder, Direction, Message, ValueEncoder, Writer};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};

use crate::config::ClientConfig;
use crate::interfaces::{self, Interface};

/// First retry delay of a search; it doubles up to [`MAX_DELAY`].
const FIRST_DELAY: Duration = Duration::from_millis(20);
/// Longest delay between two searches for one name.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// How long a reading of the host's interfaces is used before it is read again (as pvxs).
const INTERFACES_REFRESH: Duration = Duration::from_secs(15);
/// Beacons of new servers hurry the searches at most this often.
const HURRY_HOLDOFF: Duration = Duration::from_secs(1);

/// Where a found channel lives.
pub(crate) type Found = SocketAddr;

/// The UDP search engine of a context.
pub(crate) struct Searcher {
    socket: Arc<UdpSocket>,
    config: ClientConfig,
    /// The interfaces as last read, and when.
    interfaces: Mutex<(Vec<Interface>, Instant)>,
    waiters: Mutex<HashMap<u32, mpsc::UnboundedSender<Found>>>,
    servers: Mutex<HashMap<[u8; 12], SocketAddr>>,
    next_id: AtomicU32,
    sequence: AtomicU32,
    /// The GUID each server that beaconed last beaconed with.
    beacons: Mutex<HashMap<SocketAddr, [u8; 12]>>,
    /// Wakes searches waiting out their backoff: a new or restarted server beaconed.
    hurry: Notify,
    /// When the searches were last hurried.
    hurried: Mutex<Option<Instant>>,
    receivers: Vec<tokio::task::AbortHandle>,
}

impl Drop for Searcher {
    fn drop(&mut self) {
        for r in &self.receivers {
            r.abort();
        }
    }
}

/// The server address a search answer names (its own address, else the sender's).
pub(crate) fn answer_address(r: &SearchResponse, from: IpAddr) -> SocketAddr {
    let ip = match r.address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let ip = if ip.is_unspecified() { from } else { ip };
    SocketAddr::new(ip, r.port)
}

/// Encode a search datagram.
pub(crate) fn encode_search(search: &Search) -> Option<bytes::Bytes> {
    let mut w = Writer::new(ByteOrder::Little);
    Message::Search(search.clone())
        .write(&mut w, Direction::FromClient, &mut ValueEncoder::default())
        .ok()?;
    Some(w.finish_contiguous())
}

impl Searcher {
    /// Bind a UDP socket and start receiving answers; searches go where `config` says. Needs a
    /// tokio runtime.
    pub(crate) fn new(config: &ClientConfig) -> std::io::Result<Arc<Searcher>> {
        use socket2::{Domain, Protocol, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_broadcast(true)?;
        sock.set_multicast_loop_v4(true)?;
        if let Some(first) = config.interfaces.iter().find(|i| !i.is_unspecified()) {
            sock.set_multicast_if_v4(first)?;
        }
        sock.set_nonblocking(true)?;
        sock.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
        let socket = Arc::new(UdpSocket::from_std(sock.into())?);
        let up = interfaces::up_interfaces();
        let beacon_sockets = beacon_sockets(config, &up);
        Ok(Arc::new_cyclic(|weak: &Weak<Searcher>| {
            let mut receivers =
                vec![tokio::spawn(receive(socket.clone(), weak.clone())).abort_handle()];
            for s in beacon_sockets {
                receivers.push(tokio::spawn(receive(s, weak.clone())).abort_handle());
            }
            Searcher {
                socket,
                config: config.clone(),
                interfaces: Mutex::new((up, Instant::now())),
                waiters: Mutex::new(HashMap::new()),
                servers: Mutex::new(HashMap::new()),
                next_id: AtomicU32::new(1),
                sequence: AtomicU32::new(1),
                beacons: Mutex::new(HashMap::new()),
                hurry: Notify::new(),
                hurried: Mutex::new(None),
                receivers,
            }
        }))
    }

    /// A beacon from `from`: a server not seen before, or seen with another GUID (restarted),
    /// hurries the searches still waiting (as pvxs does), at most once per [`HURRY_HOLDOFF`].
    pub(crate) fn beacon(&self, b: &Beacon, from: IpAddr) {
        let ip = if b.address.is_unspecified() {
            from
        } else {
            b.address
        };
        let server = SocketAddr::new(ip, b.port);
        let changed = self
            .beacons
            .lock()
            .map(|mut seen| seen.insert(server, b.guid.0) != Some(b.guid.0))
            .unwrap_or(false);
        if !changed {
            return;
        }
        let mut hurried = self.hurried.lock().unwrap_or_else(|e| e.into_inner());
        if hurried.is_none_or(|t| t.elapsed() >= HURRY_HOLDOFF) {
            *hurried = Some(Instant::now());
            tracing::debug!("new or restarted server {server}: searching again now");
            self.hurry.notify_waiters();
        }
    }

    /// The host's interfaces, read again when the last reading is older than
    /// [`INTERFACES_REFRESH`].
    fn interfaces(&self) -> Vec<Interface> {
        let mut guard = self.interfaces.lock().unwrap_or_else(|e| e.into_inner());
        if guard.1.elapsed() > INTERFACES_REFRESH {
            *guard = (interfaces::up_interfaces(), Instant::now());
        }
        guard.0.clone()
    }

    /// A fresh search instance id (also used for searches over TCP).
    pub(crate) fn next_id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh search sequence number.
    pub(crate) fn next_sequence(&self) -> u32 {
        self.sequence.fetch_add(1, Ordering::Relaxed)
    }

    /// Route an answer to the waiter of each id it names.
    pub(crate) fn answer(&self, r: &SearchResponse, from: IpAddr) {
        let addr = answer_address(r, from);
        if let Ok(mut servers) = self.servers.lock() {
            servers.insert(r.guid.0, addr);
        }
        if !r.found {
            return;
        }
        if let Ok(waiters) = self.waiters.lock() {
            for id in &r.ids {
                if let Some(tx) = waiters.get(id) {
                    let _ = tx.send(addr);
                }
            }
        }
    }

    /// Servers that answered so far, by GUID.
    pub(crate) fn servers(&self) -> Vec<([u8; 12], SocketAddr)> {
        self.servers
            .lock()
            .map(|s| s.iter().map(|(g, a)| (*g, *a)).collect())
            .unwrap_or_default()
    }

    /// Register a waiter for search id `id`; it is removed when the guard drops.
    pub(crate) fn wait(self: &Arc<Self>, id: u32) -> (WaiterGuard, mpsc::UnboundedReceiver<Found>) {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut w) = self.waiters.lock() {
            w.insert(id, tx);
        }
        (
            WaiterGuard {
                searcher: self.clone(),
                id,
            },
            rx,
        )
    }

    /// Send one search for `names` (id, name) to every destination.
    pub(crate) async fn send(&self, flags: u8, names: &[(u32, String)]) {
        let port = self.socket.local_addr().map(|a| a.port()).unwrap_or(0);
        let up = self.interfaces();
        for dest in self.config.search_destinations(&up) {
            let unicast = match dest.ip() {
                IpAddr::V4(v4) => !v4.is_multicast() && !interfaces::is_broadcast(&up, v4),
                IpAddr::V6(_) => false,
            };
            let search = Search {
                sequence: self.next_sequence(),
                flags: flags | if unicast { SEARCH_UNICAST } else { 0 },
                response_address: Ipv4Addr::UNSPECIFIED.into(),
                response_port: port,
                protocols: vec!["tcp".into()],
                channels: names.to_vec(),
            };
            if let Some(bytes) = encode_search(&search) {
                if let Err(e) = self.socket.send_to(&bytes, dest).await {
                    tracing::debug!("search to {dest} failed: {e}");
                }
            }
        }
    }

    /// Search for `name` with id `id` until an answer arrives on `rx` (from [`Searcher::wait`]),
    /// backing off between attempts; the caller bounds the time.
    pub(crate) async fn find(
        &self,
        rx: &mut mpsc::UnboundedReceiver<Found>,
        id: u32,
        name: &str,
    ) -> Found {
        let mut delay = FIRST_DELAY;
        let names = [(id, name.to_owned())];
        loop {
            let hurried = self.hurry.notified();
            tokio::pin!(hurried);
            hurried.as_mut().enable();
            self.send(0, &names).await;
            tokio::select! {
                got = rx.recv() => match got {
                    Some(found) => return found,
                    None => tokio::time::sleep(delay).await,
                },
                _ = tokio::time::sleep(delay) => {}
                _ = &mut hurried => {
                    delay = FIRST_DELAY;
                    continue;
                }
            }
            delay = (delay * 2).min(MAX_DELAY);
        }
    }

    /// Ask every server on the search addresses to answer (an empty must-reply search).
    pub(crate) async fn ping(&self) {
        self.send(SEARCH_MUST_REPLY, &[]).await;
    }
}

/// Removes a search waiter when dropped.
pub(crate) struct WaiterGuard {
    searcher: Arc<Searcher>,
    id: u32,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        if let Ok(mut w) = self.searcher.waiters.lock() {
            w.remove(&self.id);
        }
    }
}

/// Sockets that receive the beacons sent to the broadcast addresses searches go to: each bound
/// to one broadcast address at the search port, sharing it (SO_REUSEADDR, SO_REUSEPORT), so that
/// they receive broadcasts only and never take a unicast search from a server of the host.
/// Addresses that cannot be bound are left out (beacons only hurry searches).
fn beacon_sockets(config: &ClientConfig, up: &[Interface]) -> Vec<Arc<UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = |addr: SocketAddr| -> std::io::Result<Arc<UdpSocket>> {
        let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        Ok(Arc::new(UdpSocket::from_std(sock.into())?))
    };
    let mut out = Vec::new();
    let mut bound = Vec::new();
    for dest in config.search_destinations(up) {
        let IpAddr::V4(v4) = dest.ip() else { continue };
        let addr = SocketAddr::new(dest.ip(), config.broadcast_port);
        if !interfaces::is_broadcast(up, v4) || bound.contains(&addr) {
            continue;
        }
        match bind(addr) {
            Ok(s) => {
                bound.push(addr);
                out.push(s);
            }
            Err(e) => tracing::debug!("no beacons from {addr}: {e}"),
        }
    }
    out
}

async fn receive(socket: Arc<UdpSocket>, searcher: Weak<Searcher>) {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(searcher) = searcher.upgrade() else {
            return;
        };
        let datagram = bytes::Bytes::copy_from_slice(buf.get(..n).unwrap_or(&[]));
        for m in pva_codec::decode_datagram(datagram) {
            match m {
                Ok(Message::SearchResponse(r)) => searcher.answer(&r, from.ip()),
                Ok(Message::Beacon(b)) => searcher.beacon(&b, from.ip()),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::Guid;

    /// Every search answer in one datagram.
    fn decode_answers(datagram: &[u8]) -> Vec<SearchResponse> {
        pva_codec::decode_datagram(bytes::Bytes::copy_from_slice(datagram))
            .into_iter()
            .filter_map(|m| match m {
                Ok(Message::SearchResponse(r)) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn answer(address: IpAddr, ids: Vec<u32>) -> Vec<u8> {
        let r = SearchResponse {
            guid: Guid([7; 12]),
            sequence: 1,
            address,
            port: 5075,
            protocol: "tcp".into(),
            found: true,
            ids,
        };
        let mut w = Writer::new(ByteOrder::Big);
        Message::SearchResponse(r)
            .write(&mut w, Direction::FromServer, &mut ValueEncoder::default())
            .unwrap();
        w.finish_contiguous().to_vec()
    }

    #[test]
    fn unspecified_address_means_the_sender() {
        let mut d = answer(Ipv4Addr::UNSPECIFIED.into(), vec![3, 4]);
        d.extend(answer("10.1.2.3".parse().unwrap(), vec![5]));
        let got = decode_answers(&d);
        assert_eq!(got.len(), 2);
        let from: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            answer_address(&got[0], from),
            "127.0.0.1:5075".parse().unwrap()
        );
        assert_eq!(
            answer_address(&got[1], from),
            "10.1.2.3:5075".parse().unwrap()
        );
        assert_eq!(got[0].ids, vec![3, 4]);
    }

    #[test]
    fn garbage_datagrams_decode_to_nothing() {
        assert!(decode_answers(&[0xCA, 2, 0x40, 4, 0xff, 0xff, 0xff, 0x7f]).is_empty());
        assert!(decode_answers(&[1, 2, 3]).is_empty());
        assert!(decode_answers(&[]).is_empty());
    }

    #[tokio::test]
    async fn beacons_of_new_or_restarted_servers_hurry_the_searches() {
        let searcher =
            Searcher::new(&ClientConfig::isolated("127.0.0.1:9".parse().unwrap())).unwrap();
        let beacon = |g: u8| Beacon {
            guid: Guid([g; 12]),
            flags: 0,
            sequence: 0,
            change_count: 0,
            address: Ipv4Addr::UNSPECIFIED.into(),
            port: 5075,
            protocol: "tcp".into(),
            status: pva_codec::AnyValue(None),
        };
        let from: IpAddr = "10.0.0.7".parse().unwrap();
        let hurries = |b: Beacon| {
            let searcher = searcher.clone();
            async move {
                *searcher.hurried.lock().unwrap() = None;
                let woken = searcher.hurry.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                searcher.beacon(&b, from);
                tokio::time::timeout(Duration::from_millis(20), woken)
                    .await
                    .is_ok()
            }
        };
        assert!(hurries(beacon(1)).await, "a new server");
        assert!(!hurries(beacon(1)).await, "the same server again");
        assert!(
            hurries(beacon(2)).await,
            "a restart: another GUID at that address"
        );
        assert_eq!(
            searcher.beacons.lock().unwrap().keys().collect::<Vec<_>>(),
            vec![&"10.0.0.7:5075".parse::<SocketAddr>().unwrap()]
        );
    }
}
