//! `SharedPv`: a value held by the server, with pvxs's surface. It is opened with a value
//! (`open`), posted to (`post`), read (`fetch`) and closed (`close`: every subscriber gets the
//! end of its subscription; a later `open` serves again). Puts and RPCs go to callbacks that
//! may accept, change or refuse them, and hooks run when the first channel arrives and when the
//! last one leaves. Each subscriber's queue and the routing of posts over subscribers live in
//! [`subscription`](super::subscription).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pva_codec::{BitSet, Status, StructValue, Value};

use super::distributor::Delivery;
use super::source::PeerInfo;
use super::subscription::{
    finish_all, SubscribeOptions, SubscriberStats, Subscribers, Subscription,
};
use super::wake::Wakeup;

/// Decides a put: `Ok(None)` stores the value as put, `Ok(Some(v))` stores `v` instead,
/// `Err(status)` refuses it and nothing changes.
pub type PutHandler = Arc<dyn Fn(&PutRequest) -> Result<Option<StructValue>, Status> + Send + Sync>;

/// Answers an RPC call with a value or an error status.
pub type RpcHandler = Arc<dyn Fn(&Value, &PeerInfo) -> Result<Value, Status> + Send + Sync>;

/// Runs when a PV's first channel arrives or its last leaves; it may open or close the PV.
pub type ConnectHook = Arc<dyn Fn(&SharedPv) + Send + Sync>;

/// A put as the handler sees it.
pub struct PutRequest<'a> {
    /// The current value with the put's fields merged in.
    pub value: StructValue,
    /// Which fields the client put.
    pub changed: &'a BitSet,
    /// Who put it.
    pub peer: &'a PeerInfo,
}

struct PvState {
    /// The value served while open; the last one served while closed.
    value: StructValue,
    open: bool,
    subscribers: Subscribers,
    /// Channels attached, over every connection.
    channels: usize,
}

struct PvInner {
    state: Mutex<PvState>,
    on_put: Option<PutHandler>,
    on_rpc: Option<RpcHandler>,
    on_first_connect: Option<ConnectHook>,
    on_last_disconnect: Option<ConnectHook>,
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
    on_first_connect: Option<ConnectHook>,
    on_last_disconnect: Option<ConnectHook>,
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

    /// Run `hook` when the first channel to the PV arrives (from no channel to one), before
    /// the client is answered: it may `open` the PV on demand.
    pub fn on_first_connect(mut self, hook: impl Fn(&SharedPv) + Send + Sync + 'static) -> Self {
        self.on_first_connect = Some(Arc::new(hook));
        self
    }

    /// Run `hook` when the last channel to the PV leaves: it may `close` the PV.
    pub fn on_last_disconnect(mut self, hook: impl Fn(&SharedPv) + Send + Sync + 'static) -> Self {
        self.on_last_disconnect = Some(Arc::new(hook));
        self
    }

    /// Finish: a PV open with the builder's value.
    pub fn build(self) -> SharedPv {
        SharedPv(Arc::new(PvInner {
            state: Mutex::new(PvState {
                value: self.value,
                open: true,
                subscribers: Subscribers::default(),
                channels: 0,
            }),
            on_put: self.on_put,
            on_rpc: self.on_rpc,
            on_first_connect: self.on_first_connect,
            on_last_disconnect: self.on_last_disconnect,
            writable: self.writable,
        }))
    }
}

/// A channel's hold on a [`SharedPv`]: the first one runs the PV's first-connect hook,
/// dropping the last one its last-disconnect hook.
pub struct Attachment(SharedPv);

impl Drop for Attachment {
    fn drop(&mut self) {
        let last = {
            let mut st = self.0.lock();
            st.channels -= 1;
            st.channels == 0
        };
        if let (true, Some(hook)) = (last, &self.0 .0.on_last_disconnect) {
            hook(&self.0);
        }
    }
}

impl SharedPv {
    /// Start building a PV holding `initial`; read-only unless made writable.
    pub fn builder(initial: StructValue) -> SharedPvBuilder {
        SharedPvBuilder {
            value: initial,
            on_put: None,
            on_rpc: None,
            on_first_connect: None,
            on_last_disconnect: None,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, PvState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serve `initial` (of any type). An open PV is closed first, so that its subscribers,
    /// which know the old type, get their end rather than a value they cannot read.
    pub fn open(&self, initial: StructValue) {
        let ended = {
            let mut st = self.lock();
            let ended = if st.open {
                st.subscribers.leave_all()
            } else {
                Vec::new()
            };
            st.value = initial;
            st.open = true;
            ended
        };
        finish_all(ended);
    }

    /// Stop serving: every subscriber gets the end of its subscription (after the updates
    /// queued for it), and gets, puts and new subscriptions are refused until the next
    /// [`SharedPv::open`]. Posts meanwhile change the value kept but go to nobody. Closing a
    /// closed PV does nothing.
    pub fn close(&self) {
        let ended = {
            let mut st = self.lock();
            if !st.open {
                return;
            }
            st.open = false;
            st.subscribers.leave_all()
        };
        finish_all(ended);
    }

    /// True between [`SharedPv::open`] (or building) and [`SharedPv::close`].
    pub fn is_open(&self) -> bool {
        self.lock().open
    }

    /// The value served; `None` while closed.
    pub fn fetch(&self) -> Option<StructValue> {
        let st = self.lock();
        st.open.then(|| st.value.clone())
    }

    /// The value served, or while closed the last one served (its type is the PV's type).
    pub fn current(&self) -> StructValue {
        self.lock().value.clone()
    }

    /// A hold on the PV for a channel (see [`Attachment`]); runs the first-connect hook when
    /// it is the first.
    pub fn attach(&self) -> Attachment {
        let first = {
            let mut st = self.lock();
            st.channels += 1;
            st.channels == 1
        };
        if let (true, Some(hook)) = (first, &self.0.on_first_connect) {
            hook(self);
        }
        Attachment(self.clone())
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
            let st = &mut *st;
            st.subscribers
                .deliver(&st.value, &changed, Delivery::Every)
                .1
        };
        // The last reference to a subscription may be here: drop it outside the lock.
        drop(live);
    }

    /// Send `value` to one subscriber only, the next in turn (round-robin in order of
    /// subscription), to spread updates over consumers. The PV's current value, which new
    /// subscribers get first, does not change. Returns the subscriber's id, `None` when there
    /// is none.
    pub fn post_to_next(&self, value: StructValue, changed: BitSet) -> Option<u64> {
        let (chosen, live) = self
            .lock()
            .subscribers
            .deliver(&value, &changed, Delivery::Next);
        drop(live);
        chosen
    }

    /// True when every subscriber's queue can take one more update without squashing.
    pub fn has_room(&self) -> bool {
        self.lock().subscribers.all_have_room()
    }

    /// Wait (blocking, up to `timeout`) until every subscriber's queue can take one more
    /// update; true when they can. Lets a publisher go as fast as its slowest subscriber
    /// without losing updates.
    pub fn wait_for_room(&self, timeout: Duration) -> bool {
        if self.has_room() {
            return true;
        }
        let room = self.lock().subscribers.room();
        room.wait(timeout, || self.has_room())
    }

    /// What every subscriber, present and departed, was sent and lost, in order of
    /// subscription.
    pub fn subscriber_stats(&self) -> Vec<SubscriberStats> {
        self.lock().subscribers.stats()
    }

    /// Change fields in place with `edit`, which returns the bits it changed, and post them.
    /// The edit runs under the PV's lock, so that concurrent writers of other fields (puts,
    /// other updates) never lose one another's changes; it must not use this PV itself.
    pub fn update(&self, edit: impl FnOnce(&mut StructValue) -> BitSet) {
        let live = {
            let mut st = self.lock();
            let st = &mut *st;
            let changed = edit(&mut st.value);
            if changed.is_empty() {
                return;
            }
            st.subscribers
                .deliver(&st.value, &changed, Delivery::Every)
                .1
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
    /// `Waker`) is woken on each push. The current value is queued first; on a closed PV the
    /// subscription is finished at once.
    pub fn subscribe(&self, capacity: usize, wake: impl Into<Wakeup>) -> Arc<Subscription> {
        self.subscribe_with(capacity, wake, SubscribeOptions::default())
    }

    /// Like [`SharedPv::subscribe`], with the subscriber's address (for its stats), the
    /// fields it cares about and its share of the updates.
    pub fn subscribe_with(
        &self,
        capacity: usize,
        wake: impl Into<Wakeup>,
        options: SubscribeOptions,
    ) -> Arc<Subscription> {
        let mut st = self.lock();
        let st = &mut *st;
        let first = st.open.then_some(&st.value);
        st.subscribers.add(capacity, wake.into(), options, first)
    }

    /// Number of live subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.lock().subscribers.count()
    }

    /// Apply a put from `peer`: merge, ask the handler, store and post. Returns the status
    /// for the client.
    pub fn put(&self, partial: &StructValue, changed: &BitSet, peer: &PeerInfo) -> Status {
        if !self.0.writable {
            return Status::error("this PV is read-only");
        }
        // The handler sees the current value with the put merged in, without the lock held (it
        // may use this PV); what it returns is merged back under the lock, so a field another
        // writer changed meanwhile is kept unless the put or the handler changed it too.
        let Some(mut merged) = self.fetch() else {
            return Status::error(CLOSED);
        };
        if merged.desc() != partial.desc() {
            return Status::error("put value has a different type than the PV");
        }
        let Some(handler) = &self.0.on_put else {
            self.merge_and_post(partial, changed);
            return Status::OK;
        };
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

/// Why a closed PV refuses a request.
pub const CLOSED: &str = "this PV is closed";

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
pub(super) mod tests {
    use super::*;
    use crate::server::source::tests::peer;
    use pva_codec::nt::TimeStamp;
    use pva_codec::{FieldDesc, ScalarType, StructDesc};
    use tokio::sync::Notify;

    /// A mailbox PV of `{value: i32}`.
    pub(in crate::server) fn pv() -> SharedPv {
        let desc = Arc::new(
            StructDesc::builder("x")
                .scalar("value", ScalarType::I32)
                .build(),
        );
        SharedPv::mailbox(StructValue::new(desc))
    }

    /// The PV's value with `value` set to `n`.
    pub(in crate::server) fn with_value(pv: &SharedPv, n: i32) -> StructValue {
        let mut v = pv.current();
        v.set("value", n).unwrap();
        v
    }

    fn two_fields() -> StructValue {
        let desc = StructDesc::builder("pair")
            .scalar("a", ScalarType::I32)
            .scalar("b", ScalarType::I32)
            .field("timeStamp", FieldDesc::Struct(TimeStamp::desc()))
            .build();
        StructValue::new(Arc::new(desc))
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

    #[test]
    fn close_ends_every_subscription_and_open_serves_again() {
        let pv = pv();
        let sub = pv.subscribe(4, Arc::new(Notify::new()));
        pv.post(with_value(&pv, 1));
        pv.close();
        assert!(!pv.is_open());
        assert_eq!(pv.fetch(), None);
        assert!(sub.is_finished());
        // What was queued before the close is still taken.
        assert_eq!(std::iter::from_fn(|| sub.pop()).count(), 2);
        assert_eq!(pv.subscriber_count(), 0);
        assert!(
            !pv.put(&with_value(&pv, 2), &BitSet::with(1), &peer())
                .is_success(),
            "a closed PV refuses puts"
        );
        assert!(pv.subscribe(4, Arc::new(Notify::new())).is_finished());
        pv.close();

        pv.open(with_value(&pv, 7));
        assert_eq!(
            pv.fetch().and_then(|v| v.get("value").cloned()),
            Some(Value::I32(7))
        );
        let again = pv.subscribe(4, Arc::new(Notify::new()));
        assert!(!again.is_finished());
        assert_eq!(
            again.pop().unwrap().value.get("value"),
            Some(&Value::I32(7))
        );
        assert!(pv
            .put(&with_value(&pv, 8), &BitSet::with(1), &peer())
            .is_success());
        assert_eq!(pv.fetch(), Some(with_value(&pv, 8)));
        // Opening an open PV ends the subscriptions to the value it had.
        pv.open(with_value(&pv, 9));
        assert!(again.is_finished());
    }

    #[test]
    fn hooks_run_when_the_first_channel_arrives_and_the_last_leaves() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let note = |what: &'static str, then: fn(&SharedPv)| {
            let log = log.clone();
            move |pv: &SharedPv| {
                log.lock().unwrap().push(what);
                then(pv);
            }
        };
        let pv = SharedPv::builder(pv().current())
            .on_first_connect(note("first", |pv| pv.open(pv.current())))
            .on_last_disconnect(note("last", SharedPv::close))
            .build();
        pv.close();
        let a = pv.attach();
        assert!(pv.is_open(), "the first channel opened it");
        let b = pv.attach();
        drop(a);
        assert!(pv.is_open());
        drop(b);
        assert!(!pv.is_open(), "the last channel closed it");
        drop(pv.attach());
        assert_eq!(*log.lock().unwrap(), ["first", "last", "first", "last"]);
    }
}
