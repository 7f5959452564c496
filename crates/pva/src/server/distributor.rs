//! The distribution policy of a PV's subscribers: pvDatabase's data distributor, which pvapy
//! registers as `pydistributor`. A subscriber asks for its share with its pvRequest,
//! `field(_[pydistributor=group:G;set:S;trigger:uniqueId;updates:N;mode:M])`; the PV then sends
//! each update to the subscribers whose turn it is, not to all. Plain subscribers still get every
//! update.
//!
//! The rules, as pvDatabase and pvapy apply them:
//! * `group` names a distributor; distributors are independent of one another (default
//!   `default`). The older spelling is `distributorId`.
//! * `set` names a set of subscribers within the group (default `default`); sets take turns,
//!   in the order they first subscribed, each receiving `updates` sequential updates (default
//!   1) before the next set's turn. The older spelling is `groupId`.
//! * `mode` 0 sends a set's turn to one of its subscribers (they take turns in the order they
//!   subscribed); 1 sends it to all of them. The default is 0 without a `set`, 1 with one. The
//!   older spelling is `updateMode`.
//! * `trigger` is the field that tells updates apart (default `timeStamp`): an update whose
//!   trigger equals the last one distributed is not distributed again. The older spelling is
//!   `uniqueField` / `distinguishingField`.
//! * A set's `updates` and `mode` are those of its first subscriber; a set goes when its last
//!   subscriber does. Names are case-insensitive, values are not. Every subscriber gets the
//!   PV's current value when it subscribes.
//!
//! Pure state: [`Distributors`] is told who joins and leaves and routes each update;
//! [`Routing`] puts it together with the publisher's [`Delivery`] (to all, or to the next in
//! turn) for a PV's subscriptions.

use std::collections::BTreeMap;

use pva_codec::{PvRequest, StructValue};

/// The pvRequest option that asks for a share.
pub const OPTION: &str = "pydistributor";

/// How a set's turn is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// To one of its subscribers, in turn (mode 0).
    OnePerSet,
    /// To all of them (mode 1).
    AllInSet,
}

/// What one subscriber asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistributorRequest {
    /// The distributor (`group`).
    pub group: String,
    /// The set within it (`set`).
    pub set: String,
    /// The field that tells updates apart (`trigger`).
    pub trigger: String,
    /// Sequential updates per turn (`updates`).
    pub updates: u32,
    /// How a turn is sent (`mode`).
    pub mode: UpdateMode,
}

impl DistributorRequest {
    /// Read the option's value, `key:value;key:value` (`key=value` is taken too).
    pub fn parse(spec: &str) -> Result<DistributorRequest, String> {
        let mut request = DistributorRequest {
            group: "default".into(),
            set: "default".into(),
            trigger: "timeStamp".into(),
            updates: 1,
            mode: UpdateMode::OnePerSet,
        };
        let mut mode = None;
        let mut set_given = false;
        for item in spec.split(';').map(str::trim).filter(|i| !i.is_empty()) {
            let (key, value) = item
                .split_once([':', '='])
                .ok_or_else(|| format!("{OPTION}: '{item}' has no value (key:value)"))?;
            let value = value.trim().to_string();
            match key.trim().to_ascii_lowercase().as_str() {
                "group" | "distributorid" => request.group = value,
                "set" | "groupid" => {
                    request.set = value;
                    set_given = true;
                }
                "trigger" | "uniquefield" | "distinguishingfield" => request.trigger = value,
                "updates" | "nupdatesperconsumer" => {
                    request.updates = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("{OPTION}: updates must be 1 or more, not '{value}'")
                    })?
                }
                "mode" | "updatemode" => {
                    mode = Some(match value.as_str() {
                        "0" => UpdateMode::OnePerSet,
                        "1" => UpdateMode::AllInSet,
                        _ => return Err(format!("{OPTION}: mode must be 0 or 1, not '{value}'")),
                    })
                }
                other => return Err(format!("{OPTION}: unknown option '{other}'")),
            }
        }
        request.mode = mode.unwrap_or(if set_given {
            UpdateMode::AllInSet
        } else {
            UpdateMode::OnePerSet
        });
        Ok(request)
    }

    /// The request a pvRequest carries (`field(_[pydistributor=...])`), if any.
    pub fn from_pv_request(request: &PvRequest) -> Option<Result<DistributorRequest, String>> {
        let spec = request.field_option("_", OPTION)?;
        Some(DistributorRequest::parse(spec))
    }
}

#[derive(Debug)]
struct Set {
    name: String,
    trigger: String,
    updates: u32,
    mode: UpdateMode,
    /// Subscriber ids, in order of subscription.
    members: Vec<u64>,
    /// Whose turn it is (mode 0).
    turn: usize,
    /// Updates given in the current turn.
    given: u32,
}

#[derive(Debug, Default)]
struct Distributor {
    /// In order of first subscription.
    sets: Vec<Set>,
    /// Whose turn it is.
    current: usize,
    /// The trigger of the last update distributed.
    last: Option<String>,
}

impl Distributor {
    fn route(&mut self, value: &StructValue, out: &mut Vec<u64>) {
        if self.sets.is_empty() {
            return;
        }
        self.current %= self.sets.len();
        let set = &mut self.sets[self.current];
        // A missing trigger field: every update is a new one.
        let trigger = value.get(&set.trigger).map(|v| format!("{v:?}"));
        if trigger.is_some() && trigger == self.last {
            return;
        }
        self.last = trigger;
        set.turn %= set.members.len();
        match set.mode {
            UpdateMode::OnePerSet => out.push(set.members[set.turn]),
            UpdateMode::AllInSet => out.extend_from_slice(&set.members),
        }
        set.given += 1;
        if set.given >= set.updates {
            set.given = 0;
            set.turn += 1;
            self.current += 1;
        }
    }

    fn leave(&mut self, id: u64) {
        for (index, set) in self.sets.iter_mut().enumerate() {
            if let Some(at) = set.members.iter().position(|m| *m == id) {
                set.members.remove(at);
                if at < set.turn {
                    set.turn -= 1;
                }
                if set.members.is_empty() {
                    self.sets.remove(index);
                    if index < self.current {
                        self.current -= 1;
                    }
                }
                return;
            }
        }
    }
}

/// The distributors of one PV.
#[derive(Debug, Default)]
pub struct Distributors {
    groups: BTreeMap<String, Distributor>,
    /// Which distributor each distributed subscriber belongs to.
    members: BTreeMap<u64, String>,
}

impl Distributors {
    /// Whether any subscriber asked for a share.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether subscriber `id` gets a share rather than every update.
    pub fn distributes_to(&self, id: u64) -> bool {
        self.members.contains_key(&id)
    }

    /// Subscriber `id` asks for its share.
    pub fn join(&mut self, id: u64, request: &DistributorRequest) {
        let group = self.groups.entry(request.group.clone()).or_default();
        match group.sets.iter_mut().find(|s| s.name == request.set) {
            Some(set) => set.members.push(id),
            None => group.sets.push(Set {
                name: request.set.clone(),
                trigger: request.trigger.clone(),
                updates: request.updates,
                mode: request.mode,
                members: vec![id],
                turn: 0,
                given: 0,
            }),
        }
        self.members.insert(id, request.group.clone());
    }

    /// Subscriber `id` is gone: the turns go on among the others.
    pub fn leave(&mut self, id: u64) {
        let Some(name) = self.members.remove(&id) else {
            return;
        };
        if let Some(group) = self.groups.get_mut(&name) {
            group.leave(id);
            if group.sets.is_empty() {
                self.groups.remove(&name);
            }
        }
    }

    /// The distributed subscribers whose turn `value` is.
    pub fn route(&mut self, value: &StructValue) -> Vec<u64> {
        let mut out = Vec::new();
        for group in self.groups.values_mut() {
            group.route(value, &mut out);
        }
        out
    }
}

/// How one post spreads over a PV's subscribers: the publisher's side of the policy (the
/// subscriber's side is its pvRequest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// To every subscriber; those that asked for a share only in their turn.
    Every,
    /// To one subscriber, the next in order of subscription, round and round (a relay
    /// spreading frames over its consumers).
    Next,
}

/// The routing of a PV's posts over its subscribers, by [`Delivery`] and by each
/// subscriber's request.
#[derive(Debug, Default)]
pub struct Routing {
    distributors: Distributors,
    /// The subscriber that got the last [`Delivery::Next`] post.
    last_turn: u64,
}

impl Routing {
    /// Subscriber `id` arrives, asking for `share` of the updates or (`None`) every one.
    pub fn join(&mut self, id: u64, share: Option<&DistributorRequest>) {
        if let Some(request) = share {
            self.distributors.join(id, request);
        }
    }

    /// Whether `delivery` goes to every subscriber, none of them asking for a share.
    pub fn delivers_to_all(&self, delivery: Delivery) -> bool {
        delivery == Delivery::Every && self.distributors.is_empty()
    }

    /// Subscriber `id` is gone.
    pub fn leave(&mut self, id: u64) {
        self.distributors.leave(id);
    }

    /// Which of the subscribers `ids` (in order of subscription) get `value`, in that order.
    pub fn route(&mut self, delivery: Delivery, value: &StructValue, ids: &[u64]) -> Vec<u64> {
        match delivery {
            Delivery::Every if self.distributors.is_empty() => ids.to_vec(),
            Delivery::Every => {
                let turn = self.distributors.route(value);
                ids.iter()
                    .copied()
                    .filter(|&id| !self.distributors.distributes_to(id) || turn.contains(&id))
                    .collect()
            }
            Delivery::Next => {
                let next = ids
                    .iter()
                    .find(|&&id| id > self.last_turn)
                    .or(ids.first())
                    .copied();
                if let Some(id) = next {
                    self.last_turn = id;
                }
                next.into_iter().collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::{ScalarType, StructDesc};
    use std::sync::Arc;

    fn frame(id: i32) -> StructValue {
        let desc = Arc::new(
            StructDesc::builder("f")
                .scalar("uniqueId", ScalarType::I32)
                .build(),
        );
        let mut v = StructValue::new(desc);
        v.set("uniqueId", id).unwrap();
        v
    }

    fn request(spec: &str) -> DistributorRequest {
        DistributorRequest::parse(spec).unwrap()
    }

    fn deliveries(d: &mut Distributors, ids: std::ops::Range<i32>) -> BTreeMap<u64, Vec<i32>> {
        let mut got = BTreeMap::<u64, Vec<i32>>::new();
        for id in ids {
            for who in d.route(&frame(id)) {
                got.entry(who).or_default().push(id);
            }
        }
        got
    }

    #[test]
    fn the_grammar_of_pvapy_and_of_the_older_plugin() {
        let r = request("group:g1;set:s;trigger:uniqueId;updates:3;mode:0");
        assert_eq!(
            (
                r.group.as_str(),
                r.set.as_str(),
                r.trigger.as_str(),
                r.updates,
                r.mode
            ),
            ("g1", "s", "uniqueId", 3, UpdateMode::OnePerSet)
        );
        assert_eq!(
            request("set:s").mode,
            UpdateMode::AllInSet,
            "a set defaults to mode 1"
        );
        assert_eq!(request("uniqueField:uniqueId").mode, UpdateMode::OnePerSet);
        let old = request("distributorId:d;groupId:G1;nUpdatesPerConsumer:2;updateMode=0");
        assert_eq!(
            (old.group.as_str(), old.set.as_str(), old.updates),
            ("d", "G1", 2)
        );
        assert!(DistributorRequest::parse("updates:0")
            .unwrap_err()
            .contains("1 or more"));
        assert!(DistributorRequest::parse("mode:2")
            .unwrap_err()
            .contains("0 or 1"));
        assert!(DistributorRequest::parse("colour:red")
            .unwrap_err()
            .contains("unknown"));
        let pv_request =
            PvRequest::parse("field(_[pydistributor=trigger:uniqueId;updates:2])").unwrap();
        assert_eq!(
            DistributorRequest::from_pv_request(&pv_request),
            Some(Ok(request("trigger:uniqueId;updates:2")))
        );
    }

    #[test]
    fn one_set_hands_each_update_to_one_subscriber_in_turn() {
        let mut d = Distributors::default();
        for id in 1..=3 {
            d.join(id, &request("trigger:uniqueId"));
        }
        let got = deliveries(&mut d, 1..10);
        assert_eq!(got[&1], [1, 4, 7]);
        assert_eq!(got[&2], [2, 5, 8]);
        assert_eq!(got[&3], [3, 6, 9]);
        // The same trigger again is not distributed twice.
        assert!(d.route(&frame(9)).is_empty());
        // One leaves: the other two share what follows.
        d.leave(2);
        let got = deliveries(&mut d, 10..14);
        assert_eq!(got.values().map(Vec::len).sum::<usize>(), 4);
        assert!(!got.contains_key(&2));
    }

    #[test]
    fn sets_take_turns_with_their_own_updates_and_modes() {
        // pvapy's example: set G2 (all, 3 updates) subscribed first, then G1 (one, 2 updates).
        let mut d = Distributors::default();
        d.join(1, &request("set:G2;trigger:uniqueId;updates:3"));
        d.join(2, &request("set:G2;trigger:uniqueId;updates:3"));
        d.join(3, &request("set:G1;trigger:uniqueId;updates:2;mode:0"));
        d.join(4, &request("set:G1;trigger:uniqueId;updates:2;mode:0"));
        let got = deliveries(&mut d, 1..21);
        assert_eq!(got[&1], [1, 2, 3, 6, 7, 8, 11, 12, 13, 16, 17, 18]);
        assert_eq!(got[&2], got[&1]);
        assert_eq!(got[&3], [4, 5, 14, 15]);
        assert_eq!(got[&4], [9, 10, 19, 20]);
    }

    #[test]
    fn groups_are_independent() {
        let mut d = Distributors::default();
        d.join(1, &request("group:a;trigger:uniqueId"));
        d.join(2, &request("group:a;trigger:uniqueId"));
        d.join(3, &request("group:b;trigger:uniqueId"));
        let got = deliveries(&mut d, 1..5);
        assert_eq!(got[&1], [1, 3]);
        assert_eq!(got[&2], [2, 4]);
        assert_eq!(got[&3], [1, 2, 3, 4]);
        d.leave(3);
        assert!(!d.groups.contains_key("b"));
    }
}
