//! The guest agent protocol, spoken between `hearth-agent` (in the guest, on vsock port
//! [`DEFAULT_PORT`]) and hearth's readiness probe (on the host, through Firecracker's hybrid
//! vsock Unix socket). `firecracker-sim` answers it too.
//!
//! Line-delimited JSON, one request line and one response line at a time, each at most
//! [`MAX_LINE`] bytes including the terminating `\n`. Every message carries the protocol
//! version `v`:
//!
//! ```text
//! -> {"v":1,"op":"ping"}
//! <- {"v":1,"ok":{"version":"0.1.0","boot_id":"6f1c..","uptime_ms":1234}}
//! <- {"v":1,"error":{"code":"unknown_op","message":"Unknown op \"pong\""}}
//! ```
//!
//! Two diagnostic ops let a test drive the guest's network from the host (their arguments sit
//! beside `op`):
//!
//! ```text
//! -> {"v":1,"op":"resolve","name":"db.vm.internal"}
//! <- {"v":1,"ok":{"addrs":["172.31.240.3"]}}
//! -> {"v":1,"op":"connect","addr":"10.98.0.2","port":8080,"send":"hi","timeout_ms":2000}
//! <- {"v":1,"ok":{"received":"10.98.0.1:40000","truncated":false}}
//! <- {"v":1,"error":{"code":"timeout","message":"TCP exchange with 10.98.0.2:8080 timed out"}}
//! ```
//!
//! The shape of `ok` depends on the op ([`PingReply`] for `ping`, [`ResolveReply`] for
//! `resolve`, [`ConnectReply`] for `connect`). A peer that receives a
//! version it does not speak answers with the error code [`codes::UNSUPPORTED_VERSION`] and
//! keeps the connection open. Both ends use the `encode_*`/`decode_*` helpers below, so the
//! wire format lives in exactly one place.
//!
//! # Version 2: sessions and files
//!
//! Version 2 adds exec sessions and file transfer ([`exec`], [`files`]). Each op is sent with the
//! lowest version that has it ([`Request::version`]), and an agent answers in the version it
//! was asked in, so a v1 probe still gets a v1 `ping` answer and a v2 host can probe a v1 agent.
//! `exec` (with `attach`), `attach`, `put_archive` and `get_archive` switch their connection from
//! lines to binary [`frame`]s after the `ok` line; the others stay request/response lines.

use std::io::{self, BufRead};
use std::net::Ipv4Addr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub mod exec;
pub mod files;
pub mod frame;
pub mod freeze;
pub mod identity;

pub use exec::{
    AttachRequest, ExecInfo, ExecList, ExecRequest, ExecStarted, ExitStatus, SessionId,
    SignalRequest, WindowSize,
};
pub use files::{ArchiveRequest, ArchiveSummary, PathKind, PathStat, StatRequest};
pub use freeze::{FreezeRequest, ThawReply, ThawRequest};
pub use identity::{Reconfigure, RngSeed};

/// The newest protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest protocol version this crate still speaks (v1: `ping`, `resolve`, `connect`).
pub const MIN_PROTOCOL_VERSION: u32 = 1;

/// The vsock port the agent listens on unless told otherwise (`--port`).
pub const DEFAULT_PORT: u32 = 52;

/// The longest request line an agent accepts, including the `\n` (an `exec` request carries its
/// argv and environment), and the longest response line the ping probe needs.
pub const MAX_LINE: usize = 64 * 1024;

/// The most bytes of a `connect` exchange an agent returns in [`ConnectReply::received`].
pub const MAX_RECEIVED: usize = 64 * 1024;

/// The longest response line [`decode_response`] and [`read_response_line`] accept: a
/// [`ConnectReply`] of [`MAX_RECEIVED`] bytes, each escaped as `\u00XX` in the worst case.
pub const MAX_RESPONSE_LINE: usize = 6 * MAX_RECEIVED + 1024;

/// The longest `timeout_ms` a diagnostic request may ask for (one minute).
pub const MAX_TIMEOUT_MS: u64 = 60_000;

/// The `timeout_ms` of a diagnostic request that does not give one.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// Error codes carried in [`ErrorBody::code`].
pub mod codes {
    /// The line was not a valid request (bad JSON, missing fields, too long).
    pub const BAD_REQUEST: &str = "bad_request";
    /// The request's `v` is not one the agent speaks.
    pub const UNSUPPORTED_VERSION: &str = "unsupported_version";
    /// The request's `op` is not one the agent knows.
    pub const UNKNOWN_OP: &str = "unknown_op";
    /// The agent failed while handling a valid request.
    pub const INTERNAL: &str = "internal";
    /// `resolve`: the name does not resolve to any IPv4 address (or the resolver failed).
    pub const RESOLVE_FAILED: &str = "resolve_failed";
    /// `connect`: the peer answered the connection attempt with a reset.
    pub const CONNECT_REFUSED: &str = "connect_refused";
    /// `connect`: the connection failed otherwise (reset mid-exchange, unreachable...).
    pub const CONNECT_FAILED: &str = "connect_failed";
    /// `resolve` or `connect`: the operation did not finish within `timeout_ms`.
    pub const TIMEOUT: &str = "timeout";
    /// `resolve` or `connect`: the guest has no network to use.
    pub const NO_NETWORK: &str = "no_network";
    /// `attach`, `signal`, `exec_info`: no session has this id.
    pub const NO_SUCH_SESSION: &str = "no_such_session";
    /// `exec`: the agent already runs as many sessions as it allows.
    pub const TOO_MANY_SESSIONS: &str = "too_many_sessions";
    /// `stat`, `get_archive`, `put_archive`: the path does not exist.
    pub const NOT_FOUND: &str = "not_found";
    /// `put_archive`: the target is not a directory.
    pub const NOT_A_DIRECTORY: &str = "not_a_directory";
    /// `put_archive`, `get_archive`: the archive is malformed, too large, or could not be
    /// written or read.
    pub const ARCHIVE: &str = "archive";
    /// The peer broke the framing rules of a session or archive stream.
    pub const BAD_FRAME: &str = "bad_frame";
    /// `attach`: another host attached to the session; this stream ends (its `ERROR` frame).
    pub const TAKEN_OVER: &str = "taken_over";
    /// The agent refused an operation on a path (permissions, read-only file system...).
    pub const PERMISSION_DENIED: &str = "permission_denied";
    /// `reconfigure`: a step of applying the new identity failed (the message names it).
    pub const RECONFIGURE_FAILED: &str = "reconfigure_failed";
    /// `freeze`, `thaw`: the filesystem could not be frozen or thawed (the message says why;
    /// e.g. it does not support freezing).
    pub const FREEZE_FAILED: &str = "freeze_failed";
}

/// A request from the host to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Liveness and identity: answered with a [`PingReply`].
    Ping,
    /// Diagnostic: resolve a name with the guest's resolver; answered with a [`ResolveReply`].
    Resolve(ResolveRequest),
    /// Diagnostic: a TCP exchange from the guest; answered with a [`ConnectReply`].
    Connect(ConnectRequest),
    /// v2: starts a session; answered with an [`ExecStarted`], then frames when it attaches.
    Exec(ExecRequest),
    /// v2: attaches to a session; answered with its [`ExecInfo`], then frames.
    Attach(AttachRequest),
    /// v2: the agent's sessions; answered with an [`ExecList`].
    Execs,
    /// v2: one session; answered with its [`ExecInfo`].
    ExecInfo(SessionRef),
    /// v2: sends a signal to a session's process group; answered with `{}`.
    Signal(SignalRequest),
    /// v2: what is at a path; answered with a [`PathStat`].
    Stat(StatRequest),
    /// v2: extracts a tar stream the host sends into a directory; answered with `{}`, then
    /// frames ([`files`]).
    PutArchive(ArchiveRequest),
    /// v2: sends a path as a tar stream; answered with its [`PathStat`], then frames.
    GetArchive(ArchiveRequest),
    /// v2: gives the guest a new identity after a snapshot restore ([`identity`]); answered
    /// with `{}`.
    Reconfigure(Reconfigure),
    /// v2: syncs and freezes a filesystem until `thaw` or its deadline ([`freeze`]); answered
    /// with `{}`.
    Freeze(FreezeRequest),
    /// v2: thaws a filesystem ([`freeze`]); answered with a [`ThawReply`].
    Thaw(ThawRequest),
}

impl Request {
    /// The request's `op` string on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Resolve(_) => "resolve",
            Request::Connect(_) => "connect",
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::Execs => "execs",
            Request::ExecInfo(_) => "exec_info",
            Request::Signal(_) => "signal",
            Request::Stat(_) => "stat",
            Request::PutArchive(_) => "put_archive",
            Request::GetArchive(_) => "get_archive",
            Request::Reconfigure(_) => "reconfigure",
            Request::Freeze(_) => "freeze",
            Request::Thaw(_) => "thaw",
        }
    }

    /// The lowest protocol version that has this op: the version it is sent with.
    pub fn version(&self) -> u32 {
        match self {
            Request::Ping | Request::Resolve(_) | Request::Connect(_) => 1,
            _ => 2,
        }
    }

    /// Whether the connection carries [`frame`]s after the `ok` line of this request.
    pub fn switches_to_frames(&self) -> bool {
        match self {
            Request::Exec(e) => e.attach,
            Request::Attach(_) | Request::PutArchive(_) | Request::GetArchive(_) => true,
            _ => false,
        }
    }
}

/// The arguments of ops that name one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRef {
    /// The session's id.
    pub id: SessionId,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// The arguments of `resolve`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The name to resolve (IPv4 `A` records).
    pub name: String,
    /// How long the lookup may take, 1..=[`MAX_TIMEOUT_MS`]; [`DEFAULT_TIMEOUT_MS`] when absent.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// The arguments of `connect`: connect to `addr:port`, send `send`, half-close, and return
/// what the peer sends until it closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectRequest {
    /// The peer's IPv4 address.
    pub addr: Ipv4Addr,
    /// The peer's TCP port (not 0).
    pub port: u16,
    /// The bytes to send (UTF-8); empty when absent.
    #[serde(default)]
    pub send: String,
    /// How long the whole exchange may take, 1..=[`MAX_TIMEOUT_MS`]; [`DEFAULT_TIMEOUT_MS`]
    /// when absent.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

impl ResolveRequest {
    /// The timeout as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

impl ConnectRequest {
    /// The timeout as a [`Duration`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

/// The agent's answer to [`Request::Resolve`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveReply {
    /// The name's IPv4 addresses, without duplicates (never empty: no address is the error
    /// [`codes::RESOLVE_FAILED`]).
    pub addrs: Vec<Ipv4Addr>,
}

/// The agent's answer to [`Request::Connect`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectReply {
    /// What the peer sent, decoded as lossy UTF-8, at most [`MAX_RECEIVED`] bytes of it.
    pub received: String,
    /// Whether the peer sent more than [`MAX_RECEIVED`] bytes (the rest was not read).
    #[serde(default)]
    pub truncated: bool,
}

impl ConnectReply {
    /// The reply for the bytes a peer sent: capped at [`MAX_RECEIVED`], lossy UTF-8.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let truncated = bytes.len() > MAX_RECEIVED;
        let kept = &bytes[..bytes.len().min(MAX_RECEIVED)];
        ConnectReply {
            received: String::from_utf8_lossy(kept).into_owned(),
            truncated,
        }
    }
}

/// The agent's answer to [`Request::Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingReply {
    /// The agent's version (its crate version).
    pub version: String,
    /// The guest kernel's boot id (`/proc/sys/kernel/random/boot_id`): changes on every boot,
    /// so the host can tell a rebooted guest from the one it probed before.
    pub boot_id: String,
    /// Milliseconds since the guest kernel booted (`/proc/uptime`).
    pub uptime_ms: u64,
}

/// An error answered by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// A machine-readable code, one of [`codes`].
    pub code: String,
    /// A human-readable message.
    pub message: String,
}

impl ErrorBody {
    /// An error body with this code (one of [`codes`]) and message.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// Errors encoding, decoding or reading protocol lines.
#[derive(Debug, thiserror::Error)]
pub enum AgentProtoError {
    /// A line longer than [`MAX_LINE`].
    #[error("Line too long: more than {max} bytes")]
    LineTooLong {
        /// The limit that was exceeded.
        max: usize,
    },
    /// The line is not valid JSON of the expected shape.
    #[error("Malformed message: {source}")]
    Malformed {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The peer speaks another protocol version.
    #[error(
        "Unsupported protocol version {got} (this end speaks {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION})"
    )]
    UnsupportedVersion {
        /// The version the peer sent.
        got: u32,
    },
    /// The request's arguments are missing, of the wrong type, or out of range.
    #[error("Invalid arguments for {op:?}: {reason}")]
    InvalidArguments {
        /// The op.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The request names an op this end does not know.
    #[error("Unknown op {op:?}")]
    UnknownOp {
        /// The op the peer sent.
        op: String,
    },
    /// A response with neither `ok` nor `error`, or with both.
    #[error("Response has neither or both of \"ok\" and \"error\"")]
    AmbiguousResponse,
    /// The agent answered with an error.
    #[error("Agent error {code}: {message}")]
    Remote {
        /// The agent's error code.
        code: String,
        /// The agent's message.
        message: String,
    },
    /// The op needs a newer protocol version than the request carries.
    #[error("Op {op:?} needs protocol version {needs}, the request carries {got}")]
    OpNeedsVersion {
        /// The op.
        op: &'static str,
        /// The version the op needs.
        needs: u32,
        /// The version the request carries.
        got: u32,
    },
    /// A binary frame broke the framing rules ([`frame`]).
    #[error("Bad frame: {reason}")]
    BadFrame {
        /// What is wrong.
        reason: String,
    },
    /// Reading the line failed.
    #[error("Reading a line failed")]
    Io {
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl AgentProtoError {
    /// The error body an agent answers with when decoding a request failed this way.
    pub fn to_error_body(&self) -> ErrorBody {
        let code = match self {
            AgentProtoError::UnsupportedVersion { .. } | AgentProtoError::OpNeedsVersion { .. } => {
                codes::UNSUPPORTED_VERSION
            }
            AgentProtoError::BadFrame { .. } => codes::BAD_FRAME,
            AgentProtoError::UnknownOp { .. } => codes::UNKNOWN_OP,
            AgentProtoError::Remote { code, .. } => code.as_str(),
            AgentProtoError::Io { .. } => codes::INTERNAL,
            _ => codes::BAD_REQUEST,
        };
        ErrorBody {
            code: code.to_string(),
            message: self.to_string(),
        }
    }
}

/// A request as read: the envelope, with the op's arguments left in `args`.
#[derive(Deserialize)]
struct RawRequest<'a> {
    v: u32,
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
    #[serde(flatten)]
    args: serde_json::Map<String, serde_json::Value>,
}

/// A request as written: the arguments' fields follow `v` and `op`.
#[derive(Serialize)]
struct RawRequestOut<'a, T> {
    v: u32,
    op: &'a str,
    #[serde(flatten)]
    args: T,
}

/// `ping` has no arguments.
#[derive(Serialize)]
struct NoArgs {}

#[derive(Serialize, Deserialize)]
struct RawResponse<T> {
    v: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ok: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody>,
}

fn to_line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail: no maps with non-string keys, no I/O.
    let mut line = serde_json::to_vec(value).unwrap_or_default();
    line.push(b'\n');
    line
}

fn trim_line(line: &[u8], max: usize) -> Result<&[u8], AgentProtoError> {
    if line.len() > max {
        return Err(AgentProtoError::LineTooLong { max });
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    Ok(line.strip_suffix(b"\r").unwrap_or(line))
}

/// Encodes a request as one line, `\n` included, with the lowest version that has its op
/// ([`Request::version`]).
pub fn encode_request(req: &Request) -> Vec<u8> {
    fn out<T: Serialize>(req: &Request, args: T) -> Vec<u8> {
        to_line(&RawRequestOut {
            v: req.version(),
            op: req.op(),
            args,
        })
    }
    match req {
        Request::Ping | Request::Execs => out(req, NoArgs {}),
        Request::Resolve(r) => out(req, r),
        Request::Connect(c) => out(req, c),
        Request::Exec(e) => out(req, e),
        Request::Attach(a) => out(req, a),
        Request::ExecInfo(r) => out(req, r),
        Request::Signal(s) => out(req, s),
        Request::Stat(s) => out(req, s),
        Request::PutArchive(a) | Request::GetArchive(a) => out(req, a),
        Request::Reconfigure(r) => out(req, r),
        Request::Freeze(f) => out(req, f),
        Request::Thaw(t) => out(req, t),
    }
}

fn check_timeout(op: &'static str, timeout_ms: u64) -> Result<(), AgentProtoError> {
    if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(AgentProtoError::InvalidArguments {
            op,
            reason: format!("timeout_ms {timeout_ms} is not in 1..={MAX_TIMEOUT_MS}"),
        });
    }
    Ok(())
}

fn args<T: DeserializeOwned>(
    op: &'static str,
    args: serde_json::Map<String, serde_json::Value>,
) -> Result<T, AgentProtoError> {
    serde_json::from_value(serde_json::Value::Object(args)).map_err(|e| {
        AgentProtoError::InvalidArguments {
            op,
            reason: e.to_string(),
        }
    })
}

/// A decoded request with the version it was sent in (the agent answers in that version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The request's `v`, in [`MIN_PROTOCOL_VERSION`]..=[`PROTOCOL_VERSION`].
    pub v: u32,
    /// The request.
    pub request: Request,
}

/// Decodes one request line (with or without its `\n`).
pub fn decode_request(line: &[u8]) -> Result<Request, AgentProtoError> {
    decode_envelope(line).map(|e| e.request)
}

/// Decodes one request line (with or without its `\n`), keeping its version.
pub fn decode_envelope(line: &[u8]) -> Result<Envelope, AgentProtoError> {
    let raw: RawRequest<'_> = serde_json::from_slice(trim_line(line, MAX_LINE)?)
        .map_err(|source| AgentProtoError::Malformed { source })?;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&raw.v) {
        return Err(AgentProtoError::UnsupportedVersion { got: raw.v });
    }
    let request = decode_op(raw.op.as_ref(), raw.args)?;
    if raw.v < request.version() {
        return Err(AgentProtoError::OpNeedsVersion {
            op: request.op(),
            needs: request.version(),
            got: raw.v,
        });
    }
    Ok(Envelope { v: raw.v, request })
}

fn decode_op(
    op: &str,
    raw: serde_json::Map<String, serde_json::Value>,
) -> Result<Request, AgentProtoError> {
    match op {
        // Extra fields on ping were always ignored; keep it that way.
        "ping" => Ok(Request::Ping),
        "resolve" => {
            let r: ResolveRequest = args("resolve", raw)?;
            check_timeout("resolve", r.timeout_ms)?;
            if r.name.is_empty() || r.name.len() > 253 {
                return Err(AgentProtoError::InvalidArguments {
                    op: "resolve",
                    reason: format!("name of {} bytes is not 1..=253 bytes long", r.name.len()),
                });
            }
            Ok(Request::Resolve(r))
        }
        "connect" => {
            let c: ConnectRequest = args("connect", raw)?;
            check_timeout("connect", c.timeout_ms)?;
            if c.port == 0 {
                return Err(AgentProtoError::InvalidArguments {
                    op: "connect",
                    reason: "port 0".into(),
                });
            }
            Ok(Request::Connect(c))
        }
        "exec" => {
            let e: ExecRequest = args("exec", raw)?;
            e.validate()
                .map_err(|reason| AgentProtoError::InvalidArguments { op: "exec", reason })?;
            Ok(Request::Exec(e))
        }
        "attach" => Ok(Request::Attach(args("attach", raw)?)),
        "execs" => {
            let _: NoArgsIn = args("execs", raw)?;
            Ok(Request::Execs)
        }
        "exec_info" => Ok(Request::ExecInfo(args("exec_info", raw)?)),
        "signal" => {
            let s: SignalRequest = args("signal", raw)?;
            s.validate()
                .map_err(|reason| AgentProtoError::InvalidArguments {
                    op: "signal",
                    reason,
                })?;
            Ok(Request::Signal(s))
        }
        "stat" => {
            let s: StatRequest = args("stat", raw)?;
            files::check_guest_path(&s.path)
                .map_err(|reason| AgentProtoError::InvalidArguments { op: "stat", reason })?;
            Ok(Request::Stat(s))
        }
        "put_archive" | "get_archive" => {
            let op = if op == "put_archive" {
                "put_archive"
            } else {
                "get_archive"
            };
            let a: ArchiveRequest = args(op, raw)?;
            files::check_guest_path(&a.path)
                .map_err(|reason| AgentProtoError::InvalidArguments { op, reason })?;
            Ok(if op == "put_archive" {
                Request::PutArchive(a)
            } else {
                Request::GetArchive(a)
            })
        }
        "reconfigure" => {
            let r: Reconfigure = args("reconfigure", raw)?;
            r.validate()
                .map_err(|reason| AgentProtoError::InvalidArguments {
                    op: "reconfigure",
                    reason,
                })?;
            Ok(Request::Reconfigure(r))
        }
        "freeze" => {
            let f: FreezeRequest = args("freeze", raw)?;
            f.validate()
                .map_err(|reason| AgentProtoError::InvalidArguments {
                    op: "freeze",
                    reason,
                })?;
            Ok(Request::Freeze(f))
        }
        "thaw" => {
            let t: ThawRequest = args("thaw", raw)?;
            files::check_guest_path(&t.path)
                .map_err(|reason| AgentProtoError::InvalidArguments { op: "thaw", reason })?;
            Ok(Request::Thaw(t))
        }
        other => Err(AgentProtoError::UnknownOp { op: other.into() }),
    }
}

/// Ops without arguments that refuse unknown ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgsIn {}

/// Encodes a successful response line carrying `ok`, in the newest version.
pub fn encode_ok<T: Serialize>(ok: &T) -> Vec<u8> {
    encode_ok_in(PROTOCOL_VERSION, ok)
}

/// Encodes a successful response line carrying `ok`, in version `v` (the request's).
pub fn encode_ok_in<T: Serialize>(v: u32, ok: &T) -> Vec<u8> {
    to_line(&RawResponse {
        v,
        ok: Some(ok),
        error: None,
    })
}

/// Encodes an error response line, in the newest version.
pub fn encode_error(error: &ErrorBody) -> Vec<u8> {
    encode_error_in(PROTOCOL_VERSION, error)
}

/// Encodes an error response line, in version `v` (the request's).
pub fn encode_error_in(v: u32, error: &ErrorBody) -> Vec<u8> {
    to_line(&RawResponse::<()> {
        v,
        ok: None,
        error: Some(error.clone()),
    })
}

/// The empty `ok` of ops that answer nothing but success (`signal`, `put_archive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Decodes a response line: the `ok` payload, or [`AgentProtoError::Remote`] for an error.
pub fn decode_response<T: DeserializeOwned>(line: &[u8]) -> Result<T, AgentProtoError> {
    // Two steps, so a peer of another version is reported as such even when its `ok` has
    // another shape.
    let raw: RawResponse<serde_json::Value> =
        serde_json::from_slice(trim_line(line, MAX_RESPONSE_LINE)?)
            .map_err(|source| AgentProtoError::Malformed { source })?;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&raw.v) {
        return Err(AgentProtoError::UnsupportedVersion { got: raw.v });
    }
    match (raw.ok, raw.error) {
        (Some(ok), None) => {
            serde_json::from_value(ok).map_err(|source| AgentProtoError::Malformed { source })
        }
        (None, Some(e)) => Err(AgentProtoError::Remote {
            code: e.code,
            message: e.message,
        }),
        _ => Err(AgentProtoError::AmbiguousResponse),
    }
}

/// Reads one line of at most [`MAX_LINE`] bytes (the `\n` included in the result) from a
/// buffered reader. `Ok(None)` at a clean end of stream; an over-long line is an error and
/// leaves the reader mid-line, so the caller should close the connection.
pub fn read_line<R: BufRead>(reader: &mut R) -> Result<Option<Vec<u8>>, AgentProtoError> {
    read_line_limited(reader, MAX_LINE)
}

/// [`read_line`] for a response line, which may be up to [`MAX_RESPONSE_LINE`] bytes long.
pub fn read_response_line<R: BufRead>(reader: &mut R) -> Result<Option<Vec<u8>>, AgentProtoError> {
    read_line_limited(reader, MAX_RESPONSE_LINE)
}

fn read_line_limited<R: BufRead>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, AgentProtoError> {
    let mut line = Vec::new();
    loop {
        let buf = reader
            .fill_buf()
            .map_err(|source| AgentProtoError::Io { source })?;
        if buf.is_empty() {
            return Ok(if line.is_empty() { None } else { Some(line) });
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max {
            return Err(AgentProtoError::LineTooLong { max });
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            return Ok(Some(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_request_wire_format() {
        assert_eq!(
            encode_request(&Request::Ping),
            b"{\"v\":1,\"op\":\"ping\"}\n"
        );
        assert_eq!(
            decode_request(b"{\"v\":1,\"op\":\"ping\"}\n").unwrap(),
            Request::Ping
        );
        assert_eq!(
            decode_request(b"{\"op\":\"ping\",\"v\":1}\r\n").unwrap(),
            Request::Ping
        );
    }

    #[test]
    fn requests_keep_their_version() {
        let e = decode_envelope(b"{\"v\":1,\"op\":\"ping\"}").unwrap();
        assert_eq!((e.v, e.request), (1, Request::Ping));
        let e = decode_envelope(b"{\"v\":2,\"op\":\"ping\"}").unwrap();
        assert_eq!(e.v, 2);
    }

    #[test]
    fn bad_requests_are_classified() {
        let e = decode_request(b"{\"v\":3,\"op\":\"ping\"}").unwrap_err();
        assert!(matches!(e, AgentProtoError::UnsupportedVersion { got: 3 }));
        assert_eq!(e.to_error_body().code, codes::UNSUPPORTED_VERSION);
        let e = decode_request(b"{\"v\":1,\"op\":\"pong\"}").unwrap_err();
        assert!(matches!(e, AgentProtoError::UnknownOp { ref op } if op == "pong"));
        assert_eq!(e.to_error_body().code, codes::UNKNOWN_OP);
        let e = decode_request(b"CONNECT 52").unwrap_err();
        assert_eq!(e.to_error_body().code, codes::BAD_REQUEST);
        let long = vec![b' '; MAX_LINE + 1];
        assert!(matches!(
            decode_request(&long),
            Err(AgentProtoError::LineTooLong { .. })
        ));
    }

    #[test]
    fn ping_reply_round_trips() {
        let reply = PingReply {
            version: "0.1.0".into(),
            boot_id: "6f1c0b5e-0000-4000-8000-000000000000".into(),
            uptime_ms: 1234,
        };
        let line = encode_ok_in(1, &reply);
        assert!(line.starts_with(b"{\"v\":1,\"ok\":{"));
        assert!(encode_ok(&reply).starts_with(b"{\"v\":2,\"ok\":{"));
        assert_eq!(
            decode_response::<PingReply>(&encode_ok(&reply)).unwrap(),
            reply
        );
        assert_eq!(*line.last().unwrap(), b'\n');
        assert_eq!(decode_response::<PingReply>(&line).unwrap(), reply);
    }

    #[test]
    fn error_response_decodes_to_remote() {
        let line = encode_error_in(
            1,
            &ErrorBody {
                code: codes::UNKNOWN_OP.into(),
                message: "Unknown op \"x\"".into(),
            },
        );
        assert_eq!(
            line,
            b"{\"v\":1,\"error\":{\"code\":\"unknown_op\",\"message\":\"Unknown op \\\"x\\\"\"}}\n"
        );
        match decode_response::<PingReply>(&line).unwrap_err() {
            AgentProtoError::Remote { code, .. } => assert_eq!(code, codes::UNKNOWN_OP),
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn ambiguous_or_versioned_responses_are_rejected() {
        assert!(matches!(
            decode_response::<PingReply>(b"{\"v\":1}"),
            Err(AgentProtoError::AmbiguousResponse)
        ));
        assert!(matches!(
            decode_response::<PingReply>(b"{\"v\":9,\"ok\":{}}"),
            Err(AgentProtoError::UnsupportedVersion { got: 9 })
        ));
    }

    #[test]
    fn read_line_splits_and_limits() {
        let mut r = io::Cursor::new(b"a\nbc\nrest".to_vec());
        assert_eq!(read_line(&mut r).unwrap().unwrap(), b"a\n");
        assert_eq!(read_line(&mut r).unwrap().unwrap(), b"bc\n");
        assert_eq!(read_line(&mut r).unwrap().unwrap(), b"rest");
        assert!(read_line(&mut r).unwrap().is_none());
        let mut r = io::Cursor::new(vec![b'x'; MAX_LINE + 10]);
        assert!(matches!(
            read_line(&mut r),
            Err(AgentProtoError::LineTooLong { .. })
        ));
    }

    #[test]
    fn diagnostic_requests_round_trip() {
        let resolve = Request::Resolve(ResolveRequest {
            name: "db.vm.internal".into(),
            timeout_ms: 1500,
        });
        let line = encode_request(&resolve);
        assert_eq!(
            line,
            b"{\"v\":1,\"op\":\"resolve\",\"name\":\"db.vm.internal\",\"timeout_ms\":1500}\n"
        );
        assert_eq!(decode_request(&line).unwrap(), resolve);
        let connect = Request::Connect(ConnectRequest {
            addr: Ipv4Addr::new(10, 98, 0, 2),
            port: 8080,
            send: "hi \u{e9}\n".into(),
            timeout_ms: 2000,
        });
        assert_eq!(decode_request(&encode_request(&connect)).unwrap(), connect);
    }

    #[test]
    fn diagnostic_defaults() {
        assert_eq!(
            decode_request(b"{\"v\":1,\"op\":\"resolve\",\"name\":\"a\"}").unwrap(),
            Request::Resolve(ResolveRequest {
                name: "a".into(),
                timeout_ms: DEFAULT_TIMEOUT_MS
            })
        );
        assert_eq!(
            decode_request(b"{\"v\":1,\"op\":\"connect\",\"addr\":\"1.2.3.4\",\"port\":1}")
                .unwrap(),
            Request::Connect(ConnectRequest {
                addr: Ipv4Addr::new(1, 2, 3, 4),
                port: 1,
                send: String::new(),
                timeout_ms: DEFAULT_TIMEOUT_MS
            })
        );
        // Ping still ignores extra fields, as before.
        assert_eq!(
            decode_request(b"{\"v\":1,\"op\":\"ping\",\"x\":1}").unwrap(),
            Request::Ping
        );
    }

    #[test]
    fn bad_diagnostic_arguments_are_bad_requests() {
        let bad: &[&[u8]] = &[
            b"{\"v\":1,\"op\":\"resolve\"}",
            b"{\"v\":1,\"op\":\"resolve\",\"name\":\"\"}",
            b"{\"v\":1,\"op\":\"resolve\",\"name\":7}",
            b"{\"v\":1,\"op\":\"resolve\",\"name\":\"a\",\"timeout_ms\":0}",
            b"{\"v\":1,\"op\":\"resolve\",\"name\":\"a\",\"extra\":1}",
            b"{\"v\":1,\"op\":\"connect\",\"addr\":\"1.2.3.4\"}",
            b"{\"v\":1,\"op\":\"connect\",\"addr\":\"::1\",\"port\":1}",
            b"{\"v\":1,\"op\":\"connect\",\"addr\":\"host\",\"port\":1}",
            b"{\"v\":1,\"op\":\"connect\",\"addr\":\"1.2.3.4\",\"port\":0}",
            b"{\"v\":1,\"op\":\"connect\",\"addr\":\"1.2.3.4\",\"port\":70000}",
            b"{\"v\":1,\"op\":\"connect\",\"addr\":\"1.2.3.4\",\"port\":1,\"timeout_ms\":60001}",
            b"{\"v\":1,\"op\":\"connect\",\"addr\":\"1.2.3.4\",\"port\":1,\"send\":[1]}",
            b"{\"v\":1,\"op\":\"connect\",\"addr\":\"1.2.3.4\",\"port\":1,\"timeout_ms\":-1}",
        ];
        for line in bad {
            let e = decode_request(line).unwrap_err();
            assert_eq!(
                e.to_error_body().code,
                codes::BAD_REQUEST,
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let long = format!(
            "{{\"v\":1,\"op\":\"resolve\",\"name\":\"{}\"}}",
            "a".repeat(300)
        );
        assert!(matches!(
            decode_request(long.as_bytes()),
            Err(AgentProtoError::InvalidArguments { op: "resolve", .. })
        ));
    }

    #[test]
    fn diagnostic_replies_round_trip() {
        let r = ResolveReply {
            addrs: vec![Ipv4Addr::new(172, 31, 240, 3)],
        };
        let line = encode_ok_in(1, &r);
        assert_eq!(line, b"{\"v\":1,\"ok\":{\"addrs\":[\"172.31.240.3\"]}}\n");
        assert_eq!(decode_response::<ResolveReply>(&line).unwrap(), r);
        let c = ConnectReply::from_bytes(b"10.98.0.1:40000\xff");
        assert_eq!(c.received, "10.98.0.1:40000\u{fffd}");
        assert!(!c.truncated);
        assert_eq!(decode_response::<ConnectReply>(&encode_ok(&c)).unwrap(), c);
        let e = decode_response::<ConnectReply>(&encode_error(&ErrorBody::new(
            codes::TIMEOUT,
            "TCP exchange timed out",
        )))
        .unwrap_err();
        assert!(matches!(e, AgentProtoError::Remote { ref code, .. } if code == codes::TIMEOUT));
    }

    #[test]
    fn connect_reply_is_capped_and_fits_a_response_line() {
        // The worst case for the line: control bytes, escaped as \u00XX.
        let c = ConnectReply::from_bytes(&vec![1u8; MAX_RECEIVED + 10]);
        assert!(c.truncated);
        assert_eq!(c.received.len(), MAX_RECEIVED);
        let line = encode_ok(&c);
        assert!(line.len() <= MAX_RESPONSE_LINE, "{}", line.len());
        let mut r = io::Cursor::new(line.clone());
        assert_eq!(read_response_line(&mut r).unwrap().unwrap(), line);
        assert!(matches!(
            read_line(&mut io::Cursor::new(line.clone())),
            Err(AgentProtoError::LineTooLong { max: MAX_LINE })
        ));
        assert_eq!(decode_response::<ConnectReply>(&line).unwrap(), c);
    }
}
