//! The argument encoding against pairs produced by the official Python client's method
//! (`base64.b64encode(base64.encodebytes(text))`, written as a bytes literal).

use dm::encoding::{decode_argument, encode_argument, encode_json};

/// A JSON text long enough that `encodebytes` breaks it into three lines.
const LONG_JSON: &str = r#"{"filePath": "/data/scan_0001.h5", "experimentName": "bdp-2024-1", "pvaPrefix": "bdp:wf1:", "expectedFrames": 1000, "note": "a long enough argsDict to need more than one base64 line"}"#;
const LONG_ENCODED: &str = "b'ZXlKbWFXeGxVR0YwYUNJNklDSXZaR0YwWVM5elkyRnVYekF3TURFdWFEVWlMQ0FpWlhod1pYSnBiV1Z1ZEU1aGJXVWlPaUFpWW1SdwpMVEl3TWpRdE1TSXNJQ0p3ZG1GUWNtVm1hWGdpT2lBaVltUndPbmRtTVRvaUxDQWlaWGh3WldOMFpXUkdjbUZ0WlhNaU9pQXhNREF3CkxDQWlibTkwWlNJNklDSmhJR3h2Ym1jZ1pXNXZkV2RvSUdGeVozTkVhV04wSUhSdklHNWxaV1FnYlc5eVpTQjBhR0Z1SUc5dVpTQmkKWVhObE5qUWdiR2x1WlNKOQo='";

#[test]
fn empty_object_is_sent_as_the_python_client_sends_it() {
    assert_eq!(encode_argument("{}"), "b'ZTMwPQo='");
    assert_eq!(encode_json(&serde_json::json!({})), "b'ZTMwPQo='");
}

#[test]
fn long_json_matches_the_python_client_with_its_line_breaks() {
    assert_eq!(encode_argument(LONG_JSON), LONG_ENCODED);
}

#[test]
fn decoding_accepts_the_literal_wrapper_or_none() {
    assert_eq!(decode_argument("b'ZTMwPQo='").unwrap(), "{}");
    assert_eq!(decode_argument("ZTMwPQo=").unwrap(), "{}");
    assert_eq!(decode_argument(LONG_ENCODED).unwrap(), LONG_JSON);
    let bare = LONG_ENCODED.trim_start_matches("b'").trim_end_matches('\'');
    assert_eq!(decode_argument(bare).unwrap(), LONG_JSON);
}

#[test]
fn round_trips_keep_every_character() {
    for text in [
        "",
        "\"x\"",
        "{\"a\": [1, 2, 3], \"unicode\": \"é ✓ 検出器\"}",
        &"z".repeat(1000),
        &format!("{{\"k\": \"{}\"}}", "+/=".repeat(50)),
    ] {
        assert_eq!(decode_argument(&encode_argument(text)).unwrap(), text);
    }
}

#[test]
fn the_url_quoted_form_of_the_python_client_decodes() {
    let url = reqwest::Url::parse("http://localhost/dm/x?argsDict=b%27ZTMwPQo%3D%27").unwrap();
    let (_, value) = url.query_pairs().next().unwrap();
    assert_eq!(value, "b'ZTMwPQo='");
    assert_eq!(decode_argument(&value).unwrap(), "{}");
}

#[test]
fn garbage_is_refused_with_a_reason() {
    let err = decode_argument("b'not base64!!'").unwrap_err();
    assert!(err.to_string().contains("base64"), "{err}");
}
