//! The field selection of a pvRequest (`field(value,alarm.severity)`): the part of a PV's type
//! a get or monitor serves, and how values and changed-field sets are cut down to it.
//!
//! Like pvDatabase (the record server under pvAccessCPP and pvapy), the operation's type is the
//! selected sub-structure: the selected members in the PV's member order, with the type ids of
//! the PV. (pvxs instead keeps the whole type and leaves the unselected fields out of the data.)

use std::sync::Arc;

use pva_codec::pvrequest::FieldNode;
use pva_codec::{BitSet, FieldDesc, Member, PvRequest, StructDesc, StructValue, Value};

/// What is taken of one structure: some of its members, by index in the PV's type.
#[derive(Debug, Clone)]
struct Part {
    /// The selected sub-structure's type.
    desc: Arc<StructDesc>,
    /// Index in the full structure of each selected member, and what is taken of it.
    members: Vec<(usize, Pick)>,
}

#[derive(Debug, Clone)]
enum Pick {
    /// The whole member.
    Whole,
    /// Some members of a structure member.
    Part(Part),
}

/// A pvRequest's field selection applied to one PV type.
#[derive(Debug, Clone)]
pub struct Selection {
    full: Arc<StructDesc>,
    top: Part,
    /// For each bit of the selected type, the bit of the PV's type it stands for.
    to_full: Vec<usize>,
    /// The bits of the PV's type whose change shows in the selection.
    interest: BitSet,
}

/// A pvRequest that names no field of the PV.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the pvRequest selects no field of this PV")]
pub struct NothingSelected;

impl Selection {
    /// The selection `request` makes of `full`: `Ok(None)` when it selects everything (an empty
    /// `field()`), an error when none of the fields it names exist. Names of fields the PV does
    /// not have are ignored, as pvxs and pvDatabase ignore them.
    pub fn new(
        full: &Arc<StructDesc>,
        request: &PvRequest,
    ) -> Result<Option<Self>, NothingSelected> {
        let nodes: Vec<&FieldNode> = request.fields.iter().filter(|n| n.name != "_").collect();
        if nodes.is_empty() {
            return Ok(None);
        }
        let top = part(full, &nodes).ok_or(NothingSelected)?;
        let mut to_full = Vec::with_capacity(top.desc.bit_count());
        map_bits(full, &top, 0, &mut to_full);
        let interest = to_full.iter().copied().collect();
        Ok(Some(Selection {
            full: full.clone(),
            top,
            to_full,
            interest,
        }))
    }

    /// The type the operation serves.
    pub fn desc(&self) -> &Arc<StructDesc> {
        &self.top.desc
    }

    /// The bits of the PV's type whose change shows in the selection (ancestors included).
    pub fn interest(&self) -> &BitSet {
        &self.interest
    }

    /// `value` (of the PV's type) cut down to the selection; `None` if it is of another type.
    pub fn value(&self, value: &StructValue) -> Option<StructValue> {
        if !Arc::ptr_eq(value.desc(), &self.full) && **value.desc() != *self.full {
            return None;
        }
        project(value, &self.top)
    }

    /// `changed` bits of the PV's type as bits of the selected type.
    pub fn bits(&self, changed: &BitSet) -> BitSet {
        self.to_full
            .iter()
            .enumerate()
            .filter(|(_, &full)| changed.get(full))
            .map(|(bit, _)| bit)
            .collect()
    }
}

/// What `nodes` select of `desc`, or `None` if they name none of its members.
fn part(desc: &StructDesc, nodes: &[&FieldNode]) -> Option<Part> {
    let mut picks: Vec<(usize, Pick)> = Vec::new();
    for node in nodes {
        let Some(i) = desc.index_of(&node.name) else {
            continue;
        };
        let children: Vec<&FieldNode> = node.children.iter().collect();
        let pick = match &desc.members()[i].desc {
            FieldDesc::Struct(sub) if !children.is_empty() => match part(sub, &children) {
                Some(p) => Pick::Part(p),
                None => continue,
            },
            _ => Pick::Whole,
        };
        picks.push((i, pick));
    }
    if picks.is_empty() {
        return None;
    }
    picks.sort_by_key(|(i, _)| *i);
    let members = picks
        .iter()
        .map(|(i, pick)| {
            let m = &desc.members()[*i];
            Member {
                name: m.name.clone(),
                desc: match pick {
                    Pick::Whole => m.desc.clone(),
                    Pick::Part(p) => FieldDesc::Struct(p.desc.clone()),
                },
            }
        })
        .collect();
    Some(Part {
        desc: Arc::new(StructDesc::new(desc.id(), members)),
        members: picks,
    })
}

/// Push, in the selected type's bit order, the bit of the full type each bit stands for.
fn map_bits(full: &StructDesc, part: &Part, base: usize, out: &mut Vec<usize>) {
    out.push(base);
    for (i, pick) in &part.members {
        let (offset, member) = match (full.bit_offset(*i), full.members().get(*i)) {
            (Some(o), Some(m)) => (o, m),
            _ => continue,
        };
        match (pick, &member.desc) {
            (Pick::Part(p), FieldDesc::Struct(sub)) => map_bits(sub, p, base + offset, out),
            _ => out.extend((0..member.desc.bit_count()).map(|k| base + offset + k)),
        }
    }
}

fn project(value: &StructValue, part: &Part) -> Option<StructValue> {
    let fields = part
        .members
        .iter()
        .map(|(i, pick)| {
            let v = value.fields().get(*i)?;
            match (pick, v) {
                (Pick::Whole, v) => Some(v.clone()),
                (Pick::Part(p), Value::Struct(s)) => project(s, p).map(Value::Struct),
                (Pick::Part(_), _) => None,
            }
        })
        .collect::<Option<Vec<Value>>>()?;
    StructValue::from_parts(part.desc.clone(), fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::nt::NtScalar;
    use pva_codec::ScalarType;

    fn nt() -> StructValue {
        let mut v = NtScalar::new(ScalarType::F64).create();
        v.set("value", 2.5).unwrap();
        v.set("alarm.severity", 2).unwrap();
        v.set("alarm.message", "high").unwrap();
        v.set("timeStamp.userTag", 7).unwrap();
        v
    }

    fn select(v: &StructValue, text: &str) -> Option<Selection> {
        Selection::new(v.desc(), &PvRequest::parse(text).unwrap()).unwrap()
    }

    #[test]
    fn an_empty_request_selects_everything() {
        assert!(select(&nt(), "field()").is_none());
        assert!(select(&nt(), "record[queueSize=2]").is_none());
    }

    #[test]
    fn whole_and_partial_members_keep_order_and_ids() {
        let v = nt();
        let s = select(&v, "field(alarm.severity,value)").unwrap();
        let d = s.desc();
        assert_eq!(d.id(), "epics:nt/NTScalar:1.0");
        let names: Vec<&str> = d.members().iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["value", "alarm"]);
        let alarm = d.members()[1].desc.as_struct().unwrap();
        assert_eq!(alarm.id(), "alarm_t");
        assert_eq!(alarm.members().len(), 1);

        let cut = s.value(&v).unwrap();
        assert_eq!(cut.get("value"), Some(&Value::F64(2.5)));
        assert_eq!(cut.get("alarm.severity"), Some(&Value::I32(2)));
        assert!(cut.get("alarm.message").is_none());
        assert!(cut.get("timeStamp").is_none());
    }

    #[test]
    fn bits_map_to_the_selected_type() {
        let v = nt();
        let full = v.desc();
        let s = select(&v, "field(value,alarm.message)").unwrap();
        let sub = s.desc().clone();
        let bit = |d: &StructDesc, p: &str| d.bit_of(p).unwrap();

        let changed: BitSet = [bit(full, "alarm.message"), bit(full, "timeStamp.userTag")]
            .into_iter()
            .collect();
        assert_eq!(s.bits(&changed), BitSet::with(bit(&sub, "alarm.message")));
        // A whole structure changed: its selected part is marked through its own bit.
        assert_eq!(
            s.bits(&BitSet::with(bit(full, "alarm"))),
            BitSet::with(bit(&sub, "alarm"))
        );
        assert_eq!(s.bits(&BitSet::with(0)), BitSet::with(0));
        assert!(s.bits(&BitSet::with(bit(full, "timeStamp"))).is_empty());
        assert!(!s.interest().get(bit(full, "timeStamp")));
        assert!(s.interest().get(bit(full, "alarm")));
    }

    #[test]
    fn unknown_names_are_ignored_but_not_all_of_them() {
        let v = nt();
        let s = select(&v, "field(value,nope,alarm.nope)").unwrap();
        assert_eq!(s.desc().members().len(), 1);
        assert_eq!(
            Selection::new(v.desc(), &PvRequest::parse("field(nope)").unwrap()).unwrap_err(),
            NothingSelected
        );
    }

    #[test]
    fn values_of_another_type_are_refused() {
        let s = select(&nt(), "field(value)").unwrap();
        let other = NtScalar::new(ScalarType::I32).create();
        assert!(s.value(&other).is_none());
    }
}
