//! The workflow side of a stream: monitor a PV and account for every frame, then hand frames
//! to processing threads.
//!
//! Frames are booked the moment they arrive, before any processing, so a slow processing step
//! shows as a backlog (counted, bounded by `backlog`) and never as frames the books did not
//! see. When the backlog is full the receiver waits; with a pipelined monitor the server then
//! waits too, and what it cannot hold it squashes and counts — the frames this consumer then
//! misses show as gaps in `uniqueId`.
//!
//! The books follow the rules of [`crate::accounting`]: the monitor's first update (the PV's
//! value from before the subscription) is booked apart as `initial_id`, and the run counts from
//! the first frame after it, or from [`Origin::Id`] when the run's first number is known. Only
//! frames new to the books are processed: a duplicate, or the initial value sent again, is not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::TrySendError;
use pva::client::{Context, MonitorEvent};
use serde::Serialize;
use tokio::sync::Notify;

use crate::accounting::{Books, Counts, Latency, LatencySummary, Ledger, Origin, Verdict};
use crate::frame::{Frame, FrameError};
use crate::StreamError;

/// How a consumer runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerConfig {
    /// The PV to monitor.
    pub pv: String,
    /// End once this many frames are accounted for (received or missed).
    pub expected: Option<u64>,
    /// End after this long.
    pub runtime: Option<Duration>,
    /// Monitor queue size (the server's window when pipelined).
    pub queue_size: u32,
    /// Flow control with acks: the server waits for this consumer instead of flooding it.
    pub pipeline: bool,
    /// Processing threads.
    pub threads: usize,
    /// Frames that may wait for a processing thread before the receiver waits too.
    pub backlog: usize,
    /// Simulated processing time per frame.
    pub process_time: Duration,
    /// This consumer gets every `stride`-th frame (a relay distributing over that many).
    pub stride: u64,
    /// Where the run's first frame comes from (default: the first that arrives after the
    /// monitor's initial value).
    pub origin: Origin,
    /// Ask the server for a share of the frames with pvDatabase's data distributor: the
    /// `pydistributor` option's value (`trigger:uniqueId;updates:1`, see
    /// [`pva::server::distributor`]).
    pub distributor: Option<String>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            pv: String::new(),
            expected: None,
            runtime: None,
            queue_size: 64,
            pipeline: true,
            threads: 1,
            backlog: 64,
            process_time: Duration::ZERO,
            stride: 1,
            origin: Origin::FirstReceived,
            distributor: None,
        }
    }
}

/// The state of a run, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Progress {
    /// The counts so far.
    pub counts: Counts,
    /// Frames accounted for (received or missed).
    pub accounted: u64,
    /// Frames waiting for a processing thread.
    pub backlog: usize,
    /// Frames per second since the first frame.
    pub fps: f64,
    /// Megabytes (10^6) per second since the first frame.
    pub mb_per_s: f64,
}

/// How a run went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The PV.
    pub pv: String,
    /// Frames received, missed, duplicated, out of order, ignored; counter resets.
    #[serde(flatten)]
    pub counts: Counts,
    /// The number of the monitor's initial value: the PV's value before the subscription,
    /// booked apart and never counted (unless the run's first number was given and it is one
    /// of the run's frames). `None` when it was not a frame.
    pub initial_id: Option<i64>,
    /// Frames expected, if told.
    pub expected: Option<u64>,
    /// Updates the client squashed because this consumer fell behind (included in `missed`).
    pub client_squashed: u64,
    /// Updates that changed nothing (some servers send them with pipelining): not frames.
    pub empty_updates: u64,
    /// Frames the processing threads finished (each frame once: copies are not processed).
    pub processed: u64,
    /// Most frames that waited for processing at once.
    pub max_backlog: usize,
    /// First frame number of the run received.
    pub first_id: Option<i64>,
    /// Last frame number received.
    pub last_id: Option<i64>,
    /// Missed frame numbers as `[first, last]` ranges (the first 20).
    pub missed_ranges: Vec<[i64; 2]>,
    /// Bytes of frame data received, as images (decompressed size for compressed frames).
    pub bytes: u64,
    /// Bytes of frame data as they came over the wire (less than `bytes` when compressed).
    pub wire_bytes: u64,
    /// Frames received that could not be decompressed (corrupt or truncated data, an unknown
    /// codec): booked as received, never processed.
    pub error_frames: u64,
    /// Why, for the first few error frames.
    pub errors: Vec<String>,
    /// From the first frame to the last, seconds.
    pub elapsed_s: f64,
    /// Frames per second between the first and the last frame.
    pub fps: f64,
    /// Megabytes (10^6) per second between the first and the last frame.
    pub mb_per_s: f64,
    /// From each frame's `timeStamp` to its arrival.
    pub latency: LatencySummary,
    /// Why the run ended.
    pub ended_by: EndedBy,
}

impl Report {
    /// The books as one plain record.
    pub fn books(&self) -> Books {
        Books {
            initial_id: self.initial_id,
            first_id: self.first_id,
            last_id: self.last_id,
            received: self.counts.received,
            missed: self.counts.missed,
            duplicates: self.counts.duplicates,
            out_of_order: self.counts.out_of_order,
            counter_resets: self.counts.counter_resets,
        }
    }
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    /// The expected frames were accounted for.
    Expected,
    /// The runtime was over.
    Runtime,
    /// The server ended the subscription.
    Finished,
    /// The caller stopped it.
    Stopped,
}

/// Frames per second and MB/s over a run of `frames` frames and `bytes` bytes whose first and
/// last arrivals are `span` apart.
fn rates(frames: u64, bytes: u64, span: Duration) -> (f64, f64) {
    let s = span.as_secs_f64();
    if frames < 2 || s <= 0.0 {
        return (0.0, 0.0);
    }
    // n frames span n-1 intervals; scale the bytes the same way.
    let scale = (frames - 1) as f64 / frames as f64;
    ((frames - 1) as f64 / s, bytes as f64 * scale / s / 1e6)
}

/// Most events taken from the monitor's queue in a burst before the run's end and progress
/// ticks are looked at again.
const BURST: usize = 64;

/// Most frames gathered before they are handed to the processing threads.
const MAX_HANDOVER: usize = 64;

/// A processing step run on the consumer's processing threads, once per frame booked.
pub type ProcessFn = Arc<dyn Fn(&Frame) + Send + Sync>;

/// What a consumer does besides accounting; every hook is optional.
#[derive(Default)]
pub struct Hooks {
    /// Runs on the processing threads with each frame booked (with one thread, in the order
    /// frames arrived), after the simulated processing time.
    pub process: Option<ProcessFn>,
    /// Called each time the subscription is in place: first, and after each reconnection. A
    /// workflow says it is ready to receive from here.
    pub subscribed: Option<Box<dyn FnMut() + Send>>,
}

/// The processing threads: they take frames from a bounded channel, simulate work and run the
/// processing step.
struct Workers {
    tx: Option<crossbeam_channel::Sender<Frame>>,
    /// Signalled by a thread each time it takes a frame (and when it ends), so that a receiver
    /// waiting for room in a full backlog waits without holding its thread: the receiving
    /// task may share that thread with the connection's.
    room: Arc<Notify>,
    /// A processing step to run or processing time to simulate. Without either, only
    /// compressed frames go to a thread (to be decompressed there); the others are done with
    /// on the receiving task, sparing a hand-off and a wake-up per frame.
    has_work: bool,
    threads: Vec<std::thread::JoinHandle<()>>,
    processed: Arc<AtomicU64>,
    errors: Arc<ErrorFrames>,
}

/// Most error messages a report keeps.
const KEPT_ERRORS: usize = 5;

/// Frames that could not be decompressed: a count and the first reasons.
#[derive(Default)]
struct ErrorFrames {
    count: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl ErrorFrames {
    fn book(&self, unique_id: i64, why: &crate::codec::CodecError) {
        if self.count.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!("frame {unique_id} is an error frame: {why}");
        }
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.len() < KEPT_ERRORS {
            first.push(format!("frame {unique_id}: {why}"));
        }
    }

    fn take(&self) -> (u64, Vec<String>) {
        let first = std::mem::take(&mut *self.first.lock().unwrap_or_else(PoisonError::into_inner));
        (self.count.load(Ordering::Relaxed), first)
    }
}

/// A processing thread's hold on the room signal: it signals once more when the thread ends
/// (even by a panic), so that a receiver waiting for room finds the channel without it.
struct RoomOnExit(Arc<Notify>);

impl Drop for RoomOnExit {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

impl Workers {
    fn start(config: &ConsumerConfig, step: Option<ProcessFn>) -> Workers {
        let has_work = step.is_some() || !config.process_time.is_zero();
        let (tx, rx) = crossbeam_channel::bounded::<Frame>(config.backlog.max(1));
        let processed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(ErrorFrames::default());
        let room = Arc::new(Notify::new());
        let threads = (0..config.threads.max(1))
            .map(|i| {
                let rx = rx.clone();
                let processed = processed.clone();
                let errors = errors.clone();
                let work = config.process_time;
                let step = step.clone();
                let room = RoomOnExit(room.clone());
                std::thread::Builder::new()
                    .name(format!("process-{i}"))
                    .spawn(move || {
                        for frame in rx {
                            room.0.notify_one();
                            let id = frame.meta.unique_id;
                            let frame = match frame.decompressed() {
                                Ok(frame) => frame,
                                Err(why) => {
                                    errors.book(id, &why);
                                    continue;
                                }
                            };
                            if !work.is_zero() {
                                std::thread::sleep(work);
                            }
                            if let Some(step) = &step {
                                step(&frame);
                            }
                            drop(frame);
                            processed.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .expect("spawn a processing thread")
            })
            .collect();
        Workers {
            tx: Some(tx),
            room,
            has_work,
            threads,
            processed,
            errors,
        }
    }

    fn backlog(&self) -> usize {
        self.tx.as_ref().map_or(0, |t| t.len())
    }

    /// Count `frame` as processed at once when it needs no thread; else give it back, to be
    /// handed over.
    fn finish_here(&self, frame: Frame) -> Option<Frame> {
        if !self.has_work && crate::codec::codec_name(&frame.value).is_none() {
            self.processed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(frame)
    }

    /// Hand a frame over, waiting while the backlog is full. Waiting is the point: the
    /// receiver stops taking updates. A frame is dropped only when every processing thread is
    /// gone, and then there is nothing to hand it to.
    async fn give(&self, mut frame: Frame) {
        let Some(tx) = &self.tx else { return };
        loop {
            match tx.try_send(frame) {
                Err(TrySendError::Full(back)) => frame = back,
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
            }
            // A thread that took a frame since the try left a permit: no room made is missed.
            self.room.notified().await;
        }
    }

    /// Hand over every frame of `batch` in a burst, so that a processing thread woken by the
    /// first finds the rest waiting instead of being woken again for each.
    async fn give_all(&self, batch: &mut Vec<Frame>) {
        for frame in batch.drain(..) {
            self.give(frame).await;
        }
    }

    /// Let the threads finish the backlog; returns frames processed, and the error frames.
    fn finish(mut self) -> (u64, (u64, Vec<String>)) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        (self.processed.load(Ordering::Relaxed), self.errors.take())
    }
}

/// Monitor `config.pv` and account for every frame until the run ends (expected count,
/// runtime, the server ends it, or `stop` resolves). `progress` is called about once every
/// `report_every`. Runs on any tokio runtime: while the processing backlog is full the
/// receiver waits without holding its thread.
pub async fn consume(
    ctx: &Context,
    config: &ConsumerConfig,
    report_every: Duration,
    stop: impl std::future::Future<Output = ()>,
    progress: impl FnMut(&Progress),
) -> Result<Report, StreamError> {
    consume_with(ctx, config, Hooks::default(), report_every, stop, progress).await
}

/// [`consume`], with a processing step for every frame and a call when the subscription is in
/// place (see [`Hooks`]).
pub async fn consume_with(
    ctx: &Context,
    config: &ConsumerConfig,
    mut hooks: Hooks,
    report_every: Duration,
    stop: impl std::future::Future<Output = ()>,
    mut progress: impl FnMut(&Progress),
) -> Result<Report, StreamError> {
    let mut monitor = ctx
        .monitor(&config.pv)
        .queue_size(config.queue_size)
        .pipeline(config.pipeline);
    if let Some(spec) = &config.distributor {
        monitor = monitor.request(format!(
            "field(_[{}={spec}])",
            pva::server::distributor::OPTION
        ));
    }
    let mut monitor = monitor.exec()?;
    let workers = Workers::start(config, hooks.process.take());
    let mut ledger = Ledger::new(config.origin, config.stride);
    let mut latency = Latency::new();
    let mut bytes = 0u64;
    let mut wire_bytes = 0u64;
    let mut max_backlog = 0usize;
    let mut first_at: Option<Instant> = None;
    let mut last_at = Instant::now();
    let mut not_frames = 0u64;
    let mut empty_updates = 0u64;
    // The monitor's first update is the PV's value from before the subscription; after a
    // reconnection, the first is the current value again, which may have been received.
    let mut initial_seen = false;
    let mut resubscribed = false;
    let started = Instant::now();
    let deadline = config.runtime.map(|r| tokio::time::Instant::now() + r);
    let mut ticker = tokio::time::interval(report_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // One timer for the whole run, not one per event.
    let runtime_over = sleep_until(deadline);
    tokio::pin!(stop, runtime_over);
    let snapshot =
        |ledger: &Ledger, bytes: u64, first_at: Option<Instant>, last_at: Instant, backlog| {
            let span = first_at.map_or(Duration::ZERO, |f| last_at - f);
            let (fps, mb_per_s) = rates(ledger.counts().received, bytes, span);
            Progress {
                counts: ledger.counts(),
                accounted: ledger.accounted(),
                backlog,
                fps,
                mb_per_s,
            }
        };
    // Frames booked but not yet handed over: gathered while more updates are waiting, then
    // handed over together; with the backlog they never exceed `config.backlog`.
    let mut batch: Vec<Frame> = Vec::new();
    let mut burst = 0;
    let ended_by = loop {
        if !batch.is_empty()
            && (batch.len() >= MAX_HANDOVER
                || workers.backlog() + batch.len() >= config.backlog
                || monitor.pending() == 0)
        {
            workers.give_all(&mut batch).await;
        }
        if config.expected.is_some_and(|n| ledger.accounted() >= n) {
            break EndedBy::Expected;
        }
        // Events already queued are taken in bursts; between bursts, and whenever the queue
        // is empty, the end of the run and the progress ticks are looked at first, so that a
        // stream that never pauses cannot hold them off.
        let queued = if burst < BURST {
            monitor.try_recv()
        } else {
            None
        };
        let event = match queued {
            Some(event) => {
                burst += 1;
                Some(event)
            }
            None => {
                burst = 0;
                tokio::select! {
                    biased;
                    _ = &mut runtime_over => break EndedBy::Runtime,
                    _ = &mut stop => break EndedBy::Stopped,
                    _ = ticker.tick() => {
                        progress(&snapshot(&ledger, bytes, first_at, last_at, workers.backlog()));
                        continue;
                    }
                    ev = monitor.recv() => ev,
                }
            }
        };
        match event {
            Some(MonitorEvent::Update(update)) => {
                if update.changed.is_empty() {
                    empty_updates += 1;
                    continue;
                }
                let now = Instant::now();
                let is_initial = !std::mem::replace(&mut initial_seen, true);
                let frame = match Frame::from_value(update.value) {
                    Ok(f) => f,
                    Err(FrameError::NotAFrame(why)) => {
                        not_frames += 1;
                        if not_frames == 1 {
                            tracing::warn!("'{}': {why}", config.pv);
                        }
                        continue;
                    }
                };
                let id = frame.meta.unique_id;
                let unpublished = id == 0 && frame.meta.payload_bytes == 0;
                let verdict = if unpublished {
                    if !is_initial {
                        ledger.skip();
                    }
                    Verdict::Ignored
                } else if is_initial {
                    ledger.record_initial(id, config.expected)
                } else if std::mem::take(&mut resubscribed) {
                    ledger.record_resent(id)
                } else {
                    ledger.record(id)
                };
                // Only frames new to the books go on to processing: a copy was processed.
                if !matches!(verdict, Verdict::New | Verdict::Late) {
                    continue;
                }
                first_at.get_or_insert(now);
                last_at = now;
                bytes += image_bytes(&frame.meta);
                wire_bytes += frame.meta.payload_bytes;
                latency.record(
                    frame
                        .meta
                        .time_stamp
                        .to_system_time()
                        .and_then(|t| SystemTime::now().duration_since(t).ok()),
                );
                if let Some(frame) = workers.finish_here(frame) {
                    batch.push(frame);
                    max_backlog = max_backlog.max(workers.backlog() + batch.len());
                }
            }
            Some(MonitorEvent::Connected) => {
                tracing::info!("'{}': connected", config.pv);
                if let Some(subscribed) = hooks.subscribed.as_mut() {
                    subscribed();
                }
            }
            Some(MonitorEvent::Disconnected) => {
                tracing::warn!("'{}': disconnected; waiting for it to come back", config.pv);
                resubscribed = initial_seen;
            }
            Some(MonitorEvent::Finished(Ok(()))) | None => break EndedBy::Finished,
            Some(MonitorEvent::Finished(Err(e))) => return Err(e.into()),
        }
    };
    workers.give_all(&mut batch).await;
    let client_squashed = monitor.squashed();
    drop(monitor);
    let (processed, (error_frames, errors)) = workers.finish();
    ledger.close(config.expected);
    let counts = ledger.counts();
    let span = first_at.map_or(Duration::ZERO, |f| last_at - f);
    let (fps, mb_per_s) = rates(counts.received, bytes, span);
    let (first_id, last_id) = ledger.id_range();
    tracing::debug!("consumer ran {:?}", started.elapsed());
    Ok(Report {
        pv: config.pv.clone(),
        counts,
        initial_id: ledger.initial_id(),
        expected: config.expected,
        client_squashed,
        empty_updates,
        processed,
        max_backlog,
        first_id,
        last_id,
        missed_ranges: ledger.missed_ranges(20),
        bytes,
        wire_bytes,
        error_frames,
        errors,
        elapsed_s: span.as_secs_f64(),
        fps,
        mb_per_s,
        latency: latency.summary(),
        ended_by,
    })
}

/// Bytes of a frame as an image: `uncompressedSize` when it came compressed.
fn image_bytes(meta: &crate::frame::FrameMeta) -> u64 {
    if meta.uncompressed_size > 0 && meta.uncompressed_size != meta.compressed_size {
        meta.uncompressed_size as u64
    } else {
        meta.payload_bytes
    }
}

/// Sleep until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_count_intervals_between_first_and_last_frame() {
        let (fps, mbps) = rates(11, 11_000_000, Duration::from_secs(1));
        assert!((fps - 10.0).abs() < 1e-9);
        assert!((mbps - 10.0).abs() < 1e-9);
        assert_eq!(rates(1, 100, Duration::from_secs(1)), (0.0, 0.0));
    }
}
