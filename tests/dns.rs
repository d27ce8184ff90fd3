//! Privileged tests of `DnsActor` with real namespaces: serving on a gateway address,
//! forwarding to an upstream resolver (dnsmasq) in another namespace over a veth link, SERVFAIL
//! when that upstream is down, and Stop freeing port 53.
#![expect(
    clippy::disallowed_methods,
    reason = "tests drive real tools and binaries (ip, mkfs, hearthd, hearthctl) and clean up their own directories"
)]

mod common;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix::Actor;
use hearth_actors::dns::{DnsActor, DnsError, DnsOptions, ReplaceRecords, Start, Stop};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, RecordType};

use common::{veth, NetNs};

const GATEWAY: &str = "172.31.240.1";
const UPSTREAM: &str = "10.99.0.2";

/// One UDP query from inside the current thread's namespace.
fn query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket.send_to(&msg.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (len, _) = socket.recv_from(&mut buf).expect("a reply within 5 s");
        let reply = Message::from_vec(&buf[..len]).unwrap();
        if reply.metadata.id == msg.metadata.id {
            return reply;
        }
    }
}

fn a_answers(reply: &Message) -> Vec<Ipv4Addr> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

/// Runs a blocking client off the actix thread (the thread is in the namespace, and so is
/// the blocking pool's thread spawned from it).
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A namespace with a "bridge" (a veth pair kept inside it) holding the gateway address.
fn host_ns() -> NetNs {
    let ns = NetNs::new("dns");
    ns.exec_ok(&[
        "ip", "link", "add", "br0", "type", "veth", "peer", "name", "br0p",
    ]);
    ns.exec_ok(&["ip", "addr", "add", &format!("{GATEWAY}/24"), "dev", "br0"]);
    ns.exec_ok(&["ip", "link", "set", "br0", "up"]);
    ns.exec_ok(&["ip", "link", "set", "br0p", "up"]);
    ns
}

/// dnsmasq in `ns` answering `*.example.test` with 10.9.9.9 and nothing else.
struct Upstream(Child);

impl Upstream {
    fn start(ns: &NetNs) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--bind-interfaces",
                "--user=root",
                "--port=53",
                "--address=/example.test/10.9.9.9",
            ])
            .arg(format!("--listen-address={UPSTREAM}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq");
        let up = Upstream(child);
        let ready = common::wait_until(Duration::from_secs(5), || {
            let out = ns.exec(&[
                "dig",
                "+short",
                "+time=1",
                "+tries=1",
                &format!("@{UPSTREAM}"),
                "a.example.test",
            ]);
            String::from_utf8_lossy(&out.stdout).contains("10.9.9.9")
        });
        assert!(ready, "dnsmasq did not start answering");
        up
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // `ip netns exec` execs dnsmasq, so this is dnsmasq itself.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn options(upstreams: Vec<SocketAddr>) -> DnsOptions {
    let mut options = DnsOptions::new("vm.internal", upstreams);
    options.guest_subnet = Some("172.31.240.0/24".parse().unwrap());
    options.upstream_timeout = Duration::from_millis(300);
    options
}

fn logger() -> slog::Logger {
    common::test_logger()
}

#[test]
fn serves_vm_names_on_the_gateway_address() {
    require_privileged!();
    let ns = host_ns();
    ns.block_on(|| async {
        let actor = DnsActor::new(options(vec![]), logger()).unwrap().start();
        let guest = Ipv4Addr::new(172, 31, 240, 10);
        actor
            .send(ReplaceRecords {
                records: [("web".to_string(), guest)].into(),
            })
            .await
            .unwrap()
            .unwrap();
        let listen: SocketAddr = format!("{GATEWAY}:53").parse().unwrap();
        assert_eq!(actor.send(Start { listen }).await.unwrap().unwrap(), listen);

        let (a, aaaa, nx, ptr) = blocking(move || {
            (
                query(listen, "web.vm.internal.", RecordType::A),
                query(listen, "web.vm.internal.", RecordType::AAAA),
                query(listen, "gone.vm.internal.", RecordType::A),
                query(listen, "10.240.31.172.in-addr.arpa.", RecordType::PTR),
            )
        })
        .await;
        assert_eq!(a_answers(&a), [guest]);
        assert_eq!(aaaa.metadata.response_code, ResponseCode::NoError);
        assert!(aaaa.answers.is_empty());
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(
            ptr.answers.iter().map(|r| &r.data).collect::<Vec<_>>(),
            [&RData::PTR(PTR(
                Name::from_ascii("web.vm.internal.").unwrap()
            ))]
        );

        // dig, a real client, agrees (over UDP and TCP).
        for tcp in ["+notcp", "+tcp"] {
            let out = Command::new("dig")
                .args(["+short", tcp, &format!("@{GATEWAY}"), "web.vm.internal"])
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "172.31.240.10");
        }
        actor.send(Stop).await.unwrap().unwrap();
    });
}

#[test]
fn forwards_other_names_to_an_upstream_in_another_namespace() {
    require_privileged!();
    let ns = host_ns();
    let upstream_ns = NetNs::new("dnsup");
    veth(
        &ns,
        "up0",
        "10.99.0.1/24",
        &upstream_ns,
        "up1",
        &format!("{UPSTREAM}/24"),
    );
    let upstream = Upstream::start(&upstream_ns);
    let upstream_addr: SocketAddr = format!("{UPSTREAM}:53").parse().unwrap();

    ns.block_on(|| async {
        let actor = DnsActor::new(options(vec![upstream_addr]), logger())
            .unwrap()
            .start();
        let listen: SocketAddr = format!("{GATEWAY}:53").parse().unwrap();
        actor.send(Start { listen }).await.unwrap().unwrap();

        let (forwarded, upstream_nx) = blocking(move || {
            (
                query(listen, "www.example.test.", RecordType::A),
                query(listen, "nothing.invalid.", RecordType::A),
            )
        })
        .await;
        assert_eq!(forwarded.metadata.response_code, ResponseCode::NoError);
        assert_eq!(a_answers(&forwarded), [Ipv4Addr::new(10, 9, 9, 9)]);
        assert!(forwarded.metadata.recursion_available);
        // The upstream's own negative answer comes through as is.
        assert_ne!(upstream_nx.metadata.response_code, ResponseCode::ServFail);

        // Upstream down: SERVFAIL, well before the client would time out.
        drop(upstream);
        let started = Instant::now();
        let down = blocking(move || query(listen, "www.example.test.", RecordType::A)).await;
        assert_eq!(down.metadata.response_code, ResponseCode::ServFail);
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        actor.send(Stop).await.unwrap().unwrap();
    });
}

#[test]
fn blackholed_upstream_gives_servfail_after_the_retries() {
    require_privileged!();
    let ns = host_ns();
    let upstream_ns = NetNs::new("dnsbh");
    veth(
        &ns,
        "up0",
        "10.99.0.1/24",
        &upstream_ns,
        "up1",
        &format!("{UPSTREAM}/24"),
    );
    // Packets to the upstream vanish: no answer, no ICMP.
    upstream_ns.exec_ok(&["ip", "link", "set", "up1", "down"]);
    let upstream_addr: SocketAddr = format!("{UPSTREAM}:53").parse().unwrap();
    ns.block_on(|| async {
        let actor = DnsActor::new(options(vec![upstream_addr]), logger())
            .unwrap()
            .start();
        let listen: SocketAddr = format!("{GATEWAY}:53").parse().unwrap();
        actor.send(Start { listen }).await.unwrap().unwrap();
        let started = Instant::now();
        let reply = blocking(move || query(listen, "www.example.test.", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
        // 2 rounds x 300 ms, answered before a typical client's 5 s timeout.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    });
}

#[test]
fn stop_frees_port_53_and_start_rebinds() {
    require_privileged!();
    let ns = host_ns();
    ns.exec_ok(&["ip", "addr", "add", "172.31.241.1/24", "dev", "br0"]);
    ns.block_on(|| async {
        let actor = DnsActor::new(options(vec![]), logger()).unwrap().start();
        let first: SocketAddr = format!("{GATEWAY}:53").parse().unwrap();
        actor.send(Start { listen: first }).await.unwrap().unwrap();

        // Something else holding port 53 on another address makes Start fail, naming it.
        let other: SocketAddr = "172.31.241.1:53".parse().unwrap();
        let squatter = UdpSocket::bind(other).unwrap();
        let err = actor
            .send(Start { listen: other })
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(err, DnsError::Bind { addr, .. } if addr == other),
            "{err}"
        );
        assert!(err.to_string().contains("172.31.241.1:53"));
        drop(squatter);

        // Rebind to the other address: the first one is released.
        actor.send(Start { listen: other }).await.unwrap().unwrap();
        UdpSocket::bind(first).expect("first address released on rebind");
        let reply = blocking(move || query(other, "x.vm.internal.", RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

        actor.send(Stop).await.unwrap().unwrap();
        // Port 53 (UDP and TCP) is free for anyone, e.g. dnsmasq, at once.
        UdpSocket::bind(other).expect("UDP 53 freed by Stop");
        std::net::TcpListener::bind(other).expect("TCP 53 freed by Stop");
        let out = Command::new("dig")
            .args(["+time=1", "+tries=1", "@172.31.241.1", "x.vm.internal"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "still answering after Stop");
        // And hearth can take it again.
        actor.send(Start { listen: other }).await.unwrap().unwrap();
        actor.send(Stop).await.unwrap().unwrap();
    });
}
