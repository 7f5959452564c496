//! The operations of a server connection: creating get, put, rpc and monitor requests within
//! the limits, running their sub-commands, and moving monitor updates out within each
//! monitor's flow-control window.

use std::collections::HashMap;
use std::sync::Arc;

use pva_codec::msg::op::{SUB_DESTROY, SUB_GET, SUB_INIT, SUB_PIPELINE, SUB_PROCESS};
use pva_codec::msg::{
    cmd, DataRole, OpRequest, OpRequestBody, OpResponse, OpResponseBody, OpTypes,
};
use pva_codec::{AnyValue, BitSet, FieldDesc, Message, PvRequest, Status, Value};

use super::{Channel, Out, ServerConn, DEFAULT_QUEUE_SIZE};
use crate::server::access::{AccessPolicy, WriteKind};
use crate::server::distributor::DistributorRequest;
use crate::server::select::Selection;
use crate::server::shared_pv::CLOSED;
use crate::server::source::PeerInfo;
use crate::server::stats::{Refusal, ServerStats};
use crate::server::subscription::{SubscribeOptions, Subscription};

/// Why a get or monitor with a field selection cannot serve a value: the PV was given a value
/// of another type after the operation was created.
const TYPE_CHANGED: &str = "the PV changed type since this request was created";

pub(super) enum OpKind {
    Get,
    Put,
    Rpc,
    Monitor(MonitorOp),
}

pub(super) struct MonitorOp {
    sub: Arc<Subscription>,
    pipeline: bool,
    /// Updates the client can still take (pipeline only).
    window: u32,
    running: bool,
}

pub(super) struct Op {
    /// The channel the operation belongs to.
    pub(super) sid: u32,
    command: u8,
    desc: FieldDesc,
    /// The pvRequest's field selection (get and monitor); `None` serves the whole PV.
    selection: Option<Selection>,
    kind: OpKind,
}

/// The types of a connection's operations, for decoding the data the client sends with them
/// (a put's value).
pub(super) struct OpDescs<'a>(pub(super) &'a HashMap<u32, Op>);

impl OpTypes for OpDescs<'_> {
    fn op_type(&self, ioid: u32, role: DataRole) -> Option<FieldDesc> {
        match role {
            DataRole::Value => self.0.get(&ioid).map(|o| o.desc.clone()),
            DataRole::Put | DataRole::Get => None,
        }
    }
}

/// Ask `access` whether `peer` may write `ch`; a refusal is counted in `stats`, logged
/// (rate-limited) and becomes the error status for the client.
fn check_write(
    access: &Option<Arc<dyn AccessPolicy>>,
    stats: &ServerStats,
    peer: &PeerInfo,
    ch: &Channel,
    kind: WriteKind,
) -> Result<(), Status> {
    let (Some(policy), true) = (access, ch.from_source) else {
        return Ok(());
    };
    policy.check_write(peer, &ch.name, kind).map_err(|denied| {
        stats.refuse(Refusal::Write, peer.addr, format_args!("{denied}"));
        Status::error(denied.reason)
    })
}

fn status_reply(command: u8, ioid: u32, subcmd: u8, status: Status) -> Message {
    Message::OpResponse(OpResponse {
        command,
        ioid,
        subcmd,
        status,
        body: OpResponseBody::Empty,
    })
}

/// A data reply with the whole of `value` marked changed.
fn data_reply(command: u8, ioid: u32, subcmd: u8, value: pva_codec::StructValue) -> Message {
    Message::OpResponse(OpResponse {
        command,
        ioid,
        subcmd,
        status: Status::OK,
        body: OpResponseBody::Data {
            changed: BitSet::with(0),
            value,
        },
    })
}

impl ServerConn {
    /// Handle one operation request; the reply to send, if it has one.
    pub(super) fn op_request(&mut self, r: OpRequest) -> Option<Message> {
        let OpRequest {
            command,
            sid,
            ioid,
            subcmd,
            body,
        } = r;
        if subcmd & SUB_INIT != 0 {
            return Some(self.op_init(command, sid, ioid, subcmd, body));
        }
        let Some(op) = self.ops.get_mut(&ioid) else {
            return Some(status_reply(
                command,
                ioid,
                subcmd,
                Status::error("no such request"),
            ));
        };
        let Some(ch) = self.channels.get(&op.sid) else {
            return Some(status_reply(
                command,
                ioid,
                subcmd,
                Status::error("channel gone"),
            ));
        };
        let pv = ch.pv.clone();
        let reply = match (&mut op.kind, body) {
            (OpKind::Get, _) => {
                let value = match (pv.fetch(), &op.selection) {
                    (None, _) => Err(CLOSED),
                    (Some(current), None) => Ok(current),
                    (Some(current), Some(selection)) => {
                        selection.value(&current).ok_or(TYPE_CHANGED)
                    }
                };
                Some(match value {
                    Ok(value) => data_reply(command, ioid, subcmd, value),
                    Err(why) => status_reply(command, ioid, subcmd, Status::error(why)),
                })
            }
            (OpKind::Put, _) if subcmd & SUB_GET != 0 => Some(match pv.fetch() {
                Some(current) => data_reply(command, ioid, subcmd, current),
                None => status_reply(command, ioid, subcmd, Status::error(CLOSED)),
            }),
            (OpKind::Put, OpRequestBody::Data { changed, value }) => {
                let status =
                    match check_write(&self.access, &self.stats, &self.peer, ch, WriteKind::Put) {
                        Err(refused) => refused,
                        Ok(()) => pv.put(&value, &changed, &self.peer),
                    };
                Some(status_reply(command, ioid, subcmd, status))
            }
            (OpKind::Put, _) => Some(status_reply(
                command,
                ioid,
                subcmd,
                Status::error("put without data"),
            )),
            (OpKind::Rpc, OpRequestBody::Argument(arg)) => {
                let none = Value::Any(AnyValue(None));
                let argument = arg.get().unwrap_or(&none);
                let result = check_write(&self.access, &self.stats, &self.peer, ch, WriteKind::Rpc)
                    .and_then(|()| pv.rpc(argument, &self.peer));
                let (status, body) = match result {
                    Ok(v) => (Status::OK, OpResponseBody::Result(AnyValue::new(v))),
                    Err(s) => (s, OpResponseBody::Empty),
                };
                Some(Message::OpResponse(OpResponse {
                    command,
                    ioid,
                    subcmd,
                    status,
                    body,
                }))
            }
            (OpKind::Rpc, _) => Some(status_reply(
                command,
                ioid,
                subcmd,
                Status::error("rpc without argument"),
            )),
            // A start, stop or ack: the updates it lets out go with the next transmit.
            (OpKind::Monitor(m), body) => {
                if let OpRequestBody::Ack(n) = body {
                    m.window = m.window.saturating_add(n);
                }
                if subcmd & SUB_PROCESS != 0 {
                    m.running = subcmd & SUB_GET != 0;
                }
                None
            }
        };
        if subcmd & SUB_DESTROY != 0 {
            self.ops.remove(&ioid);
        }
        reply
    }

    fn op_init(
        &mut self,
        command: u8,
        sid: u32,
        ioid: u32,
        subcmd: u8,
        body: OpRequestBody,
    ) -> Message {
        let fail = |s: &str| status_reply(command, ioid, subcmd, Status::error(s));
        let Some(ch) = self.channels.get(&sid) else {
            return fail("no such channel");
        };
        let refusal = if self.ops.len() >= self.limits.max_operations {
            Some((
                Refusal::Operations,
                format!(
                    "too many operations on this connection (max_operations = {})",
                    self.limits.max_operations
                ),
            ))
        } else if self.ops.values().filter(|op| op.sid == sid).count()
            >= self.limits.max_operations_per_channel
        {
            Some((
                Refusal::OperationsPerChannel,
                format!(
                    "too many operations on channel '{}' (max_operations_per_channel = {})",
                    ch.name, self.limits.max_operations_per_channel
                ),
            ))
        } else {
            None
        };
        if let Some((kind, why)) = refusal {
            self.stats.refuse(
                kind,
                self.peer.addr,
                format_args!("refused an operation: {why}"),
            );
            return fail(&why);
        }
        if self.ops.contains_key(&ioid) {
            return fail("request id already in use");
        }
        let OpRequestBody::Init {
            pv_request,
            pipeline_window,
        } = body
        else {
            return fail("create without pvRequest");
        };
        if command != cmd::RPC && !ch.pv.is_open() {
            return fail(CLOSED);
        }
        let full = ch.pv.current().desc().clone();
        let request = PvRequest::from_value(&pv_request);
        let selection = match command {
            cmd::GET | cmd::MONITOR => match Selection::new(&full, &request) {
                Ok(s) => s,
                Err(e) => return fail(&e.to_string()),
            },
            _ => None,
        };
        let desc = FieldDesc::Struct(selection.as_ref().map_or(full, |s| s.desc().clone()));
        let kind = match command {
            cmd::GET => OpKind::Get,
            cmd::PUT => {
                if !ch.pv.is_writable() {
                    return fail("this PV is read-only");
                }
                OpKind::Put
            }
            cmd::RPC => OpKind::Rpc,
            cmd::MONITOR => {
                let queue = request
                    .queue_size()
                    .map_or(DEFAULT_QUEUE_SIZE, |q| q as usize)
                    .clamp(1, self.limits.max_queue_size);
                let pipeline = subcmd & SUB_PIPELINE != 0 || request.pipeline();
                let interest = selection.as_ref().map(|s| s.interest().clone());
                let distributor = match DistributorRequest::from_pv_request(&request) {
                    Some(Ok(share)) => Some(share),
                    Some(Err(why)) => return fail(&why),
                    None => None,
                };
                OpKind::Monitor(MonitorOp {
                    sub: ch.pv.subscribe_with(
                        queue,
                        self.waker.clone(),
                        SubscribeOptions {
                            peer: Some(self.peer.addr),
                            interest,
                            distributor,
                            max_bytes: Some(self.limits.max_queue_bytes),
                        },
                    ),
                    pipeline,
                    window: pipeline_window.unwrap_or(queue as u32),
                    running: false,
                })
            }
            _ => return fail("operation not supported by this server"),
        };
        self.ops.insert(
            ioid,
            Op {
                sid,
                command,
                desc: desc.clone(),
                selection,
                kind,
            },
        );
        Message::OpResponse(OpResponse {
            command,
            ioid,
            subcmd,
            status: Status::OK,
            body: if command == cmd::RPC {
                OpResponseBody::Empty
            } else {
                OpResponseBody::InitType(desc)
            },
        })
    }

    /// Queue up to `max` monitor updates to send, as far as each monitor's window allows,
    /// and the end of each monitor whose PV was closed once its queue is sent (at once when
    /// it is stopped). Returns how many updates were queued.
    pub(super) fn poll_monitors(&mut self, max: usize) -> usize {
        let mut taken = 0;
        let mut ended = Vec::new();
        let mut batch = std::mem::take(&mut self.batch);
        for (&ioid, op) in self.ops.iter_mut() {
            let OpKind::Monitor(m) = &mut op.kind else {
                continue;
            };
            if m.running && taken < max {
                let allowed = if m.pipeline {
                    (m.window as usize).min(max - taken)
                } else {
                    max - taken
                };
                m.sub.pop_batch(allowed, &mut batch);
            }
            for u in batch.drain(..) {
                let (value, changed, overrun) = match &op.selection {
                    None => (u.value, u.changed, u.overrun),
                    Some(s) => match s.value(&u.value) {
                        Some(v) => (v, s.bits(&u.changed), s.bits(&u.overrun)),
                        None => {
                            tracing::warn!(ioid, "{TYPE_CHANGED}: update not sent");
                            continue;
                        }
                    },
                };
                if m.pipeline {
                    m.window -= 1;
                }
                taken += 1;
                self.out.push(Out::Msg(Message::OpResponse(OpResponse {
                    command: op.command,
                    ioid,
                    subcmd: 0,
                    status: Status::OK,
                    body: OpResponseBody::Update {
                        changed,
                        value,
                        overrun,
                    },
                })));
            }
            if m.sub.is_finished() && (!m.running || !m.sub.has_pending()) {
                self.out.push(Out::Msg(status_reply(
                    op.command,
                    ioid,
                    SUB_DESTROY,
                    Status::OK,
                )));
                ended.push(ioid);
            }
        }
        for ioid in ended {
            self.ops.remove(&ioid);
        }
        self.batch = batch;
        taken
    }

    /// True when some running monitor has an update it may send now, or a monitor its end.
    pub(super) fn monitors_ready(&self) -> bool {
        self.ops.values().any(|op| match &op.kind {
            OpKind::Monitor(m) => {
                let can_send = m.running && (!m.pipeline || m.window > 0) && m.sub.has_pending();
                can_send || (m.sub.is_finished() && (!m.running || !m.sub.has_pending()))
            }
            _ => false,
        })
    }
}
