//! [`Jails`] on Linux: directories, hard links (or read-only bind mounts across filesystems),
//! device nodes, `chown`, the TAP ioctls, and the cgroup directories the jailer made.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{mknod, Mode, SFlag};

use super::cgroups::{own_cgroup, CgroupHost};
use super::{check_name, JailError, JailPlan, Jails};
use crate::firecracker::jailer::{CgroupVersion, JailLayout, CONTROLLERS};

/// The TUN ioctls (a private module: the macros make public functions).
mod ioctls {
    // TUNSETIFF is declared `_IOW('T', 202, int)` but takes a `struct ifreq *`, hence "bad".
    nix::ioctl_write_ptr_bad!(tun_set_iff, libc::TUNSETIFF, libc::ifreq);
    nix::ioctl_write_int!(tun_set_owner, b'T', 204);
    nix::ioctl_write_int!(tun_set_group, b'T', 206);
}
use ioctls::{tun_set_group, tun_set_iff, tun_set_owner};

/// The flags Firecracker attaches with (attaching with others fails on a `IFF_VNET_HDR` TAP).
const ATTACH_FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

/// The real backend: jails under `chroot_base`, VMM cgroups in `cgroups`.
#[derive(Debug, Clone)]
pub struct LinuxJails {
    chroot_base: PathBuf,
    cgroups: CgroupHost,
    warm_attach: bool,
    /// Set while a warm-up thread runs: spawns at once share its grace period.
    warming: Arc<AtomicBool>,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> JailError {
    let path = path.to_path_buf();
    move |source| JailError::Io { op, path, source }
}

fn nix_io(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl LinuxJails {
    /// A backend for jails under `chroot_base` (the jailer's `--chroot-base-dir`).
    pub fn new(chroot_base: impl Into<PathBuf>, cgroups: CgroupHost) -> Self {
        LinuxJails {
            chroot_base: chroot_base.into(),
            cgroups,
            warm_attach: true,
            warming: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The same backend without [`LinuxJails::start_attach_grace_period`] (to measure what it
    /// saves).
    #[must_use]
    pub fn without_attach_warmup(mut self) -> Self {
        self.warm_attach = false;
        self
    }

    /// The cgroup hierarchy in use.
    pub fn cgroups(&self) -> &CgroupHost {
        &self.cgroups
    }

    /// Puts one file in the jail root: a device node, a hard link, or (when `bind` allows
    /// and the source is on another filesystem) a bind mount.
    fn put_file(plan: &JailPlan, file: &super::JailFile, bind: bool) -> Result<(), JailError> {
        check_name(&file.name)?;
        let target = plan.layout.root().join(&file.name);
        let meta = fs::metadata(&file.source).map_err(io_err("stat", &file.source))?;
        if meta.file_type().is_block_device() {
            // A device-mapper disk: the same device number inside, for the VM's uid only.
            let dev = meta.rdev();
            mknod(
                &target,
                SFlag::S_IFBLK,
                Mode::from_bits_truncate(0o600),
                dev,
            )
            .map_err(|e| io_err("create device node", &target)(nix_io(e)))?;
            return chown(&target, plan.uid, plan.gid);
        }
        if !meta.is_file() {
            return Err(io_err("use", &file.source)(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file or block device",
            )));
        }
        match fs::hard_link(&file.source, &target) {
            Ok(()) => {}
            Err(e) if bind && e.raw_os_error() == Some(libc::EXDEV) => {
                bind_read_only(&file.source, &target, file.writable)?;
            }
            Err(e) => return Err(io_err("hard-link", &target)(e)),
        }
        if file.writable {
            // The inode is shared with the source: this is the VM's own disk.
            chown(&target, plan.uid, plan.gid)?;
        }
        Ok(())
    }

    fn prepare_inner(plan: &JailPlan) -> Result<(), JailError> {
        let root = plan.layout.root();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(plan.layout.jail_dir())
            .map_err(io_err("create", &plan.layout.jail_dir()))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&root)
            .map_err(io_err("create", &root))?;
        for file in &plan.files {
            Self::put_file(plan, file, true)?;
        }
        Ok(())
    }

    /// The cgroup file `file` (e.g. `memory.limit_in_bytes`) of jail `layout`: in its
    /// controller's hierarchy on v1, in the unified one on v2.
    fn cgroup_file(&self, layout: &JailLayout, file: &str) -> Option<PathBuf> {
        let mount = match self.cgroups.version {
            CgroupVersion::V2 => self.cgroups.mounts.first()?,
            CgroupVersion::V1 => {
                let controller = file.split('.').next()?;
                let i = CONTROLLERS.iter().position(|c| *c == controller)?;
                self.cgroups.mounts.get(i)?
            }
        };
        Some(
            layout
                .cgroup_dirs(std::slice::from_ref(mount))
                .pop()?
                .join(file),
        )
    }

    fn cgroup_dirs(&self, layout: &JailLayout) -> Vec<PathBuf> {
        layout.cgroup_dirs(&self.cgroups.mounts)
    }

    /// Starts, on a short-lived thread, the wait the jailer's first cgroup attach would
    /// otherwise begin only once it gets there. On cgroup v1 every move of a task into a
    /// cgroup takes a global lock whose writer first waits for an RCU grace period (10-20 ms
    /// here), unless another writer went through it moments before. The thread moves itself
    /// into the cgroup it is already in, which changes nothing but starts that grace period
    /// now, while the jail is made and the jailer starts and copies its binary. Failures are
    /// ignored: this only saves time. One at a time: spawns at once share one grace period
    /// (each more thread would only queue on the cgroup lock with the jailers). Not done on
    /// v2, untried there (moving a lone thread needs a threaded cgroup).
    fn start_attach_grace_period(&self) {
        if !self.warm_attach || self.cgroups.version != CgroupVersion::V1 {
            return;
        }
        let Some(mount) = CONTROLLERS
            .iter()
            .position(|c| *c == WARM_CONTROLLER)
            .and_then(|i| self.cgroups.mounts.get(i))
            .cloned()
        else {
            return;
        };
        if self.warming.swap(true, Ordering::AcqRel) {
            return;
        }
        let warming = self.warming.clone();
        let started = std::thread::Builder::new()
            .name("cgroup-warm".into())
            .spawn(move || {
                let _ = move_self_in_place(&mount);
                warming.store(false, Ordering::Release);
            });
        if started.is_err() {
            self.warming.store(false, Ordering::Release);
        }
    }
}

/// The v1 hierarchy [`LinuxJails::start_attach_grace_period`] writes in (any would do: the
/// lock is global); pids, because its move has no charge to carry.
const WARM_CONTROLLER: &str = "pids";

/// Writes the calling thread's id into the `tasks` file of the cgroup it is in, in the v1
/// hierarchy of [`WARM_CONTROLLER`] mounted at `mount`: a move to where it already is.
fn move_self_in_place(mount: &Path) -> io::Result<()> {
    let text = fs::read_to_string("/proc/thread-self/cgroup")?;
    let path = own_cgroup(&text, WARM_CONTROLLER)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no pids line"))?;
    let tasks = mount.join(path.trim_start_matches('/')).join("tasks");
    fs::write(tasks, nix::unistd::gettid().to_string())
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), JailError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_err("chown", path))
}

/// Bind-mounts `source` on a new empty file `target`, read-only unless `writable`.
fn bind_read_only(source: &Path, target: &Path, writable: bool) -> Result<(), JailError> {
    fs::File::create(target).map_err(io_err("create", target))?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| io_err("bind-mount", target)(nix_io(e)))?;
    if !writable {
        // A bind mount takes read-only only on a remount.
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(io_err("remount read-only", target)(nix_io(e)));
        }
    }
    Ok(())
}

/// The mount points at or under `dir`, deepest first, from `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, JailError> {
    let info = Path::new("/proc/self/mountinfo");
    let text = fs::read_to_string(info).map_err(io_err("read", info))?;
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    Ok(found)
}

impl Jails for LinuxJails {
    fn prepare(&self, plan: &JailPlan) -> Result<(), JailError> {
        self.start_attach_grace_period();
        // A stale jail of the same id makes the jailer fail (mknod EEXIST).
        self.remove(&plan.layout)?;
        Self::prepare_inner(plan).inspect_err(|_| {
            let _ = self.remove(&plan.layout);
        })
    }

    fn read_pid(&self, layout: &JailLayout) -> Result<u32, JailError> {
        let path = layout.pid_file();
        let content = fs::read_to_string(&path).map_err(io_err("read", &path))?;
        content
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or(JailError::BadPidFile { path, content })
    }

    fn set_tap_owner(&self, name: &str, owner: Option<(u32, u32)>) -> Result<(), JailError> {
        crate::host::links::check_ifname(name)
            .map_err(|_| JailError::BadName { name: name.into() })?;
        let tap_err = |op: &'static str| {
            let name = name.to_string();
            move |source| JailError::Tap { op, name, source }
        };
        let fd = open(
            "/dev/net/tun",
            OFlag::O_RDWR | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(tap_err("open /dev/net/tun"))?;
        // SAFETY: an all-zero ifreq is valid (name of NULs, union of integers/null pointers).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = ATTACH_FLAGS as libc::c_short;
        // SAFETY: fd is an open /dev/net/tun descriptor and req a valid ifreq.
        unsafe { tun_set_iff(fd.as_raw_fd(), &raw const req) }.map_err(tap_err("TUNSETIFF"))?;
        // The kernel refuses to set "no owner" again (EINVAL for uid -1): back to root means
        // owned by root, which only root (or CAP_NET_ADMIN) may attach to.
        let (uid, gid) = owner.unwrap_or((0, 0));
        let (uid, gid) = (libc::c_ulong::from(uid), libc::c_ulong::from(gid));
        // SAFETY: integer-argument ioctls on our open tun descriptor.
        unsafe { tun_set_owner(fd.as_raw_fd(), uid) }.map_err(tap_err("TUNSETOWNER"))?;
        // SAFETY: as above.
        unsafe { tun_set_group(fd.as_raw_fd(), gid) }.map_err(tap_err("TUNSETGROUP"))?;
        // Dropping fd detaches us; the TAP is persistent.
        Ok(())
    }

    fn remove(&self, layout: &JailLayout) -> Result<(), JailError> {
        let dir = layout.jail_dir();
        // Nothing can be mounted under a directory that does not exist: the mount table
        // (long with many jails present) is read only when there is a jail to remove.
        let absent =
            matches!(fs::symlink_metadata(&dir), Err(e) if e.kind() == io::ErrorKind::NotFound);
        if !absent {
            for m in mounts_under(&dir)? {
                match umount2(&m, MntFlags::MNT_DETACH) {
                    Ok(()) | Err(nix::Error::EINVAL | nix::Error::ENOENT) => {}
                    Err(e) => return Err(io_err("unmount", &m)(nix_io(e))),
                }
            }
            match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &dir)(e)),
            }
        }
        for cg in self.cgroup_dirs(layout) {
            match fs::remove_dir(&cg) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove cgroup", &cg)(e)),
            }
        }
        Ok(())
    }

    fn list(&self, exec_name: &str) -> Result<Vec<String>, JailError> {
        check_name(exec_name)?;
        let dir = self.chroot_base.join(exec_name);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            if let Some(name) = entry.file_name().to_str() {
                ids.push(name.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn lend(
        &self,
        layout: &JailLayout,
        source: &Path,
        name: &str,
        owner: (u32, u32),
    ) -> Result<PathBuf, JailError> {
        super::handoff::lend(layout, source, name, owner)
    }

    fn unlend(&self, layout: &JailLayout, source: &Path, name: &str) -> Result<(), JailError> {
        super::handoff::unlend(layout, source, name)
    }

    fn take_out(&self, layout: &JailLayout, name: &str, dest: &Path) -> Result<(), JailError> {
        super::handoff::take_out(layout, name, dest)
    }

    fn discard(&self, layout: &JailLayout, name: &str) -> Result<(), JailError> {
        super::handoff::discard(layout, name)
    }

    fn add_files(&self, plan: &JailPlan) -> Result<(), JailError> {
        let root = plan.layout.root();
        // The jail already holds the jailer's files (the binary, `dev/`, `run/`, the pid
        // file): a name taken is refused before anything is made, so the undo below only
        // ever removes what this call made.
        for file in &plan.files {
            check_name(&file.name)?;
            let target = root.join(&file.name);
            if fs::symlink_metadata(&target).is_ok() {
                return Err(io_err("add", &target)(io::Error::from(
                    io::ErrorKind::AlreadyExists,
                )));
            }
        }
        for (i, file) in plan.files.iter().enumerate() {
            if let Err(e) = Self::put_file(plan, file, false) {
                for made in &plan.files[..=i] {
                    let _ = fs::remove_file(root.join(&made.name));
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn set_limits(
        &self,
        layout: &JailLayout,
        limits: &crate::firecracker::jailer::JailLimits,
    ) -> Result<(), JailError> {
        for (file, value) in limits.cgroup_settings(self.cgroups.version) {
            let path = self.cgroup_file(layout, &file).ok_or_else(|| {
                io_err("find the cgroup of", Path::new(&file))(io::Error::new(
                    io::ErrorKind::NotFound,
                    "no hierarchy for this controller",
                ))
            })?;
            fs::write(&path, value).map_err(io_err("write", &path))?;
        }
        Ok(())
    }

    fn share_read_only(&self, dir: &Path, files: &[PathBuf]) -> Result<(), JailError> {
        super::handoff::share_read_only(dir, files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::jails::cgroups::detect_host;

    /// The grace-period start is a move to where the thread already is: it succeeds on a
    /// cgroup-v1 host and leaves the thread's cgroups as they were.
    #[test]
    fn moving_self_in_place_changes_no_cgroup() {
        let host = match detect_host() {
            Ok(h) if h.version == CgroupVersion::V1 => h,
            _ => return eprintln!("SKIP: moving_self_in_place_changes_no_cgroup: no cgroup v1"),
        };
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var("HEARTH_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
                "HEARTH_REQUIRE_PRIVILEGED=1 but not root"
            );
            return eprintln!("SKIP: moving_self_in_place_changes_no_cgroup: not root");
        }
        let i = CONTROLLERS
            .iter()
            .position(|c| *c == WARM_CONTROLLER)
            .unwrap();
        let mount = host.mounts[i].clone();
        std::thread::spawn(move || {
            let before = fs::read_to_string("/proc/thread-self/cgroup").unwrap();
            move_self_in_place(&mount).unwrap();
            let after = fs::read_to_string("/proc/thread-self/cgroup").unwrap();
            assert_eq!(before, after);
        })
        .join()
        .unwrap();
        // A hierarchy that is not there is an error, not a panic.
        assert!(move_self_in_place(Path::new("/proc/no-such-cgroup-mount")).is_err());
    }
}
