//! Unit tests of `SnapshotActor`, against the fake disks backend.

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

/// A snapshot's disk: the checkpoint holds what the VM's disk held at that instant, and a disk
/// restored from it starts from that content, independent of the source afterwards.
#[actix::test]
async fn checkpoint_then_disk_from_the_checkpoint_with_the_copy_backend() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.ext4");
    std::fs::File::create(&base).unwrap().set_len(BASE).unwrap();
    let log = slog::Logger::root(slog::Discard, slog::o!());
    let addr = SnapshotActor::open(BackendChoice::Copy, dir.path(), log)
        .unwrap()
        .start();
    let disk = addr.send(create_from("web", &base)).await.unwrap().unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&disk.path)
        .unwrap();
    f.write_all_at(b"state at snapshot", 4096).unwrap();
    let dest = dir.path().join("snap-disk.img");
    addr.send(CheckpointDisk {
        vm: "web".into(),
        dest: dest.clone(),
    })
    .await
    .unwrap()
    .unwrap();
    // The source goes on writing; the checkpoint and disks made from it do not see it.
    f.write_all_at(b"after the snapshot", 4096).unwrap();
    let restored = addr
        .send(create_from("web2", &dest))
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 17];
    std::fs::File::open(&restored.path)
        .unwrap()
        .read_exact_at(&mut buf, 4096)
        .unwrap();
    assert_eq!(&buf, b"state at snapshot");
    assert_eq!(std::fs::metadata(&restored.path).unwrap().len(), BASE);
    // A VM without a disk: an error naming it, and no file left.
    let missing = dir.path().join("none.img");
    let err = addr
        .send(CheckpointDisk {
            vm: "nope".into(),
            dest: missing.clone(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, SnapshotError::Checkpoint { .. }), "{err}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("nope"),
        "{err}"
    );
    assert!(!missing.exists());
}

fn create_from(vm: &str, image: &std::path::Path) -> CreateDisk {
    CreateDisk {
        vm: vm.into(),
        image: image.to_path_buf(),
        size: None,
    }
}
