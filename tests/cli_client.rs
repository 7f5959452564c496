//! `pvabridge get|put|monitor|info|call|list` as a user runs them, against a p4p server (and
//! `list` against ours).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;

const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");

/// The p4p server process, killed when the test ends however it ends.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_ports() -> (u16, u16) {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let udp = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind udp");
    (
        tcp.local_addr().unwrap().port(),
        udp.local_addr().unwrap().port(),
    )
}

fn env(cmd: &mut Command, (tcp, udp): (u16, u16)) {
    cmd.env("EPICS_PVA_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env("EPICS_PVA_SERVER_PORT", tcp.to_string())
        .env("EPICS_PVA_BROADCAST_PORT", udp.to_string())
        .env("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_NAME_SERVERS", "")
        .env("EPICS_PVA_CONN_TMO", "5");
}

fn start_peer(ports: (u16, u16)) -> Peer {
    let mut cmd = Command::new(common::python());
    cmd.arg(common::peer_script("p4p_server.py")).arg("cli:");
    env(&mut cmd, ports);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start p4p server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let peer = Peer(child);
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("p4p server READY");
    assert_eq!(line.trim(), "READY");
    peer
}

fn pvabridge(ports: (u16, u16), args: &[&str]) -> Output {
    let mut cmd = Command::new(BINARY);
    cmd.args(args);
    env(&mut cmd, ports);
    common::run_bounded(cmd, Duration::from_secs(30))
}

fn json_lines(out: &Output) -> Vec<Json> {
    assert!(
        out.status.success(),
        "pvabridge failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect()
}

#[test]
fn get_put_info_monitor_and_call_from_the_command_line() {
    let ports = free_ports();
    let _peer = start_peer(ports);

    let text = pvabridge(ports, &["get", "cli:double"]);
    assert!(text.status.success());
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        stdout.starts_with("cli:double struct \"epics:nt/NTScalar:1.0\" {"),
        "{stdout}"
    );
    assert!(stdout.contains("    double value = 2.25\n"), "{stdout}");

    let got = json_lines(&pvabridge(
        ports,
        &["get", "--json", "cli:double", "cli:enum"],
    ));
    assert_eq!(got[0]["name"], "cli:double");
    assert_eq!(got[0]["value"]["value"], 2.25);
    assert_eq!(got[1]["value"]["value"]["choices"][2], "Auto");

    assert!(pvabridge(ports, &["put", "cli:double", "7.5"])
        .status
        .success());
    assert!(pvabridge(ports, &["put", "cli:enum", "value=Auto"])
        .status
        .success());
    let got = json_lines(&pvabridge(
        ports,
        &[
            "get",
            "--json",
            "-r",
            "field(value)",
            "cli:double",
            "cli:enum",
        ],
    ));
    assert_eq!(got[0]["value"]["value"], 7.5);
    assert_eq!(got[1]["value"]["value"]["index"], 2);

    let info = json_lines(&pvabridge(ports, &["info", "--json", "cli:double"]));
    assert_eq!(info[0]["type"]["type"], "struct \"epics:nt/NTScalar:1.0\"");
    assert_eq!(info[0]["type"]["fields"]["value"]["type"], "double");

    // Monitor: the current value, then the one a put brings.
    let mut cmd = Command::new(BINARY);
    cmd.args(["monitor", "--json", "-n", "2", "cli:counter"]);
    env(&mut cmd, ports);
    let monitor = std::thread::spawn(move || common::run_bounded(cmd, Duration::from_secs(30)));
    let mut updates = Vec::new();
    let mut stderr = String::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        assert!(pvabridge(ports, &["put", "cli:counter", "42"])
            .status
            .success());
        if monitor.is_finished() {
            let out = monitor.join().expect("monitor thread");
            stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            updates = json_lines(&out);
            break;
        }
    }
    assert_eq!(updates.len(), 2, "{updates:?}");
    assert_eq!(updates[1]["value"]["value"], 42);
    assert_eq!(stderr.lines().next(), Some("cli:counter <Connected>"));

    let call = json_lines(&pvabridge(
        ports,
        &["call", "--json", "cli:add", "a=1.5", "b=2"],
    ));
    assert_eq!(call[0]["value"]["value"], 3.5);
}

#[test]
fn bad_input_gives_one_line_and_a_failing_exit() {
    let ports = free_ports();
    let _peer = start_peer(ports);
    let cases: [(&[&str], &str); 4] = [
        (
            &["get", "-w", "0.5", "cli:nothing"],
            "pvabridge get: cli:nothing: timeout after 0.5s waiting for 'cli:nothing'",
        ),
        (
            &["put", "cli:double", "abc"],
            "pvabridge put: 'cli:double': field 'value':",
        ),
        (
            &["put", "cli:double", "1", "2"],
            "pvabridge put: '1' is not field=value",
        ),
        (
            &["get", "-r", "field(", "cli:double"],
            "pvabridge get: cli:double: invalid pvRequest",
        ),
    ];
    for (args, want) in cases {
        let out = pvabridge(ports, args);
        assert!(!out.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(stderr.starts_with(want), "{args:?}: {stderr}");
    }
}

#[test]
fn list_names_the_pvs_of_a_p4p_server_by_address_and_by_guid() {
    let ports = free_ports();
    let _peer = start_peer(ports);
    let address = format!("127.0.0.1:{}", ports.0);

    let listed = json_lines(&pvabridge(ports, &["list", "--json", &address]));
    let names: Vec<&str> = listed[0]["channels"]
        .as_array()
        .expect("a list of names")
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    // p4p_server.py: 12 scalars, 12 arrays, enum, table, image, nested, counter, add.
    assert_eq!(names.len(), 30, "{names:?}");
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted: {names:?}");
    for want in ["cli:double", "cli:arr_ulong", "cli:nested", "cli:add"] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }

    let text = pvabridge(ports, &["list", &address]);
    assert!(text.status.success());
    let lines: Vec<String> = String::from_utf8_lossy(&text.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines, names, "one name per line");

    let servers = json_lines(&pvabridge(ports, &["list", "-w", "1", "--json"]));
    assert_eq!(servers.len(), 1, "{servers:?}");
    let guid = format!("0x{}", servers[0]["guid"].as_str().unwrap());
    let by_guid = json_lines(&pvabridge(ports, &["list", "--json", &guid]));
    assert_eq!(by_guid[0]["channels"], listed[0]["channels"]);
    assert_eq!(by_guid[0]["address"], address.as_str());

    let info = json_lines(&pvabridge(ports, &["list", "--json", "--info", &address]));
    assert_eq!(info[0]["implLang"], "cpp", "{info:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_names_the_pvs_of_our_server_which_does_not_advertise_its_server_channel() {
    use pva::server::{Server, SharedPv, StaticSource};
    use pva_codec::nt::NtScalar;
    use pva_codec::ScalarType;

    let source = Arc::new(StaticSource::new());
    for name in ["ours:b", "ours:a", "ours:c"] {
        source.add(
            name,
            SharedPv::readonly(NtScalar::new(ScalarType::I32).create()),
        );
    }
    let server = Server::start(pva::ServerConfig::isolated(), vec![source])
        .await
        .expect("server starts");
    let ports = (server.tcp_addr().port(), server.udp_addr().port());
    let address = server.tcp_addr().to_string();
    let (listed, info, get_ours, get_server) = tokio::task::spawn_blocking(move || {
        (
            pvabridge(ports, &["list", "--json", &address]),
            pvabridge(ports, &["list", "-i", &address]),
            pvabridge(ports, &["get", "-w", "5", "ours:a"]),
            pvabridge(ports, &["get", "-w", "1", "server"]),
        )
    })
    .await
    .unwrap();
    let listed = json_lines(&listed);
    assert_eq!(
        listed[0]["channels"],
        serde_json::json!(["ours:a", "ours:b", "ours:c"])
    );
    let info = String::from_utf8_lossy(&info.stdout).to_string();
    assert!(info.contains("lang=\"rust\""), "{info}");
    // Like pvxs, the server channel answers a direct connection but no search: a search
    // finds our PVs, and not it.
    assert!(get_ours.status.success());
    let stderr = String::from_utf8_lossy(&get_server.stderr);
    assert!(
        stderr.starts_with("pvabridge get: server: timeout after 1s waiting for 'server'"),
        "{stderr}"
    );
    server.stop().await;
}
