//! The tokio task of one server connection: read frames, feed `ServerConn`, write replies and
//! monitor updates coalesced into as few vectored writes as possible.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pva_codec::frame::{control, write_control};
use pva_codec::{ByteOrder, DecodeContext, Direction, Message, TypeCache, ValueEncoder, Writer};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use super::conn::ServerConn;
use super::limits::ConnectionPermit;
use super::stats::ServerStats;
use super::Shared;
use crate::transport::{write_chunks, FrameReader, ReadError};

/// Most monitor updates written per wake-up before reading again, so one busy monitor cannot
/// starve the connection's reads.
const UPDATES_PER_FLUSH: usize = 64;

/// A connection counted as open (in the stats, and by its gate's permit) while it lives.
struct Open {
    _permit: ConnectionPermit,
    stats: Arc<ServerStats>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.stats.closed();
    }
}

/// Serve one accepted connection from `peer` until the client leaves, breaks the protocol,
/// idles past `idle_timeout`, or the server shuts down.
pub(super) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    permit: ConnectionPermit,
    idle_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    shared.stats.accepted();
    let _open = Open {
        _permit: permit,
        stats: shared.stats.clone(),
    };
    let limits = shared.limits.decode;
    let bad_input = || shared.stats.closed_for_bad_input();
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd, limits.max_message_size);
    let wake = Arc::new(Notify::new());
    let mut conn = ServerConn::new(
        peer,
        shared.sources.clone(),
        wake.clone(),
        shared.limits.connection,
    )
    .with_access(shared.access.clone())
    .with_stats(shared.stats.clone());
    let mut cache = TypeCache::new();
    let order = ByteOrder::native();

    let mut w = Writer::new(order);
    write_control(&mut w, Direction::FromServer, control::SET_BYTE_ORDER, 0);
    if ServerConn::greeting()
        .write(&mut w, Direction::FromServer, &mut ValueEncoder::default())
        .is_err()
        || write_chunks(&mut wr, &w.finish()).await.is_err()
    {
        return;
    }

    let mut out = Vec::new();
    loop {
        tokio::select! {
            frame = tokio::time::timeout(idle_timeout, reader.next()) => {
                let frame = match frame {
                    Err(_) => {
                        tracing::info!(%peer, "closing idle connection");
                        return;
                    }
                    Ok(Ok(Some(f))) => f,
                    Ok(Ok(None)) => return,
                    Ok(Err(e)) => {
                        if matches!(e, ReadError::Decode(_)) {
                            bad_input();
                        }
                        tracing::warn!(%peer, "closing connection: {e}");
                        return;
                    }
                };
                if frame.header.control {
                    if frame.header.command == control::ECHO_REQUEST {
                        let mut w = Writer::new(order);
                        write_control(&mut w, Direction::FromServer, control::ECHO_RESPONSE, frame.header.payload_size);
                        if write_chunks(&mut wr, &w.finish()).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                let msg = Message::decode(&frame, &mut DecodeContext { cache: &mut cache, limits: &limits, ops: &conn });
                let msg = match msg {
                    Ok(m) => m,
                    Err(e) => {
                        bad_input();
                        tracing::warn!(%peer, command = frame.header.command, "closing connection: undecodable message: {e}");
                        return;
                    }
                };
                if let Err(e) = conn.handle(msg, &mut out) {
                    bad_input();
                    tracing::warn!(%peer, "closing connection: {e}");
                    return;
                }
            }
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
        conn.poll_monitors(&mut out, UPDATES_PER_FLUSH);
        if !out.is_empty() {
            let mut w = Writer::with_capacity(order, 4096);
            let mut enc = ValueEncoder::default();
            for m in out.drain(..) {
                if let Err(e) = m.write(&mut w, Direction::FromServer, &mut enc) {
                    tracing::error!(%peer, "cannot encode a reply: {e}");
                    return;
                }
            }
            if write_chunks(&mut wr, &w.finish()).await.is_err() {
                return;
            }
        }
        if conn.monitors_ready() {
            wake.notify_one();
        }
    }
}
