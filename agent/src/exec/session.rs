//! One exec session: its process, its output rings, who is attached, how it ended. The pump
//! threads move the process's output into the rings; while a host is attached a pump waits for
//! room rather than dropping bytes the host has not been sent (that wait is the backpressure:
//! the pipe or PTY fills and the process blocks). While detached the rings drop their oldest
//! bytes.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use hearth_proto::agent::{ErrorBody, ExecInfo, ExecRequest, ExitStatus, SessionId, WindowSize};

use super::ring::Ring;
use super::spawn;

/// The smallest ring a session gets, whatever it asks for: one frame's worth, so an attached
/// host always has something to be sent.
pub const MIN_RING: usize = hearth_proto::agent::frame::MAX_PAYLOAD;

/// How long output is still read after the process exited, when something else (a background
/// child) keeps its pipe or PTY open.
pub const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Stdout's index in the per-stream arrays.
pub const STDOUT: usize = 0;
/// Stderr's index in the per-stream arrays.
pub const STDERR: usize = 1;

/// A host attached to the session.
#[derive(Debug)]
pub struct Attachment {
    /// Which attach this is: a newer one takes over.
    pub gen: u64,
    /// Per stream, the absolute offset the host has been sent up to.
    pub sent: [u64; 2],
    /// Set when the stream must end with this error (a bad host frame).
    pub end: Option<ErrorBody>,
    /// A handle on the host's connection, to close it when a takeover finds its sender stuck
    /// on a host that stopped reading.
    pub closer: Option<OwnedFd>,
    /// No host yet: the place is held for the first attach (`ExecRequest::hold_ms`).
    pub held: bool,
}

/// The mutable part of a session.
#[derive(Debug)]
pub struct State {
    /// Kept output, per stream.
    pub rings: [Ring; 2],
    /// Whether each stream's pump still reads.
    pub open: [bool; 2],
    /// How the process ended.
    pub exit: Option<ExitStatus>,
    /// When it ended.
    pub exited_at: Option<Instant>,
    /// The host attached now.
    pub attach: Option<Attachment>,
    /// The next attachment's generation.
    pub next_gen: u64,
    /// Whether the timeout killed it.
    pub timed_out: bool,
}

/// A session.
#[derive(Debug)]
pub struct Session {
    /// Its id.
    pub id: SessionId,
    /// Its command.
    pub argv: Vec<String>,
    /// Whether it runs on a PTY.
    pub tty: bool,
    /// Its pid, once spawned (also its process group).
    pid: OnceLock<libc::pid_t>,
    /// When it started, in ms since boot.
    pub started_uptime_ms: u64,
    /// The agent's end of its stdin, while open. A mutex of its own: writing may block on the
    /// process, which must not block the pumps.
    stdin: Mutex<Option<Arc<File>>>,
    /// The PTY master, for resizes.
    pty: OnceLock<OwnedFd>,
    state: Mutex<State>,
    changed: Condvar,
}

impl Session {
    /// A session not started yet; `attach` reserves the first attachment for the `exec`'s own
    /// connection, so no output is dropped before it starts reading. Without it, the place is
    /// held for the first `attach` for the request's `hold_ms`, if it has one.
    #[must_use]
    pub fn new(id: SessionId, req: &ExecRequest, attach: bool) -> Arc<Self> {
        let cap = usize::try_from(
            req.ring_bytes
                .unwrap_or(hearth_proto::agent::exec::DEFAULT_RING_BYTES),
        )
        .unwrap_or(usize::MAX)
        .max(MIN_RING);
        let held = !attach && req.hold_ms.is_some();
        let attach = (attach || held).then_some(Attachment {
            gen: 0,
            sent: [0, 0],
            end: None,
            closer: None,
            held,
        });
        Arc::new(Session {
            id,
            argv: req.argv.clone(),
            tty: req.tty,
            pid: OnceLock::new(),
            started_uptime_ms: crate::sysinfo::uptime_ms(std::path::Path::new(
                crate::sysinfo::UPTIME_PATH,
            ))
            .unwrap_or(0),
            stdin: Mutex::new(None),
            pty: OnceLock::new(),
            state: Mutex::new(State {
                rings: [Ring::new(cap), Ring::new(cap)],
                open: [true, !req.tty],
                exit: None,
                exited_at: None,
                attach,
                next_gen: 1,
                timed_out: false,
            }),
            changed: Condvar::new(),
        })
    }

    /// Locks the state.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for a change of the state.
    pub fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes every waiter after a change.
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    /// The pid (0 before the spawn).
    pub fn pid(&self) -> libc::pid_t {
        self.pid.get().copied().unwrap_or(0)
    }

    /// Starts the process, its pumps and its timeout.
    ///
    /// # Errors
    ///
    /// The spawn's ([`spawn::spawn`]).
    pub fn start(self: &Arc<Self>, req: &ExecRequest) -> io::Result<()> {
        let me = self.clone();
        let spawned = spawn::spawn(req, Box::new(move |status| me.exited(status)))?;
        let _ = self.pid.set(spawned.pid);
        if let Some(pty) = spawned.pty {
            let _ = self.pty.set(pty);
        }
        *self.stdin.lock().unwrap_or_else(PoisonError::into_inner) =
            spawned.stdin.map(|fd| Arc::new(File::from(fd)));
        if let Some(msg) = spawned.exec_error {
            let stream = if self.tty { STDOUT } else { STDERR };
            self.lock().rings[stream].push_overwriting(msg.as_bytes());
        }
        self.spawn_pump(STDOUT, spawned.stdout);
        if let Some(err) = spawned.stderr {
            self.spawn_pump(STDERR, err);
        }
        if let Some(ms) = req.hold_ms {
            if self.lock().attach.as_ref().is_some_and(|a| a.held) {
                let me = self.clone();
                std::thread::spawn(move || me.release_hold(Duration::from_millis(ms)));
            }
        }
        if let Some(ms) = req.timeout_ms {
            let me = self.clone();
            std::thread::spawn(move || me.enforce_timeout(Duration::from_millis(ms)));
        }
        Ok(())
    }

    fn spawn_pump(self: &Arc<Self>, stream: usize, fd: OwnedFd) {
        let me = self.clone();
        std::thread::spawn(move || {
            me.pump(stream, &fd);
            me.lock().open[stream] = false;
            me.notify();
        });
    }

    /// Reads one output stream until EOF (a PTY answers EIO once the process side closed), or
    /// until [`DRAIN_GRACE`] after the process exited.
    fn pump(&self, stream: usize, fd: &OwnedFd) {
        let mut buf = vec![0u8; MIN_RING];
        loop {
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd.
            let r = unsafe { libc::poll(&raw mut pfd, 1, 200) };
            if r < 0 {
                // EINTR; anything else would repeat forever, so give up on the stream.
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return;
            }
            if r == 0 {
                let st = self.lock();
                if st.exited_at.is_some_and(|t| t.elapsed() >= DRAIN_GRACE) {
                    return;
                }
                continue;
            }
            // SAFETY: reading into our buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                0 => return,
                n if n > 0 => self.deliver(stream, &buf[..n.unsigned_abs()]),
                _ => {
                    let e = io::Error::last_os_error();
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) {
                        return;
                    }
                }
            }
        }
    }

    /// Puts output into the ring: while attached, only over bytes the host was sent (waiting
    /// for room otherwise); while detached, over the oldest bytes.
    fn deliver(&self, stream: usize, mut data: &[u8]) {
        let mut st = self.lock();
        while !data.is_empty() {
            let sent = match &st.attach {
                None => {
                    st.rings[stream].push_overwriting(data);
                    break;
                }
                Some(a) => a.sent[stream],
            };
            let ring = &mut st.rings[stream];
            let need = data.len().saturating_sub(ring.room()) as u64;
            ring.drop_until((ring.start() + need).min(sent));
            let k = ring.push_within(data);
            data = &data[k..];
            if !data.is_empty() {
                self.notify();
                st = self.wait(st);
            }
        }
        drop(st);
        self.notify();
    }

    /// The reaper's report: the process ended with this wait status.
    fn exited(&self, status: libc::c_int) {
        let mut st = self.lock();
        let mut exit = if libc::WIFSIGNALED(status) {
            ExitStatus::killed(libc::WTERMSIG(status))
        } else {
            ExitStatus::exited(libc::WEXITSTATUS(status))
        };
        exit.timed_out = st.timed_out;
        st.exit = Some(exit);
        st.exited_at = Some(Instant::now());
        drop(st);
        self.notify();
    }

    /// Ends the hold for the first attach, if no host came within `hold`.
    fn release_hold(&self, hold: Duration) {
        let deadline = Instant::now() + hold;
        let mut st = self.lock();
        while st.attach.as_ref().is_some_and(|a| a.held) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                st.attach = None;
                drop(st);
                self.notify();
                return;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn enforce_timeout(&self, after: Duration) {
        let deadline = Instant::now() + after;
        let mut st = self.lock();
        while st.exit.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                st.timed_out = true;
                self.kill_group(libc::SIGKILL);
                return;
            }
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sends `signal` to the process group (the caller checked the process still runs).
    fn kill_group(&self, signal: i32) {
        let pid = self.pid();
        if pid > 0 {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(-pid, signal) };
        }
    }

    /// Sends `signal` to the session's process group; `false` when it has exited.
    pub fn signal(&self, signal: i32) -> bool {
        let st = self.lock();
        if st.exit.is_some() {
            return false;
        }
        self.kill_group(signal);
        true
    }

    /// Whether it has exited.
    pub fn has_exited(&self) -> bool {
        self.lock().exit.is_some()
    }

    /// The session as `execs` and `exec_info` report it.
    pub fn info(&self) -> ExecInfo {
        let stdin_open = self
            .stdin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        let st = self.lock();
        ExecInfo {
            id: self.id.clone(),
            argv: self.argv.clone(),
            tty: self.tty,
            stdin_open,
            pid: self.pid().unsigned_abs(),
            started_uptime_ms: self.started_uptime_ms,
            attached: st.attach.as_ref().is_some_and(|a| !a.held),
            exit: st.exit,
        }
    }

    /// Writes host bytes to stdin; `false` when stdin is closed (or never was open).
    pub fn write_stdin(&self, data: &[u8]) -> bool {
        let Some(f) = self
            .stdin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        else {
            return false;
        };
        // A process that closed its stdin or exited: the bytes are lost, as in a pipe.
        let _ = (&*f).write_all(data);
        true
    }

    /// Closes stdin (a PTY gets the EOF character instead: it cannot be half-closed).
    pub fn close_stdin(&self) {
        let f = self
            .stdin
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let (Some(f), true) = (f, self.tty) {
            let _ = (&*f).write_all(&[4]);
        }
    }

    /// Resizes the PTY (no-op without one).
    pub fn resize(&self, size: WindowSize) {
        if let Some(pty) = self.pty.get() {
            let _ = spawn::set_window_size(pty.as_raw_fd(), size);
        }
    }
}
