//! `VmSupervisor`: owns the VM table and orchestrates lifecycles.
//!
//! Message flow: a lifecycle message ([`CreateVm`], [`RunAction`], [`DeleteVm`], [`SetNat`])
//! takes the VM's operation lock (so operations on one VM run in order while different VMs
//! proceed in parallel), checks the state, then runs a saga (`saga.rs`) that talks to the other
//! actors. The saga never touches this actor's state directly: every change (state, lease,
//! disk, process) goes back through the internal [`Commit`] message, whose handler writes the
//! store first, then the in-memory table, then publishes the event and wakes waiters. Each
//! saga step registers its undo; a failure runs them in reverse.
//!
//! Process exits arrive from each VM's `FirecrackerActor` as `VmProcessEvent`s; an unexpected
//! exit of a live VM becomes `crashed` and its network lease is given back.
//!
//! The supervisor has no effect on processes or run directories of its own. Each run directory
//! `<run_base>/<vm>/` and every VMM process using it belong to that VM's `FirecrackerActor`:
//! a delete asks it to remove the directory (`RemoveRunDir`), and `Open` asks it to clear a gone
//! process's sockets (`RemoveStaleSockets`) and to kill a stray VMM found using its directory
//! (`KillStray`). A VM with no process actor at that moment (stopped before this hearthd started,
//! or a leaked directory of a VM no longer in the table) gets one for the job through the
//! internal [`RunDirOwner`] message: made from the same factory, not kept, and stopped once the
//! answer is dropped. The shared `Processes` backend is only read here, to attribute VMM
//! command lines to run directories; every signal goes through the owning actor. Without a
//! Firecracker binary no such actor can be made: strays and leaked run directories are then
//! left alone (with a warning) until an `Open` with a binary sweeps them, but a delete removes
//! its VM's run directory through the supervisor itself ([`RemoveUnownedRunDir`]: removing
//! files needs no binary), unless a process nobody adopted still uses it.

pub mod catalog;
mod egress;
mod error;
mod expiry;
mod fork;
pub mod fork_mem_dir;
mod guest;
mod handlers;
mod hooks;
mod jail_pool;
mod jailing;
mod live_change;
mod messages;
pub mod metrics;
pub mod node;
mod open;
mod park;
mod pause;
pub mod policy;
mod policy_msgs;
mod publish;
mod quiesce;
mod restart;
mod restore;
mod saga;
mod snapshot_messages;
mod snapshot_record;
mod snapshots;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod update;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext, Context, Recipient};
use hearth_proto::api::{EventReason, VmInfo, VmState};
use slog::Logger;
use tokio::sync::oneshot;

use crate::dns::DnsActor;
use crate::firecracker::{FirecrackerActor, FirecrackerBinary, FirecrackerSettings, StopPlan};
use crate::host::processes::Processes;
use crate::lease::NetLease;
use crate::nat::NatActor;
use crate::snapshot::SnapshotActor;
use crate::tap_pool::TapPoolActor;

pub use catalog::{ImageCatalog, StaticImages};
pub use error::{StepCause, SupervisorError};
pub use jail_pool::{GetWarmPool, WarmPoolStatus};
pub use jailing::JailSettings;
pub use messages::*;
use metrics::Histogram;
pub use node::{Drain, DrainProgress, GetNode, NodeStatus, SetCordon};
use policy::{Clock, SystemClock};
pub use policy_msgs::{PolicyTick, TickReport, UpdateVm};
pub use publish::{PublishPort, UnpublishPort};
pub(crate) use snapshot_messages::{CommitSnapshot, RestoreSnapshot, SnapshotChange};
pub use snapshot_messages::{CreateSnapshot, DeleteSnapshot, ForkVm, GetSnapshot, ListSnapshots};
pub use snapshot_record::{FrozenVmm, SnapshotRecord};
pub use store::{
    DiskRecord, MemoryVmStore, PolicyState, VmRecord, VmStore, VmStoreError, VmmProcessRecord,
};

/// The actors the supervisor drives.
#[derive(Clone)]
pub struct SupervisorDeps {
    /// Leases.
    pub tap_pool: Addr<TapPoolActor>,
    /// Per-guest firewall state.
    pub nat: Addr<NatActor>,
    /// The name table.
    pub dns: Addr<DnsActor>,
    /// Root disks.
    pub snapshot: Addr<SnapshotActor>,
}

/// How VMM processes are made.
#[derive(Clone)]
pub struct VmmFactory {
    /// The Firecracker binary; `None` when none was found (creates then fail with 503).
    pub binary: Option<FirecrackerBinary>,
    /// The process backend.
    pub processes: Arc<dyn Processes>,
    /// Run directories, timeouts, console cap.
    pub settings: FirecrackerSettings,
    /// How VMMs are jailed; `None` runs them unjailed, as root (issue 16).
    pub jail: Option<JailSettings>,
}

/// Lifecycle tunables.
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// The stop ladder's graces.
    pub stop_plan: StopPlan,
    /// How long a new VM's agent has to answer before the VM is `unready`.
    pub ready_timeout: Duration,
    /// The agent's vsock port.
    pub agent_port: u32,
    /// Where snapshots are kept, one directory each (`<data_dir>/snapshots`); empty (the
    /// default) when this supervisor keeps none: snapshots are then refused with 503.
    pub snapshot_dir: std::path::PathBuf,
    /// Where a fork's snapshot writes its memory file instead of `snapshot_dir` (e.g. a
    /// tmpfs: the fork's VM cannot outlive a reboot anyway); `None` (the default) keeps it
    /// with the snapshot's other files.
    pub fork_memory_dir: Option<std::path::PathBuf>,
    /// The lifecycle policies' tunables.
    pub policy: PolicySettings,
}

/// The lifecycle policies' tunables (`[policy]` in hearthd's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicySettings {
    /// How often due restarts and time limits are checked; zero for never (tests send
    /// [`PolicyTick`] themselves).
    pub tick: Duration,
    /// How many VMs found crashed on `Open` are started at once.
    pub autostart_parallelism: usize,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_secs(1),
            autostart_parallelism: 4,
        }
    }
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        Self {
            stop_plan: StopPlan::default(),
            ready_timeout: Duration::from_secs(30),
            agent_port: hearth_proto::agent::DEFAULT_PORT,
            snapshot_dir: std::path::PathBuf::new(),
            fork_memory_dir: None,
            policy: PolicySettings::default(),
        }
    }
}

/// One VM in the table.
struct VmEntry {
    record: VmRecord,
    /// Held for the whole of an operation on this VM.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The VM's process actor, while it has one.
    vmm: Option<Addr<FirecrackerActor>>,
    /// The pid a requested stop is ending while its ladder runs: its exit is expected, not a
    /// crash. Set and cleared by the stop itself (`saga::end_process`).
    stopping_pid: Option<u32>,
}

impl VmEntry {
    fn new(record: VmRecord) -> Self {
        Self {
            record,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            vmm: None,
            stopping_pid: None,
        }
    }

    fn info(&self) -> VmInfo {
        let r = &self.record;
        VmInfo {
            name: r.spec.name.clone(),
            state: r.state,
            spec: r.spec.clone(),
            guest_ip: r.lease.as_ref().map(|l| l.guest_ip),
            tap: r.lease.as_ref().map(|l| l.tap.clone()),
            pid: r.process.as_ref().and_then(|p| p.pid),
            nat: r.nat,
            last_error: r.last_error.clone(),
            exit_status: hearth_proto::api::exit_status_of(r.state, r.last_error.as_deref()),
            restart_attempts: r.policy.attempts,
            // Filled in with the clock by `VmSupervisor::with_policy`.
            restart_in_secs: None,
            expires_at: r.policy.deadline.and_then(|d| {
                d.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs())
            }),
            time_left_secs: None,
            parked_snapshot: None,
        }
    }
}

struct Waiter {
    name: String,
    state: VmState,
    tx: oneshot::Sender<Result<VmInfo, SupervisorError>>,
}

/// The actor: see the module documentation.
pub struct VmSupervisor {
    deps: SupervisorDeps,
    vmm: VmmFactory,
    settings: SupervisorSettings,
    store: Box<dyn VmStore>,
    catalog: Box<dyn ImageCatalog>,
    log: Logger,
    vms: BTreeMap<String, VmEntry>,
    /// The snapshots, as recorded (loaded by `Open`).
    snapshots: BTreeMap<String, SnapshotRecord>,
    /// Idempotency keys whose request is still running.
    keys_in_flight: BTreeSet<String>,
    subscribers: Vec<Recipient<EventPublished>>,
    waiters: Vec<Waiter>,
    phases: HashMap<&'static str, Histogram>,
    errors: HashMap<&'static str, u64>,
    closing: bool,
    /// The time policies read (a manual clock in tests).
    clock: Arc<dyn Clock>,
    policy_rt: restart::PolicyRuntime,
    /// Why the host is cordoned, when it is (loaded on `Open`).
    cordon: Option<String>,
    /// The running or last drain.
    drain: Option<node::DrainProgress>,
    /// The uid leases of jailed VMs (empty when jailing is off).
    uids: crate::host::jails::uids::UidPool,
    /// The warm pool of jailed VMMs (`[jailer] warm_pool`; idle when 0).
    warm: jail_pool::WarmPool,
}

impl VmSupervisor {
    /// A supervisor over `store`. Nothing happens until [`Open`].
    pub fn new(
        deps: SupervisorDeps,
        vmm: VmmFactory,
        settings: SupervisorSettings,
        store: Box<dyn VmStore>,
        catalog: Box<dyn ImageCatalog>,
        log: Logger,
    ) -> Self {
        // An empty range when jailing is off: nothing is ever leased.
        #[expect(clippy::reversed_empty_ranges, reason = "deliberately empty")]
        let uid_range = vmm.jail.as_ref().map_or(1..=0, |j| j.uid_range.clone());
        Self {
            deps,
            vmm,
            settings,
            store,
            catalog,
            log: log.new(slog::o!("actor" => "supervisor")),
            vms: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            keys_in_flight: BTreeSet::new(),
            subscribers: Vec::new(),
            waiters: Vec::new(),
            phases: HashMap::new(),
            errors: HashMap::new(),
            closing: false,
            clock: Arc::new(SystemClock),
            policy_rt: restart::PolicyRuntime::default(),
            cordon: None,
            drain: None,
            uids: crate::host::jails::uids::UidPool::new(uid_range),
            warm: jail_pool::WarmPool::default(),
        }
    }

    /// The same supervisor reading time from `clock` (tests move a manual clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn entry(&self, name: &str) -> Result<&VmEntry, SupervisorError> {
        self.vms.get(name).ok_or_else(|| SupervisorError::NotFound {
            name: name.to_owned(),
        })
    }

    /// The process actor for `name`, made on first use.
    fn vmm_for(
        &mut self,
        name: &str,
        ctx: &mut Context<Self>,
    ) -> Result<Addr<FirecrackerActor>, SupervisorError> {
        if let Some(addr) = self.vms.get(name).and_then(|e| e.vmm.clone()) {
            return Ok(addr);
        }
        let addr = self.new_vmm(name, ctx)?;
        if let Some(entry) = self.vms.get_mut(name) {
            entry.vmm = Some(addr.clone());
        }
        Ok(addr)
    }

    /// A new process actor for `name` (run directory `<run_base>/<name>/`), not recorded.
    fn new_vmm(
        &mut self,
        name: &str,
        ctx: &mut Context<Self>,
    ) -> Result<Addr<FirecrackerActor>, SupervisorError> {
        let binary = self
            .vmm
            .binary
            .clone()
            .ok_or_else(SupervisorError::no_firecracker_binary)?;
        let actor = FirecrackerActor::new(
            name,
            binary,
            self.vmm.processes.clone(),
            self.vmm.settings.clone(),
            ctx.address().recipient(),
            self.log.clone(),
        )
        .map_err(|e| SupervisorError::step("prepare the VMM", e))?;
        Ok(self.jail_actor(name, actor)?.start())
    }

    /// Applies one change: store first (durable), then memory, then events and waiters.
    fn apply(&mut self, vm: &str, change: Change) -> Result<(), SupervisorError> {
        match &change {
            Change::Insert(spec) => self.store.insert_vm(spec)?,
            Change::State { state, error, .. } => {
                self.store.set_state(vm, *state, error.as_deref())?;
            }
            Change::Nat(on) => self.store.set_nat(vm, *on)?,
            Change::Lease(Some(l)) => self.store.put_lease(vm, l)?,
            Change::Lease(None) => self.store.clear_lease(vm)?,
            Change::Disk(Some(d)) => self.store.put_disk(vm, d)?,
            Change::Disk(None) => self.store.clear_disk(vm)?,
            Change::Process(Some(p)) => self.store.put_process(vm, p)?,
            Change::Process(None) => self.store.clear_process(vm)?,
            Change::Spec(spec) => self.store.put_spec(vm, spec)?,
            Change::Policy(p) => self.store.put_policy(vm, p)?,
            Change::Uid(u) => self.store.put_uid(vm, *u)?,
            Change::Remove => self.store.delete_vm(vm)?,
        }
        match change {
            Change::Insert(spec) => {
                let record = VmRecord {
                    nat: spec.nat,
                    spec: *spec,
                    state: VmState::Creating,
                    last_error: None,
                    lease: None,
                    disk: None,
                    process: None,
                    policy: PolicyState::default(),
                    uid: None,
                };
                self.vms.insert(vm.to_owned(), VmEntry::new(record));
                self.publish(vm, VmState::Creating, EventReason::User, None);
            }
            Change::State {
                state,
                error,
                reason,
            } => {
                if let Some(e) = self.vms.get_mut(vm) {
                    e.record.state = state;
                    e.record.last_error.clone_from(&error);
                }
                let reason = self.stop_reason(vm, state, reason);
                self.publish(vm, state, reason, error.as_deref());
            }
            Change::Nat(on) => self.with_record(vm, |r| r.nat = on),
            Change::Lease(l) => self.with_record(vm, |r| r.lease = l),
            Change::Disk(d) => self.with_record(vm, |r| r.disk = d),
            Change::Process(p) => self.with_record(vm, |r| r.process = p),
            Change::Spec(spec) => self.with_record(vm, |r| r.spec = *spec),
            Change::Policy(p) => self.with_record(vm, |r| r.policy = p),
            Change::Uid(u) => {
                if u.is_none() && self.uids.release(vm).is_some() {
                    self.warm_uid_freed();
                }
                self.with_record(vm, |r| r.uid = u);
            }
            Change::Remove => {
                self.vms.remove(vm);
                // The VM's uid goes with it (its row was deleted with the VM's).
                if self.uids.release(vm).is_some() {
                    self.warm_uid_freed();
                }
                self.policy_rt.pending.remove(vm);
                let reason = self.stop_reason(vm, VmState::Deleting, EventReason::User);
                self.publish(vm, VmState::Deleting, reason, Some("deleted"));
                for w in std::mem::take(&mut self.waiters) {
                    if w.name == vm {
                        let _ =
                            w.tx.send(Err(SupervisorError::NotFound { name: vm.into() }));
                    } else {
                        self.waiters.push(w);
                    }
                }
            }
        }
        Ok(())
    }

    fn with_record(&mut self, vm: &str, f: impl FnOnce(&mut VmRecord)) {
        if let Some(e) = self.vms.get_mut(vm) {
            f(&mut e.record);
        }
    }

    /// Persists an event, sends it to subscribers, and answers waiters of this VM.
    fn publish(&mut self, vm: &str, state: VmState, reason: EventReason, detail: Option<&str>) {
        match self.store.append_event(vm, state, reason, detail) {
            Ok(event) => {
                self.subscribers.retain(|s| {
                    s.try_send(EventPublished {
                        event: event.clone(),
                    })
                    .is_ok()
                });
            }
            Err(e) => slog::error!(self.log, "cannot persist event"; "vm" => vm, "error" => %e),
        }
        let info = self.vms.get(vm).map(VmEntry::info);
        for w in std::mem::take(&mut self.waiters) {
            if w.tx.is_closed() {
                continue;
            }
            match &info {
                Some(info) if w.name == vm && w.state == state => {
                    let _ = w.tx.send(Ok(info.clone()));
                }
                Some(info) if w.name == vm && unreachable_from(state, w.state) => {
                    let _ = w.tx.send(Err(SupervisorError::InvalidState {
                        name: vm.to_owned(),
                        state: info.state,
                        op: "wait for that state",
                    }));
                }
                _ => self.waiters.push(w),
            }
        }
    }

    fn observe(&mut self, phase: &'static str, d: Duration) {
        self.phases.entry(phase).or_default().observe(d);
    }

    fn count_error(&mut self, op: &'static str) {
        *self.errors.entry(op).or_default() += 1;
    }
}

/// Whether a VM that just entered `now` can reach `wanted` without a new user action.
fn unreachable_from(now: VmState, wanted: VmState) -> bool {
    use VmState::{Crashed, Creating, Failed, Running, Stopped, Unready};
    match wanted {
        Running | Unready => matches!(now, Stopped | Crashed | Failed),
        Stopped => matches!(now, Failed | Crashed),
        // A VM is created once: after `creating` it never comes back.
        Creating => now != Creating,
        _ => false,
    }
}

impl Actor for VmSupervisor {
    type Context = Context<Self>;
}

/// A change to one VM's record. Sagas send these as [`Commit`]s.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    Insert(Box<hearth_proto::api::CreateVm>),
    State {
        state: VmState,
        error: Option<String>,
        reason: EventReason,
    },
    Nat(bool),
    Lease(Option<NetLease>),
    Disk(Option<DiskRecord>),
    Process(Option<VmmProcessRecord>),
    Spec(Box<hearth_proto::api::CreateVm>),
    Policy(PolicyState),
    /// The uid a jailed VM runs as (`None`: given back).
    Uid(Option<u32>),
    Remove,
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fork_memory;
#[cfg(test)]
mod tests_jail;
#[cfg(test)]
mod tests_jail_pool;
#[cfg(test)]
mod tests_policy;
#[cfg(test)]
mod tests_policy_loop;
