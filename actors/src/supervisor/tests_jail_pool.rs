//! The warm pool of jailed VMMs over fakes: filling after `Open`, a create taking a member
//! (its uid, its jail, the VM's files and limits, no jailer run), the fallback to the jailer
//! when a take fails, and `Close` discarding idle members. A fake VMM is a real pid rooted at
//! `/` and each jail's root a symlink to `/`, so the identity checks run for real; a fake
//! VMM has no API socket, so a create that took a member fails at the API: that is the
//! "member fails configuration" path. The whole success path runs against the real jailer in
//! `tests/jailer_pool.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use hearth_proto::api;

use super::*;
use crate::firecracker::jailer::{CgroupVersion, JailLayout, JailLimits, LimitPolicy};
use crate::firecracker::warm_pool::tests::{play_jailer, real_pids, root_at_slash};
use crate::host::jails::FakeJails;
use crate::host::processes::fake::{FakeCall, FakeProcesses};
use crate::host::processes::{ExitStatus, Signal, SpawnSpec};

const UID: u32 = 900_000;

fn spec(name: &str) -> api::CreateVm {
    serde_json::from_value(serde_json::json!({"name": name, "kernel": "vmlinux", "rootfs": "base"}))
        .unwrap()
}

fn layout(dir: &Path, uid: u32) -> JailLayout {
    JailLayout::new(
        &dir.join("j"),
        Path::new("/usr/bin/firecracker"),
        &uid.to_string(),
    )
    .unwrap()
}

/// A jailed supervisor keeping `warm` members, uids `UID..=UID+2`, each jail's root a
/// symlink to `/`.
fn pooled(
    fake: &FakeProcesses,
    dir: &Path,
    jails: Arc<FakeJails>,
    warm: usize,
) -> Addr<VmSupervisor> {
    pooled_with(MemoryVmStore::default(), fake, dir, jails, warm)
}

/// [`pooled`] over `store`.
fn pooled_with(
    store: MemoryVmStore,
    fake: &FakeProcesses,
    dir: &Path,
    jails: Arc<FakeJails>,
    warm: usize,
) -> Addr<VmSupervisor> {
    for uid in UID..=UID + 2 {
        root_at_slash(&layout(dir, uid));
    }
    let js = JailSettings {
        jailer: "/usr/bin/jailer".into(),
        jails,
        chroot_base: dir.join("j"),
        cgroup_version: CgroupVersion::V1,
        limits: LimitPolicy::default(),
        uid_range: UID..=UID + 2,
        warm_pool: warm,
    };
    testing::supervisor_jailed(store, fake.clone(), dir.join("vms"), js).0
}

fn spawns(fake: &FakeProcesses) -> Vec<SpawnSpec> {
    fake.calls()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Spawn(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn args_of(s: &SpawnSpec) -> String {
    let a: Vec<String> = s
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    a.join(" ")
}

/// Waits (at most 10 s) for spawn number `n` (1-based) and answers it with its pid.
async fn nth_spawn(fake: &FakeProcesses, n: usize) -> (SpawnSpec, u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(s) = spawns(fake).get(n - 1) {
            // The fake's pids count from 1001 in spawn order.
            return (s.clone(), 1000 + u32::try_from(n).unwrap());
        }
        assert!(Instant::now() < deadline, "spawn {n} never came");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Plays the jailer of spawn `n` (the member of uid `uid`), its VMM being real pid `pid`.
async fn member_up(
    fake: &FakeProcesses,
    jails: &FakeJails,
    dir: &Path,
    n: usize,
    uid: u32,
    pid: u32,
) {
    let (s, jailer) = nth_spawn(fake, n).await;
    assert!(
        args_of(&s).contains(&format!("--id {uid} ")),
        "{}",
        args_of(&s)
    );
    play_jailer(fake, jails, &layout(dir, uid), jailer, pid);
}

/// Waits (at most 10 s) until `ready` members are ready.
async fn pool_ready(sup: &Addr<VmSupervisor>, ready: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while sup.send(GetWarmPool {}).await.unwrap().ready != ready {
        assert!(
            Instant::now() < deadline,
            "the pool never had {ready} ready"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The uid the next create is given is `uid`: its jail is prepared as that id (the prepare
/// is made to fail, so the create leaves nothing).
async fn assert_next_lease(sup: &Addr<VmSupervisor>, jails: &FakeJails, uid: u32) {
    jails.fail_next("prepare");
    create(sup, "b").await.unwrap_err();
    assert_eq!(jails.calls().last().unwrap(), &format!("prepare {uid}"));
}

async fn create(sup: &Addr<VmSupervisor>, name: &str) -> Result<api::VmInfo, SupervisorError> {
    sup.send(CreateVm {
        spec: spec(name),
        idempotency: None,
    })
    .await
    .unwrap()
}

/// Nothing starts before `Open` (its sweep would kill it); after it, the pool fills with
/// members that hold their own uids and jails, started with the warm limits; `Close` kills
/// them and removes their jails.
#[actix::test]
async fn the_pool_fills_after_open_and_close_discards_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProcesses::new();
    let jails = Arc::new(FakeJails::new());
    let sup = pooled(&fake, dir.path(), jails.clone(), 2);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(spawns(&fake).is_empty(), "nothing before Open");
    sup.send(Open {}).await.unwrap().unwrap();
    let pids = real_pids(2);
    member_up(&fake, &jails, dir.path(), 1, UID, pids[0]).await;
    member_up(&fake, &jails, dir.path(), 2, UID + 1, pids[1]).await;
    pool_ready(&sup, 2).await;
    let status = sup.send(GetWarmPool {}).await.unwrap();
    assert_eq!((status.target, status.starting), (2, 0));
    let warm = JailLimits::for_warm(&LimitPolicy::default());
    let (first, _) = nth_spawn(&fake, 1).await;
    assert!(
        args_of(&first).contains(&format!("memory.limit_in_bytes={}", warm.memory_bytes)),
        "{}",
        args_of(&first)
    );
    assert_eq!(first.stdio, dir.path().join("vms/.warm/900000.fifo"));
    assert_eq!(jails.jails(), ["900000", "900001"]);
    sup.send(Close { stop_vms: false }).await.unwrap().unwrap();
    assert_eq!(fake.signals(), [Signal::Kill, Signal::Kill]);
    assert!(jails.jails().is_empty(), "{:?}", jails.calls());
    assert_eq!(spawns(&fake).len(), 2, "no refill after Close");
}

/// A create takes the member: its uid is the VM's, no jailer runs for it, the VM's files and
/// limits go into the member's jail, and the pool refills. The fake VMM has no API socket, so
/// the create then fails: the member is killed, its jail removed, and its uid is free again.
#[actix::test]
async fn a_create_takes_a_member_and_a_failed_one_gives_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProcesses::new();
    let jails = Arc::new(FakeJails::new());
    let sup = pooled(&fake, dir.path(), jails.clone(), 1);
    sup.send(Open {}).await.unwrap().unwrap();
    let pid = real_pids(1)[0];
    member_up(&fake, &jails, dir.path(), 1, UID, pid).await;
    pool_ready(&sup, 1).await;

    let member_fifo = dir.path().join("vms/.warm/900000.fifo");
    assert!(member_fifo.exists());
    let err = create(&sup, "a").await.unwrap_err();
    assert!(err.to_string().contains("api.sock"), "{err}");
    // The take moved the member's FIFO out of the run base's own area (one filesystem).
    assert!(!member_fifo.exists(), "the FIFO was not moved");
    let calls = jails.calls();
    assert!(calls.contains(&"add_files 900000".to_string()), "{calls:?}");
    assert!(
        calls.contains(&"set_limits 900000".to_string()),
        "{calls:?}"
    );
    let vm = JailLimits::for_vm(1, 128, &LimitPolicy::default());
    assert_eq!(
        jails.limits_of("900000"),
        Some(vm),
        "the VM's limits, not the warm ones"
    );
    // The refill's jailer (uid 900001) is the only spawn after the member's: none for `a`.
    let programs: Vec<String> = spawns(&fake).iter().map(args_of).collect();
    assert_eq!(programs.len(), 2, "{programs:?}");
    assert!(programs[1].contains("--id 900001 "), "{programs:?}");
    // The member's VMM was killed (through its pidfd) and its jail removed.
    let to_member: Vec<Signal> = fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            FakeCall::Signal { pid: p, signal } if p == pid => Some(signal),
            _ => None,
        })
        .collect();
    assert!(
        !to_member.is_empty() && to_member.iter().all(|s| *s == Signal::Kill),
        "{to_member:?}"
    );
    assert!(!jails.jails().contains(&"900000".to_string()), "{calls:?}");
    // Its uid is free again: the next create (the pool is empty) leases it.
    assert_next_lease(&sup, &jails, UID).await;
}

/// The VM's limits are written into the member's cgroups, and the VM's files (kernel, disk)
/// are added to its jail; a take that fails there (here: the files) kills the member,
/// removes its jail and spawns through the jailer in the same jail, as without a pool.
#[actix::test]
async fn a_failed_take_falls_back_to_the_jailer() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProcesses::new();
    let jails = Arc::new(FakeJails::new());
    let sup = pooled(&fake, dir.path(), jails.clone(), 1);
    sup.send(Open {}).await.unwrap().unwrap();
    let pid = real_pids(1)[0];
    member_up(&fake, &jails, dir.path(), 1, UID, pid).await;
    pool_ready(&sup, 1).await;
    jails.fail_next("add_files");
    let fail_cold_jailer = async {
        // After the member's (spawn 1): the refill's jailer (uid 900001) and the fallback's
        // (uid 900000), in either order. The fallback's fails.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = spawns(&fake)
                .into_iter()
                .enumerate()
                .skip(1)
                .find(|(_, s)| args_of(s).contains("--id 900000 "));
            if let Some((i, s)) = found {
                fake.exit(1001 + u32::try_from(i).unwrap(), ExitStatus::Code(1));
                break s;
            }
            assert!(Instant::now() < deadline, "no fallback jailer");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (res, cold) = tokio::join!(create(&sup, "a"), fail_cold_jailer);
    let err = res.unwrap_err();
    assert!(err.to_string().contains("spawn"), "{err}");
    assert_eq!(cold.program, PathBuf::from("/usr/bin/jailer"));
    let args = args_of(&cold);
    assert!(args.contains("--id 900000 --exec-file"), "{args}");
    // The VM's own limits (1 vCPU, 128 MiB: the spec's defaults) on the fallback.
    let vm = JailLimits::for_vm(1, 128, &LimitPolicy::default());
    assert!(
        args.contains(&format!("memory.limit_in_bytes={}", vm.memory_bytes)),
        "{args}"
    );
    let calls = jails.calls();
    let at = |c: &str| calls.iter().position(|x| x == c).unwrap_or(usize::MAX);
    assert!(at("add_files 900000") < at("remove 900000"), "{calls:?}");
    assert!(
        calls.iter().rposition(|x| x == "prepare 900000") > Some(at("remove 900000")),
        "the member's jail goes before the jailer's: {calls:?}"
    );
    assert_eq!(fake.signals(), [Signal::Kill], "the member was killed");
}

/// Idle members holding every uid yield to a VM: the start of a VM that holds no uid gives
/// the newest member up (its VMM killed, its jail removed) and gets its uid, where it used
/// to fail "Cannot jail VM". The pool, out of uids, starts nothing more.
#[actix::test]
async fn idle_members_give_their_uid_up_to_a_vm_that_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProcesses::new();
    let jails = Arc::new(FakeJails::new());
    let mut store = MemoryVmStore::default();
    store.insert_vm(&spec("s")).unwrap();
    store.set_state("s", api::VmState::Stopped, None).unwrap();
    let sup = pooled_with(store, &fake, dir.path(), jails.clone(), 3);
    sup.send(Open {}).await.unwrap().unwrap();
    let pids = real_pids(3);
    for (i, pid) in pids.iter().enumerate() {
        member_up(
            &fake,
            &jails,
            dir.path(),
            i + 1,
            UID + u32::try_from(i).unwrap(),
            *pid,
        )
        .await;
    }
    pool_ready(&sup, 3).await;

    // The VM's own jail is prepared under the member's uid (and made to fail there, as the
    // fake VMM could go no further).
    jails.fail_next("prepare");
    let err = sup
        .send(RunAction {
            name: "s".into(),
            action: VmAction::Start,
            idempotency: None,
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(!err.to_string().contains("Cannot jail"), "{err}");
    // The newest ready member (ready in any order) gave its uid up.
    let calls = jails.calls();
    let removed: Vec<&String> = calls.iter().filter(|c| c.starts_with("remove ")).collect();
    assert_eq!(removed.len(), 1, "{calls:?}");
    let yielded: u32 = removed[0]["remove ".len()..].parse().unwrap();
    assert_eq!(
        calls.last().unwrap(),
        &format!("prepare {yielded}"),
        "{calls:?}"
    );
    let killed: Vec<u32> = fake.killed();
    assert_eq!(
        killed,
        [pids[usize::try_from(yielded - UID).unwrap()]],
        "that member, only"
    );
    let status = sup.send(GetWarmPool {}).await.unwrap();
    assert_eq!((status.ready, status.starting), (2, 0));
    // Its uid stays the VM's: no refill can start.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(spawns(&fake).len(), 3);
}

/// A member whose jail could not be removed keeps its uid (quarantined until the next
/// `Open`): the next VM is jailed under another uid, not in the way of the old jail.
#[actix::test]
async fn a_member_whose_jail_stays_keeps_its_uid_out_of_use() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProcesses::new();
    let jails = Arc::new(FakeJails::new());
    let sup = pooled(&fake, dir.path(), jails.clone(), 1);
    sup.send(Open {}).await.unwrap().unwrap();
    let pid = real_pids(1)[0];
    member_up(&fake, &jails, dir.path(), 1, UID, pid).await;
    pool_ready(&sup, 1).await;
    // The member dies; the create finding it discards it, and that removal fails.
    fake.exit(pid, ExitStatus::Code(0));
    jails.fail_next("remove");
    let fail_jailer = async {
        let (s, jailer) = nth_spawn(&fake, 2).await;
        fake.exit(jailer, ExitStatus::Code(1));
        s
    };
    let (res, cold) = tokio::join!(create(&sup, "a"), fail_jailer);
    res.unwrap_err();
    assert!(
        args_of(&cold).contains("--id 900001 "),
        "{}",
        args_of(&cold)
    );
    assert!(
        jails.jails().contains(&"900000".to_string()),
        "{:?}",
        jails.calls()
    );
    // a's uid (900001) is free again; 900000 is not.
    assert_next_lease(&sup, &jails, UID + 1).await;
}

/// `Close` discards the idle members together, not one after the other: both VMMs are
/// killed at once (each discard then waits for its VMM, which here ignores `SIGKILL`, up
/// to 2 s).
#[actix::test]
async fn close_discards_the_members_together() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeProcesses::new();
    let jails = Arc::new(FakeJails::new());
    let sup = pooled(&fake, dir.path(), jails.clone(), 2);
    sup.send(Open {}).await.unwrap().unwrap();
    let pids = real_pids(2);
    member_up(&fake, &jails, dir.path(), 1, UID, pids[0]).await;
    member_up(&fake, &jails, dir.path(), 2, UID + 1, pids[1]).await;
    pool_ready(&sup, 2).await;
    // VMMs slow to die: each discard waits its 2 s.
    fake.ignore(Signal::Kill);
    let close = sup.send(Close { stop_vms: false });
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // On this one-thread runtime, the first kill is seen before Close yields again:
            // one after the other, the second is then 2 s away.
            let killed = fake.signals().len();
            if killed > 0 {
                break killed;
            }
            assert!(Instant::now() < deadline, "no member killed");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let (closed, killed_first) = tokio::join!(close, watch);
    closed.unwrap().unwrap();
    assert_eq!(killed_first, 2, "both killed at once");
    assert!(jails.jails().is_empty());
    assert!(
        !dir.path().join("vms/.warm").exists(),
        "the FIFO directory went too"
    );
}

/// A `kill -9` of hearthd after a create took a member and before its spawn: the store holds
/// the VM `creating` with the member's uid, the member's VMM runs on in its jail, and no
/// process is recorded. `Open` fails the create (the VM keeps its uid, as a failed VM does),
/// kills the member, found as a process of a uid no live VM holds, removes its jail, and
/// the pool, still on, refills with the next free uid.
#[actix::test]
async fn a_crash_between_a_take_and_its_spawn_leaves_no_member_running() {
    use crate::host::jails::{JailPlan, Jails};
    use crate::host::processes::ProcessIdentity;

    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryVmStore::default();
    store.insert_vm(&spec("a")).unwrap();
    store.put_uid("a", Some(UID)).unwrap();
    let fake = FakeProcesses::new();
    let jails = Arc::new(FakeJails::new());
    let sup = pooled_with(store, &fake, dir.path(), jails.clone(), 1);
    // The member as the crash left it: its jail, and its VMM running as its uid. (Its pid
    // file names a process whose root is not the jail: only its uid says whose it is.)
    jails
        .prepare(&JailPlan {
            layout: layout(dir.path(), UID),
            uid: UID,
            gid: UID,
            files: vec![],
        })
        .unwrap();
    let member = 5000;
    fake.set_identity(
        member,
        ProcessIdentity {
            start_time: 1,
            cmdline: [
                "/firecracker",
                "--id",
                "900000",
                "--api-sock",
                "/run/api.sock",
            ]
            .map(String::from)
            .to_vec(),
        },
    );
    fake.set_uid(member, UID);
    jails.write_pid("900000", member);

    let report = sup.send(Open {}).await.unwrap().unwrap();
    assert_eq!(report.repaired, ["a"], "{report:?}");
    assert!(
        report.swept.contains(&format!("process {member}"))
            && report.swept.contains(&"jail 900000".to_string()),
        "{report:?}"
    );
    assert!(report.quarantined_uids.is_empty());
    assert!(
        fake.calls().contains(&FakeCall::Signal {
            pid: member,
            signal: Signal::Kill
        }),
        "{:?}",
        fake.calls()
    );
    let a = sup.send(GetVm { name: "a".into() }).await.unwrap().unwrap();
    assert_eq!(a.state, api::VmState::Failed);
    // The pool refills after the sweep, with the lowest uid `a` does not hold.
    let pid = real_pids(1)[0];
    member_up(&fake, &jails, dir.path(), 1, UID + 1, pid).await;
    pool_ready(&sup, 1).await;
    assert_eq!(jails.jails(), ["900001"]);
}

/// A pool waiting for a free uid refills as soon as a VM gives one back (here by its
/// delete), not at its next retry (an hour in unit tests).
#[actix::test]
async fn a_uid_given_back_by_a_vm_refills_the_pool_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = MemoryVmStore::default();
    for (uid, name) in (UID..).zip(["a", "b", "c"]) {
        store.insert_vm(&spec(name)).unwrap();
        store.set_state(name, api::VmState::Stopped, None).unwrap();
        store.put_uid(name, Some(uid)).unwrap();
    }
    let fake = FakeProcesses::new();
    let jails = Arc::new(FakeJails::new());
    let sup = pooled_with(store, &fake, dir.path(), jails.clone(), 1);
    sup.send(Open {}).await.unwrap().unwrap();
    // Every uid is a VM's: no member starts.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(spawns(&fake).is_empty());
    sup.send(DeleteVm { name: "b".into() })
        .await
        .unwrap()
        .unwrap();
    let pid = real_pids(1)[0];
    member_up(&fake, &jails, dir.path(), 1, UID + 1, pid).await;
    pool_ready(&sup, 1).await;
}
