//! UDP discovery messages: beacon, search, search response, origin tag.

use std::net::IpAddr;

use crate::error::{DecodeResult, EncodeError};
use crate::serialize::{ValueDecoder, ValueEncoder};
use crate::value::AnyValue;
use crate::wire::{Guid, Reader, Writer};

/// A server announcing itself (command 0x00).
#[derive(Debug, Clone, PartialEq)]
pub struct Beacon {
    /// The server's GUID.
    pub guid: Guid,
    /// Unused flags byte.
    pub flags: u8,
    /// Increments with each beacon.
    pub sequence: u8,
    /// Increments when the server's channel set changes.
    pub change_count: u16,
    /// The server's address (unspecified: use the sender's).
    pub address: IpAddr,
    /// The server's TCP port.
    pub port: u16,
    /// Transport, always "tcp" in practice.
    pub protocol: String,
    /// Optional server status structure (usually empty).
    pub status: AnyValue,
}

impl Beacon {
    pub(crate) fn decode(r: &mut Reader, d: &mut ValueDecoder) -> DecodeResult<Self> {
        Ok(Beacon {
            guid: r.guid()?,
            flags: r.u8()?,
            sequence: r.u8()?,
            change_count: r.u16()?,
            address: r.address()?,
            port: r.u16()?,
            protocol: r.string()?,
            status: if r.is_empty() {
                AnyValue(None)
            } else {
                d.any(r)?
            },
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer, e: &mut ValueEncoder) -> Result<(), EncodeError> {
        w.guid(&self.guid);
        w.u8(self.flags);
        w.u8(self.sequence);
        w.u16(self.change_count);
        w.address(self.address);
        w.u16(self.port);
        w.string(&self.protocol)?;
        e.any(&self.status, w)
    }
}

/// Search flag: the server must answer even when it does not have the names.
pub const SEARCH_MUST_REPLY: u8 = 0x01;
/// Search flag: the request was sent unicast (and may be forwarded to local listeners).
pub const SEARCH_UNICAST: u8 = 0x80;

/// A client looking for channels by name (command 0x03).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// Matches responses to requests.
    pub sequence: u32,
    /// Flag bits ([`SEARCH_MUST_REPLY`], [`SEARCH_UNICAST`], others kept as received).
    pub flags: u8,
    /// Where to send the response (unspecified: to the sender).
    pub response_address: IpAddr,
    /// UDP port for the response.
    pub response_port: u16,
    /// Acceptable transports ("tcp").
    pub protocols: Vec<String>,
    /// (search instance id, channel name) pairs.
    pub channels: Vec<(u32, String)>,
}

impl Search {
    pub(crate) fn decode(r: &mut Reader) -> DecodeResult<Self> {
        let sequence = r.u32()?;
        let flags = r.u8()?;
        r.skip(3)?;
        let response_address = r.address()?;
        let response_port = r.u16()?;
        let nproto = r.size()?;
        r.check_count("protocol count", nproto, 1)?;
        let mut protocols = Vec::with_capacity(nproto);
        for _ in 0..nproto {
            protocols.push(r.string()?);
        }
        let n = if r.is_empty() { 0 } else { r.u16()? as usize };
        r.check_count("channel count", n, 5)?;
        let mut channels = Vec::with_capacity(n);
        for _ in 0..n {
            let id = r.u32()?;
            channels.push((id, r.string()?));
        }
        Ok(Search {
            sequence,
            flags,
            response_address,
            response_port,
            protocols,
            channels,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.u32(self.sequence);
        w.u8(self.flags);
        w.bytes(&[0, 0, 0]);
        w.address(self.response_address);
        w.u16(self.response_port);
        w.size(self.protocols.len())?;
        for p in &self.protocols {
            w.string(p)?;
        }
        let n = u16::try_from(self.channels.len()).map_err(|_| EncodeError::TooLarge {
            what: "search channel count",
            len: self.channels.len() as u64,
        })?;
        w.u16(n);
        for (id, name) in &self.channels {
            w.u32(*id);
            w.string(name)?;
        }
        Ok(())
    }

    /// True when the sender asked for an answer even if nothing is found.
    pub fn must_reply(&self) -> bool {
        self.flags & SEARCH_MUST_REPLY != 0
    }
}

/// A server's answer to a search (command 0x04).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchResponse {
    /// The server's GUID.
    pub guid: Guid,
    /// The sequence of the search answered.
    pub sequence: u32,
    /// The server's address (unspecified: use the sender's).
    pub address: IpAddr,
    /// The server's TCP port.
    pub port: u16,
    /// Transport ("tcp").
    pub protocol: String,
    /// Whether the ids below were found (false only for must-reply answers).
    pub found: bool,
    /// Search instance ids answered.
    pub ids: Vec<u32>,
}

impl SearchResponse {
    pub(crate) fn decode(r: &mut Reader) -> DecodeResult<Self> {
        let guid = r.guid()?;
        let sequence = r.u32()?;
        let address = r.address()?;
        let port = r.u16()?;
        let protocol = r.string()?;
        let found = r.u8()? != 0;
        let n = r.u16()? as usize;
        r.check_count("search response id count", n, 4)?;
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(r.u32()?);
        }
        Ok(SearchResponse {
            guid,
            sequence,
            address,
            port,
            protocol,
            found,
            ids,
        })
    }

    pub(crate) fn encode(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.guid(&self.guid);
        w.u32(self.sequence);
        w.address(self.address);
        w.u16(self.port);
        w.string(&self.protocol)?;
        w.u8(self.found as u8);
        let n = u16::try_from(self.ids.len()).map_err(|_| EncodeError::TooLarge {
            what: "search response id count",
            len: self.ids.len() as u64,
        })?;
        w.u16(n);
        for id in &self.ids {
            w.u32(*id);
        }
        Ok(())
    }
}
