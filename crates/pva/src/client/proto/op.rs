//! Each operation's sequence of sub-commands: create, then get (init, exec), put (init, read
//! the current value, write), rpc (init, call), info (get-field) and monitor (init, start,
//! updates merged into the full value and counted against the window, destroy).

use std::collections::HashMap;
use std::sync::Arc;

use pva_codec::msg::op::{MONITOR_START, SUB_DESTROY, SUB_GET, SUB_INIT, SUB_PIPELINE};
use pva_codec::msg::{
    cmd, DataRole, GetField, OpRequest, OpRequestBody, OpResponse, OpResponseBody, OpTypeTable,
    OpTypes,
};
use pva_codec::{AnyValue, FieldDesc, Message, Status, StructValue, Value};

use super::{ClientConn, Event, Failure, Ioid, OpKind, Output, Request};
use crate::client::convert::build_put;
use crate::client::window::Window;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the channel (or the connection's validation).
    WaitChannel,
    /// Create sent.
    Creating,
    /// Put: reading the current value.
    Fetching,
    /// Exec sent (get, put, rpc, info).
    Executing,
    /// Monitor started.
    Running,
}

#[derive(Debug)]
pub(super) struct Op {
    pub(super) cid: u32,
    pub(super) request: Request,
    pub(super) phase: Phase,
    /// Monitor: the full value, and its window.
    pub(super) full: Option<StructValue>,
    pub(super) window: Window,
}

/// The operation types of a connection, and its monitors' full values as bases to decode
/// their updates into: an update then costs the fields it carries, not a whole new value
/// merged field by field.
pub(super) struct MonitorBases<'a> {
    pub(super) types: &'a OpTypeTable,
    pub(super) ops: &'a HashMap<Ioid, Op>,
}

impl OpTypes for MonitorBases<'_> {
    fn op_type(&self, ioid: u32, role: DataRole) -> Option<FieldDesc> {
        self.types.op_type(ioid, role)
    }

    fn update_base(&self, ioid: u32) -> Option<StructValue> {
        self.ops.get(&ioid)?.full.clone()
    }
}

impl ClientConn {
    pub(super) fn send_create(&mut self, ioid: Ioid, sid: u32) {
        let Some(op) = self.ops.get_mut(&ioid) else {
            return;
        };
        op.phase = Phase::Creating;
        let pv_request = op.request.pv_request.clone();
        let init = move |command, subcmd, pipeline_window| {
            Message::OpRequest(OpRequest {
                command,
                sid,
                ioid,
                subcmd,
                body: OpRequestBody::Init {
                    pv_request,
                    pipeline_window,
                },
            })
        };
        let msg = match &op.request.kind {
            OpKind::Get => init(cmd::GET, SUB_INIT, None),
            OpKind::Put(_) => init(cmd::PUT, SUB_INIT, None),
            OpKind::Rpc(_) => init(cmd::RPC, SUB_INIT, None),
            OpKind::Monitor { .. } => {
                op.window.reset();
                if op.window.pipeline() {
                    init(
                        cmd::MONITOR,
                        SUB_INIT | SUB_PIPELINE,
                        Some(op.window.first_window()),
                    )
                } else {
                    init(cmd::MONITOR, SUB_INIT, None)
                }
            }
            OpKind::Info(sub_field) => {
                op.phase = Phase::Executing;
                Message::GetField(GetField {
                    sid,
                    ioid,
                    sub_field: sub_field.clone(),
                })
            }
        };
        self.out.push_back(msg);
    }

    fn send_op(&mut self, ioid: Ioid, command: u8, subcmd: u8, body: OpRequestBody) {
        let Some(sid) = self
            .ops
            .get(&ioid)
            .and_then(|op| self.channels.get(&op.cid))
            .and_then(|c| c.sid)
        else {
            return;
        };
        self.out.push_back(Message::OpRequest(OpRequest {
            command,
            sid,
            ioid,
            subcmd,
            body,
        }));
    }

    /// Report the end of `ioid` and destroy it on the server when it was created there.
    pub(super) fn finish(&mut self, ioid: Ioid, result: Result<Output, Failure>) {
        let is_monitor = self
            .ops
            .get(&ioid)
            .is_some_and(|op| matches!(op.request.kind, OpKind::Monitor { .. }));
        self.cancel(ioid);
        self.events.push_back(if is_monitor {
            Event::MonitorEnded {
                ioid,
                status: match result {
                    Err(Failure::Remote(s)) => Some(s),
                    Err(Failure::Disconnected) => None,
                    Err(Failure::Protocol(m)) | Err(Failure::Value(m)) => Some(Status::error(m)),
                    Ok(_) => Some(Status::OK),
                },
            }
        } else {
            Event::Done { ioid, result }
        });
    }

    pub(super) fn op_response(&mut self, r: OpResponse, bytes: usize) {
        let ioid = r.ioid;
        let Some(op) = self.ops.get_mut(&ioid) else {
            return;
        };
        if !r.status.is_success() {
            self.finish(ioid, Err(Failure::Remote(r.status)));
            return;
        }
        let init = r.subcmd & SUB_INIT != 0;
        match (&op.request.kind, op.phase, r.body) {
            (OpKind::Get, Phase::Creating, _) if init => {
                op.phase = Phase::Executing;
                self.send_op(ioid, cmd::GET, 0, OpRequestBody::Empty);
            }
            (OpKind::Get, Phase::Executing, OpResponseBody::Data { value, .. }) => {
                self.finish(ioid, Ok(Output::Get(value)));
            }
            (OpKind::Put(_), Phase::Creating, _) if init => {
                op.phase = Phase::Fetching;
                self.send_op(ioid, cmd::PUT, SUB_GET, OpRequestBody::Empty);
            }
            (OpKind::Put(fields), Phase::Fetching, OpResponseBody::Data { value, .. }) => {
                let built = build_put(&value, fields);
                match built {
                    Ok((changed, value)) => {
                        op.phase = Phase::Executing;
                        self.send_op(ioid, cmd::PUT, 0, OpRequestBody::Data { changed, value });
                    }
                    Err(e) => self.finish(ioid, Err(Failure::Value(e))),
                }
            }
            (OpKind::Put(_), Phase::Executing, _) if !init => self.finish(ioid, Ok(Output::Put)),
            (OpKind::Rpc(arg), Phase::Creating, _) if init => {
                let arg = AnyValue::new(Value::Struct(arg.clone()));
                op.phase = Phase::Executing;
                self.send_op(ioid, cmd::RPC, 0, OpRequestBody::Argument(arg));
            }
            (OpKind::Rpc(_), Phase::Executing, body) if !init => {
                let value = match body {
                    OpResponseBody::Result(a) => a.0.map(|b| *b),
                    _ => None,
                };
                self.finish(ioid, Ok(Output::Rpc(value)));
            }
            (OpKind::Monitor { .. }, Phase::Creating, OpResponseBody::InitType(desc)) if init => {
                let Some(desc) = desc.as_struct().cloned() else {
                    self.finish(
                        ioid,
                        Err(Failure::Protocol("monitor type is not a structure".into())),
                    );
                    return;
                };
                op.full = Some(StructValue::new(desc.clone()));
                op.phase = Phase::Running;
                self.send_op(ioid, cmd::MONITOR, MONITOR_START, OpRequestBody::Empty);
                self.events.push_back(Event::MonitorStarted { ioid, desc });
            }
            (OpKind::Monitor { .. }, Phase::Running, _) if r.subcmd & SUB_DESTROY != 0 => {
                self.finish(ioid, Ok(Output::Put));
            }
            (
                OpKind::Monitor { .. },
                Phase::Running,
                OpResponseBody::Update {
                    changed,
                    value,
                    overrun,
                },
            ) => {
                op.window.note_value(&value);
                if !op.window.received(bytes) {
                    tracing::debug!("server exceeded the monitor window of request {ioid}");
                }
                // The update was decoded into the full value (see `MonitorBases`) when there
                // was one of its type: it is the new full value. Otherwise merge it.
                let value = match &mut op.full {
                    Some(full) if Arc::ptr_eq(full.desc(), value.desc()) => {
                        *full = value.clone();
                        value
                    }
                    Some(full) => {
                        full.merge_from(&value, &changed);
                        full.clone()
                    }
                    None => {
                        op.full = Some(value.clone());
                        value
                    }
                };
                self.events.push_back(Event::MonitorUpdate {
                    ioid,
                    value,
                    changed,
                    overrun,
                });
            }
            (_, phase, _) => {
                let what = format!(
                    "unexpected reply (subcommand {:#04x}) in phase {phase:?}",
                    r.subcmd
                );
                self.finish(ioid, Err(Failure::Protocol(what)));
            }
        }
    }
}
