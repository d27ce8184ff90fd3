//! `PATCH /vm`, `definitions/Vm`.

use serde::{Deserialize, Serialize};

/// The desired microVM state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Pause the vCPUs.
    Paused,
    /// Resume the vCPUs.
    Resumed,
}

/// Defines the microVM running state. It is especially useful in the snapshotting context.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vm {
    /// The desired state.
    pub state: VmState,
}
