//! The messages [`super::VmSupervisor`] answers. Every lifecycle message names the VM; answers
//! are `Result<_, SupervisorError>`. Mutating messages may carry an [`Idempotency`] key so a
//! retried request after a lost response has exactly one effect.

use std::time::Duration;

use actix::{Addr, Message, Recipient};
use hearth_proto::api::{self, Event, VmInfo, VmState};

use super::metrics::Histogram;
use super::{Change, SupervisorError};
use crate::firecracker::FirecrackerActor;

/// An idempotency key and a digest of the request it came with. The same key with the same
/// digest returns the first answer again; with another digest it is a conflict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    /// The client's key (`Idempotency-Key` header).
    pub key: String,
    /// A digest of the method, path and body.
    pub request_hash: String,
}

/// Creates a VM: record intent -> disk -> lease -> spawn/configure/start -> NAT -> DNS ->
/// readiness. Any failure undoes every earlier step in reverse and leaves the VM `failed`.
/// Answers once the VM is running (or unready, or failed).
#[derive(Debug, Message)]
#[rtype(result = "Result<VmInfo, SupervisorError>")]
pub struct CreateVm {
    /// What to create.
    pub spec: api::CreateVm,
    /// Makes a retried create a no-op.
    pub idempotency: Option<Idempotency>,
}

/// What a lifecycle action on an existing VM does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    /// Start a stopped, crashed or failed VM: it keeps its disk and gets a lease again.
    Start,
    /// The stop ladder: Ctrl+Alt+Del, SIGTERM, SIGKILL.
    Stop,
    /// SIGKILL at once.
    Kill,
    /// Stop (if running), then start.
    Restart,
    /// Pause the guest's vCPUs (`running` or `unready` -> `paused`).
    Pause,
    /// Resume a paused VM (-> `running`).
    Resume,
}

impl VmAction {
    /// The operation's name, for errors and events.
    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Start => "start",
            VmAction::Stop => "stop",
            VmAction::Kill => "kill",
            VmAction::Restart => "restart",
            VmAction::Pause => "pause",
            VmAction::Resume => "resume",
        }
    }
}

/// Runs a lifecycle action; answers with the VM after it.
#[derive(Debug, Message)]
#[rtype(result = "Result<VmInfo, SupervisorError>")]
pub struct RunAction {
    /// The VM.
    pub name: String,
    /// The action.
    pub action: VmAction,
    /// Makes a retried action a no-op.
    pub idempotency: Option<Idempotency>,
}

/// Deletes a VM: stops it if needed, then frees its lease, disk, run directory and records.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SupervisorError>")]
pub struct DeleteVm {
    /// The VM.
    pub name: String,
}

/// Switches NAT for a VM (running or stopped; applied to the kernel set while it holds a lease).
#[derive(Debug, Message)]
#[rtype(result = "Result<VmInfo, SupervisorError>")]
pub struct SetNat {
    /// The VM.
    pub name: String,
    /// On or off.
    pub enabled: bool,
}

/// One VM.
#[derive(Debug, Message)]
#[rtype(result = "Result<VmInfo, SupervisorError>")]
pub struct GetVm {
    /// The VM.
    pub name: String,
}

/// All VMs, optionally only those carrying a label `key=value`, ordered by name.
#[derive(Debug, Message)]
#[rtype(result = "Vec<VmInfo>")]
pub struct ListVms {
    /// Label filter.
    pub label: Option<(String, String)>,
}

/// Answers when the VM reaches `state`, or with `Timeout` after `timeout` (long poll).
/// Answers at once with `InvalidState` if the VM is in a state from which `state` can no longer
/// come without a user action (e.g. waiting for `running` on a `failed` VM).
#[derive(Debug, Message)]
#[rtype(result = "Result<VmInfo, SupervisorError>")]
pub struct WaitForState {
    /// The VM.
    pub name: String,
    /// The state to wait for.
    pub state: VmState,
    /// How long to wait.
    pub timeout: Duration,
}

/// Persisted events after `since`, oldest first.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Event>, SupervisorError>")]
pub struct EventsSince {
    /// Sequence number to resume after (0 for all).
    pub since: u64,
    /// At most this many.
    pub limit: u32,
}

/// Every event from now on is sent to `subscriber` (until it is dropped).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    /// Who gets them.
    pub subscriber: Recipient<EventPublished>,
}

/// An event, as published to subscribers.
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub struct EventPublished {
    /// The event.
    pub event: Event,
}

/// Reconciles after (re)start: re-adopts live VMM processes, marks dead ones, sweeps leaks,
/// initialises the TAP pool from the leases in use, reconciles NAT and rebuilds DNS.
#[derive(Debug, Message)]
#[rtype(result = "Result<OpenReport, SupervisorError>")]
pub struct Open {}

/// What `Open` found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// VMs whose process was verified and taken over.
    pub adopted: Vec<String>,
    /// VMs whose process was gone (marked crashed, or stopped if they were stopping).
    pub dead: Vec<String>,
    /// VMs whose create or delete was cut short and was finished or undone.
    pub repaired: Vec<String>,
    /// Leaked resources removed (TAPs, disks, run directories), by name.
    pub swept: Vec<String>,
    /// VMs queued to start again by their restart policy (their process was gone), oldest
    /// first.
    pub autostarts: Vec<String>,
    /// uids of swept jails whose processes survived SIGKILL: kept out of use (never leased)
    /// until the next `Open`.
    pub quarantined_uids: Vec<u32>,
}

/// Stops accepting work, waits for in-flight operations, and either leaves VMs running
/// (default) or stops them.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SupervisorError>")]
pub struct Close {
    /// Stop every VM before answering.
    pub stop_vms: bool,
}

/// Counters for the metrics endpoint.
#[derive(Debug, Message)]
#[rtype(result = "SupervisorMetrics")]
pub struct GetMetrics {}

/// What the metrics endpoint exposes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SupervisorMetrics {
    /// VM counts by state.
    pub vms_by_state: Vec<(VmState, u64)>,
    /// Create phase latencies, by phase name.
    pub phase_seconds: Vec<(&'static str, Histogram)>,
    /// Errors by operation.
    pub errors: Vec<(&'static str, u64)>,
    /// Bytes each snapshot occupies on the host: (name, disk checkpoint, memory file).
    pub snapshots: Vec<(String, u64, u64)>,
    /// The TAP pool's occupancy, when the pool answered.
    pub pool: Option<PoolOccupancy>,
    /// Whether the host is cordoned.
    pub cordoned: bool,
    /// The lifecycle policies' loop passes and decisions.
    pub policy: super::metrics::PolicyCounters,
    /// Packets each deny-mode VM's egress policy dropped, by VM name (empty when the
    /// firewall's counters could not be read).
    pub egress_denied: Vec<(String, u64)>,
}

/// The TAP pool's occupancy, for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolOccupancy {
    /// Warm, unleased TAPs.
    pub free_taps: u64,
    /// Leased TAPs.
    pub leased: u64,
    /// Guest addresses still free.
    pub free_ips: u64,
}

// Internal messages: sent by the supervisor's own sagas back to it.

/// Internal: applies a change (from a saga running outside the actor's state).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), SupervisorError>")]
pub(crate) struct Commit {
    pub(super) vm: String,
    pub(super) change: Change,
}

/// Internal: sets (or with `None` clears) the pid whose exit a running stop expects.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct ExpectExit {
    pub(super) vm: String,
    pub(super) pid: Option<u32>,
}

/// Internal: the actor that owns `vm`'s run directory (and any VMM process using it): the VM's
/// process actor if it has one, else a new one that is not kept (see the module docs).
#[derive(Debug, Message)]
#[rtype(result = "Result<Addr<FirecrackerActor>, SupervisorError>")]
pub(crate) struct RunDirOwner {
    pub(super) vm: String,
}

/// Internal: removes `vm`'s run directory when no process actor can own it (no Firecracker
/// binary), unless a process still uses it. Sent by a delete whose `RunDirOwner` failed.
#[derive(Debug, Message)]
#[rtype(result = "Result<UnownedRunDir, SupervisorError>")]
pub(crate) struct RemoveUnownedRunDir {
    pub(super) vm: String,
}

/// What [`RemoveUnownedRunDir`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UnownedRunDir {
    /// The directory is gone.
    Removed,
    /// A process actor owns it, or could: only that actor may remove it.
    HasOwner,
    /// A process (a VMM nobody adopted) uses it: left for an `Open` with a binary to sweep.
    InUse {
        /// The process.
        pid: u32,
    },
    /// The processes could not be listed, so it is not known to be unused: left.
    Unchecked {
        /// Why.
        reason: String,
    },
}

/// Internal: records a phase duration for the metrics.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct ObservePhase {
    pub(super) phase: &'static str,
    pub(super) took: Duration,
}

/// Where a running VM's guest agent is reached: its hybrid vsock socket and the agent's port.
/// `NotFound` for an unknown VM, `InvalidState` (HTTP 409) for one that is not `running`.
#[derive(Debug, Message)]
#[rtype(result = "Result<AgentEndpoint, SupervisorError>")]
pub struct GuestEndpoint {
    /// The VM.
    pub name: String,
}

/// The answer to [`GuestEndpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    /// The VM's hybrid vsock Unix socket (`CONNECT <port>` goes there).
    pub uds: std::path::PathBuf,
    /// The guest vsock port the agent listens on.
    pub port: u32,
}

/// Sets a VM's egress policy (running or stopped; applied to the firewall and DNS at once
/// while it holds a lease, for new connections). `None` is the default, allow mode.
#[derive(Debug, Message)]
#[rtype(result = "Result<VmInfo, SupervisorError>")]
pub struct SetEgress {
    /// The VM.
    pub name: String,
    /// The new policy.
    pub policy: Option<hearth_proto::api_egress::EgressPolicy>,
}

/// A VM's egress policy and, in deny mode while it holds a lease, the packets dropped for it.
#[derive(Debug, Message)]
#[rtype(result = "Result<hearth_proto::api_egress::EgressStatus, SupervisorError>")]
pub struct GetEgress {
    /// The VM.
    pub name: String,
}
