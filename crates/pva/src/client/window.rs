//! The flow-control window of a pipelined monitor: how many updates the server may still send,
//! and when the client acknowledges the ones its user has taken.

/// Monitor flow control as pvxs does it: the server may send `queue_size` updates; the client
/// acknowledges consumed updates in batches of at least `ack_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pipeline: bool,
    queue_size: u32,
    ack_at: u32,
    window: u32,
    unacked: u32,
}

impl Window {
    /// A window for a monitor of `queue_size` (at least 1); `pipeline` off disables acks.
    pub fn new(pipeline: bool, queue_size: u32) -> Self {
        let queue_size = queue_size.max(1);
        Window {
            pipeline,
            queue_size,
            ack_at: (queue_size / 2).clamp(1, queue_size),
            window: queue_size,
            unacked: 0,
        }
    }

    /// Whether acks are sent at all.
    pub fn pipeline(&self) -> bool {
        self.pipeline
    }

    /// The queue size announced to the server on create.
    pub fn queue_size(&self) -> u32 {
        self.queue_size
    }

    /// Updates the server may still send before it must wait for an ack.
    pub fn available(&self) -> u32 {
        self.window
    }

    /// Start over (a new create on a new connection): full window, nothing to ack.
    pub fn reset(&mut self) {
        self.window = self.queue_size;
        self.unacked = 0;
    }

    /// An update arrived; false when the server exceeded the window.
    pub fn received(&mut self) -> bool {
        if !self.pipeline {
            return true;
        }
        match self.window.checked_sub(1) {
            Some(w) => {
                self.window = w;
                true
            }
            None => false,
        }
    }

    /// The user took `n` updates; returns how many to acknowledge now, if it is time to.
    pub fn consumed(&mut self, n: u32) -> Option<u32> {
        if !self.pipeline || n == 0 {
            return None;
        }
        self.unacked = self.unacked.saturating_add(n);
        if self.unacked < self.ack_at {
            return None;
        }
        let ack = self.unacked;
        self.window = self.window.saturating_add(ack).min(self.queue_size);
        self.unacked = 0;
        Some(ack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_in_batches_of_half_the_queue() {
        let mut w = Window::new(true, 4);
        for _ in 0..4 {
            assert!(w.received());
        }
        assert!(!w.received(), "a fifth update overruns a window of 4");
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
            assert!(w.received());
        }
        assert_eq!(w.consumed(50), None);
    }

    #[test]
    fn queue_of_one_acks_every_update() {
        let mut w = Window::new(true, 0);
        assert_eq!(w.queue_size(), 1);
        assert!(w.received());
        assert_eq!(w.consumed(1), Some(1));
        w.reset();
        assert_eq!(w.available(), 1);
    }
}
