//! The protocol logic of one client connection, without I/O: feed it the server's frames and
//! the user's requests; take out the bytes to send and the events to report.
//!
//! It answers the validation handshake, creates channels by name (one per name, shared by
//! every operation on this connection), runs each operation's sequence of sub-commands, keeps
//! each monitor's full value and its flow-control window, and fails everything in flight when
//! the connection is lost. The server's half has the same shape: see
//! [`ServerConn`](crate::server::proto::ServerConn).
//!
//! # Call order
//!
//! A driver (the tokio task in `conn.rs`, or a test) keeps one [`ClientConn`] per TCP
//! connection and calls, until the connection ends:
//!
//! 1. [`ClientConn::new`] once the connection is open (the server speaks first);
//! 2. [`ClientConn::start`], [`ClientConn::consumed`], [`ClientConn::cancel`],
//!    [`ClientConn::search`] and [`ClientConn::echo`] whenever the user asks, at any time
//!    (operations started before validation wait for it);
//! 3. [`ClientConn::poll_transmit`] after any call of steps 2 and 4: write its chunks, in order;
//! 4. [`ClientConn::handle_frame`] for every frame read, then [`ClientConn::poll_event`] until it
//!    gives `None`, and hand the events to their users;
//! 5. [`ClientConn::disconnected`] once the connection is gone, then [`ClientConn::poll_event`]
//!    until `None`: every operation in flight ends with an event.
//!
//! An error from `handle_frame` means the server's bytes cannot be trusted: close the
//! connection and go to step 5.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use pva_codec::frame::control;
use pva_codec::msg::op::{MONITOR_START, SUB_DESTROY, SUB_GET, SUB_INIT, SUB_PIPELINE};
use pva_codec::msg::{
    cmd, CreateChannel, DataRole, GetField, OpRequest, OpRequestBody, OpResponse, OpResponseBody,
    OpTypeTable, OpTypes, RequestRef, Search, SearchResponse, ValidationResponse,
};
use pva_codec::{
    AnyValue, BitSet, ByteOrder, DecodeContext, DecodeError, Direction, FieldDesc, Frame, Limits,
    Message, ScalarType, Status, StructDesc, StructValue, TypeCache, Value, ValueEncoder, Writer,
};

use super::convert::build_put;
use super::window::{ByteBudget, Window};

/// A request id on one connection.
pub type Ioid = u32;

/// What an operation does.
#[derive(Debug, Clone, PartialEq)]
pub enum OpKind {
    /// Read the channel's value once.
    Get,
    /// Write fields (dotted path, value converted to the field's type), after reading the
    /// current value so that enumerations can be set by choice name.
    Put(Vec<(String, Value)>),
    /// Call the channel with an argument structure.
    Rpc(StructValue),
    /// Ask the channel's type (get-field); the sub-field path, empty for the whole.
    Info(String),
    /// Subscribe to changes.
    Monitor {
        /// Updates the client can hold (the server's window when pipelined).
        queue_size: u32,
        /// Flow control with acks.
        pipeline: bool,
        /// Count the window in bytes (pipelined only): see [`ByteBudget`].
        budget: Option<ByteBudget>,
    },
}

/// One operation to run on a channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The channel name.
    pub channel: String,
    /// The pvRequest structure sent on create.
    pub pv_request: StructValue,
    /// What to do.
    pub kind: OpKind,
}

/// The result of a finished get, put, rpc or info.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The value read.
    Get(StructValue),
    /// The put was done.
    Put,
    /// The value the call returned (`None`: no value).
    Rpc(Option<Value>),
    /// The channel's type.
    Info(FieldDesc),
}

/// Why an operation did not complete.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The server refused (channel not created, operation error).
    Remote(Status),
    /// The values given do not fit the channel's type.
    Value(String),
    /// The connection was lost, or the server destroyed the channel.
    Disconnected,
    /// The server answered out of sequence.
    Protocol(String),
}

/// What the connection reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The server accepted (or refused, and we go on without) our credentials.
    Validated,
    /// A get, put, rpc or info finished.
    Done {
        /// The request.
        ioid: Ioid,
        /// What it gave.
        result: Result<Output, Failure>,
    },
    /// A monitor was created; updates follow.
    MonitorStarted {
        /// The request.
        ioid: Ioid,
        /// The type of its values.
        desc: Arc<StructDesc>,
    },
    /// A monitor update, already merged into the monitor's full value.
    MonitorUpdate {
        /// The request.
        ioid: Ioid,
        /// The full value after this update.
        value: StructValue,
        /// Fields this update changed.
        changed: BitSet,
        /// Fields that changed more than once since the last update (the server squashed).
        overrun: BitSet,
    },
    /// A monitor ended: `Some` with the server's final status, `None` when it was lost with
    /// its channel or connection (then it may be created again elsewhere).
    MonitorEnded {
        /// The request.
        ioid: Ioid,
        /// Final status, if the server ended it.
        status: Option<Status>,
    },
    /// A search answer received over this connection (name servers).
    SearchResponse(SearchResponse),
}

/// Why the connection cannot go on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtoError {
    /// The server sent bytes that do not decode.
    #[error("bad message from server: {0}")]
    Decode(#[from] DecodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
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
struct Op {
    cid: u32,
    request: Request,
    phase: Phase,
    /// Monitor: the full value, and its window.
    full: Option<StructValue>,
    window: Window,
}

#[derive(Debug)]
struct Channel {
    name: String,
    sid: Option<u32>,
    /// Create sent (only after validation).
    requested: bool,
}

/// Outgoing message or control frame.
#[derive(Debug)]
enum Out {
    Msg(Message),
    Echo,
}

/// Client credentials offered with the "ca" method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Host name.
    pub host: String,
}

impl Credentials {
    /// The account and host of this process, as pvxs finds them: the user name of the effective
    /// uid (not `$USER`, which DM stages, containers and cron jobs may lack or set to anything)
    /// and the host name. The uid's number stands in for an account the system cannot name.
    pub fn of_process() -> Self {
        let uid = nix::unistd::geteuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| uid.to_string());
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        Credentials { user, host }
    }

    /// [`Credentials::of_process`], with the user name taken from `PVABRIDGE_CA_USER` instead
    /// when that is set: an explicit override, for tests that play several accounts from one.
    /// `$USER` is never read.
    pub fn from_env() -> Self {
        let mut credentials = Credentials::of_process();
        if let Some(user) = std::env::var(CA_USER_VAR).ok().filter(|u| !u.is_empty()) {
            credentials.user = user;
        }
        credentials
    }
}

/// The variable that overrides the user name of [`Credentials::from_env`].
pub const CA_USER_VAR: &str = "PVABRIDGE_CA_USER";

/// The operation types of a connection, and its monitors' full values as bases to decode
/// their updates into: an update then costs the fields it carries, not a whole new value
/// merged field by field.
struct MonitorBases<'a> {
    types: &'a OpTypeTable,
    ops: &'a HashMap<Ioid, Op>,
}

impl OpTypes for MonitorBases<'_> {
    fn op_type(&self, ioid: u32, role: DataRole) -> Option<FieldDesc> {
        self.types.op_type(ioid, role)
    }

    fn update_base(&self, ioid: u32) -> Option<StructValue> {
        self.ops.get(&ioid)?.full.clone()
    }
}

/// The state of one client connection.
#[derive(Debug)]
pub struct ClientConn {
    credentials: Credentials,
    validated: bool,
    order: ByteOrder,
    rx_types: TypeCache,
    limits: Limits,
    op_types: OpTypeTable,
    channels: HashMap<u32, Channel>,
    by_name: HashMap<String, u32>,
    ops: HashMap<Ioid, Op>,
    next_cid: u32,
    next_ioid: Ioid,
    out: VecDeque<Out>,
    events: VecDeque<Event>,
}

impl ClientConn {
    /// A new connection that will answer validation with these credentials.
    pub fn new(credentials: Credentials, limits: Limits) -> Self {
        ClientConn {
            credentials,
            validated: false,
            order: ByteOrder::Little,
            rx_types: TypeCache::new(),
            limits,
            op_types: OpTypeTable::new(),
            channels: HashMap::new(),
            by_name: HashMap::new(),
            ops: HashMap::new(),
            next_cid: 1,
            next_ioid: 1,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    /// True once the server has answered the validation.
    pub fn is_validated(&self) -> bool {
        self.validated
    }

    /// Operations in flight (monitors included).
    pub fn op_count(&self) -> usize {
        self.ops.len()
    }

    /// The monitor window of `ioid`, for inspection.
    pub fn window(&self, ioid: Ioid) -> Option<&Window> {
        self.ops.get(&ioid).map(|o| &o.window)
    }

    /// Start an operation; its events carry the returned id.
    pub fn start(&mut self, request: Request) -> Ioid {
        let ioid = self.next_ioid;
        self.next_ioid = self.next_ioid.wrapping_add(1).max(1);
        let cid = self.channel_for(&request.channel);
        let window = match request.kind {
            OpKind::Monitor {
                queue_size,
                pipeline,
                budget,
            } => {
                let window = Window::new(pipeline, queue_size);
                match budget {
                    Some(b) => window.with_budget(b),
                    None => window,
                }
            }
            _ => Window::new(false, 1),
        };
        self.ops.insert(
            ioid,
            Op {
                cid,
                request,
                phase: Phase::WaitChannel,
                full: None,
                window,
            },
        );
        if let Some(sid) = self.channels.get(&cid).and_then(|c| c.sid) {
            self.send_create(ioid, sid);
        }
        ioid
    }

    /// The user took `n` updates of monitor `ioid`: acknowledge them when the window says so.
    pub fn consumed(&mut self, ioid: Ioid, n: u32) {
        let Some(op) = self.ops.get_mut(&ioid) else {
            return;
        };
        if op.phase != Phase::Running {
            return;
        }
        if let Some(ack) = op.window.consumed(n) {
            if let Some(sid) = self.channels.get(&op.cid).and_then(|c| c.sid) {
                self.out.push_back(Out::Msg(Message::OpRequest(OpRequest {
                    command: cmd::MONITOR,
                    sid,
                    ioid,
                    subcmd: SUB_PIPELINE,
                    body: OpRequestBody::Ack(ack),
                })));
            }
        }
    }

    /// Stop operation `ioid` (no event follows).
    pub fn cancel(&mut self, ioid: Ioid) {
        if let Some(op) = self.ops.remove(&ioid) {
            self.op_types.remove(ioid);
            let created = !matches!(op.phase, Phase::WaitChannel);
            if let (true, Some(sid)) = (created, self.channels.get(&op.cid).and_then(|c| c.sid)) {
                self.out
                    .push_back(Out::Msg(Message::DestroyRequest(RequestRef { sid, ioid })));
            }
        }
    }

    /// Search for `name` over this connection (name servers), with search instance `id`.
    pub fn search(&mut self, sequence: u32, id: u32, name: &str) {
        self.out.push_back(Out::Msg(Message::Search(Search {
            sequence,
            flags: 0,
            response_address: std::net::Ipv4Addr::UNSPECIFIED.into(),
            response_port: 0,
            protocols: vec!["tcp".into()],
            channels: vec![(id, name.to_owned())],
        })));
    }

    /// Queue an echo (keepalive).
    pub fn echo(&mut self) {
        self.out.push_back(Out::Echo);
    }

    /// Feed one frame from the server. An error means the stream cannot be trusted: close it.
    pub fn handle_frame(&mut self, frame: &Frame) -> Result<(), ProtoError> {
        if frame.header.control {
            if frame.header.command == control::SET_BYTE_ORDER {
                self.order = frame.header.order;
            }
            return Ok(());
        }
        let decoded = Message::decode(
            frame,
            &mut DecodeContext {
                cache: &mut self.rx_types,
                limits: &self.limits,
                ops: &MonitorBases {
                    types: &self.op_types,
                    ops: &self.ops,
                },
            },
        );
        let msg = match decoded {
            Ok(m) => m,
            // Data for a request already finished or cancelled: late, not wrong.
            Err(DecodeError::UnknownRequest { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if let Message::OpResponse(r) = &msg {
            if self.ops.contains_key(&r.ioid) {
                self.op_types.learn(&msg);
            }
        }
        self.handle_message(msg, frame.payload.len() + pva_codec::header::HEADER_SIZE);
        Ok(())
    }

    /// The connection is gone: every operation fails, every monitor is lost.
    pub fn disconnected(&mut self) {
        let mut ioids: Vec<Ioid> = self.ops.keys().copied().collect();
        ioids.sort_unstable();
        for ioid in ioids {
            if let Some(op) = self.ops.remove(&ioid) {
                self.events.push_back(match op.request.kind {
                    OpKind::Monitor { .. } => Event::MonitorEnded { ioid, status: None },
                    _ => Event::Done {
                        ioid,
                        result: Err(Failure::Disconnected),
                    },
                });
            }
        }
        self.channels.clear();
        self.by_name.clear();
        self.out.clear();
    }

    /// The next event to report.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Everything queued to send, encoded as chunks for one vectored write (empty: nothing).
    pub fn poll_transmit(&mut self) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        while let Some(out) = self.out.pop_front() {
            let mut w = Writer::new(self.order);
            match out {
                Out::Echo => {
                    pva_codec::frame::write_control(
                        &mut w,
                        Direction::FromClient,
                        control::ECHO_REQUEST,
                        0,
                    );
                }
                Out::Msg(m) => {
                    if let Err(e) =
                        m.write(&mut w, Direction::FromClient, &mut ValueEncoder::default())
                    {
                        tracing::warn!("dropping a message that does not encode: {e}");
                        continue;
                    }
                }
            }
            chunks.extend(w.finish());
        }
        chunks
    }

    fn channel_for(&mut self, name: &str) -> u32 {
        if let Some(&cid) = self.by_name.get(name) {
            return cid;
        }
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        self.by_name.insert(name.to_owned(), cid);
        self.channels.insert(
            cid,
            Channel {
                name: name.to_owned(),
                sid: None,
                requested: false,
            },
        );
        if self.validated {
            self.request_channels();
        }
        cid
    }

    fn request_channels(&mut self) {
        let mut pending: Vec<(u32, String)> = self
            .channels
            .iter_mut()
            .filter(|(_, c)| !c.requested)
            .map(|(cid, c)| {
                c.requested = true;
                (*cid, c.name.clone())
            })
            .collect();
        pending.sort_unstable();
        for (cid, name) in pending {
            self.out
                .push_back(Out::Msg(Message::CreateChannel(CreateChannel {
                    channels: vec![(cid, name)],
                })));
        }
    }

    fn send_create(&mut self, ioid: Ioid, sid: u32) {
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
                        Some(op.window.queue_size()),
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
        self.out.push_back(Out::Msg(msg));
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
        self.out.push_back(Out::Msg(Message::OpRequest(OpRequest {
            command,
            sid,
            ioid,
            subcmd,
            body,
        })));
    }

    /// Report the end of `ioid` and destroy it on the server when it was created there.
    fn finish(&mut self, ioid: Ioid, result: Result<Output, Failure>) {
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

    /// Act on one message of `bytes` (header included) from the server.
    fn handle_message(&mut self, msg: Message, bytes: usize) {
        match msg {
            Message::ValidationRequest(req) => {
                let ca = req.auth_methods.iter().any(|m| m == "ca");
                let (method, credentials) = if ca {
                    let desc = Arc::new(
                        StructDesc::builder("")
                            .scalar("user", ScalarType::String)
                            .scalar("host", ScalarType::String)
                            .build(),
                    );
                    let mut cred = StructValue::new(desc);
                    // Both members exist and are strings: these cannot fail.
                    let _ = cred.set("user", self.credentials.user.as_str());
                    let _ = cred.set("host", self.credentials.host.as_str());
                    ("ca", AnyValue::new(Value::Struct(cred)))
                } else {
                    ("anonymous", AnyValue(None))
                };
                self.out
                    .push_back(Out::Msg(Message::ValidationResponse(ValidationResponse {
                        receive_buffer_size: 0x10000,
                        registry_size: 0x7fff,
                        qos: 0,
                        method: method.into(),
                        credentials,
                    })));
            }
            Message::Validated(status) => {
                if !status.is_success() {
                    tracing::warn!("server refused our credentials ({status}); going on without");
                }
                if !self.validated {
                    self.validated = true;
                    self.events.push_back(Event::Validated);
                    self.request_channels();
                }
            }
            Message::CreateChannelResponse(r) => self.channel_created(r.cid, r.sid, r.status),
            Message::DestroyChannel(d) => self.channel_lost(d.cid),
            Message::OpResponse(r) => self.op_response(r, bytes),
            Message::GetFieldResponse(r) => {
                if !self.ops.contains_key(&r.ioid) {
                    return;
                }
                let result = match (r.status.is_success(), r.desc) {
                    (true, Some(desc)) => Ok(Output::Info(desc)),
                    (true, None) => {
                        Err(Failure::Protocol("get-field answer without a type".into()))
                    }
                    (false, _) => Err(Failure::Remote(r.status)),
                };
                self.ops.remove(&r.ioid);
                self.events.push_back(Event::Done {
                    ioid: r.ioid,
                    result,
                });
            }
            Message::Message(m) => {
                tracing::info!(
                    "server message about request {}: {:?} {}",
                    m.ioid,
                    m.kind,
                    m.text
                );
            }
            Message::SearchResponse(s) => self.events.push_back(Event::SearchResponse(s)),
            _ => {}
        }
    }

    fn channel_created(&mut self, cid: u32, sid: u32, status: Status) {
        if !self.channels.contains_key(&cid) {
            return;
        }
        let waiting: Vec<Ioid> = {
            let mut v: Vec<Ioid> = self
                .ops
                .iter()
                .filter(|(_, op)| op.cid == cid && op.phase == Phase::WaitChannel)
                .map(|(id, _)| *id)
                .collect();
            v.sort_unstable();
            v
        };
        if status.is_success() {
            if let Some(c) = self.channels.get_mut(&cid) {
                c.sid = Some(sid);
            }
            for ioid in waiting {
                self.send_create(ioid, sid);
            }
        } else {
            if let Some(c) = self.channels.remove(&cid) {
                self.by_name.remove(&c.name);
            }
            for ioid in waiting {
                self.finish(ioid, Err(Failure::Remote(status.clone())));
            }
        }
    }

    fn channel_lost(&mut self, cid: u32) {
        let Some(c) = self.channels.remove(&cid) else {
            return;
        };
        self.by_name.remove(&c.name);
        let mut ioids: Vec<Ioid> = self
            .ops
            .iter()
            .filter(|(_, op)| op.cid == cid)
            .map(|(id, _)| *id)
            .collect();
        ioids.sort_unstable();
        for ioid in ioids {
            self.op_types.remove(ioid);
            if let Some(op) = self.ops.remove(&ioid) {
                self.events.push_back(match op.request.kind {
                    OpKind::Monitor { .. } => Event::MonitorEnded { ioid, status: None },
                    _ => Event::Done {
                        ioid,
                        result: Err(Failure::Disconnected),
                    },
                });
            }
        }
    }

    fn op_response(&mut self, r: OpResponse, bytes: usize) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::msg::{CreateChannelResponse, DataRole, DestroyChannel, ValidationRequest};
    use pva_codec::{FrameDecoder, Header, PvRequest, Segment};

    fn nt_double() -> Arc<StructDesc> {
        Arc::new(
            StructDesc::builder("epics:nt/NTScalar:1.0")
                .scalar("value", ScalarType::F64)
                .structure(
                    "alarm",
                    StructDesc::builder("alarm_t")
                        .scalar("severity", ScalarType::I32)
                        .build(),
                )
                .build(),
        )
    }

    /// Encode server messages and feed them to `c`.
    fn feed(c: &mut ClientConn, msgs: Vec<Message>) {
        for m in msgs {
            let mut w = Writer::new(ByteOrder::Big);
            m.write(&mut w, Direction::FromServer, &mut ValueEncoder::default())
                .unwrap();
            let mut fd = FrameDecoder::new(1 << 20);
            fd.extend(&w.finish_contiguous());
            let frame = fd.next_frame().unwrap().unwrap();
            c.handle_frame(&frame).unwrap();
        }
    }

    /// Decode what `c` wants to send, knowing the data types in `types`.
    fn sent(c: &mut ClientConn, types: &OpTypeTable) -> Vec<Message> {
        let mut fd = FrameDecoder::new(1 << 20);
        for chunk in c.poll_transmit() {
            fd.extend(&chunk);
        }
        let mut cache = TypeCache::new();
        let limits = Limits::default();
        let mut out = Vec::new();
        while let Some(frame) = fd.next_frame().unwrap() {
            assert_eq!(frame.header.direction, Direction::FromClient);
            if frame.header.control {
                continue;
            }
            out.push(
                Message::decode(
                    &frame,
                    &mut DecodeContext {
                        cache: &mut cache,
                        limits: &limits,
                        ops: types,
                    },
                )
                .unwrap(),
            );
        }
        out
    }

    fn events(c: &mut ClientConn) -> Vec<Event> {
        std::iter::from_fn(|| c.poll_event()).collect()
    }

    fn response(command: u8, ioid: u32, subcmd: u8, body: OpResponseBody) -> Message {
        Message::OpResponse(OpResponse {
            command,
            ioid,
            subcmd,
            status: Status::OK,
            body,
        })
    }

    fn request(channel: &str, kind: OpKind) -> Request {
        Request {
            channel: channel.into(),
            pv_request: PvRequest::new().to_value(),
            kind,
        }
    }

    /// Validate and create channel `name` with sid 100; returns the connection.
    fn connected() -> ClientConn {
        let mut c = ClientConn::new(
            Credentials {
                user: "alice".into(),
                host: "box".into(),
            },
            Limits::default(),
        );
        feed(
            &mut c,
            vec![
                Message::ValidationRequest(ValidationRequest {
                    receive_buffer_size: 1 << 16,
                    registry_size: 512,
                    auth_methods: vec!["anonymous".into(), "ca".into()],
                }),
                Message::Validated(Status::OK),
            ],
        );
        assert_eq!(events(&mut c), vec![Event::Validated]);
        sent(&mut c, &OpTypeTable::new());
        c
    }

    #[test]
    fn validation_answers_ca_and_waits_before_creating_channels() {
        let mut c = ClientConn::new(
            Credentials {
                user: "alice".into(),
                host: "box".into(),
            },
            Limits::default(),
        );
        // Byte order control first, as servers send it.
        let order = Header {
            control: true,
            segment: Segment::None,
            ..Header::application(
                control::SET_BYTE_ORDER,
                Direction::FromServer,
                ByteOrder::Big,
                0,
            )
        };
        let mut fd = FrameDecoder::new(64);
        fd.extend(&order.encode());
        c.handle_frame(&fd.next_frame().unwrap().unwrap()).unwrap();
        let ioid = c.start(request("pv", OpKind::Get));
        feed(
            &mut c,
            vec![Message::ValidationRequest(ValidationRequest {
                receive_buffer_size: 1 << 16,
                registry_size: 512,
                auth_methods: vec!["anonymous".into(), "ca".into()],
            })],
        );
        let out = sent(&mut c, &OpTypeTable::new());
        assert_eq!(out.len(), 1, "no channel before validation: {out:?}");
        let Message::ValidationResponse(v) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(v.method, "ca");
        assert_eq!(v.ca_identity(), Some(("alice".into(), "box".into())));
        feed(&mut c, vec![Message::Validated(Status::OK)]);
        let out = sent(&mut c, &OpTypeTable::new());
        assert_eq!(
            out,
            vec![Message::CreateChannel(CreateChannel {
                channels: vec![(1, "pv".into())]
            })]
        );
        assert_eq!(c.op_count(), 1);
        assert!(ioid > 0);
    }

    #[test]
    fn get_runs_init_exec_destroy_and_shares_the_channel() {
        let mut c = connected();
        let a = c.start(request("pv", OpKind::Get));
        let b = c.start(request("pv", OpKind::Info(String::new())));
        let out = sent(&mut c, &OpTypeTable::new());
        assert_eq!(out.len(), 1, "one channel for both operations: {out:?}");
        feed(
            &mut c,
            vec![Message::CreateChannelResponse(CreateChannelResponse {
                cid: 1,
                sid: 100,
                status: Status::OK,
            })],
        );
        let out = sent(&mut c, &OpTypeTable::new());
        assert!(
            matches!(&out[0], Message::OpRequest(r) if r.ioid == a && r.sid == 100 && r.subcmd == SUB_INIT)
        );
        assert!(matches!(&out[1], Message::GetField(g) if g.ioid == b && g.sid == 100));

        let desc = FieldDesc::Struct(nt_double());
        feed(
            &mut c,
            vec![
                response(
                    cmd::GET,
                    a,
                    SUB_INIT,
                    OpResponseBody::InitType(desc.clone()),
                ),
                Message::GetFieldResponse(pva_codec::msg::GetFieldResponse {
                    ioid: b,
                    status: Status::OK,
                    desc: Some(desc.clone()),
                }),
            ],
        );
        assert_eq!(
            events(&mut c),
            vec![Event::Done {
                ioid: b,
                result: Ok(Output::Info(desc.clone()))
            }]
        );
        let out = sent(&mut c, &OpTypeTable::new());
        assert!(
            matches!(&out[0], Message::OpRequest(r) if r.ioid == a && r.subcmd == 0 && r.body == OpRequestBody::Empty)
        );

        let mut v = StructValue::new(nt_double());
        v.set("value", 4.5).unwrap();
        feed(
            &mut c,
            vec![response(
                cmd::GET,
                a,
                0,
                OpResponseBody::Data {
                    changed: BitSet::with(0),
                    value: v.clone(),
                },
            )],
        );
        assert_eq!(
            events(&mut c),
            vec![Event::Done {
                ioid: a,
                result: Ok(Output::Get(v))
            }]
        );
        assert_eq!(
            sent(&mut c, &OpTypeTable::new()),
            vec![Message::DestroyRequest(RequestRef { sid: 100, ioid: a })]
        );
        assert_eq!(c.op_count(), 0);
        // A late reply for the finished request is ignored.
        feed(
            &mut c,
            vec![response(cmd::GET, a, 0, OpResponseBody::Empty)],
        );
        assert!(events(&mut c).is_empty());
    }

    #[test]
    fn put_reads_then_writes_only_the_given_fields() {
        let mut c = connected();
        let ioid = c.start(request(
            "pv",
            OpKind::Put(vec![("value".into(), Value::String("7.5".into()))]),
        ));
        feed(
            &mut c,
            vec![Message::CreateChannelResponse(CreateChannelResponse {
                cid: 1,
                sid: 9,
                status: Status::OK,
            })],
        );
        sent(&mut c, &OpTypeTable::new());
        let desc = FieldDesc::Struct(nt_double());
        feed(
            &mut c,
            vec![response(
                cmd::PUT,
                ioid,
                SUB_INIT,
                OpResponseBody::InitType(desc.clone()),
            )],
        );
        let out = sent(&mut c, &OpTypeTable::new());
        assert!(matches!(&out[0], Message::OpRequest(r) if r.subcmd == SUB_GET));
        let mut current = StructValue::new(nt_double());
        current.set("alarm.severity", 2).unwrap();
        feed(
            &mut c,
            vec![response(
                cmd::PUT,
                ioid,
                SUB_GET,
                OpResponseBody::Data {
                    changed: BitSet::with(0),
                    value: current,
                },
            )],
        );
        let mut types = OpTypeTable::new();
        types.insert(ioid, DataRole::Value, desc);
        let out = sent(&mut c, &types);
        let Message::OpRequest(OpRequest {
            subcmd: 0,
            body: OpRequestBody::Data { changed, value },
            ..
        }) = &out[0]
        else {
            panic!("{out:?}")
        };
        assert_eq!(changed.iter().collect::<Vec<_>>(), vec![1]);
        assert_eq!(value.get("value"), Some(&Value::F64(7.5)));
        feed(
            &mut c,
            vec![response(cmd::PUT, ioid, 0, OpResponseBody::Empty)],
        );
        assert_eq!(
            events(&mut c),
            vec![Event::Done {
                ioid,
                result: Ok(Output::Put)
            }]
        );
    }

    #[test]
    fn put_of_a_bad_value_fails_without_writing() {
        let mut c = connected();
        let ioid = c.start(request(
            "pv",
            OpKind::Put(vec![("value".into(), Value::String("abc".into()))]),
        ));
        feed(
            &mut c,
            vec![
                Message::CreateChannelResponse(CreateChannelResponse {
                    cid: 1,
                    sid: 9,
                    status: Status::OK,
                }),
                response(
                    cmd::PUT,
                    ioid,
                    SUB_INIT,
                    OpResponseBody::InitType(FieldDesc::Struct(nt_double())),
                ),
                response(
                    cmd::PUT,
                    ioid,
                    SUB_GET,
                    OpResponseBody::Data {
                        changed: BitSet::with(0),
                        value: StructValue::new(nt_double()),
                    },
                ),
            ],
        );
        let ev = events(&mut c);
        assert!(
            matches!(
                &ev[..],
                [Event::Done {
                    result: Err(Failure::Value(_)),
                    ..
                }]
            ),
            "{ev:?}"
        );
        let out = sent(&mut c, &OpTypeTable::new());
        assert!(
            matches!(out.last(), Some(Message::DestroyRequest(_))),
            "{out:?}"
        );
    }

    #[test]
    fn monitor_merges_updates_and_acks_as_the_queue_drains() {
        let mut c = connected();
        let ioid = c.start(request(
            "pv",
            OpKind::Monitor {
                queue_size: 4,
                pipeline: true,
                budget: None,
            },
        ));
        feed(
            &mut c,
            vec![Message::CreateChannelResponse(CreateChannelResponse {
                cid: 1,
                sid: 5,
                status: Status::OK,
            })],
        );
        let out = sent(&mut c, &OpTypeTable::new());
        let Message::OpRequest(OpRequest {
            subcmd,
            body: OpRequestBody::Init {
                pipeline_window, ..
            },
            ..
        }) = &out[1]
        else {
            panic!("{out:?}")
        };
        assert_eq!(*subcmd, SUB_INIT | SUB_PIPELINE);
        assert_eq!(*pipeline_window, Some(4));

        feed(
            &mut c,
            vec![response(
                cmd::MONITOR,
                ioid,
                SUB_INIT,
                OpResponseBody::InitType(FieldDesc::Struct(nt_double())),
            )],
        );
        let out = sent(&mut c, &OpTypeTable::new());
        assert!(matches!(&out[0], Message::OpRequest(r) if r.subcmd == MONITOR_START));
        assert!(matches!(
            &events(&mut c)[..],
            [Event::MonitorStarted { .. }]
        ));

        let update = |value: f64, severity: i32, changed: BitSet| {
            let mut v = StructValue::new(nt_double());
            v.set("value", value).unwrap();
            v.set("alarm.severity", severity).unwrap();
            response(
                cmd::MONITOR,
                ioid,
                0,
                OpResponseBody::Update {
                    changed,
                    value: v,
                    overrun: BitSet::new(),
                },
            )
        };
        feed(&mut c, vec![update(1.0, 3, BitSet::with(0))]);
        feed(&mut c, vec![update(2.0, 0, BitSet::with(1))]);
        let ev = events(&mut c);
        let Event::MonitorUpdate { value, .. } = &ev[1] else {
            panic!("{ev:?}")
        };
        assert_eq!(value.get("value"), Some(&Value::F64(2.0)));
        assert_eq!(
            value.get("alarm.severity"),
            Some(&Value::I32(3)),
            "kept from before"
        );
        assert_eq!(c.window(ioid).map(Window::available), Some(2));

        c.consumed(ioid, 1);
        assert!(sent(&mut c, &OpTypeTable::new()).is_empty());
        c.consumed(ioid, 1);
        let out = sent(&mut c, &OpTypeTable::new());
        assert!(
            matches!(
                &out[..],
                [Message::OpRequest(OpRequest {
                    subcmd: SUB_PIPELINE,
                    body: OpRequestBody::Ack(2),
                    ..
                })]
            ),
            "{out:?}"
        );
        assert_eq!(c.window(ioid).map(Window::available), Some(4));

        feed(
            &mut c,
            vec![response(
                cmd::MONITOR,
                ioid,
                SUB_DESTROY,
                OpResponseBody::Empty,
            )],
        );
        assert_eq!(
            events(&mut c),
            vec![Event::MonitorEnded {
                ioid,
                status: Some(Status::OK)
            }]
        );
    }

    #[test]
    fn refused_channel_fails_its_operations() {
        let mut c = connected();
        let ioid = c.start(request("nope", OpKind::Get));
        feed(
            &mut c,
            vec![Message::CreateChannelResponse(CreateChannelResponse {
                cid: 1,
                sid: 0,
                status: Status::error("no such channel"),
            })],
        );
        assert_eq!(
            events(&mut c),
            vec![Event::Done {
                ioid,
                result: Err(Failure::Remote(Status::error("no such channel")))
            }]
        );
    }

    #[test]
    fn losing_the_connection_or_the_channel_ends_everything() {
        let mut c = connected();
        let get = c.start(request("a", OpKind::Get));
        let mon = c.start(request(
            "b",
            OpKind::Monitor {
                queue_size: 2,
                pipeline: false,
                budget: None,
            },
        ));
        feed(
            &mut c,
            vec![
                Message::CreateChannelResponse(CreateChannelResponse {
                    cid: 2,
                    sid: 20,
                    status: Status::OK,
                }),
                Message::DestroyChannel(DestroyChannel { sid: 20, cid: 2 }),
            ],
        );
        assert_eq!(
            events(&mut c),
            vec![Event::MonitorEnded {
                ioid: mon,
                status: None
            }]
        );
        c.disconnected();
        assert_eq!(
            events(&mut c),
            vec![Event::Done {
                ioid: get,
                result: Err(Failure::Disconnected)
            }]
        );
        assert_eq!(c.op_count(), 0);
    }

    #[test]
    fn garbage_from_the_server_is_an_error_not_a_panic() {
        let mut c = connected();
        let mut fd = FrameDecoder::new(1024);
        // A create-channel response cut short.
        fd.extend(&[0xCA, 2, 0x40, cmd::CREATE_CHANNEL, 3, 0, 0, 0, 1, 2, 3]);
        let frame = fd.next_frame().unwrap().unwrap();
        assert!(c.handle_frame(&frame).is_err());
    }
}
