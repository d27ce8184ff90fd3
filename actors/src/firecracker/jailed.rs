//! A jailed VMM: what [`FirecrackerActor`] does differently when its VM runs through
//! Firecracker's jailer ([`VmJail`], set with [`FirecrackerActor::jailed`]).
//!
//! - Spawn: the [`Jails`] backend makes the jail and puts the VM's files in it, the jailer runs
//!   with the console FIFO as its stdio (the VMM keeps it), exits once the VMM runs in its new
//!   pid namespace, and the VMM's pid comes from the jail's pid file. The VMM is pinned by a
//!   pidfd and recognised by its start time, its command line and its root being the jail,
//!   as for an unjailed VMM, so adoption after a restart works the same.
//! - Configure: host paths of files put in the jail become `/<name>`; any other path is left
//!   as it is, which the VMM cannot see from its chroot, so Firecracker refuses it. The TAP
//!   is given to the VM's uid first.
//! - Remove: the jail (mounts, directory, cgroups) goes with the run directory, and the TAP
//!   goes back to root.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    ActorFutureExt, AtomicResponse, Context, Handler, Message, ResponseActFuture, WrapFuture,
};

use crate::host::jails::sweep::{kill_jail_processes, JailProcesses};
use crate::host::jails::{JailError, JailFile, JailPlan, Jails};
use crate::host::processes::{ExitStatus, Process, ProcessIdentity, Signal, SpawnSpec};

use super::api_client::ApiClient;
use super::backoff::Backoff;
use super::config::VmConfig;
use super::console::ConsoleCapture;
use super::jailer::{is_jailed_vmm, CgroupVersion, JailLayout, JailLimits, JailerArgs};
use super::messages::SpawnInfo;
use super::warm_pool::WarmMember;
use super::{FirecrackerActor, FirecrackerError, VmmState};

type Atomic<T> = AtomicResponse<FirecrackerActor, Result<T, FirecrackerError>>;

/// The jailer just started, with what the rest of the spawn needs to find its VMM.
type StartedJailer = (Arc<dyn Process>, Arc<dyn Jails>, JailLayout);

/// How one VM is jailed.
pub struct VmJail {
    /// The jailer binary.
    pub jailer: PathBuf,
    /// The host side of jails.
    pub jails: Arc<dyn Jails>,
    /// The jail's paths (its id is `JailLayout::id_for_uid(uid)`).
    pub layout: JailLayout,
    /// The VM's uid (leased).
    pub uid: u32,
    /// The VM's gid.
    pub gid: u32,
    /// The cgroup hierarchy of this host.
    pub cgroup_version: CgroupVersion,
    /// The VM's limits.
    pub limits: JailLimits,
    /// The files the VMM opens (kernel, initrd, disks).
    pub files: Vec<JailFile>,
    /// The TAPs given to the uid (the configured one, or a restore's overrides), to give
    /// back on removal.
    pub(super) taps: Vec<String>,
    /// A warm VMM already running in this jail, taken by the next spawn instead of running
    /// the jailer ([`VmJail::with_member`]).
    member: Option<WarmMember>,
}

impl std::fmt::Debug for VmJail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmJail")
            .field("layout", &self.layout)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish_non_exhaustive()
    }
}

impl VmJail {
    /// A jail description; nothing is made until the spawn.
    #[expect(
        clippy::too_many_arguments,
        reason = "one plain constructor of a settings record"
    )]
    pub fn new(
        jailer: PathBuf,
        jails: Arc<dyn Jails>,
        layout: JailLayout,
        uid: u32,
        gid: u32,
        cgroup_version: CgroupVersion,
        limits: JailLimits,
        files: Vec<JailFile>,
    ) -> Self {
        VmJail {
            jailer,
            jails,
            layout,
            uid,
            gid,
            cgroup_version,
            limits,
            files,
            taps: Vec::new(),
            member: None,
        }
    }

    /// The same jail with `member` (a warm VMM whose uid and jail are this VM's) for the
    /// next spawn to take instead of running the jailer.
    #[must_use]
    pub fn with_member(mut self, member: WarmMember) -> Self {
        self.member = Some(member);
        self
    }

    /// The path the VMM sees host file `p` at, if it is one of the jail's files.
    pub fn inside(&self, p: &Path) -> Option<PathBuf> {
        self.files
            .iter()
            .find(|f| f.source == p)
            .map(|f| Path::new("/").join(&f.name))
    }

    /// `config` with the host paths of files in the jail replaced by their paths inside.
    pub fn translate(&self, config: &VmConfig) -> VmConfig {
        let inside = |p: &Path| -> PathBuf { self.inside(p).unwrap_or_else(|| p.to_path_buf()) };
        let mut c = config.clone();
        c.kernel = inside(&config.kernel);
        c.initrd = config.initrd.as_deref().map(inside);
        c.rootfs = inside(&config.rootfs);
        c
    }

    /// Checks that the process described by `id` (pid `pid`) is this jail's VMM.
    pub fn check_identity(&self, pid: u32, id: &ProcessIdentity) -> Result<(), String> {
        check_jailed_identity(&self.layout, pid, id)
    }

    fn plan(&self) -> JailPlan {
        JailPlan {
            layout: self.layout.clone(),
            uid: self.uid,
            gid: self.gid,
            files: self.files.clone(),
        }
    }
}

fn jail_err(e: JailError) -> FirecrackerError {
    FirecrackerError::Jail { source: e }
}

impl FirecrackerActor {
    /// Runs this VM jailed (see the module docs). Settings are checked; nothing is made yet.
    #[must_use]
    pub fn jailed(mut self, jail: VmJail) -> Self {
        self.run_dir = self
            .run_dir
            .clone()
            .with_socket_dir(jail.layout.root().join("run"));
        self.jail = Some(jail);
        self
    }

    /// The synchronous part of a jailed spawn: jail, run directory, console, jailer. On
    /// failure the jail is removed again.
    fn start_jailer(&mut self) -> Result<StartedJailer, FirecrackerError> {
        if !self.state.can_spawn() {
            return Err(FirecrackerError::InvalidState {
                state: self.state,
                op: "spawn",
            });
        }
        let Some(jail) = self.jail.as_ref() else {
            return Err(FirecrackerError::InvalidState {
                state: self.state,
                op: "spawn jailed",
            });
        };
        jail.jails.prepare(&jail.plan()).map_err(jail_err)?;
        let started = (|| {
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
            let args = JailerArgs::for_vm(
                &jail.layout,
                &self.binary.path,
                jail.uid,
                jail.gid,
                jail.cgroup_version,
                jail.limits,
                self.settings.log_level,
            );
            let spec = SpawnSpec {
                program: jail.jailer.clone(),
                args: args.args(),
                cwd: self.run_dir.path().to_path_buf(),
                stdio: fifo,
            };
            let jailer = self.processes.spawn(&spec)?;
            Ok::<_, FirecrackerError>((jailer, console))
        })();
        match started {
            Ok((jailer, console)) => {
                self.console = Some(console);
                self.state = VmmState::Spawning;
                self.stop_rung = None;
                Ok((jailer, jail.jails.clone(), jail.layout.clone()))
            }
            Err(e) => {
                if let Err(err) = jail.jails.remove(&jail.layout) {
                    slog::warn!(self.log, "cannot remove the jail after a failed spawn"; "error" => %err);
                }
                Err(e)
            }
        }
    }

    /// The jailed spawn: [`FirecrackerActor::start_jailer`]; then, asynchronously, the
    /// jailer's exit, the pid file and the VMM's identity ([`find_jailed_vmm`]); then the API
    /// socket.
    pub(super) fn spawn_jailed(&mut self) -> Atomic<SpawnInfo> {
        AtomicResponse::new(self.spawn_jailed_fut())
    }

    /// [`FirecrackerActor::spawn_jailed`] as a future a restore goes on from.
    fn spawn_jailed_fut(&mut self) -> ResponseActFuture<Self, Result<SpawnInfo, FirecrackerError>> {
        if let Some(member) = self.jail.as_mut().and_then(|j| j.member.take()) {
            return self.take_member(member);
        }
        let t0 = Instant::now();
        let Some(uid) = self.jail.as_ref().map(|j| j.uid) else {
            return Box::pin(actix::fut::ready(Err(FirecrackerError::InvalidState {
                state: self.state,
                op: "spawn jailed (the VM is not jailed)",
            })));
        };
        let (jailer, jails, layout) = match self.start_jailer() {
            Ok(started) => started,
            Err(e) => return Box::pin(actix::fut::ready(Err(e))),
        };
        let run = JailerRun {
            jailer,
            jails,
            layout,
            uid,
        };
        let find_vmm = find_jailed_vmm(
            run,
            self.log.clone(),
            self.processes.clone(),
            self.settings.api_timeout,
            self.run_dir.console_log(),
        );
        self.finish_jailed_spawn(t0, find_vmm)
    }

    /// A spawn from the warm pool: the member's VMM checked as an adoption would, its console
    /// FIFO moved into the run directory, the VM's files and limits put into its jail, then
    /// the API socket as for a fresh spawn. A member that cannot be taken (it died, a file
    /// would need a bind mount...) is killed and its
    /// jail removed, and the spawn goes through the jailer instead.
    fn take_member(
        &mut self,
        member: WarmMember,
    ) -> ResponseActFuture<Self, Result<SpawnInfo, FirecrackerError>> {
        let t0 = Instant::now();
        if !self.state.can_spawn() {
            let e = FirecrackerError::InvalidState {
                state: self.state,
                op: "spawn",
            };
            return Box::pin(member.discard().into_actor(self).map(|_, _, _| Err(e)));
        }
        if let Err(e) = self.put_in_member(&member) {
            slog::warn!(self.log, "warm VMM not taken: spawning through the jailer";
                "uid" => member.uid(), "error" => %e);
            return Box::pin(member.discard().into_actor(self).then(|res, act, _| {
                if let Err(e) = res {
                    slog::warn!(act.log, "cannot remove the warm VMM's jail"; "error" => %e);
                }
                act.spawn_jailed_fut()
            }));
        }
        let uid = member.uid();
        let Some(found) = member.take_process() else {
            return Box::pin(actix::fut::ready(Err(FirecrackerError::InvalidState {
                state: self.state,
                op: "take a spent warm VMM for",
            })));
        };
        slog::info!(self.log, "took a warm jailed VMM"; "uid" => uid, "pid" => found.0.pid());
        self.finish_jailed_spawn(t0, std::future::ready(Ok(found)))
    }

    /// The synchronous part of [`FirecrackerActor::take_member`]. On failure, what it did is
    /// undone by removing the member's jail (the files and limits are in it) and the console
    /// capture is not started.
    fn put_in_member(&mut self, member: &WarmMember) -> Result<(), FirecrackerError> {
        let Some(jail) = self.jail.as_ref() else {
            return Err(FirecrackerError::InvalidState {
                state: self.state,
                op: "take a warm VMM for (the VM is not jailed)",
            });
        };
        if member.uid() != jail.uid || member.layout() != &jail.layout {
            return Err(FirecrackerError::InvalidConfig {
                what: "warm VMM",
                detail: format!("its jail {} is not this VM's", member.layout().id()),
            });
        }
        let pid = member.pid().unwrap_or_default();
        let mismatch = |reason: String| FirecrackerError::AdoptMismatch { pid, reason };
        if member.has_exited() {
            return Err(mismatch("the warm VMM has exited".into()));
        }
        // The same checks as for a fresh jailed spawn or an adoption: the start time pins
        // this very process, the command line and root make it this jail's VMM.
        let id = self.processes.identity(pid)?;
        if id.start_time != member.start_time() {
            return Err(mismatch("its start time changed".into()));
        }
        check_jailed_identity(&jail.layout, pid, &id).map_err(mismatch)?;
        // Not `RunDir::prepare`: it would remove the live API socket in the jail's `run/`.
        self.run_dir
            .create()
            .map_err(|source| FirecrackerError::RunDir {
                path: self.run_dir.path().to_path_buf(),
                source,
            })?;
        let fifo = self.run_dir.console_fifo();
        let fifo_err = |source| FirecrackerError::RunDir {
            path: fifo.clone(),
            source,
        };
        // First, as the cheapest step that can fail: a rename keeps the FIFO the VMM writes
        // to. The member's FIFO is under the run base, so this stays on one filesystem.
        std::fs::rename(member.fifo(), &fifo).map_err(fifo_err)?;
        jail.jails.add_files(&jail.plan()).map_err(jail_err)?;
        jail.jails
            .set_limits(&jail.layout, &jail.limits)
            .map_err(jail_err)?;
        let console = ConsoleCapture::start(
            &fifo,
            &self.run_dir.console_log(),
            self.settings.console_cap,
        )
        .map_err(fifo_err)?;
        self.console = Some(console);
        self.state = VmmState::Spawning;
        self.stop_rung = None;
        Ok(())
    }

    /// The rest of a jailed spawn once `find_vmm` has found the VMM: its exit watched, then
    /// its API socket.
    fn finish_jailed_spawn(
        &mut self,
        t0: Instant,
        find_vmm: impl std::future::Future<Output = Result<(Arc<dyn Process>, u64), FirecrackerError>>
            + 'static,
    ) -> ResponseActFuture<Self, Result<SpawnInfo, FirecrackerError>> {
        let log = self.log.clone();
        Box::pin(
            find_vmm
                .into_actor(self)
                .then(move |res, act, ctx| {
                    let res = res.map(|(process, start_time): (Arc<dyn Process>, u64)| {
                        slog::info!(log, "spawned jailed firecracker"; "pid" => process.pid());
                        act.watch_exit(ctx, process, start_time);
                        t0.elapsed()
                    });
                    let ready = act.api_ready();
                    async move {
                        let spawn = res?;
                        ready
                            .await
                            .map(|(client, api_ready)| (client, spawn, api_ready))
                    }
                    .into_actor(act)
                })
                .map(|res, act, _| match res {
                    Ok((client, spawn, api_ready)) => {
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
                        if act.owned.is_some() {
                            act.kill_after_failure(&e);
                        } else {
                            // No VMM was found: nothing will report an exit.
                            act.state = VmmState::Exited;
                            act.console = None;
                            if let Some(j) = &act.jail {
                                if let Err(err) = j.jails.remove(&j.layout) {
                                    slog::warn!(act.log, "cannot remove the jail"; "error" => %err);
                                }
                            }
                        }
                        Err(e)
                    }
                }),
        )
    }

    /// Before configuring a jailed VM: the TAP to the VM's uid, paths into the jail.
    pub(super) fn jail_config(&mut self, config: &VmConfig) -> Result<VmConfig, FirecrackerError> {
        let Some(jail) = self.jail.as_mut() else {
            return Ok(config.clone());
        };
        if let Some(net) = &config.net {
            jail.jails
                .set_tap_owner(&net.lease.tap, Some((jail.uid, jail.gid)))
                .map_err(jail_err)?;
            jail.taps.push(net.lease.tap.clone());
        }
        Ok(jail.translate(config))
    }

    /// With the run directory: the jail, and the TAP back to root.
    pub(super) fn remove_jail(&mut self) -> Result<(), FirecrackerError> {
        let Some(jail) = self.jail.as_mut() else {
            return Ok(());
        };
        for tap in std::mem::take(&mut jail.taps) {
            if let Err(e) = jail.jails.set_tap_owner(&tap, None) {
                // The TAP may be gone already (deleted with the VM).
                slog::warn!(self.log, "cannot give the TAP back to root"; "tap" => tap, "error" => %e);
            }
        }
        jail.jails.remove(&jail.layout).map_err(jail_err)?;
        slog::info!(self.log, "jail removed"; "path" => %jail.layout.jail_dir().display());
        Ok(())
    }

    /// For adoption and stray checks: whether `id` is this VM's jailed VMM (`None` when the
    /// VM is not jailed).
    pub(super) fn jail_identity(
        &self,
        pid: u32,
        id: &ProcessIdentity,
    ) -> Option<Result<(), String>> {
        self.jail.as_ref().map(|j| j.check_identity(pid, id))
    }
}

/// The files the jailed VMM will open (kernel, disk), set before its spawn: a create makes
/// the disk after the actor exists. Refused for an unjailed actor or while a VMM runs.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), FirecrackerError>")]
pub struct SetJailFiles {
    /// The files, replacing any set before.
    pub files: Vec<JailFile>,
}

impl Handler<SetJailFiles> for FirecrackerActor {
    type Result = Result<(), FirecrackerError>;

    fn handle(&mut self, msg: SetJailFiles, _ctx: &mut Context<Self>) -> Self::Result {
        if !self.state.can_spawn() {
            return Err(FirecrackerError::InvalidState {
                state: self.state,
                op: "set the jail files of",
            });
        }
        let Some(jail) = self.jail.as_mut() else {
            return Err(FirecrackerError::InvalidState {
                state: self.state,
                op: "set jail files (the VM is not jailed)",
            });
        };
        for f in &msg.files {
            crate::host::jails::check_name(&f.name).map_err(jail_err)?;
        }
        jail.files = msg.files;
        Ok(())
    }
}

/// Kills the warm VMM this VM's jail was given and no spawn took (a create that failed
/// before its spawn), and removes its jail. Nothing to do otherwise.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct DiscardWarmMember {}

impl Handler<DiscardWarmMember> for FirecrackerActor {
    /// `false` when the member's jail could not be removed (its uid must not be reused yet).
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, _msg: DiscardWarmMember, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(member) = self.jail.as_mut().and_then(|j| j.member.take()) else {
            return Box::pin(actix::fut::ready(true));
        };
        Box::pin(member.discard().into_actor(self).map(|res, act, _| {
            if let Err(e) = &res {
                slog::warn!(act.log, "cannot remove the unused warm VMM's jail"; "error" => %e);
            }
            res.is_ok()
        }))
    }
}

impl FirecrackerActor {
    /// After the jailed VMM exited: its jail and cgroups go at once (a new spawn makes them
    /// again), so a stopped or crashed VM leaves no jail behind. A failure is logged: the
    /// jail is removed again with the run directory, or swept at the next `Open`.
    pub(super) fn jail_after_exit(&mut self) {
        if self.jail.is_none() {
            return;
        }
        if let Err(e) = self.remove_jail() {
            slog::warn!(self.log, "cannot remove the jail after the VMM exited"; "error" => %e);
        }
    }
}

/// A restore into a jail (issue 16 with issue 12): the snapshot's files are among the jail's
/// files ([`SetJailFiles`]), so the load names them at their paths inside; the vsock socket
/// is the jail's; the TAPs of `network_overrides` go to the VM's uid between the spawn and
/// the load (and back to root with the jail).
impl FirecrackerActor {
    /// The in-jail paths of a restore's state and memory files and its vsock socket, or
    /// `None` when this VM is not jailed. A file not put in the jail, or a vsock socket other
    /// than this VM's, is refused here rather than by the VMM.
    pub(super) fn jail_restore_paths(
        &self,
        snapshot: &Path,
        mem: &Path,
        vsock: Option<&Path>,
    ) -> Option<Result<(PathBuf, PathBuf, PathBuf), FirecrackerError>> {
        let jail = self.jail.as_ref()?;
        let inside = |what: &'static str, p: &Path| {
            jail.inside(p)
                .ok_or_else(|| FirecrackerError::InvalidConfig {
                    what: "restore",
                    detail: format!("the {what} {} is not in the jail", p.display()),
                })
        };
        Some((|| {
            let own = self.run_dir.vsock_socket();
            if vsock.is_some_and(|v| v != own) {
                return Err(FirecrackerError::InvalidConfig {
                    what: "restore",
                    detail: format!(
                        "a jailed VMM binds its vsock socket in its jail ({}), not elsewhere",
                        own.display()
                    ),
                });
            }
            Ok((
                inside("state file", snapshot)?,
                inside("memory file", mem)?,
                PathBuf::from(super::jailer::VSOCK_INSIDE),
            ))
        })())
    }

    /// Spawns this VM's jailed VMM for a restore, then gives `taps` to its uid. Answers its
    /// API client and how long the spawn and the API took.
    pub(super) fn spawn_jailed_for_restore(
        &mut self,
        taps: Vec<String>,
    ) -> ResponseActFuture<Self, Result<(ApiClient, Duration, Duration), FirecrackerError>> {
        Box::pin(self.spawn_jailed_fut().map(move |res, act, _| {
            let info = res?;
            act.give_taps(&taps)?;
            let client = act.take_api("restore")?;
            Ok((client, info.spawn, info.api_ready))
        }))
    }

    /// `taps` to the VM's uid, each remembered to be given back with the jail.
    fn give_taps(&mut self, taps: &[String]) -> Result<(), FirecrackerError> {
        let Some(jail) = self.jail.as_mut() else {
            return Ok(());
        };
        for tap in taps {
            jail.jails
                .set_tap_owner(tap, Some((jail.uid, jail.gid)))
                .map_err(jail_err)?;
            jail.taps.push(tap.clone());
        }
        Ok(())
    }
}

/// A jailer just started: what [`find_jailed_vmm`] waits on.
pub(super) struct JailerRun {
    /// The jailer process.
    pub jailer: Arc<dyn Process>,
    /// The host side of jails.
    pub jails: Arc<dyn Jails>,
    /// The jail it builds.
    pub layout: JailLayout,
    /// The uid (and gid) its VMM runs as.
    pub uid: u32,
}

/// After the jailer was started: waits (at most `timeout`) for it to exit 0, reads the VMM's
/// pid from the jail's pid file, pins the VMM and waits (at most `timeout` again) for it to
/// have exec'd Firecracker: the jailer writes the pid file before its child execs, and until
/// then the child shows the jailer's command line. Answers the VMM and its start time.
///
/// On failure, what the jailer may have started is killed: it may have forked its child (and
/// that child exec'd the VMM as `uid`) before it hung or failed, so every process working on
/// this jail or running as `uid` is sent SIGKILL ([`kill_jail_processes`]) before the caller
/// removes the jail and gives the uid back. (One still in the kernel after 2 s is logged; its
/// pending SIGKILL ends it before it runs code of its own again.)
pub(super) async fn find_jailed_vmm(
    run: JailerRun,
    log: slog::Logger,
    processes: Arc<dyn crate::host::processes::Processes>,
    timeout: Duration,
    console: PathBuf,
) -> Result<(Arc<dyn Process>, u64), FirecrackerError> {
    let JailerRun {
        jailer,
        jails,
        layout,
        uid,
    } = run;
    let found = wait_for_jailed_vmm(
        jailer,
        jails,
        layout.clone(),
        processes.clone(),
        timeout,
        console,
    )
    .await;
    if found.is_err() {
        let which = JailProcesses {
            base: layout.base(),
            exec_name: layout.exec_name(),
            uids: uid..=uid,
        };
        match kill_jail_processes(&*processes, &which, |id| id != layout.id()).await {
            Ok(r) if r.killed.is_empty() && r.left.is_empty() => {}
            // A process left was sent SIGKILL (it never runs code of its own again) or
            // appeared after the last scan: said, and the uid goes back as for any failure.
            Ok(r) => slog::warn!(log, "killed what the failed jailer left running";
                "jail" => layout.id(), "killed" => ?r.killed, "left" => ?r.left),
            Err(e) => slog::warn!(log, "cannot look for what the failed jailer left running";
                "jail" => layout.id(), "error" => %e),
        }
    }
    found
}

/// [`find_jailed_vmm`] without the cleanup of a failure.
async fn wait_for_jailed_vmm(
    jailer: Arc<dyn Process>,
    jails: Arc<dyn Jails>,
    layout: JailLayout,
    processes: Arc<dyn crate::host::processes::Processes>,
    timeout: Duration,
    console: PathBuf,
) -> Result<(Arc<dyn Process>, u64), FirecrackerError> {
    let Ok(status) = tokio::time::timeout(timeout, jailer.wait()).await else {
        let _ = jailer.signal(Signal::Kill);
        return Err(jail_err(JailError::JailerHung { waited: timeout }));
    };
    let status = status?;
    if status != ExitStatus::Code(0) {
        return Err(FirecrackerError::ExitedEarly {
            phase: "the jailer started it",
            status,
            console,
        });
    }
    let pid = jails.read_pid(&layout).map_err(jail_err)?;
    let process = processes.open(pid)?;
    let deadline = Instant::now() + timeout;
    let mut backoff = Backoff::new(Duration::from_micros(20), Duration::from_millis(1));
    loop {
        let id = processes.identity(pid)?;
        let reason = match check_jailed_identity(&layout, pid, &id) {
            Ok(()) => return Ok((process, id.start_time)),
            Err(reason) => reason,
        };
        if Instant::now() >= deadline || process.has_exited() {
            // Still the jailer's child for this jail (pinned by the pidfd): not left running
            // unowned. Anything else is not ours to signal.
            let ours = id
                .cmdline
                .windows(2)
                .any(|w| w[0] == "--id" && w[1] == layout.id());
            if ours {
                let _ = process.signal(Signal::Kill);
            }
            return Err(FirecrackerError::AdoptMismatch { pid, reason });
        }
        backoff.wait().await;
    }
}

/// Whether the process described by `id` (pid `pid`) is the VMM of the jail `layout`: its
/// command line, and its root directory being the jail (same device and inode).
pub fn check_jailed_identity(
    layout: &JailLayout,
    pid: u32,
    id: &ProcessIdentity,
) -> Result<(), String> {
    if !is_jailed_vmm(&id.cmdline, layout) {
        return Err(format!(
            "command line {:?} is not jail {}'s VMM",
            id.cmdline,
            layout.id()
        ));
    }
    let root = layout.root();
    let theirs = crate::host::procfs::metadata(&format!("{pid}/root/"))
        .map_err(|e| format!("cannot read its root: {e}"))?;
    let ours =
        std::fs::metadata(&root).map_err(|e| format!("cannot read {}: {e}", root.display()))?;
    if (theirs.dev(), theirs.ino()) != (ours.dev(), ours.ino()) {
        return Err(format!("its root is not the jail {}", root.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firecracker::binary::{self, FirecrackerBinary};
    use crate::firecracker::jailer::LimitPolicy;
    use crate::firecracker::{FirecrackerSettings, SpawnProcess, VmProcessEvent};
    use crate::host::jails::FakeJails;
    use crate::host::processes::fake::FakeCall;
    use crate::host::processes::FakeProcesses;
    use actix::{Actor, Addr, Context, Handler};
    use std::time::Duration;

    /// Waits (at most 10 s) until the fake has spawned the jailer: an exit of a pid not yet
    /// spawned would be lost.
    async fn jailer_spawned(fake: &FakeProcesses) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !fake.calls().iter().any(|c| matches!(c, FakeCall::Spawn(_))) {
            assert!(
                std::time::Instant::now() < deadline,
                "the jailer was never spawned"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<VmProcessEvent> for Sink {
        type Result = ();
        fn handle(&mut self, _: VmProcessEvent, _: &mut Context<Self>) {}
    }

    fn jail(jails: Arc<FakeJails>, dir: &Path) -> VmJail {
        let layout =
            JailLayout::new(&dir.join("j"), Path::new("/fc/firecracker"), "900001").unwrap();
        VmJail::new(
            "/usr/bin/jailer".into(),
            jails,
            layout,
            900_001,
            900_001,
            CgroupVersion::V1,
            JailLimits::for_vm(1, 128, &LimitPolicy::default()),
            vec![
                JailFile {
                    source: "/images/vmlinux".into(),
                    name: "vmlinux".into(),
                    writable: false,
                },
                JailFile {
                    source: "/disks/a.ext4".into(),
                    name: "rootfs.ext4".into(),
                    writable: true,
                },
            ],
        )
    }

    fn actor(fake: &FakeProcesses, jails: Arc<FakeJails>, dir: &Path) -> Addr<FirecrackerActor> {
        let mut settings = FirecrackerSettings::new(dir.join("vms"));
        settings.api_timeout = Duration::from_millis(30);
        let binary = FirecrackerBinary {
            path: "/fc/firecracker".into(),
            version: binary::MIN_VERSION,
        };
        FirecrackerActor::new(
            "vm-1",
            binary,
            Arc::new(fake.clone()),
            settings,
            Sink.start().recipient(),
            slog::Logger::root(slog::Discard, slog::o!()),
        )
        .unwrap()
        .jailed(jail(jails, dir))
        .start()
    }

    fn spawned(fake: &FakeProcesses) -> Vec<PathBuf> {
        fake.calls()
            .into_iter()
            .filter_map(|c| match c {
                FakeCall::Spawn(spec) => Some(spec.program),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn translate_maps_only_the_files_in_the_jail() {
        let dir = tempfile::tempdir().unwrap();
        let j = jail(Arc::new(FakeJails::new()), dir.path());
        let config = VmConfig {
            vcpu_count: 1,
            mem_size_mib: 128,
            kernel: "/images/vmlinux".into(),
            initrd: Some("/images/initrd".into()),
            extra_boot_args: String::new(),
            rootfs: "/disks/a.ext4".into(),
            rootfs_read_only: false,
            rootfs_rate_limiter: None,
            net: None,
            vsock_cid: None,
        };
        let t = j.translate(&config);
        assert_eq!(t.kernel, Path::new("/vmlinux"));
        assert_eq!(t.rootfs, Path::new("/rootfs.ext4"));
        // Not in the jail: left as it is, so the VMM cannot open it.
        assert_eq!(t.initrd.as_deref(), Some(Path::new("/images/initrd")));
    }

    #[actix::test]
    async fn a_failed_prepare_spawns_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        let jails = Arc::new(FakeJails::new());
        jails.fail_next("prepare");
        let vm = actor(&fake, jails.clone(), dir.path());
        let err = vm.send(SpawnProcess {}).await.unwrap().unwrap_err();
        assert!(matches!(err, FirecrackerError::Jail { .. }), "{err:?}");
        assert!(spawned(&fake).is_empty());
        assert!(jails.jails().is_empty());
    }

    #[actix::test]
    async fn a_failed_jailer_leaves_no_jail() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        let jails = Arc::new(FakeJails::new());
        let vm = actor(&fake, jails.clone(), dir.path());
        let exit = async {
            // The jailer (the fake's first pid) fails, e.g. on an unavailable controller.
            jailer_spawned(&fake).await;
            fake.exit(1001, ExitStatus::Code(1));
        };
        let (res, ()) = tokio::join!(vm.send(SpawnProcess {}), exit);
        let err = res.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                FirecrackerError::ExitedEarly {
                    status: ExitStatus::Code(1),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(spawned(&fake), [PathBuf::from("/usr/bin/jailer")]);
        assert_eq!(jails.calls(), ["prepare 900001", "remove 900001"]);
        assert!(jails.jails().is_empty());
        assert!(fake.signals().is_empty(), "nothing to kill");
    }

    #[actix::test]
    async fn a_pid_file_naming_another_process_is_refused_and_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        let jails = Arc::new(FakeJails::new());
        jails.write_pid("900001", 4242);
        // Whatever runs as 4242 is not this jail's Firecracker.
        fake.set_identity(
            4242,
            ProcessIdentity {
                start_time: 7,
                cmdline: vec!["/usr/sbin/sshd".into()],
            },
        );
        let vm = actor(&fake, jails.clone(), dir.path());
        let exit = async {
            jailer_spawned(&fake).await;
            // The fake prepare cleared the pid file: the jailer "writes" it, then exits 0.
            jails.write_pid("900001", 4242);
            fake.exit(1001, ExitStatus::Code(0));
        };
        let (res, ()) = tokio::join!(vm.send(SpawnProcess {}), exit);
        let err = res.unwrap().unwrap_err();
        assert!(
            matches!(err, FirecrackerError::AdoptMismatch { pid: 4242, .. }),
            "{err:?}"
        );
        // Not ours: not signalled; the jail is gone.
        assert!(fake.signals().is_empty());
        assert!(jails.jails().is_empty());
    }

    #[actix::test]
    async fn a_hung_jailer_is_killed_and_its_jail_removed() {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeProcesses::new();
        let jails = Arc::new(FakeJails::new());
        let vm = actor(&fake, jails.clone(), dir.path());
        // The jailer (the fake's first pid, 1001) forks its child just as it is killed, and a
        // VMM of its uid already runs (the jailer hung after its child exec'd): both are
        // killed too. Another jail's VMM (another uid of the range) is left alone.
        let base = dir.path().join("j");
        let jailer_child = ProcessIdentity {
            start_time: 7,
            cmdline: [
                "/usr/bin/jailer",
                "--id",
                "900001",
                "--exec-file",
                "/fc/firecracker",
                "--chroot-base-dir",
                base.to_str().unwrap(),
            ]
            .map(String::from)
            .to_vec(),
        };
        fake.appear_on_kill(1001, 5000, jailer_child);
        let vmm = |id: &str| ProcessIdentity {
            start_time: 8,
            cmdline: ["/firecracker", "--id", id, "--api-sock", "/run/api.sock"]
                .map(String::from)
                .to_vec(),
        };
        fake.set_identity(5001, vmm("900001"));
        fake.set_uid(5001, 900_001);
        fake.set_identity(5002, vmm("900002"));
        fake.set_uid(5002, 900_002);
        let err = vm.send(SpawnProcess {}).await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                FirecrackerError::Jail {
                    source: JailError::JailerHung { .. }
                }
            ),
            "{err:?}"
        );
        let killed: Vec<u32> = fake.killed();
        assert_eq!(
            killed,
            [1001, 5000, 5001],
            "the jailer, then its child and its VMM"
        );
        assert_eq!(fake.signals(), [Signal::Kill; 3]);
        assert_eq!(
            crate::host::processes::Processes::list(&fake).unwrap(),
            [5002]
        );
        assert!(jails.jails().is_empty());
    }
}
