//! `SnapshotActor`: owns the per-VM copy-on-write root disks and the base-image devices under
//! them. The supervisor sends [`CreateDisk`] while creating a VM (and [`RemoveDisk`] as its
//! undo, or when deleting the VM); the daemon's leak sweep sends [`ListDisks`] after a restart
//! and removes the disks that belong to no VM.
//!
//! All host work goes through one [`Disks`] backend (`dm` or `copy`, see
//! [`crate::host::disks`]), called from synchronous handlers: messages are handled one at a
//! time, so loop and device-mapper operations never interleave. Handlers block on disk I/O
//! (a sparse copy of the base when reflinks are unavailable), so run the actor on its own
//! arbiter with [`SnapshotActor::start_dedicated`].
//!
//! "Snapshot" here means the device-mapper snapshot (or copy) a VM's root disk is made of.
//! Firecracker's memory snapshots (`PUT /snapshot/create`, `/snapshot/load`) are a different
//! thing and are not handled here: they belong with the VMM process, not with its disk (hearth
//! does not take them yet; when it does, `FirecrackerActor` and the supervisor's sagas will).

mod messages;

use std::collections::BTreeMap;
use std::path::Path;

use actix::{Actor, Addr, Arbiter, Context, Handler};

pub use self::messages::{CreateDisk, ListDisks, RemoveDisk};
use crate::host::disks::{
    disks_dir, open_backend, BackendChoice, BackendKind, DiskEntry, DiskSpec, Disks, DisksError,
    VmDisk,
};

/// Errors of [`SnapshotActor`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The VM already has a disk (possibly half-made): remove it first.
    #[error("VM {vm} already has a disk")]
    DiskExists {
        /// The VM.
        vm: String,
    },
    /// The request is invalid (VM name, size, base image); nothing was changed.
    #[error("Invalid disk request for VM {vm}")]
    InvalidRequest {
        /// The VM.
        vm: String,
        /// What is wrong.
        source: DisksError,
    },
    /// Making the disk failed; whatever was made has been undone.
    #[error("Cannot create the disk of VM {vm}")]
    Create {
        /// The VM.
        vm: String,
        /// Why.
        source: DisksError,
    },
    /// Removing the disk failed (it may be in use); what remains is still listed.
    #[error("Cannot remove the disk of VM {vm}")]
    Remove {
        /// The VM.
        vm: String,
        /// Why.
        source: DisksError,
    },
    /// Listing the disks on the host failed.
    #[error("Cannot list disks")]
    List {
        /// Why.
        source: DisksError,
    },
    /// The disk backend cannot be opened (e.g. `dm` configured where the kernel has none).
    #[error("Cannot open the {choice:?} disk backend")]
    Open {
        /// The configured backend.
        choice: BackendChoice,
        /// Why.
        source: DisksError,
    },
}

impl SnapshotError {
    fn from_create(vm: &str, source: DisksError) -> Self {
        let vm = vm.to_string();
        match source {
            DisksError::Exists { .. } => SnapshotError::DiskExists { vm },
            DisksError::InvalidVmName { .. }
            | DisksError::Base { .. }
            | DisksError::BaseNotSectors { .. }
            | DisksError::SizeNotSectors { .. }
            | DisksError::TooSmall { .. } => SnapshotError::InvalidRequest { vm, source },
            source => SnapshotError::Create { vm, source },
        }
    }
}

/// The actor owning the VM root disks.
pub struct SnapshotActor {
    backend: Box<dyn Disks>,
    /// The disks this actor made since it started (the host may hold more: see `ListDisks`).
    disks: BTreeMap<String, VmDisk>,
    log: slog::Logger,
}

impl SnapshotActor {
    /// An actor making disks with `backend` (see [`crate::host::disks::open_backend`]).
    pub fn new(backend: Box<dyn Disks>, log: slog::Logger) -> Self {
        let log =
            log.new(slog::o!("actor" => "snapshot", "backend" => backend.backend().to_string()));
        SnapshotActor {
            backend,
            disks: BTreeMap::new(),
            log,
        }
    }

    /// An actor with the real backend `choice` (`auto` probes device-mapper and logs its
    /// pick) keeping disks under `<data_dir>/disks/`, created if missing.
    pub fn open(
        choice: BackendChoice,
        data_dir: &Path,
        log: slog::Logger,
    ) -> Result<Self, SnapshotError> {
        let backend = open_backend(choice, &disks_dir(data_dir), &log)
            .map_err(|source| SnapshotError::Open { choice, source })?;
        Ok(Self::new(backend, log))
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        self.backend.backend()
    }

    /// Starts the actor on a new arbiter (its own thread), so its blocking disk work never
    /// stalls other actors. Must be called inside a running actix system.
    pub fn start_dedicated(self) -> Addr<Self> {
        let arbiter = Arbiter::new();
        Self::start_in_arbiter(&arbiter.handle(), move |_| self)
    }
}

impl Actor for SnapshotActor {
    type Context = Context<Self>;
}

impl Handler<CreateDisk> for SnapshotActor {
    type Result = Result<VmDisk, SnapshotError>;

    fn handle(&mut self, msg: CreateDisk, _: &mut Context<Self>) -> Self::Result {
        if self.disks.contains_key(&msg.vm) {
            return Err(SnapshotError::DiskExists { vm: msg.vm });
        }
        let started = std::time::Instant::now();
        let spec = DiskSpec {
            vm: msg.vm.clone(),
            base: msg.image,
            size: msg.size,
        };
        let disk = self
            .backend
            .create(&spec)
            .map_err(|e| SnapshotError::from_create(&msg.vm, e))?;
        slog::info!(self.log, "disk created"; "vm" => &disk.vm, "path" => %disk.path.display(),
            "size" => disk.size, "ms" => started.elapsed().as_secs_f64() * 1e3);
        self.disks.insert(msg.vm, disk.clone());
        Ok(disk)
    }
}

impl Handler<RemoveDisk> for SnapshotActor {
    type Result = Result<bool, SnapshotError>;

    fn handle(&mut self, msg: RemoveDisk, _: &mut Context<Self>) -> Self::Result {
        let removed = self
            .backend
            .remove(&msg.vm)
            .map_err(|source| match source {
                DisksError::InvalidVmName { .. } => SnapshotError::InvalidRequest {
                    vm: msg.vm.clone(),
                    source,
                },
                source => SnapshotError::Remove {
                    vm: msg.vm.clone(),
                    source,
                },
            })?;
        self.disks.remove(&msg.vm);
        if removed {
            slog::info!(self.log, "disk removed"; "vm" => &msg.vm);
        }
        Ok(removed)
    }
}

impl Handler<ListDisks> for SnapshotActor {
    type Result = Result<Vec<DiskEntry>, SnapshotError>;

    fn handle(&mut self, _: ListDisks, _: &mut Context<Self>) -> Self::Result {
        self.backend
            .list()
            .map_err(|source| SnapshotError::List { source })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::host::disks::fake::FakeDisks;
    use crate::host::disks::DiskState;

    const BASE: u64 = 1 << 20;

    fn start() -> (Addr<SnapshotActor>, FakeDisks) {
        let fake = FakeDisks::new(BASE);
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let addr = SnapshotActor::new(Box::new(fake.clone()), log).start();
        (addr, fake)
    }

    fn create(vm: &str, size: Option<u64>) -> CreateDisk {
        CreateDisk {
            vm: vm.into(),
            image: PathBuf::from("/images/base.ext4"),
            size,
        }
    }

    #[actix::test]
    async fn create_list_remove() {
        let (addr, fake) = start();
        let disk = addr
            .send(create("web", Some(2 * BASE)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(disk.vm, "web");
        assert_eq!(disk.size, 2 * BASE);
        let list = addr.send(ListDisks {}).await.unwrap().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].state, DiskState::Ready);
        assert!(addr
            .send(RemoveDisk { vm: "web".into() })
            .await
            .unwrap()
            .unwrap());
        assert!(!addr
            .send(RemoveDisk { vm: "web".into() })
            .await
            .unwrap()
            .unwrap());
        assert!(addr.send(ListDisks {}).await.unwrap().unwrap().is_empty());
        assert_eq!(
            fake.calls(),
            ["create web", "list", "remove web", "remove web", "list"]
        );
    }

    #[actix::test]
    async fn second_disk_for_a_vm_is_refused_without_touching_the_host() {
        let (addr, fake) = start();
        addr.send(create("web", None)).await.unwrap().unwrap();
        let err = addr.send(create("web", None)).await.unwrap().unwrap_err();
        assert!(matches!(err, SnapshotError::DiskExists { .. }), "{err}");
        assert_eq!(fake.calls(), ["create web"]);
    }

    #[actix::test]
    async fn leftover_from_a_crash_is_listed_refused_and_removable() {
        let (addr, fake) = start();
        fake.add_partial("crashed");
        let list = addr.send(ListDisks {}).await.unwrap().unwrap();
        assert_eq!(list[0].state, DiskState::Partial);
        let err = addr
            .send(create("crashed", None))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, SnapshotError::DiskExists { .. }), "{err}");
        assert!(addr
            .send(RemoveDisk {
                vm: "crashed".into()
            })
            .await
            .unwrap()
            .unwrap());
        addr.send(create("crashed", None)).await.unwrap().unwrap();
    }

    #[actix::test]
    async fn bad_requests_are_invalid_and_change_nothing() {
        let (addr, fake) = start();
        for msg in [
            create("../etc", None),
            create("web", Some(BASE / 2)),
            create("web", Some(BASE + 1)),
        ] {
            let err = addr.send(msg).await.unwrap().unwrap_err();
            assert!(matches!(err, SnapshotError::InvalidRequest { .. }), "{err}");
        }
        let err = addr
            .send(RemoveDisk { vm: "a/b".into() })
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, SnapshotError::InvalidRequest { .. }), "{err}");
        assert!(fake.with(|s| s.disks.is_empty()));
    }

    #[actix::test]
    async fn host_failures_are_reported_and_state_kept() {
        let (addr, fake) = start();
        fake.fail_on_nth("create", 1);
        let err = addr.send(create("web", None)).await.unwrap().unwrap_err();
        assert!(matches!(err, SnapshotError::Create { .. }), "{err}");
        // Not recorded in memory, so a retry goes to the host again and succeeds.
        addr.send(create("web", None)).await.unwrap().unwrap();
        fake.fail_on_nth("remove", 1);
        let err = addr
            .send(RemoveDisk { vm: "web".into() })
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(err, SnapshotError::Remove { .. }), "{err}");
        assert_eq!(addr.send(ListDisks {}).await.unwrap().unwrap().len(), 1);
        fake.fail_on_nth("list", 2);
        let err = addr.send(ListDisks {}).await.unwrap().unwrap_err();
        assert!(matches!(err, SnapshotError::List { .. }), "{err}");
    }

    #[actix::test]
    async fn open_copy_backend_under_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let actor = SnapshotActor::open(BackendChoice::Copy, dir.path(), log).unwrap();
        assert_eq!(actor.backend(), BackendKind::Copy);
        assert!(dir.path().join("disks").is_dir());
    }

    #[actix::test]
    async fn dedicated_arbiter_serves_messages() {
        let fake = FakeDisks::new(BASE);
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let addr = SnapshotActor::new(Box::new(fake.clone()), log).start_dedicated();
        addr.send(create("a", None)).await.unwrap().unwrap();
        assert_eq!(addr.send(ListDisks {}).await.unwrap().unwrap().len(), 1);
    }
}
