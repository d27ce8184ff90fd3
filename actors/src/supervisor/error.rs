//! The supervisor's error type. The HTTP layer maps each variant to one status code.

use hearth_proto::api::{FieldError, VmState};

use super::ledger::LedgerError;

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
    /// A long poll ran out (HTTP 408).
    #[error("VM {name:?} did not reach {state} in time")]
    Timeout {
        /// The VM.
        name: String,
        /// The state waited for.
        state: VmState,
    },
    /// A lifecycle step failed; what it had done was undone (HTTP 500).
    #[error("{step} failed: {message}")]
    Step {
        /// The step, e.g. `disk`, `network lease`, `boot`.
        step: &'static str,
        /// The underlying error.
        message: String,
    },
    /// The state store failed (HTTP 500).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl SupervisorError {
    /// No Firecracker binary was found at start-up, so no VM can be created or started.
    pub fn no_firecracker_binary() -> Self {
        SupervisorError::Unavailable {
            what: "No Firecracker binary: set firecracker_bin in the configuration".into(),
        }
    }
}
