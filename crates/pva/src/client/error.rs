//! What a client call can fail with, worded for one line on a terminal.

use std::time::Duration;

use pva_codec::{PvRequestError, Status};

use super::proto::Failure;

/// Why a client operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// No answer in time (search, connection or the operation itself).
    #[error("timeout after {} waiting for '{name}'", secs(*.after))]
    Timeout {
        /// The channel.
        name: String,
        /// How long we waited.
        after: Duration,
    },
    /// The server refused the channel or the operation.
    #[error("'{name}': {}", remote(.status))]
    Remote {
        /// The channel.
        name: String,
        /// The server's status.
        status: Status,
    },
    /// The values given do not fit the channel's type.
    #[error("'{name}': {message}")]
    Value {
        /// The channel.
        name: String,
        /// What does not fit.
        message: String,
    },
    /// The connection to the server was lost during the operation.
    #[error("'{name}': disconnected from the server")]
    Disconnected {
        /// The channel.
        name: String,
    },
    /// The server broke the protocol.
    #[error("'{name}': protocol error: {message}")]
    Protocol {
        /// The channel.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// The pvRequest text does not parse.
    #[error(transparent)]
    Request(#[from] PvRequestError),
    /// A socket could not be opened.
    #[error("{0}")]
    Io(String),
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

fn remote(s: &Status) -> String {
    if s.message.is_empty() {
        format!("{:?} from the server", s.kind)
    } else {
        s.message.clone()
    }
}

impl ClientError {
    /// The error for channel `name` from a protocol-level failure.
    pub(crate) fn from_failure(name: &str, f: Failure) -> Self {
        let name = name.to_owned();
        match f {
            Failure::Remote(status) => ClientError::Remote { name, status },
            Failure::Value(message) => ClientError::Value { name, message },
            Failure::Disconnected => ClientError::Disconnected { name },
            Failure::Protocol(message) => ClientError::Protocol { name, message },
        }
    }
}

impl From<std::io::Error> for ClientError {
    fn from(e: std::io::Error) -> Self {
        ClientError::Io(e.to_string())
    }
}
