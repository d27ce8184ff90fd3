//! Short, precise retry backoff for the actor's waits (API socket, `Running`, the agent).
//! tokio's timer has millisecond granularity, so a 100 µs `tokio::time::sleep` really sleeps
//! about 1 ms; sub-2 ms waits here use a `timerfd` (nanosecond resolution) registered with the
//! runtime instead, so waiting stays asynchronous and the mailbox is never blocked.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;

/// Waits at or above this use tokio's timer.
const COARSE: Duration = Duration::from_millis(2);

/// A doubling backoff with a cap.
#[derive(Debug)]
pub struct Backoff {
    delay: Duration,
    max: Duration,
    timer: Option<AsyncFd<OwnedFd>>,
}

impl Backoff {
    /// Starts at `first`, doubling up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            delay: first,
            max,
            timer: None,
        }
    }

    /// The next wait's length.
    pub fn current(&self) -> Duration {
        self.delay
    }

    /// Waits the current delay, then doubles it (up to the cap).
    pub async fn wait(&mut self) {
        let d = self.delay;
        self.delay = (self.delay * 2).min(self.max);
        if d >= COARSE || self.precise_sleep(d).await.is_err() {
            tokio::time::sleep(d).await;
        }
    }

    async fn precise_sleep(&mut self, d: Duration) -> std::io::Result<()> {
        if self.timer.is_none() {
            self.timer = Some(new_timerfd()?);
        }
        let Some(timer) = self.timer.as_ref() else {
            return Err(std::io::ErrorKind::Other.into());
        };
        arm(timer.get_ref(), d)?;
        loop {
            let mut guard = timer.readable().await?;
            let done = guard.try_io(|fd| {
                let mut expirations = [0u8; 8];
                // SAFETY: reading 8 bytes into an 8-byte buffer from a timerfd we own.
                let n = unsafe {
                    libc::read(fd.get_ref().as_raw_fd(), expirations.as_mut_ptr().cast(), 8)
                };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match done {
                Ok(res) => return res,
                Err(_would_block) => {}
            }
        }
    }
}

fn new_timerfd() -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: timerfd_create takes no pointers and returns a new fd or -1.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the OwnedFd moves into the AsyncFd, so it stays open and unchanged while
    // registered.
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

fn arm(fd: &OwnedFd, d: Duration) -> std::io::Result<()> {
    // A zero it_value would disarm the timer: wait at least 1 ns.
    let d = d.max(Duration::from_nanos(1));
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(d.subsec_nanos()),
        },
    };
    // SAFETY: valid fd and a fully initialised itimerspec; the old value is not requested.
    if unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &raw const spec, std::ptr::null_mut()) }
        < 0
    {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_micros(100), Duration::from_micros(300));
        let mut seen = vec![];
        actix::System::new().block_on(async {
            for _ in 0..4 {
                seen.push(b.current());
                b.wait().await;
            }
        });
        let us = |n| Duration::from_micros(n);
        assert_eq!(seen, [us(100), us(200), us(300), us(300)]);
    }

    #[actix::test]
    async fn waits_at_least_the_delay() {
        let mut b = Backoff::new(Duration::from_micros(150), Duration::from_millis(3));
        for expected in [150u64, 300, 600, 1200, 2400] {
            let t = Instant::now();
            b.wait().await;
            assert!(t.elapsed() >= Duration::from_micros(expected));
        }
    }
}
