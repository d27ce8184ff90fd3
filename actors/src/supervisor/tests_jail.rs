//! The supervisor with jailed VMMs over fakes (issue 16): uid leases and the undo paths of a
//! failing jail step. The success path runs against the real jailer in `tests/jailer_supervisor.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::Addr;
use hearth_proto::api::{self, VmState};

use super::*;
use crate::firecracker::jailer::{CgroupVersion, LimitPolicy};
use crate::host::disks::fake::FakeDisks;
use crate::host::jails::FakeJails;
use crate::host::processes::fake::{FakeCall, FakeProcesses};
use crate::host::processes::ExitStatus;

const UID: u32 = 900_000;

fn spec(name: &str) -> api::CreateVm {
    serde_json::from_value(serde_json::json!({"name": name, "kernel": "vmlinux", "rootfs": "base"}))
        .unwrap()
}

/// A supervisor jailing over `jails` with the uids `UID..=last`.
fn jailed(
    store: MemoryVmStore,
    processes: FakeProcesses,
    dir: &Path,
    jails: Arc<FakeJails>,
    last: u32,
) -> (Addr<VmSupervisor>, FakeDisks) {
    let js = JailSettings {
        jailer: "/usr/bin/jailer".into(),
        jails,
        chroot_base: dir.join("j"),
        cgroup_version: CgroupVersion::V1,
        limits: LimitPolicy::default(),
        uid_range: UID..=last,
        warm_pool: 0,
    };
    testing::supervisor_jailed(store, processes, dir.join("vms"), js)
}

/// A store holding VM `name`, stopped, its uid `uid`.
fn stopped_holding(name: &str, uid: u32) -> MemoryVmStore {
    let mut store = MemoryVmStore::default();
    store.insert_vm(&spec(name)).unwrap();
    store.set_state(name, VmState::Stopped, None).unwrap();
    store.put_uid(name, Some(uid)).unwrap();
    store
}

async fn create(sup: &Addr<VmSupervisor>, name: &str) -> Result<api::VmInfo, SupervisorError> {
    sup.send(CreateVm {
        spec: spec(name),
        idempotency: None,
    })
    .await
    .unwrap()
}

/// The jail calls other than the sweep's listings.
fn jail_calls(jails: &FakeJails) -> Vec<String> {
    jails
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("list "))
        .collect()
}

fn spawned(fake: &FakeProcesses) -> Vec<PathBuf> {
    fake.calls()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Spawn(s) => Some(s.program),
            _ => None,
        })
        .collect()
}

/// A jail that cannot be made fails the create before anything is spawned, and leaves
/// nothing: no jail, the disk removed, the uid given back (the next VM gets the same one).
#[actix::test]
async fn a_failing_jail_leaves_nothing_and_gives_the_uid_back() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProcesses::new();
    let jails = Arc::new(FakeJails::new());
    let (sup, disks) = jailed(
        MemoryVmStore::default(),
        fake.clone(),
        dir.path(),
        jails.clone(),
        UID, // one uid only
    );
    sup.send(Open {}).await.unwrap().unwrap();
    jails.fail_next("prepare");
    let err = create(&sup, "a").await.unwrap_err();
    assert!(err.to_string().contains("Injected failure"), "{err}");
    let info = sup.send(GetVm { name: "a".into() }).await.unwrap().unwrap();
    assert_eq!(info.state, VmState::Failed);
    assert!(spawned(&fake).is_empty(), "nothing spawned");
    assert!(jails.jails().is_empty(), "no jail left");
    assert!(
        disks.calls().iter().any(|c| c.contains("remove")),
        "the disk was undone: {:?}",
        disks.calls()
    );
    // The only uid is free again: the next VM's jail is made with it.
    jails.fail_next("prepare");
    create(&sup, "b").await.unwrap_err();
    assert_eq!(jail_calls(&jails), ["prepare 900000", "prepare 900000"]);
}

/// The jailer failing (e.g. an unavailable cgroup controller) fails the create; the jail it
/// was given is removed and the uid given back.
#[actix::test]
async fn a_failing_jailer_leaves_no_jail() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProcesses::new();
    let jails = Arc::new(FakeJails::new());
    let (sup, _) = jailed(
        MemoryVmStore::default(),
        fake.clone(),
        dir.path(),
        jails.clone(),
        UID,
    );
    sup.send(Open {}).await.unwrap().unwrap();
    let exit = async {
        // The jailer (the fake's first pid) exits 1.
        while spawned(&fake).is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fake.exit(1001, ExitStatus::Code(1));
    };
    let (res, ()) = tokio::join!(create(&sup, "a"), exit);
    let err = res.unwrap_err();
    assert!(err.to_string().contains("spawn"), "{err}");
    assert_eq!(spawned(&fake), [PathBuf::from("/usr/bin/jailer")]);
    // The jailer was handed the VM's kernel and disk, and ran as the leased uid.
    let spec = fake
        .calls()
        .into_iter()
        .find_map(|c| match c {
            FakeCall::Spawn(s) => Some(s),
            _ => None,
        })
        .unwrap();
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let args = args.join(" ");
    assert!(args.contains("--uid 900000 --gid 900000"), "{args}");
    assert!(args.contains("--id 900000"), "{args}");
    assert!(jails.jails().is_empty(), "{:?}", jails.calls());
    assert!(jails.calls().contains(&"remove 900000".to_string()));
}

/// A recorded uid is taken back at `Open` (so a second VM cannot get it), kept through a
/// failed start, and given back when its VM is deleted.
#[actix::test]
async fn uids_are_leased_once_and_given_back_on_delete() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = stopped_holding("a", UID);
    // The store refuses a second VM on the same uid.
    store.insert_vm(&spec("x")).unwrap();
    assert!(store.put_uid("x", Some(UID)).is_err());
    store.delete_vm("x").unwrap();
    let jails = Arc::new(FakeJails::new());
    let (sup, _) = jailed(store, FakeProcesses::new(), dir.path(), jails.clone(), UID);
    sup.send(Open {}).await.unwrap().unwrap();

    // The one uid is a's: b cannot be jailed, and says why (503), with nothing made.
    let err = create(&sup, "b").await.unwrap_err();
    assert!(
        matches!(err, SupervisorError::Unavailable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("No free uid"), "{err}");
    assert!(jail_calls(&jails).is_empty(), "{:?}", jails.calls());

    // A failed start of a keeps its uid (it is a's for life).
    jails.fail_next("prepare");
    sup.send(RunAction {
        name: "a".into(),
        action: VmAction::Start,
        idempotency: None,
    })
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(jails.calls().last().unwrap(), "prepare 900000");
    sup.send(DeleteVm { name: "b".into() })
        .await
        .unwrap()
        .unwrap();
    let err = create(&sup, "c").await.unwrap_err();
    assert!(err.to_string().contains("No free uid"), "{err}");

    // Deleted, a gives its uid back: c's next try gets it.
    sup.send(DeleteVm { name: "a".into() })
        .await
        .unwrap()
        .unwrap();
    jails.fail_next("prepare");
    sup.send(RunAction {
        name: "c".into(),
        action: VmAction::Start,
        idempotency: None,
    })
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(jails.calls().last().unwrap(), "prepare 900000");
}

/// `Open` sweeps jails of no live VM: a stopped VM's and one of no VM at all. A pid in a
/// jail's pid file that is not that jail's VMM is not signalled.
#[actix::test]
async fn open_sweeps_jails_of_no_live_vm() {
    let dir = tempfile::tempdir().unwrap();
    let store = stopped_holding("a", UID);
    let jails = Arc::new(FakeJails::new());
    for id in ["900000", "900007"] {
        let layout = crate::firecracker::jailer::JailLayout::new(
            &dir.path().join("j"),
            Path::new("/usr/bin/firecracker"),
            id,
        )
        .unwrap();
        crate::host::jails::Jails::prepare(
            &*jails,
            &crate::host::jails::JailPlan {
                layout,
                uid: 1000,
                gid: 1000,
                files: vec![],
            },
        )
        .unwrap();
    }
    jails.write_pid("900007", std::process::id());
    let fake = FakeProcesses::new();
    let (sup, _) = jailed(store, fake.clone(), dir.path(), jails.clone(), UID + 9);
    let report = sup.send(Open {}).await.unwrap().unwrap();
    assert!(jails.jails().is_empty(), "{:?}", jails.calls());
    assert!(
        report.swept.contains(&"jail 900000".to_string()),
        "{report:?}"
    );
    assert!(
        report.swept.contains(&"jail 900007".to_string()),
        "{report:?}"
    );
    assert!(fake.signals().is_empty(), "not a VMM: not signalled");
}

/// A process of a stopped VM's uid that does not die of SIGKILL (stuck in the kernel): `Open`
/// reports its uid quarantined, the VM cannot start as that uid (a clear 503), and no other
/// VM is given it.
#[actix::test]
async fn a_uid_whose_process_would_not_die_is_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let store = stopped_holding("a", UID);
    let fake = FakeProcesses::new();
    fake.ignore(crate::host::processes::Signal::Kill);
    fake.set_identity(
        40,
        crate::host::processes::ProcessIdentity {
            start_time: 1,
            cmdline: vec!["/firecracker".into(), "--id".into(), UID.to_string()],
        },
    );
    fake.set_uid(40, UID);
    let jails = Arc::new(FakeJails::new());
    let (sup, _) = jailed(store, fake.clone(), dir.path(), jails.clone(), UID + 1);
    let report = sup.send(Open {}).await.unwrap().unwrap();
    assert_eq!(report.quarantined_uids, [UID], "{report:?}");
    let err = sup
        .send(RunAction {
            name: "a".into(),
            action: VmAction::Start,
            idempotency: None,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Unavailable { what } if what.contains(&format!("uid {UID} did not die"))),
        "{err:?}"
    );
    // A new VM gets the other uid, never the quarantined one.
    let _ = create(&sup, "b").await;
    let jail_ids: Vec<String> = jail_calls(&jails)
        .into_iter()
        .filter(|c| c.starts_with("prepare "))
        .collect();
    assert_eq!(jail_ids, [format!("prepare {}", UID + 1)]);
}

/// A ready snapshot `snap` of VM `a`, taken jailed or not (what its state file names as the
/// root drive's path), its files in `dir/snap/`.
fn snapshot(dir: &Path, jailed: bool) -> SnapshotRecord {
    let sdir = dir.join("snap");
    std::fs::create_dir_all(&sdir).unwrap();
    let drive = if jailed {
        "/snapshot-snap.disk".to_string()
    } else {
        sdir.join("disk.img").display().to_string()
    };
    std::fs::write(sdir.join("vmstate"), format!("..state..{drive}..")).unwrap();
    std::fs::write(sdir.join("memory"), b"mem").unwrap();
    std::fs::write(sdir.join("disk.img"), b"disk").unwrap();
    let v = crate::firecracker::snapshot_handlers::MIN_RESTORE_VERSION;
    SnapshotRecord {
        name: "snap".into(),
        state: hearth_proto::api_snapshot::SnapshotState::Ready,
        source_vm: "a".into(),
        source_spec: spec("a"),
        source_was: VmState::Running,
        leave: hearth_proto::api_snapshot::SnapshotLeave::Running,
        dir: sdir,
        created_at_ms: 1,
        internal: false,
        fc_version: format!("{}.{}.{}", v.major, v.minor, v.patch),
        cpu_template: hearth_proto::firecracker::CpuTemplate::None,
        vcpus: 1,
        mem_size_mib: 128,
        vsock_cid: 3,
        disk_bytes: 4,
        mem_file_bytes: 3,
        left_frozen: None,
        mem_file: None,
    }
}

async fn restore(sup: &Addr<VmSupervisor>, name: &str) -> Result<api::VmInfo, SupervisorError> {
    let s = api::CreateVm {
        kernel: String::new(),
        rootfs: String::new(),
        from_snapshot: Some("snap".into()),
        ..spec(name)
    };
    sup.send(CreateVm {
        spec: s,
        idempotency: None,
    })
    .await
    .unwrap()
}

/// A jailed restore leases a uid and makes a jail as a create does, holding the snapshot's
/// state and memory read-only (made readable, never writable, first) and the VM's own new
/// disk (not the checkpoint) as `/rootfs` and at the path the state names; the jailer runs
/// as the uid. When the jailer fails, everything is undone: no jail, the disk removed, the
/// uid given back (the next restore gets the same one), the VM `failed`.
#[actix::test]
async fn a_jailed_restore_links_the_snapshot_and_its_own_disk_and_undoes_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryVmStore::default();
    let snap = snapshot(dir.path(), true);
    store.insert_snapshot(&snap).unwrap();
    let fake = FakeProcesses::new();
    let jails = Arc::new(FakeJails::new());
    let (sup, disks) = jailed(store, fake.clone(), dir.path(), jails.clone(), UID);
    sup.send(Open {}).await.unwrap().unwrap();
    let plan = async {
        // Bounded: a restore failing before the spawn fails the test rather than hang it.
        for _ in 0..1000 {
            if !spawned(&fake).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let plan = jails
            .plan("900000")
            .expect("the jail is made before the jailer runs");
        fake.exit(1001, ExitStatus::Code(1));
        plan
    };
    let (res, plan) = tokio::join!(restore(&sup, "r"), plan);
    let err = res.unwrap_err();
    assert!(err.to_string().contains("jailer"), "{err}");
    assert_eq!(plan.uid, UID);
    let files: Vec<(&str, &Path, bool)> = plan
        .files
        .iter()
        .map(|f| (f.name.as_str(), f.source.as_path(), f.writable))
        .collect();
    let own = files[2].1.to_path_buf();
    assert_ne!(
        own,
        snap.disk_path(),
        "the VM's own disk, not the checkpoint"
    );
    assert_eq!(
        files,
        [
            ("snapshot-snap.vmstate", snap.state_path().as_path(), false),
            ("snapshot-snap.memory", snap.mem_path().as_path(), false),
            ("rootfs", own.as_path(), true),
            ("snapshot-snap.disk", own.as_path(), true),
        ]
    );
    let args: Vec<String> = fake
        .calls()
        .into_iter()
        .find_map(|c| match c {
            FakeCall::Spawn(s) => Some(s.args),
            _ => None,
        })
        .unwrap()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(
        args.join(" ").contains("--uid 900000 --gid 900000"),
        "{args:?}"
    );
    assert_eq!(
        jail_calls(&jails)[..3],
        [
            "share_read_only snap vmstate memory",
            "prepare 900000",
            "remove 900000"
        ]
    );
    assert!(jails.jails().is_empty(), "no jail left");
    assert!(
        disks.calls().iter().any(|c| c.contains("remove")),
        "the disk was undone: {:?}",
        disks.calls()
    );
    let info = sup.send(GetVm { name: "r".into() }).await.unwrap().unwrap();
    assert_eq!(info.state, VmState::Failed);
    // The only uid was given back: a second restore is jailed with it again.
    jails.fail_next("prepare");
    restore(&sup, "r2").await.unwrap_err();
    assert_eq!(jails.calls().last().unwrap(), "prepare 900000");
}

/// With jailing on, a snapshot taken of an unjailed VMM (its state names the checkpoint's
/// host path, which no jail holds) is refused before anything is made: no VM, no uid, no
/// jail.
#[actix::test]
async fn a_snapshot_taken_unjailed_is_refused_when_jailed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryVmStore::default();
    store.insert_snapshot(&snapshot(dir.path(), false)).unwrap();
    let jails = Arc::new(FakeJails::new());
    let (sup, _) = jailed(store, FakeProcesses::new(), dir.path(), jails.clone(), UID);
    sup.send(Open {}).await.unwrap().unwrap();
    let err = restore(&sup, "r").await.unwrap_err();
    assert!(matches!(err, SupervisorError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("unjailed"), "{err}");
    assert!(sup.send(GetVm { name: "r".into() }).await.unwrap().is_err());
    assert!(jail_calls(&jails).is_empty(), "{:?}", jails.calls());
}

/// A restore a crash interrupted (`creating`, its uid recorded, its jail made) is repaired at
/// `Open` as an interrupted create: the VM `failed`, its jail swept; it keeps its uid until
/// it is deleted, which gives the uid back.
#[actix::test]
async fn open_repairs_an_interrupted_jailed_restore() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryVmStore::default();
    store.insert_snapshot(&snapshot(dir.path(), true)).unwrap();
    let r = api::CreateVm {
        kernel: String::new(),
        rootfs: String::new(),
        from_snapshot: Some("snap".into()),
        ..spec("r")
    };
    store.insert_vm(&r).unwrap();
    store.put_uid("r", Some(UID)).unwrap();
    let jails = Arc::new(FakeJails::new());
    let layout = crate::firecracker::jailer::JailLayout::new(
        &dir.path().join("j"),
        Path::new("/usr/bin/firecracker"),
        "900000",
    )
    .unwrap();
    crate::host::jails::Jails::prepare(
        &*jails,
        &crate::host::jails::JailPlan {
            layout,
            uid: UID,
            gid: UID,
            files: vec![],
        },
    )
    .unwrap();
    let (sup, _) = jailed(
        store,
        FakeProcesses::new(),
        dir.path(),
        jails.clone(),
        UID + 1,
    );
    let report = sup.send(Open {}).await.unwrap().unwrap();
    assert!(
        report.swept.contains(&"jail 900000".to_string()),
        "{report:?}"
    );
    assert!(jails.jails().is_empty());
    let info = sup.send(GetVm { name: "r".into() }).await.unwrap().unwrap();
    assert_eq!(info.state, VmState::Failed, "{info:?}");
    // r still holds its uid: the next VM gets the other one.
    jails.fail_next("prepare");
    create(&sup, "b").await.unwrap_err();
    assert_eq!(jails.calls().last().unwrap(), "prepare 900001");
    sup.send(DeleteVm { name: "r".into() })
        .await
        .unwrap()
        .unwrap();
    jails.fail_next("prepare");
    restore(&sup, "r2").await.unwrap_err();
    assert_eq!(jails.calls().last().unwrap(), "prepare 900000");
}

/// With jailing off, a snapshot taken of a jailed VMM (its state names the drive inside a
/// jail) is refused before anything is made, naming why.
#[actix::test]
async fn a_snapshot_taken_jailed_is_refused_unjailed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryVmStore::default();
    store.insert_snapshot(&snapshot(dir.path(), true)).unwrap();
    let (sup, disks) = testing::supervisor_over_fakes(true, store);
    sup.send(Open {}).await.unwrap().unwrap();
    let err = restore(&sup, "r").await.unwrap_err();
    assert!(matches!(err, SupervisorError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("[jailer] disabled"), "{err}");
    assert!(sup.send(GetVm { name: "r".into() }).await.unwrap().is_err());
    let made: Vec<String> = disks.calls().into_iter().filter(|c| c != "list").collect();
    assert!(made.is_empty(), "no disk made: {made:?}");
}
