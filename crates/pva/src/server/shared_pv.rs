//! `SharedPv`: a value held by the server, posted to every subscriber through a bounded queue
//! each, with puts and RPCs handed to callbacks that may accept, change or refuse them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};

use pva_codec::{BitSet, Status, StructValue, Value};
use tokio::sync::Notify;

use super::source::PeerInfo;

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
    wake: Arc<Notify>,
    /// Only changes of these bits are queued (a monitor's field selection); all when `None`.
    interest: Option<BitSet>,
}

#[derive(Debug)]
struct QueueState {
    items: VecDeque<Update>,
    capacity: usize,
    squashed: u64,
}

impl Subscription {
    fn new(capacity: usize, wake: Arc<Notify>, interest: Option<BitSet>) -> Self {
        Subscription {
            interest,
            queue: Mutex::new(QueueState {
                items: VecDeque::with_capacity(capacity.min(64)),
                capacity: capacity.max(1),
                squashed: 0,
            }),
            wake,
        }
    }

    fn push(&self, value: &StructValue, changed: &BitSet) {
        if let Some(interest) = &self.interest {
            if !changed.iter().any(|bit| interest.get(bit)) {
                return;
            }
        }
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.items.len() >= q.capacity {
                q.squashed += 1;
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
        self.wake.notify_one();
    }

    /// Take the oldest queued update.
    pub fn pop(&self) -> Option<Update> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .pop_front()
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
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .squashed
    }
}

struct PvState {
    value: StructValue,
    subscribers: Vec<Weak<Subscription>>,
}

struct PvInner {
    state: Mutex<PvState>,
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
            }),
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
        let mut st = self.lock();
        st.value = value;
        let v = &st.value;
        let mut live = Vec::with_capacity(st.subscribers.len());
        for w in &st.subscribers {
            if let Some(sub) = w.upgrade() {
                sub.push(v, &changed);
                live.push(Arc::downgrade(&sub));
            }
        }
        st.subscribers = live;
    }

    /// Change fields in place with `edit`, which returns the bits it changed, and post them.
    pub fn update(&self, edit: impl FnOnce(&mut StructValue) -> BitSet) {
        let mut v = self.current();
        let changed = edit(&mut v);
        if !changed.is_empty() {
            self.post_changed(v, changed);
        }
    }

    /// Subscribe with a queue of `capacity` updates; `wake` is notified on each push. The
    /// current value is queued first.
    pub fn subscribe(&self, capacity: usize, wake: Arc<Notify>) -> Arc<Subscription> {
        self.subscribe_to(capacity, wake, None)
    }

    /// Like [`SharedPv::subscribe`], queueing only changes that touch a bit of `interest`
    /// (all changes when `None`), so that updates outside a monitor's field selection neither
    /// reach the client nor take its queue.
    pub fn subscribe_to(
        &self,
        capacity: usize,
        wake: Arc<Notify>,
        interest: Option<BitSet>,
    ) -> Arc<Subscription> {
        let sub = Arc::new(Subscription::new(capacity, wake, interest));
        let mut st = self.lock();
        sub.push(&st.value, &BitSet::with(0));
        st.subscribers.push(Arc::downgrade(&sub));
        sub
    }

    /// Number of live subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.lock()
            .subscribers
            .iter()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Apply a put from `peer`: merge, ask the handler, store and post. Returns the status
    /// for the client.
    pub fn put(&self, partial: &StructValue, changed: &BitSet, peer: &PeerInfo) -> Status {
        if !self.0.writable {
            return Status::error("this PV is read-only");
        }
        let mut merged = self.current();
        if merged.desc() != partial.desc() {
            return Status::error("put value has a different type than the PV");
        }
        merged.merge_from(partial, changed);
        let value = match &self.0.on_put {
            None => merged,
            Some(handler) => match handler(&PutRequest {
                value: merged.clone(),
                changed,
                peer,
            }) {
                Ok(None) => merged,
                Ok(Some(v)) => v,
                Err(status) => return status,
            },
        };
        self.post_changed(value, changed.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::{ScalarType, StructDesc};

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
        let peer = PeerInfo {
            addr: "127.0.0.1:1".parse().unwrap(),
            method: "anonymous".into(),
            user: String::new(),
            host: String::new(),
        };
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
