//! The signals init forwards to the command: blocked in every thread (set before any thread
//! starts, so threads inherit the mask) and taken synchronously by the supervising loop with
//! `sigtimedwait`. A blocked signal is queued even for a PID 1, whose default-disposition
//! signals the kernel would otherwise drop; a no-op handler is installed as well so no
//! disposition is "default" for them.

use std::time::Duration;

/// What init forwards: what `docker stop`, Ctrl-Alt-Del (the kernel sends init `SIGINT`) and
/// users send.
pub const FORWARDED: [libc::c_int; 5] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The signal the command gets for one init received. The kernel turns Ctrl-Alt-Del, which is
/// how hearth asks a guest to stop gracefully, into `SIGINT` for init: the command gets
/// `SIGTERM` for it, as `docker stop` sends. Every other signal is passed on as it is.
pub fn to_forward(received: libc::c_int) -> libc::c_int {
    if received == libc::SIGINT {
        libc::SIGTERM
    } else {
        received
    }
}

extern "C" fn ignore(_: libc::c_int) {}

/// The blocked set, to wait on.
#[derive(Clone, Copy)]
pub struct Forwarded(libc::sigset_t);

/// Installs the no-op handlers and blocks [`FORWARDED`] in the calling thread (call before
/// starting any thread).
pub fn block() -> Forwarded {
    // SAFETY: sigset manipulation on a local; sigaction with a valid handler; sigprocmask on
    // the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        for sig in FORWARDED {
            libc::sigaddset(&raw mut set, sig);
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&raw mut sa.sa_mask);
            libc::sigaction(sig, &raw const sa, std::ptr::null_mut());
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
        Forwarded(set)
    }
}

impl Forwarded {
    /// Waits up to `timeout` for one of the signals; `None` when none came.
    pub fn wait(&self, timeout: Duration) -> Option<libc::c_int> {
        let ts = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
        };
        // SAFETY: valid set and timespec; no siginfo wanted.
        let sig =
            unsafe { libc::sigtimedwait(&raw const self.0, std::ptr::null_mut(), &raw const ts) };
        (sig > 0).then_some(sig)
    }
}
