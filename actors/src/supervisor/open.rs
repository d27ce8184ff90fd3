//! Opening and closing (the `Open` and `Close` handlers are in `handlers.rs`). Open reconciles the host with the store after a (re)start: live VMM
//! processes are verified and adopted (never restarted), dead ones are marked, operations a
//! crash cut short are finished or undone, leaked TAPs, disks, run directories and stray VMM
//! processes are swept, VMs left without a process lose their stale sockets, and the TAP
//! pool, NAT and DNS are rebuilt from the VMs that live. Run directories and the processes
//! using them are touched only by the `FirecrackerActor` owning them (see the supervisor's
//! module docs): a stray is a VMM whose `--api-sock` lies in `<run_base>/<vm>/` for a VM whose
//! process was not adopted, and that VM's actor kills it (`KillStray`). Stops a crash cut short are the
//! exception: their ladder can take the whole grace, so their VMs stay `stopping` and the
//! ladder runs in the background once `Open` has answered (hearthd serves meanwhile).
//! [`plan_repairs`] decides; [`execute`] carries the plan out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::fut::ActorFutureExt;
use actix::{Addr, AsyncContext, Context, Handler};
use futures::FutureExt;
use hearth_proto::api::{EventReason, VmState};
use hearth_proto::firecracker::InstanceState;
use slog::{info, warn};

use super::saga::Ports;
use super::{Change, OpenReport, SupervisorError, VmRecord, VmSupervisor};
use crate::firecracker::{
    run_dir, FirecrackerActor, KillStray, KillVm, RemoveRunDir, RemoveStaleSockets,
};
use crate::host::processes::Processes;
use crate::lease::NetLease;
use crate::nat::{GuestSpec, Reconcile, SeedPublished};
use crate::snapshot::{ListDisks, RemoveDisk};
use crate::tap_pool::Initialize;

/// What adopting a VM's recorded process found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Adoption {
    /// Verified and taken over; Firecracker reports this VM state.
    Adopted { vmm_state: InstanceState },
    /// Gone, or not the process that was recorded.
    Gone,
}

/// What to do to make the host and the table agree.
#[derive(Debug, Default, PartialEq)]
pub(super) struct RepairPlan {
    /// Adopted processes to SIGKILL (an interrupted create, boot or delete).
    pub kill: Vec<String>,
    /// Adopted processes to stop by the ladder (an interrupted stop), in the background
    /// after `Open` answers.
    pub stop: Vec<String>,
    /// Disks to remove (an interrupted create or delete).
    pub remove_disk: Vec<String>,
    /// VMs to forget after the above (an interrupted delete).
    pub forget: Vec<String>,
    /// Changes to record.
    pub changes: Vec<(String, Change)>,
    /// Leases still in use, for the TAP pool.
    pub used: Vec<NetLease>,
    /// Desired per-guest firewall state.
    pub guests: Vec<GuestSpec>,
    /// VMs whose adopted process keeps running (for now, for those in `stop`); any other
    /// VMM process carrying hearth's marker is a stray to sweep, and any other VM's run
    /// directory loses its sockets and console FIFO.
    pub alive: BTreeSet<String>,
    /// The report.
    pub report: OpenReport,
}

fn state(state: VmState, error: Option<&str>) -> Change {
    Change::State {
        state,
        error: error.map(str::to_owned),
        reason: EventReason::Restart,
    }
}

/// Decides the repairs from the recorded VMs and what adoption found.
pub(super) fn plan_repairs(
    records: &[VmRecord],
    adoptions: &BTreeMap<String, Adoption>,
) -> RepairPlan {
    let mut plan = RepairPlan::default();
    for r in records {
        let adopted = match adoptions.get(&r.spec.name) {
            Some(Adoption::Adopted { vmm_state }) => Some(*vmm_state),
            _ => None,
        };
        let alive = match r.state {
            VmState::Creating | VmState::Deleting => {
                plan.interrupted_create_or_delete(r, adopted.is_some());
                false
            }
            VmState::Stopping => plan.interrupted_stop(r, adopted.is_some()),
            VmState::Starting => {
                plan.interrupted_boot(r, adopted.is_some());
                false
            }
            VmState::Running | VmState::Unready => plan.running(r, adopted),
            VmState::Paused => plan.paused(r, adopted),
            VmState::Stopped | VmState::Crashed | VmState::Failed => {
                if adopted.is_some() {
                    plan.kill.push(r.spec.name.clone());
                }
                false
            }
        };
        plan.keep_or_forget_resources(r, alive);
    }
    plan
}

impl RepairPlan {
    /// A create or delete cut short: its process killed, its disk removed; a delete is
    /// finished (the VM forgotten), a create fails.
    fn interrupted_create_or_delete(&mut self, r: &VmRecord, adopted: bool) {
        let name = &r.spec.name;
        if adopted {
            self.kill.push(name.clone());
        }
        if r.disk.is_some() || r.state == VmState::Creating {
            // A create cut short may have made the disk before recording it.
            self.remove_disk.push(name.clone());
        }
        if r.state == VmState::Deleting {
            self.forget.push(name.clone());
        } else {
            self.changes.push((
                name.clone(),
                state(VmState::Failed, Some("interrupted by a hearthd restart")),
            ));
        }
        self.report.repaired.push(name.clone());
    }

    /// A stop cut short: finished by the ladder if the process lives, else recorded.
    /// Answers whether the VM keeps its process for now.
    fn interrupted_stop(&mut self, r: &VmRecord, adopted: bool) -> bool {
        let name = &r.spec.name;
        self.report.repaired.push(name.clone());
        if adopted {
            // Finished in the background once hearthd serves (the ladder can take the whole
            // grace): until then the VM is `stopping` and keeps its process and network,
            // like any VM being stopped.
            self.stop.push(name.clone());
            true
        } else {
            self.changes
                .push((name.clone(), state(VmState::Stopped, None)));
            false
        }
    }

    /// A boot (create or start) cut short before it was confirmed: ended, and the VM
    /// failed, so the user starts again rather than hearthd guessing how far it got.
    fn interrupted_boot(&mut self, r: &VmRecord, adopted: bool) {
        let name = &r.spec.name;
        if adopted {
            self.kill.push(name.clone());
        }
        self.changes.push((
            name.clone(),
            state(
                VmState::Failed,
                Some("boot interrupted by a hearthd restart"),
            ),
        ));
        self.report.repaired.push(name.clone());
    }

    /// A VM recorded running (or unready): adopted if its VMM runs a guest, failed if the
    /// VMM lives without one, crashed if it is gone. Answers whether the VM lives on.
    fn running(&mut self, r: &VmRecord, adopted: Option<InstanceState>) -> bool {
        let name = &r.spec.name;
        match adopted {
            Some(InstanceState::Running) => {
                self.report.adopted.push(name.clone());
                true
            }
            Some(_) => {
                // Alive but not running a guest: nothing to keep.
                self.kill.push(name.clone());
                self.changes.push((
                    name.clone(),
                    state(
                        VmState::Failed,
                        Some("the VMM was not running a guest at restart"),
                    ),
                ));
                self.report.repaired.push(name.clone());
                false
            }
            None => {
                self.changes.push((
                    name.clone(),
                    state(
                        VmState::Crashed,
                        Some("the VMM process was gone at restart"),
                    ),
                ));
                self.report.dead.push(name.clone());
                false
            }
        }
    }

    /// A VM recorded paused: adopted as paused if its VMM is; `running` if its VMM runs (a
    /// resume was cut short after the VMM call, before it was recorded); else as
    /// [`RepairPlan::running`] decides. A snapshot cut short that paused it is finished by
    /// the snapshot repairs, which resume it if it ran before.
    fn paused(&mut self, r: &VmRecord, adopted: Option<InstanceState>) -> bool {
        let name = &r.spec.name;
        match adopted {
            Some(InstanceState::Paused) => {
                self.report.adopted.push(name.clone());
                true
            }
            Some(InstanceState::Running) => {
                self.report.adopted.push(name.clone());
                self.changes
                    .push((name.clone(), state(VmState::Running, None)));
                true
            }
            other => self.running(r, other),
        }
    }

    /// A VM that lives keeps its lease (for the pool) and firewall state; any other loses
    /// the records of its lease and process.
    fn keep_or_forget_resources(&mut self, r: &VmRecord, alive: bool) {
        let name = &r.spec.name;
        if alive {
            self.alive.insert(name.clone());
            if let Some(lease) = &r.lease {
                self.used.push(lease.clone());
                self.guests.push(GuestSpec {
                    tap: lease.tap.clone(),
                    ip: lease.guest_ip,
                    mac: lease.mac,
                    nat: r.nat,
                });
            }
            return;
        }
        if r.lease.is_some() {
            self.changes.push((name.clone(), Change::Lease(None)));
        }
        if r.process.is_some() {
            self.changes.push((name.clone(), Change::Process(None)));
        }
    }
}

impl VmSupervisor {
    /// Runs the ladder of a stop that a restart cut short, in the background under the VM's
    /// lock: the VM stays `stopping` (and answers reads) until its process is gone. An exit
    /// meanwhile ends the ladder early and is recorded as the stop's outcome.
    pub(super) fn finish_interrupted_stop(&mut self, name: String, ctx: &mut Context<Self>) {
        let n = name.clone();
        let fut = self.locked(
            &name,
            move |act, ctx| {
                let entry = act.entry(&n)?;
                if entry.record.state != VmState::Stopping {
                    return Ok(async { Ok(()) }.boxed_local());
                }
                let pid = entry.record.process.as_ref().and_then(|p| p.pid);
                Ok(super::saga::stop(
                    act.ports(ctx),
                    n.clone(),
                    entry.vmm.clone(),
                    pid,
                    entry.record.lease.clone(),
                    false,
                    // A stop that cannot end the process leaves the VM as it was before.
                    VmState::Running,
                )
                .boxed_local())
            },
            |_| Ok(()),
        );
        ctx.spawn(fut.map(move |res, act, _| match res {
            Ok(()) => info!(act.log, "interrupted stop finished"; "vm" => &name),
            Err(e) => warn!(act.log, "interrupted stop failed"; "vm" => &name, "error" => %e),
        }));
    }
}

/// How long a stray VMM has to exit after SIGKILL before `Open` goes on without it.
const STRAY_KILL_WAIT: Duration = Duration::from_secs(2);

/// Carries out `plan` except its stops, and answers the report and the VMs to stop.
pub(super) async fn execute(
    p: Ports,
    mut plan: RepairPlan,
    vmms: BTreeMap<String, Addr<FirecrackerActor>>,
    known: BTreeSet<String>,
    run_base: std::path::PathBuf,
    processes: Arc<dyn Processes>,
    jail_sweep: Option<super::jailing::JailSweep>,
) -> Result<(OpenReport, Vec<String>), SupervisorError> {
    repair(&p, &mut plan, &vmms).await?;
    let live: BTreeSet<&String> = known.iter().filter(|n| !plan.forget.contains(n)).collect();

    // Leaks: disks, run directories and VMM processes that belong to no VM.
    sweep_disks(&p, &live, &mut plan.report).await;
    let alive: BTreeSet<&String> = plan.alive.iter().collect();
    sweep_strays(&p, &*processes, &run_base, &alive, &mut plan.report).await;
    sweep_run_dirs(&p, &run_base, &live, &alive, &mut plan.report).await;
    // Jailed VMMs of no live VM, and their jails (issue 16): before the pool takes TAPs back.
    if let Some(sweep) = jail_sweep {
        let (swept, stuck) = sweep.run(&p.log).await;
        plan.report.swept.extend(swept);
        plan.report.quarantined_uids = stuck;
    }

    // Rebuild the network around the VMs that live.
    let pool = p
        .deps
        .tap_pool
        .send(Initialize { used: plan.used })
        .await
        .map_err(|e| step("tap pool", e))?
        .map_err(|e| step("tap pool", e))?;
    info!(p.log, "tap pool ready"; "free" => pool.free_taps, "leased" => pool.leased);
    // Published ports are in the table Reconcile writes, not added after it: a port never
    // goes missing across a restart of hearthd.
    let ports = super::hooks::published_ports(&p, &plan.alive).await;
    p.deps
        .nat
        .send(SeedPublished { ports })
        .await
        .map_err(|e| step("firewall", e))?;
    p.deps
        .nat
        .send(Reconcile {
            desired: plan.guests,
        })
        .await
        .map_err(|e| step("firewall", e))?
        .map_err(|e| step("firewall", e))?;
    // Runtime state beyond the static rules (names, egress, ...) from the store; published
    // ports are there already and their hook finds them so.
    super::hooks::adopt_all(&p, &plan.alive).await;
    Ok((plan.report, plan.stop))
}

/// The repairs proper: kills, recorded changes, disk removals, forgotten VMs.
async fn repair(
    p: &Ports,
    plan: &mut RepairPlan,
    vmms: &BTreeMap<String, Addr<FirecrackerActor>>,
) -> Result<(), SupervisorError> {
    // Processes first, so the TAPs they held are free before the pool reclaims them. SIGKILL
    // takes no grace: all at once.
    futures::future::join_all(
        plan.kill
            .iter()
            .filter_map(|name| vmms.get(name))
            .map(|vmm| vmm.send(KillVm {})),
    )
    .await;
    for (name, change) in std::mem::take(&mut plan.changes) {
        p.commit(&name, change).await?;
    }
    for name in &plan.remove_disk {
        match p.deps.snapshot.send(RemoveDisk { vm: name.clone() }).await {
            Ok(Ok(_)) => p.commit(name, Change::Disk(None)).await?,
            Ok(Err(e)) => warn!(p.log, "disk not removed"; "vm" => name, "error" => %e),
            Err(e) => warn!(p.log, "disk not removed"; "vm" => name, "error" => %e),
        }
    }
    for name in &plan.forget {
        if let Err(e) = clean_run_dir(p, name, RemoveRunDir {}).await {
            warn!(p.log, "run directory not removed"; "vm" => name.as_str(), "error" => %e);
        }
        p.commit(name, Change::Remove).await?;
    }
    Ok(())
}

/// Removes the disks of VMs not in `live`.
async fn sweep_disks(p: &Ports, live: &BTreeSet<&String>, report: &mut OpenReport) {
    match p.deps.snapshot.send(ListDisks {}).await {
        Ok(Ok(disks)) => {
            for d in disks.into_iter().filter(|d| !live.contains(&d.vm)) {
                if let Ok(Ok(_)) = p.deps.snapshot.send(RemoveDisk { vm: d.vm.clone() }).await {
                    report.swept.push(format!("disk {}", d.vm));
                }
            }
        }
        Ok(Err(e)) => warn!(p.log, "cannot list disks"; "error" => %e),
        Err(e) => warn!(p.log, "cannot list disks"; "error" => %e),
    }
}

/// Kills stray VMM processes. Only those of VMs whose process was adopted (`alive`) may
/// run; e.g. one spawned but never recorded, or one that failed verification yet carries
/// our marker, is a stray. The actor owning its run directory kills it and waits for it to
/// die, so the TAP it held is free before the pool reclaims it.
async fn sweep_strays(
    p: &Ports,
    processes: &dyn Processes,
    run_base: &Path,
    alive: &BTreeSet<&String>,
    report: &mut OpenReport,
) {
    let strays = stray_processes(processes, run_base, alive).unwrap_or_else(|e| {
        warn!(p.log, "cannot look for stray VMM processes"; "error" => %e);
        Vec::new()
    });
    for (vm, pid) in strays {
        let killed = async {
            let owner = p.run_dir_owner(&vm).await?;
            owner
                .send(KillStray {
                    pid,
                    wait: STRAY_KILL_WAIT,
                })
                .await
                .map_err(|e| step("kill stray", e))?
                .map_err(|e| step("kill stray", e))
        };
        match killed.await {
            Ok(()) => report.swept.push(format!("process {pid}")),
            Err(e) => warn!(p.log, "stray not killed"; "vm" => &vm, "pid" => pid, "error" => %e),
        }
    }
}

/// Run directories: those of `live` VMs left without a process (not in `alive`) lose the
/// sockets and FIFO of the process that is gone, as a normal stop leaves them (they keep
/// their logs); those of no VM are removed.
async fn sweep_run_dirs(
    p: &Ports,
    run_base: &Path,
    live: &BTreeSet<&String>,
    alive: &BTreeSet<&String>,
    report: &mut OpenReport,
) {
    // Only directories that still hold them: asking an owner means starting an actor.
    let holds_process_files =
        |name: &str| run_dir::RunDir::new(run_base, name).is_ok_and(|d| d.has_process_files());
    for name in live
        .iter()
        .filter(|n| !alive.contains(**n) && holds_process_files(n))
    {
        if let Err(e) = clean_run_dir(p, name, RemoveStaleSockets {}).await {
            warn!(p.log, "stale sockets not removed"; "vm" => name.as_str(), "error" => %e);
        }
    }
    match run_dir::list(run_base) {
        Ok(names) => {
            // The warm pool's FIFOs are not a run directory (the jail sweep empties them).
            let warm = crate::firecracker::warm_pool::FIFO_DIR;
            for name in names.into_iter().filter(|n| !live.contains(n) && n != warm) {
                match clean_run_dir(p, &name, RemoveRunDir {}).await {
                    Ok(()) => report.swept.push(format!("run directory {name}")),
                    Err(e) => {
                        warn!(p.log, "leaked run directory left"; "name" => &name, "error" => %e);
                    }
                }
            }
        }
        Err(e) => warn!(p.log, "cannot list run directories"; "error" => %e),
    }
}

/// Has the actor owning `vm`'s run directory carry out `msg` (a removal) on it.
async fn clean_run_dir<M>(p: &Ports, vm: &str, msg: M) -> Result<(), SupervisorError>
where
    M: actix::Message<Result = Result<(), crate::firecracker::FirecrackerError>> + Send + 'static,
    FirecrackerActor: Handler<M>,
{
    p.run_dir_owner(vm)
        .await?
        .send(msg)
        .await
        .map_err(|e| step("clean run directory", e))?
        .map_err(|e| step("clean run directory", e))
}

fn step(step: &'static str, e: impl Into<super::StepCause>) -> SupervisorError {
    SupervisorError::step(step, e)
}

/// `(vm, pid)` of every process whose command line puts its API socket under `run_base/<vm>/`
/// for a VM that is not in `keep`: VMM processes hearth spawned and then lost track of. Only
/// reads (the process list and command lines).
fn stray_processes(
    processes: &dyn Processes,
    run_base: &Path,
    keep: &BTreeSet<&String>,
) -> Result<Vec<(String, u32)>, crate::host::processes::ProcessError> {
    let base = run_base.to_string_lossy().into_owned();
    let pids = processes.list()?;
    Ok(pids
        .into_iter()
        .filter_map(|pid| {
            // A process that exits meanwhile has no identity: not a stray any more.
            let id = processes.identity(pid).ok()?;
            let vm = owner_vm(&id.cmdline, &base)?;
            (!keep.contains(&vm)).then_some((vm, pid))
        })
        .collect())
}

/// The VM a VMM command line belongs to: the directory under `base` of its `--api-sock`.
pub(super) fn owner_vm(args: &[String], base: &str) -> Option<String> {
    let sock = args
        .windows(2)
        .find(|w| w[0] == "--api-sock")
        .map(|w| w[1].clone())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--api-sock=").map(str::to_owned))
        })?;
    let rest = sock.strip_prefix(base)?.strip_prefix('/')?;
    let vm = rest.split('/').next()?;
    (!vm.is_empty()).then(|| vm.to_owned())
}
