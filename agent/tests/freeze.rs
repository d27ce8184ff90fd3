//! The agent's `freeze` and `thaw` ops on a real filesystem: an ext4 image loop-mounted in a
//! mount namespace of the agent's own (so the host never sees it), reached from the test
//! through `/proc/<agent>/root`. Writes block while it is frozen and go through after a
//! `thaw`, or after the freeze's deadline when no `thaw` comes. The simulator's backend
//! (`--sim-freeze-file`) is covered here too: it records and freezes nothing.
#![expect(
    clippy::disallowed_methods,
    reason = "tests and benchmarks drive real binaries and tools and clean up their own directories"
)]

mod common;

use std::io::BufReader;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{privileged, Conn};
use hearth_proto::agent::{Empty, FreezeRequest, Request, ThawReply, ThawRequest};

/// `_IOWR('X', 120, int)`.
const FITHAW: libc::c_ulong = 0xC004_5878;

/// The agent in its own mount namespace; on drop the filesystem is thawed first (a failed
/// test must not leave a frozen filesystem behind), then the agent is killed, which ends the
/// namespace and the loop mount with it.
struct Running {
    child: Child,
    mnt: PathBuf,
}

impl Running {
    /// The mount point as the test sees it: through the agent's root.
    fn mnt(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.child.id())).join(
            self.mnt
                .strip_prefix("/")
                .expect("the mount point is absolute"),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(f) = std::fs::File::open(self.mnt()) {
            // SAFETY: a valid open fd; FITHAW ignores its argument. EINVAL (not frozen) is fine.
            unsafe { libc::ioctl(f.as_raw_fd(), FITHAW, 0) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn connect(sock: &Path) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(sock) {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            return Conn {
                w: s.try_clone().unwrap(),
                r: BufReader::new(s),
            };
        }
        assert!(Instant::now() < deadline, "the agent never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hearth-agent"))
}

/// Writes a file under `dir` on another thread; the channel says when the write finished.
fn write_in_background(dir: &Path, name: &str) -> mpsc::Receiver<std::io::Result<()>> {
    let (tx, rx) = mpsc::channel();
    let path = dir.join(name);
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::write(path, b"written"));
    });
    rx
}

/// Whether the write finishes within `wait` (it must not while the filesystem is frozen).
fn finishes(rx: &mpsc::Receiver<std::io::Result<()>>, wait: Duration) -> bool {
    match rx.recv_timeout(wait) {
        Ok(r) => {
            r.expect("the write failed");
            true
        }
        Err(mpsc::RecvTimeoutError::Timeout) => false,
        Err(e) => panic!("the writer went away: {e}"),
    }
}

/// An ext4 image loop-mounted at `<dir>/mnt` in a new mount namespace, the agent serving
/// there.
fn agent_over_ext4(dir: &Path) -> (Running, PathBuf) {
    let img = dir.join("fs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4 failed");
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let sock = dir.join("agent.sock");
    let script = format!(
        "set -e; mount --make-rprivate /; mount -o loop {img} {mnt}; exec {agent} --unix {sock}",
        img = img.display(),
        mnt = mnt.display(),
        agent = agent_bin().display(),
        sock = sock.display()
    );
    let child = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .spawn()
        .unwrap();
    let running = Running { child, mnt };
    drop(connect(&sock));
    // The mount is the agent's only: the host's view of the directory stays empty.
    assert!(
        std::fs::read_dir(dir.join("mnt")).unwrap().next().is_none(),
        "the loop mount leaked to the host"
    );
    assert!(
        running.mnt().join("lost+found").exists(),
        "ext4 not mounted in the agent's namespace"
    );
    (running, sock)
}

#[test]
fn writes_block_while_frozen_and_resume_after_thaw() {
    if !privileged("writes_block_while_frozen_and_resume_after_thaw") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (agent, sock) = agent_over_ext4(dir.path());
    let path = agent.mnt.to_string_lossy().into_owned();
    // Something written before the freeze is on the disk once it answers (sync first).
    std::fs::write(agent.mnt().join("before"), b"dirty").unwrap();
    let _: Empty = connect(&sock)
        .call(&Request::Freeze(FreezeRequest {
            path: path.clone(),
            thaw_after_ms: 60_000,
        }))
        .unwrap();
    let rx = write_in_background(&agent.mnt(), "during");
    assert!(
        !finishes(&rx, Duration::from_millis(500)),
        "a write went through a frozen filesystem"
    );
    // Freezing again keeps it frozen (and does not fail on the kernel's EBUSY).
    let _: Empty = connect(&sock)
        .call(&Request::Freeze(FreezeRequest {
            path: path.clone(),
            thaw_after_ms: 60_000,
        }))
        .unwrap();
    assert!(!finishes(&rx, Duration::from_millis(200)));
    let r: ThawReply = connect(&sock)
        .call(&Request::Thaw(ThawRequest { path: path.clone() }))
        .unwrap();
    assert!(r.was_frozen);
    assert!(
        finishes(&rx, Duration::from_secs(10)),
        "the write never finished after the thaw"
    );
    assert_eq!(
        std::fs::read(agent.mnt().join("during")).unwrap(),
        b"written"
    );
    // Thawing a thawed filesystem is success (FITHAW's EINVAL), saying it was not frozen.
    let r: ThawReply = connect(&sock)
        .call(&Request::Thaw(ThawRequest { path }))
        .unwrap();
    assert!(!r.was_frozen);
}

#[test]
fn the_deadline_thaws_when_no_thaw_comes() {
    if !privileged("the_deadline_thaws_when_no_thaw_comes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (agent, sock) = agent_over_ext4(dir.path());
    let path = agent.mnt.to_string_lossy().into_owned();
    let _: Empty = connect(&sock)
        .call(&Request::Freeze(FreezeRequest {
            path: path.clone(),
            thaw_after_ms: 1_000,
        }))
        .unwrap();
    let rx = write_in_background(&agent.mnt(), "late");
    assert!(
        !finishes(&rx, Duration::from_millis(300)),
        "a write went through a frozen filesystem"
    );
    // No thaw is sent: the agent's deadline must release the writer on its own.
    assert!(
        finishes(&rx, Duration::from_secs(15)),
        "the deadline never thawed the filesystem"
    );
    let r: ThawReply = connect(&sock)
        .call(&Request::Thaw(ThawRequest { path }))
        .unwrap();
    assert!(!r.was_frozen, "the deadline left it frozen");
}

#[test]
fn the_sim_backend_records_and_freezes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let record = dir.path().join("freeze.log");
    let _agent = KillOnDrop(
        Command::new(agent_bin())
            .arg("--unix")
            .arg(&sock)
            .arg("--sim-freeze-file")
            .arg(&record)
            .spawn()
            .unwrap(),
    );
    let _: Empty = connect(&sock)
        .call(&Request::Freeze(FreezeRequest::root()))
        .unwrap();
    // The host's root stays writable.
    std::fs::write(dir.path().join("x"), b"x").unwrap();
    let r: ThawReply = connect(&sock)
        .call(&Request::Thaw(ThawRequest::root()))
        .unwrap();
    assert!(r.was_frozen);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["op"], "freeze");
    assert_eq!(lines[0]["path"], "/");
    assert_eq!(lines[0]["thaw_after_ms"], 10_000);
    assert_eq!(lines[1]["op"], "thaw");
    assert_eq!(lines[1]["cause"], "request");
}
