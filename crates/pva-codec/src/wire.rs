//! Wire primitives: byte order, a bounds-checked reader over `Bytes`, a writer that can splice
//! large shared buffers in without copying them, Size, strings, addresses and GUIDs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, DecodeResult, EncodeError};

/// Byte order of a message; each PVA message header says which one its payload uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ByteOrder {
    /// Least significant byte first (flag bit 7 clear).
    #[default]
    Little,
    /// Most significant byte first (flag bit 7 set).
    Big,
}

impl ByteOrder {
    /// The byte order of the machine running this code.
    pub const fn native() -> Self {
        if cfg!(target_endian = "big") {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        }
    }

    /// True when data in this order can be used by this machine without swapping.
    pub const fn is_native(self) -> bool {
        matches!(
            (self, Self::native()),
            (ByteOrder::Little, ByteOrder::Little) | (ByteOrder::Big, ByteOrder::Big)
        )
    }
}

/// Splices shared buffers at least this large into the output instead of copying them.
pub const SPLICE_THRESHOLD: usize = 4096;

/// A bounds-checked cursor over a message payload. Every read checks the remaining length first,
/// so no input can make it panic, and slices of the payload are handed out without copying.
#[derive(Debug, Clone)]
pub struct Reader {
    data: Bytes,
    pos: usize,
    order: ByteOrder,
}

macro_rules! read_num {
    ($name:ident, $t:ty) => {
        #[doc = concat!("Read a `", stringify!($t), "` in the reader's byte order.")]
        pub fn $name(&mut self) -> DecodeResult<$t> {
            let raw = self.take_array::<{ std::mem::size_of::<$t>() }>()?;
            Ok(match self.order {
                ByteOrder::Little => <$t>::from_le_bytes(raw),
                ByteOrder::Big => <$t>::from_be_bytes(raw),
            })
        }
    };
}

impl Reader {
    /// A reader over `data`, decoding numbers in `order`.
    pub fn new(data: Bytes, order: ByteOrder) -> Self {
        Reader {
            data,
            pos: 0,
            order,
        }
    }

    /// The byte order numbers are read in.
    pub fn order(&self) -> ByteOrder {
        self.order
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// True when every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Fail unless at least `n` bytes remain.
    pub fn need(&self, n: usize) -> DecodeResult<()> {
        if n > self.remaining() {
            Err(DecodeError::Truncated {
                needed: n,
                remaining: self.remaining(),
            })
        } else {
            Ok(())
        }
    }

    /// Fail unless `count` items of at least `min_each` bytes could fit in what remains.
    /// Called before allocating for a count read off the wire.
    pub fn check_count(
        &self,
        what: &'static str,
        count: usize,
        min_each: usize,
    ) -> DecodeResult<()> {
        let claimed = (count as u64).saturating_mul(min_each.max(1) as u64);
        if claimed > self.remaining() as u64 {
            Err(DecodeError::SizeExceedsInput {
                what,
                claimed,
                remaining: self.remaining(),
            })
        } else {
            Ok(())
        }
    }

    fn take_array<const N: usize>(&mut self) -> DecodeResult<[u8; N]> {
        self.need(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.data[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    /// Take the next `n` bytes as a shared slice of the payload (no copy).
    pub fn take_bytes(&mut self, n: usize) -> DecodeResult<Bytes> {
        self.need(n)?;
        let out = self.data.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    /// Take everything that remains (no copy).
    pub fn take_rest(&mut self) -> Bytes {
        let out = self.data.slice(self.pos..);
        self.pos = self.data.len();
        out
    }

    /// Look at the next byte without consuming it.
    pub fn peek_u8(&self) -> DecodeResult<u8> {
        self.need(1)?;
        Ok(self.data[self.pos])
    }

    /// Skip `n` bytes.
    pub fn skip(&mut self, n: usize) -> DecodeResult<()> {
        self.need(n)?;
        self.pos += n;
        Ok(())
    }

    /// Read one byte.
    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    /// Read one signed byte.
    pub fn i8(&mut self) -> DecodeResult<i8> {
        Ok(self.u8()? as i8)
    }

    read_num!(u16, u16);
    read_num!(i16, i16);
    read_num!(u32, u32);
    read_num!(i32, i32);
    read_num!(u64, u64);
    read_num!(i64, i64);
    read_num!(f32, f32);
    read_num!(f64, f64);

    /// Read a Size: one byte below 254, 0xFE then a 32-bit count, 0xFF for null (`None`).
    pub fn size_or_null(&mut self) -> DecodeResult<Option<usize>> {
        match self.u8()? {
            0xFF => Ok(None),
            0xFE => {
                let n = self.u32()?;
                if n == 0x7FFF_FFFF {
                    // The 9-byte form (a 64-bit size follows) only matters for >2 GiB items.
                    let big = self.u64()?;
                    usize::try_from(big)
                        .map(Some)
                        .map_err(|_| DecodeError::InvalidSize("64-bit size beyond this machine"))
                } else {
                    Ok(Some(n as usize))
                }
            }
            b => Ok(Some(b as usize)),
        }
    }

    /// Read a Size where null is not allowed.
    pub fn size(&mut self) -> DecodeResult<usize> {
        self.size_or_null()?
            .ok_or(DecodeError::InvalidSize("null where a count is required"))
    }

    /// Read a string: Size then UTF-8 bytes. A null size reads as an empty string, as pvxs does.
    pub fn string(&mut self) -> DecodeResult<String> {
        let Some(len) = self.size_or_null()? else {
            return Ok(String::new());
        };
        self.check_count("string length", len, 1)?;
        let bytes = &self.data[self.pos..self.pos + len];
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8)?;
        self.pos += len;
        Ok(s.to_owned())
    }

    /// Read a 16-byte IPv6 (or IPv4-mapped) address.
    pub fn address(&mut self) -> DecodeResult<IpAddr> {
        let raw = self.take_array::<16>()?;
        let v6 = Ipv6Addr::from(raw);
        Ok(match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6.is_unspecified() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            None => IpAddr::V6(v6),
        })
    }

    /// Read a 12-byte server GUID.
    pub fn guid(&mut self) -> DecodeResult<Guid> {
        Ok(Guid(self.take_array::<12>()?))
    }
}

/// A server's 12-byte globally unique id, sent in beacons and search responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 12]);

/// Builds an encoded byte stream. Small items are written into one buffer; shared buffers of
/// [`SPLICE_THRESHOLD`] bytes or more (array payloads) are spliced in as their own chunks, so that
/// a vectored write can send them straight from the `Bytes` that holds them.
#[derive(Debug)]
pub struct Writer {
    order: ByteOrder,
    buf: BytesMut,
    /// Shared chunks with the offset in `buf` before which each one goes.
    spliced: Vec<(usize, Bytes)>,
    spliced_len: usize,
}

macro_rules! write_num {
    ($name:ident, $t:ty) => {
        #[doc = concat!("Write a `", stringify!($t), "` in the writer's byte order.")]
        pub fn $name(&mut self, v: $t) {
            match self.order {
                ByteOrder::Little => self.buf.put_slice(&v.to_le_bytes()),
                ByteOrder::Big => self.buf.put_slice(&v.to_be_bytes()),
            }
        }
    };
}

impl Writer {
    /// An empty writer producing numbers in `order`.
    pub fn new(order: ByteOrder) -> Self {
        Self::with_capacity(order, 256)
    }

    /// An empty writer with room for `cap` inline bytes.
    pub fn with_capacity(order: ByteOrder, cap: usize) -> Self {
        Writer {
            order,
            buf: BytesMut::with_capacity(cap),
            spliced: Vec::new(),
            spliced_len: 0,
        }
    }

    /// The byte order numbers are written in.
    pub fn order(&self) -> ByteOrder {
        self.order
    }

    /// Total bytes written so far, inline and spliced.
    pub fn len(&self) -> usize {
        self.buf.len() + self.spliced_len
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write one byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }

    /// Write one signed byte.
    pub fn i8(&mut self, v: i8) {
        self.buf.put_u8(v as u8);
    }

    write_num!(u16, u16);
    write_num!(i16, i16);
    write_num!(u32, u32);
    write_num!(i32, i32);
    write_num!(u64, u64);
    write_num!(i64, i64);
    write_num!(f32, f32);
    write_num!(f64, f64);

    /// Copy raw bytes in.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.put_slice(b);
    }

    /// Add a shared buffer: spliced in without copying when large, copied when small.
    pub fn shared(&mut self, b: &Bytes) {
        if b.len() >= SPLICE_THRESHOLD {
            self.spliced.push((self.buf.len(), b.clone()));
            self.spliced_len += b.len();
        } else {
            self.buf.put_slice(b);
        }
    }

    /// Write a Size (the 1- or 5-byte form).
    pub fn size(&mut self, n: usize) -> Result<(), EncodeError> {
        if n < 254 {
            self.u8(n as u8);
        } else if n < 0x7FFF_FFFF {
            self.u8(0xFE);
            self.u32(n as u32);
        } else {
            return Err(EncodeError::TooLarge {
                what: "size",
                len: n as u64,
            });
        }
        Ok(())
    }

    /// Write the null Size (0xFF).
    pub fn null_size(&mut self) {
        self.u8(0xFF);
    }

    /// Write a string: Size then UTF-8 bytes.
    pub fn string(&mut self, s: &str) -> Result<(), EncodeError> {
        self.size(s.len())?;
        self.bytes(s.as_bytes());
        Ok(())
    }

    /// Write a 16-byte address (IPv4 as IPv4-mapped IPv6).
    pub fn address(&mut self, addr: IpAddr) {
        let v6 = match addr {
            IpAddr::V4(v4) if v4.is_unspecified() => Ipv6Addr::UNSPECIFIED,
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        self.bytes(&v6.octets());
    }

    /// Write a 12-byte GUID.
    pub fn guid(&mut self, g: &Guid) {
        self.bytes(&g.0);
    }

    /// Overwrite 4 bytes at inline offset `at` with `v` (used to patch a header's payload size).
    pub(crate) fn patch_u32(&mut self, at: usize, v: u32) {
        let raw = match self.order {
            ByteOrder::Little => v.to_le_bytes(),
            ByteOrder::Big => v.to_be_bytes(),
        };
        self.buf[at..at + 4].copy_from_slice(&raw);
    }

    /// Inline offset where the next byte will go, for [`Writer::patch_u32`].
    pub(crate) fn inline_pos(&self) -> usize {
        self.buf.len()
    }

    /// Finish and return the output as chunks in order, ready for a vectored write.
    pub fn finish(self) -> Vec<Bytes> {
        let inline = self.buf.freeze();
        let mut chunks = Vec::with_capacity(self.spliced.len() * 2 + 1);
        let mut at = 0;
        for (offset, b) in self.spliced {
            if offset > at {
                chunks.push(inline.slice(at..offset));
            }
            chunks.push(b);
            at = offset;
        }
        if at < inline.len() || chunks.is_empty() {
            chunks.push(inline.slice(at..));
        }
        chunks
    }

    /// Finish and join everything into one contiguous buffer (copies spliced chunks).
    pub fn finish_contiguous(self) -> Bytes {
        if self.spliced.is_empty() {
            return self.buf.freeze();
        }
        let chunks = self.finish();
        let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
        for c in chunks {
            out.put_slice(&c);
        }
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_forms() {
        for (n, bytes) in [
            (0usize, vec![0u8]),
            (253, vec![253]),
            (254, vec![0xFE, 254, 0, 0, 0]),
            (0x1234_5678, vec![0xFE, 0x78, 0x56, 0x34, 0x12]),
        ] {
            let mut w = Writer::new(ByteOrder::Little);
            w.size(n).unwrap();
            assert_eq!(&w.finish_contiguous()[..], &bytes[..]);
            let mut r = Reader::new(Bytes::from(bytes), ByteOrder::Little);
            assert_eq!(r.size().unwrap(), n);
        }
        let mut r = Reader::new(Bytes::from_static(&[0xFF]), ByteOrder::Little);
        assert_eq!(r.size_or_null().unwrap(), None);
    }

    #[test]
    fn big_endian_numbers() {
        let mut w = Writer::new(ByteOrder::Big);
        w.u32(0x0102_0304);
        w.f64(1.5);
        let out = w.finish_contiguous();
        assert_eq!(&out[..4], &[1, 2, 3, 4]);
        let mut r = Reader::new(out, ByteOrder::Big);
        assert_eq!(r.u32().unwrap(), 0x0102_0304);
        assert_eq!(r.f64().unwrap(), 1.5);
        assert!(r.is_empty());
    }

    #[test]
    fn string_longer_than_input_is_an_error_not_an_allocation() {
        let mut r = Reader::new(
            Bytes::from_static(&[0xFE, 0xFE, 0xFF, 0xFF, 0x7F, b'a']),
            ByteOrder::Little,
        );
        assert!(matches!(
            r.string(),
            Err(DecodeError::SizeExceedsInput { .. })
        ));
    }

    #[test]
    fn ipv4_mapped_address_round_trips() {
        let addr: IpAddr = "127.0.0.1".parse().unwrap();
        let mut w = Writer::new(ByteOrder::Little);
        w.address(addr);
        let b = w.finish_contiguous();
        assert_eq!(&b[10..], &[0xFF, 0xFF, 127, 0, 0, 1]);
        assert_eq!(Reader::new(b, ByteOrder::Little).address().unwrap(), addr);
    }

    #[test]
    fn large_shared_buffers_are_spliced_not_copied() {
        let big = Bytes::from(vec![7u8; SPLICE_THRESHOLD * 2]);
        let mut w = Writer::new(ByteOrder::Little);
        w.u8(1);
        w.shared(&big);
        w.u8(2);
        let chunks = w.finish();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].as_ptr(), big.as_ptr());
        assert_eq!(&chunks[0][..], &[1]);
        assert_eq!(&chunks[2][..], &[2]);
    }
}
