//! A minimal HTTP/1.1 client for Firecracker's API socket: one keep-alive connection,
//! `Content-Length` bodies only (Firecracker never sends chunked), JSON in and out. Errors
//! carry the status and Firecracker's `fault_message`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_proto::firecracker::FaultBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::backoff::Backoff;
use super::FirecrackerError;

/// The largest response body accepted.
const MAX_BODY: usize = 1 << 20;
/// The longest header line accepted.
const MAX_HEADER_LINE: usize = 8192;

/// One keep-alive connection to a Firecracker API socket.
#[derive(Debug)]
pub struct ApiClient {
    socket: PathBuf,
    conn: Option<BufReader<UnixStream>>,
}

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
    close: bool,
}

/// First retry delay while waiting for the API socket.
pub const SOCKET_BACKOFF_FIRST: Duration = Duration::from_micros(50);
/// Largest retry delay while waiting for the API socket: bounds how late a socket that
/// appears is noticed, at the cost of one `connect` per 250 µs while Firecracker starts.
pub const SOCKET_BACKOFF_MAX: Duration = Duration::from_micros(250);

/// Waits for `socket` to accept connections, retrying with a precise backoff
/// ([`SOCKET_BACKOFF_FIRST`] doubling to [`SOCKET_BACKOFF_MAX`]) until `timeout`; `abort` is
/// checked between attempts (e.g. "the process exited") and ends the wait early with its error.
pub async fn wait_for_socket(
    socket: &Path,
    timeout: Duration,
    mut abort: impl FnMut() -> Option<FirecrackerError>,
) -> Result<UnixStream, FirecrackerError> {
    let start = Instant::now();
    let mut backoff = Backoff::new(SOCKET_BACKOFF_FIRST, SOCKET_BACKOFF_MAX);
    loop {
        match UnixStream::connect(socket).await {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) => {}
            Err(source) => {
                return Err(FirecrackerError::ApiIo {
                    method: "CONNECT",
                    uri: socket.display().to_string(),
                    source,
                })
            }
        }
        if let Some(e) = abort() {
            return Err(e);
        }
        if start.elapsed() >= timeout {
            return Err(FirecrackerError::ApiSocketTimeout {
                path: socket.into(),
                waited: start.elapsed(),
            });
        }
        backoff.wait().await;
    }
}

impl ApiClient {
    /// A client for `socket` that connects on first use.
    pub fn new(socket: &Path) -> Self {
        ApiClient {
            socket: socket.into(),
            conn: None,
        }
    }

    /// A client on an already connected stream.
    pub fn with_stream(socket: &Path, stream: UnixStream) -> Self {
        ApiClient {
            socket: socket.into(),
            conn: Some(BufReader::new(stream)),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request and reads its response. On any I/O or framing error the connection
    /// is dropped (the next request reconnects); requests are never retried automatically,
    /// since `PUT /actions` is not idempotent.
    pub async fn request(
        &mut self,
        method: &'static str,
        uri: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, FirecrackerError> {
        let io = |source| FirecrackerError::ApiIo {
            method,
            uri: uri.to_string(),
            source,
        };
        if self.conn.is_none() {
            let s = UnixStream::connect(&self.socket).await.map_err(io)?;
            self.conn = Some(BufReader::new(s));
        }
        let result = async {
            let conn = self.conn.as_mut().ok_or_else(|| {
                io(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "no connection",
                ))
            })?;
            let head = encode_head(method, uri, body.map_or(0, <[u8]>::len));
            let mut msg = head.into_bytes();
            msg.extend_from_slice(body.unwrap_or_default());
            conn.get_mut().write_all(&msg).await.map_err(io)?;
            read_response(conn, method, uri).await
        }
        .await;
        match &result {
            Ok(r) if !r.close => {}
            _ => self.conn = None,
        }
        result
    }

    /// `PUT uri` with a JSON body; success is any 2xx.
    pub async fn put<T: Serialize>(&mut self, uri: &str, body: &T) -> Result<(), FirecrackerError> {
        self.send_json("PUT", uri, body).await
    }

    /// `PATCH uri` with a JSON body; success is any 2xx.
    pub async fn patch<T: Serialize>(
        &mut self,
        uri: &str,
        body: &T,
    ) -> Result<(), FirecrackerError> {
        self.send_json("PATCH", uri, body).await
    }

    async fn send_json<T: Serialize>(
        &mut self,
        method: &'static str,
        uri: &str,
        body: &T,
    ) -> Result<(), FirecrackerError> {
        let json = serde_json::to_vec(body).map_err(|e| FirecrackerError::ApiProtocol {
            method,
            uri: uri.into(),
            detail: format!("cannot encode body: {e}"),
        })?;
        let resp = self.request(method, uri, Some(&json)).await?;
        check_status(method, uri, &resp)
    }

    /// `GET uri`, decoding the JSON body.
    pub async fn get<T: DeserializeOwned>(&mut self, uri: &str) -> Result<T, FirecrackerError> {
        let resp = self.request("GET", uri, None).await?;
        check_status("GET", uri, &resp)?;
        serde_json::from_slice(&resp.body).map_err(|e| FirecrackerError::ApiProtocol {
            method: "GET",
            uri: uri.into(),
            detail: format!("cannot decode body: {e}"),
        })
    }
}

fn encode_head(method: &str, uri: &str, len: usize) -> String {
    let mut head =
        format!("{method} {uri} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
    if len > 0 || method != "GET" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {len}\r\n"
        ));
    }
    head.push_str("\r\n");
    head
}

/// Maps a non-2xx response to [`FirecrackerError::Api`] with the `fault_message`.
pub fn check_status(
    method: &'static str,
    uri: &str,
    resp: &Response,
) -> Result<(), FirecrackerError> {
    if (200..300).contains(&resp.status) {
        return Ok(());
    }
    let fault_message = serde_json::from_slice::<FaultBody>(&resp.body)
        .map(|f| f.fault_message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&resp.body).trim().to_string());
    Err(FirecrackerError::Api {
        method,
        uri: uri.into(),
        status: resp.status,
        fault_message,
    })
}

/// The parts of a response head hearth cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// `Content-Length`, if present.
    pub content_length: Option<usize>,
    /// `Connection: close` was sent.
    pub close: bool,
}

/// Parses a status line (`HTTP/1.1 204 No Content`).
pub fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.trim_end().splitn(3, ' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// Applies one header line to `head`; returns false for a malformed line.
pub fn parse_header(line: &str, head: &mut Head) -> bool {
    let Some((name, value)) = line.split_once(':') else {
        return false;
    };
    let value = value.trim();
    if name.eq_ignore_ascii_case("content-length") {
        match value.parse() {
            Ok(n) => head.content_length = Some(n),
            Err(_) => return false,
        }
    } else if name.eq_ignore_ascii_case("connection") {
        head.close = value.eq_ignore_ascii_case("close");
    } else if name.eq_ignore_ascii_case("transfer-encoding")
        && !value.eq_ignore_ascii_case("identity")
    {
        return false;
    }
    true
}

async fn read_line(
    conn: &mut BufReader<UnixStream>,
    method: &'static str,
    uri: &str,
) -> Result<String, FirecrackerError> {
    let mut line = Vec::new();
    let n = (&mut *conn)
        .take(MAX_HEADER_LINE as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|source| FirecrackerError::ApiIo {
            method,
            uri: uri.into(),
            source,
        })?;
    if n == 0 {
        return Err(FirecrackerError::ApiIo {
            method,
            uri: uri.into(),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the response",
            ),
        });
    }
    if !line.ends_with(b"\n") {
        return Err(protocol(method, uri, "header line too long or truncated"));
    }
    String::from_utf8(line).map_err(|_| protocol(method, uri, "header is not UTF-8"))
}

fn protocol(method: &'static str, uri: &str, detail: &str) -> FirecrackerError {
    FirecrackerError::ApiProtocol {
        method,
        uri: uri.into(),
        detail: detail.into(),
    }
}

async fn read_response(
    conn: &mut BufReader<UnixStream>,
    method: &'static str,
    uri: &str,
) -> Result<Response, FirecrackerError> {
    let status_line = read_line(conn, method, uri).await?;
    let status = parse_status_line(&status_line)
        .ok_or_else(|| protocol(method, uri, &format!("bad status line {status_line:?}")))?;
    let mut head = Head {
        status,
        content_length: None,
        close: false,
    };
    loop {
        let line = read_line(conn, method, uri).await?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if !parse_header(line, &mut head) {
            return Err(protocol(method, uri, &format!("bad header {line:?}")));
        }
    }
    let len = head.content_length.unwrap_or(0);
    if len > MAX_BODY {
        return Err(protocol(method, uri, "body too large"));
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)
        .await
        .map_err(|source| FirecrackerError::ApiIo {
            method,
            uri: uri.into(),
            source,
        })?;
    Ok(Response {
        status,
        body,
        close: head.close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line("HTTP/1.0 400 Bad Request"), Some(400));
        assert_eq!(parse_status_line("HTTP/1.1 200"), Some(200));
        assert_eq!(parse_status_line("SPDY 200 OK"), None);
        assert_eq!(parse_status_line("HTTP/1.1 20 OK"), None);
    }

    #[test]
    fn headers() {
        let mut h = Head {
            status: 200,
            content_length: None,
            close: false,
        };
        assert!(parse_header("Content-Length: 12", &mut h));
        assert!(parse_header("connection: Close", &mut h));
        assert_eq!((h.content_length, h.close), (Some(12), true));
        assert!(!parse_header("Content-Length: x", &mut h));
        assert!(!parse_header("Transfer-Encoding: chunked", &mut h));
        assert!(!parse_header("garbage", &mut h));
    }

    #[test]
    fn request_head() {
        assert_eq!(
            encode_head("PUT", "/actions", 2),
            "PUT /actions HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n"
        );
        assert!(!encode_head("GET", "/", 0).contains("Content-Length"));
    }

    /// A canned server: answers each request (read up to the blank line plus Content-Length)
    /// with the next canned response, on one connection.
    async fn serve(listener: UnixListener, responses: Vec<&'static str>) -> Vec<String> {
        let (stream, _) = listener.accept().await.unwrap();
        let mut conn = BufReader::new(stream);
        let mut seen = Vec::new();
        for resp in responses {
            let mut req = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                conn.read_line(&mut line).await.unwrap();
                if let Some(v) = line.strip_prefix("Content-Length: ") {
                    len = v.trim().parse().unwrap();
                }
                req.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            conn.read_exact(&mut body).await.unwrap();
            req.push_str(std::str::from_utf8(&body).unwrap());
            seen.push(req);
            conn.get_mut().write_all(resp.as_bytes()).await.unwrap();
        }
        seen
    }

    #[actix::test]
    async fn keep_alive_and_faults() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("api.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(serve(
            listener,
            vec![
                "HTTP/1.1 204 No Content\r\n\r\n",
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"fault_message\":\"No way.\"}",
                "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"a\":\"b c\"}\n",
            ],
        ));
        let mut client = ApiClient::new(&sock);
        client
            .put("/vsock", &serde_json::json!({"x": 1}))
            .await
            .unwrap();
        match client.put("/drives/a", &serde_json::json!({})).await {
            Err(FirecrackerError::Api {
                status,
                fault_message,
                ..
            }) => assert_eq!((status, fault_message.as_str()), (400, "No way.")),
            other => panic!("unexpected {other:?}"),
        }
        let v: serde_json::Value = client.get("/").await.unwrap();
        assert_eq!(v["a"], "b c");
        let seen = server.await.unwrap();
        assert!(seen[0].starts_with("PUT /vsock HTTP/1.1\r\n"));
        assert!(seen[0].ends_with("\r\n\r\n{\"x\":1}"));
        assert!(seen[2].starts_with("GET / HTTP/1.1\r\n"));
    }

    #[actix::test]
    async fn socket_wait_times_out_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let err = wait_for_socket(&sock, Duration::from_millis(20), || None)
            .await
            .unwrap_err();
        assert!(matches!(err, FirecrackerError::ApiSocketTimeout { .. }));
    }
}
