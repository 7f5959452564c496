//! Subscriptions: a [`Monitor`] yields the full value after each update, tells when the server
//! goes away and comes back, and re-subscribes by itself. When pipelined, the server sends at
//! most a queue's worth of updates, and the client acknowledges them as they are taken.

use std::time::Duration;

use pva_codec::{BitSet, Status, StructValue};
use tokio::sync::{mpsc, oneshot};

use super::conn::{ConnCmd, MonitorItem, Sink};
use super::context::{parse_request, Context};
use super::error::ClientError;
use super::proto::{OpKind, Request};

/// Default monitor queue size (pvxs: 4).
pub const DEFAULT_QUEUE_SIZE: u32 = 4;

/// One monitor update.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The full value, with this update merged in.
    pub value: StructValue,
    /// The fields this update changed.
    pub changed: BitSet,
    /// Fields that changed more than once since the previous update (the server squashed).
    pub overrun: BitSet,
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
}

impl MonitorBuilder {
    /// The pvRequest text (`field(value)record[queueSize=8]`); by default every field.
    pub fn request(mut self, text: impl Into<String>) -> Self {
        self.request = Some(text.into());
        self
    }

    /// Updates the client holds before the server must wait (default 4, or the request's
    /// `queueSize`).
    pub fn queue_size(mut self, n: u32) -> Self {
        self.queue_size = Some(n);
        self
    }

    /// Flow control with acks (default off as in pvxs, or the request's `pipeline`).
    pub fn pipeline(mut self, on: bool) -> Self {
        self.pipeline = Some(on);
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
        let request = Request {
            channel: self.name.clone(),
            pv_request: req.to_value(),
            kind: OpKind::Monitor {
                queue_size,
                pipeline,
            },
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(self.ctx, request, tx)).abort_handle();
        Ok(Monitor {
            name: self.name,
            rx,
            task,
        })
    }
}

/// A running subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Monitor {
    name: String,
    rx: mpsc::UnboundedReceiver<MonitorItem>,
    task: tokio::task::AbortHandle,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Monitor {
    /// The channel name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next event; `None` after [`MonitorEvent::Finished`]. Taking an update frees its
    /// slot in the server's window.
    pub async fn recv(&mut self) -> Option<MonitorEvent> {
        let item = self.rx.recv().await?;
        Some(match item {
            MonitorItem::Connected => MonitorEvent::Connected,
            MonitorItem::Update {
                value,
                changed,
                overrun,
                acker,
            } => {
                acker.ack();
                MonitorEvent::Update(Update {
                    value,
                    changed,
                    overrun,
                })
            }
            MonitorItem::Disconnected => MonitorEvent::Disconnected,
            MonitorItem::Finished(status) => MonitorEvent::Finished(if status.is_success() {
                Ok(())
            } else {
                Err(ClientError::Remote {
                    name: self.name.clone(),
                    status,
                })
            }),
        })
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
        }
    }
}

/// Pause between attempts to subscribe again after a failed connection.
const RETRY_DELAY: Duration = Duration::from_millis(200);

/// Search, connect and subscribe; after each loss, again, until the server ends it or the
/// user drops the monitor.
async fn drive(ctx: Context, request: Request, events: mpsc::UnboundedSender<MonitorItem>) {
    loop {
        let server = tokio::select! {
            s = ctx.resolve(&request.channel) => s,
            _ = events.closed() => return,
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
