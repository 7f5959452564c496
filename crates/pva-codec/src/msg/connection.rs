//! Connection set-up: validation request (server), validation response (client), validated.

use crate::error::{DecodeResult, EncodeError};
use crate::serialize::{ValueDecoder, ValueEncoder};
use crate::value::{AnyValue, Value};
use crate::wire::{Reader, Writer};

/// The server's opening message (command 0x01 from server): its limits and auth methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationRequest {
    /// Server receive buffer size.
    pub receive_buffer_size: u32,
    /// Server introspection registry size.
    pub registry_size: u16,
    /// Authentication methods offered, e.g. `["anonymous", "ca"]`.
    pub auth_methods: Vec<String>,
}

impl ValidationRequest {
    pub(crate) fn decode(r: &mut Reader) -> DecodeResult<Self> {
        let receive_buffer_size = r.u32()?;
        let registry_size = r.u16()?;
        let n = r.size()?;
        r.check_count("auth method count", n, 1)?;
        let mut auth_methods = Vec::with_capacity(n);
        for _ in 0..n {
            auth_methods.push(r.string()?);
        }
        Ok(ValidationRequest {
            receive_buffer_size,
            registry_size,
            auth_methods,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u32(self.receive_buffer_size);
        w.u16(self.registry_size);
        w.size(self.auth_methods.len())?;
        for m in &self.auth_methods {
            w.string(m)?;
        }
        Ok(())
    }
}

/// The client's answer (command 0x01 from client): chosen method and its credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationResponse {
    /// Client receive buffer size.
    pub receive_buffer_size: u32,
    /// Client introspection registry size.
    pub registry_size: u16,
    /// Quality of service flags (unused).
    pub qos: u16,
    /// The chosen method: "anonymous" or "ca".
    pub method: String,
    /// Method data: for "ca", a structure `{string user; string host}`.
    pub credentials: AnyValue,
}

impl ValidationResponse {
    pub(crate) fn decode(r: &mut Reader, d: &mut ValueDecoder) -> DecodeResult<Self> {
        Ok(ValidationResponse {
            receive_buffer_size: r.u32()?,
            registry_size: r.u16()?,
            qos: r.u16()?,
            method: r.string()?,
            credentials: if r.is_empty() {
                AnyValue(None)
            } else {
                d.any(r)?
            },
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer, e: &mut ValueEncoder) -> Result<(), EncodeError> {
        w.u32(self.receive_buffer_size);
        w.u16(self.registry_size);
        w.u16(self.qos);
        w.string(&self.method)?;
        e.any(&self.credentials, w)
    }

    /// The "ca" user and host, when the client sent them.
    pub fn ca_identity(&self) -> Option<(String, String)> {
        let s = match self.credentials.get()? {
            Value::Struct(s) => s,
            _ => return None,
        };
        let user = s.get("user")?.as_str()?.to_owned();
        let host = s.get("host")?.as_str()?.to_owned();
        Some((user, host))
    }
}
