//! Starting a session's process: fork, then in the child only async-signal-safe calls (new
//! process group or session with a controlling PTY, stdio, groups/gid/uid, workdir, execve
//! over the `PATH` candidates). Everything the child needs is prepared before the fork. An
//! exec failure is sent back over a close-on-exec pipe and the child exits 127 (not found) or
//! 126 (cannot execute), so the session's status says what Docker would.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use hearth_proto::agent::{ExecRequest, WindowSize};

use super::reaper::{reaper, OnExit};

/// The `PATH` a session gets unless its request sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The PTY size when the request gives none.
pub const DEFAULT_SIZE: WindowSize = WindowSize { rows: 24, cols: 80 };

/// A started process and the agent's ends of its stdio.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid (also its process group id).
    pub pid: libc::pid_t,
    /// Where the host's stdin goes (the PTY master for a tty), when the request has stdin.
    pub stdin: Option<OwnedFd>,
    /// Its stdout (the PTY master for a tty).
    pub stdout: OwnedFd,
    /// Its stderr (none for a tty: merged into the PTY).
    pub stderr: Option<OwnedFd>,
    /// The PTY master, for resizes.
    pub pty: Option<OwnedFd>,
    /// Why the exec failed, when it did (the child has then exited 126 or 127).
    pub exec_error: Option<String>,
}

/// Where the child failed, sent with the errno over the error pipe.
const STAGE_CREDS: i32 = 1;
const STAGE_CHDIR: i32 = 2;
const STAGE_EXEC: i32 = 3;
const STAGE_TTY: i32 = 4;

/// Everything the child uses, built before the fork.
struct Prepared {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    env: Vec<CString>,
    workdir: CString,
    uid: Option<libc::uid_t>,
    gid: Option<libc::gid_t>,
}

/// The environment of a session: defaults, then the request's entries (later ones win).
#[must_use]
pub fn environment(req: &ExecRequest) -> Vec<String> {
    let uid = req.uid.unwrap_or_else(|| {
        // SAFETY: getuid has no preconditions.
        unsafe { libc::getuid() }
    });
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), home_of(uid)),
    ];
    if req.tty {
        env.push(("TERM".into(), "xterm".into()));
    }
    for e in &req.env {
        if let Some((k, v)) = e.split_once('=') {
            match env.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => slot.1 = v.to_string(),
                None => env.push((k.to_string(), v.to_string())),
            }
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The home directory of `uid` from /etc/passwd (no NSS in a static agent); `/root` for root
/// and `/` for others when it is not listed.
fn home_of(uid: u32) -> String {
    let listed = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6 && f[2].parse() == Ok(uid)).then(|| f[5].to_string())
        })
    });
    listed.unwrap_or_else(|| if uid == 0 { "/root" } else { "/" }.to_string())
}

/// The NULL-terminated array of pointers `execve` takes for `strings` (which must outlive it),
/// built before a fork so that the child allocates nothing.
pub fn c_ptrs(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

fn prepare(req: &ExecRequest) -> io::Result<Prepared> {
    let env = environment(req);
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let prog = &req.argv[0];
    let candidates = if prog.contains('/') {
        vec![cstring(prog)?]
    } else {
        path.split(':')
            .map(|dir| {
                let dir = if dir.is_empty() { "." } else { dir };
                cstring(&format!("{}/{prog}", dir.trim_end_matches('/')))
            })
            .collect::<io::Result<_>>()?
    };
    Ok(Prepared {
        candidates,
        argv: req
            .argv
            .iter()
            .map(|a| cstring(a))
            .collect::<io::Result<_>>()?,
        env: env.iter().map(|e| cstring(e)).collect::<io::Result<_>>()?,
        workdir: cstring(req.workdir.as_deref().unwrap_or("/"))?,
        uid: req.uid,
        gid: req.gid.or(req.uid),
    })
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// What a session without stdin reads: /dev/null, or an empty pipe where a minimal root has
/// no /dev/null (EOF either way).
fn empty_stdin() -> io::Result<OwnedFd> {
    // SAFETY: a constant C string; the result is checked.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: a fresh fd.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let (r, _w) = pipe()?;
    Ok(r)
}

/// A PTY pair, both ends close-on-exec, at `size`.
fn open_pty(size: WindowSize) -> io::Result<(OwnedFd, OwnedFd)> {
    let ws = nix::pty::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).map_err(io::Error::from)?;
    for fd in [&pty.master, &pty.slave] {
        // SAFETY: setting a flag on an fd we own.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    }
    Ok((pty.master, pty.slave))
}

/// Sets a PTY's window size.
///
/// # Errors
///
/// The ioctl's.
pub fn set_window_size(master: RawFd, size: WindowSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
    cvt(unsafe { libc::ioctl(master, libc::TIOCSWINSZ, &raw const ws) }).map(|_| ())
}

/// Starts `req`'s process; `on_exit` gets its wait status from the reaper.
///
/// # Errors
///
/// Making pipes or the PTY, or forking, failed (the exec's own failure is in
/// [`Spawned::exec_error`]).
pub fn spawn(req: &ExecRequest, on_exit: OnExit) -> io::Result<Spawned> {
    let prep = prepare(req)?;
    // Holding the reaper's lock from the first fd to the fork: no other session forks while
    // our fds exist without close-on-exec, and the pid is registered before it can be reaped.
    let guard = reaper().lock_for_fork();
    let (err_r, err_w) = pipe()?;
    // (agent end for stdin, child stdin, agent stdout, child stdout, agent stderr, child stderr, pty)
    let (stdin_w, child_in, out_r, child_out, err_pipe, child_err, pty);
    if req.tty {
        let (master, slave) = open_pty(req.size.unwrap_or(DEFAULT_SIZE))?;
        stdin_w = if req.stdin {
            Some(master.try_clone()?)
        } else {
            None
        };
        out_r = master.try_clone()?;
        child_in = slave.try_clone()?;
        child_err = slave.try_clone()?;
        child_out = slave;
        err_pipe = None;
        pty = Some(master);
    } else {
        if req.stdin {
            let (r, w) = pipe()?;
            stdin_w = Some(w);
            child_in = r;
        } else {
            stdin_w = None;
            child_in = empty_stdin()?;
        }
        let (r, w) = pipe()?;
        out_r = r;
        child_out = w;
        let (r, w) = pipe()?;
        err_pipe = Some(r);
        child_err = w;
        pty = None;
    }
    let argv = c_ptrs(&prep.argv);
    let envp = c_ptrs(&prep.env);
    let fds = [
        child_in.as_raw_fd(),
        child_out.as_raw_fd(),
        child_err.as_raw_fd(),
    ];
    // SAFETY: the child only makes async-signal-safe calls on memory prepared above, then
    // execs or exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child; see `child`.
        unsafe { child(&prep, req.tty, fds, err_w.as_raw_fd(), &argv, &envp) }
    }
    guard.register(pid, on_exit);
    drop((child_in, child_out, child_err, err_w));
    let exec_error = read_exec_error(err_r, &req.argv[0])?;
    Ok(Spawned {
        pid,
        stdin: stdin_w,
        stdout: out_r,
        stderr: err_pipe,
        pty,
        exec_error,
    })
}

/// Reads the child's report: nothing (EOF at exec) or a stage and an errno.
fn read_exec_error(err_r: OwnedFd, prog: &str) -> io::Result<Option<String>> {
    let mut file = std::fs::File::from(err_r);
    let mut buf = Vec::new();
    io::Read::read_to_end(&mut file, &mut buf)?;
    if buf.len() < 8 {
        return Ok(None);
    }
    let stage = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let errno = io::Error::from_raw_os_error(i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]));
    let what = match stage {
        STAGE_CREDS => "cannot switch user".to_string(),
        STAGE_CHDIR => "cannot change to the working directory".to_string(),
        STAGE_TTY => "cannot set up the terminal".to_string(),
        _ => format!("cannot execute {prog:?}"),
    };
    Ok(Some(format!("hearth-agent: {what}: {errno}\n")))
}

/// The child after fork: never returns.
unsafe fn child(
    prep: &Prepared,
    tty: bool,
    fds: [RawFd; 3],
    err_w: RawFd,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let fail = |stage: i32, code: i32| -> ! {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&stage.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            libc::write(err_w, msg.as_ptr().cast(), msg.len());
            libc::_exit(code)
        }
    };
    // SAFETY (whole block): async-signal-safe calls on prepared memory only.
    unsafe {
        // The agent ignores SIGPIPE; an ignored disposition would survive the exec.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut());
        for sig in 1..32 {
            libc::signal(sig, libc::SIG_DFL);
        }
        if tty {
            if libc::setsid() < 0 || libc::ioctl(fds[1], libc::TIOCSCTTY, 0) < 0 {
                fail(STAGE_TTY, 126);
            }
        } else {
            libc::setpgid(0, 0);
        }
        for (target, fd) in fds.iter().enumerate() {
            #[expect(
                clippy::cast_possible_wrap,
                clippy::cast_possible_truncation,
                reason = "0..3"
            )]
            let target = target as RawFd;
            if *fd == target {
                libc::fcntl(target, libc::F_SETFD, 0);
            } else if libc::dup2(*fd, target) < 0 {
                fail(STAGE_TTY, 126);
            }
        }
        if let Some(gid) = prep.gid {
            if libc::setgroups(0, std::ptr::null()) < 0 || libc::setgid(gid) < 0 {
                fail(STAGE_CREDS, 126);
            }
        }
        if let Some(uid) = prep.uid {
            if libc::setuid(uid) < 0 {
                fail(STAGE_CREDS, 126);
            }
        }
        if libc::chdir(prep.workdir.as_ptr()) < 0 {
            fail(STAGE_CHDIR, 126);
        }
        let mut not_found = true;
        let mut first_error = 0;
        for c in &prep.candidates {
            libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let errno = *libc::__errno_location();
            if errno != libc::ENOENT && errno != libc::ENOTDIR {
                not_found = false;
                if first_error == 0 {
                    first_error = errno;
                }
            }
        }
        if not_found {
            *libc::__errno_location() = libc::ENOENT;
            fail(STAGE_EXEC, 127);
        }
        *libc::__errno_location() = first_error;
        fail(STAGE_EXEC, 126)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(argv: &[&str]) -> ExecRequest {
        ExecRequest::new(argv.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn environment_defaults_then_overrides() {
        let mut r = req(&["ls"]);
        let env = environment(&r);
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
        assert!(env.iter().any(|e| e.starts_with("HOME=")));
        assert!(
            !env.iter().any(|e| e.starts_with("TERM=")),
            "TERM only with a PTY"
        );
        r.tty = true;
        r.env = vec!["PATH=/x".into(), "A=1".into(), "A=2".into(), "E=".into()];
        let env = environment(&r);
        assert!(env.contains(&"TERM=xterm".to_string()));
        assert!(env.contains(&"PATH=/x".to_string()));
        assert!(env.contains(&"A=2".to_string()) && !env.contains(&"A=1".to_string()));
        assert!(env.contains(&"E=".to_string()));
    }

    #[test]
    fn commands_are_looked_up_in_the_requests_path() {
        let mut r = req(&["tool"]);
        r.env = vec!["PATH=/a::/b/".into()];
        let p = prepare(&r).unwrap();
        let c: Vec<&str> = p.candidates.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(c, ["/a/tool", "./tool", "/b/tool"]);
        // A name with a slash is used as it is.
        let p = prepare(&req(&["./run.sh"])).unwrap();
        assert_eq!(p.candidates.len(), 1);
        assert_eq!(p.workdir.to_str().unwrap(), "/");
        // gid defaults to uid.
        let mut r = req(&["id"]);
        r.uid = Some(65534);
        let p = prepare(&r).unwrap();
        assert_eq!((p.uid, p.gid), (Some(65534), Some(65534)));
    }
}
