//! Starting the image's command as init's supervised child: a session of its own (`setsid`,
//! with the console as its controlling terminal when init's stdin is one), init's stdio (the
//! console), the spec's environment, working directory and credentials. Forked under the
//! agent's one reaper ([`crate::exec::reaper`]), so its status arrives like a session's and
//! every orphan is reaped by the same waiter. As in [`crate::exec::spawn`], everything the
//! child touches is prepared before the fork, and an exec failure ends it with 127 (not found)
//! or 126 (cannot execute), after a message on its stderr.

use std::ffi::CString;
use std::io;
use std::path::Path;

use hearth_proto::init::InitSpec;

use super::user::{self, Credentials};
use crate::exec::reaper::{reaper, OnExit};
use crate::exec::spawn::{c_ptrs, DEFAULT_PATH};

/// The command's environment: `PATH` and `HOME` defaults, then the spec's entries (later
/// ones win), as Docker builds it.
#[must_use]
pub fn environment(spec_env: &[String], home: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOME".into(), home.into()),
    ];
    for e in spec_env {
        if let Some((k, v)) = e.split_once('=') {
            match env.iter_mut().find(|(key, _)| key == k) {
                Some(slot) => v.clone_into(&mut slot.1),
                None => env.push((k.to_string(), v.to_string())),
            }
        }
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// The command, ready to fork and exec.
#[derive(Debug)]
pub struct Prepared {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    env: Vec<CString>,
    workdir: CString,
    creds: Credentials,
    /// Preformatted failure messages (no allocation after the fork).
    msg_creds: CString,
    msg_chdir: CString,
    msg_exec: CString,
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

/// Resolves the spec against the guest's `/etc` (user, group, `HOME`) into a [`Prepared`].
///
/// # Errors
///
/// An unknown user or group, or a string `execve` cannot take.
pub fn prepare(spec: &InitSpec, etc: &Path) -> Result<Prepared, String> {
    let creds = user::resolve(spec.user.as_deref(), etc)?;
    let env = environment(&spec.env, &creds.home);
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let prog = &spec.argv[0];
    let candidates = if prog.contains('/') {
        vec![cstring(prog)?]
    } else {
        path.split(':')
            .map(|dir| {
                let dir = if dir.is_empty() { "." } else { dir };
                cstring(&format!("{}/{prog}", dir.trim_end_matches('/')))
            })
            .collect::<Result<_, _>>()?
    };
    let workdir = spec.working_dir.as_deref().unwrap_or("/");
    Ok(Prepared {
        candidates,
        argv: spec
            .argv
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<_, _>>()?,
        env: env.iter().map(|e| cstring(e)).collect::<Result<_, _>>()?,
        workdir: cstring(workdir)?,
        msg_creds: cstring(&format!(
            "hearth-init: cannot switch to uid {} gid {}\n",
            creds.uid, creds.gid
        ))?,
        msg_chdir: cstring(&format!(
            "hearth-init: cannot change to the working directory {workdir:?}\n"
        ))?,
        msg_exec: cstring(&format!("hearth-init: cannot execute {prog:?}\n"))?,
        creds,
    })
}

/// Forks and execs the command; `on_exit` gets its raw wait status from the reaper.
///
/// # Errors
///
/// The fork failed.
pub fn spawn(prep: &Prepared, on_exit: OnExit) -> io::Result<libc::pid_t> {
    let argv = c_ptrs(&prep.argv);
    let envp = c_ptrs(&prep.env);
    let guard = reaper().lock_for_fork();
    // SAFETY: the child only makes async-signal-safe calls on memory prepared above.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the child, see `child`.
        unsafe { child(prep, &argv, &envp) }
    }
    guard.register(pid, on_exit);
    Ok(pid)
}

/// Writes a prepared message to stderr and exits.
unsafe fn fail(msg: &CString, code: i32) -> ! {
    let b = msg.as_bytes();
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(2, b.as_ptr().cast(), b.len());
        libc::_exit(code)
    }
}

/// The child after fork: never returns.
unsafe fn child(prep: &Prepared, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> ! {
    // SAFETY (whole block): async-signal-safe calls on prepared memory only.
    unsafe {
        // Init blocks the signals it forwards; the command must get them.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut());
        for sig in 1..32 {
            libc::signal(sig, libc::SIG_DFL);
        }
        libc::setsid();
        // The console as controlling terminal when it is one (job control, ^C); not fatal.
        if libc::isatty(0) == 1 {
            libc::ioctl(0, libc::TIOCSCTTY, 1);
        }
        let groups: &[libc::gid_t] = &prep.creds.groups;
        if libc::setgroups(groups.len(), groups.as_ptr()) < 0
            || libc::setgid(prep.creds.gid) < 0
            || libc::setuid(prep.creds.uid) < 0
        {
            fail(&prep.msg_creds, 126);
        }
        if libc::chdir(prep.workdir.as_ptr()) < 0 {
            fail(&prep.msg_chdir, 126);
        }
        let mut not_found = true;
        for c in &prep.candidates {
            libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let errno = *libc::__errno_location();
            if errno != libc::ENOENT && errno != libc::ENOTDIR {
                not_found = false;
            }
        }
        fail(&prep.msg_exec, if not_found { 127 } else { 126 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_resolves_path_home_and_user() {
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(
            etc.path().join("passwd"),
            "app:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        let spec = InitSpec {
            argv: vec!["server".into(), "--port=80".into()],
            env: vec!["PATH=/opt/bin:/bin".into(), "A=1".into()],
            working_dir: Some("/srv".into()),
            user: Some("app".into()),
        };
        let p = prepare(&spec, etc.path()).unwrap();
        let c: Vec<&str> = p.candidates.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(c, ["/opt/bin/server", "/bin/server"]);
        let env: Vec<&str> = p.env.iter().map(|c| c.to_str().unwrap()).collect();
        assert!(env.contains(&"HOME=/home/app"), "{env:?}");
        assert!(env.contains(&"A=1"));
        assert_eq!(p.workdir.to_str().unwrap(), "/srv");
        assert_eq!((p.creds.uid, p.creds.gid), (1000, 1000));
        let bad = InitSpec {
            user: Some("ghost".into()),
            ..spec
        };
        assert!(prepare(&bad, etc.path()).unwrap_err().contains("ghost"));
    }
}
