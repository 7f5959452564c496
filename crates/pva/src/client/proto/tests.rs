//! The client connection's state machine, fed encoded server messages.

use super::*;
use pva_codec::msg::op::{MONITOR_START, SUB_DESTROY, SUB_GET, SUB_INIT};
use pva_codec::msg::{
    CreateChannelResponse, DataRole, DestroyChannel, OpResponse, OpResponseBody, ValidationRequest,
};
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

/// Feed server messages to `c`; the events they give.
fn answers(c: &mut ClientConn, msgs: Vec<Message>) -> Vec<Event> {
    feed(c, msgs);
    events(c)
}

/// Feed one server message to `c`; the events it gives.
fn answer(c: &mut ClientConn, msg: Message) -> Vec<Event> {
    answers(c, vec![msg])
}

/// The server's answer creating channel `cid` as `sid`.
fn created(cid: u32, sid: u32) -> Message {
    Message::CreateChannelResponse(CreateChannelResponse {
        cid,
        sid,
        status: Status::OK,
    })
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
    feed(&mut c, vec![created(1, 100)]);
    let out = sent(&mut c, &OpTypeTable::new());
    assert!(
        matches!(&out[0], Message::OpRequest(r) if r.ioid == a && r.sid == 100 && r.subcmd == SUB_INIT)
    );
    assert!(matches!(&out[1], Message::GetField(g) if g.ioid == b && g.sid == 100));

    let desc = FieldDesc::Struct(nt_double());
    assert_eq!(
        answers(
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
            ]
        ),
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
    assert_eq!(
        answer(
            &mut c,
            response(
                cmd::GET,
                a,
                0,
                OpResponseBody::Data {
                    changed: BitSet::with(0),
                    value: v.clone(),
                },
            )
        ),
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
    feed(&mut c, vec![created(1, 9)]);
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
    assert_eq!(
        answer(&mut c, response(cmd::PUT, ioid, 0, OpResponseBody::Empty)),
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
            created(1, 9),
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
    feed(&mut c, vec![created(1, 5)]);
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

    assert_eq!(
        answer(
            &mut c,
            response(cmd::MONITOR, ioid, SUB_DESTROY, OpResponseBody::Empty,)
        ),
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
    assert_eq!(
        answer(
            &mut c,
            Message::CreateChannelResponse(CreateChannelResponse {
                cid: 1,
                sid: 0,
                status: Status::error("no such channel"),
            })
        ),
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
    assert_eq!(
        answers(
            &mut c,
            vec![
                created(2, 20),
                Message::DestroyChannel(DestroyChannel { sid: 20, cid: 2 }),
            ]
        ),
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

#[test]
fn echo_is_the_application_message_servers_answer() {
    let mut c = connected();
    c.echo();
    // pvxs answers the application echo only; a control echo request goes unanswered there.
    assert_eq!(
        sent(&mut c, &OpTypeTable::new()),
        vec![Message::Echo(Bytes::new())]
    );
}
