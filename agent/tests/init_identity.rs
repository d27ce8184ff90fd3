//! The agent's `reconfigure` op end to end: the simulator's backend (`--sim-identity-file`)
//! writes the identity and touches nothing else; the guest backend, run inside its own
//! network, mount and UTS namespaces (`eth0` a veth there, `/etc` a bind-mounted temporary
//! directory), changes the interface's MAC and address, the default route, the neighbour
//! table, the hostname, hostname and resolv.conf files. The clock is never set here: the
//! realtime clock has no namespace, so setting it would change the host's.
#![expect(
    clippy::disallowed_methods,
    reason = "tests and benchmarks drive real binaries and tools and clean up their own directories"
)]

mod common;

use std::io::BufReader;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{privileged, Conn};
use hearth_proto::agent::{
    codes, AgentProtoError, Empty, ExecRequest, ExecStarted, Reconfigure, Request, RngSeed,
};

fn identity() -> Reconfigure {
    Reconfigure {
        ip_cidr: "172.31.240.9/24".into(),
        gateway: Ipv4Addr::new(172, 31, 240, 1),
        mac: "06:00:ac:1f:f0:09".into(),
        hostname: "fork-1".into(),
        dns: Ipv4Addr::new(172, 31, 240, 53),
        clock_unix_ns: None,
        rng_seed: RngSeed([0x5a; 32]),
    }
}

struct Running(Child);

impl Drop for Running {
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

#[test]
fn the_sim_backend_writes_the_identity_file_only() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let file = dir.path().join("identity.json");
    let _agent = Running(
        Command::new(agent_bin())
            .arg("--unix")
            .arg(&sock)
            .arg("--sim-identity-file")
            .arg(&file)
            .spawn()
            .unwrap(),
    );
    let host_before = hostname();
    let _: Empty = connect(&sock)
        .call(&Request::Reconfigure(identity()))
        .unwrap();
    let written: Reconfigure = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(written, identity());
    assert_eq!(hostname(), host_before, "the host's hostname is untouched");
    // A bad identity is refused by the decoder and leaves the file as it was.
    let mut line = String::from_utf8(hearth_proto::agent::encode_request(&Request::Reconfigure(
        identity(),
    )))
    .unwrap();
    line = line.replace("172.31.240.9/24", "172.31.240.9/40");
    let mut c = connect(&sock);
    std::io::Write::write_all(&mut c.w, line.as_bytes()).unwrap();
    let answer = hearth_proto::agent::read_response_line(&mut c.r)
        .unwrap()
        .unwrap();
    match hearth_proto::agent::decode_response::<Empty>(&answer).unwrap_err() {
        AgentProtoError::Remote { code, message } => {
            assert_eq!(code, codes::BAD_REQUEST);
            assert!(message.contains("prefix"), "{message}");
        }
        e => panic!("unexpected {e:?}"),
    }
    let still: Reconfigure = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(still, identity());
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most the buffer's length.
    assert_eq!(
        unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) },
        0
    );
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Runs `script` through the agent's exec op; its stdout.
fn run(sock: &Path, script: &str) -> String {
    let mut req = ExecRequest::new(vec!["sh".into(), "-c".into(), script.into()]);
    req.attach = true;
    let mut c = connect(sock);
    let _: ExecStarted = c.call(&Request::Exec(req)).unwrap();
    let (out, err, exit) = c.collect();
    assert_eq!(exit.code, 0, "{script}: {}", String::from_utf8_lossy(&err));
    String::from_utf8(out).unwrap()
}

#[test]
fn the_guest_backend_changes_mac_address_route_neighbours_and_names() {
    if !privileged("the_guest_backend_changes_mac_address_route_neighbours_and_names") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::write(etc.join("resolv.conf"), "nameserver 9.9.9.9\n").unwrap();
    let sock = dir.path().join("agent.sock");
    // The source guest's identity: old MAC and address, a route, a learnt neighbour.
    let script = format!(
        "set -e; ip link add eth0 type veth peer name peer0; \
         ip link set eth0 address 06:00:ac:1f:f0:05; ip addr add 172.31.240.5/24 dev eth0; \
         ip link set eth0 up; ip link set peer0 up; ip route add default via 172.31.240.1; \
         ip neigh add 172.31.240.77 lladdr 06:00:00:00:00:77 dev eth0 nud reachable; \
         hostname source-vm; mount --bind {etc} /etc; exec {agent} --unix {sock}",
        etc = etc.display(),
        agent = agent_bin().display(),
        sock = sock.display()
    );
    let _agent = Running(
        Command::new("unshare")
            .args(["--net", "--mount", "--uts", "sh", "-c", &script])
            .spawn()
            .unwrap(),
    );
    let before = run(&sock, "ip neigh show dev eth0; hostname");
    assert!(before.contains("172.31.240.77"), "{before}");
    assert!(before.contains("source-vm"), "{before}");

    let _: Empty = connect(&sock)
        .call(&Request::Reconfigure(identity()))
        .unwrap();

    let link = run(&sock, "ip link show eth0");
    assert!(link.contains("link/ether 06:00:ac:1f:f0:09"), "{link}");
    assert!(link.contains(",UP"), "{link}");
    let addr = run(&sock, "ip -4 addr show eth0");
    assert!(addr.contains("inet 172.31.240.9/24"), "{addr}");
    assert!(
        !addr.contains("172.31.240.5"),
        "the old address stays:\n{addr}"
    );
    let route = run(&sock, "ip route");
    assert!(
        route.contains("default via 172.31.240.1 dev eth0"),
        "{route}"
    );
    let neigh = run(&sock, "ip neigh show dev eth0");
    assert!(
        !neigh.contains("172.31.240.77"),
        "neighbours not flushed:\n{neigh}"
    );
    assert_eq!(run(&sock, "hostname").trim(), "fork-1");
    assert_eq!(
        std::fs::read_to_string(etc.join("hostname")).unwrap(),
        "fork-1\n"
    );
    let resolv = std::fs::read_to_string(etc.join("resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 172.31.240.53"), "{resolv}");
    assert!(!resolv.contains("9.9.9.9"), "{resolv}");
    // The host kept its own name (the agent changed its UTS namespace's).
    assert_ne!(hostname(), "fork-1");
}
