//! The guest's network: the diagnostic ops `resolve` (the guest's own resolver,
//! `getaddrinfo` through [`ToSocketAddrs`]) and `connect` (one TCP exchange), each bounded by
//! its `timeout_ms`; and its configuration ([`iface`]: addresses, MAC, routes, hostname,
//! resolv.conf), shared by init (from the kernel `ip=` argument) and the `reconfigure` op.

pub mod identity;
pub mod iface;

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hearth_proto::agent::{
    codes, ConnectReply, ConnectRequest, ErrorBody, ResolveReply, ResolveRequest, MAX_RECEIVED,
};

/// Resolves `req.name` to its IPv4 addresses. `getaddrinfo` has no timeout of its own, so it
/// runs on a thread of its own; one that outlives the timeout ends when the resolver gives
/// up (its answer is then dropped).
pub fn resolve(req: &ResolveRequest) -> Result<ResolveReply, ErrorBody> {
    let (tx, rx) = mpsc::channel();
    let name = req.name.clone();
    std::thread::Builder::new()
        .name("resolve".into())
        .spawn(move || {
            let _ = tx.send(
                (name.as_str(), 0)
                    .to_socket_addrs()
                    .map(std::iter::Iterator::collect),
            );
        })
        .map_err(|e| ErrorBody::new(codes::INTERNAL, format!("Cannot start a resolver: {e}")))?;
    let found: Vec<SocketAddr> = match rx.recv_timeout(req.timeout()) {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            return Err(ErrorBody::new(
                codes::RESOLVE_FAILED,
                format!("Resolving {:?} failed: {e}", req.name),
            ))
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(ErrorBody::new(
                codes::TIMEOUT,
                format!(
                    "Resolving {:?} timed out after {} ms",
                    req.name, req.timeout_ms
                ),
            ))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            return Err(ErrorBody::new(codes::INTERNAL, "The resolver thread died"))
        }
    };
    let addrs = ipv4_only(&found);
    if addrs.is_empty() {
        return Err(ErrorBody::new(
            codes::RESOLVE_FAILED,
            format!("{:?} has no IPv4 address", req.name),
        ));
    }
    Ok(ResolveReply { addrs })
}

/// The IPv4 addresses among `found`, in order, without duplicates (getaddrinfo lists one per
/// socket type).
pub fn ipv4_only(found: &[SocketAddr]) -> Vec<Ipv4Addr> {
    let mut addrs = Vec::new();
    for a in found {
        if let IpAddr::V4(ip) = a.ip() {
            if !addrs.contains(&ip) {
                addrs.push(ip);
            }
        }
    }
    addrs
}

/// Connects to `req.addr:req.port`, sends `req.send`, half-closes, and reads until the peer
/// closes (or [`MAX_RECEIVED`] bytes arrived), all within `req.timeout_ms`.
pub fn connect(req: &ConnectRequest) -> Result<ConnectReply, ErrorBody> {
    let peer = SocketAddr::from((req.addr, req.port));
    let deadline = Instant::now() + req.timeout();
    let fail = |e: io::Error| exchange_error(peer, req.timeout_ms, e);
    let mut stream = TcpStream::connect_timeout(&peer, req.timeout()).map_err(fail)?;
    stream
        .set_write_timeout(Some(left(deadline).map_err(fail)?))
        .map_err(fail)?;
    stream.write_all(req.send.as_bytes()).map_err(fail)?;
    // The peer sees EOF; a peer that already closed makes this fail harmlessly.
    let _ = stream.shutdown(Shutdown::Write);
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    while received.len() <= MAX_RECEIVED {
        stream
            .set_read_timeout(Some(left(deadline).map_err(fail)?))
            .map_err(fail)?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
    }
    Ok(ConnectReply::from_bytes(&received))
}

/// The time left before `deadline`, or a timeout error when none is.
fn left(deadline: Instant) -> io::Result<Duration> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(io::Error::from(ErrorKind::TimedOut)),
    }
}

/// The protocol error for a failed exchange.
fn exchange_error(peer: SocketAddr, timeout_ms: u64, e: io::Error) -> ErrorBody {
    match e.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => ErrorBody::new(
            codes::TIMEOUT,
            format!("TCP exchange with {peer} timed out after {timeout_ms} ms"),
        ),
        ErrorKind::ConnectionRefused => ErrorBody::new(
            codes::CONNECT_REFUSED,
            format!("Connection to {peer} refused"),
        ),
        _ => ErrorBody::new(
            codes::CONNECT_FAILED,
            format!("TCP exchange with {peer} failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn connect_req(addr: SocketAddr, send: &str, timeout_ms: u64) -> ConnectRequest {
        let SocketAddr::V4(a) = addr else {
            panic!("not IPv4")
        };
        ConnectRequest {
            addr: *a.ip(),
            port: a.port(),
            send: send.into(),
            timeout_ms,
        }
    }

    #[test]
    fn ipv4_only_dedups_and_drops_v6() {
        let found: Vec<SocketAddr> = vec![
            "127.0.0.1:0".parse().unwrap(),
            "[::1]:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            "10.0.0.1:0".parse().unwrap(),
        ];
        assert_eq!(
            ipv4_only(&found),
            vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(10, 0, 0, 1)]
        );
    }

    #[test]
    fn resolves_localhost_and_rejects_a_nul_name() {
        let reply = resolve(&ResolveRequest {
            name: "localhost".into(),
            timeout_ms: 5000,
        })
        .unwrap();
        assert!(reply.addrs.contains(&Ipv4Addr::LOCALHOST), "{reply:?}");
        // Fails inside libstd, without asking any DNS server.
        let e = resolve(&ResolveRequest {
            name: "a\0b".into(),
            timeout_ms: 5000,
        })
        .unwrap_err();
        assert_eq!(e.code, codes::RESOLVE_FAILED);
    }

    #[test]
    fn exchange_sends_half_closes_and_reads_to_eof() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut got = String::new();
            s.read_to_string(&mut got).unwrap(); // ends at our half-close
            s.write_all(format!("echo:{got}").as_bytes()).unwrap();
        });
        let reply = connect(&connect_req(addr, "hello", 5000)).unwrap();
        assert_eq!(reply.received, "echo:hello");
        assert!(!reply.truncated);
        server.join().unwrap();
    }

    #[test]
    fn long_replies_are_capped() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let _ = s.write_all(&vec![b'x'; 3 * MAX_RECEIVED]);
        });
        let reply = connect(&connect_req(addr, "", 5000)).unwrap();
        assert!(reply.truncated);
        assert_eq!(reply.received.len(), MAX_RECEIVED);
        server.join().unwrap();
    }

    #[test]
    fn refused_and_silent_peers() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = connect(&connect_req(addr, "x", 2000)).unwrap_err();
        assert_eq!(e.code, codes::CONNECT_REFUSED, "{e:?}");
        // Accepted (by the kernel's backlog) but never answered nor closed.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let e = connect(&connect_req(l.local_addr().unwrap(), "x", 200)).unwrap_err();
        assert_eq!(e.code, codes::TIMEOUT, "{e:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
