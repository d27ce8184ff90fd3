//! The lifecycle sagas. They run outside the supervisor's state: they talk to the other actors
//! and send every change back to the supervisor as a [`Commit`] (store first, then memory).
//! Each step that has an effect pushes its [`Undo`]; a failure runs the undos in reverse.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix::{Addr, MailboxError};
use hearth_proto::api::{CreateVm, EventReason, VmState};
use slog::{info, warn, Logger};

use super::hooks::{self, Hook};
use super::{
    Change, Commit, DiskRecord, ObservePhase, StepCause, SupervisorDeps, SupervisorError,
    SupervisorSettings, VmSupervisor, VmmProcessRecord,
};
use crate::firecracker::{
    cid_for_guest_ip, ConfigureVm, FirecrackerActor, FirecrackerError, KillVm, NetConfig,
    ProbeReady, RemoveRunDir, SpawnProcess, StartVm, StopVm, VmConfig,
};
use crate::lease::NetLease;
use crate::nat::{RegisterGuest, UnregisterGuest};
use crate::snapshot::{CreateDisk, RemoveDisk};
use crate::tap_pool::{AcquireTap, ReleaseTap};

/// What a saga needs: the supervisor's address (for commits) and the other actors.
#[derive(Clone)]
pub(super) struct Ports {
    pub me: Addr<VmSupervisor>,
    pub deps: SupervisorDeps,
    pub settings: SupervisorSettings,
    pub log: Logger,
}

fn mailbox(step: &'static str) -> impl FnOnce(MailboxError) -> SupervisorError {
    move |e| SupervisorError::step(step, e)
}

fn step<E: Into<StepCause>>(step: &'static str) -> impl FnOnce(E) -> SupervisorError {
    move |e| SupervisorError::step(step, e)
}

impl Ports {
    pub async fn commit(&self, vm: &str, change: Change) -> Result<(), SupervisorError> {
        self.me
            .send(Commit {
                vm: vm.to_owned(),
                change,
            })
            .await
            .map_err(mailbox("record state"))?
    }

    pub async fn set_state(
        &self,
        vm: &str,
        state: VmState,
        error: Option<String>,
        reason: EventReason,
    ) -> Result<(), SupervisorError> {
        self.commit(
            vm,
            Change::State {
                state,
                error,
                reason,
            },
        )
        .await
    }

    /// Marks `pid` as the process a requested stop is ending (its exit is not a crash), or
    /// clears the mark with `None` once the stop is over, whatever its outcome.
    async fn expect_exit(&self, vm: &str, pid: Option<u32>) {
        let _ = self
            .me
            .send(super::ExpectExit {
                vm: vm.to_owned(),
                pid,
            })
            .await;
    }

    /// The actor owning `vm`'s run directory (see [`super::RunDirOwner`]).
    pub async fn run_dir_owner(&self, vm: &str) -> Result<Addr<FirecrackerActor>, SupervisorError> {
        self.me
            .send(super::RunDirOwner { vm: vm.to_owned() })
            .await
            .map_err(mailbox("run directory"))?
    }

    pub(super) async fn observe(&self, phase: &'static str, took: Duration) {
        let _ = self.me.send(ObservePhase { phase, took }).await;
    }
}

/// The undo of one saga step.
pub(super) enum Undo {
    Disk,
    Lease(NetLease),
    Guest(NetLease),
    /// A capability's setup hook succeeded: its `stopped` takes it back.
    Capability {
        index: usize,
        spec: Box<CreateVm>,
        lease: NetLease,
    },
    Process(Addr<FirecrackerActor>),
    /// A uid leased for this boot (jailed): given back.
    Uid,
}

/// Runs undos in reverse order; each failure is logged and the rest still run.
/// A saga (`what`: boot, restore) failed with `e`: undoes its effects, newest first, marks
/// the VM `failed` naming the cause (the capabilities' undos withdrew its name). Answers `e`, or the error of recording
/// the failure when that failed too.
pub(super) async fn undo_and_fail(
    p: &Ports,
    vm: &str,
    undo: Vec<Undo>,
    what: &str,
    e: SupervisorError,
) -> SupervisorError {
    warn!(p.log, "saga failed, undoing"; "vm" => vm, "saga" => what, "error" => %e);
    run_undo(p, vm, undo).await;
    if let Err(recording) = p
        .set_state(vm, VmState::Failed, Some(e.to_string()), EventReason::Error)
        .await
    {
        return recording;
    }
    e
}

/// Leases a TAP with its address, records the lease, and registers the guest with the
/// firewall, pushing each effect's undo onto `undo` the moment it exists (boot and restore).
pub(super) async fn lease_network(
    p: &Ports,
    vm: &str,
    undo: &mut Vec<Undo>,
) -> Result<NetLease, SupervisorError> {
    let lease = p
        .deps
        .tap_pool
        .send(AcquireTap {})
        .await
        .map_err(mailbox("network lease"))?
        .map_err(step("network lease"))?;
    undo.push(Undo::Lease(lease.clone()));
    p.commit(vm, Change::Lease(Some(lease.clone()))).await?;
    p.deps
        .nat
        .send(RegisterGuest {
            lease: lease.clone(),
        })
        .await
        .map_err(mailbox("guest firewall"))?
        .map_err(step("guest firewall"))?;
    undo.push(Undo::Guest(lease.clone()));
    Ok(lease)
}

pub(super) async fn run_undo(p: &Ports, vm: &str, undo: Vec<Undo>) {
    for u in undo.into_iter().rev() {
        let (what, res) = match u {
            Undo::Process(vmm) => {
                // Not spawned yet, or already gone: nothing to kill is fine.
                let _ = vmm.send(KillVm {}).await;
                ("process", p.commit(vm, Change::Process(None)).await)
            }
            Undo::Capability { index, spec, lease } => (
                "capability",
                hooks::undo_one(p, vm, index, &spec, &lease).await,
            ),
            Undo::Guest(lease) => ("guest registration", unregister(p, &lease).await),
            Undo::Lease(lease) => ("lease", release_lease(p, vm, lease).await),
            Undo::Disk => ("disk", remove_disk(p, vm).await),
            Undo::Uid => ("uid", p.commit(vm, Change::Uid(None)).await),
        };
        if let Err(e) = res {
            warn!(p.log, "undo step failed"; "vm" => vm, "step" => what, "error" => %e);
        }
    }
}

async fn unregister(p: &Ports, lease: &NetLease) -> Result<(), SupervisorError> {
    p.deps
        .nat
        .send(UnregisterGuest {
            lease: lease.clone(),
        })
        .await
        .map_err(mailbox("guest firewall"))?
        .map_err(step("guest firewall"))
}

async fn release_lease(p: &Ports, vm: &str, lease: NetLease) -> Result<(), SupervisorError> {
    p.deps
        .tap_pool
        .send(ReleaseTap { lease })
        .await
        .map_err(mailbox("release lease"))?
        .map_err(step("release lease"))?;
    p.commit(vm, Change::Lease(None)).await
}

async fn remove_disk(p: &Ports, vm: &str) -> Result<(), SupervisorError> {
    p.deps
        .snapshot
        .send(RemoveDisk { vm: vm.to_owned() })
        .await
        .map_err(mailbox("remove disk"))?
        .map_err(step("remove disk"))?;
    p.commit(vm, Change::Disk(None)).await
}

/// Gives back everything network a VM holds: NAT, guest registration, lease.
pub(super) async fn release_network(
    p: &Ports,
    vm: &str,
    lease: Option<NetLease>,
) -> Result<(), SupervisorError> {
    let Some(lease) = lease else { return Ok(()) };
    // Unregistering removes the guest from the NAT set too.
    unregister(p, &lease).await?;
    release_lease(p, vm, lease).await
}

/// The process is gone: the capabilities' `stopped` (each runs, even after another failed),
/// then the network given back, unless a hook failed (the lease stays recorded, so a retry
/// runs them again).
pub(super) async fn stopped_network(
    p: &Ports,
    vm: &str,
    lease: Option<NetLease>,
) -> Result<(), SupervisorError> {
    hooks::teardown(p, Hook::Stopped, vm, lease.as_ref()).await?;
    release_network(p, vm, lease).await
}

/// What booting a VM needs.
pub(super) struct BootPlan {
    pub spec: CreateVm,
    pub kernel: PathBuf,
    pub rootfs_base: PathBuf,
    /// The disk already made (a start), or `None` to make one (a create, or a failed VM).
    pub disk: Option<PathBuf>,
    /// This boot is a create: the VM stays `creating` until it is up, so a restart that finds
    /// it cut short removes the disk too (a cut-short start keeps it).
    pub creating: bool,
    /// A lease still recorded from before (its release failed when the VM stopped): given
    /// back before a new one is taken.
    pub stale_lease: Option<NetLease>,
    pub vmm: Addr<FirecrackerActor>,
    pub api_socket: PathBuf,
    pub binary: PathBuf,
    /// The uid the VM runs as when jailed (it names the jail).
    pub jail_uid: Option<u32>,
    /// The uid was leased for this boot: given back if it fails.
    pub uid_fresh: bool,
}

/// Disk (if needed) -> lease -> guest registration -> spawn -> configure -> start ->
/// capabilities' `booted` -> readiness -> capabilities' `running`. Answers the final state (running or unready); on failure every step is
/// undone in reverse and the VM is left `failed` with the cause.
pub(super) async fn boot(p: Ports, plan: BootPlan) -> Result<VmState, SupervisorError> {
    let vm = plan.spec.name.clone();
    let started = Instant::now();
    let mut boot = Boot {
        p: &p,
        plan: &plan,
        undo: Vec::new(),
        lap: started,
    };
    let result = boot.run().await;
    let undo = boot.undo;
    match result {
        Ok(state) => {
            p.observe("total", started.elapsed()).await;
            info!(p.log, "VM up"; "vm" => &vm, "state" => %state,
                "ms" => started.elapsed().as_secs_f64() * 1e3);
            Ok(state)
        }
        Err(e) => Err(undo_and_fail(&p, &vm, undo, "boot", e).await),
    }
}

/// One boot in progress: one method per step, each pushing its undo onto `undo` the moment
/// its effect exists (rather than returning it), so that a step failing after its effect
/// (e.g. when recording it in the store) is undone too.
struct Boot<'a> {
    p: &'a Ports,
    plan: &'a BootPlan,
    /// The undos of the effects so far, in the order they happened.
    undo: Vec<Undo>,
    /// When the current phase began (for the phase latency histograms).
    lap: Instant,
}

impl Boot<'_> {
    /// The steps in order.
    async fn run(&mut self) -> Result<VmState, SupervisorError> {
        if self.plan.uid_fresh {
            self.undo.push(Undo::Uid);
        }
        let disk = self.disk().await?;
        let lease = self.network().await?;
        self.jail_files(&disk).await?;
        let vsock_cid = self.spawn(&lease).await?;
        self.configure_and_start(disk, &lease, vsock_cid).await?;
        self.capabilities(&lease).await?;
        let state = self.readiness().await?;
        hooks::running(self.p, &self.plan.spec.name).await?;
        Ok(state)
    }

    /// The time since the last lap, starting a new one.
    fn lap(&mut self) -> Duration {
        let took = self.lap.elapsed();
        self.lap = Instant::now();
        took
    }

    /// The root disk: the VM's own, or a new copy-on-write disk of the base image, recorded.
    /// Undo: remove it (and its record).
    async fn disk(&mut self) -> Result<PathBuf, SupervisorError> {
        let (p, plan) = (self.p, self.plan);
        if let Some(path) = &plan.disk {
            return Ok(path.clone());
        }
        let vm = plan.spec.name.as_str();
        let disk = p
            .deps
            .snapshot
            .send(CreateDisk {
                vm: vm.to_owned(),
                image: plan.rootfs_base.clone(),
                size: plan.spec.disk_size,
            })
            .await
            .map_err(mailbox("disk"))?
            .map_err(step("disk"))?;
        self.undo.push(Undo::Disk);
        p.commit(
            vm,
            Change::Disk(Some(DiskRecord {
                path: disk.path.clone(),
                backend: disk.backend,
            })),
        )
        .await?;
        p.observe("disk", self.lap()).await;
        Ok(disk.path)
    }

    /// The network: a stale lease given back, a new one taken and recorded, the guest
    /// registered with the firewall. Undo: unregister the guest, release the lease.
    async fn network(&mut self) -> Result<NetLease, SupervisorError> {
        let (p, plan) = (self.p, self.plan);
        let vm = plan.spec.name.as_str();
        release_network(p, vm, plan.stale_lease.clone()).await?;
        let lease = lease_network(p, vm, &mut self.undo).await?;
        p.observe("lease", self.lap()).await;
        Ok(lease)
    }

    /// Jailed: the files the VMM opens (kernel, the disk just made) handed to its actor,
    /// which puts them in the jail at the spawn. No undo: the jail goes when the VMM does.
    async fn jail_files(&mut self, disk: &std::path::Path) -> Result<(), SupervisorError> {
        let plan = self.plan;
        if plan.jail_uid.is_none() {
            return Ok(());
        }
        plan.vmm
            .send(super::jailing::SetJailFiles {
                files: super::jailing::boot_files(plan.kernel.clone(), disk.to_path_buf()),
            })
            .await
            .map_err(mailbox("jail"))?
            .map_err(step("jail"))
    }

    /// The VMM process: recorded before the spawn, so a crash mid-spawn leaves a trace to
    /// sweep, then spawned and its pid recorded. Answers the guest's vsock CID.
    /// Undo: kill the process, forget its record.
    async fn spawn(&mut self, lease: &NetLease) -> Result<u32, SupervisorError> {
        let (p, plan) = (self.p, self.plan);
        let vm = plan.spec.name.as_str();
        let vsock_cid = cid_for_guest_ip(lease.guest_ip)
            .ok_or_else(|| SupervisorError::step("vsock", StepCause::NoVsockCid(lease.guest_ip)))?;
        let mut record = VmmProcessRecord {
            pid: None,
            start_time: None,
            api_socket: plan.api_socket.clone(),
            binary: plan.binary.clone(),
            vsock_cid,
            left_frozen: false,
        };
        p.commit(vm, Change::Process(Some(record.clone()))).await?;
        self.undo.push(Undo::Process(plan.vmm.clone()));
        if !plan.creating {
            p.set_state(vm, VmState::Starting, None, EventReason::User)
                .await?;
        }
        let spawned = plan
            .vmm
            .send(SpawnProcess {})
            .await
            .map_err(mailbox("spawn"))?
            .map_err(step("spawn"))?;
        record.set_spawned(&spawned.record);
        p.commit(vm, Change::Process(Some(record))).await?;
        self.lap();
        p.observe("spawn", spawned.spawn).await;
        p.observe("api_ready", spawned.api_ready).await;
        Ok(vsock_cid)
    }

    /// The machine configured over the API socket, then started. No undo of its own: the
    /// spawn's undo (killing the process) ends both.
    async fn configure_and_start(
        &mut self,
        disk: PathBuf,
        lease: &NetLease,
        vsock_cid: u32,
    ) -> Result<(), SupervisorError> {
        let (p, plan) = (self.p, self.plan);
        let config = machine_config(plan, disk, lease, vsock_cid);
        let took = plan
            .vmm
            .send(ConfigureVm { config })
            .await
            .map_err(mailbox("configure"))?
            .map_err(step("configure"))?;
        p.observe("configure", took).await;
        let took = plan
            .vmm
            .send(StartVm {})
            .await
            .map_err(mailbox("start"))?
            .map_err(step("start"))?;
        p.observe("start", took).await;
        self.lap();
        Ok(())
    }

    /// The VM's capabilities (NAT switch, published ports, ...) set up for the started
    /// machine, with the NAT flag as last switched. Undo: each capability's `stopped`.
    async fn capabilities(&mut self, lease: &NetLease) -> Result<(), SupervisorError> {
        let (p, plan) = (self.p, self.plan);
        let vm = plan.spec.name.as_str();
        let spec = p
            .hook_subject(vm)
            .await
            .map_or_else(|| plan.spec.clone(), |s| s.spec);
        hooks::setup(p, Hook::Booted, vm, &spec, lease, &mut self.undo).await?;
        p.observe("nat_dns", self.lap()).await;
        Ok(())
    }

    /// The final state: `running` at once without a probe, else `running` when the guest
    /// agent answers, `unready` when it does not (the VM runs; nothing is undone). The
    /// capabilities' `running` follows (the name resolves from then on).
    async fn readiness(&mut self) -> Result<VmState, SupervisorError> {
        let (p, plan) = (self.p, self.plan);
        let vm = plan.spec.name.as_str();
        if !plan.spec.ready_probe {
            p.set_state(vm, VmState::Running, None, EventReason::User)
                .await?;
            return Ok(VmState::Running);
        }
        let probe = plan
            .vmm
            .send(ProbeReady {
                port: p.settings.agent_port,
                timeout: p.settings.ready_timeout,
            })
            .await
            .map_err(mailbox("readiness"))?;
        p.observe("ready", self.lap()).await;
        let state = match probe {
            Ok(_) => {
                p.set_state(vm, VmState::Running, None, EventReason::User)
                    .await?;
                VmState::Running
            }
            Err(e) => {
                p.set_state(
                    vm,
                    VmState::Unready,
                    Some(e.to_string()),
                    EventReason::ReadinessTimeout,
                )
                .await?;
                VmState::Unready
            }
        };
        Ok(state)
    }
}

/// The Firecracker machine a plan describes, on `disk`, with `lease`'s network and a vsock.
fn machine_config(plan: &BootPlan, disk: PathBuf, lease: &NetLease, vsock_cid: u32) -> VmConfig {
    VmConfig {
        vcpu_count: plan.spec.vcpus,
        mem_size_mib: u64::from(plan.spec.memory_mib),
        kernel: plan.kernel.clone(),
        initrd: None,
        extra_boot_args: crate::firecracker::config::with_hostname_arg(
            &plan.spec.name,
            plan.spec.boot_args.as_deref().unwrap_or_default(),
        ),
        rootfs: disk,
        rootfs_read_only: false,
        rootfs_rate_limiter: None,
        net: Some(NetConfig {
            lease: lease.clone(),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        }),
        vsock_cid: Some(vsock_cid),
    }
}

/// Ends a VM's process by the ladder (or SIGKILL); answers how it ended, for the log. Only
/// "there is no process" counts as ended: any other failure (e.g. it survived SIGKILL) means
/// the process may still run, and is an error so it is never recorded as gone.
async fn end_process(
    p: &Ports,
    vm: &str,
    vmm: Option<Addr<FirecrackerActor>>,
    pid: Option<u32>,
    kill: bool,
) -> Result<Option<String>, SupervisorError> {
    let Some(vmm) = vmm else { return Ok(None) };
    // Only while the ladder runs is an exit of this pid expected: a stop that fails leaves
    // the process running, and its later death is a crash again.
    p.expect_exit(vm, pid).await;
    let outcome = if kill {
        vmm.send(KillVm {}).await
    } else {
        vmm.send(StopVm {
            plan: p.settings.stop_plan,
        })
        .await
    };
    p.expect_exit(vm, None).await;
    match outcome.map_err(mailbox("stop"))? {
        // The guest's init line, when there is one, stays last: `stop` records it.
        Ok(o) => Ok(Some(match o.guest_exit {
            Some(r) => format!(
                "ended by {} ({}); {}",
                o.rung,
                o.status,
                hearth_proto::init::exit_line(r)
            ),
            None => format!("ended by {} ({})", o.rung, o.status),
        })),
        // It exited meanwhile (or never ran): stopped all the same.
        Err(e @ FirecrackerError::InvalidState { .. }) => {
            Ok(Some(format!("no process to stop: {e}")))
        }
        Err(e) => Err(SupervisorError::step("stop", e)),
    }
}

/// Stops a VM's process (ladder or kill), then gives back its network and records it stopped.
/// If the process cannot be ended, the VM goes back to `previous` (it still runs), so the
/// stop can be retried; if only the network release fails, the VM is `stopped` with the
/// cause and keeps the lease record, which the next start or delete releases first.
pub(super) async fn stop(
    p: Ports,
    vm: String,
    vmm: Option<Addr<FirecrackerActor>>,
    pid: Option<u32>,
    lease: Option<NetLease>,
    kill: bool,
    previous: VmState,
) -> Result<(), SupervisorError> {
    p.set_state(&vm, VmState::Stopping, None, EventReason::User)
        .await?;
    // Failures are logged by the hooks and do not keep the VM from stopping.
    let _ = hooks::teardown(&p, Hook::Stopping, &vm, lease.as_ref()).await;
    let how = match end_process(&p, &vm, vmm, pid, kill).await {
        Ok(how) => how,
        Err(e) => {
            p.set_state(&vm, previous, Some(e.to_string()), EventReason::Error)
                .await?;
            return Err(e);
        }
    };
    p.commit(&vm, Change::Process(None)).await?;
    if let Some(how) = &how {
        info!(p.log, "VM stopped"; "vm" => &vm, "how" => how);
    }
    let released = stopped_network(&p, &vm, lease).await;
    let error = released
        .as_ref()
        .err()
        .map(|e| format!("network not released: {e}"));
    // How hearth's init said the command ended, kept in the detail `exit_status` is read from.
    let guest_exit = how
        .as_deref()
        .and_then(hearth_proto::init::parse_exit_line)
        .map(|r| format!("the guest shut down: {}", hearth_proto::init::exit_line(r)));
    p.set_state(
        &vm,
        VmState::Stopped,
        error.or(guest_exit),
        EventReason::User,
    )
    .await?;
    released
}

/// After an unexpected exit: give back the network and record the crash.
pub(super) async fn crashed(
    p: Ports,
    vm: String,
    lease: Option<NetLease>,
    detail: String,
) -> Result<(), SupervisorError> {
    if let Err(e) = stopped_network(&p, &vm, lease).await {
        warn!(p.log, "network not released after crash"; "vm" => &vm, "error" => %e);
    }
    p.commit(&vm, Change::Process(None)).await?;
    p.set_state(&vm, VmState::Crashed, Some(detail), EventReason::Crash)
        .await?;
    Ok(())
}

/// Deletes a VM: `deleting` is recorded first (so a restart finishes the job), then the
/// process is stopped by the ladder, and the network, disk and run directory (by the actor
/// that owns it) are freed. If the
/// process cannot be ended the VM goes back to `previous`; if freeing something else fails it
/// becomes `failed` with the cause, keeping the records of what is left, so delete can be
/// retried (it never stays stuck in `deleting`).
pub(super) async fn delete(
    p: Ports,
    vm: String,
    vmm: Option<Addr<FirecrackerActor>>,
    pid: Option<u32>,
    lease: Option<NetLease>,
    has_disk: bool,
    previous: VmState,
) -> Result<(), SupervisorError> {
    p.set_state(&vm, VmState::Deleting, None, EventReason::User)
        .await?;
    if previous.is_alive() {
        let _ = hooks::teardown(&p, Hook::Stopping, &vm, lease.as_ref()).await;
    }
    match end_process(&p, &vm, vmm, pid, false).await {
        Ok(Some(how)) => {
            info!(p.log, "VM stopped for delete"; "vm" => &vm, "how" => how);
            p.commit(&vm, Change::Process(None)).await?;
        }
        Ok(None) => {}
        Err(e) => {
            p.set_state(&vm, previous, Some(e.to_string()), EventReason::Error)
                .await?;
            return Err(e);
        }
    }
    if let Err(e) = free_resources(&p, &vm, lease, has_disk).await {
        p.set_state(
            &vm,
            VmState::Failed,
            Some(e.to_string()),
            EventReason::Error,
        )
        .await?;
        return Err(e);
    }
    p.commit(&vm, Change::Remove).await?;
    Ok(())
}

/// The run directory of a VM for which no process actor could be made (`why`): removed by
/// the supervisor unless a process uses it or an actor could own it after all; what is left is
/// swept as leaked by the next `Open` that has a Firecracker binary.
async fn remove_unowned_run_dir(
    p: &Ports,
    vm: &str,
    why: &SupervisorError,
) -> Result<(), SupervisorError> {
    let outcome =
        p.me.send(super::RemoveUnownedRunDir { vm: vm.to_owned() })
            .await
            .map_err(mailbox("remove run directory"))??;
    match outcome {
        super::UnownedRunDir::Removed => {
            info!(p.log, "run directory removed without a process actor"; "vm" => vm, "why" => %why);
        }
        super::UnownedRunDir::HasOwner => {
            warn!(p.log, "run directory left in place"; "vm" => vm, "error" => %why);
        }
        super::UnownedRunDir::InUse { pid } => {
            warn!(p.log, "run directory left in place: a process nobody adopted uses it";
                "vm" => vm, "pid" => pid);
        }
        super::UnownedRunDir::Unchecked { reason } => {
            warn!(p.log, "run directory left in place: cannot tell whether a process uses it";
                "vm" => vm, "error" => reason);
        }
    }
    Ok(())
}

/// Network, disk and run directory of a VM whose process is gone.
async fn free_resources(
    p: &Ports,
    vm: &str,
    lease: Option<NetLease>,
    has_disk: bool,
) -> Result<(), SupervisorError> {
    stopped_network(p, vm, lease).await?;
    hooks::teardown(p, Hook::Deleted, vm, None).await?;
    if has_disk {
        remove_disk(p, vm).await?;
    }
    let owner = match p.run_dir_owner(vm).await {
        Ok(owner) => owner,
        // No actor can be made (no Firecracker binary); removing files needs none.
        Err(why) => return remove_unowned_run_dir(p, vm, &why).await,
    };
    owner
        .send(RemoveRunDir {})
        .await
        .map_err(mailbox("remove run directory"))?
        .map_err(step("remove run directory"))
}
