//! pvDatabase's data distributor across implementations: a pvapy-hpc-consumer fleet asking a
//! pvabridge server for its shares (`--distributor-trigger`, `--distributor-updates`), and
//! pvabridge clients asking a pvapy server for theirs (`field(_[pydistributor=...])`). Either way
//! the union of what the members received is every frame, each exactly once. The peers run in a
//! network namespace of the test's own (pvAccessCPP's server wants an interface besides loopback).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::netns::{link, Netns};
use common::{peer_script, python, Running};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_pvabridge");
const LIMIT: Duration = Duration::from_secs(25);
const MEMBERS: usize = 3;

/// A host and a neighbour linked to it; the processes run on the host, searching its loopback.
fn host(subnet: u8) -> (Netns, Netns) {
    let host = Netns::new();
    let other = Netns::new();
    link(
        &host,
        &format!("10.{subnet}.1.1/24"),
        &other,
        &format!("10.{subnet}.1.2/24"),
    );
    (host, other)
}

fn on_loopback(cmd: &mut Command) {
    cmd.env("EPICS_PVA_ADDR_LIST", "127.0.0.1")
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO");
}

/// Every frame from the first id on, each exactly once, over the members' lists.
fn assert_shared_once(shares: &BTreeMap<String, Vec<i64>>, frames: i64, context: &str) {
    let mut seen = BTreeMap::<i64, &str>::new();
    for (member, ids) in shares {
        assert!(!ids.is_empty(), "{member} got nothing\n{context}");
        for id in ids {
            if let Some(other) = seen.insert(*id, member) {
                panic!("frame {id} went to {other} and {member}\n{context}");
            }
        }
    }
    let first = *seen.keys().next().expect("frames");
    let ids: Vec<i64> = seen.keys().copied().collect();
    assert_eq!(
        ids,
        (first..first + frames).collect::<Vec<_>>(),
        "{context}"
    );
}

#[test]
fn a_pvapy_hpc_consumer_fleet_shares_a_pvabridge_servers_frames() {
    const FRAMES: i64 = 30;
    let dir = tempfile::tempdir().unwrap();
    let (host, _other) = host(204);
    let mut simdet = host.command(BINARY);
    simdet.args([
        "simdet", "--pv", "dd:Image", "--nx", "8", "--ny", "8", "--fps", "20",
    ]);
    simdet.args([
        "--frames",
        &FRAMES.to_string(),
        "--start-delay",
        "5",
        "--linger",
        "2",
    ]);
    on_loopback(&mut simdet);
    let _simdet = host.spawn(simdet, &dir.path().join("simdet.log"));

    let consumer = python().with_file_name("pvapy-hpc-consumer");
    let mut fleet = host.command(&consumer);
    let args = format!("{{\"dir\": \"{}\"}}", dir.path().display());
    let processor = peer_script("pvapy_id_recorder.py");
    fleet.args([
        "-ic",
        "dd:Image",
        "-nc",
        &MEMBERS.to_string(),
        "-rt",
        "10",
        "-dc",
    ]);
    fleet.args([
        "-dt",
        "uniqueId",
        "-du",
        "1",
        "-pc",
        "IdRecorder",
        "-pa",
        &args,
    ]);
    fleet.arg("-pf").arg(&processor);
    on_loopback(&mut fleet);
    let out = host.run(fleet, LIMIT);
    let context = format!(
        "pvapy-hpc-consumer:\n{}\n{}\nsimdet: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(dir.path().join("simdet.log")).unwrap_or_default()
    );
    let shares: BTreeMap<String, Vec<i64>> = (1..=MEMBERS)
        .map(|k| {
            let file = dir.path().join(format!("ids-{k}"));
            let ids = std::fs::read_to_string(&file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            (format!("consumer {k}"), ids)
        })
        .collect();
    assert_shared_once(&shares, FRAMES, &context);
}

/// The first `uniqueId` anywhere in a JSON value.
fn unique_id(v: &Value) -> Option<i64> {
    match v {
        Value::Object(map) => map
            .get("uniqueId")
            .and_then(Value::as_i64)
            .or_else(|| map.values().find_map(unique_id)),
        Value::Array(items) => items.iter().find_map(unique_id),
        _ => None,
    }
}

#[test]
fn pvabridge_clients_share_a_pvapy_servers_frames() {
    const EACH: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    let (host, _other) = host(205);
    let server = python().with_file_name("pvapy-ad-sim-server");
    let mut sim = host.command(&server);
    sim.args([
        "-cn", "dd:pvapy", "-nx", "8", "-ny", "8", "-fps", "20", "-rt", "15",
    ]);
    sim.args(["-std", "4", "-shd", "0", "-dc"]);
    on_loopback(&mut sim);
    let log = std::fs::File::create(dir.path().join("pvapy.log")).unwrap();
    sim.stdout(log.try_clone().unwrap()).stderr(log);
    let _sim = Running(sim.spawn().expect("start pvapy-ad-sim-server"));

    // Each takes its initial value and then its share of the first MEMBERS * EACH frames.
    let monitors: Vec<_> = (0..MEMBERS)
        .map(|k| {
            let mut monitor = host.command(BINARY);
            monitor.args(["monitor", "--json", "-#", "1"]);
            monitor.args(["-r", "field(_[pydistributor=trigger:uniqueId;updates:1])"]);
            monitor.args(["-n", &(EACH + 1).to_string(), "dd:pvapy"]);
            // pvAccessCPP's server listens for searches on the host's interfaces, not on its
            // loopback: search the host's address.
            monitor
                .env("EPICS_PVA_ADDR_LIST", "10.205.1.1")
                .env("EPICS_PVA_AUTO_ADDR_LIST", "NO");
            let out = dir.path().join(format!("m{k}.out"));
            monitor
                .stdout(std::fs::File::create(&out).unwrap())
                .stderr(std::fs::File::create(dir.path().join(format!("m{k}.log"))).unwrap());
            (
                out,
                Running(monitor.spawn().expect("start pvabridge monitor")),
            )
        })
        .collect();
    let deadline = std::time::Instant::now() + LIMIT;
    let mut shares = BTreeMap::new();
    for (k, (out, mut running)) in monitors.into_iter().enumerate() {
        loop {
            if running.0.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "monitor {k} never finished: {}\n{}\npvapy: {}",
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(dir.path().join(format!("m{k}.log"))).unwrap_or_default(),
                std::fs::read_to_string(dir.path().join("pvapy.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let ids: Vec<i64> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| unique_id(&v))
            .skip(1)
            .collect();
        let log = std::fs::read_to_string(dir.path().join(format!("m{k}.log"))).unwrap_or_default();
        let pvapy = std::fs::read_to_string(dir.path().join("pvapy.log")).unwrap_or_default();
        assert_eq!(
            ids.len(),
            EACH,
            "monitor {k}: {ids:?}\n{log}\npvapy: {pvapy}"
        );
        shares.insert(format!("monitor {k}"), ids);
    }
    let context = std::fs::read_to_string(dir.path().join("pvapy.log")).unwrap_or_default();
    assert_shared_once(&shares, (MEMBERS * EACH) as i64, &context);
}
