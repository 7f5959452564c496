//! The bounded queue of monitor updates that server subscriptions and client monitors share.
//!
//! When the queue holds `capacity` updates and the newest item is an update, a new update is
//! squashed into it, as pvData and pvxs do: the newer full value replaces the queued one, the
//! fields changed in both are marked in `overrun`, the changed sets are joined, and the loss is
//! counted. Memory stays bounded and nothing is lost without being counted.
//!
//! Events (a client monitor's connection changes, say) sit between updates in order and are
//! never squashed; an update is never squashed across one. When events interleave with a
//! reader who does not read, the queue keeps its bound by dropping its oldest update and
//! counting it on the next. Pure state: no lock, no runtime.

use std::collections::VecDeque;

use pva_codec::{BitSet, StructValue};

/// What an update carries beyond its value for the queue's user (the client's means to
/// acknowledge it, say), and what becomes of it when the update is squashed or dropped.
pub trait Carry: Sized {
    /// `newer` was squashed into the update that carries `self`.
    fn absorb(&mut self, newer: Self);
    /// The update that carried `self` was dropped; it stood for `count` updates.
    fn dropped(self, count: u64);
}

impl Carry for () {
    fn absorb(&mut self, _newer: Self) {}
    fn dropped(self, _count: u64) {}
}

/// One update in the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Update<X = ()> {
    /// The full value, with this update merged in.
    pub value: StructValue,
    /// The fields this update changed.
    pub changed: BitSet,
    /// Fields that changed more than once and whose intermediate values were lost.
    pub overrun: BitSet,
    /// Updates squashed into this one: that many before it were never seen.
    pub squashed: u64,
    /// What the queue's user carries with it.
    pub carry: X,
}

impl<X: Carry> Update<X> {
    /// A new update of `value` with `changed` fields, nothing lost.
    pub fn new(value: StructValue, changed: BitSet, carry: X) -> Self {
        Update {
            value,
            changed,
            overrun: BitSet::new(),
            squashed: 0,
            carry,
        }
    }

    /// Squash `newer` into this update: its value replaces ours, fields changed in both (or
    /// changed in `newer` after a whole-value change here) go to `overrun`.
    fn absorb(&mut self, newer: Update<X>) {
        for bit in newer.changed.iter() {
            if self.changed.get(bit) || self.changed.get(0) {
                self.overrun.set(bit);
            }
        }
        self.overrun.union_with(&newer.overrun);
        self.changed.union_with(&newer.changed);
        self.value = newer.value;
        self.squashed += 1 + newer.squashed;
        self.carry.absorb(newer.carry);
    }
}

/// An item of the queue: an update, or an event of the user's that keeps its place.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<X, E> {
    /// A value update, squashed when the queue is full.
    Update(Update<X>),
    /// Anything else, queued in order and never squashed.
    Event(E),
}

/// What [`SquashQueue::push`] did with an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued as an item of its own.
    Queued,
    /// Squashed into the newest queued update.
    Squashed,
}

/// A bounded queue of updates and events: see the module's documentation.
#[derive(Debug)]
pub struct SquashQueue<X, E> {
    items: VecDeque<Entry<X, E>>,
    /// Updates among `items`.
    updates: usize,
    capacity: usize,
    /// Most bytes of arrays the queued updates may hold, when bounded by bytes as well.
    byte_budget: Option<usize>,
    /// Bytes of arrays the queued updates hold (kept only with a byte budget).
    bytes: usize,
    /// The bytes of each queued update, oldest first (kept only with a byte budget), so that
    /// an update is measured once, when it comes.
    sizes: VecDeque<usize>,
    /// Updates lost since the start (squashed or dropped).
    squashed: u64,
}

impl<X: Carry, E> SquashQueue<X, E> {
    /// An empty queue of `capacity` updates (at least one).
    pub fn new(capacity: usize) -> Self {
        SquashQueue {
            items: VecDeque::with_capacity(capacity.min(64)),
            updates: 0,
            capacity: capacity.max(1),
            byte_budget: None,
            bytes: 0,
            sizes: VecDeque::new(),
            squashed: 0,
        }
    }

    /// Bound the queue by the bytes its updates' arrays hold as well as by their count: an
    /// update that would take the queue past `budget` squashes into the newest, so a queue of
    /// large frames holds at most about `budget` bytes whatever its capacity in updates.
    pub fn with_byte_budget(mut self, budget: usize) -> Self {
        self.byte_budget = Some(budget);
        self
    }

    /// Queue an update, squashing it into the newest queued update when the queue is full.
    pub fn push(&mut self, update: Update<X>) -> Pushed {
        let bytes = self.byte_budget.map_or(0, |_| update.value.array_bytes());
        self.push_measured(update, bytes)
    }

    /// [`SquashQueue::push`] for an update whose arrays the caller measured already
    /// ([`Value::array_bytes`](pva_codec::Value::array_bytes)): a value posted to many
    /// queues is measured once.
    pub fn push_measured(&mut self, update: Update<X>, bytes: usize) -> Pushed {
        let size = self.byte_budget.map(|_| bytes);
        if !self.fits(size) {
            if let Some(Entry::Update(last)) = self.items.back_mut() {
                if let (Some(size), Some(newest)) = (size, self.sizes.back_mut()) {
                    self.bytes = self.bytes - *newest + size;
                    *newest = size;
                }
                self.squashed += 1 + update.squashed;
                last.absorb(update);
                return Pushed::Squashed;
            }
        }
        if let Some(size) = size {
            self.bytes += size;
            self.sizes.push_back(size);
        }
        self.updates += 1;
        self.items.push_back(Entry::Update(update));
        if self.updates > 2 * self.capacity {
            self.drop_oldest_update();
        }
        Pushed::Queued
    }

    /// Queue an event after everything queued.
    pub fn push_event(&mut self, event: E) {
        self.items.push_back(Entry::Event(event));
    }

    /// Whether an update of `size` bytes (when counted) joins the queue without squashing.
    fn fits(&self, size: Option<usize>) -> bool {
        let bytes_fit = match (self.byte_budget, size) {
            (Some(budget), Some(size)) => self.updates == 0 || self.bytes + size <= budget,
            _ => true,
        };
        self.updates < self.capacity && bytes_fit
    }

    /// The oldest queued update left the queue.
    fn took_oldest(&mut self) {
        self.updates -= 1;
        if let Some(size) = self.sizes.pop_front() {
            self.bytes -= size;
        }
    }

    /// Take the oldest item.
    pub fn pop(&mut self) -> Option<Entry<X, E>> {
        let item = self.items.pop_front()?;
        if matches!(item, Entry::Update(_)) {
            self.took_oldest();
        }
        Some(item)
    }

    /// Move up to `max` of the oldest updates to `into`, stopping at the first event. Returns
    /// how many were moved.
    pub fn pop_updates(&mut self, max: usize, into: &mut Vec<Update<X>>) -> usize {
        let mut n = 0;
        while n < max && matches!(self.items.front(), Some(Entry::Update(_))) {
            if let Some(Entry::Update(u)) = self.items.pop_front() {
                self.took_oldest();
                into.push(u);
                n += 1;
            }
        }
        n
    }

    /// True when one more update (of no more bytes than the newest) fits without squashing.
    pub fn has_room(&self) -> bool {
        self.fits(self.sizes.back().copied())
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Updates queued.
    pub fn updates(&self) -> usize {
        self.updates
    }

    /// Updates lost since the start: squashed into others or dropped.
    pub fn squashed(&self) -> u64 {
        self.squashed
    }

    /// Forget everything queued.
    pub fn clear(&mut self) {
        self.items.clear();
        self.updates = 0;
        self.bytes = 0;
        self.sizes.clear();
    }

    /// Drop the oldest update, counting it on the next one (which there is: the one just
    /// pushed is newer).
    fn drop_oldest_update(&mut self) {
        let Some(pos) = self
            .items
            .iter()
            .position(|i| matches!(i, Entry::Update(_)))
        else {
            return;
        };
        let Some(Entry::Update(dropped)) = self.items.remove(pos) else {
            return;
        };
        self.took_oldest();
        let lost = 1 + dropped.squashed;
        self.squashed += lost;
        dropped.carry.dropped(lost);
        if let Some(Entry::Update(next)) = self
            .items
            .iter_mut()
            .skip(pos)
            .find(|i| matches!(i, Entry::Update(_)))
        {
            next.squashed += lost;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pva_codec::{ArrayKind, FieldDesc, ScalarArray, ScalarType, StructDesc, Value};

    use super::*;

    /// A structure `{a, b, c}` of i32 (bits 1, 2, 3) with `a` set to `n`.
    fn value(n: i32) -> StructValue {
        let fields = ["a", "b", "c"].into_iter();
        let builder = fields.fold(StructDesc::builder("x"), |b, name| {
            b.scalar(name, ScalarType::I32)
        });
        let mut v = StructValue::new(Arc::new(builder.build()));
        v.set("a", n).unwrap();
        v
    }

    /// Push update `n` changing `bits` to `q`.
    fn push<E>(q: &mut SquashQueue<(), E>, n: i32, bits: &[usize]) -> Pushed {
        let mut changed = BitSet::new();
        bits.iter().for_each(|&b| changed.set(b));
        q.push(Update::new(value(n), changed, ()))
    }

    fn a_of(u: &Update) -> i32 {
        match u.value.get("a") {
            Some(Value::I32(n)) => *n,
            other => panic!("a = {other:?}"),
        }
    }

    fn bits(b: &BitSet) -> Vec<usize> {
        b.iter().collect()
    }

    type Queue = SquashQueue<(), &'static str>;

    #[test]
    fn a_full_queue_squashes_into_the_newest_and_marks_fields_changed_twice() {
        let mut q = Queue::new(2);
        assert_eq!(push(&mut q, 1, &[1]), Pushed::Queued);
        assert_eq!(push(&mut q, 2, &[1]), Pushed::Queued);
        assert!(!q.has_room());
        assert_eq!(push(&mut q, 3, &[2, 3]), Pushed::Squashed);
        assert_eq!(push(&mut q, 4, &[2]), Pushed::Squashed);
        assert_eq!(q.squashed(), 2);
        let mut out = Vec::new();
        assert_eq!(q.pop_updates(10, &mut out), 2);
        assert_eq!(a_of(&out[0]), 1);
        assert!(out[0].overrun.is_empty());
        assert_eq!(a_of(&out[1]), 4);
        assert_eq!(bits(&out[1].changed), vec![1, 2, 3]);
        // `b` changed twice after the queued update; `a` and `c` once.
        assert_eq!(bits(&out[1].overrun), vec![2]);
        assert_eq!(out[1].squashed, 2);
        assert!(q.is_empty());
    }

    /// A frame `{data}` of `len` bytes, its first byte `n`.
    fn frame(n: u8, len: usize) -> Update {
        let desc = StructDesc::builder("frame")
            .field(
                "data",
                FieldDesc::ScalarArray(ScalarType::U8, ArrayKind::Variable),
            )
            .build();
        let mut v = StructValue::new(Arc::new(desc));
        let mut bytes = vec![0u8; len];
        bytes[0] = n;
        v.set("data", Value::Array(ScalarArray::U8(bytes.into())))
            .unwrap();
        Update::new(v, BitSet::with(1), ())
    }

    fn first_byte(u: &Update) -> u8 {
        match u.value.get("data") {
            Some(Value::Array(ScalarArray::U8(a))) => a.get(0).unwrap(),
            other => panic!("data = {other:?}"),
        }
    }

    #[test]
    fn a_byte_budget_squashes_large_frames_long_before_the_count_is_reached() {
        let mut q = Queue::new(100).with_byte_budget(3_000);
        for n in 1..=3 {
            assert_eq!(q.push(frame(n, 1_000)), Pushed::Queued);
        }
        assert!(!q.has_room());
        assert_eq!(q.push(frame(4, 1_000)), Pushed::Squashed);
        assert_eq!(q.push(frame(5, 1_000)), Pushed::Squashed);
        assert_eq!((q.updates(), q.squashed()), (3, 2));
        let mut out = Vec::new();
        assert_eq!(q.pop_updates(1, &mut out), 1);
        assert!(q.has_room());
        assert_eq!(q.push(frame(6, 1_000)), Pushed::Queued);
        q.pop_updates(10, &mut out);
        let firsts: Vec<u8> = out.iter().map(first_byte).collect();
        assert_eq!(firsts, vec![1, 2, 5, 6]);
        assert_eq!(out[2].squashed, 2);
        // One frame larger than the whole budget still goes through, alone.
        assert_eq!(q.push(frame(7, 10_000)), Pushed::Queued);
        assert_eq!(q.push(frame(8, 10)), Pushed::Squashed);
    }

    #[test]
    fn small_updates_fill_a_byte_bounded_queue_to_its_count() {
        let mut q = Queue::new(4).with_byte_budget(1 << 20);
        for n in 1..=4 {
            assert_eq!(q.push(frame(n, 8)), Pushed::Queued);
        }
        assert_eq!(q.push(frame(5, 8)), Pushed::Squashed);
    }

    #[test]
    fn after_a_whole_value_change_every_field_changed_again_is_overrun() {
        let mut q = Queue::new(1);
        push(&mut q, 1, &[0]);
        push(&mut q, 2, &[3]);
        let Some(Entry::Update(u)) = q.pop() else {
            panic!("an update")
        };
        assert_eq!(bits(&u.overrun), vec![3]);
        assert_eq!(bits(&u.changed), vec![0, 3]);
    }

    #[test]
    fn events_keep_their_place_and_are_never_squashed_across() {
        let mut q = Queue::new(1);
        push(&mut q, 1, &[1]);
        q.push_event("reconnected");
        // Full, but the newest item is an event: queued after it.
        assert_eq!(push(&mut q, 2, &[1]), Pushed::Queued);
        assert_eq!(push(&mut q, 3, &[1]), Pushed::Squashed);
        let mut out = Vec::new();
        assert_eq!(q.pop_updates(10, &mut out), 1, "stops at the event");
        assert_eq!(q.pop(), Some(Entry::Event("reconnected")));
        assert_eq!(q.pop_updates(10, &mut out), 1);
        assert_eq!(
            out.iter()
                .map(|u| (a_of(u), u.squashed))
                .collect::<Vec<_>>(),
            vec![(1, 0), (3, 1)]
        );
    }

    #[derive(Debug, Default)]
    struct Acks(Arc<std::sync::Mutex<Vec<u64>>>);

    impl Carry for Acks {
        fn absorb(&mut self, _newer: Self) {}
        fn dropped(self, count: u64) {
            self.0.lock().unwrap().push(count);
        }
    }

    #[test]
    fn events_between_unread_updates_keep_the_bound_by_dropping_the_oldest() {
        let acks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut q: SquashQueue<Acks, ()> = SquashQueue::new(1);
        for n in 1..=3 {
            q.push(Update::new(value(n), BitSet::with(1), Acks(acks.clone())));
            q.push_event(());
        }
        assert_eq!(q.updates(), 2, "the bound is twice the capacity");
        assert_eq!(q.squashed(), 1);
        assert_eq!(
            *acks.lock().unwrap(),
            vec![1],
            "the dropped update's carry was told"
        );
        let updates: Vec<(i32, u64)> = std::iter::from_fn(|| q.pop())
            .filter_map(|e| match e {
                Entry::Update(u) => Some((
                    match u.value.get("a") {
                        Some(Value::I32(n)) => *n,
                        _ => 0,
                    },
                    u.squashed,
                )),
                Entry::Event(()) => None,
            })
            .collect();
        assert_eq!(
            updates,
            vec![(2, 1), (3, 0)],
            "the loss counted on the next"
        );
    }

    mod model {
        use super::*;
        use proptest::prelude::*;

        /// A pushed update: which of the fields a, b, c it changes (bit 0: all), or a pop.
        #[derive(Debug, Clone)]
        enum Step {
            Push(Vec<usize>),
            Pop,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                3 => prop::collection::vec(0usize..4, 1..3).prop_map(Step::Push),
                1 => Just(Step::Pop),
            ]
        }

        proptest! {
            /// Whatever the order of pushes and pops: updates come out in order, every update
            /// pushed is either taken or counted as squashed into the one taken after it, the
            /// newest value is never lost, and `overrun` marks exactly the fields changed again
            /// after a squashed-into update first changed them.
            #[test]
            fn order_kept_nothing_lost_beyond_squash_overrun_right(
                capacity in 1usize..5,
                steps in prop::collection::vec(step(), 1..60),
            ) {
                let mut q = Queue::new(capacity);
                // What each queued update should say, as a model: (newest n, changed, overrun,
                // squashed).
                let mut model: VecDeque<(i32, BitSet, BitSet, u64)> = VecDeque::new();
                let mut taken = Vec::new();
                let mut n = 0;
                for s in steps.into_iter().chain(std::iter::once(Step::Pop)) {
                    match s {
                        Step::Push(fields) => {
                            n += 1;
                            let pushed = push(&mut q, n, &fields);
                            let mut changed = BitSet::new();
                            fields.iter().for_each(|&f| changed.set(f));
                            if model.len() < capacity {
                                prop_assert_eq!(pushed, Pushed::Queued);
                                model.push_back((n, changed, BitSet::new(), 0));
                            } else {
                                prop_assert_eq!(pushed, Pushed::Squashed);
                                let last = model.back_mut().unwrap();
                                for bit in changed.iter() {
                                    if last.1.get(bit) || last.1.get(0) {
                                        last.2.set(bit);
                                    }
                                }
                                last.1.union_with(&changed);
                                last.0 = n;
                                last.3 += 1;
                            }
                        }
                        Step::Pop => {
                            q.pop_updates(usize::MAX, &mut taken);
                            let expected: Vec<_> = model.drain(..).collect();
                            let got: Vec<_> = taken[taken.len() - expected.len()..]
                                .iter()
                                .map(|u| (a_of(u), u.changed.clone(), u.overrun.clone(), u.squashed))
                                .collect();
                            prop_assert_eq!(got, expected);
                        }
                    }
                    prop_assert!(q.updates() <= capacity);
                }
                let values: Vec<i32> = taken.iter().map(a_of).collect();
                prop_assert!(values.windows(2).all(|w| w[0] < w[1]), "in order: {:?}", values);
                let accounted: u64 = taken.iter().map(|u| 1 + u.squashed).sum();
                prop_assert_eq!(accounted, n as u64, "each update taken or counted");
                prop_assert_eq!(q.squashed(), taken.iter().map(|u| u.squashed).sum::<u64>());
                if n > 0 {
                    prop_assert_eq!(values.last().copied(), Some(n), "the newest is kept");
                }
            }
        }
    }
}
