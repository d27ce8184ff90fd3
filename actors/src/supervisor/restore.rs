//! The restore saga: a snapshot becomes a new VM (`CreateVm` with `from_snapshot`).
//!
//! The VM is recorded (`creating`, its spec the snapshot's source machine) before anything is
//! made, then: its own copy-on-write disk from the snapshot's checkpoint (`SnapshotActor`) ->
//! a fresh lease (`TapPoolActor`) and firewall registration -> the process recorded, then a
//! fresh Firecracker process loads the snapshot with the new TAP (`network_overrides`) and
//! the VM's own vsock socket (`vsock_override`) -> NAT as asked -> the guest told its new
//! identity -> readiness -> `running`, its name in DNS. Each step registers its undo, as in a
//! create (`saga.rs`); a failure undoes them in reverse and leaves the VM `failed`. A crash
//! leaves a VM `creating`, which `Open` repairs like any interrupted create (process killed,
//! disk removed, lease given back).
//!
//! Until the guest takes its new identity it still carries the source's IP and MAC, which
//! the firewall's anti-spoofing drops (the lease's are registered). The guest identity step
//! needs the agent's `reconfigure` operation (helper `init`'s `ReconfigureGuest`), not yet in
//! this tree: see [`Restore::identity`].

use std::path::PathBuf;
use std::time::Instant;

use actix::fut::{ready, ActorFutureExt};
use actix::{Addr, Context, Handler, ResponseActFuture};
use futures::FutureExt;
use hearth_proto::api::{CreateVm, EventReason, VmInfo, VmState};
use hearth_proto::api_snapshot::SnapshotState;
use slog::{info, warn};

use super::saga::{self, Ports, Undo};
use super::{
    Change, DiskRecord, Idempotency, RestoreSnapshot, SnapshotRecord, SupervisorError,
    VmSupervisor, VmmProcessRecord,
};
use crate::firecracker::{
    FirecrackerActor, NetworkOverride, ProbeReady, RestoreVm, RunDir, SnapshotCompat, IFACE_ID,
};
use crate::lease::NetLease;
use crate::nat::RegisterGuest;
use crate::snapshot::CreateDisk;
use crate::tap_pool::AcquireTap;

fn step<E: Into<super::StepCause>>(name: &'static str) -> impl FnOnce(E) -> SupervisorError {
    move |e| SupervisorError::step(name, e)
}

/// What a restore needs.
pub(super) struct RestorePlan {
    spec: CreateVm,
    snapshot: SnapshotRecord,
    vmm: Addr<FirecrackerActor>,
    api_socket: PathBuf,
    binary: PathBuf,
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
            if self.vmm.binary.is_none() {
                return Err(SupervisorError::no_firecracker_binary());
            }
            self.apply(&name, Change::Insert(full))?;
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
        let api_socket = RunDir::new(&self.vmm.settings.run_base, name)
            .map_err(|e| SupervisorError::step("run directory", e))?
            .api_socket();
        let vmm = self.vmm_for(name, ctx)?;
        Ok(RestorePlan {
            spec,
            snapshot,
            vmm,
            api_socket,
            binary,
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
        Err(e) => {
            warn!(p.log, "restore failed, undoing"; "vm" => &vm, "error" => %e);
            saga::run_undo(&p, &vm, undo).await;
            p.set_state(
                &vm,
                VmState::Failed,
                Some(e.to_string()),
                EventReason::Error,
            )
            .await?;
            p.rebuild_dns().await;
            Err(e)
        }
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
        self.disk().await?;
        let lease = self.network().await?;
        self.load(&lease).await?;
        if self.plan.spec.nat {
            saga::nat_switch(self.p, &lease, true).await?;
            self.undo.push(Undo::Nat(lease.clone()));
        }
        self.identity(&lease);
        self.readiness().await
    }

    async fn observe(&mut self, phase: &'static str) {
        let took = self.lap.elapsed();
        self.lap = Instant::now();
        self.p.observe(phase, took).await;
    }

    /// The VM's own disk, copy-on-write from the snapshot's checkpoint.
    async fn disk(&mut self) -> Result<(), SupervisorError> {
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
                path: disk.path,
                backend: disk.backend,
            })),
        )
        .await?;
        self.observe("restore:disk").await;
        Ok(())
    }

    /// A fresh lease, recorded, and the guest registered with the firewall.
    async fn network(&mut self) -> Result<NetLease, SupervisorError> {
        let p = self.p;
        let vm = self.plan.spec.name.as_str();
        let lease = p
            .deps
            .tap_pool
            .send(AcquireTap {})
            .await
            .map_err(step("network lease"))?
            .map_err(step("network lease"))?;
        self.undo.push(Undo::Lease(lease.clone()));
        p.commit(vm, Change::Lease(Some(lease.clone()))).await?;
        p.deps
            .nat
            .send(RegisterGuest {
                lease: lease.clone(),
            })
            .await
            .map_err(step("guest firewall"))?
            .map_err(step("guest firewall"))?;
        self.undo.push(Undo::Guest(lease.clone()));
        self.observe("restore:lease").await;
        Ok(lease)
    }

    /// The process recorded before it exists, then a fresh Firecracker loading the snapshot
    /// with the new TAP and this VM's vsock socket; its pid recorded.
    async fn load(&mut self, lease: &NetLease) -> Result<(), SupervisorError> {
        let (p, plan) = (self.p, self.plan);
        let vm = plan.spec.name.as_str();
        let snap = &plan.snapshot;
        let mut record = VmmProcessRecord {
            pid: None,
            start_time: None,
            api_socket: plan.api_socket.clone(),
            binary: plan.binary.clone(),
            vsock_cid: snap.vsock_cid,
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
                resume: true,
                // The agent sets the clock with the new identity; Firecracker's own
                // `clock_realtime` is x86-only and from v1.16.
                clock_realtime: false,
            })
            .await
            .map_err(step("restore"))?
            .map_err(step("restore"))?;
        record.set_spawned(&restored.spawn.record);
        p.commit(vm, Change::Process(Some(record))).await?;
        self.lap = Instant::now();
        p.observe(
            "restore:spawn",
            restored.spawn.spawn + restored.spawn.api_ready,
        )
        .await;
        p.observe("restore:load", restored.load).await;
        Ok(())
    }

    /// The guest's new identity (IP, MAC, hostname, route, RNG seed, clock).
    ///
    /// NOT DONE YET: needs `ReconfigureGuest` (helper `init`); until it is merged the
    /// restored guest keeps the source's IP and MAC, which the firewall's anti-spoofing
    /// drops, so a restored VM has no working network (its agent, over vsock, works).
    fn identity(&self, lease: &NetLease) {
        warn!(self.p.log, "restored guest keeps the source's network identity: the agent's reconfigure step is not available yet";
            "vm" => &self.plan.spec.name, "new_ip" => %lease.guest_ip);
    }

    /// `running` at once without a probe, else when the agent answers (`unready` if not).
    async fn readiness(&mut self) -> Result<VmState, SupervisorError> {
        let (p, plan) = (self.p, self.plan);
        let vm = plan.spec.name.as_str();
        let state = if plan.spec.ready_probe {
            let probe = plan
                .vmm
                .send(ProbeReady {
                    port: p.settings.agent_port,
                    timeout: p.settings.ready_timeout,
                })
                .await
                .map_err(step("readiness"))?;
            self.observe("restore:ready").await;
            match probe {
                Ok(_) => VmState::Running,
                Err(e) => {
                    p.set_state(
                        vm,
                        VmState::Unready,
                        Some(e.to_string()),
                        EventReason::ReadinessTimeout,
                    )
                    .await?;
                    p.rebuild_dns().await;
                    return Ok(VmState::Unready);
                }
            }
        } else {
            VmState::Running
        };
        p.set_state(vm, state, None, EventReason::Snapshot).await?;
        p.rebuild_dns().await;
        Ok(state)
    }
}
