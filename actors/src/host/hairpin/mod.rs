//! Hairpin proxies: how a guest reaches a published port through one of the host's addresses.
//!
//! Why a proxy and not a second DNAT: where the kernel passes bridged frames through iptables
//! (`br_netfilter`, as on hosts running Docker), a DNAT at `prerouting` whose new destination
//! is on the bridge the packet came from is carried out at layer 2 ("bridged DNAT"): the frame
//! is forwarded as if the sender's bridge port had sent it, and the TAP pool's isolated ports
//! drop it. So hearth's publish table translates a guest's packet to a published port into a
//! packet to a proxy on the gateway address instead (a local destination, which the kernel
//! delivers up the stack), and the proxy opens its own connection to the guest behind the
//! port. The guest behind the port sees the gateway as its peer, as with Docker's
//! `userland-proxy`.
//!
//! One proxy per published port (and protocol), bound to the gateway on a port the kernel
//! chooses (or the one it had before hearthd restarted, see `nat::publish`), its socket marked
//! with [`SOCKET_MARK`] and transparent (`IP_TRANSPARENT`, which its connections and their
//! `TIME_WAIT` remnants inherit). Under `block_guest_to_host`, `HEARTH-INPUT` accepts a guest's
//! translated packet only when the socket it reaches carries that mark (or, for a TCP SYN, is
//! a transparent socket's `TIME_WAIT` remnant, which has no mark to read), so even after a
//! `kill -9` of hearthd (its translations stay, its proxies are gone) a guest cannot reach a
//! program that took the port since, and no other program's translation of guests' packets to
//! the host is let in by hearth's rule. A program that is itself root and sets
//! `IP_TRANSPARENT` on a socket on a dead proxy's port would be let in by the SYN rule.
//!
//! Guests are untrusted, so everything is bounded ([`HairpinLimits`] per proxy, a budget for
//! all proxies together): peers outside the guest subnet are refused; a proxy holds a bounded
//! number of connections or flows, one guest a share of them, and one guest a share of all
//! proxies' budget; a UDP flow ends after an idle time and queues at most [`UDP_QUEUE`]
//! datagrams of their own size; a TCP connection whose guest went away ends by keepalive; a
//! connection to the guest behind the port must open within [`CONNECT_TIMEOUT`]. Closing a
//! proxy ends its connections and flows.
//!
//! The proxies run on one worker thread of their own (a busy hairpin does not delay the actor
//! that opens them), started by the first proxy. Sockets belong to the network namespace of
//! the thread that creates them: a proxy's socket is bound by the caller, and the worker
//! (which opens the connections to guests) is spawned from the first caller's thread, so keep
//! one [`Proxies`] on one thread, as `LinuxFirewall` is.

mod tcp;
mod udp;

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_proto::api_publish::Protocol;
use ipnet::Ipv4Net;
use socket2::{Domain, Socket, Type};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;

/// The mark of every proxy's socket, which `HEARTH-INPUT` checks. It also travels on the
/// proxies' answers to guests, so it avoids the bits other firewalls give packets: kube-proxy's
/// and flannel's `0xc000`, Cilium's `0x0f00`, Calico's and Tailscale's upper half.
pub const SOCKET_MARK: u32 = 0x2068;

/// Datagrams a UDP flow queues towards the guest behind the port; more are dropped.
pub const UDP_QUEUE: usize = 2;
/// How long a connection to the guest behind the port may take to open.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP connections all proxies hold together (each is two descriptors and two 32 KiB buffers).
pub const TOTAL_TCP_CONNECTIONS: usize = 1024;
/// UDP flows all proxies hold together (each a descriptor and at most [`UDP_QUEUE`] queued
/// datagrams).
pub const TOTAL_UDP_FLOWS: usize = 512;
/// Keepalive of a proxied TCP connection's two sockets: a guest gone silent for this long is
/// probed, and the connection ends after [`KEEPALIVE_PROBES`] unanswered probes
/// [`KEEPALIVE_INTERVAL`] apart.
pub const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
/// See [`KEEPALIVE_TIME`].
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// See [`KEEPALIVE_TIME`].
pub const KEEPALIVE_PROBES: u32 = 3;

/// What one proxy holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HairpinLimits {
    /// TCP connections at once; more are closed at once.
    pub tcp_connections: usize,
    /// TCP connections of one guest (source address) at once.
    pub tcp_per_guest: usize,
    /// UDP flows (guest address and port) at once; datagrams of more are dropped.
    pub udp_flows: usize,
    /// UDP flows of one guest (source address) at once.
    pub udp_per_guest: usize,
    /// A UDP flow without a datagram either way for this long ends: no longer than the
    /// kernel's conntrack keeps an unanswered UDP flow (30 s), after which the flow's answers
    /// would leave untranslated.
    pub udp_idle: Duration,
}

impl Default for HairpinLimits {
    /// 256 connections (64 per guest) and 128 flows (32 per guest), flows idle for 30 s.
    fn default() -> Self {
        Self {
            tcp_connections: 256,
            tcp_per_guest: 64,
            udp_flows: 128,
            udp_per_guest: 32,
            udp_idle: Duration::from_secs(30),
        }
    }
}

/// The connections and flows all proxies may still open, in all and per guest.
#[derive(Debug, Clone)]
struct Budget {
    tcp: Arc<Semaphore>,
    udp: Arc<Semaphore>,
    tcp_guests: Shares,
    udp_guests: Shares,
}

/// What one connection or flow holds of the budgets; given back when dropped (also when its
/// task panics or is aborted).
struct Held {
    _total: tokio::sync::OwnedSemaphorePermit,
    _all_proxies: Share,
    _this_proxy: Share,
}

impl Budget {
    /// Takes one connection (`tcp`) or flow for `guest`, of all proxies' budget, the guest's
    /// share of it, and the guest's share of one proxy (`proxy`); `None` when any is spent.
    fn take(&self, tcp: bool, guest: Ipv4Addr, proxy: &Shares) -> Option<Held> {
        let (total, guests) = if tcp {
            (&self.tcp, &self.tcp_guests)
        } else {
            (&self.udp, &self.udp_guests)
        };
        Some(Held {
            _total: Arc::clone(total).try_acquire_owned().ok()?,
            _all_proxies: guests.take(guest)?,
            _this_proxy: proxy.take(guest)?,
        })
    }
}

/// One proxy: which traffic, from whom, to where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HairpinSpec {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The address the proxy listens on (the gateway); the port is the kernel's choice.
    pub bind: Ipv4Addr,
    /// The guest address and port behind the published port.
    pub target: SocketAddrV4,
    /// Who may use the proxy (the guest subnet); others are refused.
    pub peers: Ipv4Net,
    /// Its bounds.
    pub limits: HairpinLimits,
}

/// The running proxies, by protocol and port.
pub struct Proxies {
    runtime: Option<Runtime>,
    running: HashMap<(Protocol, u16), AbortHandle>,
    budget: Budget,
}

impl Default for Proxies {
    fn default() -> Self {
        Self::with_budget(TOTAL_TCP_CONNECTIONS, TOTAL_UDP_FLOWS)
    }
}

impl Proxies {
    /// No proxy yet; no thread either.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Proxies that hold at most `tcp` connections and `udp` flows together, and one guest a
    /// quarter of each.
    #[must_use]
    pub fn with_budget(tcp: usize, udp: usize) -> Self {
        Self {
            runtime: None,
            running: HashMap::new(),
            budget: Budget {
                tcp: Arc::new(Semaphore::new(tcp)),
                udp: Arc::new(Semaphore::new(udp)),
                tcp_guests: Shares::new(tcp.div_ceil(4)),
                udp_guests: Shares::new(udp.div_ceil(4)),
            },
        }
    }

    /// Starts a proxy for `spec` on `port` of its address (`0`: one the kernel chooses);
    /// answers the port it listens on.
    ///
    /// # Errors
    /// The socket or worker thread could not be created, or `port` is taken.
    pub fn open(&mut self, spec: &HairpinSpec, port: u16) -> io::Result<u16> {
        let socket = marked_socket(spec.protocol)?;
        socket.bind(&SocketAddr::V4(SocketAddrV4::new(spec.bind, port)).into())?;
        let port = socket
            .local_addr()?
            .as_socket_ipv4()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("a proxy socket without an IPv4 address"))?;
        let runtime = match &mut self.runtime {
            Some(rt) => rt,
            slot => slot.insert(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("hearth-hairpin")
                    .enable_all()
                    .build()?,
            ),
        };
        // Registered with the runtime here, so that a failure is this call's error.
        let _entered = runtime.enter();
        let budget = self.budget.clone();
        let task = match spec.protocol {
            Protocol::Tcp => {
                socket.listen(1024)?;
                let listener = tokio::net::TcpListener::from_std(socket.into())?;
                runtime.spawn(tcp::serve(listener, *spec, budget))
            }
            Protocol::Udp => {
                let socket = tokio::net::UdpSocket::from_std(socket.into())?;
                runtime.spawn(udp::serve(socket, *spec, budget))
            }
        };
        if let Some(old) = self
            .running
            .insert((spec.protocol, port), task.abort_handle())
        {
            old.abort();
        }
        Ok(port)
    }

    /// Stops the proxy on `port`, with its connections and flows (on the proxies' thread,
    /// right after). Idempotent.
    pub fn close(&mut self, protocol: Protocol, port: u16) {
        if let Some(task) = self.running.remove(&(protocol, port)) {
            task.abort();
        }
    }

    /// How many proxies run.
    #[must_use]
    pub fn len(&self) -> usize {
        self.running.len()
    }

    /// No proxy runs.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        // The owner may be dropped inside another runtime, where a blocking shutdown panics.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A non-blocking socket for a proxy, marked, transparent (see the module docs), and allowed to
/// bind the gateway before the bridge has its address (hearthd may reconcile before the TAP
/// pool is up).
fn marked_socket(protocol: Protocol) -> io::Result<Socket> {
    let kind = match protocol {
        Protocol::Tcp => Type::STREAM,
        Protocol::Udp => Type::DGRAM,
    };
    let socket = Socket::new(Domain::IPV4, kind.nonblocking().cloexec(), None)?;
    socket.set_mark(SOCKET_MARK)?;
    socket.set_ip_transparent_v4(true)?;
    socket.set_freebind_v4(true)?;
    Ok(socket)
}

/// Counts per guest address, each at most `max`: a guest's share of something.
#[derive(Debug, Clone)]
struct Shares {
    counts: Arc<Mutex<HashMap<Ipv4Addr, usize>>>,
    max: usize,
}

/// One unit of a guest's share, given back when dropped.
struct Share {
    shares: Shares,
    guest: Ipv4Addr,
}

impl Shares {
    fn new(max: usize) -> Self {
        Self {
            counts: Arc::new(Mutex::new(HashMap::new())),
            max,
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, HashMap<Ipv4Addr, usize>> {
        // Nothing panics while holding the lock; a poisoned map is still consistent.
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One unit of `guest`'s share, unless it holds `max` already.
    fn take(&self, guest: Ipv4Addr) -> Option<Share> {
        let mut counts = self.counts();
        let n = counts.entry(guest).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Share {
            shares: self.clone(),
            guest,
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut counts = self.shares.counts();
        if let Some(n) = counts.get_mut(&self.guest) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.guest);
            }
        }
    }
}

/// The IPv4 address of `addr` if it is one of `peers`.
fn allowed_peer(addr: SocketAddr, peers: Ipv4Net) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) if peers.contains(a.ip()) => Some(a),
        _ => None,
    }
}
