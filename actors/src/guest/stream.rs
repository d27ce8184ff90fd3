//! [`AgentStream`]: an agent connection after the `ok` line of a streaming op (`attach`,
//! `get_archive`, `put_archive`), carrying binary frames (`hearth_proto::agent::frame`) both
//! ways. It is handed to the caller, so a long stream never blocks [`super::GuestActor`]'s
//! mailbox; dropping it (or both of its halves) closes the connection and gives the VM's
//! connection slot back to the actor.
//!
//! Reading is bounded: a header is checked (kind, length at most `MAX_PAYLOAD`) before its
//! payload is read, so a hostile agent cannot make hearthd buffer more than one frame.

use std::io::Cursor;
use std::sync::Arc;

use hearth_proto::agent::frame::{decode_header, Frame, FrameKind, HEADER_LEN, MAX_PAYLOAD};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::GuestError;

/// Gives a connection slot back when the last half of a stream is dropped.
pub(crate) struct SlotGuard(pub(crate) Box<dyn Fn() + Send + Sync>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        (self.0)();
    }
}

type Inner = tokio::io::Chain<Cursor<Vec<u8>>, OwnedReadHalf>;

/// The agent's side of a stream: frames from the agent.
pub struct FrameReader {
    inner: BufReader<Inner>,
    _slot: Arc<SlotGuard>,
}

/// The host's side of a stream: frames to the agent.
pub struct FrameWriter {
    inner: OwnedWriteHalf,
    _slot: Arc<SlotGuard>,
}

/// A connected stream to the agent, after the `ok` line.
pub struct AgentStream {
    /// Frames from the agent.
    pub reader: FrameReader,
    /// Frames to the agent.
    pub writer: FrameWriter,
}

impl std::fmt::Debug for AgentStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentStream")
    }
}

impl AgentStream {
    /// The stream over `reader` (whose buffer may already hold the first frames) and its
    /// connection slot.
    pub(crate) fn new(reader: BufReader<UnixStream>, slot: SlotGuard) -> Self {
        let buffered = reader.buffer().to_vec();
        let (read, write) = reader.into_inner().into_split();
        let slot = Arc::new(slot);
        AgentStream {
            reader: FrameReader {
                inner: BufReader::new(Cursor::new(buffered).chain(read)),
                _slot: slot.clone(),
            },
            writer: FrameWriter {
                inner: write,
                _slot: slot,
            },
        }
    }

    /// The two halves, to drive each way from its own task or future.
    #[must_use]
    pub fn into_split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }
}

impl FrameReader {
    /// The next frame; `Ok(None)` when the agent closed the connection between frames. A
    /// bad header, an oversized length or a stream cut inside a frame is
    /// [`GuestError::Protocol`].
    ///
    /// # Errors
    ///
    /// [`GuestError::Protocol`] for a broken frame, [`GuestError::Stream`] for a failed read.
    pub async fn next(&mut self) -> Result<Option<Frame>, GuestError> {
        read_frame(&mut self.inner).await
    }
}

/// Reads one frame from `r` (see [`FrameReader::next`]).
///
/// # Errors
///
/// As [`FrameReader::next`].
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, GuestError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        let n = r
            .read(&mut header[got..])
            .await
            .map_err(|e| GuestError::stream(format!("reading a frame: {e}")))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(GuestError::protocol("stream ended inside a frame header"));
        }
        got += n;
    }
    let (kind, len) = decode_header(header).map_err(|e| GuestError::protocol(e.to_string()))?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)
        .await
        .map_err(|_| GuestError::protocol(format!("stream ended inside a {kind:?} frame")))?;
    Ok(Some(Frame { kind, payload }))
}

impl FrameWriter {
    /// Sends one frame (its payload at most `MAX_PAYLOAD` bytes).
    ///
    /// # Errors
    ///
    /// [`GuestError::Stream`] when the write fails (the agent went away).
    pub async fn send(&mut self, frame: &Frame) -> Result<(), GuestError> {
        self.send_raw(frame.kind, &frame.payload).await
    }

    /// Sends `bytes` as frames of `kind`, split into payloads of at most `MAX_PAYLOAD`.
    /// Each write is awaited, so a slow agent slows the caller down (backpressure).
    ///
    /// # Errors
    ///
    /// [`GuestError::Stream`] when a write fails.
    pub async fn send_chunked(&mut self, kind: FrameKind, bytes: &[u8]) -> Result<(), GuestError> {
        for chunk in bytes.chunks(MAX_PAYLOAD) {
            self.send_raw(kind, chunk).await?;
        }
        Ok(())
    }

    async fn send_raw(&mut self, kind: FrameKind, payload: &[u8]) -> Result<(), GuestError> {
        debug_assert!(payload.len() <= MAX_PAYLOAD);
        let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
        buf.extend_from_slice(&hearth_proto::agent::frame::encode_header(
            kind,
            payload.len(),
        ));
        buf.extend_from_slice(payload);
        self.inner
            .write_all(&buf)
            .await
            .map_err(|e| GuestError::stream(format!("writing a {kind:?} frame: {e}")))
    }

    /// Half-closes the connection (no more frames from the host).
    ///
    /// # Errors
    ///
    /// [`GuestError::Stream`] when the shutdown fails.
    pub async fn shutdown(&mut self) -> Result<(), GuestError> {
        self.inner
            .shutdown()
            .await
            .map_err(|e| GuestError::stream(format!("closing the stream: {e}")))
    }
}
