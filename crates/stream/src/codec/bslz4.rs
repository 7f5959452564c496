//! `bslz4`: bitshuffle + LZ4, as the `bitshuffle` library's `bshuf_compress_lz4` writes it
//! with its default block size (what areaDetector's codec plugin calls, and what pvapy and
//! `bitshuffle.decompress_lz4` read).
//!
//! Layout, no header: the elements go in blocks of `block` elements (8192 bytes' worth, a
//! multiple of 8, at least 128); a last, shorter block takes what is left rounded down to a
//! multiple of 8. Each block is bitshuffled, LZ4-compressed, and written as its compressed
//! length (4 bytes, big-endian) followed by the LZ4 block. The last `count % 8` elements follow
//! as they are.

use super::bitshuffle::{bitshuffle, bitunshuffle};
use super::CodecError;

/// The library's default block size in elements for `size`-byte elements.
pub fn default_block(size: usize) -> usize {
    ((8192 / size) / 8 * 8).max(128)
}

/// The blocks of `count` elements: (first element, elements).
fn blocks(count: usize, block: usize) -> impl Iterator<Item = (usize, usize)> {
    let full = count / block;
    let last = (count % block) & !7;
    (0..full)
        .map(move |k| (k * block, block))
        .chain((last > 0).then_some((full * block, last)))
}

/// Compress `data`, whole elements of `size` bytes.
pub fn compress(data: &[u8], size: usize) -> Vec<u8> {
    let count = data.len() / size;
    let block = default_block(size);
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    let mut shuffled = vec![0u8; block * size];
    let mut tmp = vec![0u8; block * size];
    for (first, n) in blocks(count, block) {
        let src = &data[first * size..(first + n) * size];
        bitshuffle(src, &mut shuffled[..src.len()], &mut tmp[..src.len()], size);
        let packed = lz4_flex::block::compress(&shuffled[..src.len()]);
        out.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        out.extend_from_slice(&packed);
    }
    let tail = (count - count % 8) * size;
    out.extend_from_slice(&data[tail..count * size]);
    out
}

/// Decompress into `expected` bytes of `size`-byte elements.
pub fn decompress(data: &[u8], expected: usize, size: usize) -> Result<Vec<u8>, CodecError> {
    if !expected.is_multiple_of(size) {
        return Err(CodecError::Corrupt(format!(
            "{expected} bytes are not whole {size}-byte elements"
        )));
    }
    let count = expected / size;
    let block = default_block(size);
    let mut out = vec![0u8; expected];
    let mut shuffled = vec![0u8; block * size];
    let mut tmp = vec![0u8; block * size];
    let mut at = 0usize;
    for (first, n) in blocks(count, block) {
        let Some(head) = data.get(at..at + 4) else {
            return Err(CodecError::Truncated {
                at,
                wanted: "a block length",
            });
        };
        let len = u32::from_be_bytes(head.try_into().unwrap_or_default()) as usize;
        at += 4;
        let Some(packed) = data.get(at..at.saturating_add(len)) else {
            return Err(CodecError::Truncated {
                at,
                wanted: "an LZ4 block",
            });
        };
        at += len;
        let bytes = n * size;
        let got = lz4_flex::block::decompress_into(packed, &mut shuffled[..bytes])
            .map_err(|e| CodecError::Corrupt(format!("LZ4 block at byte {}: {e}", at - len)))?;
        if got != bytes {
            return Err(CodecError::Corrupt(format!(
                "LZ4 block at byte {} holds {got} bytes, not {bytes}",
                at - len
            )));
        }
        let dst = &mut out[first * size..(first + n) * size];
        bitunshuffle(&shuffled[..bytes], dst, &mut tmp[..bytes], size);
    }
    let tail = (count - count % 8) * size;
    let rest = expected - tail;
    match data.get(at..) {
        Some(left) if left.len() == rest => out[tail..].copy_from_slice(left),
        Some(left) if left.len() < rest => {
            return Err(CodecError::Truncated {
                at,
                wanted: "the last elements",
            })
        }
        _ => {
            return Err(CodecError::Corrupt(format!(
                "{} bytes left over after the data",
                data.len() - at - rest
            )))
        }
    }
    Ok(out)
}
