//! A userspace guest network stack (smoltcp) on a TAP: the simulated guest that lets hearth's
//! tests put real packets on the bridge without booting a VM.
//!
//! The caller opens the TAP (Firecracker style: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, then
//! `TUNSETVNETHDRSZ`) and hands the fd to [`GuestStack::spawn`] with a [`NetConfig`] (MAC,
//! address/prefix, gateway, DNS server, virtio-net header length; see
//! [`NetConfig::from_kernel_cmdline`] for the `ip=` boot argument). The stack runs on its own
//! thread: it answers ARP and ICMP echo like any host, and serves the blocking helpers on
//! [`GuestStack`] (resolve a name, open a TCP connection, ping, listen, send a forged frame),
//! each bounded by a timeout. [`GuestStack::spawn_serving`] also has the guest serve TCP and
//! UDP ports itself, answering every client with the peer address it saw (`FC_SIM_SERVE`).
//! Commands travel over a channel to the stack thread, which owns
//! every socket; dropping the handle stops the thread and closes the fd.
//!
//! ```no_run
//! # use firecracker_sim::netstack::{GuestStack, NetConfig, VnetHdr};
//! # fn demo(tap: std::os::fd::OwnedFd) -> Result<(), firecracker_sim::netstack::NetstackError> {
//! let mut config = NetConfig::from_kernel_cmdline(
//!     [0x06, 0, 10, 0, 0, 2],
//!     "ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off:10.0.0.1",
//! )?;
//! config.vnet_hdr = VnetHdr::V1Len12;
//! let guest = GuestStack::spawn(tap, config)?;
//! let addr = guest.resolve("vm2.hearth")?;
//! let reply = guest.tcp_connect(addr, 80, b"GET / HTTP/1.0\r\n\r\n")?;
//! # Ok(()) }
//! ```

mod capture;
mod config;
mod device;
mod dns;
pub mod frames;
mod serve;
mod stack;
mod tap;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use capture::{CapturedPacket, CAPTURE_PAYLOAD};
pub use config::{parse_kernel_ip_arg, KernelIpConfig, NetConfig, VnetHdr};
pub use frames::FrameAddrs;
pub use serve::ServePort;
pub use tap::open_tap;

use stack::{Command, Stack};

/// What can go wrong configuring or using the guest stack.
#[derive(Debug, thiserror::Error)]
pub enum NetstackError {
    /// The kernel `ip=` argument could not be used.
    #[error("Invalid kernel ip= argument {arg:?}: {reason}")]
    InvalidKernelIpArg {
        /// The argument as given.
        arg: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration breaks a rule of [`NetConfig::validate`].
    #[error("Invalid guest network configuration: {reason}")]
    InvalidConfig {
        /// What is wrong with it.
        reason: String,
    },
    /// A system call on the TAP fd failed.
    #[error("TAP {op} failed")]
    Tap {
        /// The operation (`fcntl`, `write`...).
        op: &'static str,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The stack thread could not be started.
    #[error("Cannot start the guest stack thread")]
    Spawn {
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// The stack thread is gone (shut down, or it died).
    #[error("The guest stack has stopped")]
    Stopped,
    /// An operation did not complete in time.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// The operation, with its target.
        op: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// The peer answered a TCP SYN with a reset.
    #[error("Connection to {addr} refused")]
    ConnectionRefused {
        /// The peer.
        addr: SocketAddrV4,
    },
    /// The peer reset an established TCP connection.
    #[error("Connection to {addr} reset")]
    ConnectionReset {
        /// The peer.
        addr: SocketAddrV4,
    },
    /// A name that cannot be put in a DNS query.
    #[error("Invalid DNS name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// [`GuestStack::resolve`] needs a DNS server in the configuration.
    #[error("No DNS server configured")]
    NoDnsServer,
    /// The DNS server says the name has no A record (NXDOMAIN or no data).
    #[error("Name {name:?} not found")]
    NameNotFound {
        /// The name asked for.
        name: String,
    },
    /// The DNS server answered with an error code.
    #[error("DNS server answered {name:?} with error code {rcode}")]
    DnsRcode {
        /// The name asked for.
        name: String,
        /// The RCODE (2 = SERVFAIL, 5 = REFUSED...).
        rcode: u8,
    },
    /// The DNS answer could not be parsed.
    #[error("Malformed DNS answer for {name:?}: {reason}")]
    DnsMalformed {
        /// The name asked for.
        name: String,
        /// What is wrong with the answer.
        reason: &'static str,
    },
    /// smoltcp refused a socket operation.
    #[error("Socket {op} failed: {reason}")]
    Socket {
        /// The operation (`connect`, `listen`...).
        op: &'static str,
        /// smoltcp's reason.
        reason: String,
    },
    /// A raw frame that is not an Ethernet frame of a sendable size.
    #[error("Frame of {len} bytes is not 14..=1514 bytes long")]
    BadFrame {
        /// Its length.
        len: usize,
    },
}

/// The control handle of a running guest stack; dropping it stops the stack thread.
///
/// Every method blocks the caller until the stack thread answers or the timeout passes
/// (the configured [`NetConfig::timeout`], or the `_within` variant's argument). The handle
/// is `Sync`: several test threads may use one guest at once.
pub struct GuestStack {
    commands: Sender<Command>,
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
    config: NetConfig,
    frozen: Arc<AtomicBool>,
}

impl GuestStack {
    /// Validates `config`, makes `tap` non-blocking and starts the stack thread on it. The
    /// stack owns the fd from now on and closes it when stopped.
    pub fn spawn(tap: OwnedFd, config: NetConfig) -> Result<Self, NetstackError> {
        Self::spawn_frozen(tap, config, false)
    }

    /// Like [`GuestStack::spawn`], frozen from the start when `frozen` (a guest whose VM is
    /// paused: not one frame is read before [`GuestStack::set_frozen`] thaws it).
    pub fn spawn_frozen(
        tap: OwnedFd,
        config: NetConfig,
        frozen: bool,
    ) -> Result<Self, NetstackError> {
        Self::spawn_serving(tap, config, frozen, &[])
    }

    /// Like [`GuestStack::spawn_frozen`], the guest serving `serve` itself from the start:
    /// each TCP connection and UDP datagram is answered with the peer address the guest saw
    /// (`peer=<ip>:<port> got=<request>`, a newline after it on TCP). An empty list serves
    /// nothing; a port listed twice, or more than 16, is refused.
    pub fn spawn_serving(
        tap: OwnedFd,
        config: NetConfig,
        frozen: bool,
        serve: &[ServePort],
    ) -> Result<Self, NetstackError> {
        config.validate()?;
        set_nonblocking(&tap)?;
        let (wake, wake_rx) =
            UnixStream::pair().map_err(|source| NetstackError::Spawn { source })?;
        wake_rx
            .set_nonblocking(true)
            .map_err(|source| NetstackError::Spawn { source })?;
        let (commands, rx) = mpsc::channel();
        let frozen = Arc::new(AtomicBool::new(frozen));
        let mut stack = Stack::new(File::from(tap), config.clone(), rx, wake_rx, frozen.clone());
        stack.serve(serve)?;
        let thread = std::thread::Builder::new()
            .name(format!("guest-{}", config.ip))
            .spawn(move || stack.run())
            .map_err(|source| NetstackError::Spawn { source })?;
        Ok(GuestStack {
            commands,
            wake,
            thread: Some(thread),
            config,
            frozen,
        })
    }

    /// Freezes (the VM is paused: the guest reads and sends nothing, requests wait) or thaws
    /// the guest.
    pub fn set_frozen(&self, frozen: bool) {
        self.frozen.store(frozen, Ordering::SeqCst);
        let _ = (&self.wake).write(&[1]);
    }

    /// The configuration the stack runs with.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Resolves `name` to an IPv4 address with an A query to the configured DNS server.
    pub fn resolve(&self, name: &str) -> Result<Ipv4Addr, NetstackError> {
        self.resolve_within(name, self.config.timeout)
    }

    /// [`resolve`](Self::resolve) with an explicit timeout. The query is retransmitted every
    /// second until an answer arrives.
    pub fn resolve_within(&self, name: &str, timeout: Duration) -> Result<Ipv4Addr, NetstackError> {
        dns::validate_name(name).map_err(|reason| NetstackError::InvalidName {
            name: name.to_string(),
            reason,
        })?;
        let server = self.config.dns.ok_or(NetstackError::NoDnsServer)?;
        let op = format!("Resolving {name:?} via {server}");
        self.request(op, timeout, |timeout, reply| Command::Resolve {
            name: name.to_string(),
            server,
            timeout,
            reply,
        })
    }

    /// Opens a TCP connection to `addr:port`, sends `payload`, half-closes (sends FIN) and
    /// returns every byte received until the peer closes.
    pub fn tcp_connect(
        &self,
        addr: Ipv4Addr,
        port: u16,
        payload: &[u8],
    ) -> Result<Vec<u8>, NetstackError> {
        self.tcp_connect_within(addr, port, payload, self.config.timeout)
    }

    /// [`tcp_connect`](Self::tcp_connect) with an explicit timeout for the whole exchange.
    pub fn tcp_connect_within(
        &self,
        addr: Ipv4Addr,
        port: u16,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, NetstackError> {
        let peer = SocketAddrV4::new(addr, port);
        self.request(
            format!("TCP exchange with {peer}"),
            timeout,
            |timeout, reply| Command::TcpConnect {
                peer,
                payload: payload.to_vec(),
                timeout,
                reply,
            },
        )
    }

    /// Sends ICMP echo requests to `addr` (one a second) until one is answered; returns the
    /// round-trip time of the answered request.
    pub fn ping(&self, addr: Ipv4Addr) -> Result<Duration, NetstackError> {
        self.ping_within(addr, self.config.timeout)
    }

    /// [`ping`](Self::ping) with an explicit timeout.
    pub fn ping_within(
        &self,
        addr: Ipv4Addr,
        timeout: Duration,
    ) -> Result<Duration, NetstackError> {
        self.request(format!("Ping {addr}"), timeout, |timeout, reply| {
            Command::Ping {
                addr,
                timeout,
                reply,
            }
        })
    }

    /// Writes `frame` (a complete Ethernet frame, e.g. from [`frames`]) to the TAP as is,
    /// bypassing the stack: its source MAC and IP may be forged.
    pub fn send_raw_frame(&self, frame: &[u8]) -> Result<(), NetstackError> {
        if !(14..=1514).contains(&frame.len()) {
            return Err(NetstackError::BadFrame { len: frame.len() });
        }
        self.request(
            "Sending a raw frame".into(),
            self.config.timeout,
            |_, reply| Command::SendRawFrame {
                frame: frame.to_vec(),
                reply,
            },
        )
    }

    /// The MAC address that owns `ip` on the guest's link (ARP, retried every 500 ms); the
    /// gateway's is the destination of hand-built routed frames.
    pub fn neighbor_mac(&self, ip: Ipv4Addr) -> Result<[u8; 6], NetstackError> {
        self.request(
            format!("ARP for {ip}"),
            self.config.timeout,
            |timeout, reply| Command::NeighborMac { ip, timeout, reply },
        )
    }

    /// Listens on TCP `port`: each connection is sent `response`, then closed. One
    /// connection is served at a time (a new listener takes over as soon as one is accepted).
    /// `response` may be at most 64 KiB (the socket's send buffer).
    pub fn serve_tcp(&self, port: u16, response: &[u8]) -> Result<(), NetstackError> {
        if response.len() > 64 * 1024 {
            return Err(NetstackError::InvalidConfig {
                reason: format!("Response of {} bytes is over 64 KiB", response.len()),
            });
        }
        self.request(
            format!("Listening on {port}"),
            self.config.timeout,
            |_, reply| Command::ServeTcp {
                port,
                response: response.to_vec(),
                reply,
            },
        )
    }

    /// The IPv4 packets that arrived on the TAP so far (the last 1024), whatever the stack
    /// did with them.
    pub fn captured(&self) -> Result<Vec<CapturedPacket>, NetstackError> {
        self.request(
            "Reading the capture".into(),
            self.config.timeout,
            |_, reply| Command::Captured { reply },
        )
    }

    /// Waits up to `timeout` for an arrived packet matching `pred` (checking every 20 ms);
    /// None when none came.
    pub fn wait_for_packet(
        &self,
        timeout: Duration,
        pred: impl Fn(&CapturedPacket) -> bool,
    ) -> Result<Option<CapturedPacket>, NetstackError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(p) = self.captured()?.into_iter().find(|p| pred(p)) {
                return Ok(Some(p));
            }
            if std::time::Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the stack thread and waits for it (what dropping the handle does).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        self.wake_up();
        if let Some(thread) = self.thread.take() {
            // The thread checks for commands at least every few ms, so this is quick.
            let _ = thread.join();
        }
    }

    fn wake_up(&self) {
        // A full socket already means a pending wake-up; nothing more is needed.
        let _ = (&self.wake).write(&[1]);
    }

    /// Sends the command made by `make(deadline, reply)` and waits for its answer; the stack
    /// enforces `deadline`, and this side waits a little longer in case the thread is stuck.
    fn request<T>(
        &self,
        op: String,
        timeout: Duration,
        make: impl FnOnce(Duration, Sender<Result<T, NetstackError>>) -> Command,
    ) -> Result<T, NetstackError> {
        let (reply, answer) = mpsc::channel();
        self.commands
            .send(make(timeout, reply))
            .map_err(|_| NetstackError::Stopped)?;
        self.wake_up();
        match answer.recv_timeout(timeout + Duration::from_secs(2)) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(NetstackError::Timeout { op, after: timeout }),
            Err(RecvTimeoutError::Disconnected) => Err(NetstackError::Stopped),
        }
    }
}

impl Drop for GuestStack {
    fn drop(&mut self) {
        self.stop();
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), NetstackError> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let tap_err = |op: &'static str| {
        move |e: nix::Error| NetstackError::Tap {
            op,
            source: std::io::Error::from(e),
        }
    };
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(tap_err("fcntl(F_GETFL)"))?;
    let flags = OFlag::from_bits_retain(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(flags)).map_err(tap_err("fcntl(F_SETFL)"))?;
    Ok(())
}
