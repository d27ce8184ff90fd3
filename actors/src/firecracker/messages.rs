//! The messages [`super::FirecrackerActor`] answers, the event it sends its owner, and the
//! records and reports they carry.

use std::path::PathBuf;
use std::time::Duration;

use actix::Message;

use crate::host::processes::ExitStatus;

use super::config::VmConfig;
use super::readiness::ProbeOutcome;
use super::stop::{StopOutcome, StopPlan, StopRung};
use super::FirecrackerError;

/// A spawned VMM process as its `FirecrackerActor` knows it: enough to recognise it again after
/// a restart and adopt it. The supervisor stores it (with the guest's CID) in a
/// `supervisor::VmmProcessRecord`, written before the spawn, when the pid is not yet known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmProcess {
    /// The process id.
    pub pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22, clock ticks since boot).
    pub start_time: u64,
    /// Its API socket.
    pub api_socket: PathBuf,
    /// The binary it runs.
    pub binary: PathBuf,
}

/// What spawning produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnInfo {
    /// The record to persist.
    pub record: VmmProcess,
    /// From the request to the process existing (run dir, console, fork/exec).
    pub spawn: Duration,
    /// From the process existing to its API socket accepting connections.
    pub api_ready: Duration,
}

/// Sent to the actor's owner when the process ends.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub enum VmProcessEvent {
    /// The process ended because hearth stopped it.
    Stopped {
        /// The VM.
        vm_id: String,
        /// The process.
        pid: u32,
        /// The rung that ended it.
        rung: StopRung,
        /// Its exit status.
        status: ExitStatus,
    },
    /// The process ended on its own (crash, guest reboot, external kill).
    ExitedUnexpectedly {
        /// The VM.
        vm_id: String,
        /// The process.
        pid: u32,
        /// Its exit status (`Unknown` for an adopted process).
        status: ExitStatus,
        /// How the image's command ended, when hearth's init reported it on the console
        /// before the guest rebooted ([`hearth_proto::init::exit_line`]).
        guest_exit: Option<hearth_proto::init::ExitReport>,
    },
}

/// Prepares the run directory and starts Firecracker; resolves when its API socket accepts
/// connections.
#[derive(Debug, Message)]
#[rtype(result = "Result<SpawnInfo, FirecrackerError>")]
pub struct SpawnProcess {}

/// Configures the spawned VM: machine, kernel and boot args, root drive, network, vsock.
#[derive(Debug, Message)]
#[rtype(result = "Result<Duration, FirecrackerError>")]
pub struct ConfigureVm {
    /// The configuration.
    pub config: VmConfig,
}

/// `InstanceStart`, then waits for `GET /` to report Running.
#[derive(Debug, Message)]
#[rtype(result = "Result<Duration, FirecrackerError>")]
pub struct StartVm {}

/// Probes the guest agent over hybrid vsock until it answers or `timeout` passes.
#[derive(Debug, Message)]
#[rtype(result = "Result<ProbeOutcome, FirecrackerError>")]
pub struct ProbeReady {
    /// The agent's vsock port.
    pub port: u32,
    /// How long to keep trying.
    pub timeout: Duration,
}

/// Asks the guest to shut down (x86 Ctrl+Alt+Del); does not wait.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), FirecrackerError>")]
pub struct SendCtrlAltDel {}

/// Stops the process by the ladder in `plan`; the answer says which rung ended it.
#[derive(Debug, Message)]
#[rtype(result = "Result<StopOutcome, FirecrackerError>")]
pub struct StopVm {
    /// Graces per rung.
    pub plan: StopPlan,
}

/// SIGKILL at once.
#[derive(Debug, Message)]
#[rtype(result = "Result<StopOutcome, FirecrackerError>")]
pub struct KillVm {}

/// Takes over a running process recorded earlier, without restarting it: verifies pid, start
/// time and command line, then pings the API. A process failing verification is not touched.
#[derive(Debug, Message)]
#[rtype(result = "Result<AdoptInfo, FirecrackerError>")]
pub struct AdoptProcess {
    /// What was recorded.
    pub record: VmmProcess,
}

/// What adoption found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdoptInfo {
    /// The VM state Firecracker reports.
    pub vmm_state: hearth_proto::firecracker::InstanceState,
    /// Whether the process is our child (its exit code will be known).
    pub is_child: bool,
}

/// Kills a VMM process that uses this VM's run directory (its command line names this VM's
/// API socket) but is not the process this actor owns: a stray, e.g. spawned and never
/// recorded before a crash of hearthd, or one that failed adoption. The pid is pinned (pidfd)
/// and its command line checked before the SIGKILL; then the answer waits up to `wait` for it
/// to go, so what it held (its TAP) is free afterwards.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), FirecrackerError>")]
pub struct KillStray {
    /// The process.
    pub pid: u32,
    /// How long to wait for it to exit after SIGKILL.
    pub wait: Duration,
}

/// Removes what a gone process leaves in the run directory (sockets, console FIFO), as an
/// exit does; logs stay. A missing directory is fine. Refused while a process of this actor
/// still runs.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), FirecrackerError>")]
pub struct RemoveStaleSockets {}

/// Removes the whole run directory, logs included (a deleted VM, or a directory left by a VM
/// that no longer exists). A missing directory is fine. Refused while a process of this actor
/// still runs; a stray using the directory is not this actor's process, so kill it first
/// ([`KillStray`]), as `Open` does.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), FirecrackerError>")]
pub struct RemoveRunDir {}

/// The current process record, if a process is owned.
#[derive(Debug, Message)]
#[rtype(result = "Option<VmmProcess>")]
pub struct GetVmmProcess {}

/// Internal: the process has exited (sent by the actor's own wait task).
#[doc(hidden)]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ProcessExited {
    /// The process that exited.
    pub pid: u32,
    /// How.
    pub status: ExitStatus,
}
