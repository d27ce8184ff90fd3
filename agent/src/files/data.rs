//! A tar stream as `DATA` frames: a writer that cuts it into frames of at most
//! [`MAX_PAYLOAD`] bytes, and a reader that joins the host's frames back until `END`.

use std::io::{self, Read, Write};

use hearth_proto::agent::frame::{read_frame, write_frame, Frame, FrameKind, MAX_PAYLOAD};
use hearth_proto::agent::{codes, ErrorBody};

/// Writes bytes as `DATA` frames of [`MAX_PAYLOAD`] bytes (the last one shorter on flush).
pub struct DataWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> DataWriter<W> {
    /// A writer over `inner`.
    pub fn new(inner: W) -> Self {
        DataWriter {
            inner,
            buf: Vec::with_capacity(MAX_PAYLOAD),
        }
    }

    fn emit(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let payload = std::mem::replace(&mut self.buf, Vec::with_capacity(MAX_PAYLOAD));
            write_frame(&mut self.inner, &Frame::new(FrameKind::Data, payload))?;
        }
        Ok(())
    }

    /// Flushes what is buffered and returns the inner writer.
    ///
    /// # Errors
    ///
    /// The inner writer's.
    pub fn finish(mut self) -> io::Result<W> {
        self.emit()?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for DataWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_PAYLOAD - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_PAYLOAD {
            self.emit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.emit()?;
        self.inner.flush()
    }
}

/// Reads the bytes of the host's `DATA` frames; EOF at `END`. Anything else fails the read and
/// is kept in [`DataReader::failure`] as the error to answer.
pub struct DataReader<R: Read> {
    inner: R,
    chunk: Vec<u8>,
    pos: usize,
    ended: bool,
    /// Why the stream failed, when it did.
    pub failure: Option<ErrorBody>,
}

impl<R: Read> DataReader<R> {
    /// A reader over `inner`.
    pub fn new(inner: R) -> Self {
        DataReader {
            inner,
            chunk: Vec::new(),
            pos: 0,
            ended: false,
            failure: None,
        }
    }

    /// Whether `END` was read.
    pub fn ended(&self) -> bool {
        self.ended
    }

    fn fail(&mut self, e: ErrorBody) -> io::Error {
        let err = io::Error::new(io::ErrorKind::InvalidData, e.message.clone());
        self.failure = Some(e);
        err
    }
}

impl<R: Read> Read for DataReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            if let Some(e) = &self.failure {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    e.message.clone(),
                ));
            }
            match read_frame(&mut self.inner) {
                Ok(Some(f)) if f.kind == FrameKind::Data => {
                    self.chunk = f.payload;
                    self.pos = 0;
                }
                Ok(Some(f)) if f.kind == FrameKind::End && f.payload.is_empty() => {
                    self.ended = true;
                }
                Ok(Some(f)) if f.kind == FrameKind::Error => {
                    let why = f.as_error().map_or_else(|e| e.to_string(), |b| b.message);
                    return Err(self.fail(ErrorBody::new(
                        codes::ARCHIVE,
                        format!("The host aborted the archive: {why}"),
                    )));
                }
                Ok(Some(f)) => {
                    return Err(self.fail(ErrorBody::new(
                        codes::BAD_FRAME,
                        format!("unexpected {:?} frame in an archive stream", f.kind),
                    )))
                }
                Ok(None) => {
                    return Err(self.fail(ErrorBody::new(
                        codes::ARCHIVE,
                        "The host closed the stream before END",
                    )))
                }
                Err(e) => return Err(self.fail(e.to_error_body())),
            }
        }
        let n = out.len().min(self.chunk.len() - self.pos);
        out[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
