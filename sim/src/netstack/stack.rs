//! The stack thread: owns the smoltcp interface, the TAP device and every socket, and drives
//! the operations the handle asked for (each with its own deadline) until they finish.
//!
//! The loop: poll the interface, take new commands, advance every pending operation (which
//! may queue packets), poll again to send them, then sleep in `poll(2)` on the TAP and the
//! wake-up socket for at most [`MAX_SLEEP`] or until smoltcp's next timer.

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpEndpoint,
};

use super::capture::CapturedPacket;
use super::device::TapDevice;
use super::dns::{self, AnswerError};
use super::frames::arp_request;
use super::serve::{PeerEcho, ServePort};
use super::{NetConfig, NetstackError};

/// Longest sleep between two turns of the loop; also the granularity of deadlines.
const MAX_SLEEP: Duration = Duration::from_millis(20);
/// How often an unanswered DNS query or echo request is sent again.
const RESEND: Duration = Duration::from_secs(1);
/// How often an unanswered ARP request is sent again.
const ARP_RESEND: Duration = Duration::from_millis(500);
/// TCP buffer size, each way.
const TCP_BUF: usize = 64 * 1024;
/// Most bytes a TCP exchange collects before it is cut off.
const MAX_REPLY: usize = 16 * 1024 * 1024;
/// How long a closed TCP socket may take to finish its FIN handshake before it is dropped.
const LINGER: Duration = Duration::from_secs(5);

type Reply<T> = Sender<Result<T, NetstackError>>;

/// A request from the handle.
pub(crate) enum Command {
    Resolve {
        name: String,
        server: Ipv4Addr,
        timeout: Duration,
        reply: Reply<Ipv4Addr>,
    },
    TcpConnect {
        peer: SocketAddrV4,
        payload: Vec<u8>,
        timeout: Duration,
        reply: Reply<Vec<u8>>,
    },
    Ping {
        addr: Ipv4Addr,
        timeout: Duration,
        reply: Reply<Duration>,
    },
    SendRawFrame {
        frame: Vec<u8>,
        reply: Reply<()>,
    },
    NeighborMac {
        ip: Ipv4Addr,
        timeout: Duration,
        reply: Reply<[u8; 6]>,
    },
    ServeTcp {
        port: u16,
        response: Vec<u8>,
        reply: Reply<()>,
    },
    Captured {
        reply: Reply<Vec<CapturedPacket>>,
    },
    Shutdown,
}

/// An operation in flight; each kind advances in its own method of [`Stack`].
enum Op {
    Resolve(ResolveOp),
    Tcp(TcpOp),
    Ping(PingOp),
    Neighbor(NeighborOp),
}

/// A DNS A query, retransmitted every [`RESEND`] until answered.
struct ResolveOp {
    socket: SocketHandle,
    name: String,
    server: Ipv4Addr,
    id: u16,
    query: Vec<u8>,
    next_send: Instant,
    deadline: Deadline,
    reply: Reply<Ipv4Addr>,
}

/// A TCP exchange: connect, send the payload, half-close, read until the peer closes.
struct TcpOp {
    socket: SocketHandle,
    peer: SocketAddrV4,
    payload: Vec<u8>,
    sent: usize,
    /// The handshake completed (the socket left `SynSent`).
    established: bool,
    /// The peer's FIN arrived.
    peer_fin: bool,
    received: Vec<u8>,
    deadline: Deadline,
    reply: Reply<Vec<u8>>,
}

/// ICMP echo requests, one every [`RESEND`], until one is answered.
struct PingOp {
    socket: SocketHandle,
    addr: Ipv4Addr,
    ident: u16,
    /// When each sequence number was sent.
    sent: Vec<Instant>,
    next_send: Instant,
    deadline: Deadline,
    reply: Reply<Duration>,
}

/// An ARP request, repeated every [`ARP_RESEND`], until the address is seen.
struct NeighborOp {
    ip: Ipv4Addr,
    next_send: Instant,
    deadline: Deadline,
    reply: Reply<[u8; 6]>,
}

/// A TCP port the guest serves.
struct Listener {
    socket: SocketHandle,
    port: u16,
    response: Vec<u8>,
}

pub(crate) struct Stack {
    config: NetConfig,
    device: TapDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    commands: Receiver<Command>,
    wake: UnixStream,
    ops: Vec<Op>,
    listeners: Vec<Listener>,
    /// The ports the guest serves itself (`FC_SIM_SERVE`).
    peer_echo: PeerEcho,
    /// Closed TCP sockets finishing their FIN handshake, dropped when done or at the instant.
    lingering: Vec<(SocketHandle, Instant)>,
    next_port: u16,
    /// Set while the VM is paused: the guest does nothing (no frames read or sent, no
    /// operation advances); commands wait until it runs again.
    frozen: Arc<AtomicBool>,
}

impl Stack {
    pub(crate) fn new(
        tap: File,
        config: NetConfig,
        commands: Receiver<Command>,
        wake: UnixStream,
        frozen: Arc<AtomicBool>,
    ) -> Self {
        let mut device = TapDevice::new(tap, config.vnet_hdr);
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(config.mac)));
        iface_config.random_seed = rand::random();
        let mut iface = Interface::new(iface_config, &mut device, SmolInstant::now());
        iface.update_ip_addrs(|addrs| {
            // One address fits the default capacity; validate() checked it.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(config.ip), config.prefix_len));
        });
        if let Some(gw) = config.gateway {
            // An empty route table always has room for the default route.
            let _ = iface.routes_mut().add_default_ipv4_route(gw);
        }
        Stack {
            config,
            device,
            iface,
            sockets: SocketSet::new(Vec::new()),
            commands,
            wake,
            ops: Vec::new(),
            listeners: Vec::new(),
            peer_echo: PeerEcho::default(),
            lingering: Vec::new(),
            next_port: 49_152 + rand::random::<u16>() % 16_000,
            frozen,
        }
    }

    /// Serves `ports` from now on (see [`PeerEcho`]); called once, before the thread runs.
    pub(crate) fn serve(&mut self, ports: &[ServePort]) -> Result<(), NetstackError> {
        self.peer_echo = PeerEcho::start(&mut self.sockets, ports)?;
        Ok(())
    }

    /// While frozen: keep what is asked for until the guest runs again, and stop when told.
    /// Returns false when the stack must stop.
    fn wait_thawed(&mut self) -> bool {
        let mut deferred = Vec::new();
        while self.frozen.load(Ordering::SeqCst) {
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => return false,
                    Ok(command) => deferred.push(command),
                    Err(TryRecvError::Empty) => break,
                }
            }
            std::thread::sleep(MAX_SLEEP);
        }
        for command in deferred {
            self.start(command);
        }
        true
    }

    /// Runs until told to stop or the handle is gone.
    pub(crate) fn run(mut self) {
        loop {
            if !self.wait_thawed() {
                return;
            }
            self.poll_iface();
            loop {
                match self.commands.try_recv() {
                    Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => return,
                    Ok(command) => self.start(command),
                    Err(TryRecvError::Empty) => break,
                }
            }
            let now = Instant::now();
            let ops = std::mem::take(&mut self.ops);
            for op in ops {
                if let Some(op) = self.advance(op, now) {
                    self.ops.push(op);
                }
            }
            self.serve_listeners();
            self.peer_echo
                .turn(&mut self.sockets, now, &mut self.lingering);
            self.reap_lingering(now);
            self.poll_iface();
            let delay = self
                .iface
                .poll_delay(SmolInstant::now(), &self.sockets)
                .map_or(MAX_SLEEP, |d| Duration::from_micros(d.total_micros()))
                .min(MAX_SLEEP);
            self.sleep(delay);
        }
    }

    fn poll_iface(&mut self) {
        self.iface
            .poll(SmolInstant::now(), &mut self.device, &mut self.sockets);
    }

    /// Waits until the TAP is readable, a command is signalled, or `delay` passes.
    fn sleep(&mut self, delay: Duration) {
        let mut fds = [
            libc::pollfd {
                fd: self.device.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = delay.as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call, and both
        // fds are owned by this thread's structures. An error (EINTR) just ends the sleep.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        let mut drain = [0u8; 64];
        while matches!((&self.wake).read(&mut drain), Ok(n) if n > 0) {}
    }

    fn ephemeral_port(&mut self) -> u16 {
        let port = self.next_port;
        self.next_port = if port >= 65_000 { 49_152 } else { port + 1 };
        port
    }

    fn start(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Shutdown => {}
            Command::Captured { reply } => {
                let _ = reply.send(Ok(self.device.captured.iter().cloned().collect()));
            }
            Command::SendRawFrame { frame, reply } => {
                let result = self
                    .device
                    .write_frame(&frame)
                    .map_err(|source| NetstackError::Tap {
                        op: "write",
                        source,
                    });
                let _ = reply.send(result);
            }
            Command::Resolve {
                name,
                server,
                timeout,
                reply,
            } => self.start_resolve(now, name, server, timeout, reply),
            Command::TcpConnect {
                peer,
                payload,
                timeout,
                reply,
            } => self.start_tcp_connect(now, peer, payload, timeout, reply),
            Command::Ping {
                addr,
                timeout,
                reply,
            } => self.start_ping(now, addr, timeout, reply),
            Command::NeighborMac { ip, timeout, reply } => {
                self.ops.push(Op::Neighbor(NeighborOp {
                    ip,
                    next_send: now,
                    deadline: Deadline::after(now, timeout),
                    reply,
                }));
            }
            Command::ServeTcp {
                port,
                response,
                reply,
            } => {
                let result = self.listen(port).map(|socket| {
                    self.listeners.push(Listener {
                        socket,
                        port,
                        response,
                    });
                });
                let _ = reply.send(result);
            }
        }
    }

    /// A DNS query for `name` to `server`, retried until an answer or the deadline.
    fn start_resolve(
        &mut self,
        now: Instant,
        name: String,
        server: Ipv4Addr,
        timeout: Duration,
        reply: Reply<Ipv4Addr>,
    ) {
        let deadline = Deadline::after(now, timeout);
        let mut socket = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8 * 1500]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4 * 600]),
        );
        let port = self.ephemeral_port();
        if let Err(e) = socket.bind(port) {
            let _ = reply.send(Err(socket_error("bind", e)));
            return;
        }
        let id = rand::random();
        self.ops.push(Op::Resolve(ResolveOp {
            socket: self.sockets.add(socket),
            query: dns::build_query(id, &name),
            name,
            server,
            id,
            next_send: now,
            deadline,
            reply,
        }));
    }

    /// A TCP connection to `peer` that sends `payload` and reads the answer until the peer closes.
    fn start_tcp_connect(
        &mut self,
        now: Instant,
        peer: SocketAddrV4,
        payload: Vec<u8>,
        timeout: Duration,
        reply: Reply<Vec<u8>>,
    ) {
        let deadline = Deadline::after(now, timeout);
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUF]),
            tcp::SocketBuffer::new(vec![0; TCP_BUF]),
        );
        let port = self.ephemeral_port();
        let remote = IpEndpoint::new(IpAddress::Ipv4(*peer.ip()), peer.port());
        if let Err(e) = socket.connect(self.iface.context(), remote, port) {
            let _ = reply.send(Err(socket_error("connect", e)));
            return;
        }
        self.ops.push(Op::Tcp(TcpOp {
            socket: self.sockets.add(socket),
            peer,
            payload,
            sent: 0,
            established: false,
            peer_fin: false,
            received: Vec::new(),
            deadline,
            reply,
        }));
    }

    /// ICMP echo requests to `addr` until one is answered or the deadline.
    fn start_ping(
        &mut self,
        now: Instant,
        addr: Ipv4Addr,
        timeout: Duration,
        reply: Reply<Duration>,
    ) {
        let deadline = Deadline::after(now, timeout);
        let mut socket = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 8], vec![0; 8 * 256]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 4 * 256]),
        );
        let ident = rand::random();
        if let Err(e) = socket.bind(icmp::Endpoint::Ident(ident)) {
            let _ = reply.send(Err(socket_error("bind", e)));
            return;
        }
        self.ops.push(Op::Ping(PingOp {
            socket: self.sockets.add(socket),
            addr,
            ident,
            sent: Vec::new(),
            next_send: now,
            deadline,
            reply,
        }));
    }

    fn listen(&mut self, port: u16) -> Result<SocketHandle, NetstackError> {
        listen(&mut self.sockets, port, TCP_BUF)
    }

    /// Moves `op` on; returns it while pending, or drops it once it has replied.
    fn advance(&mut self, op: Op, now: Instant) -> Option<Op> {
        match op {
            Op::Resolve(mut r) => self.advance_resolve(&mut r, now).then_some(Op::Resolve(r)),
            Op::Tcp(mut t) => self.advance_tcp(&mut t, now).then_some(Op::Tcp(t)),
            Op::Ping(mut p) => self.advance_ping(&mut p, now).then_some(Op::Ping(p)),
            Op::Neighbor(mut n) => self
                .advance_neighbor(&mut n, now)
                .then_some(Op::Neighbor(n)),
        }
    }

    /// Reads answers, gives up at the deadline, (re)sends the query; true while pending.
    fn advance_resolve(&mut self, op: &mut ResolveOp, now: Instant) -> bool {
        let s = self.sockets.get_mut::<udp::Socket>(op.socket);
        let mut result = None;
        let mut buf = [0u8; 1500];
        while let Ok((n, meta)) = s.recv_slice(&mut buf) {
            if meta.endpoint.addr != IpAddress::Ipv4(op.server) || meta.endpoint.port != 53 {
                continue;
            }
            let name = || op.name.clone();
            result = match dns::parse_answer(op.id, &buf[..n]) {
                Ok(ip) => Some(Ok(ip)),
                Err(AnswerError::NotOurs) => continue,
                Err(AnswerError::NotFound) => {
                    Some(Err(NetstackError::NameNotFound { name: name() }))
                }
                Err(AnswerError::Rcode(rcode)) => Some(Err(NetstackError::DnsRcode {
                    name: name(),
                    rcode,
                })),
                Err(AnswerError::Malformed(reason)) => Some(Err(NetstackError::DnsMalformed {
                    name: name(),
                    reason,
                })),
            };
            break;
        }
        if result.is_none() && op.deadline.passed(now) {
            let what = format!("Resolving {:?} via {}", op.name, op.server);
            result = Some(Err(op.deadline.error(what)));
        }
        if let Some(result) = result {
            self.sockets.remove(op.socket);
            let _ = op.reply.send(result);
            return false;
        }
        if now >= op.next_send {
            // A full send buffer just skips this round; the next one retries.
            let server = IpEndpoint::new(IpAddress::Ipv4(op.server), 53);
            let _ = s.send_slice(&op.query, server);
            op.next_send = now + RESEND;
        }
        true
    }

    /// Sends what the window takes, collects what arrived, and decides; true while pending.
    fn advance_tcp(&mut self, op: &mut TcpOp, now: Instant) -> bool {
        let s = self.sockets.get_mut::<tcp::Socket>(op.socket);
        let state = s.state();
        if !matches!(state, tcp::State::Closed | tcp::State::SynSent) {
            op.established = true;
        }
        // States only reached after the peer's FIN. Each lasts until this method acts (only
        // it closes our side) or a timer runs out, so the loop cannot miss them.
        if matches!(
            state,
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
        ) {
            op.peer_fin = true;
        }
        if op.established && op.sent < op.payload.len() && s.can_send() {
            op.sent += s.send_slice(&op.payload[op.sent..]).unwrap_or(0);
            if op.sent == op.payload.len() {
                s.close(); // half-close: the peer sees EOF, we keep reading
            }
        } else if op.payload.is_empty() && state == tcp::State::Established {
            s.close(); // nothing to send: half-close at once
        }
        let mut buf = [0u8; 4096];
        while s.can_recv() && op.received.len() < MAX_REPLY {
            match s.recv_slice(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => op.received.extend_from_slice(&buf[..n]),
            }
        }
        let result = if !op.established && state == tcp::State::Closed {
            Err(NetstackError::ConnectionRefused { addr: op.peer })
        } else if op.peer_fin && !s.can_recv() {
            Ok(std::mem::take(&mut op.received))
        } else if op.established && state == tcp::State::Closed {
            Err(NetstackError::ConnectionReset { addr: op.peer })
        } else if op.deadline.passed(now) {
            s.abort();
            Err(op.deadline.error(format!("TCP exchange with {}", op.peer)))
        } else {
            return true;
        };
        if s.is_open() {
            s.close();
        }
        self.lingering.push((op.socket, now + LINGER));
        let _ = op.reply.send(result);
        false
    }

    /// Looks for the echo reply, gives up at the deadline, sends the next request; true
    /// while pending.
    fn advance_ping(&mut self, op: &mut PingOp, now: Instant) -> bool {
        let s = self.sockets.get_mut::<icmp::Socket>(op.socket);
        let mut rtt = None;
        while let Ok((data, from)) = s.recv() {
            if from != IpAddress::Ipv4(op.addr) {
                continue;
            }
            let Ok(packet) = Icmpv4Packet::new_checked(data) else {
                continue;
            };
            let caps = ChecksumCapabilities::default();
            if let Ok(Icmpv4Repr::EchoReply { ident, seq_no, .. }) =
                Icmpv4Repr::parse(&packet, &caps)
            {
                if let Some(at) = op
                    .sent
                    .get(usize::from(seq_no))
                    .filter(|_| ident == op.ident)
                {
                    rtt = Some(now.saturating_duration_since(*at));
                    break;
                }
            }
        }
        let result = match rtt {
            Some(rtt) => Ok(rtt),
            None if op.deadline.passed(now) => Err(op.deadline.error(format!("Ping {}", op.addr))),
            None => {
                if now >= op.next_send && op.sent.len() < usize::from(u16::MAX) {
                    let request = Icmpv4Repr::EchoRequest {
                        ident: op.ident,
                        seq_no: op.sent.len() as u16,
                        data: b"hearth-guest-ping",
                    };
                    if let Ok(buf) = s.send(request.buffer_len(), IpAddress::Ipv4(op.addr)) {
                        let caps = ChecksumCapabilities::default();
                        request.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps);
                        op.sent.push(now);
                    }
                    op.next_send = now + RESEND;
                }
                return true;
            }
        };
        self.sockets.remove(op.socket);
        let _ = op.reply.send(result);
        false
    }

    /// Answers from the ARP snoop table, gives up at the deadline, (re)sends the request;
    /// true while pending.
    fn advance_neighbor(&mut self, op: &mut NeighborOp, now: Instant) -> bool {
        if let Some(mac) = self.device.arp_seen.get(&op.ip) {
            let _ = op.reply.send(Ok(*mac));
            return false;
        }
        if op.deadline.passed(now) {
            let _ = op
                .reply
                .send(Err(op.deadline.error(format!("ARP for {}", op.ip))));
            return false;
        }
        if now >= op.next_send {
            let frame = arp_request(self.config.mac, self.config.ip, op.ip);
            // A failed write is retried on the next round.
            let _ = self.device.write_frame(&frame);
            op.next_send = now + ARP_RESEND;
        }
        true
    }

    /// Answers connected listeners, handing each port to a fresh listening socket.
    fn serve_listeners(&mut self) {
        let now = Instant::now();
        for i in 0..self.listeners.len() {
            let socket = self.listeners[i].socket;
            let s = self.sockets.get_mut::<tcp::Socket>(socket);
            match s.state() {
                tcp::State::Listen | tcp::State::SynReceived => continue,
                tcp::State::Established | tcp::State::CloseWait if s.can_send() => {
                    // The send buffer holds 64 KiB; serve_tcp rejects larger responses.
                    let _ = s.send_slice(&self.listeners[i].response);
                    s.close();
                }
                tcp::State::Established | tcp::State::CloseWait => continue,
                _ => s.abort(), // reset before a response could be sent
            }
            self.lingering.push((socket, now + LINGER));
            // The port was accepted when first listened on, so this cannot fail.
            if let Ok(fresh) = self.listen(self.listeners[i].port) {
                self.listeners[i].socket = fresh;
            }
        }
    }

    fn reap_lingering(&mut self, now: Instant) {
        let sockets = &mut self.sockets;
        self.lingering.retain(|&(handle, until)| {
            let state = sockets.get_mut::<tcp::Socket>(handle).state();
            let done = matches!(state, tcp::State::Closed | tcp::State::TimeWait) || now >= until;
            if done {
                sockets.remove(handle);
            }
            !done
        });
    }
}

/// When an operation gives up, and the timeout it was given (for the error).
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn after(now: Instant, timeout: Duration) -> Self {
        Deadline {
            at: now + timeout,
            timeout,
        }
    }

    fn passed(&self, now: Instant) -> bool {
        now >= self.at
    }

    fn error(&self, op: String) -> NetstackError {
        NetstackError::Timeout {
            op,
            after: self.timeout,
        }
    }
}

/// A TCP socket listening on `port` with `buf` bytes each way, added to `sockets`.
pub(super) fn listen(
    sockets: &mut SocketSet<'static>,
    port: u16,
    buf: usize,
) -> Result<SocketHandle, NetstackError> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; buf]),
        tcp::SocketBuffer::new(vec![0; buf]),
    );
    socket.listen(port).map_err(|e| socket_error("listen", e))?;
    Ok(sockets.add(socket))
}

pub(super) fn socket_error(op: &'static str, e: impl std::fmt::Display) -> NetstackError {
    NetstackError::Socket {
        op,
        reason: e.to_string(),
    }
}
