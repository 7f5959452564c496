//! Helpers shared by the end-to-end tests: finding the Python peers and running them bounded
//! in time; [`handshake`] has those of the tests that run `pvabridge serve` and DM workflows.

#![allow(dead_code)]

pub mod handshake;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Python interpreter with p4p and pvapy: `PVABRIDGE_PYTHON` (set by ./scripts/test), else
/// the repository's `.venv`. Panics with a clear message when neither has the peers, so that a
/// missing peer fails the test rather than letting it pass unchecked.
pub fn python() -> PathBuf {
    let candidate = std::env::var_os("PVABRIDGE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = Command::new(&candidate)
        .args(["-c", "import p4p, pvaccess"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the interop peers (p4p, pvapy) are not importable with {}: run ./scripts/test, which \
         creates .venv with them, or set PVABRIDGE_PYTHON to a Python that has them",
        candidate.display()
    );
    candidate
}

/// Path of a peer script under tests/peers.
pub fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// Run `cmd` to completion, killing it after `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start child process");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("poll child").is_some() {
            return child.wait_with_output().expect("collect child output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect child output");
            panic!(
                "{:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                cmd,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral UDP port")
        .port()
}

/// The EPICS_PVA_* variables that keep a peer client on loopback, searching only the server
/// at `udp_port`, with a beacon port of its own so it never competes for the server's.
pub fn loopback_env(cmd: &mut Command, udp_port: u16) {
    cmd.env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{udp_port}"))
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVA_BROADCAST_PORT", free_udp_port().to_string())
        .env("EPICS_PVA_NAME_SERVERS", "")
        .env("EPICS_PVA_CONN_TMO", "30");
}
