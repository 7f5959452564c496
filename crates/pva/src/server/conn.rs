//! The tokio task of one server connection: reads frames into a [`ServerConn`], writes what it
//! transmits, and runs the idle timer. The protocol itself lives in [`super::proto`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};

use super::limits::ConnectionPermit;
use super::proto::{Event, ServerConn};
use super::stats::ServerStats;
use super::wake::notify_waker;
use super::Shared;
use crate::transport::{write_chunks, FrameReader, ReadError};

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
    let limits = shared.limits;
    let bad_input = || shared.stats.closed_for_bad_input();
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let mut reader = FrameReader::tcp(rd, limits.decode.max_message_size);
    let wake = Arc::new(Notify::new());
    let mut conn = ServerConn::new(
        peer,
        shared.sources.clone(),
        notify_waker(wake.clone()),
        limits.connection,
    )
    .with_decode_limits(limits.decode)
    .with_access(shared.access.clone())
    .with_stats(shared.stats.clone());

    loop {
        let transmit = match conn.poll_transmit() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(%peer, "cannot encode a reply: {e}");
                return;
            }
        };
        if !transmit.chunks.is_empty() && write_chunks(&mut wr, &transmit.chunks).await.is_err() {
            return;
        }
        while let Some(event) = conn.poll_event() {
            log_event(peer, event);
        }
        if transmit.wake {
            wake.notify_one();
        }
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
                if let Err(e) = conn.handle_frame(&frame) {
                    bad_input();
                    tracing::warn!(%peer, "closing connection: {e}");
                    return;
                }
            }
            _ = wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn log_event(peer: SocketAddr, event: Event) {
    match event {
        Event::Validated(who) => {
            tracing::debug!(%peer, method = who.method, user = who.user, host = who.host, "client validated")
        }
        Event::ChannelCreated { sid, name } => {
            tracing::debug!(%peer, sid, name, "channel created")
        }
        Event::ChannelDestroyed { sid, name } => {
            tracing::debug!(%peer, sid, name, "channel destroyed")
        }
    }
}
