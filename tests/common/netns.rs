//! A network namespace of its own for a test: nothing in it reaches the machine's interfaces, so
//! processes in it may use the default EPICS ports, broadcast and run without EPICS variables.
//! Created by `ip netns add` (the tests run as root), removed, with every process left in it,
//! when dropped.

use std::process::{Command, Output};
use std::time::Duration;

/// A network namespace with loopback up and, for broadcasts, a route over a veth pair whose
/// both ends stay inside it.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// A new namespace named after `tag` and this process (so that parallel tests never meet).
    pub fn new(tag: &str) -> NetNs {
        let ns = NetNs {
            name: format!("pvab-{tag}-{}", std::process::id()),
        };
        let _ = Command::new("ip").args(["netns", "del", &ns.name]).output();
        ns.ip(&["netns", "add", &ns.name]);
        ns.ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Add a veth pair inside the namespace, an address with a broadcast address on one end and a
    /// default route over it: then a search to 255.255.255.255 (EPICS_PVA_AUTO_ADDR_LIST) reaches
    /// every server in the namespace, as on a host's network.
    pub fn with_broadcast(self) -> NetNs {
        let n = self.name.clone();
        self.ip(&[
            "-n", &n, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ]);
        self.ip(&[
            "-n",
            &n,
            "addr",
            "add",
            "10.253.0.1/24",
            "brd",
            "+",
            "dev",
            "v0",
        ]);
        self.ip(&["-n", &n, "link", "set", "v0", "up"]);
        self.ip(&["-n", &n, "link", "set", "v1", "up"]);
        self.ip(&["-n", &n, "route", "add", "default", "dev", "v0"]);
        self
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Run `cmd` (from [`NetNs::command`]) to completion, killing it after `limit`.
    pub fn run(&self, cmd: Command, limit: Duration) -> Output {
        super::run_bounded(cmd, limit)
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {}: {} (the namespace tests need root and iproute2)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
