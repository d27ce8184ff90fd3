//! The agent's only waiter: one thread calls `waitpid(-1)` and hands each status to whoever
//! registered that pid. Nothing else in the agent waits for children, so no status is taken
//! by another waiter, and orphans reparented to the agent (when it runs as PID 1) are reaped
//! too. A child is registered under the same lock its fork happens in, so a status can never
//! arrive before its pid is known.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// What gets a child's raw wait status.
pub type OnExit = Box<dyn FnOnce(libc::c_int) + Send>;

/// The registry of children being waited for.
pub struct Reaper {
    waiting: Mutex<HashMap<libc::pid_t, OnExit>>,
    /// Signalled when a child is registered, so an idle reaper wakes up.
    spawned: Condvar,
}

/// The agent's reaper, its thread started on first use.
///
/// # Panics
///
/// When the reaper thread cannot be started: no session could ever end without it.
pub fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<&'static Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        let r: &'static Reaper = Box::leak(Box::new(Reaper {
            waiting: Mutex::new(HashMap::new()),
            spawned: Condvar::new(),
        }));
        // Without the reaper thread no session would ever end; failing to start it is fatal.
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || r.run())
            .expect("cannot start the reaper thread");
        r
    })
}

/// Held while forking: the child's pid is registered before the reaper can look it up.
pub struct ForkGuard<'a> {
    reaper: &'a Reaper,
    waiting: MutexGuard<'a, HashMap<libc::pid_t, OnExit>>,
}

impl ForkGuard<'_> {
    /// Registers `pid`: `on_exit` gets its wait status.
    pub fn register(mut self, pid: libc::pid_t, on_exit: OnExit) {
        self.waiting.insert(pid, on_exit);
        drop(self.waiting);
        self.reaper.spawned.notify_all();
    }
}

impl Reaper {
    /// Locks the registry for a fork; call [`ForkGuard::register`] with the child's pid.
    pub fn lock_for_fork(&self) -> ForkGuard<'_> {
        ForkGuard {
            reaper: self,
            waiting: self.waiting.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    fn run(&self) {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: waitpid writes only to `status`.
            let pid = unsafe { libc::waitpid(-1, &raw mut status, 0) };
            if pid > 0 {
                let cb = self
                    .waiting
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&pid);
                // A pid nobody registered is an orphan the agent inherited: reaped, done.
                if let Some(cb) = cb {
                    cb(status);
                }
                continue;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // ECHILD: no child at all. Sleep until one is registered; the timeout picks up
            // orphans that become our children without a registration.
            let waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if waiting.is_empty() {
                let _ = self
                    .spawned
                    .wait_timeout(waiting, Duration::from_millis(500));
            }
        }
    }
}
