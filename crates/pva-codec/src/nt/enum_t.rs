//! `enum_t`: an index into a list of choices.

use std::sync::{Arc, OnceLock};

use super::{i32_member, make, strings_member};
use crate::array::ScalarArray;
use crate::types::{ScalarType, StructDesc};
use crate::value::{StructValue, Value};

/// An enumerated value: the selected index and the choices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnumValue {
    /// Selected index.
    pub index: i32,
    /// The names of the choices.
    pub choices: Vec<String>,
}

impl EnumValue {
    /// Choice `index` of `choices`.
    pub fn new(index: i32, choices: impl IntoIterator<Item = impl Into<String>>) -> Self {
        EnumValue {
            index,
            choices: choices.into_iter().map(Into::into).collect(),
        }
    }

    /// The name of the selected choice, if the index is in range.
    pub fn selected(&self) -> Option<&str> {
        usize::try_from(self.index)
            .ok()
            .and_then(|i| self.choices.get(i))
            .map(String::as_str)
    }

    /// The `enum_t` structure type (shared).
    pub fn desc() -> Arc<StructDesc> {
        static DESC: OnceLock<Arc<StructDesc>> = OnceLock::new();
        DESC.get_or_init(|| {
            Arc::new(
                StructDesc::builder("enum_t")
                    .scalar("index", ScalarType::I32)
                    .array("choices", ScalarType::String)
                    .build(),
            )
        })
        .clone()
    }

    /// This value as an `enum_t` structure.
    pub fn to_value(&self) -> StructValue {
        make(
            &EnumValue::desc(),
            vec![
                Value::I32(self.index),
                Value::Array(ScalarArray::String(self.choices.clone())),
            ],
        )
    }

    /// Read an `enum_t` by member name; missing members read as 0 and no choices.
    pub fn from_value(v: &StructValue) -> EnumValue {
        EnumValue {
            index: i32_member(v, "index").unwrap_or_default(),
            choices: strings_member(v, "choices").unwrap_or_default(),
        }
    }
}
