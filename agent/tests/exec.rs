//! Exec sessions through the real agent on a Unix socket, with real processes: exit codes,
//! signals, stdin and EOF, PTY, detach/attach with replay, takeover, timeout, env/workdir/uid,
//! ring overflow, a hostile host.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{argv, privileged, sh, Agent};
use hearth_proto::agent::frame::{encode_header, Frame, FrameKind};
use hearth_proto::agent::{
    codes, AgentProtoError, AttachRequest, Empty, ExecInfo, ExecList, ExecRequest, ExecStarted,
    PingReply, Request, SignalRequest, WindowSize,
};

#[test]
fn exit_codes_follow_docker() {
    let agent = Agent::start();
    let (out, _, exit) = agent.run(sh("echo hi; exit 0"));
    assert_eq!((out.as_slice(), exit.code), (&b"hi\n"[..], 0));
    let (_, err, exit) = agent.run(sh("echo oops >&2; exit 3"));
    assert_eq!(
        (err.as_slice(), exit.code, exit.signal),
        (&b"oops\n"[..], 3, None)
    );
    // Found but not executable: 126.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("noexec.sh");
    std::fs::write(&script, "#!/bin/sh\necho never\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (out, err, exit) = agent.run(ExecRequest::new(argv(&[script.to_str().unwrap()])));
    assert_eq!(exit.code, 126, "{}", String::from_utf8_lossy(&err));
    assert!(out.is_empty());
    assert!(
        String::from_utf8_lossy(&err).contains("cannot execute"),
        "{err:?}"
    );
    // Not found (on PATH, or by path): 127, with a message on stderr.
    let (_, err, exit) = agent.run(ExecRequest::new(argv(&["no-such-command-hearth"])));
    assert_eq!(exit.code, 127);
    assert!(
        String::from_utf8_lossy(&err).contains("No such file"),
        "{err:?}"
    );
    let (_, _, exit) = agent.run(ExecRequest::new(argv(&["/nonexistent/x"])));
    assert_eq!(exit.code, 127);
    // Killed by a signal: 128 + N.
    let (_, _, exit) = agent.run(sh("kill -9 $$"));
    assert_eq!((exit.code, exit.signal), (137, Some(9)));
}

#[test]
fn stdin_is_streamed_and_eof_ends_cat() {
    let agent = Agent::start();
    let mut req = ExecRequest::new(argv(&["cat"]));
    req.stdin = true;
    req.attach = true;
    let mut c = agent.connect();
    let _: ExecStarted = c.call(&Request::Exec(req)).unwrap();
    c.send(&Frame::new(FrameKind::Stdin, b"hello ".to_vec()));
    c.send(&Frame::new(FrameKind::Stdin, b"world\n".to_vec()));
    c.send(&Frame::empty(FrameKind::StdinEof));
    let (out, _, exit) = c.collect();
    assert_eq!(out, b"hello world\n");
    assert_eq!(exit.code, 0);
}

#[test]
fn signals_by_op_and_by_frame_reach_the_group() {
    let agent = Agent::start();
    // By op, on a detached session; the shell's child is in the same group.
    let started: ExecStarted = agent
        .call(&Request::Exec(sh("sleep 100; echo late")))
        .unwrap();
    let _: Empty = agent
        .call(&Request::Signal(SignalRequest {
            id: started.id.clone(),
            signal: 15,
        }))
        .unwrap();
    let exit = agent.wait_exit(&started.id);
    assert_eq!((exit.code, exit.signal), (143, Some(15)));
    // A signal to an exited session is refused.
    let e = agent
        .call::<Empty>(&Request::Signal(SignalRequest {
            id: started.id,
            signal: 15,
        }))
        .unwrap_err();
    assert!(
        matches!(e, AgentProtoError::Remote { ref code, .. } if code == codes::NO_SUCH_SESSION)
    );
    // By frame, attached.
    let mut req = argv(&["sleep", "100"]);
    req.truncate(2);
    let mut req = ExecRequest::new(req);
    req.attach = true;
    let mut c = agent.connect();
    let _: ExecStarted = c.call(&Request::Exec(req)).unwrap();
    c.send(&Frame::signal(9));
    let (_, _, exit) = c.collect();
    assert_eq!((exit.code, exit.signal), (137, Some(9)));
}

#[test]
fn pty_has_a_terminal_and_follows_resizes() {
    let agent = Agent::start();
    let mut req = sh("tty; stty size; echo $TERM; read x; stty size");
    req.tty = true;
    req.stdin = true;
    req.attach = true;
    req.size = Some(WindowSize {
        rows: 30,
        cols: 100,
    });
    let mut c = agent.connect();
    let _: ExecStarted = c.call(&Request::Exec(req)).unwrap();
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("xterm") {
        let f = c.frame().unwrap();
        assert_eq!(f.kind, FrameKind::Stdout, "{f:?}");
        out.extend_from_slice(&f.payload);
    }
    c.send(&Frame::resize(WindowSize {
        rows: 50,
        cols: 132,
    }));
    c.send(&Frame::new(FrameKind::Stdin, b"go\n".to_vec()));
    let (rest, err, exit) = c.collect();
    out.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&out);
    assert_eq!(exit.code, 0, "{text}");
    assert!(err.is_empty(), "a PTY merges stderr into stdout");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("30 100"), "{text}");
    assert!(text.contains("50 132"), "{text}");
    // The terminal echoed what was typed, as a terminal does.
    assert!(text.contains("go"), "{text}");
}

fn numbers(n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        std::io::Write::write_fmt(&mut out, format_args!("{i}\n")).unwrap();
    }
    out
}

fn counting(n: u32, pause_every: u32) -> ExecRequest {
    sh(&format!(
        "i=0; while [ $i -lt {n} ]; do echo $i; i=$((i+1)); \
         [ $((i % {pause_every})) -eq 0 ] && sleep 0.05; done; exit 0"
    ))
}

#[test]
fn detach_then_attach_replays_without_loss_or_duplication() {
    let agent = Agent::start();
    // Detached from the start; attach while it still writes.
    let started: ExecStarted = agent.call(&Request::Exec(counting(3000, 500))).unwrap();
    std::thread::sleep(Duration::from_millis(80));
    let attach = |stdin| {
        let mut c = agent.connect();
        let info: ExecInfo = c
            .call(&Request::Attach(AttachRequest {
                id: started.id.clone(),
                stdin,
            }))
            .unwrap();
        assert!(info.attached);
        c
    };
    // First attach: read a few frames, then go away mid-stream (detach).
    let mut c = attach(false);
    let mut first = Vec::new();
    while first.len() < 4 {
        let f = c.frame().unwrap();
        assert_eq!(f.kind, FrameKind::Stdout);
        first.extend_from_slice(&f.payload);
    }
    assert!(
        first.starts_with(b"0\n1\n"),
        "the replay starts at the beginning"
    );
    drop(c);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info: ExecInfo = agent
            .call(&Request::ExecInfo(hearth_proto::agent::SessionRef {
                id: started.id.clone(),
            }))
            .unwrap();
        if !info.attached {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "closing the connection never detached"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Second attach: everything kept (the ring is large enough) exactly once, then EXIT.
    let (out, _, exit) = attach(false).collect();
    assert_eq!(exit.code, 0);
    assert_eq!(out, numbers(3000));
    // Attaching to the exited session replays it again.
    let (out, _, _) = attach(false).collect();
    assert_eq!(out, numbers(3000));
    let list: ExecList = agent.call(&Request::Execs).unwrap();
    assert!(list.execs.iter().any(|e| e.id == started.id));
}

#[test]
fn a_new_attach_takes_the_session_over() {
    let agent = Agent::start();
    let mut req = sh("echo ready; sleep 100");
    req.attach = true;
    let mut first = agent.connect();
    let started: ExecStarted = first.call(&Request::Exec(req)).unwrap();
    assert_eq!(first.frame().unwrap().payload, b"ready\n");
    let mut second = agent.connect();
    let _: ExecInfo = second
        .call(&Request::Attach(AttachRequest {
            id: started.id.clone(),
            stdin: false,
        }))
        .unwrap();
    let f = first.frame().unwrap();
    assert_eq!(f.kind, FrameKind::Error);
    assert_eq!(f.as_error().unwrap().code, codes::TAKEN_OVER);
    assert!(first.frame().is_none(), "the old stream is closed");
    // The new one got the replay and still controls the session.
    assert_eq!(second.frame().unwrap().payload, b"ready\n");
    second.send(&Frame::signal(15));
    let (_, _, exit) = second.collect();
    assert_eq!(exit.code, 143);
}

#[test]
fn timeout_kills_the_group() {
    let agent = Agent::start();
    let mut req = sh("sleep 100 & sleep 100");
    req.timeout_ms = Some(300);
    let (_, _, exit) = agent.run(req);
    assert_eq!(
        (exit.code, exit.signal, exit.timed_out),
        (137, Some(9), true)
    );
}

#[test]
fn env_workdir_and_user() {
    let agent = Agent::start();
    let mut req = sh("echo $FOO; pwd; echo $HOME; echo $PATH");
    req.env = vec!["FOO=bar".into()];
    req.workdir = Some("/tmp".into());
    let (out, _, _) = agent.run(req);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "bar");
    assert_eq!(lines[1], "/tmp");
    assert_eq!(
        lines[3],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    // A request's PATH wins over the default.
    let mut req = sh("echo $PATH");
    req.env = vec!["PATH=/bin".into()];
    assert_eq!(agent.run(req).0, b"/bin\n");
    // A missing workdir: the exec fails as Docker's does, 126.
    let mut req = sh("true");
    req.workdir = Some("/no/such/dir".into());
    let (_, err, exit) = agent.run(req);
    assert_eq!(exit.code, 126);
    assert!(String::from_utf8_lossy(&err).contains("working directory"));
    if !privileged("env_workdir_and_user (uid part)") {
        return;
    }
    let mut req = sh("id -u; id -g; id -G");
    req.uid = Some(65534);
    let (out, _, exit) = agent.run(req);
    assert_eq!(exit.code, 0);
    assert_eq!(String::from_utf8(out).unwrap(), "65534\n65534\n65534\n");
}

#[test]
fn ring_overflow_while_detached_keeps_the_newest_bytes() {
    let agent = Agent::start();
    let mut req = sh("seq 0 99999");
    req.ring_bytes = Some(65536);
    let started: ExecStarted = agent.call(&Request::Exec(req)).unwrap();
    agent.wait_exit(&started.id);
    let mut c = agent.connect();
    let _: ExecInfo = c
        .call(&Request::Attach(AttachRequest {
            id: started.id,
            stdin: false,
        }))
        .unwrap();
    let (out, _, exit) = c.collect();
    assert_eq!(exit.code, 0);
    let all = numbers(100_000);
    // The newest bytes, contiguous, to the end: the front was dropped. At least the ring's
    // 64 KiB (output the pump reads after the attach is appended, never dropped).
    assert!(all.ends_with(&out), "not the stream's tail");
    assert!(
        out.len() >= 65536 && out.len() < all.len(),
        "{} bytes",
        out.len()
    );
}

#[test]
fn a_hostile_host_ends_only_its_own_stream() {
    let agent = Agent::start();
    let bad_frames: Vec<Vec<u8>> = vec![
        // Unknown kind.
        encode_header(FrameKind::Stdout, 0)
            .iter()
            .copied()
            .map(|b| if b == 1 { 42 } else { b })
            .collect(),
        // A length far over the limit.
        {
            let mut h = vec![FrameKind::Stdin as u8];
            h.extend_from_slice(&u32::MAX.to_be_bytes());
            h
        },
        // A kind only the agent sends.
        Frame::new(FrameKind::Stdout, b"x".to_vec()).to_bytes(),
        // Stdin on a session without stdin.
        Frame::new(FrameKind::Stdin, b"x".to_vec()).to_bytes(),
        // A resize to zero rows.
        Frame::new(FrameKind::Resize, vec![0, 0, 0, 80]).to_bytes(),
    ];
    for wire in bad_frames {
        let mut req = sh("sleep 100");
        req.attach = true;
        let mut c = agent.connect();
        let started: ExecStarted = c.call(&Request::Exec(req)).unwrap();
        std::io::Write::write_all(&mut c.w, &wire).unwrap();
        let f = c.frame().unwrap();
        assert_eq!(f.kind, FrameKind::Error, "{wire:?}");
        assert_eq!(f.as_error().unwrap().code, codes::BAD_FRAME);
        assert!(c.frame().is_none());
        // The session itself goes on, detached; the agent still answers.
        let info: ExecInfo = agent
            .call(&Request::ExecInfo(hearth_proto::agent::SessionRef {
                id: started.id.clone(),
            }))
            .unwrap();
        assert!(info.exit.is_none() && !info.attached);
        let _: Empty = agent
            .call(&Request::Signal(SignalRequest {
                id: started.id,
                signal: 9,
            }))
            .unwrap();
    }
    let _: PingReply = agent.call(&Request::Ping).unwrap();
    // Unknown sessions are named as such.
    let e = agent
        .call::<ExecInfo>(&Request::Attach(AttachRequest {
            id: hearth_proto::agent::SessionId::parse("nope").unwrap(),
            stdin: false,
        }))
        .unwrap_err();
    assert!(
        matches!(e, AgentProtoError::Remote { ref code, .. } if code == codes::NO_SUCH_SESSION)
    );
}

#[test]
fn orphans_are_reaped_and_do_not_steal_a_sessions_status() {
    let agent = Agent::start();
    // The shell leaves a background child behind; it is reparented to the agent (a child
    // subreaper, as PID 1 would be) and must be reaped, while the session's own status is kept.
    let (out, _, exit) = agent.run(sh("sleep 0.3 </dev/null >/dev/null 2>&1 & echo $!; exit 5"));
    assert_eq!(exit.code, 5);
    let orphan: u32 = String::from_utf8(out).unwrap().trim().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{orphan}/stat")).unwrap();
    let ppid: u32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, agent.pid(), "the orphan is the agent's");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{orphan}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "orphan {orphan} was never reaped"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_session_table_is_bounded() {
    let agent = Agent::start();
    let mut c = agent.connect();
    let mut ids = Vec::new();
    for _ in 0..hearth_agent::exec::MAX_RUNNING {
        let s: ExecStarted = c
            .call(&Request::Exec(ExecRequest::new(argv(&["sleep", "60"]))))
            .unwrap();
        ids.push(s.id);
    }
    let e = c
        .call::<ExecStarted>(&Request::Exec(ExecRequest::new(argv(&["true"]))))
        .unwrap_err();
    assert!(
        matches!(e, AgentProtoError::Remote { ref code, .. } if code == codes::TOO_MANY_SESSIONS),
        "{e:?}"
    );
    for id in &ids {
        let _: Empty = c
            .call(&Request::Signal(SignalRequest {
                id: id.clone(),
                signal: 9,
            }))
            .unwrap();
    }
    for id in &ids {
        agent.wait_exit(id);
    }
    // Room again, and only the newest exited sessions are kept.
    let _: ExecStarted = c
        .call(&Request::Exec(ExecRequest::new(argv(&["true"]))))
        .unwrap();
    let list: ExecList = c.call(&Request::Execs).unwrap();
    let exited = list.execs.iter().filter(|e| e.exit.is_some()).count();
    assert!(
        exited <= hearth_agent::exec::MAX_EXITED,
        "{exited} exited kept"
    );
    assert!(list.execs.iter().any(|e| &e.id == ids.last().unwrap()));
    assert!(
        !list.execs.iter().any(|e| e.id == ids[0]),
        "the oldest was dropped"
    );
}

#[test]
fn a_background_child_holding_the_pipe_does_not_hold_back_exit() {
    let agent = Agent::start();
    let start = std::time::Instant::now();
    // The background sleep inherits stdout and keeps the pipe open for 30 s.
    let (out, _, exit) = agent.run(sh("sleep 30 & echo started"));
    assert_eq!((out.as_slice(), exit.code), (&b"started\n"[..], 0));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "EXIT waited for the background child: {:?}",
        start.elapsed()
    );
}

#[test]
fn a_busy_stdout_does_not_starve_stderr() {
    let agent = Agent::start();
    // 4 MiB on stdout, one stderr line, 16 MiB more on stdout. With a slow reader the stdout
    // ring stays full, yet the stderr line must come right after the stdout written before it
    // (4 MiB, plus what the ring and pipe held), not after all 20 MiB.
    let mut req = sh("head -c 4194304 /dev/zero; echo early >&2; head -c 16777216 /dev/zero");
    req.attach = true;
    let mut c = agent.connect();
    let _: ExecStarted = c.call(&Request::Exec(req)).unwrap();
    let mut stdout_before_stderr = 0usize;
    loop {
        let f = c.frame().unwrap();
        match f.kind {
            FrameKind::Stdout => stdout_before_stderr += f.payload.len(),
            FrameKind::Stderr => {
                assert_eq!(f.payload, b"early\n");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        stdout_before_stderr < 7 << 20,
        "stderr came after {stdout_before_stderr} bytes of stdout"
    );
    c.send(&Frame::signal(9));
}

#[test]
fn a_takeover_closes_a_host_that_stopped_reading() {
    let agent = Agent::start();
    // The first host never reads: its sender blocks once the socket buffers are full.
    let mut req = sh("head -c 50000000 /dev/zero; sleep 100");
    req.attach = true;
    let mut first = agent.connect();
    let started: ExecStarted = first.call(&Request::Exec(req)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut second = agent.connect();
    let _: ExecInfo = second
        .call(&Request::Attach(AttachRequest {
            id: started.id.clone(),
            stdin: false,
        }))
        .unwrap();
    // The second host gets the stream...
    let mut got = 0;
    while got < 8 << 20 {
        let f = second.frame().unwrap();
        assert_eq!(f.kind, FrameKind::Stdout);
        got += f.payload.len();
    }
    // ...and the first one's connection is shut down under its stuck sender. Checked
    // without reading (reading would unblock the sender): the socket reports a hang-up.
    let fd = std::os::fd::AsRawFd::as_raw_fd(&first.w);
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd on a socket we own.
    let r = unsafe { libc::poll(&raw mut pfd, 1, 10_000) };
    assert!(
        r == 1 && pfd.revents & libc::POLLHUP != 0,
        "the taken-over connection was never closed (revents {:#x})",
        pfd.revents
    );
    let _: Empty = agent
        .call(&Request::Signal(SignalRequest {
            id: started.id,
            signal: 9,
        }))
        .unwrap();
}

#[test]
fn output_before_the_first_attach_is_kept() {
    let agent = Agent::start();
    // Create, then attach a moment later, as hosts do (asking for a hold): 6.9 MB of output,
    // far more than the 1 MiB ring, and none of it may be lost in between.
    let mut req = sh("seq 0 999999");
    req.hold_ms = Some(30_000);
    let started: ExecStarted = agent.call(&Request::Exec(req)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let info: ExecInfo = agent
        .call(&Request::ExecInfo(hearth_proto::agent::SessionRef {
            id: started.id.clone(),
        }))
        .unwrap();
    assert!(!info.attached, "a held place is not an attached host");
    assert!(info.exit.is_none(), "the process waits for its first host");
    let mut c = agent.connect();
    let _: ExecInfo = c
        .call(&Request::Attach(AttachRequest {
            id: started.id,
            stdin: false,
        }))
        .unwrap();
    let (out, _, exit) = c.collect();
    assert_eq!(exit.code, 0);
    assert_eq!(out.len(), numbers(1_000_000).len());
    assert!(
        out == numbers(1_000_000),
        "output lost or reordered before the first attach"
    );
}
