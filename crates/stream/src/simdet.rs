//! A simulated detector: publishes NTNDArray frames on a [`SharedPv`] like areaDetector's
//! NDPluginPva and pvapy-ad-sim-server.
//!
//! Frames are generated ahead of time from a seeded generator (moving spots over noise), so
//! generation never limits the rate; publishing one only stamps its number and times and
//! shares the pre-made pixel bytes. The rate is held by a deadline clock (frame `k` is due at
//! `start + k / fps`), not by a sleep per frame, so it does not drift. With `fps` 0 the
//! detector goes as fast as its slowest subscriber takes frames, losing none.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use pva::server::SharedPv;
use pva_codec::nt::{NdArrayFrame, NdAttribute, NtNdArray, NtScalar, TimeStamp};
use pva_codec::{BitSet, PodArray, ScalarArray, ScalarType, StructValue, UnionValue, Value};
use serde::Serialize;

use crate::codec::Codec;
use crate::StreamError;

/// Memory the pre-made frames may take together.
const POOL_BYTES: usize = 256 << 20;
/// Most distinct frames made ahead of time.
const POOL_FRAMES: usize = 32;

/// How the detector runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDetConfig {
    /// Pixels along x.
    pub nx: usize,
    /// Pixels along y.
    pub ny: usize,
    /// Element type (any NTNDArray value type: every scalar type but string).
    pub dtype: ScalarType,
    /// Frames per second; 0 = as fast as the slowest subscriber takes them.
    pub fps: f64,
    /// Stop after this many frames.
    pub frames: Option<u64>,
    /// Stop after this long (counted from the first frame).
    pub runtime: Option<Duration>,
    /// Wait this long before the first frame (for consumers to connect).
    pub start_delay: Duration,
    /// Seed of the generator: the same seed gives the same pixels.
    pub seed: u64,
    /// Publish an NTScalar double counting 1, 2, 3 ... instead of frames (to measure plain
    /// update rates; consumers account for it like frames).
    pub counter: bool,
    /// The first `uniqueId` published (1 for a fresh detector). Later frames count on from
    /// it, and successive runs of the same detector continue the count, like areaDetector's
    /// ArrayCounter; past 2^31-1 it wraps to -2^31, as an int32 does.
    pub start_id: i32,
}

impl SimDetConfig {
    /// Check the values; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), StreamError> {
        let bad = |m: String| Err(StreamError::Config(m));
        if self.nx == 0 || self.ny == 0 {
            return bad(format!(
                "frame size {}x{}: both sides must be at least 1",
                self.nx, self.ny
            ));
        }
        if self.nx > i32::MAX as usize || self.ny > i32::MAX as usize {
            return bad("frame sides must fit a 32-bit dimension".into());
        }
        if self.dtype == ScalarType::String {
            return bad("NTNDArray has no string arrays: choose a numeric or boolean type".into());
        }
        if !self.fps.is_finite() || self.fps < 0.0 {
            return bad(format!(
                "--fps {}: must be 0 (as fast as possible) or positive",
                self.fps
            ));
        }
        if self.frame_bytes() > 1 << 31 {
            return bad(format!(
                "a frame of {} bytes is too large",
                self.frame_bytes()
            ));
        }
        Ok(())
    }

    /// Bytes of pixel data in one frame.
    pub fn frame_bytes(&self) -> usize {
        if self.counter {
            return ScalarType::F64.wire_size();
        }
        self.nx
            .saturating_mul(self.ny)
            .saturating_mul(self.dtype.wire_size())
    }
}

/// What the pixels look like.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Pattern {
    /// Spots moving round a circle over low noise, scaled to the type.
    #[default]
    Spots,
    /// Independent Poisson counts of this mean in every pixel, like a photon-counting detector
    /// (Eiger, Pilatus) at low flux: compression ratios are those of real detector frames.
    Poisson {
        /// Mean count per pixel.
        mean: f64,
    },
}

/// How frames are made and sent, besides their size and rate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FrameOptions {
    /// What the pixels look like.
    pub pattern: Pattern,
    /// Compress every frame as it is published (once for all consumers), as areaDetector's
    /// codec plugin does.
    pub codec: Option<Codec>,
    /// Compression level (0-9; Blosc only).
    pub codec_level: u8,
}

/// What the detector has published.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Published {
    /// Frames published.
    pub frames: u64,
    /// Bytes of pixel data published.
    pub bytes: u64,
    /// From the first frame to now (or to the last frame, at the end).
    pub elapsed_s: f64,
    /// Frames per second achieved.
    pub fps: f64,
    /// Megabytes (10^6) of pixel data per second.
    pub mb_per_s: f64,
    /// Bytes of frame data as sent (less than `bytes` when compressed).
    pub wire_bytes: u64,
}

impl Published {
    fn new(frames: u64, frame_bytes: usize, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        let bytes = frames * frame_bytes as u64;
        let per_s = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        Published {
            frames,
            bytes,
            elapsed_s: secs,
            fps: per_s(frames as f64),
            mb_per_s: per_s(bytes as f64 / 1e6),
            wire_bytes: bytes,
        }
    }
}

/// The simulated detector.
pub struct SimDet {
    config: SimDetConfig,
    pool: Vec<ScalarArray>,
    template: StructValue,
    /// Members that change from one frame to the next.
    changed: BitSet,
    pv: SharedPv,
    /// The `uniqueId` of the next frame, as its 32 bits.
    next_id: AtomicU32,
    options: FrameOptions,
}

impl SimDet {
    /// Make the frames and the PV (holding an empty NTNDArray, `uniqueId` 0, until the first
    /// frame).
    pub fn new(config: SimDetConfig) -> Result<SimDet, StreamError> {
        SimDet::with_options(config, FrameOptions::default())
    }

    /// [`SimDet::new`], with a pixel pattern and a codec.
    pub fn with_options(
        config: SimDetConfig,
        options: FrameOptions,
    ) -> Result<SimDet, StreamError> {
        config.validate()?;
        if let Pattern::Poisson { mean } = options.pattern {
            if !(mean.is_finite() && mean > 0.0 && mean <= 1e6) {
                return Err(StreamError::Config(format!(
                    "--mean {mean}: a Poisson mean must be above 0 and at most 1e6"
                )));
            }
        }
        if options.codec.is_some() && (config.counter || config.dtype == ScalarType::Bool) {
            return Err(StreamError::Config(
                "--codec compresses numeric NTNDArray frames: not with --ntscalar or bool".into(),
            ));
        }
        if config.counter {
            let template = NtScalar::new(ScalarType::F64).create();
            let mut changed = BitSet::new();
            for member in ["value", "timeStamp"] {
                if let Some(bit) = template.desc().bit_of(member) {
                    changed.set(bit);
                }
            }
            return Ok(SimDet {
                pv: SharedPv::readonly(template.clone()),
                next_id: AtomicU32::new(config.start_id as u32),
                config,
                pool: Vec::new(),
                template,
                changed,
                options,
            });
        }
        let mut pool_len = (POOL_BYTES / config.frame_bytes().max(1)).clamp(1, POOL_FRAMES);
        if let Some(n) = config.frames {
            pool_len = pool_len.min(n.max(1) as usize);
        }
        let pool: Vec<ScalarArray> = (0..pool_len)
            .map(|i| make_frame(&config, options.pattern, i, pool_len))
            .collect();
        let nt = NtNdArray::new();
        let mut first =
            NdArrayFrame::new(pool[0].clone(), &[config.nx as i32, config.ny as i32], 0);
        first.attributes = vec![
            NdAttribute::new("ColorMode", 0i32),
            NdAttribute::new("FrameRate", config.fps),
            NdAttribute::new("TotalFrames", config.frames.unwrap_or(0) as i64),
        ];
        let template = nt.build_value(first)?;
        let desc = template.desc().clone();
        let mut changed = BitSet::new();
        for member in [
            "value",
            "uniqueId",
            "dataTimeStamp",
            "timeStamp",
            "codec",
            "compressedSize",
            "uncompressedSize",
        ] {
            if let Some(bit) = desc.bit_of(member) {
                changed.set(bit);
            }
        }
        Ok(SimDet {
            pv: SharedPv::readonly(nt.create()),
            next_id: AtomicU32::new(config.start_id as u32),
            config,
            pool,
            template,
            changed,
            options,
        })
    }

    /// The PV the frames are posted on (serve it under the detector's name).
    pub fn pv(&self) -> &SharedPv {
        &self.pv
    }

    /// The configuration.
    pub fn config(&self) -> &SimDetConfig {
        &self.config
    }

    /// Number of distinct frames made ahead of time (they are published in turn).
    pub fn distinct_frames(&self) -> usize {
        self.pool.len()
    }

    /// The `uniqueId` the next frame will carry.
    pub fn next_id(&self) -> i32 {
        self.next_id.load(Ordering::Relaxed) as i32
    }

    /// The frame numbered `unique_id` as it is published: compressed when a codec is set.
    pub fn frame(&self, unique_id: i32) -> StructValue {
        let v = self.raw_frame(unique_id);
        match self.options.codec {
            // A frame of the pool is a numeric NTNDArray (checked in `with_options`).
            Some(codec) => {
                crate::codec::compress_value(&v, codec, self.options.codec_level).unwrap_or(v)
            }
            None => v,
        }
    }

    /// The frame numbered `unique_id` as a value, uncompressed.
    fn raw_frame(&self, unique_id: i32) -> StructValue {
        let mut v = self.template.clone();
        if self.pool.is_empty() {
            // The counter: a double holds every int32 exactly.
            let _ = v.set("value", f64::from(unique_id));
            stamp(&mut v, "timeStamp", TimeStamp::now());
            return v;
        }
        let index = (unique_id as u32).wrapping_sub(1) as usize % self.pool.len();
        let data = self.pool[index].clone();
        if let Some(Value::Union(UnionValue {
            selected: Some((_, boxed)),
            ..
        })) = v.get_mut("value")
        {
            **boxed = Value::Array(data);
        }
        let now = TimeStamp::now();
        // Members of the template, of the right types: these cannot fail.
        let _ = v.set("uniqueId", unique_id);
        stamp(&mut v, "timeStamp", now);
        stamp(&mut v, "dataTimeStamp", now);
        v
    }

    /// Publish frames until the configured count or runtime, or until `stop` is set, numbered
    /// on from the last run's.
    /// Blocking: run it on a thread of its own. `report` is called about once a second.
    pub fn run(&self, stop: &AtomicBool, mut report: impl FnMut(&Published)) -> Published {
        let delay_end = Instant::now() + self.config.start_delay;
        while Instant::now() < delay_end {
            if stop.load(Ordering::Relaxed) {
                return Published::default();
            }
            std::thread::sleep((delay_end - Instant::now()).min(Duration::from_millis(50)));
        }
        let frame_bytes = self.config.frame_bytes();
        let period =
            (self.config.fps > 0.0).then(|| Duration::from_secs_f64(1.0 / self.config.fps));
        let start = Instant::now();
        let mut next_report = start + Duration::from_secs(1);
        let mut published = 0u64;
        let mut wire_bytes = 0u64;
        let mut last = start;
        loop {
            if stop.load(Ordering::Relaxed)
                || self.config.frames.is_some_and(|n| published >= n)
                || self.config.runtime.is_some_and(|r| start.elapsed() >= r)
            {
                break;
            }
            match period {
                Some(p) => {
                    let due = start + p.mul_f64(published as f64);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                }
                None => {
                    if !self.pv.wait_for_room(Duration::from_millis(50)) {
                        continue;
                    }
                }
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed) as i32;
            let value = self.frame(id);
            wire_bytes += match value.get("compressedSize") {
                Some(Value::I64(n)) if self.options.codec.is_some() => *n as u64,
                _ => frame_bytes as u64,
            };
            if published == 0 {
                // Subscribers hold an empty value or another run's frame: the first frame of a
                // run carries every member.
                self.pv.post(value);
            } else {
                self.pv.post_changed(value, self.changed.clone());
            }
            published += 1;
            last = Instant::now();
            if last >= next_report {
                report(&Published::new(published, frame_bytes, last - start));
                next_report += Duration::from_secs(1);
            }
        }
        Published {
            wire_bytes,
            ..Published::new(published, frame_bytes, last - start)
        }
    }
}

/// Set the time structure `member` of `v` to `ts` (members of the template: cannot fail).
fn stamp(v: &mut StructValue, member: &str, ts: TimeStamp) {
    if let Some(Value::Struct(t)) = v.get_mut(member) {
        let _ = t.set("secondsPastEpoch", ts.seconds_past_epoch);
        let _ = t.set("nanoseconds", ts.nanoseconds);
    }
}

/// Frame `index` of `count` in `pattern`.
fn make_frame(config: &SimDetConfig, pattern: Pattern, index: usize, count: usize) -> ScalarArray {
    let mut rng =
        fastrand::Rng::with_seed(config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    match pattern {
        Pattern::Spots => spots(config, &mut rng, index, count),
        Pattern::Poisson { mean } => poisson(config, &mut rng, mean),
    }
}

/// Poisson counts of `mean` in every pixel, by the inverse of the distribution function
/// (one uniform number per pixel), as the element type (saturating at its largest value).
fn poisson(config: &SimDetConfig, rng: &mut fastrand::Rng, mean: f64) -> ScalarArray {
    let top = (mean + 12.0 * mean.sqrt() + 12.0).ceil() as usize;
    let mut cdf = Vec::with_capacity(top);
    // Built up in logs so that large means do not underflow.
    let (mut log_p, mut total) = (-mean, 0.0);
    for k in 0..top {
        if k > 0 {
            log_p += mean.ln() - (k as f64).ln();
        }
        total += log_p.exp();
        cdf.push(total);
    }
    let counts: Vec<f64> = (0..config.nx * config.ny)
        .map(|_| {
            let u = rng.f64();
            cdf.partition_point(|&c| c < u).min(top - 1) as f64
        })
        .collect();
    counts_as(&counts, config.dtype)
}

/// Counts as the element type, saturating.
fn counts_as(counts: &[f64], t: ScalarType) -> ScalarArray {
    fn ints<T: pva_codec::Element>(counts: &[f64], f: impl Fn(f64) -> T) -> PodArray<T> {
        PodArray::from_vec(counts.iter().map(|&c| f(c)).collect())
    }
    match t {
        ScalarType::Bool => ScalarArray::Bool(counts.iter().map(|&c| c > 0.0).collect()),
        ScalarType::I8 => ScalarArray::I8(ints(counts, |c| c as i8)),
        ScalarType::U8 => ScalarArray::U8(ints(counts, |c| c as u8)),
        ScalarType::I16 => ScalarArray::I16(ints(counts, |c| c as i16)),
        ScalarType::U16 => ScalarArray::U16(ints(counts, |c| c as u16)),
        ScalarType::I32 => ScalarArray::I32(ints(counts, |c| c as i32)),
        ScalarType::U32 => ScalarArray::U32(ints(counts, |c| c as u32)),
        ScalarType::I64 => ScalarArray::I64(ints(counts, |c| c as i64)),
        ScalarType::U64 => ScalarArray::U64(ints(counts, |c| c as u64)),
        ScalarType::F32 => ScalarArray::F32(ints(counts, |c| c as f32)),
        ScalarType::F64 => ScalarArray::F64(ints(counts, |c| c)),
        // Refused by validate().
        ScalarType::String => ScalarArray::String(Vec::new()),
    }
}

/// Spots moving round a circle over low noise (frame `index` of `count`), scaled to the type.
fn spots(
    config: &SimDetConfig,
    rng: &mut fastrand::Rng,
    index: usize,
    count: usize,
) -> ScalarArray {
    let (nx, ny) = (config.nx, config.ny);
    let mut img: Vec<f32> = (0..nx * ny).map(|_| rng.f32() * 0.08).collect();
    let sigma = ((nx.min(ny) as f32) / 40.0).max(1.0);
    let reach = (3.0 * sigma).ceil() as isize;
    let turn = std::f32::consts::TAU * index as f32 / count as f32;
    for spot in 0..6 {
        let phase = spot as f32 * std::f32::consts::TAU / 6.0 + turn;
        let radius = 0.15 + 0.05 * spot as f32;
        let cx = (nx as f32 * (0.5 + radius * phase.cos())) as isize;
        let cy = (ny as f32 * (0.5 + radius * phase.sin())) as isize;
        let amplitude = 0.5 + 0.08 * spot as f32;
        for y in (cy - reach).max(0)..(cy + reach + 1).min(ny as isize) {
            for x in (cx - reach).max(0)..(cx + reach + 1).min(nx as isize) {
                let d2 = ((x - cx).pow(2) + (y - cy).pow(2)) as f32;
                img[y as usize * nx + x as usize] +=
                    amplitude * (-d2 / (2.0 * sigma * sigma)).exp();
            }
        }
    }
    scale(&img, config.dtype)
}

/// Scale intensities in 0..~1 to the element type: 12 bits for 16-bit types, 16 bits for
/// wider integers, the full range for bytes, as they are for floats.
fn scale(img: &[f32], t: ScalarType) -> ScalarArray {
    fn ints<T: pva_codec::Element>(img: &[f32], full: f32, f: impl Fn(f32) -> T) -> PodArray<T> {
        PodArray::from_vec(img.iter().map(|&v| f(v.clamp(0.0, 1.0) * full)).collect())
    }
    match t {
        ScalarType::Bool => ScalarArray::Bool(img.iter().map(|&v| v > 0.5).collect()),
        ScalarType::I8 => ScalarArray::I8(ints(img, 127.0, |v| v as i8)),
        ScalarType::U8 => ScalarArray::U8(ints(img, 255.0, |v| v as u8)),
        ScalarType::I16 => ScalarArray::I16(ints(img, 4095.0, |v| v as i16)),
        ScalarType::U16 => ScalarArray::U16(ints(img, 4095.0, |v| v as u16)),
        ScalarType::I32 => ScalarArray::I32(ints(img, 65535.0, |v| v as i32)),
        ScalarType::U32 => ScalarArray::U32(ints(img, 65535.0, |v| v as u32)),
        ScalarType::I64 => ScalarArray::I64(ints(img, 65535.0, |v| v as i64)),
        ScalarType::U64 => ScalarArray::U64(ints(img, 65535.0, |v| v as u64)),
        ScalarType::F32 => ScalarArray::F32(PodArray::from_vec(img.to_vec())),
        ScalarType::F64 => {
            ScalarArray::F64(PodArray::from_vec(img.iter().map(|&v| v as f64).collect()))
        }
        // Refused by validate().
        ScalarType::String => ScalarArray::String(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;

    fn config(dtype: ScalarType) -> SimDetConfig {
        SimDetConfig {
            nx: 64,
            ny: 48,
            dtype,
            fps: 0.0,
            frames: Some(3),
            runtime: None,
            start_delay: Duration::ZERO,
            seed: 7,
            counter: false,
            start_id: 1,
        }
    }

    #[test]
    fn frames_of_every_ntndarray_type_carry_numbers_times_sizes_and_attributes() {
        for t in ScalarType::ALL
            .into_iter()
            .filter(|t| *t != ScalarType::String)
        {
            let det = SimDet::new(config(t)).unwrap();
            let frame = Frame::from_value(det.frame(2)).unwrap();
            assert_eq!(frame.meta.unique_id, 2);
            assert_eq!(frame.meta.sizes, vec![64, 48]);
            assert_eq!(frame.meta.element, Some(t));
            assert_eq!(
                frame.meta.payload_bytes,
                (64 * 48 * t.wire_size()) as u64,
                "{t:?}"
            );
            assert_eq!(
                frame.meta.uncompressed_size,
                frame.meta.payload_bytes as i64
            );
            assert!(frame.meta.time_stamp.seconds_past_epoch > 1_600_000_000);
            let names: Vec<String> = frame.attributes().into_iter().map(|a| a.name).collect();
            assert_eq!(names, ["ColorMode", "FrameRate", "TotalFrames"]);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_pixels_and_frames_differ() {
        let a = SimDet::new(config(ScalarType::U16)).unwrap();
        let b = SimDet::new(config(ScalarType::U16)).unwrap();
        let data = |d: &SimDet, id| Frame::from_value(d.frame(id)).unwrap().data().cloned();
        assert_eq!(data(&a, 1), data(&b, 1));
        assert_ne!(data(&a, 1), data(&a, 2));
        let Some(ScalarArray::U16(px)) = data(&a, 1) else {
            panic!()
        };
        let max = px.iter().max().unwrap();
        assert!(max > 1000, "spots stand out of the noise: {max}");
    }

    #[test]
    fn poisson_frames_have_the_mean_and_compressed_frames_decompress_to_them() {
        let options = FrameOptions {
            pattern: Pattern::Poisson { mean: 10.0 },
            codec: Some(Codec::Bslz4),
            codec_level: 5,
        };
        let det = SimDet::with_options(config(ScalarType::U16), options).unwrap();
        let sent = Frame::from_value(det.frame(2)).unwrap();
        assert_eq!(crate::codec::codec_name(&sent.value), Some("bslz4"));
        assert!(
            sent.meta.payload_bytes < sent.meta.uncompressed_size as u64 / 2,
            "{:?}",
            sent.meta
        );
        let image = sent.decompressed().unwrap();
        let raw = Frame::from_value(det.raw_frame(2)).unwrap();
        assert_eq!(image.data(), raw.data());
        assert_eq!(image.meta.element, Some(ScalarType::U16));
        let stats = crate::stats::FrameStats::of(&image).unwrap();
        assert!((stats.mean - 10.0).abs() < 0.3, "{stats:?}");
        assert!(SimDet::with_options(
            config(ScalarType::U16),
            FrameOptions {
                pattern: Pattern::Poisson { mean: -1.0 },
                ..options
            }
        )
        .is_err());
    }

    #[test]
    fn a_fixed_rate_holds_on_the_deadline_clock() {
        let det = SimDet::new(SimDetConfig {
            fps: 200.0,
            frames: Some(40),
            ..config(ScalarType::U8)
        })
        .unwrap();
        let p = det.run(&AtomicBool::new(false), |_| {});
        assert_eq!(p.frames, 40);
        // 39 periods of 5 ms at least; no assertion on the upper side (loaded machines).
        assert!(p.elapsed_s >= 0.195, "{p:?}");
        assert_eq!(det.pv().current().get("uniqueId"), Some(&Value::I32(40)));
    }

    #[test]
    fn numbers_start_where_told_continue_from_run_to_run_and_wrap_like_an_int32() {
        let det = SimDet::new(SimDetConfig {
            frames: Some(3),
            start_id: i32::MAX - 3,
            ..config(ScalarType::U8)
        })
        .unwrap();
        let id = |det: &SimDet| det.pv().current().get("uniqueId").cloned();
        det.run(&AtomicBool::new(false), |_| {});
        assert_eq!(id(&det), Some(Value::I32(i32::MAX - 1)));
        det.run(&AtomicBool::new(false), |_| {});
        assert_eq!(
            id(&det),
            Some(Value::I32(i32::MIN + 1)),
            "wrapped, not saturated"
        );
        assert_eq!(det.next_id(), i32::MIN + 2);
    }

    #[test]
    fn the_counter_publishes_an_ntscalar_that_counts() {
        let det = SimDet::new(SimDetConfig {
            counter: true,
            ..config(ScalarType::U8)
        })
        .unwrap();
        let meta = crate::FrameMeta::from_value(&det.frame(5)).unwrap();
        assert_eq!((meta.unique_id, meta.payload_bytes), (5, 8));
        assert_eq!(det.pv().current().id(), "epics:nt/NTScalar:1.0");
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let e = SimDet::new(SimDetConfig {
            nx: 0,
            ..config(ScalarType::U8)
        })
        .err()
        .unwrap();
        assert!(e.to_string().contains("at least 1"), "{e}");
        assert!(SimDet::new(config(ScalarType::String)).is_err());
        assert!(SimDet::new(SimDetConfig {
            fps: -1.0,
            ..config(ScalarType::U8)
        })
        .is_err());
    }
}
