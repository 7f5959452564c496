//! The flow-control window of a pipelined monitor: how many updates the server may still send,
//! and when (and how much) the client acknowledges.
//!
//! With a byte budget the window is counted in bytes too: the client grants the server as many
//! updates as fit the budget at the updates' running size (at most its queue size), so 8-byte
//! scalars flow with a deep window and 2 MiB frames with a shallow one, and the memory in flight
//! stays bounded whatever the size. The credit moves through the acks alone: pvxs (and our server) add any ack's count
//! to the window, so acknowledging more updates than were taken deepens it, and fewer shrinks it.
//!
//! Credit given cannot be taken back. An empty first value of a type that can hold arrays (an
//! image before the first frame) says nothing of the frames after it, so then the credit grows
//! at most twofold per ack. Any other first value's size is trusted at once: pvxs sends what an
//! ack allows only at its next post, so a burst of small posts right after the subscription
//! needs the deep window before the burst ends, or its tail waits for a post that never comes.

use pva_codec::StructValue;

/// Default bytes a pipelined monitor lets the server have in flight (sent and not acknowledged).
pub const DEFAULT_BYTE_BUDGET: u64 = 64 << 20;

/// The first window of a byte-counted monitor, before any update's size is known (pvxs's
/// default queue size): small enough for any frame, and deepened by the first ack.
pub const FIRST_WINDOW: u32 = 4;

/// Monitor flow control as pvxs does it: the server may first send a window of updates; the
/// client acknowledges in batches of at least half its credit. Without a byte budget the credit
/// is `queue_size` for good; with one it is as many updates as fit the budget at their running
/// size, never more than `queue_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pipeline: bool,
    queue_size: u32,
    /// Bytes the server may have in flight, when the window is counted in bytes.
    budget: Option<u64>,
    /// Updates the server may still send, as far as we know.
    window: u32,
    /// Updates received and not yet acknowledged (queued, or taken and not yet acked).
    outstanding: u32,
    /// Of `outstanding`, those the user has taken.
    unacked: u32,
    /// Running size of an update in bytes (0: none seen yet): rises at once to a larger
    /// update and decays by 1/64 of the difference towards smaller ones, so that streams of
    /// mixed sizes are counted at their large updates.
    size: u64,
    /// No update has come since the subscription began: the next one is its first value.
    awaiting_first: bool,
    /// Whether the credit grows at most twofold per ack: the first value was an empty image.
    step_by_step: bool,
}

impl Window {
    /// A window for a monitor of `queue_size` (at least 1); `pipeline` off disables acks.
    pub fn new(pipeline: bool, queue_size: u32) -> Self {
        let queue_size = queue_size.max(1);
        Window {
            pipeline,
            queue_size,
            budget: None,
            window: queue_size,
            outstanding: 0,
            unacked: 0,
            size: 0,
            awaiting_first: true,
            step_by_step: false,
        }
    }

    /// Count the window in bytes as well: at most `bytes` in flight (and at most `queue_size`
    /// updates), starting from a [`FIRST_WINDOW`] of updates.
    pub fn with_budget(mut self, bytes: u64) -> Self {
        self.budget = Some(bytes.max(1));
        self.window = self.first_window();
        self
    }

    /// Look at an update before [`Window::received`] counts it. The subscription's first value
    /// decides how the credit grows: step by step (at most twofold per ack) after an empty
    /// image, a type that can hold arrays holding none; at once after anything else.
    pub fn note_value(&mut self, value: &StructValue) {
        if std::mem::take(&mut self.awaiting_first) {
            self.step_by_step = value.desc().holds_arrays() && !value.holds_array_data();
        }
    }

    /// Whether acks are sent at all.
    pub fn pipeline(&self) -> bool {
        self.pipeline
    }

    /// The most updates the client holds: the size its queue needs.
    pub fn queue_size(&self) -> u32 {
        self.queue_size
    }

    /// The window announced to the server on create.
    pub fn first_window(&self) -> u32 {
        match self.budget {
            Some(_) => self.queue_size.min(FIRST_WINDOW),
            None => self.queue_size,
        }
    }

    /// Updates the server may still send before it must wait for an ack.
    pub fn available(&self) -> u32 {
        self.window
    }

    /// Updates the server may have in flight once the acks due are sent: its remaining window
    /// plus what it sent and we have not acknowledged.
    pub fn in_flight(&self) -> u32 {
        self.window.saturating_add(self.outstanding)
    }

    /// The credit the client aims at: `queue_size` without a budget; with one, as many updates
    /// of the running size as fit it (the first window before any update).
    pub fn credit(&self) -> u32 {
        match self.budget {
            Some(bytes) if self.size > 0 => {
                let fit = (bytes / self.size).min(u64::from(u32::MAX)) as u32;
                fit.clamp(1, self.queue_size)
            }
            Some(_) => self.first_window(),
            None => self.queue_size,
        }
    }

    /// How many taken updates the user's side may gather before reporting them: a quarter of
    /// the smaller of the credit and the window in flight, so that acks are due in time (the
    /// first window, before the credit grows, is reported at once).
    pub fn report_batch(&self) -> u32 {
        (self.credit().min(self.in_flight()) / 4).max(1)
    }

    /// Start over (a new create on a new connection): the first window, nothing to ack. The
    /// running size is kept: the same channel most likely sends the same updates.
    pub fn reset(&mut self) {
        self.window = self.first_window();
        self.outstanding = 0;
        self.unacked = 0;
        self.awaiting_first = true;
    }

    /// An update of `bytes` arrived; false when the server exceeded the window.
    pub fn received(&mut self, bytes: usize) -> bool {
        if !self.pipeline {
            return true;
        }
        let bytes = bytes as u64;
        self.size = if bytes >= self.size {
            bytes
        } else {
            self.size - (self.size - bytes) / 64
        };
        match self.window.checked_sub(1) {
            Some(w) => {
                self.window = w;
                self.outstanding += 1;
                true
            }
            None => false,
        }
    }

    /// The user took `n` updates; returns how many to acknowledge now, if it is time to. The
    /// ack brings the server's credit to [`Window::credit`] (step by step after an empty first
    /// image): more than was taken while the credit grows, fewer (or none yet) while it
    /// shrinks.
    pub fn consumed(&mut self, n: u32) -> Option<u32> {
        if !self.pipeline || n == 0 {
            return None;
        }
        self.unacked = self.unacked.saturating_add(n).min(self.outstanding);
        let in_flight = self.in_flight();
        let aim = if self.step_by_step {
            let doubled = in_flight.saturating_mul(2).max(self.first_window());
            self.credit().min(doubled)
        } else {
            self.credit()
        };
        let ack = (self.unacked + aim).saturating_sub(in_flight);
        if ack == 0 || ack < (aim / 2).max(1) {
            return None;
        }
        self.outstanding -= self.unacked;
        self.unacked = 0;
        self.window = self.window.saturating_add(ack);
        Some(ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::nt::{NdArrayFrame, NtNdArray, NtScalar};
    use pva_codec::{PodArray, ScalarArray, ScalarType};

    const MIB: usize = 1 << 20;

    /// A pipelined window of at most `queue_size` updates and the default budget.
    fn budgeted(queue_size: u32) -> Window {
        Window::new(true, queue_size).with_budget(DEFAULT_BYTE_BUDGET)
    }

    /// The server sends as long as the window allows updates of `bytes`; the user takes each
    /// at once. Returns the acks sent, and checks the bytes in flight never exceed `limit`.
    fn stream(w: &mut Window, updates: usize, bytes: usize, limit: u64) -> Vec<u32> {
        let mut acks = Vec::new();
        for _ in 0..updates {
            assert!(w.available() > 0, "the window stalled: {w:?}");
            assert!(w.received(bytes));
            acks.extend(w.consumed(1));
            assert!(
                u64::from(w.in_flight()) * bytes as u64 <= limit,
                "{} updates of {bytes} B in flight: {w:?}",
                w.in_flight()
            );
        }
        acks
    }

    #[test]
    fn acks_in_batches_of_half_the_queue() {
        let mut w = Window::new(true, 4);
        for _ in 0..4 {
            assert!(w.received(100));
        }
        assert!(!w.received(100), "a fifth update overruns a window of 4");
        assert_eq!(w.consumed(1), None);
        assert_eq!(w.consumed(1), Some(2));
        assert_eq!(w.available(), 2);
        assert_eq!(w.consumed(2), Some(2));
        assert_eq!(w.available(), 4);
    }

    #[test]
    fn without_pipeline_nothing_is_acked() {
        let mut w = Window::new(false, 4);
        for _ in 0..100 {
            assert!(w.received(100));
        }
        assert_eq!(w.consumed(50), None);
    }

    #[test]
    fn queue_of_one_acks_every_update() {
        let mut w = Window::new(true, 0);
        assert_eq!(w.queue_size(), 1);
        assert!(w.received(100));
        assert_eq!(w.consumed(1), Some(1));
        w.reset();
        assert_eq!(w.available(), 1);
    }

    #[test]
    fn small_updates_get_a_deep_window() {
        let mut w = budgeted(4096);
        assert_eq!(w.first_window(), FIRST_WINDOW, "nothing known yet");
        assert_eq!(w.credit(), FIRST_WINDOW);
        let acks = stream(&mut w, 10_000, 8, DEFAULT_BYTE_BUDGET);
        assert_eq!(w.credit(), 4096);
        assert!(
            acks[0] > 1,
            "the first ack grants more than was taken: {acks:?}"
        );
        assert_eq!(w.in_flight(), 4096);
        assert!(
            acks.len() < 10_000 / 100,
            "acks come in batches: {}",
            acks.len()
        );
    }

    #[test]
    fn two_mib_frames_get_a_shallow_window() {
        let mut w = budgeted(4096);
        assert_eq!(
            w.available(),
            FIRST_WINDOW,
            "the first window fits any frame"
        );
        stream(&mut w, 1000, 2 * MIB, DEFAULT_BYTE_BUDGET);
        assert_eq!(w.credit(), 32);
        assert_eq!(w.in_flight(), 32);
    }

    #[test]
    fn reports_are_batched_by_a_quarter_of_the_window() {
        let mut w = budgeted(4096);
        assert_eq!(w.report_batch(), 1, "the first window is reported at once");
        stream(&mut w, 10_000, 8, DEFAULT_BYTE_BUDGET);
        assert_eq!(w.report_batch(), 1024);
        stream(&mut w, 2000, 2 * MIB, u64::MAX);
        assert_eq!(w.report_batch(), 8);
    }

    #[test]
    fn an_empty_first_image_does_not_open_the_window_to_the_frames_after_it() {
        let mut w = budgeted(4096);
        // An empty image, then frames of 2 MiB.
        w.note_value(&NtNdArray::new().create());
        assert!(w.received(82));
        let first = w
            .consumed(1)
            .expect("the first window is acknowledged at once");
        assert!(
            first <= 2 * FIRST_WINDOW,
            "the credit grows step by step: {first}"
        );
        stream(&mut w, 1000, 2 * MIB, DEFAULT_BYTE_BUDGET);
        assert_eq!(w.in_flight(), 32);
        // Small images after that: the credit still grows, a doubling per ack.
        let acks = stream(&mut w, 2000, 64, DEFAULT_BYTE_BUDGET);
        assert_eq!(w.in_flight(), 4096, "acks: {acks:?}");
        // A new subscription whose first value is a frame trusts its size again.
        w.reset();
        w.note_value(&small_image());
        assert!(w.received(300));
        assert_eq!(w.consumed(1), Some(4093));
    }

    #[test]
    fn a_small_first_frame_or_scalar_opens_the_window_at_once() {
        for first in [small_image(), NtScalar::new(ScalarType::I64).create()] {
            let mut w = budgeted(4096);
            w.note_value(&first);
            assert!(w.received(300));
            assert_eq!(
                w.consumed(1),
                Some(4093),
                "a burst of posts right after the subscription may all be sent: {}",
                first.id()
            );
        }
    }

    /// A 16x8 image of 16-bit pixels, as NTNDArray.
    fn small_image() -> StructValue {
        let pixels = ScalarArray::U16(PodArray::from_vec(vec![7u16; 16 * 8]));
        NtNdArray::new()
            .build_value(NdArrayFrame::new(pixels, &[16, 8], 1))
            .unwrap()
    }

    #[test]
    fn the_queue_size_caps_the_credit() {
        let mut w = budgeted(16);
        stream(&mut w, 1000, 8, DEFAULT_BYTE_BUDGET);
        assert_eq!(w.credit(), 16);
        assert_eq!(w.in_flight(), 16);
    }

    #[test]
    fn mixed_sizes_stay_within_the_budget() {
        let budget = 16 << 20;
        let mut w = Window::new(true, 1024).with_budget(budget);
        stream(&mut w, 5000, 100, budget);
        assert_eq!(w.credit(), 1024);
        // Frames of 1 MiB after 1,024 scalars were granted: the server may still send what it
        // was given (credit cannot be taken back), but the first ack brings it within budget.
        let mut acks = 0;
        for _ in 0..1100 {
            assert!(w.received(MIB), "within the window");
            if w.consumed(1).is_some() {
                acks += 1;
                assert!(u64::from(w.in_flight()) * MIB as u64 <= budget, "{w:?}");
            }
        }
        assert!(acks > 0);
        // Alternating sizes are counted at the larger one: the budget holds for every frame.
        for i in 0..2000 {
            let bytes = if i % 2 == 0 { MIB } else { 64 };
            assert!(w.received(bytes), "within the window");
            w.consumed(1);
            assert!(u64::from(w.in_flight()) * MIB as u64 <= budget, "{w:?}");
            assert!(w.in_flight() >= 8, "the stream never stalls: {w:?}");
        }
        // Back to small updates: the window deepens again.
        stream(&mut w, 5000, 100, budget);
        assert_eq!(w.credit(), 1024);
    }

    #[test]
    fn a_slow_user_never_holds_more_than_the_budget() {
        let budget = 8 * MIB as u64;
        let mut w = Window::new(true, 256).with_budget(budget);
        let mut held = 0u32;
        for round in 0..200 {
            // The server sends all it may; the user takes one update in three rounds.
            while w.available() > 0 {
                assert!(w.received(2 * MIB));
                held += 1;
            }
            assert!(held <= 4, "round {round}: {held} frames of 2 MiB held");
            if round % 3 == 0 {
                held -= 1;
                w.consumed(1);
            }
        }
    }
}
