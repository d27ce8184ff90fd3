//! The sweep after a crash: jails whose VM is gone (or whose VMM is not running) are removed,
//! like every other leaked resource at `Open`. Which jails to keep is the caller's knowledge
//! (the store's uid leases of VMs whose VMM was adopted); this only lists and removes.

use std::path::Path;

use super::{JailError, Jails};
use crate::firecracker::jailer::JailLayout;

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
