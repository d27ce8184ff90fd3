//! Hand-built Ethernet frames for [`GuestStack::send_raw_frame`](super::GuestStack::send_raw_frame):
//! the guest can put any source MAC and IP on the wire, which is how tests show that
//! anti-spoofing rules drop forged traffic.

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

/// The addressing of a hand-built frame; any field may be forged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAddrs {
    /// Ethernet source.
    pub src_mac: [u8; 6],
    /// Ethernet destination (the gateway's MAC for routed traffic).
    pub dst_mac: [u8; 6],
    /// IPv4 source.
    pub src_ip: Ipv4Addr,
    /// IPv4 destination.
    pub dst_ip: Ipv4Addr,
}

/// An Ethernet + IPv4 + UDP frame with correct checksums.
pub fn udp_frame(addrs: FrameAddrs, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let udp = UdpRepr { src_port, dst_port };
    let len = udp.header_len() + payload.len();
    ipv4_frame(addrs, IpProtocol::Udp, len, |buf| {
        udp.emit(
            &mut UdpPacket::new_unchecked(buf),
            &IpAddress::Ipv4(addrs.src_ip),
            &IpAddress::Ipv4(addrs.dst_ip),
            payload.len(),
            |p| p.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
    })
}

/// An Ethernet + IPv4 + TCP SYN frame with initial sequence number `seq`.
pub fn tcp_syn_frame(addrs: FrameAddrs, src_port: u16, dst_port: u16, seq: u32) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port,
        dst_port,
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: None,
        window_len: 64_240,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload: &[],
    };
    ipv4_frame(addrs, IpProtocol::Tcp, tcp.buffer_len(), |buf| {
        tcp.emit(
            &mut TcpPacket::new_unchecked(buf),
            &IpAddress::Ipv4(addrs.src_ip),
            &IpAddress::Ipv4(addrs.dst_ip),
            &ChecksumCapabilities::default(),
        );
    })
}

/// An Ethernet + IPv4 + ICMP echo request frame.
pub fn icmp_echo_frame(addrs: FrameAddrs, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let icmp = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    ipv4_frame(addrs, IpProtocol::Icmp, icmp.buffer_len(), |buf| {
        icmp.emit(
            &mut Icmpv4Packet::new_unchecked(buf),
            &ChecksumCapabilities::default(),
        );
    })
}

/// An ARP request from `src_mac`/`src_ip` for `target`, broadcast.
pub fn arp_request(src_mac: [u8; 6], src_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        ArpOperation::Request,
        src_mac,
        src_ip,
        EthernetAddress::BROADCAST.0,
        target,
    )
}

/// An ARP reply telling `dst_mac`/`dst_ip` that `src_ip` is at `src_mac`.
pub fn arp_reply(
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_mac: [u8; 6],
    dst_ip: Ipv4Addr,
) -> Vec<u8> {
    arp_frame(ArpOperation::Reply, src_mac, src_ip, dst_mac, dst_ip)
}

fn arp_frame(
    operation: ArpOperation,
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    dst_mac: [u8; 6],
    dst_ip: Ipv4Addr,
) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr: EthernetAddress(src_mac),
        source_protocol_addr: src_ip,
        // A request's target hardware address is unknown: zero, as Linux sends it.
        target_hardware_addr: EthernetAddress(if operation == ArpOperation::Request {
            [0; 6]
        } else {
            dst_mac
        }),
        target_protocol_addr: dst_ip,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

fn ipv4_frame(
    addrs: FrameAddrs,
    protocol: IpProtocol,
    payload_len: usize,
    emit_payload: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let eth = EthernetRepr {
        src_addr: EthernetAddress(addrs.src_mac),
        dst_addr: EthernetAddress(addrs.dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    };
    let ip = Ipv4Repr {
        src_addr: addrs.src_ip,
        dst_addr: addrs.dst_ip,
        next_header: protocol,
        payload_len,
        hop_limit: 64,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + payload_len];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &ChecksumCapabilities::default());
    emit_payload(packet.payload_mut());
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{TcpPacket, UdpPacket};

    fn addrs() -> FrameAddrs {
        FrameAddrs {
            src_mac: [6, 0, 10, 0, 0, 9],
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_ip: Ipv4Addr::new(10, 0, 0, 9),
            dst_ip: Ipv4Addr::new(10, 9, 0, 1),
        }
    }

    fn ip_of(frame: &[u8]) -> (Ipv4Packet<&[u8]>, IpAddress, IpAddress) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.src_addr(), EthernetAddress(addrs().src_mac));
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), addrs().src_ip);
        let (s, d) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        (ip, s, d)
    }

    #[test]
    fn udp_frame_parses_back_with_valid_checksums() {
        let f = udp_frame(addrs(), 4000, 9000, b"forged");
        let (ip, s, d) = ip_of(&f);
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(&s, &d));
        assert_eq!(udp.dst_port(), 9000);
        assert_eq!(udp.payload(), b"forged");
    }

    #[test]
    fn arp_frames_parse_back() {
        let req = arp_request([6, 0, 0, 0, 0, 2], addrs().src_ip, addrs().dst_ip);
        let eth = EthernetFrame::new_checked(&req[..]).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress::BROADCAST);
        let repr = ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).unwrap()).unwrap();
        let ArpRepr::EthernetIpv4 {
            operation,
            target_protocol_addr,
            target_hardware_addr,
            ..
        } = repr
        else {
            panic!("{repr:?}")
        };
        assert_eq!(operation, ArpOperation::Request);
        assert_eq!(target_protocol_addr, addrs().dst_ip);
        assert_eq!(target_hardware_addr, EthernetAddress([0; 6]));
        let reply = arp_reply(
            addrs().src_mac,
            addrs().src_ip,
            addrs().dst_mac,
            addrs().dst_ip,
        );
        let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress(addrs().dst_mac));
    }

    #[test]
    fn icmp_echo_frame_parses_back() {
        let f = icmp_echo_frame(addrs(), 7, 9, b"ping");
        let (ip, _, _) = ip_of(&f);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        let repr = Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap();
        assert_eq!(
            repr,
            Icmpv4Repr::EchoRequest {
                ident: 7,
                seq_no: 9,
                data: b"ping"
            }
        );
    }

    #[test]
    fn syn_frame_parses_back_as_a_syn() {
        let f = tcp_syn_frame(addrs(), 4000, 80, 12345);
        let (ip, s, d) = ip_of(&f);
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(&s, &d));
        assert!(tcp.syn() && !tcp.ack());
        assert_eq!(tcp.seq_number(), TcpSeqNumber(12345));
    }
}
