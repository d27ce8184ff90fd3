//! Helpers for data-plane tests with a simulated guest: a guest's config, a dnsmasq in a
//! namespace, a TCP server that echoes the peer address it saw, and a UDP sink that records
//! what reaches it. Every server runs for a bounded time and stops when dropped.
//!
//! Only with the `sim` feature (it speaks `firecracker-sim`'s network config).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use firecracker_sim::netstack::NetConfig;

use crate::NetNs;

/// Longest any helper server lives, whatever the test does.
const SERVER_LIFETIME: Duration = Duration::from_secs(120);

/// A guest's config: MAC derived from the address as hearth does (`06:00:<ip>`), /24-or-given
/// prefix, gateway and DNS on the gateway, 3 s timeouts.
pub fn guest_config(ip: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> NetConfig {
    let o = ip.octets();
    let mut c = NetConfig::new([0x06, 0, o[0], o[1], o[2], o[3]], ip, prefix_len);
    c.gateway = Some(gateway);
    c.dns = Some(gateway);
    c.timeout = Duration::from_secs(3);
    c
}

/// A dnsmasq answering `name -> address` records on `listen` inside a namespace; killed on drop.
pub struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    /// Starts dnsmasq in `ns`; each `(domain, addr)` answers the domain and its subdomains,
    /// an empty `addr` answers NXDOMAIN. Other names get REFUSED (no upstream servers).
    pub fn start(ns: &NetNs, listen: Ipv4Addr, records: &[(&str, &str)]) -> Self {
        let mut args: Vec<String> = [
            "netns",
            "exec",
            ns.name(),
            "dnsmasq",
            "-k",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
        ]
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
        args.push(format!("--listen-address={listen}"));
        for (domain, addr) in records {
            args.push(format!("--address=/{domain}/{addr}"));
        }
        let child = Command::new("ip")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dnsmasq (apt-get install dnsmasq)");
        Dnsmasq { child }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP server that, for each connection, reads the request until EOF and answers
/// `peer=<ip>:<port> got=<request>`, then closes; it records every peer it saw.
pub struct PeerEchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    peers: Receiver<SocketAddr>,
    /// The address it listens on.
    pub addr: SocketAddrV4,
}

impl PeerEchoServer {
    /// Listens on `addr` inside `ns`.
    pub fn start(ns: &NetNs, addr: SocketAddrV4) -> Self {
        let listener = ns
            .run(move || TcpListener::bind(addr))
            .expect("bind TCP server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, peers) = mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let until = Instant::now() + SERVER_LIFETIME;
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let _ = tx.send(peer);
                        serve_echo(stream, peer);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        PeerEchoServer {
            stop,
            thread: Some(thread),
            peers,
            addr,
        }
    }

    /// Every peer that connected so far.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.try_iter().collect()
    }
}

fn serve_echo(mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let _ = (&mut stream).take(1024 * 1024).read_to_end(&mut request);
    let answer = format!("peer={peer} got={}", String::from_utf8_lossy(&request));
    let _ = stream.write_all(answer.as_bytes());
}

impl Drop for PeerEchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP socket inside a namespace that records every datagram (source, payload).
pub struct UdpSink {
    socket: UdpSocket,
}

impl UdpSink {
    /// Binds `addr` inside `ns`.
    pub fn bind(ns: &NetNs, addr: SocketAddrV4) -> Self {
        let socket = ns
            .run(move || UdpSocket::bind(addr))
            .expect("bind UDP sink");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        UdpSink { socket }
    }

    /// Waits up to `timeout` for a datagram whose payload equals `payload`; returns its source.
    pub fn wait_for(&self, payload: &[u8], timeout: Duration) -> Option<SocketAddr> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok((n, from)) = self.socket.recv_from(&mut buf) {
                if &buf[..n] == payload {
                    return Some(from);
                }
            }
        }
        None
    }
}

/// The MAC of interface `dev` in `ns` (from `ip -o link`).
pub fn link_mac(ns: &NetNs, dev: &str) -> [u8; 6] {
    let out = ns.exec_ok(&["ip", "-o", "link", "show", "dev", dev]);
    let text = out
        .split("link/ether ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC for {dev} in {out}"));
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).expect("hex MAC");
    }
    mac
}
