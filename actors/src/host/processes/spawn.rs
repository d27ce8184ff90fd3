//! Starting a VMM with `posix_spawn` so that it receives nothing of hearthd but its stdio.
//!
//! hearthd holds descriptors a guest must never reach through its VMM: netlink sockets
//! (rtnetlink, libipset's session sockets, which libipset opens without `SOCK_CLOEXEC`), the
//! store, the API socket, every other VM's console FIFO and pidfd. Everything hearth opens
//! itself is close-on-exec, but C libraries may not be, so the spawn does not rely on that: its
//! file actions end with `closefrom(3)` (glibc's `posix_spawn_file_actions_addclosefrom_np`,
//! `close_range(2)` in the child), leaving the child exactly stdin (`/dev/null`), stdout and
//! stderr.
//!
//! Why not `std::process::Command` with a `pre_exec` that closes descriptors: any `pre_exec`
//! makes std `fork()` (copying hearthd's page tables, ~1-2 ms for a large daemon) instead of
//! using `posix_spawn` (a vfork-like clone); glibc's spawn does the close in the child for free.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A child started by [`spawn_closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spawned {
    /// Its pid (our child until reaped).
    pub pid: u32,
}

fn cstring(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", s.to_string_lossy()),
        )
    })
}

/// An errno-returning `posix_spawn*` call as a `Result`.
fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// `posix_spawn_file_actions_t`, destroyed on drop.
struct FileActions(libc::posix_spawn_file_actions_t);

impl FileActions {
    fn new() -> io::Result<Self> {
        // SAFETY: the struct is plain data that posix_spawn_file_actions_init initialises.
        let mut fa: libc::posix_spawn_file_actions_t = unsafe { std::mem::zeroed() };
        // SAFETY: `fa` is a valid, writable posix_spawn_file_actions_t.
        check(unsafe { libc::posix_spawn_file_actions_init(&raw mut fa) })?;
        Ok(FileActions(fa))
    }
}

impl Drop for FileActions {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawn_file_actions_destroy(&raw mut self.0) };
    }
}

/// `posix_spawnattr_t`, destroyed on drop.
struct Attr(libc::posix_spawnattr_t);

impl Attr {
    fn new() -> io::Result<Self> {
        // SAFETY: the struct is plain data that posix_spawnattr_init initialises.
        let mut attr: libc::posix_spawnattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: `attr` is a valid, writable posix_spawnattr_t.
        check(unsafe { libc::posix_spawnattr_init(&raw mut attr) })?;
        Ok(Attr(attr))
    }
}

impl Drop for Attr {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, destroyed once.
        unsafe { libc::posix_spawnattr_destroy(&raw mut self.0) };
    }
}

/// Starts `program` (searched in `PATH` when it has no `/`) with `args`, in `cwd`, in its own
/// process group, with stdin from `/dev/null`, stdout and stderr on `stdio`, every signal at
/// its default disposition and none blocked, the current environment, and no other descriptor.
pub fn spawn_closed(
    program: &Path,
    args: &[std::ffi::OsString],
    cwd: &Path,
    stdio: BorrowedFd<'_>,
) -> io::Result<Spawned> {
    let prog = cstring(program.as_os_str())?;
    let mut argv_owned = Vec::with_capacity(args.len() + 1);
    argv_owned.push(prog.clone());
    for a in args {
        argv_owned.push(cstring(a)?);
    }
    let envp_owned = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstring(&kv)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = cstring(cwd.as_os_str())?;
    let devnull = c"/dev/null";
    let argv: Vec<*mut libc::c_char> = argv_owned
        .iter()
        .map(|c| c.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();
    let envp: Vec<*mut libc::c_char> = envp_owned
        .iter()
        .map(|c| c.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect();

    let mut fa = FileActions::new()?;
    let out = stdio.as_raw_fd();
    // SAFETY (all calls below): `fa` and `attr` are initialised; every pointer is to a
    // NUL-terminated string or NULL-terminated array that outlives the posix_spawnp call; the
    // library copies what it keeps.
    unsafe {
        check(libc::posix_spawn_file_actions_addopen(
            &raw mut fa.0,
            0,
            devnull.as_ptr(),
            libc::O_RDONLY,
            0,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            &raw mut fa.0,
            out,
            1,
        ))?;
        check(libc::posix_spawn_file_actions_adddup2(
            &raw mut fa.0,
            out,
            2,
        ))?;
        check(libc::posix_spawn_file_actions_addchdir_np(
            &raw mut fa.0,
            cwd.as_ptr(),
        ))?;
        // Last: closes `out` itself (>= 3) and everything else hearthd has open.
        check(libc::posix_spawn_file_actions_addclosefrom_np(
            &raw mut fa.0,
            3,
        ))?;
    }

    let mut attr = Attr::new()?;
    // SAFETY: see above; the sigsets are initialised by sigfillset/sigemptyset first.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut none);
        // Rust ignores SIGPIPE and a runtime may block signals: the VMM starts clean.
        check(libc::posix_spawnattr_setsigdefault(
            &raw mut attr.0,
            &raw const all,
        ))?;
        check(libc::posix_spawnattr_setsigmask(
            &raw mut attr.0,
            &raw const none,
        ))?;
        // Its own process group: a Ctrl-C or `kill -- -<pgid>` aimed at hearthd's group
        // never reaches the VM. No parent-death signal: the VM must outlive hearthd.
        check(libc::posix_spawnattr_setpgroup(&raw mut attr.0, 0))?;
        check(libc::posix_spawnattr_setflags(
            &raw mut attr.0,
            (libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGDEF
                | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short,
        ))?;
    }

    let mut pid: libc::pid_t = 0;
    // SAFETY: see above; `pid` is writable. glibc reports exec failures (ENOENT, EACCES) as
    // the return value.
    check(unsafe {
        libc::posix_spawnp(
            &raw mut pid,
            prog.as_ptr(),
            &raw const fa.0,
            &raw const attr.0,
            argv.as_ptr(),
            envp.as_ptr(),
        )
    })?;
    Ok(Spawned { pid: pid as u32 })
}

/// Marks every descriptor from `first` up close-on-exec (`close_range(2)` with
/// `CLOSE_RANGE_CLOEXEC`). For descriptors opened by C libraries that do not ask for it
/// (libipset's netlink socket): harmless for everything else, since hearth never hands a
/// descriptor to a child by inheritance (stdio is set up by `dup2` in the child).
pub fn mark_cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range takes no pointers; with CLOSE_RANGE_CLOEXEC it closes nothing.
    let rc = unsafe { libc::close_range(first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};

    fn fd_targets(pid: u32) -> Vec<(i32, String)> {
        let mut v: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let n = e.file_name().to_str()?.parse().ok()?;
                let t = std::fs::read_link(e.path()).ok()?;
                Some((n, t.display().to_string()))
            })
            .collect();
        v.sort();
        v
    }

    /// A pipe without `O_CLOEXEC`, as a careless C library would open it.
    fn inheritable_pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe writes two fds into the array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both were just created and are owned by nobody else.
        unsafe {
            use std::os::fd::FromRawFd;
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        }
    }

    #[test]
    fn child_gets_only_stdio_even_with_inheritable_descriptors_open() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::fs::File::create(dir.path().join("out")).unwrap();
        let (r, w) = inheritable_pipe();
        let child =
            spawn_closed(Path::new("sleep"), &["30".into()], dir.path(), out.as_fd()).unwrap();
        let fds = fd_targets(child.pid);
        // Kill and reap before asserting.
        // SAFETY: kill and waitpid on our own child.
        unsafe {
            libc::kill(child.pid as i32, libc::SIGKILL);
            libc::waitpid(child.pid as i32, std::ptr::null_mut(), 0);
        }
        let out_path = dir.path().join("out").display().to_string();
        assert_eq!(
            fds,
            vec![
                (0, "/dev/null".to_string()),
                (1, out_path.clone()),
                (2, out_path)
            ],
            "pipe {r:?}/{w:?} leaked"
        );
    }

    #[test]
    fn cwd_process_group_and_exec_errors() {
        let dir = tempfile::tempdir().unwrap();
        let out = std::fs::File::create(dir.path().join("out")).unwrap();
        let child = spawn_closed(
            Path::new("/bin/sleep"),
            &["30".into()],
            dir.path(),
            out.as_fd(),
        )
        .unwrap();
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", child.pid)).unwrap();
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.pid)).unwrap();
        // SAFETY: kill and waitpid on our own child.
        unsafe {
            libc::kill(child.pid as i32, libc::SIGKILL);
            libc::waitpid(child.pid as i32, std::ptr::null_mut(), 0);
        }
        assert_eq!(cwd, dir.path().canonicalize().unwrap());
        assert_eq!(
            super::super::linux::parse_stat_field(&stat, 5),
            Some(u64::from(child.pid)),
            "its own process group"
        );
        let err =
            spawn_closed(Path::new("/nonexistent/vmm"), &[], dir.path(), out.as_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        let err =
            spawn_closed(Path::new("sh"), &["a\0b".into()], dir.path(), out.as_fd()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn marking_cloexec_covers_inheritable_descriptors() {
        let (r, _w) = inheritable_pipe();
        let flags = |fd: &OwnedFd| {
            // SAFETY: F_GETFD on an fd we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) }
        };
        assert_eq!(flags(&r) & libc::FD_CLOEXEC, 0);
        mark_cloexec_from(3).unwrap();
        assert_eq!(flags(&r) & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }
}
