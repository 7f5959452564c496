//! Hostile bytes against a live server, over TCP and UDP. For each case the offending connection
//! gets an error reply or is closed (with one log line naming it), the server's memory stays
//! bounded, and a p4p client monitoring a counter throughout misses no update.

#[path = "../../../tests/common/peers.rs"]
mod common;

use common::p4p_monitor::P4pMonitor;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pva::server::{ConnLimits, Server, ServerLimits, ServerOptions, SharedPv, StaticSource};
use pva::transport::FrameReader;
use pva::ServerConfig;
use pva_codec::msg::op::SUB_INIT;
use pva_codec::msg::{cmd, OpTypeTable};
use pva_codec::nt::NtScalar;
use pva_codec::{
    BitSet, ByteOrder, DecodeContext, Direction, Header, Limits, Message, ScalarType, Segment,
    TypeCache,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

/// Largest message the server under test accepts.
const MAX_MESSAGE: usize = 4 << 20;

/// Everything the server logs, kept for the test to read.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter("pva=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        buffer
    })
}

/// The log lines that name `peer`.
fn lines_about(peer: SocketAddr) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned();
    let needle = format!("peer={peer}");
    text.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_owned)
        .collect()
}

/// The value the counter jumps to at the end, for the monitor to stop at.
const LAST: i64 = 100_000;

/// A counter PV ticking every 5 ms and a p4p client monitoring it throughout a test, to show
/// that what other peers do harms no other client.
struct Watch {
    counter: SharedPv,
    monitor: P4pMonitor,
    ticking: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Start the p4p monitor of `pv` (the PV of `counter`) through the server's UDP port, wait
    /// for its first value, then start the counter.
    async fn start(counter: SharedPv, udp: u16, pv: &'static str) -> Self {
        let (monitor, first) = tokio::task::spawn_blocking(move || {
            let monitor = P4pMonitor::start(udp, pv, LAST, 90);
            let first = monitor.next_value(Duration::from_secs(30));
            (monitor, first)
        })
        .await
        .unwrap();
        assert_eq!(first, 0, "the p4p monitor's first value");
        let ticking = tokio::spawn({
            let counter = counter.clone();
            async move {
                let mut n = 0i64;
                loop {
                    n += 1;
                    counter.update(|v| {
                        v.set("value", n).expect("long");
                        BitSet::with(1)
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        Watch {
            counter,
            monitor,
            ticking,
        }
    }

    /// Stop the counter and check the p4p monitor saw every update, in order.
    async fn check_nothing_missed(self) {
        let Watch {
            counter,
            monitor,
            ticking,
        } = self;
        ticking.abort();
        let _ = ticking.await;
        let last = counter
            .current()
            .get("value")
            .and_then(|v| v.as_i64())
            .expect("counter");
        counter.update(|v| {
            v.set("value", LAST).expect("long");
            BitSet::with(1)
        });
        let values = tokio::task::spawn_blocking(move || {
            let mut values = vec![0];
            loop {
                let n = monitor.next_value(Duration::from_secs(20));
                values.push(n);
                if n == LAST {
                    return values;
                }
            }
        })
        .await
        .unwrap();
        let mut want: Vec<i64> = (0..=last).collect();
        want.push(LAST);
        assert_eq!(values, want, "the p4p monitor missed updates");
    }
}

/// A TCP connection to `addr` from the loopback address `from` (any of 127.0.0.0/8 works on
/// Linux), so that one test can play several client hosts.
async fn connect_from(from: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("TCP socket");
    socket
        .bind(SocketAddr::new(from.into(), 0))
        .expect("bind a loopback source address");
    socket.connect(addr).await.expect("connect")
}

/// One application message from a client: little-endian header and `payload` as given.
fn message(command: u8, segment: Segment, payload: &[u8]) -> Vec<u8> {
    let header = Header {
        segment,
        ..Header::application(
            command,
            Direction::FromClient,
            ByteOrder::Little,
            payload.len() as u32,
        )
    };
    let mut bytes = header.encode().to_vec();
    bytes.extend_from_slice(payload);
    bytes
}

fn string(s: &str) -> Vec<u8> {
    let mut b = vec![s.len() as u8];
    b.extend_from_slice(s.as_bytes());
    b
}

/// An operation request's prefix: sid, ioid, subcommand.
fn op(sid: u32, ioid: u32, subcmd: u8) -> Vec<u8> {
    let mut b = sid.to_le_bytes().to_vec();
    b.extend_from_slice(&ioid.to_le_bytes());
    b.push(subcmd);
    b
}

/// A structure type nested `depth` levels deep (an empty structure innermost).
fn nested_type(depth: usize) -> Vec<u8> {
    let mut t = vec![0x80, 0x00, 0x00];
    for _ in 0..depth {
        let mut outer = vec![0x80, 0x00, 0x01];
        outer.extend(string("a"));
        outer.extend(t);
        t = outer;
    }
    t
}

/// How the server dealt with a hostile message.
#[derive(Debug, PartialEq)]
enum Outcome {
    Closed,
    ErrorReply(String),
}

/// A client speaking raw bytes.
struct RawClient {
    reader: FrameReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    local: SocketAddr,
    cache: TypeCache,
}

impl RawClient {
    /// Connect, validate as an anonymous client, and create channel `pv`; returns its sid.
    async fn connect(addr: SocketAddr, pv: &str) -> (RawClient, u32) {
        Self::connect_from(Ipv4Addr::LOCALHOST, addr, pv).await
    }

    /// Like [`RawClient::connect`], from the loopback address `from`.
    async fn connect_from(from: Ipv4Addr, addr: SocketAddr, pv: &str) -> (RawClient, u32) {
        let stream = connect_from(from, addr).await;
        let local = stream.local_addr().expect("local addr");
        let (rd, writer) = stream.into_split();
        let mut client = RawClient {
            reader: FrameReader::new(rd, 1 << 24),
            writer,
            local,
            cache: TypeCache::new(),
        };
        let mut validation = 0x10000u32.to_le_bytes().to_vec();
        validation.extend_from_slice(&0x7fffu16.to_le_bytes());
        validation.extend_from_slice(&0u16.to_le_bytes());
        validation.extend(string("anonymous"));
        validation.push(0xff);
        client
            .send(&message(
                cmd::CONNECTION_VALIDATION,
                Segment::None,
                &validation,
            ))
            .await;
        let mut create = 1u16.to_le_bytes().to_vec();
        create.extend_from_slice(&7u32.to_le_bytes());
        create.extend(string(pv));
        client
            .send(&message(cmd::CREATE_CHANNEL, Segment::None, &create))
            .await;
        loop {
            match client.next_message().await {
                Some(Message::CreateChannelResponse(r)) => {
                    assert!(r.status.is_success(), "create {pv}: {:?}", r.status);
                    return (client, r.sid);
                }
                Some(_) => continue,
                None => panic!("server closed the connection during the handshake"),
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        // The server may already have closed the connection: that is an outcome, seen later.
        let _ = self.writer.write_all(bytes).await;
    }

    /// The next application message, or `None` once the connection is closed.
    async fn next_message(&mut self) -> Option<Message> {
        loop {
            let frame = self.reader.next().await.ok()??;
            if frame.header.control {
                continue;
            }
            let limits = Limits::default();
            let ops = OpTypeTable::new();
            let mut ctx = DecodeContext {
                cache: &mut self.cache,
                limits: &limits,
                ops: &ops,
            };
            return Some(
                Message::decode(&frame, &mut ctx).expect("the server sends valid messages"),
            );
        }
    }

    /// Wait for the server's answer to a hostile message: closed, or an error reply.
    async fn outcome(&mut self) -> Outcome {
        let wait = async {
            loop {
                let status = match self.next_message().await {
                    None => return Outcome::Closed,
                    // The successful INIT of a request the hostile bytes then abuse.
                    Some(Message::OpResponse(r))
                        if r.subcmd & SUB_INIT != 0 && r.status.is_success() =>
                    {
                        continue
                    }
                    Some(Message::OpResponse(r)) => r.status,
                    Some(Message::CreateChannelResponse(r)) => r.status,
                    Some(Message::GetFieldResponse(r)) => r.status,
                    Some(_) => continue,
                };
                assert!(!status.is_success(), "a hostile message was accepted");
                return Outcome::ErrorReply(status.message.clone());
            }
        };
        timeout(Duration::from_secs(10), wait)
            .await
            .expect("the server neither answered with an error nor closed within 10 s")
    }
}

/// Send `bytes` after the handshake and check the server closes the connection, saying why in
/// one log line.
async fn expect_closed(addr: SocketAddr, pv: &str, what: &str, bytes: impl FnOnce(u32) -> Vec<u8>) {
    let (mut c, sid) = RawClient::connect(addr, pv).await;
    c.send(&bytes(sid)).await;
    assert_eq!(c.outcome().await, Outcome::Closed, "{what}");
    let lines = wait_for_lines(c.local).await;
    assert_eq!(lines.len(), 1, "{what}: one log line, got {lines:?}");
}

/// The log lines about `peer`, once there is one (the line is written as the server acts;
/// give the logger a moment).
async fn wait_for_lines(peer: SocketAddr) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..50 {
        lines = lines_about(peer);
        if !lines.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lines
}

/// Send `bytes` after the handshake and check the server answers with an error status and
/// goes on serving the connection.
async fn expect_error_reply(addr: SocketAddr, what: &str, bytes: impl FnOnce(u32) -> Vec<u8>) {
    let (mut c, sid) = RawClient::connect(addr, "t:count").await;
    c.send(&bytes(sid)).await;
    match c.outcome().await {
        Outcome::ErrorReply(text) => assert!(!text.is_empty(), "{what}: the error says why"),
        Outcome::Closed => panic!("{what}: closed instead of an error reply"),
    }
    // The connection still works: a get-field of the channel succeeds.
    let mut get_field = sid.to_le_bytes().to_vec();
    get_field.extend_from_slice(&99u32.to_le_bytes());
    get_field.extend(string(""));
    c.send(&message(cmd::GET_FIELD, Segment::None, &get_field))
        .await;
    loop {
        match c.next_message().await {
            Some(Message::GetFieldResponse(r)) => {
                assert!(r.status.is_success(), "{what}: get-field after the error");
                break;
            }
            Some(_) => continue,
            None => panic!("{what}: the connection closed after an error reply"),
        }
    }
}

/// A malformed message a server must close the connection on: the PV the connection opens, what
/// the message is, and its bytes given that channel's server id.
type Malformed = (&'static str, &'static str, fn(u32) -> Vec<u8>);

/// A server of `t:count` (a counter) and `t:mailbox` with `config` and `options`, and the p4p
/// monitor that watches the counter tick while a test attacks the server.
async fn serve_watched(config: ServerConfig, options: ServerOptions) -> (Server, Watch) {
    let counter = SharedPv::readonly(NtScalar::new(ScalarType::I64).create());
    let source = Arc::new(StaticSource::new());
    source.add("t:count", counter.clone());
    source.add(
        "t:mailbox",
        SharedPv::mailbox(NtScalar::new(ScalarType::F64).create()),
    );
    let server = Server::start_with(config, vec![source], options)
        .await
        .expect("server starts");
    let watch = Watch::start(counter, server.udp_addr().port(), "t:count").await;
    (server, watch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_and_harms_no_other_client() {
    logs();
    let config = ServerConfig {
        idle_timeout: Duration::from_secs(3),
        ..ServerConfig::isolated()
    };
    let options = ServerOptions {
        limits: ServerLimits {
            decode: Limits {
                max_message_size: MAX_MESSAGE,
                ..Limits::default()
            },
            ..ServerLimits::default()
        },
        ..ServerOptions::default()
    };
    let (server, watch) = serve_watched(config, options).await;
    let (addr, udp) = (server.tcp_addr(), server.udp_addr());
    let before = common::resident_bytes();

    timeout(Duration::from_secs(120), async {
        // Each is closed at once, with one log line about it.
        let closing: [Malformed; 8] = [
            ("t:count", "wrong magic", |_| {
                vec![0x00, 0x02, 0x00, 0x07, 0, 0, 0, 0]
            }),
            ("t:count", "a size claiming 3 GiB", |_| {
                let mut m = message(cmd::GET, Segment::None, &[]);
                m[4..8].copy_from_slice(&0xC000_0000u32.to_le_bytes());
                m.extend_from_slice(&[0u8; 64]);
                m
            }),
            ("t:count", "a truncated create-channel", |_| {
                message(cmd::CREATE_CHANNEL, Segment::None, &[0x01, 0x00, 0x07])
            }),
            ("t:count", "a pvRequest nested 64 levels deep", |sid| {
                let mut p = op(sid, 1, SUB_INIT);
                p.extend(nested_type(64));
                message(cmd::GET, Segment::None, &p)
            }),
            ("t:count", "a type-cache reference never defined", |sid| {
                let mut p = op(sid, 1, SUB_INIT);
                p.extend_from_slice(&[0xFE, 0x34, 0x12]);
                message(cmd::GET, Segment::None, &p)
            }),
            ("t:count", "a segmented message that never ends", |_| {
                let chunk = vec![0u8; 256 * 1024];
                let mut bytes = message(cmd::CREATE_CHANNEL, Segment::First, &chunk);
                for _ in 0..(2 * MAX_MESSAGE / chunk.len()) {
                    bytes.extend(message(cmd::CREATE_CHANNEL, Segment::Middle, &chunk));
                }
                bytes
            }),
            ("t:count", "a first segment and then silence", |_| {
                message(cmd::CREATE_CHANNEL, Segment::First, &[0x01, 0x00])
            }),
            (
                "t:mailbox",
                "a put whose bitset runs past the structure",
                |sid| {
                    // Put INIT with an empty pvRequest, then data whose bitset marks bit 100.
                    let mut init = op(sid, 5, SUB_INIT);
                    init.extend_from_slice(&[0x80, 0x00, 0x00]);
                    let mut put = op(sid, 5, 0x00);
                    put.push(13);
                    put.extend_from_slice(&[0u8; 12]);
                    put.push(0x10);
                    let mut bytes = message(cmd::PUT, Segment::None, &init);
                    bytes.extend(message(cmd::PUT, Segment::None, &put));
                    bytes
                },
            ),
        ];
        for (pv, what, bytes) in closing {
            expect_closed(addr, pv, what, bytes).await;
        }
        expect_error_reply(addr, "a get on a channel that does not exist", |_| {
            let mut p = op(9999, 1, SUB_INIT);
            p.extend_from_slice(&[0x80, 0x00, 0x00]);
            message(cmd::GET, Segment::None, &p)
        })
        .await;
        expect_error_reply(addr, "a get on a request that does not exist", |sid| {
            message(cmd::GET, Segment::None, &op(sid, 4242, 0x00))
        })
        .await;

        // A flood of searches and garbage datagrams over UDP.
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let reply_port = sock.local_addr().unwrap().port();
        for i in 0..20_000u32 {
            let datagram = if i % 2 == 0 {
                search(i, reply_port, "t:count")
            } else {
                vec![0xCA, 0x02, 0x00, 0x03, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3]
            };
            let _ = sock.send_to(&datagram, udp).await;
        }
        let mut answer = [0u8; 2048];
        assert!(
            timeout(Duration::from_secs(5), sock.recv_from(&mut answer))
                .await
                .is_ok(),
            "the flooded server still answers searches"
        );
    })
    .await
    .expect("hostile cases within the time limit");

    // Every connection closed for bad input is counted (the silent first segment is closed
    // as idle, not as bad input), and so are the searches of the flood past the rate limit.
    let stats = server.stats();
    assert_eq!(stats.closed_for_bad_input, 7, "{stats}");
    assert!(stats.dropped_searches > 0, "{stats}");

    let grown = common::resident_bytes().saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "server memory grew by {} MiB under hostile input",
        grown >> 20
    );

    // The p4p monitor saw every update, in order, throughout.
    watch.check_nothing_missed().await;
    server.stop().await;
}

/// Connect from `from` and check the server closes the connection at once, before its
/// greeting. The first refusal of a kind is logged in one line naming the peer and `limit`;
/// more of the same kind within a second are counted but not logged, so that a flood cannot
/// flood the log.
async fn expect_refused(from: Ipv4Addr, addr: SocketAddr, limit: &str, first: bool) {
    use tokio::io::AsyncReadExt;
    let mut stream = connect_from(from, addr).await;
    let local = stream.local_addr().unwrap();
    let mut buf = [0u8; 64];
    let read = timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("the server decides within 10 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "a connection from {from} past {limit} was served"
    );
    if first {
        let lines = wait_for_lines(local).await;
        assert_eq!(lines.len(), 1, "one log line about {local}, got {lines:?}");
        assert!(lines[0].contains(limit), "{}", lines[0]);
    } else {
        let lines = lines_about(local);
        assert!(lines.len() <= 1, "{lines:?}");
    }
}

/// A search for `pv` with `sequence`, its reply going back to the sender's `reply_port`.
fn search(sequence: u32, reply_port: u16, pv: &str) -> Vec<u8> {
    let mut s = sequence.to_le_bytes().to_vec();
    s.extend_from_slice(&[0x81, 0, 0, 0]);
    s.extend_from_slice(&[0u8; 16]);
    s.extend_from_slice(&reply_port.to_le_bytes());
    s.push(1);
    s.extend(string("tcp"));
    s.extend_from_slice(&1u16.to_le_bytes());
    s.extend_from_slice(&sequence.to_le_bytes());
    s.extend(string(pv));
    message(cmd::SEARCH, Segment::None, &s)
}

/// Create channel `name` as `cid` on a raw client: its sid, or the error text.
async fn create_channel(c: &mut RawClient, cid: u32, name: &str) -> Result<u32, String> {
    let mut create = 1u16.to_le_bytes().to_vec();
    create.extend_from_slice(&cid.to_le_bytes());
    create.extend(string(name));
    c.send(&message(cmd::CREATE_CHANNEL, Segment::None, &create))
        .await;
    loop {
        match c.next_message().await {
            Some(Message::CreateChannelResponse(r)) if r.status.is_success() => return Ok(r.sid),
            Some(Message::CreateChannelResponse(r)) => return Err(r.status.message.clone()),
            Some(_) => continue,
            None => panic!("closed instead of answering create-channel {name}"),
        }
    }
}

/// Create a get on `sid` as `ioid`: `Ok` or the error text.
async fn create_get(c: &mut RawClient, sid: u32, ioid: u32) -> Result<(), String> {
    let mut p = op(sid, ioid, SUB_INIT);
    p.extend_from_slice(&[0x80, 0x00, 0x00]);
    c.send(&message(cmd::GET, Segment::None, &p)).await;
    loop {
        match c.next_message().await {
            Some(Message::OpResponse(r)) if r.ioid == ioid && r.status.is_success() => {
                return Ok(())
            }
            Some(Message::OpResponse(r)) if r.ioid == ioid => return Err(r.status.message.clone()),
            Some(_) => continue,
            None => panic!("closed instead of answering get {ioid}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_only_the_peer_that_reaches_them() {
    logs();
    const PER_HOST: usize = 4;
    const IN_ALL: usize = 8;
    const SEARCHES_PER_SECOND: u32 = 20;
    let options = ServerOptions {
        limits: ServerLimits {
            connection: ConnLimits {
                max_channels: 2,
                max_operations: 3,
                max_operations_per_channel: 2,
                ..ConnLimits::default()
            },
            max_connections: IN_ALL,
            max_connections_per_host: PER_HOST,
            max_searches_per_second: SEARCHES_PER_SECOND,
            ..ServerLimits::default()
        },
        ..ServerOptions::default()
    };
    // The p4p monitor connects from 127.0.0.1, one connection of the eight.
    let (server, watch) = serve_watched(ServerConfig::isolated(), options).await;
    let (addr, udp) = (server.tcp_addr(), server.udp_addr());

    timeout(Duration::from_secs(60), async {
        // Channels and operations past their limits: an error status, and the connection
        // goes on.
        let (mut c, count) = RawClient::connect(addr, "t:count").await;
        let mailbox = create_channel(&mut c, 8, "t:mailbox").await.unwrap();
        let e = create_channel(&mut c, 9, "t:mailbox").await.unwrap_err();
        assert!(e.contains("max_channels = 2"), "{e}");
        create_get(&mut c, count, 1).await.unwrap();
        create_get(&mut c, count, 2).await.unwrap();
        let e = create_get(&mut c, count, 3).await.unwrap_err();
        assert!(e.contains("max_operations_per_channel = 2"), "{e}");
        create_get(&mut c, mailbox, 4).await.unwrap();
        let e = create_get(&mut c, mailbox, 5).await.unwrap_err();
        assert!(e.contains("max_operations = 3"), "{e}");
        drop(c);

        // A flood of connections from one host: refused past its limit, while other hosts
        // still connect.
        let host_b = Ipv4Addr::new(127, 0, 0, 2);
        let mut from_b = Vec::new();
        for _ in 0..PER_HOST {
            from_b.push(RawClient::connect_from(host_b, addr, "t:count").await);
        }
        for attempt in 0..3 {
            expect_refused(host_b, addr, "max_connections_per_host", attempt == 0).await;
        }
        let (other, _) = RawClient::connect(addr, "t:count").await;
        drop(other);

        // The server full: three more hosts take the last places, a fourth is refused.
        let mut others = Vec::new();
        for n in 3..6 {
            let host = Ipv4Addr::new(127, 0, 0, n);
            others.push(RawClient::connect_from(host, addr, "t:count").await);
        }
        expect_refused(Ipv4Addr::new(127, 0, 0, 6), addr, "max_connections", true).await;

        // A connection that closes frees its place.
        from_b.pop();
        let mut admitted = false;
        for _ in 0..100 {
            let mut stream = connect_from(host_b, addr).await;
            let mut buf = [0u8; 8];
            use tokio::io::AsyncReadExt;
            if let Ok(Ok(n)) = timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                if n > 0 {
                    admitted = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(admitted, "the place of a closed connection was never freed");
        drop(from_b);
        drop(others);

        // A flood of searches from one address: cut to its rate, while another address
        // searching at the same time is answered every time.
        let flooder = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let flooder_port = flooder.local_addr().unwrap().port();
        let started = std::time::Instant::now();
        let flood = tokio::spawn(async move {
            let mut sent = 0u32;
            // About 2,000 searches a second for 2 s: a hundred times the limit, yet slow
            // enough that the kernel never drops datagrams of the other address.
            for i in 0..4000u32 {
                let _ = flooder
                    .send_to(&search(i, flooder_port, "t:count"), udp)
                    .await;
                sent += 1;
                if i % 20 == 19 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let mut answered = 0u32;
            let mut buf = [0u8; 2048];
            while timeout(Duration::from_millis(500), flooder.recv_from(&mut buf))
                .await
                .is_ok()
            {
                answered += 1;
            }
            (sent, answered)
        });
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client_port = client.local_addr().unwrap().port();
        for i in 0..10u32 {
            let sequence = 1_000_000 + i;
            client
                .send_to(&search(sequence, client_port, "t:count"), udp)
                .await
                .unwrap();
            let mut buf = [0u8; 2048];
            let (n, _) = timeout(Duration::from_secs(5), client.recv_from(&mut buf))
                .await
                .expect("a search from another address is answered during the flood")
                .unwrap();
            // The reply's sequence follows the 8-byte header and the 12-byte GUID.
            let got = u32::from_le_bytes(buf[20..24].try_into().unwrap());
            assert!(
                n > 24 && got == sequence,
                "reply to search {sequence}: {got}"
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        let (sent, answered) = flood.await.unwrap();
        let elapsed = started.elapsed().as_secs_f64();
        let most = SEARCHES_PER_SECOND as f64 * (1.0 + elapsed) + 1.0;
        assert!(
            answered > 0 && f64::from(answered) <= most,
            "the flooder got {answered} answers of {sent} in {elapsed:.1} s (at most {most:.0})"
        );
        let stats = server.stats();
        assert!(
            stats.dropped_searches >= u64::from(sent - answered),
            "{stats}: {sent} sent, {answered} answered"
        );
        // The drops are logged, one line a second at most.
        let lines = lines_about(SocketAddr::new(host_b.into(), flooder_port));
        assert!(!lines.is_empty(), "no log line about the search flood");
        assert!(lines[0].contains("max_searches_per_second"), "{}", lines[0]);
        assert!(
            lines.len() as f64 <= elapsed + 2.0,
            "{} log lines in {elapsed:.1} s",
            lines.len()
        );
    })
    .await
    .expect("the limit cases within the time limit");

    let stats = server.stats();
    assert_eq!(stats.refused_channels, 1, "{stats}");
    assert_eq!(stats.refused_operations, 1, "{stats}");
    assert_eq!(stats.refused_operations_per_channel, 1, "{stats}");
    assert!(stats.refused_connections_per_host >= 3, "{stats}");
    assert_eq!(stats.refused_connections, 1, "{stats}");
    assert_eq!(stats.closed_for_bad_input, 0, "{stats}");
    watch.check_nothing_missed().await;
    server.stop().await;
}
