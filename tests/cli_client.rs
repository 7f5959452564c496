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
    let server = format!("127.0.0.1:{}", ports.0);
    assert_eq!(info[0]["server"], server.as_str(), "info names the server");
    let text = succeeded(&pvabridge(ports, &["info", "cli:double"]));
    assert_eq!(
        text.lines().next(),
        Some(format!("cli:double from {server}").as_str())
    );

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
    let cases: [(&[&str], &str); 7] = [
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
        // Each command takes only the options it uses.
        (
            &["monitor", "-w", "1", "cli:double"],
            "pvabridge: unexpected argument '-w' found",
        ),
        (
            &["info", "-r", "field(value)", "cli:double"],
            "pvabridge: unexpected argument '-r' found",
        ),
        (
            &["get", "-w", "5 days", "cli:double"],
            "pvabridge: invalid value '5 days' for '--timeout <DURATION>'",
        ),
    ];
    for (args, want) in cases {
        let out = pvabridge(ports, args);
        assert_eq!(out.status.code(), Some(1), "{args:?} should fail");
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

/// Reads PVs with the p4p client and prints, per PV, one JSON object with what pvget's one-line
/// form and the delta form must show: the time stamp as pvget prints it (local time, ms), the
/// value (an enum as its choice; an array as its length and first LIMIT elements) and every leaf
/// field by dotted path. `put NAME JSON` first writes a value; every PV read gets a time stamp
/// first.
const P4P_READ: &str = r#"
import json, sys, time
from p4p.client.thread import Context
ctx = Context("pva", nt=False)
args = sys.argv[1:]
if args[0] == "put":
    ctx.put(args[1], json.loads(args[2]), timeout=15)
    args = args[3:]
limit = int(args[0])
# p4p serves these PVs with a zero time stamp: give each one, so that the time is checked too.
now = int(time.time())
for i, name in enumerate(args[1:]):
    v = ctx.get(name, timeout=15)
    v.mark("value")
    v["timeStamp.secondsPastEpoch"] = now - 3600 * i
    v["timeStamp.nanoseconds"] = 123456789 * i
    ctx.put(name, v, timeout=15)
def leaves(prefix, d, out):
    for k, v in d.items():
        if isinstance(v, dict):
            leaves(prefix + k + ".", v, out)
        else:
            out[prefix + k] = v.tolist() if hasattr(v, "tolist") else v
for name in args[1:]:
    v = ctx.get(name, timeout=15)
    sec, ns = v["timeStamp.secondsPastEpoch"], v["timeStamp.nanoseconds"]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec)) + ".%03d" % (ns // 1000000)
    d = v.todict()
    val = d["value"]
    if isinstance(val, dict):
        shown = [val["choices"][val["index"]]]
    elif hasattr(val, "tolist"):
        items = val.tolist()
        shown = [len(items)] + items[:limit]
    else:
        shown = [val]
    fields = {}
    leaves("", d, fields)
    print(json.dumps({"name": name, "stamp": stamp, "shown": shown, "fields": fields}), flush=True)
ctx.close()
"#;

fn p4p_read(ports: (u16, u16), args: &[&str]) -> Vec<Json> {
    let mut cmd = Command::new(common::python());
    cmd.arg("-c").arg(P4P_READ).args(args);
    env(&mut cmd, ports);
    json_lines(&common::run_bounded(cmd, Duration::from_secs(30)))
}

/// The stdout of a command that must have succeeded.
fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "pvabridge failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a printed value is the value p4p read: numbers compared as numbers, text as text.
fn same_value(printed: &str, read: &Json) -> bool {
    match read {
        Json::Number(n) => printed.parse::<f64>().ok() == n.as_f64(),
        Json::Bool(b) => printed == b.to_string(),
        Json::String(s) => printed == s || printed == format!("{s:?}"),
        _ => false,
    }
}

#[test]
fn get_of_three_pvs_one_missing_prints_two_an_error_and_exits_1_within_one_deadline() {
    let ports = free_ports();
    let _peer = start_peer(ports);
    let started = std::time::Instant::now();
    let out = pvabridge(
        ports,
        &[
            "get",
            "-w",
            "3",
            "-F",
            "nt",
            "cli:double",
            "cli:missing",
            "cli:enum",
        ],
    );
    let took = started.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("cli:double ") && lines[0].ends_with(" 2.25"),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with("cli:enum ") && lines[1].ends_with(" On"),
        "{stdout}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("pvabridge get: cli:missing: timeout after 3s"),
        "{stderr}"
    );
    // Asked at once: the missing PV's deadline is the others' too, not a second one after theirs.
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} for one 3 s deadline"
    );
}

#[test]
fn nt_delta_and_array_limit_print_what_p4p_reads() {
    let ports = free_ports();
    let _peer = start_peer(ports);
    let long: Vec<f64> = (0..10).map(|i| f64::from(i) + 0.5).collect();
    let read = p4p_read(
        ports,
        &[
            "put",
            "cli:arr_double",
            &serde_json::to_string(&long).unwrap(),
            "3",
            "cli:double",
            "cli:enum",
            "cli:arr_double",
            "cli:string",
        ],
    );
    let names: Vec<&str> = read.iter().map(|r| r["name"].as_str().unwrap()).collect();

    let mut args = vec!["get", "-F", "nt", "-#", "3"];
    args.extend(&names);
    let stdout = succeeded(&pvabridge(ports, &args));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), read.len(), "{stdout}");
    for (line, want) in lines.iter().zip(&read) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let stamp = want["stamp"].as_str().unwrap();
        assert!(!stamp.starts_with("1970"), "a time stamp was set: {stamp}");
        assert_eq!(words[0], want["name"], "{line}");
        assert_eq!(format!("{} {}", words[1], words[2]), stamp, "{line}");
        let shown = want["shown"].as_array().unwrap();
        let mut values: Vec<&str> = words[3..].to_vec();
        if values.last() == Some(&"...") {
            values.pop();
            assert!(
                shown[0].as_u64().unwrap() as usize > shown.len() - 1,
                "{line}: cut, but p4p read {shown:?}"
            );
        }
        assert_eq!(values.len(), shown.len(), "{line} vs {shown:?}");
        for (printed, read) in values.iter().zip(shown) {
            assert!(same_value(printed, read), "{line}: {printed} vs {read}");
        }
    }
    assert!(lines[2].ends_with(" 10 0.5 1.5 2.5 ..."), "{stdout}");

    let mut args = vec!["get", "-F", "delta", "-#", "0"];
    args.extend(&names);
    let stdout = succeeded(&pvabridge(ports, &args));
    for want in &read {
        let name = want["name"].as_str().unwrap();
        let fields = want["fields"].as_object().unwrap();
        let printed: Vec<(&str, &str)> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix('.'))
            .map(|l| {
                let (path, rest) = l.split_once(' ').expect("PATH TYPE = VALUE");
                (path, rest.split_once(" = ").expect("TYPE = VALUE").1)
            })
            .collect();
        let paths: Vec<&str> = printed.iter().map(|(p, _)| *p).collect();
        let mut wanted: Vec<&str> = fields.keys().map(String::as_str).collect();
        let mut got = paths.clone();
        wanted.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, wanted, "{name}: {stdout}");
        for (path, value) in printed {
            match &fields[path] {
                Json::Array(items) => {
                    let inner = value.split_once("}[").map_or(value, |(_, r)| r);
                    let inner = inner.trim_start_matches('[').trim_end_matches(']');
                    let elements: Vec<&str> = inner.split(", ").filter(|e| !e.is_empty()).collect();
                    assert_eq!(elements.len(), items.len(), "{name}.{path}: {value}");
                    for (e, item) in elements.iter().zip(items) {
                        assert!(same_value(e, item), "{name}.{path}: {e} vs {item}");
                    }
                }
                read => assert!(same_value(value, read), "{name}.{path}: {value} vs {read}"),
            }
        }
    }
}

/// The lines a child writes on one stream, as they come.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Wait (at most 30 s) for a line that satisfies `want`; every line seen goes to `seen`.
fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if want(&line) {
                    return line;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no such line within 30 s; seen: {seen:#?}");
}

#[test]
fn monitor_reports_a_server_going_and_coming_back_on_stderr_and_data_on_stdout() {
    let ports = free_ports();
    let peer = start_peer(ports);
    let mut cmd = Command::new(BINARY);
    cmd.args(["monitor", "-F", "nt", "cli:counter"]);
    env(&mut cmd, ports);
    let mut monitor = Peer(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start monitor"),
    );
    let out = lines_of(monitor.0.stdout.take().unwrap());
    let err = lines_of(monitor.0.stderr.take().unwrap());
    let (mut data, mut events) = (Vec::new(), Vec::new());
    wait_line(&err, &mut events, |l| l == "cli:counter <Connected>");
    wait_line(&out, &mut data, |l| {
        l.starts_with("cli:counter ") && l.ends_with(" 0")
    });

    drop(peer);
    wait_line(&err, &mut events, |l| l == "cli:counter <Disconnected>");
    let peer = start_peer(ports);
    wait_line(&err, &mut events, |l| l == "cli:counter <Connected>");
    wait_line(&out, &mut data, |l| {
        l.starts_with("cli:counter ") && l.ends_with(" 0")
    });

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor.0.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("interrupt the monitor");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = monitor.0.try_wait().expect("poll monitor") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "monitor ignored SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(2), "interrupted: exit status 2");
    data.extend(out.try_iter());
    events.extend(err.try_iter());
    assert_eq!(
        events,
        [
            "cli:counter <Connected>",
            "cli:counter <Disconnected>",
            "cli:counter <Connected>"
        ]
    );
    // p4p serves the counter with a zero time stamp, which pvget's form shows as <undefined>.
    assert_eq!(
        data,
        ["cli:counter <undefined> 0", "cli:counter <undefined> 0"],
        "only data on stdout"
    );
    drop(peer);
}

#[test]
fn list_prints_servers_that_list_takes_back() {
    let ports = free_ports();
    let _peer = start_peer(ports);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "\"$0\" list -w 1 > servers && xargs \"$0\" list < servers",
        BINARY,
    ])
    .current_dir(dir.path());
    env(&mut cmd, ports);
    let out = common::run_bounded(cmd, Duration::from_secs(30));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<&str> = stdout.lines().collect();
    assert_eq!(names.len(), 30, "the p4p server's PVs: {stdout}");
    assert!(names.contains(&"cli:double"), "{stdout}");

    let once = pvabridge(ports, &["list", "-w", "0"]);
    assert_eq!(
        String::from_utf8_lossy(&once.stdout).trim(),
        format!("127.0.0.1:{}", ports.0),
        "one search round finds the server on loopback"
    );
}

#[test]
fn debug_logging_for_get_and_the_configuration_with_v() {
    let ports = free_ports();
    let _peer = start_peer(ports);
    let quiet = pvabridge(ports, &["get", "cli:double"]);
    assert!(quiet.status.success());
    assert!(
        quiet.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );

    let mut cmd = Command::new(BINARY);
    cmd.args(["get", "cli:double"]);
    env(&mut cmd, ports);
    cmd.env("RUST_LOG", "debug");
    let by_env = common::run_bounded(cmd, Duration::from_secs(30));
    let by_flag = pvabridge(ports, &["-d", "get", "cli:double"]);
    for (how, out) in [("RUST_LOG=debug", &by_env), ("-d", &by_flag)] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{how}: {stderr}");
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("DEBUG") && l.contains("get cli:double: answered")),
            "{how}: {stderr}"
        );
    }

    let json_logs = pvabridge(ports, &["--log-format", "json", "-d", "get", "cli:double"]);
    let stderr = String::from_utf8_lossy(&json_logs.stderr);
    assert!(json_logs.status.success(), "{stderr}");
    let events: Vec<Json> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["level"] == "DEBUG" && e["fields"]["message"] == "get cli:double: answered"),
        "{stderr}"
    );

    let verbose = pvabridge(ports, &["get", "-v", "cli:double"]);
    let stderr = String::from_utf8_lossy(&verbose.stderr);
    assert!(verbose.status.success(), "{stderr}");
    for want in [
        "EPICS_PVA_ADDR_LIST=127.0.0.1:".to_owned(),
        "EPICS_PVA_AUTO_ADDR_LIST=NO".to_owned(),
        format!("EPICS_PVA_SERVER_PORT={}", ports.0),
        format!("EPICS_PVA_BROADCAST_PORT={}", ports.1),
        "EPICS_PVA_CONN_TMO=5".to_owned(),
    ] {
        assert!(
            stderr.lines().any(|l| l.starts_with(&want)),
            "{want}: {stderr}"
        );
    }
}
