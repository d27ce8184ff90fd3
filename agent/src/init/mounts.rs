//! The file systems a guest's init mounts before anything else runs: `/proc`, `/sys`, `/dev`
//! (devtmpfs), `/dev/pts`, `/dev/shm`, `/run`, `/tmp`. What is already mounted is left alone
//! (a kernel with `CONFIG_DEVTMPFS_MOUNT` mounts `/dev` itself); a missing mount point is
//! created. A failure is reported and the rest still mounted: an init must not stop half-way.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// One mount init makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MountSpec {
    /// The source (the file system's name for virtual ones).
    pub source: &'static str,
    /// The mount point, absolute.
    pub target: &'static str,
    /// The file system type.
    pub fstype: &'static str,
    /// `MS_*` flags.
    pub flags: libc::c_ulong,
    /// File-system-specific options.
    pub data: &'static str,
}

const SAFE: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

/// The mounts, in order (`/proc` first: the others are checked against its mount table).
pub const MOUNTS: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: SAFE | libc::MS_NOEXEC,
        data: "",
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: SAFE | libc::MS_NOEXEC,
        data: "",
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: "mode=0755",
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "gid=5,mode=0620,ptmxmode=0666",
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: SAFE,
        data: "mode=1777",
    },
    MountSpec {
        source: "run",
        target: "/run",
        fstype: "tmpfs",
        flags: SAFE,
        data: "mode=0755",
    },
    MountSpec {
        source: "tmp",
        target: "/tmp",
        fstype: "tmpfs",
        flags: SAFE,
        data: "mode=1777",
    },
];

/// What happened to one mount.
#[derive(Debug)]
pub enum MountOutcome {
    /// Mounted now.
    Mounted,
    /// Something was mounted there already.
    AlreadyMounted,
    /// Mounting failed.
    Failed(io::Error),
}

/// The mount points in the mount table (`/proc/self/mounts`), or none when it cannot be read.
fn mounted_targets() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|t| {
            t.lines()
                .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Mounts one file system, creating its mount point.
///
/// # Errors
///
/// Creating the directory or the `mount(2)` call failed.
pub fn mount(m: &MountSpec) -> io::Result<()> {
    std::fs::create_dir_all(m.target)?;
    let (source, target, fstype, data) = (
        cstr(m.source)?,
        cstr(m.target)?,
        cstr(m.fstype)?,
        cstr(m.data)?,
    );
    // SAFETY: NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            m.flags,
            data.as_ptr().cast(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Mounts every entry of [`MOUNTS`] that is not mounted yet.
pub fn mount_all() -> Vec<(&'static str, MountOutcome)> {
    let mut out = Vec::with_capacity(MOUNTS.len());
    for m in MOUNTS {
        // /proc itself is what lists the mounts: before it, /proc/self tells.
        let already = if m.target == "/proc" {
            Path::new("/proc/self/stat").exists()
        } else {
            mounted_targets().iter().any(|t| t == m.target)
        };
        let outcome = if already {
            MountOutcome::AlreadyMounted
        } else {
            match mount(m) {
                Ok(()) => MountOutcome::Mounted,
                Err(e) => MountOutcome::Failed(e),
            }
        };
        out.push((m.target, outcome));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_comes_first_and_every_target_is_absolute() {
        assert_eq!(MOUNTS[0].target, "/proc");
        for m in MOUNTS {
            assert!(m.target.starts_with('/'), "{m:?}");
        }
        // /dev/pts and /dev/shm come after /dev, or devtmpfs would hide them.
        let pos = |t: &str| MOUNTS.iter().position(|m| m.target == t).unwrap();
        assert!(pos("/dev") < pos("/dev/pts") && pos("/dev") < pos("/dev/shm"));
    }
}
