//! The guest's own servers (`FC_SIM_SERVE`): ports the simulated guest serves from boot on,
//! answering every client with the peer address it saw, so a test can tell both that a
//! packet reached the guest and from which address (a DNAT's or a masquerade's work).
//!
//! - TCP: each connection is read until the client half-closes, sends a newline, sends
//!   [`MAX_REQUEST`] bytes or [`READ_WAIT`] passes; then it is answered
//!   `peer=<ip>:<port> got=<request>\n` and closed. Each port has [`MAX_CONNS`] sockets,
//!   listening or serving, so that many clients may connect at once (one listening socket
//!   takes one SYN); further SYNs are reset until one finishes.
//! - UDP: each datagram is answered `peer=<ip>:<port> got=<payload>` (its first
//!   [`MAX_REQUEST`] bytes) to the address it came from, so the way back is checked too.
//!
//! [`PeerEcho`] owns only socket handles; the stack thread's [`SocketSet`] holds the sockets
//! and calls [`PeerEcho::turn`] once per loop.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::IpEndpoint;

use super::stack::{listen, socket_error};
use super::NetstackError;

/// Most bytes of a request (TCP) or datagram (UDP) read and echoed back.
pub const MAX_REQUEST: usize = 1024;
/// How long a TCP client may take to send its request before it is answered anyway.
pub const READ_WAIT: Duration = Duration::from_secs(2);
/// Most TCP connections served at once on one port.
pub const MAX_CONNS: usize = 8;
/// Most ports one guest serves.
pub const MAX_PORTS: usize = 16;
/// TCP buffer size, each way: an answer is at most `peer=` + an endpoint + ` got=` + the
/// request's first [`MAX_REQUEST`] bytes, which fits.
const TCP_BUF: usize = 4 * 1024;
/// Datagrams buffered each way on a UDP port.
const UDP_PACKETS: usize = 8;
/// Payload storage per buffered datagram.
const UDP_PAYLOAD: usize = 4 * 1024;
/// How long a closed connection may take to finish its FIN handshake.
const LINGER: Duration = Duration::from_secs(5);

/// A port the guest serves: `tcp:<port>` or `udp:<port>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServePort {
    /// A TCP port.
    Tcp(u16),
    /// A UDP port.
    Udp(u16),
}

impl ServePort {
    /// Parses a comma-separated list such as `tcp:80,udp:53`: each entry `tcp:` or `udp:`
    /// and a port in 1..=65535, no entry twice, at most [`MAX_PORTS`] entries, nothing
    /// empty. The error says which entry is wrong and why.
    pub fn parse_list(text: &str) -> Result<Vec<ServePort>, String> {
        let mut ports = Vec::new();
        for entry in text.split(',') {
            let port: ServePort = entry.parse()?;
            if ports.contains(&port) {
                return Err(format!("{port} is listed twice"));
            }
            ports.push(port);
        }
        if ports.len() > MAX_PORTS {
            return Err(format!("more than {MAX_PORTS} ports"));
        }
        Ok(ports)
    }
}

impl FromStr for ServePort {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, String> {
        let (proto, port) = entry
            .split_once(':')
            .ok_or_else(|| format!("{entry:?} is not tcp:<port> or udp:<port>"))?;
        // Digits only: `parse` alone would take a leading `+`.
        let port = Some(port)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("{entry:?}: port {port:?} is not in 1..=65535"))?;
        match proto {
            "tcp" => Ok(ServePort::Tcp(port)),
            "udp" => Ok(ServePort::Udp(port)),
            _ => Err(format!("{entry:?}: protocol {proto:?} is not tcp or udp")),
        }
    }
}

impl fmt::Display for ServePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServePort::Tcp(p) => write!(f, "tcp:{p}"),
            ServePort::Udp(p) => write!(f, "udp:{p}"),
        }
    }
}

/// The answer to a request from `peer`: no longer than the request's first [`MAX_REQUEST`]
/// bytes plus the peer, so a UDP answer fits one 1500-byte frame (an invalid byte becomes
/// `?`, not the three bytes of U+FFFD).
fn answer(peer: IpEndpoint, request: &[u8]) -> String {
    let request = &request[..request.len().min(MAX_REQUEST)];
    let text = String::from_utf8_lossy(request).replace(char::REPLACEMENT_CHARACTER, "?");
    format!("peer={peer} got={text}")
}

/// The servers of one guest stack.
#[derive(Default)]
pub(crate) struct PeerEcho {
    tcp: Vec<TcpPort>,
    udp: Vec<SocketHandle>,
}

/// A served TCP port: its listening sockets and the connections being served, together
/// [`MAX_CONNS`] sockets.
struct TcpPort {
    port: u16,
    listeners: Vec<SocketHandle>,
    conns: Vec<Conn>,
}

/// An accepted connection, read until its request is complete.
struct Conn {
    socket: SocketHandle,
    peer: IpEndpoint,
    request: Vec<u8>,
    answer_by: Instant,
}

impl PeerEcho {
    /// Opens every port of `ports` in `sockets`; all or nothing (a refused port closes the
    /// ones already opened).
    pub(crate) fn start(
        sockets: &mut SocketSet<'static>,
        ports: &[ServePort],
    ) -> Result<Self, NetstackError> {
        let mut echo = PeerEcho::default();
        if ports.len() > MAX_PORTS {
            return Err(NetstackError::InvalidConfig {
                reason: format!("{} ports to serve, more than {MAX_PORTS}", ports.len()),
            });
        }
        for (i, port) in ports.iter().enumerate() {
            let result = if ports[..i].contains(port) {
                Err(NetstackError::InvalidConfig {
                    reason: format!("{port} is listed twice"),
                })
            } else {
                echo.open(sockets, *port)
            };
            if let Err(e) = result {
                echo.close(sockets);
                return Err(e);
            }
        }
        Ok(echo)
    }

    fn open(
        &mut self,
        sockets: &mut SocketSet<'static>,
        port: ServePort,
    ) -> Result<(), NetstackError> {
        match port {
            ServePort::Tcp(p) => {
                let mut port = TcpPort {
                    port: p,
                    listeners: Vec::new(),
                    conns: Vec::new(),
                };
                let opened = port.listen(sockets);
                // Pushed even on failure, so that `close` removes what was opened.
                self.tcp.push(port);
                opened?;
            }
            ServePort::Udp(p) => {
                let mut socket = udp::Socket::new(udp_buffer(), udp_buffer());
                socket.bind(p).map_err(|e| socket_error("bind", e))?;
                self.udp.push(sockets.add(socket));
            }
        }
        Ok(())
    }

    /// Removes every socket of these servers from `sockets` (connections are reset).
    fn close(&mut self, sockets: &mut SocketSet<'static>) {
        for port in self.tcp.drain(..) {
            for handle in port
                .listeners
                .into_iter()
                .chain(port.conns.iter().map(|c| c.socket))
            {
                sockets.remove(handle);
            }
        }
        for handle in self.udp.drain(..) {
            sockets.remove(handle);
        }
    }

    /// Answers what arrived: datagrams, completed requests, new connections. Answered
    /// connections are pushed to `lingering` to finish their FIN handshake.
    pub(crate) fn turn(
        &mut self,
        sockets: &mut SocketSet<'static>,
        now: Instant,
        lingering: &mut Vec<(SocketHandle, Instant)>,
    ) {
        for &handle in &self.udp {
            echo_datagrams(sockets.get_mut::<udp::Socket>(handle));
        }
        for port in &mut self.tcp {
            port.accept(sockets, now);
            port.serve(sockets, now, lingering);
            // The port was accepted when first listened on, so this cannot fail.
            let _ = port.listen(sockets);
        }
    }
}

impl TcpPort {
    /// Opens listening sockets until the port has [`MAX_CONNS`].
    fn listen(&mut self, sockets: &mut SocketSet<'static>) -> Result<(), NetstackError> {
        while self.listeners.len() + self.conns.len() < MAX_CONNS {
            self.listeners.push(listen(sockets, self.port, TCP_BUF)?);
        }
        Ok(())
    }

    /// Moves connected listeners to the connections; a listener reset during its handshake
    /// is closed. The caller listens again.
    fn accept(&mut self, sockets: &mut SocketSet<'static>, now: Instant) {
        let conns = &mut self.conns;
        self.listeners.retain(|&handle| {
            let s = sockets.get_mut::<tcp::Socket>(handle);
            match (s.state(), s.remote_endpoint()) {
                (tcp::State::Listen | tcp::State::SynReceived, _) => return true,
                (tcp::State::Established | tcp::State::CloseWait, Some(peer)) => {
                    conns.push(Conn {
                        socket: handle,
                        peer,
                        request: Vec::new(),
                        answer_by: now + READ_WAIT,
                    });
                }
                // Reset before it was served: nothing to answer.
                _ => {
                    sockets.remove(handle);
                }
            }
            false
        });
    }

    /// Reads the requests, answers the complete ones, drops the reset ones.
    fn serve(
        &mut self,
        sockets: &mut SocketSet<'static>,
        now: Instant,
        lingering: &mut Vec<(SocketHandle, Instant)>,
    ) {
        self.conns.retain_mut(|conn| {
            let s = sockets.get_mut::<tcp::Socket>(conn.socket);
            let mut buf = [0u8; 512];
            let mut line_done = false;
            while s.can_recv() && conn.request.len() < MAX_REQUEST && !line_done {
                let room = (MAX_REQUEST - conn.request.len()).min(buf.len());
                match s.recv_slice(&mut buf[..room]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let got = &buf[..n];
                        if let Some(nl) = got.iter().position(|b| *b == b'\n') {
                            conn.request.extend_from_slice(&got[..nl]);
                            line_done = true;
                        } else {
                            conn.request.extend_from_slice(got);
                        }
                    }
                }
            }
            let state = s.state();
            if !matches!(state, tcp::State::Established | tcp::State::CloseWait) {
                // Reset (or closed) before the answer: forget it.
                s.abort();
                lingering.push((conn.socket, now));
                return false;
            }
            let peer_done = state == tcp::State::CloseWait && !s.can_recv();
            let complete = line_done
                || peer_done
                || conn.request.len() >= MAX_REQUEST
                || now >= conn.answer_by;
            if !complete || !s.can_send() {
                return true;
            }
            // TCP_BUF holds the longest answer, so it goes out whole.
            let _ = s.send_slice(format!("{}\n", answer(conn.peer, &conn.request)).as_bytes());
            s.close();
            lingering.push((conn.socket, now + LINGER));
            false
        });
    }
}

/// Answers each waiting datagram to its sender; one that cannot be queued is dropped, as a
/// busy host would.
fn echo_datagrams(s: &mut udp::Socket<'static>) {
    while let Ok((payload, meta)) = s.recv() {
        let reply = answer(meta.endpoint, payload);
        let _ = s.send_slice(reply.as_bytes(), meta.endpoint);
    }
}

fn udp_buffer() -> udp::PacketBuffer<'static> {
    udp::PacketBuffer::new(
        vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
        vec![0; UDP_PACKETS * UDP_PAYLOAD],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_list_of_ports() {
        assert_eq!(
            ServePort::parse_list("tcp:80,udp:53,tcp:65535").unwrap(),
            [
                ServePort::Tcp(80),
                ServePort::Udp(53),
                ServePort::Tcp(65535)
            ]
        );
        // The same number on both protocols is two ports.
        assert_eq!(ServePort::parse_list("tcp:53,udp:53").unwrap().len(), 2);
        assert_eq!(ServePort::Udp(53).to_string(), "udp:53");
    }

    #[test]
    fn rejects_bad_lists_saying_why() {
        for (text, reason) in [
            ("", "not tcp:<port>"),
            ("tcp:80,", "not tcp:<port>"),
            ("80", "not tcp:<port>"),
            ("tcp:0", "not in 1..=65535"),
            ("tcp:65536", "not in 1..=65535"),
            ("tcp:+80", "not in 1..=65535"),
            ("tcp: 80", "not in 1..=65535"),
            ("tcp:", "not in 1..=65535"),
            ("sctp:80", "not tcp or udp"),
            ("TCP:80", "not tcp or udp"),
            ("udp:53,udp:53", "listed twice"),
        ] {
            match ServePort::parse_list(text) {
                Err(e) => assert!(e.contains(reason), "{text:?}: {e}"),
                Ok(p) => panic!("{text:?} parsed as {p:?}"),
            }
        }
        let many: Vec<String> = (1..=17).map(|p| format!("tcp:{p}")).collect();
        assert!(ServePort::parse_list(&many.join(","))
            .unwrap_err()
            .contains("more than 16"));
    }

    #[test]
    fn answers_name_the_peer_and_are_bounded() {
        let peer = IpEndpoint::new(smoltcp::wire::IpAddress::v4(10, 98, 0, 2), 40000);
        assert_eq!(answer(peer, b"hello"), "peer=10.98.0.2:40000 got=hello");
        let long = answer(peer, &[0xff; 3 * MAX_REQUEST]);
        assert!(long.len() < TCP_BUF, "{}", long.len());
        // Invalid bytes do not grow the answer past one frame.
        assert!(long.len() <= MAX_REQUEST + 64, "{}", long.len());
    }
}
