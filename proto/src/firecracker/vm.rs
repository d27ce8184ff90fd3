//! `PATCH /vm`, `definitions/Vm`.

use serde::{Deserialize, Serialize};

/// The state `PATCH /vm` asks for (Firecracker's `Vm.state`): paused or resumed vCPUs. Not
/// hearth's VM lifecycle state ([`crate::api::VmState`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmPauseState {
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
    pub state: VmPauseState,
}
