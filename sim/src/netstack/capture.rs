//! What the guest saw: a bounded log of the IPv4 packets that arrived on the TAP, so tests
//! can assert that a packet did (or did not) reach a guest, whatever the stack did with it.

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};

/// How many packets the log keeps (the oldest go first).
pub(crate) const CAPTURE_LEN: usize = 1024;
/// How many payload bytes a captured packet keeps.
pub const CAPTURE_PAYLOAD: usize = 64;

/// One IPv4 packet the guest received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedPacket {
    /// Ethernet source.
    pub src_mac: [u8; 6],
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
    /// IP protocol number (1 ICMP, 6 TCP, 17 UDP).
    pub protocol: u8,
    /// TCP/UDP source port (0 for other protocols).
    pub src_port: u16,
    /// TCP/UDP destination port (0 for other protocols).
    pub dst_port: u16,
    /// The first [`CAPTURE_PAYLOAD`] bytes of the TCP/UDP payload (or of the IP payload).
    pub payload: Vec<u8>,
}

/// The packet a frame carries, if it is IPv4.
pub(crate) fn summarize(frame: &[u8]) -> Option<CapturedPacket> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    let (src_port, dst_port, payload) = match ip.next_header() {
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(ip.payload()).ok()?;
            (udp.src_port(), udp.dst_port(), udp.payload())
        }
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
            (tcp.src_port(), tcp.dst_port(), tcp.payload())
        }
        _ => (0, 0, ip.payload()),
    };
    Some(CapturedPacket {
        src_mac: eth.src_addr().0,
        src_ip: ip.src_addr(),
        dst_ip: ip.dst_addr(),
        protocol: ip.next_header().into(),
        src_port,
        dst_port,
        payload: payload[..payload.len().min(CAPTURE_PAYLOAD)].to_vec(),
    })
}

/// Appends to a bounded log.
pub(crate) fn record(log: &mut VecDeque<CapturedPacket>, frame: &[u8]) {
    if let Some(packet) = summarize(frame) {
        if log.len() == CAPTURE_LEN {
            log.pop_front();
        }
        log.push_back(packet);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netstack::frames::{tcp_syn_frame, udp_frame, FrameAddrs};

    fn addrs() -> FrameAddrs {
        FrameAddrs {
            src_mac: [6, 0, 10, 0, 0, 9],
            dst_mac: [6, 0, 10, 0, 0, 3],
            src_ip: Ipv4Addr::new(10, 0, 0, 9),
            dst_ip: Ipv4Addr::new(10, 0, 0, 3),
        }
    }

    #[test]
    fn summarizes_udp_and_tcp() {
        let udp = summarize(&udp_frame(addrs(), 1, 2, b"hello")).unwrap();
        assert_eq!(
            (
                udp.src_mac,
                udp.src_ip,
                udp.protocol,
                udp.src_port,
                udp.dst_port
            ),
            (addrs().src_mac, addrs().src_ip, 17, 1, 2)
        );
        assert_eq!(udp.payload, b"hello");
        let syn = summarize(&tcp_syn_frame(addrs(), 3, 4, 5)).unwrap();
        assert_eq!((syn.protocol, syn.dst_port), (6, 4));
        let big = summarize(&udp_frame(addrs(), 1, 2, &[7; 500])).unwrap();
        assert_eq!(big.payload.len(), CAPTURE_PAYLOAD);
    }

    #[test]
    fn ignores_non_ip_and_keeps_a_bounded_log() {
        assert_eq!(summarize(&[0u8; 60]), None);
        assert_eq!(summarize(&[1, 2, 3]), None);
        let mut log = VecDeque::new();
        let frame = udp_frame(addrs(), 1, 2, b"x");
        for _ in 0..CAPTURE_LEN + 5 {
            record(&mut log, &frame);
        }
        assert_eq!(log.len(), CAPTURE_LEN);
    }
}
