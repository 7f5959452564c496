//! Blosc (version 1 format, as c-blosc 1.x and python-blosc write it, and as areaDetector's
//! codec plugin calls `blosc_compress_ctx`).
//!
//! A frame starts with 16 bytes: format version (2), compressor format version, flags, type
//! size, then as little-endian u32 the uncompressed size, the block size and the frame size.
//! Flags: 0x01 byte shuffle, 0x02 stored as is (the data follows the header), 0x04 bitshuffle,
//! 0x10 blocks not split by byte, bits 5-7 the compressor (0 BloscLZ, 1 LZ4/LZ4HC, 2 Snappy,
//! 3 zlib, 4 Zstd). Then one little-endian i32 per block, the block's offset in the frame; a
//! block is `splits` streams (the type size when split, else 1), each its compressed length
//! (i32) and bytes — a length equal to the stream's uncompressed size means stored as is.
//!
//! We write LZ4 with byte shuffle (or bitshuffle), unsplit blocks; we read BloscLZ, LZ4 and
//! LZ4HC, split or not, any shuffle. Snappy, zlib and Zstd frames are refused by name.

use super::bitshuffle::{bitshuffle, bitunshuffle, shuffle_bytes, unshuffle_bytes};
use super::{blosclz, CodecError};

const HEADER: usize = 16;
const VERSION: u8 = 2;
const LZ4_VERSION: u8 = 1;
const DO_SHUFFLE: u8 = 0x01;
const MEMCPYED: u8 = 0x02;
const DO_BITSHUFFLE: u8 = 0x04;
const DONT_SPLIT: u8 = 0x10;
/// Compressor codes (flags >> 5).
const BLOSCLZ: u8 = 0;
const LZ4: u8 = 1;
/// Blocks are split by byte only for type sizes up to this.
const MAX_SPLITS: usize = 16;
/// ... and blocks of at least this many elements.
const MIN_BUFFERSIZE: usize = 128;
/// Block size of the frames we write.
const BLOCK: usize = 256 << 10;

/// How Blosc rearranges bytes before compressing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shuffle {
    /// As they are.
    None,
    /// Byte planes.
    Byte,
    /// Bit planes.
    Bit,
}

/// Bitshuffle (or unshuffle, as `apply` is) a block as format version 2 does: only when its
/// elements are a multiple of 8, else the block is left as it is; bytes past the last whole
/// element are copied.
fn bit_planes(
    src: &[u8],
    dst: &mut [u8],
    tmp: &mut [u8],
    size: usize,
    apply: fn(&[u8], &mut [u8], &mut [u8], usize),
) {
    let n = src.len() / size;
    if !n.is_multiple_of(8) {
        dst.copy_from_slice(src);
        return;
    }
    let whole = n * size;
    apply(&src[..whole], &mut dst[..whole], &mut tmp[..whole], size);
    dst[whole..].copy_from_slice(&src[whole..]);
}

fn le32(data: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// Compress `data` (elements of `size` bytes) at `level` 0 (stored) to 9.
pub fn compress(data: &[u8], size: usize, level: u8, shuffle: Shuffle) -> Vec<u8> {
    let size = size.clamp(1, 255);
    let nbytes = data.len();
    let block = if nbytes <= BLOCK {
        nbytes
    } else {
        BLOCK - BLOCK % size
    };
    let mut flags = DONT_SPLIT | (LZ4 << 5);
    flags |= match shuffle {
        Shuffle::None => 0,
        Shuffle::Byte => DO_SHUFFLE,
        Shuffle::Bit => DO_BITSHUFFLE,
    };
    let header = |flags: u8, ctbytes: usize| {
        let mut h = vec![VERSION, LZ4_VERSION, flags, size as u8];
        for v in [nbytes, block, ctbytes] {
            h.extend_from_slice(&(v as u32).to_le_bytes());
        }
        h
    };
    let stored = || {
        let mut out = header(flags | MEMCPYED, nbytes + HEADER);
        out.extend_from_slice(data);
        out
    };
    if level == 0 || nbytes == 0 {
        return stored();
    }
    let nblocks = nbytes.div_ceil(block);
    let mut out = header(flags, 0);
    out.resize(HEADER + 4 * nblocks, 0);
    let mut shuffled = vec![0u8; block];
    let mut tmp = vec![0u8; block];
    for (k, src) in data.chunks(block).enumerate() {
        let start = out.len();
        out[HEADER + 4 * k..HEADER + 4 * k + 4].copy_from_slice(&(start as u32).to_le_bytes());
        let buf = &mut shuffled[..src.len()];
        match shuffle {
            Shuffle::None => buf.copy_from_slice(src),
            Shuffle::Byte => shuffle_bytes(src, buf, size),
            Shuffle::Bit => bit_planes(src, buf, &mut tmp[..src.len()], size, bitshuffle),
        }
        let packed = lz4_flex::block::compress(buf);
        if packed.len() < buf.len() {
            out.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            out.extend_from_slice(&packed);
        } else {
            out.extend_from_slice(&(buf.len() as u32).to_le_bytes());
            out.extend_from_slice(buf);
        }
        if out.len() >= nbytes + HEADER {
            return stored();
        }
    }
    let ctbytes = out.len() as u32;
    out[12..16].copy_from_slice(&ctbytes.to_le_bytes());
    out
}

/// Decompress a frame that must hold `expected` bytes.
pub fn decompress(data: &[u8], expected: usize) -> Result<Vec<u8>, CodecError> {
    if data.len() < HEADER {
        return Err(CodecError::Truncated {
            at: data.len(),
            wanted: "the 16-byte Blosc header",
        });
    }
    let (version, flags, size) = (data[0], data[2], data[3] as usize);
    let nbytes = le32(data, 4).unwrap_or_default();
    let block = le32(data, 8).unwrap_or_default();
    let ctbytes = le32(data, 12).unwrap_or_default();
    if version == 0 || version > VERSION {
        return Err(CodecError::Corrupt(format!(
            "Blosc format version {version} (1 or 2 known)"
        )));
    }
    if nbytes != expected {
        return Err(CodecError::Corrupt(format!(
            "Blosc frame holds {nbytes} bytes, the array {expected}"
        )));
    }
    if ctbytes > data.len() {
        return Err(CodecError::Truncated {
            at: data.len(),
            wanted: "the whole Blosc frame",
        });
    }
    let data = &data[..ctbytes];
    if flags & MEMCPYED != 0 {
        return match data.get(HEADER..HEADER + nbytes) {
            Some(raw) => Ok(raw.to_vec()),
            None => Err(CodecError::Truncated {
                at: data.len(),
                wanted: "the stored data",
            }),
        };
    }
    let compressor = flags >> 5;
    if compressor != BLOSCLZ && compressor != LZ4 {
        let name = match compressor {
            2 => "snappy",
            3 => "zlib",
            4 => "zstd",
            _ => "an unknown compressor",
        };
        return Err(CodecError::Unsupported(format!(
            "Blosc frames compressed with {name} (BloscLZ and LZ4 are read)"
        )));
    }
    if nbytes == 0 {
        return Ok(Vec::new());
    }
    if block == 0 || size == 0 {
        return Err(CodecError::Corrupt(format!(
            "Blosc block size {block}, type size {size}"
        )));
    }
    let nblocks = nbytes.div_ceil(block);
    let mut out = vec![0u8; nbytes];
    let mut unpacked = vec![0u8; block];
    let mut tmp = vec![0u8; block];
    for k in 0..nblocks {
        let start = le32(data, HEADER + 4 * k).ok_or(CodecError::Truncated {
            at: data.len(),
            wanted: "the block offsets",
        })?;
        let bsize = block.min(nbytes - k * block);
        let leftover = bsize < block;
        let splits = if flags & DONT_SPLIT == 0
            && size <= MAX_SPLITS
            && block / size >= MIN_BUFFERSIZE
            && !leftover
        {
            size
        } else {
            1
        };
        if !bsize.is_multiple_of(splits) {
            return Err(CodecError::Corrupt(format!(
                "Blosc block {k} of {bsize} bytes does not split into {splits} streams"
            )));
        }
        let part = bsize / splits;
        let mut at = start;
        for s in 0..splits {
            let len = le32(data, at).ok_or(CodecError::Truncated {
                at,
                wanted: "a stream length",
            })?;
            at += 4;
            let Some(packed) = data.get(at..at.saturating_add(len)) else {
                return Err(CodecError::Truncated {
                    at,
                    wanted: "a compressed stream",
                });
            };
            at += len;
            let dst = &mut unpacked[s * part..(s + 1) * part];
            if len == part {
                dst.copy_from_slice(packed);
            } else if compressor == LZ4 {
                let got = lz4_flex::block::decompress_into(packed, dst)
                    .map_err(|e| CodecError::Corrupt(format!("LZ4 stream in block {k}: {e}")))?;
                if got != part {
                    return Err(CodecError::Corrupt(format!(
                        "LZ4 stream in block {k} holds {got} bytes, not {part}"
                    )));
                }
            } else {
                blosclz::decompress_into(packed, dst)?;
            }
        }
        let src = &unpacked[..bsize];
        let dst = &mut out[k * block..k * block + bsize];
        if flags & DO_SHUFFLE != 0 && size > 1 {
            unshuffle_bytes(src, dst, size);
        } else if flags & DO_BITSHUFFLE != 0 {
            bit_planes(src, dst, &mut tmp[..bsize], size, bitunshuffle);
        } else {
            dst.copy_from_slice(src);
        }
    }
    Ok(out)
}
