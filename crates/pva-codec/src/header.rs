//! The 8-byte message header: magic, version, flags, command, payload size.

use crate::error::{DecodeError, DecodeResult};
use crate::wire::ByteOrder;

/// The first byte of every PVA message.
pub const MAGIC: u8 = 0xCA;
/// The protocol revision this codec speaks (pvxs and pvAccessCPP both send 2).
pub const PROTOCOL_VERSION: u8 = 2;
/// Bytes in a header.
pub const HEADER_SIZE: usize = 8;

/// Where a message stands in a segmented sequence (flag bits 4-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Segment {
    /// A whole message.
    None,
    /// The first part of a segmented message.
    First,
    /// A middle part.
    Middle,
    /// The last part.
    Last,
}

impl Segment {
    fn bits(self) -> u8 {
        match self {
            Segment::None => 0x00,
            Segment::First => 0x10,
            Segment::Last => 0x20,
            Segment::Middle => 0x30,
        }
    }

    fn from_bits(flags: u8) -> Self {
        match flags & 0x30 {
            0x10 => Segment::First,
            0x20 => Segment::Last,
            0x30 => Segment::Middle,
            _ => Segment::None,
        }
    }
}

/// Who sent a message (flag bit 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by a client.
    FromClient,
    /// Sent by a server.
    FromServer,
}

/// A decoded message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Protocol version of the sender.
    pub version: u8,
    /// Control message (flag bit 0) rather than application message.
    pub control: bool,
    /// Segmentation position.
    pub segment: Segment,
    /// Sender side.
    pub direction: Direction,
    /// Byte order of this message's numbers.
    pub order: ByteOrder,
    /// Command code.
    pub command: u8,
    /// Payload size; for control messages, the 32-bit value the message carries.
    pub payload_size: u32,
}

impl Header {
    /// An application message header.
    pub fn application(command: u8, direction: Direction, order: ByteOrder, size: u32) -> Self {
        Header {
            version: PROTOCOL_VERSION,
            control: false,
            segment: Segment::None,
            direction,
            order,
            command,
            payload_size: size,
        }
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        let mut f = self.segment.bits();
        if self.control {
            f |= 0x01;
        }
        if self.direction == Direction::FromServer {
            f |= 0x40;
        }
        if self.order == ByteOrder::Big {
            f |= 0x80;
        }
        f
    }

    /// Decode the 8 bytes of a header; the payload size is read in the order its flags say.
    pub fn decode(b: &[u8]) -> DecodeResult<Self> {
        let b: &[u8; HEADER_SIZE] =
            b.get(..HEADER_SIZE)
                .and_then(|s| s.try_into().ok())
                .ok_or(DecodeError::Truncated {
                    needed: HEADER_SIZE,
                    remaining: b.len(),
                })?;
        if b[0] != MAGIC {
            return Err(DecodeError::BadMagic(b[0]));
        }
        let flags = b[2];
        let order = if flags & 0x80 != 0 {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        };
        let size = [b[4], b[5], b[6], b[7]];
        Ok(Header {
            version: b[1],
            control: flags & 0x01 != 0,
            segment: Segment::from_bits(flags),
            direction: if flags & 0x40 != 0 {
                Direction::FromServer
            } else {
                Direction::FromClient
            },
            order,
            command: b[3],
            payload_size: match order {
                ByteOrder::Little => u32::from_le_bytes(size),
                ByteOrder::Big => u32::from_be_bytes(size),
            },
        })
    }

    /// Encode into 8 bytes.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let size = match self.order {
            ByteOrder::Little => self.payload_size.to_le_bytes(),
            ByteOrder::Big => self.payload_size.to_be_bytes(),
        };
        [
            MAGIC,
            self.version,
            self.flags(),
            self.command,
            size[0],
            size[1],
            size[2],
            size[3],
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_with_every_flag() {
        for segment in [
            Segment::None,
            Segment::First,
            Segment::Middle,
            Segment::Last,
        ] {
            for order in [ByteOrder::Little, ByteOrder::Big] {
                let h = Header {
                    segment,
                    control: segment == Segment::None,
                    ..Header::application(13, Direction::FromServer, order, 0x0102_0304)
                };
                assert_eq!(Header::decode(&h.encode()).unwrap(), h);
            }
        }
    }

    #[test]
    fn big_endian_size_is_read_big_endian() {
        let h = Header::decode(&[0xCA, 2, 0xC0, 10, 0, 0, 1, 0]).unwrap();
        assert_eq!(h.payload_size, 256);
        assert_eq!(h.order, ByteOrder::Big);
        assert_eq!(h.direction, Direction::FromServer);
    }

    #[test]
    fn bad_magic_is_refused() {
        assert_eq!(
            Header::decode(&[0xCB, 2, 0, 0, 0, 0, 0, 0]),
            Err(DecodeError::BadMagic(0xCB))
        );
    }
}
