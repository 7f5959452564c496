//! The subscribers of a [`SharedPv`](super::SharedPv): each one's bounded queue of updates (a
//! [`SquashQueue`]) and counters, the ledger of those present and departed, the routing of a
//! post over them, and the back-pressure that lets a publisher wait for room in every queue.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use pva_codec::{BitSet, StructValue};

use super::distributor::{Delivery, DistributorRequest, Routing};
use super::wake::Wakeup;
use crate::squash::{self, Entry, SquashQueue};

/// One update waiting to go to a subscriber.
pub type Update = squash::Update;

/// A subscriber's bounded queue. When full, a new update is squashed into the newest queued
/// one and its fields are marked in the overrun set, so memory stays bounded and every loss
/// is counted. The PV's `close` finishes it: what is queued may still be taken, then it ends.
#[derive(Debug)]
pub struct Subscription {
    queue: Mutex<QueueState>,
    wake: Wakeup,
    /// Only changes of these bits are queued (a monitor's field selection); all when `None`.
    interest: Option<BitSet>,
    counters: Arc<Counters>,
    room: Arc<Room>,
}

#[derive(Debug)]
struct QueueState {
    updates: SquashQueue<(), std::convert::Infallible>,
    /// The PV was closed: no more updates come.
    finished: bool,
}

/// Who subscribes, and to what: see [`SharedPv::subscribe_with`](super::SharedPv::subscribe_with).
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// The subscriber's address, when it came over a connection (kept in its stats).
    pub peer: Option<SocketAddr>,
    /// Only changes that touch one of these bits are queued (a monitor's field selection), so
    /// that updates outside it neither reach the client nor take its queue; all when `None`.
    pub interest: Option<BitSet>,
    /// The subscriber's share of the updates (its pvRequest's `pydistributor` option), instead
    /// of every update.
    pub distributor: Option<DistributorRequest>,
    /// Most bytes of arrays its queue may hold (a monitor's limit on the connection): past
    /// it, newer updates squash into the newest, so large frames stay bounded in memory
    /// however deep a queue the subscriber asked for. Unbounded in bytes when `None`.
    pub max_bytes: Option<usize>,
}

/// A subscription's counters, shared with its PV so they outlive the subscriber.
#[derive(Debug)]
struct Counters {
    id: u64,
    peer: Option<SocketAddr>,
    posted: AtomicU64,
    squashed: AtomicU64,
}

/// What one subscriber of a [`SharedPv`](super::SharedPv) was sent and lost. The PV keeps
/// these after the subscriber leaves, so a relay can report every consumer's losses exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberStats {
    /// Order of subscription on this PV, from 1.
    pub id: u64,
    /// The subscriber's address, when it came over a connection.
    pub peer: Option<SocketAddr>,
    /// Updates posted to its queue (the initial value included).
    pub posted: u64,
    /// Updates squashed into others because it fell behind: lost to it.
    pub squashed: u64,
    /// Still subscribed.
    pub open: bool,
}

impl Counters {
    fn stats(&self, open: bool) -> SubscriberStats {
        SubscriberStats {
            id: self.id,
            peer: self.peer,
            posted: self.posted.load(Ordering::Relaxed),
            squashed: self.squashed.load(Ordering::Relaxed),
            open,
        }
    }
}

impl Subscription {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `value`, whose arrays hold `bytes` (measured once for all subscribers).
    fn push(&self, value: &StructValue, changed: &BitSet, bytes: usize) {
        if let Some(interest) = &self.interest {
            if !changed.iter().any(|bit| interest.get(bit)) {
                return;
            }
        }
        self.counters.posted.fetch_add(1, Ordering::Relaxed);
        let pushed = self
            .lock()
            .updates
            .push_measured(Update::new(value.clone(), changed.clone(), ()), bytes);
        if pushed == squash::Pushed::Squashed {
            self.counters.squashed.fetch_add(1, Ordering::Relaxed);
        }
        self.wake.wake();
    }

    /// Take the oldest queued update.
    pub fn pop(&self) -> Option<Update> {
        let Entry::Update(update) = self.lock().updates.pop()?;
        self.room.freed();
        Some(update)
    }

    /// Move up to `max` of the oldest queued updates to `into`, under one lock and with one
    /// wake-up of a publisher waiting for room, rather than one of each per update. Returns
    /// how many were moved.
    pub fn pop_batch(&self, max: usize, into: &mut Vec<Update>) -> usize {
        let n = self.lock().updates.pop_updates(max, into);
        if n > 0 {
            self.room.freed();
        }
        n
    }

    /// True when one more update fits without squashing.
    pub(super) fn has_room(&self) -> bool {
        self.lock().updates.has_room()
    }

    /// True when an update is waiting.
    pub fn has_pending(&self) -> bool {
        !self.lock().updates.is_empty()
    }

    /// True once the PV was closed: after the updates still queued, nothing more comes.
    pub fn is_finished(&self) -> bool {
        self.lock().finished
    }

    fn finish(&self) {
        self.lock().finished = true;
        self.wake.wake();
    }

    /// Updates squashed into others because this subscriber fell behind.
    pub fn squashed(&self) -> u64 {
        self.counters.squashed.load(Ordering::Relaxed)
    }
}

/// Wakes a publisher that waits for room in its subscribers' queues.
#[derive(Debug, Default)]
pub(super) struct Room {
    waiters: AtomicU64,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Room {
    fn freed(&self) {
        if self.waiters.load(Ordering::Acquire) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.freed.notify_all();
        }
    }

    /// Wait (blocking, up to `timeout`) until `has_room` says so; true when it did. Every
    /// update taken from a subscription of this room asks again.
    pub(super) fn wait(&self, timeout: Duration, has_room: impl Fn() -> bool) -> bool {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let deadline = Instant::now() + timeout;
        let ok = loop {
            let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            if has_room() {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            // A pop between the check and the wait notifies under the same lock, so no
            // wake-up is missed.
            let _ = self
                .freed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner());
        };
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        ok
    }
}

/// Stats of departed subscribers a PV keeps (the oldest are forgotten first).
const DEPARTED_KEPT: usize = 1024;

struct Subscriber {
    sub: Weak<Subscription>,
    counters: Arc<Counters>,
}

/// The subscribers of one PV, present and departed, and how posts are routed over them.
#[derive(Default)]
pub(super) struct Subscribers {
    list: Vec<Subscriber>,
    departed: VecDeque<SubscriberStats>,
    /// The id of the last subscriber; ids start at 1.
    last_id: u64,
    routing: Routing,
    room: Arc<Room>,
}

impl Subscribers {
    /// True when every live subscriber's queue can take one more update (departed ones are
    /// left for the next post to clear away): the check a publisher makes before each post,
    /// so it builds no list.
    pub(super) fn all_have_room(&self) -> bool {
        self.list
            .iter()
            .all(|s| s.sub.upgrade().is_none_or(|sub| sub.has_room()))
    }

    /// The room that the publisher of these subscribers waits in.
    pub(super) fn room(&self) -> Arc<Room> {
        self.room.clone()
    }

    /// A new subscription with a queue of `capacity` updates, holding `first` when given (the
    /// PV's value), finished at once when not (a closed PV).
    pub(super) fn add(
        &mut self,
        capacity: usize,
        wake: Wakeup,
        options: SubscribeOptions,
        first: Option<&StructValue>,
    ) -> Arc<Subscription> {
        self.last_id += 1;
        let counters = Arc::new(Counters {
            id: self.last_id,
            peer: options.peer,
            posted: AtomicU64::new(0),
            squashed: AtomicU64::new(0),
        });
        let sub = Arc::new(Subscription {
            interest: options.interest,
            queue: Mutex::new(QueueState {
                updates: match options.max_bytes {
                    Some(budget) => SquashQueue::new(capacity).with_byte_budget(budget),
                    None => SquashQueue::new(capacity),
                },
                finished: false,
            }),
            wake,
            counters: counters.clone(),
            room: self.room.clone(),
        });
        match first {
            Some(value) => {
                sub.push(value, &BitSet::with(0), value.array_bytes());
                self.routing.join(counters.id, options.distributor.as_ref());
                self.list.push(Subscriber {
                    sub: Arc::downgrade(&sub),
                    counters,
                });
            }
            None => {
                sub.finish();
                self.depart(&counters);
            }
        }
        sub
    }

    fn depart(&mut self, counters: &Counters) {
        if self.departed.len() >= DEPARTED_KEPT {
            self.departed.pop_front();
        }
        self.departed.push_back(counters.stats(false));
        self.routing.leave(counters.id);
    }

    /// The live subscriptions; departed ones move to the ledger.
    pub(super) fn live(&mut self) -> Vec<Arc<Subscription>> {
        let mut live = Vec::with_capacity(self.list.len());
        let mut gone = Vec::new();
        self.list.retain(|s| match s.sub.upgrade() {
            Some(sub) => {
                live.push(sub);
                true
            }
            None => {
                gone.push(s.counters.clone());
                false
            }
        });
        for counters in gone {
            self.depart(&counters);
        }
        live
    }

    /// Queue `value`, with `changed` fields, for the subscribers `delivery` and their requests
    /// choose. Returns the id of the first it went to (the one a [`Delivery::Next`] chose),
    /// and the live subscriptions (to be dropped outside the PV's lock).
    pub(super) fn deliver(
        &mut self,
        value: &StructValue,
        changed: &BitSet,
        delivery: Delivery,
    ) -> (Option<u64>, Vec<Arc<Subscription>>) {
        let live = self.live();
        let bytes = value.array_bytes();
        if self.routing.delivers_to_all(delivery) {
            // The common case, on the path of every post: no lists of ids to build.
            for sub in &live {
                sub.push(value, changed, bytes);
            }
            return (live.first().map(|s| s.counters.id), live);
        }
        let ids: Vec<u64> = live.iter().map(|s| s.counters.id).collect();
        let chosen = self.routing.route(delivery, value, &ids);
        // `chosen` keeps the order of `ids`: one walk along both.
        let mut next = chosen.iter().peekable();
        for sub in &live {
            if next.next_if_eq(&&sub.counters.id).is_some() {
                sub.push(value, changed, bytes);
            }
        }
        (chosen.first().copied(), live)
    }

    /// Every subscriber leaves: returns their subscriptions, to finish outside the PV's lock.
    pub(super) fn leave_all(&mut self) -> Vec<Arc<Subscription>> {
        let live = self.live();
        for s in std::mem::take(&mut self.list) {
            self.depart(&s.counters);
        }
        live
    }

    /// Number of live subscriptions.
    pub(super) fn count(&self) -> usize {
        self.list
            .iter()
            .filter(|s| s.sub.strong_count() > 0)
            .count()
    }

    /// What every subscriber, present and departed, was sent and lost, in order of
    /// subscription.
    pub(super) fn stats(&mut self) -> Vec<SubscriberStats> {
        drop(self.live());
        let mut all: Vec<SubscriberStats> = self.departed.iter().cloned().collect();
        all.extend(self.list.iter().map(|s| s.counters.stats(true)));
        all.sort_by_key(|s| s.id);
        all
    }
}

/// Finish `subs` (the PV closed): each connection sends its monitor's end.
pub(super) fn finish_all(subs: Vec<Arc<Subscription>>) {
    for sub in subs {
        sub.finish();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use pva_codec::{BitSet, Value};
    use tokio::sync::Notify;

    use crate::server::shared_pv::tests::{pv, with_value};
    use crate::server::SharedPv;

    /// Post `values` in turn, each changing `value` (bit 1).
    fn post_all(pv: &SharedPv, values: std::ops::RangeInclusive<i32>) {
        for n in values {
            pv.post_changed(with_value(pv, n), BitSet::with(1));
        }
    }

    #[test]
    fn a_full_queue_squashes_and_counts() {
        let pv = pv();
        let sub = pv.subscribe(2, Arc::new(Notify::new()));
        post_all(&pv, 1..=5);
        // Initial value + update 1 fill the queue; 2..=5 squash into the last slot.
        assert_eq!(sub.squashed(), 4);
        let first = sub.pop().unwrap();
        assert!(first.overrun.is_empty());
        let last = sub.pop().unwrap();
        assert_eq!(last.value.get("value"), Some(&Value::I32(5)));
        assert!(last.overrun.get(1));
        assert!(sub.pop().is_none());
    }

    #[test]
    fn a_batch_takes_the_oldest_updates_in_order_up_to_the_limit() {
        let pv = pv();
        let sub = pv.subscribe(8, Arc::new(Notify::new()));
        post_all(&pv, 1..=4);
        let mut batch = Vec::new();
        // The initial value, then updates 1 and 2.
        assert_eq!(sub.pop_batch(3, &mut batch), 3);
        let values: Vec<_> = batch
            .iter()
            .map(|u| u.value.get("value").cloned())
            .collect();
        assert_eq!(
            values,
            [0, 1, 2].map(|n| Some(Value::I32(n))).to_vec(),
            "oldest first"
        );
        batch.clear();
        assert_eq!(sub.pop_batch(10, &mut batch), 2);
        assert_eq!(batch[1].value.get("value"), Some(&Value::I32(4)));
        assert_eq!(sub.pop_batch(10, &mut batch), 0);
        assert_eq!(sub.squashed(), 0);
    }

    #[test]
    fn a_batch_frees_room_for_a_waiting_publisher() {
        let pv = pv();
        let sub = pv.subscribe(2, Arc::new(Notify::new()));
        pv.post_changed(with_value(&pv, 1), BitSet::with(1));
        assert!(!pv.has_room());
        let publisher = {
            let pv = pv.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let room = pv.wait_for_room(Duration::from_secs(30));
                (room, started.elapsed())
            })
        };
        std::thread::sleep(Duration::from_millis(20));
        let mut batch = Vec::new();
        assert_eq!(sub.pop_batch(usize::MAX, &mut batch), 2);
        let (room, waited) = publisher.join().unwrap();
        assert!(room, "the publisher saw the room");
        // Woken by the batch, not by its own timeout.
        assert!(waited < Duration::from_secs(15), "waited {waited:?}");
    }

    #[test]
    fn distribution_takes_turns_and_stats_outlive_subscribers() {
        let pv = pv();
        let a = pv.subscribe(8, Arc::new(Notify::new()));
        let b = pv.subscribe(8, Arc::new(Notify::new()));
        let c = pv.subscribe(8, Arc::new(Notify::new()));
        let mut turns = Vec::new();
        for n in 1..=6 {
            turns.push(pv.post_to_next(with_value(&pv, n), BitSet::with(0)));
        }
        assert_eq!(
            turns,
            [1, 2, 3, 1, 2, 3].map(Some).to_vec(),
            "in order of subscription, round and round"
        );
        assert_eq!(pv.current().get("value"), Some(&Value::I32(0)), "unchanged");
        drop(b);
        assert_eq!(
            pv.post_to_next(with_value(&pv, 7), BitSet::with(0)),
            Some(1)
        );
        assert_eq!(
            pv.post_to_next(with_value(&pv, 8), BitSet::with(0)),
            Some(3)
        );
        let stats = pv.subscriber_stats();
        let posted: Vec<(u64, u64, bool)> =
            stats.iter().map(|s| (s.id, s.posted, s.open)).collect();
        // Each got the initial value, then its share.
        assert_eq!(posted, vec![(1, 4, true), (2, 3, false), (3, 4, true)]);
        drop((a, c));
        assert_eq!(pv.post_to_next(with_value(&pv, 9), BitSet::with(0)), None);
    }

    #[test]
    fn a_publisher_can_wait_for_room() {
        let pv = pv();
        let sub = pv.subscribe(2, Arc::new(Notify::new()));
        assert!(pv.has_room(), "the initial value takes one slot of two");
        pv.post_changed(with_value(&pv, 1), BitSet::with(1));
        assert!(!pv.wait_for_room(Duration::from_millis(5)));
        let taker = {
            let sub = sub.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                sub.pop()
            })
        };
        assert!(pv.wait_for_room(Duration::from_secs(5)));
        assert!(taker.join().unwrap().is_some());
        assert_eq!(sub.squashed(), 0);
    }
}
