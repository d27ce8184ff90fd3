//! `hearthctl vm exec` end to end: the real hearthctl, hearthd, firecracker-sim and
//! `hearth-agent` (`FC_SIM_AGENT_BIN`). Exit codes, stdin EOF, environment and workdir,
//! detach/attach with replay, signals, a PTY driven through a pty here (raw mode, resize,
//! terminal restored after the end and after a signal), a hearthd `kill -9` mid-session, and
//! 100 MiB of binary stdout.
mod common;
use common::exec_host;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exec_host::{binary_data, ctl, expect_code, run, sha256};
use nix::sys::termios::{self, LocalFlags};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn exit_codes_output_streams_stdin_eof_env_and_workdir() {
    require_privileged!();
    let h = exec_host::start();

    let out = run(
        &h,
        &[
            "vm",
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    expect_code(&h, &out, 3);
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");

    expect_code(&h, &run(&h, &["vm", "exec", "web", "--", "true"]), 0);
    // Docker's numbering: not found 127, killed by signal N 128 + N.
    let out = run(&h, &["vm", "exec", "web", "--", "/nonexistent/cmd"]);
    expect_code(&h, &out, 127);
    let out = run(
        &h,
        &["vm", "exec", "web", "--", "sh", "-c", "kill -KILL $$"],
    );
    expect_code(&h, &out, 137);

    // stdin streamed, end of file reaches the command (cat ends).
    let mut child = ctl(&h, &["vm", "exec", "-i", "web", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    expect_code(&h, &out, 0);
    assert_eq!(text(&out.stdout), "hi\n");

    let out = run(
        &h,
        &[
            "vm",
            "exec",
            "-e",
            "GREETING=hello there",
            "-w",
            "/tmp",
            "web",
            "--",
            "sh",
            "-c",
            "echo \"$GREETING\"; pwd",
        ],
    );
    expect_code(&h, &out, 0);
    assert_eq!(text(&out.stdout), "hello there\n/tmp\n");

    // --timeout kills it.
    let out = run(
        &h,
        &["vm", "exec", "--timeout", "1", "web", "--", "sleep", "30"],
    );
    expect_code(&h, &out, 137);

    // hearthctl's own failures: 125 with a message; bad input: 2, nothing started.
    let out = run(&h, &["vm", "exec", "nosuchvm", "--", "true"]);
    expect_code(&h, &out, 125);
    assert!(
        text(&out.stderr).contains("nosuchvm"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&h, &["vm", "exec", "-u", "root", "web", "--", "true"]);
    expect_code(&h, &out, 2);
    let list = h.ctl_ok(&["vm", "exec", "ls", "web"]);
    assert!(
        list["execs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["exit"].is_object()),
        "a session still runs: {list}"
    );
}

#[test]
fn detach_then_attach_replays_and_kill_signals() {
    require_privileged!();
    let h = exec_host::start();
    let out = run(
        &h,
        &[
            "vm",
            "exec",
            "-d",
            "web",
            "--",
            "sh",
            "-c",
            "echo started; echo oops >&2; sleep 30",
        ],
    );
    expect_code(&h, &out, 0);
    let id = text(&out.stdout).trim().to_owned();
    assert!(!id.is_empty());

    let list = h.ctl_ok(&["vm", "exec", "ls", "web"]);
    let me = list["execs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {list}"))
        .clone();
    assert!(me["exit"].is_null(), "{me}");
    let table = text(&run(&h, &["vm", "exec", "ls", "web"]).stdout);
    assert!(table.contains(&id) && table.contains("sleep 30"), "{table}");

    // Attach: the output written while detached is replayed, then it follows until the end.
    let attach = ctl(&h, &["vm", "exec", "attach", "web", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_attached(&h, &id);
    let out = run(&h, &["vm", "exec", "kill", "web", &id, "--signal", "TERM"]);
    expect_code(&h, &out, 0);
    let out = attach.wait_with_output().unwrap();
    expect_code(&h, &out, 128 + 15);
    assert_eq!(text(&out.stdout), "started\n");
    assert!(
        text(&out.stderr).starts_with("oops\n"),
        "{}",
        text(&out.stderr)
    );

    // Bad input and unknown sessions.
    expect_code(
        &h,
        &run(&h, &["vm", "exec", "kill", "web", &id, "--signal", "BOGUS"]),
        2,
    );
    expect_code(&h, &run(&h, &["vm", "exec", "kill", "web", "nosuch"]), 1);
    expect_code(
        &h,
        &run(&h, &["vm", "exec", "attach", "web", "nosuch"]),
        125,
    );
}

#[test]
fn hearthd_killed_mid_session_then_attach_finds_and_replays_it() {
    require_privileged!();
    let mut h = exec_host::start();
    let out = run(
        &h,
        &[
            "vm",
            "exec",
            "-d",
            "web",
            "--",
            "sh",
            "-c",
            "echo before; sleep 2; echo during; sleep 2; echo after; exit 7",
        ],
    );
    expect_code(&h, &out, 0);
    let id = text(&out.stdout).trim().to_owned();
    let first = ctl(&h, &["vm", "exec", "attach", "web", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_attached(&h, &id);
    h.kill9();
    // The attached client loses hearthd: a failure of its own (125), not the command's.
    let out = first.wait_with_output().unwrap();
    expect_code(&h, &out, 125);
    assert_eq!(text(&out.stdout), "before\n");
    h.launch();
    let out = run(&h, &["vm", "exec", "attach", "web", &id]);
    expect_code(&h, &out, 7);
    let replayed = text(&out.stdout);
    assert!(replayed.ends_with("during\nafter\n"), "{replayed:?}");
}

#[test]
fn hundred_mib_of_binary_stdout_arrive_intact() {
    require_privileged!();
    let h = exec_host::start();
    let data = binary_data(100 << 20);
    let file = h.path("big.bin");
    std::fs::write(&file, &data).unwrap();
    // Output from the first byte: the agent holds a new session's output for its first
    // attach (a bounded ring would otherwise drop the head before hearthctl attaches).
    let child = ctl(
        &h,
        &["vm", "exec", "web", "--", "cat", file.to_str().unwrap()],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let out = child.wait_with_output().unwrap();
    expect_code(&h, &out, 0);
    assert_eq!(out.stdout.len(), data.len());
    assert_eq!(sha256(&out.stdout), sha256(&data));
}

/// Waits until a client is attached to session `id` of VM `web` (as `vm exec ls` reports it).
fn wait_attached(h: &common::daemon::HearthHost, id: &str) {
    let attached = common::wait_until(Duration::from_secs(10), || {
        h.ctl_ok(&["vm", "exec", "ls", "web"])["execs"]
            .as_array()
            .is_some_and(|l| l.iter().any(|e| e["id"] == id && e["attached"] == true))
    });
    assert!(attached, "no client attached to {id}\n{}", h.log());
}

/// A pty whose slave is hearthctl's controlling terminal (so it gets SIGWINCH).
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
    seen: Arc<Mutex<Vec<u8>>>,
}

fn pty(rows: u16, cols: u16) -> Pty {
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let p = nix::pty::openpty(Some(&size), None).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut reader = std::fs::File::from(p.master.try_clone().unwrap());
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    Pty {
        master: p.master,
        slave: p.slave,
        seen,
    }
}

impl Pty {
    fn spawn(&self, mut cmd: std::process::Command) -> Child {
        cmd.stdin(Stdio::from(self.slave.try_clone().unwrap()))
            .stdout(Stdio::from(self.slave.try_clone().unwrap()))
            .stderr(Stdio::from(self.slave.try_clone().unwrap()));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid()?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn().unwrap()
    }

    fn wait_for(&self, what: &str) -> bool {
        common::wait_until(Duration::from_secs(10), || {
            text(&self.seen.lock().unwrap()).contains(what)
        })
    }

    fn output(&self) -> String {
        text(&self.seen.lock().unwrap())
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &raw const ws) };
        assert_eq!(rc, 0);
    }

    fn is_raw(&self) -> bool {
        let t = termios::tcgetattr(self.slave.as_fd()).unwrap();
        !t.local_flags.contains(LocalFlags::ICANON) && !t.local_flags.contains(LocalFlags::ECHO)
    }
}

fn wait_exit(child: &mut Child) -> Option<i32> {
    for _ in 0..200 {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("hearthctl did not exit");
}

#[test]
fn tty_session_is_raw_follows_resizes_and_restores_the_terminal() {
    require_privileged!();
    let h = exec_host::start();
    let p = pty(30, 100);
    let before = termios::tcgetattr(p.slave.as_fd()).unwrap();
    assert!(!p.is_raw());
    let mut child = p.spawn(ctl(
        &h,
        &[
            "vm",
            "exec",
            "-it",
            "web",
            "--",
            "sh",
            "-c",
            // After the input, wait for the resize to reach the PTY (the test's wait_for
            // bounds it), then report the size.
            "stty size; read x; until [ \"$(stty size)\" = '40 120' ]; do sleep 0.05; done; \
             stty size; echo \"got $x\"; exit 5",
        ],
    ));
    assert!(
        p.wait_for("30 100"),
        "initial size not seen: {:?}\n{}",
        p.output(),
        h.log()
    );
    assert!(
        p.is_raw(),
        "the local terminal is not raw during the session"
    );
    p.resize(40, 120);
    std::fs::File::from(p.master.try_clone().unwrap())
        .write_all(b"go\r")
        .unwrap();
    assert!(p.wait_for("got go"), "{:?}", p.output());
    assert_eq!(wait_exit(&mut child), Some(5), "{:?}", p.output());
    assert!(
        p.output().contains("40 120"),
        "resize not seen: {:?}",
        p.output()
    );
    let after = termios::tcgetattr(p.slave.as_fd()).unwrap();
    assert_eq!(
        format!("{after:?}"),
        format!("{before:?}"),
        "terminal not restored"
    );
}

#[test]
fn a_signal_to_hearthctl_restores_the_terminal_and_leaves_the_session() {
    require_privileged!();
    let h = exec_host::start();
    let p = pty(24, 80);
    let before = termios::tcgetattr(p.slave.as_fd()).unwrap();
    let mut child = p.spawn(ctl(
        &h,
        &[
            "vm",
            "exec",
            "-it",
            "web",
            "--",
            "sh",
            "-c",
            "echo ready; sleep 30",
        ],
    ));
    assert!(p.wait_for("ready"), "{:?}", p.output());
    assert!(p.is_raw());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(wait_exit(&mut child), Some(128 + 15));
    let after = termios::tcgetattr(p.slave.as_fd()).unwrap();
    assert_eq!(
        format!("{after:?}"),
        format!("{before:?}"),
        "terminal not restored"
    );
    // Detached, not killed: the session still runs in the guest.
    let list = h.ctl_ok(&["vm", "exec", "ls", "web"]);
    assert!(
        list["execs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["exit"].is_null() && e["tty"] == true),
        "{list}"
    );
}
