//! The binary framing of session and archive streams (protocol v2), used on a connection after
//! the `ok` line of `exec` (attached), `attach`, `get_archive` and `put_archive`.
//!
//! ```text
//! +--------+-------------------+---------------------+
//! | kind   | length            | payload             |
//! | 1 byte | 4 bytes, big end. | `length` bytes      |
//! +--------+-------------------+---------------------+
//! ```
//!
//! `length` is at most [`MAX_PAYLOAD`]; a longer one, an unknown kind, or a payload of the wrong
//! shape for its kind is a framing error that ends the stream. Kinds 0..=4 are numbered as
//! Kubernetes' exec channels (`v5.channel.k8s.io`) so hearthd maps them one to one.

use std::io::{self, Read, Write};

use super::exec::{ExitStatus, WindowSize};
use super::files::ArchiveSummary;
use super::{AgentProtoError, ErrorBody};

/// The largest payload of one frame (64 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// The length of a frame header.
pub const HEADER_LEN: usize = 5;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Host -> agent: bytes for the process's stdin.
    Stdin = 0,
    /// Agent -> host: bytes the process wrote to stdout (or to its PTY).
    Stdout = 1,
    /// Agent -> host: bytes the process wrote to stderr.
    Stderr = 2,
    /// Agent -> host, last frame of a session: JSON [`ExitStatus`].
    Exit = 3,
    /// Host -> agent: the PTY's new size, rows then columns, each a big-endian `u16`.
    Resize = 4,
    /// Host -> agent: close the process's stdin (empty payload).
    StdinEof = 5,
    /// Host -> agent: send a signal to the process group, a big-endian `i32`.
    Signal = 6,
    /// Either way, last frame: JSON [`ErrorBody`]; the stream ends with an error.
    Error = 7,
    /// Either way: bytes of a tar stream.
    Data = 8,
    /// Either way: the tar stream is complete (empty payload).
    End = 9,
    /// Agent -> host, last frame of a `put_archive`: JSON [`ArchiveSummary`].
    Done = 10,
}

impl TryFrom<u8> for FrameKind {
    type Error = AgentProtoError;
    fn try_from(b: u8) -> Result<Self, AgentProtoError> {
        Ok(match b {
            0 => FrameKind::Stdin,
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::Exit,
            4 => FrameKind::Resize,
            5 => FrameKind::StdinEof,
            6 => FrameKind::Signal,
            7 => FrameKind::Error,
            8 => FrameKind::Data,
            9 => FrameKind::End,
            10 => FrameKind::Done,
            other => return Err(bad(format!("unknown frame kind {other}"))),
        })
    }
}

fn bad(reason: String) -> AgentProtoError {
    AgentProtoError::BadFrame { reason }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it carries.
    pub kind: FrameKind,
    /// Its payload, at most [`MAX_PAYLOAD`] bytes.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame of `kind` carrying `payload` (callers keep it within [`MAX_PAYLOAD`]).
    pub fn new(kind: FrameKind, payload: Vec<u8>) -> Self {
        Frame { kind, payload }
    }

    /// An empty frame (`StdinEof`, `End`).
    pub fn empty(kind: FrameKind) -> Self {
        Frame::new(kind, Vec::new())
    }

    /// An `Exit` frame.
    pub fn exit(status: &ExitStatus) -> Self {
        Frame::new(FrameKind::Exit, json(status))
    }

    /// An `Error` frame.
    pub fn error(error: &ErrorBody) -> Self {
        Frame::new(FrameKind::Error, json(error))
    }

    /// A `Done` frame.
    pub fn done(summary: &ArchiveSummary) -> Self {
        Frame::new(FrameKind::Done, json(summary))
    }

    /// A `Resize` frame.
    pub fn resize(size: WindowSize) -> Self {
        let mut p = size.rows.to_be_bytes().to_vec();
        p.extend_from_slice(&size.cols.to_be_bytes());
        Frame::new(FrameKind::Resize, p)
    }

    /// A `Signal` frame.
    pub fn signal(signal: i32) -> Self {
        Frame::new(FrameKind::Signal, signal.to_be_bytes().to_vec())
    }

    /// The header of this frame.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        encode_header(self.kind, self.payload.len())
    }

    /// The whole frame as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.payload);
        out
    }

    /// The payload of an `Exit` frame.
    pub fn as_exit(&self) -> Result<ExitStatus, AgentProtoError> {
        self.json_of(FrameKind::Exit)
    }

    /// The payload of an `Error` frame.
    pub fn as_error(&self) -> Result<ErrorBody, AgentProtoError> {
        self.json_of(FrameKind::Error)
    }

    /// The payload of a `Done` frame.
    pub fn as_done(&self) -> Result<ArchiveSummary, AgentProtoError> {
        self.json_of(FrameKind::Done)
    }

    /// The payload of a `Resize` frame (both sides non-zero).
    pub fn as_resize(&self) -> Result<WindowSize, AgentProtoError> {
        self.expect_kind(FrameKind::Resize)?;
        let p: [u8; 4] = self.payload.as_slice().try_into().map_err(|_| {
            bad(format!(
                "resize payload is {} bytes, not 4",
                self.payload.len()
            ))
        })?;
        let size = WindowSize {
            rows: u16::from_be_bytes([p[0], p[1]]),
            cols: u16::from_be_bytes([p[2], p[3]]),
        };
        if size.rows == 0 || size.cols == 0 {
            return Err(bad(format!("resize to {}x{}", size.rows, size.cols)));
        }
        Ok(size)
    }

    /// The payload of a `Signal` frame (1..=64).
    pub fn as_signal(&self) -> Result<i32, AgentProtoError> {
        self.expect_kind(FrameKind::Signal)?;
        let p: [u8; 4] = self.payload.as_slice().try_into().map_err(|_| {
            bad(format!(
                "signal payload is {} bytes, not 4",
                self.payload.len()
            ))
        })?;
        let signal = i32::from_be_bytes(p);
        if !(1..=64).contains(&signal) {
            return Err(bad(format!("signal {signal} is not in 1..=64")));
        }
        Ok(signal)
    }

    fn expect_kind(&self, kind: FrameKind) -> Result<(), AgentProtoError> {
        if self.kind == kind {
            Ok(())
        } else {
            Err(bad(format!(
                "expected a {kind:?} frame, got {:?}",
                self.kind
            )))
        }
    }

    fn json_of<T: serde::de::DeserializeOwned>(
        &self,
        kind: FrameKind,
    ) -> Result<T, AgentProtoError> {
        self.expect_kind(kind)?;
        serde_json::from_slice(&self.payload)
            .map_err(|e| bad(format!("{kind:?} payload is not valid: {e}")))
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // These plain structs always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Encodes a header for `len` payload bytes (callers keep `len` within [`MAX_PAYLOAD`]).
pub fn encode_header(kind: FrameKind, len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [kind as u8, len[0], len[1], len[2], len[3]]
}

/// Decodes a header: the kind and the payload length, checked against [`MAX_PAYLOAD`].
pub fn decode_header(header: [u8; HEADER_LEN]) -> Result<(FrameKind, usize), AgentProtoError> {
    let kind = FrameKind::try_from(header[0])?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(bad(format!(
            "{kind:?} frame of {len} bytes is over {MAX_PAYLOAD}"
        )));
    }
    Ok((kind, len))
}

/// Writes one frame (header and payload) to a blocking writer.
pub fn write_frame<W: Write>(w: &mut W, frame: &Frame) -> io::Result<()> {
    w.write_all(&frame.header())?;
    w.write_all(&frame.payload)
}

/// Reads one frame from a blocking reader; `Ok(None)` at a clean end of stream (between
/// frames). A stream that ends inside a frame, or a bad header, is an error.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Frame>, AgentProtoError> {
    let mut header = [0u8; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(bad("stream ended inside a frame header".into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(AgentProtoError::Io { source }),
        }
    }
    let (kind, len) = decode_header(header)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            bad(format!("stream ended inside a {kind:?} frame"))
        } else {
            AgentProtoError::Io { source: e }
        }
    })?;
    Ok(Some(Frame { kind, payload }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::new(FrameKind::Stdout, b"hello".to_vec()),
            Frame::empty(FrameKind::StdinEof),
            Frame::exit(&ExitStatus::killed(15)),
            Frame::resize(WindowSize {
                rows: 50,
                cols: 132,
            }),
            Frame::signal(2),
            Frame::error(&ErrorBody::new("archive", "bad tar")),
            Frame::done(&ArchiveSummary {
                entries: 3,
                bytes: 10,
            }),
            Frame::new(FrameKind::Data, vec![7; MAX_PAYLOAD]),
        ];
        let mut wire = Vec::new();
        for f in &frames {
            write_frame(&mut wire, f).unwrap();
        }
        let mut r = io::Cursor::new(wire);
        for f in &frames {
            assert_eq!(&read_frame(&mut r).unwrap().unwrap(), f);
        }
        assert!(read_frame(&mut r).unwrap().is_none());
        assert_eq!(frames[2].as_exit().unwrap().code, 143);
        assert_eq!(frames[3].as_resize().unwrap().cols, 132);
        assert_eq!(frames[4].as_signal().unwrap(), 2);
        assert_eq!(frames[6].as_done().unwrap().entries, 3);
    }

    #[test]
    fn hostile_frames_are_refused() {
        // Over-long, unknown kind, truncated header and truncated payload.
        let mut over = vec![FrameKind::Stdout as u8];
        over.extend_from_slice(&(MAX_PAYLOAD as u32 + 1).to_be_bytes());
        let cases: Vec<Vec<u8>> = vec![
            over,
            vec![42, 0, 0, 0, 0],
            vec![1, 0, 0],
            vec![1, 0, 0, 0, 9, b'x'],
        ];
        for wire in cases {
            assert!(
                matches!(
                    read_frame(&mut io::Cursor::new(wire.clone())),
                    Err(AgentProtoError::BadFrame { .. })
                ),
                "{wire:?}"
            );
        }
        // Payloads of the wrong shape.
        assert!(Frame::new(FrameKind::Resize, vec![0, 1])
            .as_resize()
            .is_err());
        assert!(Frame::new(FrameKind::Resize, vec![0, 0, 0, 80])
            .as_resize()
            .is_err());
        assert!(Frame::new(FrameKind::Signal, 99i32.to_be_bytes().to_vec())
            .as_signal()
            .is_err());
        assert!(Frame::new(FrameKind::Exit, b"{not json".to_vec())
            .as_exit()
            .is_err());
        assert!(Frame::new(FrameKind::Stdout, b"{}".to_vec())
            .as_exit()
            .is_err());
    }
}
