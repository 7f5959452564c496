//! Decode arbitrary bytes as a field description (with a fresh type cache), in both byte
//! orders, twice in a row so that cache references can hit entries the first pass defined.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pva_codec::types::TypeDecoder;
use pva_codec::{ByteOrder, Limits, Reader, TypeCache};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    for order in [ByteOrder::Little, ByteOrder::Big] {
        let mut cache = TypeCache::new();
        let mut r = Reader::new(Bytes::copy_from_slice(data), order);
        let mut dec = TypeDecoder {
            cache: &mut cache,
            limits: &limits,
        };
        let _ = dec.decode(&mut r);
        let _ = dec.decode(&mut r);
    }
});
