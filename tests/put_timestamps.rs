//! After every put the server stamps a new time on a writable PV, and the update its monitors get
//! carries it: p4p (pvxs) and pvapy (pvAccessCPP) monitors of a `pvabridge host` PV see a newer
//! timeStamp with each put, not the one of the first value they saw.

mod common;

use std::time::Duration;

use common::proc::{pva_command, Proc, BINARY};
use serde_json::Value as Json;

const LIMIT: Duration = Duration::from_secs(60);
const PUTS: i64 = 3;

/// A peer client script monitoring `pv` for `1 + PUTS` updates, once its first update (the
/// initial value) has come.
fn peer_monitor(script: &str, udp: u16, pv: &str) -> (Proc, Json) {
    let mut cmd = pva_command(
        common::python().to_str().unwrap(),
        common::free_udp_port(),
        udp,
    );
    cmd.env("PYTHONUNBUFFERED", "1")
        .arg(common::peer_script(script))
        .args(["monitor", pv, &(1 + PUTS).to_string()]);
    let mut p = Proc::start(script, cmd);
    let first = update(&mut p);
    (p, first)
}

/// The next update a peer monitor printed.
fn update(p: &mut Proc) -> Json {
    let line = p.wait_for_stdout("\"op\": \"update\"", LIMIT);
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// An update's value and time stamp (seconds, nanoseconds).
fn stamped(update: &Json) -> (i64, (i64, i64)) {
    let v = &update["value"];
    let t = &v["timeStamp"];
    let stamp = (t["secondsPastEpoch"].as_i64(), t["nanoseconds"].as_i64());
    match (v["value"].as_i64(), stamp) {
        (Some(value), (Some(s), Some(ns))) => (value, (s, ns)),
        _ => panic!("no value and timeStamp in {update}"),
    }
}

#[test]
fn p4p_and_pvapy_monitors_see_a_new_time_stamp_with_each_put() {
    let udp = common::free_udp_port();
    let mut cmd = pva_command(BINARY, udp, udp);
    cmd.args(["host", "ts:counter=int:0"]);
    let mut host = Proc::start("pvabridge host", cmd);
    host.wait_for("serving", LIMIT);
    let mut monitors = [
        peer_monitor("p4p_client_ops.py", udp, "ts:counter"),
        peer_monitor("pvapy_client_ops.py", udp, "ts:counter"),
    ];
    for n in 1..=PUTS {
        // Apart in time, so that each stamp is newer even on a coarse clock.
        std::thread::sleep(Duration::from_millis(50));
        let mut put = pva_command(BINARY, common::free_udp_port(), udp);
        put.args(["put", "ts:counter", &n.to_string()]);
        let out = common::run_bounded(put, LIMIT);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (peer, (monitor, first)) in ["p4p", "pvapy"].iter().zip(monitors.iter_mut()) {
        let mut seen = vec![stamped(first)];
        for _ in 0..PUTS {
            seen.push(stamped(&update(monitor)));
        }
        let values: Vec<i64> = seen.iter().map(|(v, _)| *v).collect();
        assert_eq!(values, (0..=PUTS).collect::<Vec<_>>(), "{peer}: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[1].1 > w[0].1),
            "{peer} sees a newer timeStamp with each put: {seen:?}"
        );
    }
}
