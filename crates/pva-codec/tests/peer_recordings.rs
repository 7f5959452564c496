//! Golden vectors recorded from real peers (p4p/pvxs and pvapy/pvAccessCPP): every byte stream
//! decodes, and the values decoded are the ones the recording's manifest says were published.
//! The recordings are made by scripts/record-peer-traffic.py (see tests/data/peers/README.md).

use std::collections::HashMap;
use std::path::PathBuf;

use pva_codec::msg::{OpRequestBody, OpResponseBody, OpTypeTable};
use pva_codec::nt::{EnumReading, NdArrayFrame, ScalarReading};
use pva_codec::{
    ByteOrder, DecodeContext, Direction, FieldDesc, Frame, FrameDecoder, Limits, Message, Segment,
    StructValue, TypeCache, Value, ValueDecoder, ValueEncoder, Writer,
};
use serde_json::Value as Json;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/peers")
}

fn manifest() -> Vec<Json> {
    let text = std::fs::read_to_string(data_dir().join("manifest.json")).expect("manifest");
    let m: Json = serde_json::from_str(&text).expect("manifest is JSON");
    m["cases"].as_array().expect("cases").clone()
}

/// Everything decoded from one direction of a recorded connection.
struct Decoded {
    messages: Vec<Message>,
    /// Raw header segmentation flags seen, before reassembly.
    segments: Vec<Segment>,
    /// The full value after each data message, in order.
    values: Vec<StructValue>,
}

fn decode_stream(bytes: &[u8]) -> Decoded {
    // Segmentation flags as sent (reassembly hides them).
    let mut segments = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let h = pva_codec::Header::decode(&bytes[at..at + 8]).expect("header");
        segments.push(h.segment);
        at += 8 + if h.control {
            0
        } else {
            h.payload_size as usize
        };
    }
    assert_eq!(at, bytes.len(), "stream ends on a message boundary");

    let mut fd = FrameDecoder::new(1 << 26);
    // Feed in uneven pieces, as a socket would.
    for piece in bytes.chunks(1000) {
        fd.extend(piece);
    }
    let mut current: HashMap<u32, StructValue> = HashMap::new();
    let mut messages = Vec::new();
    let mut values = Vec::new();
    decode_all(&mut fd, true, |_, m| {
        if let Message::OpResponse(r) = &m {
            if let OpResponseBody::Data { changed, value }
            | OpResponseBody::Update { changed, value, .. } = &r.body
            {
                let full = current
                    .entry(r.ioid)
                    .or_insert_with(|| StructValue::new(value.desc().clone()));
                full.merge_from(value, changed);
                values.push(full.clone());
            }
        }
        messages.push(m);
    });
    Decoded {
        messages,
        segments,
        values,
    }
}

/// Decode every message of `fd` but control messages, handing each to `each` with its frame;
/// with `learn`, the operations' types are learnt from the messages, as a peer learns them.
fn decode_all(fd: &mut FrameDecoder, learn: bool, mut each: impl FnMut(&Frame, Message)) {
    let mut cache = TypeCache::new();
    let limits = Limits::default();
    let mut ops = OpTypeTable::new();
    while let Some(frame) = fd.next_frame().expect("valid framing") {
        if frame.header.control {
            continue;
        }
        let m = Message::decode(
            &frame,
            &mut DecodeContext {
                cache: &mut cache,
                limits: &limits,
                ops: &ops,
            },
        )
        .unwrap_or_else(|e| panic!("command {:#x}: {e}", frame.header.command));
        if learn {
            ops.learn(&m);
        }
        each(&frame, m);
    }
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn check_time_and_alarm(v: &StructValue, want: &Json, case: &str) {
    assert_eq!(
        v.get("alarm.severity").and_then(Value::as_i64),
        want["alarm"]["severity"].as_i64(),
        "{case}: alarm.severity"
    );
    assert_eq!(
        v.get("timeStamp.secondsPastEpoch").and_then(Value::as_i64),
        want["timeStamp"]["secondsPastEpoch"].as_i64(),
        "{case}: timeStamp"
    );
    assert_eq!(
        v.get("timeStamp.nanoseconds").and_then(Value::as_i64),
        want["timeStamp"]["nanoseconds"].as_i64(),
        "{case}: timeStamp.nanoseconds"
    );
}

fn check_value(v: &StructValue, want: &Json, nt: &str, case: &str) {
    match nt {
        "NTScalar" => {
            let r = ScalarReading::from_value(v).expect("NTScalar reads");
            assert_eq!(r.as_f64(), want["value"].as_f64(), "{case}: value");
        }
        "NTEnum" => {
            let r = EnumReading::from_value(v).expect("NTEnum reads");
            assert_eq!(
                r.value.index as i64,
                want["value"]["index"].as_i64().unwrap(),
                "{case}"
            );
            let choices: Vec<String> = want["value"]["choices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap().to_owned())
                .collect();
            assert_eq!(r.value.choices, choices, "{case}");
        }
        "NTNDArray" => {
            let f = NdArrayFrame::from_value(v).expect("NTNDArray reads by name");
            let w = &want["value"];
            assert_eq!(f.data.len() as u64, w["count"].as_u64().unwrap(), "{case}");
            let first: Vec<f64> = (0..8).map(|i| f.data.get_f64(i).unwrap()).collect();
            let want_first: Vec<f64> = w["first"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(first, want_first, "{case}: first pixels");
            assert_eq!(
                f.data.get_f64(f.data.len() - 1),
                w["last"].as_f64(),
                "{case}: last pixel"
            );
            let sum: f64 = (0..f.data.len()).map(|i| f.data.get_f64(i).unwrap()).sum();
            assert_eq!(sum, w["sum"].as_f64().unwrap(), "{case}: pixel sum");
            let sizes: Vec<i64> = want["dimension"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["size"].as_i64().unwrap())
                .collect();
            assert_eq!(
                f.sizes().iter().map(|&s| s as i64).collect::<Vec<_>>(),
                sizes,
                "{case}: dims"
            );
            assert_eq!(
                f.unique_id as i64,
                want["uniqueId"].as_i64().unwrap(),
                "{case}"
            );
            for a in want["attribute"].as_array().unwrap() {
                let name = a["name"].as_str().unwrap();
                let got = f
                    .attribute(name)
                    .unwrap_or_else(|| panic!("{case}: attribute {name}"));
                let got = match got {
                    Value::Any(any) => any.get().cloned().unwrap(),
                    other => other.clone(),
                };
                assert_eq!(
                    got.as_f64(),
                    a["value"].as_f64(),
                    "{case}: attribute {name}"
                );
            }
        }
        other => panic!("{case}: unexpected normative type {other}"),
    }
    check_time_and_alarm(v, want, case);
}

/// Re-encode a decoded value with our encoder in both byte orders and decode it again.
fn round_trip_through_our_encoder(v: &StructValue) {
    for order in [ByteOrder::Little, ByteOrder::Big] {
        let desc = FieldDesc::Struct(v.desc().clone());
        let mut w = Writer::new(order);
        ValueEncoder::default()
            .value(&desc, &Value::Struct(v.clone()), &mut w)
            .unwrap();
        let mut r = pva_codec::Reader::new(w.finish_contiguous(), order);
        let mut cache = TypeCache::new();
        let limits = Limits::default();
        let back = ValueDecoder::new(&mut cache, &limits, &r)
            .value(&desc, &mut r)
            .unwrap();
        assert_eq!(back, Value::Struct(v.clone()));
    }
}

#[test]
fn every_recorded_stream_decodes_to_the_published_values() {
    let cases = manifest();
    assert!(cases.len() >= 12, "the recordings are all there");
    for case in &cases {
        let name = case["case"].as_str().unwrap();
        let nt = case["normative_type"].as_str().unwrap();

        let s2c = decode_stream(&read(case["s2c_file"].as_str().unwrap()));
        assert!(
            matches!(s2c.messages.first(), Some(Message::ValidationRequest(v)) if v.auth_methods.iter().any(|m| m == "ca")),
            "{name}: server opens with a validation request offering ca"
        );
        let want = case["values"].as_array().unwrap();
        assert_eq!(s2c.values.len(), want.len(), "{name}: data messages");
        for (got, want) in s2c.values.iter().zip(want) {
            assert_eq!(got.id(), case["type_id"].as_str().unwrap(), "{name}");
            check_value(got, want, nt, name);
            round_trip_through_our_encoder(got);
        }
        if case["segmented"].as_bool() == Some(true) {
            assert!(
                s2c.segments.contains(&Segment::First) && s2c.segments.contains(&Segment::Last),
                "{name}: recorded as segmented"
            );
        }

        let c2s = decode_stream(&read(case["c2s_file"].as_str().unwrap()));
        let validation = c2s
            .messages
            .iter()
            .find_map(|m| match m {
                Message::ValidationResponse(v) => Some(v),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: client validation"));
        assert_eq!(validation.method, "ca", "{name}");
        assert!(
            validation.ca_identity().is_some(),
            "{name}: ca user and host"
        );
        let pv = case["pv"].as_str().unwrap();
        assert!(
            c2s.messages.iter().any(|m| matches!(m, Message::CreateChannel(c) if c.channels.iter().any(|(_, n)| n == pv))),
            "{name}: channel created by name"
        );
        assert!(
            c2s.messages.iter().any(|m| matches!(m, Message::OpRequest(r) if matches!(r.body, OpRequestBody::Init { .. }))),
            "{name}: operation created with a pvRequest"
        );
    }
}

#[test]
fn recorded_messages_re_encode_to_the_same_bytes() {
    // Messages without values must come out of our encoder byte for byte as the peer sent them.
    for case in manifest() {
        let file = case["c2s_file"].as_str().unwrap();
        let bytes = read(file);
        let mut fd = FrameDecoder::new(1 << 26);
        fd.extend(&bytes);
        decode_all(&mut fd, false, |frame, m| {
            if !matches!(m, Message::CreateChannel(_) | Message::DestroyRequest(_)) {
                return;
            }
            let mut w = Writer::new(frame.header.order);
            m.write(&mut w, Direction::FromClient, &mut ValueEncoder::default())
                .unwrap();
            let out = w.finish_contiguous();
            assert_eq!(&out[8..], &frame.payload[..], "{file}: {m:?}");
        });
    }
}
