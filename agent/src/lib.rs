//! hearth-agent: the guest agent. It listens on `AF_VSOCK` (port
//! [`hearth_proto::agent::DEFAULT_PORT`] unless told otherwise) and answers the agent protocol
//! of [`hearth_proto::agent`]: `ping` -> agent version, guest boot id and uptime; the
//! diagnostic `resolve` and `connect` ([`net`]) let a test drive the guest's network. The host's
//! readiness probe reaches it through Firecracker's hybrid vsock socket.
//!
//! Version 2 adds exec sessions ([`exec`]: a table of sessions with pipes or a PTY, ring
//! buffers, attach/detach, one reaper) and file transfer ([`files`]: tar streams both ways).
//!
//! Started as `/sbin/hearth-init` or as PID 1 it is the guest's init ([`init`]).
//!
//! The connection handling ([`serve_connection`]) is generic over the stream, so the same code
//! serves vsock in the guest and a Unix socket (`--unix PATH`) for local tests.
#![warn(missing_docs)]

pub mod args;
pub mod conn;
pub mod exec;
pub mod files;
pub mod freeze;
pub mod init;
pub mod listen;
pub mod net;
pub mod serve;
pub mod sysinfo;

pub use args::{parse_args, Args, Listen};
pub use conn::Conn;
pub use exec::Table;
pub use serve::{handle_request, serve_connection};
