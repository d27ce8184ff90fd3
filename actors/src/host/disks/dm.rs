//! The `dm` disk backend: a device-mapper persistent snapshot per VM.
//!
//! Per base image, one read-only loop device, shared by every VM made from it and detached
//! when the last of them is removed (reference-counted by VM name; after a daemon restart the
//! count is rebuilt from the manifests). Per VM: a sparse COW file `<vm>.cow` sized so the guest
//! can overwrite every chunk ([`table::cow_bytes`]), on its own loop device, and the dm device
//! `hearth-<vm>` with `0 <sectors> snapshot <base> <cow> P 8`. A disk larger than its base
//! snapshots a `hearth-<vm>:origin` device instead: the base `linear`, then `zero`.
//! Firecracker gets `/dev/dm-<minor>` (devtmpfs names it; no udev needed).
//!
//! Creation undoes itself on error through [`Disks::remove`], which works from what exists
//! (manifests, dm names, loop backing files), not from memory, so it also cleans up after a crash.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::block::{dm_node, BlockOps, LoopDev};
use super::layout::{check_vm_name, DiskManifest, DisksDir, FileRole};
use super::table::{self, DevNum};
use super::{disk_sizes, BackendKind, DiskEntry, DiskSpec, DiskState, Disks, DisksError, VmDisk};

/// A base image's shared read-only loop device and the VMs using it.
#[derive(Debug)]
struct BaseLoop {
    dev: LoopDev,
    users: BTreeSet<String>,
}

/// The `dm` backend over a disks directory and some [`BlockOps`].
#[derive(Debug)]
pub struct DmDisks<B: BlockOps> {
    dir: DisksDir,
    block: B,
    log: slog::Logger,
    bases: HashMap<PathBuf, BaseLoop>,
}

impl<B: BlockOps> DmDisks<B> {
    /// The backend for disks under `dir` (which must exist).
    pub fn new(dir: &Path, block: B, log: slog::Logger) -> Self {
        DmDisks {
            dir: DisksDir::new(dir),
            block,
            log,
            bases: HashMap::new(),
        }
    }

    /// The block operations (for tests to inspect a fake).
    pub fn block(&self) -> &B {
        &self.block
    }

    /// The VMs the manifests say use `base` with this backend, other than `except`.
    fn manifest_users(&self, base: &Path, except: &str) -> Result<BTreeSet<String>, DisksError> {
        Ok(self
            .dir
            .scan()?
            .into_iter()
            .filter_map(|(vm, found)| found.manifest.map(|r| (vm, r)))
            .filter(|(vm, r)| vm != except && r.backend == BackendKind::Dm && r.base == base)
            .map(|(vm, _)| vm)
            .collect())
    }

    /// The base's loop device, attached read-only on first use, with `vm` counted as a user.
    fn acquire_base(&mut self, base: &Path, vm: &str) -> Result<DevNum, DisksError> {
        if let Some(b) = self.bases.get_mut(base) {
            b.users.insert(vm.into());
            return Ok(b.dev.dev);
        }
        // After a restart the base may still be attached (read-only) from the previous run:
        // reuse it, and count the VMs the manifests say use it.
        let attached = self.block.find_loops(base)?;
        let dev = match attached.into_iter().find(|l| l.read_only) {
            Some(dev) => dev,
            None => self.block.attach_loop(base, true)?,
        };
        let mut users = self.manifest_users(base, vm)?;
        users.insert(vm.into());
        let num = dev.dev;
        slog::debug!(self.log, "base attached"; "base" => %base.display(), "loop" => %dev.path.display());
        self.bases.insert(base.into(), BaseLoop { dev, users });
        Ok(num)
    }

    /// Drops `vm`'s use of `base`, detaching the base's loop device when no VM uses it.
    fn release_base(&mut self, base: &Path, vm: &str) -> Result<(), DisksError> {
        let last = match self.bases.get_mut(base) {
            Some(b) => {
                b.users.remove(vm);
                b.users.is_empty()
            }
            None => self.manifest_users(base, vm)?.is_empty(),
        };
        if last {
            let devs = match self.bases.remove(base) {
                Some(b) => vec![b.dev],
                None => self.block.find_loops(base)?,
            };
            for dev in devs {
                self.block.detach_loop(&dev)?;
                slog::debug!(self.log, "base detached"; "base" => %base.display());
            }
        }
        Ok(())
    }

    fn make(
        &mut self,
        vm: &str,
        base: &Path,
        size: u64,
        base_len: u64,
    ) -> Result<DevNum, DisksError> {
        let size_sectors = size / table::SECTOR;
        let base_sectors = base_len / table::SECTOR;
        let base_dev = self.acquire_base(base, vm)?;
        let cow = self.dir.path(vm, FileRole::Cow);
        DisksDir::create_new(&cow)?
            .set_len(table::cow_bytes(size))
            .map_err(|source| DisksError::Io {
                op: "resize",
                path: cow.clone(),
                source,
            })?;
        let cow_dev = self.block.attach_loop(&cow, false)?.dev;
        let origin = if size_sectors > base_sectors {
            let t = table::grown_origin_table(base_dev, base_sectors, size_sectors);
            self.block.dm_create(&table::origin_name(vm), &t)?
        } else {
            base_dev
        };
        let t = table::snapshot_table(&origin.to_string(), cow_dev, size_sectors);
        self.block.dm_create(&table::snapshot_name(vm), &t)
    }
}

impl<B: BlockOps> Disks for DmDisks<B> {
    fn backend(&self) -> BackendKind {
        BackendKind::Dm
    }

    fn create(&mut self, spec: &DiskSpec) -> Result<VmDisk, DisksError> {
        check_vm_name(&spec.vm)?;
        let (size, base_len) = disk_sizes(spec)?;
        let base = std::fs::canonicalize(&spec.base).map_err(|source| DisksError::Base {
            path: spec.base.clone(),
            source,
        })?;
        let name = table::snapshot_name(&spec.vm);
        let dm_taken = self
            .block
            .dm_list()?
            .iter()
            .any(|(n, _)| *n == name || *n == table::origin_name(&spec.vm));
        if dm_taken || self.dir.exists(&spec.vm) {
            return Err(DisksError::Exists {
                vm: spec.vm.clone(),
            });
        }
        self.dir.write(&DiskManifest {
            vm: spec.vm.clone(),
            backend: BackendKind::Dm,
            base: base.clone(),
            size,
        })?;
        match self.make(&spec.vm, &base, size, base_len) {
            Ok(dev) => Ok(VmDisk {
                vm: spec.vm.clone(),
                path: dm_node(dev),
                backend: BackendKind::Dm,
                size,
            }),
            Err(e) => {
                if let Err(undo) = self.remove(&spec.vm) {
                    slog::error!(self.log, "cannot undo half-made disk"; "vm" => &spec.vm,
                        "error" => %undo);
                }
                Err(e)
            }
        }
    }

    fn remove(&mut self, vm: &str) -> Result<bool, DisksError> {
        check_vm_name(vm)?;
        let record = self.dir.read(vm).ok().flatten();
        let mut removed = self.block.dm_remove(&table::snapshot_name(vm))?;
        removed |= self.block.dm_remove(&table::origin_name(vm))?;
        let cow = self.dir.path(vm, FileRole::Cow);
        for dev in self.block.find_loops(&cow)? {
            self.block.detach_loop(&dev)?;
            removed = true;
        }
        let base = record.map(|r| r.base).or_else(|| {
            self.bases
                .iter()
                .find(|(_, b)| b.users.contains(vm))
                .map(|(p, _)| p.clone())
        });
        if let Some(base) = base {
            self.release_base(&base, vm)?;
        }
        for role in [FileRole::Cow, FileRole::ManifestTmp, FileRole::Manifest] {
            removed |= self.dir.remove_file(vm, role)?;
        }
        Ok(removed)
    }

    fn list(&mut self) -> Result<Vec<DiskEntry>, DisksError> {
        let mut found = self.dir.scan()?;
        let mut devs: BTreeMap<String, Option<DevNum>> = BTreeMap::new();
        for (name, dev) in self.block.dm_list()? {
            let Some(vm) = table::vm_of_dm_name(&name) else {
                continue;
            };
            found.entry(vm.into()).or_default();
            let slot = devs.entry(vm.into()).or_default();
            if name == table::snapshot_name(vm) {
                *slot = Some(dev);
            }
        }
        Ok(found
            .into_iter()
            .map(|(vm, f)| {
                let dev = devs.get(&vm).copied().flatten();
                let ready =
                    f.manifest.is_some() && f.files.contains_key(&FileRole::Cow) && dev.is_some();
                DiskEntry {
                    backend: BackendKind::Dm,
                    path: dev.map(dm_node),
                    base: f.manifest.as_ref().map(|r| r.base.clone()),
                    size: f.manifest.as_ref().map(|r| r.size),
                    state: if ready {
                        DiskState::Ready
                    } else {
                        DiskState::Partial
                    },
                    vm,
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::FakeBlock;
    use super::*;

    fn log() -> slog::Logger {
        slog::Logger::root(slog::Discard, slog::o!())
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        base: PathBuf,
        disks: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.ext4");
        std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        let disks = dir.path().join("disks");
        std::fs::create_dir(&disks).unwrap();
        let base = std::fs::canonicalize(base).unwrap();
        Fixture {
            _dir: dir,
            base,
            disks,
        }
    }

    fn spec(vm: &str, base: &Path, size: Option<u64>) -> DiskSpec {
        DiskSpec {
            vm: vm.into(),
            base: base.into(),
            size,
        }
    }

    #[test]
    fn snapshot_of_shared_base_then_full_teardown() {
        let f = fixture();
        let mut d = DmDisks::new(&f.disks, FakeBlock::default(), log());
        let a = d.create(&spec("a", &f.base, None)).unwrap();
        let b = d.create(&spec("b", &f.base, None)).unwrap();
        assert_ne!(a.path, b.path);
        let block = d.block();
        // One read-only loop for the base, one read-write loop per COW.
        assert_eq!(block.loops_of(&f.base).len(), 1);
        assert!(block.loops_of(&f.base)[0].1, "base loop must be read-only");
        assert_eq!(block.attach_count(&f.base), 1, "base attached once");
        let table = block.table("hearth-a").unwrap();
        assert_eq!(table.len(), 1);
        assert_eq!(table[0].target, "snapshot");
        assert_eq!(table[0].length, 2048);
        assert!(table[0].params.ends_with(" P 8"), "{}", table[0].params);
        assert_eq!(d.list().unwrap().len(), 2);
        assert!(d
            .list()
            .unwrap()
            .iter()
            .all(|e| e.state == DiskState::Ready));

        assert!(d.remove("a").unwrap());
        assert_eq!(
            d.block().loops_of(&f.base).len(),
            1,
            "b still uses the base"
        );
        assert!(d.remove("b").unwrap());
        assert!(
            d.block().loops_of(&f.base).is_empty(),
            "last user detaches base"
        );
        assert!(d.block().is_empty(), "{:?}", d.block());
        assert!(!d.remove("b").unwrap(), "removal is idempotent");
        assert_eq!(std::fs::read_dir(&f.disks).unwrap().count(), 0);
    }

    #[test]
    fn grown_disk_uses_linear_zero_origin() {
        let f = fixture();
        let mut d = DmDisks::new(&f.disks, FakeBlock::default(), log());
        let disk = d.create(&spec("big", &f.base, Some(4 << 20))).unwrap();
        assert_eq!(disk.size, 4 << 20);
        let origin = d.block().table("hearth-big:origin").unwrap();
        let text = table::table_text(&origin);
        assert!(
            text.contains(" linear ") && text.contains("2048 6144 zero"),
            "{text}"
        );
        let snap = d.block().table("hearth-big").unwrap();
        let origin_dev = d.block().dev_of("hearth-big:origin").unwrap();
        assert!(snap[0].params.starts_with(&origin_dev.to_string()));
        assert_eq!(snap[0].length, 8192);
        let cow = std::fs::metadata(f.disks.join("big.cow")).unwrap().len();
        assert_eq!(cow, table::cow_bytes(4 << 20));
        d.remove("big").unwrap();
        assert!(d.block().is_empty());
    }

    #[test]
    fn failure_midway_undoes_everything() {
        let f = fixture();
        for op in ["attach_loop", "dm_create"] {
            let mut block = FakeBlock::default();
            block.fail_on(op);
            let mut d = DmDisks::new(&f.disks, block, log());
            let err = d.create(&spec("a", &f.base, Some(2 << 20))).unwrap_err();
            assert!(matches!(err, DisksError::Injected { .. }), "{op}: {err}");
            assert!(d.block().is_empty(), "{op}: {:?}", d.block());
            assert_eq!(std::fs::read_dir(&f.disks).unwrap().count(), 0, "{op}");
        }
    }

    #[test]
    fn second_dm_create_failure_undoes_origin() {
        let f = fixture();
        let mut block = FakeBlock::default();
        block.fail_on_nth("dm_create", 2);
        let mut d = DmDisks::new(&f.disks, block, log());
        assert!(d.create(&spec("a", &f.base, Some(2 << 20))).is_err());
        assert!(d.block().is_empty(), "{:?}", d.block());
    }

    #[test]
    fn busy_device_fails_removal_keeps_it_listed_and_a_retry_finishes() {
        let f = fixture();
        let mut d = DmDisks::new(&f.disks, FakeBlock::default(), log());
        d.create(&spec("a", &f.base, None)).unwrap();
        // Firecracker still holds the device: the (retried) remove gives up with EBUSY.
        d.block.fail_on("dm_remove");
        assert!(matches!(d.remove("a"), Err(DisksError::Injected { .. })));
        let list = d.list().unwrap();
        assert_eq!(
            list.len(),
            1,
            "a disk that could not be removed stays listed"
        );
        assert!(d.remove("a").unwrap());
        assert!(d.block().is_empty(), "{:?}", d.block());
        assert_eq!(std::fs::read_dir(&f.disks).unwrap().count(), 0);
    }

    #[test]
    fn restart_finds_and_removes_leftovers() {
        let f = fixture();
        let mut d = DmDisks::new(&f.disks, FakeBlock::default(), log());
        d.create(&spec("a", &f.base, None)).unwrap();
        d.create(&spec("b", &f.base, None)).unwrap();
        // A new backend (daemon restart) over the same kernel state.
        let mut d2 = DmDisks::new(&f.disks, d.block, log());
        let vms: Vec<_> = d2.list().unwrap().into_iter().map(|e| e.vm).collect();
        assert_eq!(vms, ["a", "b"]);
        assert!(d2.remove("a").unwrap());
        assert_eq!(
            d2.block().loops_of(&f.base).len(),
            1,
            "b still uses the base"
        );
        assert!(d2.remove("b").unwrap());
        assert!(d2.block().is_empty(), "{:?}", d2.block());
    }

    #[test]
    fn orphan_dm_device_is_listed_and_removed() {
        let f = fixture();
        let mut block = FakeBlock::default();
        block.dm_create("hearth-ghost", &[]).unwrap();
        let mut d = DmDisks::new(&f.disks, block, log());
        let list = d.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].vm, "ghost");
        assert_eq!(list[0].state, DiskState::Partial);
        assert!(matches!(
            d.create(&spec("ghost", &f.base, None)),
            Err(DisksError::Exists { .. })
        ));
        assert!(d.remove("ghost").unwrap());
        assert!(d.list().unwrap().is_empty());
    }
}
