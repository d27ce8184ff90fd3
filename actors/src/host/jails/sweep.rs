//! The sweep after a crash: jails whose VM is gone (or whose VMM is not running) are removed,
//! like every other leaked resource at `Open`, after every process that may still work on or
//! run in them is killed ([`kill_jail_processes`], [`kill_strays`]). Which jails to keep is the
//! caller's knowledge (the store's uid leases of VMs whose VMM was adopted); this only finds,
//! kills and removes.

use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use super::{JailError, Jails};
use crate::firecracker::jailed::check_jailed_identity;
use crate::firecracker::jailer::{jailer_target, JailLayout};
use crate::host::processes::{ProcessError, Processes, Signal};

/// How long a stray jailed VMM has to exit after SIGKILL.
const STRAY_KILL_WAIT: Duration = Duration::from_secs(2);

/// How many times [`kill_jail_processes`] scans the process list: a jailer killed during one
/// scan may have forked its child just before, which only the next scan sees.
const MAX_SCANS: usize = 8;

/// Which processes [`kill_jail_processes`] kills: those working on a jail of `exec_name`
/// under `base`, or running as a uid of `uids`, unless their jail id is kept.
#[derive(Debug, Clone)]
pub struct JailProcesses<'a> {
    /// The jailer's `--chroot-base-dir`.
    pub base: &'a Path,
    /// The exec file's name.
    pub exec_name: &'a str,
    /// The uids hearth jails VMs as (a dedicated range: nothing else may run as them).
    pub uids: RangeInclusive<u32>,
}

/// What [`kill_jail_processes`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KillReport {
    /// The pids killed (each seen exit).
    pub killed: Vec<u32>,
    /// The processes that did not exit within [`STRAY_KILL_WAIT`] of their SIGKILL (stuck in
    /// the kernel: the pending SIGKILL ends them before they run code of their own again),
    /// could not be signalled, or were still being found after the last scan: pid, and the
    /// uid of the jail they belong to.
    pub left: Vec<(u32, Option<u32>)>,
}

/// Whether process `pid` belongs to a jail that `keep` rejects: it runs as one of
/// `which.uids` whose jail (the uid's id, [`JailLayout::id_for_uid`]) is not kept, or its
/// command line is a jailer's (or its child's before the exec) building such a jail. The uid
/// comes first: a command line is the process's to write, so it can only make a process a
/// target, never spare one. Answers its start time and the jail's uid.
fn targets(
    processes: &dyn Processes,
    which: &JailProcesses<'_>,
    keep: &impl Fn(&str) -> bool,
    pid: u32,
) -> Option<(u64, Option<u32>)> {
    let id = processes.identity(pid).ok()?;
    let uids = processes.uids(pid).ok()?;
    if let Some(uid) = uids.iter().copied().find(|u| which.uids.contains(u)) {
        if !keep(&JailLayout::id_for_uid(uid)) {
            return Some((id.start_time, Some(uid)));
        }
    }
    let jail = jailer_target(&id.cmdline, which.base, which.exec_name)?;
    (!keep(jail)).then(|| (id.start_time, jail.parse().ok()))
}

/// SIGKILLs every process of a jail `keep` rejects and waits for them to exit: jailers that
/// were building one when hearthd died (a jailer runs in its own process group with no
/// parent-death signal, so it outlives hearthd, and a jail without a pid file tells nothing
/// of it), their children, and any process running as such a jail's uid (a VMM exec'd after
/// its jail's pid file was lost). Run before jails are removed and their uids leased again: a
/// survivor would go on as a uid a new VM then gets. Scans until a scan signals nothing (at
/// most [`MAX_SCANS`]; what a last scan still finds is reported `left`); each process is
/// pinned with a pidfd and its start time checked again before the signal, so a recycled pid
/// is never hit; one that has already exited (a zombie not yet reaped) is not signalled.
/// hearthd itself is never a target. The kills of one scan are waited for together.
///
/// # Errors
///
/// The process list cannot be read: nothing was killed, so the caller must not free what
/// those processes may use.
pub async fn kill_jail_processes(
    processes: &dyn Processes,
    which: &JailProcesses<'_>,
    keep: impl Fn(&str) -> bool,
) -> Result<KillReport, ProcessError> {
    let me = std::process::id();
    let mut report = KillReport::default();
    for scan in 0..=MAX_SCANS {
        let found: Vec<(u32, (u64, Option<u32>))> = processes
            .list()?
            .into_iter()
            .filter(|pid| *pid != me && !report.left.iter().any(|(p, _)| p == pid))
            .filter_map(|pid| Some((pid, targets(processes, which, &keep, pid)?)))
            .collect();
        let mut signalled = Vec::new();
        for (pid, (start_time, uid)) in found {
            let Ok(process) = processes.open(pid) else {
                continue; // gone meanwhile
            };
            // Pinned: still the process that was read (not a recycled pid), and not a zombie?
            let same = processes
                .identity(pid)
                .is_ok_and(|id| id.start_time == start_time);
            if !same || process.has_exited() {
                continue;
            }
            if scan == MAX_SCANS {
                // Still being found after every scan (something keeps forking): reported.
                report.left.push((pid, uid));
            } else if process.signal(Signal::Kill).is_ok() {
                signalled.push((pid, uid, process));
            } else {
                report.left.push((pid, uid));
            }
        }
        if signalled.is_empty() {
            break;
        }
        let waits = signalled.into_iter().map(|(pid, uid, process)| async move {
            let exited = tokio::time::timeout(STRAY_KILL_WAIT, process.wait())
                .await
                .is_ok();
            (pid, uid, exited)
        });
        for (pid, uid, exited) in futures::future::join_all(waits).await {
            if exited {
                report.killed.push(pid);
            } else {
                report.left.push((pid, uid));
            }
        }
    }
    Ok(report)
}

/// Before a [`sweep`]: SIGKILLs the VMM still running in each jail `keep` rejects (a VMM
/// spawned but never recorded, or one that failed adoption), so its jail and cgroups can
/// go. A pid is signalled only through a pidfd and only when it is that jail's VMM (command
/// line and root checked); answers the pids killed.
pub async fn kill_strays(
    jails: &dyn Jails,
    processes: &dyn Processes,
    base: &Path,
    exec_file: &Path,
    keep: impl Fn(&str) -> bool,
) -> Vec<u32> {
    let exec_name = exec_file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut killed = Vec::new();
    for id in jails.list(exec_name).unwrap_or_default() {
        if keep(&id) {
            continue;
        }
        let Ok(layout) = JailLayout::new(base, exec_file, &id) else {
            continue;
        };
        // No pid file: the jailer never got that far, nothing runs.
        let Ok(pid) = jails.read_pid(&layout) else {
            continue;
        };
        let Ok(process) = processes.open(pid) else {
            continue;
        };
        let ours = processes
            .identity(pid)
            .is_ok_and(|id| check_jailed_identity(&layout, pid, &id).is_ok());
        if !ours || process.has_exited() {
            continue;
        }
        if process.signal(Signal::Kill).is_ok()
            && tokio::time::timeout(STRAY_KILL_WAIT, process.wait())
                .await
                .is_ok()
        {
            killed.push(pid);
        }
    }
    killed
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct SweepReport {
    /// Jail ids removed.
    pub removed: Vec<String>,
    /// Jail ids kept (in use).
    pub kept: Vec<String>,
    /// Jails that could not be removed, with why (left for the next sweep).
    pub failed: Vec<(String, JailError)>,
}

/// Removes every jail under `base` for `exec_file` whose id `keep` rejects. An entry that is
/// not a valid jail id is left alone (not hearth's).
pub fn sweep(
    jails: &dyn Jails,
    base: &Path,
    exec_file: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<SweepReport, JailError> {
    let exec_name = exec_file
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let mut report = SweepReport::default();
    for id in jails.list(exec_name)? {
        if keep(&id) {
            report.kept.push(id);
            continue;
        }
        let Ok(layout) = JailLayout::new(base, exec_file, &id) else {
            continue;
        };
        match jails.remove(&layout) {
            Ok(()) => report.removed.push(id),
            Err(e) => report.failed.push((id, e)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firecracker::jailer::JailLayout;
    use crate::host::jails::{FakeJails, JailPlan};
    use crate::host::processes::fake::{FakeCall, FakeProcesses};
    use crate::host::processes::ProcessIdentity;

    fn proc_id(start_time: u64, cmdline: &str) -> ProcessIdentity {
        ProcessIdentity {
            start_time,
            cmdline: cmdline.split(' ').map(String::from).collect(),
        }
    }

    #[actix::test]
    async fn kills_jailers_their_children_and_uids_of_jails_not_kept() {
        let fake = FakeProcesses::new();
        let jailer = |id: &str, base: &str| {
            format!(
                "/usr/bin/jailer --id {id} --exec-file /fc/firecracker --uid {id} \
                 --chroot-base-dir {base} --new-pid-ns -- --api-sock /run/api.sock"
            )
        };
        // A jailer mid-start for a jail no live VM holds (running as root), which forks its
        // child just as it is killed: the child shows the jailer's command line.
        fake.set_identity(10, proc_id(1, &jailer("900005", "/srv/j")));
        fake.appear_on_kill(10, 16, proc_id(2, &jailer("900005", "/srv/j")));
        // The adopted VM's VMM, running as its kept uid.
        fake.set_identity(
            11,
            proc_id(3, "/firecracker --id 900001 --api-sock /run/api.sock"),
        );
        fake.set_uid(11, 900_001);
        // An orphan VMM of a uid no VM holds, its jail's pid file lost.
        fake.set_identity(
            12,
            proc_id(4, "/firecracker --id 900002 --api-sock /run/api.sock"),
        );
        fake.set_uid(12, 900_002);
        // Not hearth's: a user outside the range, a jailer under another base.
        fake.set_identity(13, proc_id(5, "/usr/bin/sleep 100"));
        fake.set_uid(13, 1000);
        fake.set_identity(14, proc_id(6, &jailer("900006", "/elsewhere")));
        // A jailer building the kept VM's jail is left (its VM's record says it runs there).
        fake.set_identity(15, proc_id(7, &jailer("900001", "/srv/j")));

        let which = JailProcesses {
            base: Path::new("/srv/j"),
            exec_name: "firecracker",
            uids: 900_000..=900_099,
        };
        let mut r = kill_jail_processes(&fake, &which, |id| id == "900001")
            .await
            .unwrap();
        r.killed.sort_unstable();
        assert_eq!(
            r.killed,
            [10, 12, 16],
            "the child is found by a second scan"
        );
        assert!(r.left.is_empty());
        let mut signalled = fake.killed();
        signalled.sort_unstable();
        assert_eq!(signalled, [10, 12, 16]);
        assert_eq!(fake.signals().len(), 3, "nothing else was signalled");
        assert_eq!(fake.list().unwrap(), [11, 13, 14, 15]);

        // Nothing left to kill: one scan, no signal.
        let again = kill_jail_processes(&fake, &which, |id| id == "900001")
            .await
            .unwrap();
        assert_eq!(again, KillReport::default());
    }

    fn which() -> JailProcesses<'static> {
        JailProcesses {
            base: Path::new("/srv/j"),
            exec_name: "firecracker",
            uids: 900_000..=900_099,
        }
    }

    /// A command line is the process's own: one naming a kept jail spares no process that
    /// runs as a uid no VM holds. A zombie (exited, not reaped) is not signalled, and does
    /// not keep the scans going.
    #[actix::test]
    async fn the_uid_decides_before_the_command_line_and_zombies_are_left_alone() {
        let fake = FakeProcesses::new();
        let posing = "jailer --id 900001 --exec-file /fc/firecracker --chroot-base-dir /srv/j";
        fake.set_identity(30, proc_id(1, posing));
        fake.set_uid(30, 900_004);
        fake.set_identity(31, proc_id(2, "/firecracker --id 900005"));
        fake.set_uid(31, 900_005);
        fake.set_zombie(31);
        let r = kill_jail_processes(&fake, &which(), |id| id == "900001")
            .await
            .unwrap();
        assert_eq!(
            r,
            KillReport {
                killed: vec![30],
                left: vec![]
            }
        );
        assert_eq!(
            fake.signals(),
            [Signal::Kill],
            "the zombie is not signalled"
        );
        let opens = fake
            .calls()
            .iter()
            .filter(|c| **c == FakeCall::Open(31))
            .count();
        assert_eq!(
            opens, 2,
            "seen by the scan that killed 30 and the one after, no more"
        );
    }

    /// Something that forks anew at every kill is chased for [`MAX_SCANS`] scans; what the
    /// last scan still finds is reported left, with its jail's uid.
    #[actix::test]
    async fn a_process_found_after_the_last_scan_is_reported_left() {
        let fake = FakeProcesses::new();
        let count = u32::try_from(MAX_SCANS).unwrap();
        let id = |n: u32| proc_id(u64::from(n), &format!("/firecracker --id {n}"));
        fake.set_identity(100, id(100));
        fake.set_uid(100, 900_006);
        for pid in 100..100 + count {
            fake.appear_on_kill(pid, pid + 1, id(pid + 1));
            fake.set_uid(pid + 1, 900_006);
        }
        let r = kill_jail_processes(&fake, &which(), |_| false)
            .await
            .unwrap();
        assert_eq!(r.killed, (100..100 + count).collect::<Vec<_>>());
        assert_eq!(r.left, [(100 + count, Some(900_006))]);
    }

    #[actix::test]
    async fn a_process_that_ignores_the_kill_is_reported_left() {
        let fake = FakeProcesses::new();
        fake.ignore(Signal::Kill);
        fake.set_identity(20, proc_id(1, "/firecracker --id 900003"));
        fake.set_uid(20, 900_003);
        let which = JailProcesses {
            base: Path::new("/srv/j"),
            exec_name: "firecracker",
            uids: 900_000..=900_099,
        };
        let r = kill_jail_processes(&fake, &which, |_| false).await.unwrap();
        assert_eq!(
            r,
            KillReport {
                killed: vec![],
                left: vec![(20, Some(900_003))]
            }
        );
    }

    fn make(j: &FakeJails, id: &str) {
        let layout =
            JailLayout::new(Path::new("/srv/j"), Path::new("/fc/firecracker"), id).unwrap();
        j.prepare(&JailPlan {
            layout,
            uid: 1000,
            gid: 1000,
            files: vec![],
        })
        .unwrap();
    }

    #[test]
    fn removes_what_is_not_kept_and_reports_failures() {
        let j = FakeJails::new();
        for id in ["900001", "900002", "900003"] {
            make(&j, id);
        }
        let r = sweep(
            &j,
            Path::new("/srv/j"),
            Path::new("/fc/firecracker"),
            |id| id == "900002",
        )
        .unwrap();
        assert_eq!(r.removed, ["900001", "900003"]);
        assert_eq!(r.kept, ["900002"]);
        assert!(r.failed.is_empty());
        assert_eq!(j.jails(), ["900002"]);

        make(&j, "900004");
        j.fail_next("remove");
        let r = sweep(
            &j,
            Path::new("/srv/j"),
            Path::new("/fc/firecracker"),
            |id| id == "900002",
        )
        .unwrap();
        assert_eq!(r.failed.len(), 1);
        assert_eq!(j.jails(), ["900002", "900004"], "left for the next sweep");
    }
}
