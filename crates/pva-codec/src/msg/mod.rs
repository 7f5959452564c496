//! Every PVA application message, both directions, as typed values with decode and encode.
//!
//! Decoding an operation's data needs the type that the operation's create reply announced;
//! the caller supplies it through [`OpTypes`] (a connection keeps such a table, and
//! [`OpTypeTable`] is a ready one that learns from create replies).

pub mod channel;
pub mod connection;
pub mod discovery;
pub mod op;

use std::collections::HashMap;
use std::net::IpAddr;

use bytes::Bytes;

use crate::error::{DecodeError, DecodeResult, EncodeError};
use crate::frame::{write_message, Frame};
use crate::header::{Direction, Header, HEADER_SIZE};
use crate::serialize::{ValueDecoder, ValueEncoder};
use crate::status::Status;
use crate::types::{FieldDesc, Limits, TypeCache};
use crate::value::StructValue;
use crate::wire::{Reader, Writer};

pub use channel::{
    CreateChannel, CreateChannelResponse, DestroyChannel, GetField, GetFieldResponse,
};
pub use connection::{ValidationRequest, ValidationResponse};
pub use discovery::{Beacon, Search, SearchResponse, SEARCH_MUST_REPLY, SEARCH_UNICAST};
pub use op::{OpRequest, OpRequestBody, OpResponse, OpResponseBody};

/// Application command codes.
pub mod cmd {
    /// Server beacon (UDP).
    pub const BEACON: u8 = 0x00;
    /// Connection validation (both directions).
    pub const CONNECTION_VALIDATION: u8 = 0x01;
    /// Echo.
    pub const ECHO: u8 = 0x02;
    /// Search (UDP or TCP).
    pub const SEARCH: u8 = 0x03;
    /// Search response.
    pub const SEARCH_RESPONSE: u8 = 0x04;
    /// Authentication exchange (unused by anonymous/ca).
    pub const AUTHNZ: u8 = 0x05;
    /// Access rights change.
    pub const ACL_CHANGE: u8 = 0x06;
    /// Create channel.
    pub const CREATE_CHANNEL: u8 = 0x07;
    /// Destroy channel.
    pub const DESTROY_CHANNEL: u8 = 0x08;
    /// Connection validated.
    pub const CONNECTION_VALIDATED: u8 = 0x09;
    /// Get.
    pub const GET: u8 = 0x0A;
    /// Put.
    pub const PUT: u8 = 0x0B;
    /// Put-get.
    pub const PUT_GET: u8 = 0x0C;
    /// Monitor.
    pub const MONITOR: u8 = 0x0D;
    /// Array.
    pub const ARRAY: u8 = 0x0E;
    /// Destroy request.
    pub const DESTROY_REQUEST: u8 = 0x0F;
    /// Process.
    pub const PROCESS: u8 = 0x10;
    /// Get field (introspection).
    pub const GET_FIELD: u8 = 0x11;
    /// Message (server to client text).
    pub const MESSAGE: u8 = 0x12;
    /// Multiple data (obsolete).
    pub const MULTIPLE_DATA: u8 = 0x13;
    /// RPC.
    pub const RPC: u8 = 0x14;
    /// Cancel request.
    pub const CANCEL_REQUEST: u8 = 0x15;
    /// Origin tag (forwarded UDP).
    pub const ORIGIN_TAG: u8 = 0x16;
}

/// Which of an operation's types a piece of data has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataRole {
    /// The one type of get, put, monitor and array operations.
    Value,
    /// The put type of a put-get.
    Put,
    /// The get type of a put-get.
    Get,
}

/// Looks up the type an operation's data is decoded with.
pub trait OpTypes {
    /// The type of request `ioid`'s data in `role`, if known.
    fn op_type(&self, ioid: u32, role: DataRole) -> Option<FieldDesc>;

    /// A value to decode monitor `ioid`'s next update into: the fields the update does not
    /// carry keep the base's values, so the result is the merged full value, made by sharing
    /// the base's unchanged parts. `None` (the default) decodes into a default value, whose
    /// fields outside the update are defaults.
    fn update_base(&self, _ioid: u32) -> Option<StructValue> {
        None
    }
}

/// No operations known: decoding any operation data fails with `UnknownRequest`.
pub struct NoOps;

impl OpTypes for NoOps {
    fn op_type(&self, _: u32, _: DataRole) -> Option<FieldDesc> {
        None
    }
}

/// A table of operation types that can learn them from create replies as they pass.
#[derive(Debug, Default, Clone)]
pub struct OpTypeTable {
    types: HashMap<(u32, DataRole), FieldDesc>,
}

impl OpTypeTable {
    /// An empty table.
    pub fn new() -> Self {
        OpTypeTable::default()
    }

    /// Record the type of `ioid`'s data in `role`.
    pub fn insert(&mut self, ioid: u32, role: DataRole, desc: FieldDesc) {
        self.types.insert((ioid, role), desc);
    }

    /// Forget request `ioid`.
    pub fn remove(&mut self, ioid: u32) {
        self.types.retain(|(id, _), _| *id != ioid);
    }

    /// Record the types a create reply announces.
    pub fn learn(&mut self, m: &Message) {
        if let Message::OpResponse(r) = m {
            match &r.body {
                OpResponseBody::InitType(t) => self.insert(r.ioid, DataRole::Value, t.clone()),
                OpResponseBody::InitPutGet { put, get } => {
                    self.insert(r.ioid, DataRole::Put, put.clone());
                    self.insert(r.ioid, DataRole::Get, get.clone());
                }
                _ => {}
            }
        }
    }
}

impl OpTypes for OpTypeTable {
    fn op_type(&self, ioid: u32, role: DataRole) -> Option<FieldDesc> {
        self.types.get(&(ioid, role)).cloned()
    }
}

/// A reference to one request (destroy request, cancel request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestRef {
    /// Server channel id.
    pub sid: u32,
    /// Request id.
    pub ioid: u32,
}

/// Severity of a [`ServerMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Information.
    Info,
    /// Warning.
    Warning,
    /// Error.
    Error,
    /// Fatal error.
    Fatal,
}

/// Text from the server about a request (command 0x12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMessage {
    /// The request it is about.
    pub ioid: u32,
    /// Severity.
    pub kind: MessageKind,
    /// The text.
    pub text: String,
}

/// Any application message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Server beacon.
    Beacon(discovery::Beacon),
    /// Server's opening validation request.
    ValidationRequest(ValidationRequest),
    /// Client's validation response with its credentials.
    ValidationResponse(ValidationResponse),
    /// Server's verdict on the validation.
    Validated(Status),
    /// Echo with its payload (either direction).
    Echo(Bytes),
    /// Channel search.
    Search(Search),
    /// Search answer.
    SearchResponse(SearchResponse),
    /// Create channels.
    CreateChannel(CreateChannel),
    /// Create channel answer.
    CreateChannelResponse(CreateChannelResponse),
    /// Destroy a channel (either direction).
    DestroyChannel(DestroyChannel),
    /// An operation request from the client.
    OpRequest(OpRequest),
    /// An operation response from the server.
    OpResponse(OpResponse),
    /// Destroy a request.
    DestroyRequest(RequestRef),
    /// Cancel a request.
    CancelRequest(RequestRef),
    /// Ask a channel's type.
    GetField(GetField),
    /// A channel's type.
    GetFieldResponse(GetFieldResponse),
    /// Server text about a request.
    Message(ServerMessage),
    /// Origin of a forwarded UDP message.
    OriginTag(IpAddr),
    /// A command this codec does not model; kept whole.
    Unknown {
        /// Command code.
        command: u8,
        /// The payload.
        payload: Bytes,
    },
}

/// The per-connection state decoding needs: the receive-side type cache, limits, and the
/// operations' types.
pub struct DecodeContext<'a> {
    /// Receive-side type cache of this connection.
    pub cache: &'a mut TypeCache,
    /// Limits in force.
    pub limits: &'a Limits,
    /// Operation types for data-bearing messages.
    pub ops: &'a dyn OpTypes,
}

fn is_op(command: u8) -> bool {
    matches!(
        command,
        cmd::GET | cmd::PUT | cmd::PUT_GET | cmd::MONITOR | cmd::ARRAY | cmd::PROCESS | cmd::RPC
    )
}

/// Decode the application messages of one UDP datagram (searches, search responses,
/// beacons): each has its own header, none is segmented, and none needs connection state.
/// Decoding stops at the first malformed message; control messages are passed over.
pub fn decode_datagram(datagram: Bytes) -> Vec<DecodeResult<Message>> {
    let limits = Limits::default();
    let mut out = Vec::new();
    let mut rest = datagram;
    while rest.len() >= HEADER_SIZE {
        let header = match Header::decode(&rest) {
            Ok(h) => h,
            Err(e) => {
                out.push(Err(e));
                break;
            }
        };
        let size = if header.control {
            0
        } else {
            header.payload_size as usize
        };
        if rest.len() - HEADER_SIZE < size {
            out.push(Err(DecodeError::Truncated {
                needed: size,
                remaining: rest.len() - HEADER_SIZE,
            }));
            break;
        }
        let payload = rest.slice(HEADER_SIZE..HEADER_SIZE + size);
        rest = rest.slice(HEADER_SIZE + size..);
        if header.control {
            continue;
        }
        let mut cache = TypeCache::new();
        out.push(Message::decode(
            &Frame { header, payload },
            &mut DecodeContext {
                cache: &mut cache,
                limits: &limits,
                ops: &NoOps,
            },
        ));
    }
    out
}

impl Message {
    /// Decode an application frame. Control frames are not messages: see `frame::control`.
    pub fn decode(frame: &Frame, ctx: &mut DecodeContext) -> DecodeResult<Message> {
        let h = &frame.header;
        if h.control {
            return Err(DecodeError::Invalid {
                what: "message",
                detail: "control frames carry no application message".into(),
            });
        }
        let mut r = Reader::new(frame.payload.clone(), h.order);
        let from_server = h.direction == Direction::FromServer;
        let mut d = ValueDecoder::new(ctx.cache, ctx.limits, &r);
        let r = &mut r;
        let msg = match h.command {
            cmd::BEACON => Message::Beacon(discovery::Beacon::decode(r, &mut d)?),
            cmd::CONNECTION_VALIDATION if from_server => {
                Message::ValidationRequest(ValidationRequest::decode(r)?)
            }
            cmd::CONNECTION_VALIDATION => {
                Message::ValidationResponse(ValidationResponse::decode(r, &mut d)?)
            }
            cmd::CONNECTION_VALIDATED => Message::Validated(Status::decode(r)?),
            cmd::ECHO => Message::Echo(r.take_rest()),
            cmd::SEARCH => Message::Search(Search::decode(r)?),
            cmd::SEARCH_RESPONSE => Message::SearchResponse(SearchResponse::decode(r)?),
            cmd::CREATE_CHANNEL if from_server => {
                Message::CreateChannelResponse(CreateChannelResponse::decode(r)?)
            }
            cmd::CREATE_CHANNEL => Message::CreateChannel(CreateChannel::decode(r)?),
            cmd::DESTROY_CHANNEL => Message::DestroyChannel(DestroyChannel::decode(r)?),
            c if is_op(c) && from_server => {
                Message::OpResponse(OpResponse::decode(c, r, &mut d, ctx.ops)?)
            }
            c if is_op(c) => Message::OpRequest(OpRequest::decode(c, r, &mut d, ctx.ops)?),
            cmd::DESTROY_REQUEST => Message::DestroyRequest(RequestRef {
                sid: r.u32()?,
                ioid: r.u32()?,
            }),
            cmd::CANCEL_REQUEST => Message::CancelRequest(RequestRef {
                sid: r.u32()?,
                ioid: r.u32()?,
            }),
            cmd::GET_FIELD if from_server => {
                Message::GetFieldResponse(GetFieldResponse::decode(r, &mut d)?)
            }
            cmd::GET_FIELD => Message::GetField(GetField::decode(r)?),
            cmd::MESSAGE => Message::Message(ServerMessage {
                ioid: r.u32()?,
                kind: match r.u8()? {
                    0 => MessageKind::Info,
                    1 => MessageKind::Warning,
                    2 => MessageKind::Error,
                    _ => MessageKind::Fatal,
                },
                text: r.string()?,
            }),
            cmd::ORIGIN_TAG => Message::OriginTag(r.address()?),
            command => Message::Unknown {
                command,
                payload: r.take_rest(),
            },
        };
        Ok(msg)
    }

    /// The command code this message travels under.
    pub fn command(&self) -> u8 {
        match self {
            Message::Beacon(_) => cmd::BEACON,
            Message::ValidationRequest(_) | Message::ValidationResponse(_) => {
                cmd::CONNECTION_VALIDATION
            }
            Message::Validated(_) => cmd::CONNECTION_VALIDATED,
            Message::Echo(_) => cmd::ECHO,
            Message::Search(_) => cmd::SEARCH,
            Message::SearchResponse(_) => cmd::SEARCH_RESPONSE,
            Message::CreateChannel(_) | Message::CreateChannelResponse(_) => cmd::CREATE_CHANNEL,
            Message::DestroyChannel(_) => cmd::DESTROY_CHANNEL,
            Message::OpRequest(o) => o.command,
            Message::OpResponse(o) => o.command,
            Message::DestroyRequest(_) => cmd::DESTROY_REQUEST,
            Message::CancelRequest(_) => cmd::CANCEL_REQUEST,
            Message::GetField(_) | Message::GetFieldResponse(_) => cmd::GET_FIELD,
            Message::Message(_) => cmd::MESSAGE,
            Message::OriginTag(_) => cmd::ORIGIN_TAG,
            Message::Unknown { command, .. } => *command,
        }
    }

    /// Append this message, with its header, to `w`. `direction` is the sender's side.
    pub fn write(
        &self,
        w: &mut Writer,
        direction: Direction,
        e: &mut ValueEncoder,
    ) -> Result<(), EncodeError> {
        write_message(w, direction, self.command(), |w| self.encode_body(w, e))
    }

    fn encode_body(&self, w: &mut Writer, e: &mut ValueEncoder) -> Result<(), EncodeError> {
        match self {
            Message::Beacon(b) => b.encode(w, e)?,
            Message::ValidationRequest(v) => v.encode(w)?,
            Message::ValidationResponse(v) => v.encode(w, e)?,
            Message::Validated(s) => s.encode(w)?,
            Message::Echo(b) => w.shared(b),
            Message::Search(s) => s.encode(w)?,
            Message::SearchResponse(s) => s.encode(w)?,
            Message::CreateChannel(c) => c.encode(w)?,
            Message::CreateChannelResponse(c) => c.encode(w)?,
            Message::DestroyChannel(d) => d.encode(w),
            Message::OpRequest(o) => o.encode(w, e)?,
            Message::OpResponse(o) => o.encode(w, e)?,
            Message::DestroyRequest(r) | Message::CancelRequest(r) => {
                w.u32(r.sid);
                w.u32(r.ioid);
            }
            Message::GetField(g) => g.encode(w)?,
            Message::GetFieldResponse(g) => g.encode(w, &mut e.types)?,
            Message::Message(m) => {
                w.u32(m.ioid);
                w.u8(m.kind as u8);
                w.string(&m.text)?;
            }
            Message::OriginTag(a) => w.address(*a),
            Message::Unknown { payload, .. } => w.shared(payload),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;
    use crate::header::Direction;
    use crate::types::{ScalarType, StructDesc};
    use crate::value::{StructValue, Value};
    use crate::wire::ByteOrder;
    use crate::BitSet;
    use std::sync::Arc;

    fn roundtrip(m: &Message, dir: Direction, order: ByteOrder, ops: &dyn OpTypes) -> Message {
        let mut w = Writer::new(order);
        m.write(&mut w, dir, &mut ValueEncoder::default()).unwrap();
        let mut fd = FrameDecoder::new(1 << 24);
        fd.extend(&w.finish_contiguous());
        let frame = fd.next_frame().unwrap().unwrap();
        assert_eq!(frame.header.direction, dir);
        let mut cache = TypeCache::new();
        let limits = Limits::default();
        Message::decode(
            &frame,
            &mut DecodeContext {
                cache: &mut cache,
                limits: &limits,
                ops,
            },
        )
        .unwrap()
    }

    #[test]
    fn monitor_update_round_trips_with_its_type() {
        let desc = Arc::new(
            StructDesc::builder("epics:nt/NTScalar:1.0")
                .scalar("value", ScalarType::F64)
                .build(),
        );
        let mut ops = OpTypeTable::new();
        ops.insert(7, DataRole::Value, FieldDesc::Struct(desc.clone()));
        let mut value = StructValue::new(desc);
        value.set("value", 2.5).unwrap();
        let m = Message::OpResponse(OpResponse {
            command: cmd::MONITOR,
            ioid: 7,
            subcmd: 0,
            status: Status::OK,
            body: OpResponseBody::Update {
                changed: BitSet::with(1),
                value: value.clone(),
                overrun: BitSet::new(),
            },
        });
        for order in [ByteOrder::Little, ByteOrder::Big] {
            assert_eq!(roundtrip(&m, Direction::FromServer, order, &ops), m);
        }
        let Message::OpResponse(r) = roundtrip(&m, Direction::FromServer, ByteOrder::Big, &ops)
        else {
            panic!("not an op response")
        };
        let OpResponseBody::Update { value: got, .. } = r.body else {
            panic!("not an update")
        };
        assert_eq!(got.get("value"), Some(&Value::F64(2.5)));
    }

    #[test]
    fn data_for_an_unknown_request_is_a_typed_error() {
        let m = Message::OpResponse(OpResponse {
            command: cmd::GET,
            ioid: 9,
            subcmd: 0,
            status: Status::OK,
            body: OpResponseBody::Empty,
        });
        let mut w = Writer::new(ByteOrder::Little);
        m.write(&mut w, Direction::FromServer, &mut ValueEncoder::default())
            .unwrap();
        // A GET reply with data bytes after the status but no known type.
        let mut bytes = w.finish_contiguous().to_vec();
        bytes.extend_from_slice(&[1, 2]);
        bytes[4] += 2;
        let mut fd = FrameDecoder::new(1024);
        fd.extend(&bytes);
        let frame = fd.next_frame().unwrap().unwrap();
        let mut cache = TypeCache::new();
        let limits = Limits::default();
        let err = Message::decode(
            &frame,
            &mut DecodeContext {
                cache: &mut cache,
                limits: &limits,
                ops: &NoOps,
            },
        )
        .unwrap_err();
        assert_eq!(err, DecodeError::UnknownRequest { ioid: 9 });
    }

    #[test]
    fn a_datagram_holding_two_messages_decodes_both_without_a_stream_decoder() {
        let search = Message::Search(Search {
            sequence: 1,
            flags: 0,
            response_address: "0.0.0.0".parse().unwrap(),
            response_port: 5076,
            protocols: vec!["tcp".into()],
            channels: vec![(9, "x".into())],
        });
        let mut w = Writer::new(ByteOrder::Big);
        crate::frame::write_control(&mut w, Direction::FromClient, 2, 0);
        search
            .write(&mut w, Direction::FromClient, &mut ValueEncoder::default())
            .unwrap();
        search
            .write(&mut w, Direction::FromClient, &mut ValueEncoder::default())
            .unwrap();
        let mut bytes = w.finish_contiguous().to_vec();
        let got = decode_datagram(Bytes::from(bytes.clone()));
        assert_eq!(got, vec![Ok(search.clone()), Ok(search)]);
        // A truncated last message is reported, not read past.
        bytes.truncate(bytes.len() - 3);
        let got = decode_datagram(Bytes::from(bytes));
        assert!(matches!(
            got.last(),
            Some(Err(DecodeError::Truncated { .. }))
        ));
    }

    #[test]
    fn search_round_trips() {
        let m = Message::Search(Search {
            sequence: 42,
            flags: SEARCH_MUST_REPLY,
            response_address: "127.0.0.1".parse().unwrap(),
            response_port: 5076,
            protocols: vec!["tcp".into()],
            channels: vec![(1, "a".into()), (2, "bdp:wf1:State".into())],
        });
        assert_eq!(
            roundtrip(&m, Direction::FromClient, ByteOrder::Big, &NoOps),
            m
        );
    }
}
