//! The BloscLZ decoder: Blosc's default compressor (a FastLZ variant), which python-blosc and
//! areaDetector's codec plugin use unless told otherwise. Only decoding is needed: frames we
//! compress use LZ4 inside Blosc.
//!
//! The stream is a sequence of instructions. A control byte below 32 is a literal run of
//! `ctrl + 1` bytes. Otherwise `ctrl >> 5` is the match length less 2 (7: more length bytes
//! follow, each added, until one is not 255), `ctrl & 31` the high bits of the distance and
//! the next byte its low bits; a distance of `31 << 8 | 255` means two more bytes give a
//! 16-bit distance beyond 8191. The first control byte has its top three bits clear.

use super::CodecError;

/// Farthest distance of the short form.
const MAX_DISTANCE: usize = 8191;

fn corrupt(what: &str, at: usize) -> CodecError {
    CodecError::Corrupt(format!("BloscLZ stream: {what} at byte {at}"))
}

/// Decode `input` into `out`, which must be filled exactly.
pub fn decompress_into(input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let mut ip = 0usize;
    let mut op = 0usize;
    let byte = |ip: &mut usize| -> Result<usize, CodecError> {
        let b = *input.get(*ip).ok_or_else(|| corrupt("input ends", *ip))?;
        *ip += 1;
        Ok(b as usize)
    };
    let mut ctrl = byte(&mut ip)? & 31;
    loop {
        if ctrl >= 32 {
            let mut len = (ctrl >> 5) - 1;
            let mut ofs = (ctrl & 31) << 8;
            if len == 6 {
                loop {
                    let code = byte(&mut ip)?;
                    len += code;
                    if code != 255 {
                        break;
                    }
                }
            }
            let code = byte(&mut ip)?;
            len += 3;
            let mut back = ofs + code + 1;
            if code == 255 && ofs == 31 << 8 {
                ofs = byte(&mut ip)? << 8;
                ofs += byte(&mut ip)?;
                back = ofs + MAX_DISTANCE + 1;
            }
            if back > op {
                return Err(corrupt("a match reaching before the start", ip));
            }
            if op + len > out.len() {
                return Err(corrupt("a match past the end of the output", ip));
            }
            let from = op - back;
            if back >= len {
                out.copy_within(from..from + len, op);
            } else {
                for k in 0..len {
                    out[op + k] = out[from + k];
                }
            }
            op += len;
        } else {
            let run = ctrl + 1;
            let Some(lit) = input.get(ip..ip + run) else {
                return Err(corrupt("a literal run past the end of the input", ip));
            };
            let Some(dst) = out.get_mut(op..op + run) else {
                return Err(corrupt("a literal run past the end of the output", ip));
            };
            dst.copy_from_slice(lit);
            ip += run;
            op += run;
        }
        if ip >= input.len() {
            break;
        }
        ctrl = byte(&mut ip)?;
    }
    if op != out.len() {
        return Err(CodecError::Corrupt(format!(
            "BloscLZ stream holds {op} bytes, not {}",
            out.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_an_overlapping_match_decode() {
        // "abc" as literals, then a match of 6 at distance 3: "abcabcabc".
        let stream = [2, b'a', b'b', b'c', (6 - 2) << 5, 2];
        let mut out = [0u8; 9];
        decompress_into(&stream, &mut out).unwrap();
        assert_eq!(&out, b"abcabcabc");
    }

    #[test]
    fn bad_streams_are_errors_not_panics() {
        let mut out = [0u8; 9];
        assert!(decompress_into(&[], &mut out).is_err());
        assert!(decompress_into(&[2, b'a'], &mut out).is_err());
        // A match reaching before the start.
        assert!(decompress_into(&[0, b'a', 0x40, 9], &mut out).is_err());
        // Too short for the output.
        assert!(decompress_into(&[2, b'a', b'b', b'c'], &mut out).is_err());
    }
}
