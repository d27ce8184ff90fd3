//! A fork's memory file kept outside its snapshot's directory (`fork_memory_dir`), over fakes:
//! where the record puts it, `Open` after it vanished (a host reboot), the sweep of leaked
//! ones, and removal with the forked VM. A fork end to end runs in `tests/snapshots_fork_memory.rs`.

use std::path::Path;

use actix::Addr;
use hearth_proto::api::{self, VmState};
use hearth_proto::api_snapshot::{SnapshotLeave, SnapshotState};

use super::*;
use crate::host::processes::fake::FakeProcesses;

fn spec(name: &str) -> api::CreateVm {
    serde_json::from_value(serde_json::json!({"name": name, "kernel": "vmlinux", "rootfs": "base"}))
        .unwrap()
}

/// Fork `f`'s internal snapshot `f.fork` of VM `a`, ready, its memory file in `mem_dir` (not
/// written: the test decides whether it survived).
fn fork_snapshot(snaps: &Path, mem_dir: &Path) -> SnapshotRecord {
    let name = "f.fork";
    let dir = SnapshotRecord::dir_for(snaps, name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vmstate"), b"state").unwrap();
    std::fs::write(dir.join("disk.img"), b"disk").unwrap();
    let v = crate::firecracker::snapshot_handlers::MIN_RESTORE_VERSION;
    SnapshotRecord {
        name: name.into(),
        state: SnapshotState::Ready,
        source_vm: "a".into(),
        source_spec: spec("a"),
        source_was: VmState::Running,
        leave: SnapshotLeave::Running,
        dir,
        created_at_ms: 1,
        internal: true,
        fc_version: format!("{}.{}.{}", v.major, v.minor, v.patch),
        cpu_template: hearth_proto::firecracker::CpuTemplate::None,
        vcpus: 1,
        mem_size_mib: 128,
        vsock_cid: 3,
        disk_bytes: 4,
        mem_file_bytes: 3,
        left_frozen: None,
        mem_file: Some(SnapshotRecord::mem_file_in(mem_dir, name)),
    }
}

/// The memory file's path follows the record: in the directory by default, where the record
/// says otherwise; old records (no `mem_file`) load with it in the directory.
#[test]
fn the_memory_file_is_where_the_record_says() {
    let snaps = tempfile::tempdir().unwrap();
    let mem = mem_dir();
    let mut rec = fork_snapshot(snaps.path(), mem.path());
    assert_eq!(rec.mem_path(), mem.path().join("f.fork.memory"));
    assert_eq!(rec.state_path(), snaps.path().join("f.fork/vmstate"));
    assert_eq!(rec.disk_path(), snaps.path().join("f.fork/disk.img"));
    let json = serde_json::to_value(&rec).unwrap();
    assert_eq!(serde_json::from_value::<SnapshotRecord>(json).unwrap(), rec);
    rec.mem_file = None;
    let mut json = serde_json::to_value(&rec).unwrap();
    assert!(json.get("mem_file").is_none(), "{json}");
    json.as_object_mut().unwrap().remove("mem_file");
    let old: SnapshotRecord = serde_json::from_value(json).unwrap();
    assert_eq!(old.mem_path(), snaps.path().join("f.fork/memory"));
}

/// A fork memory directory as hearthd makes it: its own, mode 0700 (a tempdir is 0755).
fn mem_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

async fn snapshot_info(
    sup: &Addr<VmSupervisor>,
    name: &str,
) -> hearth_proto::api_snapshot::SnapshotInfo {
    sup.send(GetSnapshot { name: name.into() })
        .await
        .unwrap()
        .unwrap()
}

fn supervisor(store: MemoryVmStore, snaps: &Path, mem: &Path, run: &Path) -> Addr<VmSupervisor> {
    let settings = SupervisorSettings {
        snapshot_dir: snaps.to_path_buf(),
        fork_memory_dir: Some(mem.to_path_buf()),
        ..SupervisorSettings::default()
    };
    let (sup, _, _) = testing::supervisor_with_settings(
        true,
        store,
        crate::tap_pool::TapPoolConfig::default(),
        FakeProcesses::new(),
        run.to_path_buf(),
        settings,
    );
    sup
}

/// After a reboot the fork's memory file (in RAM) is gone: `Open` marks its snapshot `lost`
/// (not `ready`), says so in an event on the forked VM, and a restore from it is refused
/// naming why; leaked memory files no record names are swept (only `<vm>.fork.memory`
/// names: nothing else in that directory is touched); deleting the forked VM removes the snapshot, leaving both
/// directories empty.
#[actix::test]
async fn open_marks_a_fork_snapshot_whose_memory_vanished_lost() {
    let snaps = tempfile::tempdir().unwrap();
    let mem = mem_dir();
    let run = tempfile::tempdir().unwrap();
    let mut store = MemoryVmStore::default();
    let snap = fork_snapshot(snaps.path(), mem.path());
    store.insert_snapshot(&snap).unwrap();
    let f = api::CreateVm {
        from_snapshot: Some("f.fork".into()),
        ..spec("f")
    };
    store.insert_vm(&f).unwrap();
    store.set_state("f", VmState::Stopped, None).unwrap();
    std::fs::write(mem.path().join("ghost.fork.memory"), b"leaked").unwrap();
    // Not names hearth gives: left alone, as the other file.
    let others = [
        "notes.txt",
        "db.memory",
        "Bad_Name.fork.memory",
        "-x.fork.memory",
    ];
    for other in others {
        std::fs::write(mem.path().join(other), b"not hearth's").unwrap();
    }
    let sup = supervisor(store, snaps.path(), mem.path(), run.path());

    let report = sup.send(Open {}).await.unwrap().unwrap();
    assert!(
        report
            .repaired
            .contains(&"snapshot f.fork (lost)".to_string()),
        "{report:?}"
    );
    assert!(
        report
            .swept
            .contains(&"snapshot memory ghost.fork".to_string()),
        "{report:?}"
    );
    let info = snapshot_info(&sup, "f.fork").await;
    assert_eq!(info.state, SnapshotState::Lost);
    assert_eq!(info.in_use_by, ["f"]);
    let events = sup
        .send(EventsSince {
            since: 0,
            limit: 100,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        events.iter().any(|e| e.vm == "f"
            && e.reason == api::EventReason::Snapshot
            && e.detail
                .as_deref()
                .is_some_and(|d| d.contains("lost its memory file"))),
        "{events:?}"
    );
    let refused = sup
        // As a fork restores (a user cannot name a fork's snapshot).
        .send(RestoreSnapshot {
            spec: api::CreateVm {
                kernel: String::new(),
                rootfs: String::new(),
                from_snapshot: Some("f.fork".into()),
                ..spec("g")
            },
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        refused.to_string().contains("lost its memory file"),
        "{refused}"
    );
    // Still in use: `snapshot rm` is refused as for a ready one.
    let in_use = sup
        .send(DeleteSnapshot {
            name: "f.fork".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(in_use, SupervisorError::SnapshotInUse { .. }),
        "{in_use}"
    );

    sup.send(DeleteVm { name: "f".into() })
        .await
        .unwrap()
        .unwrap();
    let gone = sup
        .send(GetSnapshot {
            name: "f.fork".into(),
        })
        .await
        .unwrap();
    assert!(gone.is_err(), "{gone:?}");
    let left = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert!(left(snaps.path()).is_empty(), "{:?}", left(snaps.path()));
    let mut kept = left(mem.path());
    kept.sort_unstable();
    let mut others = others.to_vec();
    others.sort_unstable();
    assert_eq!(kept, others);
}

/// A fork snapshot whose memory file is still there (hearthd restarted, the host did not)
/// stays `ready`; removing it removes the memory file outside its directory too.
#[actix::test]
async fn a_surviving_memory_file_keeps_the_snapshot_and_goes_with_it() {
    let snaps = tempfile::tempdir().unwrap();
    let mem = mem_dir();
    let run = tempfile::tempdir().unwrap();
    let mut store = MemoryVmStore::default();
    let snap = fork_snapshot(snaps.path(), mem.path());
    std::fs::write(snap.mem_path(), b"mem").unwrap();
    // A user-made one (not internal) so that no VM is needed to keep it.
    let snap = SnapshotRecord {
        internal: false,
        ..snap
    };
    store.insert_snapshot(&snap).unwrap();
    let sup = supervisor(store, snaps.path(), mem.path(), run.path());
    let report = sup.send(Open {}).await.unwrap().unwrap();
    assert!(
        report.repaired.is_empty() && report.swept.is_empty(),
        "{report:?}"
    );
    let name = "f.fork".to_string();
    let info = sup
        .send(GetSnapshot { name: name.clone() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.state, SnapshotState::Ready);
    sup.send(DeleteSnapshot { name }).await.unwrap().unwrap();
    assert!(!snap.mem_path().exists());
    assert!(!snap.dir.exists());
}

/// A fork memory directory that is not hearthd's alone (here mode 0777, as `/dev/shm`) is
/// not trusted at `Open`: its snapshot is not marked lost and no file in it is removed.
#[actix::test]
async fn open_trusts_nothing_in_a_directory_others_may_write() {
    use std::os::unix::fs::PermissionsExt;
    let snaps = tempfile::tempdir().unwrap();
    let mem = mem_dir();
    let run = tempfile::tempdir().unwrap();
    std::fs::set_permissions(mem.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut store = MemoryVmStore::default();
    let snap = SnapshotRecord {
        internal: false,
        ..fork_snapshot(snaps.path(), mem.path())
    };
    store.insert_snapshot(&snap).unwrap();
    std::fs::write(mem.path().join("ghost.fork.memory"), b"someone's").unwrap();
    let sup = supervisor(store, snaps.path(), mem.path(), run.path());
    let report = sup.send(Open {}).await.unwrap().unwrap();
    assert!(
        report.repaired.is_empty() && report.swept.is_empty(),
        "{report:?}"
    );
    let info = snapshot_info(&sup, "f.fork").await;
    assert_eq!(info.state, SnapshotState::Ready);
    assert!(mem.path().join("ghost.fork.memory").exists());
}
