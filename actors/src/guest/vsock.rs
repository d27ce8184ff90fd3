//! The host side of Firecracker's hybrid vsock: connect to the VM's vsock Unix socket, send
//! `CONNECT <port>\n` in one write, and read the bounded `OK <host port>\n` acknowledgement.
//! Used by the readiness probe (`firecracker::readiness`) and by [`super::GuestActor`], so the
//! handshake exists once.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The longest acknowledgement line accepted (`OK 4294967295\n` is 14 bytes).
const MAX_OK_LINE: usize = 64;

/// Why a hybrid-vsock connection or a line read on it failed.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The vsock Unix socket did not accept the connection.
    #[error("Cannot connect to {}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The connect error.
        source: io::Error,
    },
    /// Writing to the connection failed.
    #[error("Cannot write {what}")]
    Write {
        /// What was being written.
        what: &'static str,
        /// The write error.
        source: io::Error,
    },
    /// Reading from the connection failed.
    #[error("Cannot read {what}")]
    Read {
        /// What was being read.
        what: &'static str,
        /// The read error.
        source: io::Error,
    },
    /// The peer closed the connection before a whole line.
    #[error("Connection closed before {what}: is the agent listening?")]
    Closed {
        /// What was expected.
        what: &'static str,
    },
    /// A line longer than allowed (or cut off by the end of the stream).
    #[error("{what} is longer than {max} bytes")]
    LineTooLong {
        /// What was being read.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The acknowledgement is not `OK <port>`.
    #[error("Expected \"OK <port>\", got {line:?}")]
    BadAck {
        /// What came instead (lossy UTF-8).
        line: String,
    },
}

/// Parses Firecracker's `OK <host port>` acknowledgement.
#[must_use]
pub fn parse_ok_line(line: &str) -> Option<u32> {
    line.trim_end().strip_prefix("OK ")?.parse().ok()
}

/// Reads one `\n`-terminated line of at most `max` bytes (the `\n` included). Nothing past the
/// `\n` is consumed from `reader`'s buffer, so frames that follow stay readable.
///
/// # Errors
///
/// [`VsockError::Read`], [`VsockError::Closed`] before a whole line,
/// [`VsockError::LineTooLong`] past `max`.
pub async fn read_line<R>(
    reader: &mut BufReader<R>,
    max: usize,
    what: &'static str,
) -> Result<Vec<u8>, VsockError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(max as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|source| VsockError::Read { what, source })?;
    if n == 0 {
        return Err(VsockError::Closed { what });
    }
    if !line.ends_with(b"\n") {
        return if line.len() >= max {
            Err(VsockError::LineTooLong { what, max })
        } else {
            Err(VsockError::Closed { what })
        };
    }
    Ok(line)
}

/// Connects to guest port `port` through the hybrid vsock socket `uds`: the connection is
/// ready for the agent protocol when this returns. No timeout here: callers bound it.
///
/// # Errors
///
/// [`VsockError::Connect`] when nothing listens, [`VsockError::Closed`] when the connection is
/// closed without `OK` (nothing listens on the guest port), [`VsockError::BadAck`].
pub async fn connect(uds: &Path, port: u32) -> Result<BufReader<UnixStream>, VsockError> {
    let stream = UnixStream::connect(uds)
        .await
        .map_err(|source| VsockError::Connect {
            path: uds.to_path_buf(),
            source,
        })?;
    let mut reader = BufReader::new(stream);
    // One write: Firecracker reads the CONNECT line from a single packet.
    reader
        .get_mut()
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|source| VsockError::Write {
            what: "CONNECT",
            source,
        })?;
    let ok = read_line(&mut reader, MAX_OK_LINE, "the OK acknowledgement").await?;
    let ok = String::from_utf8_lossy(&ok);
    if parse_ok_line(&ok).is_none() {
        return Err(VsockError::BadAck {
            line: ok.trim_end().to_owned(),
        });
    }
    Ok(reader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_lines() {
        assert_eq!(parse_ok_line("OK 1073741824\n"), Some(1_073_741_824));
        assert_eq!(parse_ok_line("OK x\n"), None);
        assert_eq!(parse_ok_line("NOPE\n"), None);
    }

    #[actix::test]
    async fn lines_are_bounded_and_keep_what_follows() {
        let data = b"short\nnext".to_vec();
        let mut r = BufReader::new(&data[..]);
        assert_eq!(read_line(&mut r, 16, "x").await.unwrap(), b"short\n");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"next");
        let long = [b'a'; 100];
        let mut r = BufReader::new(&long[..]);
        assert!(matches!(
            read_line(&mut r, 16, "x").await,
            Err(VsockError::LineTooLong { max: 16, .. })
        ));
        let mut r = BufReader::new(&b"cut"[..]);
        assert!(matches!(
            read_line(&mut r, 16, "x").await,
            Err(VsockError::Closed { .. })
        ));
    }
}
