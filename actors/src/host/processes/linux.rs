//! The real process backend: `posix_spawn` with only stdio passed on (see [`super::spawn`]),
//! pidfds (`pidfd_open`, `pidfd_send_signal`, `waitid(P_PIDFD)`) and /proc.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};

use super::spawn;
use super::{ExitStatus, Process, ProcessError, ProcessIdentity, Processes, Signal, SpawnSpec};

/// Processes on this Linux host.
#[derive(Debug, Default, Clone)]
pub struct LinuxProcesses;

impl LinuxProcesses {
    /// The real backend.
    pub fn new() -> Self {
        LinuxProcesses
    }
}

fn pidfd_open(pid: u32) -> Result<OwnedFd, ProcessError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let source = std::io::Error::last_os_error();
        if source.raw_os_error() == Some(libc::ESRCH) {
            return Err(ProcessError::NoSuchProcess { pid });
        }
        return Err(ProcessError::Sys {
            op: "pidfd_open",
            pid,
            source,
        });
    }
    // SAFETY: the syscall just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A process pinned by its pidfd.
#[derive(Debug)]
pub struct LinuxProcess {
    pid: u32,
    pidfd: OwnedFd,
    child: bool,
}

impl Process for LinuxProcess {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn is_child(&self) -> bool {
        self.child
    }

    fn signal(&self, signal: Signal) -> Result<(), ProcessError> {
        // SAFETY: pidfd_send_signal with a valid fd we own, a signal number, no siginfo.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal.number(),
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            let source = std::io::Error::last_os_error();
            // ESRCH: it already exited (a zombie child still accepts signals).
            if source.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(ProcessError::Sys {
                op: "pidfd_send_signal",
                pid: self.pid,
                source,
            });
        }
        Ok(())
    }

    fn wait(&self) -> BoxFuture<'static, Result<ExitStatus, ProcessError>> {
        let pid = self.pid;
        let child = self.child;
        let dup = self.pidfd.try_clone();
        async move {
            let sys = |op, source| ProcessError::Sys { op, pid, source };
            let fd = dup.map_err(|e| sys("dup pidfd", e))?;
            // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open and refers to
            // the same pidfd for the AsyncFd's whole life.
            let async_fd = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            }
            .map_err(|e| sys("register pidfd", e.into_parts().1))?;
            // A pidfd becomes readable when the process exits.
            let guard = async_fd
                .readable()
                .await
                .map_err(|e| sys("poll pidfd", e))?;
            drop(guard);
            if !child {
                return Ok(ExitStatus::Unknown);
            }
            match waitid(Id::PIDFd(async_fd.get_ref().as_fd()), WaitPidFlag::WEXITED) {
                Ok(WaitStatus::Exited(_, code)) => Ok(ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => Ok(ExitStatus::Signal(sig as i32)),
                Ok(_) => Ok(ExitStatus::Unknown),
                // ECHILD: somebody else reaped it; it is gone all the same.
                Err(nix::errno::Errno::ECHILD) => Ok(ExitStatus::Unknown),
                Err(e) => Err(sys("waitid", e.into())),
            }
        }
        .boxed()
    }

    fn has_exited(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&raw mut pfd, 1, 0) };
        n > 0 && pfd.revents & libc::POLLIN != 0
    }
}

impl Processes for LinuxProcesses {
    fn spawn(&self, spec: &SpawnSpec) -> Result<Arc<dyn Process>, ProcessError> {
        let spawn_err = |source| ProcessError::Spawn {
            program: spec.program.clone(),
            source,
        };
        // Read-write: on a FIFO the child then always has a reader (itself), so it can never
        // get SIGPIPE/EPIPE when the console pump (or all of hearthd) goes away; non-blocking:
        // a full FIFO drops console output instead of stalling the VMM.
        let out = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&spec.stdio)
            .map_err(spawn_err)?;
        // Only stdio reaches the VMM: see `spawn` (closefrom(3), own process group).
        let pid = spawn::spawn_closed(&spec.program, &spec.args, &spec.cwd, out.as_fd())
            .map_err(spawn_err)?
            .pid;
        drop(out);
        // Our unreaped child cannot be recycled, so this pidfd is certainly for it.
        let pidfd = match pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                // SAFETY: kill and waitpid on our own unreaped child.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                    libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                }
                return Err(e);
            }
        };
        // The pidfd's waitid reaps it.
        Ok(Arc::new(LinuxProcess {
            pid,
            pidfd,
            child: true,
        }))
    }

    fn open(&self, pid: u32) -> Result<Arc<dyn Process>, ProcessError> {
        let pidfd = pidfd_open(pid)?;
        // A process is our child if its parent is us (e.g. re-created actor, same hearthd).
        let child = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_stat_field(&s, 4))
            .is_some_and(|ppid| ppid == u64::from(std::process::id()));
        Ok(Arc::new(LinuxProcess { pid, pidfd, child }))
    }

    fn identity(&self, pid: u32) -> Result<ProcessIdentity, ProcessError> {
        let read = |what: &str| read_proc(pid, what);
        let stat = String::from_utf8_lossy(&read("stat")?).into_owned();
        let start_time = parse_stat_field(&stat, 22).ok_or_else(|| ProcessError::Sys {
            op: "parse /proc/<pid>/stat",
            pid,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no field 22"),
        })?;
        let cmdline = parse_cmdline(&read("cmdline")?);
        Ok(ProcessIdentity {
            start_time,
            cmdline,
        })
    }

    fn list(&self) -> Result<Vec<u32>, ProcessError> {
        let dir = std::fs::read_dir("/proc").map_err(|source| ProcessError::List { source })?;
        let mut pids: Vec<u32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    fn uids(&self, pid: u32) -> Result<[u32; 4], ProcessError> {
        let status = String::from_utf8_lossy(&read_proc(pid, "status")?).into_owned();
        parse_status_uids(&status).ok_or_else(|| ProcessError::Sys {
            op: "parse /proc/<pid>/status",
            pid,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no Uid: line"),
        })
    }

    fn version_output(&self, program: &Path) -> Result<String, ProcessError> {
        let mut cmd = Command::new(program);
        cmd.arg("--version").stdin(Stdio::null());
        // Nothing of hearthd's but stdio: runs once at start-up, so the fork() that a
        // pre_exec costs does not matter here.
        // SAFETY: close_range is async-signal-safe and touches only the child's fd table.
        unsafe {
            cmd.pre_exec(|| spawn::mark_cloexec_from(3));
        }
        let out = cmd.output().map_err(|source| ProcessError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
        if !out.status.success() {
            return Err(ProcessError::Version {
                program: program.to_path_buf(),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `/proc/<pid>/<what>`; a process that is gone is [`ProcessError::NoSuchProcess`].
fn read_proc(pid: u32, what: &str) -> Result<Vec<u8>, ProcessError> {
    std::fs::read(format!("/proc/{pid}/{what}")).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ProcessError::NoSuchProcess { pid }
        } else {
            ProcessError::Sys {
                op: "read /proc",
                pid,
                source,
            }
        }
    })
}

/// The four ids of the `Uid:` line of `/proc/<pid>/status` (real, effective, saved, fs).
pub fn parse_status_uids(status: &str) -> Option<[u32; 4]> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_whitespace().map(str::parse::<u32>);
    let mut out = [0; 4];
    for slot in &mut out {
        *slot = ids.next()?.ok()?;
    }
    Some(out)
}

/// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`, for numeric fields after `comm`.
/// `comm` (field 2) may contain spaces and parentheses, so parsing starts after the last `)`.
pub fn parse_stat_field(stat: &str, n: usize) -> Option<u64> {
    if n < 3 {
        return None;
    }
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(n - 3)?.parse().ok()
}

/// Splits `/proc/<pid>/cmdline` (NUL-separated) into arguments.
pub fn parse_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sleep 30` in `dir`, its output to `dir/out`.
    fn sleep_spec(dir: &Path) -> SpawnSpec {
        let spec = SpawnSpec {
            program: "/bin/sleep".into(),
            args: vec!["30".into()],
            cwd: dir.into(),
            stdio: dir.join("out"),
        };
        std::fs::write(&spec.stdio, b"").unwrap();
        spec
    }

    #[test]
    fn stat_fields_survive_odd_comm() {
        let stat = "1234 (fire (cr) acker) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 3 0 987654 1000 50";
        assert_eq!(parse_stat_field(stat, 4), Some(1));
        assert_eq!(parse_stat_field(stat, 22), Some(987_654));
        assert_eq!(parse_stat_field(stat, 2), None);
        assert_eq!(parse_stat_field("garbage", 22), None);
    }

    #[test]
    fn cmdline_splits_on_nul() {
        assert_eq!(
            parse_cmdline(b"/usr/bin/firecracker\0--api-sock\0/run/a.sock\0"),
            vec!["/usr/bin/firecracker", "--api-sock", "/run/a.sock"]
        );
    }

    #[test]
    fn uids_of_self_and_parsing() {
        let me = LinuxProcesses.uids(std::process::id()).unwrap();
        let real = nix::unistd::getuid().as_raw();
        let effective = nix::unistd::geteuid().as_raw();
        assert_eq!((me[0], me[1]), (real, effective));
        assert_eq!(
            parse_status_uids("Name:\tx\nUid:\t1\t2\t3\t4\nGid:\t0\t0\t0\t0\n"),
            Some([1, 2, 3, 4])
        );
        assert_eq!(parse_status_uids("Uid:\t1\t2\n"), None, "short line");
        assert_eq!(
            parse_status_uids("Uid:\t1\tx\t3\t4\n"),
            None,
            "not a number"
        );
        assert_eq!(parse_status_uids("Gid:\t1\t2\t3\t4\n"), None, "no Uid line");
        assert!(matches!(
            LinuxProcesses.uids(u32::MAX),
            Err(ProcessError::NoSuchProcess { .. })
        ));
    }

    #[test]
    fn identity_of_self() {
        let me = LinuxProcesses.identity(std::process::id()).unwrap();
        assert!(me.start_time > 0);
        assert!(!me.cmdline.is_empty());
    }

    #[actix::test]
    async fn list_holds_live_processes_only() {
        let pids = LinuxProcesses.list().unwrap();
        assert!(pids.contains(&std::process::id()));
        assert!(pids.windows(2).all(|w| w[0] < w[1]), "ascending");
        let dir = tempfile::tempdir().unwrap();
        let spec = sleep_spec(dir.path());
        let p = LinuxProcesses.spawn(&spec).unwrap();
        assert!(LinuxProcesses.list().unwrap().contains(&p.pid()));
        let wait = p.wait();
        p.signal(Signal::Kill).unwrap();
        wait.await.unwrap();
        // Reaped: gone from /proc.
        assert!(!LinuxProcesses.list().unwrap().contains(&p.pid()));
    }

    #[actix::test]
    async fn spawn_signal_wait_child() {
        let dir = tempfile::tempdir().unwrap();
        let spec = sleep_spec(dir.path());
        let p = LinuxProcesses.spawn(&spec).unwrap();
        assert!(p.is_child());
        assert!(!p.has_exited());
        let wait = p.wait();
        p.signal(Signal::Term).unwrap();
        assert_eq!(wait.await.unwrap(), ExitStatus::Signal(libc::SIGTERM));
        // Signalling a reaped process through its pidfd is harmless.
        p.signal(Signal::Kill).unwrap();
    }

    #[actix::test]
    async fn exit_code_is_collected() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SpawnSpec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "exit 7".into()],
            cwd: dir.path().into(),
            stdio: dir.path().join("out"),
        };
        std::fs::write(&spec.stdio, b"").unwrap();
        let p = LinuxProcesses.spawn(&spec).unwrap();
        assert_eq!(p.wait().await.unwrap(), ExitStatus::Code(7));
    }

    #[actix::test]
    async fn adopted_process_that_is_not_our_child_is_waited_through_its_pidfd() {
        // The shell starts `sleep` in the background and exits: the sleep is re-parented
        // (to init or a subreaper), as a VMM is after hearthd restarts.
        let out = Command::new("/bin/sh")
            .args(["-c", "sleep 30 >/dev/null 2>&1 & echo $!"])
            .output()
            .unwrap();
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let p = LinuxProcesses.open(pid).unwrap();
        assert!(!p.is_child());
        assert!(!p.has_exited());
        let wait = p.wait();
        p.signal(Signal::Kill).unwrap();
        let status = tokio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("the pidfd never became readable")
            .unwrap();
        // Not our child: the status belongs to its parent.
        assert_eq!(status, ExitStatus::Unknown);
        assert!(p.has_exited());
    }

    #[actix::test]
    async fn spawned_child_holds_only_stdio() {
        let dir = tempfile::tempdir().unwrap();
        let spec = sleep_spec(dir.path());
        let p = LinuxProcesses.spawn(&spec).unwrap();
        // The dynamic loader and libc open files for a moment while `sleep` starts (libraries,
        // the locale): wait until it is settled. An inherited descriptor would stay for good.
        let count = || {
            std::fs::read_dir(format!("/proc/{}/fd", p.pid()))
                .unwrap()
                .count()
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut fds = count();
        while fds != 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            fds = count();
        }
        let wait = p.wait();
        p.signal(Signal::Kill).unwrap();
        assert_eq!(wait.await.unwrap(), ExitStatus::Signal(libc::SIGKILL));
        assert_eq!(fds, 3, "stdin, stdout and stderr only");
    }

    #[test]
    fn missing_program_is_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let spec = SpawnSpec {
            program: "/nonexistent/firecracker".into(),
            args: vec![],
            cwd: dir.path().into(),
            stdio: dir.path().join("out"),
        };
        std::fs::write(&spec.stdio, b"").unwrap();
        assert!(matches!(
            LinuxProcesses.spawn(&spec),
            Err(ProcessError::Spawn { .. })
        ));
    }
}
