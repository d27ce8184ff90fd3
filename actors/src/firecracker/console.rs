//! The serial console capture. Firecracker's stdout/stderr (the guest's ttyS0) go to a FIFO in
//! the run directory; a pump task on the async runtime copies it into `console.log`, rotating
//! once to `console.log.1` whenever the log reaches the cap, so at most twice the cap is kept.
//!
//! Why a FIFO and not a pipe to hearthd or a plain file:
//! - a pipe dies with hearthd; Firecracker's next console write would then get SIGPIPE, which
//!   Firecracker handles by exiting (code 155), so a daemon restart would kill every VM;
//! - a plain file cannot be capped without a helper process or `RLIMIT_FSIZE` (SIGXFSZ, exit 151);
//! - the child's end of the FIFO is opened read-write and non-blocking: holding a read end
//!   itself, it never sees EPIPE, and when nobody drains the FIFO (hearthd down) writes fail
//!   with EAGAIN and console output is dropped rather than stalling the VMM. A restarted
//!   hearthd re-opens the FIFO by name and resumes the pump (see `Adopt`).
//!
//! Why a task and not a thread: a thread per VM made 1000 VMs cost 1000 threads, their stacks
//! and buffers, and glibc kept the stacks after the VMs were gone. The pump is a tokio task
//! waiting on the non-blocking FIFO with `AsyncFd` (epoll), so any number of consoles share the
//! runtime's thread; the read buffer lives on that thread's stack only while a wake-up copies.
//! The log writes are plain `write(2)`s to a regular file (page cache), bounded per wake-up.
//!
//! The pump stops at end of file, which comes when the VMM has exited and hearth drops its
//! own write end ([`ConsoleCapture::close`], [`ConsoleCapture::drain`]), or at once when the
//! capture is dropped (the actor went away; the FIFO keeps the rest for whoever adopts the VM).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::exit_watch::{ExitLineWatch, GuestExit};

/// The default console log cap: 4 MiB (plus one rotated file).
pub const DEFAULT_CAP: u64 = 4 << 20;

/// Bytes read per `read(2)`; the buffer is on the stack of the copying call, never kept.
const CHUNK: usize = 16 * 1024;

/// Bytes copied per wake-up before the pump yields, so a console that never pauses cannot
/// hold the runtime's thread (every other VM's actor runs there too).
const BUDGET: usize = 256 * 1024;

/// A running console pump.
#[derive(Debug)]
pub struct ConsoleCapture {
    /// hearth's write end: keeps the pump from seeing end of file while the VMM may still
    /// be starting; dropped when the VMM has exited.
    keepalive: Option<File>,
    /// The pump task; aborted when the capture is dropped.
    task: Option<JoinHandle<()>>,
    /// Set by [`ConsoleCapture::close`]: the VMM is gone, so once the FIFO is empty the pump
    /// is done even if a writer remains (the next VMM's capture may already hold the FIFO).
    closed: Arc<AtomicBool>,
    /// The exit line of hearth's init, when the pump has copied one ([`super::exit_watch`]).
    guest_exit: GuestExit,
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
    /// Starts pumping `fifo` into `log` (created if missing, appended to otherwise). Must be
    /// called inside a tokio runtime (an actix arbiter is one): the pump is a task on it.
    pub fn start(fifo: &Path, log: &Path, cap: u64) -> std::io::Result<Self> {
        ensure_fifo(fifo)?;
        // Non-blocking: the open does not wait for a writer, and reads answer EAGAIN when the
        // FIFO is empty, which is what AsyncFd needs. std opens with O_CLOEXEC.
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)?;
        let keepalive = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)?;
        // SAFETY: the File moves into the AsyncFd, so the fd stays open and unchanged while
        // it is registered.
        let reader =
            unsafe { AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        let sink = LogSink::new(log, cap);
        let guest_exit = sink.watch.handle();
        let closed = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(pump(reader, sink, closed.clone()));
        Ok(ConsoleCapture {
            keepalive: Some(keepalive),
            task: Some(task),
            closed,
            guest_exit,
        })
    }

    /// How the image's command ended, if hearth's init has reported it on the console so
    /// far (read it after [`ConsoleCapture::finish`] to see everything the VMM wrote).
    pub fn guest_exit(&self) -> GuestExit {
        self.guest_exit.clone()
    }

    /// Lets the pump finish (call once the VMM has exited): it drains what is buffered and
    /// exits at end of file, or as soon as the FIFO is empty. Does not wait for it.
    pub fn close(&mut self) {
        self.closed.store(true, Ordering::Release);
        self.keepalive = None;
    }

    /// Closes and lets the pump drain the rest in the background (call once the VMM has
    /// exited): unlike dropping the capture, this does not stop the pump.
    pub fn drain(mut self) {
        self.close();
        // Detached: the task ends by itself at end of file.
        drop(self.task.take());
    }

    /// Closes and waits for the pump to drain (only call once the VMM has exited).
    pub async fn finish(mut self) {
        self.close();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Whether the pump task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for ConsoleCapture {
    fn drop(&mut self) {
        // Stop the pump where it is: the rest stays in the FIFO for whoever adopts the VM.
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// What one wake-up of the pump found.
enum Copied {
    /// The FIFO is empty for now (EAGAIN).
    Empty,
    /// The budget ran out with data left.
    More,
    /// End of file: no writer is left.
    Eof,
}

/// Copies the FIFO into the log until end of file (or a read error), or until it is empty
/// once `closed` is set.
async fn pump(reader: AsyncFd<File>, mut sink: LogSink, closed: Arc<AtomicBool>) {
    loop {
        let Ok(mut guard) = reader.readable().await else {
            return;
        };
        match sink.copy_from(guard.get_inner()) {
            // Closed means the VMM is gone: empty now is empty for good, whoever else holds a
            // write end (a new capture of the same FIFO, when the VM is started again).
            Ok(Copied::Empty) if closed.load(Ordering::Acquire) => return,
            // Readiness is edge-triggered: only clear it once the FIFO said EAGAIN.
            Ok(Copied::Empty) => guard.clear_ready(),
            Ok(Copied::More) => {
                drop(guard);
                tokio::task::yield_now().await;
            }
            Ok(Copied::Eof) | Err(_) => return,
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

/// The capped log: `console.log`, renamed to `console.log.1` when it reaches the cap.
struct LogSink {
    path: PathBuf,
    cap: u64,
    /// The open log and its length; `None` after an error (re-opened on the next write).
    out: Option<(File, u64)>,
    /// Looks for init's exit line in what is copied.
    watch: ExitLineWatch,
}

impl LogSink {
    fn new(path: &Path, cap: u64) -> Self {
        LogSink {
            path: path.to_path_buf(),
            cap,
            out: open_log(path).ok(),
            watch: ExitLineWatch::new(),
        }
    }

    /// Reads what the FIFO holds (up to [`BUDGET`]) and appends it to the log. Only read
    /// errors are returned: write errors drop data but keep draining, so the VMM is never
    /// throttled by a full disk.
    fn copy_from(&mut self, mut reader: &File) -> std::io::Result<Copied> {
        let mut buf = [0u8; CHUNK];
        let mut copied = 0;
        while copied < BUDGET {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(Copied::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(Copied::Empty),
                Err(e) => return Err(e),
            };
            self.watch.feed(&buf[..n]);
            self.write(&buf[..n]);
            copied += n;
        }
        Ok(Copied::More)
    }

    /// Appends `data`, rotating at the cap.
    fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let Some((file, len)) = self.out.as_mut() else {
                self.out = open_log(&self.path).ok();
                return;
            };
            let room = self.cap.saturating_sub(*len) as usize;
            if room == 0 {
                let _ = std::fs::rename(&self.path, rotated(&self.path));
                self.out = open_log(&self.path).ok();
                continue;
            }
            let take = room.min(data.len());
            if file.write_all(&data[..take]).is_err() {
                return;
            }
            *len += take as u64;
            data = &data[take..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The VMM's end, opened like the process backend does.
    fn vmm_end(fifo: &Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(fifo)
            .unwrap()
    }

    fn threads() -> usize {
        std::fs::read_dir("/proc/self/task").unwrap().count()
    }

    #[tokio::test]
    async fn pump_copies_and_rotates_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("console.fifo");
        let log = dir.path().join("console.log");
        let cap = 100;
        let capture = ConsoleCapture::start(&fifo, &log, cap).unwrap();
        let mut vmm = vmm_end(&fifo);
        for i in 0..25u8 {
            vmm.write_all(&[b'a' + i; 10]).unwrap();
        }
        drop(vmm);
        capture.finish().await;
        let cur = std::fs::read(&log).unwrap();
        let old = std::fs::read(rotated(&log)).unwrap();
        assert_eq!(old.len(), 100);
        assert_eq!(cur.len(), 50);
        assert_eq!(&cur[40..], &[b'a' + 24; 10]);
    }

    #[tokio::test]
    async fn output_written_while_running_arrives_and_log_appends() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("console.fifo");
        let log = dir.path().join("console.log");
        std::fs::write(&log, b"earlier\n").unwrap();
        let capture = ConsoleCapture::start(&fifo, &log, 1 << 20).unwrap();
        let mut vmm = vmm_end(&fifo);
        // More than one read chunk and more than one wake-up's budget; a full FIFO makes the
        // writer wait for the pump, as the VMM's console would drop output.
        let mut sent = Vec::new();
        for i in 0..40u32 {
            let piece = vec![b'0' + (i % 10) as u8; 10_000];
            let mut rest = &piece[..];
            while !rest.is_empty() {
                match vmm.write(rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            sent.extend_from_slice(&piece);
        }
        // It arrives while the writer is still open (the pump does not wait for the end).
        let want = b"earlier\n".len() + sent.len();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&log).unwrap().len() < want as u64 {
            assert!(std::time::Instant::now() < deadline, "pump stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!capture.is_finished());
        drop(vmm);
        capture.finish().await;
        let got = std::fs::read(&log).unwrap();
        assert_eq!(&got[..8], b"earlier\n");
        assert!(got[8..] == sent[..], "log differs from what was written");
    }

    #[tokio::test]
    async fn dropping_the_capture_stops_the_pump_while_the_writer_lives() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("console.fifo");
        let log = dir.path().join("console.log");
        let capture = ConsoleCapture::start(&fifo, &log, 1 << 20).unwrap();
        let mut vmm = vmm_end(&fifo);
        let task = capture.task.as_ref().unwrap().abort_handle();
        drop(capture);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !task.is_finished() {
            assert!(std::time::Instant::now() < deadline, "pump still running");
            tokio::task::yield_now().await;
        }
        // What the VMM writes now stays in the FIFO for an adopter.
        vmm.write_all(b"kept").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(vmm.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"kept");
    }

    #[tokio::test]
    async fn drain_finishes_in_the_background_after_the_vmm_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("console.fifo");
        let log = dir.path().join("console.log");
        let capture = ConsoleCapture::start(&fifo, &log, 1 << 20).unwrap();
        let mut vmm = vmm_end(&fifo);
        vmm.write_all(b"last words\n").unwrap();
        drop(vmm);
        let task = capture.task.as_ref().unwrap().abort_handle();
        capture.drain();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !task.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "pump never saw end of file"
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(std::fs::read(&log).unwrap(), b"last words\n");
    }

    #[tokio::test]
    async fn drain_ends_although_the_next_capture_already_holds_the_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("console.fifo");
        let log = dir.path().join("console.log");
        let capture = ConsoleCapture::start(&fifo, &log, 1 << 20).unwrap();
        let mut vmm = vmm_end(&fifo);
        vmm.write_all(b"first run\n").unwrap();
        drop(vmm);
        let task = capture.task.as_ref().unwrap().abort_handle();
        capture.drain();
        // The VM is started again before the old pump ran: a new writer holds the FIFO, so
        // the old pump never sees end of file.
        let next = ConsoleCapture::start(&fifo, &log, 1 << 20).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !task.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the old pump never ended"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Whatever the new VMM writes goes through the new pump.
        let mut vmm = vmm_end(&fifo);
        vmm.write_all(b"second run\n").unwrap();
        drop(vmm);
        next.finish().await;
        assert_eq!(std::fs::read(&log).unwrap(), b"first run\nsecond run\n");
    }

    #[tokio::test]
    async fn many_consoles_add_no_threads() {
        let dir = tempfile::tempdir().unwrap();
        let before = threads();
        let captures: Vec<_> = (0..64)
            .map(|i| {
                let fifo = dir.path().join(format!("c{i}.fifo"));
                let log = dir.path().join(format!("c{i}.log"));
                ConsoleCapture::start(&fifo, &log, 1 << 20).unwrap()
            })
            .collect();
        // One thread per console made this 64 more; other tests of this binary run in
        // parallel threads, so allow them some.
        assert!(threads() < before + 16, "{} -> {}", before, threads());
        drop(captures);
    }
}
