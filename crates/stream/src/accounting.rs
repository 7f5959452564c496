//! Exact frame accounting from frame numbers: every number is received, missed (a gap),
//! duplicated, or late (out of order, filling a gap that was counted missed). Gaps are kept
//! as ranges, so the books stay exact and small however many frames pass.
//!
//! A consumer of a distributed stream gets every `stride`-th frame (the relay hands frames to
//! `stride` consumers in turn); its books then count in steps of `stride`.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Where the first expected frame number comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Frames count from 1 (a detector that starts with the consumer in place): frames
    /// before the first one received are missed.
    FromOne,
    /// Count from the first frame received (joining a running stream).
    FromFirst,
}

/// What one frame number turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The next frame, or one past a gap (the gap is now missed).
    New,
    /// A frame that was counted missed has come after all (out of order).
    Late,
    /// Seen before.
    Duplicate,
    /// Number 0 or below, or off this consumer's stride: not a frame of this stream.
    Ignored,
}

/// The books of one stream.
#[derive(Debug, Clone)]
pub struct Ledger {
    origin: Origin,
    stride: u64,
    /// Frame number of step 0 (with a stride: the first frame's residue).
    offset: Option<u64>,
    /// Steps before this were never expected (counting from the first frame).
    base: u64,
    /// Next step expected (one past the highest seen).
    next: u64,
    /// Missed steps as ranges: start -> end (exclusive).
    gaps: BTreeMap<u64, u64>,
    received: u64,
    missed: u64,
    duplicates: u64,
    out_of_order: u64,
    ignored: u64,
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
    /// Updates that were not frames of this stream (number 0: the empty value before the
    /// first frame; or off the stride).
    pub ignored: u64,
}

impl Ledger {
    /// Empty books; `stride` 0 is taken as 1.
    pub fn new(origin: Origin, stride: u64) -> Self {
        let stride = stride.max(1);
        Ledger {
            // With a stride, which frames are ours is known only from the first one.
            origin: if stride > 1 {
                Origin::FromFirst
            } else {
                origin
            },
            stride,
            offset: (stride == 1).then_some(0),
            base: 1,
            next: 1,
            gaps: BTreeMap::new(),
            received: 0,
            missed: 0,
            duplicates: 0,
            out_of_order: 0,
            ignored: 0,
            first_id: None,
            last_id: None,
        }
    }

    /// Book frame number `id`.
    pub fn record(&mut self, id: i64) -> Verdict {
        if id <= 0 {
            self.ignored += 1;
            return Verdict::Ignored;
        }
        let id_u = id as u64;
        let offset = *self.offset.get_or_insert(id_u % self.stride);
        if id_u % self.stride != offset {
            self.ignored += 1;
            return Verdict::Ignored;
        }
        let step = id_u / self.stride;
        if self.first_id.is_none() {
            self.first_id = Some(id);
            if self.origin == Origin::FromFirst {
                self.base = step;
                self.next = step;
            }
        }
        self.last_id = Some(id);
        if step >= self.next {
            if step > self.next {
                self.gaps.insert(self.next, step);
                self.missed += step - self.next;
            }
            self.next = step + 1;
            self.received += 1;
            return Verdict::New;
        }
        if step < self.base {
            // Earlier than the first frame of a joined stream: late, never counted missed.
            self.base = step;
            self.received += 1;
            self.out_of_order += 1;
            return Verdict::Late;
        }
        if self.fill(step) {
            self.missed -= 1;
            self.received += 1;
            self.out_of_order += 1;
            Verdict::Late
        } else {
            self.duplicates += 1;
            Verdict::Duplicate
        }
    }

    /// Remove `step` from the gaps; false when it was not in one.
    fn fill(&mut self, step: u64) -> bool {
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
    /// reached are missed too.
    pub fn close(&mut self, expected: Option<u64>) {
        if let Some(n) = expected {
            let short = n.saturating_sub(self.accounted());
            if short > 0 {
                self.gaps.insert(self.next, self.next + short);
                self.next += short;
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
        }
    }

    /// The first and the last frame number received.
    pub fn id_range(&self) -> (Option<i64>, Option<i64>) {
        (self.first_id, self.last_id)
    }

    /// The missed frame numbers as ranges `[first, last]`, at most `limit` of them.
    pub fn missed_ranges(&self, limit: usize) -> Vec<[i64; 2]> {
        let offset = self.offset.unwrap_or(0);
        let id_of = |step: u64| (step * self.stride + offset) as i64;
        self.gaps
            .iter()
            .take(limit)
            .map(|(&start, &end)| [id_of(start), id_of(end - 1)])
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

    #[test]
    fn a_complete_stream_has_nothing_missed() {
        let l = book(Origin::FromOne, 1, &[1, 2, 3, 4, 5]);
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
        let mut l = book(Origin::FromOne, 1, &[1, 2, 5, 6, 9]);
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
    fn counting_from_one_misses_what_came_before_the_first_frame() {
        let l = book(Origin::FromOne, 1, &[4, 5]);
        assert_eq!(l.counts().missed, 3);
        let l = book(Origin::FromFirst, 1, &[4, 5]);
        assert_eq!(l.counts().missed, 0);
        assert_eq!(l.id_range(), (Some(4), Some(5)));
    }

    #[test]
    fn frame_zero_is_not_a_frame() {
        let l = book(Origin::FromOne, 1, &[0, 1, 0, 2]);
        let c = l.counts();
        assert_eq!((c.received, c.ignored, c.missed), (2, 2, 0));
    }

    #[test]
    fn closing_short_of_the_expected_count_misses_the_rest() {
        let mut l = book(Origin::FromOne, 1, &[1, 2, 3]);
        l.close(Some(5));
        assert_eq!(l.counts().missed, 2);
        assert_eq!(l.missed_ranges(10), vec![[4, 5]]);
    }

    #[test]
    fn a_distributed_stream_counts_in_steps_of_the_stride() {
        // Consumer 2 of 3: frames 2, 5, 8, 11 ...; 8 is lost.
        let l = book(Origin::FromOne, 3, &[2, 5, 11, 14]);
        assert_eq!(l.counts().received, 4);
        assert_eq!(l.counts().missed, 1);
        assert_eq!(l.missed_ranges(10), vec![[8, 8]]);
        // Consumer 3 of 3: frames 3, 6, 9 (residue 0).
        let l = book(Origin::FromOne, 3, &[3, 6, 12, 7]);
        assert_eq!(l.counts().missed, 1);
        assert_eq!(l.missed_ranges(10), vec![[9, 9]]);
        assert_eq!(l.counts().ignored, 1, "7 is another consumer's frame");
    }

    proptest! {
        /// Whatever the order and repetition of arrivals, the books agree with a plain set.
        #[test]
        fn books_match_a_set_of_what_arrived(ids in proptest::collection::vec(1i64..200, 0..400)) {
            let l = book(Origin::FromOne, 1, &ids);
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
