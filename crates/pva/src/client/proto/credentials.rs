//! The identity a client offers with the "ca" authentication method.

/// Client credentials offered with the "ca" method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Host name.
    pub host: String,
}

impl Credentials {
    /// The account and host of this process, as pvxs finds them: the user name of the effective
    /// uid (not `$USER`, which DM stages, containers and cron jobs may lack or set to anything)
    /// and the host name. The uid's number stands in for an account the system cannot name.
    pub fn of_process() -> Self {
        let uid = nix::unistd::geteuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| uid.to_string());
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        Credentials { user, host }
    }

    /// [`Credentials::of_process`], with the user name taken from `PVABRIDGE_CA_USER` instead
    /// when that is set: an explicit override, for tests that play several accounts from one.
    /// `$USER` is never read.
    pub fn from_env() -> Self {
        let mut credentials = Credentials::of_process();
        if let Some(user) = std::env::var(CA_USER_VAR).ok().filter(|u| !u.is_empty()) {
            credentials.user = user;
        }
        credentials
    }
}

/// The variable that overrides the user name of [`Credentials::from_env`].
pub const CA_USER_VAR: &str = "PVABRIDGE_CA_USER";
