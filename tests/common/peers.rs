//! Helpers of every test that talks to a Python peer, dependency-free (std and serde_json) so
//! that the crates' tests include this very file (`#[path = "../../../tests/common/peers.rs"]`):
//! finding the Python peers and running them bounded in time, loopback ports and environment,
//! and [`p4p_monitor`], a p4p witness client.

#![allow(dead_code)]

#[path = "p4p_monitor.rs"]
pub mod p4p_monitor;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The Python interpreter with p4p and pvapy: `PVABRIDGE_PYTHON` (set by ./scripts/test), else
/// the repository's `.venv`. Panics with a clear message when neither has the peers, so that a
/// missing peer fails the test rather than letting it pass unchecked.
pub fn python() -> PathBuf {
    python_with(&["p4p", "pvaccess"])
}

/// The Python interpreter with p4p and pvapy, and with Bluesky and ophyd-async too (for the tests
/// that run a plan under a RunEngine). Panics with a clear message when they are missing.
pub fn python_with_bluesky() -> PathBuf {
    python_with(&["p4p", "pvaccess", "bluesky", "ophyd_async"])
}

/// The Python interpreter with p4p and the reference compressors of areaDetector's codecs (the
/// PyPI packages lz4, bitshuffle and blosc, with numpy). Panics with a clear message when they
/// are missing.
pub fn python_with_codecs() -> PathBuf {
    python_with(&["p4p", "numpy", "lz4.block", "bitshuffle", "blosc"])
}

fn python_with(modules: &[&str]) -> PathBuf {
    let candidate = std::env::var_os("PVABRIDGE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repository().join(".venv/bin/python"));
    let importable = |names: &[&str]| {
        Command::new(&candidate)
            .args(["-c", &format!("import {}", names.join(", "))])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if importable(modules) {
        return candidate;
    }
    let missing: Vec<&str> = modules
        .iter()
        .copied()
        .filter(|module| !importable(&[module]))
        .collect();
    panic!(
        "the Python modules {} are not importable with {}: run ./scripts/test, which creates \
         .venv with the pinned peers (p4p, pvapy, bluesky, ophyd-async), or set PVABRIDGE_PYTHON \
         to a Python that has them",
        if missing.is_empty() {
            modules.join(", ")
        } else {
            missing.join(", ")
        },
        candidate.display()
    );
}

/// The repository's root: the nearest directory above the crate under test (or the crate
/// itself) that holds `tests/peers`, so crate tests and the root tests find the same peers.
pub fn repository() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .find(|dir| dir.join("tests/peers").is_dir())
        .unwrap_or_else(|| panic!("no tests/peers above {}", manifest.display()))
        .to_path_buf()
}

/// Path of a peer script under tests/peers.
pub fn peer_script(name: &str) -> PathBuf {
    repository().join("tests/peers").join(name)
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

/// A child process killed when the test ends, however it ends.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This process's resident memory, in bytes.
pub fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

/// Wait at most `limit` for a line containing `needle` from `lines`; the lines seen, that one
/// last. Panics with what `what` said otherwise.
pub fn line_with(
    lines: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    limit: Duration,
    what: &str,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!(
                "{what} did not say '{needle}' within {limit:?}; it said:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// The lines of a reader, as they come.
pub fn lines_of(reader: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    rx
}
