//! Printing values for people (a type tree like the pvxs tools, one line per field, or the
//! pvget one-line form) and for scripts (JSON).

use pva_codec::value::array_item;
use pva_codec::{BitSet, FieldDesc, ScalarArray, ScalarType, StructValue, UnionValue, Value};
use serde_json::{json, Map, Number, Value as Json};

/// Array elements printed in text form unless `-#` says otherwise; longer arrays end with `...`.
pub const DEFAULT_ARRAY_LIMIT: usize = 100;

/// The C name pvxs prints for a scalar type.
fn scalar_name(t: ScalarType) -> &'static str {
    match t {
        ScalarType::Bool => "bool",
        ScalarType::I8 => "int8_t",
        ScalarType::I16 => "int16_t",
        ScalarType::I32 => "int32_t",
        ScalarType::I64 => "int64_t",
        ScalarType::U8 => "uint8_t",
        ScalarType::U16 => "uint16_t",
        ScalarType::U32 => "uint32_t",
        ScalarType::U64 => "uint64_t",
        ScalarType::F32 => "float",
        ScalarType::F64 => "double",
        ScalarType::String => "string",
    }
}

/// A type's name as it appears in front of a member.
fn type_label(d: &FieldDesc) -> String {
    match d {
        FieldDesc::Scalar(t) => scalar_name(*t).into(),
        FieldDesc::BoundedString(_) => "string".into(),
        FieldDesc::ScalarArray(t, _) => format!("{}[]", scalar_name(*t)),
        FieldDesc::Struct(s) => format!("struct \"{}\"", s.id()),
        FieldDesc::StructArray(s) => format!("struct \"{}\"[]", s.id()),
        FieldDesc::Union(u) => format!("union \"{}\"", u.id()),
        FieldDesc::UnionArray(u) => format!("union \"{}\"[]", u.id()),
        FieldDesc::Any => "any".into(),
        FieldDesc::AnyArray => "any[]".into(),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Bool(b) => b.to_string(),
        Value::F32(f) => f.to_string(),
        Value::F64(f) => f.to_string(),
        other => other.as_i64().map_or_else(
            || match other {
                Value::U64(u) => u.to_string(),
                _ => format!("{other:?}"),
            },
            |i| i.to_string(),
        ),
    }
}

/// The first `limit` elements of an array (all of them when `limit` is 0) as text, and
/// whether some were left out.
fn array_items(a: &ScalarArray, limit: usize, text: fn(&Value) -> String) -> (Vec<String>, bool) {
    let shown = if limit == 0 {
        a.len()
    } else {
        a.len().min(limit)
    };
    let items = (0..shown)
        .filter_map(|i| array_item(a, i))
        .map(|v| text(&v))
        .collect();
    (items, shown < a.len())
}

fn array_text(a: &ScalarArray, limit: usize) -> String {
    let (items, cut) = array_items(a, limit, scalar_text);
    let more = if cut { ", ..." } else { "" };
    format!("{{{}}}[{}{more}]", a.len(), items.join(", "))
}

/// A structure as an indented tree, starting with its type line; arrays show at most `limit`
/// elements (0: all).
pub fn tree(v: &StructValue, limit: usize) -> String {
    let mut out = String::new();
    struct_body(v, 0, limit, &mut out);
    out
}

fn struct_body(v: &StructValue, depth: usize, limit: usize, out: &mut String) {
    out.push_str(&format!("struct \"{}\" {{\n", v.id()));
    for (name, field) in v.iter() {
        member(name, field, depth + 1, limit, out);
    }
    out.push_str(&format!("{}}}", "    ".repeat(depth)));
}

fn member(name: &str, v: &Value, depth: usize, limit: usize, out: &mut String) {
    let pad = "    ".repeat(depth);
    match v {
        Value::Struct(s) => {
            out.push_str(&pad);
            struct_body(s, depth, limit, out);
            out.push_str(&format!(" {name}\n"));
        }
        Value::Array(a) => out.push_str(&format!(
            "{pad}{} {name} = {}\n",
            type_label(&v.desc()),
            array_text(a, limit)
        )),
        Value::StructArray(a) => {
            out.push_str(&format!(
                "{pad}struct \"{}\"[] {name} = {{{}}}[\n",
                a.desc.id(),
                a.items.len()
            ));
            for item in &a.items {
                match item {
                    Some(s) => {
                        out.push_str(&"    ".repeat(depth + 1));
                        struct_body(s, depth + 1, limit, out);
                        out.push('\n');
                    }
                    None => out.push_str(&format!("{}null\n", "    ".repeat(depth + 1))),
                }
            }
            out.push_str(&format!("{pad}]\n"));
        }
        Value::Union(u) => union_member(name, u, depth, limit, out),
        Value::Any(a) => match a.get() {
            Some(inner) => member(&format!("{name} (any)"), inner, depth, limit, out),
            None => out.push_str(&format!("{pad}any {name} = null\n")),
        },
        Value::UnionArray(a) => out.push_str(&format!(
            "{pad}union \"{}\"[] {name} = {{{}}}\n",
            a.desc.id(),
            a.items.len()
        )),
        Value::AnyArray(a) => out.push_str(&format!("{pad}any[] {name} = {{{}}}\n", a.len())),
        scalar => out.push_str(&format!(
            "{pad}{} {name} = {}\n",
            type_label(&scalar.desc()),
            scalar_text(scalar)
        )),
    }
}

fn union_member(name: &str, u: &UnionValue, depth: usize, limit: usize, out: &mut String) {
    match &u.selected {
        Some((i, inner)) => {
            let sel = u.desc.members().get(*i).map_or("?", |m| m.name.as_str());
            member(&format!("{name}.{sel}"), inner, depth, limit, out);
        }
        None => out.push_str(&format!("{}union {name} = null\n", "    ".repeat(depth))),
    }
}

/// One line per leaf field, `NAME.field.path TYPE = VALUE` (pvxs's delta form); with
/// `changed` (a monitor update's), only the fields it marks.
pub fn delta(name: &str, v: &StructValue, changed: Option<&BitSet>, limit: usize) -> String {
    let mut out = String::new();
    let marked = changed.is_none_or(|c| c.get(0));
    delta_fields(name, v, 0, changed, marked, limit, &mut out);
    out
}

fn delta_fields(
    prefix: &str,
    v: &StructValue,
    base: usize,
    changed: Option<&BitSet>,
    marked: bool,
    limit: usize,
    out: &mut String,
) {
    for ((member, offset), field) in v.desc().members_with_offsets().zip(v.fields()) {
        let bit = base + offset;
        let marked = marked || changed.is_some_and(|c| c.get(bit));
        let path = format!("{prefix}.{}", member.name);
        match field {
            Value::Struct(s) => delta_fields(&path, s, bit, changed, marked, limit, out),
            _ if !marked => {}
            Value::Array(a) => out.push_str(&format!(
                "{path} {} = {}\n",
                type_label(&field.desc()),
                array_text(a, limit)
            )),
            scalar if scalar.scalar_type().is_some() => out.push_str(&format!(
                "{path} {} = {}\n",
                type_label(&scalar.desc()),
                scalar_text(scalar)
            )),
            other => out.push_str(&format!(
                "{path} {} = {}\n",
                type_label(&other.desc()),
                json(other)
            )),
        }
    }
}

/// The pvget one-line form of a normative type: `NAME TIMESTAMP VALUE`, with an enum's
/// choice, an array's length then its elements, and the alarm severity when there is one;
/// `None` for a structure without a `value` field.
pub fn nt(name: &str, v: &StructValue, limit: usize) -> Option<String> {
    let value = v.get("value")?;
    let mut line = name.to_owned();
    if let Some(seconds) = v.get("timeStamp.secondsPastEpoch").and_then(Value::as_i64) {
        let nanos = v
            .get("timeStamp.nanoseconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        line.push(' ');
        line.push_str(&timestamp_text(seconds, nanos));
    }
    line.push(' ');
    line.push_str(&nt_value(value, limit));
    let severity = v.get("alarm.severity").and_then(Value::as_i64).unwrap_or(0);
    if severity != 0 {
        let name = match severity {
            1 => "MINOR",
            2 => "MAJOR",
            3 => "INVALID",
            _ => "UNDEFINED",
        };
        line.push_str(&format!(" {name}"));
    }
    Some(line)
}

/// An EPICS time stamp (seconds since 1970 and nanoseconds) as local time, to the millisecond,
/// as pvget prints it; a zero time stamp (never set) as `<undefined>`.
fn timestamp_text(seconds: i64, nanos: i64) -> String {
    if seconds == 0 && nanos == 0 {
        return "<undefined>".into();
    }
    let nanos = i32::try_from(nanos.clamp(0, 999_999_999)).unwrap_or(0);
    jiff::Timestamp::new(seconds, nanos).map_or_else(
        |_| format!("<time {seconds}.{nanos:09}>"),
        |t| {
            t.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S%.3f")
                .to_string()
        },
    )
}

fn nt_value(value: &Value, limit: usize) -> String {
    let plain = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => scalar_text(other),
    };
    match value {
        Value::Struct(e) => match (e.get("index").and_then(Value::as_i64), e.get("choices")) {
            (Some(i), Some(Value::Array(ScalarArray::String(choices)))) => usize::try_from(i)
                .ok()
                .and_then(|i| choices.get(i))
                .cloned()
                .unwrap_or_else(|| i.to_string()),
            _ => struct_json(e).to_string(),
        },
        Value::Array(a) => {
            let (items, cut) = array_items(a, limit, plain);
            let more = if cut { " ..." } else { "" };
            format!("{} {}{more}", a.len(), items.join(" "))
        }
        scalar if scalar.scalar_type().is_some() => plain(scalar),
        other => json(other).to_string(),
    }
}

/// A type description as an indented tree.
pub fn type_tree(d: &FieldDesc) -> String {
    let mut out = String::new();
    desc_body(d, 0, &mut out);
    out
}

fn desc_body(d: &FieldDesc, depth: usize, out: &mut String) {
    let members = match d {
        FieldDesc::Struct(s) | FieldDesc::StructArray(s) => s.members(),
        FieldDesc::Union(u) | FieldDesc::UnionArray(u) => u.members(),
        _ => {
            out.push_str(&type_label(d));
            return;
        }
    };
    out.push_str(&format!("{} {{\n", type_label(d)));
    for m in members {
        out.push_str(&"    ".repeat(depth + 1));
        desc_body(&m.desc, depth + 1, out);
        out.push_str(&format!(" {}\n", m.name));
    }
    out.push_str(&format!("{}}}", "    ".repeat(depth)));
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map_or(Json::Null, Json::Number)
}

/// A value as JSON: structures as objects, unions as their selected value, arrays as arrays.
pub fn json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!(b),
        Value::I8(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::U8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::F32(x) => float(f64::from(*x)),
        Value::F64(x) => float(*x),
        Value::String(s) => json!(s),
        Value::Array(a) => Json::Array(
            (0..a.len())
                .filter_map(|i| array_item(a, i))
                .map(|v| json(&v))
                .collect(),
        ),
        Value::Struct(s) => struct_json(s),
        Value::StructArray(a) => Json::Array(
            a.items
                .iter()
                .map(|i| i.as_ref().map_or(Json::Null, struct_json))
                .collect(),
        ),
        Value::Union(u) => u.selected.as_ref().map_or(Json::Null, |(_, v)| json(v)),
        Value::UnionArray(a) => Json::Array(
            a.items
                .iter()
                .map(|i| {
                    i.as_ref()
                        .and_then(|u| u.selected.as_ref())
                        .map_or(Json::Null, |(_, v)| json(v))
                })
                .collect(),
        ),
        Value::Any(a) => a.get().map_or(Json::Null, json),
        Value::AnyArray(items) => Json::Array(
            items
                .iter()
                .map(|i| i.as_ref().and_then(|a| a.get()).map_or(Json::Null, json))
                .collect(),
        ),
    }
}

/// A structure as a JSON object in member order.
pub fn struct_json(s: &StructValue) -> Json {
    let mut m = Map::new();
    for (name, v) in s.iter() {
        m.insert(name.to_owned(), json(v));
    }
    Json::Object(m)
}

/// A type description as JSON: `{"type": ..., "fields": {...}}` for structures and unions.
pub fn type_json(d: &FieldDesc) -> Json {
    let members = match d {
        FieldDesc::Struct(s) | FieldDesc::StructArray(s) => s.members(),
        FieldDesc::Union(u) | FieldDesc::UnionArray(u) => u.members(),
        _ => return json!({ "type": type_label(d) }),
    };
    let mut fields = Map::new();
    for m in members {
        fields.insert(m.name.clone(), type_json(&m.desc));
    }
    json!({ "type": type_label(d), "fields": fields })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::StructDesc;
    use std::sync::Arc;

    fn sample() -> StructValue {
        let d = StructDesc::builder("epics:nt/NTScalar:1.0")
            .scalar("value", ScalarType::F64)
            .array("arr", ScalarType::I32)
            .structure(
                "alarm",
                StructDesc::builder("alarm_t")
                    .scalar("message", ScalarType::String)
                    .build(),
            )
            .build();
        let mut v = StructValue::new(Arc::new(d));
        v.set("value", 2.5).unwrap();
        v.set(
            "arr",
            Value::Array(ScalarArray::String(vec!["1".into(), "2".into()])),
        )
        .unwrap();
        v.set("alarm.message", "ok").unwrap();
        v
    }

    #[test]
    fn tree_shows_types_names_and_values() {
        let t = tree(&sample(), DEFAULT_ARRAY_LIMIT);
        assert!(t.starts_with("struct \"epics:nt/NTScalar:1.0\" {\n"), "{t}");
        assert!(t.contains("    double value = 2.5\n"), "{t}");
        assert!(t.contains("    int32_t[] arr = {2}[1, 2]\n"), "{t}");
        assert!(
            t.contains("        string message = \"ok\"\n    } alarm\n"),
            "{t}"
        );
    }

    #[test]
    fn json_nests_structures() {
        assert_eq!(
            struct_json(&sample()),
            json!({"value": 2.5, "arr": [1, 2], "alarm": {"message": "ok"}})
        );
        assert_eq!(json(&Value::F64(f64::NAN)), Json::Null);
    }
}
