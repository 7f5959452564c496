//! The UDP side of a server: answer searches for names our sources have, and send beacons.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use pva_codec::msg::{Beacon, SearchResponse};
use pva_codec::{ByteOrder, Direction, Guid, Message, ValueEncoder, Writer};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::limits::SearchLimiter;
use super::stats::Refusal;
use super::Shared;

/// Answer searches on `sock` until shutdown, as far as `limiter` allows for each source
/// address; the searches it drops are counted.
pub(super) async fn answer_searches(
    sock: Arc<UdpSocket>,
    shared: Arc<Shared>,
    limiter: Arc<Mutex<SearchLimiter>>,
    guid: Guid,
    tcp: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
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
        for msg in pva_codec::decode_datagram(datagram) {
            let Ok(Message::Search(search)) = msg else {
                continue;
            };
            let allowed = limiter
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .allow(from.ip(), Instant::now());
            if !allowed {
                shared.stats.refuse(
                    Refusal::SearchRate,
                    from,
                    format_args!(
                        "dropping searches from {} past {} per second (max_searches_per_second)",
                        from.ip(),
                        shared.limits.max_searches_per_second
                    ),
                );
                continue;
            }
            let ids: Vec<u32> = search
                .channels
                .iter()
                .filter(|(_, name)| shared.sources.iter().any(|s| s.channel(name).is_some()))
                .map(|(id, _)| *id)
                .collect();
            if ids.is_empty() && !search.must_reply() {
                continue;
            }
            let reply_to = if search.response_address.is_unspecified() {
                SocketAddr::new(from.ip(), search.response_port)
            } else {
                SocketAddr::new(search.response_address, search.response_port)
            };
            let reply = Message::SearchResponse(SearchResponse {
                guid,
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
                let _ = sock.send_to(&w.finish_contiguous(), reply_to).await;
            }
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
