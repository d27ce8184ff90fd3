//! The serial console capture. Firecracker's stdout/stderr (the guest's ttyS0) go to a FIFO in
//! the run directory; a pump thread copies it into `console.log`, rotating once to
//! `console.log.1` whenever the log reaches the cap, so at most twice the cap is kept.
//!
//! Why a FIFO and not a pipe to hearthd or a plain file:
//! - a pipe dies with hearthd; Firecracker's next console write would then get SIGPIPE, which
//!   Firecracker handles by exiting (code 155), so a daemon restart would kill every VM;
//! - a plain file cannot be capped without a helper process or RLIMIT_FSIZE (SIGXFSZ, exit 151);
//! - the child's end of the FIFO is opened read-write and non-blocking: holding a read end
//!   itself, it never sees EPIPE, and when nobody drains the FIFO (hearthd down) writes fail
//!   with EAGAIN and console output is dropped rather than stalling the VMM. A restarted
//!   hearthd re-opens the FIFO by name and resumes the pump (see `Adopt`).
//!
//! The pump stops at end of file, which comes when the VMM has exited and hearth drops its
//! own write end ([`ConsoleCapture::close`]), or at once when the capture is dropped (the
//! actor went away; the FIFO keeps the rest for whoever adopts the VM).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// The default console log cap: 4 MiB (plus one rotated file).
pub const DEFAULT_CAP: u64 = 4 << 20;

/// A running console pump.
#[derive(Debug)]
pub struct ConsoleCapture {
    /// hearth's write end: keeps the pump from seeing end of file while the VMM may still
    /// be starting; dropped when the VMM has exited.
    keepalive: Option<File>,
    /// Dropping this wakes the pump and makes it exit without draining.
    stop: Option<std::os::fd::OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

/// Creates the FIFO if it is not there yet (mode 0600).
pub fn ensure_fifo(path: &Path) -> std::io::Result<()> {
    match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl ConsoleCapture {
    /// Starts pumping `fifo` into `log` (created if missing, appended to otherwise).
    pub fn start(fifo: &Path, log: &Path, cap: u64) -> std::io::Result<Self> {
        ensure_fifo(fifo)?;
        // Non-blocking so the open does not wait for a writer; the pump polls before reading.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)?;
        let (stop_rx, stop_tx) = nix::unistd::pipe()?;
        let keepalive = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)?;
        let log = log.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("console-pump".into())
            // The 64 KiB buffer is on the heap; one pump per VM should cost little memory.
            .stack_size(64 * 1024)
            .spawn(move || pump(reader, stop_rx, &log, cap))?;
        Ok(ConsoleCapture {
            keepalive: Some(keepalive),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Lets the pump finish: it drains what is buffered and exits at end of file (once the
    /// VMM, the other writer, is gone). Does not wait for it.
    pub fn close(&mut self) {
        self.keepalive = None;
    }

    /// Closes and waits for the pump to drain (only call once the VMM has exited).
    pub fn finish(mut self) {
        self.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Whether the pump thread has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for ConsoleCapture {
    fn drop(&mut self) {
        // Wake the pump and let it go; do not join (it may be mid-write).
        self.stop = None;
    }
}

/// Waits until `fifo` is readable (or hung up), or `stop` is closed. Returns false on stop.
fn wait_readable(fifo: &File, stop: &std::os::fd::OwnedFd) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: fifo.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: two valid pollfds, infinite timeout.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        if fds[1].revents != 0 {
            return false;
        }
        if fds[0].revents != 0 {
            return true;
        }
    }
}

fn rotated(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".1");
    p.into()
}

fn open_log(log: &Path) -> std::io::Result<(File, u64)> {
    let f = OpenOptions::new().create(true).append(true).open(log)?;
    let len = f.metadata()?.len();
    Ok((f, len))
}

/// Copies `reader` into `log` until end of file, rotating at `cap`. Write errors drop data
/// but keep draining, so the VMM is never throttled by a full disk.
fn pump(mut reader: File, stop: std::os::fd::OwnedFd, log: &Path, cap: u64) {
    let mut out = open_log(log).ok();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !wait_readable(&reader, &stop) {
            return;
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                ) =>
            {
                continue
            }
            Err(_) => return,
        };
        let mut data = &buf[..n];
        while !data.is_empty() {
            let Some((file, len)) = out.as_mut() else {
                out = open_log(log).ok();
                break;
            };
            let room = cap.saturating_sub(*len) as usize;
            if room == 0 {
                let _ = std::fs::rename(log, rotated(log));
                out = open_log(log).ok();
                continue;
            }
            let take = room.min(data.len());
            if file.write_all(&data[..take]).is_err() {
                break;
            }
            *len += take as u64;
            data = &data[take..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pump_copies_and_rotates_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("console.fifo");
        let log = dir.path().join("console.log");
        let cap = 100;
        let capture = ConsoleCapture::start(&fifo, &log, cap).unwrap();
        // The VMM's end, opened like the process backend does.
        let mut vmm = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        for i in 0..25u8 {
            vmm.write_all(&[b'a' + i; 10]).unwrap();
        }
        drop(vmm);
        capture.finish();
        let cur = std::fs::read(&log).unwrap();
        let old = std::fs::read(rotated(&log)).unwrap();
        assert_eq!(old.len(), 100);
        assert_eq!(cur.len(), 50);
        assert_eq!(&cur[40..], &[b'a' + 24; 10]);
    }

    #[test]
    fn dropping_the_capture_stops_the_pump_while_the_writer_lives() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("console.fifo");
        let log = dir.path().join("console.log");
        let capture = ConsoleCapture::start(&fifo, &log, 1 << 20).unwrap();
        let _vmm = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let thread = {
            let mut capture = capture;
            capture.thread.take().unwrap()
        };
        thread.join().unwrap();
    }
}
