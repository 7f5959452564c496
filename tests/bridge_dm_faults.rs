//! The bridge under DM faults, over real processes: `pvabridge serve --dm-url` talks to a real DM
//! service (the embedded one, run in this test process) through a fault-injecting HTTP proxy
//! whose mode the test switches during a run: pass-through, every request answered 500, a 500
//! after DM did the work, answers slower than the bridge's DM timeout, the service down. DM's
//! sessions are also dropped (DM forgets them, as when it restarts). The bridge must keep the
//! run and its one job, say what is wrong in `Message` while it lasts, and end in a final state.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::handshake::*;
use coordinator::{Command, HandshakeClient, State};
use dm::{ClientConfig, DmClient, JobQuery, JobStatus, RunningService, ServiceConfig};
use pva::client::{Context, MonitorEvent};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The bound of each whole test.
const TEST_LIMIT: Duration = Duration::from_secs(45);
/// How long the proxy holds a request in [`Mode::Slow`]: longer than [`DM_TIMEOUT`].
const SLOW_DELAY: Duration = Duration::from_secs(2);
/// The bridge's `--dm-timeout`.
const DM_TIMEOUT: &str = "0.5";
const USERS: &str = "dmuser|secret\n";

/// How the proxy treats what comes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Requests go to DM and its answers come back.
    PassThrough,
    /// Every request is answered HTTP 500 without reaching DM.
    ServerError,
    /// Requests reach DM, but its answers are replaced by HTTP 500 (a gateway failing after DM
    /// did the work).
    ServerErrorAfterDm,
    /// Requests reach DM after [`SLOW_DELAY`].
    Slow,
    /// New connections are closed at once and open ones are cut.
    Down,
    /// Requests go to DM, and `errorMessage` is left out of its answers (a DM that does not
    /// give one: the reason is then only in the failed stage's child processes).
    WithoutErrorMessage,
}

/// One request the proxy answered.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    path: String,
    /// The HTTP status the client got.
    status: u16,
    /// DM's `Dm-Status-Code`, when DM answered.
    dm_code: Option<String>,
    /// The request reached DM.
    reached_dm: bool,
}

/// What the proxy's HTTP side shares.
struct ProxyInner {
    mode: watch::Receiver<Mode>,
    dm: String,
    http: reqwest::Client,
    exchanges: Mutex<Vec<Exchange>>,
    connections_closed: AtomicUsize,
}

/// A fault-injecting HTTP proxy in front of DM: a TCP gate (for [`Mode::Down`]) before an HTTP
/// server that forwards to DM (for the other modes).
struct FaultProxy {
    url: String,
    mode: watch::Sender<Mode>,
    inner: Arc<ProxyInner>,
}

impl FaultProxy {
    async fn start(dm: SocketAddr) -> FaultProxy {
        let (mode, mode_receiver) = watch::channel(Mode::PassThrough);
        let inner = Arc::new(ProxyInner {
            mode: mode_receiver.clone(),
            dm: format!("http://{dm}"),
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            exchanges: Mutex::new(Vec::new()),
            connections_closed: AtomicUsize::new(0),
        });
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http_listener.local_addr().unwrap();
        let router = Router::new().fallback(relay).with_state(inner.clone());
        tokio::spawn(async move { axum::serve(http_listener, router).await });
        let gate = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", gate.local_addr().unwrap());
        tokio::spawn(run_gate(gate, http_addr, mode_receiver, inner.clone()));
        FaultProxy { url, mode, inner }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.inner.exchanges.lock().unwrap().clone()
    }

    /// The job starts the proxy was asked for, and those of them that reached DM.
    fn starts(&self) -> (usize, usize) {
        let starts: Vec<Exchange> = self
            .exchanges()
            .into_iter()
            .filter(|e| e.path.ends_with("/startProcessingJob"))
            .collect();
        let reached = starts.iter().filter(|e| e.reached_dm).count();
        (starts.len(), reached)
    }

    fn logins(&self) -> usize {
        self.exchanges()
            .iter()
            .filter(|e| e.path == "/dm/login" && e.reached_dm)
            .count()
    }
}

async fn run_gate(
    gate: TcpListener,
    http: SocketAddr,
    mode: watch::Receiver<Mode>,
    inner: Arc<ProxyInner>,
) {
    while let Ok((mut inbound, _)) = gate.accept().await {
        let mut mode = mode.clone();
        if *mode.borrow() == Mode::Down {
            inner.connections_closed.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(http).await else {
                return;
            };
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = mode.wait_for(|mode| *mode == Mode::Down) => {}
            }
        });
    }
}

fn server_error() -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
}

/// The proxy's HTTP side: answer by the mode, forwarding to DM when the mode lets requests
/// through.
async fn relay(AxumState(inner): AxumState<Arc<ProxyInner>>, request: Request) -> Response {
    let mode = *inner.mode.borrow();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let mut exchange = Exchange {
        method,
        path,
        status: 500,
        dm_code: None,
        reached_dm: false,
    };
    let response = match mode {
        Mode::ServerError => server_error(),
        Mode::Slow => {
            tokio::time::sleep(SLOW_DELAY).await;
            forward(&inner, request, &mut exchange).await
        }
        Mode::ServerErrorAfterDm => {
            forward(&inner, request, &mut exchange).await;
            server_error()
        }
        Mode::PassThrough | Mode::Down => forward(&inner, request, &mut exchange).await,
        Mode::WithoutErrorMessage => {
            let response = forward(&inner, request, &mut exchange).await;
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, 1 << 24)
                .await
                .unwrap_or_default();
            let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(mut json) => {
                    let objects: Vec<&mut serde_json::Value> = match &mut json {
                        serde_json::Value::Array(items) => items.iter_mut().collect(),
                        one => vec![one],
                    };
                    for object in objects {
                        if let Some(map) = object.as_object_mut() {
                            map.remove("errorMessage");
                        }
                    }
                    Body::from(json.to_string())
                }
                Err(_) => Body::from(bytes),
            };
            Response::from_parts(parts, body)
        }
    };
    exchange.status = response.status().as_u16();
    inner.exchanges.lock().unwrap().push(exchange);
    response
}

const HOP_BY_HOP: [&str; 4] = ["host", "connection", "content-length", "transfer-encoding"];

async fn forward(inner: &ProxyInner, request: Request, exchange: &mut Exchange) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut outgoing = inner
        .http
        .request(parts.method, format!("{}{path_and_query}", inner.dm))
        .body(body);
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            outgoing = outgoing.header(name, value);
        }
    }
    let Ok(reply) = outgoing.send().await else {
        return server_error();
    };
    exchange.reached_dm = true;
    exchange.dm_code = reply
        .headers()
        .get("Dm-Status-Code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut response = Response::builder().status(reply.status());
    for (name, value) in reply.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response = response.header(HeaderName::from(name), value);
        }
    }
    let bytes = reply.bytes().await.unwrap_or_default();
    response.body(Body::from(bytes)).unwrap()
}

/// Every value the slot's `Message` PV takes, in order, as a monitor sees them.
#[derive(Clone)]
struct Messages {
    seen: Arc<Mutex<Vec<String>>>,
}

impl Messages {
    fn watch(udp: u16, slot: &HandshakeClient) -> Messages {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let name = slot.pv_name("Message");
        let config = pva::ClientConfig::isolated(([127, 0, 0, 1], udp).into());
        let log = seen.clone();
        tokio::spawn(async move {
            let ctx = Context::new(config).expect("client");
            let mut monitor = ctx.monitor(&name).exec().expect("monitor");
            while let Some(event) = monitor.recv().await {
                if let MonitorEvent::Update(update) = event {
                    if let Some(text) = update.value.get("value").and_then(|v| v.as_str()) {
                        let mut log = log.lock().unwrap();
                        if log.last().map(String::as_str) != Some(text) {
                            log.push(text.to_string());
                        }
                    }
                }
            }
        });
        Messages { seen }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Wait until a message from the `from`-th on satisfies `wanted`; return it.
    async fn wait_for(&self, from: usize, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found = {
                let seen = self.seen.lock().unwrap();
                seen[from.min(seen.len())..]
                    .iter()
                    .find(|m| wanted(m))
                    .cloned()
            };
            if let Some(message) = found {
                return message;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Message never showed {what}; it showed {:#?}",
                self.seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A DM service, the proxy in front of it, and `pvabridge serve` behind the proxy.
struct Setup {
    dir: tempfile::TempDir,
    udp: u16,
    service: RunningService,
    dm: DmClient,
    proxy: FaultProxy,
    bridge: Bridge,
    slot: HandshakeClient,
}

impl Setup {
    /// Everything for a run slot `prefix`; `flags` go to `pvabridge serve`.
    async fn start(prefix: &str, flags: &[&str]) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let udp = common::free_udp_port();
        let users = dir.path().join("users");
        std::fs::write(&users, USERS).unwrap();
        let listen = "127.0.0.1:0".parse().unwrap();
        let service = dm::service::start(ServiceConfig::new(listen, dir.path().join("dm"), &users))
            .await
            .expect("DM service");
        let dm = DmClient::new(ClientConfig::new(service.url(), "dmuser", "secret")).unwrap();
        let proxy = FaultProxy::start(service.local_addr()).await;
        let users_arg = users.display().to_string();
        let mut args = vec![
            "--dm-url",
            proxy.url.as_str(),
            "--dm-login-file",
            users_arg.as_str(),
            "--dm-timeout",
            DM_TIMEOUT,
            "--dm-read-retries",
            "1",
        ];
        args.extend_from_slice(flags);
        let bridge = serve(dir.path(), udp, prefix, &args, "bridge.log");
        let deadline = tokio::time::Instant::now() + WAIT;
        while proxy.logins() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the bridge did not log in to DM at startup: {}",
                bridge.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let slot = slot(udp, prefix);
        Setup {
            dir,
            udp,
            service,
            dm,
            proxy,
            bridge,
            slot,
        }
    }

    /// A workflow whose stage commands find the bridge on this test's loopback ports: the DM
    /// service runs in this process, so its stages get the EPICS settings in their command.
    async fn add_workflow(&self, name: &str, stages: &[(&str, &str)]) {
        let env = format!(
            "export EPICS_PVA_ADDR_LIST=127.0.0.1 EPICS_PVA_AUTO_ADDR_LIST=NO \
             EPICS_PVA_BROADCAST_PORT={} EPICS_PVA_NAME_SERVERS= ; ",
            self.udp
        );
        let stages: Vec<(&str, String)> = stages
            .iter()
            .map(|(key, command)| (*key, format!("{env}{command}")))
            .collect();
        let stages: Vec<(&str, &str)> = stages.iter().map(|(k, c)| (*k, c.as_str())).collect();
        self.dm
            .add_workflow(&workflow(name, &stages))
            .await
            .expect("add workflow");
    }

    fn marker(&self) -> PathBuf {
        self.dir.path().join("go")
    }

    async fn jobs_in_dm(&self) -> usize {
        self.dm.list_jobs(&JobQuery::default()).await.unwrap().len()
    }

    /// The slot is still in `state` with the job `job_id`.
    async fn assert_kept(&self, state: State, job_id: &str, during: &str) {
        let status = self.slot.status().await.unwrap();
        assert_eq!(status.state, state, "{during}: {}", self.bridge.log());
        assert_eq!(status.job_id, job_id, "{during}: the same job");
    }

    async fn stop(self) {
        drop(self.bridge);
        self.service.shutdown().await;
    }
}

/// A stage that reports ready, waits for DRAINING, reports every frame, then waits for the
/// test's marker file.
fn stream_then_wait() -> String {
    stage_command(&["workflow ready", "workflow wait-state DRAINING --max-wait 30", "workflow progress $expectedFrames", "i=0 && while [ ! -f $markerFile ] && [ $i -lt 400 ]; do sleep 0.1; i=$((i+1)); done && test -f $markerFile"])
}

fn marker_request(workflow: &str, run_uid: &str, marker: &Path) -> coordinator::RunRequest {
    let mut request = request(workflow, run_uid);
    request.expected_frames = Some(3);
    request
        .args_dict
        .insert("markerFile".into(), marker.display().to_string().into());
    request
}

const OUTAGE: &str = "DM unreachable";

/// While the DM stage runs (PROCESSING), DM answers 500s, then answers too slowly, then forgets
/// its sessions, then is down: the bridge keeps the run and its one job, shows each fault in
/// `Message` while it lasts, logs in again, and follows the job to DONE once DM is back.
#[test]
fn dm_faults_during_processing_keep_the_run_and_its_one_job_to_done() {
    run_test(TEST_LIMIT, async {
        let prefix = "faults:keep:";
        let setup = Setup::start(prefix, &["--dm-lost-timeout", "30"]).await;
        setup
            .add_workflow("steady", &[("01-STREAM", &stream_then_wait())])
            .await;
        let slot = &setup.slot;
        let messages = Messages::watch(setup.udp, slot);
        start_acquiring(slot, &marker_request("steady", "uid-keep", &setup.marker())).await;
        slot.command(Command::AcqDone).await.unwrap();
        assert_eq!(
            slot.wait_for_state(&[State::Processing], WAIT).await,
            Ok(State::Processing),
            "{}",
            setup.bridge.log()
        );
        let job_id = slot.status().await.unwrap().job_id;
        assert!(!job_id.is_empty());

        setup.proxy.set(Mode::ServerError);
        let from = messages.count();
        let shown = messages
            .wait_for(from, "the 500s", |m| {
                m.contains(OUTAGE) && m.contains("HTTP 500")
            })
            .await;
        assert!(
            shown.contains("all 3 frames"),
            "the run's own news stays: {shown}"
        );
        setup
            .assert_kept(State::Processing, &job_id, "DM answering 500")
            .await;

        setup.proxy.set(Mode::Slow);
        let from = messages.count();
        messages
            .wait_for(from, "the timeouts", |m| {
                m.contains(OUTAGE) && m.contains("did not answer")
            })
            .await;
        setup
            .assert_kept(State::Processing, &job_id, "DM slower than the timeout")
            .await;

        setup.proxy.set(Mode::PassThrough);
        let from = messages.count();
        messages
            .wait_for(from, "DM back", |m| !m.contains(OUTAGE))
            .await;
        let logins = setup.proxy.logins();
        let exchanges_before = setup.proxy.exchanges().len();
        setup.service.expire_sessions();
        let deadline = tokio::time::Instant::now() + WAIT;
        let renewed = loop {
            let after = setup.proxy.exchanges()[exchanges_before..].to_vec();
            let refused = after
                .iter()
                .position(|e| e.dm_code.as_deref() == Some("12"));
            let polled_again = refused.and_then(|at| {
                after[at..]
                    .iter()
                    .position(|e| e.method == "GET" && e.status == 200 && e.path.contains(&job_id))
            });
            if polled_again.is_some() {
                break after;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no poll after the session was dropped: {after:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(
            setup.proxy.logins() > logins,
            "the bridge logged in again: {renewed:#?}"
        );
        setup
            .assert_kept(State::Processing, &job_id, "after DM dropped the session")
            .await;

        setup.proxy.set(Mode::Down);
        let from = messages.count();
        messages
            .wait_for(from, "DM down", |m| {
                m.contains(OUTAGE) && m.contains("could not reach DM")
            })
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        setup
            .assert_kept(State::Processing, &job_id, "DM down")
            .await;
        assert!(setup.proxy.inner.connections_closed.load(Ordering::SeqCst) > 0);

        setup.proxy.set(Mode::PassThrough);
        let from = messages.count();
        messages
            .wait_for(from, "DM back", |m| !m.contains(OUTAGE))
            .await;
        std::fs::write(setup.marker(), "").unwrap();
        assert_eq!(
            slot.wait_for_state(&[State::Done], WAIT).await,
            Ok(State::Done),
            "{}",
            setup.bridge.log()
        );
        let status = slot.status().await.unwrap();
        assert_eq!(status.job_id, job_id, "the same job to the end");
        assert_eq!(status.job_status, "done");
        assert!(!status.message.contains(OUTAGE), "{}", status.message);
        assert_eq!(setup.proxy.starts(), (1, 1), "one start, no second job");
        assert_eq!(setup.jobs_in_dm().await, 1);
        assert!(
            setup.bridge.log().contains("trying again in"),
            "polls were retried"
        );
        eprintln!("Message showed: {:#?}", messages.seen.lock().unwrap());
        setup.stop().await;
    });
}

/// DM down longer than `--dm-lost-timeout` during ACQUIRING fails the run with the reason in
/// `Message`; the job the bridge can no longer follow is stopped once DM is back, however long
/// that takes.
#[test]
fn dm_down_past_the_limit_fails_the_run_and_its_job_is_stopped_when_dm_returns() {
    run_test(TEST_LIMIT, async {
        let prefix = "faults:lost:";
        let setup = Setup::start(prefix, &["--dm-lost-timeout", "2"]).await;
        setup
            .add_workflow(
                "endless",
                &[("01-STREAM", &stage_command(&["workflow ready", "sleep 30"]))],
            )
            .await;
        let slot = &setup.slot;
        let states = watch_states(setup.udp, slot);
        start_acquiring(slot, &request("endless", "uid-lost")).await;
        let job_id = slot.status().await.unwrap().job_id;

        setup.proxy.set(Mode::Down);
        let end = slot.wait_for_state(&[State::Failed], WAIT).await;
        assert_eq!(end, Ok(State::Failed), "{}", setup.bridge.log());
        let status = slot.status().await.unwrap();
        assert!(
            status.message.contains("lost contact with DM for")
                && status.message.contains("could not reach DM"),
            "the reason is in Message: {}",
            status.message
        );
        assert_eq!(status.job_id, job_id);
        let states = states.await.unwrap();
        assert_eq!(states.last(), Some(&State::Failed), "{states:?}");
        assert!(states.contains(&State::Acquiring), "{states:?}");

        // Longer than three stop attempts two seconds apart.
        tokio::time::sleep(Duration::from_secs(5)).await;
        setup.proxy.set(Mode::PassThrough);
        let job = job_until(&setup.dm, &job_id, |job| job.status.is_final()).await;
        assert_eq!(
            job.status,
            JobStatus::Aborted,
            "the job is stopped once DM is back: {}",
            setup.bridge.log()
        );
        let run = catalog_run(&setup.dm, "uid-lost").await;
        assert_eq!(run.metadata["handshake"]["finalState"], "FAILED");
        assert_eq!(setup.proxy.starts(), (1, 1));
        setup.stop().await;
    });
}

/// A DM that reports a failed job without `errorMessage`: Message names the failed stage, its
/// last child process's exit status and the tail of its stdErr, where a real DM keeps the reason.
#[test]
fn a_stage_failing_without_error_message_is_explained_from_its_child_process() {
    run_test(TEST_LIMIT, async {
        let prefix = "faults:noerr:";
        let setup = Setup::start(prefix, &[]).await;
        setup.proxy.set(Mode::WithoutErrorMessage);
        setup
            .add_workflow(
                "breaks",
                &[(
                    "01-STREAM",
                    &stage_command(&["workflow ready", "workflow wait-state ACQUIRING --max-wait 30", "echo 'opening /data/scan' >&2 && echo 'disk quota exceeded on /data' >&2 && exit 4"]),
                )],
            )
            .await;
        let slot = &setup.slot;
        start_acquiring(slot, &request("breaks", "uid-noerr")).await;
        let end = slot.wait_for_state(&[State::Failed], WAIT).await;
        assert_eq!(end, Ok(State::Failed), "{}", setup.bridge.log());
        let message = slot.status().await.unwrap().message;
        for words in [
            "failed in stage 01-STREAM",
            "child process 0 ended with exit status 4",
            "stdErr: opening /data/scan | disk quota exceeded on /data",
        ] {
            assert!(message.contains(words), "{words}: {message}");
        }
        let job = setup
            .dm
            .get_job(&slot.status().await.unwrap().job_id)
            .await
            .unwrap();
        assert!(
            job.error_message.is_some(),
            "the stand-in hid DM's errorMessage"
        );
        setup.stop().await;
    });
}

/// A START while DM answers every request with 500: the start is sent once and never again (no
/// second job can come of it), and the run ends in a final state that gives DM's answer.
#[test]
fn a_start_answered_500_is_sent_once_and_the_run_ends_with_the_reason() {
    run_test(TEST_LIMIT, async {
        let prefix = "faults:start500:";
        let setup = Setup::start(prefix, &["--start-timeout", "3"]).await;
        setup
            .add_workflow("never-runs", &[("01-STREAM", &stream_then_wait())])
            .await;
        let slot = &setup.slot;
        setup.proxy.set(Mode::ServerError);
        slot.start(&request("never-runs", "uid-500")).await.unwrap();
        let end = slot.wait_for_state(&[State::Timeout], WAIT).await;
        assert_eq!(end, Ok(State::Timeout), "{}", setup.bridge.log());
        let status = slot.status().await.unwrap();
        assert!(
            status.message.contains("did not start the job within 3 s")
                && status.message.contains("HTTP 500"),
            "DM's answer is in Message: {}",
            status.message
        );
        assert_eq!(status.job_id, "");
        let searches = setup
            .proxy
            .exchanges()
            .iter()
            .filter(|e| e.method == "GET" && e.path == "/dm/processingJobsByOwner/dmuser")
            .count();
        assert!(
            searches > 0,
            "the bridge looked for a job of the run instead of starting again"
        );
        setup.proxy.set(Mode::PassThrough);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            setup.proxy.starts(),
            (1, 0),
            "one start, answered 500 by the proxy"
        );
        assert_eq!(setup.jobs_in_dm().await, 0);
        setup.stop().await;
    });
}

/// A START that DM carried out but whose answer was lost (a 500 after DM made the job): the
/// bridge does not start another job, it finds the one DM made by the run's id and follows it to
/// DONE.
#[test]
fn a_start_whose_answer_was_lost_finds_its_job_instead_of_starting_another() {
    run_test(TEST_LIMIT, async {
        let prefix = "faults:lostanswer:";
        let setup = Setup::start(prefix, &[]).await;
        setup
            .add_workflow("answer-lost", &[("01-STREAM", &stream_then_wait())])
            .await;
        let slot = &setup.slot;
        std::fs::write(setup.marker(), "").unwrap();
        setup.proxy.set(Mode::ServerErrorAfterDm);
        slot.start(&marker_request(
            "answer-lost",
            "uid-answer",
            &setup.marker(),
        ))
        .await
        .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        while setup.proxy.starts().1 == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the start never came"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        setup.proxy.set(Mode::PassThrough);
        let ready = slot.wait_for_state(&[State::Ready], WAIT).await;
        assert_eq!(ready, Ok(State::Ready), "{}", setup.bridge.log());
        slot.command(Command::AcqStarted).await.unwrap();
        slot.command(Command::AcqDone).await.unwrap();
        let end = slot.wait_for_state(&[State::Done], WAIT).await;
        assert_eq!(end, Ok(State::Done), "{}", setup.bridge.log());
        let jobs = setup.dm.list_jobs(&JobQuery::default()).await.unwrap();
        assert_eq!(jobs.len(), 1, "no second job");
        assert_eq!(slot.status().await.unwrap().job_id, jobs[0].id);
        assert_eq!(setup.proxy.starts(), (1, 1), "the start was sent once");
        setup.stop().await;
    });
}
