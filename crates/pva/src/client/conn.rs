//! The tokio task of one TCP connection: moves frames between the socket and a [`ClientConn`],
//! sends echoes, and hands events to whoever waits for them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pva_codec::msg::SearchResponse;
use pva_codec::{Limits, Status};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::monitor::EventQueue;
use super::proto::{ClientConn, Credentials, Event, Failure, Ioid, Output, Request};
use super::window::Window;
use crate::squash;
use crate::transport::{write_chunks, FrameReader};

/// How often a connection sends an echo: half the connection timeout, within 1..15 s (as pvxs
/// does), so that servers using the same timeout never find it idle.
fn echo_period(timeout: Duration) -> Duration {
    (timeout / 2).clamp(Duration::from_secs(1), Duration::from_secs(15))
}

/// How long a server may stay silent, echoes unanswered, before the connection is given up:
/// 4/3 of the connection timeout (as pvxs), and never less than two echo periods.
fn silence_limit(timeout: Duration) -> Duration {
    (timeout * 4 / 3).max(echo_period(timeout) * 2)
}

/// Most frames handled from one read before their events are handed on, so one busy monitor
/// cannot delay the connection's other work for long.
const FRAMES_PER_BATCH: usize = 64;

/// What the rest of the client asks of a connection task.
pub(crate) enum ConnCmd {
    /// Run an operation and report to `sink`.
    Start { request: Request, sink: Sink },
    /// The user took `n` updates of monitor `ioid`.
    Consumed { ioid: Ioid, n: u32 },
    /// The user dropped monitor `ioid`: destroy it on the server now.
    Cancel { ioid: Ioid },
    /// Search for a name over this connection (name servers).
    Search {
        sequence: u32,
        id: u32,
        name: String,
    },
}

/// Where an operation's outcome goes.
pub(crate) enum Sink {
    /// A one-shot operation's result.
    Once(oneshot::Sender<Result<Output, Failure>>),
    /// A monitor's events, and how it ended (`None`: lost, may be created again).
    Monitor {
        events: Arc<EventQueue>,
        ended: oneshot::Sender<Option<Status>>,
        started: bool,
    },
}

/// Lets the user's side acknowledge a monitor update to the connection that delivered it
/// (pipelined monitors only).
#[derive(Debug, Clone)]
pub(crate) struct Acker {
    conn: mpsc::WeakUnboundedSender<ConnCmd>,
    ioid: Ioid,
    /// Report taken updates in batches of this many ([`Window::report_batch`] when the update
    /// was delivered): acks go out in time without a message per update.
    pub(crate) batch: u32,
}

impl Acker {
    /// `n` updates were taken (or dropped) by the user's side.
    pub(crate) fn ack(&self, n: u32) {
        // A connection that is gone needs no ack.
        if let Some(conn) = self.conn.upgrade() {
            let _ = conn.send(ConnCmd::Consumed { ioid: self.ioid, n });
        }
    }
}

/// What a monitor's user receives, before it is turned into a public event.
#[derive(Debug)]
pub(crate) enum MonitorItem {
    Connected,
    /// An update; its carry is `None` when the monitor is not pipelined (nothing to
    /// acknowledge).
    Update(squash::Update<Option<Acker>>),
    Disconnected,
    Finished(Status),
}

/// Receives search answers that arrive over TCP.
pub(crate) type SearchSink = Arc<dyn Fn(SearchResponse, SocketAddr) + Send + Sync>;

/// A running connection.
#[derive(Clone)]
pub(crate) struct ConnHandle {
    pub(crate) tx: mpsc::UnboundedSender<ConnCmd>,
}

impl ConnHandle {
    /// True while the connection task runs.
    pub(crate) fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }
}

/// Connect to `peer` and start its task.
pub(crate) async fn connect(
    peer: SocketAddr,
    credentials: Credentials,
    limits: Limits,
    timeout: Duration,
    on_search: SearchSink,
) -> std::io::Result<ConnHandle> {
    let stream = TcpStream::connect(peer).await?;
    stream.set_nodelay(true)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let task = ConnTask {
        proto: ClientConn::new(credentials, limits),
        sinks: HashMap::new(),
        me: tx.downgrade(),
        peer,
        on_search,
    };
    tokio::spawn(task.run(stream, rx, limits.max_message_size, timeout));
    Ok(ConnHandle { tx })
}

struct ConnTask {
    proto: ClientConn,
    sinks: HashMap<Ioid, Sink>,
    me: mpsc::WeakUnboundedSender<ConnCmd>,
    peer: SocketAddr,
    on_search: SearchSink,
}

impl ConnTask {
    async fn run(
        mut self,
        stream: TcpStream,
        mut rx: mpsc::UnboundedReceiver<ConnCmd>,
        max_message: usize,
        timeout: Duration,
    ) {
        let (read, mut write) = stream.into_split();
        let mut reader = FrameReader::tcp(read, max_message);
        let (wtx, mut wrx) = mpsc::unbounded_channel::<Vec<Bytes>>();
        let writer = tokio::spawn(async move {
            while let Some(mut chunks) = wrx.recv().await {
                while let Ok(more) = wrx.try_recv() {
                    chunks.extend(more);
                }
                if write_chunks(&mut write, &chunks).await.is_err() {
                    break;
                }
            }
        });
        let mut echo = tokio::time::interval(echo_period(timeout));
        echo.tick().await;
        let silence_limit = silence_limit(timeout);
        let mut last_heard = tokio::time::Instant::now();
        let mut cmds_open = true;
        loop {
            let chunks = self.proto.poll_transmit();
            if !chunks.is_empty() && wtx.send(chunks).is_err() {
                break;
            }
            if self.dispatch() {
                // Let the monitors' users take what was delivered before reading on: with
                // data always waiting, this task would otherwise keep a thread the users
                // share (a current-thread runtime, or the same worker) to itself.
                tokio::task::yield_now().await;
            }
            if !cmds_open && self.sinks.is_empty() {
                break;
            }
            tokio::select! {
                frame = reader.next() => match frame {
                    Ok(Some(frame)) => {
                        last_heard = tokio::time::Instant::now();
                        if let Err(e) = self.handle_frames(frame, &mut reader) {
                            tracing::warn!("closing connection to {}: {e}", self.peer);
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("connection to {} failed: {e}", self.peer);
                        break;
                    }
                },
                cmd = rx.recv(), if cmds_open => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => cmds_open = false,
                },
                _ = echo.tick() => {
                    if last_heard.elapsed() > silence_limit {
                        tracing::warn!(
                            "closing connection to {}: silent for {:?}, echoes unanswered",
                            self.peer,
                            last_heard.elapsed()
                        );
                        break;
                    }
                    self.proto.echo();
                }
                _ = wtx.closed() => break,
            }
        }
        writer.abort();
        self.proto.disconnected();
        self.dispatch();
        rx.close();
        while let Ok(cmd) = rx.try_recv() {
            self.command(cmd);
        }
        self.proto.disconnected();
        self.dispatch();
    }

    /// Handle `first` and every further frame already read, so that their events go to the
    /// user in one batch (one lock and at most one wake-up per monitor) rather than one each.
    fn handle_frames<R: tokio::io::AsyncRead + Unpin>(
        &mut self,
        first: pva_codec::Frame,
        reader: &mut FrameReader<R>,
    ) -> Result<(), String> {
        self.proto.handle_frame(&first).map_err(|e| e.to_string())?;
        for _ in 1..FRAMES_PER_BATCH {
            match reader.buffered_frame() {
                Ok(Some(frame)) => self.proto.handle_frame(&frame).map_err(|e| e.to_string())?,
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    fn command(&mut self, cmd: ConnCmd) {
        match cmd {
            ConnCmd::Start { request, sink } => {
                let ioid = self.proto.start(request);
                if let Sink::Monitor { events, .. } = &sink {
                    // The user may have dropped the monitor while this command was in flight.
                    if !events.register(self.me.clone(), ioid) {
                        self.proto.cancel(ioid);
                        return;
                    }
                }
                self.sinks.insert(ioid, sink);
            }
            ConnCmd::Consumed { ioid, n } => self.proto.consumed(ioid, n),
            ConnCmd::Cancel { ioid } => self.drop_monitor(ioid),
            ConnCmd::Search { sequence, id, name } => self.proto.search(sequence, id, &name),
        }
    }

    /// Hand the protocol's events to their users; true when monitor updates were delivered.
    fn dispatch(&mut self) -> bool {
        // Consecutive updates of one monitor go to its queue together.
        let mut updates: Option<(Ioid, Vec<MonitorItem>)> = None;
        let mut delivered = false;
        while let Some(ev) = self.proto.poll_event() {
            if let Event::MonitorUpdate {
                ioid,
                value,
                changed,
                overrun,
            } = ev
            {
                if updates.as_ref().is_some_and(|(id, _)| *id != ioid) {
                    self.deliver(updates.take());
                }
                let batch = self
                    .proto
                    .window(ioid)
                    .filter(|w| w.pipeline())
                    .map(Window::report_batch);
                let item = MonitorItem::Update(squash::Update {
                    value,
                    changed,
                    overrun,
                    squashed: 0,
                    carry: batch.map(|batch| Acker {
                        conn: self.me.clone(),
                        ioid,
                        batch,
                    }),
                });
                updates
                    .get_or_insert_with(|| (ioid, Vec::new()))
                    .1
                    .push(item);
                delivered = true;
                continue;
            }
            self.deliver(updates.take());
            match ev {
                Event::Validated | Event::MonitorUpdate { .. } => {}
                Event::Done { ioid, result } => {
                    if let Some(Sink::Once(tx)) = self.sinks.remove(&ioid) {
                        let _ = tx.send(result);
                    }
                }
                Event::MonitorStarted { ioid, .. } => {
                    if let Some(Sink::Monitor {
                        events, started, ..
                    }) = self.sinks.get_mut(&ioid)
                    {
                        *started = true;
                        if events.send(MonitorItem::Connected).is_err() {
                            self.drop_monitor(ioid);
                        }
                    }
                }
                Event::MonitorEnded { ioid, status } => {
                    if let Some(Sink::Monitor {
                        events,
                        ended,
                        started,
                    }) = self.sinks.remove(&ioid)
                    {
                        match &status {
                            Some(s) => {
                                let _ = events.send(MonitorItem::Finished(s.clone()));
                            }
                            None if started => {
                                let _ = events.send(MonitorItem::Disconnected);
                            }
                            None => {}
                        }
                        let _ = ended.send(status);
                    }
                }
                Event::SearchResponse(r) => (self.on_search)(r, self.peer),
            }
        }
        self.deliver(updates.take());
        delivered
    }

    /// Hand a monitor's updates to its queue at once.
    fn deliver(&mut self, updates: Option<(Ioid, Vec<MonitorItem>)>) {
        let Some((ioid, items)) = updates else { return };
        if let Some(Sink::Monitor { events, .. }) = self.sinks.get(&ioid) {
            if events.send_all(items).is_err() {
                self.drop_monitor(ioid);
            }
        }
    }

    /// The monitor's user is gone: stop it on the server.
    fn drop_monitor(&mut self, ioid: Ioid) {
        self.sinks.remove(&ioid);
        self.proto.cancel(ioid);
    }
}
