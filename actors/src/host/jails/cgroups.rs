//! Which cgroup hierarchy the jailer can use here, read from the mount table: cgroup v2 when
//! the unified hierarchy offers every controller hearth limits, else v1 when each of them has
//! its own mount. The parsing is pure ([`detect`], [`own_cgroup`]); [`detect_host`] reads the
//! host's files.

use std::path::{Path, PathBuf};

use crate::firecracker::jailer::{CgroupVersion, CONTROLLERS};

/// The cgroup hierarchy the VMM cgroups go in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupHost {
    /// `--cgroup-version`.
    pub version: CgroupVersion,
    /// v1: the mount of each controller of [`CONTROLLERS`], in that order; v2: the unified
    /// hierarchy's mount.
    pub mounts: Vec<PathBuf>,
}

/// Picks the hierarchy from `/proc/self/mounts` text; `v2_controllers` reads a cgroup2 mount's
/// `cgroup.controllers`. `Err` says why neither works.
pub fn detect(
    mounts: &str,
    v2_controllers: impl Fn(&Path) -> Option<String>,
) -> Result<CgroupHost, String> {
    let mut v1: Vec<Option<PathBuf>> = vec![None; CONTROLLERS.len()];
    let mut v2_problem = "no cgroup2 mount".to_string();
    for line in mounts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, dir, fstype, opts, ..] = fields[..] else {
            continue;
        };
        let dir = PathBuf::from(dir.replace("\\040", " "));
        match fstype {
            "cgroup2" => {
                let have = v2_controllers(&dir).unwrap_or_default();
                let have: Vec<&str> = have.split_whitespace().collect();
                let missing: Vec<&str> = CONTROLLERS
                    .iter()
                    .copied()
                    .filter(|c| !have.contains(c))
                    .collect();
                if missing.is_empty() {
                    return Ok(CgroupHost {
                        version: CgroupVersion::V2,
                        mounts: vec![dir],
                    });
                }
                v2_problem = format!(
                    "cgroup2 at {} lacks the {} controller(s)",
                    dir.display(),
                    missing.join(", ")
                );
            }
            "cgroup" => {
                let opts: Vec<&str> = opts.split(',').collect();
                for (i, c) in CONTROLLERS.iter().enumerate() {
                    if opts.contains(c) && v1[i].is_none() {
                        v1[i] = Some(dir.clone());
                    }
                }
            }
            _ => {}
        }
    }
    if v1.iter().all(Option::is_some) {
        return Ok(CgroupHost {
            version: CgroupVersion::V1,
            mounts: v1.into_iter().flatten().collect(),
        });
    }
    let missing: Vec<&str> = CONTROLLERS
        .iter()
        .zip(&v1)
        .filter(|(_, m)| m.is_none())
        .map(|(c, _)| *c)
        .collect();
    Err(format!(
        "{v2_problem}, and cgroup v1 has no {} hierarchy",
        missing.join(", ")
    ))
}

/// [`detect`] on this host's `/proc/self/mounts`.
pub fn detect_host() -> Result<CgroupHost, String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| format!("cannot read /proc/self/mounts: {e}"))?;
    detect(&mounts, |dir| {
        std::fs::read_to_string(dir.join("cgroup.controllers")).ok()
    })
}

/// The cgroup a task is in within the v1 hierarchy of `controller`, from the text of its
/// `/proc/<pid>/cgroup` (`<id>:<controllers>:<path>` lines); `None` when no line names it.
pub fn own_cgroup<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then_some(path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";

    #[test]
    fn hybrid_host_uses_v1_when_v2_has_no_controllers() {
        let host = detect(HYBRID, |_| Some(String::new())).unwrap();
        assert_eq!(host.version, CgroupVersion::V1);
        assert_eq!(
            host.mounts,
            [
                Path::new("/sys/fs/cgroup/memory"),
                Path::new("/sys/fs/cgroup/cpu"),
                Path::new("/sys/fs/cgroup/pids"),
            ]
        );
    }

    #[test]
    fn unified_host_uses_v2() {
        let m = "cgroup2 /sys/fs/cgroup cgroup2 rw,nsdelegate 0 0\n";
        let host = detect(m, |_| Some("cpuset cpu io memory pids\n".into())).unwrap();
        assert_eq!(host.version, CgroupVersion::V2);
        assert_eq!(host.mounts, [Path::new("/sys/fs/cgroup")]);
    }

    #[test]
    fn combined_v1_mounts_are_found() {
        let m = "cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,cpu,cpuacct 0 0\n\
                 cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n\
                 cgroup /sys/fs/cgroup/pids cgroup rw,pids 0 0\n";
        let host = detect(m, |_| None).unwrap();
        assert_eq!(host.mounts[1], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
    }

    #[test]
    fn own_cgroup_reads_the_line_of_the_controller() {
        let text = "9:name=systemd:/\n8:pids:/a/b\n2:cpu,cpuacct:/c:d\n0::/\n";
        assert_eq!(own_cgroup(text, "pids"), Some("/a/b"));
        // A path may hold ':'; a controller is matched whole in a combined mount.
        assert_eq!(own_cgroup(text, "cpuacct"), Some("/c:d"));
        assert_eq!(own_cgroup(text, "cpu"), Some("/c:d"));
        assert_eq!(own_cgroup(text, "memory"), None);
        assert_eq!(own_cgroup(text, "systemd"), None);
        assert_eq!(own_cgroup("garbage\n", "pids"), None);
    }

    #[test]
    fn says_why_neither_works() {
        let m = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n\
                 cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n";
        let err = detect(m, |_| Some("memory io".into())).unwrap_err();
        assert!(err.contains("lacks the cpu, pids"), "{err}");
        assert!(err.contains("no cpu, pids hierarchy"), "{err}");
        assert!(detect("", |_| None)
            .unwrap_err()
            .contains("no cgroup2 mount"));
    }
}
