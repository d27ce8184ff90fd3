//! hearth-agent as a guest's init, run as PID 1 of new PID, mount, network and UTS namespaces
//! over a tiny root (busybox-static and the static agent) on a private tmpfs, since no guest
//! kernel boots here. The kernel command line is a file bind-mounted over the namespace's
//! `/proc/cmdline`; `eth0` is one end of a veth inside the test's network namespace. Nothing
//! outside those namespaces is touched (the root is a tmpfs, so init's read-only remount
//! affects only it; `reboot(2)` in a PID namespace only kills its init, with `SIGHUP`).
#![expect(
    clippy::disallowed_methods,
    reason = "tests and benchmarks drive real binaries and tools and clean up their own directories"
)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{argv, privileged, Conn};
use hearth_proto::agent::{ExecRequest, ExecStarted, PingReply, Request};
use hearth_proto::init::{parse_exit_line, ExitReport};

const APPLETS: &[&str] = &[
    "sh", "ls", "id", "cat", "sleep", "ip", "hostname", "env", "pwd", "grep", "echo", "wc", "true",
    "false",
];

const CMDLINE: &str = "console=ttyS0 reboot=k panic=1 \
    ip=172.31.240.5::172.31.240.1:255.255.255.0::eth0:off:172.31.240.1 hearth.hostname=web1";

fn build_static() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-agent-static.sh");
    let out = Command::new(script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "the static build failed");
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(stdout.lines().last().unwrap().trim())
}

/// A root tree: busybox and its applets, the static agent as /sbin/hearth-init, a passwd and
/// group with an `app` user, and `spec` (if any) as /etc/hearth/init.json.
fn tree(spec: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    for d in ["bin", "sbin", "etc/hearth", "proc", "home/app"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::copy(build_static(), root.join("sbin/hearth-init")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .unwrap();
    if let Some(spec) = spec {
        std::fs::write(root.join("etc/hearth/init.json"), spec).unwrap();
    }
    std::fs::write(dir.path().join("cmdline"), format!("{CMDLINE}\n")).unwrap();
    std::fs::create_dir(dir.path().join("new")).unwrap();
    dir
}

/// Init running in its namespaces, its console collected; killed on drop.
struct Guest {
    unshare: Child,
    console: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

impl Guest {
    /// Starts init over `dir`'s tree. With `fake_cmdline`, the namespace's /proc is mounted
    /// first with [`CMDLINE`] bound over /proc/cmdline (init then finds /proc mounted);
    /// without, init mounts /proc itself and reads the host's command line.
    fn start(dir: tempfile::TempDir, fake_cmdline: bool) -> Guest {
        let fake = if fake_cmdline {
            "mount -t proc proc new/proc; mount --bind cmdline new/proc/cmdline;"
        } else {
            ""
        };
        let script = format!(
            "set -e; ip link add eth0 type veth peer name peer0; \
             mount -t tmpfs -o size=64m tmpfs new; cp -a tree/. new/; {fake} \
             exec chroot new /sbin/hearth-init --unix /run/agent.sock"
        );
        let mut unshare = Command::new("unshare")
            .args([
                "--pid", "--fork", "--mount", "--net", "--uts", "sh", "-c", &script,
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let console = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(unshare.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(unshare.stderr.take().unwrap()),
        ] {
            let console = console.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("console: {line}");
                    let mut c = console.lock().unwrap();
                    c.push_str(&line);
                    c.push('\n');
                }
            });
        }
        Guest {
            unshare,
            console,
            _dir: dir,
        }
    }

    fn console(&self) -> String {
        self.console.lock().unwrap().clone()
    }

    /// Waits until the console shows `needle`.
    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.console().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "console never showed {needle:?}:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The host pid of the namespace's PID 1 (unshare's only child).
    fn init_pid(&self) -> libc::pid_t {
        let me = self.unshare.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let children =
                std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().unwrap();
            }
            assert!(Instant::now() < deadline, "unshare never forked");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A connection to the agent init serves, through the namespace's root.
    fn connect(&self) -> Conn {
        let sock = format!("/proc/{}/root/run/agent.sock", self.init_pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = std::os::unix::net::UnixStream::connect(&sock) {
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                return Conn {
                    w: s.try_clone().unwrap(),
                    r: BufReader::new(s),
                };
            }
            assert!(
                Instant::now() < deadline,
                "init never served the agent:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the namespace to end; the signal that killed its init (unshare dies of the
    /// same signal), or `None` when it exited.
    fn wait_end(&mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.unshare.try_wait().unwrap() {
                return st.signal();
            }
            assert!(
                Instant::now() < deadline,
                "init never ended:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit report init printed, if any.
    fn exit_report(&self) -> Option<ExitReport> {
        self.console().lines().find_map(parse_exit_line)
    }
}

fn spec(script: &str, extra: &str) -> String {
    let argv = serde_json::to_string(&["sh", "-c", script]).unwrap();
    format!("{{\"argv\":{argv}{extra}}}")
}

#[test]
fn init_prepares_the_guest_runs_the_command_and_reboots() {
    if !privileged("init_prepares_the_guest_runs_the_command_and_reboots") {
        return;
    }
    let script = "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); echo cwd=$(pwd); \
                  echo FOO=$FOO HOME=$HOME; echo host=$(hostname) etc=$(cat /etc/hostname); \
                  cat /etc/resolv.conf; ip -4 addr show eth0; ip -4 addr show lo; ip route; \
                  cat /proc/mounts; exit 3";
    let dir = tree(Some(&spec(
        script,
        r#","env":["FOO=bar"],"working_dir":"/home/app","user":"app""#,
    )));
    let mut g = Guest::start(dir, true);
    let signal = g.wait_end();
    let console = g.console();
    assert!(
        console.contains("uid=1000 gid=1000 groups=1000 50"),
        "{console}"
    );
    assert!(console.contains("cwd=/home/app"), "{console}");
    assert!(console.contains("FOO=bar HOME=/home/app"), "{console}");
    assert!(console.contains("host=web1 etc=web1"), "{console}");
    assert!(console.contains("nameserver 172.31.240.1"), "{console}");
    assert!(console.contains("inet 172.31.240.5/24"), "{console}");
    assert!(console.contains("inet 127.0.0.1/8"), "{console}");
    assert!(
        console.contains("default via 172.31.240.1 dev eth0"),
        "{console}"
    );
    for mount in [
        "sysfs /sys sysfs",
        "devtmpfs /dev devtmpfs",
        "devpts /dev/pts devpts",
        "shm /dev/shm tmpfs",
        "run /run tmpfs",
        "tmp /tmp tmpfs",
    ] {
        assert!(console.contains(mount), "{mount} missing:\n{console}");
    }
    assert_eq!(g.exit_report(), Some(ExitReport::Exited { code: 3 }));
    assert_eq!(
        signal,
        Some(libc::SIGHUP),
        "init did not end with reboot(2):\n{console}"
    );
}

#[test]
fn init_forwards_sigterm_serves_the_agent_and_reaps_orphans() {
    if !privileged("init_forwards_sigterm_serves_the_agent_and_reaps_orphans") {
        return;
    }
    // An orphan: the inner shell exits at once, its background sleep is reparented to init.
    let script = "sh -c 'sleep 0.2 & exit 0'; sleep 1; \
                  echo zombies=$(grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l); \
                  trap 'echo got-USR1' USR1; trap 'echo got-TERM; exit 7' TERM; echo ready; \
                  while true; do sleep 0.05; done";
    let mut g = Guest::start(tree(Some(&spec(script, ""))), true);
    g.wait_for("ready");
    assert!(g.console().contains("zombies=0"), "{}", g.console());
    let ping: PingReply = g.connect().call(&Request::Ping).unwrap();
    assert!(!ping.version.is_empty());
    // An exec session through the agent init serves.
    let mut req = ExecRequest::new(argv(&["sh", "-c", "echo from-exec; cat /proc/1/cmdline"]));
    req.attach = true;
    let mut c = g.connect();
    let _: ExecStarted = c.call(&Request::Exec(req)).unwrap();
    let (out, _, exit) = c.collect();
    assert_eq!(exit.code, 0);
    assert!(String::from_utf8_lossy(&out).starts_with("from-exec\n/sbin/hearth-init"));
    // SAFETY: signalling the namespace's init, our grandchild.
    assert_eq!(unsafe { libc::kill(g.init_pid(), libc::SIGUSR1) }, 0);
    g.wait_for("got-USR1");
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(g.init_pid(), libc::SIGTERM) }, 0);
    assert_eq!(g.wait_end(), Some(libc::SIGHUP));
    let console = g.console();
    assert!(console.contains("got-TERM"), "{console}");
    assert_eq!(g.exit_report(), Some(ExitReport::Exited { code: 7 }));
}

#[test]
fn ctrl_alt_del_terminates_the_command_and_its_death_by_signal_is_reported() {
    if !privileged("ctrl_alt_del_terminates_the_command_and_its_death_by_signal_is_reported") {
        return;
    }
    let mut g = Guest::start(tree(Some(&spec("echo ready; exec sleep 100", ""))), true);
    g.wait_for("ready");
    // The kernel turns Ctrl-Alt-Del into SIGINT for init; the command gets SIGTERM.
    // SAFETY: signalling the namespace's init, our grandchild.
    assert_eq!(unsafe { libc::kill(g.init_pid(), libc::SIGINT) }, 0);
    assert_eq!(g.wait_end(), Some(libc::SIGHUP));
    assert_eq!(
        g.exit_report(),
        Some(ExitReport::Signaled {
            signal: libc::SIGTERM
        })
    );
}

#[test]
fn without_a_spec_init_mounts_proc_serves_the_agent_and_powers_off_on_sigterm() {
    if !privileged("without_a_spec_init_mounts_proc_serves_the_agent_and_powers_off_on_sigterm") {
        return;
    }
    // No fake /proc: init mounts it (and reads the host's command line, which has no ip=).
    let mut g = Guest::start(tree(None), false);
    g.wait_for("no command: /etc/hearth/init.json");
    let mut req = ExecRequest::new(argv(&["cat", "/proc/mounts"]));
    req.attach = true;
    let mut c = g.connect();
    let _: ExecStarted = c.call(&Request::Exec(req)).unwrap();
    let (out, _, exit) = c.collect();
    assert_eq!(exit.code, 0);
    assert!(
        String::from_utf8_lossy(&out).contains("proc /proc proc"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // SAFETY: signalling the namespace's init, our grandchild.
    assert_eq!(unsafe { libc::kill(g.init_pid(), libc::SIGTERM) }, 0);
    assert_eq!(g.wait_end(), Some(libc::SIGHUP));
    assert!(g.console().contains("powering off"));
    assert_eq!(g.exit_report(), None);
}

#[test]
fn a_bad_spec_is_reported_and_the_command_not_run() {
    if !privileged("a_bad_spec_is_reported_and_the_command_not_run") {
        return;
    }
    for (spec, says) in [
        (
            r#"{"argv":["sh","-c","echo RAN"],"user":"ghost"}"#,
            "User \"ghost\" is not in /etc/passwd",
        ),
        (r#"{"argv":[]}"#, "the command is empty"),
        ("{not json", "not valid JSON"),
    ] {
        let mut g = Guest::start(tree(Some(spec)), true);
        g.wait_for(says);
        assert!(g.console().contains("serving the agent only"));
        let _: PingReply = g.connect().call(&Request::Ping).unwrap();
        // SAFETY: signalling the namespace's init, our grandchild.
        assert_eq!(unsafe { libc::kill(g.init_pid(), libc::SIGTERM) }, 0);
        assert_eq!(g.wait_end(), Some(libc::SIGHUP));
        assert!(!g.console().contains("RAN"));
    }
}

#[test]
fn hearth_init_refuses_to_run_when_not_pid_1() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("hearth-init");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hearth-agent"), &link).unwrap();
    let out = Command::new(&link).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must run as PID 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
