//! End-to-end data plane: the whole daemon (real `hearthd` and `hearthctl`, `firecracker-sim`
//! with its userspace guest stack, `FC_SIM_NETSTACK=1`) with real packets. The test speaks
//! to each VM's agent the way the readiness probe does (hybrid vsock `v.sock`, `CONNECT 52`)
//! and has the guest resolve names through hearth's DNS and open TCP connections: to a server
//! in the upstream namespace (masqueraded while NAT is on, cut while it is off), and to the
//! other guest (isolated).

mod common;
use common::daemon;
use common::guest_agent::{ask, connect};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use daemon::HearthHost;
use hearth_proto::agent::{codes, Request, ResolveReply, ResolveRequest};

/// The upstream end of the egress veth, where the test server listens.
const UPSTREAM_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
/// hearthd's egress address: what upstream sees through NAT.
const EGRESS_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
/// How long a guest tries a connection that must not get through.
const NEGATIVE_MS: u64 = 1500;
/// How long a guest tries a connection that must get through.
const POSITIVE_MS: u64 = 5000;

fn resolve(h: &HearthHost, vm: &str, name: &str) -> Result<Vec<Ipv4Addr>, (String, String)> {
    let req = Request::Resolve(ResolveRequest {
        name: name.into(),
        timeout_ms: POSITIVE_MS,
    });
    ask::<ResolveReply>(h, vm, &req).map(|r| r.addrs)
}

/// A TCP server in the upstream namespace answering each connection with
/// `peer=<address it saw> got=<what it read>`, until dropped (or two minutes at most).
struct PeerServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PeerServer {
    fn start(h: &HearthHost) -> Self {
        // A socket stays in the namespace it was created in: bind there, serve from here.
        let listener = h
            .upstream
            .run(|| TcpListener::bind((UPSTREAM_IP, 0)))
            .expect("bind the upstream server");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (accepted.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(120);
            while !halt.load(Ordering::SeqCst) && Instant::now() < end {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        count.fetch_add(1, Ordering::SeqCst);
                        answer(conn, peer);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        PeerServer {
            port,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn answer(mut conn: std::net::TcpStream, peer: SocketAddr) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut got = Vec::new();
    // The guest half-closes after sending; stop at EOF (or the timeout, or 4 KiB).
    let _ = (&mut conn).take(4096).read_to_end(&mut got);
    let _ = conn.write_all(format!("peer={peer} got={}", String::from_utf8_lossy(&got)).as_bytes());
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn guest_ip(h: &HearthHost, vm: &str) -> Ipv4Addr {
    let v = h.ctl_ok(&["vm", "get", vm]);
    v["guest_ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{vm} has no guest_ip: {v}"))
}

/// The code of an expected failure.
fn code<T: std::fmt::Debug>(r: Result<T, (String, String)>) -> String {
    match r {
        Ok(v) => panic!("expected a failure, got {v:?}"),
        Err((code, _)) => code,
    }
}

#[test]
fn guests_resolve_reach_upstream_through_nat_and_stay_isolated() {
    require_privileged!();
    let h = HearthHost::start(&[("FC_SIM_NETSTACK", "1")], "");
    let server = PeerServer::start(&h);
    let web = h.ctl_ok(&[
        "vm", "create", "web", "--kernel", "vmlinux", "--rootfs", "base", "--nat",
    ]);
    assert_eq!(web["state"], "running", "{web}");
    let db = h.ctl_ok(&[
        "vm", "create", "db", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    assert_eq!(db["state"], "running", "{db}");
    let (web_ip, db_ip) = (guest_ip(&h, "web"), guest_ip(&h, "db"));
    assert_ne!(web_ip, db_ip);

    // (a) + (e): both guests resolve names through hearth's DNS. The guest stack starts
    // right after the agent, so the first answers may still be `no_network`.
    for (vm, other, other_ip) in [("web", "db", db_ip), ("db", "web", web_ip)] {
        let name = format!("{other}.vm.internal");
        let mut last = None;
        let found = common::wait_until(Duration::from_secs(15), || {
            last = Some(resolve(&h, vm, &name));
            matches!(last, Some(Ok(_)))
        });
        assert!(found, "{vm} never resolved {name}: {last:?}\n{}", h.log());
        assert_eq!(
            last.unwrap().unwrap(),
            vec![other_ip],
            "{vm} resolving {name}"
        );
    }
    assert_eq!(
        code(resolve(&h, "web", "nosuch.vm.internal")),
        codes::RESOLVE_FAILED
    );

    // (b): through NAT, upstream sees the host's egress address, not the guest's.
    let reply = connect(&h, "web", UPSTREAM_IP, server.port, "via-nat", POSITIVE_MS)
        .unwrap_or_else(|e| panic!("web -> upstream: {e:?}"));
    assert!(
        reply.starts_with(&format!("peer={EGRESS_IP}:")),
        "not masqueraded: {reply}"
    );
    assert!(reply.ends_with(" got=via-nat"), "{reply}");
    assert!(!reply.contains(&web_ip.to_string()), "{reply}");
    assert_eq!(server.accepted(), 1);

    // (c): NAT off cuts the way out (the SYN is dropped: a timeout); on brings it back.
    h.ctl_ok(&["vm", "nat", "web", "off"]);
    let cut = connect(&h, "web", UPSTREAM_IP, server.port, "cut", NEGATIVE_MS);
    assert_eq!(code(cut), codes::TIMEOUT);
    assert_eq!(
        server.accepted(),
        1,
        "a connection got through with NAT off"
    );
    h.ctl_ok(&["vm", "nat", "web", "on"]);
    let reply = connect(&h, "web", UPSTREAM_IP, server.port, "again", POSITIVE_MS)
        .unwrap_or_else(|e| panic!("web -> upstream after NAT on: {e:?}"));
    assert!(
        reply.starts_with(&format!("peer={EGRESS_IP}:")) && reply.ends_with(" got=again"),
        "{reply}"
    );
    assert_eq!(server.accepted(), 2);

    // (d): a guest without NAT cannot reach upstream.
    let out = connect(&h, "db", UPSTREAM_IP, server.port, "no-nat", NEGATIVE_MS);
    assert_eq!(code(out), codes::TIMEOUT);
    assert_eq!(server.accepted(), 2, "db reached upstream without NAT");

    // (e): guests cannot reach each other. Nothing listens on db's port 80, so a SYN that
    // arrived would be answered by a reset (`connect_refused`); a timeout shows it was dropped
    // on the way. The same holds the other way round.
    // Control: from the host, db's port 80 does answer with a reset.
    let from_host = h.ns.run(|| {
        std::net::TcpStream::connect_timeout(&SocketAddr::from((db_ip, 80)), Duration::from_secs(5))
    });
    match from_host {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        other => panic!("host -> db:80 should be refused by db's stack, got {other:?}"),
    }
    let out = connect(&h, "web", db_ip, 80, "", NEGATIVE_MS);
    assert_eq!(code(out), codes::TIMEOUT, "web -> db");
    let out = connect(&h, "db", web_ip, 80, "", NEGATIVE_MS);
    assert_eq!(code(out), codes::TIMEOUT, "db -> web");
}

#[test]
fn without_the_guest_stack_diagnostics_answer_no_network() {
    require_privileged!();
    let h = HearthHost::start(&[], "");
    let vm = h.ctl_ok(&[
        "vm", "create", "solo", "--kernel", "vmlinux", "--rootfs", "base", "--nat",
    ]);
    assert_eq!(vm["state"], "running", "{vm}");
    assert_eq!(
        code(resolve(&h, "solo", "solo.vm.internal")),
        codes::NO_NETWORK
    );
    let out = connect(&h, "solo", UPSTREAM_IP, 80, "", NEGATIVE_MS);
    assert_eq!(code(out), codes::NO_NETWORK);
}
