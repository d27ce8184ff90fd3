//! `FirecrackerActor`: one actor per VM, owning one Firecracker process: its pidfd, its API
//! connection, its run directory (sockets, console FIFO and log, Firecracker log and metrics).
//!
//! Message flow: [`SpawnProcess`] -> [`ConfigureVm`] -> [`StartVm`] -> [`ProbeReady`], then
//! [`StopVm`] / [`KillVm`], or [`AdoptProcess`] after a supervisor restart. There is one boot
//! pipeline: the supervisor's saga sends these messages one by one (recording the pid between
//! spawn and configure, and treating a silent agent as `unready`, not as a failed boot);
//! examples and tests bring VMs up with the same messages.
//!
//! The actor owns its run directory and every VMM process using it: it alone removes what a
//! gone process left ([`RemoveStaleSockets`]), the whole directory ([`RemoveRunDir`]), and kills
//! a VMM found using the directory that it does not own ([`KillStray`], after checking the
//! process's command line through its pidfd), so no other actor signals a process or deletes
//! these files. Handlers that use the API connection are
//! `AtomicResponse`s: the connection is moved into the future and back, and the mailbox waits,
//! so requests never interleave. A wait task per process watches the pidfd; when the process
//! exits it tells the actor ([`ProcessExited`]), which reports [`VmProcessEvent::Stopped`] (we
//! stopped it, with the rung) or [`VmProcessEvent::ExitedUnexpectedly`] to the owner.
//!
//! Pure parts live beside it: [`binary`] (resolution, version), [`run_dir`] (paths and limits),
//! [`command`] (argv), [`config`] (API bodies, boot args), [`stop`] (the ladder),
//! [`readiness`] (the vsock probe), [`api_client`] (HTTP over the Unix socket), [`console`].

pub mod api_client;
pub mod backoff;
pub mod binary;
pub mod command;
pub mod config;
pub mod console;
mod error;
pub mod exit_watch;
mod handlers;
pub mod jailed;
pub mod jailer;
pub mod messages;
pub mod readiness;
pub mod run_dir;
pub mod snapshot_handlers;
pub mod snapshot_messages;
pub mod stop;
pub mod warm_pool;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Recipient};
use hearth_proto::firecracker::LogLevel;
use tokio::sync::watch;

use crate::host::processes::{ExitStatus, Process, Processes};

pub use api_client::ApiClient;
pub use binary::{FirecrackerBinary, VmmVersion};
pub use config::{cid_for_guest_ip, NetConfig, VmConfig, IFACE_ID};
pub use error::FirecrackerError;
pub use jailed::VmJail;
pub use messages::*;
pub use readiness::ProbeOutcome;
pub use run_dir::RunDir;
pub use snapshot_messages::*;
pub use stop::{StopOutcome, StopPlan, StopRung};

/// Where a VM's VMM process is in its life, as its `FirecrackerActor` tracks it. Not the VM's
/// lifecycle state (`hearth_proto::api::VmState`, the supervisor's), nor what Firecracker
/// reports (`hearth_proto::firecracker::InstanceState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmmState {
    /// No process.
    Idle,
    /// Spawned; its API socket is not up yet.
    Spawning,
    /// The API answers; not configured.
    Spawned,
    /// Configured; not started.
    Configured,
    /// `InstanceStart` succeeded.
    Running,
    /// A stop is in progress.
    Stopping,
    /// The process has exited.
    Exited,
}

impl VmmState {
    /// A new process may be spawned (or adopted).
    pub fn can_spawn(self) -> bool {
        matches!(self, VmmState::Idle | VmmState::Exited)
    }
    /// The VM may be configured.
    pub fn can_configure(self) -> bool {
        self == VmmState::Spawned
    }
    /// The VM may be started.
    pub fn can_start(self) -> bool {
        self == VmmState::Configured
    }
    /// The guest may be probed or sent Ctrl+Alt+Del.
    pub fn is_running(self) -> bool {
        self == VmmState::Running
    }
    /// A process exists that can be stopped.
    pub fn can_stop(self) -> bool {
        matches!(
            self,
            VmmState::Spawning | VmmState::Spawned | VmmState::Configured | VmmState::Running
        )
    }
}

impl fmt::Display for VmmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmmState::Idle => "idle",
            VmmState::Spawning => "spawning",
            VmmState::Spawned => "spawned",
            VmmState::Configured => "configured",
            VmmState::Running => "running",
            VmmState::Stopping => "stopping",
            VmmState::Exited => "exited",
        })
    }
}

/// Settings shared by every VM of a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirecrackerSettings {
    /// The base of the run directories (`<base>/<vm id>/`); keep it short (socket paths).
    pub run_base: PathBuf,
    /// Give the API and vsock sockets to this group, mode 0660 (e.g. for a `hearth` group).
    pub socket_group: Option<u32>,
    /// Console log cap in bytes (one rotated file is kept besides).
    pub console_cap: u64,
    /// How long to wait for the API socket after spawning.
    pub api_timeout: Duration,
    /// How long to wait for `Running` after `InstanceStart`.
    pub start_timeout: Duration,
    /// Firecracker's log level.
    pub log_level: LogLevel,
}

impl FirecrackerSettings {
    /// Defaults under `run_base`.
    pub fn new(run_base: impl Into<PathBuf>) -> Self {
        FirecrackerSettings {
            run_base: run_base.into(),
            socket_group: None,
            console_cap: console::DEFAULT_CAP,
            api_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(5),
            log_level: LogLevel::Warning,
        }
    }
}

/// The process the actor currently owns.
#[derive(Debug)]
struct Owned {
    process: Arc<dyn Process>,
    start_time: u64,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// The task waiting on the pidfd.
    waiter: tokio::task::JoinHandle<()>,
}

/// One VM's Firecracker process.
pub struct FirecrackerActor {
    vm_id: String,
    log: slog::Logger,
    binary: FirecrackerBinary,
    processes: Arc<dyn Processes>,
    settings: FirecrackerSettings,
    run_dir: RunDir,
    events: Recipient<VmProcessEvent>,
    state: VmmState,
    owned: Option<Owned>,
    /// The API connection; `None` while a handler has it, or when there is no process.
    api: Option<ApiClient>,
    console: Option<console::ConsoleCapture>,
    /// Set when hearth ended the process, so its exit is reported as `Stopped`.
    stop_rung: Option<StopRung>,
    /// Jailed (issue 16): how; `None` runs Firecracker as hearthd's user (less isolated).
    jail: Option<VmJail>,
    /// The vCPUs are paused (`PauseVm`, a restore without resume, or adopted paused): a
    /// stop skips Ctrl+Alt+Del, which a paused guest cannot act on.
    paused: bool,
}

impl FirecrackerActor {
    /// An actor for VM `vm_id`. Checks the id and that every socket path under
    /// `settings.run_base` fits in `sun_path`; creates nothing yet.
    pub fn new(
        vm_id: &str,
        binary: FirecrackerBinary,
        processes: Arc<dyn Processes>,
        settings: FirecrackerSettings,
        events: Recipient<VmProcessEvent>,
        log: slog::Logger,
    ) -> Result<Self, FirecrackerError> {
        let run_dir = RunDir::new(&settings.run_base, vm_id)?;
        Ok(FirecrackerActor {
            vm_id: vm_id.to_string(),
            log: log.new(slog::o!("vm" => vm_id.to_string())),
            binary,
            processes,
            settings,
            run_dir,
            events,
            state: VmmState::Idle,
            owned: None,
            api: None,
            console: None,
            stop_rung: None,
            jail: None,
            paused: false,
        })
    }

    /// The VM's run directory.
    pub fn run_dir(&self) -> &RunDir {
        &self.run_dir
    }

    fn record(&self) -> Option<VmmProcess> {
        self.owned.as_ref().map(|o| VmmProcess {
            pid: o.process.pid(),
            start_time: o.start_time,
            api_socket: self.run_dir.api_socket(),
            binary: self.binary.path.clone(),
        })
    }
}

impl Actor for FirecrackerActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        // The VM outlives its actor (and hearthd): stop the console pump, leave the process
        // running so it can be adopted.
        // The exit waiter is left running: it holds only a weak address, and for a child it
        // reaps the process when it exits, so no zombie is left if nobody adopts it (an
        // adopting actor then sees an unknown status).
        self.console = None;
    }
}

#[cfg(test)]
mod tests;
