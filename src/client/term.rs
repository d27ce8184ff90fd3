//! The local terminal of `hearthctl vm exec -t`: raw mode while a session runs, restored by
//! [`RawMode`]'s `Drop` (so on every way out of the session: normal end, error, signal
//! handled by the session loop, panic unwinding), and the window size for `RESIZE`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use hearth_proto::api_exec::WindowSize;
use nix::sys::termios::{self, SetArg, Termios};

/// The terminal in raw mode; dropping it restores the settings it found.
pub struct RawMode {
    fd: OwnedFd,
    saved: Termios,
}

impl RawMode {
    /// Puts the terminal on `fd` in raw mode (no echo, no line editing, no signals from keys:
    /// Ctrl-C goes to the remote process as a byte).
    ///
    /// # Errors
    /// `fd` is not a terminal, or its settings could not be changed.
    pub fn enter(fd: BorrowedFd<'_>) -> io::Result<RawMode> {
        let fd = fd.try_clone_to_owned()?;
        let saved = termios::tcgetattr(&fd)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(&fd, SetArg::TCSANOW, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // TCSANOW: restoring must not wait for output a dead terminal will never drain.
        let _ = termios::tcsetattr(&self.fd, SetArg::TCSANOW, &self.saved);
    }
}

/// The size of the terminal on `fd`, `None` when it is not a terminal or reports a zero side.
pub fn window_size(fd: impl AsFd) -> Option<WindowSize> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer, which is valid and exclusive
    // for the call; the fd is borrowed for its duration.
    let rc = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &raw mut ws) };
    (rc == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some(WindowSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
    })
}
