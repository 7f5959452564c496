//! BitSet: which fields of a structure a message carries (changed) or lost (overrun).

use crate::error::{DecodeResult, EncodeError};
use crate::wire::{ByteOrder, Reader, Writer};

/// A growable set of bit indices, serialized as a Size byte count then the bytes, whole 64-bit
/// words in the message's byte order and the tail byte by byte.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// The empty set.
    pub fn new() -> Self {
        BitSet::default()
    }

    /// A set holding only `bit`.
    pub fn with(bit: usize) -> Self {
        let mut s = BitSet::new();
        s.set(bit);
        s
    }

    /// Add `bit`.
    pub fn set(&mut self, bit: usize) {
        let word = bit / 64;
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (bit % 64);
    }

    /// Remove `bit`.
    pub fn clear(&mut self, bit: usize) {
        if let Some(w) = self.words.get_mut(bit / 64) {
            *w &= !(1 << (bit % 64));
        }
    }

    /// Remove every bit.
    pub fn clear_all(&mut self) {
        self.words.clear();
    }

    /// True when `bit` is in the set.
    pub fn get(&self, bit: usize) -> bool {
        self.words
            .get(bit / 64)
            .is_some_and(|w| w & (1 << (bit % 64)) != 0)
    }

    /// True when no bit is set.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    /// One past the highest set bit (0 when empty).
    pub fn len(&self) -> usize {
        for (i, &w) in self.words.iter().enumerate().rev() {
            if w != 0 {
                return i * 64 + 64 - w.leading_zeros() as usize;
            }
        }
        0
    }

    /// True when any bit in `from..to` is set.
    pub fn any_in(&self, from: usize, to: usize) -> bool {
        (from..to.min(self.len())).any(|b| self.get(b))
    }

    /// The set bits in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i * 64 + b)
        })
    }

    /// Add every bit of `other`.
    pub fn union_with(&mut self, other: &BitSet) {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// Decode from the wire.
    pub fn decode(r: &mut Reader) -> DecodeResult<Self> {
        let nbytes = r.size()?;
        r.check_count("bitset length", nbytes, 1)?;
        let mut words = Vec::with_capacity(nbytes.div_ceil(8));
        for _ in 0..nbytes / 8 {
            words.push(r.u64()?);
        }
        let tail = nbytes % 8;
        if tail > 0 {
            let mut w = 0u64;
            for i in 0..tail {
                w |= (r.u8()? as u64) << (8 * i);
            }
            words.push(w);
        }
        Ok(BitSet { words })
    }

    /// Encode with the fewest bytes that hold the highest set bit.
    pub fn encode(&self, w: &mut Writer) -> Result<(), EncodeError> {
        let nbytes = self.len().div_ceil(8);
        w.size(nbytes)?;
        for (i, &word) in self.words.iter().enumerate() {
            let start = i * 8;
            if start >= nbytes {
                break;
            }
            if start + 8 <= nbytes {
                w.u64(word);
            } else {
                for b in 0..nbytes - start {
                    w.u8((word >> (8 * b)) as u8);
                }
            }
        }
        Ok(())
    }

    /// Encode into a standalone buffer (for tests and golden vectors).
    pub fn to_bytes(&self, order: ByteOrder) -> Vec<u8> {
        let mut w = Writer::new(order);
        self.encode(&mut w)
            .expect("a bitset length always fits a Size");
        w.finish_contiguous().to_vec()
    }
}

impl FromIterator<usize> for BitSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut s = BitSet::new();
        for b in iter {
            s.set(b);
        }
        s
    }
}
