//! The PVA Status: OK in one byte (0xFF), or a type with a message and a call tree.

use crate::error::{DecodeError, DecodeResult, EncodeError};
use crate::wire::{Reader, Writer};

/// How serious a [`Status`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusKind {
    /// Success.
    Ok = 0,
    /// Success with a warning.
    Warning = 1,
    /// The request failed.
    Error = 2,
    /// The request failed and the connection or channel is unusable.
    Fatal = 3,
}

/// The outcome of a request as the peer reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Status {
    /// Severity.
    pub kind: StatusKind,
    /// What happened, in words.
    pub message: String,
    /// Where it happened (a stack or call tree), often empty.
    pub call_tree: String,
}

impl Status {
    /// Plain success.
    pub const OK: Status = Status {
        kind: StatusKind::Ok,
        message: String::new(),
        call_tree: String::new(),
    };

    /// An error with a message.
    pub fn error(message: impl Into<String>) -> Self {
        Status {
            kind: StatusKind::Error,
            message: message.into(),
            call_tree: String::new(),
        }
    }

    /// A warning with a message.
    pub fn warning(message: impl Into<String>) -> Self {
        Status {
            kind: StatusKind::Warning,
            message: message.into(),
            call_tree: String::new(),
        }
    }

    /// True for OK and warnings: the request was carried out.
    pub fn is_success(&self) -> bool {
        matches!(self.kind, StatusKind::Ok | StatusKind::Warning)
    }

    /// Decode a Status.
    pub fn decode(r: &mut Reader) -> DecodeResult<Self> {
        let kind = match r.u8()? {
            0xFF => return Ok(Status::OK),
            0 => StatusKind::Ok,
            1 => StatusKind::Warning,
            2 => StatusKind::Error,
            3 => StatusKind::Fatal,
            other => return Err(DecodeError::BadStatusType(other)),
        };
        Ok(Status {
            kind,
            message: r.string()?,
            call_tree: r.string()?,
        })
    }

    /// Encode a Status, using the one-byte form for plain OK.
    pub fn encode(&self, w: &mut Writer) -> Result<(), EncodeError> {
        if self.kind == StatusKind::Ok && self.message.is_empty() && self.call_tree.is_empty() {
            w.u8(0xFF);
        } else {
            w.u8(self.kind as u8);
            w.string(&self.message)?;
            w.string(&self.call_tree)?;
        }
        Ok(())
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.kind)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}
