//! The static agent (`scripts/build-agent-static.sh`): no `PT_INTERP` and no `DT_NEEDED`, and in
//! an empty root file system (nothing but the binary and two files in /etc, inside its own
//! mount and network namespaces) it answers ping, resolves from /etc/hosts and over DNS (a
//! responder on the namespace's loopback), and runs commands.
#![expect(
    clippy::disallowed_methods,
    reason = "tests and benchmarks drive real binaries and tools and clean up their own directories"
)]

mod common;

use std::io::Write as _;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{argv, privileged, Conn};
use hearth_proto::agent::{
    ExecRequest, ExecStarted, PingReply, Request, ResolveReply, ResolveRequest,
};

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

fn readelf(flag: &str, bin: &Path) -> String {
    let out = Command::new("readelf")
        .args([flag, "-W"])
        .arg(bin)
        .output()
        .unwrap();
    assert!(out.status.success(), "readelf {flag} failed");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_static_binary_has_no_interpreter_nor_needed_libraries() {
    let bin = build_static();
    let headers = readelf("-l", &bin);
    assert!(
        headers.contains("LOAD"),
        "not an ELF with program headers?\n{headers}"
    );
    assert!(!headers.contains("INTERP"), "{headers}");
    let dynamic = readelf("-d", &bin);
    assert!(!dynamic.contains("(NEEDED)"), "{dynamic}");
}

/// Answers every A query with 10.9.8.7 and anything else with no answer.
fn dns_responder(sock: &UdpSocket) {
    let mut buf = [0u8; 512];
    while let Ok((n, peer)) = sock.recv_from(&mut buf) {
        let q = &buf[..n];
        let mut i = 12;
        while i < n && q[i] != 0 {
            i += usize::from(q[i]) + 1;
        }
        if i + 5 > n {
            continue;
        }
        let question = &q[12..i + 5];
        let is_a = q[i + 1..i + 3] == [0, 1];
        let mut reply = vec![q[0], q[1], 0x81, 0x80, 0, 1, 0, u8::from(is_a), 0, 0, 0, 0];
        reply.extend_from_slice(question);
        if is_a {
            reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 8, 7]);
        }
        let _ = sock.send_to(&reply, peer);
    }
}

struct Jailed(Child);

impl Drop for Jailed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the agent chrooted in `root`, in a new network namespace (loopback up, a DNS
/// responder on 127.0.0.1:53) and a new mount namespace (its own /proc).
fn start_jailed(root: &Path) -> Jailed {
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        // unshare(CLONE_NEWNET) moves only this thread; what it forks and binds stays there.
        // SAFETY: no memory effects.
        assert_eq!(
            unsafe { libc::unshare(libc::CLONE_NEWNET) },
            0,
            "unshare(CLONE_NEWNET)"
        );
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        let sock = UdpSocket::bind("127.0.0.1:53").unwrap();
        std::thread::spawn(move || dns_responder(&sock));
        let script = format!(
            "mount -t proc proc {0}/proc && exec chroot {0} /hearth-agent --unix /tmp/agent.sock",
            root.display()
        );
        let child = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .spawn()
            .unwrap();
        Jailed(child)
    })
    .join()
    .unwrap()
}

fn connect(path: &Path) -> Conn {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(path) {
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            return Conn {
                w: s.try_clone().unwrap(),
                r: std::io::BufReader::new(s),
            };
        }
        assert!(Instant::now() < deadline, "the jailed agent never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_static_agent_works_in_an_empty_root() {
    if !privileged("the_static_agent_works_in_an_empty_root") {
        return;
    }
    let bin = build_static();
    let root = tempfile::tempdir().unwrap();
    for d in ["etc", "tmp", "proc"] {
        std::fs::create_dir(root.path().join(d)).unwrap();
    }
    std::fs::copy(&bin, root.path().join("hearth-agent")).unwrap();
    std::fs::File::create(root.path().join("etc/hosts"))
        .unwrap()
        .write_all(b"127.0.0.1 localhost\n10.1.2.3 myhost.example\n")
        .unwrap();
    std::fs::write(
        root.path().join("etc/resolv.conf"),
        "nameserver 127.0.0.1\n",
    )
    .unwrap();
    let _agent = start_jailed(root.path());
    let sock = root.path().join("tmp/agent.sock");

    let ping: PingReply = connect(&sock).call(&Request::Ping).unwrap();
    assert_eq!(ping.boot_id.len(), 36);
    let resolve = |name: &str| {
        connect(&sock)
            .call::<ResolveReply>(&Request::Resolve(ResolveRequest {
                name: name.into(),
                timeout_ms: 5000,
            }))
            .unwrap()
            .addrs
    };
    assert_eq!(
        resolve("myhost.example"),
        ["10.1.2.3".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(
        resolve("db.vm.internal"),
        ["10.9.8.7".parse::<std::net::Ipv4Addr>().unwrap()]
    );

    // Commands run there too (the only program is the agent itself).
    let mut req = ExecRequest::new(argv(&["/hearth-agent", "--bogus"]));
    req.attach = true;
    let mut c = connect(&sock);
    let _: ExecStarted = c.call(&Request::Exec(req)).unwrap();
    let (_, err, exit) = c.collect();
    assert_eq!(exit.code, 2);
    assert!(String::from_utf8_lossy(&err).contains("usage: hearth-agent"));
    let mut req = ExecRequest::new(argv(&["sh"]));
    req.attach = true;
    let mut c = connect(&sock);
    let _: ExecStarted = c.call(&Request::Exec(req)).unwrap();
    assert_eq!(c.collect().2.code, 127, "no shell in an empty root");
}
