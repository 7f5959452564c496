//! The server connection driven without sockets: a client's messages go in as encoded frames,
//! and what the server transmits is decoded as a client would.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;

use pva_codec::frame::write_message;
use pva_codec::msg::op::{SUB_DESTROY, SUB_GET, SUB_INIT, SUB_PIPELINE, SUB_PROCESS};
use pva_codec::msg::{
    cmd, CreateChannel, OpRequest, OpRequestBody, OpResponse, OpResponseBody, OpTypeTable,
    RequestRef, ValidationResponse,
};
use pva_codec::nt::NtScalar;
use pva_codec::{
    AnyValue, BitSet, FrameDecoder, PvRequest, ScalarArray, ScalarType, StructDesc, StructValue,
    Value,
};

use super::*;
use crate::client::proto::{self as client, ClientConn, Credentials, Output, Request};
use crate::server::access::AccessRules;
use crate::server::shared_pv::CLOSED;
use crate::server::source::StaticSource;

mod limits;

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// What the client receives.
#[derive(Debug, PartialEq)]
enum Rx {
    Control { command: u8, value: u32 },
    Msg(Message),
}

/// The client's end of an in-memory connection to a [`ServerConn`]. It sends big-endian,
/// whatever the server's order, as a client may.
struct Client {
    server: ServerConn,
    wakes: Arc<Wakes>,
    types: TypeCache,
    op_types: OpTypeTable,
    /// The `wake` of the last transmit.
    wake: bool,
}

impl Client {
    fn connect(source: Arc<StaticSource>, limits: ConnLimits, access: Option<AccessRules>) -> Self {
        let wakes = Arc::new(Wakes::default());
        let sources: Vec<Arc<dyn Source>> = vec![source];
        let server = ServerConn::new(
            "10.1.2.3:5555".parse().unwrap(),
            sources,
            Waker::from(wakes.clone()),
            limits,
        )
        .with_access(access.map(|a| Arc::new(a) as Arc<dyn AccessPolicy>));
        Client {
            server,
            wakes,
            types: TypeCache::new(),
            op_types: OpTypeTable::new(),
            wake: false,
        }
    }

    fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), ProtoError> {
        let mut frames = FrameDecoder::new(1 << 20);
        frames.extend(bytes);
        while let Some(frame) = frames.next_frame().unwrap() {
            self.server.handle_frame(&frame)?;
        }
        Ok(())
    }

    fn send(&mut self, msg: Message) -> Result<(), ProtoError> {
        let mut w = Writer::new(ByteOrder::Big);
        msg.write(&mut w, Direction::FromClient, &mut ValueEncoder::default())
            .unwrap();
        self.send_bytes(&w.finish_contiguous())
    }

    /// Everything the server transmits now, decoded.
    fn receive(&mut self) -> Vec<Rx> {
        let transmit = self.server.poll_transmit().unwrap();
        self.wake = transmit.wake;
        let mut frames = FrameDecoder::new(1 << 24);
        for chunk in &transmit.chunks {
            frames.extend(chunk);
        }
        let limits = Limits::default();
        let mut received = Vec::new();
        while let Some(frame) = frames.next_frame().unwrap() {
            assert_eq!(frame.header.direction, Direction::FromServer);
            assert_eq!(frame.header.order, ByteOrder::native());
            if frame.header.control {
                received.push(Rx::Control {
                    command: frame.header.command,
                    value: frame.header.payload_size,
                });
                continue;
            }
            let mut cx = DecodeContext {
                cache: &mut self.types,
                limits: &limits,
                ops: &self.op_types,
            };
            let msg = Message::decode(&frame, &mut cx).unwrap();
            self.op_types.learn(&msg);
            received.push(Rx::Msg(msg));
        }
        received
    }

    /// The application messages the server transmits now.
    fn replies(&mut self) -> Vec<Message> {
        let received = self.receive();
        received
            .into_iter()
            .map(|rx| match rx {
                Rx::Msg(m) => m,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// Send `msg`; the one reply to it.
    fn one(&mut self, msg: Message) -> Message {
        self.send(msg).unwrap();
        let mut replies = self.replies();
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies.pop().unwrap()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    fn wakes(&self) -> usize {
        self.wakes.0.load(Ordering::SeqCst)
    }
}

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

fn credentials(user: &str, host: &str) -> ValidationResponse {
    let cred = StructDesc::builder("")
        .scalar("user", ScalarType::String)
        .scalar("host", ScalarType::String)
        .build();
    let mut cred = StructValue::new(Arc::new(cred));
    cred.set("user", user).unwrap();
    cred.set("host", host).unwrap();
    ValidationResponse {
        receive_buffer_size: 0x10000,
        registry_size: 0x7fff,
        qos: 0,
        method: "ca".into(),
        credentials: AnyValue::new(Value::Struct(cred)),
    }
}

/// A client of `source` validated as `user`@`host`, its greeting and events consumed.
fn validated(
    source: Arc<StaticSource>,
    user: &str,
    host: &str,
    limits: ConnLimits,
    access: Option<AccessRules>,
) -> Client {
    let mut c = Client::connect(source, limits, access);
    assert_eq!(c.receive().len(), 2, "the greeting");
    let reply = c.one(Message::ValidationResponse(credentials(user, host)));
    assert_eq!(reply, Message::Validated(Status::OK));
    c.events();
    c
}

/// A client validated as u@h, with the default limits and no access policy.
fn plain(source: Arc<StaticSource>) -> Client {
    validated(source, "u", "h", ConnLimits::default(), None)
}

/// Create channel `name`; its sid, or the error status.
fn create(c: &mut Client, cid: u32, name: &str) -> Result<u32, Status> {
    let msg = Message::CreateChannel(CreateChannel {
        channels: vec![(cid, name.into())],
    });
    match c.one(msg) {
        Message::CreateChannelResponse(r) if r.status.is_success() => Ok(r.sid),
        Message::CreateChannelResponse(r) => Err(r.status),
        other => panic!("{other:?}"),
    }
}

fn op(command: u8, sid: u32, ioid: u32, subcmd: u8, body: OpRequestBody) -> Message {
    Message::OpRequest(OpRequest {
        command,
        sid,
        ioid,
        subcmd,
        body,
    })
}

fn response(reply: Message) -> OpResponse {
    match reply {
        Message::OpResponse(r) => r,
        other => panic!("{other:?}"),
    }
}

fn init_with(
    c: &mut Client,
    command: u8,
    sid: u32,
    ioid: u32,
    request: &str,
    window: Option<u32>,
) -> OpResponse {
    let pv_request = PvRequest::parse(request).unwrap().to_value();
    let subcmd = if window.is_some() {
        SUB_INIT | SUB_PIPELINE
    } else {
        SUB_INIT
    };
    let body = OpRequestBody::Init {
        pv_request,
        pipeline_window: window,
    };
    response(c.one(op(command, sid, ioid, subcmd, body)))
}

fn init(c: &mut Client, command: u8, sid: u32, ioid: u32, request: &str) -> Status {
    init_with(c, command, sid, ioid, request, None).status
}

fn put(c: &mut Client, sid: u32, ioid: u32, x: f64) -> Status {
    assert!(init(c, cmd::PUT, sid, ioid, "").is_success());
    let mut value = NtScalar::new(ScalarType::F64).create();
    value.set("value", x).unwrap();
    let body = OpRequestBody::Data {
        changed: BitSet::with(1),
        value,
    };
    response(c.one(op(cmd::PUT, sid, ioid, 0, body))).status
}

fn post(pv: &SharedPv, x: f64) {
    let mut v = pv.current();
    v.set("value", x).unwrap();
    pv.post_changed(v, BitSet::with(1));
}

/// The values of the monitor updates in `replies`, in order.
fn update_values(replies: Vec<Message>) -> Vec<f64> {
    replies
        .into_iter()
        .map(|m| match response(m).body {
            OpResponseBody::Update { value, .. } => {
                value.get("value").and_then(Value::as_f64).unwrap()
            }
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Start monitor `ioid` (subscribed with `request`, pipelined with `window` when given).
fn start_monitor(c: &mut Client, sid: u32, ioid: u32, request: &str, window: Option<u32>) {
    assert!(init_with(c, cmd::MONITOR, sid, ioid, request, window)
        .status
        .is_success());
    c.send(op(
        cmd::MONITOR,
        sid,
        ioid,
        SUB_PROCESS | SUB_GET,
        OpRequestBody::Empty,
    ))
    .unwrap();
}

#[test]
fn the_greeting_is_the_byte_order_then_the_validation_request() {
    let (source, _) = source();
    let mut c = Client::connect(source, ConnLimits::default(), None);
    let greeting = c.receive();
    assert_eq!(
        greeting,
        vec![
            Rx::Control {
                command: control::SET_BYTE_ORDER,
                value: 0
            },
            Rx::Msg(Message::ValidationRequest(ValidationRequest {
                receive_buffer_size: 0x10000,
                registry_size: 0x7fff,
                auth_methods: vec!["anonymous".into(), "ca".into()],
            })),
        ]
    );
    assert!(c.receive().is_empty(), "sent once");
    assert!(!c.server.is_validated());
}

#[test]
fn validation_takes_the_identity_the_client_claims() {
    let (source, _) = source();
    let mut c = Client::connect(source, ConnLimits::default(), None);
    c.receive();
    assert!(c.events().is_empty());
    let reply = c.one(Message::ValidationResponse(credentials("alice", "ws1")));
    assert_eq!(reply, Message::Validated(Status::OK));
    assert!(c.server.is_validated());
    let who = PeerInfo {
        addr: "10.1.2.3:5555".parse().unwrap(),
        method: "ca".into(),
        user: "alice".into(),
        host: "ws1".into(),
    };
    assert_eq!(c.events(), vec![Event::Validated(who.clone())]);
    assert_eq!(c.server.peer(), &who);
}

#[test]
fn channels_come_from_the_sources_and_go_when_destroyed() {
    let (source, _) = source();
    let mut c = plain(source);
    let sid = create(&mut c, 7, "t:mailbox").unwrap();
    let e = create(&mut c, 8, "t:nothing").unwrap_err();
    assert_eq!(e.message, "no channel 't:nothing' here");
    let server = create(&mut c, 9, SERVER_CHANNEL).unwrap();
    assert_ne!(sid, server);
    assert_eq!(c.server.channel_count(), 2);
    let reply = c.one(Message::DestroyChannel(DestroyChannel { sid, cid: 7 }));
    assert_eq!(
        reply,
        Message::DestroyChannel(DestroyChannel { sid, cid: 7 })
    );
    assert_eq!(c.server.channel_names(), vec![SERVER_CHANNEL.to_owned()]);
    let name = |n: &str| n.to_owned();
    assert_eq!(
        c.events(),
        vec![
            Event::ChannelCreated {
                sid,
                name: name("t:mailbox")
            },
            Event::ChannelCreated {
                sid: server,
                name: name(SERVER_CHANNEL)
            },
            Event::ChannelDestroyed {
                sid,
                name: name("t:mailbox")
            },
        ]
    );
}

#[test]
fn a_get_gives_the_type_then_the_current_value() {
    let (source, mailbox) = source();
    post(&mailbox, 2.5);
    let mut c = plain(source);
    let sid = create(&mut c, 1, "t:mailbox").unwrap();
    let created = init_with(&mut c, cmd::GET, sid, 1, "field(value)", None);
    let OpResponseBody::InitType(FieldDesc::Struct(desc)) = created.body else {
        panic!("{created:?}")
    };
    assert_eq!(desc.members().len(), 1, "only the selected field: {desc:?}");
    let reply = response(c.one(op(cmd::GET, sid, 1, SUB_GET, OpRequestBody::Empty)));
    assert!(reply.status.is_success());
    let OpResponseBody::Data { value, .. } = reply.body else {
        panic!("{reply:?}")
    };
    assert_eq!(value.get("value"), Some(&Value::F64(2.5)));
}

#[test]
fn a_pipelined_monitor_sends_no_more_than_its_window_until_acked() {
    let (source, mailbox) = source();
    let mut c = plain(source);
    let sid = create(&mut c, 1, "t:mailbox").unwrap();
    start_monitor(&mut c, sid, 1, "record[queueSize=8]", Some(2));
    assert_eq!(update_values(c.replies()), [0.0], "the current value first");
    let woken = c.wakes();
    for x in 1..=4 {
        post(&mailbox, f64::from(x));
    }
    assert_eq!(c.wakes() - woken, 4, "each post wakes the driver");
    assert_eq!(
        update_values(c.replies()),
        [1.0],
        "the window of 2 is spent"
    );
    assert!(!c.wake, "nothing to send until an ack");
    assert!(c.replies().is_empty());
    c.send(op(
        cmd::MONITOR,
        sid,
        1,
        SUB_PIPELINE,
        OpRequestBody::Ack(2),
    ))
    .unwrap();
    assert_eq!(update_values(c.replies()), [2.0, 3.0]);
    c.send(op(
        cmd::MONITOR,
        sid,
        1,
        SUB_PIPELINE,
        OpRequestBody::Ack(5),
    ))
    .unwrap();
    assert_eq!(update_values(c.replies()), [4.0]);
    // Stopped: updates wait in the queue.
    c.send(op(cmd::MONITOR, sid, 1, SUB_PROCESS, OpRequestBody::Empty))
        .unwrap();
    post(&mailbox, 5.0);
    assert!(c.replies().is_empty());
}

#[test]
fn more_updates_than_one_transmit_takes_ask_to_be_polled_again() {
    let (source, mailbox) = source();
    let mut c = plain(source);
    let sid = create(&mut c, 1, "t:mailbox").unwrap();
    start_monitor(&mut c, sid, 1, "record[queueSize=200]", None);
    for x in 1..=100 {
        post(&mailbox, f64::from(x));
    }
    let first = update_values(c.replies());
    assert_eq!(first.len(), UPDATES_PER_TRANSMIT);
    assert!(c.wake, "more is waiting");
    let rest = update_values(c.replies());
    assert_eq!(rest.len(), 101 - UPDATES_PER_TRANSMIT);
    assert_eq!(rest.last(), Some(&100.0));
    assert!(!c.wake);
}

#[test]
fn echoes_are_answered_in_kind() {
    let (source, _) = source();
    let mut c = plain(source);
    let mut w = Writer::new(ByteOrder::Big);
    write_control(&mut w, Direction::FromClient, control::ECHO_REQUEST, 12);
    c.send_bytes(&w.finish_contiguous()).unwrap();
    assert_eq!(
        c.receive(),
        vec![Rx::Control {
            command: control::ECHO_RESPONSE,
            value: 12
        }]
    );
    let payload = Bytes::from_static(b"ping");
    assert_eq!(
        c.one(Message::Echo(payload.clone())),
        Message::Echo(payload)
    );
}

#[test]
fn a_malformed_message_is_a_typed_error() {
    let (source, _) = source();
    let mut c = plain(source);
    // One channel announced, none given.
    let mut w = Writer::new(ByteOrder::Big);
    write_message(&mut w, Direction::FromClient, cmd::CREATE_CHANNEL, |w| {
        w.u16(1);
        Ok(())
    })
    .unwrap();
    let e = c.send_bytes(&w.finish_contiguous()).unwrap_err();
    assert!(
        matches!(
            e,
            ProtoError::Decode {
                command: cmd::CREATE_CHANNEL,
                source: DecodeError::SizeExceedsInput {
                    what: "channel count",
                    ..
                }
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("undecodable message (command 0x07): channel count of 5"),
        "{e}"
    );

    let mut value = NtScalar::new(ScalarType::F64).create();
    value.set("value", 1.0).unwrap();
    let e = c
        .send(op(
            cmd::PUT,
            1,
            99,
            0,
            OpRequestBody::Data {
                changed: BitSet::with(1),
                value,
            },
        ))
        .unwrap_err();
    assert_eq!(
        e,
        ProtoError::Decode {
            command: cmd::PUT,
            source: DecodeError::UnknownRequest { ioid: 99 }
        }
    );

    let e = c.send(Message::Validated(Status::OK)).unwrap_err();
    assert_eq!(e, ProtoError::ServerMessage(cmd::CONNECTION_VALIDATED));
    assert_eq!(
        e.to_string(),
        "client sent a server-side message (command 0x09)"
    );
}

#[test]
fn a_client_state_machine_reads_through_the_server_state_machine() {
    let (source, mailbox) = source();
    post(&mailbox, 4.25);
    let mut server = Client::connect(source, ConnLimits::default(), None);
    let mut client = ClientConn::new(
        Credentials {
            user: "alice".into(),
            host: "ws1".into(),
        },
        Limits::default(),
    );
    let ioid = client.start(Request {
        channel: "t:mailbox".into(),
        pv_request: PvRequest::new().to_value(),
        kind: client::OpKind::Get,
    });
    let mut done = None;
    for _ in 0..10 {
        let transmit = server.server.poll_transmit().unwrap();
        let mut frames = FrameDecoder::new(1 << 20);
        for chunk in &transmit.chunks {
            frames.extend(chunk);
        }
        while let Some(frame) = frames.next_frame().unwrap() {
            client.handle_frame(&frame).unwrap();
        }
        while let Some(event) = client.poll_event() {
            if let client::Event::Done { ioid: id, result } = event {
                done = Some((id, result));
            }
        }
        let bytes: Vec<u8> = client.poll_transmit().concat();
        server.send_bytes(&bytes).unwrap();
    }
    let Some((id, Ok(Output::Get(value)))) = done else {
        panic!("{done:?}")
    };
    assert_eq!(id, ioid);
    assert_eq!(value.get("value"), Some(&Value::F64(4.25)));
    assert_eq!(server.server.peer().user, "alice");
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
    let mut bob = validated(
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
    assert_eq!(bob.server.stats.snapshot().denied_writes, 1);

    let mut alice = validated(source, "alice", "ws1", ConnLimits::default(), Some(rules()));
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
    let mut bob = validated(
        source().0,
        "bob",
        "ws9",
        ConnLimits::default(),
        Some(rules()),
    );
    let rpc = |c: &mut Client, sid, ioid| {
        assert!(init(c, cmd::RPC, sid, ioid, "").is_success());
        let mut query = StructValue::new(Arc::new(
            StructDesc::builder("")
                .scalar("op", ScalarType::String)
                .build(),
        ));
        query.set("op", "info").unwrap();
        let argument = OpRequestBody::Argument(AnyValue::new(Value::Struct(query)));
        response(c.one(op(cmd::RPC, sid, ioid, 0, argument))).status
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

#[test]
fn a_closed_pv_ends_its_monitors_after_what_they_may_still_send() {
    let (source, mailbox) = source();
    let mut c = plain(source);
    let sid = create(&mut c, 1, "t:mailbox").unwrap();
    assert!(init(&mut c, cmd::GET, sid, 3, "").is_success());
    for (ioid, window) in [(2, None), (1, Some(1))] {
        start_monitor(&mut c, sid, ioid, "record[queueSize=8]", window);
        assert_eq!(update_values(c.replies()), [0.0]);
    }
    // Monitor 2 stops; monitor 1 has spent its window.
    c.send(op(cmd::MONITOR, sid, 2, SUB_PROCESS, OpRequestBody::Empty))
        .unwrap();
    post(&mailbox, 1.0);
    mailbox.close();
    let end = |ioid| {
        Message::OpResponse(OpResponse {
            command: cmd::MONITOR,
            ioid,
            subcmd: SUB_DESTROY,
            status: Status::OK,
            body: OpResponseBody::Empty,
        })
    };
    assert_eq!(c.replies(), [end(2)], "a stopped monitor ends at once");
    c.send(op(
        cmd::MONITOR,
        sid,
        1,
        SUB_PIPELINE,
        OpRequestBody::Ack(1),
    ))
    .unwrap();
    let mut replies = c.replies();
    assert_eq!(replies.pop(), Some(end(1)), "after the update it was owed");
    assert_eq!(update_values(replies), [1.0]);
    assert!(!c.wake);
    let get = response(c.one(op(cmd::GET, sid, 3, SUB_GET, OpRequestBody::Empty)));
    assert_eq!(get.status, Status::error(CLOSED));
    assert_eq!(
        init(&mut c, cmd::MONITOR, sid, 4, ""),
        Status::error(CLOSED)
    );
    mailbox.open(mailbox.current());
    start_monitor(&mut c, sid, 4, "", None);
    assert_eq!(update_values(c.replies()), [1.0], "open again");
}
