//! `GuestActor`: owns hearthd's connections to the guest agents, over each VM's hybrid vsock
//! socket. Callers (the HTTP API) send [`AgentCall`] for request/response ops (`exec`
//! detached, `execs`, `exec_info`, `signal`, `stat`) and [`OpenStream`] for streaming ones
//! (`attach`, `get_archive`, `put_archive`); [`ReconfigureGuest`] gives a restored guest its
//! new identity (`reconfigure`); [`FreezeGuest`] and [`ThawGuest`] quiesce its root
//! filesystem around a snapshot (`freeze`, `thaw`).
//!
//! Flow of one message: the handler reserves one of the VM's connection slots (state owned
//! here), then a future asks the supervisor where the VM's agent is ([`GuestEndpoint`]: 404
//! for an unknown VM, 409 for one that is not running), connects (`CONNECT <port>` through
//! [`vsock`], bounded by the connect timeout), writes the request line and reads one bounded
//! response line. A call answers the decoded `ok`; a stream answers it together with the
//! connected [`AgentStream`], which the caller drives: no long stream ever sits in this
//! actor's mailbox. The slot comes back when the call ends or the stream is dropped.
//!
//! One actor for all VMs, not one per VM: sessions live in the agent (so they outlive
//! hearthd), the VM table lives in the supervisor, and the only state hearthd keeps about
//! agent connections is how many are open per VM (bounded, so no client can make hearthd
//! exhaust Firecracker's per-device connection limit or its own file descriptors). A single
//! owner of that map needs no per-VM lifecycle of its own to start, stop and forget.

mod freeze;
mod handlers;
mod identity;
mod messages;
pub mod stream;
pub mod vsock;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::time::Duration;

use actix::{Actor, Context, Recipient};
use hearth_proto::agent::AgentProtoError;
use slog::Logger;

pub use freeze::{FreezeGuest, ThawGuest};
pub use identity::ReconfigureGuest;
pub use messages::{AgentCall, OpenConnections, OpenStream, Opened};
pub use stream::{AgentStream, FrameReader, FrameWriter};

use crate::supervisor::{GuestEndpoint, SupervisorError};

/// How [`GuestActor`] reaches agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestSettings {
    /// How long an agent has to accept a connection (`OK`) and to answer a request line.
    pub connect_timeout: Duration,
    /// The most agent connections open at once per VM (Firecracker allows 1023 per vsock
    /// device; attached sessions and transfers each hold one).
    pub max_connections_per_vm: usize,
}

impl Default for GuestSettings {
    fn default() -> Self {
        GuestSettings {
            connect_timeout: Duration::from_secs(5),
            max_connections_per_vm: 256,
        }
    }
}

/// Why a guest operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The VM is unknown or not running (the supervisor's answer).
    #[error(transparent)]
    Vm(#[from] SupervisorError),
    /// The agent could not be reached or did not answer in time.
    #[error("The agent of VM {vm:?} is unreachable: {reason}")]
    Unreachable {
        /// The VM.
        vm: String,
        /// Why.
        reason: String,
    },
    /// The agent answered with an error.
    #[error("{message}")]
    Agent {
        /// Its code (`hearth_proto::agent::codes`).
        code: String,
        /// Its message.
        message: String,
    },
    /// The agent broke the protocol (bad JSON, bad frame, oversized line or frame).
    #[error("The agent broke the protocol: {reason}")]
    Protocol {
        /// What was wrong.
        reason: String,
    },
    /// An established stream failed (the agent or the VM went away mid-stream).
    #[error("The agent stream failed: {reason}")]
    Stream {
        /// What failed.
        reason: String,
    },
    /// The VM already has as many agent connections open as allowed.
    #[error("VM {vm:?} already has {limit} agent connections open")]
    Busy {
        /// The VM.
        vm: String,
        /// The limit.
        limit: usize,
    },
    /// The request does not fit the message (a streaming op sent as a call, or the reverse).
    #[error("Op {op:?} cannot be sent this way")]
    WrongOp {
        /// The op.
        op: &'static str,
    },
    /// An actor's mailbox is closed (hearthd is shutting down).
    #[error("The guest connections are shutting down")]
    Gone,
}

impl GuestError {
    /// A protocol violation.
    #[must_use]
    pub fn protocol(reason: impl Into<String>) -> Self {
        GuestError::Protocol {
            reason: reason.into(),
        }
    }

    /// A failed stream.
    #[must_use]
    pub fn stream(reason: impl Into<String>) -> Self {
        GuestError::Stream {
            reason: reason.into(),
        }
    }

    /// Classifies a decode error of the agent's answer: its own error, or a violation.
    #[must_use]
    pub fn from_answer(e: AgentProtoError) -> Self {
        match e {
            AgentProtoError::Remote { code, message } => GuestError::Agent { code, message },
            other => GuestError::protocol(other.to_string()),
        }
    }
}

/// The actor: see the module documentation.
pub struct GuestActor {
    endpoints: Recipient<GuestEndpoint>,
    settings: GuestSettings,
    /// Open agent connections per VM (entries removed at zero).
    open: HashMap<String, usize>,
    log: Logger,
}

impl GuestActor {
    /// An actor that asks `endpoints` (the supervisor) where each VM's agent is.
    #[must_use]
    pub fn new(endpoints: Recipient<GuestEndpoint>, settings: GuestSettings, log: &Logger) -> Self {
        GuestActor {
            endpoints,
            settings,
            open: HashMap::new(),
            log: log.new(slog::o!("actor" => "guest")),
        }
    }
}

impl Actor for GuestActor {
    type Context = Context<Self>;
}
