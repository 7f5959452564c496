//! The protocol logic of one server connection, without I/O: the server's half in the shape of
//! the client's [`ClientConn`](crate::client::proto::ClientConn). Feed it the client's frames;
//! take out the bytes to send and the events to report.
//!
//! It greets the client (its byte order, then the validation request), answers echoes, decodes
//! every message with the connection's type cache, takes the client's credentials, creates
//! channels from the sources, runs get, put, rpc and monitor operations within [`ConnLimits`]
//! and the access policy, and moves monitor updates from their subscriptions as far as each
//! monitor's flow-control window allows. Nothing here touches a socket, a clock or a runtime.
//!
//! # Call order
//!
//! A driver (the tokio task in `conn.rs`, or a test) keeps one [`ServerConn`] per accepted
//! connection and calls, until the connection ends:
//!
//! 1. [`ServerConn::new`] once, when the connection is accepted (the greeting is queued then),
//!    with a [`Waker`] that the connection's subscriptions wake when a PV posts an update;
//! 2. [`ServerConn::poll_transmit`]: write its chunks, in order; when its `wake` is set, a
//!    monitor has more to send at once, so come back to step 2 without waiting for the waker
//!    (after handling any frame that is ready);
//! 3. [`ServerConn::poll_event`] until it gives `None`: what happened, for the logs;
//! 4. wait for the next frame, the waker or the end of the connection; give every frame read to
//!    [`ServerConn::handle_frame`]; then back to step 2.
//!
//! An error from `handle_frame` means the client broke the protocol and the connection must
//! close; an error from `poll_transmit` means a reply of ours does not encode, and the
//! connection closes too. Dropping the `ServerConn` ends its subscriptions.

mod op;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Waker;

use bytes::Bytes;
use pva_codec::frame::{control, write_control};
use pva_codec::msg::{
    CreateChannelResponse, DestroyChannel, GetFieldResponse, SearchResponse, ValidationRequest,
};
use pva_codec::{
    ByteOrder, DecodeContext, DecodeError, Direction, EncodeError, FieldDesc, Frame, Guid, Limits,
    Message, Status, TypeCache, ValueEncoder, Writer,
};

use self::op::{Op, OpDescs};
use super::access::AccessPolicy;
use super::server_channel::{server_channel, SERVER_CHANNEL};
use super::shared_pv::{Attachment, SharedPv};
use super::source::{PeerInfo, Source};
use super::stats::{Refusal, ServerStats};
use super::subscription::Update;

/// Default monitor queue when the pvRequest names none (pvxs uses 4).
pub const DEFAULT_QUEUE_SIZE: usize = 4;

/// Most monitor updates one [`ServerConn::poll_transmit`] takes, so that one busy monitor
/// cannot starve the connection's reads.
pub const UPDATES_PER_TRANSMIT: usize = 64;

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
    /// Most bytes of arrays one monitor's queue may hold on the server; past it, newer updates
    /// squash into the newest (default 64 MiB: 32 frames of 2 MiB, any number of scalars).
    pub max_queue_bytes: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_channels: 1024,
            max_operations: 4096,
            max_operations_per_channel: 256,
            max_queue_size: 1024,
            max_queue_bytes: 64 << 20,
        }
    }
}

/// What the connection reports to its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The client answered the validation request: who it says it is.
    Validated(PeerInfo),
    /// A channel was created for the client.
    ChannelCreated {
        /// The server's id of the channel.
        sid: u32,
        /// Its name.
        name: String,
    },
    /// The client destroyed a channel (and with it the channel's operations).
    ChannelDestroyed {
        /// The server's id of the channel.
        sid: u32,
        /// Its name.
        name: String,
    },
}

/// How the client broke the protocol: the connection cannot go on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtoError {
    /// A message that does not decode (bad bytes, past the limits, or data for a request the
    /// connection does not have).
    #[error("undecodable message (command {command:#04x}): {source}")]
    Decode {
        /// The message's command.
        command: u8,
        /// Why it does not decode.
        source: DecodeError,
    },
    /// A message only a server sends.
    #[error("client sent a server-side message (command {0:#04x})")]
    ServerMessage(u8),
}

/// What [`ServerConn::poll_transmit`] gives the driver.
#[derive(Debug, Default)]
pub struct Transmit {
    /// The bytes to write, in order, as chunks for one vectored write (empty: nothing to send).
    pub chunks: Vec<Bytes>,
    /// A monitor has more updates it may send now than one transmit takes: poll again without
    /// waiting for the waker.
    pub wake: bool,
}

struct Channel {
    cid: u32,
    name: String,
    pv: SharedPv,
    /// Served by a source (not the built-in `server` channel): writes go through the access
    /// policy.
    from_source: bool,
    /// The channel's hold on its PV, for the PV's connect hooks.
    _attached: Attachment,
}

/// A control message or an application message waiting to be sent.
enum Out {
    Control { command: u8, value: u32 },
    Msg(Message),
}

/// The state of one server connection: its channels and operations.
pub struct ServerConn {
    peer: PeerInfo,
    sources: Vec<Arc<dyn Source>>,
    /// The `server` channel, served when no source has a channel of that name.
    server_channel: SharedPv,
    channels: HashMap<u32, Channel>,
    ops: HashMap<u32, Op>,
    next_sid: u32,
    /// Given to every subscription, which wakes it when it queues an update.
    waker: Waker,
    limits: ConnLimits,
    decode_limits: Limits,
    /// Types the client defined, by id.
    rx_types: TypeCache,
    /// Our byte order, announced in the greeting.
    order: ByteOrder,
    validated: bool,
    access: Option<Arc<dyn AccessPolicy>>,
    stats: Arc<ServerStats>,
    out: Vec<Out>,
    events: VecDeque<Event>,
    /// Updates taken from a subscription at once, kept to reuse its allocation.
    batch: Vec<Update>,
}

impl ServerConn {
    /// A connection accepted from `addr`, served from `sources` within `limits`; `waker` is
    /// woken whenever one of its monitors has an update queued. Its greeting is queued.
    pub fn new(
        addr: SocketAddr,
        sources: Vec<Arc<dyn Source>>,
        waker: Waker,
        limits: ConnLimits,
    ) -> Self {
        let greeting = ValidationRequest {
            receive_buffer_size: 0x10000,
            registry_size: 0x7fff,
            auth_methods: vec!["anonymous".into(), "ca".into()],
        };
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
            waker,
            limits,
            decode_limits: Limits::default(),
            rx_types: TypeCache::new(),
            order: ByteOrder::native(),
            validated: false,
            access: None,
            stats: Arc::default(),
            out: vec![
                Out::Control {
                    command: control::SET_BYTE_ORDER,
                    value: 0,
                },
                Out::Msg(Message::ValidationRequest(greeting)),
            ],
            events: VecDeque::new(),
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

    /// Decode the client's messages within `limits` (the default otherwise).
    pub fn with_decode_limits(mut self, limits: Limits) -> Self {
        self.decode_limits = limits;
        self
    }

    /// Who the peer is.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Number of open channels.
    pub fn channel_count(&self) -> usize {
        self.channels.len()
    }

    /// Names of the channels open on this connection.
    pub fn channel_names(&self) -> Vec<String> {
        self.channels.values().map(|c| c.name.clone()).collect()
    }

    /// True once the client has answered the validation request.
    pub fn is_validated(&self) -> bool {
        self.validated
    }

    /// Feed one frame from the client. An error means the client broke the protocol: close
    /// the connection.
    pub fn handle_frame(&mut self, frame: &Frame) -> Result<(), ProtoError> {
        if frame.header.control {
            if frame.header.command == control::ECHO_REQUEST {
                self.out.push(Out::Control {
                    command: control::ECHO_RESPONSE,
                    value: frame.header.payload_size,
                });
            }
            return Ok(());
        }
        let msg = Message::decode(
            frame,
            &mut DecodeContext {
                cache: &mut self.rx_types,
                limits: &self.decode_limits,
                ops: &OpDescs(&self.ops),
            },
        )
        .map_err(|source| ProtoError::Decode {
            command: frame.header.command,
            source,
        })?;
        self.handle_message(msg)
    }

    /// Everything there is to send now: the replies queued by the frames handled, then up to
    /// [`UPDATES_PER_TRANSMIT`] monitor updates, encoded for one vectored write.
    pub fn poll_transmit(&mut self) -> Result<Transmit, EncodeError> {
        self.poll_monitors(UPDATES_PER_TRANSMIT);
        let wake = self.monitors_ready();
        if self.out.is_empty() {
            return Ok(Transmit {
                chunks: Vec::new(),
                wake,
            });
        }
        let mut w = Writer::with_capacity(self.order, 4096);
        let mut enc = ValueEncoder::default();
        for out in self.out.drain(..) {
            match out {
                Out::Control { command, value } => {
                    write_control(&mut w, Direction::FromServer, command, value)
                }
                Out::Msg(m) => m.write(&mut w, Direction::FromServer, &mut enc)?,
            }
        }
        Ok(Transmit {
            chunks: w.finish(),
            wake,
        })
    }

    /// The next event to report.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn send(&mut self, msg: Message) {
        self.out.push(Out::Msg(msg));
    }

    fn find(&self, name: &str) -> Option<SharedPv> {
        self.sources.iter().find_map(|s| s.channel(name))
    }

    fn handle_message(&mut self, msg: Message) -> Result<(), ProtoError> {
        match msg {
            Message::ValidationResponse(v) => {
                self.peer.method = v.method.clone();
                if let Some((user, host)) = v.ca_identity() {
                    self.peer.user = user;
                    self.peer.host = host;
                }
                self.validated = true;
                self.events.push_back(Event::Validated(self.peer.clone()));
                self.send(Message::Validated(Status::OK));
            }
            Message::Echo(payload) => self.send(Message::Echo(payload)),
            Message::Search(s) => {
                let ids: Vec<u32> = s
                    .channels
                    .iter()
                    .filter(|(_, name)| self.find(name).is_some())
                    .map(|(id, _)| *id)
                    .collect();
                if !ids.is_empty() || s.must_reply() {
                    self.send(Message::SearchResponse(SearchResponse {
                        guid: Guid::default(),
                        sequence: s.sequence,
                        address: std::net::Ipv4Addr::UNSPECIFIED.into(),
                        port: 0,
                        protocol: "tcp".into(),
                        found: !ids.is_empty(),
                        ids,
                    }));
                }
            }
            Message::CreateChannel(c) => {
                for (cid, name) in c.channels {
                    let reply = self.create_channel(cid, name);
                    self.send(reply);
                }
            }
            Message::DestroyChannel(d) => {
                if let Some(ch) = self.channels.remove(&d.sid) {
                    self.ops.retain(|_, op| op.sid != d.sid);
                    self.send(Message::DestroyChannel(DestroyChannel {
                        sid: d.sid,
                        cid: ch.cid,
                    }));
                    self.events.push_back(Event::ChannelDestroyed {
                        sid: d.sid,
                        name: ch.name,
                    });
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
                self.send(Message::GetFieldResponse(GetFieldResponse {
                    ioid: g.ioid,
                    status,
                    desc,
                }));
            }
            Message::OpRequest(r) => {
                if let Some(reply) = self.op_request(r) {
                    self.send(reply);
                }
            }
            Message::DestroyRequest(r) | Message::CancelRequest(r) => {
                self.ops.remove(&r.ioid);
            }
            Message::Unknown { .. } | Message::Beacon(_) | Message::OriginTag(_) => {}
            other => return Err(ProtoError::ServerMessage(other.command())),
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
                self.events.push_back(Event::ChannelCreated {
                    sid,
                    name: name.clone(),
                });
                self.channels.insert(
                    sid,
                    Channel {
                        cid,
                        name,
                        _attached: pv.attach(),
                        pv,
                        from_source,
                    },
                );
                reply(sid, Status::OK)
            }
        }
    }
}
