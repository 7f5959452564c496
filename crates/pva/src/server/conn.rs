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

use super::access::{AccessPolicy, WriteKind};
use super::select::Selection;
use super::server_channel::{server_channel, SERVER_CHANNEL};
use super::shared_pv::{SharedPv, SubscribeOptions, Subscription, Update};
use super::source::{PeerInfo, Source};
use super::stats::{Refusal, ServerStats};

/// Default monitor queue when the pvRequest names none (pvxs uses 4).
pub const DEFAULT_QUEUE_SIZE: usize = 4;

/// Why a get or monitor with a field selection cannot serve a value: the PV was given a value
/// of another type after the operation was created.
const TYPE_CHANGED: &str = "the PV changed type since this request was created";

/// Limits one connection is held to. Reaching one is an error status to that client for
/// that request; the connection goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Channels one connection may hold (default 1024).
    pub max_channels: usize,
    /// Operations one connection may hold, over all its channels (default 4096).
    pub max_operations: usize,
    /// Operations one channel of a connection may hold (default 256).
    pub max_operations_per_channel: usize,
    /// Largest monitor queue a client may ask for with `record[queueSize=N]`; a larger one is
    /// cut to this (default 1024).
    pub max_queue_size: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_channels: 1024,
            max_operations: 4096,
            max_operations_per_channel: 256,
            max_queue_size: 1024,
        }
    }
}

struct Channel {
    cid: u32,
    name: String,
    pv: SharedPv,
    /// Served by a source (not the built-in `server` channel): writes go through the access
    /// policy.
    from_source: bool,
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
    access: Option<Arc<dyn AccessPolicy>>,
    stats: Arc<ServerStats>,
    /// Updates taken from a subscription at once, kept to reuse its allocation.
    batch: Vec<Update>,
}

impl OpTypes for ServerConn {
    fn op_type(&self, ioid: u32, role: DataRole) -> Option<FieldDesc> {
        match role {
            DataRole::Value => self.ops.get(&ioid).map(|o| o.desc.clone()),
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
            access: None,
            stats: Arc::default(),
            batch: Vec::new(),
        }
    }

    /// Ask `policy` before every put and RPC on a channel of the sources.
    pub fn with_access(mut self, policy: Option<Arc<dyn AccessPolicy>>) -> Self {
        self.access = policy;
        self
    }

    /// Count refusals in `stats` (shared with the rest of the server).
    pub fn with_stats(mut self, stats: Arc<ServerStats>) -> Self {
        self.stats = stats;
        self
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
            let why = format!(
                "too many channels on this connection (max_channels = {})",
                self.limits.max_channels
            );
            self.stats.refuse(
                Refusal::Channels,
                self.peer.addr,
                format_args!("refused channel '{name}': {why}"),
            );
            return reply(0, Status::error(why));
        }
        let (pv, from_source) = match self.find(&name) {
            Some(pv) => (Some(pv), true),
            None => (
                (name == SERVER_CHANNEL).then(|| self.server_channel.clone()),
                false,
            ),
        };
        match pv {
            None => reply(0, Status::error(format!("no channel '{name}' here"))),
            Some(pv) => {
                let sid = self.next_sid;
                self.next_sid = self.next_sid.wrapping_add(1).max(1);
                self.channels.insert(
                    sid,
                    Channel {
                        cid,
                        name,
                        pv,
                        from_source,
                    },
                );
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
                let status =
                    match check_write(&self.access, &self.stats, &self.peer, ch, WriteKind::Put) {
                        Err(refused) => refused,
                        Ok(()) => pv.put(&value, &changed, &self.peer),
                    };
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
                let result = check_write(&self.access, &self.stats, &self.peer, ch, WriteKind::Rpc)
                    .and_then(|()| pv.rpc(argument, &self.peer));
                let (status, body) = match result {
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
        let mut batch = std::mem::take(&mut self.batch);
        for (&ioid, op) in self.ops.iter_mut() {
            let OpKind::Monitor(m) = &mut op.kind else {
                continue;
            };
            if !m.running || taken >= max {
                continue;
            }
            let allowed = if m.pipeline {
                (m.window as usize).min(max - taken)
            } else {
                max - taken
            };
            m.sub.pop_batch(allowed, &mut batch);
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
        self.batch = batch;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::access::AccessRules;
    use crate::server::source::StaticSource;
    use pva_codec::msg::{CreateChannel, ValidationResponse};
    use pva_codec::nt::NtScalar;
    use pva_codec::{ScalarType, StructDesc, StructValue};

    fn source() -> (Arc<StaticSource>, SharedPv) {
        let source = Arc::new(StaticSource::new());
        let mailbox = SharedPv::mailbox(NtScalar::new(ScalarType::F64).create());
        source.add("t:mailbox", mailbox.clone());
        source.add(
            "t:other",
            SharedPv::mailbox(NtScalar::new(ScalarType::F64).create()),
        );
        (source, mailbox)
    }

    /// A validated connection from `user`@`host` at 10.1.2.3.
    fn conn_as(
        user: &str,
        host: &str,
        limits: ConnLimits,
        access: Option<AccessRules>,
    ) -> ServerConn {
        let (source, _) = source();
        conn_with(source, user, host, limits, access)
    }

    fn conn_with(
        source: Arc<StaticSource>,
        user: &str,
        host: &str,
        limits: ConnLimits,
        access: Option<AccessRules>,
    ) -> ServerConn {
        let sources: Vec<Arc<dyn Source>> = vec![source];
        let access = access.map(|a| Arc::new(a) as Arc<dyn AccessPolicy>);
        let mut conn = ServerConn::new(
            "10.1.2.3:5555".parse().unwrap(),
            sources,
            Arc::new(Notify::new()),
            limits,
        )
        .with_access(access);
        let cred = StructDesc::builder("")
            .scalar("user", ScalarType::String)
            .scalar("host", ScalarType::String)
            .build();
        let mut cred = StructValue::new(Arc::new(cred));
        cred.set("user", user).unwrap();
        cred.set("host", host).unwrap();
        let mut out = Vec::new();
        conn.handle(
            Message::ValidationResponse(ValidationResponse {
                receive_buffer_size: 0x10000,
                registry_size: 0x7fff,
                qos: 0,
                method: "ca".into(),
                credentials: AnyValue::new(Value::Struct(cred)),
            }),
            &mut out,
        )
        .unwrap();
        conn
    }

    fn one(conn: &mut ServerConn, msg: Message) -> Message {
        let mut out = Vec::new();
        conn.handle(msg, &mut out).unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        out.pop().unwrap()
    }

    /// Create channel `name`; its sid, or the error status.
    fn create(conn: &mut ServerConn, cid: u32, name: &str) -> Result<u32, Status> {
        let msg = Message::CreateChannel(CreateChannel {
            channels: vec![(cid, name.into())],
        });
        match one(conn, msg) {
            Message::CreateChannelResponse(r) if r.status.is_success() => Ok(r.sid),
            Message::CreateChannelResponse(r) => Err(r.status),
            other => panic!("{other:?}"),
        }
    }

    fn status_of(reply: Message) -> Status {
        match reply {
            Message::OpResponse(r) => r.status,
            other => panic!("{other:?}"),
        }
    }

    fn init(conn: &mut ServerConn, command: u8, sid: u32, ioid: u32, request: &str) -> Status {
        let pv_request = PvRequest::parse(request).unwrap().to_value();
        status_of(one(
            conn,
            Message::OpRequest(OpRequest {
                command,
                sid,
                ioid,
                subcmd: SUB_INIT,
                body: OpRequestBody::Init {
                    pv_request,
                    pipeline_window: None,
                },
            }),
        ))
    }

    fn put(conn: &mut ServerConn, sid: u32, ioid: u32, x: f64) -> Status {
        assert!(init(conn, cmd::PUT, sid, ioid, "").is_success());
        let mut value = NtScalar::new(ScalarType::F64).create();
        value.set("value", x).unwrap();
        status_of(one(
            conn,
            Message::OpRequest(OpRequest {
                command: cmd::PUT,
                sid,
                ioid,
                subcmd: 0,
                body: OpRequestBody::Data {
                    changed: BitSet::with(1),
                    value,
                },
            }),
        ))
    }

    #[test]
    fn channels_past_the_limit_get_an_error_and_the_rest_go_on() {
        let limits = ConnLimits {
            max_channels: 2,
            ..ConnLimits::default()
        };
        let mut conn = conn_as("u", "h", limits, None);
        let sid = create(&mut conn, 1, "t:mailbox").unwrap();
        create(&mut conn, 2, "t:other").unwrap();
        let e = create(&mut conn, 3, "t:mailbox").unwrap_err();
        assert!(e.message.contains("max_channels = 2"), "{e:?}");
        assert_eq!(conn.stats.snapshot().refused_channels, 1);
        assert!(
            put(&mut conn, sid, 1, 1.5).is_success(),
            "the connection goes on"
        );
    }

    #[test]
    fn operations_past_either_limit_get_an_error() {
        let limits = ConnLimits {
            max_operations: 3,
            max_operations_per_channel: 2,
            ..ConnLimits::default()
        };
        let mut conn = conn_as("u", "h", limits, None);
        let a = create(&mut conn, 1, "t:mailbox").unwrap();
        let b = create(&mut conn, 2, "t:other").unwrap();
        assert!(init(&mut conn, cmd::GET, a, 1, "").is_success());
        assert!(init(&mut conn, cmd::MONITOR, a, 2, "").is_success());
        let e = init(&mut conn, cmd::GET, a, 3, "");
        assert!(
            e.message.contains("max_operations_per_channel = 2"),
            "{e:?}"
        );
        assert!(init(&mut conn, cmd::GET, b, 4, "").is_success());
        let e = init(&mut conn, cmd::GET, b, 5, "");
        assert!(e.message.contains("max_operations = 3"), "{e:?}");
        let s = conn.stats.snapshot();
        assert_eq!(
            (s.refused_operations_per_channel, s.refused_operations),
            (1, 1)
        );
        // Destroying an operation frees its place.
        let mut out = Vec::new();
        conn.handle(
            Message::DestroyRequest(pva_codec::msg::RequestRef { sid: a, ioid: 1 }),
            &mut out,
        )
        .unwrap();
        assert!(init(&mut conn, cmd::GET, a, 6, "").is_success());
    }

    #[test]
    fn a_monitor_queue_is_cut_to_the_largest_allowed() {
        let limits = ConnLimits {
            max_queue_size: 3,
            ..ConnLimits::default()
        };
        let (source, mailbox) = source();
        let mut conn = conn_with(source, "u", "h", limits, None);
        let sid = create(&mut conn, 1, "t:mailbox").unwrap();
        assert!(init(&mut conn, cmd::MONITOR, sid, 1, "record[queueSize=100000]").is_success());
        let start = Message::OpRequest(OpRequest {
            command: cmd::MONITOR,
            sid,
            ioid: 1,
            subcmd: SUB_PROCESS | SUB_GET,
            body: OpRequestBody::Empty,
        });
        let mut out = Vec::new();
        conn.handle(start, &mut out).unwrap();
        for n in 1..=10 {
            let mut v = mailbox.current();
            v.set("value", f64::from(n)).unwrap();
            mailbox.post_changed(v, BitSet::with(1));
        }
        out.clear();
        assert_eq!(
            conn.poll_monitors(&mut out, 1000),
            3,
            "the initial value and 2 more"
        );
    }

    fn rules() -> AccessRules {
        AccessRules::from_toml(
            "[[allow]]\nname = \"ops\"\npvs = [\"t:mailbox\"]\nusers = [\"alice\"]\n",
        )
        .unwrap()
    }

    #[test]
    fn the_access_policy_refuses_puts_with_a_reason_and_nothing_changes() {
        let (source, mailbox) = source();
        let mut bob = conn_with(
            source.clone(),
            "bob",
            "ws9",
            ConnLimits::default(),
            Some(rules()),
        );
        let sid = create(&mut bob, 1, "t:mailbox").unwrap();
        let e = put(&mut bob, sid, 1, 7.0);
        assert!(!e.is_success());
        assert_eq!(
            e.message,
            "put to 't:mailbox' refused for user 'bob' on host 'ws9' (10.1.2.3:5555): \
             rule 'ops' allows users alice on any host"
        );
        assert_eq!(mailbox.current().get("value"), Some(&Value::F64(0.0)));
        assert_eq!(bob.stats.snapshot().denied_writes, 1);

        let mut alice = conn_with(source, "alice", "ws1", ConnLimits::default(), Some(rules()));
        let sid = create(&mut alice, 1, "t:mailbox").unwrap();
        assert!(put(&mut alice, sid, 1, 7.0).is_success());
        assert_eq!(mailbox.current().get("value"), Some(&Value::F64(7.0)));
        let other = create(&mut alice, 2, "t:other").unwrap();
        let e = put(&mut alice, other, 2, 1.0);
        assert!(
            e.message
                .contains("no access rule lets anyone write this PV"),
            "{e:?}"
        );
    }

    #[test]
    fn the_access_policy_covers_rpc_but_not_the_server_channel() {
        let mut bob = conn_as("bob", "ws9", ConnLimits::default(), Some(rules()));
        let rpc = |conn: &mut ServerConn, sid, ioid| {
            assert!(init(conn, cmd::RPC, sid, ioid, "").is_success());
            let mut query = StructValue::new(Arc::new(
                StructDesc::builder("")
                    .scalar("op", ScalarType::String)
                    .build(),
            ));
            query.set("op", "info").unwrap();
            status_of(one(
                conn,
                Message::OpRequest(OpRequest {
                    command: cmd::RPC,
                    sid,
                    ioid,
                    subcmd: 0,
                    body: OpRequestBody::Argument(AnyValue::new(Value::Struct(query))),
                }),
            ))
        };
        let sid = create(&mut bob, 1, "t:mailbox").unwrap();
        let e = rpc(&mut bob, sid, 1);
        assert!(
            e.message
                .starts_with("rpc to 't:mailbox' refused for user 'bob'"),
            "{e:?}"
        );
        let server = create(&mut bob, 2, SERVER_CHANNEL).unwrap();
        assert!(rpc(&mut bob, server, 2).is_success(), "pvxlist still works");
    }
}
