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
use pva_codec::msg::op::SUB_PIPELINE;
use pva_codec::msg::{
    cmd, CreateChannel, OpRequest, OpRequestBody, OpTypeTable, RequestRef, Search, SearchResponse,
    ValidationResponse,
};
use pva_codec::{
    AnyValue, BitSet, ByteOrder, DecodeContext, DecodeError, Direction, FieldDesc, Frame, Limits,
    Message, ScalarType, Status, StructDesc, StructValue, TypeCache, Value, ValueEncoder, Writer,
};

use super::window::Window;

mod credentials;
mod op;
#[cfg(test)]
mod tests;

pub use credentials::{Credentials, CA_USER_VAR};
use op::{MonitorBases, Op, Phase};

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
        /// Count the window in bytes too (pipelined only): at most this many bytes in
        /// flight, see [`Window::with_budget`].
        budget: Option<u64>,
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

#[derive(Debug)]
struct Channel {
    name: String,
    sid: Option<u32>,
    /// Create sent (only after validation).
    requested: bool,
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
    out: VecDeque<Message>,
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
                self.out.push_back(Message::OpRequest(OpRequest {
                    command: cmd::MONITOR,
                    sid,
                    ioid,
                    subcmd: SUB_PIPELINE,
                    body: OpRequestBody::Ack(ack),
                }));
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
                    .push_back(Message::DestroyRequest(RequestRef { sid, ioid }));
            }
        }
    }

    /// Search for `name` over this connection (name servers), with search instance `id`.
    pub fn search(&mut self, sequence: u32, id: u32, name: &str) {
        self.out.push_back(Message::Search(Search {
            sequence,
            flags: 0,
            response_address: std::net::Ipv4Addr::UNSPECIFIED.into(),
            response_port: 0,
            protocols: vec!["tcp".into()],
            channels: vec![(id, name.to_owned())],
        }));
    }

    /// Queue an echo (keepalive).
    pub fn echo(&mut self) {
        // An application echo (as pvxs sends): pvxs servers answer it, not the control one.
        self.out.push_back(Message::Echo(Bytes::new()));
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
        let ioids = self.ops.keys().copied().collect();
        self.lose(ioids);
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
            if let Err(e) = out.write(&mut w, Direction::FromClient, &mut ValueEncoder::default()) {
                tracing::warn!("dropping a message that does not encode: {e}");
                continue;
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
            self.out.push_back(Message::CreateChannel(CreateChannel {
                channels: vec![(cid, name)],
            }));
        }
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
                    .push_back(Message::ValidationResponse(ValidationResponse {
                        receive_buffer_size: 0x10000,
                        registry_size: 0x7fff,
                        qos: 0,
                        method: method.into(),
                        credentials,
                    }));
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
        let ioids = self
            .ops
            .iter()
            .filter(|(_, op)| op.cid == cid)
            .map(|(id, _)| *id)
            .collect();
        self.lose(ioids);
    }

    /// Operations `ioids` lost their channel or connection: each ends, in order of its id, as
    /// a failure (monitors: lost, to be created again elsewhere).
    fn lose(&mut self, mut ioids: Vec<Ioid>) {
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
}
