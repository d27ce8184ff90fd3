//! Recording fakes for unit tests: [`FakeDisks`] (a whole backend, for the actor) and
//! [`FakeBlock`] (loop + device-mapper, for [`super::dm::DmDisks`]). Both keep the state the
//! kernel would, record every call, and fail a chosen call on request.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::block::{BlockOps, LoopDev};
use super::layout::check_vm_name;
use super::table::{DevNum, TargetLine, DM_PREFIX};
use super::{check_sizes, BackendKind, DiskEntry, DiskSpec, DiskState, Disks, DisksError, VmDisk};

/// Fails the `n`th call (1-based) of one operation.
#[derive(Debug, Default)]
struct Injector {
    fail: Option<(&'static str, usize)>,
    counts: HashMap<&'static str, usize>,
}

impl Injector {
    fn check(&mut self, op: &'static str) -> Result<(), DisksError> {
        let n = self.counts.entry(op).or_default();
        *n += 1;
        match self.fail {
            Some((f, nth)) if f == op && nth == *n => Err(DisksError::Injected { op }),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone)]
struct FakeLoop {
    dev: LoopDev,
    file: PathBuf,
    read_only: bool,
}

/// In-memory loop devices and dm devices.
#[derive(Debug, Default)]
pub struct FakeBlock {
    /// Every call, in order (`attach_loop <file> ro`, `dm_create <name>`, ...).
    pub calls: Vec<String>,
    loops: Vec<FakeLoop>,
    dms: BTreeMap<String, (DevNum, Vec<TargetLine>)>,
    attaches: HashMap<PathBuf, usize>,
    next_minor: u32,
    inject: Injector,
}

impl FakeBlock {
    /// Makes the first call of `op` (a [`BlockOps`] method name) fail.
    pub fn fail_on(&mut self, op: &'static str) {
        self.fail_on_nth(op, 1);
    }

    /// Makes the `n`th call (1-based) of `op` fail.
    pub fn fail_on_nth(&mut self, op: &'static str, n: usize) {
        self.inject.fail = Some((op, n));
    }

    /// The loop devices attached to `file`, with their read-only flag.
    pub fn loops_of(&self, file: &Path) -> Vec<(LoopDev, bool)> {
        self.loops
            .iter()
            .filter(|l| l.file == file)
            .map(|l| (l.dev.clone(), l.read_only))
            .collect()
    }

    /// How many times `file` was attached.
    pub fn attach_count(&self, file: &Path) -> usize {
        self.attaches.get(file).copied().unwrap_or(0)
    }

    /// The table of dm device `name`.
    pub fn table(&self, name: &str) -> Option<Vec<TargetLine>> {
        self.dms.get(name).map(|(_, t)| t.clone())
    }

    /// The device number of dm device `name`.
    pub fn dev_of(&self, name: &str) -> Option<DevNum> {
        self.dms.get(name).map(|(d, _)| *d)
    }

    /// True when no loop or dm device exists.
    pub fn is_empty(&self) -> bool {
        self.loops.is_empty() && self.dms.is_empty()
    }
}

impl BlockOps for FakeBlock {
    fn attach_loop(&mut self, file: &Path, read_only: bool) -> Result<LoopDev, DisksError> {
        self.calls.push(format!(
            "attach_loop {} {}",
            file.display(),
            if read_only { "ro" } else { "rw" }
        ));
        self.inject.check("attach_loop")?;
        self.next_minor += 1;
        let dev = LoopDev {
            path: PathBuf::from(format!("/dev/loop{}", self.next_minor)),
            dev: DevNum {
                major: 7,
                minor: self.next_minor,
            },
            read_only,
        };
        *self.attaches.entry(file.into()).or_default() += 1;
        self.loops.push(FakeLoop {
            dev: dev.clone(),
            file: file.into(),
            read_only,
        });
        Ok(dev)
    }

    fn detach_loop(&mut self, dev: &LoopDev) -> Result<(), DisksError> {
        self.calls
            .push(format!("detach_loop {}", dev.path.display()));
        self.inject.check("detach_loop")?;
        self.loops.retain(|l| l.dev != *dev);
        Ok(())
    }

    fn find_loops(&mut self, file: &Path) -> Result<Vec<LoopDev>, DisksError> {
        self.inject.check("find_loops")?;
        Ok(self.loops_of(file).into_iter().map(|(d, _)| d).collect())
    }

    fn dm_create(&mut self, name: &str, table: &[TargetLine]) -> Result<DevNum, DisksError> {
        self.calls.push(format!("dm_create {name}"));
        self.inject.check("dm_create")?;
        if self.dms.contains_key(name) {
            return Err(DisksError::Dm {
                op: "create",
                name: name.into(),
                message: "EBUSY: exists".into(),
            });
        }
        self.next_minor += 1;
        let dev = DevNum {
            major: 253,
            minor: self.next_minor,
        };
        self.dms.insert(name.into(), (dev, table.to_vec()));
        Ok(dev)
    }

    fn dm_remove(&mut self, name: &str) -> Result<bool, DisksError> {
        self.calls.push(format!("dm_remove {name}"));
        self.inject.check("dm_remove")?;
        Ok(self.dms.remove(name).is_some())
    }

    fn dm_list(&mut self) -> Result<Vec<(String, DevNum)>, DisksError> {
        self.inject.check("dm_list")?;
        Ok(self
            .dms
            .iter()
            .filter(|(n, _)| n.starts_with(DM_PREFIX))
            .map(|(n, (d, _))| (n.clone(), *d))
            .collect())
    }
}

/// State shared by the clones of a [`FakeDisks`].
#[derive(Debug, Default)]
pub struct FakeDisksState {
    /// Every call, in order (`create web`, `remove web`, `list`).
    pub calls: Vec<String>,
    /// The disks that exist, by VM.
    pub disks: BTreeMap<String, DiskEntry>,
    inject: Injector,
}

/// An in-memory [`Disks`]. Clones share state, so a test keeps one to inspect the backend it
/// handed to an actor.
#[derive(Debug, Clone, Default)]
pub struct FakeDisks {
    state: Arc<Mutex<FakeDisksState>>,
    /// Size of every base image, in bytes (the fake reads no file).
    pub base_size: u64,
}

impl FakeDisks {
    /// A fake whose base images are all `base_size` bytes.
    pub fn new(base_size: u64) -> Self {
        FakeDisks {
            state: Arc::default(),
            base_size,
        }
    }

    /// Runs `f` on the shared state.
    pub fn with<R>(&self, f: impl FnOnce(&mut FakeDisksState) -> R) -> R {
        f(&mut self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The calls so far.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    /// Makes the `n`th call (1-based) of `op` (`create`, `remove`, `list`) fail.
    pub fn fail_on_nth(&self, op: &'static str, n: usize) {
        self.with(|s| s.inject.fail = Some((op, n)));
    }

    /// Adds a half-made disk, as a crash would leave it.
    pub fn add_partial(&self, vm: &str) {
        self.with(|s| {
            s.disks.insert(
                vm.into(),
                DiskEntry {
                    vm: vm.into(),
                    backend: BackendKind::Copy,
                    path: None,
                    base: None,
                    size: None,
                    state: DiskState::Partial,
                },
            )
        });
    }
}

impl Disks for FakeDisks {
    fn backend(&self) -> BackendKind {
        BackendKind::Copy
    }

    fn create(&mut self, spec: &DiskSpec) -> Result<VmDisk, DisksError> {
        let base_size = self.base_size;
        self.with(|s| {
            s.calls.push(format!("create {}", spec.vm));
            s.inject.check("create")?;
            check_vm_name(&spec.vm)?;
            let size = check_sizes(&spec.base, base_size, spec.size)?;
            if s.disks.contains_key(&spec.vm) {
                return Err(DisksError::Exists {
                    vm: spec.vm.clone(),
                });
            }
            let path = PathBuf::from(format!("/fake/disks/{}.img", spec.vm));
            s.disks.insert(
                spec.vm.clone(),
                DiskEntry {
                    vm: spec.vm.clone(),
                    backend: BackendKind::Copy,
                    path: Some(path.clone()),
                    base: Some(spec.base.clone()),
                    size: Some(size),
                    state: DiskState::Ready,
                },
            );
            Ok(VmDisk {
                vm: spec.vm.clone(),
                path,
                backend: BackendKind::Copy,
                size,
            })
        })
    }

    fn remove(&mut self, vm: &str) -> Result<bool, DisksError> {
        self.with(|s| {
            s.calls.push(format!("remove {vm}"));
            s.inject.check("remove")?;
            check_vm_name(vm)?;
            Ok(s.disks.remove(vm).is_some())
        })
    }

    fn list(&mut self) -> Result<Vec<DiskEntry>, DisksError> {
        self.with(|s| {
            s.calls.push("list".into());
            s.inject.check("list")?;
            Ok(s.disks.values().cloned().collect())
        })
    }

    /// Records the call and writes `dest` as a sparse file of the disk's size (the fake's
    /// disks have no content), so what is built on the checkpoint finds a file.
    fn checkpoint(&mut self, vm: &str, dest: &Path) -> Result<u64, DisksError> {
        let size = self.with(|s| {
            s.calls.push(format!("checkpoint {vm}"));
            s.inject.check("checkpoint")?;
            s.disks
                .get(vm)
                .filter(|d| d.state == DiskState::Ready)
                .and_then(|d| d.size)
                .ok_or_else(|| DisksError::NoDisk { vm: vm.to_owned() })
        })?;
        super::layout::DisksDir::create_new(dest)?
            .set_len(size)
            .map_err(|source| DisksError::Io {
                op: "resize",
                path: dest.to_path_buf(),
                source,
            })?;
        Ok(0)
    }
}
