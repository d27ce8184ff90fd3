//! The real `hearth-agent` as the simulated guest's agent (`FC_SIM_AGENT_BIN`): started at
//! `InstanceStart` on a Unix socket of its own, killed when the VMM exits (and by
//! `PR_SET_PDEATHSIG` when the simulator dies without a chance to), and reached by the vsock
//! muxer, which copies a host's `CONNECT <agent port>` stream to it byte for byte, closing as
//! Firecracker's vsock does.
#![expect(
    clippy::disallowed_methods,
    reason = "the simulator stands in for a VM: it starts the guest's agent and removes its own scratch directories; hearth's host-backend rule (clippy.toml) is for hearth's product code"
)]

use std::io;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A running real agent and the private directory holding its socket.
#[derive(Debug)]
pub struct RealAgent {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl RealAgent {
    /// Starts `bin --unix <private tmp dir>/agent.sock --sim-freeze-file <freeze_file>` (and
    /// `--sim-identity-file <file>` when given: its `reconfigure` writes there instead of
    /// touching the host); its stderr goes to the simulator's. The freeze file is never
    /// optional: an agent on the host must record `freeze`, never freeze the host's root.
    ///
    /// # Errors
    ///
    /// Creating its directory or spawning it failed.
    pub fn spawn(bin: &Path, identity_file: Option<&Path>, freeze_file: &Path) -> io::Result<Self> {
        remove_stale_dirs(&std::env::temp_dir());
        let dir = std::env::temp_dir().join(format!(
            "fc-sim-agent-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&dir)?;
        let socket = dir.join("agent.sock");
        let mut cmd = Command::new(bin);
        cmd.arg("--unix").arg(&socket);
        cmd.arg("--sim-freeze-file").arg(freeze_file);
        if let Some(f) = identity_file {
            cmd.arg("--sim-identity-file").arg(f);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: prctl and getppid are async-signal-safe; the closure only copies a pid.
        unsafe {
            cmd.pre_exec(move || {
                // The agent dies with the thread that spawned it (the VMM thread, which lives
                // as long as the process): a SIGKILLed simulator leaves no agent behind.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The simulator died before the prctl took effect: nobody will kill us.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        match cmd.spawn() {
            Ok(child) => Ok(Self { child, dir, socket }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(e)
            }
        }
    }

    /// The agent's socket.
    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Kills the agent (and waits for it) and removes its directory.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for RealAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes the agent directories of simulators that are gone (one killed by `SIGKILL` cannot
/// remove its own): `fc-sim-agent-<pid>-<rand>` whose pid no longer runs.
fn remove_stale_dirs(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("fc-sim-agent-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // Signal 0 only checks that the process exists (ESRCH: it is gone).
        let gone = i32::try_from(pid).is_ok_and(|pid| {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                == Err(nix::errno::Errno::ESRCH)
        });
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Connects to the agent's socket, retrying until `timeout` (it may still be starting).
///
/// # Errors
///
/// The last connection error once `timeout` passed.
pub fn connect(socket: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(socket) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Copies bytes both ways between the host's stream and the agent's until either side closes
/// its sending direction, then closes both streams in both directions, as Firecracker's vsock
/// connection does: a host EOF (a half-close included) becomes a guest `SHUTDOWN` with both
/// flags (the guest reads EOF and can no longer send), and a guest shutdown ends the host stream
/// once what the guest sent before it was delivered.
pub fn splice(host: UnixStream, agent: UnixStream) {
    let (Ok(host2), Ok(agent2)) = (host.try_clone(), agent.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || copy_then_close(host2, agent2));
    copy_then_close(agent, host);
    let _ = up.join();
}

fn copy_then_close(mut from: UnixStream, mut to: UnixStream) {
    let _ = io::copy(&mut from, &mut to);
    // Bytes already written stay readable by the receiver; then it reads EOF.
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn stale_agent_dirs_of_dead_simulators_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        // A pid that cannot run (above the kernel's pid_max limit of 2^22).
        let dead = tmp.path().join("fc-sim-agent-99999999-0000abcd");
        let alive = tmp
            .path()
            .join(format!("fc-sim-agent-{}-0000abcd", std::process::id()));
        let other = tmp.path().join("fc-sim-agent-notapid");
        for d in [&dead, &alive, &other] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(dead.join("agent.sock"), b"").unwrap();
        remove_stale_dirs(tmp.path());
        assert!(!dead.exists());
        assert!(alive.exists() && other.exists());
    }

    #[test]
    fn a_host_half_close_ends_the_connection_as_in_firecracker() {
        let (mut host, host_inner) = UnixStream::pair().unwrap();
        let (agent_inner, mut agent) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || splice(host_inner, agent_inner));
        host.write_all(b"request").unwrap();
        host.shutdown(Shutdown::Write).unwrap();
        // The agent gets what was sent, then EOF, and can no longer answer.
        let mut got = Vec::new();
        agent.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"request");
        t.join().unwrap();
        let _ = agent.write_all(b"late");
        let mut back = Vec::new();
        host.read_to_end(&mut back).unwrap();
        assert!(back.is_empty(), "{back:?}");
    }

    #[test]
    fn what_the_agent_sent_before_closing_reaches_the_host() {
        let (mut host, host_inner) = UnixStream::pair().unwrap();
        let (agent_inner, mut agent) = UnixStream::pair().unwrap();
        let t = thread::spawn(move || splice(host_inner, agent_inner));
        host.write_all(b"ping").unwrap();
        let mut req = [0u8; 4];
        agent.read_exact(&mut req).unwrap();
        let writer = thread::spawn(move || agent.write_all(&vec![7u8; 1 << 20]).unwrap());
        let mut back = Vec::new();
        host.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 1 << 20);
        writer.join().unwrap();
        t.join().unwrap();
    }
}
