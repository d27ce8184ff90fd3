//! The sweep after a crash: jails whose VM is gone (or whose VMM is not running) are removed,
//! like every other leaked resource at `Open`. Which jails to keep is the caller's knowledge
//! (the store's uid leases of VMs whose VMM was adopted); this only lists and removes.

use std::path::Path;
use std::time::Duration;

use super::{JailError, Jails};
use crate::firecracker::jailed::check_jailed_identity;
use crate::firecracker::jailer::JailLayout;
use crate::host::processes::{Processes, Signal};

/// How long a stray jailed VMM has to exit after SIGKILL.
const STRAY_KILL_WAIT: Duration = Duration::from_secs(2);

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
