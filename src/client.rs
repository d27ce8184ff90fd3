//! hearthctl's client of hearthd: HTTP/1.1 (hyper) over hearthd's Unix socket, blocking for
//! its callers on a small current-thread runtime. One connection per request
//! (`Connection: close`); methods are [`Method`]s and targets [`ApiPath`]s, whose parts are
//! percent-encoded. [`Client::request`] reads at most [`MAX_BODY`] bytes of an answer;
//! [`Client::stream`] hands back the body as it arrives (server-sent events through
//! [`SseReader`], NDJSON through [`BoundedLines`]), each line at most [`MAX_LINE`] bytes, so a
//! broken daemon cannot make hearthctl allocate without bound.

use std::fmt::Display;
use std::future::Future;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::OnceLock;

use bytes::{Buf, Bytes};
use hearth_proto::api::ErrorBody;
use http::{header, HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;
use tokio::runtime::Runtime;

pub use http::Method;

pub mod cli;
pub mod cp;
pub mod exec;
pub mod term;
pub mod untar;
pub mod upload;
pub mod ws;

/// The largest answer [`Client::request`] reads (event pages and VM lists are far smaller).
pub const MAX_BODY: usize = 16 << 20;
/// The longest line of a streamed answer (one event, one progress update).
pub const MAX_LINE: usize = 1 << 20;

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
    /// The answer is longer than this client reads.
    #[error("Answer from hearthd larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The request could not be built (a bad path or header); nothing was sent.
    #[error("Invalid request: {0}")]
    InvalidRequest(String),
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

impl From<hyper::Error> for ClientError {
    fn from(e: hyper::Error) -> Self {
        if e.is_parse() || e.is_parse_status() {
            ClientError::Protocol(e.to_string())
        } else {
            ClientError::Io(io::Error::other(e))
        }
    }
}

/// A request target on hearthd: a literal base path, then segments and query pairs that are
/// percent-encoded (everything but unreserved characters), so a name can never change the
/// path's meaning. `From<&str>` takes an already-encoded target as it is (checked when sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPath(String);

impl ApiPath {
    /// Starts at `base`, e.g. `/v1/vms`.
    pub fn new(base: &'static str) -> Self {
        ApiPath(base.to_owned())
    }

    /// Appends `/` and `segment`, encoded.
    #[must_use]
    pub fn segment(mut self, segment: &str) -> Self {
        self.0.push('/');
        self.0.push_str(&encode(segment));
        self
    }

    /// Appends the query pair `key=value`, both encoded.
    #[must_use]
    pub fn query(mut self, key: &str, value: impl Display) -> Self {
        self.0.push(if self.0.contains('?') { '&' } else { '?' });
        self.0.push_str(&encode(key));
        self.0.push('=');
        self.0.push_str(&encode(&value.to_string()));
        self
    }

    /// The target as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn uri(&self) -> Result<Uri, ClientError> {
        self.0
            .parse::<Uri>()
            .ok()
            .filter(|u| u.scheme().is_none() && u.path().starts_with('/'))
            .ok_or_else(|| ClientError::InvalidRequest(format!("bad path {:?}", self.0)))
    }
}

impl From<&str> for ApiPath {
    fn from(s: &str) -> Self {
        ApiPath(s.to_owned())
    }
}

impl From<String> for ApiPath {
    fn from(s: String) -> Self {
        ApiPath(s)
    }
}

impl From<&String> for ApiPath {
    fn from(s: &String) -> Self {
        ApiPath(s.clone())
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
    /// The body, as it arrives.
    pub body: Box<dyn BufRead + Send>,
}

impl StreamResponse {
    /// Reads the rest of the body (at most [`MAX_BODY`] bytes) into a [`Response`].
    pub fn into_response(self) -> Result<Response, ClientError> {
        let mut body = Vec::new();
        self.body.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
        if body.len() > MAX_BODY {
            return Err(ClientError::TooLarge { limit: MAX_BODY });
        }
        Ok(Response {
            status: self.status,
            headers: self.headers,
            body,
        })
    }
}

/// The runtime every client's I/O runs on: one per process, current-thread, driven only
/// while a caller blocks on it; nothing is spawned on it.
pub(crate) fn runtime() -> Result<&'static Runtime, ClientError> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| rt))
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

    pub(crate) fn connect_error(&self, e: io::Error) -> ClientError {
        match e.kind() {
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
        }
    }

    fn build(
        method: Method,
        path: &ApiPath,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path.uri()?)
            .header(header::HOST, "hearthd")
            .header(header::CONNECTION, "close");
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            req = req.header(header::ACCEPT, "application/json");
        }
        for (k, v) in headers {
            let name = HeaderName::try_from(*k)
                .map_err(|_| ClientError::InvalidRequest(format!("bad header name {k:?}")))?;
            let value = HeaderValue::try_from(*v)
                .map_err(|_| ClientError::InvalidRequest(format!("bad value for {k}")))?;
            req = req.header(name, value);
        }
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        } else if matches!(method, Method::POST | Method::PUT) {
            // hyper leaves out `Content-Length: 0`; hearthd's POSTs expect it.
            req = req.header(header::CONTENT_LENGTH, "0");
        }
        req.body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))
    }

    /// Connects and sends `req`; returns the answer's head with its body still to read, and
    /// the connection, which must be driven (see [`drive`]) while the body is read.
    async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(http::Response<Incoming>, Option<Conn>), ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.connect_error(e))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let mut conn = Some(Box::pin(conn));
        let resp = drive(&mut conn, sender.send_request(req)).await?;
        Ok((resp, conn))
    }

    /// Sends a request and returns the answer with its body still to read.
    pub fn stream(
        &self,
        method: Method,
        path: impl Into<ApiPath>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<StreamResponse, ClientError> {
        let req = Self::build(method, &path.into(), headers, body)?;
        let rt = runtime()?;
        let (resp, conn) = rt.block_on(self.send(req))?;
        let (status, headers) = head(&resp);
        let body = BufReader::new(BlockingBody {
            rt,
            conn,
            body: resp.into_body(),
            chunk: Bytes::new(),
            done: false,
        });
        Ok(StreamResponse {
            status,
            headers,
            body: Box::new(body),
        })
    }

    /// Sends a request and reads the whole answer (at most [`MAX_BODY`] bytes).
    pub fn request(
        &self,
        method: Method,
        path: impl Into<ApiPath>,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let req = Self::build(method, &path.into(), headers, body)?;
        runtime()?.block_on(async {
            let (resp, mut conn) = self.send(req).await?;
            let (status, headers) = head(&resp);
            let body = drive(&mut conn, read_body(resp.into_body(), MAX_BODY)).await?;
            Ok(Response {
                status,
                headers,
                body,
            })
        })
    }

    /// `GET path`, 2xx required, body parsed.
    pub fn get<T: DeserializeOwned>(&self, path: impl Into<ApiPath>) -> Result<T, ClientError> {
        self.request(Method::GET, path, &[], None)?.ok()?.json()
    }

    /// `method path` with a JSON body, 2xx required, body parsed.
    pub fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: impl Into<ApiPath>,
        headers: &[(&str, &str)],
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body)?;
        self.request(method, path, headers, Some(&body))?
            .ok()?
            .json()
    }
}

/// The status and headers of a response.
pub(crate) fn head(resp: &http::Response<Incoming>) -> (u16, Vec<(String, String)>) {
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).trim().to_owned(),
            )
        })
        .collect();
    (resp.status().as_u16(), headers)
}

/// Reads a whole body, refusing one longer than `limit` bytes: up front when its
/// `Content-Length` says so, else once the bytes received pass the limit.
async fn read_body(body: Incoming, limit: usize) -> Result<Vec<u8>, ClientError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(ClientError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => Err((*e).into()),
            Err(_) => Err(ClientError::TooLarge { limit }),
        },
    }
}

/// One connection's I/O: hyper's side of the socket.
type Conn = Pin<Box<hyper::client::conn::http1::Connection<TokioIo<UnixStream>, Full<Bytes>>>>;

/// Runs `work` while driving `conn` (until it ends), so no task outlives the request: when
/// the caller drops the connection, the socket closes at once. The connection's own result
/// is not needed: its failures reach `work` through hyper's sender and body.
async fn drive<F: Future>(conn: &mut Option<Conn>, work: F) -> F::Output {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if conn
            .as_mut()
            .is_some_and(|c| c.as_mut().poll(cx).is_ready())
        {
            *conn = None;
        }
        work.as_mut().poll(cx)
    })
    .await
}

/// A body read by blocking on the runtime for each frame, driving its connection meanwhile.
struct BlockingBody {
    rt: &'static Runtime,
    conn: Option<Conn>,
    body: Incoming,
    chunk: Bytes,
    done: bool,
}

impl Read for BlockingBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() && !self.done && !buf.is_empty() {
            match self.rt.block_on(drive(&mut self.conn, self.body.frame())) {
                None => self.done = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.chunk = data;
                    }
                }
                Some(Err(e)) => return Err(io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk.advance(n);
        Ok(n)
    }
}

/// Reads one line (up to and including `\n`) into `line`, refusing one longer than
/// [`MAX_LINE`]; `Ok(0)` at the end of the stream.
pub fn read_line_bounded(r: &mut impl BufRead, line: &mut String) -> io::Result<usize> {
    let n = r.take(MAX_LINE as u64 + 1).read_line(line)?;
    if n > MAX_LINE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line longer than {MAX_LINE} bytes"),
        ));
    }
    Ok(n)
}

/// The lines of a stream (without their line ends), each at most [`MAX_LINE`] bytes.
pub struct BoundedLines<R> {
    inner: R,
}

impl<R: BufRead> BoundedLines<R> {
    /// Lines of `inner`.
    pub fn new(inner: R) -> Self {
        BoundedLines { inner }
    }
}

impl<R: BufRead> Iterator for BoundedLines<R> {
    type Item = io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = String::new();
        match read_line_bounded(&mut self.inner, &mut line) {
            Err(e) => Some(Err(e)),
            Ok(0) => None,
            Ok(_) => Some(Ok(line.trim_end_matches(['\r', '\n']).to_owned())),
        }
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
/// Each line is at most [`MAX_LINE`] bytes, and so is each event's data.
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
            match read_line_bounded(&mut self.inner, &mut line) {
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
                    Some(d) if d.len() + value.len() >= MAX_LINE => {
                        return Some(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("event data longer than {MAX_LINE} bytes"),
                        )))
                    }
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
mod tests;
