//! The embedded DM-compatible processing service: the same HTTP API as the facility's service
//! (so the client's code path is the same), a workflow engine that runs stages as real
//! processes, and a SQLite store that survives restarts.

mod condition;
mod engine;
mod http;
mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use store::StoreError;

use crate::client::parse_login_line;
use engine::StopRequest;
use store::Store;

/// The message of a job that was running when the service stopped.
pub const INTERRUPTED_MESSAGE: &str =
    "The processing service stopped while this job was running; it was marked failed when the service started again.";

/// How long shutdown waits for running stages to be killed and the server to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to run the embedded service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the database and the job working directories live.
    pub data_dir: PathBuf,
    /// A file of `username|password` lines (the format of `DM_LOGIN_FILE`).
    pub users_file: PathBuf,
    /// The most jobs running at once; the rest wait `pending`.
    pub max_running_jobs: usize,
}

impl ServiceConfig {
    /// A configuration with the default limit of jobs running at once.
    pub fn new(
        listen: SocketAddr,
        data_dir: impl Into<PathBuf>,
        users_file: impl Into<PathBuf>,
    ) -> Self {
        ServiceConfig {
            listen,
            data_dir: data_dir.into(),
            users_file: users_file.into(),
            max_running_jobs: 4,
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A file, directory or socket failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The users file is unusable.
    #[error("users file {path}: {reason}")]
    Users {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The database failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The configuration makes no sense.
    #[error("service configuration: {0}")]
    Config(String),
}

/// State shared by the HTTP handlers and the job tasks (no `Debug`: it holds passwords).
pub(crate) struct Shared {
    store: Store,
    users: HashMap<String, String>,
    sessions: Mutex<HashMap<String, String>>,
    job_controls: Mutex<HashMap<String, watch::Sender<StopRequest>>>,
    job_tasks: Mutex<JoinSet<()>>,
    running_slots: Arc<Semaphore>,
    jobs_dir: PathBuf,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A started service: its address, and the means to stop it.
pub struct RunningService {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: ShutdownHandle,
    server: tokio::task::JoinHandle<Result<(), ServiceError>>,
}

/// Asks a running service to stop; cheap to clone and send to another task.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    sender: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Ask the service to stop: it stops listening and kills the stages still running (their jobs
    /// are marked failed when a service starts again on the same data directory).
    pub fn shutdown(&self) {
        self.sender.send_replace(true);
    }
}

/// Start the service on `config.listen` and return once it listens.
pub async fn start(config: ServiceConfig) -> Result<RunningService, ServiceError> {
    if config.max_running_jobs == 0 {
        return Err(ServiceError::Config(
            "the limit of jobs running at once must be at least 1".into(),
        ));
    }
    let users = read_users(&config.users_file)?;
    let jobs_dir = config.data_dir.join("jobs");
    std::fs::create_dir_all(&jobs_dir).map_err(|source| ServiceError::Io {
        what: format!("cannot create {}", jobs_dir.display()),
        source,
    })?;
    let store = Store::open(&config.data_dir.join("dm.sqlite3"))?;
    engine::fail_interrupted_jobs(&store)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServiceError::Io {
            what: format!("cannot listen on {}", config.listen),
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| ServiceError::Io {
        what: "cannot read the bound address".into(),
        source,
    })?;
    let shared = Arc::new(Shared {
        store,
        users,
        sessions: Mutex::new(HashMap::new()),
        job_controls: Mutex::new(HashMap::new()),
        job_tasks: Mutex::new(JoinSet::new()),
        running_slots: Arc::new(Semaphore::new(config.max_running_jobs)),
        jobs_dir,
    });
    let (sender, mut receiver) = watch::channel(false);
    let router = http::router(shared.clone());
    let server_shared = shared.clone();
    let server = tokio::spawn(async move {
        let stop_signal = async move {
            let _ = receiver.wait_for(|stop| *stop).await;
        };
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(stop_signal)
            .await;
        engine::stop_all_jobs(&server_shared).await;
        served.map_err(|source| ServiceError::Io {
            what: "the HTTP server failed".into(),
            source,
        })
    });
    tracing::info!("DM processing service listening on http://{local_addr}/dm");
    Ok(RunningService {
        local_addr,
        shared,
        shutdown: ShutdownHandle {
            sender: Arc::new(sender),
        },
        server,
    })
}

impl std::fmt::Debug for RunningService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningService")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl RunningService {
    /// The address the service listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The base URL for `DM_PROC_WEB_SERVICE_URL`, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// A handle that stops the service from elsewhere.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Forget every login session, as a restart of the facility's service does; clients must log
    /// in again.
    pub fn expire_sessions(&self) {
        locked(&self.shared.sessions).clear();
    }

    /// Run until a [`ShutdownHandle`] stops the service.
    pub async fn wait(self) -> Result<(), ServiceError> {
        match self.server.await {
            Ok(result) => result,
            Err(join_error) => Err(ServiceError::Config(format!(
                "the server task failed: {join_error}"
            ))),
        }
    }

    /// Stop the service and wait (a bounded time) until it has stopped.
    pub async fn shutdown(self) {
        self.shutdown.shutdown();
        let mut server = self.server;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
            .await
            .is_err()
        {
            tracing::warn!("the DM service did not stop within {SHUTDOWN_GRACE:?}; aborting it");
            server.abort();
            engine::stop_all_jobs(&self.shared).await;
        }
    }
}

fn read_users(path: &Path) -> Result<HashMap<String, String>, ServiceError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServiceError::Io {
        what: format!("cannot read users file {}", path.display()),
        source,
    })?;
    let mut users = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (username, password) = parse_login_line(line).ok_or_else(|| ServiceError::Users {
            path: path.to_path_buf(),
            reason: format!("line {} is not username|password", number + 1),
        })?;
        users.insert(username, password);
    }
    if users.is_empty() {
        return Err(ServiceError::Users {
            path: path.to_path_buf(),
            reason: "no users".into(),
        });
    }
    Ok(users)
}
