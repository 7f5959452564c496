//! `SharedPv`: a value held by the server, posted to every subscriber through a bounded queue
//! each, with puts and RPCs handed to callbacks that may accept, change or refuse them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use pva_codec::{BitSet, Status, StructValue, Value};

use super::distributor::{DistributorRequest, Distributors};
use super::source::PeerInfo;
use super::wake::Wakeup;

/// Decides a put: `Ok(None)` stores the value as put, `Ok(Some(v))` stores `v` instead,
/// `Err(status)` refuses it and nothing changes.
pub type PutHandler = Arc<dyn Fn(&PutRequest) -> Result<Option<StructValue>, Status> + Send + Sync>;

/// Answers an RPC call with a value or an error status.
pub type RpcHandler = Arc<dyn Fn(&Value, &PeerInfo) -> Result<Value, Status> + Send + Sync>;

/// A put as the handler sees it.
pub struct PutRequest<'a> {
    /// The current value with the put's fields merged in.
    pub value: StructValue,
    /// Which fields the client put.
    pub changed: &'a BitSet,
    /// Who put it.
    pub peer: &'a PeerInfo,
}

/// One update waiting to go to a subscriber.
#[derive(Debug, Clone)]
pub struct Update {
    /// The full value at the time of the update.
    pub value: StructValue,
    /// Fields changed since the previous update sent.
    pub changed: BitSet,
    /// Fields that changed more than once and whose intermediate values were dropped.
    pub overrun: BitSet,
}

/// A subscriber's bounded queue. When full, a new update is squashed into the newest queued
/// one and its fields are marked in the overrun set, so memory stays bounded and every loss
/// is counted.
#[derive(Debug)]
pub struct Subscription {
    queue: Mutex<QueueState>,
    wake: Wakeup,
    /// Only changes of these bits are queued (a monitor's field selection); all when `None`.
    interest: Option<BitSet>,
    counters: Arc<Counters>,
    room: Arc<Room>,
}

/// Wakes a publisher that waits for room in its subscribers' queues.
#[derive(Debug, Default)]
struct Room {
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
}

#[derive(Debug)]
struct QueueState {
    items: VecDeque<Update>,
    capacity: usize,
}

/// Who subscribes, and to what: see [`SharedPv::subscribe_with`].
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
}

/// A subscription's counters, shared with its PV so they outlive the subscriber.
#[derive(Debug)]
struct Counters {
    id: u64,
    peer: Option<SocketAddr>,
    posted: AtomicU64,
    squashed: AtomicU64,
}

/// What one subscriber of a [`SharedPv`] was sent and lost. The PV keeps these after the
/// subscriber leaves, so a relay can report every consumer's losses exactly.
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
    fn new(
        capacity: usize,
        wake: Wakeup,
        interest: Option<BitSet>,
        counters: Arc<Counters>,
        room: Arc<Room>,
    ) -> Self {
        Subscription {
            interest,
            queue: Mutex::new(QueueState {
                items: VecDeque::with_capacity(capacity.min(64)),
                capacity: capacity.max(1),
            }),
            wake,
            counters,
            room,
        }
    }

    fn push(&self, value: &StructValue, changed: &BitSet) {
        if let Some(interest) = &self.interest {
            if !changed.iter().any(|bit| interest.get(bit)) {
                return;
            }
        }
        self.counters.posted.fetch_add(1, Ordering::Relaxed);
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.items.len() >= q.capacity {
                self.counters.squashed.fetch_add(1, Ordering::Relaxed);
                if let Some(last) = q.items.back_mut() {
                    // Fields queued but not yet sent are overwritten: their old values are lost.
                    for bit in changed.iter() {
                        if last.changed.get(bit) || last.changed.get(0) {
                            last.overrun.set(bit);
                        }
                    }
                    last.changed.union_with(changed);
                    last.value = value.clone();
                }
            } else {
                q.items.push_back(Update {
                    value: value.clone(),
                    changed: changed.clone(),
                    overrun: BitSet::new(),
                });
            }
        }
        self.wake.wake();
    }

    /// Take the oldest queued update.
    pub fn pop(&self) -> Option<Update> {
        let item = self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .pop_front();
        if item.is_some() {
            self.room.freed();
        }
        item
    }

    /// Move up to `max` of the oldest queued updates to `into`, under one lock and with one
    /// wake-up of a publisher waiting for room, rather than one of each per update. Returns
    /// how many were moved.
    pub fn pop_batch(&self, max: usize, into: &mut Vec<Update>) -> usize {
        let n = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let n = q.items.len().min(max);
            into.extend(q.items.drain(..n));
            n
        };
        if n > 0 {
            self.room.freed();
        }
        n
    }

    /// True when one more update fits without squashing.
    fn has_room(&self) -> bool {
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.items.len() < q.capacity
    }

    /// True when an update is waiting.
    pub fn has_pending(&self) -> bool {
        !self
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .is_empty()
    }

    /// Updates squashed into others because this subscriber fell behind.
    pub fn squashed(&self) -> u64 {
        self.counters.squashed.load(Ordering::Relaxed)
    }
}

/// Stats of departed subscribers a PV keeps (the oldest are forgotten first).
const DEPARTED_KEPT: usize = 1024;

struct Subscriber {
    sub: Weak<Subscription>,
    counters: Arc<Counters>,
}

struct PvState {
    value: StructValue,
    subscribers: Vec<Subscriber>,
    departed: VecDeque<SubscriberStats>,
    next_id: u64,
    /// The id of the subscriber that got the last distributed update.
    last_turn: u64,
    /// The subscribers that asked for a share (`pydistributor`) and whose turn it is.
    distributors: Distributors,
}

impl PvState {
    /// The live subscriptions; departed ones move to the ledger.
    fn live(&mut self) -> Vec<Arc<Subscription>> {
        let mut live = Vec::with_capacity(self.subscribers.len());
        let departed = &mut self.departed;
        let distributors = &mut self.distributors;
        self.subscribers.retain(|s| match s.sub.upgrade() {
            Some(sub) => {
                live.push(sub);
                true
            }
            None => {
                if departed.len() >= DEPARTED_KEPT {
                    departed.pop_front();
                }
                departed.push_back(s.counters.stats(false));
                distributors.leave(s.counters.id);
                false
            }
        });
        live
    }

    /// Queue the current value, `changed`, for every subscriber it is for: all of them, but
    /// those that asked for a share only in their turn. Returns the live subscriptions.
    fn deliver(&mut self, changed: &BitSet) -> Vec<Arc<Subscription>> {
        let live = self.live();
        let turn = if self.distributors.is_empty() {
            Vec::new()
        } else {
            self.distributors.route(&self.value)
        };
        for sub in &live {
            let id = sub.counters.id;
            if !self.distributors.distributes_to(id) || turn.contains(&id) {
                sub.push(&self.value, changed);
            }
        }
        live
    }
}

struct PvInner {
    state: Mutex<PvState>,
    room: Arc<Room>,
    on_put: Option<PutHandler>,
    on_rpc: Option<RpcHandler>,
    writable: bool,
}

/// A PV whose value the server holds. Clones share the PV.
#[derive(Clone)]
pub struct SharedPv(Arc<PvInner>);

impl std::fmt::Debug for SharedPv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPv")
            .field("id", &self.current().id().to_owned())
            .field("writable", &self.0.writable)
            .finish()
    }
}

/// Builds a [`SharedPv`].
pub struct SharedPvBuilder {
    value: StructValue,
    on_put: Option<PutHandler>,
    on_rpc: Option<RpcHandler>,
    writable: bool,
}

impl SharedPvBuilder {
    /// Accept puts (stored as put, unless a handler says otherwise).
    pub fn writable(mut self) -> Self {
        self.writable = true;
        self
    }

    /// Decide puts with `handler` (implies writable).
    pub fn on_put(
        mut self,
        handler: impl Fn(&PutRequest) -> Result<Option<StructValue>, Status> + Send + Sync + 'static,
    ) -> Self {
        self.writable = true;
        self.on_put = Some(Arc::new(handler));
        self
    }

    /// Answer RPC calls with `handler`.
    pub fn on_rpc(
        mut self,
        handler: impl Fn(&Value, &PeerInfo) -> Result<Value, Status> + Send + Sync + 'static,
    ) -> Self {
        self.on_rpc = Some(Arc::new(handler));
        self
    }

    /// Finish.
    pub fn build(self) -> SharedPv {
        SharedPv(Arc::new(PvInner {
            state: Mutex::new(PvState {
                value: self.value,
                subscribers: Vec::new(),
                departed: VecDeque::new(),
                next_id: 1,
                last_turn: 0,
                distributors: Distributors::default(),
            }),
            room: Arc::default(),
            on_put: self.on_put,
            on_rpc: self.on_rpc,
            writable: self.writable,
        }))
    }
}

impl SharedPv {
    /// Start building a PV holding `initial`; read-only unless made writable.
    pub fn builder(initial: StructValue) -> SharedPvBuilder {
        SharedPvBuilder {
            value: initial,
            on_put: None,
            on_rpc: None,
            writable: false,
        }
    }

    /// A read-only PV.
    pub fn readonly(initial: StructValue) -> Self {
        Self::builder(initial).build()
    }

    /// A PV that stores whatever is put.
    pub fn mailbox(initial: StructValue) -> Self {
        Self::builder(initial).writable().build()
    }

    /// The current value.
    pub fn current(&self) -> StructValue {
        self.lock().value.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PvState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the whole value and send it to every subscriber.
    pub fn post(&self, value: StructValue) {
        self.post_changed(value, BitSet::with(0));
    }

    /// Store `value` and send it to every subscriber, marking `changed` fields.
    pub fn post_changed(&self, value: StructValue, changed: BitSet) {
        let live = {
            let mut st = self.lock();
            st.value = value;
            st.deliver(&changed)
        };
        // The last reference to a subscription may be here: drop it outside the lock.
        drop(live);
    }

    /// Send `value` to one subscriber only, the next in turn (round-robin in order of
    /// subscription), to spread updates over consumers. The PV's current value, which new
    /// subscribers get first, does not change. Returns the subscriber's id, `None` when there
    /// is none.
    pub fn post_to_next(&self, value: StructValue, changed: BitSet) -> Option<u64> {
        let (chosen, live) = {
            let mut st = self.lock();
            let live = st.live();
            let ids: Vec<u64> = st.subscribers.iter().map(|s| s.counters.id).collect();
            let turn = ids
                .iter()
                .position(|&id| id > st.last_turn)
                .or((!ids.is_empty()).then_some(0));
            let chosen = turn.map(|i| {
                live[i].push(&value, &changed);
                ids[i]
            });
            if let Some(id) = chosen {
                st.last_turn = id;
            }
            (chosen, live)
        };
        drop(live);
        chosen
    }

    /// True when every subscriber's queue can take one more update without squashing.
    pub fn has_room(&self) -> bool {
        let live = self.lock().live();
        live.iter().all(|s| s.has_room())
    }

    /// Wait (blocking, up to `timeout`) until every subscriber's queue can take one more
    /// update; true when they can. Lets a publisher go as fast as its slowest subscriber
    /// without losing updates.
    pub fn wait_for_room(&self, timeout: Duration) -> bool {
        let room = &self.0.room;
        room.waiters.fetch_add(1, Ordering::AcqRel);
        let deadline = std::time::Instant::now() + timeout;
        let ok = loop {
            let guard = room.lock.lock().unwrap_or_else(|e| e.into_inner());
            if self.has_room() {
                break true;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                break false;
            }
            // A pop between the check and the wait notifies under the same lock, so no
            // wake-up is missed.
            let _ = room
                .freed
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner());
        };
        room.waiters.fetch_sub(1, Ordering::AcqRel);
        ok
    }

    /// What every subscriber, present and departed, was sent and lost, in order of
    /// subscription.
    pub fn subscriber_stats(&self) -> Vec<SubscriberStats> {
        let mut st = self.lock();
        drop(st.live());
        let mut all: Vec<SubscriberStats> = st.departed.iter().cloned().collect();
        all.extend(st.subscribers.iter().map(|s| s.counters.stats(true)));
        all.sort_by_key(|s| s.id);
        all
    }

    /// Change fields in place with `edit`, which returns the bits it changed, and post them.
    /// The edit runs under the PV's lock, so that concurrent writers of other fields (puts,
    /// other updates) never lose one another's changes; it must not use this PV itself.
    pub fn update(&self, edit: impl FnOnce(&mut StructValue) -> BitSet) {
        let live = {
            let mut st = self.lock();
            let changed = edit(&mut st.value);
            if changed.is_empty() {
                return;
            }
            st.deliver(&changed)
        };
        drop(live);
    }

    /// Merge the `changed` fields of `value` into the current value and post them, all under
    /// the lock: fields changed meanwhile by another writer are kept.
    fn merge_and_post(&self, value: &StructValue, changed: &BitSet) {
        self.update(|current| {
            current.merge_from(value, changed);
            changed.clone()
        });
    }

    /// Subscribe with a queue of `capacity` updates; `wake` (a tokio `Arc<Notify>` or a std
    /// `Waker`) is woken on each push. The current value is queued first.
    pub fn subscribe(&self, capacity: usize, wake: impl Into<Wakeup>) -> Arc<Subscription> {
        self.subscribe_with(capacity, wake, SubscribeOptions::default())
    }

    /// Like [`SharedPv::subscribe`], with the subscriber's address (for its stats) and the
    /// fields it cares about.
    pub fn subscribe_with(
        &self,
        capacity: usize,
        wake: impl Into<Wakeup>,
        options: SubscribeOptions,
    ) -> Arc<Subscription> {
        let SubscribeOptions {
            peer,
            interest,
            distributor,
        } = options;
        let mut st = self.lock();
        let counters = Arc::new(Counters {
            id: st.next_id,
            peer,
            posted: AtomicU64::new(0),
            squashed: AtomicU64::new(0),
        });
        st.next_id += 1;
        let sub = Arc::new(Subscription::new(
            capacity,
            wake.into(),
            interest,
            counters.clone(),
            self.0.room.clone(),
        ));
        sub.push(&st.value, &BitSet::with(0));
        if let Some(request) = &distributor {
            st.distributors.join(counters.id, request);
        }
        st.subscribers.push(Subscriber {
            sub: Arc::downgrade(&sub),
            counters,
        });
        sub
    }

    /// Number of live subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.lock()
            .subscribers
            .iter()
            .filter(|s| s.sub.strong_count() > 0)
            .count()
    }

    /// Apply a put from `peer`: merge, ask the handler, store and post. Returns the status
    /// for the client.
    pub fn put(&self, partial: &StructValue, changed: &BitSet, peer: &PeerInfo) -> Status {
        if !self.0.writable {
            return Status::error("this PV is read-only");
        }
        let Some(handler) = &self.0.on_put else {
            if self.current().desc() != partial.desc() {
                return Status::error("put value has a different type than the PV");
            }
            self.merge_and_post(partial, changed);
            return Status::OK;
        };
        // The handler sees the current value with the put merged in, without the lock held (it
        // may use this PV); what it returns is merged back under the lock, so a field another
        // writer changed meanwhile is kept unless the put or the handler changed it too.
        let mut merged = self.current();
        if merged.desc() != partial.desc() {
            return Status::error("put value has a different type than the PV");
        }
        merged.merge_from(partial, changed);
        match handler(&PutRequest {
            value: merged.clone(),
            changed,
            peer,
        }) {
            Ok(None) => self.merge_and_post(partial, changed),
            Ok(Some(stored)) if stored.desc() == merged.desc() => {
                // What the handler changed (a new timeStamp, an alarm, a clamped value) goes
                // to the subscribers with what the client put.
                let mut bits = changed.clone();
                changed_between(&merged, &stored, 0, &mut bits);
                self.merge_and_post(&stored, &bits);
            }
            Ok(Some(stored)) => self.post(stored),
            Err(status) => return status,
        }
        Status::OK
    }

    /// Answer an RPC call.
    pub fn rpc(&self, argument: &Value, peer: &PeerInfo) -> Result<Value, Status> {
        match &self.0.on_rpc {
            Some(h) => h(argument, peer),
            None => Err(Status::error("this PV does not support RPC")),
        }
    }

    /// True when puts are accepted.
    pub fn is_writable(&self) -> bool {
        self.0.writable
    }
}

/// Set in `bits` the fields where `a` and `b` (of the same type) differ: a member's own bit when
/// it differs as a whole (a scalar, an array, a union), the members' bits inside a structure.
/// `base` is the bit of `a` itself.
fn changed_between(a: &StructValue, b: &StructValue, base: usize, bits: &mut BitSet) {
    if std::ptr::eq(a.fields().as_ptr(), b.fields().as_ptr()) {
        return;
    }
    for (((_, offset), mine), theirs) in a
        .desc()
        .members_with_offsets()
        .zip(a.fields())
        .zip(b.fields())
    {
        let bit = base + offset;
        match (mine, theirs) {
            (Value::Struct(mine), Value::Struct(theirs)) if mine.desc() == theirs.desc() => {
                changed_between(mine, theirs, bit, bits)
            }
            (mine, theirs) if mine != theirs => bits.set(bit),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::{ScalarType, StructDesc};
    use tokio::sync::Notify;

    fn pv() -> SharedPv {
        let desc = Arc::new(
            StructDesc::builder("x")
                .scalar("value", ScalarType::I32)
                .build(),
        );
        SharedPv::mailbox(StructValue::new(desc))
    }

    fn with_value(pv: &SharedPv, n: i32) -> StructValue {
        let mut v = pv.current();
        v.set("value", n).unwrap();
        v
    }

    #[test]
    fn a_full_queue_squashes_and_counts() {
        let pv = pv();
        let sub = pv.subscribe(2, Arc::new(Notify::new()));
        for n in 1..=5 {
            pv.post_changed(with_value(&pv, n), BitSet::with(1));
        }
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
        for n in 1..=4 {
            pv.post_changed(with_value(&pv, n), BitSet::with(1));
        }
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

    fn peer() -> PeerInfo {
        PeerInfo {
            addr: "127.0.0.1:1".parse().unwrap(),
            method: "anonymous".into(),
            user: String::new(),
            host: String::new(),
        }
    }

    fn two_fields() -> StructValue {
        StructValue::new(Arc::new(
            StructDesc::builder("pair")
                .scalar("a", ScalarType::I32)
                .scalar("b", ScalarType::I32)
                .structure(
                    "timeStamp",
                    StructDesc::builder("time_t")
                        .scalar("secondsPastEpoch", ScalarType::I64)
                        .build(),
                )
                .build(),
        ))
    }

    #[test]
    fn concurrent_writers_of_different_fields_lose_nothing() {
        const WRITES: i32 = 2000;
        // With a handler (which stamps the time) and without: puts of `a` from one thread,
        // updates of `b` and puts of `b` from two others.
        for stamped in [false, true] {
            let builder = SharedPv::builder(two_fields());
            let pv = if stamped {
                builder
                    .on_put(|req| {
                        let mut v = req.value.clone();
                        let t = v.get("timeStamp.secondsPastEpoch").and_then(Value::as_i64);
                        v.set("timeStamp.secondsPastEpoch", t.unwrap_or(0) + 1)
                            .map_err(|e| Status::error(e.to_string()))?;
                        Ok(Some(v))
                    })
                    .build()
            } else {
                builder.writable().build()
            };
            let sub = pv.subscribe(1, Arc::new(Notify::new()));
            let put = |pv: &SharedPv, field: &str, n: i32| {
                let mut v = pv.current();
                v.set(field, n).unwrap();
                let bit = v.desc().bit_of(field).unwrap();
                assert!(pv.put(&v, &BitSet::with(bit), &peer()).is_success());
            };
            let writers = [
                std::thread::spawn({
                    let pv = pv.clone();
                    move || (1..=WRITES).for_each(|n| put(&pv, "a", n))
                }),
                std::thread::spawn({
                    let pv = pv.clone();
                    move || {
                        for n in 1..=WRITES {
                            pv.update(|v| {
                                let b = v.get("b").and_then(Value::as_i64).unwrap_or(0) as i32;
                                v.set("b", b.max(n)).unwrap();
                                BitSet::with(2)
                            });
                        }
                    }
                }),
                std::thread::spawn({
                    let pv = pv.clone();
                    move || (1..=WRITES).for_each(|n| put(&pv, "b", n))
                }),
            ];
            for w in writers {
                w.join().unwrap();
            }
            let end = pv.current();
            assert_eq!(end.get("a"), Some(&Value::I32(WRITES)), "stamped {stamped}");
            assert_eq!(end.get("b"), Some(&Value::I32(WRITES)), "stamped {stamped}");
            // The squashed queue holds the newest value, with every field that changed.
            let last = std::iter::from_fn(|| sub.pop()).last().unwrap();
            assert_eq!(last.value, end);
        }
    }

    #[test]
    fn what_a_put_handler_changes_goes_to_subscribers_with_the_put() {
        let pv = SharedPv::builder(two_fields())
            .on_put(|req| {
                let mut v = req.value.clone();
                v.set("timeStamp.secondsPastEpoch", 42).unwrap();
                Ok(Some(v))
            })
            .build();
        let sub = pv.subscribe(8, Arc::new(Notify::new()));
        sub.pop();
        let mut v = pv.current();
        v.set("a", 5).unwrap();
        assert!(pv.put(&v, &BitSet::with(1), &peer()).is_success());
        let update = sub.pop().unwrap();
        let desc = pv.current().desc().clone();
        let bits: Vec<usize> = update.changed.iter().collect();
        assert_eq!(
            bits,
            vec![
                desc.bit_of("a").unwrap(),
                desc.bit_of("timeStamp.secondsPastEpoch").unwrap()
            ]
        );
        assert_eq!(
            update.value.get("timeStamp.secondsPastEpoch"),
            Some(&Value::I64(42))
        );
    }

    #[test]
    fn put_handler_can_refuse() {
        let desc = Arc::new(
            StructDesc::builder("x")
                .scalar("value", ScalarType::I32)
                .build(),
        );
        let pv = SharedPv::builder(StructValue::new(desc))
            .on_put(|req| {
                if req.value.get("value").and_then(Value::as_i64) > Some(10) {
                    Err(Status::error("too big"))
                } else {
                    Ok(None)
                }
            })
            .build();
        let peer = peer();
        let big = with_value(&pv, 11);
        assert_eq!(
            pv.put(&big, &BitSet::with(1), &peer),
            Status::error("too big")
        );
        assert_eq!(pv.current().get("value"), Some(&Value::I32(0)));
        let ok = with_value(&pv, 3);
        assert!(pv.put(&ok, &BitSet::with(1), &peer).is_success());
        assert_eq!(pv.current().get("value"), Some(&Value::I32(3)));
    }
}
