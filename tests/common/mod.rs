//! Helpers shared by the end-to-end tests: [`peers`] (re-exported here) finds the Python peers
//! and runs them bounded in time; [`handshake`] has those of the tests that run `pvabridge serve`
//! and DM workflows.

#![allow(dead_code)]

pub mod cli_help;
pub mod handshake;
pub mod netns;
pub mod peers;
pub mod proc;

pub use peers::*;

use std::process::{Command, Stdio};
use std::time::Duration;

/// Clients search only the given UDP ports on loopback (e.g. a bridge's and a detector's), and
/// no DM or handshake setting of the developer's leaks in.
pub fn search_only(cmd: &mut Command, udp_ports: &[u16]) {
    let list: Vec<String> = udp_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    cmd.env("EPICS_PVA_ADDR_LIST", list.join(" "))
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVA_NAME_SERVERS", "")
        .env("EPICS_PVA_CONN_TMO", "10")
        .env_remove("PVABRIDGE_HANDSHAKE")
        .env_remove("DM_PROC_WEB_SERVICE_URL")
        .env_remove("DM_LOGIN_FILE");
}

/// Start a pvabridge server process on loopback with UDP port `udp`, searching `search` as a
/// client (its DM stages inherit that), its stderr in `log` and its stdout piped.
pub fn spawn_server(mut cmd: Command, udp: u16, log: &std::path::Path, search: &[u16]) -> Running {
    search_only(&mut cmd, search);
    cmd.env("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVAS_SERVER_PORT", "0")
        .env("EPICS_PVAS_BROADCAST_PORT", udp.to_string())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("create log file"));
    Running(cmd.spawn().expect("start pvabridge"))
}

/// The first line the process prints on stdout (its startup report), waiting at most 30 s.
pub fn first_line(running: &mut Running) -> String {
    use std::io::BufRead as _;
    let stdout = running.0.stdout.take().expect("stdout is piped");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = sender.send(line);
    });
    receiver
        .recv_timeout(Duration::from_secs(30))
        .expect("a startup line within 30 s")
}
