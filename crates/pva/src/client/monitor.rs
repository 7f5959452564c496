//! Subscriptions: a [`Monitor`] yields the full value after each update, tells when the server
//! goes away and comes back, and re-subscribes by itself. When pipelined, the server sends at
//! most a queue's worth of updates, and the client acknowledges them as they are taken.
//!
//! Between the connection and the user sits a bounded queue of `queue_size` updates. When the
//! user falls behind (possible only without pipelining, where the server does not wait), a new
//! update is squashed into the newest queued one, as the server does: memory stays bounded,
//! the user sees the latest value, and [`Update::squashed`] and [`Monitor::squashed`] say how
//! many updates were lost, so none is lost silently. Dropping a [`Monitor`] destroys the
//! subscription on the server at once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pva_codec::{BitSet, Status, StructValue};
use tokio::sync::{mpsc, oneshot, Notify};

use super::conn::{Acker, ConnCmd, MonitorItem, Sink};
use super::context::{parse_request, Context};
use super::error::ClientError;
use super::proto::{Ioid, OpKind, Request};
use super::window::DEFAULT_BYTE_BUDGET;
use crate::squash::{self, Carry, Entry, SquashQueue};

/// Default monitor queue size (pvxs: 4).
pub const DEFAULT_QUEUE_SIZE: u32 = 4;

/// One monitor update.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The full value, with this update merged in.
    pub value: StructValue,
    /// The fields this update changed.
    pub changed: BitSet,
    /// Fields that changed more than once since the previous update (the server or the
    /// client squashed).
    pub overrun: BitSet,
    /// Updates the client squashed into this one because its queue was full: that many
    /// updates before this one were never seen. Updates the *server* squashed show only in
    /// `overrun` (and, for frame streams, as gaps in a sequence number).
    pub squashed: u64,
}

/// What a monitor reports.
#[derive(Debug, Clone, PartialEq)]
pub enum MonitorEvent {
    /// Subscribed (first, and again after each reconnection); updates follow.
    Connected,
    /// A new value.
    Update(Update),
    /// The server went away; the monitor searches and subscribes again by itself.
    Disconnected,
    /// The server ended the subscription (or refused it): no more events follow.
    Finished(Result<(), ClientError>),
}

/// Subscribes to a channel.
#[must_use = "a monitor does nothing until executed"]
pub struct MonitorBuilder {
    ctx: Context,
    name: String,
    request: Option<String>,
    queue_size: Option<u32>,
    pipeline: Option<bool>,
    budget: Option<u64>,
    server: Option<SocketAddr>,
}

impl MonitorBuilder {
    /// The pvRequest text (`field(value)record[queueSize=8]`); by default every field.
    pub fn request(mut self, text: impl Into<String>) -> Self {
        self.request = Some(text.into());
        self
    }

    /// Updates the client holds (default 4, or the request's `queueSize`). With pipelining
    /// the server waits when the user has not taken them; without, further updates are
    /// squashed and counted ([`Monitor::squashed`]).
    pub fn queue_size(mut self, n: u32) -> Self {
        self.queue_size = Some(n);
        self
    }

    /// Flow control with acks (default off as in pvxs, or the request's `pipeline`).
    pub fn pipeline(mut self, on: bool) -> Self {
        self.pipeline = Some(on);
        self
    }

    /// Bytes a pipelined monitor lets the server have in flight (default 64 MiB): the client
    /// grants as many updates as fit at their running size, at most `queue_size`, so that a
    /// deep queue serves small updates while large frames stay bounded in memory.
    pub fn byte_budget(mut self, bytes: u64) -> Self {
        self.budget = Some(bytes);
        self
    }

    /// Subscribe at this server, without searching for the channel (as pvxs's `server()`).
    pub fn server(mut self, addr: SocketAddr) -> Self {
        self.server = Some(addr);
        self
    }

    /// Start the subscription; it searches and connects in the background.
    pub fn exec(self) -> Result<Monitor, ClientError> {
        let mut req = parse_request(self.request.as_deref())?;
        let queue_size = self
            .queue_size
            .or(req.queue_size())
            .unwrap_or(DEFAULT_QUEUE_SIZE)
            .max(1);
        let pipeline = match (self.pipeline, req.record_option("pipeline")) {
            (Some(p), _) => p,
            (None, Some(_)) => req.pipeline(),
            (None, None) => false,
        };
        req = req
            .with_record_option("queueSize", queue_size)
            .with_record_option("pipeline", pipeline);
        let budget = pipeline.then(|| self.budget.unwrap_or(DEFAULT_BYTE_BUDGET));
        let request = Request {
            channel: self.name.clone(),
            pv_request: req.to_value(),
            kind: OpKind::Monitor {
                queue_size,
                pipeline,
                budget,
            },
        };
        let queue = Arc::new(EventQueue::new(queue_size as usize));
        let task =
            tokio::spawn(drive(self.ctx, request, self.server, queue.clone())).abort_handle();
        Ok(Monitor {
            name: self.name,
            queue,
            task,
            unacked: None,
        })
    }
}

/// A running subscription. Dropping it unsubscribes: the server is told at once.
#[derive(Debug)]
pub struct Monitor {
    name: String,
    queue: Arc<EventQueue>,
    task: tokio::task::AbortHandle,
    /// Updates taken but not yet reported to the connection, to report them in batches
    /// rather than waking the connection for each one.
    unacked: Option<(Acker, u32)>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.queue.close();
        self.task.abort();
    }
}

impl Monitor {
    /// The channel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Updates squashed on the client side since the monitor started (the sum of
    /// [`Update::squashed`] over every update, including those not yet taken).
    pub fn squashed(&self) -> u64 {
        self.queue.lock().items.squashed()
    }

    /// Updates waiting to be taken.
    pub fn pending(&self) -> usize {
        self.queue.lock().items.updates()
    }

    /// Report the updates taken to the connection that delivered them.
    fn flush_acks(&mut self) {
        if let Some((acker, n)) = self.unacked.take() {
            acker.ack(n);
        }
    }

    /// The next event; `None` after [`MonitorEvent::Finished`]. Taking an update frees its
    /// slot in the server's window.
    pub async fn recv(&mut self) -> Option<MonitorEvent> {
        let item = match self.queue.try_recv() {
            Some(item) => item,
            None => {
                // About to wait: the server must know of everything taken so far.
                self.flush_acks();
                self.queue.recv().await?
            }
        };
        Some(self.take(item))
    }

    /// The next event if one is already queued, without waiting: lets a busy user take a
    /// burst of updates without polling its other futures for each. `None` when nothing is
    /// queued (or the monitor ended: [`Monitor::recv`] tells which).
    pub fn try_recv(&mut self) -> Option<MonitorEvent> {
        match self.queue.try_recv() {
            Some(item) => Some(self.take(item)),
            None => {
                // The user will wait next: the server must know of everything taken so far.
                self.flush_acks();
                None
            }
        }
    }

    /// Turn a queued item into the user's event, acknowledging pipelined updates in batches.
    fn take(&mut self, item: MonitorItem) -> MonitorEvent {
        match item {
            MonitorItem::Connected => {
                self.flush_acks();
                MonitorEvent::Connected
            }
            MonitorItem::Update(squash::Update {
                value,
                changed,
                overrun,
                squashed,
                carry,
            }) => {
                if let Some(acker) = carry {
                    let n = u32::try_from(squashed + 1).unwrap_or(u32::MAX);
                    let batch = acker.batch;
                    // Updates between two connection events come over one subscription.
                    let total = match &mut self.unacked {
                        Some((_, count)) => {
                            *count = count.saturating_add(n);
                            *count
                        }
                        None => {
                            self.unacked = Some((acker, n));
                            n
                        }
                    };
                    if total >= batch {
                        self.flush_acks();
                    }
                }
                MonitorEvent::Update(Update {
                    value,
                    changed,
                    overrun,
                    squashed,
                })
            }
            MonitorItem::Disconnected => {
                self.flush_acks();
                MonitorEvent::Disconnected
            }
            MonitorItem::Finished(status) => MonitorEvent::Finished(if status.is_success() {
                Ok(())
            } else {
                Err(ClientError::Remote {
                    name: self.name.clone(),
                    status,
                })
            }),
        }
    }
}

impl Context {
    /// Subscribe to channel `name`.
    pub fn monitor(&self, name: &str) -> MonitorBuilder {
        MonitorBuilder {
            ctx: self.clone(),
            name: name.to_owned(),
            request: None,
            queue_size: None,
            pipeline: None,
            budget: None,
            server: None,
        }
    }
}

/// Pause between attempts to subscribe again after a failed connection.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Search (unless `at` names the server), connect and subscribe; after each loss, again, until
/// the server ends it or the user drops the monitor.
async fn drive(ctx: Context, request: Request, at: Option<SocketAddr>, events: Arc<EventQueue>) {
    let _done = SenderDone(events.clone());
    loop {
        let server = match at {
            Some(addr) => addr,
            None => tokio::select! {
                s = ctx.resolve(&request.channel) => s,
                _ = events.closed() => return,
            },
        };
        let conn = match ctx.connection(server).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("monitor '{}': {e}", request.channel);
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        let (ended_tx, ended_rx) = oneshot::channel::<Option<Status>>();
        let start = ConnCmd::Start {
            request: request.clone(),
            sink: Sink::Monitor {
                events: events.clone(),
                ended: ended_tx,
                started: false,
            },
        };
        if conn.tx.send(start).is_err() {
            tokio::time::sleep(RETRY_DELAY).await;
            continue;
        }
        let ended = tokio::select! {
            e = ended_rx => e,
            _ = events.closed() => return,
        };
        match ended {
            Ok(Some(_)) => return,
            Ok(None) | Err(_) => tokio::time::sleep(RETRY_DELAY).await,
        }
    }
}

/// Marks the queue finished when the task that feeds it ends, so `recv` returns `None`.
struct SenderDone(Arc<EventQueue>);

impl Drop for SenderDone {
    fn drop(&mut self) {
        self.0.lock().sender_done = true;
        self.0.ready.notify_one();
    }
}

/// The queue of events from a connection to a [`Monitor`]: bounded to `capacity` updates,
/// squashing (and counting) when full, with the connection's other events in order between
/// the updates.
#[derive(Debug)]
pub(crate) struct EventQueue {
    state: Mutex<QueueState>,
    /// An item was queued, or the connection side went away.
    ready: Notify,
    /// The monitor was dropped.
    gone: Notify,
}

/// A pipelined update's acknowledgement goes with it: squashed into another, the one ack
/// covers both (they came over the same subscription, or a reconnection would have queued an
/// event between them); dropped, it is acknowledged at once.
impl Carry for Option<Acker> {
    fn absorb(&mut self, newer: Self) {
        if self.is_none() {
            *self = newer;
        }
    }

    fn dropped(self, count: u64) {
        if let Some(acker) = self {
            acker.ack(u32::try_from(count).unwrap_or(u32::MAX));
        }
    }
}

#[derive(Debug)]
struct QueueState {
    /// Updates, and the other items in their places among them.
    items: SquashQueue<Option<Acker>, MonitorItem>,
    /// The monitor was dropped.
    closed: bool,
    /// No more events will come (the subscription finished).
    sender_done: bool,
    /// Where the subscription currently runs, to destroy it when the monitor is dropped.
    running_on: Option<(mpsc::WeakUnboundedSender<ConnCmd>, Ioid)>,
}

impl QueueState {
    fn push(&mut self, item: MonitorItem) {
        match item {
            MonitorItem::Update(u) => {
                self.items.push(u);
            }
            other => self.items.push_event(other),
        }
    }

    fn pop(&mut self) -> Option<MonitorItem> {
        Some(match self.items.pop()? {
            Entry::Update(u) => MonitorItem::Update(u),
            Entry::Event(other) => other,
        })
    }
}

/// The monitor was dropped: nobody takes events any more.
#[derive(Debug)]
pub(crate) struct Closed;

impl EventQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        EventQueue {
            state: Mutex::new(QueueState {
                items: SquashQueue::new(capacity),
                closed: false,
                sender_done: false,
                running_on: None,
            }),
            ready: Notify::new(),
            gone: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue an event. A full queue squashes a new update into the newest queued one (see
    /// [`SquashQueue`]).
    pub(crate) fn send(&self, item: MonitorItem) -> Result<(), Closed> {
        self.send_all(std::iter::once(item))
    }

    /// Queue events in order, as [`EventQueue::send`] does each, under one lock and with one
    /// wake-up of the user.
    pub(crate) fn send_all(
        &self,
        items: impl IntoIterator<Item = MonitorItem>,
    ) -> Result<(), Closed> {
        {
            let mut st = self.lock();
            if st.closed {
                return Err(Closed);
            }
            for item in items {
                st.push(item);
            }
        }
        self.ready.notify_one();
        Ok(())
    }

    /// Take the next event if one is queued.
    fn try_recv(&self) -> Option<MonitorItem> {
        self.lock().pop()
    }

    /// Take the next event, waiting for one; `None` once the connection side is gone.
    async fn recv(&self) -> Option<MonitorItem> {
        loop {
            {
                let mut st = self.lock();
                if let Some(item) = st.pop() {
                    return Some(item);
                }
                if st.closed || st.sender_done {
                    return None;
                }
            }
            self.ready.notified().await;
        }
    }

    /// Note where the subscription now runs; false when the monitor was already dropped.
    pub(crate) fn register(&self, conn: mpsc::WeakUnboundedSender<ConnCmd>, ioid: Ioid) -> bool {
        let mut st = self.lock();
        if st.closed {
            return false;
        }
        st.running_on = Some((conn, ioid));
        true
    }

    /// The monitor is dropped: refuse further events and destroy the subscription now.
    fn close(&self) {
        let running_on = {
            let mut st = self.lock();
            st.closed = true;
            st.items.clear();
            st.running_on.take()
        };
        if let Some((conn, ioid)) = running_on {
            if let Some(conn) = conn.upgrade() {
                let _ = conn.send(ConnCmd::Cancel { ioid });
            }
        }
        self.gone.notify_waiters();
        self.ready.notify_one();
    }

    /// Resolves once the monitor is dropped.
    pub(crate) async fn closed(&self) {
        let gone = self.gone.notified();
        tokio::pin!(gone);
        gone.as_mut().enable();
        if self.lock().closed {
            return;
        }
        gone.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::{ScalarType, StructDesc};

    fn update(n: i32) -> MonitorItem {
        let desc = Arc::new(
            StructDesc::builder("x")
                .scalar("value", ScalarType::I32)
                .build(),
        );
        let mut value = StructValue::new(desc);
        value.set("value", n).unwrap();
        MonitorItem::Update(squash::Update::new(value, BitSet::with(1), None))
    }

    fn value_of(item: &MonitorItem) -> (i32, u64) {
        match item {
            MonitorItem::Update(u) => match u.value.get("value") {
                Some(pva_codec::Value::I32(n)) => (*n, u.squashed),
                other => panic!("value {other:?}"),
            },
            other => panic!("not an update: {other:?}"),
        }
    }

    #[test]
    fn a_batch_is_queued_in_order_and_squashed_like_single_sends() {
        let batched = EventQueue::new(3);
        batched
            .send_all(
                [MonitorItem::Connected]
                    .into_iter()
                    .chain((1..=5).map(update)),
            )
            .unwrap();
        let single = EventQueue::new(3);
        single.send(MonitorItem::Connected).unwrap();
        for n in 1..=5 {
            single.send(update(n)).unwrap();
        }
        for q in [&batched, &single] {
            assert_eq!(q.lock().items.squashed(), 2);
            assert!(matches!(q.try_recv(), Some(MonitorItem::Connected)));
            let taken: Vec<_> = std::iter::from_fn(|| q.try_recv())
                .map(|i| value_of(&i))
                .collect();
            // Updates 4 and 5 squash into 3, the newest queued when the queue was full.
            assert_eq!(taken, vec![(1, 0), (2, 0), (5, 2)]);
        }
    }

    #[test]
    fn a_batch_for_a_dropped_monitor_is_refused() {
        let q = EventQueue::new(3);
        q.close();
        assert!(q.send_all((1..=2).map(update)).is_err());
    }
}
