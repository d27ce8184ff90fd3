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
    let first = c.frame().unwrap();
    assert_eq!(first.kind, FrameKind::Stdout);
    assert!(
        first.payload.starts_with(b"0\n1\n"),
        "the replay starts at the beginning"
    );
    drop(c);
    std::thread::sleep(Duration::from_millis(50));
    let info: ExecInfo = agent
        .call(&Request::ExecInfo(hearth_proto::agent::SessionRef {
            id: started.id.clone(),
        }))
        .unwrap();
    assert!(!info.attached, "closing the connection detaches");
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
    std::thread::sleep(Duration::from_millis(100));
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
    assert_eq!(out.len(), 65536);
    assert_eq!(out, all[all.len() - 65536..]);
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
