//! Watches the guest's console, as the pump copies it, for the line hearth's init prints when
//! the image's command exits ([`hearth_proto::init::exit_line`]), so the VM's `stopped` event
//! can say how the command ended. Lines are split across reads; only the last line's tail is
//! kept, bounded, so a console that never prints a newline costs nothing.

use std::sync::{Arc, Mutex, PoisonError};

use hearth_proto::init::{parse_exit_line, ExitReport};

/// The longest line looked at: the exit line is short; longer lines are not it.
const MAX_LINE: usize = 256;

/// The last exit report seen, shared between the pump and the actor.
pub type GuestExit = Arc<Mutex<Option<ExitReport>>>;

/// The line splitter feeding a [`GuestExit`].
#[derive(Debug, Default)]
pub struct ExitLineWatch {
    line: Vec<u8>,
    /// Whether the current line grew past [`MAX_LINE`] (it is skipped up to its newline).
    overlong: bool,
    seen: GuestExit,
}

impl ExitLineWatch {
    /// A watch with nothing seen yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared report this watch updates.
    pub fn handle(&self) -> GuestExit {
        self.seen.clone()
    }

    /// Looks at the next console bytes.
    pub fn feed(&mut self, data: &[u8]) {
        for chunk in data.split_inclusive(|b| *b == b'\n') {
            let complete = chunk.ends_with(b"\n");
            if !self.overlong {
                if self.line.len() + chunk.len() > MAX_LINE + 2 {
                    self.overlong = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            if complete {
                if !self.overlong {
                    if let Some(r) = parse_exit_line(&String::from_utf8_lossy(&self.line)) {
                        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
                    }
                }
                self.line.clear();
                self.overlong = false;
            }
        }
    }
}

/// The report in a [`GuestExit`].
pub fn seen(exit: &GuestExit) -> Option<ExitReport> {
    *exit.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_across_reads_and_keeps_the_last() {
        let mut w = ExitLineWatch::new();
        let h = w.handle();
        w.feed(b"[    0.5] booting\r\nhearth-init: command ex");
        assert_eq!(seen(&h), None);
        w.feed(b"ited status=3\r\n[ 1.0] reboot: Restarting system\r\n");
        assert_eq!(seen(&h), Some(ExitReport::Exited { code: 3 }));
        w.feed(b"hearth-init: command exited signal=9\n");
        assert_eq!(seen(&h), Some(ExitReport::Signaled { signal: 9 }));
    }

    #[test]
    fn overlong_and_partial_lines_are_not_reports() {
        let mut w = ExitLineWatch::new();
        let h = w.handle();
        let mut long = vec![b'x'; 10_000];
        long.extend_from_slice(b"hearth-init: command exited status=1\n");
        w.feed(&long);
        assert_eq!(
            seen(&h),
            None,
            "a line longer than the bound is skipped whole"
        );
        w.feed(b"hearth-init: command exited status=2");
        assert_eq!(seen(&h), None, "not complete without its newline");
        w.feed(b"\n");
        assert_eq!(seen(&h), Some(ExitReport::Exited { code: 2 }));
    }
}
