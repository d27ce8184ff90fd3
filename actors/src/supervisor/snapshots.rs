//! The snapshot saga and the snapshot table's handlers.
//!
//! A snapshot is recorded (`creating`, with the source VM's state before it) before its
//! directory `<snapshot_dir>/<name>/` or any file in it exists. Then: the source is paused
//! (recorded `paused` first, see `pause.rs`) -> its root disk is checkpointed into the
//! directory (`SnapshotActor`) -> the VMM's root drive is moved onto that checkpoint
//! (`PATCH /drives`) -> Firecracker writes its state and memory files (`FirecrackerActor`) ->
//! the root drive is moved back onto the VM's own disk -> the record becomes `ready` with what
//! the snapshot was taken with ->
//! the source is left running, paused or stopped as asked. A failure before `ready` resumes a
//! source that ran, removes the directory and forgets the record; `Open` does the same for a
//! snapshot a crash left `creating`, and finishes removing one left `deleting`. A crash after
//! `ready` but before the source is left as asked leaves a complete snapshot and the source
//! `paused` (recorded, adopted as paused): `vm resume` continues it.
//!
//! Before the pause, the guest's agent syncs and freezes its root filesystem (`quiesce.rs`),
//! thawed after the resume or on the undo path (left `paused`, by the VM's next resume:
//! recorded in `SnapshotRecord::left_frozen`): the disk checkpoint and the memory are taken
//! at the same paused instant, and the checkpoint alone is also a clean filesystem. A guest
//! that cannot freeze (no agent, an older one, a paused or unready VM) is snapshotted all the
//! same, the paused event saying it was not frozen; a restore from it sees its disk exactly as
//! its page cache left it, and only a reader of the checkpoint alone sees what a power cut
//! leaves. A restored guest starts frozen as its snapshot was: the restore thaws it first.
//!
//! Why the drive moves: Firecracker's state file records the path of each drive's backing
//! file and `PUT /snapshot/load` reopens that path (it has no drive override). Taken on the
//! VM's own disk, every restore would open the source's disk (writing to it, and failing once
//! the source is deleted). Taken on the checkpoint, the state names a file that lives exactly
//! as long as the snapshot; a restore loads paused and moves its drive to its own copy before
//! it resumes (`restore.rs`). The guest is paused (and its root frozen) while the source's
//! drive is on the checkpoint, so nothing is written to either file meanwhile; the drive goes
//! back before anything resumes the source, on failure too (`undo`), and `Open` moves it back
//! for a snapshot a crash left `creating`. Should moving it back fail, the source is left
//! paused rather than resumed on a file the undo removes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use actix::fut::{ready, ActorFutureExt, WrapFuture};
use actix::{Addr, AsyncContext, Context, Handler, ResponseActFuture};
use futures::FutureExt;
use hearth_proto::api::{EventReason, VmState};
use hearth_proto::api_snapshot::{SnapshotInfo, SnapshotLeave, SnapshotState};
use slog::{info, warn};

use super::jailing::{own_disk_in_jail, SourceJail};
use super::quiesce;
use super::saga::{self, Ports};
use super::snapshot_record::{FrozenVmm, MEM_FILE_SUFFIX};
use super::{
    CommitSnapshot, CreateSnapshot, DeleteSnapshot, GetSnapshot, ListSnapshots, SnapshotChange,
    SnapshotRecord, StepCause, SupervisorError, VmSupervisor,
};
use crate::firecracker::config::ROOT_DRIVE_ID;
use crate::firecracker::{CreateVmSnapshot, FirecrackerActor, UpdateDrivePath};
use crate::lease::NetLease;
use crate::snapshot::CheckpointDisk;

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn files_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SupervisorError {
    let path = path.to_path_buf();
    move |e| {
        SupervisorError::step(
            "snapshot files",
            StepCause::Files {
                what,
                path,
                source: std::sync::Arc::new(e),
            },
        )
    }
}

/// Bytes a file occupies on the host (its allocated blocks; memory files are sparse).
fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// Removes a snapshot's directory; a missing one is fine. The supervisor owns the snapshot
/// directories (it records each before making it), and removes them only through this call.
#[expect(
    clippy::disallowed_methods,
    reason = "the owner of the snapshot directories removes them, through this one call"
)]
pub(super) fn remove_dir(dir: &Path) -> Result<(), SupervisorError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(files_error("remove", dir)(e)),
    }
}

/// Removes a snapshot's files: its memory file where it is kept outside the directory (a
/// fork's, see [`SnapshotRecord::mem_file`]; never through a directory that is no longer
/// hearthd's own), then the directory; missing ones are fine.
pub(super) fn remove_files(rec: &SnapshotRecord) -> Result<(), SupervisorError> {
    if let Some(mem) = &rec.mem_file {
        super::fork_mem_dir::remove(mem)
            .map_err(|e| files_error("remove", mem)(std::io::Error::other(e)))?;
    }
    remove_dir(&rec.dir)
}

/// Makes or checks the directory a memory file kept outside its snapshot's directory goes
/// to (hearthd's only: no other user may read a fork's memory or plant files there), and
/// clears the file's place so that it is written afresh (see `fork_mem_dir`).
fn make_mem_dir(mem: &Path) -> Result<(), SupervisorError> {
    let Some(dir) = mem.parent() else {
        return Ok(());
    };
    super::fork_mem_dir::prepare(dir)
        .and_then(|()| super::fork_mem_dir::clear(mem))
        .map_err(|e| files_error("use", dir)(std::io::Error::other(e)))
}

/// The source VM as the snapshot saga needs it.
pub(super) struct Source {
    pub name: String,
    pub state: VmState,
    pub vmm: Addr<FirecrackerActor>,
    pub pid: Option<u32>,
    pub lease: Option<NetLease>,
    /// The VM's own root disk as its VMM opens it (in its jail when jailed), which its root
    /// drive is moved back onto.
    pub disk: PathBuf,
    /// Its jail, when its VMM runs jailed.
    pub jail: Option<SourceJail>,
    /// Its VMM process, as a snapshot that leaves it frozen records it.
    pub process: Option<FrozenVmm>,
    /// An earlier snapshot left its guest frozen (and it is still paused).
    pub frozen_before: bool,
}

/// Moves `vm`'s root drive onto `path` (see the module docs).
pub(super) async fn move_root_drive(
    vmm: &Addr<FirecrackerActor>,
    path: &Path,
) -> Result<(), SupervisorError> {
    vmm.send(UpdateDrivePath {
        drive_id: ROOT_DRIVE_ID.into(),
        path: path.to_path_buf(),
    })
    .await
    .map_err(|e| SupervisorError::step("root drive", e))?
    .map_err(|e| SupervisorError::step("root drive", e))
}

impl VmSupervisor {
    /// Store first, then memory.
    pub(super) fn apply_snapshot(&mut self, change: SnapshotChange) -> Result<(), SupervisorError> {
        match change {
            SnapshotChange::Insert(r) => {
                self.store.insert_snapshot(&r)?;
                self.snapshots.insert(r.name.clone(), r);
            }
            SnapshotChange::Put(r) => {
                self.store.put_snapshot(&r)?;
                self.snapshots.insert(r.name.clone(), r);
            }
            SnapshotChange::Remove(name) => {
                self.store.delete_snapshot(&name)?;
                self.snapshots.remove(&name);
            }
            SnapshotChange::Thawed(vm) => {
                let frozen: Vec<SnapshotRecord> = self
                    .snapshots
                    .values()
                    .filter(|r| r.source_vm == vm && r.left_frozen.is_some())
                    .cloned()
                    .collect();
                for mut r in frozen {
                    r.left_frozen = None;
                    self.store.put_snapshot(&r)?;
                    self.snapshots.insert(r.name.clone(), r);
                }
                // The marker a removed snapshot handed to the process (`keep_thaw_marker`).
                if let Some(mut process) = self.frozen_process(&vm).cloned() {
                    process.left_frozen = false;
                    self.apply(&vm, super::Change::Process(Some(process)))?;
                }
            }
        }
        Ok(())
    }

    /// `vm`'s VMM process as a [`FrozenVmm`], once spawned.
    fn frozen_vmm(&self, vm: &str) -> Option<FrozenVmm> {
        let p = self.vms.get(vm)?.record.process.as_ref()?;
        Some(FrozenVmm {
            pid: p.pid?,
            start_time: p.start_time?,
        })
    }

    /// `vm`'s process record if it carries the thaw marker of a removed snapshot.
    fn frozen_process(&self, vm: &str) -> Option<&super::VmmProcessRecord> {
        let p = self.vms.get(vm)?.record.process.as_ref()?;
        p.left_frozen.then_some(p)
    }

    /// Before snapshot `rec` is removed: if it left its source frozen in the process the
    /// source runs now (not resumed since), the marker moves to that process's record, so
    /// the resume still thaws the guest.
    fn keep_thaw_marker(&mut self, rec: &SnapshotRecord) -> Result<(), SupervisorError> {
        let vm = &rec.source_vm;
        if rec.left_frozen.is_none() || rec.left_frozen != self.frozen_vmm(vm) {
            return Ok(());
        }
        let Some(mut process) = self.vms.get(vm).and_then(|e| e.record.process.clone()) else {
            return Ok(());
        };
        process.left_frozen = true;
        self.apply(vm, super::Change::Process(Some(process)))
    }

    /// Whether a snapshot left `vm`'s guest frozen in the VMM process it runs now, so that
    /// its resume must thaw it (see [`SnapshotRecord::left_frozen`]; a removed snapshot's
    /// marker is on the process record).
    pub(super) fn left_frozen(&self, vm: &str) -> bool {
        if self.frozen_process(vm).is_some() {
            return true;
        }
        let Some(now) = self.frozen_vmm(vm) else {
            return false;
        };
        self.snapshots
            .values()
            .any(|r| r.source_vm == vm && r.left_frozen == Some(now))
    }

    /// The VMs restored from snapshot `name` that still exist.
    pub(super) fn in_use_by(&self, name: &str) -> Vec<String> {
        self.vms
            .values()
            .filter(|e| e.record.spec.from_snapshot.as_deref() == Some(name))
            .map(|e| e.record.spec.name.clone())
            .collect()
    }

    /// The fork snapshot VM `vm` was restored from, if it was made for a fork.
    pub(super) fn internal_snapshot_of(&self, vm: &str) -> Option<String> {
        let name = self.vms.get(vm)?.record.spec.from_snapshot.clone()?;
        self.snapshots
            .get(&name)
            .is_some_and(|r| r.internal)
            .then_some(name)
    }

    pub(super) fn snapshot_info(&self, name: &str) -> Result<SnapshotInfo, SupervisorError> {
        self.snapshots
            .get(name)
            .map(|r| r.info(self.in_use_by(name)))
            .ok_or_else(|| SupervisorError::SnapshotNotFound {
                name: name.to_owned(),
            })
    }

    /// Takes snapshot `name` of `vm` under the VM's lock (see the module docs); answers it.
    pub(super) fn take_snapshot(
        &mut self,
        vm: String,
        name: String,
        leave: SnapshotLeave,
        internal: bool,
    ) -> ResponseActFuture<Self, Result<SnapshotInfo, SupervisorError>> {
        if self.settings.snapshot_dir.as_os_str().is_empty() {
            return Box::pin(ready(Err(SupervisorError::Unavailable {
                what: "This hearthd keeps no snapshots (no snapshot directory)".into(),
            })));
        }
        let snap = name.clone();
        let v = vm.clone();
        self.locked(
            &vm,
            move |act, ctx| {
                let entry = act.entry(&v)?;
                let state = entry.record.state;
                if !state.can_snapshot() {
                    return Err(SupervisorError::InvalidState {
                        name: v.clone(),
                        state,
                        op: "snapshot",
                    });
                }
                if act.snapshots.contains_key(&name) {
                    return Err(SupervisorError::Conflict {
                        message: format!("A snapshot named {name:?} already exists"),
                    });
                }
                let vmm = entry.vmm.clone().ok_or(SupervisorError::InvalidState {
                    name: v.clone(),
                    state,
                    op: "snapshot",
                })?;
                // Every VM with a process has its disk recorded (created before the boot).
                let disk = entry.record.disk.as_ref().map(|d| d.path.clone()).ok_or(
                    SupervisorError::InvalidState {
                        name: v.clone(),
                        state,
                        op: "snapshot (it has no disk of its own)",
                    },
                )?;
                let jail = act.source_jail(&v)?;
                let disk = if jail.is_some() {
                    own_disk_in_jail()
                } else {
                    disk
                };
                let source = Source {
                    disk,
                    jail,
                    process: act.frozen_vmm(&v),
                    frozen_before: state == VmState::Paused && act.left_frozen(&v),
                    name: v.clone(),
                    state,
                    vmm,
                    pid: entry.record.process.as_ref().and_then(|p| p.pid),
                    lease: entry.record.lease.clone(),
                };
                let record = SnapshotRecord {
                    name: name.clone(),
                    state: SnapshotState::Creating,
                    source_vm: v.clone(),
                    source_spec: entry.record.spec.clone(),
                    source_was: state,
                    leave,
                    dir: SnapshotRecord::dir_for(&act.settings.snapshot_dir, &name),
                    created_at_ms: now_ms(),
                    internal,
                    fc_version: String::new(),
                    cpu_template: hearth_proto::firecracker::CpuTemplate::None,
                    vcpus: entry.record.spec.vcpus,
                    mem_size_mib: u64::from(entry.record.spec.memory_mib),
                    vsock_cid: entry.record.process.as_ref().map_or(0, |p| p.vsock_cid),
                    disk_bytes: 0,
                    mem_file_bytes: 0,
                    left_frozen: None,
                    // A fork's memory lives as long as its VM: where it was configured to go.
                    mem_file: act
                        .settings
                        .fork_memory_dir
                        .as_deref()
                        .filter(|_| internal)
                        .map(|d| SnapshotRecord::mem_file_in(d, &name)),
                };
                // Refused before anything changes when the directory is not hearthd's own.
                if let Some(mem) = &record.mem_file {
                    make_mem_dir(mem)?;
                }
                // Recorded before anything is made, so a crash leaves a record to repair.
                act.apply_snapshot(SnapshotChange::Insert(record.clone()))?;
                // Its own, stopped with the saga (as a restore's): it freezes and thaws.
                let guest = quiesce::Guest::start(&ctx.address().recipient(), &act.log);
                Ok(take(act.ports(ctx), record, source, guest).boxed_local())
            },
            move |act| act.snapshot_info(&snap),
        )
    }
}

/// The snapshot saga proper; the record is already `creating`.
async fn take(
    p: Ports,
    mut rec: SnapshotRecord,
    src: Source,
    guest: quiesce::Guest,
) -> Result<(), SupervisorError> {
    let started = Instant::now();
    let was_paused = src.state == VmState::Paused;
    // Flushed and frozen before the pause; thawed once the VM runs again, whatever happens.
    let quiesced = quiesce::freeze(&p, &guest, &src.name, src.state).await;
    p.observe("snapshot:freeze", started.elapsed()).await;
    let mut moved = false;
    if let Err(e) = capture(&p, &mut rec, &src, quiesced.detail(), &mut moved).await {
        warn!(p.log, "snapshot failed, undoing"; "snapshot" => &rec.name, "vm" => &src.name,
            "error" => %e);
        // A guest left paused cannot thaw (its agent does at its deadline).
        if undo(&p, &rec, &src, moved).await {
            quiesce::thaw(&p, &guest, &src.name, &quiesced).await;
        }
        return Err(e);
    }
    rec.state = SnapshotState::Ready;
    if rec.leave == SnapshotLeave::Paused && quiesced == quiesce::Quiesced::Frozen {
        // Recorded with `ready` (one write): nothing can thaw it until it is resumed.
        rec.left_frozen = src.process;
    }
    commit(&p, SnapshotChange::Put(rec.clone())).await?;
    p.observe("snapshot:total", started.elapsed()).await;
    info!(p.log, "snapshot taken"; "snapshot" => &rec.name, "vm" => &src.name,
        "ms" => started.elapsed().as_secs_f64() * 1e3, "memory_bytes" => rec.mem_file_bytes,
        "disk_bytes" => rec.disk_bytes);
    // The snapshot is complete: a failure from here on leaves it, and the VM as it is.
    match rec.leave {
        SnapshotLeave::Paused => Ok(()),
        SnapshotLeave::Running => {
            let state = if was_paused {
                VmState::Running
            } else {
                src.state
            };
            let resumed =
                super::pause::resume(&p, &src.name, &src.vmm, state, EventReason::Snapshot).await;
            if src.frozen_before && resumed.is_ok() {
                // Paused and frozen by an earlier snapshot: this resume is the one to thaw.
                quiesce::thaw_left_frozen(&p, &guest, &src.name).await;
            } else {
                quiesce::thaw(&p, &guest, &src.name, &quiesced).await;
            }
            resumed
        }
        SnapshotLeave::Stopped => {
            super::pause::resume_before_stop(&p, &src.name, Some(&src.vmm)).await;
            saga::stop(
                p.clone(),
                src.name.clone(),
                Some(src.vmm.clone()),
                src.pid,
                src.lease.clone(),
                false,
                VmState::Paused,
            )
            .await
        }
    }
}

/// Pause, directory, disk checkpoint, VMM snapshot on the checkpoint; fills in what the
/// snapshot was taken with. `moved` says whether the root drive may be off the VM's own disk.
async fn capture(
    p: &Ports,
    rec: &mut SnapshotRecord,
    src: &Source,
    detail: Option<String>,
    moved: &mut bool,
) -> Result<(), SupervisorError> {
    let mut lap = Instant::now();
    if src.state != VmState::Paused {
        super::pause::pause(
            p,
            &src.name,
            &src.vmm,
            src.state,
            EventReason::Snapshot,
            detail,
        )
        .await?;
    }
    p.observe("snapshot:pause", lap.elapsed()).await;
    lap = Instant::now();
    std::fs::create_dir_all(&rec.dir).map_err(files_error("create", &rec.dir))?;
    if rec.mem_file.is_some() {
        // Checked again right before the write: the directory may have changed meanwhile.
        make_mem_dir(&rec.mem_path())?;
    }
    rec.disk_bytes = p
        .deps
        .snapshot
        .send(CheckpointDisk {
            vm: src.name.clone(),
            dest: rec.disk_path(),
        })
        .await
        .map_err(|e| SupervisorError::step("disk checkpoint", e))?
        .map_err(|e| SupervisorError::step("disk checkpoint", e))?;
    p.observe("snapshot:disk", lap.elapsed()).await;
    lap = Instant::now();
    // Jailed, the VMM sees only its jail: the checkpoint is lent into it, the files written
    // there and taken out below.
    let (disk, state, mem) = match &src.jail {
        None => (rec.disk_path(), rec.state_path(), rec.mem_path()),
        Some(j) => (
            j.jails
                .lend(
                    &j.layout,
                    &rec.disk_path(),
                    &SourceJail::disk_name(&rec.name),
                    (j.uid, j.uid),
                )
                .map_err(jail_error)?,
            Path::new("/").join(SourceJail::state_name(&rec.name)),
            Path::new("/").join(SourceJail::mem_name(&rec.name)),
        ),
    };
    // The state must name the checkpoint, not the VM's own disk (see the module docs).
    *moved = true;
    move_root_drive(&src.vmm, &disk).await?;
    let info = src
        .vmm
        .send(CreateVmSnapshot {
            snapshot_path: state,
            mem_path: mem,
        })
        .await
        .map_err(|e| SupervisorError::step("VMM snapshot", e))?
        .map_err(|e| SupervisorError::step("VMM snapshot", e))?;
    move_root_drive(&src.vmm, &src.disk).await?;
    *moved = false;
    if let Some(j) = &src.jail {
        let (jails, l, n) = (&j.jails, &j.layout, &rec.name);
        jails
            .take_out(l, &SourceJail::state_name(n), &rec.state_path())
            .and_then(|()| jails.take_out(l, &SourceJail::mem_name(n), &rec.mem_path()))
            .and_then(|()| jails.unlend(l, &rec.disk_path(), &SourceJail::disk_name(n)))
            .map_err(jail_error)?;
    }
    p.observe("snapshot:vmm", lap.elapsed()).await;
    p.observe("snapshot:firecracker", info.create).await;
    rec.fc_version = info.compat.fc_version;
    rec.cpu_template = info.compat.cpu_template;
    rec.vcpus = info.vcpus;
    rec.mem_size_mib = info.mem_size_mib;
    rec.mem_file_bytes = allocated(&rec.mem_path());
    Ok(())
}

/// Undoes a snapshot that did not complete: the source back on its own disk and running as it
/// was, files and record gone. Answers whether the source runs again. If its drive cannot be
/// moved back it is left paused on the checkpoint, which stays with the `creating` record (so
/// `Open` can move the drive back): removing it would leave the VM writing to a deleted file.
async fn undo(p: &Ports, rec: &SnapshotRecord, src: &Source, moved: bool) -> bool {
    if moved {
        if let Err(e) = move_root_drive(&src.vmm, &src.disk).await {
            warn!(p.log, "VM left paused: its root drive is not back on its own disk";
                "vm" => &src.name, "disk" => %src.disk.display(), "error" => %e);
            return false;
        }
    }
    let mut running = false;
    if src.state != VmState::Paused {
        match super::pause::resume(p, &src.name, &src.vmm, src.state, EventReason::Snapshot).await {
            Ok(()) => running = true,
            Err(e) => warn!(p.log, "VM not resumed after a failed snapshot"; "vm" => &src.name,
                "error" => %e),
        }
    }
    undo_files(p, rec, src).await;
    running
}

/// The files and record of a snapshot undone while its source is on its own disk.
async fn undo_files(p: &Ports, rec: &SnapshotRecord, src: &Source) {
    if let Some(j) = src.jail.as_ref() {
        if let Err(e) = clear_jail(j, rec) {
            warn!(p.log, "snapshot files left in the jail"; "snapshot" => &rec.name,
                "error" => %e);
            return;
        }
    }
    if let Err(e) = remove_files(rec) {
        warn!(p.log, "snapshot files not removed"; "snapshot" => &rec.name, "error" => %e);
        return;
    }
    if let Err(e) = commit(p, SnapshotChange::Remove(rec.name.clone())).await {
        warn!(p.log, "snapshot record not removed"; "snapshot" => &rec.name, "error" => %e);
    }
}

fn jail_error(e: crate::host::jails::JailError) -> SupervisorError {
    SupervisorError::step(
        "snapshot files in the jail",
        crate::firecracker::FirecrackerError::Jail { source: e },
    )
}

/// Removes what a snapshot put in its source's jail (half-written state and memory files, the
/// lent checkpoint); done already is fine. Only once the drive is off the checkpoint.
fn clear_jail(j: &SourceJail, rec: &SnapshotRecord) -> Result<(), SupervisorError> {
    clear_jail_of(j, &rec.name, &rec.disk_path())
}

/// [`clear_jail`] for snapshot `n` whose checkpoint is `checkpoint`.
fn clear_jail_of(j: &SourceJail, n: &str, checkpoint: &Path) -> Result<(), SupervisorError> {
    let (jails, l) = (&j.jails, &j.layout);
    jails
        .discard(l, &SourceJail::state_name(n))
        .and_then(|()| jails.discard(l, &SourceJail::mem_name(n)))
        .and_then(|()| jails.unlend(l, checkpoint, &SourceJail::disk_name(n)))
        .map_err(jail_error)
}

pub(super) async fn commit(p: &Ports, change: SnapshotChange) -> Result<(), SupervisorError> {
    p.me.send(CommitSnapshot { change })
        .await
        .map_err(|e| SupervisorError::step("record snapshot", e))?
}

impl Handler<CreateSnapshot> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<SnapshotInfo, SupervisorError>>;

    fn handle(&mut self, msg: CreateSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        let key = msg.idempotency;
        let replay = self
            .check_open()
            .and_then(|()| msg.spec.validate().map_err(SupervisorError::from))
            .and_then(|()| self.idempotent_replay_as::<SnapshotInfo>(key.as_ref()));
        match replay {
            Err(e) => return Box::pin(ready(Err(e))),
            // The first answer again, not a second snapshot (nor "name taken").
            Ok(Some(info)) => return Box::pin(ready(Ok(info))),
            Ok(None) => {}
        }
        Box::pin(
            self.take_snapshot(msg.vm, msg.spec.name, msg.spec.leave, false)
                .map(move |res, act, _| {
                    if res.is_err() {
                        act.count_error("snapshot");
                    }
                    act.idempotent_store_as(key, &res);
                    res
                }),
        )
    }
}

impl Handler<ListSnapshots> for VmSupervisor {
    type Result = actix::MessageResult<ListSnapshots>;

    fn handle(&mut self, _msg: ListSnapshots, _ctx: &mut Context<Self>) -> Self::Result {
        actix::MessageResult(
            self.snapshots
                .values()
                .map(|r| r.info(self.in_use_by(&r.name)))
                .collect(),
        )
    }
}

impl Handler<GetSnapshot> for VmSupervisor {
    type Result = Result<SnapshotInfo, SupervisorError>;

    fn handle(&mut self, msg: GetSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        self.snapshot_info(&msg.name)
    }
}

impl VmSupervisor {
    /// Checks snapshot `name` can be removed (not being made, no VM restored from it) and
    /// records it `deleting`, keeping its thaw marker with its source (see
    /// [`Self::left_frozen`]). Answers the record as marked.
    pub(super) fn mark_deleting(&mut self, name: &str) -> Result<SnapshotRecord, SupervisorError> {
        let mut rec =
            self.snapshots
                .get(name)
                .cloned()
                .ok_or_else(|| SupervisorError::SnapshotNotFound {
                    name: name.to_owned(),
                })?;
        let users = self.in_use_by(name);
        if rec.state == SnapshotState::Creating || !users.is_empty() {
            return Err(SupervisorError::SnapshotInUse {
                name: name.to_owned(),
                vms: users,
            });
        }
        // Stored before the record says `deleting`: a crash after it keeps the marker.
        self.keep_thaw_marker(&rec)?;
        rec.state = SnapshotState::Deleting;
        rec.left_frozen = None;
        self.apply_snapshot(SnapshotChange::Put(rec.clone()))?;
        Ok(rec)
    }
}

impl Handler<DeleteSnapshot> for VmSupervisor {
    type Result = ResponseActFuture<Self, Result<(), SupervisorError>>;

    fn handle(&mut self, msg: DeleteSnapshot, ctx: &mut Context<Self>) -> Self::Result {
        // Checked and marked in the mailbox: a restore (which needs `ready`) cannot slip in.
        let marked = self.mark_deleting(&msg.name);
        let rec = match marked {
            Ok(rec) => rec,
            Err(e) => return Box::pin(ready(Err(e))),
        };
        let p = self.ports(ctx);
        Box::pin(
            async move {
                // Left `deleting` on failure: a retry (or the next `Open`) finishes it.
                remove_files(&rec)?;
                commit(&p, SnapshotChange::Remove(rec.name.clone())).await?;
                info!(p.log, "snapshot removed"; "snapshot" => &rec.name);
                Ok(())
            }
            .into_actor(self),
        )
    }
}

impl Handler<CommitSnapshot> for VmSupervisor {
    type Result = Result<(), SupervisorError>;

    fn handle(&mut self, msg: CommitSnapshot, _ctx: &mut Context<Self>) -> Self::Result {
        self.apply_snapshot(msg.change)
    }
}

/// What `Open` did about snapshots.
#[derive(Debug, Default)]
pub(super) struct SnapshotRepairs {
    pub repaired: Vec<String>,
    pub swept: Vec<String>,
}

impl VmSupervisor {
    /// After the VMs are reconciled: snapshots a crash left `creating` are undone (their
    /// source resumed if it ran before and is still paused, their files and record removed),
    /// those left `deleting` are finished, a fork's snapshot no VM uses (the fork was cut
    /// short before its VM was recorded) is removed, and directories under the snapshot
    /// directory that no record names are removed.
    pub(super) fn repair_snapshots(
        &mut self,
        ctx: &mut Context<Self>,
    ) -> futures::future::LocalBoxFuture<'static, SnapshotRepairs> {
        let mem_dir_ok = self.mem_dir_trusted();
        let lost = if mem_dir_ok {
            self.mark_lost_snapshots()
        } else {
            Vec::new()
        };
        let p = self.ports(ctx);
        let mut work = Vec::new();
        for rec in self.snapshots.values() {
            // A fork cut short between its snapshot and its restore left a snapshot only it
            // would have used: it goes too.
            let orphan_fork = rec.internal && self.in_use_by(&rec.name).is_empty();
            let complete = matches!(rec.state, SnapshotState::Ready | SnapshotState::Lost);
            if complete && !orphan_fork {
                continue;
            }
            // Its drive may have been left on the checkpoint: moved back first, paused or not.
            let source = (rec.state == SnapshotState::Creating)
                .then(|| self.vms.get(&rec.source_vm))
                .flatten()
                .and_then(|e| Some((e.vmm.clone()?, e.record.disk.as_ref()?.path.clone(), e)));
            // Jailed, its VMM opens its own disk in its jail, where the snapshot's files are.
            let jail = match source.as_ref() {
                Some(_) => self.source_jail(&rec.source_vm).unwrap_or_else(|e| {
                    warn!(self.log, "jail of an interrupted snapshot's VM unknown";
                        "vm" => &rec.source_vm, "error" => %e);
                    None
                }),
                None => None,
            };
            let drive_back = source.as_ref().map(|(vmm, disk, _)| {
                let disk = if jail.is_some() {
                    own_disk_in_jail()
                } else {
                    disk.clone()
                };
                (vmm.clone(), disk, jail.clone())
            });
            let resume = source
                .filter(|(_, _, e)| {
                    rec.source_was != VmState::Paused && e.record.state == VmState::Paused
                })
                .map(|(vmm, _, _)| (vmm, rec.source_was));
            work.push((rec.clone(), drive_back, resume));
        }
        let known: Vec<String> = self.snapshots.keys().cloned().collect();
        let base = self.settings.snapshot_dir.clone();
        let mem_base = self.settings.fork_memory_dir.clone().filter(|_| mem_dir_ok);
        async move {
            let mut out = SnapshotRepairs {
                repaired: lost,
                ..SnapshotRepairs::default()
            };
            for (rec, drive_back, mut resume) in work {
                // A drive that cannot be moved back keeps the VM paused on the checkpoint,
                // and the checkpoint with its record (the next Open tries again).
                let mut keep = false;
                if let Some((vmm, disk, jail)) = drive_back {
                    if let Err(e) = move_root_drive(&vmm, &disk).await {
                        warn!(p.log, "VM left paused: its root drive is not back on its own disk";
                            "vm" => &rec.source_vm, "error" => %e);
                        resume = None;
                        keep = true;
                    } else if let Some(j) = jail {
                        if let Err(e) = clear_jail(&j, &rec) {
                            warn!(p.log, "snapshot files left in the jail";
                                "snapshot" => &rec.name, "error" => %e);
                            keep = true;
                        }
                    }
                }
                if let Some((vmm, was)) = resume {
                    let state = if was == VmState::Unready {
                        was
                    } else {
                        VmState::Running
                    };
                    if let Err(e) =
                        super::pause::resume(&p, &rec.source_vm, &vmm, state, EventReason::Restart)
                            .await
                    {
                        warn!(p.log, "VM paused by an interrupted snapshot not resumed";
                            "vm" => &rec.source_vm, "error" => %e);
                    }
                }
                if keep {
                    continue;
                }
                let removed = remove_files(&rec);
                match removed {
                    Ok(()) => match commit(&p, SnapshotChange::Remove(rec.name.clone())).await {
                        Ok(()) => out.repaired.push(format!("snapshot {}", rec.name)),
                        Err(e) => warn!(p.log, "snapshot record not removed";
                            "snapshot" => &rec.name, "error" => %e),
                    },
                    Err(e) => warn!(p.log, "snapshot files not removed";
                        "snapshot" => &rec.name, "error" => %e),
                }
            }
            out.swept = sweep_dirs(&p, &base, &known);
            if let Some(mem_base) = mem_base {
                out.swept.extend(sweep_mem_files(&p, &mem_base, &known));
            }
            out
        }
        .boxed_local()
    }
}

impl VmSupervisor {
    /// Whether the fork memory directory (if set) is hearthd's own, or missing: nothing in
    /// one that is not is trusted at `Open` (no snapshot marked lost, no file swept).
    fn mem_dir_trusted(&self) -> bool {
        let Some(dir) = self.settings.fork_memory_dir.as_deref() else {
            return true;
        };
        super::fork_mem_dir::check(dir).map_or_else(
            |e| {
                warn!(self.log, "fork memory directory not used: lost snapshots not marked, \
                    leaked memory files not swept"; "error" => %e);
                false
            },
            |_| true,
        )
    }

    /// Marks `lost` each `ready` snapshot whose memory file, kept outside its directory (in
    /// RAM: a fork's), is gone (the host rebooted), with an event on the VMs restored from it
    /// (or its source): it cannot be restored any more, only removed. Answers what it marked.
    /// A missing file is taken for a reboot without asking the boot id: a directory on a
    /// mount not made yet loses its snapshots too (the README says to mount it first).
    fn mark_lost_snapshots(&mut self) -> Vec<String> {
        let lost: Vec<SnapshotRecord> = self
            .snapshots
            .values()
            .filter(|r| r.state == SnapshotState::Ready && r.mem_file_missing())
            .cloned()
            .collect();
        let mut marked = Vec::new();
        for mut rec in lost {
            rec.state = SnapshotState::Lost;
            if let Err(e) = self.apply_snapshot(SnapshotChange::Put(rec.clone())) {
                warn!(self.log, "lost snapshot not marked"; "snapshot" => &rec.name,
                    "error" => %e);
                continue;
            }
            let detail = lost_detail(&rec);
            warn!(self.log, "snapshot lost its memory file"; "snapshot" => &rec.name,
                "memory" => %rec.mem_path().display());
            let mut told = self.in_use_by(&rec.name);
            if told.is_empty() && self.vms.contains_key(&rec.source_vm) {
                told.push(rec.source_vm.clone());
            }
            for vm in told {
                if let Some(state) = self.vms.get(&vm).map(|e| e.record.state) {
                    // About its snapshot (not a restart of the VM, whose state is unchanged).
                    self.publish(&vm, state, EventReason::Snapshot, Some(&detail));
                }
            }
            marked.push(format!("snapshot {} (lost)", rec.name));
        }
        marked
    }
}

/// Why snapshot `rec` is `lost`, for events and refused restores.
pub(super) fn lost_detail(rec: &SnapshotRecord) -> String {
    format!(
        "Snapshot {:?} lost its memory file {} (kept in RAM, gone after a host reboot): it \
         cannot be restored, only removed; a VM forked from it starts cold from its own disk",
        rec.name,
        rec.mem_path().display()
    )
}

/// Removes memory files under `base` (the fork memory directory) that no snapshot record
/// names (made, then the record lost). Only regular files named as hearth names them,
/// `<vm>.fork.memory` with a valid VM name: nothing else there is known to be hearth's.
fn sweep_mem_files(p: &Ports, base: &Path, known: &[String]) -> Vec<String> {
    let entries = match std::fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!(p.log, "cannot list fork memory files"; "dir" => %base.display(),
                "error" => %e);
            return Vec::new();
        }
    };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(vm) = file
            .strip_suffix(MEM_FILE_SUFFIX)
            .and_then(|n| n.strip_suffix(".fork"))
        else {
            continue;
        };
        if hearth_proto::api::validate_vm_name(vm).is_err() {
            continue;
        }
        let name = format!("{vm}.fork");
        if known.contains(&name) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => swept.push(format!("snapshot memory {name}")),
            Err(e) => warn!(p.log, "leaked snapshot memory left";
                "file" => %entry.path().display(), "error" => %e),
        }
    }
    swept
}

/// Removes directories under `base` that no snapshot record names (made, then the record
/// lost: e.g. a store restored from a backup).
fn sweep_dirs(p: &Ports, base: &Path, known: &[String]) -> Vec<String> {
    if base.as_os_str().is_empty() {
        return Vec::new();
    }
    let entries = match std::fs::read_dir(base) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!(p.log, "cannot list snapshots"; "dir" => %base.display(), "error" => %e);
            return Vec::new();
        }
    };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if known.contains(&name) {
            continue;
        }
        let path: PathBuf = entry.path();
        match remove_dir(&path) {
            Ok(()) => swept.push(format!("snapshot files {name}")),
            Err(e) => warn!(p.log, "leaked snapshot files left"; "dir" => %path.display(),
                "error" => %e),
        }
    }
    swept
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::firecracker::jailer::JailLayout;
    use crate::host::jails::{FakeJails, Jails};

    fn process(pid: u32) -> super::super::VmmProcessRecord {
        super::super::VmmProcessRecord {
            pid: Some(pid),
            start_time: Some(99),
            api_socket: "/run/a/api.sock".into(),
            binary: "/usr/bin/firecracker".into(),
            vsock_cid: 3,
            left_frozen: false,
        }
    }

    fn frozen_snapshot(name: &str, pid: u32) -> SnapshotRecord {
        let spec: hearth_proto::api::CreateVm =
            serde_json::from_value(serde_json::json!({"name": "a", "kernel": "k", "rootfs": "r"}))
                .unwrap();
        SnapshotRecord {
            name: name.into(),
            state: SnapshotState::Ready,
            source_vm: "a".into(),
            source_spec: spec,
            source_was: VmState::Running,
            leave: SnapshotLeave::Paused,
            dir: std::env::temp_dir()
                .join("hearth-no-such-snapshot")
                .join(name),
            created_at_ms: 1,
            internal: false,
            fc_version: "1.17.0".into(),
            cpu_template: hearth_proto::firecracker::CpuTemplate::None,
            vcpus: 1,
            mem_size_mib: 128,
            vsock_cid: 3,
            disk_bytes: 0,
            mem_file_bytes: 0,
            left_frozen: Some(FrozenVmm {
                pid,
                start_time: 99,
            }),
            mem_file: None,
        }
    }

    /// A snapshot that left VM `a` paused and frozen, then removed before `a` is resumed:
    /// the resume must still thaw (the marker moves to `a`'s process record, in the store
    /// too), once; a stale marker (an earlier process's) moves nowhere.
    #[actix::test]
    async fn removing_the_snapshot_that_left_a_vm_frozen_keeps_its_thaw() {
        use super::super::{testing, Change, MemoryVmStore, SupervisorSettings};
        let mut sup = testing::unstarted(MemoryVmStore::default(), SupervisorSettings::default());
        let spec = frozen_snapshot("s1", 7).source_spec;
        sup.apply("a", Change::Insert(Box::new(spec))).unwrap();
        sup.apply("a", Change::Process(Some(process(7)))).unwrap();
        for (name, pid) in [("s1", 7), ("old", 6)] {
            sup.apply_snapshot(SnapshotChange::Insert(frozen_snapshot(name, pid)))
                .unwrap();
        }
        assert!(sup.left_frozen("a"));

        // The stale marker first: nothing to keep.
        sup.mark_deleting("old").unwrap();
        sup.apply_snapshot(SnapshotChange::Remove("old".into()))
            .unwrap();
        assert!(!sup.vms["a"].record.process.as_ref().unwrap().left_frozen);

        let marked = sup.mark_deleting("s1").unwrap();
        assert_eq!(marked.left_frozen, None, "the marker left the record");
        sup.apply_snapshot(SnapshotChange::Remove("s1".into()))
            .unwrap();
        assert!(sup.snapshots.is_empty());
        assert!(sup.left_frozen("a"), "the resume still thaws");
        let stored = sup.store.load_all().unwrap();
        assert!(stored[0].process.as_ref().unwrap().left_frozen);

        // The resume's thaw clears it: a later resume thaws nothing.
        sup.apply_snapshot(SnapshotChange::Thawed("a".into()))
            .unwrap();
        assert!(!sup.left_frozen("a"));
        let stored = sup.store.load_all().unwrap();
        assert!(!stored[0].process.as_ref().unwrap().left_frozen);
    }

    /// The undo's jail clean-up takes the lent checkpoint back and removes the half-written
    /// files; a failing step answers an error (the undo then keeps the record, so `Open`
    /// retries) and leaves the checkpoint lent rather than pretend it is back.
    #[test]
    fn clearing_the_jail_takes_everything_back_or_says_it_did_not() {
        let fake = Arc::new(FakeJails::new());
        let layout = JailLayout::new(
            Path::new("/tmp/j"),
            Path::new("/usr/bin/firecracker"),
            "900001",
        )
        .unwrap();
        let j = SourceJail {
            jails: fake.clone(),
            layout: layout.clone(),
            uid: 900_001,
        };
        let checkpoint = Path::new("/data/snapshots/s/disk.img");
        let lend = || {
            fake.lend(
                &layout,
                checkpoint,
                &SourceJail::disk_name("s"),
                (900_001, 900_001),
            )
            .unwrap()
        };
        assert_eq!(lend(), Path::new("/snapshot-s.disk"));
        fake.fail_next("discard");
        assert!(clear_jail_of(&j, "s", checkpoint).is_err());
        assert_eq!(fake.files_in("900001"), ["snapshot-s.disk"]);
        clear_jail_of(&j, "s", checkpoint).unwrap();
        assert!(fake.files_in("900001").is_empty());
        let calls = fake.calls();
        assert!(
            calls.ends_with(&[
                "discard 900001 snapshot-s.vmstate".to_string(),
                "discard 900001 snapshot-s.memory".to_string(),
                "unlend 900001 snapshot-s.disk".to_string(),
            ]),
            "{calls:?}"
        );
        // Done already: nothing to do is fine.
        clear_jail_of(&j, "s", checkpoint).unwrap();
        lend();
        fake.fail_next("unlend");
        assert!(clear_jail_of(&j, "s", checkpoint).is_err());
        assert_eq!(fake.files_in("900001"), ["snapshot-s.disk"]);
    }
}
