//! The hairpin proxies (`hearth_actors::host::hairpin`) on their own, with real sockets in a
//! private network namespace (privileged: the proxies' sockets are marked, which needs
//! `CAP_NET_ADMIN`): what they carry, and the bounds a hostile guest meets. The proxy stands
//! on 127.0.0.1 and the "guest behind the port" on 127.0.0.2; the clients are the guests.
//! Through hearthd, with the translations that lead guests to the proxies:
//! `tests/e2e_publish_packets.rs` and `tests/publish.rs`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
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
/// with `peer=<addr> got=<what it read>`; answers its address.
fn tcp_target() -> SocketAddrV4 {
    let listener = TcpListener::bind((TARGET_IP, 0)).expect("bind the target");
    let addr = match listener.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = stream;
                let peer = s.peer_addr().unwrap();
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                let _ = write!(s, "peer={peer} got={}", String::from_utf8_lossy(&got));
            });
        }
    });
    addr
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

/// A connection that reads nothing back within [`NEGATIVE`] and is then closed (EOF or
/// reset) rather than held: what a refused client sees.
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
        let target = tcp_target();
        let mut proxies = Proxies::new();
        let port = proxies
            .open(&spec(Protocol::Tcp, target, HairpinLimits::default()))
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
        let port = proxies.open(&narrow).unwrap();
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
        let target = tcp_target();
        let limits = HairpinLimits {
            tcp_connections: 3,
            tcp_per_guest: 3,
            ..HairpinLimits::default()
        };
        let mut proxies = Proxies::new();
        let port = proxies.open(&spec(Protocol::Tcp, target, limits)).unwrap();
        // Three held open (the target answers only after a half-close).
        let mut held: Vec<TcpStream> = (0..3)
            .map(|_| TcpStream::connect((PROXY_IP, port)).unwrap())
            .collect();
        // Each is spliced (the proxy holds them) before the fourth comes.
        std::thread::sleep(Duration::from_millis(200));
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
            .open(&spec(Protocol::Tcp, target, HairpinLimits::default()))
            .unwrap();
        let r = exchange(port);
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
        let port = proxies.open(&spec(Protocol::Udp, target, limits)).unwrap();
        let proxy = std::net::SocketAddr::from((PROXY_IP, port));
        let client = || {
            let s = UdpSocket::bind((PROXY_IP, 0)).unwrap();
            s.set_read_timeout(Some(NEGATIVE)).unwrap();
            s
        };
        let ask = |s: &UdpSocket| -> Option<String> {
            s.send_to(b"hello", proxy).unwrap();
            let mut buf = [0u8; 2048];
            let (n, from) = s.recv_from(&mut buf).ok()?;
            assert_eq!(from, proxy, "the answer must come from the address asked");
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        let (a, b, c) = (client(), client(), client());
        let answer = ask(&a).expect("first flow");
        assert!(answer.ends_with(" got=hello"), "{answer}");
        assert!(ask(&b).is_some(), "second flow");
        assert!(
            ask(&c).is_none(),
            "a third flow beyond the limit was served"
        );
        // The flows still open keep answering; once idle they end and make room.
        assert!(ask(&a).is_some());
        std::thread::sleep(Duration::from_secs(2));
        let answer = ask(&c).expect("a new flow after the others expired");
        assert!(answer.ends_with(" got=hello"), "{answer}");
        // Datagrams from outside the subnet are ignored.
        let mut narrow = spec(Protocol::Udp, target, limits);
        narrow.peers = "10.0.0.0/8".parse().unwrap();
        let narrow = proxies.open(&narrow).unwrap();
        let d = client();
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

/// One guest takes only its share of a proxy, and all proxies together only the budget: a
/// guest that holds its share does not keep another guest out, and one that opens
/// connections on many ports meets the budget.
#[test]
fn one_guest_gets_a_share_and_all_proxies_a_budget() {
    require_privileged!();
    let ns = common::NetNs::new("hairpin");
    ns.run(|| {
        let target = tcp_target();
        let limits = HairpinLimits {
            tcp_connections: 4,
            tcp_per_guest: 2,
            ..HairpinLimits::default()
        };
        let (greedy, other) = (Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4));
        let mut proxies = Proxies::with_budget(5, 8);
        let one = proxies.open(&spec(Protocol::Tcp, target, limits)).unwrap();
        let _held: Vec<TcpStream> = (0..2).map(|_| connect_from(greedy, one)).collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut third = connect_from(greedy, one);
        assert!(
            is_closed_at_once(&mut third),
            "a guest got more than its share"
        );
        let _other: Vec<TcpStream> = (0..2).map(|_| connect_from(other, one)).collect();
        std::thread::sleep(Duration::from_millis(200));
        // 4 held of a budget of 5: a second proxy serves one more, then no more.
        let two = proxies.open(&spec(Protocol::Tcp, target, limits)).unwrap();
        let mut fifth = connect_from(Ipv4Addr::new(127, 0, 0, 5), two);
        fifth.write_all(b"x").unwrap();
        fifth.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        fifth.set_read_timeout(Some(WAIT)).unwrap();
        fifth.read_to_string(&mut answer).unwrap();
        assert!(answer.ends_with(" got=x"), "{answer}");
        let _fifth_held = connect_from(Ipv4Addr::new(127, 0, 0, 6), two);
        std::thread::sleep(Duration::from_millis(200));
        let mut sixth = connect_from(Ipv4Addr::new(127, 0, 0, 7), two);
        assert!(
            is_closed_at_once(&mut sixth),
            "the budget of all proxies was passed"
        );
    });
}
