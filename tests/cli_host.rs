//! `pvabridge host` serves writable PVs that the p4p (pvxs) client can read and write.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `pvabridge host` and the lines of its stderr after the first.
struct Host {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Host {
    /// Stop it as a service manager would (SIGTERM) and return the rest of its stderr.
    fn terminate(mut self) -> Vec<String> {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(20)) {
            lines.push(line);
        }
        let status = self.child.wait().expect("wait for pvabridge host");
        assert!(status.success(), "{status:?}: {lines:?}");
        lines
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `pvabridge host` on loopback with its UDP port `udp`; wait until it serves.
fn host(udp: u16, specs: &[&str]) -> Host {
    host_with(udp, &[], specs)
}

/// Like [`host`], with `options` before the PV specifications.
fn host_with(udp: u16, options: &[&str], specs: &[&str]) -> Host {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pvabridge"))
        .arg("host")
        .args(options)
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
    Host { child, stderr: rx }
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

/// The "ca" identity a pvxs client sends: the account of the process's user id and the host
/// name (pvxs reads neither from the environment, so a test cannot choose them).
fn pvxs_identity() -> (String, String) {
    let out = Command::new(common::python())
        .args([
            "-c",
            "import os, pwd, socket; print(pwd.getpwuid(os.getuid()).pw_name); print(socket.gethostname())",
        ])
        .output()
        .expect("run python");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let mut lines = text.lines().map(str::to_owned);
    let user = lines.next().expect("user name");
    let host = lines.next().expect("host name");
    (user, host)
}

/// `pvabridge put PV VALUE` on loopback with `$USER` set to `user` (which our client, like
/// pvxs, does not take as its identity).
fn put_as(udp: u16, user: &str, pv: &str, value: &str) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pvabridge"));
    cmd.args(["put", pv, value]).env("USER", user);
    common::loopback_env(&mut cmd, udp);
    common::run_bounded(cmd, Duration::from_secs(30))
}

#[test]
fn host_access_rules_let_only_the_named_users_write() {
    let (me, my_host) = pvxs_identity();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("access.toml");
    std::fs::write(
        &rules,
        format!(
            r#"
trust_client_host = true

[users]
me = ["{me}"]

[[allow]]
name = "mine"
pvs = ["t:mine"]
users = ["@me"]

[[allow]]
name = "acquisition"
pvs = ["t:theirs"]
users = ["acq-{me}"]

[[allow]]
name = "this host"
pvs = ["t:host*"]
users = ["*"]
hosts = ["{my_host}"]

[[allow]]
name = "elsewhere"
pvs = ["t:far"]
users = ["*"]
hosts = ["not-{my_host}"]
"#
        ),
    )
    .unwrap();
    let udp = common::free_udp_port();
    let host = host_with(
        udp,
        &["--access", rules.to_str().unwrap()],
        &[
            "t:mine=double:1",
            "t:theirs=double:1",
            "t:hostwide=double:1",
            "t:far=double:1",
            "t:readonly=double:1",
        ],
    );
    let r = p4p(
        udp,
        &[
            "put",
            "t:mine",
            "2",
            "--",
            "put",
            "t:hostwide",
            "3",
            "--",
            "tryput",
            "t:theirs",
            "4",
            "--",
            "tryput",
            "t:far",
            "5",
            "--",
            "tryput",
            "t:readonly",
            "6",
            "--",
            "get",
            "t:theirs",
            "--",
            "get",
            "t:far",
            "--",
            "get",
            "t:readonly",
        ],
    );
    assert_eq!(r.len(), 8, "{r:?}");
    // Allowed by user (through a group) and by host: the values changed.
    assert_eq!(r[0]["value"], 2.0);
    assert_eq!(r[1]["value"], 3.0);
    // Refused, with who, which PV and which rule; the values did not change.
    assert_eq!(r[2]["ok"], false);
    let e = r[2]["error"].as_str().unwrap();
    assert!(
        e.contains(&format!(
            "put to 't:theirs' refused for user '{me}' on host '{my_host}'"
        )) && e.contains(&format!(
            "rule 'acquisition' allows users acq-{me} on any host"
        )),
        "{e}"
    );
    let e = r[3]["error"].as_str().unwrap();
    assert!(
        e.contains(&format!(
            "rule 'elsewhere' allows users * on hosts not-{my_host}"
        )),
        "{e}"
    );
    let e = r[4]["error"].as_str().unwrap();
    assert!(
        e.contains("put to 't:readonly' refused")
            && e.contains("no access rule lets anyone write this PV"),
        "{e}"
    );
    for got in &r[5..8] {
        assert_eq!(got["value"]["value"], 1.0, "{got}");
    }

    // $USER does not choose our client's identity: with USER=acq-{me} it is still the account
    // {me} (as pvxs's), refused on t:theirs and let through on t:mine.
    let out = put_as(udp, &format!("acq-{me}"), "t:theirs", "7");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("refused for user '{me}'")), "{err}");
    let out = put_as(udp, &format!("acq-{me}"), "t:mine", "8");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = p4p(udp, &["get", "t:theirs", "--", "get", "t:mine"]);
    assert_eq!(r[0]["value"]["value"], 1.0);
    assert_eq!(r[1]["value"]["value"], 8.0);

    // The refusals were logged, and counted in the summary printed as the host stops.
    let lines = host.terminate();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("put to 't:theirs' refused") && l.contains("refused_by=\"access\"")),
        "{lines:?}"
    );
    let summary = lines
        .iter()
        .find(|l| l.starts_with("pvabridge host: stopping;"))
        .unwrap_or_else(|| panic!("no summary in {lines:?}"));
    assert!(summary.contains("; 4 writes denied;"), "{summary}");
}

#[test]
fn host_refuses_a_bad_rules_file_with_the_line_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("access.toml");
    std::fs::write(&rules, "[[allow]]\npvs = [\"a\"]\nusers = [\"@ops\"]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pvabridge"))
        .args(["host", "--access", rules.to_str().unwrap(), "a=int"])
        .output()
        .expect("run pvabridge host");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{}:3: unknown user group '@ops'", rules.display())),
        "{err}"
    );
}

#[test]
fn the_example_rules_file_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/access.toml");
    let rules = pva::server::AccessRules::load(std::path::Path::new(example))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!rules.is_empty());
}
