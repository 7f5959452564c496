//! Building the value of a put from `field=value` pairs: text is converted to each field's
//! type, enumerations accept a choice name or an index, arrays accept `[1,2,3]` or `1 2 3`.

use pva_codec::{BitSet, FieldDesc, ScalarArray, StructDesc, StructValue, Value};

/// True for the `enum_t` shape: an `index` and a `choices` member.
fn is_enum(s: &StructDesc) -> bool {
    s.member("index").is_some() && s.member("choices").is_some()
}

/// Split array text into its elements (brackets, commas and whitespace separate; quotes go).
fn split_array_text(text: &str) -> Vec<String> {
    let t = text.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    t.split(|c: char| c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_matches('"').to_owned())
        .collect()
}

/// The index an enumeration should take for `value`: a choice name, else a number.
fn enum_index(current: &StructValue, path: &str, value: Value) -> Result<Value, String> {
    if let Value::String(text) = &value {
        let choices = current.get(&format!("{path}.choices"));
        if let Some(Value::Array(ScalarArray::String(choices))) = choices {
            if let Some(i) = choices.iter().position(|c| c == text.trim()) {
                return Ok(Value::I32(i as i32));
            }
            if text.trim().parse::<i64>().is_err() {
                return Err(format!(
                    "'{text}' is not one of the choices of '{path}' ({})",
                    choices.join(", ")
                ));
            }
        }
    }
    Ok(value)
}

/// Apply `fields` to a copy of `current` (a value of the put type) and mark what changed.
pub fn build_put(
    current: &StructValue,
    fields: &[(String, Value)],
) -> Result<(BitSet, StructValue), String> {
    let mut value = current.clone();
    let mut changed = BitSet::new();
    for (path, v) in fields {
        let desc = value
            .field_desc(path)
            .ok_or_else(|| format!("no field '{path}' in {}", current.id()))?;
        let (target, v) = match &desc {
            FieldDesc::Struct(s) if is_enum(s) => (
                format!("{path}.index"),
                enum_index(current, path, v.clone())?,
            ),
            FieldDesc::ScalarArray(..) => match v {
                Value::String(text) => (
                    path.clone(),
                    Value::Array(ScalarArray::String(split_array_text(text))),
                ),
                other => (path.clone(), other.clone()),
            },
            _ => (path.clone(), v.clone()),
        };
        value
            .set(&target, v)
            .map_err(|e| format!("field '{target}': {e}"))?;
        let bit = current
            .desc()
            .bit_of(&target)
            .ok_or_else(|| format!("no field '{target}'"))?;
        changed.set(bit);
    }
    Ok((changed, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::{PodArray, ScalarType};
    use std::sync::Arc;

    fn ntenum() -> StructValue {
        let e = StructDesc::builder("enum_t")
            .scalar("index", ScalarType::I32)
            .array("choices", ScalarType::String)
            .build();
        let d = StructDesc::builder("epics:nt/NTEnum:1.0")
            .structure("value", e)
            .array("arr", ScalarType::F64)
            .build();
        let mut v = StructValue::new(Arc::new(d));
        v.set(
            "value.choices",
            Value::Array(ScalarArray::String(vec![
                "A".into(),
                "B".into(),
                "C".into(),
            ])),
        )
        .unwrap();
        v
    }

    #[test]
    fn enum_takes_a_choice_name_or_an_index() {
        let cur = ntenum();
        let (changed, v) = build_put(&cur, &[("value".into(), "C".into())]).unwrap();
        assert_eq!(v.get("value.index"), Some(&Value::I32(2)));
        assert_eq!(changed.iter().collect::<Vec<_>>(), vec![2]);
        let (_, v) = build_put(&cur, &[("value".into(), "1".into())]).unwrap();
        assert_eq!(v.get("value.index"), Some(&Value::I32(1)));
        assert!(build_put(&cur, &[("value".into(), "Z".into())]).is_err());
    }

    #[test]
    fn arrays_parse_from_text() {
        let (_, v) = build_put(&ntenum(), &[("arr".into(), "[1, 2.5,3]".into())]).unwrap();
        assert_eq!(
            v.get("arr"),
            Some(&Value::Array(ScalarArray::F64(PodArray::from_vec(vec![
                1.0, 2.5, 3.0
            ]))))
        );
        assert!(build_put(&ntenum(), &[("nope".into(), "1".into())]).is_err());
    }
}
