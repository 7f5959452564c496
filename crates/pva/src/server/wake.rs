//! How a subscription wakes the reader of its queue: through a std [`Waker`], so that the
//! sans-I/O connection can subscribe without holding anything of tokio's, or through a tokio
//! [`Notify`].

use std::sync::Arc;
use std::task::{Wake, Waker};

use tokio::sync::Notify;

/// What a subscription calls each time it queues an update for its reader. Made from a
/// [`Waker`] or an `Arc<Notify>` (then each update is one `notify_one`).
#[derive(Debug, Clone)]
pub struct Wakeup(Waker);

impl Wakeup {
    /// Wake the reader.
    pub(crate) fn wake(&self) {
        self.0.wake_by_ref();
    }
}

impl From<Waker> for Wakeup {
    fn from(waker: Waker) -> Self {
        Wakeup(waker)
    }
}

impl From<Arc<Notify>> for Wakeup {
    fn from(notify: Arc<Notify>) -> Self {
        Wakeup(notify_waker(notify))
    }
}

/// A [`Waker`] whose every wake is a `notify_one` of `notify`: a task waiting on `notify`
/// runs, or the next one to wait does not wait.
pub fn notify_waker(notify: Arc<Notify>) -> Waker {
    Waker::from(Arc::new(NotifyWake(notify)))
}

struct NotifyWake(Arc<Notify>);

impl Wake for NotifyWake {
    fn wake(self: Arc<Self>) {
        self.0.notify_one();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.notify_one();
    }
}
