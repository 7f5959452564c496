//! After every put the server stamps a new time on a writable PV, and the update its monitors get
//! carries it: p4p (pvxs) and pvapy (pvAccessCPP) monitors of a `pvabridge host` PV, and of the
//! handshake's Request PV of `pvabridge serve`, see a newer timeStamp with each put, not the one
//! of the first value they saw.

mod common;

use std::time::Duration;

use common::proc::{pva_command, Proc, BINARY};
use serde_json::Value as Json;

const LIMIT: Duration = Duration::from_secs(60);

/// A peer client script monitoring `pv` for `1 + puts` updates, once its first update (the
/// initial value) has come.
fn peer_monitor(script: &str, udp: u16, pv: &str, puts: usize) -> (Proc, Json) {
    let mut cmd = pva_command(
        common::python().to_str().unwrap(),
        common::free_udp_port(),
        udp,
    );
    cmd.env("PYTHONUNBUFFERED", "1")
        .arg(common::peer_script(script))
        .args(["monitor", pv, &(1 + puts).to_string()]);
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
fn stamped(update: &Json) -> (Json, (i64, i64)) {
    let v = &update["value"];
    let t = &v["timeStamp"];
    match (t["secondsPastEpoch"].as_i64(), t["nanoseconds"].as_i64()) {
        (Some(s), Some(ns)) => (v["value"].clone(), (s, ns)),
        _ => panic!("no timeStamp in {update}"),
    }
}

/// Put each of `values` to `pv` (served on `udp`) with `pvabridge put`, a little apart in time,
/// while p4p and pvapy monitor it; each monitor must see every value with a newer time stamp.
fn monitors_see_new_time_stamps(udp: u16, pv: &str, values: &[&str]) {
    let mut monitors = [
        peer_monitor("p4p_client_ops.py", udp, pv, values.len()),
        peer_monitor("pvapy_client_ops.py", udp, pv, values.len()),
    ];
    for value in values {
        // Apart in time, so that each stamp is newer even on a coarse clock.
        std::thread::sleep(Duration::from_millis(50));
        let mut put = pva_command(BINARY, common::free_udp_port(), udp);
        put.args(["put", pv, value]);
        let out = common::run_bounded(put, LIMIT);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (peer, (monitor, first)) in ["p4p", "pvapy"].iter().zip(monitors.iter_mut()) {
        let mut seen = vec![stamped(first)];
        for _ in values {
            seen.push(stamped(&update(monitor)));
        }
        let got: Vec<String> = seen[1..]
            .iter()
            .map(|(v, _)| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect();
        assert_eq!(got, values, "{peer}: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[1].1 > w[0].1),
            "{peer} sees a newer timeStamp with each put: {seen:?}"
        );
    }
}

#[test]
fn p4p_and_pvapy_monitors_see_a_new_time_stamp_with_each_put() {
    let udp = common::free_udp_port();
    let mut cmd = pva_command(BINARY, udp, udp);
    cmd.args(["host", "ts:counter=int:0"]);
    let mut host = Proc::start("pvabridge host", cmd);
    host.wait_for("serving", LIMIT);
    monitors_see_new_time_stamps(udp, "ts:counter", &["1", "2", "3"]);
}

#[test]
fn monitors_of_the_handshake_request_see_a_new_time_stamp_with_each_put() {
    let dir = tempfile::tempdir().unwrap();
    let udp = common::free_udp_port();
    let dm = dir.path().join("dm");
    let dm_option = ["--embedded-dm", dm.to_str().unwrap()];
    let _bridge = common::handshake::serve(dir.path(), udp, "ts:wf:", &dm_option, "bridge.log");
    let requests = [r#"{"workflow":"a"}"#, r#"{"workflow":"b"}"#];
    monitors_see_new_time_stamps(udp, "ts:wf:Request", &requests);
}
