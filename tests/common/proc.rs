//! Child processes of the stream tests: killed when the test ends however it ends, their stderr
//! watched as it comes and their JSON summary read at the end.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// The program under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");

/// A child process, killed when the test ends however it ends. Its stderr lines are collected
/// as they come; its stdout is read at the end.
pub struct Proc {
    child: Child,
    what: String,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
    /// Stdout lines, once [`Proc::wait_for_stdout`] has started reading them.
    stdout_lines: Option<mpsc::Receiver<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    pub fn start(what: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let err = child.stderr.take().expect("stderr");
        let (tx, stderr) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Proc {
            child,
            what: what.into(),
            stderr,
            seen: Vec::new(),
            stdout_lines: None,
        }
    }

    /// Wait for a stderr line containing `needle`.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "{} did not say '{needle}' within {limit:?}; it said:\n{}",
                    self.what,
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Wait for the process to exit; its exit code and stdout as JSON.
    pub fn finish(mut self, limit: Duration) -> (Option<i32>, Json) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("poll child") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                self.seen.extend(self.stderr.try_iter());
                panic!(
                    "{} did not finish within {limit:?}; stderr:\n{}",
                    self.what,
                    self.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut out)
            .expect("read stdout");
        std::thread::sleep(Duration::from_millis(50));
        self.seen.extend(self.stderr.try_iter());
        let json = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
            panic!(
                "{} printed no JSON summary ({e}): stdout {out:?}\nstderr:\n{}",
                self.what,
                self.seen.join("\n")
            )
        });
        (status.code(), json)
    }

    /// Ask the process to stop (SIGTERM), as a user or a service manager would.
    pub fn terminate(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
}

/// A command whose server answers searches on `serve_udp` and whose client searches
/// `search_udp`, both on loopback only.
pub fn pva_command(program: &str, serve_udp: u16, search_udp: u16) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{search_udp}"))
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVA_NAME_SERVERS", "")
        .env("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_SERVER_PORT", "0")
        .env("EPICS_PVAS_SERVER_PORT", "0")
        .env("EPICS_PVA_BROADCAST_PORT", search_udp.to_string())
        .env("EPICS_PVAS_BROADCAST_PORT", serve_udp.to_string());
    cmd
}

impl Proc {
    /// Start `cmd` with a pipe to its stdin, and wait for `ready` on its stdout (a peer script
    /// that takes commands).
    pub fn start_peer(what: &str, mut cmd: Command, ready: &str, limit: Duration) -> Proc {
        cmd.stdin(Stdio::piped());
        let mut p = Proc::start(what, cmd);
        p.wait_for_stdout(ready, limit);
        p
    }

    /// Send one command line to the process's stdin.
    pub fn send(&mut self, line: &str) {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .expect("a peer started with a stdin");
        writeln!(stdin, "{line}").expect("write to the peer");
        stdin.flush().expect("flush the peer's stdin");
    }

    /// Wait for a stdout line containing `needle` and return it (lines before it are dropped).
    pub fn wait_for_stdout(&mut self, needle: &str, limit: Duration) -> String {
        let out = self.stdout_lines.get_or_insert_with(|| {
            let out = self.child.stdout.take().expect("stdout");
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
            rx
        });
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match out.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => {
                    self.seen.extend(self.stderr.try_iter());
                    panic!(
                        "{} did not print '{needle}' within {limit:?}; stderr:\n{}",
                        self.what,
                        self.seen.join("\n")
                    )
                }
            }
        }
    }
}

/// `pvabridge simdet ARGS --json --quiet` serving on `udp`, once it serves.
pub fn simdet(udp: u16, args: &[&str]) -> Proc {
    let mut cmd = pva_command(BINARY, udp, udp);
    cmd.arg("simdet").args(args).args(["--json", "--quiet"]);
    let mut p = Proc::start("pvabridge simdet", cmd);
    p.wait_for("serving", Duration::from_secs(30));
    p
}

/// `pvabridge consume ARGS --json --quiet` searching `search_udp`.
pub fn consumer(search_udp: u16, args: &[&str]) -> Proc {
    let mut cmd = pva_command(BINARY, super::free_udp_port(), search_udp);
    cmd.arg("consume").args(args).args(["--json", "--quiet"]);
    Proc::start("pvabridge consume", cmd)
}

/// The count `key` of a JSON summary.
pub fn count(j: &Json, key: &str) -> u64 {
    j[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no count '{key}' in {j}"))
}

/// pvapy's simulated area detector (`pvapy-ad-sim-server`, beside the peers' Python) serving
/// 16x16 uint16 frames on `channel` at `fps` for `runtime` seconds, its frames counting from 1,
/// once it has published its first.
pub fn pvapy_ad_sim_server(udp: u16, channel: &str, fps: u32, runtime: u32) -> Proc {
    let python = super::python();
    let script = python.with_file_name("pvapy-ad-sim-server");
    assert!(
        script.exists(),
        "pvapy-ad-sim-server is not beside {}: install pvapy",
        python.display()
    );
    let mut cmd = pva_command(python.to_str().unwrap(), udp, udp);
    cmd.env("PYTHONUNBUFFERED", "1").arg(&script).args([
        "-cn", channel, "-nx", "16", "-ny", "16", "-dt", "uint16", "-std", "0.5", "-rp", "100",
        "-dc",
    ]);
    cmd.args(["-fps", &fps.to_string(), "-rt", &runtime.to_string()]);
    Proc::start_peer(
        "pvapy-ad-sim-server",
        cmd,
        "Published frame id",
        Duration::from_secs(60),
    )
}

/// The p4p detector (tests/peers/p4p_detector.py) serving `pv` on `udp`, holding frame
/// `first - 1` (the last of an earlier run) until told on stdin to run.
pub fn p4p_detector(udp: u16, pv: &str, first: i64) -> Proc {
    let mut cmd = pva_command(super::python().to_str().unwrap(), udp, udp);
    cmd.arg(super::peer_script("p4p_detector.py"))
        .arg(pv)
        .arg(first.to_string());
    Proc::start_peer("p4p detector", cmd, "READY", Duration::from_secs(60))
}
