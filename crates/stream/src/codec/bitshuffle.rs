//! Bitshuffle: the bit transposition of the `bitshuffle` library (Masui et al.), which
//! areaDetector's `bslz4` codec and Blosc's BITSHUFFLE filter apply before LZ4.
//!
//! A block of `n` elements (`n` a multiple of 8) of `size` bytes is read as an `n` by
//! `8 * size` matrix of bits and transposed: the output is `8 * size` rows of `n / 8` bytes,
//! row `8 * j + b` holding bit `b` of byte `j` of every element, element `i` at bit `i % 8` of
//! byte `i / 8`. It is done in two steps: the bytes are first transposed into `size` planes
//! of `n` bytes (Blosc's byte shuffle), then the bits of each plane. The byte-plane step is
//! [`shuffle_bytes`]; the bit step uses SSE2 where the processor has it.

/// Transpose the bits of one 8x8 bit matrix held in a `u64` (byte `k` is row `k`): afterwards
/// byte `b` holds bit `b` of every input byte, input byte `k` at bit `k`. Its own inverse.
fn transpose_8x8(mut x: u64) -> u64 {
    let mut t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^ t ^ (t << 28)
}

/// Byte shuffle (Blosc's SHUFFLE filter): `dst[j * n + i] = src[i * size + j]` for the
/// `n = src.len() / size` whole elements; trailing bytes that make no whole element are copied
/// as they are. `dst` must be as long as `src`.
pub fn shuffle_bytes(src: &[u8], dst: &mut [u8], size: usize) {
    debug_assert_eq!(src.len(), dst.len());
    let n = src.len() / size.max(1);
    if size <= 1 {
        dst.copy_from_slice(src);
        return;
    }
    for (i, element) in src.chunks_exact(size).enumerate() {
        for (j, &byte) in element.iter().enumerate() {
            dst[j * n + i] = byte;
        }
    }
    let whole = n * size;
    dst[whole..].copy_from_slice(&src[whole..]);
}

/// The inverse of [`shuffle_bytes`].
pub fn unshuffle_bytes(src: &[u8], dst: &mut [u8], size: usize) {
    debug_assert_eq!(src.len(), dst.len());
    let n = src.len() / size.max(1);
    if size <= 1 {
        dst.copy_from_slice(src);
        return;
    }
    for (i, element) in dst.chunks_exact_mut(size).enumerate() {
        for (j, byte) in element.iter_mut().enumerate() {
            *byte = src[j * n + i];
        }
    }
    let whole = n * size;
    dst[whole..].copy_from_slice(&src[whole..]);
}

/// Transpose the bits of byte planes: `planes` is `rows` planes of `n` bytes (`n` a multiple
/// of 8); plane `j`'s bit `b` goes to row `8 * j + b` of `n / 8` bytes in `out`.
fn bits_of_planes(planes: &[u8], out: &mut [u8], n: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of the x86_64 baseline, so every x86_64 processor has it.
        unsafe { bits_of_planes_sse2(planes, out, n) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    bits_of_planes_scalar(planes, out, n, 0);
}

/// The portable bit step, from byte `from` of every plane on (the SSE2 step leaves it the
/// tail that makes no 16 bytes).
fn bits_of_planes_scalar(planes: &[u8], out: &mut [u8], n: usize, from: usize) {
    let row = n / 8;
    for (j, plane) in planes.chunks_exact(n).enumerate() {
        for c in (from / 8)..row {
            let x = u64::from_le_bytes(plane[c * 8..c * 8 + 8].try_into().unwrap_or_default());
            let t = transpose_8x8(x).to_le_bytes();
            for (b, &byte) in t.iter().enumerate() {
                out[(j * 8 + b) * row + c] = byte;
            }
        }
    }
}

/// The bit step, 16 bytes of a plane at a time: `movemask` gathers the top bit of each byte,
/// which a shift by one brings down in turn. Measured (BENCHMARKS.md, NTNDArray codecs): the
/// whole bitshuffle of a 2 MiB u16 frame takes 2.9 ms with it against 4.1 ms without.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn bits_of_planes_sse2(planes: &[u8], out: &mut [u8], n: usize) {
    use std::arch::x86_64::{_mm_loadu_si128, _mm_movemask_epi8, _mm_slli_epi64};
    let row = n / 8;
    let wide = n - n % 16;
    for (j, plane) in planes.chunks_exact(n).enumerate() {
        for (k, chunk) in plane[..wide].chunks_exact(16).enumerate() {
            // SAFETY: `chunk` is 16 readable bytes and `_mm_loadu_si128` takes any alignment.
            let mut x = unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) };
            for b in (0..8).rev() {
                let mask = _mm_movemask_epi8(x) as u16;
                let at = (j * 8 + b) * row + k * 2;
                out[at..at + 2].copy_from_slice(&mask.to_le_bytes());
                x = _mm_slli_epi64::<1>(x);
            }
        }
    }
    if wide < n {
        bits_of_planes_scalar(planes, out, n, wide);
    }
}

/// The inverse of [`bits_of_planes`].
fn planes_of_bits(bits: &[u8], planes: &mut [u8], n: usize) {
    let row = n / 8;
    for (j, plane) in planes.chunks_exact_mut(n).enumerate() {
        for c in 0..row {
            let mut x = [0u8; 8];
            for (b, byte) in x.iter_mut().enumerate() {
                *byte = bits[(j * 8 + b) * row + c];
            }
            let t = transpose_8x8(u64::from_le_bytes(x)).to_le_bytes();
            plane[c * 8..c * 8 + 8].copy_from_slice(&t);
        }
    }
}

/// Bitshuffle `src` (whole elements of `size` bytes, a multiple of 8 of them) into `dst`, with
/// `tmp` as scratch; all three are as long.
pub fn bitshuffle(src: &[u8], dst: &mut [u8], tmp: &mut [u8], size: usize) {
    shuffle_with(src, dst, tmp, size, bits_of_planes);
}

/// [`bitshuffle`] without SIMD, as it runs on processors other than x86_64 (for comparison:
/// the codec benchmark measures both).
pub fn bitshuffle_portable(src: &[u8], dst: &mut [u8], tmp: &mut [u8], size: usize) {
    shuffle_with(src, dst, tmp, size, |planes, out, n| {
        bits_of_planes_scalar(planes, out, n, 0)
    });
}

/// The byte step into `tmp`, then the bit step `bits` into `dst`.
fn shuffle_with(
    src: &[u8],
    dst: &mut [u8],
    tmp: &mut [u8],
    size: usize,
    bits: impl Fn(&[u8], &mut [u8], usize),
) {
    let n = src.len() / size;
    debug_assert!(n.is_multiple_of(8) && n * size == src.len());
    if n == 0 {
        return;
    }
    shuffle_bytes(src, tmp, size);
    bits(tmp, dst, n);
}

/// The inverse of [`bitshuffle`].
pub fn bitunshuffle(src: &[u8], dst: &mut [u8], tmp: &mut [u8], size: usize) {
    let n = src.len() / size;
    debug_assert!(n.is_multiple_of(8) && n * size == src.len());
    if n == 0 {
        return;
    }
    planes_of_bits(src, tmp, n);
    unshuffle_bytes(tmp, dst, size);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, bit by bit.
    fn reference(src: &[u8], size: usize) -> Vec<u8> {
        let n = src.len() / size;
        let mut out = vec![0u8; src.len()];
        for i in 0..n {
            for j in 0..size {
                for b in 0..8 {
                    if src[i * size + j] >> b & 1 == 1 {
                        out[(j * 8 + b) * (n / 8) + i / 8] |= 1 << (i % 8);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn sixteen_u16_counting_up_shuffle_as_the_library_does() {
        // bitshuffle.bitshuffle(np.arange(16, dtype=np.uint16)) from the PyPI package.
        let src: Vec<u8> = (0u16..16).flat_map(u16::to_le_bytes).collect();
        let mut dst = vec![0; 32];
        let mut tmp = vec![0; 32];
        bitshuffle(&src, &mut dst, &mut tmp, 2);
        assert_eq!(&dst[..8], &[0xaa, 0xaa, 0xcc, 0xcc, 0xf0, 0xf0, 0x00, 0xff]);
        assert!(dst[8..].iter().all(|&b| b == 0));
    }

    proptest! {
        #[test]
        fn shuffles_match_the_definition_and_invert(
            size in prop::sample::select(vec![1usize, 2, 4, 8, 3, 16]),
            groups in 0usize..40,
            seed in any::<u64>(),
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let src: Vec<u8> = (0..groups * 8 * size).map(|_| rng.u8(..)).collect();
            let mut dst = vec![0; src.len()];
            let mut tmp = vec![0; src.len()];
            bitshuffle(&src, &mut dst, &mut tmp, size);
            prop_assert_eq!(&dst, &reference(&src, size));
            let mut portable = vec![0; src.len()];
            bitshuffle_portable(&src, &mut portable, &mut tmp, size);
            prop_assert_eq!(&portable, &dst);
            let mut back = vec![0; src.len()];
            bitunshuffle(&dst, &mut back, &mut tmp, size);
            prop_assert_eq!(&back, &src);
        }

        #[test]
        fn byte_shuffles_with_a_tail_invert(
            size in 1usize..9,
            len in 0usize..700,
            seed in any::<u64>(),
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let src: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let (mut dst, mut back) = (vec![0; len], vec![0; len]);
            shuffle_bytes(&src, &mut dst, size);
            unshuffle_bytes(&dst, &mut back, size);
            prop_assert_eq!(&back, &src);
        }
    }
}
