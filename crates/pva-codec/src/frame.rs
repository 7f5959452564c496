//! Framing: cut a TCP byte stream into messages (reassembling segments), and write messages
//! with their headers, coalesced into one [`Writer`] and optionally segmented.

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, DecodeResult, EncodeError};
use crate::header::{Direction, Header, Segment, HEADER_SIZE};
use crate::wire::{ByteOrder, Writer};

/// One whole message: its header and its payload (segments already joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header (for a reassembled message: `Segment::None` and the total size).
    pub header: Header,
    /// The payload; empty for control messages.
    pub payload: Bytes,
}

/// Sans-I/O stream decoder. Read bytes into [`FrameDecoder::buffer`], then take messages
/// out with [`FrameDecoder::next_frame`] until it returns `None`. A message's payload is
/// split off the receive buffer without copying, unless it arrived in segments.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_message_size: usize,
    partial: Option<(Header, BytesMut)>,
}

impl FrameDecoder {
    /// A decoder refusing messages (or reassembled messages) over `max_message_size` bytes.
    pub fn new(max_message_size: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::with_capacity(64 * 1024),
            max_message_size,
            partial: None,
        }
    }

    /// The receive buffer: append bytes read from the socket here.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes still to come of the message begun in the buffer, once its header is there.
    /// A reader uses it to grow the buffer only when the message does not fit: growing a
    /// buffer that holds most of a large message copies all of it.
    pub fn missing(&self) -> Option<usize> {
        let header = Header::decode(self.buf.get(..HEADER_SIZE)?).ok()?;
        if header.control {
            return None;
        }
        (HEADER_SIZE + header.payload_size as usize).checked_sub(self.buf.len())
    }

    /// Append bytes (a copy; for tests and UDP).
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as messages.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.partial.as_ref().map_or(0, |(_, p)| p.len())
    }

    /// True while a segmented message is only partly received.
    pub fn in_segmented_message(&self) -> bool {
        self.partial.is_some()
    }

    /// The next whole message, `None` when more bytes are needed, or an error after which the
    /// stream cannot be trusted and the connection should be closed.
    pub fn next_frame(&mut self) -> DecodeResult<Option<Frame>> {
        loop {
            if self.buf.len() < HEADER_SIZE {
                return Ok(None);
            }
            let header = Header::decode(&self.buf[..HEADER_SIZE])?;
            if header.control {
                let _ = self.buf.split_to(HEADER_SIZE);
                return Ok(Some(Frame {
                    header,
                    payload: Bytes::new(),
                }));
            }
            let size = header.payload_size as usize;
            if size > self.max_message_size {
                return Err(DecodeError::MessageTooLarge {
                    size: size as u64,
                    limit: self.max_message_size as u64,
                });
            }
            if self.buf.len() < HEADER_SIZE + size {
                // Make room for the whole message at once so that it lands contiguously.
                self.buf.reserve(HEADER_SIZE + size - self.buf.len());
                return Ok(None);
            }
            let _ = self.buf.split_to(HEADER_SIZE);
            let payload = self.buf.split_to(size);
            match (header.segment, self.partial.take()) {
                (Segment::None, None) => {
                    return Ok(Some(Frame {
                        header,
                        payload: payload.freeze(),
                    }))
                }
                (Segment::First, None) => self.partial = Some((header, payload)),
                (Segment::Middle | Segment::Last, Some((first, mut acc))) => {
                    if first.command != header.command {
                        return Err(DecodeError::Segmentation(
                            "a segment of another command interrupted a segmented message",
                        ));
                    }
                    if acc.len() + payload.len() > self.max_message_size {
                        return Err(DecodeError::MessageTooLarge {
                            size: (acc.len() + payload.len()) as u64,
                            limit: self.max_message_size as u64,
                        });
                    }
                    acc.extend_from_slice(&payload);
                    if header.segment == Segment::Last {
                        let whole = Header {
                            segment: Segment::None,
                            payload_size: acc.len() as u32,
                            ..first
                        };
                        return Ok(Some(Frame {
                            header: whole,
                            payload: acc.freeze(),
                        }));
                    }
                    self.partial = Some((first, acc));
                }
                (Segment::None | Segment::First, Some(_)) => {
                    return Err(DecodeError::Segmentation(
                        "a new message began before the segmented one ended",
                    ))
                }
                (Segment::Middle | Segment::Last, None) => {
                    return Err(DecodeError::Segmentation(
                        "a continuation segment without a first segment",
                    ))
                }
            }
        }
    }
}

/// Control message commands.
pub mod control {
    /// Mark total bytes sent (flow control, unused by modern peers).
    pub const MARK_TOTAL_BYTES_SENT: u8 = 0;
    /// Acknowledge total bytes received.
    pub const ACK_TOTAL_BYTES_RECEIVED: u8 = 1;
    /// Server tells the client which byte order it will send.
    pub const SET_BYTE_ORDER: u8 = 2;
    /// Echo request (control form).
    pub const ECHO_REQUEST: u8 = 3;
    /// Echo response (control form).
    pub const ECHO_RESPONSE: u8 = 4;
}

/// Append one application message: header, then whatever `body` writes; the payload size is
/// filled in afterwards. Several messages may go into one writer to be sent in one write.
pub fn write_message<F>(
    w: &mut Writer,
    direction: Direction,
    command: u8,
    body: F,
) -> Result<(), EncodeError>
where
    F: FnOnce(&mut Writer) -> Result<(), EncodeError>,
{
    let header = Header::application(command, direction, w.order(), 0);
    let at = w.inline_pos();
    let start = w.len();
    w.bytes(&header.encode());
    body(w)?;
    let size = w.len() - start - HEADER_SIZE;
    let size = u32::try_from(size).map_err(|_| EncodeError::TooLarge {
        what: "message",
        len: size as u64,
    })?;
    w.patch_u32(at + 4, size);
    Ok(())
}

/// Append one control message carrying `value` in its size field.
pub fn write_control(w: &mut Writer, direction: Direction, command: u8, value: u32) {
    let header = Header {
        control: true,
        payload_size: value,
        ..Header::application(command, direction, w.order(), 0)
    };
    w.bytes(&header.encode());
}

/// Encode one application message into its own chunk list.
pub fn encode_message<F>(
    order: ByteOrder,
    direction: Direction,
    command: u8,
    body: F,
) -> Result<Vec<Bytes>, EncodeError>
where
    F: FnOnce(&mut Writer) -> Result<(), EncodeError>,
{
    let mut w = Writer::new(order);
    write_message(&mut w, direction, command, body)?;
    Ok(w.finish())
}

/// Split one encoded message (as produced by [`encode_message`]) into segments whose
/// payloads are at most `max_payload` bytes. The payload bytes are sliced, not copied.
/// A message that already fits is returned unchanged.
pub fn segment(message: Vec<Bytes>, max_payload: usize) -> DecodeResult<Vec<Bytes>> {
    let max_payload = max_payload.max(1);
    let first = message.first().ok_or(DecodeError::Truncated {
        needed: HEADER_SIZE,
        remaining: 0,
    })?;
    let header = Header::decode(first)?;
    let total = header.payload_size as usize;
    if header.control || total <= max_payload {
        return Ok(message);
    }
    let mut payload: Vec<Bytes> = Vec::with_capacity(message.len());
    payload.push(first.slice(HEADER_SIZE..));
    payload.extend(message.into_iter().skip(1));

    let mut out = Vec::new();
    let mut sent = 0;
    let mut chunks = payload.into_iter().filter(|c| !c.is_empty());
    let mut current = chunks.next().unwrap_or_default();
    while sent < total {
        let this = (total - sent).min(max_payload);
        let segment = match (sent == 0, sent + this == total) {
            (true, _) => Segment::First,
            (false, true) => Segment::Last,
            (false, false) => Segment::Middle,
        };
        let h = Header {
            segment,
            payload_size: this as u32,
            ..header
        };
        out.push(Bytes::copy_from_slice(&h.encode()));
        let mut need = this;
        while need > 0 {
            if current.is_empty() {
                current = chunks.next().ok_or(DecodeError::Truncated {
                    needed: need,
                    remaining: 0,
                })?;
            }
            let take = need.min(current.len());
            out.push(current.split_to(take));
            need -= take;
        }
        sent += this;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn messages_split_out_of_a_byte_stream_one_byte_at_a_time() {
        let mut w = Writer::new(ByteOrder::Big);
        write_control(&mut w, Direction::FromServer, control::SET_BYTE_ORDER, 0);
        write_message(&mut w, Direction::FromServer, 2, |w| {
            w.bytes(b"hello");
            Ok(())
        })
        .unwrap();
        let stream = w.finish_contiguous();
        let mut d = FrameDecoder::new(1024);
        let mut frames = Vec::new();
        for b in stream.iter() {
            d.extend(&[*b]);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 2);
        assert!(frames[0].header.control);
        assert_eq!(frames[0].header.command, control::SET_BYTE_ORDER);
        assert_eq!(&frames[1].payload[..], b"hello");
        assert_eq!(frames[1].header.order, ByteOrder::Big);
    }

    #[test]
    fn what_is_missing_of_a_message_begun_in_the_buffer() {
        let mut w = Writer::new(ByteOrder::Little);
        write_message(&mut w, Direction::FromServer, 2, |w| {
            w.bytes(&[7u8; 1000]);
            Ok(())
        })
        .unwrap();
        let bytes = w.finish_contiguous();
        let mut d = FrameDecoder::new(1 << 20);
        assert_eq!(d.missing(), None, "nothing buffered");
        d.extend(&bytes[..5]);
        assert_eq!(d.missing(), None, "no whole header yet");
        d.extend(&bytes[5..300]);
        assert!(d.next_frame().unwrap().is_none());
        assert_eq!(d.missing(), Some(bytes.len() - 300));
        assert!(
            d.buffer().capacity() >= bytes.len(),
            "room for the whole message"
        );
        d.extend(&bytes[300..]);
        assert_eq!(d.missing(), Some(0));
        assert_eq!(d.next_frame().unwrap().unwrap().payload.len(), 1000);
        assert_eq!(d.missing(), None);
    }

    #[test]
    fn segmented_message_reassembles() {
        let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let big = Bytes::from(body.clone());
        let msg = encode_message(ByteOrder::Little, Direction::FromServer, 13, |w| {
            w.u32(7);
            w.shared(&big);
            Ok(())
        })
        .unwrap();
        let segs = segment(msg, 3000).unwrap();
        let mut d = FrameDecoder::new(1 << 20);
        d.extend(&joined(&segs));
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.header.segment, Segment::None);
        assert_eq!(f.payload.len(), 10_004);
        assert_eq!(&f.payload[4..], &body[..]);
        assert!(d.next_frame().unwrap().is_none());
    }

    #[test]
    fn oversized_message_is_refused_from_its_header() {
        let mut d = FrameDecoder::new(100);
        d.extend(
            &Header::application(10, Direction::FromClient, ByteOrder::Little, 1 << 30).encode(),
        );
        assert!(matches!(
            d.next_frame(),
            Err(DecodeError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn continuation_without_first_segment_is_an_error() {
        let h = Header {
            segment: Segment::Last,
            ..Header::application(10, Direction::FromClient, ByteOrder::Little, 0)
        };
        let mut d = FrameDecoder::new(100);
        d.extend(&h.encode());
        assert!(matches!(d.next_frame(), Err(DecodeError::Segmentation(_))));
    }
}
