//! Hosts made as network namespaces (the tests run as root; each namespace has only its loopback
//! and the links made here, and is removed at the end), with default ports and no EPICS
//! variable: discovery by the broadcast addresses of every interface, across hosts with two
//! networks, and servers sharing one host's search port.

mod common;

use std::time::Duration;

use common::netns::{link, Netns};
use common::{first_line, peer_script, python, Running};

const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");
const LIMIT: Duration = Duration::from_secs(60);

/// Start `pvabridge ARGS` on `host`, waiting until its log says it serves.
fn start_pvabridge(host: &Netns, args: &[&str], log: &std::path::Path) -> Running {
    let mut cmd = host.command(BINARY);
    cmd.args(args);
    let running = host.spawn(cmd, log);
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains("serving")
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "pvabridge {args:?} did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    running
}

/// Start the p4p peer server serving `prefix` on `host`.
fn start_p4p(host: &Netns, prefix: &str, log: &std::path::Path) -> Running {
    let mut cmd = host.command(python());
    cmd.arg(peer_script("p4p_server.py")).arg(prefix);
    let mut running = host.spawn(cmd, log);
    assert_eq!(
        first_line(&mut running).trim(),
        "READY",
        "p4p server on {}: {}",
        host.name(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    running
}

/// `pvabridge get` of `pvs` from `host` succeeds.
fn pvabridge_finds(host: &Netns, pvs: &[&str]) {
    let mut cmd = host.command(BINARY);
    cmd.args(["get", "-w", "10"]).args(pvs);
    let out = host.run(cmd, LIMIT);
    assert!(
        out.status.success(),
        "pvabridge get on {} did not find {pvs:?}: {}",
        host.name(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The p4p and the pvapy client on `host` read every one of `pvs`.
fn peers_find(host: &Netns, pvs: &[&str]) {
    for script in ["p4p_client_ops.py", "pvapy_client_ops.py"] {
        let mut cmd = host.command(python());
        cmd.arg(peer_script(script));
        for (i, pv) in pvs.iter().enumerate() {
            if i > 0 {
                cmd.arg("--");
            }
            cmd.args(["get", pv]);
        }
        let out = host.run(cmd, LIMIT);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.lines().count() == pvs.len(),
            "{script} on {} did not find {pvs:?}:\n{stdout}\n{}",
            host.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Three hosts: B on two networks, 10.`net`.1.0/24 to A and 10.`net`.2.0/24 to C.
fn three_hosts(net: u8) -> (Netns, Netns, Netns) {
    let (a, b, c) = (Netns::new(), Netns::new(), Netns::new());
    link(
        &a,
        &format!("10.{net}.1.1/24"),
        &b,
        &format!("10.{net}.1.2/24"),
    );
    link(
        &b,
        &format!("10.{net}.2.1/24"),
        &c,
        &format!("10.{net}.2.2/24"),
    );
    (a, b, c)
}

#[test]
fn servers_on_two_networks_are_found_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let log = |name: &str| dir.path().join(name);
    let (a, b, c) = three_hosts(201);

    let _a_p4p = start_p4p(&a, "a4:", &log("a-p4p.log"));
    let _a_ours = start_pvabridge(&a, &["host", "ar:x=double:1"], &log("a-ours.log"));
    let _c_ours = start_pvabridge(&c, &["host", "cr:x=double:3"], &log("c-ours.log"));
    let _c_p4p = start_p4p(&c, "c4:", &log("c-p4p.log"));
    let _b_ours = start_pvabridge(&b, &["host", "br:x=double:2"], &log("b-ours.log"));

    let four = ["a4:double", "ar:x", "c4:double", "cr:x"];
    pvabridge_finds(&b, &four);
    peers_find(&b, &four);
    pvabridge_finds(&a, &["br:x"]);
    pvabridge_finds(&c, &["br:x"]);
}

#[test]
fn pvapy_hpc_consumer_next_to_simdet_processes_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let host = Netns::new();
    // pvAccessCPP's server (the consumer runs one for its status channels) wants an interface
    // besides loopback.
    let other = Netns::new();
    link(&host, "10.202.1.1/24", &other, "10.202.1.2/24");
    let on_host = |program: &std::path::Path, args: &[&str]| {
        let mut cmd = host.command(program);
        cmd.args(args)
            .env("EPICS_PVA_ADDR_LIST", "127.0.0.1")
            .env("EPICS_PVA_AUTO_ADDR_LIST", "NO");
        cmd
    };
    let binary = std::path::Path::new(BINARY);
    let simdet = on_host(
        binary,
        &[
            "simdet",
            "--pv",
            "det:Image",
            "--trigger",
            "det:Acquire",
            "--nx",
            "32",
            "--ny",
            "32",
            "--fps",
            "100",
            "--frames",
            "100",
        ],
    );
    let _simdet = host.spawn(simdet, &dir.path().join("simdet.log"));
    let consumer = python().with_file_name("pvapy-hpc-consumer");
    let cmd = on_host(
        &consumer,
        &[
            "-ic",
            "det:Image",
            "-rt",
            "120",
            "-dc",
            "-sc",
            "_",
            "-rp",
            "1",
        ],
    );
    let mut consumer = host.spawn(cmd, &dir.path().join("consumer.log"));
    let mut stdout = consumer.0.stdout.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));

    // The consumer's statistics, as its status PV gives them (updated every second).
    let status = || -> Option<serde_json::Value> {
        let cmd = on_host(binary, &["get", "--json", "pvapy:consumer:1:status"]);
        let out = host.run(cmd, LIMIT);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .map(|v| v["value"].clone())
    };
    let wait_for = |what: &str, done: &dyn Fn(&serde_json::Value) -> bool| {
        let start = std::time::Instant::now();
        let mut last = None;
        while start.elapsed() < LIMIT {
            last = status();
            if last.as_ref().is_some_and(done) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "pvapy-hpc-consumer next to simdet: {what} did not happen within {LIMIT:?}; last \
             status {last:?}\nconsumer: {}\nsimdet: {}",
            std::fs::read_to_string(dir.path().join("consumer.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.path().join("simdet.log")).unwrap_or_default()
        );
    };
    // Subscribed: it has the image PV's current (empty) frame.
    wait_for("the subscription", &|s| {
        s["receiverStats"]["nReceived"].as_u64() >= Some(1)
    });
    let out = host.run(on_host(binary, &["put", "det:Acquire", "1"]), LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Frames 1..=100, none missed (then the empty frame that ends the acquisition may come too).
    wait_for("every frame processed", &|s| {
        let p = &s["processorStats"];
        p["nProcessed"].as_u64() >= Some(100)
            && p["nMissed"].as_u64() == Some(0)
            && p["firstObjectId"].as_u64() == Some(1)
    });
}

#[test]
fn a_run_across_three_hosts_ends_done_with_default_configuration() {
    use std::collections::BTreeMap;

    use coordinator::{HandshakeClient, RunRequest, State};
    use dm::{ClientConfig, DmClient, Stage, Workflow};
    use pva::client::Context;

    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (a, b, c) = three_hosts(203);
    std::fs::write(path("users"), "dmuser|secret\n").unwrap();

    // The DM service, and so the workflow's stage, on B; the detector on A; the bridge on C.
    let dm_url = "http://10.203.2.1:22236";
    let mut cmd = b.command(BINARY);
    cmd.args(["dm-service", "--listen", "10.203.2.1:22236", "--data-dir"])
        .arg(path("dm"))
        .arg("--users")
        .arg(path("users"));
    let _dm = b.spawn(cmd, &path("dm.log"));
    let mut cmd = a.command(BINARY);
    cmd.args([
        "simdet",
        "--pv",
        "x3:det:Image",
        "--trigger",
        "x3:det:Acquire",
    ])
    .args(["--nx", "16", "--ny", "16", "--fps", "100", "--frames", "20"]);
    let _detector = a.spawn(cmd, &path("simdet.log"));
    let mut cmd = c.command(BINARY);
    cmd.args([
        "serve",
        "--json",
        "--prefix",
        "x3:wf:",
        "--poll-period",
        "0.2",
    ])
    .args(["--dm-url", dm_url, "--dm-login-file"])
    .arg(path("users"))
    .arg("--state-dir")
    .arg(path("state"));
    let mut bridge = c.spawn(cmd, &path("bridge.log"));
    let started = first_line(&mut bridge);
    assert!(
        started.contains("serving"),
        "{started}{}",
        std::fs::read_to_string(path("bridge.log")).unwrap_or_default()
    );

    // Bluesky's side, on B: a thread of this test moved into B's namespace.
    let logs = |names: &[&str]| -> String {
        names
            .iter()
            .map(|n| {
                format!(
                    "--- {n}:\n{}",
                    std::fs::read_to_string(path(n)).unwrap_or_default()
                )
            })
            .collect()
    };
    let b_name = b.name().to_string();
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                b.block_on(async { tokio::time::timeout(LIMIT, async {
                    let dm = DmClient::new(ClientConfig::new(dm_url, "dmuser", "secret")).unwrap();
                    let stage = Stage {
                        command: format!(
                            "'{BINARY}' workflow consume --handshake $handshakePrefix --drain-timeout 1"
                        ),
                        ..Stage::default()
                    };
                    let workflow = Workflow {
                        name: "across".into(),
                        stages: BTreeMap::from([("01-CONSUME".to_string(), stage)]),
                        ..Workflow::default()
                    };
                    // The service may still be starting.
                    let mut added = dm.add_workflow(&workflow).await;
                    for _ in 0..50 {
                        if added.is_ok() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        added = dm.add_workflow(&workflow).await;
                    }
                    added.map_err(|e| format!("DM on B: {e}"))?;

                    let config = pva::ClientConfig::from_lookup(&|_| None).unwrap();
                    let ctx = Context::new(config).unwrap();
                    let slot = HandshakeClient::new(ctx.clone(), "x3:wf:")
                        .with_timeout(Duration::from_secs(10));
                    let mut request = RunRequest::new("across");
                    request.expected_frames = Some(20);
                    request.data_channel = Some("x3:det:Image".into());
                    request.run_uid = Some("uid-across".into());
                    let wait = Duration::from_secs(30);
                    common::handshake::try_start_acquiring(&slot, &request, wait).await?;
                    ctx.put("x3:det:Acquire")
                        .set("value", 1i32)
                        .timeout(Duration::from_secs(10))
                        .exec()
                        .await
                        .map_err(|e| e.to_string())?;
                    common::handshake::wait_for_value(&ctx, "x3:det:Acquire", "value", 0, wait)
                        .await?;
                    common::handshake::try_finish(&slot, wait).await
                }).await })
            })
            .join()
            .expect("the Bluesky thread")
    });
    let outcome = outcome.unwrap_or_else(|_| Err("the run did not end within the limit".into()));
    assert_eq!(
        outcome,
        Ok((Ok(State::Done), 20, 0)),
        "the run across hosts (B = {b_name}):\n{}",
        logs(&["bridge.log", "dm.log", "simdet.log"])
    );
}

/// Restart a p4p server three times under a monitor of ours and one of p4p's on another host,
/// and report how long each took to resume after the server was back (BENCHMARKS.md gives the
/// figures; the test only requires that both resume).
#[test]
fn monitors_resume_after_server_restarts() {
    use std::io::BufRead as _;
    use std::sync::mpsc;
    use std::time::Instant;

    use pva::client::{Context, MonitorEvent};

    const ROUNDS: usize = 3;
    const DOWN: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Netns::new(), Netns::new());
    link(&a, "10.204.1.1/24", &b, "10.204.1.2/24");
    let server_log = dir.path().join("p4p.log");
    let mut server = start_p4p(&a, "rs:", &server_log);

    // Update arrival times: ours from a thread in B, p4p's from its printed lines.
    let (ours_tx, ours) = mpsc::channel::<Instant>();
    let b_for_ours = &b;
    std::thread::scope(|scope| {
        scope.spawn(move || {
            b_for_ours.block_on(async {
                let config = pva::ClientConfig::from_lookup(&|_| None).unwrap();
                let ctx = Context::new(config).unwrap();
                let mut monitor = ctx.monitor("rs:counter").exec().unwrap();
                let mut updates = 0;
                while let Ok(Some(event)) = tokio::time::timeout(LIMIT, monitor.recv()).await {
                    if let MonitorEvent::Update(_) = event {
                        updates += 1;
                        if ours_tx.send(Instant::now()).is_err() || updates > ROUNDS {
                            return;
                        }
                    }
                }
            });
        });

        let mut cmd = b.command(python());
        cmd.arg(peer_script("p4p_monitor_stream.py"))
            .args(["rs:counter", "1000000", "120"]);
        let mut p4p_monitor = b.spawn(cmd, &dir.path().join("p4p-monitor.log"));
        let stdout = p4p_monitor.0.stdout.take().unwrap();
        let (p4p_tx, theirs) = mpsc::channel::<Instant>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.contains("\"value\"") && p4p_tx.send(Instant::now()).is_err() {
                    return;
                }
            }
        });

        let next = |rx: &mpsc::Receiver<Instant>, who: &str| {
            rx.recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("{who} monitor: no update within 30 s"))
        };
        next(&ours, "our");
        next(&theirs, "p4p's");
        let mut figures = Vec::new();
        for _ in 0..ROUNDS {
            drop(server);
            std::thread::sleep(DOWN);
            server = start_p4p(&a, "rs:", &server_log);
            let back = Instant::now();
            let ours_after = next(&ours, "our") - back;
            let theirs_after = next(&theirs, "p4p's") - back;
            figures.push((ours_after, theirs_after));
        }
        drop(p4p_monitor);
        for (i, (ours, theirs)) in figures.iter().enumerate() {
            println!(
                "restart {}: pvabridge monitor resumed {} ms after the server was back, p4p's {} ms",
                i + 1,
                ours.as_millis(),
                theirs.as_millis()
            );
        }
    });
}

/// A host rule naming `localhost` lets a client that connects over loopback write, and refuses a
/// client on another host that claims to be `localhost`.
#[test]
fn a_client_claiming_another_hosts_name_is_refused() {
    use pva::client::proto::Credentials;
    use pva::client::Context;

    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Netns::new(), Netns::new());
    link(&a, "10.205.1.1/24", &b, "10.205.1.2/24");
    let rules = dir.path().join("access.toml");
    std::fs::write(
        &rules,
        "[[allow]]\nname = \"on the host\"\npvs = [\"sp:*\"]\nusers = [\"*\"]\nhosts = [\"localhost\"]\n",
    )
    .unwrap();
    let rules = rules.to_str().unwrap();
    let _server = start_pvabridge(
        &a,
        &["host", "--access", rules, "sp:x=double:0"],
        &dir.path().join("server.log"),
    );
    let mut local = a.command(BINARY);
    local
        .args(["put", "sp:x", "1"])
        .env("EPICS_PVA_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO");
    let out = a.run(local, LIMIT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let refusal = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                b.block_on(async {
                    let config = pva::ClientConfig::from_lookup(&|_| None).unwrap();
                    let claim = Credentials {
                        host: "localhost".into(),
                        ..Credentials::of_process()
                    };
                    let ctx = Context::with_credentials(config, claim).unwrap();
                    ctx.put("sp:x")
                        .set("value", 2.0)
                        .timeout(Duration::from_secs(10))
                        .exec()
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
            })
            .join()
            .unwrap()
    });
    let e = refusal.expect_err("a client on B claiming to be localhost wrote");
    assert!(
        e.contains("on host 'localhost' (10.205.1.2:") && e.contains("rule 'on the host'"),
        "{e}"
    );
}
