//! The UDP side of a server: answer searches for names our sources have, forward unicast
//! searches to the other servers of the host, and send beacons.
//!
//! Several servers on one host share the UDP search port, and a unicast search reaches only one
//! of them. As pvxs and pvAccessCPP do, the server that receives a unicast search forwards it to
//! the local multicast group ([`crate::config::LOCAL_MULTICAST_GROUP`] at the search port, on loopback),
//! prefixed with an ORIGIN_TAG message naming the interface it arrived on, with the unicast flag
//! cleared and the client's address written into the search; every server of the host, this one
//! included, listens on that group and answers the forwarded search to the client. A search
//! with an ORIGIN_TAG is never forwarded again.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pva_codec::msg::{Beacon, Search, SearchResponse, SEARCH_UNICAST};
use pva_codec::{ByteOrder, Direction, Guid, Message, ValueEncoder, Writer};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::limits::SearchLimiter;
use super::stats::Refusal;
use super::Shared;

/// One interface a server serves: the UDP socket searches arrive on and answers leave from,
/// and the TCP address the answers name.
pub(super) struct Endpoint {
    /// The address the UDP socket is bound to (0.0.0.0 for every interface).
    pub ip: IpAddr,
    /// The UDP search socket.
    pub sock: Arc<UdpSocket>,
    /// The TCP listener's address.
    pub tcp: SocketAddr,
}

/// What the server does with one search it received.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Action {
    /// Send this datagram (ORIGIN_TAG and the search) to the local multicast group.
    Forward(Bytes),
    /// Answer `search` to `to` from the endpoint at index `endpoint`.
    Answer {
        /// The search.
        search: Search,
        /// The client's address for the answer.
        to: SocketAddr,
        /// Which endpoint answers.
        endpoint: usize,
    },
}

/// Decide what to do with a datagram from `from` that arrived on the endpoint at index
/// `arrived_on` (`None`: on the local multicast group's own socket). `endpoint_ips` are the
/// endpoints' bound addresses; `forwarding` is false when the group could not be joined, and
/// unicast searches are then answered directly.
pub(super) fn plan(
    datagram: Bytes,
    from: SocketAddr,
    arrived_on: Option<usize>,
    endpoint_ips: &[IpAddr],
    forwarding: bool,
) -> Vec<Action> {
    let mut origin: Option<IpAddr> = None;
    let mut actions = Vec::new();
    for (k, msg) in pva_codec::decode_datagram(datagram).into_iter().enumerate() {
        match msg {
            Ok(Message::OriginTag(addr)) if k == 0 => origin = Some(addr),
            Ok(Message::Search(search)) => {
                if let Some(origin) = origin {
                    // Forwarded by a server of this host: the client's address is in the
                    // search, and only the endpoint of the interface it first reached answers.
                    if search.response_address.is_unspecified() {
                        continue;
                    }
                    let Some(endpoint) = endpoint_for(origin, endpoint_ips, arrived_on) else {
                        continue;
                    };
                    let to = SocketAddr::new(search.response_address, search.response_port);
                    actions.push(Action::Answer {
                        search,
                        to,
                        endpoint,
                    });
                } else if forwarding && search.flags & SEARCH_UNICAST != 0 {
                    let received_on = arrived_on
                        .and_then(|i| endpoint_ips.get(i).copied())
                        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                    let mut forwarded = search;
                    forwarded.flags &= !SEARCH_UNICAST;
                    if forwarded.response_address.is_unspecified() {
                        forwarded.response_address = from.ip();
                    }
                    if let Some(bytes) = encode_forwarded(received_on, forwarded) {
                        actions.push(Action::Forward(bytes));
                    }
                } else {
                    let ip = if search.response_address.is_unspecified() {
                        from.ip()
                    } else {
                        search.response_address
                    };
                    let to = SocketAddr::new(ip, search.response_port);
                    actions.push(Action::Answer {
                        search,
                        to,
                        endpoint: arrived_on.unwrap_or(0),
                    });
                }
            }
            _ => {}
        }
    }
    actions
}

/// The endpoint that answers a search first sent to `origin`: the one bound to that address,
/// else one bound to every interface; none when this server does not serve that interface.
fn endpoint_for(origin: IpAddr, ips: &[IpAddr], arrived_on: Option<usize>) -> Option<usize> {
    if origin.is_unspecified() {
        return Some(arrived_on.unwrap_or(0));
    }
    ips.iter()
        .position(|ip| *ip == origin)
        .or_else(|| ips.iter().position(IpAddr::is_unspecified))
}

/// ORIGIN_TAG naming `received_on`, then `search`, as one datagram.
fn encode_forwarded(received_on: IpAddr, search: Search) -> Option<Bytes> {
    let mut w = Writer::new(ByteOrder::native());
    let mut e = ValueEncoder::default();
    Message::OriginTag(received_on)
        .write(&mut w, Direction::FromClient, &mut e)
        .ok()?;
    Message::Search(search)
        .write(&mut w, Direction::FromClient, &mut e)
        .ok()?;
    Some(w.finish_contiguous())
}

/// The UDP side of a running server.
pub(super) struct Responder {
    /// What every connection shares (sources, limits, stats).
    pub shared: Arc<Shared>,
    /// Searches answered per client address and second.
    pub limiter: Arc<Mutex<SearchLimiter>>,
    /// The server's GUID.
    pub guid: Guid,
    /// One per interface served.
    pub endpoints: Vec<Endpoint>,
    /// The socket forwarded searches leave from, and the group address they go to; `None`
    /// when the local multicast group could not be set up.
    pub forward: Option<(Arc<UdpSocket>, SocketAddr)>,
    /// Clients whose searches are not answered (EPICS_PVAS_IGNORE_ADDR_LIST).
    pub ignore: Vec<IpAddr>,
}

impl Responder {
    /// Handle datagrams from `sock` (the endpoint at index `arrived_on`, or the group's own
    /// socket) until shutdown.
    pub(super) async fn listen(
        self: Arc<Self>,
        sock: Arc<UdpSocket>,
        arrived_on: Option<usize>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let ips: Vec<IpAddr> = self.endpoints.iter().map(|e| e.ip).collect();
        let mut buf = vec![0u8; 0x10000];
        loop {
            let (n, from) = tokio::select! {
                r = sock.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    Err(_) => continue,
                },
                _ = shutdown.changed() => return,
            };
            let datagram = Bytes::copy_from_slice(&buf[..n]);
            for action in plan(datagram, from, arrived_on, &ips, self.forward.is_some()) {
                match action {
                    Action::Forward(bytes) => {
                        if let Some((sock, group)) = &self.forward {
                            if let Err(e) = sock.send_to(&bytes, group).await {
                                tracing::debug!("cannot forward a search to {group}: {e}");
                            }
                        }
                    }
                    Action::Answer {
                        search,
                        to,
                        endpoint,
                    } => self.answer(search, to, endpoint).await,
                }
            }
        }
    }

    /// Answer `search` to `to` from endpoint `endpoint`, when the client is not ignored, the
    /// limiter allows it, and we have a name (or the client asks for an answer anyway).
    async fn answer(&self, search: Search, to: SocketAddr, endpoint: usize) {
        if self.ignore.contains(&to.ip()) {
            return;
        }
        let shared = &self.shared;
        let allowed = self
            .limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(to.ip(), Instant::now());
        if !allowed {
            shared.stats.refuse(
                Refusal::SearchRate,
                to,
                format_args!(
                    "dropping searches from {} past {} per second (max_searches_per_second)",
                    to.ip(),
                    shared.limits.max_searches_per_second
                ),
            );
            return;
        }
        let ids: Vec<u32> = search
            .channels
            .iter()
            .filter(|(_, name)| shared.sources.iter().any(|s| s.channel(name).is_some()))
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() && !search.must_reply() {
            return;
        }
        let Some(endpoint) = self.endpoints.get(endpoint) else {
            return;
        };
        let tcp = endpoint.tcp;
        let reply = Message::SearchResponse(SearchResponse {
            guid: self.guid,
            sequence: search.sequence,
            address: if tcp.ip().is_unspecified() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                tcp.ip()
            },
            port: tcp.port(),
            protocol: "tcp".into(),
            found: !ids.is_empty(),
            ids,
        });
        let mut w = Writer::new(ByteOrder::native());
        if reply
            .write(&mut w, Direction::FromServer, &mut ValueEncoder::default())
            .is_ok()
        {
            let _ = endpoint.sock.send_to(&w.finish_contiguous(), to).await;
        }
    }
}

/// Send a beacon to each destination every `period` until shutdown.
pub async fn send_beacons(
    sock: Arc<UdpSocket>,
    destinations: Vec<SocketAddr>,
    guid: Guid,
    tcp: SocketAddr,
    period: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sequence = 0u8;
    loop {
        let beacon = Message::Beacon(Beacon {
            guid,
            flags: 0,
            sequence,
            change_count: 0,
            address: tcp.ip(),
            port: tcp.port(),
            protocol: "tcp".into(),
            status: pva_codec::AnyValue(None),
        });
        let mut w = Writer::new(ByteOrder::native());
        if beacon
            .write(&mut w, Direction::FromServer, &mut ValueEncoder::default())
            .is_ok()
        {
            let bytes: Bytes = w.finish_contiguous();
            for d in &destinations {
                let _ = sock.send_to(&bytes, d).await;
            }
        }
        sequence = sequence.wrapping_add(1);
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::msg::SEARCH_MUST_REPLY;

    const CLIENT: &str = "10.1.2.3:40000";

    fn search(flags: u8, response: &str) -> Search {
        Search {
            sequence: 9,
            flags,
            response_address: response.parse().unwrap(),
            response_port: 40001,
            protocols: vec!["tcp".into()],
            channels: vec![(1, "a".into())],
        }
    }

    fn datagram(messages: &[Message]) -> Bytes {
        let mut w = Writer::new(ByteOrder::Big);
        for m in messages {
            m.write(&mut w, Direction::FromClient, &mut ValueEncoder::default())
                .unwrap();
        }
        w.finish_contiguous()
    }

    fn wildcard() -> Vec<IpAddr> {
        vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)]
    }

    #[test]
    fn a_unicast_search_is_forwarded_tagged_with_the_client_address_inside() {
        let d = datagram(&[Message::Search(search(SEARCH_UNICAST, "0.0.0.0"))]);
        let ips = vec!["127.0.0.1".parse().unwrap()];
        let actions = plan(d, CLIENT.parse().unwrap(), Some(0), &ips, true);
        let [Action::Forward(bytes)] = &actions[..] else {
            panic!("{actions:?}")
        };
        let messages: Vec<Message> = pva_codec::decode_datagram(bytes.clone())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            messages[0],
            Message::OriginTag("127.0.0.1".parse().unwrap())
        );
        let Message::Search(forwarded) = &messages[1] else {
            panic!("{messages:?}")
        };
        assert_eq!(forwarded.flags & SEARCH_UNICAST, 0, "unicast flag cleared");
        assert_eq!(
            forwarded.response_address,
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        assert_eq!(forwarded.response_port, 40001);
        assert_eq!(forwarded.channels, vec![(1, "a".to_string())]);

        // What the group then delivers is answered to the client, and not forwarded again
        // even if a forwarder left the unicast flag set.
        let looped = plan(
            bytes.clone(),
            "127.0.0.1:5076".parse().unwrap(),
            None,
            &ips,
            true,
        );
        assert!(
            matches!(&looped[..], [Action::Answer { to, endpoint: 0, .. }]
            if *to == "10.1.2.3:40001".parse().unwrap()),
            "{looped:?}"
        );
        let sloppy = datagram(&[
            Message::OriginTag(Ipv4Addr::UNSPECIFIED.into()),
            Message::Search(search(SEARCH_UNICAST, "10.1.2.3")),
        ]);
        let again = plan(
            sloppy,
            "127.0.0.1:5076".parse().unwrap(),
            Some(0),
            &wildcard(),
            true,
        );
        assert!(matches!(&again[..], [Action::Answer { .. }]), "{again:?}");
    }

    #[test]
    fn a_forwarded_search_without_a_client_address_cannot_be_answered() {
        let d = datagram(&[
            Message::OriginTag("127.0.0.1".parse().unwrap()),
            Message::Search(search(0, "0.0.0.0")),
        ]);
        assert!(plan(
            d,
            "127.0.0.1:5076".parse().unwrap(),
            Some(0),
            &wildcard(),
            true
        )
        .is_empty());
    }

    #[test]
    fn a_forwarded_search_is_answered_by_the_interface_it_first_reached() {
        let ips: Vec<IpAddr> = vec!["10.0.0.5".parse().unwrap(), "127.0.0.1".parse().unwrap()];
        let tagged = |origin: &str| {
            datagram(&[
                Message::OriginTag(origin.parse().unwrap()),
                Message::Search(search(0, "10.1.2.3")),
            ])
        };
        let from = "127.0.0.1:5076".parse().unwrap();
        let on = |origin| match &plan(tagged(origin), from, None, &ips, true)[..] {
            [Action::Answer { endpoint, .. }] => Some(*endpoint),
            [] => None,
            other => panic!("{other:?}"),
        };
        assert_eq!(on("127.0.0.1"), Some(1));
        assert_eq!(on("10.0.0.5"), Some(0));
        assert_eq!(on("0.0.0.0"), Some(0));
        assert_eq!(
            on("192.168.7.7"),
            None,
            "an interface this server does not serve"
        );
    }

    #[test]
    fn broadcast_searches_and_unforwardable_unicasts_are_answered_directly() {
        let from: SocketAddr = CLIENT.parse().unwrap();
        let b = datagram(&[Message::Search(search(SEARCH_MUST_REPLY, "0.0.0.0"))]);
        let actions = plan(b, from, Some(0), &wildcard(), true);
        assert!(
            matches!(&actions[..], [Action::Answer { to, .. }]
            if *to == "10.1.2.3:40001".parse().unwrap()),
            "{actions:?}"
        );
        let u = datagram(&[Message::Search(search(SEARCH_UNICAST, "0.0.0.0"))]);
        let actions = plan(u, from, Some(0), &wildcard(), false);
        assert!(
            matches!(&actions[..], [Action::Answer { .. }]),
            "{actions:?}"
        );
    }
}
