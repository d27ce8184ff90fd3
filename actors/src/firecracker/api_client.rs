//! hearth's client of Firecracker's API socket: HTTP/1.1 (hyper) over one keep-alive Unix
//! stream, JSON in and out, typed methods and [`Endpoint`]s. Every response body is read
//! through a [`MAX_BODY`] limit, so a broken or hostile VMM cannot make hearth allocate
//! without bound. Errors carry the status and Firecracker's `fault_message`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hearth_proto::firecracker::FaultBody;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body as _;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

pub use http::Method;

use super::backoff::Backoff;
use super::FirecrackerError;

/// The largest response body accepted (Firecracker's answers are a few hundred bytes).
pub const MAX_BODY: usize = 1 << 20;
/// The largest response head (status line and headers) accepted; hyper's read buffer, which
/// it requires to be at least 8 KiB.
const MAX_HEAD: usize = 16 * 1024;

/// A Firecracker API resource hearth (or its tests) calls. Device ids are checked before use, so a path is
/// never built from text that could change its meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    /// `/`: the instance's state.
    Instance,
    /// `/actions`: `InstanceStart`, `SendCtrlAltDel`.
    Actions,
    /// `/machine-config`.
    MachineConfig,
    /// `/boot-source`.
    BootSource,
    /// `/drives/{drive_id}`.
    Drive(&'a str),
    /// `/network-interfaces/{iface_id}`.
    NetworkInterface(&'a str),
    /// `/vsock`.
    Vsock,
    /// `/logger`.
    Logger,
    /// `/metrics`.
    Metrics,
    /// `/vm`: pause and resume.
    Vm,
    /// `/vm/config`: the whole configuration.
    VmConfig,
    /// `/version`: the VMM's version.
    Version,
    /// `/snapshot/create`.
    SnapshotCreate,
    /// `/snapshot/load`.
    SnapshotLoad,
}

impl Endpoint<'_> {
    /// The request path. An id that is empty or holds anything but ASCII letters, digits,
    /// `_` and `-` (Firecracker's own rule is stricter) is refused.
    pub fn path(&self) -> Result<String, FirecrackerError> {
        let with_id = |prefix: &str, id: &str| {
            let ok = !id.is_empty()
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if ok {
                Ok(format!("{prefix}/{id}"))
            } else {
                Err(FirecrackerError::InvalidConfig {
                    what: "device id",
                    detail: format!("{id:?} may hold only ASCII letters, digits, '_' and '-'"),
                })
            }
        };
        match self {
            Endpoint::Instance => Ok("/".into()),
            Endpoint::Actions => Ok("/actions".into()),
            Endpoint::MachineConfig => Ok("/machine-config".into()),
            Endpoint::BootSource => Ok("/boot-source".into()),
            Endpoint::Drive(id) => with_id("/drives", id),
            Endpoint::NetworkInterface(id) => with_id("/network-interfaces", id),
            Endpoint::Vsock => Ok("/vsock".into()),
            Endpoint::Logger => Ok("/logger".into()),
            Endpoint::Metrics => Ok("/metrics".into()),
            Endpoint::Vm => Ok("/vm".into()),
            Endpoint::VmConfig => Ok("/vm/config".into()),
            Endpoint::Version => Ok("/version".into()),
            Endpoint::SnapshotCreate => Ok("/snapshot/create".into()),
            Endpoint::SnapshotLoad => Ok("/snapshot/load".into()),
        }
    }
}

/// One keep-alive connection to a Firecracker API socket.
#[derive(Debug)]
pub struct ApiClient {
    socket: PathBuf,
    conn: Conn,
}

#[derive(Debug)]
enum Conn {
    /// Connect on the next request.
    None,
    /// Connected (by [`wait_for_socket`]); the HTTP handshake happens on the next request.
    Stream(UnixStream),
    /// Ready for requests.
    Http(SendRequest<Full<Bytes>>),
}

/// A response read in full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The body (at most [`MAX_BODY`] bytes).
    pub body: Vec<u8>,
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
                    method: Method::CONNECT,
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
            conn: Conn::None,
        }
    }

    /// A client on an already connected stream.
    pub fn with_stream(socket: &Path, stream: UnixStream) -> Self {
        ApiClient {
            socket: socket.into(),
            conn: Conn::Stream(stream),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The sender of the live connection, connecting (or reconnecting, when Firecracker
    /// closed the idle one) first.
    async fn sender(
        &mut self,
        method: &Method,
        path: &str,
    ) -> Result<&mut SendRequest<Full<Bytes>>, FirecrackerError> {
        let io = |source| FirecrackerError::ApiIo {
            method: method.clone(),
            uri: path.into(),
            source,
        };
        if matches!(&self.conn, Conn::Http(s) if s.is_closed()) {
            self.conn = Conn::None;
        }
        let stream = match std::mem::replace(&mut self.conn, Conn::None) {
            Conn::Http(s) => {
                self.conn = Conn::Http(s);
                None
            }
            Conn::Stream(s) => Some(s),
            Conn::None => Some(UnixStream::connect(&self.socket).await.map_err(io)?),
        };
        if let Some(stream) = stream {
            let (sender, conn) = http1::Builder::new()
                .max_buf_size(MAX_HEAD)
                .handshake(TokioIo::new(stream))
                .await
                .map_err(|e| io(hyper_io(e)))?;
            // The connection task ends when the sender is dropped or Firecracker hangs up.
            tokio::spawn(conn);
            self.conn = Conn::Http(sender);
        }
        match &mut self.conn {
            Conn::Http(s) => Ok(s),
            _ => Err(io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "no connection",
            ))),
        }
    }

    /// Sends one request and reads its response. On any I/O or framing error the connection
    /// is dropped (the next request reconnects); requests are never retried automatically,
    /// since `PUT /actions` is not idempotent.
    pub async fn request(
        &mut self,
        method: Method,
        endpoint: Endpoint<'_>,
        body: Option<&[u8]>,
    ) -> Result<Response, FirecrackerError> {
        let path = endpoint.path()?;
        let result = self.exchange(&method, &path, body).await;
        if result.is_err() {
            self.conn = Conn::None;
        }
        result
    }

    async fn exchange(
        &mut self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, FirecrackerError> {
        let uri: Uri = path
            .parse()
            .map_err(|e| protocol(method, path, &format!("bad path: {e}")))?;
        let mut req = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(header::HOST, "localhost")
            .header(header::ACCEPT, "application/json");
        if body.is_some() || method != Method::GET {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
            .map_err(|e| protocol(method, path, &format!("cannot build request: {e}")))?;
        let sender = self.sender(method, path).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| io_error(method, path, e))?;
        let status = resp.status();
        let body = read_body(resp.into_body(), MAX_BODY)
            .await
            .map_err(|e| match e {
                BodyError::TooLarge => {
                    protocol(method, path, &format!("body larger than {MAX_BODY} bytes"))
                }
                BodyError::Http(e) => io_error(method, path, e),
            })?;
        Ok(Response {
            status: status.as_u16(),
            body,
        })
    }

    /// `PUT endpoint` with a JSON body; success is any 2xx.
    pub async fn put<T: Serialize>(
        &mut self,
        endpoint: Endpoint<'_>,
        body: &T,
    ) -> Result<(), FirecrackerError> {
        self.send_json(Method::PUT, endpoint, body).await
    }

    /// `PATCH endpoint` with a JSON body; success is any 2xx.
    pub async fn patch<T: Serialize>(
        &mut self,
        endpoint: Endpoint<'_>,
        body: &T,
    ) -> Result<(), FirecrackerError> {
        self.send_json(Method::PATCH, endpoint, body).await
    }

    async fn send_json<T: Serialize>(
        &mut self,
        method: Method,
        endpoint: Endpoint<'_>,
        body: &T,
    ) -> Result<(), FirecrackerError> {
        let path = endpoint.path()?;
        let json = serde_json::to_vec(body)
            .map_err(|e| protocol(&method, &path, &format!("cannot encode body: {e}")))?;
        let resp = self.request(method.clone(), endpoint, Some(&json)).await?;
        check_status(&method, &path, &resp)
    }

    /// `GET endpoint`, decoding the JSON body.
    pub async fn get<T: DeserializeOwned>(
        &mut self,
        endpoint: Endpoint<'_>,
    ) -> Result<T, FirecrackerError> {
        let path = endpoint.path()?;
        let resp = self.request(Method::GET, endpoint, None).await?;
        check_status(&Method::GET, &path, &resp)?;
        serde_json::from_slice(&resp.body)
            .map_err(|e| protocol(&Method::GET, &path, &format!("cannot decode body: {e}")))
    }
}

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// It is longer than the limit.
    TooLarge,
    /// The connection failed or the framing was broken.
    Http(hyper::Error),
}

/// Reads a whole body, refusing one longer than `limit` bytes: up front when its
/// `Content-Length` says so, else as soon as the bytes received pass the limit.
pub async fn read_body(body: hyper::body::Incoming, limit: usize) -> Result<Vec<u8>, BodyError> {
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes().to_vec()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => Err(BodyError::Http(*e)),
            Err(_) => Err(BodyError::TooLarge),
        },
    }
}

fn hyper_io(e: hyper::Error) -> std::io::Error {
    std::io::Error::other(e)
}

fn io_error(method: &Method, path: &str, e: hyper::Error) -> FirecrackerError {
    if e.is_parse() || e.is_parse_status() {
        return protocol(method, path, &e.to_string());
    }
    FirecrackerError::ApiIo {
        method: method.clone(),
        uri: path.into(),
        source: hyper_io(e),
    }
}

fn protocol(method: &Method, path: &str, detail: &str) -> FirecrackerError {
    FirecrackerError::ApiProtocol {
        method: method.clone(),
        uri: path.into(),
        detail: detail.into(),
    }
}

/// Maps a non-2xx response to [`FirecrackerError::Api`] with the `fault_message`.
pub fn check_status(method: &Method, path: &str, resp: &Response) -> Result<(), FirecrackerError> {
    if StatusCode::from_u16(resp.status).is_ok_and(|s| s.is_success()) {
        return Ok(());
    }
    let fault_message = serde_json::from_slice::<FaultBody>(&resp.body).map_or_else(
        |_| String::from_utf8_lossy(&resp.body).trim().to_string(),
        |f| f.fault_message,
    );
    Err(FirecrackerError::Api {
        method: method.clone(),
        uri: path.into(),
        status: resp.status,
        fault_message,
    })
}

#[cfg(test)]
mod tests;
