use super::*;
use proptest::prelude::*;
use pva_codec::nt::{NdArrayFrame, NtNdArray};

/// Every element type an NTNDArray can be compressed with.
const NUMERIC: [ScalarType; 10] = [
    ScalarType::I8,
    ScalarType::U8,
    ScalarType::I16,
    ScalarType::U16,
    ScalarType::I32,
    ScalarType::U32,
    ScalarType::I64,
    ScalarType::U64,
    ScalarType::F32,
    ScalarType::F64,
];

/// An array of `t` from raw little-endian bytes (`n` elements).
fn array(t: ScalarType, bytes: Vec<u8>) -> ScalarArray {
    ScalarArray::from_raw(t, Bytes::from(bytes), ByteOrder::Little).unwrap()
}

/// `n` elements of `t`: small counts (compressible, like detector pixels) or random bytes.
fn image(t: ScalarType, n: usize, seed: u64, noise: bool) -> ScalarArray {
    let mut rng = fastrand::Rng::with_seed(seed);
    let size = t.wire_size();
    let bytes = (0..n * size)
        .map(|i| {
            if noise {
                rng.u8(..)
            } else if i % size == 0 {
                rng.u8(0..16)
            } else {
                0
            }
        })
        .collect();
    array(t, bytes)
}

fn frame(data: ScalarArray, sizes: &[i32]) -> StructValue {
    NtNdArray::new()
        .build_value(NdArrayFrame::new(data, sizes, 7))
        .unwrap()
}

fn pixels(v: &StructValue) -> ScalarArray {
    array_of(v).unwrap().clone()
}

/// The bytes of an array (NaN pixels compare equal this way).
fn raw(a: &ScalarArray) -> Bytes {
    raw_bytes(a).unwrap()
}

#[test]
fn every_codec_round_trips_every_numeric_type_as_the_plugin_lays_it_out() {
    for codec in Codec::ALL {
        for t in NUMERIC {
            let data = image(t, 40 * 30 + 3, 1, false);
            let v = frame(data.clone(), &[40 * 30 + 3]);
            let packed = compress_value(&v, codec, 5).unwrap();
            assert_eq!(codec_name(&packed), Some(codec.name()));
            assert!(
                matches!(pixels(&packed), ScalarArray::U8(_)),
                "{codec} {t:?}"
            );
            let code = packed
                .get("codec.parameters")
                .and_then(inner)
                .and_then(Value::as_i64);
            assert_eq!(code, Some(i64::from(type_code(t))));
            assert_eq!(
                packed.get("uncompressedSize").and_then(Value::as_i64),
                Some(data.byte_len() as i64)
            );
            assert_eq!(
                packed.get("compressedSize").and_then(Value::as_i64),
                Some(pixels(&packed).byte_len() as i64)
            );
            let back = decompress_value(&packed).unwrap().unwrap();
            assert_eq!(raw(&pixels(&back)), raw(&data), "{codec} {t:?}");
            assert_eq!(pixels(&back).element_type(), t);
            assert_eq!(codec_name(&back), None);
            assert_eq!(
                decompress_value(&back).unwrap(),
                None,
                "uncompressed stays as is"
            );
        }
    }
}

#[test]
fn the_pvdata_type_codes_are_those_areadetector_writes() {
    assert_eq!(type_code(ScalarType::I8), 1);
    assert_eq!(type_code(ScalarType::U8), 5);
    assert_eq!(type_code(ScalarType::U16), 6);
    assert_eq!(type_code(ScalarType::F64), 10);
}

#[test]
fn bslz4_blocks_follow_the_library_default() {
    assert_eq!(bslz4::default_block(1), 8192);
    assert_eq!(bslz4::default_block(2), 4096);
    assert_eq!(bslz4::default_block(8), 1024);
    // 300 u16: one block of 296 elements, then 4 elements (8 bytes) as they are.
    let data: Vec<u8> = (0u16..300).flat_map(u16::to_le_bytes).collect();
    let packed = bslz4::compress(&data, 2);
    let len = u32::from_be_bytes(packed[..4].try_into().unwrap()) as usize;
    assert_eq!(packed.len(), 4 + len + 8);
    assert_eq!(&packed[4 + len..], &data[592..]);
}

#[test]
fn blosc_stores_incompressible_data_and_level_zero_as_is() {
    let noise: Vec<u8> = {
        let mut rng = fastrand::Rng::with_seed(3);
        (0..5000).map(|_| rng.u8(..)).collect()
    };
    for (data, level) in [(noise.clone(), 5), (vec![1u8; 5000], 0)] {
        let packed = blosc::compress(&data, 4, level, blosc::Shuffle::Byte);
        assert_eq!(packed[2] & 0x02, 0x02, "stored as is");
        assert_eq!(packed.len(), data.len() + 16);
        assert_eq!(blosc::decompress(&packed, data.len()).unwrap(), data);
    }
}

#[test]
fn corrupt_and_truncated_frames_are_errors_with_a_reason() {
    let data = image(ScalarType::U16, 5000, 2, false);
    let v = frame(data, &[100, 50]);
    for codec in Codec::ALL {
        let packed = compress_value(&v, codec, 5).unwrap();
        let bytes = pixels(&packed);
        let ScalarArray::U8(raw) = &bytes else {
            unreachable!()
        };
        let raw = raw.to_vec();
        // Truncated.
        let mut cut = packed.clone();
        put_array(
            &mut cut,
            ScalarArray::U8(PodArray::from_vec(raw[..raw.len() / 2].to_vec())),
        )
        .unwrap();
        let err = decompress_value(&cut).unwrap_err();
        assert!(!err.to_string().is_empty(), "{codec}: {err}");
        // Sizes that disagree.
        let mut lying = packed.clone();
        lying.set("uncompressedSize", 12i64).unwrap();
        assert!(
            matches!(decompress_value(&lying), Err(CodecError::Corrupt(_))),
            "{codec}"
        );
        // An unknown element type.
        let mut untyped = packed.clone();
        if let Some(Value::Any(a)) = untyped.get_mut("codec.parameters") {
            *a = AnyValue::new(Value::I32(11));
        }
        assert!(decompress_value(&untyped).is_err(), "{codec}");
    }
    let mut jpeg = frame(image(ScalarType::U8, 16, 1, false), &[16]);
    jpeg.set("codec.name", "jpeg").unwrap();
    assert!(matches!(
        decompress_value(&jpeg),
        Err(CodecError::Unsupported(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_images_of_every_type_and_shape_round_trip(
        t in prop::sample::select(NUMERIC.to_vec()),
        nx in 1usize..90,
        ny in 1usize..70,
        seed in any::<u64>(),
        noise in any::<bool>(),
        level in 0u8..10,
    ) {
        let data = image(t, nx * ny, seed, noise);
        let v = frame(data.clone(), &[nx as i32, ny as i32]);
        for codec in Codec::ALL {
            let packed = compress_value(&v, codec, level).unwrap();
            let back = decompress_value(&packed).unwrap().unwrap();
            prop_assert_eq!(raw(&pixels(&back)), raw(&data));
        }
    }

    #[test]
    fn any_bytes_decompress_to_an_error_or_the_right_size_never_a_panic(
        junk in prop::collection::vec(any::<u8>(), 0..400),
        n in 0usize..600,
    ) {
        for codec in Codec::ALL {
            if let Ok(out) = codec.decompress(&junk, n * 2, 2) {
                prop_assert_eq!(out.len(), n * 2);
            }
        }
    }

    #[test]
    fn flipped_bytes_in_a_real_frame_never_panic(
        seed in any::<u64>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let data = image(ScalarType::U32, 3000, seed, false);
        let ScalarArray::U32(a) = &data else { unreachable!() };
        let raw = a.bytes_in(ByteOrder::Little);
        for codec in Codec::ALL {
            let mut packed = codec.compress(&raw, 4, 5);
            for (at, x) in &flips {
                let i = at.index(packed.len());
                packed[i] ^= x | 1;
            }
            if let Ok(out) = codec.decompress(&packed, raw.len(), 4) {
                prop_assert_eq!(out.len(), raw.len());
            }
        }
    }
}
