//! Channel operations: get, put, put-get, monitor, array, process and rpc, as one request form
//! (client to server) and one response form (server to client), with typed bodies.

use std::sync::Arc;

use crate::bitset::BitSet;
use crate::error::{DecodeError, DecodeResult, EncodeError};
use crate::serialize::{ValueDecoder, ValueEncoder};
use crate::status::Status;
use crate::types::FieldDesc;
use crate::value::{AnyValue, StructValue, Value};
use crate::wire::{Reader, Writer};

use super::{cmd, DataRole, OpTypes};

/// Subcommand bit: create the operation (carries the pvRequest).
pub const SUB_INIT: u8 = 0x08;
/// Subcommand bit: destroy the operation after this request.
pub const SUB_DESTROY: u8 = 0x10;
/// Subcommand bit: get (for put: read back; for monitor with 0x04: start).
pub const SUB_GET: u8 = 0x40;
/// Subcommand bit: put-get "get put"; monitor pipeline ack (and pipeline on init).
pub const SUB_PIPELINE: u8 = 0x80;
/// Monitor start (0x44) and stop (0x04) share this bit.
pub const SUB_PROCESS: u8 = 0x04;
/// Monitor: start sending updates.
pub const MONITOR_START: u8 = SUB_GET | SUB_PROCESS;
/// Monitor: stop sending updates.
pub const MONITOR_STOP: u8 = SUB_PROCESS;

/// What a client asks of an operation (commands 0x0A-0x0E, 0x10, 0x14 from client).
#[derive(Debug, Clone, PartialEq)]
pub struct OpRequest {
    /// Which operation: one of the `cmd` constants.
    pub command: u8,
    /// Server channel id.
    pub sid: u32,
    /// Request id, chosen by the client.
    pub ioid: u32,
    /// Subcommand bits.
    pub subcmd: u8,
    /// What follows the subcommand.
    pub body: OpRequestBody,
}

/// The body of an [`OpRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum OpRequestBody {
    /// Nothing follows (exec of get/process, monitor start/stop, destroy, put's get).
    Empty,
    /// Create: the pvRequest structure; for a pipelined monitor, the initial queue size.
    Init {
        /// The pvRequest (an empty structure when the peer sent the null type).
        pv_request: StructValue,
        /// Monitor with pipelining: how many updates the client can take before acking.
        pipeline_window: Option<u32>,
    },
    /// Put or put-get data: changed fields and the partial value.
    Data {
        /// Fields carried.
        changed: BitSet,
        /// The value; fields not in `changed` are defaults, or the values of the decoder's
        /// [`OpTypes::update_base`](super::OpTypes::update_base) when it gave one.
        value: StructValue,
    },
    /// Monitor pipeline ack: the client freed this many queue slots.
    Ack(u32),
    /// RPC argument: a value of any type.
    Argument(AnyValue),
    /// Array get: a slice.
    ArrayGet {
        /// First element.
        offset: usize,
        /// Elements wanted (0: to the end).
        count: usize,
        /// Step between elements.
        stride: usize,
    },
    /// Array put: a slice and its data.
    ArrayPut {
        /// First element.
        offset: usize,
        /// Elements written.
        count: usize,
        /// Step between elements.
        stride: usize,
        /// The elements.
        value: Value,
    },
    /// Array set length.
    ArraySetLength(usize),
}

/// Decode a pvRequest: a type description then a value (null type: empty structure).
fn decode_pv_request(r: &mut Reader, d: &mut ValueDecoder) -> DecodeResult<StructValue> {
    match d.any(r)?.0.map(|b| *b) {
        None => Ok(StructValue::new(std::sync::Arc::new(
            crate::types::StructDesc::new("", Vec::new()),
        ))),
        Some(Value::Struct(s)) => Ok(s),
        Some(_) => Err(DecodeError::Invalid {
            what: "pvRequest",
            detail: "not a structure".into(),
        }),
    }
}

fn data_type(ops: &dyn OpTypes, ioid: u32, role: DataRole) -> DecodeResult<FieldDesc> {
    ops.op_type(ioid, role)
        .ok_or(DecodeError::UnknownRequest { ioid })
}

/// Decode a BitSet and the partial structure it selects, into a default value of the type.
fn decode_data(
    r: &mut Reader,
    d: &mut ValueDecoder,
    desc: &FieldDesc,
) -> DecodeResult<(BitSet, StructValue)> {
    decode_data_into(r, d, desc, None)
}

/// Decode a BitSet and the partial structure it selects, into `base` when it is of the type
/// (its other fields kept), else into a default value of the type.
fn decode_data_into(
    r: &mut Reader,
    d: &mut ValueDecoder,
    desc: &FieldDesc,
    base: Option<StructValue>,
) -> DecodeResult<(BitSet, StructValue)> {
    let FieldDesc::Struct(s) = desc else {
        return Err(DecodeError::Invalid {
            what: "operation type",
            detail: "data of a non-structure type".into(),
        });
    };
    let changed = BitSet::decode(r)?;
    let mut value = base
        .filter(|b| Arc::ptr_eq(b.desc(), s) || **b.desc() == **s)
        .unwrap_or_else(|| StructValue::new(s.clone()));
    d.partial(&mut value, &changed, r)?;
    Ok((changed, value))
}

impl OpRequest {
    pub(crate) fn decode(
        command: u8,
        r: &mut Reader,
        d: &mut ValueDecoder,
        ops: &dyn OpTypes,
    ) -> DecodeResult<Self> {
        let sid = r.u32()?;
        let ioid = r.u32()?;
        let subcmd = r.u8()?;
        let body = if subcmd & SUB_INIT != 0 {
            let pv_request = decode_pv_request(r, d)?;
            let pipeline_window =
                if command == cmd::MONITOR && subcmd & SUB_PIPELINE != 0 && !r.is_empty() {
                    Some(r.u32()?)
                } else {
                    None
                };
            OpRequestBody::Init {
                pv_request,
                pipeline_window,
            }
        } else if r.is_empty() {
            OpRequestBody::Empty
        } else {
            match command {
                cmd::PUT if subcmd & SUB_GET == 0 => {
                    let (changed, value) =
                        decode_data(r, d, &data_type(ops, ioid, DataRole::Value)?)?;
                    OpRequestBody::Data { changed, value }
                }
                cmd::PUT_GET if subcmd & (SUB_GET | SUB_PIPELINE) == 0 => {
                    let (changed, value) =
                        decode_data(r, d, &data_type(ops, ioid, DataRole::Put)?)?;
                    OpRequestBody::Data { changed, value }
                }
                cmd::MONITOR if subcmd & SUB_PIPELINE != 0 => OpRequestBody::Ack(r.u32()?),
                cmd::RPC => OpRequestBody::Argument(d.any(r)?),
                cmd::ARRAY if subcmd & SUB_GET != 0 => OpRequestBody::ArrayGet {
                    offset: r.size()?,
                    count: r.size()?,
                    stride: r.size()?,
                },
                cmd::ARRAY if subcmd & SUB_PIPELINE != 0 => {
                    OpRequestBody::ArraySetLength(r.size()?)
                }
                cmd::ARRAY => {
                    let offset = r.size()?;
                    let count = r.size()?;
                    let stride = r.size()?;
                    let desc = data_type(ops, ioid, DataRole::Value)?;
                    OpRequestBody::ArrayPut {
                        offset,
                        count,
                        stride,
                        value: d.value(&desc, r)?,
                    }
                }
                _ => OpRequestBody::Empty,
            }
        };
        Ok(OpRequest {
            command,
            sid,
            ioid,
            subcmd,
            body,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer, e: &mut ValueEncoder) -> Result<(), EncodeError> {
        w.u32(self.sid);
        w.u32(self.ioid);
        w.u8(self.subcmd);
        match &self.body {
            OpRequestBody::Empty => {}
            OpRequestBody::Init {
                pv_request,
                pipeline_window,
            } => {
                e.any(&AnyValue::new(Value::Struct(pv_request.clone())), w)?;
                if let Some(n) = pipeline_window {
                    w.u32(*n);
                }
            }
            OpRequestBody::Data { changed, value } => {
                changed.encode(w)?;
                e.partial(value, changed, w)?;
            }
            OpRequestBody::Ack(n) => w.u32(*n),
            OpRequestBody::Argument(a) => e.any(a, w)?,
            OpRequestBody::ArrayGet {
                offset,
                count,
                stride,
            } => {
                w.size(*offset)?;
                w.size(*count)?;
                w.size(*stride)?;
            }
            OpRequestBody::ArrayPut {
                offset,
                count,
                stride,
                value,
            } => {
                w.size(*offset)?;
                w.size(*count)?;
                w.size(*stride)?;
                e.value(&value.desc(), value, w)?;
            }
            OpRequestBody::ArraySetLength(n) => w.size(*n)?,
        }
        Ok(())
    }
}

/// What a server answers for an operation (same commands, from server).
#[derive(Debug, Clone, PartialEq)]
pub struct OpResponse {
    /// Which operation: one of the `cmd` constants.
    pub command: u8,
    /// Request id.
    pub ioid: u32,
    /// Subcommand bits, echoed from the request.
    pub subcmd: u8,
    /// Outcome (monitor updates carry none on the wire and read as OK).
    pub status: Status,
    /// What follows the status.
    pub body: OpResponseBody,
}

/// The body of an [`OpResponse`].
#[derive(Debug, Clone, PartialEq)]
pub enum OpResponseBody {
    /// Nothing follows the status.
    Empty,
    /// Create succeeded: the type of the data this operation carries.
    InitType(FieldDesc),
    /// Put-get create succeeded: the put and get types.
    InitPutGet {
        /// Type of what the client puts.
        put: FieldDesc,
        /// Type of what the server returns.
        get: FieldDesc,
    },
    /// Get data, put read-back, or put-get result.
    Data {
        /// Fields carried.
        changed: BitSet,
        /// The value; fields not in `changed` are defaults.
        value: StructValue,
    },
    /// A monitor update.
    Update {
        /// Fields carried.
        changed: BitSet,
        /// The value; fields not in `changed` are defaults.
        value: StructValue,
        /// Fields that changed more than once since the last update (updates were squashed).
        overrun: BitSet,
    },
    /// RPC result: a value of any type.
    Result(AnyValue),
    /// Array get result.
    Array(Value),
}

impl OpResponse {
    /// True when this response is a monitor update (no status on the wire).
    pub fn is_monitor_update(command: u8, subcmd: u8) -> bool {
        command == cmd::MONITOR && subcmd & (SUB_INIT | SUB_DESTROY) == 0
    }

    pub(crate) fn decode(
        command: u8,
        r: &mut Reader,
        d: &mut ValueDecoder,
        ops: &dyn OpTypes,
    ) -> DecodeResult<Self> {
        let ioid = r.u32()?;
        let subcmd = r.u8()?;
        if Self::is_monitor_update(command, subcmd) {
            let (changed, value) = decode_data_into(
                r,
                d,
                &data_type(ops, ioid, DataRole::Value)?,
                ops.update_base(ioid),
            )?;
            let overrun = if r.is_empty() {
                BitSet::new()
            } else {
                BitSet::decode(r)?
            };
            return Ok(OpResponse {
                command,
                ioid,
                subcmd,
                status: Status::OK,
                body: OpResponseBody::Update {
                    changed,
                    value,
                    overrun,
                },
            });
        }
        let status = Status::decode(r)?;
        let body = if !status.is_success() || r.is_empty() {
            OpResponseBody::Empty
        } else if subcmd & SUB_INIT != 0 {
            match command {
                cmd::PUT_GET => {
                    let put = d.decode_type(r)?;
                    let get = d.decode_type(r)?;
                    match (put, get) {
                        (Some(put), Some(get)) => OpResponseBody::InitPutGet { put, get },
                        _ => return Err(null_type()),
                    }
                }
                cmd::GET | cmd::PUT | cmd::MONITOR | cmd::ARRAY => {
                    OpResponseBody::InitType(d.decode_type(r)?.ok_or_else(null_type)?)
                }
                _ => OpResponseBody::Empty,
            }
        } else {
            match command {
                cmd::GET => data_body(r, d, ops, ioid, DataRole::Value)?,
                cmd::PUT if subcmd & SUB_GET != 0 => data_body(r, d, ops, ioid, DataRole::Value)?,
                cmd::PUT_GET if subcmd & SUB_PIPELINE != 0 => {
                    data_body(r, d, ops, ioid, DataRole::Put)?
                }
                cmd::PUT_GET => data_body(r, d, ops, ioid, DataRole::Get)?,
                cmd::RPC => OpResponseBody::Result(d.any(r)?),
                cmd::ARRAY if subcmd & SUB_GET != 0 => {
                    let desc = data_type(ops, ioid, DataRole::Value)?;
                    OpResponseBody::Array(d.value(&desc, r)?)
                }
                _ => OpResponseBody::Empty,
            }
        };
        Ok(OpResponse {
            command,
            ioid,
            subcmd,
            status,
            body,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer, e: &mut ValueEncoder) -> Result<(), EncodeError> {
        w.u32(self.ioid);
        w.u8(self.subcmd);
        if let OpResponseBody::Update {
            changed,
            value,
            overrun,
        } = &self.body
        {
            changed.encode(w)?;
            e.partial(value, changed, w)?;
            return overrun.encode(w);
        }
        self.status.encode(w)?;
        match &self.body {
            OpResponseBody::Empty | OpResponseBody::Update { .. } => {}
            OpResponseBody::InitType(t) => e.types.encode_desc(t, w)?,
            OpResponseBody::InitPutGet { put, get } => {
                e.types.encode_desc(put, w)?;
                e.types.encode_desc(get, w)?;
            }
            OpResponseBody::Data { changed, value } => {
                changed.encode(w)?;
                e.partial(value, changed, w)?;
            }
            OpResponseBody::Result(a) => e.any(a, w)?,
            OpResponseBody::Array(v) => e.value(&v.desc(), v, w)?,
        }
        Ok(())
    }
}

fn data_body(
    r: &mut Reader,
    d: &mut ValueDecoder,
    ops: &dyn OpTypes,
    ioid: u32,
    role: DataRole,
) -> DecodeResult<OpResponseBody> {
    let (changed, value) = decode_data(r, d, &data_type(ops, ioid, role)?)?;
    Ok(OpResponseBody::Data { changed, value })
}

fn null_type() -> DecodeError {
    DecodeError::Invalid {
        what: "operation type",
        detail: "null type in a successful create".into(),
    }
}
