//! The per-VM run directory `<base>/<vm id>/` and the files in it: the API socket, the vsock
//! socket (and Firecracker's `<vsock>_<port>` sockets beside it), the console FIFO and log, and
//! Firecracker's log and metrics files. Names are short on purpose: every socket path must fit
//! in `sun_path` (108 bytes with the NUL), which is checked before anything is created.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::FirecrackerError;

/// The longest socket path Linux accepts (`sun_path` is 108 bytes including the NUL).
pub const SUN_PATH_MAX: usize = 107;

/// The longest `_<port>` suffix Firecracker appends to the vsock path (`_4294967295`).
const MAX_PORT_SUFFIX: &str = "_4294967295";

/// Checks a VM id the way Firecracker checks `--id`: 1-64 ASCII alphanumerics or `-`.
pub fn validate_vm_id(id: &str) -> Result<(), FirecrackerError> {
    let ok =
        (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FirecrackerError::InvalidId { id: id.into() })
    }
}

/// Checks that a socket path fits in `sun_path`.
pub fn check_socket_path(path: &Path) -> Result<(), FirecrackerError> {
    let len = path.as_os_str().len();
    if len > SUN_PATH_MAX {
        return Err(FirecrackerError::SocketPathTooLong {
            path: path.into(),
            len,
            max: SUN_PATH_MAX,
        });
    }
    Ok(())
}

/// One VM's run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    dir: PathBuf,
    /// Where the API and vsock sockets are: the directory itself, or the jail's `run/`
    /// for a jailed VMM ([`RunDir::with_socket_dir`]).
    sockets: PathBuf,
}

impl RunDir {
    /// The run directory of `vm_id` under `base`, after checking the id and that every socket
    /// path (including the longest possible vsock port socket) fits in `sun_path`.
    /// Creates nothing.
    pub fn new(base: &Path, vm_id: &str) -> Result<Self, FirecrackerError> {
        validate_vm_id(vm_id)?;
        let rd = RunDir {
            dir: base.join(vm_id),
            sockets: base.join(vm_id),
        };
        check_socket_path(&rd.api_socket())?;
        let mut longest = rd.vsock_socket().into_os_string();
        longest.push(MAX_PORT_SUFFIX);
        check_socket_path(Path::new(&longest))?;
        Ok(rd)
    }

    /// The same directory with the sockets in `sockets` (a jail's `run/`, whose socket
    /// lengths `firecracker::jailer::JailLayout::new` has checked); the console and logs stay.
    #[must_use]
    pub fn with_socket_dir(mut self, sockets: PathBuf) -> Self {
        self.sockets = sockets;
        self
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Firecracker's API socket (`--api-sock`).
    pub fn api_socket(&self) -> PathBuf {
        self.sockets.join("api.sock")
    }

    /// The hybrid vsock socket (`uds_path`).
    pub fn vsock_socket(&self) -> PathBuf {
        self.sockets.join("v.sock")
    }

    /// The socket Firecracker connects to for a guest-initiated connection to host port `port`.
    pub fn vsock_port_socket(&self, port: u32) -> PathBuf {
        let mut p = self.vsock_socket().into_os_string();
        p.push(format!("_{port}"));
        p.into()
    }

    /// The FIFO Firecracker's stdout/stderr (the serial console) are connected to.
    pub fn console_fifo(&self) -> PathBuf {
        self.dir.join("console.fifo")
    }

    /// The capped console log the pump writes.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    /// Firecracker's own log (`--log-path`).
    pub fn firecracker_log(&self) -> PathBuf {
        self.dir.join("firecracker.log")
    }

    /// Firecracker's metrics (`--metrics-path`).
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.json")
    }

    /// Creates the directory (mode 0750; parents as needed), touching nothing in it.
    pub(super) fn create(&self) -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&self.dir)
    }

    /// Creates the directory (mode 0750) and removes stale sockets left by a previous process
    /// (Firecracker refuses to bind over them and never unlinks them) and the old console FIFO.
    /// Only call this when no live process owns the directory.
    pub fn prepare(&self) -> Result<(), FirecrackerError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FirecrackerError::RunDir { path, source }
        };
        self.create().map_err(err(&self.dir))?;
        self.remove_socket_files().map_err(err(&self.sockets))?;
        // A fresh console FIFO too: an old one may hold a dead VM's unread output, or may
        // not even be a FIFO any more.
        let fifo = self.console_fifo();
        remove_if_exists(&fifo).map_err(err(&fifo))
    }

    /// The names of the sockets a process may have left in the sockets directory: the API
    /// socket, the vsock socket and any `v.sock_<port>` socket present now, with the
    /// directory opened without following a symlink in its place (a jailed VMM's uid owns a
    /// jail's `run/` and could swap it for a link to another VM's directory). `None` when
    /// the directory does not exist.
    fn socket_names(&self) -> std::io::Result<Option<(OwnedFd, Vec<OsString>)>> {
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::open(&self.sockets, flags, Mode::empty()) {
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            // ELOOP: a symlink in the directory's place; ENOTDIR: something else there.
            Err(e @ (nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "{} is not a directory (a symlink or another file is in its place): {e}",
                        self.sockets.display()
                    ),
                ))
            }
            other => other?,
        };
        let mut names: Vec<OsString> = vec!["api.sock".into(), "v.sock".into()];
        let mut dir = nix::dir::Dir::from_fd(fd.try_clone()?)?;
        for entry in dir.iter() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name.as_bytes().starts_with(b"v.sock_") {
                names.push(name.to_owned());
            }
        }
        Ok(Some((fd, names)))
    }

    /// Whether a socket or the console FIFO of a process is still here (a read, no change):
    /// lets `Open` ask the directory's owner to clean only directories that need it.
    pub fn has_process_files(&self) -> bool {
        if self.console_fifo().symlink_metadata().is_ok() {
            return true;
        }
        let Ok(Some((dir, names))) = self.socket_names() else {
            return false;
        };
        names.iter().any(|name| {
            nix::sys::stat::fstatat(
                &dir,
                name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .is_ok()
        })
    }

    /// Unlinks the sockets beneath the directory's descriptor (never through a symlink in the
    /// directory's place); a missing directory or socket is fine.
    fn remove_socket_files(&self) -> std::io::Result<()> {
        let Some((dir, names)) = self.socket_names()? else {
            return Ok(());
        };
        for name in names {
            match nix::unistd::unlinkat(
                &dir,
                name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            ) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Removes the sockets and the console FIFO after the process is gone (logs stay); a
    /// missing directory is fine. Only the directory's `FirecrackerActor` calls this.
    pub(super) fn remove_sockets(&self) -> std::io::Result<()> {
        self.remove_socket_files()?;
        remove_if_exists(&self.console_fifo())
    }

    /// Removes the directory of a VM that no `FirecrackerActor` can own (none exists without a
    /// Firecracker binary, and removing files needs none): the supervisor's delete calls this
    /// once it has checked that no process uses the directory. A missing directory is fine.
    ///
    /// # Errors
    ///
    /// [`FirecrackerError::RunDirRemoval`] when something in it cannot be removed.
    pub fn remove_unowned(&self) -> Result<(), FirecrackerError> {
        self.remove()
            .map_err(|source| FirecrackerError::RunDirRemoval {
                path: self.dir.clone(),
                source,
            })
    }

    /// Removes the directory and everything in it; a missing directory is fine. Only the
    /// directory's `FirecrackerActor` calls this, when no process of it runs.
    #[expect(
        clippy::disallowed_methods,
        reason = "the run directory's owner removes it, through this one call"
    )]
    pub(super) fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// The names of the entries under `base` (run directories of VMs, live or leaked); a missing
/// `base` has none. Reads only: the directories are removed by their `FirecrackerActor`.
pub fn list(base: &Path) -> std::io::Result<Vec<String>> {
    let dir = match std::fs::read_dir(base) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let mut names = Vec::new();
    for entry in dir {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Gives a socket to group `gid` with mode 0660, so members of that group can use it.
///
/// A jailed VMM's uid owns the jail's root and its `run/` (the jailer gives them to it), so it
/// could put a symlink in place of the socket or of the directory holding it. Neither is
/// followed: the directory is opened without following it, the socket beneath that
/// descriptor likewise, each checked to be what it must be, and the group and mode are
/// changed through the socket's descriptor, so hearth never changes a file a path merely
/// points at.
///
/// # Errors
/// [`FirecrackerError::SocketAccess`]: the path is missing, it or its directory is not what
/// it must be (a symlink is refused, not followed), or the group or mode cannot be changed.
/// Nothing is changed unless the socket was found.
pub fn set_socket_access(path: &Path, gid: u32) -> Result<(), FirecrackerError> {
    use nix::fcntl::{AtFlags, OFlag};
    use nix::sys::stat::{Mode, SFlag};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::fs::PermissionsExt;
    let err = |source| FirecrackerError::SocketAccess {
        path: path.into(),
        source,
    };
    let refuse = |what: String| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, what));
    // O_PATH: a socket cannot be opened for reading; with O_NOFOLLOW a symlink is opened
    // itself, and the file type says what is there.
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let kind_of = |fd: &OwnedFd| -> Result<u32, FirecrackerError> {
        Ok(nix::sys::stat::fstat(fd)
            .map_err(|e| err(e.into()))?
            .st_mode
            & SFlag::S_IFMT.bits())
    };
    let named = |kind: u32| {
        if kind == SFlag::S_IFLNK.bits() {
            "a symbolic link"
        } else {
            "another kind of file"
        }
    };
    let (Some(name), Some(parent)) = (path.file_name(), path.parent()) else {
        return Err(refuse("not a socket path".into()));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let dir = nix::fcntl::open(parent, flags, Mode::empty()).map_err(|e| err(e.into()))?;
    let kind = kind_of(&dir)?;
    if kind != SFlag::S_IFDIR.bits() {
        return Err(refuse(format!(
            "its directory is not a directory: {} is in its place",
            named(kind)
        )));
    }
    let fd = nix::fcntl::openat(&dir, name, flags, Mode::empty()).map_err(|e| err(e.into()))?;
    let kind = kind_of(&fd)?;
    if kind != SFlag::S_IFSOCK.bits() {
        return Err(refuse(format!(
            "not a socket: {} is in its place",
            named(kind)
        )));
    }
    nix::unistd::fchownat(
        &fd,
        "",
        None,
        Some(nix::unistd::Gid::from_raw(gid)),
        AtFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| err(e.into()))?;
    // fchmod refuses an O_PATH descriptor; its /proc link names the same inode.
    let by_fd = crate::host::procfs::fd_path(fd.as_raw_fd(), None);
    std::fs::set_permissions(by_fd, std::fs::Permissions::from_mode(0o660)).map_err(err)
}

/// Removes a file; a missing file is fine.
pub fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_firecracker_rules() {
        for ok in ["a", "vm-1", "ABC123", &"x".repeat(64)] {
            validate_vm_id(ok).unwrap();
        }
        for bad in ["", "vm_1", "vm.1", "vm/1", "vm 1", "é", &"x".repeat(65)] {
            assert!(matches!(
                validate_vm_id(bad),
                Err(FirecrackerError::InvalidId { .. })
            ));
        }
    }

    #[test]
    fn socket_paths_are_checked_up_front() {
        let rd = RunDir::new(Path::new("/run/hearth/vms"), "vm-1").unwrap();
        assert_eq!(rd.api_socket(), Path::new("/run/hearth/vms/vm-1/api.sock"));
        assert_eq!(
            rd.vsock_port_socket(52),
            Path::new("/run/hearth/vms/vm-1/v.sock_52")
        );
        // "/<b>/<id>/v.sock_4294967295" must fit: 1 + b + 1 + 64 + 7 + 11 <= 107.
        let base = format!("/{}", "b".repeat(23));
        let id = "i".repeat(64);
        assert!(RunDir::new(Path::new(&base), &id).is_ok());
        let base = format!("/{}", "b".repeat(24));
        match RunDir::new(Path::new(&base), &id) {
            Err(FirecrackerError::SocketPathTooLong { len, max, path }) => {
                assert_eq!((len, max), (108, 107));
                assert!(path.to_str().unwrap().ends_with("v.sock_4294967295"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn prepare_removes_stale_sockets_only() {
        let base = tempfile::tempdir().unwrap();
        let rd = RunDir::new(base.path(), "vm-1").unwrap();
        rd.prepare().unwrap();
        for p in [rd.api_socket(), rd.vsock_socket(), rd.vsock_port_socket(52)] {
            std::os::unix::net::UnixListener::bind(&p).unwrap();
        }
        std::fs::write(rd.console_log(), b"old console").unwrap();
        std::fs::write(rd.console_fifo(), b"not a fifo").unwrap();
        rd.prepare().unwrap();
        assert!(!rd.console_fifo().exists());
        assert!(!rd.api_socket().exists());
        assert!(!rd.vsock_socket().exists());
        assert!(!rd.vsock_port_socket(52).exists());
        assert!(rd.console_log().exists());
    }

    #[test]
    fn removal_of_sockets_then_of_the_directory() {
        let base = tempfile::tempdir().unwrap();
        let rd = RunDir::new(base.path(), "vm-1").unwrap();
        // Nothing there yet: both are no-ops.
        rd.remove_sockets().unwrap();
        rd.remove().unwrap();
        rd.prepare().unwrap();
        let _l = std::os::unix::net::UnixListener::bind(rd.api_socket()).unwrap();
        std::fs::write(rd.console_fifo(), b"").unwrap();
        std::fs::write(rd.console_log(), b"last words").unwrap();
        rd.remove_sockets().unwrap();
        assert!(!rd.api_socket().exists() && !rd.console_fifo().exists());
        assert!(rd.console_log().exists(), "logs stay");
        rd.remove().unwrap();
        assert!(!rd.path().exists());
        assert!(base.path().exists(), "only the VM's directory goes");
    }

    #[test]
    fn a_symlink_in_place_of_the_jails_run_directory_is_never_followed() {
        let base = tempfile::tempdir().unwrap();
        // Another VM's directory, with its sockets.
        let other = base.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let theirs = [
            other.join("api.sock"),
            other.join("v.sock"),
            other.join("v.sock_52"),
        ];
        let _listeners: Vec<_> = theirs
            .iter()
            .map(|p| std::os::unix::net::UnixListener::bind(p).unwrap())
            .collect();
        // This VM's jail, whose VMM swapped `run` for a link to the other directory.
        let root = base.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&other, root.join("run")).unwrap();
        let rd = RunDir::new(base.path(), "vm-1")
            .unwrap()
            .with_socket_dir(root.join("run"));
        std::fs::create_dir(rd.path()).unwrap();
        assert!(!rd.has_process_files(), "nothing of this VM's is there");
        let err = rd.remove_sockets().unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        let err = rd.prepare().unwrap_err();
        assert!(format!("{err:?}").contains("not a directory"), "{err:?}");
        for p in &theirs {
            assert!(p.exists(), "{} was removed through the link", p.display());
        }
    }

    #[test]
    fn socket_access_sets_group_and_mode() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let gid = probe_gid();
        set_socket_access(&sock, gid).unwrap();
        let md = std::fs::metadata(&sock).unwrap();
        assert_eq!(md.gid(), gid);
        assert_eq!(md.permissions().mode() & 0o777, 0o660);
        assert!(set_socket_access(&dir.path().join("missing"), gid).is_err());
    }

    #[test]
    fn socket_access_refuses_a_symlink_or_file_in_the_sockets_place() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        // A "host file" and a socket elsewhere, each with what must stay as it is.
        let host_file = dir.path().join("host-file");
        std::fs::write(&host_file, b"secret").unwrap();
        std::fs::set_permissions(&host_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let other_sock = dir.path().join("other.sock");
        let _l = std::os::unix::net::UnixListener::bind(&other_sock).unwrap();
        std::fs::set_permissions(&other_sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        let gid = probe_gid();
        let owner = |p: &Path| {
            let md = std::fs::metadata(p).unwrap();
            (md.uid(), md.gid(), md.permissions().mode() & 0o7777)
        };
        let before = (owner(&host_file), owner(&other_sock));
        for (name, target) in [("to-file.sock", &host_file), ("to-sock.sock", &other_sock)] {
            let link = dir.path().join(name);
            std::os::unix::fs::symlink(target, &link).unwrap();
            let err = set_socket_access(&link, gid).unwrap_err();
            let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
            assert!(text.contains("symbolic link"), "{text}");
        }
        // A regular file in the socket's place is refused too, and left as it is.
        let plain = dir.path().join("plain.sock");
        std::fs::write(&plain, b"").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o600)).unwrap();
        let plain_before = owner(&plain);
        let err = set_socket_access(&plain, gid).unwrap_err();
        assert!(
            matches!(err, FirecrackerError::SocketAccess { .. }),
            "{err}"
        );
        assert_eq!(owner(&plain), plain_before);
        assert_eq!((owner(&host_file), owner(&other_sock)), before);
    }

    /// A group to give sockets: as root one they do not have, so a change shows; otherwise
    /// only the mode can.
    fn probe_gid() -> u32 {
        if nix::unistd::geteuid().is_root() {
            54_321
        } else {
            nix::unistd::getegid().as_raw()
        }
    }

    #[test]
    fn socket_access_refuses_a_symlink_in_place_of_the_sockets_directory() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        // A host directory holding a socket of the same name as the jail's.
        let host = dir.path().join("host");
        std::fs::create_dir(&host).unwrap();
        let host_sock = host.join("api.sock");
        let _l = std::os::unix::net::UnixListener::bind(&host_sock).unwrap();
        std::fs::set_permissions(&host_sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        // The jail's root, where the VMM's uid may swap `run` for a symlink.
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&host, root.join("run")).unwrap();
        let gid = probe_gid();
        let owner = |p: &Path| {
            let md = std::fs::metadata(p).unwrap();
            (md.gid(), md.permissions().mode() & 0o7777)
        };
        let before = owner(&host_sock);
        let err = set_socket_access(&root.join("run").join("api.sock"), gid).unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(
            text.contains("its directory") && text.contains("symbolic link"),
            "{text}"
        );
        assert_eq!(owner(&host_sock), before);
        // A path that names no file is refused.
        assert!(set_socket_access(Path::new(""), gid).is_err());
    }
}
