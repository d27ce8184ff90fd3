//! What the jailer tests (`tests/jailer_*.rs`) share: the real jailer and Firecracker (or a
//! SKIP line), a VMM's status and open files read from `/proc`, a jail's root and cgroups, and
//! a guard that kills a test's jailed VMMs and removes their cgroups on the way out, so a
//! failed assertion leaks nothing.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_actors::host::jails::cgroups::detect_host;

use super::vmm;

/// The real Firecracker and the jailer beside (or named for) it, or `None` after a SKIP line
/// (a failure under `HEARTH_REQUIRE_REAL_FIRECRACKER=1`).
pub fn real_binaries(test: &str) -> Option<(PathBuf, PathBuf)> {
    let fc = vmm::real_firecracker(test)?;
    let jailer = std::env::var_os("HEARTH_JAILER_REAL")
        .map(PathBuf::from)
        .or_else(|| Some(fc.parent()?.join("jailer")))
        .filter(|p| p.is_file());
    let Some(jailer) = jailer else {
        assert!(
            std::env::var(vmm::REQUIRE_REAL_VAR).as_deref() != Ok("1"),
            "{test}: no jailer: set HEARTH_JAILER_REAL"
        );
        hearth_testkit::skip!("SKIP: {test}: no jailer; set HEARTH_JAILER_REAL=/path/to/jailer");
        return None;
    };
    Some((fc, jailer))
}

/// A field of `/proc/<pid>/status`, its words joined by one space.
pub fn status_field(pid: u64, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Whether `pid` runs (exists and is no zombie).
pub fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists() && !status_field(pid, "State").starts_with('Z')
}

/// The (device, inode) of each file open in `pid` (paths read through `/proc/<pid>/fd` are
/// relative to the VMM's chroot, so files are compared by inode).
pub fn open_inodes(pid: u64) -> Vec<(u64, u64)> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .flatten()
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect()
}

/// The (device, inode) of `p`.
pub fn inode(p: &Path) -> (u64, u64) {
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.dev(), m.ino())
}

/// The root directory of jail `uid` under `base` (the `chroot_base_dir`).
pub fn jail_root(base: &Path, uid: u32) -> PathBuf {
    base.join(format!("firecracker/{uid}/root"))
}

/// The files of jail `uid`'s root, sorted.
pub fn jail_files(base: &Path, uid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(jail_root(base, uid))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The host's cgroup directories of jail `uid` (one per v1 controller, or the v2 one).
pub fn cgroup_dirs(uid: u32) -> Vec<PathBuf> {
    detect_host()
        .expect("cgroups")
        .mounts
        .iter()
        .map(|m| m.join("hearth").join(uid.to_string()))
        .collect()
}

/// Nothing of jail `uid` is left: directory, cgroups.
pub fn assert_jail_gone(base: &Path, uid: u32) {
    let dir = base.join(format!("firecracker/{uid}"));
    assert!(!dir.exists(), "{} left", dir.display());
    for cg in cgroup_dirs(uid) {
        assert!(!cg.exists(), "cgroup {} left", cg.display());
    }
}

/// A short chroot base under /tmp (the jailed sockets must fit in 108 bytes) and the guard
/// that kills the jailed VMMs of `uids`. Bind it before hearthd starts, as
/// `let (base, _cleanup) = jail_base("hj", FIRST..=LAST);`: bindings drop in reverse order, so
/// the guard goes after hearthd and before the base (strays killed before their jails go).
pub fn jail_base(prefix: &str, uids: RangeInclusive<u32>) -> (tempfile::TempDir, JailedVmms) {
    let base = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("chroot base");
    (base, JailedVmms { uids })
}

/// On the way out: SIGKILLs the jailed VMMs whose `--id` is in `uids` (a test's own range;
/// `HearthHost` only knows unjailed ones) and removes their cgroups.
pub struct JailedVmms {
    /// The test's uid range.
    pub uids: RangeInclusive<u32>,
}

/// The jailed VMMs now running whose jail id is a uid of `uids`: uid → pid (`/firecracker`
/// as argv\[0\], as the jailer execs it; zombies left out).
pub fn jailed_vmms(uids: &RangeInclusive<u32>) -> BTreeMap<u32, u64> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    let mut found = BTreeMap::new();
    for pid in procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
    {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().map(String::as_str) != Some("/firecracker") || !alive(pid) {
            continue;
        }
        let uid = args
            .windows(2)
            .find(|w| w[0] == "--id")
            .and_then(|w| w[1].parse::<u32>().ok());
        if let Some(uid) = uid.filter(|u| uids.contains(u)) {
            found.insert(uid, pid);
        }
    }
    found
}

impl Drop for JailedVmms {
    fn drop(&mut self) {
        for pid in jailed_vmms(&self.uids).into_values() {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // A killed VMM leaves its cgroups once the kernel has reaped it: each removal is
        // retried until it succeeds or the directory is gone, within a bound.
        let deadline = Instant::now() + Duration::from_secs(2);
        for uid in self.uids.clone() {
            for cg in cgroup_dirs(uid) {
                while std::fs::remove_dir(&cg).is_err() && cg.exists() && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

/// hearthd's `[jailer]` section: jailing on with `jailer`, jails under `base`, VMs given uids
/// from `uids`.
pub fn jail_config(jailer: &Path, base: &Path, uids: &RangeInclusive<u32>) -> String {
    format!(
        "\n[jailer]\nenabled = true\njailer_bin = \"{}\"\nchroot_base_dir = \"{}\"\n\
         uid_range = [{}, {}]\n",
        jailer.display(),
        base.display(),
        uids.start(),
        uids.end()
    )
}
