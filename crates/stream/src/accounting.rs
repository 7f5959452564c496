//! Exact frame accounting from frame numbers: every number is received, missed (a gap),
//! duplicated, or late (out of order, filling a gap that was counted missed). Gaps are kept
//! as ranges, so the books stay exact and small however many frames pass.
//!
//! The rules follow real detectors, whose `uniqueId` (an int32) keeps counting from run to run:
//! * A run counts from its first frame: the one given in advance ([`Origin::Id`], a Request's
//!   `firstFrameId`), or else the first that arrives ([`Origin::FirstReceived`]), whatever its
//!   number. The monitor's initial value is not a frame of the run: the consumer books it apart.
//! * Numbers are compared modulo 2^32: after 2147483647 comes -2147483648, which is neither a
//!   loss nor a reset.
//! * A counter that goes back (a reset of ArrayCounter, an IOC restart) starts a new sequence:
//!   it is counted once in `counter_resets`, and counting goes on from there. A number going back
//!   is a reset when it is 0 or 1 (where counters start again) or lies more than
//!   [`REORDER_WINDOW`] frames behind the newest; closer behind, it is a duplicate, or a late
//!   frame when it fills a gap.
//!
//! A consumer of a distributed stream gets every `stride`-th frame (the relay hands frames to
//! `stride` consumers in turn); its books then count in steps of `stride`, from its first frame.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// How far behind the newest frame a number may come and still be a duplicate or a late frame;
/// further back, the counter was reset.
pub const REORDER_WINDOW: i64 = 256;
/// Missed ranges of earlier sequences (before counter resets) kept for the report.
const EARLIER_GAPS_KEPT: usize = 64;

/// Where a run's first frame comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    /// The first frame that arrives (after the monitor's initial value) is the run's first.
    #[default]
    FirstReceived,
    /// The run's first frame has this number (the detector's counter before arming, a
    /// Request's `firstFrameId`): frames from it on that never came are missed, and earlier
    /// numbers are not frames of the run. `Id(1)` counts from 1.
    Id(i64),
}

/// What one frame number turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next frame, one past a gap (the gap is now missed), or the first of a new sequence
    /// after a counter reset.
    New,
    /// A frame that was counted missed has come after all (out of order).
    Late,
    /// Seen before.
    Duplicate,
    /// Not a frame of this run: off this consumer's stride, before the run's first frame, or
    /// an empty value (a detector that has not published).
    Ignored,
}

/// The books of one stream.
#[derive(Debug, Clone)]
pub struct Ledger {
    origin: Origin,
    stride: i64,
    /// The number of step 0 of the current sequence, once known.
    anchor: Option<u32>,
    /// Steps before this are not frames of the run.
    base: i64,
    /// Next step expected (one past the highest seen).
    next: i64,
    /// Missed steps of the current sequence as ranges: start -> end (exclusive).
    gaps: BTreeMap<i64, i64>,
    /// Missed numbers of earlier sequences (before counter resets), `[first, last]`.
    earlier_gaps: Vec<[i64; 2]>,
    /// The number of the monitor's initial value, when it was a frame.
    initial_id: Option<i64>,
    received: u64,
    missed: u64,
    duplicates: u64,
    out_of_order: u64,
    ignored: u64,
    counter_resets: u64,
    first_id: Option<i64>,
    last_id: Option<i64>,
}

/// The counts of a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Counts {
    /// Distinct frames received.
    pub received: u64,
    /// Frames never received (gaps, less those that came late).
    pub missed: u64,
    /// Frames received more than once (extra copies).
    pub duplicates: u64,
    /// Frames that came after a later one.
    pub out_of_order: u64,
    /// Updates that were not frames of this run (an empty value with number 0, a number
    /// before the run's first frame, or off the stride).
    pub ignored: u64,
    /// Times the detector's counter went back and a new sequence started.
    pub counter_resets: u64,
}

/// One consumer's books as a plain record, for reports (a workflow's report to the bridge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Books {
    /// The number of the monitor's initial value (booked apart, never counted), if it had one.
    pub initial_id: Option<i64>,
    /// The first frame number of the run received.
    pub first_id: Option<i64>,
    /// The last frame number received.
    pub last_id: Option<i64>,
    /// Distinct frames received.
    pub received: u64,
    /// Frames never received.
    pub missed: u64,
    /// Extra copies received.
    pub duplicates: u64,
    /// Frames that came after a later one.
    pub out_of_order: u64,
    /// Times the detector's counter went back.
    pub counter_resets: u64,
}

/// The distance from `from` to `to` on the int32 circle of frame numbers (-2^31 .. 2^31-1).
fn distance(from: u32, to: u32) -> i64 {
    i64::from(to.wrapping_sub(from) as i32)
}

/// A frame number as the int32 the detector sends, kept as its 32 bits.
fn bits(id: i64) -> u32 {
    id as u32
}

impl Ledger {
    /// Empty books; `stride` 0 is taken as 1. With a stride, which frames are this consumer's
    /// is known only from the first one, so the run counts from there whatever `origin` says.
    pub fn new(origin: Origin, stride: u64) -> Self {
        let stride = stride.clamp(1, i32::MAX as u64) as i64;
        let origin = if stride > 1 {
            Origin::FirstReceived
        } else {
            origin
        };
        Ledger {
            origin,
            stride,
            anchor: match origin {
                Origin::Id(first) => Some(bits(first)),
                Origin::FirstReceived => None,
            },
            base: 0,
            next: 0,
            gaps: BTreeMap::new(),
            earlier_gaps: Vec::new(),
            initial_id: None,
            received: 0,
            missed: 0,
            duplicates: 0,
            out_of_order: 0,
            ignored: 0,
            counter_resets: 0,
            first_id: None,
            last_id: None,
        }
    }

    /// Book the monitor's initial value, number `id`: the PV's value from before the
    /// subscription, kept apart as `initial_id`. It counts only when the run's first number was
    /// given and `id` is one of the run's (`expected`) frames from it; otherwise it was
    /// published before the run ([`Verdict::Ignored`], not counted at all), and should a server
    /// send it again as the first update after it, that copy is a duplicate.
    pub fn record_initial(&mut self, id: i64, expected: Option<u64>) -> Verdict {
        let in_run = match self.origin {
            Origin::Id(first) => {
                let d = distance(bits(first), bits(id));
                d >= 0 && expected.is_none_or(|n| (d as u64) < n)
            }
            Origin::FirstReceived => false,
        };
        let verdict = if in_run {
            self.record(id)
        } else {
            Verdict::Ignored
        };
        self.initial_id = Some(id);
        verdict
    }

    /// The number of the monitor's initial value, when it was a frame.
    pub fn initial_id(&self) -> Option<i64> {
        self.initial_id
    }

    /// Book an update that is not a frame (an empty value with number 0).
    pub fn skip(&mut self) {
        self.ignored += 1;
    }

    /// The number of `step` in the current sequence.
    fn id_of(&self, step: i64) -> i64 {
        let anchor = self.anchor.unwrap_or(0);
        i64::from(anchor.wrapping_add((step * self.stride) as u32) as i32)
    }

    fn received_id(&mut self, id: i64) {
        self.received += 1;
        self.first_id.get_or_insert(id);
        self.last_id = Some(id);
    }

    /// Book frame number `id`.
    pub fn record(&mut self, id: i64) -> Verdict {
        if self.first_id.is_none() && self.initial_id == Some(id) {
            // The initial value again (pvapy's server re-sends it): not the run's first frame.
            self.duplicates += 1;
            return Verdict::Duplicate;
        }
        let anchor = *self.anchor.get_or_insert(bits(id));
        let d = distance(anchor, bits(id));
        if d % self.stride != 0 {
            self.ignored += 1;
            return Verdict::Ignored;
        }
        let step = d / self.stride;
        if step >= self.next {
            if step > self.next {
                self.gaps.insert(self.next, step);
                self.missed += (step - self.next) as u64;
            }
            self.next = step + 1;
            self.received_id(id);
            return Verdict::New;
        }
        if self.fill(step) {
            self.missed -= 1;
            self.out_of_order += 1;
            self.received_id(id);
            return Verdict::Late;
        }
        let behind = self.next - 1 - step;
        if behind > 0 && (behind > REORDER_WINDOW || matches!(bits(id) as i32, 0 | 1)) {
            self.reset(id);
            return Verdict::New;
        }
        if step >= self.base {
            self.duplicates += 1;
            return Verdict::Duplicate;
        }
        match self.origin {
            Origin::Id(_) => {
                self.ignored += 1;
                Verdict::Ignored
            }
            Origin::FirstReceived if self.initial_id == Some(id) => {
                // The initial value again, from before the run (pvapy re-sends old values).
                self.duplicates += 1;
                Verdict::Duplicate
            }
            Origin::FirstReceived => {
                // Earlier than the first frame received, close behind: late, never missed.
                self.base = step;
                self.out_of_order += 1;
                self.received_id(id);
                Verdict::Late
            }
        }
    }

    /// Book the first update after a reconnection: the server's current value, which may be a
    /// frame already received (then it is not a duplicate, just the same value again).
    pub fn record_resent(&mut self, id: i64) -> Verdict {
        let duplicates = self.duplicates;
        match self.record(id) {
            Verdict::Duplicate => {
                self.duplicates = duplicates;
                self.ignored += 1;
                Verdict::Ignored
            }
            verdict => verdict,
        }
    }

    /// The counter went back to `id`: a new sequence starts there.
    fn reset(&mut self, id: i64) {
        let gaps = std::mem::take(&mut self.gaps);
        for (start, end) in gaps {
            if self.earlier_gaps.len() < EARLIER_GAPS_KEPT {
                self.earlier_gaps
                    .push([self.id_of(start), self.id_of(end - 1)]);
            }
        }
        self.counter_resets += 1;
        self.anchor = Some(bits(id));
        self.base = 0;
        self.next = 1;
        self.received_id(id);
    }

    /// Remove `step` from the gaps; false when it was not in one.
    fn fill(&mut self, step: i64) -> bool {
        let Some((&start, &end)) = self.gaps.range(..=step).next_back() else {
            return false;
        };
        if step >= end {
            return false;
        }
        self.gaps.remove(&start);
        if start < step {
            self.gaps.insert(start, step);
        }
        if step + 1 < end {
            self.gaps.insert(step + 1, end);
        }
        true
    }

    /// Frames accounted for: received or known missed.
    pub fn accounted(&self) -> u64 {
        self.received + self.missed
    }

    /// The run is over and `expected` frames should have been accounted for: those never
    /// reached are missed too, so that missed = expected - received.
    pub fn close(&mut self, expected: Option<u64>) {
        if let Some(n) = expected {
            let short = n.saturating_sub(self.accounted());
            if short > 0 {
                let short_steps = short as i64;
                self.gaps.insert(self.next, self.next + short_steps);
                self.next += short_steps;
                self.missed += short;
            }
        }
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        Counts {
            received: self.received,
            missed: self.missed,
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            ignored: self.ignored,
            counter_resets: self.counter_resets,
        }
    }

    /// The first and the last frame number received.
    pub fn id_range(&self) -> (Option<i64>, Option<i64>) {
        (self.first_id, self.last_id)
    }

    /// The missed frame numbers as ranges `[first, last]`, at most `limit` of them (those of
    /// earlier sequences first). A range that wraps past 2^31-1 has `first > last`. Empty when
    /// nothing ever arrived and the run's first number was not given.
    pub fn missed_ranges(&self, limit: usize) -> Vec<[i64; 2]> {
        if self.anchor.is_none() {
            return Vec::new();
        }
        self.earlier_gaps
            .iter()
            .copied()
            .chain(
                self.gaps
                    .iter()
                    .map(|(&start, &end)| [self.id_of(start), self.id_of(end - 1)]),
            )
            .take(limit)
            .collect()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct LatencySummary {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// A latency histogram (microsecond resolution, 3 significant digits, up to an hour).
#[derive(Debug, Clone)]
pub struct Latency {
    hist: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        Latency {
            // Valid bounds (1 us .. 1 h, 3 digits): this cannot fail.
            hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits")),
        }
    }

    /// Record one latency (negative latencies, from clocks apart, count as 0).
    pub fn record(&mut self, latency: Option<Duration>) {
        let us = latency.map_or(0, |d| d.as_micros().min(u64::MAX as u128) as u64);
        self.hist.saturating_record(us.max(1));
    }

    /// Number of latencies recorded.
    pub fn len(&self) -> u64 {
        self.hist.len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.hist.is_empty()
    }

    /// p50, p99 and max.
    pub fn summary(&self) -> LatencySummary {
        if self.hist.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            p50_ms: ms(self.hist.value_at_quantile(0.50)),
            p99_ms: ms(self.hist.value_at_quantile(0.99)),
            max_ms: ms(self.hist.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn book(origin: Origin, stride: u64, ids: &[i64]) -> Ledger {
        let mut l = Ledger::new(origin, stride);
        for &id in ids {
            l.record(id);
        }
        l
    }

    const FROM_ONE: Origin = Origin::Id(1);

    #[test]
    fn a_complete_stream_has_nothing_missed() {
        let l = book(FROM_ONE, 1, &[1, 2, 3, 4, 5]);
        assert_eq!(
            l.counts(),
            Counts {
                received: 5,
                ..Counts::default()
            }
        );
        assert_eq!(l.accounted(), 5);
    }

    #[test]
    fn gaps_are_missed_and_late_frames_fill_them() {
        let mut l = book(FROM_ONE, 1, &[1, 2, 5, 6, 9]);
        assert_eq!(l.counts().missed, 4);
        assert_eq!(l.missed_ranges(10), vec![[3, 4], [7, 8]]);
        assert_eq!(l.record(4), Verdict::Late);
        assert_eq!(l.record(4), Verdict::Duplicate);
        assert_eq!(l.record(7), Verdict::Late);
        assert_eq!(l.record(9), Verdict::Duplicate);
        assert_eq!(l.missed_ranges(10), vec![[3, 3], [8, 8]]);
        let c = l.counts();
        assert_eq!(
            (c.received, c.missed, c.duplicates, c.out_of_order),
            (7, 2, 2, 2)
        );
        assert_eq!(l.accounted(), 9);
    }

    #[test]
    fn a_run_counts_from_its_first_frame_whatever_its_number() {
        let l = book(FROM_ONE, 1, &[4, 5]);
        assert_eq!(l.counts().missed, 3, "counting from 1, 1..3 are missed");
        for first in [1, 301, 2_000_000] {
            let l = book(Origin::FirstReceived, 1, &[first, first + 1, first + 2]);
            assert_eq!(l.counts().missed, 0);
            assert_eq!(l.counts().received, 3);
            assert_eq!(l.id_range(), (Some(first), Some(first + 2)));
        }
    }

    #[test]
    fn a_given_first_number_names_the_missing_frames_from_the_start() {
        let mut l = book(Origin::Id(301), 1, &[300, 303, 304]);
        let c = l.counts();
        assert_eq!(
            (c.received, c.missed, c.ignored),
            (2, 2, 1),
            "300 is before the run"
        );
        assert_eq!(l.missed_ranges(10), vec![[301, 302]]);
        l.close(Some(5));
        assert_eq!(l.counts().missed, 3);
        assert_eq!(l.missed_ranges(10), vec![[301, 302], [305, 305]]);
    }

    #[test]
    fn the_initial_value_counts_only_when_it_is_a_frame_of_a_run_known_in_advance() {
        let initial = |origin, id, expected| {
            let mut l = Ledger::new(origin, 1);
            (l.record_initial(id, expected), l.counts().received)
        };
        assert_eq!(initial(Origin::Id(301), 301, Some(5)), (Verdict::New, 1));
        assert_eq!(initial(Origin::Id(301), 305, Some(5)), (Verdict::New, 1));
        assert_eq!(
            initial(Origin::Id(301), 306, Some(5)),
            (Verdict::Ignored, 0)
        );
        assert_eq!(initial(Origin::Id(301), 300, None), (Verdict::Ignored, 0));
        assert_eq!(
            initial(Origin::FirstReceived, 300, None),
            (Verdict::Ignored, 0)
        );
        // The initial value sent again before the run's first frame is a duplicate.
        let mut l = Ledger::new(Origin::FirstReceived, 1);
        l.record_initial(300, Some(2));
        assert_eq!(l.record(300), Verdict::Duplicate);
        assert_eq!(l.record(301), Verdict::New);
        assert_eq!(
            l.record(300),
            Verdict::Duplicate,
            "also once the run has begun"
        );
        assert_eq!(l.record(302), Verdict::New);
        let c = l.counts();
        assert_eq!(
            (l.initial_id(), l.id_range().0, c.received, c.duplicates),
            (Some(300), Some(301), 2, 2)
        );
    }

    #[test]
    fn missed_is_expected_less_received_when_the_first_frames_were_lost() {
        // Frames 301 and 302 of a run of 6 (301..306) never came.
        let mut l = book(Origin::FirstReceived, 1, &[303, 304, 305, 306]);
        l.close(Some(6));
        let c = l.counts();
        assert_eq!((c.received, c.missed), (4, 2));
    }

    #[test]
    fn numbers_wrap_past_the_int32_limit_without_loss_or_reset() {
        let max = i64::from(i32::MAX);
        let min = i64::from(i32::MIN);
        let l = book(
            Origin::FirstReceived,
            1,
            &[max - 2, max - 1, max, min, min + 1, min + 2],
        );
        let c = l.counts();
        assert_eq!((c.received, c.missed, c.counter_resets), (6, 0, 0));
        assert_eq!(l.id_range(), (Some(max - 2), Some(min + 2)));
        // A gap across the wrap is named by its numbers.
        let l = book(Origin::Id(max - 1), 1, &[max - 1, min + 1]);
        assert_eq!(l.counts().missed, 2);
        assert_eq!(l.missed_ranges(10), vec![[max, min]]);
    }

    #[test]
    fn a_counter_reset_is_counted_once_and_counting_goes_on() {
        // The counter goes back to 1 after 5, and to 1 again after a long sequence.
        let mut ids: Vec<i64> = (1..=5).chain(1..=4).collect();
        ids.extend((10..=1000).chain(1..=3));
        let l = book(FROM_ONE, 1, &ids);
        let c = l.counts();
        assert_eq!(c.counter_resets, 2);
        assert_eq!((c.missed, c.duplicates, c.out_of_order), (5, 0, 0), "{c:?}");
        assert_eq!(c.received, 5 + 4 + 991 + 3);
        assert_eq!(l.missed_ranges(10), vec![[5, 9]]);
        // A reset far back, not to 0 or 1: 2,000,000 -> 500.
        let ids: Vec<i64> = (2_000_000..2_000_010).chain(500..510).collect();
        let c = book(Origin::FirstReceived, 1, &ids).counts();
        assert_eq!((c.received, c.missed, c.counter_resets), (20, 0, 1));
    }

    #[test]
    fn a_number_close_behind_is_a_duplicate_not_a_reset() {
        let mut l = book(Origin::FirstReceived, 1, &[100, 101, 102]);
        assert_eq!(l.record(101), Verdict::Duplicate);
        assert_eq!(l.record(102), Verdict::Duplicate);
        assert_eq!(l.counts().counter_resets, 0);
    }

    #[test]
    fn the_current_value_after_a_reconnection_is_not_a_duplicate() {
        let mut l = book(FROM_ONE, 1, &[1, 2, 3]);
        assert_eq!(l.record_resent(3), Verdict::Ignored);
        assert_eq!(l.record_resent(5), Verdict::New);
        let c = l.counts();
        assert_eq!((c.received, c.missed, c.duplicates), (4, 1, 0));
    }

    #[test]
    fn closing_short_of_the_expected_count_misses_the_rest() {
        let mut l = book(FROM_ONE, 1, &[1, 2, 3]);
        l.close(Some(5));
        assert_eq!(l.counts().missed, 2);
        assert_eq!(l.missed_ranges(10), vec![[4, 5]]);
        let mut l = Ledger::new(Origin::FirstReceived, 1);
        l.close(Some(5));
        assert_eq!(l.counts().missed, 5, "nothing came: all missed");
    }

    #[test]
    fn a_distributed_stream_counts_in_steps_of_the_stride() {
        // Consumer 2 of 3: frames 2, 5, 8, 11 ...; 8 is lost.
        let l = book(FROM_ONE, 3, &[2, 5, 11, 14]);
        assert_eq!(l.counts().received, 4);
        assert_eq!(l.counts().missed, 1);
        assert_eq!(l.missed_ranges(10), vec![[8, 8]]);
        // Consumer 3 of 3: frames 3, 6, 9.
        let l = book(FROM_ONE, 3, &[3, 6, 12, 7]);
        assert_eq!(l.counts().missed, 1);
        assert_eq!(l.missed_ranges(10), vec![[9, 9]]);
        assert_eq!(l.counts().ignored, 1, "7 is another consumer's frame");
    }

    proptest! {
        /// Whatever the order and repetition of arrivals, the books agree with a plain set.
        #[test]
        fn books_match_a_set_of_what_arrived(ids in proptest::collection::vec(2i64..200, 0..400)) {
            let l = book(FROM_ONE, 1, &ids);
            let distinct: std::collections::BTreeSet<i64> = ids.iter().copied().collect();
            let highest = distinct.iter().next_back().copied().unwrap_or(0);
            let c = l.counts();
            prop_assert_eq!(c.received, distinct.len() as u64);
            prop_assert_eq!(c.duplicates, (ids.len() - distinct.len()) as u64);
            prop_assert_eq!(c.missed, highest as u64 - distinct.len() as u64);
            let listed: u64 = l.missed_ranges(usize::MAX).iter().map(|[a, b]| (b - a + 1) as u64).sum();
            prop_assert_eq!(listed, c.missed);
            for [a, b] in l.missed_ranges(usize::MAX) {
                for id in a..=b {
                    prop_assert!(!distinct.contains(&id));
                }
            }
        }

        /// A run of any length from any start, wrapping or not, with frames dropped: the
        /// missed count is the frames dropped, and nothing is a reset.
        #[test]
        fn drops_anywhere_on_the_int32_circle_are_counted_exactly(
            start in any::<i32>(),
            len in 1u32..2000,
            drop_mask in proptest::collection::vec(any::<bool>(), 2000),
        ) {
            let run: Vec<i64> = (0..len)
                .map(|k| i64::from((start as u32).wrapping_add(k) as i32))
                .collect();
            let kept: Vec<i64> = run
                .iter()
                .zip(&drop_mask)
                .filter(|(_, dropped)| !**dropped)
                .map(|(id, _)| *id)
                .collect();
            let mut l = book(Origin::Id(i64::from(start)), 1, &kept);
            l.close(Some(u64::from(len)));
            let c = l.counts();
            prop_assert_eq!(c.received, kept.len() as u64);
            prop_assert_eq!(c.missed, u64::from(len) - kept.len() as u64);
            prop_assert_eq!(c.counter_resets, 0);
        }
    }

    #[test]
    fn latency_percentiles() {
        let mut lat = Latency::new();
        for ms in 1..=100u64 {
            lat.record(Some(Duration::from_millis(ms)));
        }
        let s = lat.summary();
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
    }
}
