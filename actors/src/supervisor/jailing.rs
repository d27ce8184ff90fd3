//! Jailed VMMs in the supervisor (issue 16): each VM's uid lease (taken at its first boot,
//! recorded in the store, given back when the VM is deleted or its first boot fails), the
//! [`VmJail`] its `FirecrackerActor` is made with, the jails of snapshots ([`SourceJail`]) and
//! restores ([`RestoreJail`]), and the sweep of jails no live VM uses.
//!
//! A VM's jail id is its uid, so the lease alone names its jail, cgroups and sockets; the
//! files its VMM opens are handed to the actor just before the spawn ([`SetJailFiles`]),
//! because a create makes the disk after the actor exists.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use slog::{info, warn};

use super::{Change, SnapshotRecord, SupervisorError, VmSupervisor};
use crate::firecracker::jailer::{CgroupVersion, JailLayout, JailLimits, LimitPolicy};
use crate::firecracker::warm_pool::{sweep_fifos, FIFO_DIR};
use crate::firecracker::{FirecrackerActor, RunDir, VmJail};
use crate::host::jails::{sweep, JailFile, Jails};
use crate::host::processes::Processes;

pub use crate::firecracker::jailed::SetJailFiles;

/// How every VMM of this supervisor is jailed (`VmmFactory::jail`; `None` runs them
/// unjailed, as root).
#[derive(Clone)]
pub struct JailSettings {
    /// The jailer binary.
    pub jailer: PathBuf,
    /// The host side of jails.
    pub jails: Arc<dyn Jails>,
    /// The jailer's `--chroot-base-dir`.
    pub chroot_base: PathBuf,
    /// The host's cgroup hierarchy.
    pub cgroup_version: CgroupVersion,
    /// How a VM's limits follow from its size.
    pub limits: LimitPolicy,
    /// The uids (and gids) VMs get, one each.
    pub uid_range: RangeInclusive<u32>,
    /// How many idle jailed VMMs to keep ready for creates (0: none, every create runs the
    /// jailer). Their uids come from `uid_range`.
    pub warm_pool: usize,
}

impl std::fmt::Debug for JailSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JailSettings")
            .field("jailer", &self.jailer)
            .field("chroot_base", &self.chroot_base)
            .field("uid_range", &self.uid_range)
            .field("warm_pool", &self.warm_pool)
            .finish_non_exhaustive()
    }
}

/// The names the VM's files get inside its jail.
const KERNEL_IN_JAIL: &str = "vmlinux";
const ROOTFS_IN_JAIL: &str = "rootfs";

/// The path the VMM of a jailed VM opens its own root disk at.
pub(super) fn own_disk_in_jail() -> PathBuf {
    Path::new("/").join(ROOTFS_IN_JAIL)
}

/// The jail of a VM being snapshotted: where its VMM reads the disk checkpoint and writes the
/// state and memory files (the names are the snapshot's, so a state file names its
/// checkpoint at the same in-jail path in every jail it is loaded into).
#[derive(Clone)]
pub(super) struct SourceJail {
    /// The host side of jails.
    pub jails: Arc<dyn Jails>,
    /// The source's jail.
    pub layout: JailLayout,
    /// The source's uid (and gid).
    pub uid: u32,
}

impl SourceJail {
    /// The in-jail name of snapshot `snap`'s disk checkpoint.
    pub fn disk_name(snap: &str) -> String {
        format!("snapshot-{snap}.disk")
    }

    /// The in-jail name of snapshot `snap`'s state file while the VMM writes it.
    pub fn state_name(snap: &str) -> String {
        format!("snapshot-{snap}.vmstate")
    }

    /// The in-jail name of snapshot `snap`'s memory file while the VMM writes it.
    pub fn mem_name(snap: &str) -> String {
        format!("snapshot-{snap}.memory")
    }
}

/// The files a booting VM's VMM opens, for [`SetJailFiles`]: its kernel (read-only, shared
/// by VMs) and its own disk (given to its uid).
pub(super) fn boot_files(kernel: PathBuf, disk: PathBuf) -> Vec<JailFile> {
    vec![
        JailFile {
            source: kernel,
            name: KERNEL_IN_JAIL.into(),
            writable: false,
        },
        JailFile {
            source: disk,
            name: ROOTFS_IN_JAIL.into(),
            writable: true,
        },
    ]
}

/// The jail a snapshot is restored into: a new VM's, its uid leased for it.
#[derive(Clone)]
pub(super) struct RestoreJail {
    /// The host side of jails.
    pub jails: Arc<dyn Jails>,
    /// The new VM's uid (and gid).
    pub uid: u32,
    /// Leased for this restore: given back if it fails.
    pub fresh: bool,
}

impl RestoreJail {
    /// Makes the snapshot's state and memory files readable (never writable) by the VM's uid
    /// and answers the files the restored VMM opens, for [`SetJailFiles`]: those two,
    /// read-only at the names the snapshot's VMM wrote them under, and the VM's own disk
    /// twice, as `/rootfs` and at the path the state records for the root drive
    /// (`/snapshot-<name>.disk`), so the load opens the VM's own disk, never the checkpoint
    /// other restores share. (Firecracker maps the memory file `MAP_PRIVATE`: guest writes
    /// never reach it.)
    pub fn files(
        &self,
        snap: &SnapshotRecord,
        disk: &Path,
    ) -> Result<Vec<JailFile>, SupervisorError> {
        let (state, mem) = (snap.state_path(), snap.mem_path());
        self.jails
            .share_read_only(&snap.dir, &[state.clone(), mem.clone()])
            .map_err(|e| {
                SupervisorError::step(
                    "jail",
                    crate::firecracker::FirecrackerError::Jail { source: e },
                )
            })?;
        let own = |name: String| JailFile {
            source: disk.to_path_buf(),
            name,
            writable: true,
        };
        Ok(vec![
            JailFile {
                source: state,
                name: SourceJail::state_name(&snap.name),
                writable: false,
            },
            JailFile {
                source: mem,
                name: SourceJail::mem_name(&snap.name),
                writable: false,
            },
            own(ROOTFS_IN_JAIL.into()),
            own(SourceJail::disk_name(&snap.name)),
        ])
    }
}

impl VmSupervisor {
    /// The jail of `name`'s VMM, if it runs jailed (it holds a uid and jailing is on).
    pub(super) fn source_jail(&self, name: &str) -> Result<Option<SourceJail>, SupervisorError> {
        let (Some(js), Some(uid)) = (
            &self.vmm.jail,
            self.vms.get(name).and_then(|e| e.record.uid),
        ) else {
            return Ok(None);
        };
        Ok(Some(SourceJail {
            jails: js.jails.clone(),
            layout: self.jail_layout(js, uid)?,
            uid,
        }))
    }

    /// The jail of the VM holding `uid`.
    fn jail_layout(&self, js: &JailSettings, uid: u32) -> Result<JailLayout, SupervisorError> {
        let binary = self
            .vmm
            .binary
            .as_ref()
            .ok_or_else(SupervisorError::no_firecracker_binary)?;
        JailLayout::new(&js.chroot_base, &binary.path, &JailLayout::id_for_uid(uid))
            .map_err(|e| SupervisorError::step("jail", e))
    }

    /// `actor` jailed as `name`'s recorded uid says, or as it is when the VM holds none (or
    /// jailing is off).
    pub(super) fn jail_actor(
        &mut self,
        name: &str,
        actor: FirecrackerActor,
    ) -> Result<FirecrackerActor, SupervisorError> {
        let Some(js) = &self.vmm.jail else {
            return Ok(actor);
        };
        let Some(record) = self.vms.get(name).map(|e| &e.record) else {
            return Ok(actor);
        };
        let Some(uid) = record.uid else {
            return Ok(actor);
        };
        let limits = JailLimits::for_vm(
            record.spec.vcpus,
            u64::from(record.spec.memory_mib),
            &js.limits,
        );
        let jail = VmJail::new(
            js.jailer.clone(),
            js.jails.clone(),
            self.jail_layout(js, uid)?,
            uid,
            uid,
            js.cgroup_version,
            limits,
            Vec::new(),
        );
        // A create that took a warm VMM (`warm_take`): its spawn takes it.
        let jail = match self.warm.take_handing(name) {
            Some(member) => jail.with_member(member),
            None => jail,
        };
        Ok(actor.jailed(jail))
    }

    /// Before a boot of `name` with jailing on: its uid, leased now (and recorded) if it holds
    /// none yet. Answers `None` when jailing is off, else the uid and whether it is new (a new
    /// lease is given back if the boot fails). When no uid is free, an idle warm VMM gives
    /// its up ([`VmSupervisor::warm_yield_uid`]).
    pub(super) fn lease_uid(&mut self, name: &str) -> Result<Option<(u32, bool)>, SupervisorError> {
        if self.vmm.jail.is_none() {
            return Ok(None);
        }
        let recorded = self.entry(name)?.record.uid;
        if let Some(uid) = recorded {
            if self.uids.is_quarantined(uid) {
                return Err(SupervisorError::Unavailable {
                    what: format!(
                        "Cannot jail VM {name}: a process running as its uid {uid} did not die \
                         when hearthd started (see its log); restart hearthd once it is gone"
                    ),
                });
            }
            return Ok(Some((uid, false)));
        }
        let mut acquired = self.uids.acquire(name);
        // Idle warm VMMs yield to VMs: one gives its uid up when none is free.
        if acquired.is_err() && self.warm_yield_uid() {
            acquired = self.uids.acquire(name);
        }
        let uid = acquired.map_err(|e| SupervisorError::Unavailable {
            what: format!("Cannot jail VM {name}: {e}"),
        })?;
        if let Err(e) = self.apply(name, Change::Uid(Some(uid))) {
            self.uids.release(name);
            return Err(e);
        }
        info!(self.log, "uid leased"; "vm" => name, "uid" => uid);
        Ok(Some((uid, true)))
    }

    /// The API socket of `name`'s VMM as recorded in its process record: in its jail when it
    /// holds a uid.
    pub(super) fn api_socket_of(
        &self,
        name: &str,
        uid: Option<u32>,
    ) -> Result<PathBuf, SupervisorError> {
        let dir = RunDir::new(&self.vmm.settings.run_base, name)
            .map_err(|e| SupervisorError::step("run directory", e))?;
        match (uid, &self.vmm.jail) {
            (Some(uid), Some(js)) => Ok(self.jail_layout(js, uid)?.api_socket()),
            _ => Ok(dir.api_socket()),
        }
    }

    /// At `Open`: the recorded leases back into the pool. A lease the pool refuses (the range
    /// was changed) stays recorded and is logged; the pool never hands out that uid.
    pub(super) fn restore_uids(&mut self) {
        let leases: Vec<(String, u32)> = self
            .vms
            .iter()
            .filter_map(|(n, e)| e.record.uid.map(|u| (n.clone(), u)))
            .collect();
        for (vm, uid) in leases {
            if let Err(e) = self.uids.restore(uid, &vm) {
                warn!(self.log, "recorded uid not taken back"; "vm" => &vm, "error" => %e);
            }
        }
    }

    /// After `Open`'s sweep: each uid whose process survived SIGKILL is kept out of use until
    /// the next `Open` (which looks again): never leased, and a VM that records it cannot
    /// boot ([`VmSupervisor::lease_uid`]).
    pub(super) fn quarantine_uids(&mut self, uids: &[u32]) {
        for &uid in uids {
            self.uids.quarantine(uid);
            warn!(self.log, "uid kept out of use: a process running as it did not die"; "uid" => uid);
        }
    }

    /// Checks that `snap` was taken as restores run now, jailed or not: a jailed source's
    /// state names its root drive at the in-jail path `/snapshot-<name>.disk`, an unjailed
    /// one's at the checkpoint's host path, and Firecracker's load reopens that path. Either
    /// kind restored the other way would name a file the new VMM cannot open: refused
    /// before anything is made. With jailing off, a state file that cannot be read is left
    /// to the load to report.
    pub(super) fn check_restore_jailing(
        &self,
        snap: &SnapshotRecord,
    ) -> Result<(), SupervisorError> {
        let jailed = self.vmm.jail.is_some();
        let state = snap.state_path();
        let bytes = match std::fs::read(&state) {
            Ok(b) => b,
            Err(_) if !jailed => return Ok(()),
            Err(e) => {
                return Err(SupervisorError::step(
                    "restore",
                    super::StepCause::Files {
                        what: "read",
                        path: state.clone(),
                        source: Arc::new(e),
                    },
                ))
            }
        };
        let needle = format!("/{}", SourceJail::disk_name(&snap.name));
        let taken_jailed = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        if taken_jailed == jailed {
            return Ok(());
        }
        let (taken, off_on) = if jailed {
            (
                "an unjailed VM: its state names the disk at a host path no jail holds",
                "enabled",
            )
        } else {
            (
                "a jailed VM: its state names the disk at a path inside a jail",
                "disabled",
            )
        };
        Err(SupervisorError::Conflict {
            message: format!(
                "Snapshot {:?} was taken of {taken}, so it cannot be restored with [jailer] \
                 {off_on}",
                snap.name
            ),
        })
    }

    /// Before a restore of `name` with jailing on: a fresh uid lease, as for a create
    /// (`None` when jailing is off).
    pub(super) fn restore_jail(
        &mut self,
        name: &str,
    ) -> Result<Option<RestoreJail>, SupervisorError> {
        let Some(js) = self.vmm.jail.clone() else {
            return Ok(None);
        };
        Ok(self.lease_uid(name)?.map(|(uid, fresh)| RestoreJail {
            jails: js.jails,
            uid,
            fresh,
        }))
    }

    /// What `Open`'s jail sweep needs, if jailing is on: the settings, the exec file, the
    /// process backend and the jail ids to keep (those of VMs in `alive`).
    pub(super) fn jail_sweep_plan(&self, alive: &BTreeSet<String>) -> Option<JailSweep> {
        let js = self.vmm.jail.clone()?;
        let exec = self.vmm.binary.as_ref()?.path.clone();
        let fifo_dir = self.vmm.settings.run_base.join(FIFO_DIR);
        let keep = self
            .vms
            .iter()
            .filter(|(n, _)| alive.contains(*n))
            .filter_map(|(_, e)| e.record.uid.map(JailLayout::id_for_uid))
            .collect();
        Some(JailSweep {
            js,
            exec,
            fifo_dir,
            processes: self.vmm.processes.clone(),
            keep,
        })
    }
}

/// One sweep of jails at `Open` (see [`VmSupervisor::jail_sweep_plan`]).
pub(super) struct JailSweep {
    js: JailSettings,
    exec: PathBuf,
    fifo_dir: PathBuf,
    processes: Arc<dyn Processes>,
    keep: BTreeSet<String>,
}

impl JailSweep {
    /// Kills the processes of jails no live VM uses (jailers, their children, VMMs), then
    /// removes those jails; answers what it swept and the uids of processes that would not
    /// die, for the report.
    pub(super) async fn run(self, log: &slog::Logger) -> (Vec<String>, Vec<u32>) {
        let JailSweep {
            js,
            exec,
            fifo_dir,
            processes,
            keep,
        } = self;
        // First whatever works on or runs as a jail no live VM holds: jailers mid-start at the
        // crash and VMMs without a pid file; then VMMs found through their jail's pid file.
        let exec_name = exec
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let which = sweep::JailProcesses {
            base: &js.chroot_base,
            exec_name,
            uids: js.uid_range.clone(),
        };
        let orphans =
            match sweep::kill_jail_processes(&*processes, &which, |id| keep.contains(id)).await {
                Ok(report) => report,
                Err(e) => {
                    // Nothing was killed: jails stay (the next `Open` sweeps them).
                    warn!(log, "cannot list processes: jails not swept"; "error" => %e);
                    return (Vec::new(), Vec::new());
                }
            };
        for (pid, uid) in &orphans.left {
            warn!(log, "process of a swept jail did not die: its uid stays out of use";
                "pid" => pid, "uid" => uid);
        }
        let killed = sweep::kill_strays(&*js.jails, &*processes, &js.chroot_base, &exec, |id| {
            keep.contains(id)
        })
        .await;
        let mut swept: Vec<String> = orphans
            .killed
            .iter()
            .chain(&killed)
            .map(|pid| format!("process {pid}"))
            .collect();
        match sweep::sweep(&*js.jails, &js.chroot_base, &exec, |id| keep.contains(id)) {
            Ok(r) => {
                for (id, e) in &r.failed {
                    warn!(log, "jail not removed"; "id" => id, "error" => %e);
                }
                swept.extend(r.removed.into_iter().map(|id| format!("jail {id}")));
            }
            Err(e) => warn!(log, "cannot list jails"; "error" => %e),
        }
        // The warm members' FIFOs: no member runs yet (they start after `Open`).
        match sweep_fifos(&fifo_dir) {
            Ok(r) => swept.extend(r.iter().map(|p| format!("warm FIFO {}", p.display()))),
            Err(e) => warn!(log, "warm FIFOs not swept"; "error" => %e),
        }
        let stuck = orphans.left.iter().filter_map(|(_, uid)| *uid).collect();
        (swept, stuck)
    }
}
