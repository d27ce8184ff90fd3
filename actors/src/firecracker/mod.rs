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
mod handlers;
pub mod messages;
pub mod readiness;
pub mod run_dir;
pub mod stop;

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
pub use config::{cid_for_guest_ip, NetConfig, VmConfig};
pub use error::FirecrackerError;
pub use messages::*;
pub use readiness::ProbeOutcome;
pub use run_dir::RunDir;
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
    /// InstanceStart succeeded.
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
    /// How long to wait for `Running` after InstanceStart.
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
mod tests {
    use super::*;
    use crate::host::processes::{FakeProcesses, ProcessIdentity, Signal};
    use actix::{Actor, Addr, Context, Handler};
    use tokio::sync::mpsc;

    struct Sink(mpsc::UnboundedSender<VmProcessEvent>);
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<VmProcessEvent> for Sink {
        type Result = ();
        fn handle(&mut self, ev: VmProcessEvent, _: &mut Context<Self>) {
            let _ = self.0.send(ev);
        }
    }

    fn logger() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    struct Setup {
        fake: FakeProcesses,
        vm: Addr<FirecrackerActor>,
        events: mpsc::UnboundedReceiver<VmProcessEvent>,
        dir: tempfile::TempDir,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        let (tx, events) = mpsc::unbounded_channel();
        let mut settings = FirecrackerSettings::new(dir.path());
        settings.api_timeout = Duration::from_millis(30);
        let binary = FirecrackerBinary {
            path: "/usr/bin/firecracker".into(),
            version: binary::MIN_VERSION,
        };
        let vm = FirecrackerActor::new(
            "vm-1",
            binary,
            Arc::new(fake.clone()),
            settings,
            Sink(tx).start().recipient(),
            logger(),
        )
        .unwrap()
        .start();
        Setup {
            fake,
            vm,
            events,
            dir,
        }
    }

    #[test]
    fn state_predicates() {
        use VmmState::*;
        let all = [
            Idle, Spawning, Spawned, Configured, Running, Stopping, Exited,
        ];
        let pick =
            |f: fn(VmmState) -> bool| all.iter().copied().filter(|s| f(*s)).collect::<Vec<_>>();
        assert_eq!(pick(VmmState::can_spawn), [Idle, Exited]);
        assert_eq!(pick(VmmState::can_configure), [Spawned]);
        assert_eq!(pick(VmmState::can_start), [Configured]);
        assert_eq!(pick(VmmState::is_running), [Running]);
        assert_eq!(
            pick(VmmState::can_stop),
            [Spawning, Spawned, Configured, Running]
        );
    }

    #[actix::test]
    async fn operations_out_of_order_are_refused() {
        let s = setup();
        for err in [
            s.vm.send(StartVm {}).await.unwrap().unwrap_err(),
            s.vm.send(KillVm {}).await.unwrap().unwrap_err(),
            s.vm.send(SendCtrlAltDel {}).await.unwrap().unwrap_err(),
        ] {
            assert!(
                matches!(
                    err,
                    FirecrackerError::InvalidState {
                        state: VmmState::Idle,
                        ..
                    }
                ),
                "{err}"
            );
        }
        assert!(s.fake.calls().is_empty());
    }

    #[actix::test]
    async fn failed_spawn_changes_nothing() {
        let s = setup();
        s.fake.fail_spawn("no fork for you");
        let err = s.vm.send(SpawnProcess {}).await.unwrap().unwrap_err();
        assert!(matches!(err, FirecrackerError::Process { .. }), "{err}");
        assert_eq!(s.vm.send(GetVmmProcess {}).await.unwrap(), None);
        // It can be retried: the state is still Idle.
        let err = s.vm.send(SpawnProcess {}).await.unwrap().unwrap_err();
        assert!(matches!(err, FirecrackerError::Process { .. }));
    }

    #[actix::test]
    async fn api_socket_timeout_kills_the_process() {
        let mut s = setup();
        let err = s.vm.send(SpawnProcess {}).await.unwrap().unwrap_err();
        assert!(
            matches!(err, FirecrackerError::ApiSocketTimeout { .. }),
            "{err}"
        );
        assert_eq!(s.fake.signals(), vec![Signal::Kill]);
        match s.events.recv().await.unwrap() {
            VmProcessEvent::Stopped { rung, .. } => assert_eq!(rung, StopRung::Sigkill),
            e => panic!("unexpected {e:?}"),
        }
        // The spawn used the run directory's paths.
        let spawn = s.fake.calls().into_iter().find_map(|c| match c {
            crate::host::processes::fake::FakeCall::Spawn(spec) => Some(spec),
            _ => None,
        });
        let spec = spawn.unwrap();
        assert_eq!(spec.stdio, s.dir.path().join("vm-1/console.fifo"));
        assert_eq!(
            spec.args[1],
            s.dir.path().join("vm-1/api.sock").into_os_string()
        );
    }

    #[actix::test]
    async fn early_exit_is_reported_as_unexpected() {
        let mut s = setup();
        let fake = s.fake.clone();
        let pending = s.vm.send(SpawnProcess {});
        // The first fake pid is 1001; let it die before its API socket appears.
        while fake.calls().is_empty() {
            tokio::task::yield_now().await;
        }
        fake.exit(1001, crate::host::processes::ExitStatus::Code(1));
        let err = pending.await.unwrap().unwrap_err();
        assert!(matches!(err, FirecrackerError::ExitedEarly { .. }), "{err}");
        assert!(
            s.fake.signals().is_empty(),
            "a dead process is not signalled"
        );
        assert!(matches!(
            s.events.recv().await.unwrap(),
            VmProcessEvent::ExitedUnexpectedly { pid: 1001, .. }
        ));
    }

    #[actix::test]
    async fn adoption_refuses_mismatches_without_signalling() {
        let s = setup();
        let api = s.dir.path().join("vm-1/api.sock");
        let cmdline = vec![
            "/usr/bin/firecracker".to_string(),
            "--api-sock".into(),
            api.display().to_string(),
        ];
        s.fake.set_identity(
            77,
            ProcessIdentity {
                start_time: 500,
                cmdline: cmdline.clone(),
            },
        );
        s.fake.set_identity(
            78,
            ProcessIdentity {
                start_time: 600,
                cmdline: vec!["/usr/bin/sleep".into(), api.display().to_string()],
            },
        );
        let record = |pid, start_time| VmmProcess {
            pid,
            start_time,
            api_socket: api.clone(),
            binary: "/usr/bin/firecracker".into(),
        };
        for (rec, why) in [
            (record(77, 499), "start time"),
            (record(78, 600), "does not run"),
            (record(79, 1), "No process"),
        ] {
            match s.vm.send(AdoptProcess { record: rec }).await.unwrap() {
                Err(FirecrackerError::AdoptMismatch { reason, .. }) => {
                    assert!(reason.contains(why), "{reason} lacks {why}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(s.fake.signals().is_empty());
        assert_eq!(s.vm.send(GetVmmProcess {}).await.unwrap(), None);
    }

    fn fc_identity(pid: u32, args: &[String]) -> (u32, ProcessIdentity) {
        let mut cmdline = vec!["/usr/bin/firecracker".to_string()];
        cmdline.extend(args.iter().cloned());
        (
            pid,
            ProcessIdentity {
                start_time: 1,
                cmdline,
            },
        )
    }

    #[actix::test]
    async fn only_a_vmm_using_this_run_directory_is_killed_as_a_stray() {
        let s = setup();
        let api = s.dir.path().join("vm-1/api.sock").display().to_string();
        for (pid, id) in [
            fc_identity(77, &["--api-sock".into(), api.clone()]),
            fc_identity(78, &["--api-sock".into(), "/elsewhere/api.sock".into()]),
            fc_identity(80, &[format!("--api-sock={api}")]),
        ] {
            s.fake.set_identity(pid, id);
        }
        let kill = |pid| KillStray {
            pid,
            wait: Duration::from_secs(1),
        };
        for (pid, why) in [(78, "does not use"), (79, "No process")] {
            match s.vm.send(kill(pid)).await.unwrap() {
                Err(FirecrackerError::NotAStray { reason, .. }) => {
                    assert!(reason.contains(why), "{reason} lacks {why}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            s.fake.signals().is_empty(),
            "refused pids are not signalled"
        );
        s.vm.send(kill(77)).await.unwrap().unwrap();
        s.vm.send(kill(80)).await.unwrap().unwrap();
        let killed: Vec<_> = s
            .fake
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                crate::host::processes::fake::FakeCall::Signal { pid, signal } => {
                    Some((pid, signal))
                }
                _ => None,
            })
            .collect();
        assert_eq!(killed, vec![(77, Signal::Kill), (80, Signal::Kill)]);
    }

    #[actix::test]
    async fn run_directory_is_cleaned_only_once_the_process_is_gone() {
        let mut s = setup();
        let pending = s.vm.send(SpawnProcess {});
        while s.fake.calls().is_empty() {
            tokio::task::yield_now().await;
        }
        // Something listening on the API socket is all the fake VMM needs to be "up".
        let api = s.dir.path().join("vm-1/api.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&api).unwrap();
        let pid = pending.await.unwrap().unwrap().record.pid;
        let log = s.dir.path().join("vm-1/firecracker.log");
        std::fs::write(&log, b"kept until the directory goes").unwrap();

        for err in [
            s.vm.send(RemoveRunDir {}).await.unwrap().unwrap_err(),
            s.vm.send(RemoveStaleSockets {}).await.unwrap().unwrap_err(),
        ] {
            assert!(
                matches!(err, FirecrackerError::InvalidState { .. }),
                "{err}"
            );
        }
        let own =
            s.vm.send(KillStray {
                pid,
                wait: Duration::from_secs(1),
            })
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(own, FirecrackerError::NotAStray { .. }), "{own}");
        assert!(
            api.exists() && log.exists(),
            "nothing removed while it runs"
        );
        assert!(s.fake.signals().is_empty());

        s.vm.send(KillVm {}).await.unwrap().unwrap();
        assert!(matches!(
            s.events.recv().await.unwrap(),
            VmProcessEvent::Stopped { .. }
        ));
        std::os::unix::net::UnixListener::bind(&api).unwrap();
        s.vm.send(RemoveStaleSockets {}).await.unwrap().unwrap();
        assert!(!api.exists() && log.exists(), "sockets go, logs stay");
        s.vm.send(RemoveRunDir {}).await.unwrap().unwrap();
        assert!(!s.dir.path().join("vm-1").exists());
        assert!(s.dir.path().exists());
        // Idempotent: a missing directory is fine.
        s.vm.send(RemoveRunDir {}).await.unwrap().unwrap();
    }
}
