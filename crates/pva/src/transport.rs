//! Moving bytes: read whole frames from a TCP stream and write chunk lists with vectored writes.
//! No protocol logic lives here.

use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;

use bytes::Bytes;
use pva_codec::{DecodeError, Frame, FrameDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;

/// Asks a socket to wake its reader only once this many bytes wait in it.
type SetLowWater<R> = fn(&R, usize) -> io::Result<()>;

/// Reads frames from a byte stream.
pub struct FrameReader<R> {
    io: R,
    decoder: FrameDecoder,
    /// For sockets: how to set the low-water mark, and the mark set now.
    low_water: Option<(SetLowWater<R>, usize)>,
}

/// The most a reader waits for before it is woken in a large message: a 2 MiB frame takes a
/// few reads and wake-ups rather than a dozen.
const LOW_WATER_MAX: usize = 1024 * 1024;

/// Below this many bytes still to come, the reader is woken by any data (the kernel's default).
const LOW_WATER_MIN: usize = 64 * 1024;

/// The low-water mark for a message of which `missing` bytes are still to come: half of them,
/// within the bounds above. Halving keeps the reader close behind the writer, so that once the
/// last byte is in, at most `LOW_WATER_MIN` is left to copy; a mark of all that is missing left
/// up to `LOW_WATER_MAX` to copy after the last byte (latency figures in BENCHMARKS.md). Never
/// more than the peer is bound to send, so the reader cannot wait for bytes that never come.
fn low_water_for(missing: Option<usize>) -> usize {
    match missing {
        Some(m) if m >= LOW_WATER_MIN => (m / 2).clamp(LOW_WATER_MIN, LOW_WATER_MAX),
        _ => 1,
    }
}

/// Set `SO_RCVLOWAT` of a TCP connection's socket.
fn set_tcp_low_water(half: &OwnedReadHalf, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is the open socket `half` borrows, and the option value is a
    // c_int whose size is passed along with its address, as setsockopt(2) requires.
    let rc = unsafe {
        libc::setsockopt(
            half.as_ref().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl FrameReader<OwnedReadHalf> {
    /// Read frames from a TCP connection. While a large message arrives, the kernel is asked
    /// (`SO_RCVLOWAT`) to wake the reader only when a good part of the rest is there, instead
    /// of at every packet: fewer reads, wake-ups and context switches per frame on both sides.
    pub fn tcp(io: OwnedReadHalf, max_message_size: usize) -> Self {
        FrameReader {
            low_water: Some((set_tcp_low_water, 1)),
            ..FrameReader::new(io, max_message_size)
        }
    }
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed.
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not a valid PVA stream.
    #[error("bad stream: {0}")]
    Decode(#[from] DecodeError),
}

/// Smallest read attempted, so that small reads still fill the buffer efficiently.
const READ_CHUNK: usize = 64 * 1024;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Read frames from `io`, refusing messages over `max_message_size`.
    pub fn new(io: R, max_message_size: usize) -> Self {
        FrameReader {
            io,
            decoder: FrameDecoder::new(max_message_size),
            low_water: None,
        }
    }

    /// Give back the stream (bytes already buffered are dropped).
    pub fn into_inner(self) -> R {
        self.io
    }

    /// The next frame if it is already buffered whole, without reading: lets a caller handle
    /// every frame one read brought before acting on them.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        Ok(self.decoder.next_frame()?)
    }

    /// The next frame, or `None` at a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            // The decoder made room for a message begun in the buffer: while the rest fits, do
            // not grow it (that would copy the whole message read so far).
            let missing = self.decoder.missing();
            let buf = self.decoder.buffer();
            let room = buf.capacity() - buf.len();
            if room < READ_CHUNK / 4 && missing.is_none_or(|m| m > room) {
                buf.reserve(READ_CHUNK);
            }
            if let Some((set, current)) = &mut self.low_water {
                let wanted = low_water_for(missing);
                if wanted != *current {
                    match set(&self.io, wanted) {
                        Ok(()) => *current = wanted,
                        // Never set yet: the socket wakes at every packet, as without the mark.
                        Err(e) if *current == 1 => {
                            tracing::debug!("reading without a low-water mark: {e}");
                            self.low_water = None;
                        }
                        // A mark left higher than the next message may owe could stall it.
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if self.io.read_buf(self.decoder.buffer()).await? == 0 {
                return if self.decoder.buffered() == 0 {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stream ended inside a message",
                    )
                    .into())
                };
            }
        }
    }
}

/// Write every chunk, in order, with as few vectored writes as the socket allows.
pub async fn write_chunks<W: AsyncWrite + Unpin>(w: &mut W, chunks: &[Bytes]) -> io::Result<()> {
    const MAX_SLICES: usize = 64;
    let mut index = 0;
    let mut offset = 0;
    while index < chunks.len() {
        let slices: Vec<IoSlice<'_>> = chunks[index..]
            .iter()
            .take(MAX_SLICES)
            .enumerate()
            .map(|(i, c)| IoSlice::new(if i == 0 { &c[offset..] } else { &c[..] }))
            .collect();
        let mut written = w.write_vectored(&slices).await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 && index < chunks.len() {
            let left = chunks[index].len() - offset;
            if written >= left {
                written -= left;
                index += 1;
                offset = 0;
            } else {
                offset += written;
                written = 0;
            }
        }
        while index < chunks.len() && chunks[index].len() == offset {
            index += 1;
            offset = 0;
        }
    }
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use pva_codec::{ByteOrder, Direction, Header};
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpStream};

    #[test]
    fn the_low_water_mark_never_asks_for_more_than_the_message_still_owes() {
        assert_eq!(low_water_for(None), 1);
        assert_eq!(low_water_for(Some(LOW_WATER_MIN - 1)), 1);
        assert_eq!(low_water_for(Some(LOW_WATER_MIN)), LOW_WATER_MIN);
        assert_eq!(low_water_for(Some(2 * LOW_WATER_MIN - 1)), LOW_WATER_MIN);
        assert_eq!(low_water_for(Some(700_000)), 350_000);
        assert_eq!(low_water_for(Some(50 << 20)), LOW_WATER_MAX);
        for missing in [LOW_WATER_MIN, 100_000, 700_000, 3 << 20] {
            assert!(low_water_for(Some(missing)) <= missing);
        }
    }

    /// A large message that trickles in, its last piece smaller than any low-water mark, then
    /// a small one: a reader that waited for more than the peer owes would hang here.
    #[tokio::test]
    async fn a_tcp_reader_gets_large_messages_that_arrive_in_pieces() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sizes: [u32; 3] = [3 << 20, LOW_WATER_MIN as u32 + 1, 10];
        let writer = tokio::spawn(async move {
            let mut out = TcpStream::connect(addr).await.unwrap();
            for (n, size) in sizes.into_iter().enumerate() {
                let header =
                    Header::application(n as u8, Direction::FromServer, ByteOrder::Little, size);
                let mut message = header.encode().to_vec();
                message.extend((0..size).map(|i| i as u8));
                // The tail of each message comes alone, after a pause.
                let (body, tail) = message.split_at(message.len() - 5);
                for piece in body.chunks(300_000) {
                    out.write_all(piece).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                out.write_all(tail).await.unwrap();
            }
            // Keep the connection open: the reader must not rely on the end of the stream.
            tokio::time::sleep(Duration::from_secs(10)).await;
        });
        let (stream, _) = listener.accept().await.unwrap();
        let (read, _write) = stream.into_split();
        let mut reader = FrameReader::tcp(read, 64 << 20);
        for (n, size) in sizes.into_iter().enumerate() {
            let frame = tokio::time::timeout(Duration::from_secs(10), reader.next())
                .await
                .unwrap_or_else(|_| panic!("message {n} of {size} bytes never came"))
                .unwrap()
                .unwrap();
            assert_eq!(frame.header.command, n as u8);
            assert_eq!(frame.payload.len(), size as usize);
            assert!(frame.payload.iter().enumerate().all(|(i, b)| *b == i as u8));
        }
        writer.abort();
    }
}
