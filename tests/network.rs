//! Servers sharing a host, on loopback: a p4p or pvapy server and a pvabridge server on one UDP
//! search port, started in either order, are both found by p4p, pvapy and `pvabridge get`
//! clients searching the host by unicast (the servers forward unicast searches to the local
//! multicast group); and the client's operation timeout is 5 s whatever EPICS_PVA_CONN_TMO says.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{first_line, free_udp_port, peer_script, python, run_bounded, Running};

const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");
const LIMIT: Duration = Duration::from_secs(60);

/// A TCP port that was free a moment ago.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral TCP port")
        .port()
}

/// A server of this test on loopback: search port `udp` (shared), a TCP port of its own,
/// beacons to loopback only.
fn server_env(cmd: &mut Command, udp: u16) {
    cmd.env("EPICS_PVA_BROADCAST_PORT", udp.to_string())
        .env("EPICS_PVA_SERVER_PORT", free_tcp_port().to_string())
        .env("EPICS_PVA_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVA_NAME_SERVERS", "")
        .env_remove("EPICS_PVAS_INTF_ADDR_LIST")
        .env_remove("EPICS_PVAS_BROADCAST_PORT")
        .env_remove("EPICS_PVAS_SERVER_PORT")
        .env_remove("EPICS_PVAS_BEACON_ADDR_LIST");
}

/// A client searching only the host, by unicast to the shared port `udp`.
fn client_env(cmd: &mut Command, udp: u16) {
    cmd.env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{udp}"))
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVA_BROADCAST_PORT", free_udp_port().to_string())
        .env("EPICS_PVA_NAME_SERVERS", "");
}

/// Wait until `log` contains `text`.
fn wait_for_log(log: &Path, text: &str) {
    let start = Instant::now();
    loop {
        let got = std::fs::read_to_string(log).unwrap_or_default();
        if got.contains(text) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no '{text}' in {} within 30 s:\n{got}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Clone, Copy, Debug)]
enum Neighbour {
    P4p,
    Pvapy,
}

/// Start the neighbour (a peer server serving `PREFIX` + its PVs) and wait for READY.
fn start_neighbour(neighbour: Neighbour, prefix: &str, udp: u16, dir: &Path) -> Running {
    let script = match neighbour {
        Neighbour::P4p => "p4p_server.py",
        Neighbour::Pvapy => "pvapy_server.py",
    };
    let mut cmd = Command::new(python());
    cmd.arg(peer_script(script)).arg(prefix);
    server_env(&mut cmd, udp);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("neighbour.log")).unwrap());
    let mut running = Running(cmd.spawn().expect("start the neighbour server"));
    let line = first_line(&mut running);
    assert_eq!(
        line.trim(),
        "READY",
        "{neighbour:?} server: {}",
        std::fs::read_to_string(dir.join("neighbour.log")).unwrap_or_default()
    );
    running
}

/// Start `pvabridge host` serving `pv` and wait until it serves.
fn start_ours(pv: &str, udp: u16, dir: &Path) -> Running {
    let log = dir.join("ours.log");
    let mut cmd = Command::new(BINARY);
    cmd.args(["host", &format!("{pv}=double:1.5")]);
    server_env(&mut cmd, udp);
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let running = Running(cmd.spawn().expect("start pvabridge host"));
    wait_for_log(&log, "serving");
    running
}

/// Both PVs read by a p4p client, a pvapy client and `pvabridge get`, all searching the host.
fn every_client_finds(pvs: [&str; 2], udp: u16) {
    for script in ["p4p_client_ops.py", "pvapy_client_ops.py"] {
        let mut cmd = Command::new(python());
        cmd.arg(peer_script(script))
            .args(["get", pvs[0], "--", "get", pvs[1]]);
        client_env(&mut cmd, udp);
        let out = run_bounded(cmd, LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.lines().count() == 2,
            "{script} did not find both {pvs:?}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut cmd = Command::new(BINARY);
    cmd.args(["get", "-w", "10", pvs[0], pvs[1]]);
    client_env(&mut cmd, udp);
    let out = run_bounded(cmd, LIMIT);
    assert!(
        out.status.success(),
        "pvabridge get did not find both {pvs:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn share_the_search_port(neighbour: Neighbour, ours_first: bool) {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let tag = format!("{neighbour:?}{}", u8::from(ours_first)).to_lowercase();
    let theirs = format!("nb{tag}:");
    let ours = format!("rb{tag}:x");
    let (_first, _second) = if ours_first {
        let a = start_ours(&ours, udp, dir.path());
        (a, start_neighbour(neighbour, &theirs, udp, dir.path()))
    } else {
        let a = start_neighbour(neighbour, &theirs, udp, dir.path());
        (a, start_ours(&ours, udp, dir.path()))
    };
    every_client_finds([&format!("{theirs}double"), &ours], udp);
}

#[test]
fn a_p4p_server_started_first_and_ours_share_the_search_port() {
    share_the_search_port(Neighbour::P4p, false);
}

#[test]
fn ours_started_first_and_a_p4p_server_share_the_search_port() {
    share_the_search_port(Neighbour::P4p, true);
}

#[test]
fn a_pvapy_server_started_first_and_ours_share_the_search_port() {
    share_the_search_port(Neighbour::Pvapy, false);
}

#[test]
fn ours_started_first_and_a_pvapy_server_share_the_search_port() {
    share_the_search_port(Neighbour::Pvapy, true);
}

#[test]
fn conn_tmo_does_not_lengthen_an_operation_past_the_5_s_default() {
    let mut cmd = Command::new(BINARY);
    cmd.args(["get", "nothing:here:at:all"]);
    client_env(&mut cmd, free_udp_port());
    cmd.env("EPICS_PVA_CONN_TMO", "30");
    let start = Instant::now();
    let out = run_bounded(cmd, LIMIT);
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing PV cannot be read");
    assert!(err.contains("nothing:here:at:all"), "{err}");
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(20),
        "failed after {took:?}, not after the 5 s default: {err}"
    );
}

/// The account name of this process's effective uid, as `id -un` says.
fn real_account() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `pvabridge ARGS` as a client of the server on `udp`, with `$USER` and `$LOGNAME` set to
/// `user`, or unset when `user` is `None`.
fn client_as(args: &[&str], udp: u16, user: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(BINARY);
    cmd.args(args);
    client_env(&mut cmd, udp);
    for var in ["USER", "LOGNAME", "USERNAME"] {
        match user {
            Some(u) => cmd.env(var, u),
            None => cmd.env_remove(var),
        };
    }
    run_bounded(cmd, LIMIT)
}

#[test]
fn our_server_sees_the_real_account_whatever_user_says() {
    let real = real_account();
    assert_ne!(real, "mallory");
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("access.toml");
    std::fs::write(
        &rules,
        format!(
            "[[allow]]\npvs = [\"cred:real\"]\nusers = [\"{real}\"]\n\n\
             [[allow]]\npvs = [\"cred:claimed\"]\nusers = [\"mallory\"]\n"
        ),
    )
    .unwrap();
    let udp = free_udp_port();
    let log = dir.path().join("ours.log");
    let mut cmd = Command::new(BINARY);
    cmd.args(["host", "--access"])
        .arg(&rules)
        .args(["cred:real=double:0", "cred:claimed=double:0"]);
    server_env(&mut cmd, udp);
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _server = Running(cmd.spawn().expect("start pvabridge host"));
    wait_for_log(&log, "serving");

    for user in [Some("mallory"), None] {
        let out = client_as(&["put", "cred:real", "1"], udp, user);
        assert!(
            out.status.success(),
            "the rule on '{real}' lets the put through with USER={user:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = client_as(&["put", "cred:claimed", "1"], udp, Some("mallory"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "USER=mallory does not make the client mallory"
    );
    assert!(err.contains(&format!("for user '{real}'")), "{err}");
}

#[test]
fn a_p4p_server_sees_the_real_account_whatever_user_says() {
    let real = real_account();
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let mut cmd = Command::new(python());
    cmd.arg(peer_script("p4p_whoami.py")).arg("cred:who");
    server_env(&mut cmd, udp);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("p4p.log")).unwrap());
    let mut server = Running(cmd.spawn().expect("start the p4p server"));
    assert_eq!(first_line(&mut server).trim(), "READY");

    for user in [Some("mallory"), None] {
        let out = client_as(&["put", "cred:who", "x"], udp, user);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = client_as(&["get", "--json", "cred:who"], udp, user);
        let got = String::from_utf8_lossy(&out.stdout);
        assert!(
            got.contains(&format!("\"{real}@")),
            "p4p saw another account than '{real}' (USER={user:?}): {got}"
        );
    }
}

#[test]
fn a_multicast_entry_in_the_address_list_reaches_a_server_of_the_group() {
    // Our server listens on the host's local multicast group (224.0.0.128 at the search port);
    // a client that lists the group, its multicast going out through loopback, finds it. (pvxs
    // takes whatever comes to that group as forwarded by a neighbour, and so answers only
    // searches that carry their reply address.)
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let _ours = start_ours("mcr:x", udp, dir.path());
    let mut cmd = Command::new(BINARY);
    cmd.args(["get", "-w", "10", "mcr:x"]);
    client_env(&mut cmd, udp);
    cmd.env("EPICS_PVA_ADDR_LIST", format!("224.0.0.128:{udp}"))
        .env("EPICS_PVA_INTF_ADDR_LIST", "127.0.0.1");
    let out = run_bounded(cmd, LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_server_does_not_answer_the_addresses_it_is_told_to_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let udp = free_udp_port();
    let log = dir.path().join("ours.log");
    let mut cmd = Command::new(BINARY);
    cmd.args(["host", "ign:x=double:1"]);
    server_env(&mut cmd, udp);
    cmd.env("EPICS_PVAS_IGNORE_ADDR_LIST", "127.0.0.1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let _server = Running(cmd.spawn().expect("start pvabridge host"));
    wait_for_log(&log, "serving");
    let mut cmd = Command::new(BINARY);
    cmd.args(["get", "-w", "2", "ign:x"]);
    client_env(&mut cmd, udp);
    let out = run_bounded(cmd, LIMIT);
    assert!(
        !out.status.success(),
        "a search from 127.0.0.1 was answered"
    );

    let mut cmd = Command::new(BINARY);
    cmd.args(["get", "ign:x"]);
    client_env(&mut cmd, udp);
    cmd.env("EPICS_PVA_ADDR_LIST", "::1");
    let out = run_bounded(cmd, LIMIT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("EPICS_PVA_ADDR_LIST") && err.contains("'::1' is an IPv6 address"),
        "{err}"
    );
}
