//! Network namespaces for the tests that need default ports, no EPICS variable, or several
//! hosts: each [`Netns`] is a host of its own with only its loopback and the links a test makes
//! ([`link`]), so that nothing a process inside sends (automatic address lists broadcast on
//! every interface) reaches the machine's real interfaces. Made with `ip netns` (the tests run
//! as root); dropping a `Netns`, on a panic too, kills what runs inside and removes it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::Running;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this test process, within the 15 characters of an interface name.
fn unique(kind: &str) -> String {
    format!(
        "{kind}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Run `ip ARGS`, failing the test with ip's message when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (iproute2 is needed for namespaces): {e}"));
    assert!(
        out.status.success(),
        "ip {} failed (the namespace tests must run as root): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// One network namespace: a host of its own.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace with its loopback up.
    pub fn new() -> Netns {
        let name = unique("pvab");
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Add a veth pair whose two ends stay inside the namespace, with a subnet address (and its
    /// broadcast address) on one end and the default route over it: the automatic address lists
    /// then broadcast there and reach every server of this one host, as on a host's network.
    pub fn with_broadcast(self) -> Netns {
        let n = self.name.clone();
        ip(&[
            "-n", &n, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ]);
        ip(&[
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
        ip(&["-n", &n, "link", "set", "v0", "up"]);
        ip(&["-n", &n, "link", "set", "v1", "up"]);
        ip(&["-n", &n, "route", "add", "default", "dev", "v0"]);
        self
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` to run inside the namespace, with no EPICS, DM or handshake variable of the
    /// developer's environment: default configuration, as on a fresh host.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("EPICS_") || key.starts_with("DM_") || key == "PVABRIDGE_HANDSHAKE" {
                cmd.env_remove(key);
            }
        }
        cmd
    }

    /// Start `cmd` (from [`Netns::command`]) with its stdin and stdout piped and its stderr in
    /// `log`; it is killed when the returned guard drops, and at the latest with the namespace.
    pub fn spawn(&self, mut cmd: Command, log: &Path) -> Running {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("create log file"));
        Running(cmd.spawn().expect("start a process in a namespace"))
    }

    /// Run `cmd` (from [`Netns::command`]) to completion within `limit`.
    pub fn run(&self, cmd: Command, limit: Duration) -> Output {
        super::run_bounded(cmd, limit)
    }

    /// Move the calling thread into this namespace: the sockets it opens from now on (a
    /// current-thread tokio runtime's, say) are this host's. Use it on a thread of its own.
    pub fn enter_thread(&self) {
        let file = std::fs::File::open(format!("/var/run/netns/{}", self.name))
            .expect("open the namespace");
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("enter the namespace");
    }

    /// Run `task` to completion in this namespace on a current-thread tokio runtime: what a
    /// process of this host would do. Call it on a thread of its own (see [`Self::enter_thread`]).
    pub fn block_on<T>(&self, task: impl std::future::Future<Output = T>) -> T {
        self.enter_thread();
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(task)
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Join `a` and `b` with a link (a veth pair), giving `a` the address `a_addr` and `b` the
/// address `b_addr` (`10.1.2.1/24` form) with their subnet's broadcast address.
pub fn link(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) {
    let (end_a, end_b) = (unique("va"), unique("vb"));
    ip(&[
        "link", "add", &end_a, "netns", &a.name, "type", "veth", "peer", "name", &end_b, "netns",
        &b.name,
    ]);
    for (ns, end, addr) in [(a, &end_a, a_addr), (b, &end_b, b_addr)] {
        ip(&["-n", &ns.name, "addr", "add", addr, "brd", "+", "dev", end]);
        ip(&["-n", &ns.name, "link", "set", end, "up"]);
    }
}
