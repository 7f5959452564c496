//! Scalar arrays backed by `Bytes`: decoding takes a slice of the received message instead of
//! copying it, and encoding hands the same `Bytes` to a vectored write.

use std::borrow::Cow;
use std::marker::PhantomData;

use bytes::Bytes;

use crate::types::ScalarType;
use crate::wire::ByteOrder;

/// A fixed-width element type that can live in a [`PodArray`].
pub trait Element: bytemuck::Pod + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// The pvData scalar type of this element.
    const SCALAR: ScalarType;
    /// Read one element from exactly `size_of::<Self>()` bytes in `order`.
    fn read(raw: &[u8], order: ByteOrder) -> Self;
    /// Reverse the byte order of one element.
    fn swap(self) -> Self;
}

macro_rules! element {
    ($t:ty, $s:expr) => {
        impl Element for $t {
            const SCALAR: ScalarType = $s;
            fn read(raw: &[u8], order: ByteOrder) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(raw);
                match order {
                    ByteOrder::Little => <$t>::from_le_bytes(a),
                    ByteOrder::Big => <$t>::from_be_bytes(a),
                }
            }
            fn swap(self) -> Self {
                SwapBytes::swapped(self)
            }
        }
    };
}

/// Byte swapping for integers and floats alike.
trait SwapBytes: Sized {
    fn swapped(self) -> Self;
}

macro_rules! swap_int {
    ($($t:ty),*) => {$(
        impl SwapBytes for $t {
            fn swapped(self) -> Self { self.swap_bytes() }
        }
    )*};
}
swap_int!(i8, i16, i32, i64, u8, u16, u32, u64);

impl SwapBytes for f32 {
    fn swapped(self) -> Self {
        f32::from_bits(self.to_bits().swap_bytes())
    }
}

impl SwapBytes for f64 {
    fn swapped(self) -> Self {
        f64::from_bits(self.to_bits().swap_bytes())
    }
}

element!(i8, ScalarType::I8);
element!(i16, ScalarType::I16);
element!(i32, ScalarType::I32);
element!(i64, ScalarType::I64);
element!(u8, ScalarType::U8);
element!(u16, ScalarType::U16);
element!(u32, ScalarType::U32);
element!(u64, ScalarType::U64);
element!(f32, ScalarType::F32);
element!(f64, ScalarType::F64);

/// An array of fixed-width elements stored as raw bytes in a known byte order. Clones share the
/// bytes. Reading is zero-copy when the order is native and the bytes are aligned.
#[derive(Clone)]
pub struct PodArray<T: Element> {
    bytes: Bytes,
    order: ByteOrder,
    _t: PhantomData<T>,
}

/// Lets a `Vec<T>` back a `Bytes` without copying it.
struct VecOwner<T: Element>(Vec<T>);

impl<T: Element> AsRef<[u8]> for VecOwner<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

impl<T: Element> PodArray<T> {
    /// Wrap raw bytes holding elements in `order`. Returns `None` when the length is not a
    /// whole number of elements.
    pub fn from_bytes(bytes: Bytes, order: ByteOrder) -> Option<Self> {
        bytes
            .len()
            .is_multiple_of(std::mem::size_of::<T>())
            .then_some(PodArray {
                bytes,
                order,
                _t: PhantomData,
            })
    }

    /// Take ownership of a vector without copying it.
    pub fn from_vec(v: Vec<T>) -> Self {
        PodArray {
            bytes: Bytes::from_owner(VecOwner(v)),
            order: ByteOrder::native(),
            _t: PhantomData,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.bytes.len() / std::mem::size_of::<T>()
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The raw bytes, in [`PodArray::byte_order`].
    pub fn raw(&self) -> &Bytes {
        &self.bytes
    }

    /// The byte order of the raw bytes.
    pub fn byte_order(&self) -> ByteOrder {
        self.order
    }

    /// A borrowed typed view when the bytes are native-order and aligned; `None` otherwise.
    pub fn as_slice(&self) -> Option<&[T]> {
        if self.order.is_native() {
            bytemuck::try_cast_slice(&self.bytes).ok()
        } else {
            None
        }
    }

    /// The elements as a slice: borrowed when possible, else converted into a new vector.
    pub fn to_cow(&self) -> Cow<'_, [T]> {
        match self.as_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(self.iter().collect()),
        }
    }

    /// Element `i`, if in range.
    pub fn get(&self, i: usize) -> Option<T> {
        let w = std::mem::size_of::<T>();
        self.bytes
            .get(i * w..i * w + w)
            .map(|raw| T::read(raw, self.order))
    }

    /// Iterate the elements (no allocation).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.bytes
            .chunks_exact(std::mem::size_of::<T>())
            .map(|raw| T::read(raw, self.order))
    }

    /// Copy into a vector.
    pub fn to_vec(&self) -> Vec<T> {
        self.to_cow().into_owned()
    }

    /// The bytes in `order`: shared when already in it, swapped into a new buffer otherwise.
    pub fn bytes_in(&self, order: ByteOrder) -> Bytes {
        if order == self.order || std::mem::size_of::<T>() == 1 {
            return self.bytes.clone();
        }
        let swapped: Vec<T> = self.iter().map(|v| convert_order(v, order)).collect();
        Bytes::from_owner(VecOwner(swapped))
    }
}

/// Put a native value into `order`'s representation.
fn convert_order<T: Element>(v: T, order: ByteOrder) -> T {
    if order.is_native() {
        v
    } else {
        v.swap()
    }
}

impl<T: Element> PartialEq for PodArray<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl<T: Element> std::fmt::Debug for PodArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const SHOWN: usize = 16;
        let mut l = f.debug_list();
        l.entries(self.iter().take(SHOWN));
        if self.len() > SHOWN {
            l.entry(&format_args!("... {} elements", self.len()));
        }
        l.finish()
    }
}

impl<T: Element> From<Vec<T>> for PodArray<T> {
    fn from(v: Vec<T>) -> Self {
        PodArray::from_vec(v)
    }
}

/// A scalar array of any element type.
#[derive(Clone, Debug, PartialEq)]
pub enum ScalarArray {
    /// `boolean[]`
    Bool(Vec<bool>),
    /// `byte[]`
    I8(PodArray<i8>),
    /// `short[]`
    I16(PodArray<i16>),
    /// `int[]`
    I32(PodArray<i32>),
    /// `long[]`
    I64(PodArray<i64>),
    /// `ubyte[]`
    U8(PodArray<u8>),
    /// `ushort[]`
    U16(PodArray<u16>),
    /// `uint[]`
    U32(PodArray<u32>),
    /// `ulong[]`
    U64(PodArray<u64>),
    /// `float[]`
    F32(PodArray<f32>),
    /// `double[]`
    F64(PodArray<f64>),
    /// `string[]`
    String(Vec<String>),
}

/// Apply the same expression to whichever typed array a [`ScalarArray`] holds.
macro_rules! each_pod {
    ($arr:expr, $a:ident => $body:expr, bool $b:ident => $bool_body:expr, string $s:ident => $str_body:expr) => {
        match $arr {
            ScalarArray::Bool($b) => $bool_body,
            ScalarArray::I8($a) => $body,
            ScalarArray::I16($a) => $body,
            ScalarArray::I32($a) => $body,
            ScalarArray::I64($a) => $body,
            ScalarArray::U8($a) => $body,
            ScalarArray::U16($a) => $body,
            ScalarArray::U32($a) => $body,
            ScalarArray::U64($a) => $body,
            ScalarArray::F32($a) => $body,
            ScalarArray::F64($a) => $body,
            ScalarArray::String($s) => $str_body,
        }
    };
}
pub(crate) use each_pod;

impl ScalarArray {
    /// An empty array of element type `t`.
    pub fn empty(t: ScalarType) -> Self {
        match t {
            ScalarType::Bool => ScalarArray::Bool(Vec::new()),
            ScalarType::I8 => ScalarArray::I8(PodArray::from_vec(Vec::new())),
            ScalarType::I16 => ScalarArray::I16(PodArray::from_vec(Vec::new())),
            ScalarType::I32 => ScalarArray::I32(PodArray::from_vec(Vec::new())),
            ScalarType::I64 => ScalarArray::I64(PodArray::from_vec(Vec::new())),
            ScalarType::U8 => ScalarArray::U8(PodArray::from_vec(Vec::new())),
            ScalarType::U16 => ScalarArray::U16(PodArray::from_vec(Vec::new())),
            ScalarType::U32 => ScalarArray::U32(PodArray::from_vec(Vec::new())),
            ScalarType::U64 => ScalarArray::U64(PodArray::from_vec(Vec::new())),
            ScalarType::F32 => ScalarArray::F32(PodArray::from_vec(Vec::new())),
            ScalarType::F64 => ScalarArray::F64(PodArray::from_vec(Vec::new())),
            ScalarType::String => ScalarArray::String(Vec::new()),
        }
    }

    /// Wrap raw bytes of element type `t` (not bool or string) held in `order`.
    pub fn from_raw(t: ScalarType, bytes: Bytes, order: ByteOrder) -> Option<Self> {
        Some(match t {
            ScalarType::I8 => ScalarArray::I8(PodArray::from_bytes(bytes, order)?),
            ScalarType::I16 => ScalarArray::I16(PodArray::from_bytes(bytes, order)?),
            ScalarType::I32 => ScalarArray::I32(PodArray::from_bytes(bytes, order)?),
            ScalarType::I64 => ScalarArray::I64(PodArray::from_bytes(bytes, order)?),
            ScalarType::U8 => ScalarArray::U8(PodArray::from_bytes(bytes, order)?),
            ScalarType::U16 => ScalarArray::U16(PodArray::from_bytes(bytes, order)?),
            ScalarType::U32 => ScalarArray::U32(PodArray::from_bytes(bytes, order)?),
            ScalarType::U64 => ScalarArray::U64(PodArray::from_bytes(bytes, order)?),
            ScalarType::F32 => ScalarArray::F32(PodArray::from_bytes(bytes, order)?),
            ScalarType::F64 => ScalarArray::F64(PodArray::from_bytes(bytes, order)?),
            ScalarType::Bool | ScalarType::String => return None,
        })
    }

    /// The element type.
    pub fn element_type(&self) -> ScalarType {
        each_pod!(self, a => element_of(a), bool _b => ScalarType::Bool, string _s => ScalarType::String)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_pod!(self, a => a.len(), bool b => b.len(), string s => s.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a double (strings parse; bools are 0/1), for display and statistics.
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        match self {
            ScalarArray::Bool(b) => b.get(i).map(|&v| v as u8 as f64),
            ScalarArray::I8(a) => a.get(i).map(f64::from),
            ScalarArray::I16(a) => a.get(i).map(f64::from),
            ScalarArray::I32(a) => a.get(i).map(f64::from),
            ScalarArray::I64(a) => a.get(i).map(|v| v as f64),
            ScalarArray::U8(a) => a.get(i).map(f64::from),
            ScalarArray::U16(a) => a.get(i).map(f64::from),
            ScalarArray::U32(a) => a.get(i).map(f64::from),
            ScalarArray::U64(a) => a.get(i).map(|v| v as f64),
            ScalarArray::F32(a) => a.get(i).map(f64::from),
            ScalarArray::F64(a) => a.get(i),
            ScalarArray::String(s) => s.get(i).and_then(|v| v.parse().ok()),
        }
    }

    /// Size in bytes of the element data (strings: their UTF-8 lengths).
    pub fn byte_len(&self) -> usize {
        each_pod!(self, a => a.raw().len(), bool b => b.len(), string s => s.iter().map(String::len).sum())
    }
}

fn element_of<T: Element>(_: &PodArray<T>) -> ScalarType {
    T::SCALAR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_order_reads_correctly() {
        let raw = Bytes::from_static(&[0x01, 0x02, 0x03, 0x04]);
        let be = PodArray::<u16>::from_bytes(raw.clone(), ByteOrder::Big).unwrap();
        assert_eq!(be.to_vec(), vec![0x0102, 0x0304]);
        let le = PodArray::<u16>::from_bytes(raw, ByteOrder::Little).unwrap();
        assert_eq!(le.to_vec(), vec![0x0201, 0x0403]);
        assert_eq!(be.bytes_in(ByteOrder::Little)[..], [0x02, 0x01, 0x04, 0x03]);
    }

    #[test]
    fn from_vec_does_not_copy() {
        let v: Vec<f64> = (0..1000).map(f64::from).collect();
        let ptr = v.as_ptr() as *const u8;
        let a = PodArray::from_vec(v);
        assert_eq!(a.raw().as_ptr(), ptr);
        assert_eq!(a.as_slice().unwrap()[999], 999.0);
    }

    #[test]
    fn ragged_length_is_refused() {
        assert!(
            PodArray::<u32>::from_bytes(Bytes::from_static(&[1, 2, 3]), ByteOrder::Little)
                .is_none()
        );
    }
}
