//! Whether a host port is taken by a socket: the real backend tries to bind it (and lets go
//! at once), which is what a program starting after hearth published the port would do.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use hearth_proto::api_publish::Protocol;

use super::FirewallError;

/// What a bind of a host port found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortProbe {
    /// Nothing holds it.
    Free,
    /// A socket on the host holds it.
    Bound,
    /// The address is not one of the host's.
    NotLocal,
}

/// Tries to bind `addr:port` (every address when `None`) for `protocol`, in the calling
/// thread's network namespace.
///
/// # Errors
/// [`FirewallError::PortProbe`] when the bind fails for another reason than the port being
/// taken or the address not being local (e.g. a privileged port without the capability).
pub fn probe(
    protocol: Protocol,
    addr: Option<Ipv4Addr>,
    port: u16,
) -> Result<PortProbe, FirewallError> {
    let at = SocketAddrV4::new(addr.unwrap_or(Ipv4Addr::UNSPECIFIED), port);
    let bound = match protocol {
        Protocol::Tcp => TcpListener::bind(at).map(drop),
        Protocol::Udp => UdpSocket::bind(at).map(drop),
    };
    match bound {
        Ok(()) => Ok(PortProbe::Free),
        Err(e) if e.kind() == ErrorKind::AddrInUse => Ok(PortProbe::Bound),
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => Ok(PortProbe::NotLocal),
        Err(source) => Err(FirewallError::PortProbe {
            what: format!("{at}/{protocol}"),
            source,
        }),
    }
}

/// Whether `port` of `protocol` is taken on any of the host's IPv4 addresses but `beside`
/// (each bound in turn, in the calling thread's network namespace): for a port that a socket
/// on `beside` holds, whether anything else does. A socket on every address could not share
/// the port with the one on `beside`, so the addresses one by one tell it all.
///
/// # Errors
/// [`FirewallError::PortProbe`] when the addresses cannot be listed or a bind fails for
/// another reason than the port being taken.
pub fn probe_beside(
    protocol: Protocol,
    port: u16,
    beside: Ipv4Addr,
) -> Result<PortProbe, FirewallError> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(|e| FirewallError::PortProbe {
        what: format!("{port}/{protocol} beside {beside}"),
        source: e.into(),
    })?;
    let mut seen = std::collections::BTreeSet::new();
    for addr in addresses
        .filter_map(|i| {
            i.address?
                .as_sockaddr_in()
                .map(nix::sys::socket::SockaddrIn::ip)
        })
        .filter(|a| *a != beside)
    {
        if seen.insert(addr) && probe(protocol, Some(addr), port)? == PortProbe::Bound {
            return Ok(PortProbe::Bound);
        }
    }
    Ok(PortProbe::Free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_seen_and_a_free_port_is_not() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let lo = Some(Ipv4Addr::LOCALHOST);
        assert_eq!(probe(Protocol::Tcp, lo, port).unwrap(), PortProbe::Bound);
        // Every address includes 127.0.0.1.
        assert_eq!(probe(Protocol::Tcp, None, port).unwrap(), PortProbe::Bound);
        drop(held);
        assert_eq!(probe(Protocol::Tcp, lo, port).unwrap(), PortProbe::Free);

        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        assert_eq!(probe(Protocol::Udp, lo, port).unwrap(), PortProbe::Bound);
    }

    #[test]
    fn beside_one_address_only_the_other_addresses_count() {
        // 127.0.0.1 is the loopback's: a socket there is seen beside any other address.
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let other = Ipv4Addr::new(203, 0, 113, 9);
        assert_eq!(
            probe_beside(Protocol::Tcp, port, other).unwrap(),
            PortProbe::Bound
        );
        assert_eq!(
            probe_beside(Protocol::Tcp, port, Ipv4Addr::LOCALHOST).unwrap(),
            PortProbe::Free
        );
    }

    #[test]
    fn an_address_of_no_interface_is_not_local() {
        // TEST-NET-3: assigned to no interface here.
        let addr = Some(Ipv4Addr::new(203, 0, 113, 77));
        assert_eq!(
            probe(Protocol::Tcp, addr, 8080).unwrap(),
            PortProbe::NotLocal
        );
    }
}
