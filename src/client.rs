//! A small blocking HTTP/1.1 client over hearthd's Unix socket, used by hearthctl. One
//! connection per request (`Connection: close`); bodies framed by `Content-Length`,
//! `Transfer-Encoding: chunked` or the end of the connection. [`Client::stream`] hands back
//! the body as it arrives, for the server-sent event stream ([`SseReader`]).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use hearth_proto::api::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the socket path: no file, or a stale one.
    #[error("hearthd is not running ({reason} at {})", socket.display())]
    NotRunning {
        /// The socket path.
        socket: PathBuf,
        /// `no socket` or `connection refused`.
        reason: &'static str,
    },
    /// The socket exists but may not be opened by this user.
    #[error("Permission denied on {} (is this user in hearthd's socket group?)", socket.display())]
    PermissionDenied {
        /// The socket path.
        socket: PathBuf,
    },
    /// The connection failed mid-request.
    #[error("Connection to hearthd failed")]
    Io(#[from] io::Error),
    /// The answer is not HTTP this client understands.
    #[error("Malformed answer from hearthd: {0}")]
    Protocol(String),
    /// hearthd answered with an error.
    #[error("{message} (HTTP {status}, {code})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code.
        code: String,
        /// The error message.
        message: String,
    },
    /// A 2xx answer whose body is not what was expected.
    #[error("Unexpected answer body: {0}")]
    Decode(#[from] serde_json::Error),
}

impl ClientError {
    /// Whether hearthd could not be reached at all (as opposed to answering with an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::NotRunning { .. } | ClientError::PermissionDenied { .. }
        )
    }
}

/// An answer: status, headers (names lower-case) and the whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `Ok(self)` for 2xx, else the API error it carries.
    pub fn ok(self) -> Result<Response, ClientError> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&self.body) {
            Ok(b) => ClientError::Api {
                status: self.status,
                code: b.error.code,
                message: b.error.message,
            },
            Err(_) => ClientError::Api {
                status: self.status,
                code: "unknown".into(),
                message: String::from_utf8_lossy(&self.body).trim().to_owned(),
            },
        })
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ClientError> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

/// The client of one hearthd socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

/// An answer's status and headers, with the body still to read.
pub struct StreamResponse {
    /// The HTTP status.
    pub status: u16,
    /// The headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Box<dyn BufRead + Send>,
}

impl Client {
    /// A client of the socket at `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn connect(&self) -> Result<UnixStream, ClientError> {
        UnixStream::connect(&self.socket).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ClientError::NotRunning {
                socket: self.socket.clone(),
                reason: "no socket",
            },
            io::ErrorKind::ConnectionRefused => ClientError::NotRunning {
                socket: self.socket.clone(),
                reason: "connection refused",
            },
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied {
                socket: self.socket.clone(),
            },
            _ => ClientError::Io(e),
        })
    }

    /// Sends a request and returns the answer with its body still to read.
    pub fn stream(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<StreamResponse, ClientError> {
        let mut conn = self.connect()?;
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: hearthd\r\nConnection: close\r\n");
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            head.push_str("Accept: application/json\r\n");
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        } else if matches!(method, "POST" | "PUT") {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        conn.write_all(head.as_bytes())?;
        if let Some(b) = body {
            conn.write_all(b)?;
        }
        let mut reader = BufReader::new(conn);
        let (status, headers) = read_head(&mut reader)?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let body: Box<dyn BufRead + Send> = if header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            Box::new(BufReader::new(Chunked::new(reader)))
        } else if let Some(len) = header("content-length") {
            let len: u64 = len
                .trim()
                .parse()
                .map_err(|_| ClientError::Protocol(format!("bad Content-Length {len:?}")))?;
            Box::new(reader.take(len))
        } else {
            Box::new(reader)
        };
        Ok(StreamResponse {
            status,
            headers,
            body,
        })
    }

    /// Sends a request and reads the whole answer.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let mut s = self.stream(method, path, headers, body)?;
        let mut buf = Vec::new();
        s.body.read_to_end(&mut buf)?;
        Ok(Response {
            status: s.status,
            headers: s.headers,
            body: buf,
        })
    }

    /// `GET path`, 2xx required, body parsed.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request("GET", path, &[], None)?.ok()?.json()
    }

    /// `method path` with a JSON body, 2xx required, body parsed.
    pub fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body)?;
        self.request(method, path, headers, Some(&body))?
            .ok()?
            .json()
    }
}

fn read_head(r: &mut impl BufRead) -> Result<(u16, Vec<(String, String)>), ClientError> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    if line.is_empty() {
        return Err(ClientError::Protocol(
            "connection closed before an answer".into(),
        ));
    }
    let mut parts = line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| ClientError::Protocol(format!("bad status line {line:?}")))?,
        _ => return Err(ClientError::Protocol(format!("bad status line {line:?}"))),
    };
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(ClientError::Protocol("headers cut short".into()));
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| ClientError::Protocol(format!("bad header line {l:?}")))?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    Ok((status, headers))
}

/// Reads a `Transfer-Encoding: chunked` body as plain bytes.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Self {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        self.inner.read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let line = self.line()?;
            let size = line.split(';').next().unwrap_or("").trim();
            if size.is_empty() {
                return Err(bad("connection closed inside a chunked body".into()));
            }
            self.left = u64::from_str_radix(size, 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if self.left == 0 {
                // Trailers until an empty line.
                while !self.line()?.is_empty() {}
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(bad("connection closed inside a chunk".into()));
        }
        self.left -= n as u64;
        if self.left == 0 {
            self.line()?;
        }
        Ok(n)
    }
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// Its `id:` field.
    pub id: Option<String>,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

/// Splits a server-sent event stream into events (comments and unknown fields skipped).
pub struct SseReader<R> {
    inner: R,
}

impl<R: BufRead> SseReader<R> {
    /// Events of `inner`.
    pub fn new(inner: R) -> Self {
        SseReader { inner }
    }
}

impl<R: BufRead> Iterator for SseReader<R> {
    type Item = io::Result<SseEvent>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut id = None;
        let mut data: Option<String> = None;
        let mut line = String::new();
        loop {
            line.clear();
            match self.inner.read_line(&mut line) {
                Err(e) => return Some(Err(e)),
                Ok(0) => return None,
                Ok(_) => {}
            }
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                if let Some(data) = data.take() {
                    return Some(Ok(SseEvent { id, data }));
                }
                id = None;
                continue;
            }
            if l.starts_with(':') {
                continue;
            }
            let (field, value) = l.split_once(':').unwrap_or((l, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = Some(value.to_owned()),
                "data" => match &mut data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => data = Some(value.to_owned()),
                },
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunks() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n";
        let mut out = String::new();
        Chunked::new(&raw[..]).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello, world");
        let mut out = Vec::new();
        let cut = b"5\r\nhel";
        assert!(Chunked::new(&cut[..]).read_to_end(&mut out).is_err());
    }

    #[test]
    fn parses_heads() {
        let mut r = &b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nX-A: b c\r\n\r\n{}"[..];
        let (status, headers) = read_head(&mut r).unwrap();
        assert_eq!(status, 404);
        assert_eq!(headers[1], ("x-a".into(), "b c".into()));
        assert_eq!(r, b"{}");
        assert!(read_head(&mut &b"SSH-2.0\r\n\r\n"[..]).is_err());
    }

    #[test]
    fn splits_sse() {
        let raw = ": hi\n\nid: 1\ndata: {\"a\":1}\n\nid: 2\ndata: x\ndata: y\n\n: keepalive\n\n";
        let events: Vec<_> = SseReader::new(raw.as_bytes()).map(Result::unwrap).collect();
        assert_eq!(
            events,
            [
                SseEvent {
                    id: Some("1".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    id: Some("2".into()),
                    data: "x\ny".into()
                }
            ]
        );
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let r = Response {
            status: 404,
            headers: vec![],
            body: br#"{"error":{"code":"not_found","message":"No VM named \"a\""}}"#.to_vec(),
        };
        match r.ok().unwrap_err() {
            ClientError::Api { status, code, .. } => {
                assert_eq!((status, code.as_str()), (404, "not_found"))
            }
            e => panic!("{e}"),
        }
    }

    #[test]
    fn missing_socket_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let c = Client::new(dir.path().join("none.sock"));
        let e = c.request("GET", "/v1/health", &[], None).unwrap_err();
        assert!(e.is_unreachable());
        assert!(
            e.to_string()
                .starts_with("hearthd is not running (no socket at "),
            "{e}"
        );
    }
}
