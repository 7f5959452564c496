//! The connection's limits driven without sockets: channels, operations, and the monitor queue
//! in updates and in bytes.

use super::*;

#[test]
fn channels_past_the_limit_get_an_error_and_the_rest_go_on() {
    let limits = ConnLimits {
        max_channels: 2,
        ..ConnLimits::default()
    };
    let mut c = validated(source().0, "u", "h", limits, None);
    let sid = create(&mut c, 1, "t:mailbox").unwrap();
    create(&mut c, 2, "t:other").unwrap();
    let e = create(&mut c, 3, "t:mailbox").unwrap_err();
    assert!(e.message.contains("max_channels = 2"), "{e:?}");
    assert_eq!(c.server.stats.snapshot().refused_channels, 1);
    assert!(
        put(&mut c, sid, 1, 1.5).is_success(),
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
    let mut c = validated(source().0, "u", "h", limits, None);
    let a = create(&mut c, 1, "t:mailbox").unwrap();
    let b = create(&mut c, 2, "t:other").unwrap();
    assert!(init(&mut c, cmd::GET, a, 1, "").is_success());
    assert!(init(&mut c, cmd::MONITOR, a, 2, "").is_success());
    let e = init(&mut c, cmd::GET, a, 3, "");
    assert!(
        e.message.contains("max_operations_per_channel = 2"),
        "{e:?}"
    );
    assert!(init(&mut c, cmd::GET, b, 4, "").is_success());
    let e = init(&mut c, cmd::GET, b, 5, "");
    assert!(e.message.contains("max_operations = 3"), "{e:?}");
    let s = c.server.stats.snapshot();
    assert_eq!(
        (s.refused_operations_per_channel, s.refused_operations),
        (1, 1)
    );
    // Destroying an operation frees its place.
    c.send(Message::DestroyRequest(RequestRef { sid: a, ioid: 1 }))
        .unwrap();
    assert!(init(&mut c, cmd::GET, a, 6, "").is_success());
}

#[test]
fn a_monitor_queue_is_cut_to_the_largest_allowed() {
    let limits = ConnLimits {
        max_queue_size: 3,
        ..ConnLimits::default()
    };
    let (source, mailbox) = source();
    let mut c = validated(source, "u", "h", limits, None);
    let sid = create(&mut c, 1, "t:mailbox").unwrap();
    start_monitor(&mut c, sid, 1, "record[queueSize=100000]", None);
    for x in 1..=10 {
        post(&mailbox, f64::from(x));
    }
    assert_eq!(
        update_values(c.replies()),
        [0.0, 1.0, 10.0],
        "the initial value and 2 more, the last squashed"
    );
}

#[test]
fn a_monitor_queue_holds_no_more_bytes_than_allowed() {
    let limits = ConnLimits {
        max_queue_bytes: 3_000,
        ..ConnLimits::default()
    };
    // Frames of 1,000 bytes: 125 doubles, each the frame's number.
    let frame = |x: f64| Value::Array(ScalarArray::F64(vec![x; 125].into()));
    let mut first = NtScalar::array(ScalarType::F64).create();
    first.set("value", frame(0.0)).unwrap();
    let source = Arc::new(StaticSource::new());
    let frames = SharedPv::mailbox(first);
    source.add("t:frames", frames.clone());
    let mut c = validated(source, "u", "h", limits, None);
    let sid = create(&mut c, 1, "t:frames").unwrap();
    start_monitor(&mut c, sid, 1, "record[queueSize=100]", None);
    for x in 1..=10 {
        frames.update(|v| {
            v.set("value", frame(f64::from(x)))
                .map(|_| BitSet::with(1))
                .unwrap()
        });
    }
    let numbers: Vec<f64> = c
        .replies()
        .into_iter()
        .map(|m| match response(m).body {
            OpResponseBody::Update { value, .. } => value
                .get("value")
                .and_then(|v| v.as_array())
                .and_then(|a| a.get_f64(0))
                .unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        numbers,
        [0.0, 1.0, 10.0],
        "3 frames fill 3,000 bytes: the rest squash into the last"
    );
}
