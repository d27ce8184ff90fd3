//! A minimal HTTP/1.1 server side, enough for Firecracker's API: requests parsed with
//! `httparse`, bodies delimited by `Content-Length`, keep-alive unless the client says
//! `Connection: close`, and responses shaped like micro-http's.

use std::io::{self, Read, Write};

/// The largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Firecracker's default `--http-api-max-payload-size` (51200 bytes).
pub const MAX_BODY: usize = 51_200;

/// One parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `PUT`, `PATCH`, ...
    pub method: String,
    /// The absolute path, e.g. `/drives/rootfs`.
    pub path: String,
    /// The body, `None` when absent or empty (as micro-http reports it).
    pub body: Option<Vec<u8>>,
    /// Whether the client asked to close the connection after this request.
    pub close: bool,
}

/// A response to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// JSON body, if any.
    pub body: Option<String>,
}

impl Response {
    /// `204 No Content`.
    pub fn no_content() -> Self {
        Self {
            status: 204,
            body: None,
        }
    }

    /// `200 OK` with a JSON body.
    pub fn ok(body: String) -> Self {
        Self {
            status: 200,
            body: Some(body),
        }
    }

    /// An error status with a `{"fault_message": ...}` body.
    pub fn fault(status: u16, message: &str) -> Self {
        let body = serde_json::to_string(&hearth_proto::firecracker::FaultBody::new(message))
            .unwrap_or_else(|_| String::from("{}"));
        Self {
            status,
            body: Some(body),
        }
    }

    /// Serialises the response.
    pub fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            204 => "No Content",
            400 => "Bad Request",
            404 => "Not Found",
            413 => "Payload Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "",
        };
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nServer: Firecracker API\r\nConnection: keep-alive\r\n",
            self.status, reason
        );
        if let Some(body) = &self.body {
            out.push_str("Content-Type: application/json\r\n");
            out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
            out.push_str(body);
        } else {
            out.push_str("\r\n");
        }
        out.into_bytes()
    }
}

/// Reading a request failed in a way that ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The peer closed the connection between requests.
    #[error("Connection closed")]
    Closed,
    /// The request is malformed; the response to send before closing.
    #[error("Malformed request: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// Reading failed.
    #[error("Reading the request failed")]
    Io {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Reads requests from one connection, keeping bytes that arrive beyond a request.
pub struct RequestReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: Read> RequestReader<R> {
    /// Wraps a connection.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) -> Result<usize, HttpError> {
        let mut chunk = [0u8; 4096];
        let n = self
            .inner
            .read(&mut chunk)
            .map_err(|source| HttpError::Io { source })?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads the next request.
    pub fn next_request(&mut self) -> Result<Request, HttpError> {
        let malformed = |reason: &str| HttpError::Malformed {
            reason: reason.to_owned(),
        };
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&self.buf) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let method = req.method.unwrap_or_default().to_owned();
                    let path = req.path.unwrap_or_default().to_owned();
                    let mut len = 0usize;
                    let mut close = req.version == Some(0);
                    for h in req.headers.iter() {
                        let value = String::from_utf8_lossy(h.value);
                        if h.name.eq_ignore_ascii_case("content-length") {
                            len = value
                                .trim()
                                .parse()
                                .map_err(|_| malformed("Invalid Content-Length"))?;
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            close = value.trim().eq_ignore_ascii_case("close");
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            return Err(malformed("Transfer-Encoding is not supported"));
                        }
                    }
                    if len > MAX_BODY {
                        return Err(malformed("Payload too large"));
                    }
                    while self.buf.len() < head_len + len {
                        if self.fill()? == 0 {
                            return Err(malformed("Body shorter than Content-Length"));
                        }
                    }
                    let body: Vec<u8> = self.buf[head_len..head_len + len].to_vec();
                    self.buf.drain(..head_len + len);
                    return Ok(Request {
                        method,
                        path,
                        body: (!body.is_empty()).then_some(body),
                        close,
                    });
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        return Err(malformed("Request head too large"));
                    }
                    if self.fill()? == 0 {
                        return Err(if self.buf.is_empty() {
                            HttpError::Closed
                        } else {
                            malformed("Connection closed mid-request")
                        });
                    }
                }
                Err(e) => return Err(malformed(&e.to_string())),
            }
        }
    }
}

/// Writes a response.
pub fn write_response<W: Write>(w: &mut W, resp: &Response) -> io::Result<()> {
    w.write_all(&resp.to_bytes())?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pipelined_requests_with_bodies() {
        let raw = b"PUT /machine-config HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut r = RequestReader::new(&raw[..]);
        let a = r.next_request().unwrap();
        assert_eq!(a.method, "PUT");
        assert_eq!(a.path, "/machine-config");
        assert_eq!(a.body.as_deref(), Some(&b"{}"[..]));
        assert!(!a.close);
        let b = r.next_request().unwrap();
        assert_eq!(b.method, "GET");
        assert!(b.body.is_none());
        assert!(b.close);
        assert!(matches!(r.next_request(), Err(HttpError::Closed)));
    }

    #[test]
    fn rejects_garbage_and_short_bodies() {
        let mut r = RequestReader::new(&b"NOT HTTP\r\n\r\n"[..]);
        assert!(matches!(r.next_request(), Err(HttpError::Malformed { .. })));
        let mut r = RequestReader::new(&b"PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}"[..]);
        assert!(matches!(r.next_request(), Err(HttpError::Malformed { .. })));
    }

    #[test]
    fn response_shapes() {
        let s = String::from_utf8(Response::no_content().to_bytes()).unwrap();
        assert!(s.starts_with("HTTP/1.1 204 No Content\r\n"), "{s}");
        assert!(s.ends_with("\r\n\r\n"));
        let s = String::from_utf8(Response::fault(400, "Bad \"x\"").to_bytes()).unwrap();
        assert!(s.contains("Content-Length: 29\r\n"), "{s}");
        assert!(s.ends_with(r#"{"fault_message":"Bad \"x\""}"#), "{s}");
    }
}
