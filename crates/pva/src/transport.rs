//! Moving bytes: read whole frames from a TCP stream and write chunk lists with vectored writes.
//! No protocol logic lives here.

use std::io::{self, IoSlice};

use bytes::Bytes;
use pva_codec::{DecodeError, Frame, FrameDecoder};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Reads frames from a byte stream.
pub struct FrameReader<R> {
    io: R,
    decoder: FrameDecoder,
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
            if self.io.read_buf(buf).await? == 0 {
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
