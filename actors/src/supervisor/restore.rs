//! The restore saga: a snapshot becomes a new VM (`CreateVm` with `from_snapshot`).
//!
//! The VM is recorded (`creating`, its spec the snapshot's source machine) before anything is
//! made, then: its own copy-on-write disk from the snapshot's checkpoint (`SnapshotActor`) ->
//! a fresh lease (`TapPoolActor`) and firewall registration -> the process recorded, then a
//! fresh Firecracker process loads the snapshot paused with the new TAP (`network_overrides`)
//! and the VM's own vsock socket (`vsock_override`), its root drive is moved from the
//! snapshot's checkpoint (which the state names, see `snapshots.rs`) onto the VM's own disk
//! (`PATCH /drives`), and only then it resumes -> NAT as asked -> the guest told its new
//! identity -> readiness -> `running`, its name in DNS. Each step registers its undo, as in a
//! create (`saga.rs`); a failure undoes them in reverse and leaves the VM `failed`. A crash
//! leaves a VM `creating`, which `Open` repairs like any interrupted create (process killed,
//! disk removed, lease given back).
//!
//! With jailing on (issue 16), the VM leases a uid of its own before its actor is made, and
//! after its disk exists its actor is handed the jail's files: the snapshot's state and memory
//! (made readable, never writable, by VMs' uids) and its own disk as `/rootfs` and at the path
//! the state records for the root drive (`RestoreJail::files`); the load names them inside the
//! jail, and the drive moves to `/rootfs`. A fresh uid is given back by the undo.
//!
//! Until the guest takes its new identity it still carries the source's IP and MAC, which
//! the firewall's anti-spoofing drops (the lease's are registered). The identity step sends
//! the agent `reconfigure` (address, MAC, hostname, route, DNS, clock, a fresh RNG seed)
//! through a `GuestActor`; only once the agent has applied it does the VM count as `running`.
//! A guest whose agent does not answer (or has no `reconfigure`) is left `unready` with the
//! reason: it runs, but its network identity is still the source's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use actix::fut::{ready, ActorFutureExt};
use actix::{Actor, Addr, AsyncContext, Context, Handler, ResponseActFuture};
use futures::FutureExt;
use hearth_proto::api::{CreateVm, EventReason, VmInfo, VmState};
use hearth_proto::api_snapshot::SnapshotState;
use slog::{info, warn};

use super::hooks::{self, Hook};
use super::jailing::{own_disk_in_jail, RestoreJail, SetJailFiles};
use super::saga::{self, Ports, Undo};
use super::{
    Change, DiskRecord, Idempotency, RestoreSnapshot, SnapshotRecord, SupervisorError,
    VmSupervisor, VmmProcessRecord,
};
use crate::firecracker::{
    FirecrackerActor, NetworkOverride, RestoreVm, ResumeVm, SnapshotCompat, IFACE_ID,
};
use crate::guest::{GuestActor, GuestError, GuestSettings, ReconfigureGuest, ThawGuest};
use crate::lease::NetLease;
use crate::snapshot::CreateDisk;
use hearth_proto::agent::identity::{Reconfigure, RngSeed};

/// Between tries of the identity step while the agent is not reachable yet.
const IDENTITY_RETRY: Duration = Duration::from_millis(50);

fn step<E: Into<super::StepCause>>(name: &'static str) -> impl FnOnce(E) -> SupervisorError {
    move |e| SupervisorError::step(name, e)
}

/// What a restore needs.
pub(super) struct RestorePlan {
    spec: CreateVm,
    snapshot: SnapshotRecord,
    vmm: Addr<FirecrackerActor>,
    /// Talks to the restored guest's agent (asking this supervisor where it is).
    guest: Addr<GuestActor>,
    api_socket: PathBuf,
    binary: PathBuf,
    /// The new VM's jail, when VMMs run jailed.
    jail: Option<RestoreJail>,
}

impl VmSupervisor {
    /// `spec` (with `from_snapshot`) as the new VM's full spec: the snapshot's source machine,
    /// this VM's name, NAT, probe and labels. Checks the snapshot is ready.
    fn restore_spec(&self, spec: &CreateVm) -> Result<(CreateVm, SnapshotRecord), SupervisorError> {
        let name = spec.from_snapshot.clone().unwrap_or_default();
        let snap = self
            .snapshots
            .get(&name)
            .cloned()
            .ok_or_else(|| SupervisorError::SnapshotNotFound { name: name.clone() })?;
        // A memory file kept in RAM (a fork's) that is gone cannot be loaded: said plainly
        // rather than as the VMM's failed load.
        let gone = snap.mem_file_missing();
        if snap.state == SnapshotState::Lost || (snap.state == SnapshotState::Ready && gone) {
            return Err(SupervisorError::Conflict {
                message: super::snapshots::lost_detail(&snap),
            });
        }
        if snap.state != SnapshotState::Ready {
            return Err(SupervisorError::Conflict {
                message: format!("Snapshot {name:?} is {}, not ready", snap.state),
            });
        }
        let src = &snap.source_spec;
        let full = CreateVm {
            kernel: src.kernel.clone(),
            rootfs: src.rootfs.clone(),
            vcpus: snap.vcpus,
            memory_mib: u32::try_from(snap.mem_size_mib).unwrap_or(src.memory_mib),
            disk_size: src.disk_size,
            boot_args: src.boot_args.clone(),
            ..spec.clone()
        };
        // Everything but the snapshot's name, which `internal` restores (forks) bypass.
        CreateVm {
            from_snapshot: None,
            ..full.clone()
        }
        .validate()?;
        Ok((full, snap))
    }

    /// A restore: `validate_name` is false for a fork's internal snapshot (whose name is not
    /// one a user could give). Answers once the VM runs (or is unready, or failed).
    pub(super) fn restore(
        &mut self,
        spec: CreateVm,
        key: Option<Idempotency>,
        validate_name: bool,
    ) -> ResponseActFuture<Self, Result<VmInfo, SupervisorError>> {
        let name = spec.name.clone();
        let prepared = (|| {
            self.check_open()?;
            if validate_name {
                spec.validate()?;
            }
            if let Some(info) = self.idempotent_replay(key.as_ref())? {
                return Ok(Err(info));
            }
            Ok(Ok(()))
        })();
        match prepared {
            Err(e) => return Box::pin(ready(Err(e))),
            Ok(Err(replayed)) => return Box::pin(ready(Ok(replayed))),
            Ok(Ok(())) => {}
        }
        let started = (|| {
            if self.vms.contains_key(&name) {
                return Err(SupervisorError::Conflict {
                    message: format!("A VM named {name:?} already exists"),
                });
            }
            let (full, snap) = self.restore_spec(&spec)?;
            self.check_restore_jailing(&snap)?;
            if self.vmm.binary.is_none() {
                return Err(SupervisorError::no_firecracker_binary());
            }
            self.apply(&name, Change::Insert(Box::new(full)))?;
            Ok(snap)
        })();
        let snap = match started {
            Ok(snap) => snap,
            Err(e) => {
                self.idempotent_store(key, &Err(e.clone()));
                self.count_error("restore");
                return Box::pin(ready(Err(e)));
            }
        };
        let n = name.clone();
        Box::pin(
            self.locked(
                &name.clone(),
                move |act, ctx| {
                    let ports = act.ports(ctx);
                    match act.restore_plan(&n, snap, ctx) {
                        Ok(plan) => Ok(restore(ports, plan).boxed_local()),
                        Err(e) => {
                            let n = n.clone();
                            Ok(async move {
                                ports
                                    .set_state(
                                        &n,
                                        VmState::Failed,
                                        Some(e.to_string()),
                                        EventReason::Error,
                                    )
                                    .await?;
                                Err(e)
                            }
                            .boxed_local())
                        }
                    }
                },
                move |act| act.info_of(&name),
            )
            .map(move |res, act, _| {
                if res.is_err() {
                    act.count_error("restore");
                }
                act.idempotent_store(key, &res);
                res
            }),
        )
    }

    fn restore_plan(
        &mut self,
        name: &str,
        snapshot: SnapshotRecord,
        ctx: &mut Context<Self>,
    ) -> Result<RestorePlan, SupervisorError> {
        let spec = self.entry(name)?.record.spec.clone();
        let binary = self
            .vmm
            .binary
            .as_ref()
            .map(|b| b.path.clone())
            .ok_or_else(SupervisorError::no_firecracker_binary)?;
        // Jailed (issue 16): a uid of its own, leased before its actor is made jailed with it.
        let jail = self.restore_jail(name)?;
        let made = self
            .api_socket_of(name, jail.as_ref().map(|j| j.uid))
            .and_then(|api_socket| Ok((api_socket, self.vmm_for(name, ctx)?)));
        let (api_socket, vmm) = match made {
            Ok(made) => made,
            Err(e) => {
                if jail.as_ref().is_some_and(|j| j.fresh) {
                    if let Err(undo) = self.apply(name, Change::Uid(None)) {
                        warn!(self.log, "uid lease not given back"; "vm" => name, "error" => %undo);
                    }
                }
                return Err(e);
            }
        };
        // Its own, stopped with the saga: the API's GuestActor lives in the HTTP layer.
        let guest = GuestActor::new(
            ctx.address().recipient(),
            GuestSettings::default(),
            &self.log,
        )
        .start();
        Ok(RestorePlan {
            spec,
            snapshot,
            vmm,
            guest,
            api_socket,
            binary,
            jail,
        })
    }
}

impl Handler<RestoreSnapshot> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<VmInfo, SupervisorError>>;

    fn handle(&mut self, msg: RestoreSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        self.restore(msg.spec, None, false)
    }
}

/// Runs the restore; on failure undoes it and leaves the VM `failed`.
async fn restore(p: Ports, plan: RestorePlan) -> Result<(), SupervisorError> {
    let vm = plan.spec.name.clone();
    let started = Instant::now();
    let mut r = Restore {
        p: &p,
        plan: &plan,
        undo: Vec::new(),
        lap: started,
    };
    let result = r.run().await;
    let undo = r.undo;
    match result {
        Ok(state) => {
            p.observe("restore:total", started.elapsed()).await;
            info!(p.log, "VM restored"; "vm" => &vm, "snapshot" => &plan.snapshot.name,
                "state" => %state, "ms" => started.elapsed().as_secs_f64() * 1e3);
            Ok(())
        }
        Err(e) => Err(saga::undo_and_fail(&p, &vm, undo, "restore", e).await),
    }
}

/// One restore in progress; like the create saga's `Boot`, each step pushes its undo the
/// moment its effect exists.
struct Restore<'a> {
    p: &'a Ports,
    plan: &'a RestorePlan,
    undo: Vec<Undo>,
    lap: Instant,
}

impl Restore<'_> {
    async fn run(&mut self) -> Result<VmState, SupervisorError> {
        if self.plan.jail.as_ref().is_some_and(|j| j.fresh) {
            self.undo.push(Undo::Uid);
        }
        let disk = self.disk().await?;
        self.jail_files(&disk).await?;
        let lease = self.network().await?;
        self.load(&lease, &disk).await?;
        let (p, spec) = (self.p, &self.plan.spec);
        hooks::setup(p, Hook::Restored, &spec.name, spec, &lease, &mut self.undo).await?;
        let identity = self.identity(&lease).await?;
        self.readiness(identity).await
    }

    async fn observe(&mut self, phase: &'static str) {
        let took = self.lap.elapsed();
        self.lap = Instant::now();
        self.p.observe(phase, took).await;
    }

    /// The VM's own disk, copy-on-write from the snapshot's checkpoint.
    async fn disk(&mut self) -> Result<PathBuf, SupervisorError> {
        let (p, plan) = (self.p, self.plan);
        let vm = plan.spec.name.as_str();
        let disk = p
            .deps
            .snapshot
            .send(CreateDisk {
                vm: vm.to_owned(),
                image: plan.snapshot.disk_path(),
                size: None,
            })
            .await
            .map_err(step("disk"))?
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
        self.observe("restore:disk").await;
        Ok(disk.path)
    }

    /// Jailed: the snapshot's state and memory (readable, never writable, by the VM's uid)
    /// and the VM's own disk handed to its actor, which links them into the jail at the
    /// spawn. No undo: the jail goes when the VMM does.
    async fn jail_files(&mut self, disk: &Path) -> Result<(), SupervisorError> {
        let plan = self.plan;
        let Some(jail) = &plan.jail else {
            return Ok(());
        };
        let files = jail.files(&plan.snapshot, disk)?;
        plan.vmm
            .send(SetJailFiles { files })
            .await
            .map_err(step("jail"))?
            .map_err(step("jail"))
    }

    /// A fresh lease, recorded, and the guest registered with the firewall.
    async fn network(&mut self) -> Result<NetLease, SupervisorError> {
        let lease = saga::lease_network(self.p, &self.plan.spec.name, &mut self.undo).await?;
        self.observe("restore:lease").await;
        Ok(lease)
    }

    /// The process recorded before it exists, then a fresh Firecracker loading the snapshot
    /// paused with the new TAP and this VM's vsock socket; its pid recorded; its root drive
    /// moved onto the VM's own disk before its vCPUs run (a restored VM never writes to the
    /// checkpoint, which other restores share).
    async fn load(&mut self, lease: &NetLease, disk: &Path) -> Result<(), SupervisorError> {
        let (p, plan) = (self.p, self.plan);
        let vm = plan.spec.name.as_str();
        let snap = &plan.snapshot;
        let mut record = VmmProcessRecord {
            pid: None,
            start_time: None,
            api_socket: plan.api_socket.clone(),
            binary: plan.binary.clone(),
            vsock_cid: snap.vsock_cid,
            left_frozen: false,
        };
        p.commit(vm, Change::Process(Some(record.clone()))).await?;
        self.undo.push(Undo::Process(plan.vmm.clone()));
        let restored = plan
            .vmm
            .send(RestoreVm {
                snapshot_path: snap.state_path(),
                mem_path: snap.mem_path(),
                compat: SnapshotCompat {
                    fc_version: snap.fc_version.clone(),
                    cpu_template: snap.cpu_template,
                },
                network_overrides: vec![NetworkOverride {
                    iface_id: IFACE_ID.into(),
                    host_dev_name: lease.tap.clone(),
                }],
                // The VM's own run directory's socket, where its agent is probed.
                vsock_uds_path: None,
                resume: false,
                // The agent sets the clock with the new identity; Firecracker's own
                // `clock_realtime` is x86-only and from v1.16.
                clock_realtime: false,
            })
            .await
            .map_err(step("restore"))?
            .map_err(step("restore"))?;
        record.set_spawned(&restored.spawn.record);
        p.commit(vm, Change::Process(Some(record))).await?;
        let resumed = Instant::now();
        // Jailed, its own disk is `/rootfs` in its jail (the state's path is the same inode).
        let own = match plan.jail {
            Some(_) => own_disk_in_jail(),
            None => disk.to_path_buf(),
        };
        super::snapshots::move_root_drive(&plan.vmm, &own).await?;
        plan.vmm
            .send(ResumeVm {})
            .await
            .map_err(step("resume"))?
            .map_err(step("resume"))?;
        p.observe("restore:drive", resumed.elapsed()).await;
        self.lap = Instant::now();
        p.observe(
            "restore:spawn",
            restored.spawn.spawn + restored.spawn.api_ready,
        )
        .await;
        p.observe("restore:load", restored.load).await;
        Ok(())
    }

    /// The guest's new identity (address, MAC, hostname, route, DNS, RNG seed, clock), sent
    /// to its agent; retried while the agent cannot be reached yet, within the readiness
    /// timeout (one try without the probe). Answers `Err(reason)` when it was not applied.
    async fn identity(&mut self, lease: &NetLease) -> Result<Result<(), String>, SupervisorError> {
        let (p, plan) = (self.p, self.plan);
        let vm = plan.spec.name.as_str();
        let identity = Reconfigure {
            ip_cidr: format!("{}/{}", lease.guest_ip, lease.prefix_len),
            gateway: lease.gateway,
            mac: lease.mac.to_string(),
            hostname: vm.to_owned(),
            dns: lease.gateway,
            clock_unix_ns: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .and_then(|d| u64::try_from(d.as_nanos()).ok()),
            rng_seed: RngSeed(rand::random()),
        };
        let deadline = Instant::now()
            + if plan.spec.ready_probe {
                p.settings.ready_timeout
            } else {
                Duration::ZERO
            };
        let applied = loop {
            // The snapshot froze the guest's root (see `quiesce.rs`), so the copy starts
            // frozen: thawed first, or the identity's writes to /etc would wait for the
            // agent's deadline. Any answer but "unreachable" lets the identity go on (an
            // agent without `thaw` never froze anything).
            let thawed = plan
                .guest
                .send(ThawGuest { vm: vm.to_owned() })
                .await
                .map_err(step("guest thaw"))?;
            let answer = match thawed {
                Err(e @ (GuestError::Unreachable { .. } | GuestError::Busy { .. })) => Err(e),
                _ => plan
                    .guest
                    .send(ReconfigureGuest {
                        vm: vm.to_owned(),
                        identity: identity.clone(),
                    })
                    .await
                    .map_err(step("guest identity"))?,
            };
            match answer {
                Ok(()) => break Ok(()),
                // Not listening yet (or busy): the agent comes back with its vCPUs.
                Err(GuestError::Unreachable { .. } | GuestError::Busy { .. })
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(IDENTITY_RETRY).await;
                }
                Err(e) => break Err(format!("guest identity not applied: {e}")),
            }
        };
        self.observe("restore:identity").await;
        if let Err(e) = &applied {
            warn!(p.log, "restored guest keeps the source's network identity"; "vm" => vm,
                "error" => e.as_str());
        }
        Ok(applied)
    }

    /// `running` once the agent applied the new identity (it answered, so no probe is
    /// needed), else `unready` with the reason. The name resolves from here on.
    async fn readiness(
        &mut self,
        identity: Result<(), String>,
    ) -> Result<VmState, SupervisorError> {
        let p = self.p;
        let vm = self.plan.spec.name.as_str();
        let state = match identity {
            Ok(()) => {
                p.set_state(vm, VmState::Running, None, EventReason::Snapshot)
                    .await?;
                VmState::Running
            }
            Err(reason) => {
                p.set_state(
                    vm,
                    VmState::Unready,
                    Some(reason),
                    EventReason::ReadinessTimeout,
                )
                .await?;
                VmState::Unready
            }
        };
        hooks::running(p, vm).await?;
        Ok(state)
    }
}
