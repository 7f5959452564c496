//! The embedded DM service started in the bridge's own process, for a beamline without a DM
//! installation, for the demo and for tests. Its stages run as children of this process, so a
//! restart of the process ends their jobs; to keep jobs across restarts of the bridge, run
//! `pvabridge dm-service` apart (or use the facility's DM).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dm::client::read_login_file;
use dm::{ClientConfig, DmClient, DmError, RunningService, ServiceConfig, ServiceError};

/// The name of the login file made in the service's directory.
pub const USERS_FILE: &str = "users";
/// The user made for a new directory.
pub const DEFAULT_USER: &str = "pvabridge";

/// Why the embedded service did not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The directory or its login file could not be made.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The login file is unusable.
    #[error(transparent)]
    Login(#[from] DmError),
    /// The service failed to start.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// A running embedded DM service and the login to use it.
#[derive(Debug)]
pub struct EmbeddedDm {
    service: RunningService,
    login_file: PathBuf,
    username: String,
    password: String,
}

impl EmbeddedDm {
    /// Start the service on `listen` with its database and job directories in `dir`. The login
    /// comes from `dir/users` (the `DM_LOGIN_FILE` format); a new directory gets one user,
    /// `pvabridge`, with a random password, in a file only its owner may read.
    pub async fn start(dir: &Path, listen: SocketAddr) -> Result<EmbeddedDm, EmbeddedError> {
        std::fs::create_dir_all(dir).map_err(|source| EmbeddedError::Io {
            what: format!("cannot create {}", dir.display()),
            source,
        })?;
        let login_file = dir.join(USERS_FILE);
        if !login_file.exists() {
            write_new_login(&login_file)?;
        }
        let (username, password) = read_login_file(&login_file)?;
        let service = dm::service::start(ServiceConfig::new(listen, dir, &login_file)).await?;
        Ok(EmbeddedDm {
            service,
            login_file,
            username,
            password,
        })
    }

    /// The base URL (for `DM_PROC_WEB_SERVICE_URL`).
    pub fn url(&self) -> String {
        self.service.url()
    }

    /// The login file (for `DM_LOGIN_FILE`).
    pub fn login_file(&self) -> &Path {
        &self.login_file
    }

    /// A client configuration logged in as the service's first user.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.url(), &self.username, &self.password)
    }

    /// A client of the service.
    pub fn client(&self) -> Result<DmClient, DmError> {
        DmClient::new(self.client_config())
    }

    /// Stop the service (its running stages are killed).
    pub async fn shutdown(self) {
        self.service.shutdown().await;
    }
}

fn write_new_login(path: &Path) -> Result<(), EmbeddedError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let password = uuid::Uuid::new_v4().simple().to_string();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| {
            writeln!(file, "{DEFAULT_USER}|{password}")?;
            file.flush()
        })
        .map_err(|source| EmbeddedError::Io {
            what: format!("cannot write login file {}", path.display()),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_directory_gets_a_private_login_that_works() {
        let dir = tempfile::tempdir().unwrap();
        let service = EmbeddedDm::start(dir.path(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(service.login_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "only the owner may read the login file");
        let client = service.client().unwrap();
        assert_eq!(client.owner(), DEFAULT_USER);
        assert!(client.list_workflows().await.unwrap().is_empty());
        let password = service.client_config().password;
        service.shutdown().await;
        let again = EmbeddedDm::start(dir.path(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert_eq!(
            again.client_config().password,
            password,
            "the login is kept"
        );
        again.client().unwrap().login().await.unwrap();
        again.shutdown().await;
    }
}
