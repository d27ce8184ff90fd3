//! The hairpin proxies (`hearth_actors::host::hairpin`) on their own, with real sockets in a
//! private network namespace (privileged: the proxies' sockets are marked, which needs
//! `CAP_NET_ADMIN`): what they carry, and the bounds a hostile guest meets. The proxy stands
//! on 127.0.0.1 and the "guest behind the port" on 127.0.0.2; the clients are the guests.
//! Through hearthd, with the translations that lead guests to the proxies:
//! `tests/e2e_publish_packets.rs` and `tests/publish.rs`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_actors::host::hairpin::{HairpinLimits, HairpinSpec, Proxies};
use hearth_proto::api_publish::Protocol;

const PROXY_IP: Ipv4Addr = Ipv4Addr::LOCALHOST;
const TARGET_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// How long a client waits for what must come.
const WAIT: Duration = Duration::from_secs(5);
/// How long a client waits for what must not come.
const NEGATIVE: Duration = Duration::from_millis(700);

fn spec(protocol: Protocol, target: SocketAddrV4, limits: HairpinLimits) -> HairpinSpec {
    HairpinSpec {
        protocol,
        bind: PROXY_IP,
        target,
        peers: "127.0.0.0/8".parse().unwrap(),
        limits,
    }
}

/// A TCP server on [`TARGET_IP`] answering each connection, once the client half-closed,
/// with `peer=<addr> got=<what it read>`; answers its address and the count of connections
/// it accepted (each one the proxy holds).
fn tcp_target() -> (SocketAddrV4, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((TARGET_IP, 0)).expect("bind the target");
    let addr = match listener.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut s = stream;
                let peer = s.peer_addr().unwrap();
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                let _ = write!(s, "peer={peer} got={}", String::from_utf8_lossy(&got));
            });
        }
    });
    (addr, accepted)
}

/// Waits until the target accepted `n` connections in all: the proxy holds them.
fn wait_accepted(accepted: &AtomicUsize, n: usize) {
    let reached = common::wait_until(WAIT, || accepted.load(Ordering::SeqCst) >= n);
    assert!(
        reached,
        "the target accepted {} of {n}",
        accepted.load(Ordering::SeqCst)
    );
}

/// A UDP server on [`TARGET_IP`] answering each datagram with `peer=<addr> got=<datagram>`.
fn udp_target() -> SocketAddrV4 {
    let socket = UdpSocket::bind((TARGET_IP, 0)).expect("bind the target");
    let addr = match socket.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let answer = format!("peer={from} got={}", String::from_utf8_lossy(&buf[..n]));
            let _ = socket.send_to(answer.as_bytes(), from);
        }
    });
    addr
}

/// Sends `hello` to the proxy on `port`, half-closes, answers what came back: `Ok("")` when
/// the proxy closed without an answer, `Err` for a reset or a timeout.
fn exchange(port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&(PROXY_IP, port).into(), WAIT)?;
    s.set_read_timeout(Some(WAIT))?;
    s.write_all(b"hello")?;
    s.shutdown(Shutdown::Write)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A connection that is closed (EOF or reset) without an answer, well before [`WAIT`], rather
/// than held: what a refused client sees.
fn is_closed_at_once(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let closed = match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut,
    };
    closed && started.elapsed() < WAIT
}

#[test]
fn tcp_is_spliced_both_ways_and_peers_outside_the_subnet_are_refused() {
    require_privileged!();
    let ns = common::NetNs::new("hairpin");
    ns.run(|| {
        let (target, _) = tcp_target();
        let mut proxies = Proxies::new();
        let port = proxies
            .open(&spec(Protocol::Tcp, target, HairpinLimits::default()), 0)
            .expect("open the proxy");
        // The half-close travels through: the target answers only after it.
        let answer = exchange(port).expect("through the proxy");
        assert!(
            answer.starts_with("peer=127.0.0.1:") && answer.ends_with(" got=hello"),
            "{answer}"
        );
        // 2 MiB each way through the bounded buffers.
        let big = vec![b'x'; 2 << 20];
        let mut s = TcpStream::connect((PROXY_IP, port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let writer = {
            let mut w = s.try_clone().unwrap();
            let big = big.clone();
            std::thread::spawn(move || {
                w.write_all(&big).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
            })
        };
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        writer.join().unwrap();
        assert!(answer.ends_with(&big), "{} bytes back", answer.len());

        // Only the guest subnet: a proxy for 10.0.0.0/8 closes the loopback client at once.
        let mut narrow = spec(Protocol::Tcp, target, HairpinLimits::default());
        narrow.peers = "10.0.0.0/8".parse().unwrap();
        let port = proxies.open(&narrow, 0).unwrap();
        let mut s = TcpStream::connect((PROXY_IP, port)).unwrap();
        assert!(
            is_closed_at_once(&mut s),
            "a peer outside the subnet was served"
        );
        assert_eq!(proxies.len(), 2);
    });
}

#[test]
fn tcp_connections_beyond_the_limit_are_closed_and_closing_the_proxy_ends_them() {
    require_privileged!();
    let ns = common::NetNs::new("hairpin");
    ns.run(|| {
        let (target, accepted) = tcp_target();
        let limits = HairpinLimits {
            tcp_connections: 3,
            tcp_per_guest: 3,
            ..HairpinLimits::default()
        };
        let mut proxies = Proxies::new();
        let port = proxies
            .open(&spec(Protocol::Tcp, target, limits), 0)
            .unwrap();
        // Three held open (the target answers only after a half-close).
        let mut held: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect((PROXY_IP, port)).unwrap())
            .collect();
        wait_accepted(&accepted, 3);
        let mut fourth = TcpStream::connect((PROXY_IP, port)).unwrap();
        assert!(
            is_closed_at_once(&mut fourth),
            "a fourth connection was held"
        );
        // One ends: a new one is served again.
        let mut first = held.remove(0);
        first.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        first.set_read_timeout(Some(WAIT)).unwrap();
        first.read_to_string(&mut answer).unwrap();
        assert!(answer.ends_with(" got="), "{answer}");
        drop(first);
        let served = common::wait_until(WAIT, || {
            exchange(port).is_ok_and(|a| a.ends_with(" got=hello"))
        });
        assert!(served, "no connection served after one ended");

        // Closing the proxy ends the connections it holds.
        proxies.close(Protocol::Tcp, port);
        for s in &mut held {
            assert!(is_closed_at_once(s), "a connection outlived its proxy");
        }
        assert!(proxies.is_empty());
        assert!(
            TcpStream::connect((PROXY_IP, port)).is_err(),
            "still listening"
        );
    });
}

#[test]
fn a_target_that_does_not_answer_resets_the_client() {
    require_privileged!();
    let ns = common::NetNs::new("hairpin");
    ns.run(|| {
        // A port nothing listens on.
        let free = TcpListener::bind((TARGET_IP, 0)).unwrap();
        let target = match free.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        drop(free);
        let mut proxies = Proxies::new();
        let port = proxies
            .open(&spec(Protocol::Tcp, target, HairpinLimits::default()), 0)
            .unwrap();
        // Only read: a write could meet the reset first and fail otherwise.
        let mut s = TcpStream::connect((PROXY_IP, port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let r = s.read(&mut [0u8; 16]);
        assert!(
            matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionReset),
            "{r:?}"
        );
    });
}

#[test]
fn udp_answers_come_from_the_proxy_and_flows_are_bounded_and_expire() {
    require_privileged!();
    let ns = common::NetNs::new("hairpin");
    ns.run(|| {
        let target = udp_target();
        let limits = HairpinLimits {
            udp_flows: 2,
            udp_per_guest: 2,
            // Longer than a refused client's wait ([`NEGATIVE`]), so the first two flows are
            // alive while the third is refused.
            udp_idle: Duration::from_millis(1500),
            ..HairpinLimits::default()
        };
        let mut proxies = Proxies::new();
        let port = proxies
            .open(&spec(Protocol::Udp, target, limits), 0)
            .unwrap();
        let proxy = std::net::SocketAddr::from((PROXY_IP, port));
        let client = || UdpSocket::bind((PROXY_IP, 0)).unwrap();
        // An answer that must come is waited for [`WAIT`], one that must not [`NEGATIVE`].
        let ask_within = |s: &UdpSocket, wait: Duration| -> Option<String> {
            s.set_read_timeout(Some(wait)).unwrap();
            s.send_to(b"hello", proxy).unwrap();
            let mut buf = [0u8; 2048];
            let (n, from) = s.recv_from(&mut buf).ok()?;
            assert_eq!(from, proxy, "the answer must come from the address asked");
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        let ask = |s: &UdpSocket| ask_within(s, WAIT);
        let (a, b, c) = (client(), client(), client());
        let answer = ask(&a).expect("first flow");
        assert!(answer.ends_with(" got=hello"), "{answer}");
        assert!(ask(&b).is_some(), "second flow");
        assert!(
            ask_within(&c, NEGATIVE).is_none(),
            "a third flow beyond the limit was served"
        );
        // The flows still open keep answering; once idle they end and make room.
        assert!(ask(&a).is_some());
        let mut answer = None;
        let served = common::wait_until(WAIT, || {
            answer = ask_within(&c, Duration::from_millis(300));
            answer.is_some()
        });
        assert!(served, "no new flow after the others expired");
        let answer = answer.unwrap();
        assert!(answer.ends_with(" got=hello"), "{answer}");
        // Datagrams from outside the subnet are ignored.
        let mut narrow = spec(Protocol::Udp, target, limits);
        narrow.peers = "10.0.0.0/8".parse().unwrap();
        let narrow = proxies.open(&narrow, 0).unwrap();
        let d = client();
        d.set_read_timeout(Some(NEGATIVE)).unwrap();
        d.send_to(b"hello", (PROXY_IP, narrow)).unwrap();
        let mut buf = [0u8; 64];
        assert!(
            d.recv_from(&mut buf).is_err(),
            "a peer outside the subnet was served"
        );
    });
}

/// A TCP connection from `from` to the proxy on `port`, held open.
fn connect_from(from: Ipv4Addr, port: u16) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from((from, 0)).into())
        .unwrap();
    socket
        .connect(&std::net::SocketAddr::from((PROXY_IP, port)).into())
        .unwrap();
    socket.into()
}

/// One guest takes only its share of a proxy and of all proxies, and all proxies together
/// only the budget: a guest that holds its share does not keep another guest out, and one that
/// opens connections on many ports meets its share of the budget.
#[test]
fn one_guest_gets_a_share_and_all_proxies_a_budget() {
    require_privileged!();
    let ns = common::NetNs::new("hairpin");
    ns.run(|| {
        let (target, accepted) = tcp_target();
        let limits = HairpinLimits {
            tcp_connections: 4,
            tcp_per_guest: 2,
            ..HairpinLimits::default()
        };
        let guest = |n: u8| Ipv4Addr::new(127, 0, 0, n);
        // Five in all, two for a guest whatever the port (a quarter of five, rounded up).
        let mut proxies = Proxies::with_budget(5, 8);
        let one = proxies
            .open(&spec(Protocol::Tcp, target, limits), 0)
            .unwrap();
        let two = proxies
            .open(&spec(Protocol::Tcp, target, limits), 0)
            .unwrap();
        let mut held: Vec<TcpStream> = (0..2).map(|_| connect_from(guest(3), one)).collect();
        wait_accepted(&accepted, 2);
        let mut third = connect_from(guest(3), one);
        assert!(
            is_closed_at_once(&mut third),
            "a guest got more than its share of a proxy"
        );
        let mut elsewhere = connect_from(guest(3), two);
        assert!(
            is_closed_at_once(&mut elsewhere),
            "a guest got more than its share of all"
        );
        held.extend((0..2).map(|_| connect_from(guest(4), one)));
        wait_accepted(&accepted, 4);
        // Four held of a budget of five: a second proxy serves one more, and its end gives
        // its place back.
        let exchange_from = |from: Ipv4Addr| {
            let mut s = connect_from(from, two);
            s.set_read_timeout(Some(WAIT)).unwrap();
            let mut answer = String::new();
            s.write_all(b"x").is_ok()
                && s.shutdown(Shutdown::Write).is_ok()
                && s.read_to_string(&mut answer).is_ok()
                && answer.ends_with(" got=x")
        };
        assert!(
            exchange_from(guest(5)),
            "the fifth connection was not served"
        );
        let served = common::wait_until(WAIT, || exchange_from(guest(6)));
        assert!(
            served,
            "the place of an ended connection was not given back"
        );
        held.push(connect_from(guest(6), two));
        wait_accepted(&accepted, 7);
        let mut sixth = connect_from(guest(7), two);
        assert!(
            is_closed_at_once(&mut sixth),
            "the budget of all proxies was passed"
        );
    });
}
