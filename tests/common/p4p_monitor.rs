//! A p4p client monitoring one PV in a child process, as a witness that other clients are served
//! while a test does something to the server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// `tests/peers/p4p_monitor_stream.py`: one JSON line per event, read on a thread of its own.
pub struct P4pMonitor {
    child: Child,
    events: mpsc::Receiver<Json>,
}

impl P4pMonitor {
    /// Monitor `pv` through the server's UDP port `udp` until a value reaches `stop_at` or
    /// `seconds` pass.
    pub fn start(udp: u16, pv: &str, stop_at: i64, seconds: u32) -> P4pMonitor {
        let mut cmd = Command::new(super::python());
        cmd.arg(super::peer_script("p4p_monitor_stream.py")).args([
            pv,
            &stop_at.to_string(),
            &seconds.to_string(),
        ]);
        super::loopback_env(&mut cmd, udp);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start p4p monitor");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(j) = serde_json::from_str(&line) {
                    let _ = tx.send(j);
                }
            }
        });
        P4pMonitor { child, events }
    }

    /// The next event, or a test failure after `limit`.
    pub fn next(&self, limit: Duration) -> Json {
        self.events
            .recv_timeout(limit)
            .expect("the p4p monitor reports within the time limit")
    }

    /// The next update's value, passing over connection events (p4p reports "disconnected"
    /// before its first connection).
    pub fn next_value(&self, limit: Duration) -> i64 {
        let deadline = Instant::now() + limit;
        loop {
            let e = self.next(deadline.saturating_duration_since(Instant::now()));
            if let Some(n) = e["value"].as_i64() {
                return n;
            }
        }
    }
}

impl Drop for P4pMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
