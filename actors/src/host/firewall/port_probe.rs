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

/// Whether a socket other than on `beside` holds `port` of `protocol` (on any IPv4 address,
/// local or not, or on every address): for a port that a socket on `beside` holds, so that
/// binding it cannot tell. Read from the kernel's socket tables of the calling thread's
/// network namespace (`/proc/thread-self/net/{tcp,udp}`); a TCP socket in `TIME_WAIT` does not
/// count (a bind with `SO_REUSEADDR`, as programs do, takes the port).
///
/// # Errors
/// [`FirewallError::PortProbe`] when the table cannot be read.
pub fn probe_beside(
    protocol: Protocol,
    port: u16,
    beside: Ipv4Addr,
) -> Result<PortProbe, FirewallError> {
    let table = format!("thread-self/net/{}", protocol.as_str());
    let text =
        crate::host::procfs::read_to_string(&table).map_err(|source| FirewallError::PortProbe {
            what: format!("{port}/{protocol} beside {beside} (/proc/{table})"),
            source,
        })?;
    let held = sockets(&text).any(|(addr, p, state)| {
        p == port && addr != beside && !(protocol == Protocol::Tcp && state == TCP_TIME_WAIT)
    });
    Ok(if held {
        PortProbe::Bound
    } else {
        PortProbe::Free
    })
}

/// `TCP_TIME_WAIT` in the `st` column.
const TCP_TIME_WAIT: u8 = 0x06;

/// The (local address, local port, state) of each socket of a `/proc/net/{tcp,udp}` table.
fn sockets(table: &str) -> impl Iterator<Item = (Ipv4Addr, u16, u8)> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace();
        let (addr, port) = fields.nth(1)?.split_once(':')?;
        let state = fields.nth(1)?;
        // The address as the kernel stores it (network order), printed as a native integer.
        let addr = Ipv4Addr::from(u32::from_str_radix(addr, 16).ok()?.to_ne_bytes());
        Some((
            addr,
            u16::from_str_radix(port, 16).ok()?,
            u8::from_str_radix(state, 16).ok()?,
        ))
    })
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
        // 127.0.0.2 is no interface's address, but a socket there holds the port too.
        let held = TcpListener::bind("127.0.0.2:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let other = Ipv4Addr::new(203, 0, 113, 9);
        assert_eq!(
            probe_beside(Protocol::Tcp, port, other).unwrap(),
            PortProbe::Bound
        );
        assert_eq!(
            probe_beside(Protocol::Tcp, port, Ipv4Addr::new(127, 0, 0, 2)).unwrap(),
            PortProbe::Free
        );
        let udp = UdpSocket::bind("127.0.0.3:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        assert_eq!(
            probe_beside(Protocol::Udp, port, other).unwrap(),
            PortProbe::Bound
        );
    }

    #[test]
    fn the_socket_tables_are_read_as_the_kernel_writes_them() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
                     0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1\n   \
                     1: 0101A8C0:0035 0201A8C0:C350 06 00000000:00000000 03:00000F9C 00000000     0        0 0 3\n";
        let parsed: Vec<_> = sockets(table).collect();
        assert_eq!(
            parsed,
            [
                (Ipv4Addr::LOCALHOST, 8080, 0x0a),
                (Ipv4Addr::new(192, 168, 1, 1), 53, TCP_TIME_WAIT)
            ]
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
