//! The relay: monitor an upstream PV (an areaDetector IOC, pvapy, our simulated detector) and
//! serve it again under another name to any number of consumers.
//!
//! Each consumer has its own bounded queue on the server side: a slow one loses frames —
//! squashed, and counted per consumer — without slowing the others. In distributing mode,
//! successive frames go to the consumers in turn (each frame to exactly one), like pvapy's
//! data distributor, so processing can spread over hosts. Frames are never copied: the
//! value received upstream, whose pixel array shares the received bytes, is what every
//! consumer's connection encodes from.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pva::client::{Context, MonitorEvent};
use pva::server::{SharedPv, StaticSource, SubscriberStats};
use pva_codec::{BitSet, StructValue};
use serde::Serialize;

use crate::accounting::{Counts, Ledger, Origin};
use crate::codec::{self, Codec};
use crate::frame::FrameMeta;
use crate::StreamError;

/// How a relay runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// The upstream PV.
    pub from: String,
    /// The name to serve it under.
    pub as_name: String,
    /// Distribute over this many consumers (each frame to one, in turn) instead of sending
    /// every frame to every consumer. Frames are handed out once that many are subscribed,
    /// then in turn among those still subscribed.
    pub distribute: Option<usize>,
    /// Upstream monitor queue (pipelined: upstream waits when the relay falls behind).
    pub upstream_queue: u32,
}

/// One consumer's share, as the relay's server saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsumerShare {
    /// Order of subscription, from 1.
    pub id: u64,
    /// The consumer's address.
    pub peer: Option<SocketAddr>,
    /// Updates put in its queue (its initial value included).
    pub posted: u64,
    /// Frames put in its queue: the updates after its initial value, which is the PV's value
    /// from before it subscribed and not a frame of its run.
    pub frames: u64,
    /// Updates dropped for it because it fell behind (squashed in its queue).
    pub dropped: u64,
    /// Still subscribed.
    pub open: bool,
}

impl From<SubscriberStats> for ConsumerShare {
    fn from(s: SubscriberStats) -> Self {
        ConsumerShare {
            id: s.id,
            peer: s.peer,
            posted: s.posted,
            frames: s.posted.saturating_sub(1),
            dropped: s.squashed,
            open: s.open,
        }
    }
}

/// How the relay went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayReport {
    /// The upstream PV.
    pub from: String,
    /// The name served.
    pub served_as: String,
    /// The number of the upstream's initial value (its value before the relay subscribed,
    /// booked apart like a consumer's), when it was a frame.
    pub upstream_initial_id: Option<i64>,
    /// Frames from upstream: received, missed (gaps), and so on, by a consumer's rules.
    pub upstream: Counts,
    /// Updates squashed in the relay's own upstream monitor queue (included in missed).
    pub upstream_squashed: u64,
    /// Updates relayed (posted to the consumers) after the first, which consumers get on
    /// subscribing.
    pub relayed: u64,
    /// Distributing: frames that found no consumer (fewer subscribed than asked for).
    pub undelivered: u64,
    /// Frames that could not be decompressed (with [`Transcode::Decompress`]): not relayed.
    pub transcode_errors: u64,
    /// Every consumer, in order of subscription.
    pub consumers: Vec<ConsumerShare>,
    /// Seconds the relay ran.
    pub elapsed_s: f64,
}

/// Progress of a running relay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RelayProgress {
    /// Frames relayed so far.
    pub relayed: u64,
    /// Frames from upstream so far.
    pub upstream: Counts,
    /// Consumers subscribed now.
    pub consumers: usize,
    /// Frames dropped for consumers so far (all together).
    pub dropped: u64,
}

/// What a relay does to the frames it passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transcode {
    /// Pass them on as they are.
    #[default]
    None,
    /// Compress uncompressed NTNDArray frames once for all consumers (at this level);
    /// compressed frames and other values pass as they are.
    Compress(Codec, u8),
    /// Decompress compressed frames for consumers that cannot; a frame that does not
    /// decompress is not relayed (counted in `transcode_errors`).
    Decompress,
}

impl Transcode {
    /// The value to relay and its changed members, or why it cannot be.
    fn apply(
        self,
        value: StructValue,
        mut changed: BitSet,
    ) -> Result<(StructValue, BitSet), codec::CodecError> {
        let out = match self {
            Transcode::None => return Ok((value, changed)),
            Transcode::Compress(c, level) => {
                let is_array = FrameMeta::from_value(&value).is_ok_and(|m| !m.sizes.is_empty());
                if codec::codec_name(&value).is_some() || !is_array {
                    return Ok((value, changed));
                }
                codec::compress_value(&value, c, level)?
            }
            Transcode::Decompress => match codec::decompress_value(&value)? {
                Some(v) => v,
                None => return Ok((value, changed)),
            },
        };
        if !changed.get(0) {
            for bit in codec::changed_bits(&out).iter() {
                changed.set(bit);
            }
        }
        Ok((out, changed))
    }
}

/// Run a relay: monitor `config.from` with `ctx`, serve it as `config.as_name` through
/// `source` (which a running server serves), until the upstream ends or `stop` resolves.
pub async fn relay(
    ctx: &Context,
    source: Arc<StaticSource>,
    config: &RelayConfig,
    report_every: Duration,
    stop: impl std::future::Future<Output = ()>,
    progress: impl FnMut(&RelayProgress),
) -> Result<RelayReport, StreamError> {
    relay_transcoding(
        ctx,
        source,
        config,
        Transcode::None,
        report_every,
        stop,
        progress,
    )
    .await
}

/// [`relay`], compressing or decompressing frames on the way (see [`Transcode`]).
pub async fn relay_transcoding(
    ctx: &Context,
    source: Arc<StaticSource>,
    config: &RelayConfig,
    transcode: Transcode,
    report_every: Duration,
    stop: impl std::future::Future<Output = ()>,
    mut progress: impl FnMut(&RelayProgress),
) -> Result<RelayReport, StreamError> {
    if config.distribute == Some(0) {
        return Err(StreamError::Config(
            "--distribute needs at least 1 consumer".into(),
        ));
    }
    let mut upstream = ctx
        .monitor(&config.from)
        .queue_size(config.upstream_queue)
        .pipeline(true)
        .exec()?;
    let started = Instant::now();
    let mut pv: Option<SharedPv> = None;
    let mut ledger = Ledger::new(Origin::FirstReceived, 1);
    let mut relayed = 0u64;
    let mut undelivered = 0u64;
    let mut upstream_initial_id = None;
    let mut transcode_errors = 0u64;
    // Distributing starts once enough consumers are subscribed, then goes on among those left.
    let mut distributing = false;
    let mut ticker = tokio::time::interval(report_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            ev = upstream.recv() => ev,
            _ = ticker.tick() => {
                let stats = pv.as_ref().map(SharedPv::subscriber_stats).unwrap_or_default();
                progress(&RelayProgress {
                    relayed,
                    upstream: ledger.counts(),
                    consumers: stats.iter().filter(|s| s.open).count(),
                    dropped: stats.iter().map(|s| s.squashed).sum(),
                });
                continue;
            }
            _ = &mut stop => break,
        };
        match event {
            Some(MonitorEvent::Update(update)) => {
                let meta = FrameMeta::from_value(&update.value).ok();
                let unpublished = meta
                    .as_ref()
                    .is_some_and(|m| m.unique_id == 0 && m.payload_bytes == 0);
                // Every update after the first is booked as it came from upstream, whether or
                // not it transcodes.
                if pv.is_some() {
                    match &meta {
                        Some(_) if unpublished => ledger.skip(),
                        Some(m) => {
                            ledger.record(m.unique_id);
                        }
                        None => {}
                    }
                }
                let update = match transcode.apply(update.value, update.changed) {
                    Ok((value, changed)) => pva::client::Update {
                        value,
                        changed,
                        ..update
                    },
                    Err(why) => {
                        transcode_errors += 1;
                        if transcode_errors == 1 {
                            tracing::warn!("not relayed: {why}");
                        }
                        continue;
                    }
                };
                let Some(served) = &pv else {
                    // The first value (the upstream's from before the subscription, often the
                    // empty one a detector holds before its first frame) is not a frame of the
                    // run: it is what consumers get on subscribing. Distributing, they start
                    // from an empty value.
                    upstream_initial_id = meta.filter(|_| !unpublished).map(|m| m.unique_id);
                    let initial = match config.distribute {
                        Some(_) => StructValue::new(update.value.desc().clone()),
                        None => update.value,
                    };
                    let served = SharedPv::readonly(initial);
                    source.add(config.as_name.clone(), served.clone());
                    tracing::info!("serving '{}' from '{}'", config.as_name, config.from);
                    pv = Some(served);
                    continue;
                };
                match config.distribute {
                    None => {
                        served.post_changed(update.value, update.changed);
                        relayed += 1;
                    }
                    Some(n) => {
                        // A consumer may not have had the previous frame: send every member.
                        distributing = distributing || served.subscriber_count() >= n;
                        if distributing
                            && served.post_to_next(update.value, BitSet::with(0)).is_some()
                        {
                            relayed += 1;
                        } else {
                            undelivered += 1;
                        }
                    }
                }
            }
            Some(MonitorEvent::Connected) => {
                tracing::info!("upstream '{}' connected", config.from)
            }
            Some(MonitorEvent::Disconnected) => {
                tracing::warn!("upstream '{}' disconnected; waiting", config.from)
            }
            Some(MonitorEvent::Finished(Ok(()))) | None => break,
            Some(MonitorEvent::Finished(Err(e))) => return Err(e.into()),
        }
    }
    let upstream_squashed = upstream.squashed();
    drop(upstream);
    Ok(RelayReport {
        from: config.from.clone(),
        served_as: config.as_name.clone(),
        upstream_initial_id,
        upstream: ledger.counts(),
        upstream_squashed,
        relayed,
        undelivered,
        transcode_errors,
        consumers: pv
            .map(|p| p.subscriber_stats())
            .unwrap_or_default()
            .into_iter()
            .map(ConsumerShare::from)
            .collect(),
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}
