//! The protocol logic of one server-side connection, without I/O: feed it decoded messages,
//! and it returns the messages to send; monitors are drained with `poll_monitors`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use pva_codec::msg::op::{SUB_DESTROY, SUB_GET, SUB_INIT, SUB_PIPELINE, SUB_PROCESS};
use pva_codec::msg::{
    cmd, CreateChannelResponse, DataRole, GetFieldResponse, OpRequest, OpRequestBody, OpResponse,
    OpResponseBody, OpTypes, ValidationRequest,
};
use pva_codec::{AnyValue, BitSet, FieldDesc, Message, PvRequest, Status, Value};
use tokio::sync::Notify;

use super::select::Selection;
use super::server_channel::{server_channel, SERVER_CHANNEL};
use super::shared_pv::{SharedPv, SubscribeOptions, Subscription};
use super::source::{PeerInfo, Source};

/// Default monitor queue when the pvRequest names none (pvxs uses 4).
pub const DEFAULT_QUEUE_SIZE: usize = 4;

/// Why a get or monitor with a field selection cannot serve a value: the PV was given a value
/// of another type after the operation was created.
const TYPE_CHANGED: &str = "the PV changed type since this request was created";

/// Limits one connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Channels one connection may hold.
    pub max_channels: usize,
    /// Operations one connection may hold.
    pub max_operations: usize,
    /// Largest monitor queue a client may ask for.
    pub max_queue_size: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_channels: 1024,
            max_operations: 4096,
            max_queue_size: 1024,
        }
    }
}

struct Channel {
    cid: u32,
    name: String,
    pv: SharedPv,
}

enum OpKind {
    Get,
    Put,
    Rpc,
    Monitor(MonitorOp),
}

struct MonitorOp {
    sub: Arc<Subscription>,
    pipeline: bool,
    /// Updates the client can still take (pipeline only).
    window: u32,
    running: bool,
}

struct Op {
    sid: u32,
    command: u8,
    desc: FieldDesc,
    /// The pvRequest's field selection (get and monitor); `None` serves the whole PV.
    selection: Option<Selection>,
    kind: OpKind,
}

/// A server connection's channels and operations.
pub struct ServerConn {
    peer: PeerInfo,
    sources: Vec<Arc<dyn Source>>,
    /// The `server` channel, served when no source has a channel of that name.
    server_channel: SharedPv,
    channels: HashMap<u32, Channel>,
    ops: HashMap<u32, Op>,
    next_sid: u32,
    wake: Arc<Notify>,
    limits: ConnLimits,
    validated: bool,
}

impl OpTypes for ServerConn {
    fn op_type(&self, ioid: u32, role: DataRole) -> Option<FieldDesc> {
        match role {
            DataRole::Value => self.ops.get(&ioid).map(|o| o.desc.clone()),
            DataRole::Put | DataRole::Get => None,
        }
    }
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

impl ServerConn {
    /// A connection from `addr`, served from `sources`; `wake` is notified when a monitor has
    /// something to send.
    pub fn new(
        addr: SocketAddr,
        sources: Vec<Arc<dyn Source>>,
        wake: Arc<Notify>,
        limits: ConnLimits,
    ) -> Self {
        ServerConn {
            peer: PeerInfo {
                addr,
                method: String::new(),
                user: String::new(),
                host: String::new(),
            },
            server_channel: server_channel(sources.clone()),
            sources,
            channels: HashMap::new(),
            ops: HashMap::new(),
            next_sid: 1,
            wake,
            limits,
            validated: false,
        }
    }

    /// The messages a server sends first (after SET_BYTE_ORDER): its validation request.
    pub fn greeting() -> Message {
        Message::ValidationRequest(ValidationRequest {
            receive_buffer_size: 0x10000,
            registry_size: 0x7fff,
            auth_methods: vec!["anonymous".into(), "ca".into()],
        })
    }

    /// Who the peer is.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Number of open channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    fn find(&self, name: &str) -> Option<SharedPv> {
        self.sources.iter().find_map(|s| s.channel(name))
    }

    /// Handle one message from the client; replies go to `out`. An `Err` means the client
    /// broke the protocol and the connection should be closed.
    pub fn handle(&mut self, msg: Message, out: &mut Vec<Message>) -> Result<(), String> {
        match msg {
            Message::ValidationResponse(v) => {
                self.peer.method = v.method.clone();
                if let Some((user, host)) = v.ca_identity() {
                    self.peer.user = user;
                    self.peer.host = host;
                }
                self.validated = true;
                out.push(Message::Validated(Status::OK));
            }
            Message::Echo(payload) => out.push(Message::Echo(payload)),
            Message::Search(s) => {
                let ids: Vec<u32> = s
                    .channels
                    .iter()
                    .filter(|(_, name)| self.find(name).is_some())
                    .map(|(id, _)| *id)
                    .collect();
                if !ids.is_empty() || s.must_reply() {
                    out.push(Message::SearchResponse(pva_codec::msg::SearchResponse {
                        guid: pva_codec::Guid::default(),
                        sequence: s.sequence,
                        address: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                        port: 0,
                        protocol: "tcp".into(),
                        found: !ids.is_empty(),
                        ids,
                    }));
                }
            }
            Message::CreateChannel(c) => {
                for (cid, name) in c.channels {
                    out.push(self.create_channel(cid, name));
                }
            }
            Message::DestroyChannel(d) => {
                if let Some(ch) = self.channels.remove(&d.sid) {
                    self.ops.retain(|_, op| op.sid != d.sid);
                    out.push(Message::DestroyChannel(pva_codec::msg::DestroyChannel {
                        sid: d.sid,
                        cid: ch.cid,
                    }));
                }
            }
            Message::GetField(g) => {
                let (status, desc) = match self.channels.get(&g.sid) {
                    None => (Status::error("no such channel"), None),
                    Some(ch) => {
                        let v = ch.pv.current();
                        if g.sub_field.is_empty() {
                            (Status::OK, Some(FieldDesc::Struct(v.desc().clone())))
                        } else {
                            match v.field_desc(&g.sub_field) {
                                Some(d) => (Status::OK, Some(d)),
                                None => {
                                    (Status::error(format!("no field '{}'", g.sub_field)), None)
                                }
                            }
                        }
                    }
                };
                out.push(Message::GetFieldResponse(GetFieldResponse {
                    ioid: g.ioid,
                    status,
                    desc,
                }));
            }
            Message::OpRequest(r) => self.op_request(r, out),
            Message::DestroyRequest(r) | Message::CancelRequest(r) => {
                self.ops.remove(&r.ioid);
            }
            Message::Unknown { .. } | Message::Beacon(_) | Message::OriginTag(_) => {}
            other => {
                return Err(format!(
                    "client sent a server-side message (command {:#04x})",
                    other.command()
                ))
            }
        }
        Ok(())
    }

    fn create_channel(&mut self, cid: u32, name: String) -> Message {
        let reply = |sid, status| {
            Message::CreateChannelResponse(CreateChannelResponse { cid, sid, status })
        };
        if self.channels.len() >= self.limits.max_channels {
            return reply(0, Status::error("too many channels on this connection"));
        }
        let pv = self
            .find(&name)
            .or_else(|| (name == SERVER_CHANNEL).then(|| self.server_channel.clone()));
        match pv {
            None => reply(0, Status::error(format!("no channel '{name}' here"))),
            Some(pv) => {
                let sid = self.next_sid;
                self.next_sid = self.next_sid.wrapping_add(1).max(1);
                self.channels.insert(sid, Channel { cid, name, pv });
                reply(sid, Status::OK)
            }
        }
    }

    fn op_request(&mut self, r: OpRequest, out: &mut Vec<Message>) {
        let OpRequest {
            command,
            sid,
            ioid,
            subcmd,
            body,
        } = r;
        if subcmd & SUB_INIT != 0 {
            out.push(self.op_init(command, sid, ioid, subcmd, body));
            return;
        }
        let Some(op) = self.ops.get_mut(&ioid) else {
            out.push(status_reply(
                command,
                ioid,
                subcmd,
                Status::error("no such request"),
            ));
            return;
        };
        let Some(ch) = self.channels.get(&op.sid) else {
            out.push(status_reply(
                command,
                ioid,
                subcmd,
                Status::error("channel gone"),
            ));
            return;
        };
        let pv = ch.pv.clone();
        match (&mut op.kind, body) {
            (OpKind::Get, _) => {
                let current = pv.current();
                let value = match &op.selection {
                    None => Some(current),
                    Some(selection) => selection.value(&current),
                };
                out.push(match value {
                    Some(value) => Message::OpResponse(OpResponse {
                        command,
                        ioid,
                        subcmd,
                        status: Status::OK,
                        body: OpResponseBody::Data {
                            changed: BitSet::with(0),
                            value,
                        },
                    }),
                    None => status_reply(command, ioid, subcmd, Status::error(TYPE_CHANGED)),
                })
            }
            (OpKind::Put, _) if subcmd & SUB_GET != 0 => {
                out.push(Message::OpResponse(OpResponse {
                    command,
                    ioid,
                    subcmd,
                    status: Status::OK,
                    body: OpResponseBody::Data {
                        changed: BitSet::with(0),
                        value: pv.current(),
                    },
                }))
            }
            (OpKind::Put, OpRequestBody::Data { changed, value }) => {
                let status = pv.put(&value, &changed, &self.peer);
                out.push(status_reply(command, ioid, subcmd, status));
            }
            (OpKind::Put, _) => out.push(status_reply(
                command,
                ioid,
                subcmd,
                Status::error("put without data"),
            )),
            (OpKind::Rpc, OpRequestBody::Argument(arg)) => {
                let none = Value::Any(AnyValue(None));
                let argument = arg.get().unwrap_or(&none);
                let (status, body) = match pv.rpc(argument, &self.peer) {
                    Ok(v) => (Status::OK, OpResponseBody::Result(AnyValue::new(v))),
                    Err(s) => (s, OpResponseBody::Empty),
                };
                out.push(Message::OpResponse(OpResponse {
                    command,
                    ioid,
                    subcmd,
                    status,
                    body,
                }));
            }
            (OpKind::Rpc, _) => out.push(status_reply(
                command,
                ioid,
                subcmd,
                Status::error("rpc without argument"),
            )),
            (OpKind::Monitor(m), body) => {
                if let OpRequestBody::Ack(n) = body {
                    m.window = m.window.saturating_add(n);
                }
                if subcmd & SUB_PROCESS != 0 {
                    m.running = subcmd & SUB_GET != 0;
                }
                if m.sub.has_pending() {
                    self.wake.notify_one();
                }
            }
        }
        if subcmd & SUB_DESTROY != 0 {
            self.ops.remove(&ioid);
        }
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
        if self.ops.len() >= self.limits.max_operations {
            return fail("too many operations on this connection");
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
                OpKind::Monitor(MonitorOp {
                    sub: ch.pv.subscribe_with(
                        queue,
                        self.wake.clone(),
                        SubscribeOptions {
                            peer: Some(self.peer.addr),
                            interest,
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

    /// Move queued monitor updates to `out`, as far as each monitor's window allows.
    /// Returns how many updates were taken.
    pub fn poll_monitors(&mut self, out: &mut Vec<Message>, max: usize) -> usize {
        let mut taken = 0;
        for (&ioid, op) in self.ops.iter_mut() {
            let OpKind::Monitor(m) = &mut op.kind else {
                continue;
            };
            while m.running && (!m.pipeline || m.window > 0) && taken < max {
                let Some(u) = m.sub.pop() else { break };
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
                out.push(Message::OpResponse(OpResponse {
                    command: op.command,
                    ioid,
                    subcmd: 0,
                    status: Status::OK,
                    body: OpResponseBody::Update {
                        changed,
                        value,
                        overrun,
                    },
                }));
            }
        }
        taken
    }

    /// True when some running monitor has an update it may send now.
    pub fn monitors_ready(&self) -> bool {
        self.ops.values().any(|op| match &op.kind {
            OpKind::Monitor(m) => m.running && (!m.pipeline || m.window > 0) && m.sub.has_pending(),
            _ => false,
        })
    }

    /// Names of the channels open on this connection.
    pub fn channel_names(&self) -> Vec<String> {
        self.channels.values().map(|c| c.name.clone()).collect()
    }

    /// True once the client has answered the validation request.
    pub fn is_validated(&self) -> bool {
        self.validated
    }
}
