//! A host attached to a session: one thread sends the session's output (the rings from where
//! this host is, so the first frames replay what was kept) then `EXIT`; the connection's own
//! thread reads the host's frames. A newer attach takes over: the older stream gets an `ERROR`
//! frame and is closed. A host frame that breaks the rules ends this stream with `BAD_FRAME`,
//! nothing else.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use hearth_proto::agent::frame::{read_frame, write_frame, Frame, FrameKind, MAX_PAYLOAD};
use hearth_proto::agent::{codes, AgentProtoError, ErrorBody};

use super::session::{Attachment, Session};
use crate::conn::Conn;

/// Makes a new attachment (taking over any other) and returns its generation.
pub fn attach(session: &Session) -> u64 {
    let mut st = session.lock();
    let gen = st.next_gen;
    st.next_gen += 1;
    let sent = [st.rings[0].start(), st.rings[1].start()];
    let old = st.attach.replace(Attachment {
        gen,
        sent,
        end: None,
        closer: None,
        held: false,
    });
    drop(st);
    session.notify();
    if let Some(fd) = old.and_then(|a| a.closer) {
        close_later(fd);
    }
    gen
}

/// How long a taken-over stream's sender gets to send its `ERROR` frame before its connection
/// is shut down under it (it may be blocked on a host that stopped reading).
pub const TAKEOVER_GRACE: Duration = Duration::from_secs(1);

/// Shuts a taken-over host's connection down after [`TAKEOVER_GRACE`], so its sender cannot
/// stay blocked on it.
fn close_later(fd: OwnedFd) {
    std::thread::spawn(move || {
        std::thread::sleep(TAKEOVER_GRACE);
        // SAFETY: shutdown on an fd we own; no memory effects.
        unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
    });
}

/// Detaches `gen` if it is still the attachment.
fn detach(session: &Session, gen: u64) {
    let mut st = session.lock();
    if st.attach.as_ref().is_some_and(|a| a.gen == gen) {
        st.attach = None;
    }
    drop(st);
    session.notify();
}

/// Runs the attachment `gen` over `conn` (its read side is `reader`, which may hold bytes
/// already buffered after the request line), until the session's `EXIT`, an error, a
/// takeover, or the host closing.
pub fn run<C: Conn, R: Read>(session: &Arc<Session>, gen: u64, conn: C, reader: R, stdin: bool) {
    if let Ok(fd) = conn.as_fd().try_clone_to_owned() {
        let mut st = session.lock();
        match st.attach.as_mut().filter(|a| a.gen == gen) {
            Some(a) => a.closer = Some(fd),
            // Already taken over: this stream only sends its ERROR.
            None => close_later(fd),
        }
    }
    let s = session.clone();
    let sender = std::thread::spawn(move || send(&s, gen, conn));
    receive(session, gen, reader, stdin);
    let _ = sender.join();
}

enum Next {
    Data(usize, u64, Vec<u8>),
    Exit(Frame),
    Fail(ErrorBody),
    Stop,
}

fn send<C: Conn>(session: &Session, gen: u64, mut conn: C) {
    // Streams take turns, so a busy stdout cannot starve stderr.
    let mut turn = 0;
    loop {
        let mut st = session.lock();
        let next = loop {
            let exit = st.exit;
            let drained = !st.open.iter().any(|o| *o);
            let ends = [st.rings[0].end(), st.rings[1].end()];
            let Some(a) = st.attach.as_mut() else {
                break Next::Stop;
            };
            if a.gen != gen {
                break Next::Fail(ErrorBody::new(
                    codes::TAKEN_OVER,
                    format!("Another host attached to session {}", session.id),
                ));
            }
            if let Some(e) = a.end.take() {
                break Next::Fail(e);
            }
            if let Some(i) = [turn, 1 - turn].into_iter().find(|&i| a.sent[i] < ends[i]) {
                let from = a.sent[i];
                break Next::Data(i, from, st.rings[i].read_at(from, MAX_PAYLOAD));
            }
            if let (Some(exit), true) = (exit, drained) {
                break Next::Exit(Frame::exit(&exit));
            }
            st = session.wait(st);
        };
        drop(st);
        match next {
            Next::Data(i, from, chunk) => {
                turn = 1 - i;
                let kind = if i == 0 {
                    FrameKind::Stdout
                } else {
                    FrameKind::Stderr
                };
                let len = chunk.len() as u64;
                if write_frame(&mut conn, &Frame::new(kind, chunk)).is_err() {
                    detach(session, gen);
                    conn.shutdown_conn();
                    return;
                }
                let mut st = session.lock();
                if let Some(a) = st.attach.as_mut().filter(|a| a.gen == gen) {
                    a.sent[i] = from + len;
                }
                drop(st);
                session.notify();
            }
            Next::Exit(frame) => {
                let _ = write_frame(&mut conn, &frame);
                detach(session, gen);
                conn.shutdown_conn();
                return;
            }
            Next::Fail(e) => {
                let _ = write_frame(&mut conn, &Frame::error(&e));
                detach(session, gen);
                conn.shutdown_conn();
                return;
            }
            Next::Stop => {
                conn.shutdown_conn();
                return;
            }
        }
    }
}

/// Ends the attachment with `error` (the sender sends it).
fn end_with(session: &Session, gen: u64, error: ErrorBody) {
    let mut st = session.lock();
    if let Some(a) = st.attach.as_mut().filter(|a| a.gen == gen) {
        a.end = Some(error);
    }
    drop(st);
    session.notify();
}

fn still_attached(session: &Session, gen: u64) -> bool {
    session.lock().attach.as_ref().is_some_and(|a| a.gen == gen)
}

fn receive<R: Read>(session: &Session, gen: u64, mut reader: R, stdin: bool) {
    loop {
        let frame = match read_frame(&mut reader) {
            Ok(Some(f)) => f,
            // The host closed (or the sender shut the connection down): detach.
            Ok(None) | Err(AgentProtoError::Io { .. }) => {
                detach(session, gen);
                return;
            }
            Err(e) => {
                end_with(session, gen, e.to_error_body());
                return;
            }
        };
        if !still_attached(session, gen) {
            return;
        }
        if let Err(reason) = apply(session, &frame, stdin) {
            end_with(session, gen, ErrorBody::new(codes::BAD_FRAME, reason));
            return;
        }
    }
}

/// Applies one host frame; `Err` says which rule it broke.
fn apply(session: &Session, frame: &Frame, stdin: bool) -> Result<(), String> {
    match frame.kind {
        FrameKind::Stdin => {
            if !stdin || !session.write_stdin(&frame.payload) {
                return Err("STDIN frame but this stream has no open stdin".into());
            }
        }
        FrameKind::StdinEof => {
            if !frame.payload.is_empty() {
                return Err("STDIN_EOF frame with a payload".into());
            }
            if stdin {
                session.close_stdin();
            }
        }
        FrameKind::Resize => session.resize(frame.as_resize().map_err(|e| e.to_string())?),
        FrameKind::Signal => {
            let sig = frame.as_signal().map_err(|e| e.to_string())?;
            // A process that already exited: nothing left to signal.
            session.signal(sig);
        }
        other => return Err(format!("a host may not send {other:?} frames on a session")),
    }
    Ok(())
}
