//! The client context: configuration, search, and one shared connection per server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pva_codec::{Limits, PvRequest, StructValue};
use tokio::sync::{oneshot, Mutex};

use super::conn::{self, ConnCmd, ConnHandle, Sink};
use super::error::ClientError;
use super::proto::{Credentials, Output, Request};
use super::search::Searcher;
use crate::config::ClientConfig;

/// A PVAccess client: searches for channels, keeps one connection per server shared by its
/// channels, and runs operations. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    credentials: Credentials,
    limits: Limits,
    searcher: Arc<Searcher>,
    conns: Mutex<HashMap<SocketAddr, ConnHandle>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A client with this configuration, offering the process's account and host name
    /// ([`Credentials::from_env`]). Must be called inside a tokio runtime.
    pub fn new(config: ClientConfig) -> Result<Context, ClientError> {
        Context::with_credentials(config, Credentials::from_env())
    }

    /// A client that offers `credentials` instead of this process's account and host (for
    /// tests, and for a service acting for someone).
    pub fn with_credentials(
        config: ClientConfig,
        credentials: Credentials,
    ) -> Result<Context, ClientError> {
        let searcher = Searcher::new(&config)?;
        Ok(Context {
            inner: Arc::new(Inner {
                config,
                credentials,
                limits: Limits::default(),
                searcher,
                conns: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// A client configured from the EPICS_PVA_* environment.
    pub fn from_env() -> Result<Context, ClientError> {
        let config = ClientConfig::from_env().map_err(|e| ClientError::Io(e.to_string()))?;
        Context::new(config)
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The default time limit of one operation ([`crate::config::DEFAULT_OP_TIMEOUT`] unless the
    /// configuration says otherwise; EPICS_PVA_CONN_TMO does not change it).
    pub fn default_timeout(&self) -> Duration {
        self.inner.config.timeout
    }

    /// Find the server that has `name`: UDP search with backoff, and TCP search to the name
    /// servers. Runs until found; bound it with a timeout.
    pub async fn resolve(&self, name: &str) -> SocketAddr {
        let searcher = &self.inner.searcher;
        let id = searcher.next_id();
        let (_guard, mut found) = searcher.wait(id);
        for ns in &self.inner.config.name_servers {
            if let Ok(c) = self.connection(*ns).await {
                let _ = c.tx.send(ConnCmd::Search {
                    sequence: searcher.next_sequence(),
                    id,
                    name: name.to_owned(),
                });
            }
        }
        searcher.find(&mut found, id, name).await
    }

    /// Ask the servers on the search addresses to answer, wait `wait`, and list them
    /// (GUID, address).
    pub async fn discover(&self, wait: Duration) -> Vec<([u8; 12], SocketAddr)> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut delay = Duration::from_millis(50);
        while tokio::time::Instant::now() < deadline {
            self.inner.searcher.ping().await;
            tokio::time::sleep(delay.min(deadline - tokio::time::Instant::now())).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
        let mut servers = self.inner.searcher.servers();
        servers.sort_by_key(|(_, a)| *a);
        servers
    }

    /// The connection to `server`, opened if there is none alive.
    pub(crate) async fn connection(&self, server: SocketAddr) -> Result<ConnHandle, ClientError> {
        let mut conns = self.inner.conns.lock().await;
        if let Some(c) = conns.get(&server).filter(|c| c.is_alive()) {
            return Ok(c.clone());
        }
        let weak = Arc::downgrade(&self.inner);
        let on_search: conn::SearchSink = Arc::new(move |r, peer: SocketAddr| {
            if let Some(inner) = weak.upgrade() {
                inner.searcher.answer(&r, peer.ip());
            }
        });
        let c = conn::connect(
            server,
            self.inner.credentials.clone(),
            self.inner.limits,
            self.inner.config.conn_timeout,
            on_search,
        )
        .await?;
        conns.insert(server, c.clone());
        Ok(c)
    }

    /// Run a one-shot operation on channel `name` within `timeout`, at `server` if given
    /// (without searching), else at the server a search finds.
    pub(crate) async fn run_once(
        &self,
        name: &str,
        pv_request: StructValue,
        kind: super::proto::OpKind,
        timeout: Option<Duration>,
        server: Option<SocketAddr>,
    ) -> Result<Output, ClientError> {
        let after = timeout.unwrap_or(self.inner.config.timeout);
        let work = async {
            let server = match server {
                Some(s) => s,
                None => self.resolve(name).await,
            };
            let conn = self.connection(server).await?;
            let (tx, rx) = oneshot::channel();
            let request = Request {
                channel: name.to_owned(),
                pv_request,
                kind,
            };
            let disconnected = || ClientError::Disconnected {
                name: name.to_owned(),
            };
            conn.tx
                .send(ConnCmd::Start {
                    request,
                    sink: Sink::Once(tx),
                })
                .map_err(|_| disconnected())?;
            rx.await
                .map_err(|_| disconnected())?
                .map_err(|f| ClientError::from_failure(name, f))
        };
        tokio::time::timeout(after, work)
            .await
            .map_err(|_| ClientError::Timeout {
                name: name.to_owned(),
                after,
            })?
    }
}

/// Parse optional pvRequest text (none selects everything).
pub(crate) fn parse_request(text: Option<&str>) -> Result<PvRequest, ClientError> {
    Ok(match text {
        Some(t) => PvRequest::parse(t)?,
        None => PvRequest::new(),
    })
}
