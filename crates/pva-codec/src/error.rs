//! Typed decode and encode errors. Every decoder returns one of these instead of panicking.

use thiserror::Error;

/// Why a byte sequence could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// Fewer bytes remain than the next item needs.
    #[error("truncated: needed {needed} bytes, {remaining} remain")]
    Truncated { needed: usize, remaining: usize },
    /// A size or count claims more data than the message holds; refused before any allocation.
    #[error("{what} of {claimed} exceeds the {remaining} bytes that remain")]
    SizeExceedsInput {
        what: &'static str,
        claimed: u64,
        remaining: usize,
    },
    /// The first byte of a header was not 0xCA.
    #[error("bad magic byte {0:#04x} (expected 0xca)")]
    BadMagic(u8),
    /// A Size used a form this codec does not accept (e.g. null where a count is needed).
    #[error("invalid size encoding: {0}")]
    InvalidSize(&'static str),
    /// A string was not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// An unknown type code in an introspection description.
    #[error("unknown type code {0:#04x}")]
    UnknownTypeCode(u8),
    /// A type-cache reference (0xFE) to an id never defined on this connection.
    #[error("type cache reference to undefined id {0}")]
    UndefinedTypeId(u16),
    /// Structures nested deeper than the configured limit.
    #[error("nesting deeper than the limit of {0}")]
    TooDeep(usize),
    /// A message payload larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    MessageTooLarge { size: u64, limit: u64 },
    /// Decoding would allocate more value nodes than the input can justify.
    #[error("value would need more than {0} nodes for the bytes given")]
    AllocationBudget(usize),
    /// A union selector beyond the union's members.
    #[error("union selector {selector} but the union has {members} members")]
    BadUnionSelector { selector: u64, members: usize },
    /// A BitSet names a bit beyond the structure it describes.
    #[error("bitset selects bit {bit} but the structure has {bits} bits")]
    BitOutOfRange { bit: usize, bits: usize },
    /// A status byte that is not 0..=3 or 0xFF.
    #[error("invalid status type {0}")]
    BadStatusType(u8),
    /// A value that is well-formed bytes but not valid for its place (e.g. wrong type in a field).
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    /// Segments arrived out of order, or a segmented message was interleaved with another.
    #[error("segmentation error: {0}")]
    Segmentation(&'static str),
    /// Data whose decoding needs the type of an operation that is not known.
    #[error("no type known for request {ioid}")]
    UnknownRequest { ioid: u32 },
    /// A message decoded fully but bytes remain after it.
    #[error("{0} trailing bytes after the message body")]
    TrailingBytes(usize),
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A count or length too big for the wire's 32-bit sizes.
    #[error("{what} of {len} is too large to encode")]
    TooLarge { what: &'static str, len: u64 },
    /// The value does not match the type it is being encoded as.
    #[error("value does not match its type: {0}")]
    TypeMismatch(String),
}

/// Shorthand for decode results.
pub type DecodeResult<T> = Result<T, DecodeError>;
