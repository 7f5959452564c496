//! Faults between the client and DM: 500s, a service slower than the timeout, DM errors sent
//! with HTTP 200, a dropped session, and the service going down and up during a watch. Each
//! must end in a clear error or a recovered watch, never a hang, and never a second job.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use common::*;
use dm::{DmClient, DmError, JobQuery, JobStatus, WatchEvent};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const LIMIT: Duration = Duration::from_secs(20);

/// How the fault server answers job requests (login always works).
#[derive(Clone, Copy)]
enum Fault {
    ServerError,
    Slow(Duration),
    InvalidSession,
    InvalidSessionCodeWithOk,
    ErrorBodyWithOk,
    ErrorHeaderWithOk,
}

/// What the fault server saw.
#[derive(Default)]
struct Seen {
    logins: AtomicUsize,
    starts: AtomicUsize,
    gets: AtomicUsize,
    start_queries: Mutex<Vec<String>>,
}

struct FaultServer {
    fault: Fault,
    seen: Seen,
}

fn a_job() -> serde_json::Value {
    json!({"id": "j1", "owner": USER, "status": "running", "stage": "01-A", "filePath": "x"})
}

async fn answer(server: &FaultServer) -> Response {
    match server.fault {
        Fault::ServerError => {
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
        }
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            axum::Json(a_job()).into_response()
        }
        Fault::InvalidSession => (
            StatusCode::UNAUTHORIZED,
            [
                ("Dm-Status-Code", "12"),
                ("Dm-Status-Message", "Session expired."),
            ],
            "",
        )
            .into_response(),
        Fault::InvalidSessionCodeWithOk => (
            [
                ("Dm-Status-Code", "12"),
                ("Dm-Status-Message", "Invalid session."),
            ],
            axum::Json(a_job()),
        )
            .into_response(),
        Fault::ErrorBodyWithOk => axum::Json(json!({
            "errorCode": 14, "errorMessage": "Processing job j1 does not exist."
        }))
        .into_response(),
        Fault::ErrorHeaderWithOk => (
            [
                ("Dm-Status-Code", "10"),
                ("Dm-Status-Message", "Invalid argsDict."),
            ],
            "{}",
        )
            .into_response(),
    }
}

async fn start_fault_server(fault: Fault) -> (String, Arc<FaultServer>) {
    let server = Arc::new(FaultServer {
        fault,
        seen: Seen::default(),
    });
    let router = Router::new()
        .route(
            "/dm/login",
            post(|State(server): State<Arc<FaultServer>>| async move {
                server.seen.logins.fetch_add(1, Ordering::SeqCst);
                (
                    [
                        ("Set-Cookie", "session_id=fault; Path=/"),
                        ("Dm-Status-Code", "0"),
                    ],
                    "{}",
                )
            }),
        )
        .route(
            "/dm/processingJobsByWorkflow/{owner}/{name}/startProcessingJob",
            post(
                |State(server): State<Arc<FaultServer>>, RawQuery(query): RawQuery| async move {
                    server.seen.starts.fetch_add(1, Ordering::SeqCst);
                    server
                        .seen
                        .start_queries
                        .lock()
                        .unwrap()
                        .push(query.unwrap_or_default());
                    answer(&server).await
                },
            ),
        )
        .route(
            "/dm/processingJobsByOwner/{owner}/{id}",
            get(|State(server): State<Arc<FaultServer>>| async move {
                server.seen.gets.fetch_add(1, Ordering::SeqCst);
                answer(&server).await
            }),
        )
        .with_state(server.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, server)
}

fn fault_client(url: &str, timeout: Duration, read_retries: u32) -> DmClient {
    let mut config = quick_config(url, USER, PASSWORD);
    config.request_timeout = timeout;
    config.read_retries = read_retries;
    DmClient::new(config).unwrap()
}

#[tokio::test]
async fn server_errors_are_retried_for_reads_and_never_for_a_start() {
    let (url, server) = start_fault_server(Fault::ServerError).await;
    let client = fault_client(&url, Duration::from_secs(5), 2);
    bounded(LIMIT, async {
        let err = client.get_job("j1").await.unwrap_err();
        assert!(matches!(err, DmError::Http { status: 500, .. }), "{err}");
        assert!(err.to_string().contains("HTTP 500"), "{err}");
        assert_eq!(
            server.seen.gets.load(Ordering::SeqCst),
            3,
            "one try and two retries"
        );

        let err = client
            .start_job("wf", &args(json!({"filePath": "x"})))
            .await
            .unwrap_err();
        assert!(matches!(err, DmError::Http { status: 500, .. }), "{err}");
        assert_eq!(
            server.seen.starts.load(Ordering::SeqCst),
            1,
            "a start is never sent twice"
        );
        assert_eq!(server.seen.logins.load(Ordering::SeqCst), 1);
        let query = server.seen.start_queries.lock().unwrap()[0].clone();
        assert!(
            query.starts_with("argsDict=b%27") && query.ends_with("%27"),
            "sent as the Python client does: {query}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_service_slower_than_the_timeout_gives_a_timeout_error() {
    let (url, server) = start_fault_server(Fault::Slow(Duration::from_secs(5))).await;
    let client = fault_client(&url, Duration::from_millis(300), 1);
    bounded(LIMIT, async {
        let began = Instant::now();
        let err = client
            .start_job("wf", &args(json!({"filePath": "x"})))
            .await
            .unwrap_err();
        assert!(matches!(err, DmError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("did not answer"), "{err}");
        assert!(began.elapsed() < Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            server.seen.starts.load(Ordering::SeqCst),
            1,
            "a timed-out start is not sent again"
        );

        let began = Instant::now();
        let err = client.get_job("j1").await.unwrap_err();
        assert!(matches!(err, DmError::Timeout { .. }), "{err}");
        assert!(began.elapsed() < Duration::from_secs(2));
        assert_eq!(
            server.seen.gets.load(Ordering::SeqCst),
            2,
            "a read is tried again once"
        );
    })
    .await;
}

/// `err` is DM error `code` sent with HTTP 200, and says `text`.
fn assert_service_error(err: &DmError, code: i64, text: &str) {
    assert!(
        matches!(err, DmError::Service { http_status: 200, code: c, .. } if *c == code),
        "{err}"
    );
    assert!(err.to_string().contains(text), "{err}");
}

#[tokio::test]
async fn dm_errors_sent_with_http_200_are_errors() {
    let (url, _server) = start_fault_server(Fault::ErrorBodyWithOk).await;
    let err = bounded(
        LIMIT,
        fault_client(&url, Duration::from_secs(5), 2).get_job("j1"),
    )
    .await
    .unwrap_err();
    assert_service_error(&err, 14, "Processing job j1 does not exist.");

    let (url, server) = start_fault_server(Fault::ErrorHeaderWithOk).await;
    let client = fault_client(&url, Duration::from_secs(5), 2);
    let err = bounded(LIMIT, client.start_job("wf", &args(json!({}))))
        .await
        .unwrap_err();
    assert_service_error(&err, 10, "Invalid argsDict.");
    assert_eq!(server.seen.starts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_invalid_session_logs_in_again_once_then_reports() {
    for fault in [Fault::InvalidSession, Fault::InvalidSessionCodeWithOk] {
        let (url, server) = start_fault_server(fault).await;
        let client = fault_client(&url, Duration::from_secs(5), 2);
        let err = bounded(LIMIT, client.get_job("j1")).await.unwrap_err();
        assert!(err.is_invalid_session(), "{err}");
        assert!(matches!(err, DmError::Service { code: 12, .. }), "{err}");
        assert_eq!(
            server.seen.logins.load(Ordering::SeqCst),
            2,
            "logged in again once"
        );
        assert_eq!(
            server.seen.gets.load(Ordering::SeqCst),
            2,
            "the request was repeated once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_session_is_renewed_and_the_start_happens_once() {
    let dir = tempfile::tempdir().unwrap();
    let service = start_service(dir.path(), 2).await;
    let client = client(&service.url());
    bounded(LIMIT, async {
        client
            .add_workflow(&workflow("quick", json!({"01-A": {"command": "echo hi"}})))
            .await
            .unwrap();
        service.expire_sessions();
        let job = client
            .start_job("quick", &args(json!({"filePath": "x"})))
            .await
            .unwrap();
        service.expire_sessions();
        assert_eq!(final_job(&client, &job.id).await.status, JobStatus::Done);
        assert_eq!(job_count(&client).await, 1, "exactly one job");
    })
    .await;
    service.shutdown().await;
}

/// A TCP proxy that can be switched off (connections cut, new ones closed at once) and on.
struct Proxy {
    url: String,
    up: watch::Sender<bool>,
}

async fn start_proxy(target: SocketAddr) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (up, up_receiver) = watch::channel(true);
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let mut up = up_receiver.clone();
            if !*up.borrow() {
                continue;
            }
            tokio::spawn(async move {
                let Ok(mut outbound) = TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = up.wait_for(|up| !*up) => {}
                }
            });
        }
    });
    Proxy { url, up }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_survives_the_service_going_down_and_up() {
    let dir = tempfile::tempdir().unwrap();
    let service = start_service(dir.path(), 2).await;
    let proxy = start_proxy(service.local_addr()).await;
    let client = client(&proxy.url);
    bounded(LIMIT, async {
        client
            .add_workflow(&workflow(
                "steady",
                json!({"01-WORK": {"command": "sleep 1.5; echo finished"}}),
            ))
            .await
            .unwrap();
        let job = client
            .start_job("steady", &args(json!({"filePath": "x"})))
            .await
            .unwrap();
        let mut watch = client.watch(&job.id, quick_watch(Duration::from_secs(15)));
        let first = watch.next().await.unwrap().unwrap();
        assert!(matches!(first, WatchEvent::Changed(_)));
        proxy.up.send_replace(false);
        let mut outages = 0;
        let mut restored = false;
        let mut last = None;
        while let Some(event) = watch.next().await {
            match event.unwrap() {
                WatchEvent::Unreachable(err) => {
                    assert!(err.is_transient(), "{err}");
                    outages += 1;
                    if outages == 3 {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        proxy.up.send_replace(true);
                        restored = true;
                    }
                }
                WatchEvent::Changed(job) => last = Some(job),
            }
        }
        assert!(restored && outages >= 3, "the outage was seen: {outages}");
        let last = last.expect("the watch recovered");
        assert_eq!(last.status, JobStatus::Done);
        assert_eq!(job_count(&client).await, 1, "never a second job");
    })
    .await;
    service.shutdown().await;
}

/// How many jobs the service lists.
async fn job_count(client: &DmClient) -> usize {
    client.list_jobs(&JobQuery::default()).await.unwrap().len()
}
