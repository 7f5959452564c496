//! Sans-I/O PVAccess codec.
//!
//! Everything needed to read and write what PVAccess peers (pvxs/p4p, pvAccessCPP/pvapy) put on
//! the wire, with no sockets and no runtime: feed bytes in, get typed messages and values out.
//! Every decoder returns a typed [`DecodeError`] instead of panicking, and refuses sizes that
//! claim more than the input holds before allocating for them. Arrays are `Bytes`-backed so large
//! payloads are neither copied on decode nor on encode.

pub mod array;
pub mod bitset;
pub mod error;
pub mod frame;
pub mod header;
pub mod msg;
pub mod nt;
pub mod pvrequest;
pub mod serialize;
pub mod status;
pub mod types;
pub mod value;
pub mod wire;

pub use array::{Element, PodArray, ScalarArray};
pub use bitset::BitSet;
pub use error::{DecodeError, DecodeResult, EncodeError};
pub use frame::{Frame, FrameDecoder};
pub use header::{Direction, Header, Segment};
pub use msg::{decode_datagram, DecodeContext, Message};
pub use pvrequest::{PvRequest, PvRequestError};
pub use serialize::{ValueDecoder, ValueEncoder};
pub use status::{Status, StatusKind};
pub use types::{
    ArrayKind, FieldDesc, Limits, Member, ScalarType, StructDesc, TypeCache, UnionDesc,
};
pub use value::{AnyValue, StructArray, StructValue, UnionArray, UnionValue, Value, ValueError};
pub use wire::{ByteOrder, Guid, Reader, Writer};
