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
//! The shape of `ok` depends on the op ([`PingReply`] for `ping`). A peer that receives a
//! version it does not speak answers with the error code [`codes::UNSUPPORTED_VERSION`] and
//! keeps the connection open. Both ends use the `encode_*`/`decode_*` helpers below, so the
//! wire format lives in exactly one place.

use std::io::{self, BufRead};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The vsock port the agent listens on unless told otherwise (`--port`).
pub const DEFAULT_PORT: u32 = 52;

/// The longest line either end accepts, including the `\n`.
pub const MAX_LINE: usize = 4096;

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
}

/// A request from the host to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Liveness and identity: answered with a [`PingReply`].
    Ping,
}

impl Request {
    /// The request's `op` string on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
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
    #[error("Unsupported protocol version {got} (this end speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// The version the peer sent.
        got: u32,
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
            AgentProtoError::UnsupportedVersion { .. } => codes::UNSUPPORTED_VERSION,
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

#[derive(Serialize, Deserialize)]
struct RawRequest<'a> {
    v: u32,
    #[serde(borrow)]
    op: std::borrow::Cow<'a, str>,
}

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

fn trim_line(line: &[u8]) -> Result<&[u8], AgentProtoError> {
    if line.len() > MAX_LINE {
        return Err(AgentProtoError::LineTooLong { max: MAX_LINE });
    }
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    Ok(line.strip_suffix(b"\r").unwrap_or(line))
}

/// Encodes a request as one line, `\n` included.
pub fn encode_request(req: &Request) -> Vec<u8> {
    to_line(&RawRequest {
        v: PROTOCOL_VERSION,
        op: req.op().into(),
    })
}

/// Decodes one request line (with or without its `\n`).
pub fn decode_request(line: &[u8]) -> Result<Request, AgentProtoError> {
    let raw: RawRequest<'_> = serde_json::from_slice(trim_line(line)?)
        .map_err(|source| AgentProtoError::Malformed { source })?;
    if raw.v != PROTOCOL_VERSION {
        return Err(AgentProtoError::UnsupportedVersion { got: raw.v });
    }
    match raw.op.as_ref() {
        "ping" => Ok(Request::Ping),
        other => Err(AgentProtoError::UnknownOp { op: other.into() }),
    }
}

/// Encodes a successful response line carrying `ok`.
pub fn encode_ok<T: Serialize>(ok: &T) -> Vec<u8> {
    to_line(&RawResponse {
        v: PROTOCOL_VERSION,
        ok: Some(ok),
        error: None,
    })
}

/// Encodes an error response line.
pub fn encode_error(error: &ErrorBody) -> Vec<u8> {
    to_line(&RawResponse::<()> {
        v: PROTOCOL_VERSION,
        ok: None,
        error: Some(error.clone()),
    })
}

/// Decodes a response line: the `ok` payload, or [`AgentProtoError::Remote`] for an error.
pub fn decode_response<T: DeserializeOwned>(line: &[u8]) -> Result<T, AgentProtoError> {
    // Two steps, so a peer of another version is reported as such even when its `ok` has
    // another shape.
    let raw: RawResponse<serde_json::Value> = serde_json::from_slice(trim_line(line)?)
        .map_err(|source| AgentProtoError::Malformed { source })?;
    if raw.v != PROTOCOL_VERSION {
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
        if line.len() + take > MAX_LINE {
            return Err(AgentProtoError::LineTooLong { max: MAX_LINE });
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
    fn bad_requests_are_classified() {
        let e = decode_request(b"{\"v\":2,\"op\":\"ping\"}").unwrap_err();
        assert!(matches!(e, AgentProtoError::UnsupportedVersion { got: 2 }));
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
        let line = encode_ok(&reply);
        assert!(line.starts_with(b"{\"v\":1,\"ok\":{"));
        assert_eq!(*line.last().unwrap(), b'\n');
        assert_eq!(decode_response::<PingReply>(&line).unwrap(), reply);
    }

    #[test]
    fn error_response_decodes_to_remote() {
        let line = encode_error(&ErrorBody {
            code: codes::UNKNOWN_OP.into(),
            message: "Unknown op \"x\"".into(),
        });
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
}
