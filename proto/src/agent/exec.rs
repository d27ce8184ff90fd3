//! Exec sessions (protocol v2): a command run by the agent, with pipes or a PTY, that lives in
//! the agent (so it outlives the host's connection and hearthd itself).
//!
//! ```text
//! -> {"v":2,"op":"exec","argv":["sh","-c","echo hi"],"stdin":true,"attach":true}
//! <- {"v":2,"ok":{"id":"x3f9c0a1b2c3d4e5f","pid":412}}
//!    ... frames both ways (stdin, stdout, stderr, resize, signal, exit) ...
//! -> {"v":2,"op":"attach","id":"x3f9c0a1b2c3d4e5f","stdin":true}
//! <- {"v":2,"ok":{ExecInfo}}
//!    ... the session's kept output (its ring buffers) first, then live frames ...
//! -> {"v":2,"op":"execs"}                       <- {"v":2,"ok":{"execs":[ExecInfo, ...]}}
//! -> {"v":2,"op":"exec_info","id":"x3f..."}     <- {"v":2,"ok":{ExecInfo}}
//! -> {"v":2,"op":"signal","id":"x3f...","signal":15}   <- {"v":2,"ok":{}}
//! ```
//!
//! A session's stream ([`super::frame`]): the host sends `STDIN`, `STDIN_EOF`, `RESIZE` and
//! `SIGNAL` frames; the agent sends `STDOUT`, `STDERR` and, last, `EXIT` (or `ERROR`). Closing the
//! connection detaches: the process keeps running, its output goes to the session's ring
//! buffers (the oldest bytes are dropped when one is full) until the next `attach` replays them.
//! While a host is attached the agent writes to it with backpressure: a host that reads slowly
//! slows the process down (its pipe or PTY fills), nothing grows without bound. One host is
//! attached at a time; a new `attach` takes the session over.

use serde::{Deserialize, Serialize};

/// The most arguments an `exec` may carry.
pub const MAX_ARGS: usize = 4096;
/// The most environment entries an `exec` may carry.
pub const MAX_ENV: usize = 4096;
/// The ring buffer per output stream when `exec` asks for none (1 MiB).
pub const DEFAULT_RING_BYTES: u64 = 1 << 20;
/// The largest ring buffer per output stream an `exec` may ask for (64 MiB).
pub const MAX_RING_BYTES: u64 = 64 << 20;
/// The longest first-attach hold an `exec` may ask for ([`ExecRequest::hold_ms`], one minute).
pub const MAX_HOLD_MS: u64 = 60_000;
/// The longest session timeout an `exec` may ask for (one week, in milliseconds).
pub const MAX_EXEC_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;

/// A session id: 1 to 64 of `[A-Za-z0-9_-]`, chosen by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SessionId(String);

impl SessionId {
    /// Checks `s` against the id rules.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(SessionId(s.to_string()))
        } else {
            Err(format!(
                "session id {s:?} is not 1..=64 characters of [A-Za-z0-9_-]"
            ))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SessionId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        SessionId::parse(&s)
    }
}

impl From<SessionId> for String {
    fn from(id: SessionId) -> String {
        id.0
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSize {
    /// Rows (1..).
    #[serde(deserialize_with = "crate::api::whole::number")]
    pub rows: u16,
    /// Columns (1..).
    #[serde(deserialize_with = "crate::api::whole::number")]
    pub cols: u16,
}

/// The arguments of `exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The command and its arguments; `argv[0]` is looked up in `PATH` when it has no `/`.
    pub argv: Vec<String>,
    /// Environment entries `KEY=VALUE`, added to (and overriding) the agent's defaults
    /// (`PATH`, `HOME`, `TERM` for a PTY).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// The working directory (absolute); `/` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The user id to run as; the agent's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The group id to run as; `uid`'s number when only `uid` is given, else the agent's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Run on a PTY (stdout and stderr merged, as a terminal does) instead of pipes.
    #[serde(default)]
    pub tty: bool,
    /// The PTY's initial size (with `tty`); 24x80 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<WindowSize>,
    /// Give the process a stdin the host writes to (`STDIN` frames, closed by `STDIN_EOF`);
    /// otherwise its stdin is `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Kill the process group (SIGKILL) after this many milliseconds; no limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Bytes of output kept per stream while no host is attached; [`DEFAULT_RING_BYTES`]
    /// when absent, at most [`MAX_RING_BYTES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_bytes: Option<u64>,
    /// Keep this connection as the session's stream (frames follow the `ok` line); otherwise
    /// the agent answers the id and the session starts detached.
    #[serde(default)]
    pub attach: bool,
    /// Detached start only: keep every byte of output for the first `attach` for up to this
    /// many milliseconds (1..=[`MAX_HOLD_MS`]); the process blocks on a full ring meanwhile.
    /// For hosts that create a session and attach to it next, so nothing is dropped in
    /// between. Without it, a detached session's rings drop their oldest bytes from the start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_ms: Option<u64>,
}

impl ExecRequest {
    /// A request for `argv` with every option at its default (pipes, no stdin, detached).
    pub fn new(argv: Vec<String>) -> Self {
        ExecRequest {
            argv,
            env: Vec::new(),
            workdir: None,
            uid: None,
            gid: None,
            tty: false,
            size: None,
            stdin: false,
            timeout_ms: None,
            ring_bytes: None,
            attach: false,
            hold_ms: None,
        }
    }

    /// Checks the arguments' ranges; `Err` names the first problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err("argv must name a command".into());
        }
        if self.argv.len() > MAX_ARGS {
            return Err(format!("more than {MAX_ARGS} arguments"));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err("an argument contains a NUL byte".into());
        }
        if self.env.len() > MAX_ENV {
            return Err(format!("more than {MAX_ENV} environment entries"));
        }
        for e in &self.env {
            check_env_entry(e)?;
        }
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') || w.contains('\0') {
                return Err(format!("workdir {w:?} is not an absolute path"));
            }
        }
        if let Some(s) = self.size {
            if s.rows == 0 || s.cols == 0 {
                return Err(format!("window size {}x{} has a zero side", s.rows, s.cols));
            }
        }
        if let Some(t) = self.timeout_ms {
            if t == 0 || t > MAX_EXEC_TIMEOUT_MS {
                return Err(format!(
                    "timeout_ms {t} is not in 1..={MAX_EXEC_TIMEOUT_MS}"
                ));
            }
        }
        if let Some(h) = self.hold_ms {
            if h == 0 || h > MAX_HOLD_MS {
                return Err(format!("hold_ms {h} is not in 1..={MAX_HOLD_MS}"));
            }
            if self.attach {
                return Err("hold_ms is for a detached start (attach false)".into());
            }
        }
        if let Some(r) = self.ring_bytes {
            if r > MAX_RING_BYTES {
                return Err(format!("ring_bytes {r} is over {MAX_RING_BYTES}"));
            }
        }
        Ok(())
    }
}

/// Checks one `KEY=VALUE` environment entry.
pub fn check_env_entry(e: &str) -> Result<(), String> {
    match e.split_once('=') {
        Some((k, _)) if !k.is_empty() && !e.contains('\0') => Ok(()),
        _ => Err(format!(
            "environment entry {e:?} is not KEY=VALUE (non-empty KEY, no NUL)"
        )),
    }
}

/// The agent's answer to `exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecStarted {
    /// The new session's id.
    pub id: SessionId,
    /// The process's pid in the guest.
    pub pid: u32,
}

/// The arguments of `attach`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachRequest {
    /// The session.
    pub id: SessionId,
    /// Whether this host will write the session's stdin (ignored when it has none).
    #[serde(default)]
    pub stdin: bool,
}

/// The arguments of `signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// The session.
    pub id: SessionId,
    /// The signal number, 1..=64.
    pub signal: i32,
}

impl SignalRequest {
    /// Checks the signal's range.
    pub fn validate(&self) -> Result<(), String> {
        if (1..=64).contains(&self.signal) {
            Ok(())
        } else {
            Err(format!("signal {} is not in 1..=64", self.signal))
        }
    }
}

/// How a session's process ended, as Docker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitStatus {
    /// The exit code: the process's own, `128 + N` when signal `N` killed it, 126 when the
    /// command could not be executed, 127 when it was not found.
    pub code: i32,
    /// The signal that killed the process, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// Whether the agent killed it because its `timeout_ms` passed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
}

impl ExitStatus {
    /// A process that exited with `code`.
    pub fn exited(code: i32) -> Self {
        ExitStatus {
            code,
            signal: None,
            timed_out: false,
        }
    }

    /// A process killed by signal `signal`.
    pub fn killed(signal: i32) -> Self {
        ExitStatus {
            code: 128 + signal,
            signal: Some(signal),
            timed_out: false,
        }
    }
}

/// One session as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecInfo {
    /// The session's id.
    pub id: SessionId,
    /// The command it runs.
    pub argv: Vec<String>,
    /// Whether it runs on a PTY.
    pub tty: bool,
    /// Whether it has a host-written stdin that is still open.
    pub stdin_open: bool,
    /// The process's pid in the guest.
    pub pid: u32,
    /// When it started, in milliseconds since the guest booted.
    pub started_uptime_ms: u64,
    /// Whether a host is attached now.
    pub attached: bool,
    /// How it ended; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
}

/// The agent's answer to `execs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecList {
    /// Every session the agent keeps (running, and the most recent exited ones).
    pub execs: Vec<ExecInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{decode_request, encode_request, AgentProtoError, Request};

    #[test]
    fn exec_request_round_trips_with_v2() {
        let mut e = ExecRequest::new(vec!["sh".into(), "-c".into(), "echo hi".into()]);
        e.env = vec!["A=1".into()];
        e.tty = true;
        e.size = Some(WindowSize {
            rows: 40,
            cols: 120,
        });
        e.attach = true;
        let req = Request::Exec(e);
        let line = encode_request(&req);
        assert!(line.starts_with(b"{\"v\":2,\"op\":\"exec\",\"argv\":["));
        assert_eq!(decode_request(&line).unwrap(), req);
        assert!(req.switches_to_frames());
    }

    #[test]
    fn v2_ops_need_v2() {
        let e = decode_request(b"{\"v\":1,\"op\":\"execs\"}").unwrap_err();
        assert!(matches!(
            e,
            AgentProtoError::OpNeedsVersion {
                op: "execs",
                needs: 2,
                got: 1
            }
        ));
        assert_eq!(
            decode_request(b"{\"v\":2,\"op\":\"execs\"}").unwrap(),
            Request::Execs
        );
        // v1 ops are still accepted in v2.
        assert_eq!(
            decode_request(b"{\"v\":2,\"op\":\"ping\"}").unwrap(),
            Request::Ping
        );
    }

    #[test]
    fn bad_exec_arguments_are_refused() {
        let bad: &[&str] = &[
            r#"{"v":2,"op":"exec","argv":[]}"#,
            r#"{"v":2,"op":"exec","argv":[""]}"#,
            r#"{"v":2,"op":"exec","argv":["a\u0000b"]}"#,
            r#"{"v":2,"op":"exec","argv":["ls"],"env":["NOEQUALS"]}"#,
            r#"{"v":2,"op":"exec","argv":["ls"],"env":["=v"]}"#,
            r#"{"v":2,"op":"exec","argv":["ls"],"workdir":"relative"}"#,
            r#"{"v":2,"op":"exec","argv":["ls"],"size":{"rows":0,"cols":80}}"#,
            r#"{"v":2,"op":"exec","argv":["ls"],"timeout_ms":0}"#,
            r#"{"v":2,"op":"exec","argv":["ls"],"ring_bytes":999999999999}"#,
            r#"{"v":2,"op":"exec","argv":["ls"],"bogus":1}"#,
            r#"{"v":2,"op":"exec","argv":["ls"],"hold_ms":0}"#,
            r#"{"v":2,"op":"exec","argv":["ls"],"hold_ms":60001}"#,
            r#"{"v":2,"op":"exec","argv":["ls"],"hold_ms":10,"attach":true}"#,
            r#"{"v":2,"op":"attach","id":"../x"}"#,
            r#"{"v":2,"op":"attach","id":""}"#,
            r#"{"v":2,"op":"signal","id":"x1","signal":0}"#,
            r#"{"v":2,"op":"signal","id":"x1","signal":65}"#,
            r#"{"v":2,"op":"execs","x":1}"#,
        ];
        for line in bad {
            let e = decode_request(line.as_bytes()).unwrap_err();
            assert!(
                matches!(e, AgentProtoError::InvalidArguments { .. }),
                "{line}: {e:?}"
            );
        }
    }

    #[test]
    fn exit_status_follows_docker() {
        assert_eq!(ExitStatus::killed(9).code, 137);
        assert_eq!(ExitStatus::exited(3).signal, None);
        let json = serde_json::to_string(&ExitStatus::exited(0)).unwrap();
        assert_eq!(json, r#"{"code":0}"#);
    }
}
