//! The supervisor's error type. The HTTP layer maps each variant (and, for a failed step, its
//! typed cause) to one status code.

use std::sync::Arc;

use actix::MailboxError;
use hearth_proto::api::{FieldError, VmState};

use super::store::VmStoreError;
use crate::dns::DnsError;
use crate::firecracker::FirecrackerError;
use crate::nat::NatError;
use crate::snapshot::SnapshotError;
use crate::tap_pool::TapPoolError;

/// Why a supervisor operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SupervisorError {
    /// A request field is invalid (HTTP 400).
    #[error(transparent)]
    InvalidField(#[from] FieldError),
    /// No VM with that name (HTTP 404).
    #[error("No VM named {name:?}")]
    NotFound {
        /// The name asked for.
        name: String,
    },
    /// The name is taken, or an idempotency key was reused with another request (HTTP 409).
    #[error("{message}")]
    Conflict {
        /// What conflicts.
        message: String,
    },
    /// The operation is not allowed in the VM's state (HTTP 409).
    #[error("Cannot {op} VM {name:?} while it is {state}")]
    InvalidState {
        /// The VM.
        name: String,
        /// Its state.
        state: VmState,
        /// The operation refused.
        op: &'static str,
    },
    /// The spec names an image that does not exist (HTTP 422).
    #[error("No {kind} image named {image:?}")]
    UnknownImage {
        /// `kernel` or `rootfs`.
        kind: &'static str,
        /// The name given.
        image: String,
    },
    /// A dependency is missing or exhausted: no Firecracker binary, no free address,
    /// or the supervisor is closing (HTTP 503).
    #[error("{what}")]
    Unavailable {
        /// What is missing.
        what: String,
    },
    /// The host is cordoned: it takes no new VMs (HTTP 503, `cordoned`).
    #[error("This host is cordoned and takes no new VMs: {reason}")]
    Cordoned {
        /// Why, as given to `cordon`.
        reason: String,
    },
    /// A long poll ran out (HTTP 408).
    #[error("VM {name:?} did not reach {state} in time")]
    Timeout {
        /// The VM.
        name: String,
        /// The state waited for.
        state: VmState,
    },
    /// A lifecycle step failed; what it had done was undone. The status follows the cause
    /// (e.g. an exhausted address pool is 503, a broken VMM 500).
    #[error("{step} failed: {}", source.chain())]
    Step {
        /// The step, e.g. `disk`, `network lease`, `boot`.
        step: &'static str,
        /// The underlying error, typed.
        source: StepCause,
    },
    /// The state store failed (HTTP 500).
    #[error(transparent)]
    Store(#[from] VmStoreError),
    /// The VM has no such published port (HTTP 404).
    #[error("VM {name:?} does not publish {mapping}")]
    NotPublished {
        /// The VM.
        name: String,
        /// The port asked for.
        mapping: String,
    },
    /// No snapshot with that name (HTTP 404).
    #[error("No snapshot named {name:?}")]
    SnapshotNotFound {
        /// The name asked for.
        name: String,
    },
    /// The snapshot is used by VMs restored from it, or is still being taken (HTTP 409
    /// `in_use`).
    #[error("Snapshot {name:?} is in use by {}", in_use_list(.vms))]
    SnapshotInUse {
        /// The snapshot.
        name: String,
        /// The VMs using it (empty while it is being taken or removed).
        vms: Vec<String>,
    },
}

fn in_use_list(vms: &[String]) -> String {
    if vms.is_empty() {
        "an operation in progress".into()
    } else {
        format!("VMs {}", vms.join(", "))
    }
}

impl SupervisorError {
    /// No Firecracker binary was found at start-up, so no VM can be created or started.
    pub fn no_firecracker_binary() -> Self {
        SupervisorError::Unavailable {
            what: "No Firecracker binary: set firecracker_bin in the configuration".into(),
        }
    }

    /// A failed `step` caused by `cause`.
    pub fn step(step: &'static str, cause: impl Into<StepCause>) -> Self {
        SupervisorError::Step {
            step,
            source: cause.into(),
        }
    }
}

/// What made a lifecycle step fail: the error of the actor or host call, kept whole (shared,
/// so the supervisor's answers stay cloneable).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepCause {
    /// The TAP pool (e.g. every guest address is leased).
    #[error(transparent)]
    Pool(Arc<TapPoolError>),
    /// The per-guest firewall (e.g. no egress interface for NAT).
    #[error(transparent)]
    Nat(Arc<NatError>),
    /// The VM's root disk.
    #[error(transparent)]
    Disk(Arc<SnapshotError>),
    /// The VMM process or its API.
    #[error(transparent)]
    Vmm(Arc<FirecrackerError>),
    /// The name table.
    #[error(transparent)]
    Dns(Arc<DnsError>),
    /// The actor that does the step is gone (hearthd is shutting down).
    #[error("actor unavailable: {0}")]
    ActorGone(MailboxError),
    /// A guest address has no vsock CID (outside the range CIDs are derived from).
    #[error("no vsock CID for {0}")]
    NoVsockCid(std::net::Ipv4Addr),
    /// A file operation on a snapshot's directory.
    #[error("{what} {path}: {source}")]
    Files {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: std::path::PathBuf,
        /// Why.
        source: Arc<std::io::Error>,
    },
    /// The guest agent (e.g. it refused its new identity after a restore).
    #[error("{0}")]
    Guest(String),
    /// A stored idempotent answer does not parse.
    #[error("stored answer does not parse")]
    Replay(#[source] Arc<serde_json::Error>),
}

impl StepCause {
    /// The cause and each of its sources, joined by ": " (the actors' errors keep their
    /// causes as sources, not in their own message).
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            let text = e.to_string();
            // `transparent` variants already show their inner message.
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            next = e.source();
        }
        out
    }
}

/// Causes compare by kind and message: the wrapped errors (I/O, process) have no equality of
/// their own, and two causes that read the same are the same to a caller.
impl PartialEq for StepCause {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl Eq for StepCause {}

macro_rules! cause_from {
    ($($err:ty => $variant:ident),* $(,)?) => {$(
        impl From<$err> for StepCause {
            fn from(e: $err) -> Self {
                StepCause::$variant(Arc::new(e))
            }
        }
    )*};
}

cause_from!(
    TapPoolError => Pool,
    NatError => Nat,
    SnapshotError => Disk,
    FirecrackerError => Vmm,
    DnsError => Dns,
    serde_json::Error => Replay,
);

impl From<MailboxError> for StepCause {
    fn from(e: MailboxError) -> Self {
        StepCause::ActorGone(e)
    }
}
