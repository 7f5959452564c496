//! One run, many consumers: four `pvabridge workflow consume --member K/4` processes, started by
//! one DM stage, share a detector stream behind `pvabridge relay --distribute 4`. The run is READY
//! once all four are, its books are the group's sums, and every frame is booked by exactly one
//! member (checked by uniqueId in the members' statistics files). The same with the members
//! asking the detector's own (pvabridge) server for their shares (`--distributor`, pvDatabase's
//! data distributor) instead of a relay. With one member killed during acquisition the run ends
//! FAILED (the stage fails when a member does), Message names the lost member, and
//! FramesReceived + FramesMissed still equal the frames expected. And members on two hosts
//! (network namespaces), with default configuration.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::handshake::EmbeddedBridge;
use common::handshake::{dm_client, run_test, slot, BINARY, WAIT};
use common::{first_line, spawn_server};
use coordinator::{Command as Handshake, HandshakeClient, RunRequest, State};
use dm::{Stage, Workflow};
use pva::client::Context;
use serde_json::Value;

const MEMBERS: u32 = 4;
const FRAMES: u64 = 48;

/// The processes of one run: bridge, detector and distributing relay, each on its own UDP port.
struct Group {
    bridge: EmbeddedBridge,
    _detector: common::Running,
    _relay: common::Running,
    detector: Context,
    slot: HandshakeClient,
    dir: tempfile::TempDir,
}

impl Group {
    /// Start everything; the stage starts the members (their pids in `DIR/mK.pid`) and fails
    /// when any of them fails. The members read the relay's channel, or with `pydistributor`
    /// ask the detector's server itself for their shares (pvDatabase's data distributor).
    async fn start(name: &str, bridge_options: &[&str], pydistributor: bool) -> Group {
        let dir = tempfile::tempdir().unwrap();
        let ports = [
            common::free_udp_port(),
            common::free_udp_port(),
            common::free_udp_port(),
        ];
        let [bridge_udp, detector_udp, relay_udp] = ports;
        let prefix = format!("so:{name}:");
        let det_pv = format!("so:{name}:det:Image");
        let dist_pv = format!("so:{name}:dist");

        let bridge = EmbeddedBridge::start(dir.path(), &prefix, bridge_udp, &ports, |serve| {
            serve.args(bridge_options).env("RUST_LOG", "info");
        });

        let mut simdet = Command::new(BINARY);
        simdet.args([
            "simdet",
            "--pv",
            &det_pv,
            "--trigger",
            &format!("{det_pv}:Acquire"),
        ]);
        simdet.args(["--nx", "8", "--ny", "8", "--fps", "60"]);
        simdet.args(["--frames", &FRAMES.to_string()]);
        let detector = spawn_server(simdet, detector_udp, &dir.path().join("simdet.log"), &ports);
        let mut relay = Command::new(BINARY);
        relay.args(["relay", "--from", &det_pv, "--as", &dist_pv, "--quiet"]);
        relay.args(["--distribute", &MEMBERS.to_string()]);
        let relay = spawn_server(relay, relay_udp, &dir.path().join("relay.log"), &ports);

        let d = dir.path().display();
        let members = (0..MEMBERS)
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let share = if pydistributor {
            "--distributor 'trigger:uniqueId;updates:1'"
        } else {
            ""
        };
        let command = format!(
            "for k in {members}; do \
               '{BINARY}' workflow consume --handshake $handshakePrefix --member $k/{MEMBERS} {share} \
                 --results '{d}/m'$k --drain-timeout 3s --progress-period 200ms --max-wait 60s --json \
                 > '{d}/m'$k.json 2> '{d}/m'$k.log & echo $! > '{d}/m'$k.pid; \
             done; st=0; \
             for k in {members}; do wait $(cat '{d}/m'$k.pid) || st=$?; done; exit $st"
        );
        let dm = bridge.dm();
        dm.add_workflow(&consume_workflow(name, command))
            .await
            .unwrap();

        let mut config = pva::ClientConfig::isolated(([127, 0, 0, 1], detector_udp).into());
        config.addr_list.push(([127, 0, 0, 1], relay_udp).into());
        let detector_ctx = Context::new(config).unwrap();
        let slot = slot(bridge_udp, &prefix).with_timeout(WAIT);
        let mut request = RunRequest::new(name);
        request.expected_frames = Some(FRAMES);
        request.data_channel = Some(if pydistributor { det_pv } else { dist_pv });
        request.run_uid = Some(format!("uid-{name}"));
        request.consumers = Some(MEMBERS);
        slot.start(&request).await.unwrap();
        Group {
            bridge,
            _detector: detector,
            _relay: relay,
            detector: detector_ctx,
            slot,
            dir,
        }
    }

    /// DONE, the sums right, and by ids every frame booked by exactly one member.
    async fn done_with_every_frame_once(&self) {
        let end = self.slot.wait_for_state(&[State::Done], WAIT).await;
        assert_eq!(end, Ok(State::Done), "{}", self.log());
        let status = self.slot.status().await.unwrap();
        assert_eq!(status.frames_expected, FRAMES as i64);
        assert_eq!(status.frames_received, FRAMES as i64, "{}", status.message);
        assert_eq!(status.frames_missed, 0);
        assert_eq!(status.progress, FRAMES as i64);
        assert_eq!(
            status.workflow_pvs.len(),
            MEMBERS as usize,
            "{:?}",
            status.workflow_pvs
        );

        // By ids: every frame booked by exactly one member, and each member had a share.
        let mut seen = BTreeMap::<i64, u32>::new();
        for k in 0..MEMBERS {
            let ids = self.member_ids(k);
            assert!(!ids.is_empty(), "member {k} got no frame");
            let summary: Value = serde_json::from_str(
                std::fs::read_to_string(self.path(&format!("m{k}.json")))
                    .unwrap()
                    .trim(),
            )
            .unwrap();
            assert_eq!(
                summary["stream"]["received"],
                ids.len() as u64,
                "member {k}"
            );
            for id in ids {
                if let Some(other) = seen.insert(id, k) {
                    panic!("frame {id} booked by members {other} and {k}");
                }
            }
        }
        let ids: BTreeSet<i64> = seen.keys().copied().collect();
        let first = *ids.first().unwrap();
        assert_eq!(
            ids,
            (first..first + FRAMES as i64).collect(),
            "every frame once"
        );
    }

    fn log(&self) -> String {
        self.bridge.log()
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Member `k`'s process id, once the stage started it.
    async fn member_pid(&self, k: u32) -> i32 {
        let file = self.path(&format!("m{k}.pid"));
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(pid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                return pid;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "member {k} never started"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// READY once every member is, then ACQ_STARTED; `during` runs while the detector sends;
    /// ACQ_DONE once it sent every frame.
    async fn acquire(&self, during: impl std::future::Future<Output = ()>) {
        let ready = self.slot.wait_for_state(&[State::Ready], WAIT).await;
        assert_eq!(ready, Ok(State::Ready), "{}", self.log());
        // Status follows State: give it a moment.
        let all_ready = format!("every consumer is ready ({MEMBERS} of {MEMBERS})");
        let mut message = String::new();
        for _ in 0..40 {
            message = self.slot.status().await.unwrap().message;
            if message.contains(&all_ready) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(message.contains(&all_ready), "{message}");
        self.slot.command(Handshake::AcqStarted).await.unwrap();
        let acquire = format!("{}det:Image:Acquire", self.slot.prefix());
        self.detector
            .put(&acquire)
            .set("value", 1i32)
            .exec()
            .await
            .unwrap();
        during.await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.detector.get(&acquire).exec().await.unwrap();
            if value.get("value").and_then(|v| v.as_i64()) == Some(0) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the detector never finished"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.slot.command(Handshake::AcqDone).await.unwrap();
    }

    /// The uniqueIds member `k` wrote statistics of.
    fn member_ids(&self, k: u32) -> Vec<i64> {
        let csv = self.path(&format!("m{k}")).join("frame-stats.csv");
        std::fs::read_to_string(&csv)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|row| row.split(',').next()?.parse().ok())
            .collect()
    }
}

/// The members are the DM job's children, which outlive the bridge: a failed test stops them too.
/// A workflow `name` of one stage, 01-CONSUME, that runs `command`.
fn consume_workflow(name: &str, command: String) -> Workflow {
    Workflow {
        name: name.into(),
        stages: BTreeMap::from([(
            "01-CONSUME".to_string(),
            Stage {
                command,
                ..Stage::default()
            },
        )]),
        ..Workflow::default()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for k in 0..MEMBERS {
            if let Ok(pid) = std::fs::read_to_string(self.path(&format!("m{k}.pid"))) {
                // Usually the member ended already: kill's "No such process" is not news.
                let _ = Command::new("kill")
                    .arg(pid.trim())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

/// A group `name` (its members asking the detector's server for their shares with
/// `from_server`) acquires undisturbed and ends DONE with every frame booked once.
async fn every_frame_booked_once(name: &str, from_server: bool) {
    let group = Group::start(name, &[], from_server).await;
    group.acquire(async {}).await;
    group.done_with_every_frame_once().await;
}

#[test]
fn four_members_share_a_run_and_book_every_frame_exactly_once() {
    run_test(
        Duration::from_secs(80),
        every_frame_booked_once("all", false),
    );
}

#[test]
fn four_members_asking_the_detectors_server_for_their_shares_book_every_frame_once() {
    run_test(
        Duration::from_secs(80),
        every_frame_booked_once("pyd", true),
    );
}

#[test]
fn a_member_killed_during_acquisition_is_named_and_its_frames_count_missed() {
    run_test(Duration::from_secs(80), async {
        let group = Group::start("kill", &["--member-silence", "1s"], false).await;
        let victim = group.member_pid(2).await;
        group
            .acquire(async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let killed = Command::new("kill")
                    .args(["-KILL", &victim.to_string()])
                    .status()
                    .unwrap();
                assert!(killed.success(), "kill member 2 ({victim})");
            })
            .await;
        let end = group.slot.wait_for_state(&[State::Failed], WAIT).await;
        assert_eq!(end, Ok(State::Failed), "{}", group.log());
        let status = group.slot.status().await.unwrap();
        assert!(
            status.message.contains("member 2 lost"),
            "{}",
            status.message
        );
        for k in [0, 1, 3] {
            assert!(
                !status.message.contains(&format!("member {k} lost")),
                "{}",
                status.message
            );
        }
        // The group's books add up: what the members reported plus what no member reported
        // (the frames the killed member got after its last report, often some, may be none).
        assert_eq!(
            status.frames_received + status.frames_missed,
            FRAMES as i64,
            "{status:?}"
        );
        // The survivors shared the rest, each frame once, and went on after the loss.
        let mut survivors = BTreeSet::new();
        for k in [0, 1, 3] {
            for id in group.member_ids(k) {
                assert!(survivors.insert(id), "frame {id} booked twice");
            }
        }
        assert!(survivors.len() as i64 <= status.frames_received);
        // Once it was gone the relay gave the others every frame: the run's tail is whole.
        let last = *survivors.last().unwrap();
        let tail: BTreeSet<i64> = (last - 9..=last).collect();
        assert!(tail.is_subset(&survivors), "the last frames: {survivors:?}");
    });
}

/// Members on two hosts (network namespaces made here), everything with default configuration:
/// the bridge (with its embedded DM), the detector, the relay and members 0 and 1 on host A;
/// members 2 and 3 on host B, which A's stage starts there (`ip netns exec`, as a site's stage
/// would start them with ssh or its batch system). They find the bridge and the relay by the
/// broadcast of their host's network.
#[test]
fn members_on_two_hosts_share_a_run() {
    use common::netns::{link, Netns};

    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let (a, b) = (Netns::new(), Netns::new());
    link(&a, "10.207.1.1/24", &b, "10.207.1.2/24");
    let mut serve = a.command(BINARY);
    serve
        .args([
            "serve",
            "--json",
            "--prefix",
            "so2:",
            "--poll-period",
            "0.2",
        ])
        .arg("--embedded-dm")
        .arg(path("dm"));
    let mut bridge = a.spawn(serve, &path("bridge.log"));
    let info: Value = serde_json::from_str(&first_line(&mut bridge)).expect("startup JSON");
    let mut simdet = a.command(BINARY);
    simdet.args([
        "simdet",
        "--pv",
        "so2:det:Image",
        "--trigger",
        "so2:det:Acquire",
    ]);
    simdet.args([
        "--nx",
        "8",
        "--ny",
        "8",
        "--fps",
        "60",
        "--frames",
        &FRAMES.to_string(),
    ]);
    let _detector = a.spawn(simdet, &path("simdet.log"));
    let mut relay = a.command(BINARY);
    relay.args([
        "relay",
        "--from",
        "so2:det:Image",
        "--as",
        "so2:dist",
        "--quiet",
    ]);
    relay.args(["--distribute", &MEMBERS.to_string()]);
    let _relay = a.spawn(relay, &path("relay.log"));

    let d = dir.path().display();
    let member = |k: u32, host: &str| {
        format!(
            "{host} '{BINARY}' workflow consume --handshake $handshakePrefix --member {k}/{MEMBERS} \
             --results '{d}/m{k}' --drain-timeout 3s --progress-period 200ms --max-wait 60s \
             > '{d}/m{k}.json' 2> '{d}/m{k}.log' & pids=\"$pids $!\"; "
        )
    };
    let on_b = format!("ip netns exec {}", b.name());
    let command = format!(
        "{}{}{}{}st=0; for p in $pids; do wait $p || st=$?; done; exit $st",
        member(0, ""),
        member(1, ""),
        member(2, &on_b),
        member(3, &on_b)
    );
    let logs = || {
        ["bridge.log", "relay.log", "m2.log", "m3.log"]
            .iter()
            .map(|n| {
                format!(
                    "--- {n}:\n{}",
                    std::fs::read_to_string(path(n)).unwrap_or_default()
                )
            })
            .collect::<String>()
    };

    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                a.block_on(async {
                    tokio::time::timeout(Duration::from_secs(60), async {
                        let dm = dm_client(
                            info["dmUrl"].as_str().unwrap(),
                            Path::new(info["dmLoginFile"].as_str().unwrap()),
                        );
                        dm.add_workflow(&consume_workflow("hosts", command))
                            .await
                            .map_err(|e| e.to_string())?;
                        let config = pva::ClientConfig::from_lookup(&|_| None).unwrap();
                        let ctx = Context::new(config).unwrap();
                        let slot = HandshakeClient::new(ctx.clone(), "so2:").with_timeout(WAIT);
                        let mut request = RunRequest::new("hosts");
                        request.expected_frames = Some(FRAMES);
                        request.data_channel = Some("so2:dist".into());
                        request.consumers = Some(MEMBERS);
                        common::handshake::try_start_acquiring(&slot, &request, WAIT).await?;
                        ctx.put("so2:det:Acquire")
                            .set("value", 1i32)
                            .exec()
                            .await
                            .map_err(|e| e.to_string())?;
                        common::handshake::wait_for_value(
                            &ctx,
                            "so2:det:Acquire",
                            "value",
                            0,
                            WAIT,
                        )
                        .await?;
                        slot.command(Handshake::AcqDone)
                            .await
                            .map_err(|e| e.to_string())?;
                        let end = slot.wait_for_state(&[State::Done], WAIT).await;
                        let status = slot.status().await.map_err(|e| e.to_string())?;
                        Ok((end, status.frames_received, status.frames_missed))
                    })
                    .await
                    .unwrap_or_else(|_| Err("the run did not end in time".to_string()))
                })
            })
            .join()
            .expect("the Bluesky thread")
    });
    assert_eq!(
        outcome,
        Ok((Ok(State::Done), FRAMES as i64, 0)),
        "{}",
        logs()
    );
    // Each host's members had their share, and every frame was booked once.
    let mut seen = BTreeSet::new();
    for k in 0..MEMBERS {
        let csv = path(&format!("m{k}")).join("frame-stats.csv");
        let rows = std::fs::read_to_string(&csv).unwrap_or_default();
        let ids: Vec<i64> = rows
            .lines()
            .skip(1)
            .filter_map(|row| row.split(',').next()?.parse().ok())
            .collect();
        assert!(!ids.is_empty(), "member {k} got no frame\n{}", logs());
        for id in ids {
            assert!(seen.insert(id), "frame {id} booked twice");
        }
    }
    assert_eq!(seen.len() as u64, FRAMES);
}
