//! The argument encoding of the DM web service: JSON text, base64-encoded twice, written as a
//! Python bytes literal `b'...'`, exactly as the official Python client puts it in a URL.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Python's `base64.encodebytes` puts a newline after this many output characters.
const MIME_LINE_LENGTH: usize = 76;

/// Why an encoded argument could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// One of the two base64 layers was not valid base64.
    #[error("argument is not valid base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// The decoded bytes were not UTF-8 text.
    #[error("argument is not UTF-8 text: {0}")]
    Utf8(#[from] std::string::FromUtf8Error),
}

/// Encode JSON text the way the official Python client does: `base64.encodebytes` (lines of 76
/// characters, each ending in a newline), then plain base64, then the Python literal `b'...'`.
///
/// ```
/// assert_eq!(dm::encoding::encode_argument("{}"), "b'ZTMwPQo='");
/// ```
pub fn encode_argument(json_text: &str) -> String {
    let inner = python_encodebytes(json_text.as_bytes());
    format!("b'{}'", STANDARD.encode(inner))
}

/// Decode an argument written by [`encode_argument`] or by any DM client, with or without the
/// `b'...'` wrapper.
pub fn decode_argument(encoded: &str) -> Result<String, DecodeError> {
    let trimmed = encoded.trim();
    let unwrapped = strip_bytes_literal(trimmed).unwrap_or(trimmed);
    let inner = STANDARD.decode(without_whitespace(unwrapped.as_bytes()))?;
    Ok(String::from_utf8(
        STANDARD.decode(without_whitespace(&inner))?,
    )?)
}

/// Encode a JSON value as a DM argument.
pub fn encode_json(value: &serde_json::Value) -> String {
    encode_argument(&value.to_string())
}

fn python_encodebytes(data: &[u8]) -> String {
    let flat = STANDARD.encode(data);
    let mut out = String::with_capacity(flat.len() + flat.len() / MIME_LINE_LENGTH + 1);
    for line in flat.as_bytes().chunks(MIME_LINE_LENGTH) {
        out.push_str(std::str::from_utf8(line).expect("base64 output is ASCII"));
        out.push('\n');
    }
    out
}

fn without_whitespace(data: &[u8]) -> Vec<u8> {
    data.iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect()
}

fn strip_bytes_literal(text: &str) -> Option<&str> {
    ["b'", "b\""].iter().find_map(|prefix| {
        let quote = &prefix[1..];
        text.strip_prefix(prefix)?.strip_suffix(quote)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_matches_the_python_client() {
        assert_eq!(encode_argument("{}"), "b'ZTMwPQo='");
        assert_eq!(decode_argument("b'ZTMwPQo='").unwrap(), "{}");
        assert_eq!(decode_argument("ZTMwPQo=").unwrap(), "{}");
    }

    #[test]
    fn long_text_gets_a_newline_every_76_characters() {
        let encoded = python_encodebytes(&[b'x'; 120]);
        let lines: Vec<&str> = encoded.split_terminator('\n').collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), 76);
        assert_eq!(lines[1].len(), 76);
        assert!(encoded.ends_with('\n'));
    }

    #[test]
    fn empty_input_has_no_newline() {
        assert_eq!(python_encodebytes(b""), "");
    }
}
