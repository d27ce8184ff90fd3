//! Published ports with real packets through the whole daemon: `hearthctl` -> `hearthd` ->
//! the simulated guest on its real TAP (`firecracker-sim` with its guest stack, which serves
//! ports itself with `FC_SIM_SERVE` and answers every client with the peer address it saw).
//!
//! `web` publishes `8080:80`, `10.98.0.1:5353:53/udp` and `127.0.0.1:9090:80`; `db` is a
//! second guest publishing nothing. The TCP and UDP ports answer from outside (the upstream
//! namespace on the uplink: the client's own address seen) and from the host's namespace
//! (its own address seen); the loopback port answers from the host only; nothing else of
//! `web` answers from outside (its other served port 22, its address directly, other host
//! ports). All of it again after a `kill -9` of hearthd and a restart; `vm unpublish` stops
//! a port at once; after `vm rm` nothing answers and nothing is left in the kernel.
//!
//! `db` reaches `web`'s TCP port through the host's addresses (hairpin, through hearthd's
//! hairpin proxy: web sees the gateway), with the TAP pool's isolated bridge ports and
//! `br_netfilter` on, as on the development hosts. A program that takes a dead proxy's port
//! while hearthd is down is not reached. The rules themselves (without packets):
//! `tests/e2e_publish.rs`; at the `NatActor` level, with UDP hairpin too: `tests/publish.rs`.

mod common;
use common::publish_maps::{hairpin_elements, published_elements};
use common::{daemon, guest_agent};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::Duration;

use daemon::HearthHost;

/// hearthd's uplink address (the host's address on the outside).
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 1);
/// The upstream namespace's address on the uplink: the outside client.
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 2);
/// The guests' gateway on hearth's bridge.
const GATEWAY: Ipv4Addr = Ipv4Addr::new(172, 31, 240, 1);
/// hearthd's guest subnet, which the outside may try to address directly.
const GUEST_CIDR: &str = "172.31.240.0/24";
/// What each simulated guest serves itself.
const SERVE: &str = "tcp:80,tcp:22,udp:53";
/// How long a client waits for an exchange that must not happen.
const NEGATIVE: Duration = Duration::from_millis(1500);
/// How long a guest tries an exchange that must happen.
const POSITIVE_MS: u64 = 5000;
/// How long a port may take to start answering (the guest stack starting after boot, or
/// hearthd re-applying its rules after a restart).
const SETTLE: Duration = Duration::from_secs(20);

fn at(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip, port))
}

/// A TCP exchange from `ns`: sends `hello`, half-closes, answers what came back (the peer
/// the guest saw), or the error (refused, or a timeout when the SYN was dropped).
fn ask_tcp(ns: &common::NetNs, to: SocketAddr) -> Result<String, String> {
    ns.run(move || {
        let mut s = TcpStream::connect_timeout(&to, NEGATIVE).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.write_all(b"hello").map_err(|e| e.to_string())?;
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        // A reset after the handshake (nothing listening behind it) reads as nothing.
        if out.is_empty() {
            return Err("closed without an answer".into());
        }
        Ok(out)
    })
}

/// A datagram from `ns` to `to`; answers the reply (the peer the guest saw), or the error
/// (a timeout when nothing came back).
fn ask_udp(ns: &common::NetNs, to: SocketAddr) -> Result<String, String> {
    ns.run(move || {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(NEGATIVE))
            .map_err(|e| e.to_string())?;
        s.send_to(b"hello", to).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2048];
        let (n, from) = s.recv_from(&mut buf).map_err(|e| e.to_string())?;
        // The answer must come back from the address asked, or the client would drop it.
        if from != to {
            return Err(format!("answer from {from}, not {to}"));
        }
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// The peer address in a `peer=<ip>:<port> got=<request>` answer, checked to carry `hello`.
fn peer_ip(answer: &str) -> Ipv4Addr {
    let peer = answer
        .strip_prefix("peer=")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected answer {answer:?}"));
    assert!(
        answer.trim_end().ends_with(" got=hello") || answer.trim_end().ends_with(" got=hairpin"),
        "{answer:?}"
    );
    match peer.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) => *a.ip(),
        other => panic!("bad peer in {answer:?}: {other:?}"),
    }
}

fn guest_ip(h: &HearthHost, vm: &str) -> Ipv4Addr {
    let v = h.ctl_ok(&["vm", "get", vm]);
    v["guest_ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{vm} has no guest_ip: {v}"))
}

/// Waits (up to [`SETTLE`]) for `web`'s published TCP port to answer from outside, then
/// for `db`'s guest stack to be up (its agent's `connect` to the gateway's DNS port answers
/// anything but `no_network`): the guest stacks start just after boot, and hearthd re-applies
/// its rules at a restart.
fn wait_ready(h: &HearthHost) {
    let mut last = Err(String::new());
    let up = common::wait_until(SETTLE, || {
        last = ask_tcp(&h.upstream, at(HOST_IP, 8080));
        last.is_ok()
    });
    assert!(
        up,
        "web:8080 never answered from outside: {last:?}\n{}",
        h.log()
    );
    let mut last = None;
    let up = common::wait_until(SETTLE, || {
        let r = guest_agent::connect(h, "db", GATEWAY, 53, "", 500);
        let ready = !matches!(&r, Err((code, _)) if code == "no_network");
        last = Some(r);
        ready
    });
    assert!(up, "db's guest stack never came up: {last:?}");
}

/// Everything a published port must do, and everything else must not: checked after the
/// creates and again after hearthd's restart.
fn assert_published(h: &HearthHost, web_ip: Ipv4Addr, phase: &str) {
    let (outside, host) = (&h.upstream, &h.ns);
    // TCP 8080 from outside: DNATed, the client's own address seen.
    let answer = ask_tcp(outside, at(HOST_IP, 8080))
        .unwrap_or_else(|e| panic!("{phase}: outside -> {HOST_IP}:8080: {e}"));
    assert_eq!(peer_ip(&answer), OUTSIDE_IP, "{phase}: {answer}");
    // From the host itself, to its own address.
    let answer = ask_tcp(host, at(HOST_IP, 8080))
        .unwrap_or_else(|e| panic!("{phase}: host -> {HOST_IP}:8080: {e}"));
    assert_eq!(peer_ip(&answer), HOST_IP, "{phase}: {answer}");
    // From the other guest through the host's addresses (hairpin): through hearthd's
    // hairpin proxy, so web sees the gateway.
    for to in [HOST_IP, GATEWAY] {
        let answer = guest_agent::connect(h, "db", to, 8080, "hairpin", POSITIVE_MS)
            .unwrap_or_else(|e| panic!("{phase}: db -> {to}:8080: {e:?}\n{}", h.log()));
        assert_eq!(peer_ip(&answer), GATEWAY, "{phase}: {answer}");
    }

    // UDP 5353 on the host's address, from outside and from the host; the answer names the
    // sender, so the way back went through the same translation.
    let answer = ask_udp(outside, at(HOST_IP, 5353))
        .unwrap_or_else(|e| panic!("{phase}: UDP outside -> {HOST_IP}:5353: {e}"));
    assert_eq!(peer_ip(&answer), OUTSIDE_IP, "{phase}: {answer}");
    let answer = ask_udp(host, at(HOST_IP, 5353))
        .unwrap_or_else(|e| panic!("{phase}: UDP host -> {HOST_IP}:5353: {e}"));
    assert_eq!(peer_ip(&answer), HOST_IP, "{phase}: {answer}");

    // The loopback port answers the host (masqueraded to the gateway, which the guest can
    // answer), and no one else, on any address.
    let answer = ask_tcp(host, at(Ipv4Addr::LOCALHOST, 9090))
        .unwrap_or_else(|e| panic!("{phase}: host -> 127.0.0.1:9090: {e}"));
    assert_eq!(peer_ip(&answer), GATEWAY, "{phase}: {answer}");
    assert!(
        ask_tcp(outside, at(HOST_IP, 9090)).is_err(),
        "{phase}: 9090 from outside"
    );
    assert!(
        ask_tcp(host, at(HOST_IP, 9090)).is_err(),
        "{phase}: 9090 on the host's uplink address"
    );
    for to in [HOST_IP, GATEWAY] {
        let r = guest_agent::connect(h, "db", to, 9090, "", NEGATIVE.as_millis() as u64);
        assert!(r.is_err(), "{phase}: db -> {to}:9090 answered: {r:?}");
    }

    // Nothing else of web from outside: not its other served port, not its address
    // directly (TCP or UDP), not another host port, not the UDP port over TCP.
    for (to, what) in [
        (at(web_ip, 22), "web:22 directly"),
        (at(web_ip, 80), "web:80 directly"),
        (at(HOST_IP, 22), "host port 22"),
        (at(HOST_IP, 8081), "host port 8081"),
        (at(HOST_IP, 5353), "5353 over TCP"),
    ] {
        let r = ask_tcp(outside, to);
        assert!(r.is_err(), "{phase}: {what} answered from outside: {r:?}");
    }
    let r = ask_udp(outside, at(web_ip, 53));
    assert!(r.is_err(), "{phase}: web:53/udp directly: {r:?}");
    let r = ask_udp(outside, at(HOST_IP, 5354));
    assert!(r.is_err(), "{phase}: host port 5354/udp: {r:?}");
    // Control: web does serve port 22, and the host (its gateway) reaches it directly; so
    // the refusals above are the firewall's, not a guest that serves nothing.
    let answer = ask_tcp(host, at(web_ip, 22))
        .unwrap_or_else(|e| panic!("{phase}: control host -> web:22: {e}"));
    assert_eq!(peer_ip(&answer), GATEWAY, "{phase}: {answer}");
}

/// hearthd with guests that serve [`SERVE`], and a route from the outside to the guests'
/// subnet through the host, so that the outside could address them directly if the host let
/// it.
fn start_host() -> HearthHost {
    let h = HearthHost::start(&[("FC_SIM_NETSTACK", "1"), ("FC_SIM_SERVE", SERVE)], "");
    // Bridged frames through iptables, as where Docker runs (the hairpin case that needs
    // hearth's proxies); a kernel without `br_netfilter` has no such switch.
    let _ =
        h.ns.exec(&["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"]);
    h.upstream.exec_ok(&[
        "ip",
        "route",
        "add",
        GUEST_CIDR,
        "via",
        &HOST_IP.to_string(),
    ]);
    h
}

/// Creates `web` (publishing three ports) and `db` (none); answers web's address.
fn create_guests(h: &HearthHost) -> Ipv4Addr {
    let udp = format!("{HOST_IP}:5353:53/udp");
    let web = h.ctl_ok(&[
        "vm",
        "create",
        "web",
        "--kernel",
        "vmlinux",
        "--rootfs",
        "base",
        "--publish",
        "8080:80",
        "--publish",
        &udp,
        "--publish",
        "127.0.0.1:9090:80",
    ]);
    assert_eq!(web["state"], "running", "{web}");
    let db = h.ctl_ok(&[
        "vm", "create", "db", "--kernel", "vmlinux", "--rootfs", "base",
    ]);
    assert_eq!(db["state"], "running", "{db}");
    // Three translations, and two hairpin proxies (none for the loopback port).
    assert_eq!(published_elements(&h.ns).len(), 3, "{}", h.log());
    assert_eq!(hairpin_elements(&h.ns).len(), 2, "{}", h.log());
    guest_ip(h, "web")
}

#[test]
fn published_ports_answer_with_packets_through_hearthd_across_a_restart_until_removed() {
    require_privileged!();
    let mut h = start_host();
    let web_ip = create_guests(&h);

    wait_ready(&h);
    assert_published(&h, web_ip, "after create");

    // hearthd killed and started again: the guests live on, Open re-applies the ports.
    h.kill9();
    h.launch();
    assert_eq!(h.ctl_ok(&["vm", "get", "web"])["state"], "running");
    wait_ready(&h);
    assert_published(&h, web_ip, "after a restart");

    // Unpublished: that port stops at once (no wait), the others stay.
    h.ctl_ok(&["vm", "unpublish", "web", "8080:80"]);
    let r = ask_tcp(&h.upstream, at(HOST_IP, 8080));
    assert!(r.is_err(), "8080 still answers after unpublish: {r:?}");
    let r = ask_tcp(&h.ns, at(HOST_IP, 8080));
    assert!(
        r.is_err(),
        "8080 still answers the host after unpublish: {r:?}"
    );
    let r = guest_agent::connect(&h, "db", HOST_IP, 8080, "", NEGATIVE.as_millis() as u64);
    assert!(r.is_err(), "8080 still answers db after unpublish: {r:?}");
    ask_udp(&h.upstream, at(HOST_IP, 5353)).expect("5353/udp after unpublishing 8080");
    ask_tcp(&h.ns, at(Ipv4Addr::LOCALHOST, 9090)).expect("9090 after unpublishing 8080");

    // Removed: nothing answers, and nothing is left in the kernel.
    h.ctl_ok(&["vm", "rm", "web"]);
    let r = ask_udp(&h.upstream, at(HOST_IP, 5353));
    assert!(r.is_err(), "5353/udp answers after vm rm: {r:?}");
    let r = ask_tcp(&h.ns, at(Ipv4Addr::LOCALHOST, 9090));
    assert!(r.is_err(), "9090 answers after vm rm: {r:?}");
    let r = ask_tcp(&h.ns, at(web_ip, 22));
    assert!(r.is_err(), "web's guest still answers after vm rm: {r:?}");
    h.ctl_ok(&["vm", "rm", "db"]);
    assert!(published_elements(&h.ns).is_empty());
    assert!(hairpin_elements(&h.ns).is_empty());
    daemon::assert_no_leaks(&h);
}

/// The port of a hairpin proxy (on the gateway) that guests' packets to `port`/tcp on any
/// host address are translated to, from hearth's `hairpin_any` map.
fn hairpin_proxy_port(ns: &common::NetNs, port: u16) -> u16 {
    let out = ns.exec(&[
        "nft",
        "-j",
        "list",
        "map",
        "ip",
        "hearth-publish",
        "hairpin_any",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let elements = json["nftables"]
        .as_array()
        .and_then(|items| items.iter().find_map(|i| i["map"]["elem"].as_array()))
        .cloned()
        .unwrap_or_default();
    // Each element: [{"concat": ["tcp", 8080]}, {"concat": ["172.31.240.1", 40001]}].
    elements
        .iter()
        .find(|e| e[0]["concat"] == serde_json::json!(["tcp", port]))
        .and_then(|e| e[1]["concat"][1].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no hairpin element for {port}/tcp in {json}"))
}

/// After a `kill -9` of hearthd its translations stay and its hairpin proxies are gone: a
/// program that binds a proxy's port on the gateway meanwhile must not receive guests'
/// connections to the published port (`HEARTH-INPUT` lets a guest's translated packet reach
/// only a socket of hearth's proxies). After the restart the hairpin works again.
#[test]
fn a_program_on_a_dead_proxys_port_is_not_reached_by_guests() {
    require_privileged!();
    let mut h = start_host();
    create_guests(&h);
    wait_ready(&h);
    let proxy = hairpin_proxy_port(&h.ns, 8080);
    h.kill9();
    let rogue = h.ns.run(move || {
        let l =
            std::net::TcpListener::bind(at(GATEWAY, proxy)).expect("bind the dead proxy's port");
        l.set_nonblocking(true).expect("nonblocking");
        l
    });
    let r = guest_agent::connect(
        &h,
        "db",
        HOST_IP,
        8080,
        "hairpin",
        NEGATIVE.as_millis() as u64,
    );
    assert!(
        r.is_err(),
        "db reached something through 8080 with hearthd dead: {r:?}"
    );
    match rogue.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the program on {GATEWAY}:{proxy} got a guest's connection: {other:?}"),
    }
    // Control: the program does listen there (the host reaches it).
    h.ns.run(move || std::net::TcpStream::connect(at(GATEWAY, proxy)))
        .expect("the program listens");
    drop(rogue);
    h.launch();
    wait_ready(&h);
    let answer = guest_agent::connect(&h, "db", HOST_IP, 8080, "hairpin", POSITIVE_MS)
        .unwrap_or_else(|e| panic!("db -> {HOST_IP}:8080 after the restart: {e:?}"));
    assert_eq!(peer_ip(&answer), GATEWAY, "{answer}");
}
