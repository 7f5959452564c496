//! Channel life cycle: create (request and response), destroy, and get-field (introspection).

use crate::error::{DecodeResult, EncodeError};
use crate::serialize::ValueDecoder;
use crate::status::Status;
use crate::types::{FieldDesc, TypeEncoder};
use crate::wire::{Reader, Writer};

/// Client asks for channels by name (command 0x07 from client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateChannel {
    /// (client channel id, channel name) pairs.
    pub channels: Vec<(u32, String)>,
}

impl CreateChannel {
    pub(crate) fn decode(r: &mut Reader) -> DecodeResult<Self> {
        let n = r.u16()? as usize;
        r.check_count("channel count", n, 5)?;
        let mut channels = Vec::with_capacity(n);
        for _ in 0..n {
            let cid = r.u32()?;
            channels.push((cid, r.string()?));
        }
        Ok(CreateChannel { channels })
    }

    pub(crate) fn encode(&self, w: &mut Writer) -> Result<(), EncodeError> {
        let n = u16::try_from(self.channels.len()).map_err(|_| EncodeError::TooLarge {
            what: "channel count",
            len: self.channels.len() as u64,
        })?;
        w.u16(n);
        for (cid, name) in &self.channels {
            w.u32(*cid);
            w.string(name)?;
        }
        Ok(())
    }
}

/// Server's answer to one channel creation (command 0x07 from server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateChannelResponse {
    /// The client's id for the channel.
    pub cid: u32,
    /// The server's id for the channel.
    pub sid: u32,
    /// Success, or why the channel could not be created.
    pub status: Status,
}

impl CreateChannelResponse {
    pub(crate) fn decode(r: &mut Reader) -> DecodeResult<Self> {
        Ok(CreateChannelResponse {
            cid: r.u32()?,
            sid: r.u32()?,
            status: Status::decode(r)?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u32(self.cid);
        w.u32(self.sid);
        self.status.encode(w)
    }
}

/// Either side closing a channel (command 0x08), same layout both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestroyChannel {
    /// Server channel id.
    pub sid: u32,
    /// Client channel id.
    pub cid: u32,
}

impl DestroyChannel {
    pub(crate) fn decode(r: &mut Reader) -> DecodeResult<Self> {
        Ok(DestroyChannel {
            sid: r.u32()?,
            cid: r.u32()?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) {
        w.u32(self.sid);
        w.u32(self.cid);
    }
}

/// Client asks for a channel's type (command 0x11 from client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetField {
    /// Server channel id.
    pub sid: u32,
    /// Request id.
    pub ioid: u32,
    /// Sub-field path, empty for the whole.
    pub sub_field: String,
}

impl GetField {
    pub(crate) fn decode(r: &mut Reader) -> DecodeResult<Self> {
        Ok(GetField {
            sid: r.u32()?,
            ioid: r.u32()?,
            sub_field: r.string()?,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u32(self.sid);
        w.u32(self.ioid);
        w.string(&self.sub_field)
    }
}

/// Server's answer to [`GetField`] (command 0x11 from server).
#[derive(Debug, Clone, PartialEq)]
pub struct GetFieldResponse {
    /// Request id.
    pub ioid: u32,
    /// Success or the error.
    pub status: Status,
    /// The type, on success.
    pub desc: Option<FieldDesc>,
}

impl GetFieldResponse {
    pub(crate) fn decode(r: &mut Reader, d: &mut ValueDecoder) -> DecodeResult<Self> {
        let ioid = r.u32()?;
        let status = Status::decode(r)?;
        let desc = if status.is_success() && !r.is_empty() {
            d.decode_type(r)?
        } else {
            None
        };
        Ok(GetFieldResponse { ioid, status, desc })
    }

    pub(crate) fn encode(&self, w: &mut Writer, t: &mut TypeEncoder) -> Result<(), EncodeError> {
        w.u32(self.ioid);
        self.status.encode(w)?;
        if self.status.is_success() {
            t.encode(self.desc.as_ref(), w)?;
        }
        Ok(())
    }
}
