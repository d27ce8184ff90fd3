//! One `impl Handler` per message of [`FirecrackerActor`], plus the async steps they share.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, MessageResult, ResponseFuture,
    WrapFuture,
};
use hearth_proto::firecracker::{ActionType, InstanceActionInfo, InstanceInfo, InstanceState};
use tokio::sync::watch;

use crate::host::processes::{ExitStatus, Process, Signal, SpawnSpec};

use super::api_client::{wait_for_socket, ApiClient, Endpoint};
use super::backoff::Backoff;
use super::command::LaunchArgs;
use super::config::ApiBodies;
use super::console::ConsoleCapture;
use super::messages::{
    AdoptInfo, AdoptProcess, ConfigureVm, GetVmmProcess, KillStray, KillVm, ProbeReady,
    ProcessExited, RemoveRunDir, RemoveStaleSockets, SendCtrlAltDel, SpawnInfo, SpawnProcess,
    StartVm, StopVm, VmProcessEvent, VmmProcess,
};
use super::readiness::{self, ProbeOutcome};
use super::run_dir::set_socket_access;
use super::stop::{run_ladder, rungs, StopOutcome, StopPlan, StopRung};
use super::{FirecrackerActor, FirecrackerError, Owned, VmmState};

/// How long an unexpected exit's event waits for the console's last lines to be copied.
const CONSOLE_DRAIN: Duration = Duration::from_secs(2);

type Atomic<T> = AtomicResponse<FirecrackerActor, Result<T, FirecrackerError>>;

fn fail<T: 'static>(e: FirecrackerError) -> Atomic<T> {
    AtomicResponse::new(Box::pin(actix::fut::ready(Err(e))))
}

/// The PUTs of a configuration, in Firecracker's order.
async fn configure_api(
    api: &mut ApiClient,
    bodies: &ApiBodies,
    vsock_socket: PathBuf,
    group: Option<u32>,
) -> Result<(), FirecrackerError> {
    api.put(Endpoint::MachineConfig, &bodies.machine).await?;
    api.put(Endpoint::BootSource, &bodies.boot).await?;
    api.put(Endpoint::Drive(&bodies.root.drive_id), &bodies.root)
        .await?;
    if let Some(net) = &bodies.net {
        api.put(Endpoint::NetworkInterface(&net.iface_id), net)
            .await?;
    }
    if let Some(vsock) = &bodies.vsock {
        api.put(Endpoint::Vsock, vsock).await?;
        if let Some(gid) = group {
            set_socket_access(&vsock_socket, gid)?;
        }
    }
    Ok(())
}

/// `InstanceStart`, then `GET /` with a short backoff (20 µs doubling to 1 ms) until Running.
/// Firecracker answers `InstanceStart` after the VM is built, so the first GET usually succeeds.
async fn start_instance(api: &mut ApiClient, timeout: Duration) -> Result<(), FirecrackerError> {
    api.put(
        Endpoint::Actions,
        &InstanceActionInfo::new(ActionType::InstanceStart),
    )
    .await?;
    let start = Instant::now();
    let mut backoff = Backoff::new(Duration::from_micros(20), Duration::from_millis(1));
    loop {
        let info: InstanceInfo = api.get(Endpoint::Instance).await?;
        if info.state == InstanceState::Running {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(FirecrackerError::NotRunning {
                state: format!("{:?}", info.state),
                waited: start.elapsed(),
            });
        }
        backoff.wait().await;
    }
}

impl FirecrackerActor {
    /// The synchronous part of a spawn: run dir, console, fork/exec, exit watch.
    pub(super) fn spawn_now(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> Result<Duration, FirecrackerError> {
        if !self.state.can_spawn() {
            return Err(FirecrackerError::InvalidState {
                state: self.state,
                op: "spawn",
            });
        }
        let t0 = Instant::now();
        self.run_dir.prepare()?;
        let fifo = self.run_dir.console_fifo();
        let console = ConsoleCapture::start(
            &fifo,
            &self.run_dir.console_log(),
            self.settings.console_cap,
        )
        .map_err(|source| FirecrackerError::RunDir {
            path: fifo.clone(),
            source,
        })?;
        let spec = SpawnSpec {
            program: self.binary.path.clone(),
            args: LaunchArgs::for_run_dir(&self.run_dir, &self.vm_id, self.settings.log_level)
                .args(),
            cwd: self.run_dir.path().to_path_buf(),
            stdio: fifo,
        };
        let process = self.processes.spawn(&spec)?;
        let start_time = match self.processes.identity(process.pid()) {
            Ok(id) => id.start_time,
            Err(e) => {
                let _ = process.signal(Signal::Kill);
                // Reap it in the background so no zombie is left.
                actix::spawn(process.wait());
                return Err(e.into());
            }
        };
        slog::info!(self.log, "spawned firecracker"; "pid" => process.pid());
        self.console = Some(console);
        self.watch_exit(ctx, process, start_time);
        self.state = VmmState::Spawning;
        self.stop_rung = None;
        self.paused = false;
        Ok(t0.elapsed())
    }

    /// Starts the task that waits on the pidfd and reports the exit to this actor.
    pub(super) fn watch_exit(
        &mut self,
        ctx: &mut Context<Self>,
        process: Arc<dyn Process>,
        start_time: u64,
    ) {
        let (tx, rx) = watch::channel(None);
        let wait = process.wait();
        let me = ctx.address().downgrade();
        let pid = process.pid();
        let waiter = actix::spawn(async move {
            let status = wait.await.unwrap_or(ExitStatus::Unknown);
            tx.send_replace(Some(status));
            if let Some(addr) = me.upgrade() {
                addr.do_send(ProcessExited { pid, status });
            }
        });
        if let Some(old) = self.owned.take() {
            old.waiter.abort();
        }
        self.owned = Some(Owned {
            process,
            start_time,
            exit: rx,
            waiter,
        });
    }

    /// The future that waits for the API socket and connects to it.
    pub(super) fn api_ready(
        &self,
    ) -> impl std::future::Future<Output = Result<(ApiClient, Duration), FirecrackerError>> + 'static
    {
        let socket = self.run_dir.api_socket();
        let timeout = self.settings.api_timeout;
        let group = self.settings.socket_group;
        let exit = self.owned.as_ref().map(|o| o.exit.clone());
        let console = self.run_dir.console_log();
        async move {
            let t0 = Instant::now();
            let stream = wait_for_socket(&socket, timeout, || {
                let status = exit.as_ref().and_then(|rx| *rx.borrow())?;
                Some(FirecrackerError::ExitedEarly {
                    phase: "its API socket appeared",
                    status,
                    console: console.clone(),
                })
            })
            .await?;
            if let Some(gid) = group {
                set_socket_access(&socket, gid)?;
            }
            Ok((ApiClient::with_stream(&socket, stream), t0.elapsed()))
        }
    }

    /// After a failed spawn or boot: SIGKILL the process; its exit is reported as `Stopped`.
    pub(super) fn kill_after_failure(&mut self, e: &FirecrackerError) {
        // A process that already died is reported as such, not as stopped by us.
        if let Some(o) = self.owned.as_ref().filter(|o| o.exit.borrow().is_none()) {
            slog::warn!(self.log, "killing firecracker after failure"; "pid" => o.process.pid(), "error" => %e);
            self.stop_rung = Some(StopRung::Sigkill);
            if let Err(err) = o.process.signal(Signal::Kill) {
                slog::error!(self.log, "SIGKILL failed"; "error" => %err);
            }
        }
    }

    pub(super) fn take_api(&mut self, op: &'static str) -> Result<ApiClient, FirecrackerError> {
        self.api.take().ok_or(FirecrackerError::InvalidState {
            state: self.state,
            op,
        })
    }

    fn stop_with(&mut self, plan: StopPlan) -> Atomic<StopOutcome> {
        let Some(owned) = self.owned.as_ref().filter(|_| self.state.can_stop()) else {
            return fail(FirecrackerError::InvalidState {
                state: self.state,
                op: "stop",
            });
        };
        let process = owned.process.clone();
        let exit = owned.exit.clone();
        // A paused guest cannot act on Ctrl+Alt+Del: go straight to the signals.
        let guest_started = self.state == VmmState::Running && self.api.is_some() && !self.paused;
        let steps = rungs(&plan, guest_started);
        let mut client = if guest_started { self.api.take() } else { None };
        let previous = self.state;
        self.state = VmmState::Stopping;
        let fut = async move {
            let api = client.as_mut();
            let res = run_ladder(&steps, &*process, exit, move || async move {
                match api {
                    Some(c) => {
                        c.put(
                            Endpoint::Actions,
                            &InstanceActionInfo::new(ActionType::SendCtrlAltDel),
                        )
                        .await
                    }
                    None => Ok(()),
                }
            })
            .await;
            (client, res)
        };
        AtomicResponse::new(Box::pin(
            fut.into_actor(self)
                .then(|(client, res), act, _| {
                    // Give back the connection if the ladder borrowed it.
                    if client.is_some() {
                        act.api = client;
                    }
                    // The process is gone: let the console's last lines (init's exit line,
                    // printed before the guest shut down) be copied, bounded, and read the
                    // report. An exit seen before the ladder is `ProcessExited`'s to report.
                    let console = match &res {
                        Ok(o) if o.rung != StopRung::AlreadyExited => act.console.take(),
                        _ => None,
                    };
                    async move {
                        let Some(console) = console else {
                            return res;
                        };
                        let exit = console.guest_exit();
                        let _ = tokio::time::timeout(CONSOLE_DRAIN, console.finish()).await;
                        res.map(|o| StopOutcome {
                            guest_exit: super::exit_watch::seen(&exit),
                            ..o
                        })
                    }
                    .into_actor(act)
                })
                .map(move |res, act, _| match res {
                    Ok(outcome) => {
                        slog::info!(act.log, "stopped"; "rung" => %outcome.rung, "status" => %outcome.status, "ms" => outcome.elapsed.as_millis());
                        act.stop_rung = Some(outcome.rung);
                        Ok(outcome)
                    }
                    Err(e) => {
                        act.state = previous;
                        Err(e)
                    }
                }),
        ))
    }
}

impl Handler<SpawnProcess> for FirecrackerActor {
    type Result = Atomic<SpawnInfo>;

    fn handle(&mut self, _msg: SpawnProcess, ctx: &mut Context<Self>) -> Self::Result {
        if self.jail.is_some() {
            return self.spawn_jailed();
        }
        let spawn = match self.spawn_now(ctx) {
            Ok(d) => d,
            Err(e) => return fail(e),
        };
        AtomicResponse::new(Box::pin(self.api_ready().into_actor(self).map(
            move |res, act, _| match res {
                Ok((client, api_ready)) => {
                    act.api = Some(client);
                    act.state = VmmState::Spawned;
                    let record = act.record().ok_or(FirecrackerError::InvalidState {
                        state: act.state,
                        op: "record",
                    })?;
                    Ok(SpawnInfo {
                        record,
                        spawn,
                        api_ready,
                    })
                }
                Err(e) => {
                    act.kill_after_failure(&e);
                    Err(e)
                }
            },
        )))
    }
}

impl Handler<ConfigureVm> for FirecrackerActor {
    type Result = Atomic<Duration>;

    fn handle(&mut self, msg: ConfigureVm, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.state.can_configure() {
            return fail(FirecrackerError::InvalidState {
                state: self.state,
                op: "configure",
            });
        }
        let vsock = self.run_dir.vsock_socket();
        // Jailed: paths as the VMM sees them from its chroot, and its TAP given to its uid.
        let (config, uds) = match self.jail_config(&msg.config) {
            Ok(c) if self.jail.is_some() => (c, PathBuf::from(super::jailer::VSOCK_INSIDE)),
            Ok(c) => (c, vsock.clone()),
            Err(e) => return fail(e),
        };
        let bodies = match config.api_bodies(&uds) {
            Ok(b) => b,
            Err(e) => return fail(e),
        };
        let mut client = match self.take_api("configure") {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let group = self.settings.socket_group;
        let fut = async move {
            let t0 = Instant::now();
            let res = configure_api(&mut client, &bodies, vsock, group).await;
            (client, res.map(|()| t0.elapsed()))
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            |(client, res), act, _| {
                act.api = Some(client);
                if res.is_ok() {
                    act.state = VmmState::Configured;
                }
                res
            },
        )))
    }
}

impl Handler<StartVm> for FirecrackerActor {
    type Result = Atomic<Duration>;

    fn handle(&mut self, _msg: StartVm, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.state.can_start() {
            return fail(FirecrackerError::InvalidState {
                state: self.state,
                op: "start",
            });
        }
        let mut client = match self.take_api("start") {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let timeout = self.settings.start_timeout;
        let fut = async move {
            let t0 = Instant::now();
            let res = start_instance(&mut client, timeout).await;
            (client, res.map(|()| t0.elapsed()))
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            |(client, res), act, _| {
                act.api = Some(client);
                if res.is_ok() {
                    act.state = VmmState::Running;
                }
                res
            },
        )))
    }
}

impl Handler<ProbeReady> for FirecrackerActor {
    type Result = ResponseFuture<Result<ProbeOutcome, FirecrackerError>>;

    fn handle(&mut self, msg: ProbeReady, _ctx: &mut Context<Self>) -> Self::Result {
        let state = self.state;
        let uds = self.run_dir.vsock_socket();
        Box::pin(async move {
            if !state.is_running() {
                return Err(FirecrackerError::InvalidState { state, op: "probe" });
            }
            readiness::probe(&uds, msg.port, msg.timeout).await
        })
    }
}

impl Handler<SendCtrlAltDel> for FirecrackerActor {
    type Result = Atomic<()>;

    fn handle(&mut self, _msg: SendCtrlAltDel, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.state.is_running() {
            return fail(FirecrackerError::InvalidState {
                state: self.state,
                op: "send Ctrl+Alt+Del to",
            });
        }
        let mut client = match self.take_api("send Ctrl+Alt+Del to") {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let fut = async move {
            let res = client
                .put(
                    Endpoint::Actions,
                    &InstanceActionInfo::new(ActionType::SendCtrlAltDel),
                )
                .await;
            (client, res)
        };
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            |(client, res), act, _| {
                act.api = Some(client);
                res
            },
        )))
    }
}

impl Handler<StopVm> for FirecrackerActor {
    type Result = Atomic<StopOutcome>;

    fn handle(&mut self, msg: StopVm, _ctx: &mut Context<Self>) -> Self::Result {
        self.stop_with(msg.plan)
    }
}

impl Handler<KillVm> for FirecrackerActor {
    type Result = Atomic<StopOutcome>;

    fn handle(&mut self, _msg: KillVm, _ctx: &mut Context<Self>) -> Self::Result {
        self.stop_with(StopPlan::KILL)
    }
}

impl FirecrackerActor {
    /// Checks that `record` describes a live process that is this VM's Firecracker. Sends
    /// nothing to the process.
    fn verify_adoptable(&self, record: &VmmProcess) -> Result<Arc<dyn Process>, FirecrackerError> {
        let pid = record.pid;
        let mismatch = |reason: String| FirecrackerError::AdoptMismatch { pid, reason };
        let api = self.run_dir.api_socket();
        if record.api_socket != api {
            return Err(mismatch(format!(
                "recorded API socket {} is not this VM's {}",
                record.api_socket.display(),
                api.display()
            )));
        }
        // Pin the process first, then read /proc: if it is still alive afterwards, what we
        // read describes the pinned process.
        let process = self
            .processes
            .open(pid)
            .map_err(|e| mismatch(e.to_string()))?;
        let id = self
            .processes
            .identity(pid)
            .map_err(|e| mismatch(e.to_string()))?;
        if id.start_time != record.start_time {
            return Err(mismatch(format!(
                "start time {} differs from the recorded {} (pid reused)",
                id.start_time, record.start_time
            )));
        }
        if let Some(jailed) = self.jail_identity(pid, &id) {
            jailed.map_err(mismatch)?;
            if process.has_exited() {
                return Err(mismatch("it exited during verification".into()));
            }
            return Ok(process);
        }
        let api_str = api.to_string_lossy();
        if !id.cmdline.iter().any(|a| *a == api_str) {
            return Err(mismatch(format!(
                "command line {:?} lacks {api_str}",
                id.cmdline
            )));
        }
        let argv0 = id.cmdline.first().map(std::path::Path::new);
        let same_binary = argv0.is_some_and(|a| {
            a == self.binary.path || a.file_name() == self.binary.path.file_name()
        });
        if !same_binary {
            return Err(mismatch(format!(
                "command line {:?} does not run {}",
                id.cmdline,
                self.binary.path.display()
            )));
        }
        if process.has_exited() {
            return Err(mismatch("it exited during verification".into()));
        }
        Ok(process)
    }
}

impl Handler<AdoptProcess> for FirecrackerActor {
    type Result = Atomic<AdoptInfo>;

    fn handle(&mut self, msg: AdoptProcess, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.state.can_spawn() {
            return fail(FirecrackerError::InvalidState {
                state: self.state,
                op: "adopt",
            });
        }
        let process = match self.verify_adoptable(&msg.record) {
            Ok(p) => p,
            Err(e) => {
                slog::warn!(self.log, "not adopting"; "error" => %e);
                return fail(e);
            }
        };
        let socket = self.run_dir.api_socket();
        let fut = async move {
            let mut client = ApiClient::new(&socket);
            let info: InstanceInfo = client.get(Endpoint::Instance).await?;
            Ok((client, info))
        };
        let start_time = msg.record.start_time;
        AtomicResponse::new(Box::pin(fut.into_actor(self).map(
            move |res: Result<(ApiClient, InstanceInfo), FirecrackerError>, act, ctx| {
                let (client, info) = res?;
                let is_child = process.is_child();
                act.watch_exit(ctx, process, start_time);
                act.api = Some(client);
                act.stop_rung = None;
                act.paused = info.state == InstanceState::Paused;
                act.state = match info.state {
                    InstanceState::NotStarted => VmmState::Spawned,
                    InstanceState::Running | InstanceState::Paused => VmmState::Running,
                };
                let fifo = act.run_dir.console_fifo();
                match ConsoleCapture::start(&fifo, &act.run_dir.console_log(), act.settings.console_cap) {
                    Ok(c) => act.console = Some(c),
                    Err(e) => slog::warn!(act.log, "console capture not resumed"; "error" => %e),
                }
                slog::info!(act.log, "adopted firecracker"; "pid" => msg.record.pid, "state" => ?info.state);
                Ok(AdoptInfo {
                    vmm_state: info.state,
                    is_child,
                })
            },
        )))
    }
}

impl FirecrackerActor {
    /// Whether a process of this actor may still run (spawned or adopted, exit not seen).
    pub(super) fn has_live_process(&self) -> bool {
        self.owned
            .as_ref()
            .is_some_and(|o| o.exit.borrow().is_none())
    }

    /// Checks that `pid` is a VMM using this VM's run directory that this actor does not own,
    /// and pins it. Sends nothing to the process.
    fn verify_stray(&self, pid: u32) -> Result<Arc<dyn Process>, FirecrackerError> {
        let refuse = |reason: String| FirecrackerError::NotAStray { pid, reason };
        if self.owned.as_ref().is_some_and(|o| o.process.pid() == pid) {
            return Err(refuse("it is the process this VM owns".into()));
        }
        // Pin first, then read /proc: if it is still alive afterwards, what we read describes
        // the pinned process (not a recycled pid).
        let process = self
            .processes
            .open(pid)
            .map_err(|e| refuse(e.to_string()))?;
        let id = self
            .processes
            .identity(pid)
            .map_err(|e| refuse(e.to_string()))?;
        let api = self.run_dir.api_socket();
        let api = api.to_string_lossy();
        let uses_api = match self.jail_identity(pid, &id) {
            Some(jailed) => jailed.is_ok(),
            None => id
                .cmdline
                .iter()
                .any(|a| *a == api || a.strip_prefix("--api-sock=") == Some(&*api)),
        };
        if !uses_api {
            return Err(refuse(format!(
                "its command line {:?} does not use {api}",
                id.cmdline
            )));
        }
        if process.has_exited() {
            return Err(refuse("it exited during verification".into()));
        }
        Ok(process)
    }
}

impl Handler<KillStray> for FirecrackerActor {
    type Result = ResponseFuture<Result<(), FirecrackerError>>;

    fn handle(&mut self, msg: KillStray, _ctx: &mut Context<Self>) -> Self::Result {
        let verified = self.verify_stray(msg.pid);
        let log = self.log.clone();
        Box::pin(async move {
            let process = verified?;
            slog::warn!(log, "killing a stray firecracker"; "pid" => msg.pid);
            process.signal(Signal::Kill)?;
            // Not our child in general: the wait only observes the exit.
            if tokio::time::timeout(msg.wait, process.wait())
                .await
                .is_err()
            {
                return Err(FirecrackerError::DidNotDie {
                    pid: msg.pid,
                    waited: msg.wait,
                });
            }
            Ok(())
        })
    }
}

impl Handler<RemoveStaleSockets> for FirecrackerActor {
    type Result = Result<(), FirecrackerError>;

    fn handle(&mut self, _msg: RemoveStaleSockets, _ctx: &mut Context<Self>) -> Self::Result {
        if self.has_live_process() {
            return Err(FirecrackerError::InvalidState {
                state: self.state,
                op: "remove the sockets of",
            });
        }
        self.run_dir
            .remove_sockets()
            .map_err(|source| FirecrackerError::RunDirRemoval {
                path: self.run_dir.path().to_path_buf(),
                source,
            })
    }
}

impl Handler<RemoveRunDir> for FirecrackerActor {
    type Result = Result<(), FirecrackerError>;

    fn handle(&mut self, _msg: RemoveRunDir, _ctx: &mut Context<Self>) -> Self::Result {
        if self.has_live_process() {
            return Err(FirecrackerError::InvalidState {
                state: self.state,
                op: "remove the run directory of",
            });
        }
        self.console = None;
        self.remove_jail()?;
        self.run_dir
            .remove()
            .map_err(|source| FirecrackerError::RunDirRemoval {
                path: self.run_dir.path().to_path_buf(),
                source,
            })?;
        slog::info!(self.log, "run directory removed"; "path" => %self.run_dir.path().display());
        Ok(())
    }
}

impl Handler<GetVmmProcess> for FirecrackerActor {
    type Result = MessageResult<GetVmmProcess>;

    fn handle(&mut self, _msg: GetVmmProcess, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(self.record())
    }
}

impl Handler<ProcessExited> for FirecrackerActor {
    type Result = ();

    fn handle(&mut self, msg: ProcessExited, _ctx: &mut Context<Self>) {
        if self.owned.as_ref().map(|o| o.process.pid()) != Some(msg.pid) {
            return;
        }
        self.owned = None;
        self.api = None;
        self.state = VmmState::Exited;
        let console = self.console.take();
        if let Err(e) = self.run_dir.remove_sockets() {
            slog::warn!(self.log, "cannot remove sockets"; "error" => %e);
        }
        // Jailed (issue 16): the jail and cgroups of the exited VMM go now.
        self.jail_after_exit();
        match self.stop_rung.take() {
            Some(rung) if rung != StopRung::AlreadyExited => {
                if let Some(console) = console {
                    // The writer is gone: the pump task copies the last output and ends.
                    console.drain();
                }
                self.events.do_send(VmProcessEvent::Stopped {
                    vm_id: self.vm_id.clone(),
                    pid: msg.pid,
                    rung,
                    status: msg.status,
                });
            }
            _ => {
                slog::warn!(self.log, "firecracker exited unexpectedly"; "pid" => msg.pid, "status" => %msg.status);
                let (vm_id, pid, status) = (self.vm_id.clone(), msg.pid, msg.status);
                let events = self.events.clone();
                // The console's last lines may still be in the FIFO: let the pump copy them
                // (bounded) so init's exit line, printed just before the reboot, is seen. Not
                // tied to the actor: the owner must hear of the exit even if it stops.
                actix::spawn(async move {
                    let guest_exit = match console {
                        Some(console) => {
                            let exit = console.guest_exit();
                            let _ = tokio::time::timeout(CONSOLE_DRAIN, console.finish()).await;
                            super::exit_watch::seen(&exit)
                        }
                        None => None,
                    };
                    events.do_send(VmProcessEvent::ExitedUnexpectedly {
                        vm_id,
                        pid,
                        status,
                        guest_exit,
                    });
                });
            }
        }
    }
}
