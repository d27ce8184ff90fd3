//! A restored guest's old network identity, with real packets (issue 12): the real `hearthd`
//! and `hearthctl`, `firecracker-sim` with its guest network stack and the real
//! `hearth-agent`, inside private namespaces. Each simulated guest announces itself while
//! its stack runs (`FC_SIM_ANNOUNCE=1`: a gratuitous ARP and a broadcast UDP datagram naming
//! its VMM's pid, every 100 ms), so a fork announces with its source's IP and MAC from the
//! load until it adopts the agent's `reconfigure` (held back a second,
//! `FC_SIM_IDENTITY_DELAY_MS`), then with its own. A packet socket in hearthd's
//! namespace sees every frame on every interface there: what each guest sent on its own TAP,
//! what the bridge let through to the host, what reached a third guest's TAP.
//! - two forks of one source: each sent its source's identity on its own TAP, and none of
//!   it reached the bridge or the third guest (anti-spoofing); each is then reachable at its
//!   new address; neither the host side nor the third guest ever saw one IP with two MACs
//!   or one MAC with two IPs;
//!   (with guests on ordinary bridge ports, so the third guest hears the other guests and
//!   only anti-spoofing keeps the old identity from it; and with the default isolated ports);
//! - the same scenario with `network.anti_spoofing = false` (and isolation off) does see the
//!   source's identity coming from the forks on the host side and at the third guest, which
//!   shows the first test's observation can fail.

mod common;
use common::daemon;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use daemon::HearthHost;
use hearth_actors::mac::MacAddr;
use hearth_testkit::{wait_until, NetNs};
use serde_json::Value;

/// `FC_SIM_ANNOUNCE`'s UDP port.
const ANNOUNCE_PORT: u16 = firecracker_sim::knobs::ANNOUNCE_PORT;
/// hearth's bridge (the default `network.bridge`).
const BRIDGE: &str = "hearth0";

/// One frame a packet socket saw.
#[derive(Clone, Debug)]
struct Seen {
    /// The interface it was seen on.
    ifindex: i32,
    /// Sent by the host on that interface (towards the guest, for a TAP), not received.
    outgoing: bool,
    frame: Vec<u8>,
}

/// What a frame says about who sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Claim {
    /// ARP: Ethernet source, sender MAC, sender IP, target IP.
    Arp {
        eth: [u8; 6],
        mac: [u8; 6],
        ip: Ipv4Addr,
        target: Ipv4Addr,
    },
    /// IPv4: Ethernet source, IP source, and the announce's pid when it is one.
    Ip {
        eth: [u8; 6],
        ip: Ipv4Addr,
        announce_pid: Option<u32>,
    },
}

fn mac_at(f: &[u8], at: usize) -> [u8; 6] {
    f[at..at + 6].try_into().unwrap()
}

fn ip_at(f: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3])
}

fn claim(f: &[u8]) -> Option<Claim> {
    if f.len() < 42 {
        return None;
    }
    let eth = mac_at(f, 6);
    match [f[12], f[13]] {
        [0x08, 0x06] => Some(Claim::Arp {
            eth,
            mac: mac_at(f, 22),
            ip: ip_at(f, 28),
            target: ip_at(f, 38),
        }),
        [0x08, 0x00] => {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let udp = 14 + ihl;
            let announce_pid = (f[23] == 17
                && f.len() > udp + 8
                && u16::from_be_bytes([f[udp + 2], f[udp + 3]]) == ANNOUNCE_PORT)
                .then(|| {
                    let text = String::from_utf8_lossy(&f[udp + 8..]).into_owned();
                    text.strip_prefix("announce pid=")?.parse().ok()
                })
                .flatten();
            Some(Claim::Ip {
                eth,
                ip: ip_at(f, 26),
                announce_pid,
            })
        }
        _ => None,
    }
}

/// A packet socket (`ETH_P_ALL`, every interface) in a namespace, read on its own thread
/// until [`Sniffer::finish`].
struct Sniffer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

impl Sniffer {
    fn start(ns: &NetNs) -> Self {
        // The socket belongs to the namespace it is created in; it is read from here.
        let proto = i32::from((libc::ETH_P_ALL as u16).to_be());
        let fd = ns.run(|| {
            // SAFETY: socket(2) with constant arguments; the result is checked.
            let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) };
            assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
            // SAFETY: a fresh descriptor nobody else owns.
            unsafe { OwnedFd::from_raw_fd(fd) }
        });
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: setsockopt with a properly sized timeval.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&timeout).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVTIMEO");
        // Room for every frame of a scenario even if this thread is starved for a while.
        let size: libc::c_int = 4 << 20;
        // SAFETY: setsockopt with a properly sized int.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                std::ptr::from_ref(&size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "SO_RCVBUFFORCE");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (halt, log) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !halt.load(Ordering::SeqCst) {
                // SAFETY: an all-zero sockaddr_ll is valid.
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: buf and from are valid for the lengths given.
                let n = unsafe {
                    libc::recvfrom(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        std::ptr::from_mut(&mut from).cast(),
                        std::ptr::from_mut(&mut len),
                    )
                };
                if let Ok(n) = usize::try_from(n) {
                    log.lock().unwrap().push(Seen {
                        ifindex: from.sll_ifindex,
                        outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
                        frame: buf[..n].to_vec(),
                    });
                }
            }
        });
        Sniffer {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn finish(mut self) -> Vec<Seen> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.snapshot()
    }
}

fn ifindex(h: &HearthHost, dev: &str) -> i32 {
    h.ns.exec_ok(&["cat", &format!("/sys/class/net/{dev}/ifindex")])
        .trim()
        .parse()
        .unwrap()
}

/// What a guest's own TAP received from it (frames the guest sent, before any filtering).
fn sent_by(seen: &[Seen], tap: i32) -> Vec<Claim> {
    seen.iter()
        .filter(|s| s.ifindex == tap && !s.outgoing)
        .filter_map(|s| claim(&s.frame))
        .collect()
}

/// What the host side of the bridge received (guests' frames the bridge let through).
fn host_side(seen: &[Seen], bridge: i32) -> Vec<Claim> {
    sent_by(seen, bridge)
}

/// What the host sent out of a guest's TAP: every frame that guest received.
fn delivered_to(seen: &[Seen], tap: i32) -> Vec<Claim> {
    seen.iter()
        .filter(|s| s.ifindex == tap && s.outgoing)
        .filter_map(|s| claim(&s.frame))
        .collect()
}

/// The frames in `claims` that carry `ip` or `mac` as their sender.
fn with_identity(claims: &[Claim], ip: Ipv4Addr, mac: [u8; 6]) -> Vec<Claim> {
    claims
        .iter()
        .filter(|c| match c {
            Claim::Arp {
                eth, mac: m, ip: i, ..
            } => *eth == mac || *m == mac || *i == ip,
            Claim::Ip { eth, ip: i, .. } => *eth == mac || *i == ip,
        })
        .cloned()
        .collect()
}

/// Every IP with more than one MAC and every MAC with more than one IP among `claims`' senders
/// (0.0.0.0, an ARP probe's sender, claims nothing).
fn conflicts(claims: &[Claim]) -> Vec<String> {
    let mut macs_of: BTreeMap<Ipv4Addr, BTreeSet<[u8; 6]>> = BTreeMap::new();
    let mut ips_of: BTreeMap<[u8; 6], BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for c in claims {
        let pairs = match *c {
            Claim::Arp { eth, mac, ip, .. } => vec![(ip, eth), (ip, mac)],
            Claim::Ip { eth, ip, .. } => vec![(ip, eth)],
        };
        for (ip, mac) in pairs {
            if ip.is_unspecified() {
                continue;
            }
            macs_of.entry(ip).or_default().insert(mac);
            ips_of.entry(mac).or_default().insert(ip);
        }
    }
    let mut out: Vec<String> = macs_of
        .iter()
        .filter(|(_, m)| m.len() > 1)
        .map(|(ip, m)| format!("{ip} at {m:02x?}"))
        .collect();
    out.extend(
        ips_of
            .iter()
            .filter(|(_, i)| i.len() > 1)
            .map(|(mac, i)| format!("{mac:02x?} claims {i:?}")),
    );
    out
}

/// The frames in `claims` with `source`'s identity left once each frame the source sent
/// (`own`) is matched off once.
fn not_sent_by_source(claims: &[Claim], own: &[Claim], source: &Vm) -> Vec<Claim> {
    let mut own = with_identity(own, source.ip, source.mac);
    with_identity(claims, source.ip, source.mac)
        .into_iter()
        .filter(|c| match own.iter().position(|o| o == c) {
            Some(i) => {
                own.remove(i);
                false
            }
            None => true,
        })
        .collect()
}

fn is_announce_of(c: &Claim, pid: u32) -> bool {
    matches!(c, Claim::Ip { announce_pid: Some(p), .. } if *p == pid)
}

/// A VM as the test knows it: address, MAC, TAP index, VMM pid.
struct Vm {
    ip: Ipv4Addr,
    mac: [u8; 6],
    tap: i32,
    pid: u32,
}

fn vm(h: &HearthHost, info: &Value) -> Vm {
    assert_eq!(info["state"], "running", "{info}\n{}", h.log());
    let ip: Ipv4Addr = info["guest_ip"].as_str().unwrap().parse().unwrap();
    Vm {
        ip,
        // hearth's guest MAC for an address; the frames below confirm the guest uses it.
        mac: MacAddr::for_guest(ip).0,
        tap: ifindex(h, info["tap"].as_str().unwrap()),
        pid: u32::try_from(info["pid"].as_u64().unwrap()).unwrap(),
    }
}

/// The two `[network]` switches the scenarios vary.
#[derive(Clone, Copy)]
struct Switches {
    anti_spoofing: bool,
    /// Off: guests' ports are ordinary bridge ports, so the third guest gets every guest's
    /// broadcasts and only anti-spoofing stands between it and a fork's old identity.
    isolate_guests: bool,
}

fn start(sw: Switches) -> HearthHost {
    let agent = hearth_testkit::fc_sim::agent_binary();
    let mut h = HearthHost::start(
        &[
            ("FC_SIM_AGENT_BIN", agent.to_str().unwrap()),
            ("FC_SIM_IDENTITY_FILE", "1"),
            ("FC_SIM_NETSTACK", "1"),
            ("FC_SIM_ANNOUNCE", "1"),
            // The old identity stays on the wire for a while after the load, announced every
            // 100 ms, not just in the instant the TAP comes up.
            ("FC_SIM_IDENTITY_DELAY_MS", "1000"),
        ],
        "",
    );
    if !(sw.anti_spoofing && sw.isolate_guests) {
        // The daemon's config is written before it starts: restart it with the switches.
        assert!(h.terminate());
        let path = h.path("hearthd.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        let switches = format!(
            "[network]\nanti_spoofing = {}\nisolate_guests = {}\n",
            sw.anti_spoofing, sw.isolate_guests
        );
        let config = config.replacen("[network]\n", &switches, 1);
        std::fs::write(&path, config).unwrap();
        h.launch();
    }
    h
}

/// Waits until `vm`'s announce with its own (new) identity reached the host side of the
/// bridge: its stack restarted with the identity the agent was told.
fn wait_new_identity_on_bridge(
    h: &HearthHost,
    sniffer: &Sniffer,
    bridge: i32,
    name: &str,
    vm: &Vm,
) {
    let ok = wait_until(Duration::from_secs(10), || {
        host_side(&sniffer.snapshot(), bridge).iter().any(|c| {
            matches!(c, Claim::Ip { eth, ip, announce_pid: Some(p) }
                if *p == vm.pid && *ip == vm.ip && *eth == vm.mac)
        })
    });
    let seen = sniffer.snapshot();
    assert!(
        ok,
        "no announce from pid {} as {} on the bridge; its TAP saw {:?}\n{}\n{}",
        vm.pid,
        vm.ip,
        seen.iter()
            .filter(|s| s.ifindex == vm.tap)
            .map(|s| (s.outgoing, claim(&s.frame)))
            .collect::<Vec<_>>(),
        std::fs::read_to_string(h.path(&format!("run/{name}/firecracker.log"))).unwrap_or_default(),
        h.log()
    );
}

/// Source `a`, third guest `t`, forks `b` and `c` of `a`, with the sniffer running from
/// before the first VM until both forks announced their new identity on the bridge and
/// answered pings.
struct Scenario {
    h: HearthHost,
    bridge: i32,
    a: Vm,
    b: Vm,
    c: Vm,
    t: Vm,
    /// Whether `b` and `c` answered a ping at their new address.
    reachable: [bool; 2],
    seen: Vec<Seen>,
}

fn scenario(sw: Switches) -> Scenario {
    let h = start(sw);
    // From before the first VM: every frame the source ever sent is seen on its TAP.
    let sniffer = Sniffer::start(&h.ns);
    let t = vm(&h, &h.create_test_vm("t", &[]));
    let a = vm(&h, &h.create_test_vm("a", &[]));
    let bridge = ifindex(&h, BRIDGE);
    let b = vm(&h, &h.ctl_ok(&["vm", "fork", "a", "b"]));
    let c = vm(&h, &h.ctl_ok(&["vm", "fork", "a", "c"]));
    for (name, fork) in [("b", &b), ("c", &c)] {
        wait_new_identity_on_bridge(&h, &sniffer, bridge, name, fork);
    }
    // Traffic the third guest must get from the host (ARP for it, echo requests), so its
    // TAP carries frames to judge, not silence.
    let ping =
        h.ns.exec(&["ping", "-c", "3", "-i", "0.3", "-W", "2", &t.ip.to_string()]);
    assert!(ping.status.success(), "the third guest answers ping");
    // (2) Each fork is reachable at its new address (its stack answers only for its own
    // MAC, which the host's pinned neighbour entry for the lease names).
    // A few echoes: the guest stack drops the first while it resolves the gateway's MAC.
    let reachable = [&b, &c].map(|fork| {
        h.ns.exec(&[
            "ping",
            "-c",
            "3",
            "-i",
            "0.3",
            "-W",
            "2",
            &fork.ip.to_string(),
        ])
        .status
        .success()
    });
    Scenario {
        h,
        bridge,
        a,
        b,
        c,
        t,
        reachable,
        seen: sniffer.finish(),
    }
}

/// Checks the claims on `sw`'s scenario (anti-spoofing on).
fn forks_old_identity_is_dropped(sw: Switches) {
    assert!(sw.anti_spoofing);
    let Scenario {
        h,
        bridge,
        a,
        b,
        c,
        t,
        reachable,
        seen,
    } = scenario(sw);
    let host = host_side(&seen, bridge);
    let third = delivered_to(&seen, t.tap);
    for (fork, reachable) in [(&b, reachable[0]), (&c, reachable[1])] {
        assert!(
            reachable,
            "{} unreachable; its TAP saw {:?}",
            fork.ip,
            seen.iter()
                .filter(|s| s.ifindex == fork.tap)
                .map(|s| (s.outgoing, claim(&s.frame)))
                .collect::<Vec<_>>()
        );
        assert_ne!((fork.ip, fork.mac), (a.ip, a.mac));
        // (1) The fork did send with its source's identity: on its own TAP, its announce
        // carries a's IP and MAC, and a gratuitous ARP claims a's address with a's MAC.
        // Over a good part of a second, not only the instant its TAP came up.
        let sent = sent_by(&seen, fork.tap);
        let old = sent
            .iter()
            .filter(|c| {
                matches!(c,
                Claim::Ip { eth, ip, announce_pid: Some(p) }
                    if *p == fork.pid && *ip == a.ip && *eth == a.mac)
            })
            .count();
        assert!(
            old >= 5,
            "pid {} announced a's identity {old} times on its TAP: {sent:?}",
            fork.pid
        );
        assert!(
            sent.contains(&Claim::Arp {
                eth: a.mac,
                mac: a.mac,
                ip: a.ip,
                target: a.ip
            }),
            "{sent:?}"
        );
        // ... and it announced its new identity there too, after the reconfigure.
        assert!(sent.iter().any(|c| matches!(c,
            Claim::Ip { eth, ip, announce_pid: Some(p) }
                if *p == fork.pid && *ip == fork.ip && *eth == fork.mac)));
        // None of what it sent as a reached the host side or the third guest.
        for (whom, claims) in [("the host side", &host), ("the third guest", &third)] {
            let leaked: Vec<_> = claims
                .iter()
                .filter(|c| is_announce_of(c, fork.pid))
                .filter(|c| !matches!(c, Claim::Ip { eth, ip, .. } if *ip == fork.ip && *eth == fork.mac))
                .collect();
            assert!(leaked.is_empty(), "{whom} got {leaked:?}");
        }
    }
    // Whatever carries the source's identity on the host side or at the third guest must be
    // a frame the source itself sent on its own TAP; any other is a fork's.
    let own = sent_by(&seen, a.tap);
    assert!(own.iter().any(|c| is_announce_of(c, a.pid)), "{own:?}");
    for (whom, claims) in [("the host side", &host), ("the third guest", &third)] {
        assert_eq!(
            not_sent_by_source(claims, &own, &a),
            [],
            "{whom}: frames with the source's identity the source did not send"
        );
    }
    // (3) Never one IP at two MACs or one MAC at two IPs, on the host side or at the third
    // guest; both saw frames to judge.
    assert!(host.len() >= 4, "{host:?}");
    assert!(!third.is_empty());
    if !sw.isolate_guests {
        // The third guest does get other guests' broadcasts: each fork's new-identity
        // announce, so its silence about the old identity is anti-spoofing's doing.
        for fork in [&b, &c] {
            assert!(
                third.iter().any(|cl| is_announce_of(cl, fork.pid)),
                "{third:?}"
            );
        }
    }
    assert_eq!(conflicts(&host), Vec::<String>::new());
    assert_eq!(conflicts(&third), Vec::<String>::new());
    for name in ["b", "c", "a", "t"] {
        h.ctl_ok(&["vm", "rm", name]);
    }
}

/// Guests on ordinary bridge ports: the third guest hears every guest, and still never the
/// forks' old identity.
#[test]
fn forks_old_identity_is_dropped_and_never_seen_twice() {
    require_privileged!();
    forks_old_identity_is_dropped(Switches {
        anti_spoofing: true,
        isolate_guests: false,
    });
}

/// The same with the default switches (isolated guest ports as well).
#[test]
fn forks_old_identity_is_dropped_with_default_switches() {
    require_privileged!();
    forks_old_identity_is_dropped(Switches {
        anti_spoofing: true,
        isolate_guests: true,
    });
}

/// The control: the same forks with anti-spoofing (and isolation) off put the source's
/// identity on the bridge and at the third guest, so the assertions above would see a leak.
#[test]
fn without_anti_spoofing_the_old_identity_reaches_the_bridge() {
    require_privileged!();
    let Scenario {
        h,
        bridge,
        a,
        b,
        c,
        t,
        seen,
        ..
    } = scenario(Switches {
        anti_spoofing: false,
        isolate_guests: false,
    });
    let own = sent_by(&seen, a.tap);
    for (whom, claims) in [
        ("the host side", host_side(&seen, bridge)),
        ("the third guest", delivered_to(&seen, t.tap)),
    ] {
        for fork in [&b, &c] {
            assert!(
                claims.iter().any(|cl| matches!(cl,
                    Claim::Ip { eth, ip, announce_pid: Some(p) }
                        if *p == fork.pid && *ip == a.ip && *eth == a.mac)),
                "{whom} never got pid {}'s old identity: {claims:?}; its TAP saw {:?}",
                fork.pid,
                sent_by(&seen, fork.tap)
            );
        }
        assert_ne!(not_sent_by_source(&claims, &own, &a), []);
    }
    for name in ["b", "c", "a", "t"] {
        h.ctl_ok(&["vm", "rm", name]);
    }
}

/// The duplicate check itself: one IP at two MACs, or one MAC at two IPs, is reported; a
/// consistent set (and an ARP probe from 0.0.0.0) is not.
#[test]
fn conflicts_finds_an_ip_at_two_macs_and_a_mac_at_two_ips() {
    let (m1, m2) = ([6, 0, 10, 0, 0, 2], [6, 0, 10, 0, 0, 3]);
    let (i1, i2) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3));
    let ip = |eth, ip| Claim::Ip {
        eth,
        ip,
        announce_pid: None,
    };
    let probe = Claim::Arp {
        eth: m2,
        mac: m2,
        ip: Ipv4Addr::UNSPECIFIED,
        target: i1,
    };
    assert_eq!(
        conflicts(&[ip(m1, i1), ip(m2, i2), probe]),
        Vec::<String>::new()
    );
    assert_eq!(conflicts(&[ip(m1, i1), ip(m2, i1)]).len(), 1);
    assert_eq!(conflicts(&[ip(m1, i1), ip(m1, i2)]).len(), 1);
    let arp = Claim::Arp {
        eth: m1,
        mac: m2,
        ip: i1,
        target: i1,
    };
    assert_eq!(conflicts(&[arp]).len(), 1, "an ARP whose two MACs differ");
}
