//! The one error type of the DM client, and the status codes DM puts in `Dm-Status-Code`.

use std::time::Duration;

/// Status codes carried in the `Dm-Status-Code` header and in `errorCode` bodies.
pub mod status {
    /// Success.
    pub const OK: i64 = 0;
    /// A generic error.
    pub const ERROR: i64 = 1;
    /// The service failed internally.
    pub const INTERNAL_ERROR: i64 = 2;
    /// The user may not do this.
    pub const AUTHORIZATION_ERROR: i64 = 5;
    /// The credentials were refused.
    pub const AUTHENTICATION_ERROR: i64 = 6;
    /// The store failed.
    pub const DB_ERROR: i64 = 7;
    /// An argument was missing or malformed.
    pub const INVALID_ARGUMENT: i64 = 10;
    /// The request cannot be served in this form.
    pub const INVALID_REQUEST: i64 = 11;
    /// The session is unknown or expired: log in again.
    pub const INVALID_SESSION: i64 = 12;
    /// No such object.
    pub const OBJECT_NOT_FOUND: i64 = 14;
    /// The object exists already.
    pub const OBJECT_ALREADY_EXISTS: i64 = 15;
    /// The object is in a state that does not allow this.
    pub const INVALID_OBJECT_STATE: i64 = 16;
}

/// Everything that can go wrong talking to DM, each variant saying what DM (or the network) said.
#[derive(Debug, thiserror::Error)]
pub enum DmError {
    /// DM answered with an error code (from `Dm-Status-Code` or an `errorCode` body).
    #[error("DM error {code} (HTTP {http_status}): {message}")]
    Service {
        /// The HTTP status of the reply (DM may send errors with 200).
        http_status: u16,
        /// The DM status code.
        code: i64,
        /// What DM said.
        message: String,
    },
    /// An HTTP error status without any DM error code.
    #[error("DM answered HTTP {status}: {body}")]
    Http {
        /// The HTTP status.
        status: u16,
        /// The start of the reply body.
        body: String,
    },
    /// The request did not get an answer in time.
    #[error("DM did not answer {what} within {timeout:?}")]
    Timeout {
        /// The request that timed out.
        what: String,
        /// The time allowed.
        timeout: Duration,
    },
    /// The service could not be reached or the connection broke.
    #[error("could not reach DM for {what}: {message}")]
    Transport {
        /// The request that failed.
        what: String,
        /// The underlying cause.
        message: String,
    },
    /// Logging in was refused.
    #[error("DM login as {username:?} failed: {message}")]
    Login {
        /// The user name tried.
        username: String,
        /// What DM said.
        message: String,
    },
    /// The client configuration is incomplete or wrong.
    #[error("DM client configuration: {0}")]
    Config(String),
    /// DM's reply could not be understood.
    #[error("could not understand DM's reply to {what}: {message}")]
    Decode {
        /// The request whose reply was bad.
        what: String,
        /// Why.
        message: String,
    },
    /// A watch ran out of time; the job itself goes on.
    #[error("stopped watching job {job_id} after {timeout:?}; it was last seen {last_status}")]
    WatchTimeout {
        /// The job watched.
        job_id: String,
        /// The watch timeout.
        timeout: Duration,
        /// The last status seen, or "never".
        last_status: String,
    },
}

impl DmError {
    /// True when the error may go away by itself (network trouble, timeouts, 5xx), so that an
    /// idempotent request or a watch may try again.
    pub fn is_transient(&self) -> bool {
        match self {
            DmError::Timeout { .. } | DmError::Transport { .. } => true,
            DmError::Http { status, .. } => *status >= 500,
            DmError::Service {
                http_status, code, ..
            } => *http_status >= 500 && *code == status::INTERNAL_ERROR,
            _ => false,
        }
    }

    /// True when DM says the session is gone, so logging in again may help.
    pub fn is_invalid_session(&self) -> bool {
        match self {
            DmError::Service {
                http_status, code, ..
            } => *http_status == 401 || *code == status::INVALID_SESSION,
            DmError::Http { status, .. } => *status == 401,
            _ => false,
        }
    }
}
