//! The reporting side of `pvabridge workflow consume`: the member's books, sent to the bridge
//! with an RPC on the slot's `Report` at the progress period and at the end, and the `Stats` PV
//! the member serves under its own prefix while it runs (announced through the report, so that the
//! bridge lists it in `WorkflowPVs`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use coordinator::{HandshakeClient, MemberReport};
use pva::server::{Server, ServerOptions, SharedPv, Source, StaticSource};
use pva_codec::nt::{set_time_stamp, TimeStamp};
use pva_codec::{FieldDesc, ScalarType, StructDesc, StructValue};
use stream::accounting::{Counts, LatencySummary};
use stream::consumer::{Progress, Report};
use stream::stats::FrameStats;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// The suffix of the member's statistics PV.
pub const STATS: &str = "Stats";
/// Type id of the `Stats` structure.
pub const STATS_ID: &str = "pvabridge:workflow/Stats:1.0";

/// What the member knows of its run so far; fed by the consumer's progress, the processing step
/// and the final report.
#[derive(Debug, Default)]
pub struct Books {
    inner: Mutex<Snapshot>,
}

#[derive(Debug, Default, Clone)]
struct Snapshot {
    group: bool,
    ready: bool,
    received: u64,
    missed: u64,
    duplicates: u64,
    processed: u64,
    out_of_order: u64,
    fps: f64,
    mb_per_s: f64,
    latency: Option<LatencySummary>,
    first_id: Option<i64>,
    last_id: Option<i64>,
    last: Option<FrameStats>,
    ended: bool,
}

impl Snapshot {
    /// The consumer's counts and rates.
    fn count(&mut self, counts: &Counts, (fps, mb_per_s): (f64, f64)) {
        self.received = counts.received;
        self.missed = counts.missed;
        self.duplicates = counts.duplicates;
        self.out_of_order = counts.out_of_order;
        self.fps = fps;
        self.mb_per_s = mb_per_s;
    }
}

impl Books {
    fn edit(&self, change: impl FnOnce(&mut Snapshot)) {
        change(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner));
    }

    fn snapshot(&self) -> Snapshot {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// This member is one of a group sharing the stream: the frames it was not given are not
    /// its missed ones (the bridge books the group's), so it reports none missed.
    pub fn set_group_member(&self) {
        self.edit(|s| s.group = true);
    }

    /// The subscription is in place.
    pub fn set_ready(&self) {
        self.edit(|s| s.ready = true);
    }

    /// A frame was processed (with its statistics, when it has any).
    pub fn processed(&self, unique_id: i64, stats: Option<FrameStats>) {
        self.edit(|s| {
            s.processed += 1;
            s.first_id.get_or_insert(unique_id);
            s.last_id = Some(unique_id);
            if stats.is_some() {
                s.last = stats;
            }
        });
    }

    /// The consumer's counts so far.
    pub fn progress(&self, progress: &Progress) {
        self.edit(|s| s.count(&progress.counts, (progress.fps, progress.mb_per_s)));
    }

    /// The consumer's final books: the member has ended, and its next report is its last.
    pub fn finish(&self, report: &Report) {
        self.edit(|s| {
            s.count(&report.counts, (report.fps, report.mb_per_s));
            s.latency = (report.counts.received > 0).then_some(report.latency);
            s.processed = report.processed;
            s.first_id = report.first_id.or(s.first_id);
            s.last_id = report.last_id.or(s.last_id);
            s.ended = true;
        });
    }

    fn member_report(&self, member: u32, pvs: &[String]) -> MemberReport {
        let s = self.snapshot();
        MemberReport {
            member,
            ready: s.ready,
            // The receiver's count follows at the progress period; a frame processed was received.
            received: s.received.max(s.processed),
            missed: if s.group { 0 } else { s.missed },
            duplicates: s.duplicates,
            processed: s.processed,
            first_id: s.first_id.unwrap_or(-1),
            last_id: s.last_id.unwrap_or(-1),
            pvs: pvs.to_vec(),
            out_of_order: s.out_of_order,
            fps: s.fps,
            mb_per_s: s.mb_per_s,
            latency_p50_ms: s.latency.as_ref().map(|l| l.p50_ms),
            latency_p99_ms: s.latency.as_ref().map(|l| l.p99_ms),
            ended: s.ended,
        }
    }

    fn stats_value(&self) -> StructValue {
        let s = self.snapshot();
        let mut v = StructValue::new(stats_desc());
        let long = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let last = s.last.unwrap_or(FrameStats {
            unique_id: -1,
            count: 0,
            min: 0.0,
            max: 0.0,
            mean: 0.0,
            sum: 0.0,
        });
        let _ = v.set("received", long(s.received));
        let _ = v.set("missed", long(if s.group { 0 } else { s.missed }));
        let _ = v.set("processed", long(s.processed));
        let _ = v.set("fps", s.fps);
        let _ = v.set("uniqueId", last.unique_id);
        let _ = v.set("min", last.min);
        let _ = v.set("max", last.max);
        let _ = v.set("mean", last.mean);
        let _ = v.set("sum", last.sum);
        let _ = set_time_stamp(&mut v, TimeStamp::now());
        v
    }
}

/// The `Stats` structure: the run so far and the last processed frame's statistics.
fn stats_desc() -> Arc<StructDesc> {
    use ScalarType::{F64, I64};
    Arc::new(
        StructDesc::builder(STATS_ID)
            .scalar("received", I64)
            .scalar("missed", I64)
            .scalar("processed", I64)
            .scalar("fps", F64)
            .scalar("uniqueId", I64)
            .scalar("min", F64)
            .scalar("max", F64)
            .scalar("mean", F64)
            .scalar("sum", F64)
            .field("timeStamp", FieldDesc::Struct(TimeStamp::desc()))
            .build(),
    )
}

/// The member's reporting: its PVA server with `Stats`, and the task that reports to the bridge.
pub struct Reporting {
    books: Arc<Books>,
    slot: HandshakeClient,
    member: u32,
    pvs: Vec<String>,
    stats: SharedPv,
    server: Server,
    now: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Reporting {
    /// Serve `{serve_prefix}Stats` (the PVA server takes the EPICS_PVAS_* environment, but
    /// searches on `udp_port`: 0 picks a free one) and report `books` to the slot as `member`
    /// every `period`, and at once after [`Reporting::now`].
    pub async fn start(
        slot: HandshakeClient,
        member: u32,
        (serve_prefix, udp_port): (&str, u16),
        period: Duration,
        books: Arc<Books>,
    ) -> anyhow::Result<Reporting> {
        let stats = SharedPv::readonly(books.stats_value());
        let source = Arc::new(StaticSource::new());
        let name = format!("{serve_prefix}{STATS}");
        source.add(name.clone(), stats.clone());
        let mut config = pva::ServerConfig::from_env()?;
        config.udp_port = udp_port;
        let server = Server::start_with(
            config,
            vec![source as Arc<dyn Source>],
            ServerOptions::default(),
        )
        .await
        .with_context(|| format!("cannot serve {name}"))?;
        tracing::info!(
            "serving {name} on TCP {} and UDP {}",
            server.tcp_addr(),
            server.udp_addr()
        );
        let pvs = vec![name];
        let now = Arc::new(Notify::new());
        let (stop, mut stopped) = watch::channel(false);
        let task = {
            let (books, slot, pvs, stats, now) = (
                books.clone(),
                slot.clone(),
                pvs.clone(),
                stats.clone(),
                now.clone(),
            );
            tokio::spawn(async move {
                let mut refused = false;
                loop {
                    stats.post(books.stats_value());
                    if let Err(err) = slot.report(&books.member_report(member, &pvs)).await {
                        if !refused {
                            tracing::warn!("cannot report to {}Report: {err}", slot.prefix());
                        }
                        refused = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(period) => {}
                        _ = now.notified() => {}
                        _ = stopped.changed() => return,
                    }
                }
            })
        };
        Ok(Reporting {
            books,
            slot,
            member,
            pvs,
            stats,
            server,
            now,
            stop,
            task,
        })
    }

    /// Report at once (e.g. readiness).
    pub fn now(&self) {
        self.now.notify_one();
    }

    /// Stop the periodic reports, send the final one, and stop serving.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        let _ = self.task.await;
        self.stats.post(self.books.stats_value());
        let result = self
            .slot
            .report(&self.books.member_report(self.member, &self.pvs))
            .await
            .with_context(|| {
                format!(
                    "cannot send the final report to {}Report",
                    self.slot.prefix()
                )
            });
        self.server.stop().await;
        result
    }
}
