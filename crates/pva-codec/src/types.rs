//! Introspection: the pvData type system (field descriptions) and its wire form, including the
//! per-connection type cache (0xFD define, 0xFE reference) and a nesting limit.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{DecodeError, DecodeResult, EncodeError};
use crate::wire::{Reader, Writer};

/// The scalar kinds of pvData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarType {
    /// `boolean`
    Bool,
    /// `byte` (i8)
    I8,
    /// `short` (i16)
    I16,
    /// `int` (i32)
    I32,
    /// `long` (i64)
    I64,
    /// `ubyte` (u8)
    U8,
    /// `ushort` (u16)
    U16,
    /// `uint` (u32)
    U32,
    /// `ulong` (u64)
    U64,
    /// `float` (f32)
    F32,
    /// `double` (f64)
    F64,
    /// `string`
    String,
}

impl ScalarType {
    /// Every scalar type, in type-code order.
    pub const ALL: [ScalarType; 12] = [
        ScalarType::Bool,
        ScalarType::I8,
        ScalarType::I16,
        ScalarType::I32,
        ScalarType::I64,
        ScalarType::U8,
        ScalarType::U16,
        ScalarType::U32,
        ScalarType::U64,
        ScalarType::F32,
        ScalarType::F64,
        ScalarType::String,
    ];

    /// The type code byte of this scalar (arrays add 0x08).
    pub const fn code(self) -> u8 {
        match self {
            ScalarType::Bool => 0x00,
            ScalarType::I8 => 0x20,
            ScalarType::I16 => 0x21,
            ScalarType::I32 => 0x22,
            ScalarType::I64 => 0x23,
            ScalarType::U8 => 0x24,
            ScalarType::U16 => 0x25,
            ScalarType::U32 => 0x26,
            ScalarType::U64 => 0x27,
            ScalarType::F32 => 0x42,
            ScalarType::F64 => 0x43,
            ScalarType::String => 0x60,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        ScalarType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Bytes one element takes on the wire (strings: the minimum, one Size byte).
    pub const fn wire_size(self) -> usize {
        match self {
            ScalarType::Bool | ScalarType::I8 | ScalarType::U8 | ScalarType::String => 1,
            ScalarType::I16 | ScalarType::U16 => 2,
            ScalarType::I32 | ScalarType::U32 | ScalarType::F32 => 4,
            ScalarType::I64 | ScalarType::U64 | ScalarType::F64 => 8,
        }
    }

    /// The pvData name (`double`, `ubyte`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            ScalarType::Bool => "boolean",
            ScalarType::I8 => "byte",
            ScalarType::I16 => "short",
            ScalarType::I32 => "int",
            ScalarType::I64 => "long",
            ScalarType::U8 => "ubyte",
            ScalarType::U16 => "ushort",
            ScalarType::U32 => "uint",
            ScalarType::U64 => "ulong",
            ScalarType::F32 => "float",
            ScalarType::F64 => "double",
            ScalarType::String => "string",
        }
    }

    /// Parse a pvData or short name (`double`, `f64`, `int`, `i32`, `bool`, ...).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "boolean" | "bool" => ScalarType::Bool,
            "byte" | "int8" | "i8" => ScalarType::I8,
            "short" | "int16" | "i16" => ScalarType::I16,
            "int" | "int32" | "i32" => ScalarType::I32,
            "long" | "int64" | "i64" => ScalarType::I64,
            "ubyte" | "uint8" | "u8" => ScalarType::U8,
            "ushort" | "uint16" | "u16" => ScalarType::U16,
            "uint" | "uint32" | "u32" => ScalarType::U32,
            "ulong" | "uint64" | "u64" => ScalarType::U64,
            "float" | "float32" | "f32" => ScalarType::F32,
            "double" | "float64" | "f64" => ScalarType::F64,
            "string" | "str" => ScalarType::String,
            _ => return None,
        })
    }
}

/// How an array's length is constrained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArrayKind {
    /// Any length; the count travels with the value.
    Variable,
    /// At most this many elements; the count travels with the value.
    Bounded(u32),
    /// Exactly this many elements; no count on the wire.
    Fixed(u32),
}

/// The description of one field: what a value of it looks like.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldDesc {
    /// A single scalar.
    Scalar(ScalarType),
    /// A string of at most this many bytes.
    BoundedString(u32),
    /// An array of scalars.
    ScalarArray(ScalarType, ArrayKind),
    /// A structure.
    Struct(Arc<StructDesc>),
    /// An array of structures of one type.
    StructArray(Arc<StructDesc>),
    /// A union with fixed members.
    Union(Arc<UnionDesc>),
    /// An array of unions of one type.
    UnionArray(Arc<UnionDesc>),
    /// A variant union: any type.
    Any,
    /// An array of variant unions.
    AnyArray,
}

/// One named member of a structure or union.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// Field name.
    pub name: String,
    /// Field type.
    pub desc: FieldDesc,
}

/// A structure type: an id (e.g. `epics:nt/NTScalar:1.0`) and ordered fields. Also knows how
/// many BitSet bits its values span, so partial encode/decode need not recount.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StructDesc {
    id: String,
    members: Vec<Member>,
    /// BitSet offset of each member relative to the structure's own bit.
    offsets: Vec<usize>,
    bits: usize,
}

impl StructDesc {
    /// A structure with the given id and members.
    pub fn new(id: impl Into<String>, members: Vec<Member>) -> Self {
        let mut offsets = Vec::with_capacity(members.len());
        let mut next = 1;
        for m in &members {
            offsets.push(next);
            next += m.desc.bit_count();
        }
        StructDesc {
            id: id.into(),
            members,
            offsets,
            bits: next,
        }
    }

    /// Start building a structure.
    pub fn builder(id: impl Into<String>) -> StructBuilder {
        StructBuilder {
            id: id.into(),
            members: Vec::new(),
        }
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// BitSet offset of member `index`, relative to this structure's own bit.
    pub fn bit_offset(&self, index: usize) -> Option<usize> {
        self.offsets.get(index).copied()
    }

    /// The members with their BitSet offsets relative to this structure's own bit.
    pub fn members_with_offsets(&self) -> impl Iterator<Item = (&Member, usize)> {
        self.members.iter().zip(self.offsets.iter().copied())
    }

    /// Number of BitSet bits a value of this structure spans, its own bit included.
    pub fn bit_count(&self) -> usize {
        self.bits
    }

    /// Whether a value of this structure can hold an array (see [`FieldDesc::holds_arrays`]).
    pub fn holds_arrays(&self) -> bool {
        self.members.iter().any(|m| m.desc.holds_arrays())
    }

    /// The BitSet bit of a dotted field path (`alarm.severity`), relative to this structure.
    pub fn bit_of(&self, path: &str) -> Option<usize> {
        let mut desc = self;
        let mut base = 0;
        let mut parts = path.split('.').peekable();
        while let Some(name) = parts.next() {
            let i = desc.index_of(name)?;
            base += desc.offsets[i];
            if parts.peek().is_some() {
                match &desc.members[i].desc {
                    FieldDesc::Struct(s) => desc = s,
                    _ => return None,
                }
            }
        }
        Some(base)
    }
}

/// Builds a [`StructDesc`] field by field.
#[derive(Debug)]
pub struct StructBuilder {
    id: String,
    members: Vec<Member>,
}

impl StructBuilder {
    /// Add a field.
    pub fn field(mut self, name: impl Into<String>, desc: FieldDesc) -> Self {
        self.members.push(Member {
            name: name.into(),
            desc,
        });
        self
    }

    /// Add a scalar field.
    pub fn scalar(self, name: impl Into<String>, t: ScalarType) -> Self {
        self.field(name, FieldDesc::Scalar(t))
    }

    /// Add a variable-length scalar array field.
    pub fn array(self, name: impl Into<String>, t: ScalarType) -> Self {
        self.field(name, FieldDesc::ScalarArray(t, ArrayKind::Variable))
    }

    /// Add a structure field.
    pub fn structure(self, name: impl Into<String>, s: StructDesc) -> Self {
        self.field(name, FieldDesc::Struct(Arc::new(s)))
    }

    /// Finish.
    pub fn build(self) -> StructDesc {
        StructDesc::new(self.id, self.members)
    }
}

/// A union type: an id and its possible members.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UnionDesc {
    id: String,
    members: Vec<Member>,
}

impl UnionDesc {
    /// A union with the given id and members.
    pub fn new(id: impl Into<String>, members: Vec<Member>) -> Self {
        UnionDesc {
            id: id.into(),
            members,
        }
    }
}

/// The accessors structures and unions share, written once: the type id and the members by
/// position and by name.
macro_rules! id_and_members {
    ($($t:ty),*) => {$(
        impl $t {
            /// The type id, possibly empty.
            pub fn id(&self) -> &str {
                &self.id
            }

            /// The members in wire order (a union's in selector order).
            pub fn members(&self) -> &[Member] {
                &self.members
            }

            /// Index of the member called `name` (a union's selector).
            pub fn index_of(&self, name: &str) -> Option<usize> {
                self.members.iter().position(|m| m.name == name)
            }
        }
    )*};
}
id_and_members!(StructDesc, UnionDesc);

impl FieldDesc {
    /// Number of BitSet bits a value of this type spans.
    pub fn bit_count(&self) -> usize {
        match self {
            FieldDesc::Struct(s) => s.bit_count(),
            _ => 1,
        }
    }

    /// Whether a value of this type can hold an array (itself, in a member, or in a union's
    /// member), so that the encoded size of one value says little about the next one's.
    pub fn holds_arrays(&self) -> bool {
        match self {
            FieldDesc::Scalar(_) | FieldDesc::BoundedString(_) => false,
            FieldDesc::Struct(s) => s.holds_arrays(),
            FieldDesc::Union(u) => u.members().iter().any(|m| m.desc.holds_arrays()),
            FieldDesc::ScalarArray(..)
            | FieldDesc::StructArray(_)
            | FieldDesc::UnionArray(_)
            | FieldDesc::Any
            | FieldDesc::AnyArray => true,
        }
    }

    /// The structure description, if this is a structure.
    pub fn as_struct(&self) -> Option<&Arc<StructDesc>> {
        match self {
            FieldDesc::Struct(s) => Some(s),
            _ => None,
        }
    }

    /// The type id of a structure or union, else the pvData type name.
    pub fn type_name(&self) -> String {
        match self {
            FieldDesc::Scalar(t) => t.name().into(),
            FieldDesc::BoundedString(n) => format!("string({n})"),
            FieldDesc::ScalarArray(t, _) => format!("{}[]", t.name()),
            FieldDesc::Struct(s) => s.id().into(),
            FieldDesc::StructArray(s) => format!("{}[]", s.id()),
            FieldDesc::Union(u) => u.id().into(),
            FieldDesc::UnionArray(u) => format!("{}[]", u.id()),
            FieldDesc::Any => "any".into(),
            FieldDesc::AnyArray => "any[]".into(),
        }
    }
}

/// Limits applied while decoding, with defaults that match pvxs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of types and values accepted (pvxs: 20).
    pub max_depth: usize,
    /// Largest message payload accepted, in bytes, after reassembly of segments.
    pub max_message_size: usize,
    /// Most entries in a connection's type cache.
    pub max_cached_types: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 20,
            max_message_size: 64 * 1024 * 1024,
            max_cached_types: 1024,
        }
    }
}

/// Per-connection, per-direction introspection cache: ids defined by 0xFD and used by 0xFE.
#[derive(Debug, Clone, Default)]
pub struct TypeCache {
    by_id: HashMap<u16, FieldDesc>,
    /// Ids this side has assigned when encoding with the cache enabled.
    by_type: HashMap<FieldDesc, u16>,
}

impl TypeCache {
    /// An empty cache.
    pub fn new() -> Self {
        TypeCache::default()
    }

    /// Number of cached types.
    pub fn len(&self) -> usize {
        self.by_id.len().max(self.by_type.len())
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decodes field descriptions with a connection's type cache and limits.
pub struct TypeDecoder<'a> {
    /// The connection's receive-side cache.
    pub cache: &'a mut TypeCache,
    /// Limits in force.
    pub limits: &'a Limits,
}

const NULL_TYPE: u8 = 0xFF;
const ONLY_ID: u8 = 0xFE;
const FULL_WITH_ID: u8 = 0xFD;
const FULL_TAGGED_ID: u8 = 0xFC;

impl TypeDecoder<'_> {
    /// Decode a field description; `None` is the null type (0xFF).
    pub fn decode(&mut self, r: &mut Reader) -> DecodeResult<Option<FieldDesc>> {
        self.decode_at(r, 0)
    }

    fn decode_at(&mut self, r: &mut Reader, depth: usize) -> DecodeResult<Option<FieldDesc>> {
        if depth > self.limits.max_depth {
            return Err(DecodeError::TooDeep(self.limits.max_depth));
        }
        let code = r.u8()?;
        match code {
            NULL_TYPE => Ok(None),
            ONLY_ID => {
                let id = r.u16()?;
                self.cache
                    .by_id
                    .get(&id)
                    .cloned()
                    .map(Some)
                    .ok_or(DecodeError::UndefinedTypeId(id))
            }
            FULL_WITH_ID => {
                let id = r.u16()?;
                let desc = self
                    .decode_at(r, depth + 1)?
                    .ok_or_else(|| invalid("type cache entry", "defines the null type"))?;
                if !self.cache.by_id.contains_key(&id)
                    && self.cache.by_id.len() >= self.limits.max_cached_types
                {
                    return Err(invalid("type cache", "more entries than the limit"));
                }
                self.cache.by_id.insert(id, desc.clone());
                Ok(Some(desc))
            }
            FULL_TAGGED_ID => {
                // Tagged ids were never used by any implementation; skip the tag and decode.
                r.u32()?;
                self.decode_at(r, depth + 1)
            }
            _ => self.decode_full(code, r, depth).map(Some),
        }
    }

    fn decode_full(&mut self, code: u8, r: &mut Reader, depth: usize) -> DecodeResult<FieldDesc> {
        let kind = code & 0xE0;
        let array = code & 0x18;
        let detail = code & 0x07;
        if kind == 0x80 {
            return match (array, detail) {
                (0x00, 0) => Ok(FieldDesc::Struct(Arc::new(self.struct_body(r, depth)?))),
                (0x00, 1) => Ok(FieldDesc::Union(Arc::new(self.union_body(r, depth)?))),
                (0x00, 2) => Ok(FieldDesc::Any),
                (0x00, 3) => {
                    let bound = r.size()?;
                    Ok(FieldDesc::BoundedString(to_u32(bound)?))
                }
                (0x08, 0) => match self.decode_at(r, depth + 1)? {
                    Some(FieldDesc::Struct(s)) => Ok(FieldDesc::StructArray(s)),
                    _ => Err(invalid("structure array", "element is not a structure")),
                },
                (0x08, 1) => match self.decode_at(r, depth + 1)? {
                    Some(FieldDesc::Union(u)) => Ok(FieldDesc::UnionArray(u)),
                    _ => Err(invalid("union array", "element is not a union")),
                },
                (0x08, 2) => Ok(FieldDesc::AnyArray),
                _ => Err(DecodeError::UnknownTypeCode(code)),
            };
        }
        let scalar =
            ScalarType::from_code(code & !0x18).ok_or(DecodeError::UnknownTypeCode(code))?;
        Ok(match array {
            0x00 => FieldDesc::Scalar(scalar),
            0x08 => FieldDesc::ScalarArray(scalar, ArrayKind::Variable),
            0x10 => FieldDesc::ScalarArray(scalar, ArrayKind::Bounded(to_u32(r.size()?)?)),
            _ => FieldDesc::ScalarArray(scalar, ArrayKind::Fixed(to_u32(r.size()?)?)),
        })
    }

    fn members(&mut self, r: &mut Reader, depth: usize) -> DecodeResult<(String, Vec<Member>)> {
        let id = r.string()?;
        let n = r.size()?;
        // Each member needs at least a name Size byte and a type code byte.
        r.check_count("member count", n, 2)?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.string()?;
            let desc = self
                .decode_at(r, depth + 1)?
                .ok_or_else(|| invalid("member", "null type"))?;
            members.push(Member { name, desc });
        }
        Ok((id, members))
    }

    fn struct_body(&mut self, r: &mut Reader, depth: usize) -> DecodeResult<StructDesc> {
        let (id, members) = self.members(r, depth)?;
        Ok(StructDesc::new(id, members))
    }

    fn union_body(&mut self, r: &mut Reader, depth: usize) -> DecodeResult<UnionDesc> {
        let (id, members) = self.members(r, depth)?;
        Ok(UnionDesc::new(id, members))
    }
}

fn to_u32(n: usize) -> DecodeResult<u32> {
    u32::try_from(n).map_err(|_| DecodeError::InvalidSize("bound beyond 32 bits"))
}

fn invalid(what: &'static str, detail: &str) -> DecodeError {
    DecodeError::Invalid {
        what,
        detail: detail.into(),
    }
}

/// Encodes field descriptions, optionally through a send-side type cache.
pub struct TypeEncoder<'a> {
    /// The send-side cache; `None` always sends full descriptions (as pvxs does).
    pub cache: Option<&'a mut TypeCache>,
}

impl TypeEncoder<'_> {
    /// Encode `desc`, or the null type for `None`.
    pub fn encode(&mut self, desc: Option<&FieldDesc>, w: &mut Writer) -> Result<(), EncodeError> {
        match desc {
            None => {
                w.u8(NULL_TYPE);
                Ok(())
            }
            Some(d) => self.encode_desc(d, w),
        }
    }

    /// Encode a field description without the null option.
    pub fn encode_desc(&mut self, desc: &FieldDesc, w: &mut Writer) -> Result<(), EncodeError> {
        let cacheable = matches!(desc, FieldDesc::Struct(_) | FieldDesc::Union(_));
        if let (true, Some(cache)) = (cacheable, self.cache.as_deref_mut()) {
            if let Some(&id) = cache.by_type.get(desc) {
                w.u8(ONLY_ID);
                w.u16(id);
                return Ok(());
            }
            if cache.by_type.len() < u16::MAX as usize {
                let id = cache.by_type.len() as u16;
                cache.by_type.insert(desc.clone(), id);
                w.u8(FULL_WITH_ID);
                w.u16(id);
            }
        }
        self.encode_full(desc, w)
    }

    fn encode_full(&mut self, desc: &FieldDesc, w: &mut Writer) -> Result<(), EncodeError> {
        match desc {
            FieldDesc::Scalar(t) => w.u8(t.code()),
            FieldDesc::BoundedString(n) => {
                w.u8(0x83);
                w.size(*n as usize)?;
            }
            FieldDesc::ScalarArray(t, kind) => match kind {
                ArrayKind::Variable => w.u8(t.code() | 0x08),
                ArrayKind::Bounded(n) => {
                    w.u8(t.code() | 0x10);
                    w.size(*n as usize)?;
                }
                ArrayKind::Fixed(n) => {
                    w.u8(t.code() | 0x18);
                    w.size(*n as usize)?;
                }
            },
            FieldDesc::Struct(s) => {
                w.u8(0x80);
                self.members(s.id(), s.members(), w)?;
            }
            FieldDesc::Union(u) => {
                w.u8(0x81);
                self.members(u.id(), u.members(), w)?;
            }
            FieldDesc::StructArray(s) => {
                w.u8(0x88);
                self.encode_desc(&FieldDesc::Struct(s.clone()), w)?;
            }
            FieldDesc::UnionArray(u) => {
                w.u8(0x89);
                self.encode_desc(&FieldDesc::Union(u.clone()), w)?;
            }
            FieldDesc::Any => w.u8(0x82),
            FieldDesc::AnyArray => w.u8(0x8A),
        }
        Ok(())
    }

    fn members(&mut self, id: &str, members: &[Member], w: &mut Writer) -> Result<(), EncodeError> {
        w.string(id)?;
        w.size(members.len())?;
        for m in members {
            w.string(&m.name)?;
            self.encode_desc(&m.desc, w)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ByteOrder;
    use bytes::Bytes;

    fn decode(bytes: &[u8]) -> DecodeResult<Option<FieldDesc>> {
        let mut cache = TypeCache::new();
        let limits = Limits::default();
        let mut r = Reader::new(Bytes::copy_from_slice(bytes), ByteOrder::Little);
        TypeDecoder {
            cache: &mut cache,
            limits: &limits,
        }
        .decode(&mut r)
    }

    #[test]
    fn bit_offsets_follow_depth_first_order() {
        let alarm = StructDesc::builder("alarm_t")
            .scalar("severity", ScalarType::I32)
            .scalar("status", ScalarType::I32)
            .scalar("message", ScalarType::String)
            .build();
        let s = StructDesc::builder("epics:nt/NTScalar:1.0")
            .scalar("value", ScalarType::F64)
            .structure("alarm", alarm)
            .scalar("extra", ScalarType::I8)
            .build();
        assert_eq!(s.bit_count(), 7);
        assert_eq!(s.bit_of("value"), Some(1));
        assert_eq!(s.bit_of("alarm"), Some(2));
        assert_eq!(s.bit_of("alarm.message"), Some(5));
        assert_eq!(s.bit_of("extra"), Some(6));
        assert_eq!(s.bit_of("nope"), None);
    }

    #[test]
    fn arrays_are_found_in_members_and_union_members() {
        use crate::nt::{NtNdArray, NtScalar};
        assert!(!NtScalar::new(ScalarType::F64)
            .with_display()
            .desc()
            .holds_arrays());
        assert!(NtScalar::array(ScalarType::U8).desc().holds_arrays());
        assert!(NtNdArray::new().desc().holds_arrays());
        let only_scalars = UnionDesc::new("", vec![member("a", FieldDesc::Scalar(ScalarType::I8))]);
        let nested = StructDesc::builder("")
            .structure(
                "inner",
                StructDesc::builder("").array("a", ScalarType::I8).build(),
            )
            .build();
        assert!(!FieldDesc::Union(Arc::new(only_scalars)).holds_arrays());
        assert!(FieldDesc::Struct(Arc::new(nested)).holds_arrays());
        assert!(
            FieldDesc::Any.holds_arrays(),
            "a variant union can hold anything"
        );
    }

    fn member(name: &str, desc: FieldDesc) -> Member {
        Member {
            name: name.into(),
            desc,
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        // 100 nested structure arrays: 0x88 repeated.
        let bytes = vec![0x88u8; 100];
        assert_eq!(decode(&bytes), Err(DecodeError::TooDeep(20)));
    }

    #[test]
    fn undefined_cache_reference_is_an_error() {
        assert_eq!(
            decode(&[0xFE, 0x05, 0x00]),
            Err(DecodeError::UndefinedTypeId(5))
        );
    }

    #[test]
    fn huge_member_count_is_refused_before_allocation() {
        // struct, empty id, member count 0x7ffffffe
        let bytes = [0x80, 0x00, 0xFE, 0xFE, 0xFF, 0xFF, 0x7F];
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::SizeExceedsInput { .. })
        ));
    }
}
