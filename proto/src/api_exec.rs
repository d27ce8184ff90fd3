//! hearth's HTTP bodies for exec sessions and file transfer, shared by hearthd and hearthctl.
//!
//! - `POST /v1/vms/{name}/exec` with an [`ExecCreate`] starts a session in the guest's agent
//!   and answers `201` with an [`ExecCreated`]. The session runs in the agent whether or not
//!   a client is attached; unless the body says `detach`, every byte of its output is kept for
//!   the first attach (for up to [`ATTACH_HOLD_MS`]), so nothing is lost between the two calls.
//! - `GET /v1/vms/{name}/execs` answers an [`ExecList`]; `GET .../execs/{id}` an [`ExecInfo`].
//! - `GET .../execs/{id}/attach` upgrades to a WebSocket speaking Kubernetes' exec framing
//!   ([`SUBPROTOCOL`]): every message is binary, its first byte a [`channel`], the rest the
//!   channel's bytes. The kept output is replayed first, then the session is followed. Query
//!   `stdin=true` makes this client the session's stdin writer.
//! - `POST .../execs/{id}/signal` with an [`ExecSignal`] signals the process group.
//! - `PUT /v1/vms/{name}/archive?path=DIR` with a tar body (`application/x-tar`) extracts it
//!   into the existing guest directory `DIR` ([`ArchiveSummary`] back);
//!   `GET /v1/vms/{name}/archive?path=P` answers `P` as a tar stream whose top entry is `P`'s
//!   last component, with its [`PathStat`] in the [`PATH_STAT_HEADER`] header (JSON).
//! - `HEAD /v1/vms/{name}/archive?path=P` answers `200` with only that header (Docker's stat
//!   of a container path), `404` when nothing is at `P`: `hearthctl vm cp` decides from it
//!   whether a copy goes into an existing directory or becomes a new path.

use serde::{Deserialize, Serialize};

pub use crate::agent::exec::{ExecInfo, ExecList, ExitStatus, SessionId, WindowSize};
pub use crate::agent::files::{ArchiveSummary, PathKind, PathStat};

/// The WebSocket subprotocol of `attach` (Kubernetes' exec channel framing, version 5).
pub const SUBPROTOCOL: &str = "v5.channel.k8s.io";

/// The response header of `GET .../archive` that carries the path's [`PathStat`] as JSON.
pub const PATH_STAT_HEADER: &str = "X-Hearth-Path-Stat";

/// The channel numbers of the WebSocket framing (the first byte of each message).
pub mod channel {
    /// Client -> hearthd: bytes for the process's stdin.
    pub const STDIN: u8 = 0;
    /// hearthd -> client: the process's stdout (its PTY's output with `tty`).
    pub const STDOUT: u8 = 1;
    /// hearthd -> client: the process's stderr.
    pub const STDERR: u8 = 2;
    /// hearthd -> client, last message: a Kubernetes `Status` as JSON ([`super::Status`]).
    pub const STATUS: u8 = 3;
    /// Client -> hearthd: a new terminal size as JSON ([`super::TerminalSize`]).
    pub const RESIZE: u8 = 4;
    /// Client -> hearthd (v5): close a channel; the payload is the channel to close (only
    /// [`STDIN`] can be closed: stdin EOF).
    pub const CLOSE: u8 = 255;
}

/// The body of `POST /v1/vms/{name}/exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecCreate {
    /// The command and its arguments (at least the command).
    pub command: Vec<String>,
    /// Environment entries `KEY=VALUE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// The working directory in the guest (absolute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// The user to run as, `uid` or `uid:gid` (numbers: the guest has no user database the
    /// host can trust).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run on a PTY.
    #[serde(default)]
    pub tty: bool,
    /// The PTY's initial size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<WindowSize>,
    /// Keep a stdin open for an attaching client to write.
    #[serde(default)]
    pub stdin: bool,
    /// Kill the session after this many seconds.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::api::whole::optional"
    )]
    pub timeout_secs: Option<u64>,
    /// The client will not attach right away (`hearthctl vm exec -d`): the session's output
    /// goes to its ring buffers from the start, the oldest bytes dropped when one is full.
    /// Without it, every byte is kept for the first attach for up to [`ATTACH_HOLD_MS`] (the
    /// process waits on a full buffer meanwhile), so create-then-attach loses nothing.
    #[serde(default)]
    pub detach: bool,
}

/// How long a session created without `detach` keeps all its output for its first attach.
pub const ATTACH_HOLD_MS: u64 = 30_000;

/// The answer to `POST /v1/vms/{name}/exec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecCreated {
    /// The session's id, for `attach`, `signal` and `execs/{id}`.
    pub id: SessionId,
}

/// The body of `POST .../execs/{id}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSignal {
    /// A signal name (`TERM`, `SIGTERM`) or number (`15`).
    pub signal: String,
}

/// The payload of a [`channel::RESIZE`] message, spelled as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The payload of the [`channel::STATUS`] message: a Kubernetes `metav1.Status`, as
/// `kubectl exec` reads it. Success is `{"status":"Success"}`; a non-zero exit is a `Failure`
/// with reason `NonZeroExitCode` and a cause `ExitCode` whose message is the code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `Success` or `Failure`.
    pub status: String,
    /// Why it failed (`NonZeroExitCode`, `InternalError`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The exit code, as a cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

/// [`Status::details`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// The causes; an exit code is `{"reason":"ExitCode","message":"42"}`.
    pub causes: Vec<StatusCause>,
}

/// One cause of a [`Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// `ExitCode`.
    pub reason: String,
    /// The exit code in decimal.
    pub message: String,
}

impl Status {
    /// The status for a session that ended with `exit`.
    pub fn from_exit(exit: &ExitStatus) -> Self {
        if exit.code == 0 {
            return Status {
                status: "Success".into(),
                reason: None,
                message: None,
                details: None,
            };
        }
        let message = match (exit.signal, exit.timed_out) {
            (_, true) => format!("command timed out and was killed (exit code {})", exit.code),
            (Some(s), false) => format!("command killed by signal {s}"),
            (None, false) => format!("command terminated with non-zero exit code {}", exit.code),
        };
        Status {
            status: "Failure".into(),
            reason: Some("NonZeroExitCode".into()),
            message: Some(message),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: "ExitCode".into(),
                    message: exit.code.to_string(),
                }],
            }),
        }
    }

    /// The status for a session whose stream failed (the agent broke the protocol, the VM
    /// stopped...).
    pub fn internal_error(message: impl Into<String>) -> Self {
        Status {
            status: "Failure".into(),
            reason: Some("InternalError".into()),
            message: Some(message.into()),
            details: None,
        }
    }

    /// The exit code this status reports: 0 for success, the `ExitCode` cause for a non-zero
    /// exit, `None` for any other failure.
    pub fn exit_code(&self) -> Option<i32> {
        if self.status == "Success" {
            return Some(0);
        }
        self.details
            .as_ref()?
            .causes
            .iter()
            .find(|c| c.reason == "ExitCode")?
            .message
            .parse()
            .ok()
    }
}

/// Parses `uid` or `uid:gid` (decimal numbers).
pub fn parse_user(user: &str) -> Result<(u32, Option<u32>), String> {
    let num = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("user {user:?} is not uid or uid:gid (decimal numbers)"))
    };
    match user.split_once(':') {
        Some((u, g)) => Ok((num(u)?, Some(num(g)?))),
        None => Ok((num(user)?, None)),
    }
}

/// The signals [`parse_signal`] knows by name (Linux `x86_64` and `aarch64` numbering).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// Parses a signal given as a name (`TERM`, `SIGTERM`, any case) or a number (1..=64).
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal {n} is not in 1..=64"))
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, num)| *num)
        .ok_or_else(|| format!("unknown signal {s:?} (a name such as TERM, or a number)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON Schema's integers include `80.0`; a generated client sends them.
    #[test]
    fn whole_floats_are_integers_in_exec_bodies() {
        let c: ExecCreate = serde_json::from_str(
            r#"{"command":["x"],"size":{"rows":24.0,"cols":65535.0},"timeout_secs":5.0}"#,
        )
        .unwrap();
        assert_eq!(
            c.size,
            Some(WindowSize {
                rows: 24,
                cols: 65535
            })
        );
        assert_eq!(c.timeout_secs, Some(5));
        assert!(serde_json::from_str::<ExecCreate>(
            r#"{"command":["x"],"size":{"rows":24.5,"cols":80}}"#
        )
        .is_err());
        assert!(serde_json::from_str::<ExecCreate>(
            r#"{"command":["x"],"size":{"rows":65536,"cols":80}}"#
        )
        .is_err());
    }

    #[test]
    fn status_follows_kubectl() {
        let ok = Status::from_exit(&ExitStatus::exited(0));
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"status":"Success"}"#
        );
        assert_eq!(ok.exit_code(), Some(0));
        let fail = Status::from_exit(&ExitStatus::exited(42));
        let json = serde_json::to_value(&fail).unwrap();
        assert_eq!(json["reason"], "NonZeroExitCode");
        assert_eq!(json["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(json["details"]["causes"][0]["message"], "42");
        assert_eq!(fail.exit_code(), Some(42));
        assert_eq!(
            Status::from_exit(&ExitStatus::killed(9)).exit_code(),
            Some(137)
        );
        assert_eq!(Status::internal_error("agent went away").exit_code(), None);
    }

    #[test]
    fn terminal_size_is_spelled_as_kubernetes_does() {
        let s: TerminalSize = serde_json::from_str(r#"{"Width":80,"Height":24}"#).unwrap();
        assert_eq!((s.width, s.height), (80, 24));
    }

    #[test]
    fn users_and_signals_parse() {
        assert_eq!(parse_user("1000").unwrap(), (1000, None));
        assert_eq!(parse_user("0:5").unwrap(), (0, Some(5)));
        for bad in ["", "root", "1:", ":1", "-1", "1:2:3"] {
            assert!(parse_user(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_signal("TERM").unwrap(), 15);
        assert_eq!(parse_signal("sigkill").unwrap(), 9);
        assert_eq!(parse_signal("2").unwrap(), 2);
        for bad in ["0", "65", "BOGUS", "", "SIG"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exec_create_refuses_unknown_fields() {
        assert!(serde_json::from_str::<ExecCreate>(r#"{"command":["ls"],"bogus":1}"#).is_err());
        let c: ExecCreate = serde_json::from_str(r#"{"command":["ls"]}"#).unwrap();
        assert!(!c.tty && !c.stdin && c.env.is_empty());
    }
}
