//! `pvabridge host` serves writable PVs that the p4p (pvxs) client can read and write.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Host(Child);

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `pvabridge host` on loopback with its UDP port `udp`; wait until it serves.
fn host(udp: u16, specs: &[&str]) -> Host {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvabridge"))
        .arg("host")
        .args(specs)
        .env("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_SERVER_PORT", "0")
        .env("EPICS_PVA_BROADCAST_PORT", udp.to_string())
        .env("EPICS_PVA_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pvabridge host");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("pvabridge host reports that it serves");
    assert!(line.contains("serving"), "{line}");
    Host(child)
}

fn p4p(udp: u16, args: &[&str]) -> Vec<serde_json::Value> {
    let mut cmd = Command::new(common::python());
    cmd.arg(common::peer_script("p4p_client_ops.py")).args(args);
    common::loopback_env(&mut cmd, udp);
    let out = common::run_bounded(cmd, Duration::from_secs(60));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn host_serves_scalars_arrays_and_enums_to_p4p() {
    let udp = common::free_udp_port();
    let _host = host(
        udp,
        &[
            "t:temp=double:21.5",
            "t:wave=int[]:1,2,3",
            "t:mode=enum:Off,On:On",
        ],
    );
    let r = p4p(
        udp,
        &[
            "get", "t:temp", "--", "put", "t:temp", "22.75", "--", "get", "t:wave", "--", "put",
            "t:wave", "[4,5]", "--", "get", "t:mode",
        ],
    );
    assert_eq!(r.len(), 5, "{r:?}");
    assert_eq!(r[0]["value"]["value"], 21.5);
    assert_eq!(r[0]["id"], "epics:nt/NTScalar:1.0");
    assert!(
        r[0]["value"]["timeStamp"]["secondsPastEpoch"]
            .as_i64()
            .unwrap()
            > 1_600_000_000
    );
    assert_eq!(r[1]["value"], 22.75);
    assert_eq!(r[2]["value"]["value"], serde_json::json!([1, 2, 3]));
    assert_eq!(r[2]["id"], "epics:nt/NTScalarArray:1.0");
    assert_eq!(r[3]["value"], serde_json::json!([4, 5]));
    assert_eq!(r[4]["id"], "epics:nt/NTEnum:1.0");
    assert_eq!(r[4]["value"]["value"]["index"], 1);
    assert_eq!(
        r[4]["value"]["value"]["choices"],
        serde_json::json!(["Off", "On"])
    );
}

#[test]
fn host_refuses_bad_specs_with_one_line_and_non_zero_exit() {
    let out = Command::new(env!("CARGO_BIN_EXE_pvabridge"))
        .args(["host", "x=quad:1"])
        .output()
        .expect("run pvabridge host");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("unknown type 'quad'"), "{err}");
}
