//! The tokio task of one server connection: read frames, feed `ServerConn`, write replies and
//! monitor updates coalesced into as few vectored writes as possible.

use std::sync::Arc;
use std::time::Duration;

use pva_codec::frame::{control, write_control};
use pva_codec::{
    ByteOrder, DecodeContext, Direction, Limits, Message, TypeCache, ValueEncoder, Writer,
};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use super::conn::{ConnLimits, ServerConn};
use super::source::Source;
use crate::transport::{write_chunks, FrameReader};

/// Most monitor updates written per wake-up before reading again, so one busy monitor cannot
/// starve the connection's reads.
const UPDATES_PER_FLUSH: usize = 64;

/// Serve one accepted connection until the client leaves, breaks the protocol, idles past
/// `idle_timeout`, or the server shuts down.
pub async fn serve_connection(
    stream: TcpStream,
    sources: Vec<Arc<dyn Source>>,
    limits: Limits,
    conn_limits: ConnLimits,
    idle_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = match stream.peer_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::new(rd, limits.max_message_size);
    let wake = Arc::new(Notify::new());
    let mut conn = ServerConn::new(peer, sources, wake.clone(), conn_limits);
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
                        tracing::warn!(%peer, command = frame.header.command, "closing connection: undecodable message: {e}");
                        return;
                    }
                };
                if let Err(e) = conn.handle(msg, &mut out) {
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
